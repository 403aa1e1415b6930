//! One observed app: its phase, its restart counts and its last sample.
//!
//! ```text
//!   Absent ── a process matches ──▶ Running ── memory above the cap: kill_signal ──▶ Stopping
//!     ▲                                │ gone (external)                                │ gone
//!     └────────────────────────────────┴────────────────────────────────────────────────┘
//!   Stopping ── kill_timeout ──▶ SIGKILL, still Stopping
//! ```
//!
//! A main process found after another has gone is a restart: `memory` when
//! procward's memory stop ended the last one (counted when the stop is
//! sent), `external` otherwise. The counts live here, in procward's own
//! process, so they carry across the app container's restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::find::{self, Matcher, Proc};
use super::{ObservedSpec, REASONS};
use crate::config::ReadySource;
use crate::metrics::Metrics;
use crate::ready::Report;
use crate::resources::procfs::{ProcScan, TreeUsage};
use crate::status::{AppStatus, InstanceStatus, Monit};
use crate::supervise::state::State;

/// Index of `external` in [`REASONS`].
const EXTERNAL: usize = 0;
/// Index of `memory` in [`REASONS`].
const MEMORY: usize = 1;

/// What `/status` says in place of an exit status.
pub const EXIT_NOT_VISIBLE: &str =
    "not visible: procward did not start this process, so only its parent can read its exit status";

/// Where an observed app is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No process matches.
    Absent,
    /// Its main process runs.
    Running {
        /// The main process.
        main: Proc,
        /// When it started.
        since: Instant,
        /// When its probe answered (at once without a probe).
        ready_at: Option<Instant>,
    },
    /// procward sent the memory stop and waits for the process to go.
    Stopping {
        /// The main process.
        main: Proc,
        /// When it started.
        since: Instant,
        /// When SIGKILL is due; `None` once sent.
        kill_at: Option<Instant>,
    },
}

/// One observed app and everything procward knows of it.
pub struct Watched {
    /// What to observe.
    pub spec: ObservedSpec,
    phase: Phase,
    /// The roots of its process trees, main first.
    trees: Vec<Proc>,
    /// A main process was seen before: the next one is a restart.
    seen_one: bool,
    /// The last main process went after procward's memory stop.
    after_memory: bool,
    /// Main processes that have gone.
    gone: u64,
    /// Restarts, indexed like [`REASONS`].
    restarts: [u64; REASONS.len()],
    usage: Option<TreeUsage>,
    cpu_percent: f64,
    sampled_at: Option<Instant>,
    /// A sample with fds and PSS is due (a new process appeared).
    fresh: bool,
    probe: Option<JoinHandle<()>>,
    /// The process a signal was refused for, logged once.
    denied: Option<Proc>,
    /// The state last published to the metrics.
    published: Option<(&'static str, Option<i32>, bool, [u64; REASONS.len()])>,
}

impl Watched {
    /// An app not seen yet.
    pub fn new(spec: ObservedSpec) -> Watched {
        Watched {
            spec,
            phase: Phase::Absent,
            trees: Vec::new(),
            seen_one: false,
            after_memory: false,
            gone: 0,
            restarts: [0; REASONS.len()],
            usage: None,
            cpu_percent: 0.0,
            sampled_at: None,
            fresh: false,
            probe: None,
            denied: None,
            published: None,
        }
    }

    fn main(&self) -> Option<Proc> {
        match self.phase {
            Phase::Absent => None,
            Phase::Running { main, .. } | Phase::Stopping { main, .. } => Some(main),
        }
    }

    fn since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Absent => None,
            Phase::Running { since, .. } | Phase::Stopping { since, .. } => Some(since),
        }
    }

    /// When SIGKILL is due, if it is.
    pub fn kill_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Stopping { kill_at, .. } => kill_at,
            Phase::Absent | Phase::Running { .. } => None,
        }
    }

    /// Whether /proc must be listed: to find a main process, or every
    /// pass for [`Matcher::AllTrees`], whose trees come and go.
    pub fn needs_listing(&self) -> bool {
        self.main().is_none() || matches!(self.spec.matcher, Matcher::AllTrees)
    }

    /// Notices that the main process has gone.
    pub fn check_main(&mut self) {
        let Some(main) = self.main() else { return };
        if find::alive(main) {
            return;
        }
        self.gone += 1;
        self.after_memory = matches!(self.phase, Phase::Stopping { .. });
        if self.after_memory {
            info!(app = %self.spec.name, pid = main.pid, "main process gone after the memory stop");
        } else {
            warn!(app = %self.spec.name, pid = main.pid,
                  "main process gone; its exit status is not visible (not a child of procward)");
        }
        self.phase = Phase::Absent;
        self.trees.clear();
        self.usage = None;
        self.sampled_at = None;
        if let Some(p) = self.probe.take() {
            p.abort();
        }
    }

    /// Takes the trees found in /proc (main first).
    pub fn found(&mut self, trees: Vec<Proc>, now: Instant, tx: &mpsc::Sender<Report>) {
        if self.main().is_some() {
            // AllTrees: the main process stays, the other trees follow /proc.
            let main = self.main();
            self.trees = trees;
            if let Some(m) = main {
                self.trees.retain(|t| *t != m);
                self.trees.insert(0, m);
            }
            return;
        }
        let Some(&main) = trees.first() else { return };
        self.trees = trees;
        if self.seen_one && !self.after_memory {
            self.restarts[EXTERNAL] += 1;
            warn!(app = %self.spec.name, pid = main.pid, reason = "external",
                  "new main process: counted as a restart");
        } else if self.seen_one {
            info!(app = %self.spec.name, pid = main.pid, "new main process after the memory stop");
        } else {
            info!(app = %self.spec.name, pid = main.pid, "found the main process");
        }
        self.seen_one = true;
        self.after_memory = false;
        self.fresh = true;
        let since = started_at(main, now);
        let ready_at = (self.spec.ready == ReadySource::Started).then_some(now);
        self.phase = Phase::Running {
            main,
            since,
            ready_at,
        };
        if ready_at.is_none() {
            self.probe = Some(tokio::spawn(crate::ready::probe::run(
                self.spec.ready.clone(),
                main.pid,
                tx.clone(),
            )));
        }
        if self.spec.max_memory_restart.is_some() {
            self.check_permission(main);
        }
    }

    /// Logs, once per process, that the memory stop cannot reach it.
    fn check_permission(&mut self, p: Proc) {
        if let Err(Errno::EPERM) = kill(Pid::from_raw(p.pid), None) {
            self.refused(p);
        }
    }

    fn refused(&mut self, p: Proc) {
        if self.denied == Some(p) {
            return;
        }
        self.denied = Some(p);
        // SAFETY: geteuid(2) cannot fail.
        let uid = unsafe { libc::geteuid() };
        error!(app = %self.spec.name, pid = p.pid, procward_uid = uid,
               "not permitted to signal the app's main process: max_memory_restart cannot stop it. \
                To fix it, run procward with the app's uid (runAsUser in both containers' \
                securityContext), or give procward CAP_KILL");
    }

    /// The probe of process `pid` answered; true if that changed anything.
    pub fn ready(&mut self, pid: i32, now: Instant) -> bool {
        match &mut self.phase {
            Phase::Running { main, ready_at, .. } if main.pid == pid && ready_at.is_none() => {
                *ready_at = Some(now);
                info!(app = %self.spec.name, pid, "ready");
                true
            }
            _ => false,
        }
    }

    /// Time from start to ready of the current process, once it is ready.
    pub fn time_to_ready(&self) -> Option<Duration> {
        match self.phase {
            Phase::Running {
                since,
                ready_at: Some(at),
                ..
            } => Some(at.saturating_duration_since(since)),
            _ => None,
        }
    }

    /// Samples the app's trees, summed, into its usage and the metrics.
    pub fn sample(
        &mut self,
        scan: &mut ProcScan,
        slow: bool,
        now: Instant,
        metrics: Option<(&mut Metrics, usize)>,
    ) {
        let Some(main) = self.main() else { return };
        let roots: Vec<i32> = self.trees.iter().map(|t| t.pid).collect();
        let mut out = Vec::with_capacity(roots.len());
        let slow = slow || self.fresh;
        self.fresh = false;
        scan.scan(&roots, slow, &mut out);
        let mut u = TreeUsage {
            pid: main.pid,
            ..TreeUsage::default()
        };
        for t in &out {
            u.processes += t.processes;
            u.rss_bytes += t.rss_bytes;
            u.cpu_seconds += t.cpu_seconds;
            u.threads += t.threads;
            if let Some(f) = t.fds {
                *u.fds.get_or_insert(0) += f;
            }
            if let Some(p) = t.pss_bytes {
                *u.pss_bytes.get_or_insert(0) += p;
            }
        }
        if u.processes == 0 {
            return;
        }
        if let Some(prev) = self.usage.filter(|p| p.pid == u.pid) {
            // Fields read only on some passes keep their last value.
            u.fds = u.fds.or(prev.fds);
            u.pss_bytes = u.pss_bytes.or(prev.pss_bytes);
            if let Some(at) = self.sampled_at {
                let wall = (now - at).as_secs_f64();
                if wall > 0.0 {
                    self.cpu_percent =
                        ((u.cpu_seconds - prev.cpu_seconds).max(0.0) / wall * 1000.0).round()
                            / 10.0;
                }
            }
        }
        self.usage = Some(u);
        self.sampled_at = Some(now);
        if let Some((m, a)) = metrics {
            m.usage(a, 0, &u);
        }
    }

    /// Above the cap, sends the main process its stop signal and arms the
    /// SIGKILL timer; counts a restart with reason `memory`.
    pub fn cap_memory(&mut self, now: Instant) {
        let (Some(limit), Phase::Running { main, since, .. }) =
            (self.spec.max_memory_restart, self.phase)
        else {
            return;
        };
        let Some(rss) = self
            .usage
            .filter(|u| u.pid == main.pid)
            .map(|u| u.rss_bytes)
        else {
            return;
        };
        if rss <= limit || !find::alive(main) {
            return;
        }
        let sig = self.spec.kill_signal;
        match kill(Pid::from_raw(main.pid), sig) {
            Ok(()) => {
                warn!(app = %self.spec.name, pid = main.pid, rss_bytes = rss, max_memory_restart = limit,
                      signal = %sig, kill_timeout_ms = self.spec.kill_timeout.as_millis() as u64,
                      "memory above max_memory_restart; stopping the app gracefully");
                self.restarts[MEMORY] += 1;
                self.phase = Phase::Stopping {
                    main,
                    since,
                    kill_at: Some(now + self.spec.kill_timeout),
                };
                if let Some(p) = self.probe.take() {
                    p.abort();
                }
            }
            Err(Errno::EPERM) => self.refused(main),
            Err(e) => warn!(app = %self.spec.name, pid = main.pid, error = %e,
                            "sending the memory stop failed"),
        }
    }

    /// Sends SIGKILL once kill_timeout has passed since the stop signal.
    pub fn escalate(&mut self, now: Instant) {
        let Phase::Stopping {
            main,
            kill_at: Some(at),
            since,
        } = self.phase
        else {
            return;
        };
        if now < at {
            return;
        }
        self.phase = Phase::Stopping {
            main,
            since,
            kill_at: None,
        };
        if !find::alive(main) {
            return;
        }
        warn!(app = %self.spec.name, pid = main.pid,
              kill_timeout_ms = self.spec.kill_timeout.as_millis() as u64,
              "still running kill_timeout after the stop signal; sending SIGKILL");
        match kill(Pid::from_raw(main.pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(Errno::EPERM) => self.refused(main),
            Err(e) => warn!(app = %self.spec.name, pid = main.pid, error = %e, "SIGKILL failed"),
        }
    }

    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Absent => "waiting",
            Phase::Running { ready_at: None, .. } => "starting",
            Phase::Running { .. } => "online",
            Phase::Stopping { .. } => "stopping",
        }
    }

    fn is_ready(&self) -> bool {
        matches!(
            self.phase,
            Phase::Running {
                ready_at: Some(_),
                ..
            }
        )
    }

    /// Brings app `a`'s state, readiness and restart series up to date.
    pub fn publish(&mut self, a: usize, metrics: Option<&mut Metrics>) {
        let now = (
            self.state_name(),
            self.main().map(|m| m.pid),
            self.is_ready(),
            self.restarts,
        );
        if self.published == Some(now) {
            return;
        }
        let new_process = self.published.map(|p| p.1) != Some(now.1);
        self.published = Some(now);
        let Some(m) = metrics else { return };
        let index = State::NAMES.iter().position(|n| *n == now.0).unwrap_or(0);
        m.state(a, 0, index, now.1.is_some(), now.2);
        m.restarts(a, 0, &self.restarts);
        match (new_process, self.since()) {
            (true, Some(since)) => m.started(a, 0, since),
            (true, None) => m.no_process(a, 0),
            (false, _) => {}
        }
    }

    /// The app as `/status` shows it.
    pub fn status(&self) -> AppStatus {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let age = self.since().map(|s| s.elapsed());
        let u = self
            .usage
            .filter(|u| Some(u.pid) == self.main().map(|m| m.pid))
            .unwrap_or_default();
        AppStatus {
            name: self.spec.name.clone(),
            memory_limit: self.spec.max_memory_restart,
            mode: "observed",
            instances: vec![InstanceStatus {
                instance: 0,
                pm_id: 0,
                pid: self.main().map(|m| m.pid),
                status: self.state_name(),
                ready: self.is_ready(),
                restart_time: self.restarts.iter().sum(),
                last_reason: None,
                restarts: REASONS
                    .iter()
                    .zip(self.restarts)
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (*r, n))
                    .collect::<BTreeMap<_, _>>(),
                last_exit: (self.gone > 0).then(|| EXIT_NOT_VISIBLE.to_string()),
                pm_uptime: age.map(|d| now_unix.saturating_sub(d).as_millis() as u64),
                uptime_seconds: age.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
                monit: Monit {
                    memory: u.rss_bytes,
                    pss: u.pss_bytes,
                    cpu: self.cpu_percent,
                    cpu_seconds: u.cpu_seconds,
                    processes: u.processes,
                    threads: u.threads,
                    fds: u.fds.unwrap_or(0),
                },
            }],
        }
    }
}

/// The matcher as logs show it.
pub fn describe(m: &Matcher) -> String {
    match m {
        Matcher::Cmdline(re) => format!("command line ~ {}", re.as_str()),
        Matcher::Exe(p) => format!("executable {}", p.display()),
        Matcher::AllTrees => "every process tree but procward's own and PID 1".into(),
    }
}

/// When process `p` started, from its start time (clock ticks after boot,
/// proc(5)) and the system's uptime (`/proc/uptime`, seconds).
fn started_at(p: Proc, now: Instant) -> Instant {
    // SAFETY: sysconf(3) with a valid name.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok());
    match uptime {
        Some(up) => {
            let age = (up - p.start as f64 / tck).max(0.0);
            now.checked_sub(Duration::from_secs_f64(age)).unwrap_or(now)
        }
        None => now,
    }
}
