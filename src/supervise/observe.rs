//! What the supervisor shows the outside: metrics, the `/status` snapshot,
//! the heartbeat, and the list of instance roots the sampler reads.
//!
//! The supervisor calls in here on every transition and sample; this keeps
//! the observation bookkeeping out of the state machine itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::error;

use crate::config::AgentSettings;
use crate::exit::ExitStatus;
use crate::init::signals;
use crate::metrics::{AppLabels, Metrics};
use crate::resources::{Root, TreeUsage};
use crate::status::{AppStatus, Handles, Heartbeat, InstanceStatus, Monit, Status};
use crate::supervise::policy::Reason;
use crate::supervise::state::State;
use crate::supervise::{App, Slot};

/// The supervisor's observation state.
pub struct Observer {
    metrics: Option<Metrics>,
    roots: watch::Sender<Vec<Root>>,
    status: watch::Sender<Arc<Status>>,
    heartbeat: Arc<Heartbeat>,
    usage: Vec<Vec<Usage>>,
    sample_interval: Option<Duration>,
    dirty: bool,
}

/// The last sample of one instance.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    tree: Option<TreeUsage>,
    cpu_percent: f64,
    /// CPU seconds and when, at the start of the current CPU window.
    cpu_base: Option<(i32, f64, Instant)>,
}

impl Observer {
    /// Observation for these apps; metrics only when `--metrics` is given.
    pub fn new(apps: &[App], agent: &AgentSettings) -> Observer {
        let metrics = agent.metrics_addr.and_then(|_| {
            let labels: Vec<AppLabels> = apps
                .iter()
                .map(|a| AppLabels {
                    name: a.spec.name.clone(),
                    instances: a.instances.len() as u32,
                    memory_limit: a.spec.max_memory_restart,
                })
                .collect();
            let reasons = Reason::ALL.map(Reason::as_str);
            Metrics::new(&labels, agent.metrics_compat, &reasons, &State::NAMES, true)
                .map_err(|e| error!(error = %e, "cannot register metrics; /metrics is empty"))
                .ok()
        });
        let sampled = agent.metrics_addr.is_some()
            || apps.iter().any(|a| a.spec.max_memory_restart.is_some());
        Observer {
            metrics,
            roots: watch::channel(Vec::new()).0,
            // Until the first snapshot: no apps yet, but the mode is known.
            status: watch::channel(Arc::new(Status {
                version: env!("CARGO_PKG_VERSION"),
                mode: "supervise",
                ..Status::default()
            }))
            .0,
            heartbeat: Arc::new(Heartbeat::new()),
            usage: apps
                .iter()
                .map(|a| vec![Usage::default(); a.instances.len()])
                .collect(),
            sample_interval: sampled.then_some(agent.sample_interval),
            dirty: true,
        }
    }

    /// Handles for the sampler and the HTTP server.
    pub fn handles(&self) -> Handles {
        Handles {
            sample_interval: self.sample_interval,
            roots: self.roots.subscribe(),
            status: self.status.subscribe(),
            heartbeat: self.heartbeat.clone(),
            registry: self.metrics.as_ref().map(Metrics::registry),
            http_dropped: self.metrics.as_ref().map(|m| m.dropped("http")),
            http_busy: self.metrics.as_ref().map(|m| m.dropped("http_busy")),
            control_refused: self.metrics.as_ref().map(|m| m.dropped("control")),
            generation: self
                .metrics
                .as_ref()
                .map(Metrics::generation)
                .unwrap_or_default(),
        }
    }

    /// After the instance at `slot` went from `prev` to its current state.
    pub fn on_transition(&mut self, apps: &[App], (a, i): Slot, prev: &State) {
        self.dirty = true;
        let inst = &apps[a].instances[i];
        let next = &inst.state;
        let new_process = next.pid().is_some() && next.pid() != prev.pid();
        let process_gone = prev.pid().is_some() && next.pid() != prev.pid();
        if new_process || process_gone {
            self.usage[a][i] = Usage::default();
            self.publish_roots(apps);
        }
        let Some(m) = &mut self.metrics else { return };
        let index = State::NAMES
            .iter()
            .position(|n| *n == next.name())
            .unwrap_or(0);
        m.state(a, i, index, next.pid().is_some(), next.is_ready());
        m.restarts(a, i, &inst.restarts);
        if process_gone && next.pid().is_none() {
            m.no_process(a, i);
        }
        if let (true, State::Starting { since, .. } | State::Online { since, .. }) =
            (new_process, next)
        {
            m.started(a, i, *since);
        }
        if let State::Online {
            since, ready_at, ..
        } = next
        {
            if !prev.is_ready() || new_process {
                m.became_ready(a, *ready_at - *since);
            }
        }
    }

    /// Counts a reaped exit of one of the instance's processes: its main
    /// process, or the old or new one of an overlapping reload.
    pub fn exited(&mut self, (a, i): Slot, status: ExitStatus) {
        let Some(m) = &mut self.metrics else { return };
        match status {
            ExitStatus::Code(c) => m.exited(a, i, Some(c), None),
            ExitStatus::Signal { signo, .. } => m.exited(a, i, None, Some(&signals::name(signo))),
        }
    }

    /// App `a` now has as many instances as `apps` says: usage and
    /// metric series for the new ones, none left for removed ones.
    pub fn resize(&mut self, apps: &[App], a: usize) {
        let n = apps[a].instances.len();
        self.usage[a].resize(n, Usage::default());
        if let Some(m) = &mut self.metrics {
            if let Err(e) = m.resize(a, n) {
                error!(app = %apps[a].spec.name, error = %e, "cannot resize the app's metrics");
            }
        }
        self.publish_roots(apps);
        self.dirty = true;
    }

    /// Records a sample; returns the resident bytes of each instance's
    /// current process tree, for the memory caps.
    pub fn on_samples(
        &mut self,
        by_pid: &HashMap<i32, Slot>,
        samples: Vec<TreeUsage>,
    ) -> BTreeMap<Slot, u64> {
        let now = Instant::now();
        let mut rss = BTreeMap::new();
        for u in samples {
            let Some(&(a, i)) = by_pid.get(&u.pid) else {
                continue;
            };
            if u.processes == 0 {
                continue;
            }
            let mut u = u;
            let last = &mut self.usage[a][i];
            if let Some(prev) = last.tree.filter(|p| p.pid == u.pid) {
                // Fields read only on some passes keep their last value.
                u.fds = u.fds.or(prev.fds);
                u.pss_bytes = u.pss_bytes.or(prev.pss_bytes);
            }
            // CPU is averaged over windows of at least half the interval:
            // samples taken between passes, near a memory cap, come
            // milliseconds apart, too short for clock-tick CPU times.
            match last.cpu_base {
                Some((pid, cpu, at)) if pid == u.pid => {
                    let wall = now - at;
                    if wall >= self.sample_interval.unwrap_or_default() / 2 && !wall.is_zero() {
                        last.cpu_percent =
                            ((u.cpu_seconds - cpu).max(0.0) / wall.as_secs_f64() * 1000.0).round()
                                / 10.0;
                        last.cpu_base = Some((u.pid, u.cpu_seconds, now));
                    }
                }
                _ => last.cpu_base = Some((u.pid, u.cpu_seconds, now)),
            }
            last.tree = Some(u);
            if let Some(m) = &mut self.metrics {
                m.usage(a, i, &u);
            }
            rss.insert((a, i), u.rss_bytes);
            self.dirty = true;
        }
        rss
    }

    /// A custom metric from the app's process `pid`.
    pub fn app_metric(&mut self, by_pid: &HashMap<i32, Slot>, pid: i32, name: &str, value: f64) {
        if let (Some(m), Some(&(a, i))) = (&mut self.metrics, by_pid.get(&pid)) {
            m.app_metric(a, i, name, value);
        }
    }

    /// App `a`'s counters of log bytes dropped and lines split: the
    /// registered ones with `--metrics`, else counters nobody reads.
    pub fn log_counters(&self, a: usize) -> crate::logs::Counters {
        match &self.metrics {
            Some(m) => m.log_counters(a),
            None => {
                let c = || prometheus::IntCounter::new("unregistered", "-").expect("valid name");
                (c(), c())
            }
        }
    }

    /// A reload of an instance of app `a` ended with `result`.
    pub fn reloaded(&mut self, a: usize, result: &str) {
        self.dirty = true;
        if let Some(m) = &self.metrics {
            m.reloaded(a, result);
        }
    }

    /// `n` inputs from the apps (`ipc`, `notify`, ...) were dropped.
    pub fn input_dropped(&self, input: &str, n: u64) {
        if let Some(m) = &self.metrics {
            m.dropped(input).inc_by(n);
        }
    }

    /// Once per loop turn: beat, bring counters up to date, publish the
    /// snapshot if anything changed and someone reads it.
    pub fn tick(&mut self, apps: &[App], orphans: u64, signals: u64) {
        self.heartbeat.beat();
        if let Some(m) = &mut self.metrics {
            m.counts(orphans, signals);
        }
        if self.dirty && self.status.receiver_count() > 0 {
            self.status.send_replace(Arc::new(self.snapshot(apps)));
            self.dirty = false;
        }
    }

    fn publish_roots(&self, apps: &[App]) {
        let pids = apps
            .iter()
            .flat_map(|a| {
                let (cap, hard) = (a.spec.max_memory_restart, a.spec.memory_hard_limit());
                a.instances.iter().filter_map(move |i| {
                    Some(Root {
                        pid: i.state.pid()?,
                        cap,
                        hard,
                    })
                })
            })
            .collect();
        self.roots.send_replace(pids);
    }

    fn snapshot(&self, apps: &[App]) -> Status {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut pm_id = 0;
        let apps = apps
            .iter()
            .enumerate()
            .map(|(a, app)| AppStatus {
                name: app.spec.name.clone(),
                memory_limit: app.spec.max_memory_restart,
                mode: match app.spec.exec_mode {
                    crate::config::app::ExecMode::Fork => "fork",
                    crate::config::app::ExecMode::Cluster => "cluster",
                },
                instances: app
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(i, inst)| {
                        pm_id += 1;
                        let since = match inst.state {
                            State::Starting { since, .. }
                            | State::Online { since, .. }
                            | State::Stopping { since, .. } => Some(since.elapsed()),
                            State::Emptying { .. }
                            | State::Spawning { .. }
                            | State::Waiting { .. }
                            | State::Stopped { .. }
                            | State::Errored { .. } => None,
                        };
                        let u = self.usage[a][i];
                        let t = u
                            .tree
                            .filter(|t| Some(t.pid) == inst.state.pid())
                            .unwrap_or_default();
                        InstanceStatus {
                            instance: inst.index,
                            pm_id: pm_id - 1,
                            pid: inst.state.pid(),
                            status: inst.state.name(),
                            ready: inst.state.is_ready(),
                            restart_time: inst.total_restarts(),
                            restarts: Reason::ALL
                                .iter()
                                .zip(inst.restarts)
                                .filter(|(_, n)| *n > 0)
                                .map(|(r, n)| (r.as_str(), n))
                                .collect::<BTreeMap<_, _>>(),
                            last_reason: inst.restarts_last(),
                            last_exit: inst.last_status.map(|s| s.to_string()),
                            pm_uptime: since.map(|d| now_unix.saturating_sub(d).as_millis() as u64),
                            uptime_seconds: since
                                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
                            monit: Monit {
                                memory: t.rss_bytes,
                                pss: t.pss_bytes,
                                cpu: u.cpu_percent,
                                cpu_seconds: t.cpu_seconds,
                                processes: t.processes,
                                threads: t.threads,
                                fds: t.fds.unwrap_or(0),
                            },
                        }
                    })
                    .collect(),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            mode: "supervise",
            apps,
        }
    }
}
