//! The control socket's server side: bind, accept, check the peer, read one
//! bounded request, pass it on, write the reply.
//!
//! Every connection runs in its own task, so a client that is slow to
//! write or to read holds only its own task; the supervisor sees a
//! [`Call`] only once a whole, valid request has arrived.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntCounter;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::paths::{self, Probe};
use super::{Call, Hello, Reply, Request, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST};
use crate::status::Status;

/// The bound socket, removed when this is dropped (as procward exits).
pub struct Bound {
    path: PathBuf,
    inode: u64,
    /// A directory made for this socket alone (`BASE/NAME`), removed with
    /// it when empty.
    pub own_dir: Option<PathBuf>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        // Only our own socket: another procward may have replaced a path we
        // were told to use.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
        if let Some(d) = &self.own_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// What each connection needs.
#[derive(Clone)]
pub struct Shared {
    /// The procward's name.
    pub name: String,
    /// The apps it runs, in order.
    pub apps: Vec<String>,
    /// The latest `/status` snapshot.
    pub status: watch::Receiver<Arc<Status>>,
    /// The supervisor's control inbox.
    pub calls: mpsc::Sender<Call>,
    /// Counter of refused requests, when metrics are on.
    pub refused: Option<IntCounter>,
    /// Whether a sampler fills the snapshot's CPU and memory; when not,
    /// `status` reads /proc itself.
    pub sampled: bool,
    /// The apps' captured output.
    pub logs: crate::logs::Logs,
}

/// The server: a bound socket and what connections need.
pub struct Server {
    listener: UnixListener,
    shared: Shared,
    uid: u32,
    refused: Arc<AtomicU64>,
}

/// Binds the control socket at `path` with mode 0600. A socket file left by
/// a procward that is gone is replaced; one a live procward serves is not.
pub fn bind(path: &Path) -> std::io::Result<(UnixListener, Bound)> {
    use std::io::{Error, ErrorKind};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        match paths::probe(path).0 {
            Probe::Live => {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    format!("another procward serves {}", path.display()),
                ))
            }
            _ => std::fs::remove_file(path)?,
        }
    }
    // Made 0600 from the start: the umask covers the moment between
    // bind(2) and chmod(2). No other thread runs yet, and no child exists
    // to inherit it.
    // SAFETY: umask(2) cannot fail; the old mask is restored just below.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let std_listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std_listener.set_nonblocking(true)?;
    let inode = std::fs::symlink_metadata(path)?.ino();
    let listener = UnixListener::from_std(std_listener)?;
    Ok((
        listener,
        Bound {
            path: path.to_path_buf(),
            inode,
            own_dir: None,
        },
    ))
}

impl Server {
    /// A server on a bound listener; must run inside the runtime.
    pub fn new(listener: UnixListener, shared: Shared) -> Server {
        Server {
            listener,
            shared,
            // SAFETY: geteuid(2) cannot fail.
            uid: unsafe { libc::geteuid() },
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Accepts and serves connections until the runtime ends.
    pub async fn serve(self) {
        let active = Arc::new(AtomicUsize::new(0));
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors, say: the backlog waits.
                    warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let busy = active.load(Ordering::Relaxed) >= MAX_CONNECTIONS;
            active.fetch_add(1, Ordering::Relaxed);
            let conn = Connection {
                shared: self.shared.clone(),
                uid: self.uid,
                refused: self.refused.clone(),
            };
            let active = active.clone();
            tokio::spawn(async move {
                conn.run(stream, busy).await;
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

struct Connection {
    shared: Shared,
    uid: u32,
    refused: Arc<AtomicU64>,
}

impl Connection {
    async fn run(self, mut stream: UnixStream, busy: bool) {
        let mut follow = None;
        let reply = self.answer(&mut stream, busy, &mut follow).await;
        let Some(reply) = reply else { return };
        if let Reply::Refused(r) = &reply {
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(c) = &self.shared.refused {
                c.inc();
            }
            warn!(kind = %r.kind, refused_total = n, "control request refused: {}", r.error);
        }
        let mut line = serde_json::to_vec(&reply).unwrap_or_default();
        line.push(b'\n');
        // A client that does not read its answer is given up on, like one
        // that does not write its question.
        let wrote = tokio::time::timeout(IDLE_TIMEOUT, stream.write_all(&line)).await;
        if let (Some(app), Ok(Ok(()))) = (follow, wrote) {
            self.follow(&mut stream, app).await;
        }
        let _ = tokio::time::timeout(IDLE_TIMEOUT, stream.shutdown()).await;
    }

    /// `logs --follow`: every new line of app `app` (all when `None`), one
    /// JSON line each, until the client goes or reads too slowly.
    async fn follow(&self, stream: &mut UnixStream, app: Option<usize>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut rx = self.shared.logs.follow();
        loop {
            let line = match rx.recv().await {
                Ok(l) => l,
                Err(RecvError::Lagged(n)) => {
                    let note = format!("{{\"lagged\":{n}}}\n");
                    if stream.write_all(note.as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if app.is_some_and(|a| a != line.app) {
                continue;
            }
            let mut out = serde_json::to_vec(&self.line(&line)).unwrap_or_default();
            out.push(b'\n');
            // A reader that stops reading is dropped like a silent one.
            match tokio::time::timeout(IDLE_TIMEOUT, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    fn line(&self, l: &crate::logs::LogLine) -> super::Line {
        super::Line {
            app: self.shared.apps.get(l.app).cloned().unwrap_or_default(),
            instance: l.instance,
            stream: l.stream.as_str().into(),
            at_ms: l
                .time
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            text: l.text.clone(),
        }
    }

    /// `logs`: the last lines, and whether to follow (which app).
    fn logs(
        &self,
        app: &str,
        lines: usize,
        follow: bool,
        out: &mut Option<Option<usize>>,
    ) -> Reply {
        let index = match app {
            "all" => None,
            name => match self.shared.apps.iter().position(|a| a == name) {
                Some(a) => Some(a),
                None => {
                    return Reply::refused(
                        "unknown_app",
                        format!("no app named `{name}`"),
                        Some(format!(
                            "this procward runs: {} (or `all`)",
                            self.shared.apps.join(", ")
                        )),
                    )
                }
            },
        };
        let captured = match index {
            Some(a) => self.shared.logs.captured(a),
            None => (0..self.shared.apps.len()).any(|a| self.shared.logs.captured(a)),
        };
        if !captured {
            return Reply::refused(
                "not_captured",
                "procward passes this app's output through untouched and keeps none of it",
                Some(
                    "read it with `docker logs`, `kubectl logs` or `journalctl -u UNIT`; \
                     or set a log key (out_file, error_file, log_file) so procward keeps the last lines"
                        .into(),
                ),
            );
        }
        let recent: Vec<super::Line> = self
            .shared
            .logs
            .recent(index, lines.min(crate::logs::RING_LINES))
            .iter()
            .map(|l| self.line(l))
            .collect();
        if follow {
            *out = Some(index);
        }
        Reply::data(serde_json::json!({ "lines": recent }))
    }

    /// The reply for this connection; `None` when the client said nothing
    /// in time (it is dropped without one).
    async fn answer(
        &self,
        stream: &mut UnixStream,
        busy: bool,
        follow: &mut Option<Option<usize>>,
    ) -> Option<Reply> {
        match stream.peer_cred() {
            Ok(c) if c.uid() == self.uid || c.uid() == 0 => {}
            Ok(c) => {
                return Some(Reply::refused(
                    "not_allowed",
                    format!(
                    "uid {} may not control this procward: only its own user (uid {}) and root may",
                    c.uid(),
                    self.uid
                ),
                    Some("run the command as that user, or with sudo".into()),
                ))
            }
            Err(e) => {
                return Some(Reply::refused(
                    "not_allowed",
                    format!("cannot read the caller's credentials: {e}"),
                    None,
                ))
            }
        }
        if busy {
            return Some(Reply::refused(
                "busy",
                format!("{MAX_CONNECTIONS} control connections are already open"),
                Some("try again in a moment".into()),
            ));
        }
        let mut line = Vec::new();
        let mut reader = BufReader::new(&mut *stream).take(MAX_REQUEST as u64 + 1);
        let read = tokio::time::timeout(IDLE_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
        match read {
            Err(_) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(c) = &self.shared.refused {
                    c.inc();
                }
                warn!(
                    refused_total = n,
                    "control client sent no request within {IDLE_TIMEOUT:?}; dropped"
                );
                return None;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "control connection failed");
                return None;
            }
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_REQUEST {
            return Some(Reply::refused(
                "too_long",
                format!("the request is longer than {MAX_REQUEST} bytes"),
                None,
            ));
        }
        if line.is_empty() {
            return None;
        }
        let request = match super::parse_request(&line) {
            Ok(r) => r,
            Err(reply) => return Some(reply),
        };
        debug!(cmd = request.name(), "control request");
        if let Request::Logs {
            app,
            lines,
            follow: f,
        } = &request
        {
            return Some(self.logs(app, *lines, *f, follow));
        }
        Some(self.carry_out(request).await)
    }

    async fn carry_out(&self, request: Request) -> Reply {
        match request {
            Request::Hello => {
                let hello = Hello {
                    name: self.shared.name.clone(),
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    apps: self.shared.apps.clone(),
                };
                Reply::data(serde_json::to_value(hello).unwrap_or_default())
            }
            Request::Status => {
                let snapshot = self.shared.status.borrow().clone();
                let mut v = serde_json::to_value(&*snapshot).unwrap_or_default();
                if !self.shared.sampled {
                    fill_usage(&mut v);
                }
                if let Some(o) = v.as_object_mut() {
                    o.insert("name".into(), self.shared.name.clone().into());
                }
                Reply::data(v)
            }
            other => {
                let (tx, rx) = oneshot::channel();
                let call = Call {
                    request: other,
                    reply: tx,
                };
                if self.shared.calls.send(call).await.is_err() {
                    return gone();
                }
                rx.await.unwrap_or_else(|_| gone())
            }
        }
    }
}

/// Fills each running instance's `monit` from one read of /proc, for a
/// procward that samples nothing on its own (no `--metrics`, no memory
/// cap). CPU is then the average since the process started, as `ps`
/// shows it.
fn fill_usage(status: &mut serde_json::Value) {
    let Ok(mut scan) = crate::resources::procfs::ProcScan::new() else {
        return;
    };
    let mut pids = Vec::new();
    for app in status["apps"].as_array().into_iter().flatten() {
        for inst in app["instances"].as_array().into_iter().flatten() {
            pids.extend(inst["pid"].as_i64().map(|p| p as i32));
        }
    }
    let mut out = Vec::new();
    scan.scan(&pids, false, &mut out);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64;
    let Some(apps) = status["apps"].as_array_mut() else {
        return;
    };
    for app in apps {
        let Some(insts) = app["instances"].as_array_mut() else {
            continue;
        };
        for inst in insts {
            let Some(pid) = inst["pid"].as_i64() else {
                continue;
            };
            let Some(u) = out.iter().find(|u| i64::from(u.pid) == pid) else {
                continue;
            };
            let secs = inst["pm_uptime"]
                .as_f64()
                .map(|start| (now_ms - start) / 1000.0)
                .filter(|s| *s > 0.0);
            let cpu = secs.map_or(0.0, |s| (u.cpu_seconds / s * 1000.0).round() / 10.0);
            inst["monit"]["memory"] = u.rss_bytes.into();
            inst["monit"]["cpu"] = cpu.into();
            inst["monit"]["cpu_seconds"] = u.cpu_seconds.into();
            inst["monit"]["processes"] = u.processes.into();
            inst["monit"]["threads"] = u.threads.into();
        }
    }
}

fn gone() -> Reply {
    Reply::refused(
        "shutting_down",
        "procward is stopping and takes no more requests",
        None,
    )
}
