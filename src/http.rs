//! The HTTP server behind `--metrics ADDR`: `/metrics`, `/healthz`,
//! `/readyz` and `/status`.
//!
//! It knows hyper and routes, nothing of the supervisor: it gathers the
//! metric registry, reads the latest status snapshot and the heartbeat it
//! was handed. Everything is bounded: header bytes and count, the time to
//! send a request's headers, a connection's lifetime, and the number of
//! connections at once. Request bodies are never read. Malformed requests
//! get hyper's 400 and are counted in `procward_dropped_inputs_total{input="http"}`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, Registry};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::status::{Handles, Heartbeat, Status};

/// Connections served at once; further ones are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 64;
/// Bytes of request line and headers accepted (hyper's read buffer).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Headers accepted in one request.
pub const MAX_HEADERS: usize = 32;
/// Time allowed to send a request's headers (also a keep-alive idle limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Longest an encoded /metrics body is reused while no supervised value
/// changed (procward's own `process_*` figures change all the time).
const REUSE_FOR: Duration = Duration::from_secs(1);

/// The Prometheus text exposition format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound listener and what its routes read.
pub struct Server {
    listener: TcpListener,
    routes: Arc<Routes>,
    dropped: Option<IntCounter>,
    busy: Option<IntCounter>,
}

/// What the routes read.
struct Routes {
    registry: Option<Registry>,
    status: watch::Receiver<Arc<Status>>,
    heartbeat: Arc<Heartbeat>,
    /// `/healthz` fails once the supervisor loop has not run for this long.
    stale_after: Duration,
    /// Bumped whenever a metric changes.
    generation: Arc<AtomicU64>,
    /// The last /metrics body: (generation, when, body).
    encoded: Mutex<Option<(u64, Instant, Bytes)>>,
}

impl Server {
    /// Binds `addr`; must run inside the runtime.
    pub fn bind(addr: SocketAddr, h: &Handles) -> io::Result<Server> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        info!(addr = %std.local_addr()?, "serving /metrics, /healthz, /readyz and /status");
        // The loop turns at least once per sample (the sampler's message);
        // three missed samples mean it is stuck.
        let interval = h.sample_interval.unwrap_or(Duration::from_secs(1));
        Ok(Server {
            listener: TcpListener::from_std(std)?,
            routes: Arc::new(Routes {
                registry: h.registry.clone(),
                status: h.status.clone(),
                heartbeat: h.heartbeat.clone(),
                stale_after: interval * 3 + Duration::from_secs(2),
                generation: h.generation.clone(),
                encoded: Mutex::new(None),
            }),
            dropped: h.http_dropped.clone(),
            busy: h.http_busy.clone(),
        })
    }

    /// Accepts and serves connections until the runtime ends.
    pub async fn serve(self) {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS)
            .keep_alive(true);
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                debug!(%peer, "over {MAX_CONNECTIONS} HTTP connections; closing");
                if let Some(c) = &self.busy {
                    c.inc();
                    self.routes.generation.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            };
            let routes = self.routes.clone();
            let dropped = self.dropped.clone();
            let generation = self.routes.generation.clone();
            let conn = builder.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |req| {
                    let routes = routes.clone();
                    async move { Ok::<_, Infallible>(routes.route(&req)) }
                }),
            );
            tokio::spawn(async move {
                match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    Ok(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
                        debug!(%peer, error = %e, "malformed HTTP request");
                        if let Some(c) = dropped {
                            c.inc();
                            generation.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended"),
                    Ok(Ok(())) | Err(_) => {}
                }
                drop(permit);
            });
        }
    }
}

impl Routes {
    fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => self.metrics(),
            "/healthz" => self.healthz(),
            "/readyz" => self.readyz(),
            "/status" => self.status(),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            ),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let Some(registry) = &self.registry else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics could not be registered\n".into(),
            );
        };
        let generation = self.generation.load(Ordering::Relaxed);
        let mut encoded = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        let body = match &*encoded {
            Some((g, at, body)) if *g == generation && at.elapsed() < REUSE_FOR => body.clone(),
            _ => {
                let mut body = String::with_capacity(64 * 1024);
                if let Err(e) =
                    prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body)
                {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("encoding metrics failed: {e}\n"),
                    );
                }
                let body = Bytes::from(body);
                *encoded = Some((generation, Instant::now(), body.clone()));
                body
            }
        };
        let mut r = Response::new(Full::new(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        r
    }

    fn healthz(&self) -> Response<Full<Bytes>> {
        let age = self.heartbeat.age();
        if age <= self.stale_after {
            text(StatusCode::OK, "ok\n".into())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("supervisor loop has not run for {} ms\n", age.as_millis()),
            )
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let status = self.status.borrow().clone();
        let not_ready = status.not_ready();
        if status.apps.is_empty() {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting\n".into(),
            )
        } else if not_ready.is_empty() {
            text(StatusCode::OK, "ready\n".into())
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", not_ready.join(", ")),
            )
        }
    }

    fn status(&self) -> Response<Full<Bytes>> {
        let status = self.status.borrow().clone();
        match serde_json::to_vec(&*status) {
            Ok(body) => {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding status failed: {e}\n"),
            ),
        }
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
