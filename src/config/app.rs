//! The validated model of one app: what the supervisor needs to run it.
//!
//! Everything here is already checked and resolved (durations, sizes, users,
//! signals, the command line). Raw input (CLI flags, process files) is turned
//! into an [`AppSpec`] by `config::load` and `cli`; nothing downstream parses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

/// One supervised application, possibly with several instances.
#[derive(Debug, Clone, Serialize)]
pub struct AppSpec {
    /// Name shown in logs, metrics (`app` label) and `/status`.
    pub name: String,
    /// The full command line: program then arguments, passed to exec as is.
    #[serde(serialize_with = "ser_os_vec")]
    pub argv: Vec<OsString>,
    /// Working directory; procward's own when `None`.
    pub cwd: Option<PathBuf>,
    /// Variables set on top of procward's inherited environment (PM2 merges
    /// the same way). Values never leave the process: not in logs or metrics.
    #[serde(skip)]
    pub env: Vec<(OsString, OsString)>,
    /// Names of the variables in `env`, for display only.
    pub env_keys: Vec<String>,
    /// How many copies run at once (PM2 `instances`, resolved to a number).
    pub instances: u32,
    /// PM2 `exec_mode`. Both run as separate processes under procward; a
    /// cluster instance is also a Node cluster worker whose primary is
    /// procward.
    pub exec_mode: ExecMode,
    /// Sockets procward binds once and passes to every instance
    /// (`LISTEN_FDS`).
    pub listen: Vec<crate::sockets::ListenAddr>,
    /// Run as this user id (PM2 `uid`/`user`).
    pub uid: Option<u32>,
    /// Run as this group id (PM2 `gid`/`group`).
    pub gid: Option<u32>,
    /// When and how to restart.
    pub restart: RestartPolicy,
    /// How to stop gracefully.
    pub stop: StopPolicy,
    /// When an instance counts as ready.
    pub ready: ReadySpec,
    /// PM2 `max_memory_restart`: restart when the tree's RSS exceeds it.
    pub max_memory_restart: Option<u64>,
    /// procward's `max_memory_hard`: at this memory a memory restart sends
    /// SIGKILL at once; [`AppSpec::memory_hard_limit`] gives the default.
    pub max_memory_hard: Option<u64>,
    /// Restart the instance when its own sd_notify `WATCHDOG=1` pings stop
    /// for this long.
    #[serde(with = "opt_ms")]
    pub watchdog: Option<Duration>,
    /// PM2's instance variable (`instance_var`), set to each process's
    /// instance number. `None` for a plain `procward -- CMD`, which passes
    /// the environment untouched (PM2 adds it for process files and `-i`).
    #[serde(skip_serializing_if = "is_pm2_instance_var")]
    pub instance_var: Option<String>,
    /// Where stdout and stderr go (pass-through unless a log key is set);
    /// shown only when a log key is set.
    #[serde(skip_serializing_if = "super::logs::LogSpec::is_default")]
    pub logs: super::logs::LogSpec,
    /// PM2 `cron_restart`: restart every instance at these times.
    pub cron_restart: Option<crate::cron::Schedule>,
    /// PM2 `watch`: restart when files change.
    pub watch: Option<WatchSpec>,
}

/// PM2's `watch`, `ignore_watch`, `watch_delay` and
/// `watch_options.followSymlinks`, resolved (see `watch/`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchSpec {
    /// Absolute paths watched: directories with everything under them, or
    /// files. `watch: true` (or an empty list) is the app's directory.
    pub paths: Vec<PathBuf>,
    /// `ignore_watch` entries as written; `None` is PM2's default (dot
    /// files and directories, and `node_modules`).
    pub ignore: Option<Vec<String>>,
    /// `watch_delay`: from the first change to the restart.
    #[serde(with = "ms")]
    pub delay: Duration,
    /// `watch_options.followSymlinks` (chokidar's default: true).
    pub follow_symlinks: bool,
    /// The app's directory, which relative `ignore_watch` entries start
    /// from.
    #[serde(skip)]
    pub base: PathBuf,
}

/// PM2's default instance variable (schema.json `instance_var`).
pub const PM2_INSTANCE_VAR: &str = "NODE_APP_INSTANCE";

/// Whether `v` is PM2's default, which `procward check` does not print.
fn is_pm2_instance_var(v: &Option<String>) -> bool {
    v.as_deref() == Some(PM2_INSTANCE_VAR)
}

/// PM2's `exec_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// One process per instance.
    Fork,
    /// PM2 runs these under Node's cluster module; procward runs each
    /// instance as a cluster worker and is its primary: it answers the
    /// worker's `listen()` with a socket it holds.
    Cluster,
}

/// PM2's restart keys, with PM2's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct RestartPolicy {
    /// PM2 `autorestart` (default true).
    pub autorestart: bool,
    /// PM2 `max_restarts` (default 16): consecutive unstable restarts before
    /// the app is errored.
    pub max_restarts: u32,
    /// PM2 `min_uptime` (default 1000 ms): a shorter run is unstable.
    #[serde(with = "ms")]
    pub min_uptime: Duration,
    /// PM2 `restart_delay` (default 0).
    #[serde(with = "ms")]
    pub restart_delay: Duration,
    /// PM2 `exp_backoff_restart_delay`: first delay of a growing backoff.
    #[serde(with = "opt_ms")]
    pub exp_backoff_restart_delay: Option<Duration>,
    /// PM2 `stop_exit_codes`: exit codes that end supervision without restart.
    pub stop_exit_codes: Vec<i32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            autorestart: true,
            max_restarts: 16,
            min_uptime: Duration::from_millis(1000),
            restart_delay: Duration::ZERO,
            exp_backoff_restart_delay: None,
            stop_exit_codes: Vec::new(),
        }
    }
}

/// How procward stops an instance it decided to stop (restart, memory,
/// reload, shutdown requested through the control API).
#[derive(Debug, Clone, Serialize)]
pub struct StopPolicy {
    /// Signal sent first (PM2 sends SIGINT; `PM2_KILL_SIGNAL` / `kill_signal`).
    #[serde(serialize_with = "ser_signal")]
    pub kill_signal: Signal,
    /// PM2 `kill_timeout` (default 1600 ms): then SIGKILL to the group.
    #[serde(with = "ms")]
    pub kill_timeout: Duration,
    /// PM2 `shutdown_with_message`: send `"shutdown"` on the IPC channel
    /// instead of the signal.
    pub shutdown_with_message: bool,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            kill_signal: Signal::SIGINT,
            kill_timeout: Duration::from_millis(1600),
            shutdown_with_message: false,
        }
    }
}

/// Where readiness comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadySource {
    /// Ready as soon as it has been spawned (PM2's "online").
    Started,
    /// `process.send('ready')` over the Node IPC channel (PM2 `wait_ready`).
    NodeIpc,
    /// `READY=1` on the instance's own `NOTIFY_SOCKET`.
    SdNotify,
    /// A TCP connect to 127.0.0.1:PORT succeeds.
    Tcp(u16),
    /// An HTTP GET of this URL answers 2xx.
    Http(String),
}

impl std::fmt::Display for ReadySource {
    /// The spelling `--ready` and `ready:` take.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadySource::Started => f.write_str("started"),
            ReadySource::NodeIpc => f.write_str("ipc"),
            ReadySource::SdNotify => f.write_str("notify"),
            ReadySource::Tcp(port) => write!(f, "tcp:{port}"),
            ReadySource::Http(url) => f.write_str(url),
        }
    }
}

impl Serialize for ReadySource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Readiness settings.
#[derive(Debug, Clone, Serialize)]
pub struct ReadySpec {
    /// The source.
    pub source: ReadySource,
    /// PM2 `listen_timeout` (default 3000 ms).
    #[serde(with = "ms")]
    pub listen_timeout: Duration,
    /// When true, hitting `listen_timeout` is a failed start; PM2 treats the
    /// instance as ready anyway (the default).
    pub strict: bool,
}

impl Default for ReadySpec {
    fn default() -> Self {
        ReadySpec {
            source: ReadySource::Started,
            listen_timeout: Duration::from_millis(3000),
            strict: false,
        }
    }
}

impl AppSpec {
    /// An app running `argv` with PM2's defaults for everything else
    /// (`NODE_APP_INSTANCE` included: the plain wrap removes it).
    pub fn new(name: impl Into<String>, argv: Vec<OsString>) -> Self {
        AppSpec {
            name: name.into(),
            argv,
            cwd: None,
            env: Vec::new(),
            env_keys: Vec::new(),
            instances: 1,
            exec_mode: ExecMode::Fork,
            listen: Vec::new(),
            uid: None,
            gid: None,
            restart: RestartPolicy::default(),
            stop: StopPolicy::default(),
            ready: ReadySpec::default(),
            max_memory_restart: None,
            max_memory_hard: None,
            watchdog: None,
            instance_var: Some(PM2_INSTANCE_VAR.into()),
            logs: super::logs::LogSpec::default(),
            cron_restart: None,
            watch: None,
        }
    }

    /// The memory at which a memory restart escalates to SIGKILL at once:
    /// `max_memory_hard`, else 1.5 times `max_memory_restart`.
    pub fn memory_hard_limit(&self) -> Option<u64> {
        let soft = self.max_memory_restart?;
        Some(
            self.max_memory_hard
                .unwrap_or(soft.saturating_add(soft / 2))
                .max(soft),
        )
    }
}

fn ser_os_vec<S: serde::Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|a| a.to_string_lossy()))
}

fn ser_signal<S: serde::Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(sig.as_str())
}

mod ms {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod opt_ms {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }
}
