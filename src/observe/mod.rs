//! Observe mode (`procward observe`): watch, measure and cap an app that
//! procward did not start, as a Kubernetes sidecar in a pod whose containers
//! share one PID namespace (`shareProcessNamespace: true`).
//!
//! # Theory of operation
//! One loop owns every observed app's state ([`app::Watched`]). Every
//! sample interval it reads /proc: it checks that each app's main process
//! still runs (same pid, same start time), looks for one when there is none
//! ([`find`]), sums the app's process trees with the supervisor's sampler
//! ([`crate::resources::procfs::ProcScan`]) and applies the memory cap. The
//! tcp/http readiness probes of supervise mode report to the same loop. It
//! publishes the same `/metrics`, `/status` and `/readyz` as supervise mode.
//!
//! What a process that is not procward's child cannot give: its exit status
//! (only its parent can wait for it, wait(2)), its `process.send('ready')`
//! or sd_notify messages (they need a channel made before it starts), and
//! its restart (the container engine restarts it). A main process that goes
//! and another that appears count as a restart with reason `external`.
//!
//! # Permissions
//! Reading another process's command line and stat file needs nothing; its
//! executable link, fd count and PSS need its uid or CAP_SYS_PTRACE
//! (proc(5), ptrace access mode). Sending it the memory stop needs its uid
//! or CAP_KILL (kill(2)). A refusal is logged with the fix, once per
//! process, and the loop goes on.

mod app;
pub mod find;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cli::parse_ready;
use crate::config::units::{parse_duration, parse_signal, parse_size};
use crate::config::{AgentSettings, LogFormat, MetricsCompat, ReadySource};
use crate::exit;
use crate::init::signals;
use crate::metrics::{AppLabels, Metrics};
use crate::ready::Report;
use crate::resources::procfs::ProcScan;
use crate::status::{Handles, Heartbeat, Status};

use app::Watched;
use find::Matcher;

/// Restart reasons in observe mode, in the order of [`app::Watched`]'s counts.
pub const REASONS: [&str; 2] = ["external", "memory"];

/// Watch an app that procward did not start (a Kubernetes sidecar with
/// `shareProcessNamespace: true`): metrics, readiness and a memory cap.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["pattern", "exe", "all"])))]
pub struct ObserveArgs {
    /// The app's processes: a regular expression matched against the
    /// command line (arguments joined by spaces), e.g. "node .*server.js".
    #[arg(long = "match", value_name = "REGEX")]
    pub pattern: Option<String>,
    /// The app's processes: an executable, as a full path or a file name.
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,
    /// The app's processes: every process tree but procward's own and
    /// PID 1 (the pod's pause process).
    #[arg(long)]
    pub all: bool,
    /// App name, shown in logs and metrics [default: app].
    #[arg(long)]
    pub name: Option<String>,
    /// Readiness: started, tcp:PORT or http://HOST:PORT/PATH [default: started].
    #[arg(long, value_name = "SOURCE", value_parser = parse_ready)]
    pub ready: Option<ReadySource>,
    /// Stop the app gracefully when its memory exceeds this (500M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory_restart: Option<u64>,
    /// Signal of the memory stop [default: SIGTERM, as the kubelet sends].
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub kill_signal: Option<Signal>,
    /// After the stop signal, wait this long before SIGKILL [default: 1600ms].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub kill_timeout: Option<Duration>,
    /// Serve /metrics, /healthz, /readyz and /status on this address
    /// (0.0.0.0:9079, :9079, localhost:9079).
    #[arg(long, value_name = "ADDR", value_parser = crate::config::agent::parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    /// How often the app's processes are sampled [default: 1s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub sample_interval: Option<Duration>,
    /// Also export the metric names of another tool.
    #[arg(long, value_enum, value_name = "TOOL")]
    pub metrics_compat: Option<MetricsCompat>,
    /// Format of procward's own log lines [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// One app to observe.
#[derive(Debug, Clone)]
pub struct ObservedSpec {
    /// Its name.
    pub name: String,
    /// How its processes are recognised.
    pub matcher: Matcher,
    /// Its readiness: started, or a tcp/http probe.
    pub ready: ReadySource,
    /// The memory cap, bytes.
    pub max_memory_restart: Option<u64>,
    /// The memory stop's signal.
    pub kill_signal: Signal,
    /// Time between the stop signal and SIGKILL.
    pub kill_timeout: Duration,
}

/// Turns `procward observe`'s arguments into the app and the agent settings.
pub fn plan(args: ObserveArgs) -> Result<(Vec<ObservedSpec>, AgentSettings), String> {
    let matcher = match (&args.pattern, &args.exe) {
        (Some(p), _) => Matcher::Cmdline(
            regex_lite::Regex::new(p).map_err(|e| format!("invalid --match `{p}`: {e}"))?,
        ),
        (None, Some(exe)) => Matcher::Exe(exe.clone()),
        (None, None) => Matcher::AllTrees,
    };
    let ready = args.ready.unwrap_or(ReadySource::Started);
    if matches!(ready, ReadySource::NodeIpc | ReadySource::SdNotify) {
        return Err(format!(
            "--ready {ready} needs the app as procward's child; in observe mode use tcp:PORT or http://HOST:PORT/PATH"
        ));
    }
    let name = args.name.unwrap_or_else(|| match &args.exe {
        Some(exe) => exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into()),
        None => "app".into(),
    });
    let spec = ObservedSpec {
        name,
        matcher,
        ready,
        max_memory_restart: args.max_memory_restart,
        kill_signal: args.kill_signal.unwrap_or(Signal::SIGTERM),
        kill_timeout: args.kill_timeout.unwrap_or(Duration::from_millis(1600)),
    };
    let mut agent = AgentSettings {
        metrics_addr: args.metrics,
        metrics_compat: args.metrics_compat,
        ..AgentSettings::default()
    };
    if let Some(i) = args.sample_interval {
        agent.sample_interval = i;
    }
    if let Some(f) = args.log_format {
        agent.log_format = f;
    }
    if let Some(l) = args.log_level {
        agent.log_level = l;
    }
    Ok((vec![spec], agent))
}

/// Sets up signals and the event loop, then observes until SIGTERM or
/// SIGINT. procward's exit leaves the apps running: they are not its own.
pub fn run(apps: Vec<ObservedSpec>, agent: AgentSettings) -> i32 {
    if let Err(e) = signals::block_all() {
        eprintln!("procward: cannot block signals: {e}");
        return exit::SETUP;
    }
    let rt = match crate::init::event_loop() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let sigs = match signals::SignalSource::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("procward: cannot open a signalfd: {e}");
                return exit::SETUP;
            }
        };
        let scan = match ProcScan::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("procward: cannot open /proc: {e}");
                return exit::SETUP;
            }
        };
        let observer = Observer::new(apps, &agent, scan);
        if let Some(addr) = agent.metrics_addr {
            match crate::http::Server::bind(addr, &observer.handles()) {
                Ok(server) => {
                    tokio::spawn(server.serve());
                }
                Err(e) => {
                    eprintln!("procward: cannot serve --metrics on {addr}: {e}");
                    return exit::SETUP;
                }
            }
        }
        observer.run(sigs).await
    })
}

/// The one owner of observe mode's state.
struct Observer {
    apps: Vec<Watched>,
    metrics: Option<Metrics>,
    status: watch::Sender<Arc<Status>>,
    heartbeat: Arc<Heartbeat>,
    interval: Duration,
    scan: ProcScan,
    tx: mpsc::Sender<Report>,
    rx: mpsc::Receiver<Report>,
    own: i32,
    passes: u64,
    /// Whether the warning that nothing can be matched was given.
    warned: bool,
}

impl Observer {
    fn new(specs: Vec<ObservedSpec>, agent: &AgentSettings, scan: ProcScan) -> Observer {
        let metrics = agent.metrics_addr.and_then(|_| {
            let labels: Vec<AppLabels> = specs
                .iter()
                .map(|s| AppLabels {
                    name: s.name.clone(),
                    instances: 1,
                    memory_limit: s.max_memory_restart,
                })
                .collect();
            Metrics::new(
                &labels,
                agent.metrics_compat,
                &REASONS,
                &crate::supervise::state::State::NAMES,
                false,
            )
            .map_err(|e| tracing::error!(error = %e, "cannot register metrics; /metrics is empty"))
            .ok()
        });
        let (tx, rx) = mpsc::channel(64);
        let apps: Vec<Watched> = specs.into_iter().map(Watched::new).collect();
        // /status shows the apps from the first request, before any pass.
        let status = Status {
            version: env!("CARGO_PKG_VERSION"),
            mode: "observe",
            apps: apps.iter().map(Watched::status).collect(),
        };
        Observer {
            apps,
            metrics,
            status: watch::channel(Arc::new(status)).0,
            heartbeat: Arc::new(Heartbeat::new()),
            interval: agent.sample_interval,
            scan,
            tx,
            rx,
            own: std::process::id() as i32,
            passes: 0,
            warned: false,
        }
    }

    /// Handles for the HTTP server.
    fn handles(&self) -> Handles {
        Handles {
            sample_interval: Some(self.interval),
            // Observe mode has no sampler task of its own to feed.
            roots: watch::channel(Vec::new()).1,
            status: self.status.subscribe(),
            heartbeat: self.heartbeat.clone(),
            registry: self.metrics.as_ref().map(Metrics::registry),
            http_dropped: self.metrics.as_ref().map(|m| m.dropped("http")),
            http_busy: self.metrics.as_ref().map(|m| m.dropped("http_busy")),
            control_refused: None,
            generation: self
                .metrics
                .as_ref()
                .map(Metrics::generation)
                .unwrap_or_default(),
        }
    }

    async fn run(mut self, mut sigs: signals::SignalSource) -> i32 {
        for a in &self.apps {
            info!(app = %a.spec.name, matcher = %app::describe(&a.spec.matcher),
                  "observing processes procward did not start");
        }
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let kill_at = self.apps.iter().filter_map(Watched::kill_at).min();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = ticks.tick() => self.pass(),
                Some(msg) = self.rx.recv() => self.on_message(msg),
                r = sigs.recv() => match r {
                    Ok(s) if matches!(s.signo, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT) => {
                        info!(signal = %signals::name(s.signo),
                              "stopping; the observed apps keep running");
                        return 0;
                    }
                    Ok(s) => tracing::debug!(signal = %signals::name(s.signo), "ignored"),
                    Err(e) => {
                        warn!(error = %e, "reading signals failed; stopping");
                        return exit::SETUP;
                    }
                },
                _ = tokio::time::sleep_until(kill_at.unwrap_or(far).into()), if kill_at.is_some() => {
                    let now = Instant::now();
                    for (k, a) in self.apps.iter_mut().enumerate() {
                        a.escalate(now);
                        a.publish(k, self.metrics.as_mut());
                    }
                }
            }
            self.heartbeat.beat();
            if self.status.receiver_count() > 0 {
                let apps = self.apps.iter().map(Watched::status).collect();
                self.status.send_replace(Arc::new(Status {
                    version: env!("CARGO_PKG_VERSION"),
                    mode: "observe",
                    apps,
                }));
            }
        }
    }

    /// One pass over /proc for every app.
    fn pass(&mut self) {
        self.passes += 1;
        let now = Instant::now();
        let slow = self.passes % crate::resources::SLOW_EVERY == 0;
        let with_exe = self.apps.iter().any(|a| a.spec.matcher.needs_exe());
        let mut listed: Option<Vec<find::Seen>> = None;
        for (k, a) in self.apps.iter_mut().enumerate() {
            a.check_main();
            if a.needs_listing() {
                let procs = listed.get_or_insert_with(|| find::list(with_exe));
                let trees = find::choose(procs, &a.spec.matcher, self.own);
                // A native sidecar starts before the app's container: give
                // the app some passes to appear, unless procward is PID 1
                // (then no other container's processes can be visible).
                if trees.is_empty() && !self.warned && (self.passes > 10 || self.own == 1) {
                    self.warned = warn_if_blind(procs, &a.spec.matcher, self.own);
                }
                a.found(trees, now, &self.tx);
            }
            // A new process's series are reset before its first sample.
            a.publish(k, self.metrics.as_mut());
            a.sample(
                &mut self.scan,
                slow,
                now,
                self.metrics.as_mut().map(|m| (m, k)),
            );
            a.cap_memory(now);
            a.publish(k, self.metrics.as_mut());
        }
    }

    fn on_message(&mut self, msg: Report) {
        if let Report {
            pid,
            event: crate::ready::Event::Ready,
        } = msg
        {
            let now = Instant::now();
            for (k, a) in self.apps.iter_mut().enumerate() {
                if a.ready(pid, now) {
                    if let (Some(m), Some(after)) = (self.metrics.as_mut(), a.time_to_ready()) {
                        m.became_ready(k, after);
                    }
                    a.publish(k, self.metrics.as_mut());
                }
            }
        }
    }
}

/// Warns when nothing can match: nothing but procward and PID 1 is
/// visible (the PID namespace is most likely not shared), or `--exe` cannot
/// read other processes' executables. True once it has warned.
fn warn_if_blind(procs: &[find::Seen], matcher: &Matcher, own: i32) -> bool {
    let others: Vec<&find::Seen> = procs
        .iter()
        .filter(|s| s.proc.pid != own && s.proc.pid != 1 && s.ppid != own)
        .filter(|s| !s.cmdline.is_empty())
        .collect();
    if others.is_empty() {
        warn!("no process but procward's own is visible: the app's container must share procward's \
               PID namespace. In Kubernetes set shareProcessNamespace: true on the pod; with podman \
               use a pod made with --share pid");
        return true;
    }
    let unreadable = others.iter().filter(|s| s.exe.is_none()).count();
    if matcher.needs_exe() && unreadable > 0 {
        warn!(
            unreadable,
            "cannot read the executable of some processes: --exe needs the app's uid or \
               CAP_SYS_PTRACE. To fix it, run procward with the app's uid, or match with --match"
        );
        return true;
    }
    false
}
