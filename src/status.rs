//! What `/status` and `/readyz` show: a snapshot the supervisor publishes,
//! the heartbeat `/healthz` reads, and the handles that carry them. Plain data, so the HTTP server needs
//! nothing of the supervisor's internals.
//!
//! The JSON follows `pm2 jlist` where the same fact exists (`name`, `pm_id`,
//! `pid`, `status`, `restart_time`, `pm_uptime` in Unix milliseconds,
//! `monit.memory` in bytes and `monit.cpu` in percent of one core; pm2
//! lib/God/ActionMethods.js `getMonitorData`). Environment values and
//! arguments are never part of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};
use serde::Serialize;
use tokio::sync::watch;

/// What the sampler and the HTTP server are handed at startup.
pub struct Handles {
    /// How often to sample; `None` when nothing needs samples.
    pub sample_interval: Option<Duration>,
    /// The instances' main processes, with their memory limits.
    pub roots: watch::Receiver<Vec<crate::resources::Root>>,
    /// The latest `/status` snapshot.
    pub status: watch::Receiver<Arc<Status>>,
    /// The supervisor loop's heartbeat.
    pub heartbeat: Arc<Heartbeat>,
    /// The registry, when metrics are on.
    pub registry: Option<Registry>,
    /// Counter of malformed or refused HTTP requests.
    pub http_dropped: Option<IntCounter>,
    /// Counter of connections refused over the connection cap.
    pub http_busy: Option<IntCounter>,
    /// Counter of refused control requests.
    pub control_refused: Option<IntCounter>,
    /// Changes whenever a metric does.
    pub generation: Arc<AtomicU64>,
}

/// Every app and instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// procward's version.
    pub version: &'static str,
    /// `supervise` (procward started the apps) or `observe` (it watches
    /// apps it did not start).
    pub mode: &'static str,
    /// The apps, in process-file order.
    pub apps: Vec<AppStatus>,
}

/// One app.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    /// Its name.
    pub name: String,
    /// Its `max_memory_restart`, bytes.
    pub memory_limit: Option<u64>,
    /// PM2's `exec_mode`: fork or cluster.
    pub mode: &'static str,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
}

/// One instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// Position within the app (`NODE_APP_INSTANCE`).
    pub instance: u32,
    /// Position among every instance of every app (PM2's `pm_id`).
    pub pm_id: usize,
    /// Its main process, if one runs.
    pub pid: Option<i32>,
    /// Its state (starting, online, stopping, waiting, stopped, errored).
    pub status: &'static str,
    /// Whether it is ready.
    pub ready: bool,
    /// Restarts, all reasons (PM2's `restart_time`).
    pub restart_time: u64,
    /// Restarts by reason; reasons with none are left out.
    pub restarts: BTreeMap<&'static str, u64>,
    /// Why it was last restarted.
    pub last_reason: Option<&'static str>,
    /// How its last process ended (`exit code 1`, `killed by SIGKILL`).
    pub last_exit: Option<String>,
    /// Unix time its process started, milliseconds.
    pub pm_uptime: Option<u64>,
    /// Seconds since its process started.
    pub uptime_seconds: Option<f64>,
    /// Resident memory and CPU use of its process tree.
    pub monit: Monit,
}

/// Resource use of an instance's process tree at the last sample.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Monit {
    /// Resident memory (RSS), bytes.
    pub memory: u64,
    /// Proportional set size (PSS), bytes, where available.
    pub pss: Option<u64>,
    /// CPU use over the last sample interval, percent of one core.
    pub cpu: f64,
    /// User plus system CPU time of the live processes, seconds.
    pub cpu_seconds: f64,
    /// Processes in the tree.
    pub processes: u32,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
}

impl Status {
    /// The instances that are not ready, as `app/instance (state)`.
    pub fn not_ready(&self) -> Vec<String> {
        self.apps
            .iter()
            .flat_map(|a| {
                a.instances
                    .iter()
                    .filter(|i| !i.ready)
                    .map(move |i| format!("{}/{} ({})", a.name, i.instance, i.status))
            })
            .collect()
    }
}

/// When the supervisor loop last ran, for `/healthz`.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records that the loop is running now.
    pub fn beat(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}
