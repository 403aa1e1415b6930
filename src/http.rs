//! The HTTP server behind `--metrics ADDR`: `/metrics`, `/healthz`,
//! `/readyz` and `/status`.
//!
//! It knows hyper and routes, nothing of the supervisor: it gathers the
//! metric registry, reads the latest status snapshot and the heartbeat it
//! was handed. Everything is bounded: header bytes and count, the time to
//! send a request's headers, a connection's idle time and lifetime, and the
//! number of connections at once (at the cap, the quietest one makes room).
//! Each connection is its own task, and a /metrics body is encoded once and
//! shared, so a slow reader holds up only itself. It is encoded on a
//! thread of its own, made at the first request, not on the event loop:
//! with 100 instances a gather and encode takes milliseconds, which would
//! otherwise delay every signal, reap and request behind it. Where no
//! thread can be made (out of pids) it is encoded on the loop, so /metrics
//! still answers. Request bodies are never read. Malformed requests
//! get hyper's 400 and are counted in `procward_dropped_inputs_total{input="http"}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::socket;
use prometheus::{IntCounter, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::status::{Handles, Heartbeat, Status};

/// Connections open at once; at the cap, the one quiet for longest is
/// closed to make room for a new one.
pub const MAX_CONNECTIONS: usize = 64;
/// Bytes of request line and headers accepted (hyper's read buffer).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Headers accepted in one request.
pub const MAX_HEADERS: usize = 32;
/// Time allowed to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that moves no byte for this long is closed: a keep-alive
/// connection left idle, or a client that stopped reading its response.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Age at which a connection is retired: its next response says
/// `Connection: close` and the connection ends after it, so a client that
/// keeps it busy loses no request (an abrupt close would race the next
/// request it sends). One that sends nothing more is closed at
/// [`IDLE_TIMEOUT`]; one that is still open [`IDLE_TIMEOUT`] later is
/// closed whatever it does.
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
    /// The last /metrics body: (generation, when, body). An async lock:
    /// requests that arrive while a body is being encoded wait for it
    /// without holding up the event loop.
    encoded: tokio::sync::Mutex<Option<(u64, Instant, Bytes)>>,
    encoder: Encoder,
}

/// A /metrics body to encode, and where its text goes.
type Job = (Registry, oneshot::Sender<Result<String, String>>);

/// The thread that encodes /metrics bodies, made when first needed.
#[derive(Default)]
struct Encoder {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl Encoder {
    /// Encodes `registry` on the encoding thread, or here when it cannot
    /// be made.
    async fn encode(&self, registry: &Registry) -> Result<String, String> {
        let jobs = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if jobs.is_none() {
                *jobs = encoding_thread();
            }
            jobs.clone()
        };
        if let Some(jobs) = jobs {
            let (done, answer) = oneshot::channel();
            if jobs.send((registry.clone(), done)).is_ok() {
                if let Ok(text) = answer.await {
                    return text;
                }
            }
        }
        encode(registry)
    }
}

/// Starts the encoding thread; `None` when no thread can be made. It
/// inherits the event loop's mask, every signal blocked.
fn encoding_thread() -> Option<std::sync::mpsc::Sender<Job>> {
    let (jobs, next) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for (registry, done) in next {
                let _ = done.send(encode(&registry));
            }
        })
        .map_err(|e| debug!(error = %e, "cannot start the metrics thread; encoding on the loop"))
        .ok()
        .map(|_| jobs)
}

/// The text exposition of everything in `registry`.
fn encode(registry: &Registry) -> Result<String, String> {
    let mut body = String::with_capacity(256 * 1024);
    prometheus::TextEncoder::new()
        .encode_utf8(&registry.gather(), &mut body)
        .map(|()| body)
        .map_err(|e| e.to_string())
}

impl Server {
    /// Binds `addr`; must run inside the runtime.
    pub fn bind(addr: SocketAddr, h: &Handles) -> io::Result<Server> {
        let std = std::net::TcpListener::bind(addr)?;
        // A longer accept queue than std's 128 (listen(2) again only
        // changes it): when it is full the kernel drops a SYN, and the
        // client (a kubelet's probe) retries only after a second.
        socket::listen(&std, socket::Backlog::MAXCONN).map_err(io::Error::from)?;
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
                encoded: tokio::sync::Mutex::new(None),
                encoder: Encoder::default(),
            }),
            dropped: h.http_dropped.clone(),
            busy: h.http_busy.clone(),
        })
    }

    /// Accepts and serves connections until the runtime ends.
    ///
    /// At [`MAX_CONNECTIONS`], a new connection is still served: the one
    /// quiet for longest is closed to make room (and counted in
    /// `procward_dropped_inputs_total{input="http_busy"}`). Clients that
    /// open connections and send nothing (slowloris) then only churn among
    /// themselves, and a kubelet's probe, which asks at once, is answered.
    pub async fn serve(self) {
        let table = Arc::new(Mutex::new(Table::default()));
        let epoch = Instant::now();
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
            let last = Arc::new(AtomicU64::new(millis_since(epoch)));
            let (evict_tx, evict_rx) = oneshot::channel();
            let (id, evicted) = lock(&table).open(last.clone(), evict_tx);
            if let Some(victim) = evicted {
                debug!(%peer, "{MAX_CONNECTIONS} HTTP connections open; closing the one quiet for longest");
                let _ = victim.send(());
                if let Some(c) = &self.busy {
                    c.inc();
                    self.routes.generation.fetch_add(1, Ordering::Relaxed);
                }
                // Let the evicted task close its socket before the next
                // accept, so open descriptors stay near the cap.
                tokio::task::yield_now().await;
            }
            let routes = self.routes.clone();
            let dropped = self.dropped.clone();
            let generation = self.routes.generation.clone();
            let table = table.clone();
            let io = Tracked {
                inner: stream,
                last: last.clone(),
                epoch,
            };
            let retire_at = tokio::time::Instant::now() + CONNECTION_LIFETIME;
            let conn = builder.serve_connection(
                TokioIo::new(io),
                hyper::service::service_fn(move |req| {
                    let routes = routes.clone();
                    async move {
                        let mut response = routes.route(&req).await;
                        if tokio::time::Instant::now() >= retire_at {
                            // hyper ends the connection once this is sent.
                            response.headers_mut().insert(
                                hyper::header::CONNECTION,
                                hyper::header::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(response)
                    }
                }),
            );
            tokio::spawn(async move {
                let ended = tokio::select! {
                    r = tokio::time::timeout_at(retire_at + IDLE_TIMEOUT, conn) => r.ok(),
                    _ = evict_rx => None,
                    _ = idle(&last, epoch) => {
                        debug!(%peer, "HTTP connection idle for {IDLE_TIMEOUT:?}; closing");
                        None
                    }
                };
                match ended {
                    Some(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
                        debug!(%peer, error = %e, "malformed HTTP request");
                        if let Some(c) = dropped {
                            c.inc();
                            generation.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Err(e)) => debug!(%peer, error = %e, "HTTP connection ended"),
                    Some(Ok(())) | None => {}
                }
                lock(&table).close(id);
            });
        }
    }
}

/// The open connections: when each last moved a byte, and how to close it.
#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, (Arc<AtomicU64>, oneshot::Sender<()>)>,
}

impl Table {
    /// Adds a connection; at the cap, takes out the one quiet for longest
    /// and returns its closer.
    fn open(
        &mut self,
        last: Arc<AtomicU64>,
        close: oneshot::Sender<()>,
    ) -> (u64, Option<oneshot::Sender<()>>) {
        let mut evicted = None;
        if self.open.len() >= MAX_CONNECTIONS {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(id, (last, _))| (last.load(Ordering::Relaxed), **id))
                .map(|(id, _)| *id);
            evicted = oldest.and_then(|id| self.open.remove(&id)).map(|(_, c)| c);
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(id, (last, close));
        (id, evicted)
    }

    fn close(&mut self, id: u64) {
        self.open.remove(&id);
    }
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Returns once the connection has moved no byte for [`IDLE_TIMEOUT`]: a
/// keep-alive connection nobody uses, or a reader that stopped reading.
async fn idle(last: &AtomicU64, epoch: Instant) {
    loop {
        let at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + IDLE_TIMEOUT;
        if Instant::now() >= at {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A TCP stream that notes when it last read or wrote a byte.
struct Tracked {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl Tracked {
    fn touch(&self) {
        self.last.store(millis_since(self.epoch), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Routes {
    async fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => self.metrics().await,
            "/healthz" => self.healthz(),
            "/readyz" => self.readyz(),
            "/status" => self.status(),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            ),
        }
    }

    async fn metrics(&self) -> Response<Full<Bytes>> {
        let Some(registry) = &self.registry else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics could not be registered\n".into(),
            );
        };
        let mut encoded = self.encoded.lock().await;
        // Read after the lock: a request that waited for another's
        // encoding reuses it unless a value changed since.
        let generation = self.generation.load(Ordering::Relaxed);
        let body = match &*encoded {
            Some((g, at, body)) if *g == generation && at.elapsed() < REUSE_FOR => body.clone(),
            _ => {
                let rendered = self.encoder.encode(registry).await;
                let body = match rendered {
                    Ok(body) => Bytes::from(body),
                    Err(e) => {
                        return text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("encoding metrics failed: {e}\n"),
                        )
                    }
                };
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
