//! The Prometheus registry and every metric family procward exports.
//!
//! Names follow the Prometheus naming rules (a `procward_` prefix, base
//! units, `_total` for counters, `_seconds`, `_bytes`). Per-instance
//! families carry the labels `app` and `instance`. Handles for each
//! instance are resolved once, so updates are plain atomic operations.
//! Only the supervisor updates them (it owns the state they describe); the
//! HTTP server only gathers. The exceptions are [`Metrics::dropped`], a
//! counter handed to the input readers that drop bad input, and
//! [`Metrics::log_counters`], handed to the threads that capture app output.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Counter, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::config::MetricsCompat;
use crate::resources::TreeUsage;

/// Custom metrics (`axm:monitor`) kept per app; further names are dropped
/// and counted, so an app cannot explode the series count.
pub const MAX_APP_METRICS: usize = 32;
/// Longest custom metric name kept, in bytes.
pub const MAX_APP_METRIC_NAME: usize = 64;

/// Buckets of the time-to-ready histogram, seconds.
const READY_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// What the metrics need to know about an app up front.
#[derive(Debug, Clone)]
pub struct AppLabels {
    /// Its name (`app` label).
    pub name: String,
    /// Its number of instances.
    pub instances: u32,
    /// Its `max_memory_restart`, bytes.
    pub memory_limit: Option<u64>,
}

/// `procward_log_lines_dropped_total`: read from the log writer when
/// gathered, since the lines are dropped outside the supervisor.
struct LogLinesDropped(IntCounter);

impl LogLinesDropped {
    fn new() -> Result<Self> {
        Ok(LogLinesDropped(IntCounter::new(
            "procward_log_lines_dropped_total",
            "procward's own log lines dropped because stderr was not read fast enough",
        )?))
    }
}

impl prometheus::core::Collector for LogLinesDropped {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now = crate::own_log::dropped();
        self.0.inc_by(now.saturating_sub(self.0.get()));
        self.0.collect()
    }
}

/// Every metric family, registered in one registry.
pub struct Metrics {
    registry: Registry,
    instances: Vec<Vec<InstanceMetrics>>,
    time_to_ready: Vec<Histogram>,
    exits: IntCounterVec,
    reloads: IntCounterVec,
    orphans: IntCounter,
    signals: IntCounter,
    dropped: IntCounterVec,
    log_dropped: IntCounterVec,
    log_split: IntCounterVec,
    app_metric: GaugeVec,
    app_metric_names: Vec<HashSet<String>>,
    app_names: Vec<String>,
    generation: Arc<AtomicU64>,
    /// What a new instance's series are made from ([`Metrics::resize`]).
    families: Families,
}

/// The per-instance families and what their series are made of, kept so
/// that instances can be added and removed while procward runs.
struct Families {
    restarts: IntCounterVec,
    up: IntGaugeVec,
    ready: IntGaugeVec,
    state: IntGaugeVec,
    start_time: GaugeVec,
    rss: IntGaugeVec,
    pss: IntGaugeVec,
    limit: IntGaugeVec,
    cpu: prometheus::CounterVec,
    threads: IntGaugeVec,
    fds: IntGaugeVec,
    processes: IntGaugeVec,
    /// pm2_up, pm2_cpu, pm2_memory, pm2_uptime, pm2_instances, pm2_restarts.
    pm2: Option<(
        IntGaugeVec,
        GaugeVec,
        IntGaugeVec,
        GaugeVec,
        IntGaugeVec,
        IntGaugeVec,
    )>,
    reasons: Vec<String>,
    states: Vec<String>,
    exits_seen: bool,
    memory_limits: Vec<Option<u64>>,
}

/// One instance's series.
struct InstanceMetrics {
    restarts: Vec<IntCounter>,
    up: IntGauge,
    ready: IntGauge,
    state: Vec<IntGauge>,
    start_time: Gauge,
    started: Option<Instant>,
    rss: IntGauge,
    pss: IntGauge,
    cpu: Counter,
    /// Root pid and CPU seconds of the last sample, to turn per-process
    /// figures into a counter that survives restarts.
    last_cpu: (i32, f64, Instant),
    threads: IntGauge,
    fds: IntGauge,
    processes: IntGauge,
    pm2: Option<Pm2Series>,
}

/// The PM2 exporters' series for one instance. Names, meanings and the
/// `name`/`instance` labels follow the common exporter
/// (saikatharryc/pm2-prometheus-exporter `exporter.js`): `pm2_up` is 1 when
/// online, `pm2_cpu` a percentage of one core, `pm2_memory` bytes,
/// `pm2_uptime` seconds, `pm2_restarts` PM2's `restart_time`,
/// `pm2_instances` the app's instance count.
struct Pm2Series {
    up: IntGauge,
    cpu: Gauge,
    memory: IntGauge,
    uptime: Gauge,
    restarts: IntGauge,
}

type Result<T> = std::result::Result<T, prometheus::Error>;

fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn int_gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    reg(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

impl Metrics {
    /// Registers every family for these apps; `reasons` and `states` are
    /// the label values of the restart counters and the state series, in
    /// the order [`Metrics::restarts`] and [`Metrics::state`] index them.
    /// With `exits_seen`, a zero exit series is made up front for each
    /// instance (an agent that cannot see exit statuses makes none).
    pub fn new(
        apps: &[AppLabels],
        compat: Option<MetricsCompat>,
        reasons: &[&str],
        states: &[&str],
        exits_seen: bool,
    ) -> Result<Metrics> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        const APP_INSTANCE: &[&str] = &["app", "instance"];
        let build = int_gauges(
            &r,
            "procward_build_info",
            "procward's version; always 1",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let restarts = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "procward_restarts_total",
                    "Restarts of an instance, by reason",
                ),
                &["app", "instance", "reason"],
            )?,
        )?;
        let exits = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "procward_exits_total",
                    "Exits of an instance's main process, by exit code or killing signal",
                ),
                &["app", "instance", "code", "signal"],
            )?,
        )?;
        let reloads = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "procward_reloads_total",
                    "Reloads of an instance, by result (done, aborted, not_running)",
                ),
                &["app", "result"],
            )?,
        )?;
        if exits_seen {
            for a in apps {
                for result in ["done", "aborted"] {
                    reloads.with_label_values(&[a.name.as_str(), result]);
                }
            }
        }
        let up = int_gauges(
            &r,
            "procward_up",
            "1 while the instance has a running process",
            APP_INSTANCE,
        )?;
        let ready = int_gauges(
            &r,
            "procward_ready",
            "1 while the instance is ready",
            APP_INSTANCE,
        )?;
        let state = int_gauges(
            &r,
            "procward_state",
            "1 for the instance's current state",
            &["app", "instance", "state"],
        )?;
        let start_time = reg(
            &r,
            GaugeVec::new(
                Opts::new(
                    "procward_start_time_seconds",
                    "Unix time the instance's current process was started",
                ),
                APP_INSTANCE,
            )?,
        )?;
        let ttr = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new("procward_time_to_ready_seconds", "Time from spawn to ready")
                    .buckets(READY_BUCKETS.to_vec()),
                &["app"],
            )?,
        )?;
        let rss = int_gauges(
            &r,
            "procward_resident_memory_bytes",
            "Resident memory (RSS) of the instance's process tree",
            APP_INSTANCE,
        )?;
        let pss = int_gauges(
            &r,
            "procward_proportional_memory_bytes",
            "Proportional set size (PSS) of the instance's process tree",
            APP_INSTANCE,
        )?;
        let limit = int_gauges(
            &r,
            "procward_memory_limit_bytes",
            "max_memory_restart of the instance",
            APP_INSTANCE,
        )?;
        let cpu = reg(
            &r,
            prometheus::CounterVec::new(
                Opts::new(
                    "procward_cpu_seconds_total",
                    "User and system CPU time of the instance's process tree",
                ),
                APP_INSTANCE,
            )?,
        )?;
        let threads = int_gauges(
            &r,
            "procward_threads",
            "Threads in the instance's process tree",
            APP_INSTANCE,
        )?;
        let fds = int_gauges(
            &r,
            "procward_open_fds",
            "Open file descriptors in the instance's process tree",
            APP_INSTANCE,
        )?;
        let processes = int_gauges(
            &r,
            "procward_processes",
            "Processes in the instance's process tree",
            APP_INSTANCE,
        )?;
        let orphans = reg(
            &r,
            IntCounter::new(
                "procward_orphans_reaped_total",
                "Exit statuses reaped for processes no instance owns",
            )?,
        )?;
        let signals = reg(
            &r,
            IntCounter::new(
                "procward_signals_forwarded_total",
                "Signals forwarded to the apps",
            )?,
        )?;
        let dropped = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "procward_dropped_inputs_total",
                    "Inputs dropped as malformed or over a limit, by input",
                ),
                &["input"],
            )?,
        )?;
        r.register(Box::new(LogLinesDropped::new()?))?;
        let log_dropped = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "procward_log_bytes_dropped_total",
                    "Bytes of the app's captured output that could not be written (full disk, unwritable file)",
                ),
                &["app"],
            )?,
        )?;
        let log_split = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "procward_log_lines_split_total",
                    "Lines of the app's captured output longer than 64 KiB, written in pieces",
                ),
                &["app"],
            )?,
        )?;
        let app_metric = reg(
            &r,
            GaugeVec::new(
                Opts::new(
                    "procward_app_metric",
                    "Custom metrics reported by the app (@pm2/io axm:monitor)",
                ),
                &["app", "instance", "name"],
            )?,
        )?;
        let pm2 = match compat {
            Some(MetricsCompat::Pm2) => {
                let l = &["name", "instance"];
                let g = |n: &str, h: &str| reg(&r, GaugeVec::new(Opts::new(n, h), l)?);
                let ig = |n: &str, h: &str| int_gauges(&r, n, h, l);
                Some((
                    ig("pm2_up", "Is the process running")?,
                    g("pm2_cpu", "Process cpu usage")?,
                    ig("pm2_memory", "Process memory usage")?,
                    g("pm2_uptime", "Process uptime")?,
                    ig("pm2_instances", "Process instances")?,
                    ig("pm2_restarts", "Process restarts")?,
                ))
            }
            None => None,
        };

        let mut m = Metrics {
            time_to_ready: apps
                .iter()
                .map(|a| ttr.with_label_values(&[a.name.as_str()]))
                .collect(),
            app_metric_names: vec![HashSet::new(); apps.len()],
            app_names: apps.iter().map(|a| a.name.clone()).collect(),
            generation: Arc::new(AtomicU64::new(0)),
            registry: r,
            instances: apps.iter().map(|_| Vec::new()).collect(),
            exits,
            reloads,
            orphans,
            signals,
            dropped,
            log_dropped,
            log_split,
            app_metric,
            families: Families {
                restarts,
                up,
                ready,
                state,
                start_time,
                rss,
                pss,
                limit,
                cpu,
                threads,
                fds,
                processes,
                pm2,
                reasons: reasons.iter().map(|r| r.to_string()).collect(),
                states: states.iter().map(|s| s.to_string()).collect(),
                exits_seen,
                memory_limits: apps.iter().map(|a| a.memory_limit).collect(),
            },
        };
        for (a, app) in apps.iter().enumerate() {
            m.resize(a, app.instances.max(1) as usize)?;
        }
        Ok(m)
    }

    /// Gives app `a` exactly `n` instances' series: the series of new
    /// instances are made, every series of instances past `n` (exits and
    /// custom metrics included) is removed from the registry, so a scrape
    /// no longer shows them.
    pub fn resize(&mut self, a: usize, n: usize) -> Result<()> {
        self.touch();
        let name = self.app_names[a].clone();
        while self.instances[a].len() > n {
            self.instances[a].pop();
            let idx = self.instances[a].len().to_string();
            let f = &self.families;
            for_instance(&f.restarts, &name, &idx);
            for_instance(&self.exits, &name, &idx);
            for_instance(&f.up, &name, &idx);
            for_instance(&f.ready, &name, &idx);
            for_instance(&f.state, &name, &idx);
            for_instance(&f.start_time, &name, &idx);
            for_instance(&f.rss, &name, &idx);
            for_instance(&f.pss, &name, &idx);
            for_instance(&f.limit, &name, &idx);
            for_instance(&f.cpu, &name, &idx);
            for_instance(&f.threads, &name, &idx);
            for_instance(&f.fds, &name, &idx);
            for_instance(&f.processes, &name, &idx);
            for_instance(&self.app_metric, &name, &idx);
            if let Some((up, cpu, mem, uptime, inst, rest)) = &f.pm2 {
                let labels = [name.as_str(), idx.as_str()];
                let _ = up.remove_label_values(&labels);
                let _ = cpu.remove_label_values(&labels);
                let _ = mem.remove_label_values(&labels);
                let _ = uptime.remove_label_values(&labels);
                let _ = inst.remove_label_values(&labels);
                let _ = rest.remove_label_values(&labels);
            }
        }
        while self.instances[a].len() < n {
            let i = self.instances[a].len();
            let series = self.instance_series(a, i)?;
            self.instances[a].push(series);
        }
        if let Some((.., inst, _)) = &self.families.pm2 {
            for i in 0..n {
                inst.with_label_values(&[name.as_str(), &i.to_string()])
                    .set(n as i64);
            }
        }
        Ok(())
    }

    /// The series of instance `i` of app `a`, made now.
    fn instance_series(&self, a: usize, i: usize) -> Result<InstanceMetrics> {
        let f = &self.families;
        let idx = i.to_string();
        let labels = [self.app_names[a].as_str(), idx.as_str()];
        let memory_limit = f.memory_limits[a];
        let l = f.limit.with_label_values(&labels);
        l.set(memory_limit.map_or(0, |m| m as i64));
        if memory_limit.is_none() {
            f.limit.remove_label_values(&labels)?;
        }
        let pm2 = f
            .pm2
            .as_ref()
            .map(|(up, cpu, mem, uptime, _, rest)| Pm2Series {
                up: up.with_label_values(&labels),
                cpu: cpu.with_label_values(&labels),
                memory: mem.with_label_values(&labels),
                uptime: uptime.with_label_values(&labels),
                restarts: rest.with_label_values(&labels),
            });
        // Known from the start, so dashboards and alerts find the
        // series before the first exit.
        if f.exits_seen {
            self.exits
                .with_label_values(&[labels[0], labels[1], "0", ""]);
        }
        Ok(InstanceMetrics {
            restarts: f
                .reasons
                .iter()
                .map(|r| f.restarts.with_label_values(&[labels[0], labels[1], r]))
                .collect(),
            up: f.up.with_label_values(&labels),
            ready: f.ready.with_label_values(&labels),
            state: f
                .states
                .iter()
                .map(|s| f.state.with_label_values(&[labels[0], labels[1], s]))
                .collect(),
            start_time: f.start_time.with_label_values(&labels),
            started: None,
            rss: f.rss.with_label_values(&labels),
            pss: f.pss.with_label_values(&labels),
            cpu: f.cpu.with_label_values(&labels),
            last_cpu: (0, 0.0, Instant::now()),
            threads: f.threads.with_label_values(&labels),
            fds: f.fds.with_label_values(&labels),
            processes: f.processes.with_label_values(&labels),
            pm2,
        })
    }

    /// A number that changes whenever a value does, so a reader can reuse
    /// what it encoded while it stays the same.
    pub fn generation(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    fn touch(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The registry, for the HTTP server to gather.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The counter of inputs dropped from `input` (`http`, `ipc`, ...), for
    /// the reader that drops them.
    pub fn dropped(&self, input: &str) -> IntCounter {
        self.dropped.with_label_values(&[input])
    }

    /// App `a`'s counters of log bytes dropped and log lines split, for
    /// the threads that capture its output.
    pub fn log_counters(&self, a: usize) -> (IntCounter, IntCounter) {
        let app = [self.app_names[a].as_str()];
        (
            self.log_dropped.with_label_values(&app),
            self.log_split.with_label_values(&app),
        )
    }

    /// Sets the instance's state series (`index` into the `states` given
    /// to [`Metrics::new`]).
    pub fn state(&mut self, a: usize, i: usize, index: usize, up: bool, ready: bool) {
        self.touch();
        let m = &mut self.instances[a][i];
        for (k, g) in m.state.iter().enumerate() {
            g.set(i64::from(k == index));
        }
        m.up.set(i64::from(up));
        m.ready.set(i64::from(ready));
        if let Some(p) = &m.pm2 {
            p.up.set(i64::from(ready));
        }
    }

    /// Brings the restart counters up to `counts` (indexed like the
    /// `reasons` given to [`Metrics::new`]); the supervisor's counts are the
    /// truth.
    pub fn restarts(&mut self, a: usize, i: usize, counts: &[u64]) {
        self.touch();
        let m = &self.instances[a][i];
        for (c, &n) in m.restarts.iter().zip(counts) {
            c.inc_by(n.saturating_sub(c.get()));
        }
        if let Some(p) = &m.pm2 {
            p.restarts.set(counts.iter().sum::<u64>() as i64);
        }
    }

    /// Counts an exit of the instance's main process.
    pub fn exited(&mut self, a: usize, i: usize, code: Option<i32>, signal: Option<&str>) {
        self.touch();
        let idx = i.to_string();
        let code = code.map(|c| c.to_string()).unwrap_or_default();
        self.exits
            .with_label_values(&[
                self.app_names[a].as_str(),
                &idx,
                &code,
                signal.unwrap_or(""),
            ])
            .inc();
    }

    /// A new process of the instance was started.
    pub fn started(&mut self, a: usize, i: usize, at: Instant) {
        self.touch();
        let m = &mut self.instances[a][i];
        m.started = Some(at);
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        m.start_time.set((unix - at.elapsed()).as_secs_f64());
        m.threads.set(0);
        m.fds.set(0);
        m.pss.set(0);
    }

    /// A process of app `a` became ready this long after it was spawned.
    pub fn became_ready(&mut self, a: usize, after: std::time::Duration) {
        self.touch();
        self.time_to_ready[a].observe(after.as_secs_f64());
    }

    /// Records a sample of the instance's process tree.
    pub fn usage(&mut self, a: usize, i: usize, u: &TreeUsage) {
        self.touch();
        let m = &mut self.instances[a][i];
        let now = Instant::now();
        let (pid, cpu, at) = m.last_cpu;
        // A new root is a new process: all of its CPU time is new. A smaller
        // figure for the same root means a descendant has gone; its time is
        // not taken back.
        let delta = if pid == u.pid {
            (u.cpu_seconds - cpu).max(0.0)
        } else {
            u.cpu_seconds
        };
        m.cpu.inc_by(delta);
        m.last_cpu = (u.pid, u.cpu_seconds, now);
        m.rss.set(u.rss_bytes as i64);
        if let Some(pss) = u.pss_bytes {
            m.pss.set(pss as i64);
        }
        m.threads.set(u.threads as i64);
        if let Some(fds) = u.fds {
            m.fds.set(fds as i64);
        }
        m.processes.set(i64::from(u.processes));
        if let Some(p) = &m.pm2 {
            p.memory.set(u.rss_bytes as i64);
            let wall = (now - at).as_secs_f64();
            if pid == u.pid && wall > 0.0 {
                p.cpu.set((delta / wall * 100.0 * 10.0).round() / 10.0);
            }
            p.uptime
                .set(m.started.map_or(0.0, |s| s.elapsed().as_secs_f64().floor()));
        }
    }

    /// A reload of an instance of app `a` ended with `result`.
    pub fn reloaded(&self, a: usize, result: &str) {
        self.touch();
        self.reloads
            .with_label_values(&[self.app_names[a].as_str(), result])
            .inc();
    }

    /// The instance has no process: its usage series read 0.
    pub fn no_process(&mut self, a: usize, i: usize) {
        self.touch();
        let m = &mut self.instances[a][i];
        m.rss.set(0);
        m.pss.set(0);
        m.threads.set(0);
        m.fds.set(0);
        m.processes.set(0);
        m.started = None;
        if let Some(p) = &m.pm2 {
            p.memory.set(0);
            p.cpu.set(0.0);
            p.uptime.set(0.0);
        }
    }

    /// Brings procward's own counters up to the supervisor's counts.
    pub fn counts(&mut self, orphans: u64, signals: u64) {
        self.touch();
        self.orphans
            .inc_by(orphans.saturating_sub(self.orphans.get()));
        self.signals
            .inc_by(signals.saturating_sub(self.signals.get()));
    }

    /// Sets a custom metric of the app; returns false (and counts it) when
    /// it is dropped: not finite, or a new name past [`MAX_APP_METRICS`].
    pub fn app_metric(&mut self, a: usize, i: usize, name: &str, value: f64) -> bool {
        self.touch();
        let name = sanitize(name);
        let names = &mut self.app_metric_names[a];
        if !value.is_finite()
            || name.is_empty()
            || (!names.contains(&name) && names.len() >= MAX_APP_METRICS)
        {
            self.dropped.with_label_values(&["app_metric"]).inc();
            return false;
        }
        let idx = i.to_string();
        self.app_metric
            .with_label_values(&[self.app_names[a].as_str(), &idx, &name])
            .set(value);
        names.insert(name);
        true
    }
}

/// Removes every series of `family` labelled with app `app` and instance
/// `idx`, whatever its other labels (an exit's code, a custom metric's name).
fn for_instance<T: prometheus::core::MetricVecBuilder>(
    family: &prometheus::core::MetricVec<T>,
    app: &str,
    idx: &str,
) {
    use prometheus::core::Collector;
    for mf in family.collect() {
        for m in mf.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("app") == Some(&app) && labels.get("instance") == Some(&idx) {
                let _ = family.remove(&labels);
            }
        }
    }
}

/// A custom metric's name as a label value: ASCII letters, digits and `_`
/// (anything else becomes `_`), at most [`MAX_APP_METRIC_NAME`] bytes.
pub fn sanitize(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(MAX_APP_METRIC_NAME)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REASONS: [&str; 3] = ["crash", "memory", "reload"];
    const STATES: [&str; 2] = ["online", "stopped"];

    fn one() -> Metrics {
        let apps = [AppLabels {
            name: "web".into(),
            instances: 2,
            memory_limit: Some(100),
        }];
        Metrics::new(&apps, Some(MetricsCompat::Pm2), &REASONS, &STATES, true).unwrap()
    }

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&m.registry().gather(), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn custom_metric_names_are_sanitized_and_capped() {
        let mut m = one();
        assert_eq!(sanitize("Event Loop Latency p95"), "event_loop_latency_p95");
        assert!(m.app_metric(0, 0, "Req/min", 3.0));
        for k in 0..MAX_APP_METRICS + 5 {
            m.app_metric(0, 1, &format!("m{k}"), 1.0);
        }
        assert!(!m.app_metric(0, 0, "one_too_many", 1.0));
        assert!(
            m.app_metric(0, 0, "req_min", 4.0),
            "a known name is still updated"
        );
        assert!(!m.app_metric(0, 0, "req_min", f64::NAN));
        let t = text(&m);
        assert_eq!(t.matches("procward_app_metric{").count(), MAX_APP_METRICS);
        assert!(
            t.contains(r#"procward_dropped_inputs_total{input="app_metric"} 8"#),
            "{t}"
        );
    }

    #[test]
    fn restart_counters_follow_the_supervisor() {
        let mut m = one();
        let mut counts = [0u64; REASONS.len()];
        counts[1] = 2;
        m.restarts(0, 1, &counts);
        m.restarts(0, 1, &counts);
        let t = text(&m);
        assert!(
            t.contains(r#"procward_restarts_total{app="web",instance="1",reason="memory"} 2"#),
            "{t}"
        );
        assert!(
            t.contains(r#"pm2_restarts{instance="1",name="web"} 2"#),
            "{t}"
        );
    }

    #[test]
    fn cpu_seconds_count_on_across_restarts() {
        let mut m = one();
        let u = |pid, cpu| TreeUsage {
            pid,
            cpu_seconds: cpu,
            ..TreeUsage::default()
        };
        m.usage(0, 0, &u(10, 1.5));
        m.usage(0, 0, &u(10, 2.0));
        m.usage(0, 0, &u(11, 0.25));
        assert!(text(&m).contains(r#"procward_cpu_seconds_total{app="web",instance="0"} 2.25"#));
    }

    #[test]
    fn resizing_adds_and_removes_an_instances_series() {
        let mut m = one();
        m.exited(0, 1, Some(3), None);
        assert!(m.app_metric(0, 1, "req", 1.0));
        m.resize(0, 3).unwrap();
        let t = text(&m);
        assert!(
            t.contains(r#"procward_up{app="web",instance="2"} 0"#),
            "{t}"
        );
        assert!(
            t.contains(r#"pm2_instances{instance="0",name="web"} 3"#),
            "{t}"
        );
        m.resize(0, 1).unwrap();
        let t = text(&m);
        assert!(
            !t.contains(r#"instance="1""#) && !t.contains(r#"instance="2""#),
            "{t}"
        );
        assert!(
            t.contains(r#"procward_exits_total{app="web",code="0",instance="0",signal=""} 0"#),
            "{t}"
        );
        assert!(
            t.contains(r#"pm2_instances{instance="0",name="web"} 1"#),
            "{t}"
        );
    }
}
