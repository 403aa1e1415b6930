//! Readiness sources: how an app tells procward it is ready (and a little
//! more), turned into typed [`Report`]s for the supervisor, sent through
//! the sender it hands out. Nothing here knows the supervisor's own types.
//!
//! Started is not ready (s6's rule). One file per source, each reading bytes
//! from one process and sending messages; none touches supervisor state:
//! - [`node_ipc`]: Node's IPC channel (`process.send('ready')`, PM2 and
//!   `@pm2/io` messages);
//! - [`sd_notify`]: a per-process `NOTIFY_SOCKET` proxy (`READY=1`,
//!   `WATCHDOG=1`, ...), believing only the app's own process tree;
//! - [`probe`]: `tcp:PORT` and `http://` polling for apps that say nothing.
//!
//! [`prepare`] makes the per-process resources before the spawn (so nothing
//! the app sends early is lost: it waits in the socket), [`Prepared::start`]
//! starts reading once the pid is known, and the returned [`Channels`] lives
//! as long as the process: dropping it stops the readers and removes the
//! notify socket.

pub mod cluster;
pub mod node_ipc;
pub mod probe;
pub mod sd_notify;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{AppSpec, ExecMode, ReadySource};
use crate::spawn;

/// The first descriptor number after stdio: sd_listen_fds(3) and Node's
/// `child_process.fork` (`stdio: [0, 1, 2, 'ipc']`) both start here.
pub const FIRST_FD: RawFd = 3;

/// What one process said, for the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The process. A report that arrives after it has gone (a late
    /// readiness line, say) is ignored.
    pub pid: i32,
    /// What it said.
    pub event: Event,
}

/// Something an app said (or its probe found).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// It is ready: `process.send('ready')`, `READY=1`, or its probe
    /// succeeded.
    Ready,
    /// A custom metric (`@pm2/io` `axm:monitor`).
    Metric {
        /// The metric's name as the app gave it (not yet sanitized).
        name: String,
        /// Its value.
        value: f64,
    },
    /// A Node cluster message from a worker ([`cluster`] describes the
    /// protocol).
    Cluster(cluster::Request),
    /// The answer to a message that carried a descriptor:
    /// `NODE_HANDLE_ACK` (true) or `NODE_HANDLE_NACK` (false, the
    /// descriptor did not arrive).
    HandleReceived(bool),
    /// The IPC channel was closed by the process (or the process is gone).
    Disconnected,
    /// sd_notify `STATUS=`: a free-form status line.
    Status(String),
    /// sd_notify `WATCHDOG=1`: the app is alive.
    WatchdogPing,
    /// sd_notify `WATCHDOG=trigger`: the app asks to be treated as hung.
    WatchdogTrigger,
    /// sd_notify `STOPPING=1`.
    Stopping,
    /// sd_notify `RELOADING=1`.
    Reloading,
    /// sd_notify `MAINPID=`: the app names another main process.
    MainPid(i32),
    /// sd_notify `ERRNO=`: the app reports a failure as an errno.
    Errno(i32),
    /// PM2 `process:msg`: a message for other processes (its `data`).
    ProcessMsg(serde_json::Value),
    /// Another `@pm2/io` message (`axm:action`, `axm:option:configuration`,
    /// `axm:reply`, ...); its type.
    Axm(String),
    /// Input dropped from `input` since the last such event: how many for
    /// each reason, indexed like [`Dropped::ALL`] (descriptors one by one,
    /// the rest as lines or datagrams), summed over `over` when the report
    /// sums a window of drops.
    Dropped {
        /// Where it came from.
        input: Input,
        /// How many, by reason.
        counts: [u64; Dropped::ALL.len()],
        /// The window summed, if any.
        over: Option<std::time::Duration>,
    },
}

/// Where input from an app came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The Node IPC channel.
    Ipc,
    /// The sd_notify proxy.
    Notify,
}

impl Input {
    /// The label value (`input`).
    pub fn as_str(self) -> &'static str {
        match self {
            Input::Ipc => "ipc",
            Input::Notify => "notify",
        }
    }
}

/// Why input from an app was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// An IPC line that is not JSON, or a notify datagram that is not text.
    Garbage,
    /// An IPC line longer than [`node_ipc::MAX_LINE`] or a datagram longer
    /// than [`sd_notify::MAX_DATAGRAM`].
    TooLong,
    /// A notify datagram from a process outside the instance's tree.
    Foreign,
    /// Descriptors sent with a notify datagram (closed at once), counted
    /// one by one.
    Descriptors,
}

impl Dropped {
    /// Every reason, in label order.
    pub const ALL: [Dropped; 4] = [
        Dropped::Garbage,
        Dropped::TooLong,
        Dropped::Foreign,
        Dropped::Descriptors,
    ];

    /// The label value (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Garbage => "garbage",
            Dropped::TooLong => "too_long",
            Dropped::Foreign => "foreign_sender",
            Dropped::Descriptors => "descriptors",
        }
    }

    /// Its position in [`Dropped::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Sends a message, waiting when the inbox is full; false once the
/// supervisor is gone.
async fn deliver(tx: &mpsc::Sender<Report>, msg: Report) -> bool {
    tx.send(msg).await.is_ok()
}

/// Where per-process notify sockets are made, the first that procward may
/// use: `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
/// `/run/procward`, else `procward-UID` under the temporary directory.
///
/// A directory is used only when it is procward's own: owned by its user
/// and writable by nobody else ([`claim`]). Otherwise anyone who can write
/// to it could replace a socket and speak for the app, as another user
/// could by making `procward-UID` first in a shared `/tmp`. When none
/// qualifies, the last is returned and binding there fails with the
/// reason.
pub fn runtime_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several, colon-separated (systemd.exec(5)).
        if let Some(first) = d
            .to_string_lossy()
            .split(':')
            .next()
            .filter(|s| !s.is_empty())
        {
            candidates.push(PathBuf::from(first));
        }
    }
    candidates.push(PathBuf::from("/run/procward"));
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    candidates.push(std::env::temp_dir().join(format!("procward-{uid}")));
    let last = candidates.len() - 1;
    for (k, dir) in candidates.into_iter().enumerate() {
        match claim(&dir) {
            Ok(()) => return dir,
            Err(e) if k == last => {
                tracing::error!(dir = %dir.display(), "no runtime directory for notify sockets: {e}");
                return dir;
            }
            Err(e) => tracing::info!(dir = %dir.display(), "not using it for notify sockets: {e}"),
        }
    }
    unreachable!("the temporary directory is always a candidate")
}

/// Makes `dir` (mode 0755: apps run as another user must reach their
/// socket) unless it exists, then checks that it is a
/// directory (not a symbolic link), owned by procward's user and not
/// writable by group or others; the error says which is not so.
pub fn claim(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(refuse(format!("cannot create {}: {e}", dir.display())))
        }
        _ => {}
    }
    let m = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !m.is_dir() {
        Err(refuse(format!("{} is not a directory", dir.display())))
    } else if m.uid() != uid {
        Err(refuse(format!(
            "refusing {}: owned by uid {}, not by procward's user (uid {uid}); \
             set RUNTIME_DIRECTORY to a directory procward's user owns",
            dir.display(),
            m.uid()
        )))
    } else if m.mode() & 0o022 != 0 {
        Err(refuse(format!(
            "refusing {}: writable by others (mode {:o}); make it 0700 or 0755",
            dir.display(),
            m.mode() & 0o7777
        )))
    } else {
        Ok(())
    }
}

/// Resources made for one process before it is spawned.
pub struct Prepared {
    /// Variables to set in the child.
    pub env: Vec<(OsString, OsString)>,
    ipc: Option<(OwnedFd, std::os::unix::net::UnixStream)>,
    notify: Option<sd_notify::Proxy>,
    source: ReadySource,
    listen_fds: usize,
}

impl Prepared {
    /// Descriptors to move into the child: (ours, its number).
    pub fn fds(&self) -> Vec<(RawFd, RawFd)> {
        let target = node_ipc::channel_fd(self.listen_fds);
        self.ipc
            .iter()
            .map(|(child, _)| (child.as_raw_fd(), target))
            .collect()
    }

    /// Starts reading from process `pid`, which now holds its ends; the
    /// result must live as long as the process.
    pub fn start(self, pid: i32, tx: &mpsc::Sender<Report>) -> Channels {
        let mut tasks = Vec::new();
        let mut ipc_writer = None;
        if let Some((child_end, ours)) = self.ipc {
            drop(child_end);
            match node_ipc::Channel::start(
                ours,
                pid,
                self.source == ReadySource::NodeIpc,
                tx.clone(),
            ) {
                Ok((writer, task)) => {
                    ipc_writer = Some(writer);
                    tasks.push(task);
                }
                Err(e) => tracing::error!(pid, error = %e, "cannot read the IPC channel"),
            }
        }
        let mut notify_path = None;
        if let Some(proxy) = self.notify {
            notify_path = Some(proxy.path().to_path_buf());
            match proxy.start(pid, self.source == ReadySource::SdNotify, tx.clone()) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::error!(pid, error = %e, "cannot read the notify socket"),
            }
        }
        match &self.source {
            ReadySource::Tcp(_) | ReadySource::Http(_) => tasks.push(tokio::spawn(probe::run(
                self.source.clone(),
                pid,
                tx.clone(),
            ))),
            ReadySource::Started | ReadySource::NodeIpc | ReadySource::SdNotify => {}
        }
        Channels {
            ipc: ipc_writer,
            notify_path,
            tasks,
            watchdog_due: None,
        }
    }
}

/// Makes what process `seq` of `spec` needs to report readiness: the Node
/// IPC channel (for `ipc` readiness, `shutdown_with_message`, or a cluster
/// worker, which also gets `NODE_UNIQUE_ID` = `seq`, its worker id) and a notify
/// socket (for `notify` readiness or a `watchdog`). A failure is logged and
/// that source left out: listen_timeout then decides. `listen_fds` is the
/// number of sockets passed with `LISTEN_FDS`, which come first.
pub fn prepare(spec: &AppSpec, dir: &Path, seq: u64, listen_fds: usize) -> Prepared {
    let mut env = Vec::new();
    let source = spec.ready.source.clone();
    let cluster = spec.exec_mode == ExecMode::Cluster;
    let ipc = if source == ReadySource::NodeIpc || spec.stop.shutdown_with_message || cluster {
        match node_ipc::pair() {
            Ok((child, ours)) => {
                if cluster {
                    // lib/internal/process/pre_execution.js: a process with
                    // this variable (and a script) is a cluster worker.
                    env.push(spawn::var("NODE_UNIQUE_ID", seq.to_string()));
                }
                env.push(spawn::var(
                    "NODE_CHANNEL_FD",
                    node_ipc::channel_fd(listen_fds).to_string(),
                ));
                env.push(spawn::var("NODE_CHANNEL_SERIALIZATION_MODE", "json"));
                Some((child, ours))
            }
            Err(e) => {
                tracing::error!(app = %spec.name, error = %e, "cannot make the IPC channel");
                None
            }
        }
    } else {
        None
    };
    let notify = if source == ReadySource::SdNotify || spec.watchdog.is_some() {
        match sd_notify::Proxy::bind(dir, seq, spec.uid, spec.gid) {
            Ok(p) => {
                env.push(spawn::var("NOTIFY_SOCKET", p.path()));
                if let Some(w) = spec.watchdog {
                    // sd_watchdog_enabled(3): the app pings at half of this.
                    env.push(spawn::var("WATCHDOG_USEC", w.as_micros().to_string()));
                }
                Some(p)
            }
            Err(e) => {
                tracing::error!(app = %spec.name, dir = %dir.display(), error = %e,
                                "cannot make a notify socket (set RUNTIME_DIRECTORY to a directory procward's user owns)");
                None
            }
        }
    } else {
        None
    };
    Prepared {
        env,
        ipc,
        notify,
        source,
        listen_fds,
    }
}

/// What lives as long as one process: the readers, the IPC channel's write
/// end, the notify socket, and the app's watchdog deadline.
pub struct Channels {
    ipc: Option<node_ipc::Writer>,
    notify_path: Option<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
    /// When the app's sd_notify watchdog expires; armed by its first
    /// `WATCHDOG=1`.
    pub watchdog_due: Option<Instant>,
}

impl Channels {
    /// Sends a JSON value on the IPC channel (PM2's `shutdown` message);
    /// false when there is no channel or the write failed.
    pub fn send_ipc(&self, value: &serde_json::Value) -> bool {
        self.ipc.as_ref().is_some_and(|w| w.send(value))
    }

    /// Sends a JSON value with a descriptor attached on the IPC channel
    /// (a cluster worker's listening socket).
    pub fn send_ipc_fd(&self, value: &serde_json::Value, fd: RawFd) -> std::io::Result<()> {
        match &self.ipc {
            Some(w) => w.send_with_fd(value, fd),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no IPC channel",
            )),
        }
    }

    /// Re-arms the watchdog after a ping.
    pub fn ping(&mut self, now: Instant, interval: Duration) {
        self.watchdog_due = Some(now + interval);
    }
}

impl Drop for Channels {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(p) = &self.notify_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
