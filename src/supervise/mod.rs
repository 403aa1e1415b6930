//! Supervision: the one task that owns every instance's state.
//!
//! Signals, exits (from the one reaper), readiness and other messages reach
//! [`Supervisor::run`] as events; it changes states, starts and stops
//! processes, and decides when procward is done. Nothing else touches an
//! instance. Apps are started in the order listed and stopped in reverse.

pub mod cluster;
pub mod control;
pub mod instance;
pub mod machine;
pub mod memory;
pub mod observe;
pub mod policy;
pub mod readiness;
pub mod reload;
pub mod scale;
pub mod state;
pub mod triggers;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::{AgentSettings, AppSpec, ReadySource, SighupAction};
use crate::exit::{self, ExitStatus};
use crate::init::signals::Meaning;
use crate::init::{reaper, signals};
use crate::ready;
use crate::resources::TreeUsage;
use crate::spawn::{self, SpawnRequest};
use crate::tree;
use instance::Instance;
use machine::{Action, Event};
use policy::Reason;
use state::State;

/// Capacity of the supervisor's inbox; senders wait when it is full.
pub const INBOX: usize = 1024;

/// An app and its instances.
#[derive(Debug)]
pub struct App {
    /// What to run.
    pub spec: AppSpec,
    /// Its instances, `spec.instances` of them.
    pub instances: Vec<Instance>,
}

/// (app index, instance index).
type Slot = (usize, usize);

/// The supervisor. Build it with [`Supervisor::new`], then [`Supervisor::run`].
pub struct Supervisor {
    apps: Vec<App>,
    agent: AgentSettings,
    by_pid: HashMap<i32, Slot>,
    shutting_down: bool,
    /// Statuses reaped for pids no instance owns (orphans).
    orphans_reaped: u64,
    /// Signals forwarded to the apps.
    signals_forwarded: u64,
    /// Reloads queued and in flight (`reload.rs`).
    reloads: reload::Reloads,
    /// What the apps say (`ready/`), for the one owner of state.
    tx: mpsc::Sender<ready::Report>,
    rx: mpsc::Receiver<ready::Report>,
    /// Samples of the process trees (`resources/`).
    samples_tx: mpsc::Sender<Vec<TreeUsage>>,
    samples_rx: mpsc::Receiver<Vec<TreeUsage>>,
    self_pid: i32,
    obs: observe::Observer,
    /// Readiness channels of running processes, and the service manager.
    ready: readiness::Readiness,
    /// Listening sockets held for each app, by app index.
    sockets: Vec<cluster::AppSockets>,
    /// Connections accepted on round-robin sockets.
    conns: cluster::Connections,
    /// The apps' output: pipes for captured apps, recent lines, crash tails.
    logs: crate::logs::Logs,
    /// `cron_restart` and `watch` reports, and what each app does about them.
    triggers: triggers::Triggers,
    /// Requests from the control socket.
    calls_tx: mpsc::Sender<crate::control::Call>,
    calls_rx: mpsc::Receiver<crate::control::Call>,
    /// Answers waiting for their instances to settle.
    pending: Vec<control::Pending>,
    /// Instances stopped by a control request: procward stays up for them
    /// (a `start` may follow) instead of exiting once nothing runs.
    held: Vec<Slot>,
    /// Instances on their way out of a scale-down (`scale.rs`).
    scales: scale::Scales,
}

impl Supervisor {
    /// A supervisor for these apps; nothing is started yet.
    pub fn new(specs: Vec<AppSpec>, agent: AgentSettings) -> Self {
        let (tx, rx) = mpsc::channel(INBOX);
        // One pass per interval: a few waiting is plenty.
        let (samples_tx, samples_rx) = mpsc::channel(4);
        // Each control connection waits for its answer: a few in the
        // inbox at once is plenty.
        let (calls_tx, calls_rx) = mpsc::channel(64);
        let apps: Vec<App> = specs
            .into_iter()
            .map(|spec| {
                let instances = (0..spec.instances.max(1)).map(Instance::new).collect();
                App { spec, instances }
            })
            .collect();
        let obs = observe::Observer::new(&apps, &agent);
        let n_apps = apps.len();
        let specs: Vec<&AppSpec> = apps.iter().map(|a| &a.spec).collect();
        let logs = crate::logs::Logs::new(&specs, agent.log_rotate, |a| obs.log_counters(a));
        Supervisor {
            logs,
            obs,
            apps,
            agent,
            by_pid: HashMap::new(),
            shutting_down: false,
            orphans_reaped: 0,
            signals_forwarded: 0,
            reloads: reload::Reloads::default(),
            tx,
            rx,
            samples_tx,
            samples_rx,
            self_pid: std::process::id() as i32,
            ready: readiness::Readiness::new(),
            sockets: (0..n_apps)
                .map(|_| cluster::AppSockets::default())
                .collect(),
            conns: cluster::Connections::default(),
            triggers: triggers::Triggers::new(n_apps),
            calls_tx,
            calls_rx,
            pending: Vec::new(),
            held: Vec::new(),
            scales: scale::Scales::default(),
        }
    }

    /// The sender control requests reach this supervisor through.
    pub fn calls(&self) -> mpsc::Sender<crate::control::Call> {
        self.calls_tx.clone()
    }

    /// Handles for the sampler and the HTTP server.
    pub fn handles(&self) -> crate::status::Handles {
        self.obs.handles()
    }

    /// The apps' output, for reading recent lines and draining at exit.
    pub fn logs(&self) -> crate::logs::Logs {
        self.logs.clone()
    }

    /// The sender the resource sampler sends its passes through.
    pub fn samples(&self) -> mpsc::Sender<Vec<TreeUsage>> {
        self.samples_tx.clone()
    }

    /// Starts every app and supervises until all have stopped for good;
    /// returns procward's exit code. From here on errors are logged, never
    /// fatal: a PID 1 that dies takes the container with it.
    pub async fn run(mut self, mut sigs: signals::SignalSource) -> i32 {
        for a in 0..self.apps.len() {
            for i in 0..self.apps[a].instances.len() {
                self.apps[a].instances[i].state = State::Spawning {
                    reason: None,
                    from: "stopped",
                };
                let first = self.spawn((a, i));
                self.feed((a, i), first);
            }
        }
        self.start_triggers();
        let mut watchdog = self.ready.manager.watchdog_interval().map(|d| {
            let mut i = tokio::time::interval(d);
            // After a stall, one ping, not a burst of the missed ones.
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            // Before the snapshot: instances removed are gone from it by
            // the time the scale's answer goes.
            self.advance_scales();
            self.obs
                .tick(&self.apps, self.orphans_reaped, self.signals_forwarded);
            self.advance_reload();
            self.advance_triggers();
            self.settle_pending();
            self.after_event();
            self.release_sockets();
            if let Some(code) = self.finished() {
                self.ready.manager.stopping();
                return code;
            }
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(
                deadline
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                    .into(),
            );
            tokio::select! {
                biased;
                sig = sigs.recv() => match sig {
                    Ok(s) => self.on_signal(s),
                    Err(e) => {
                        error!(error = %e, "reading signals failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Before the inbox, so a flood of messages cannot starve them.
                _ = tick(&mut watchdog) => self.ready.manager.ping(),
                _ = sleep => self.on_deadlines(Instant::now()),
                Some(samples) = self.samples_rx.recv() => self.on_samples(samples),
                Some(report) = self.rx.recv() => self.on_app_event(report),
                Some(conn) = self.conns.rx.recv() => self.on_connection(conn),
                Some(r) = self.triggers.cron_rx.recv() => self.on_cron(r),
                Some(r) = self.triggers.watch_rx.recv() => self.on_watch(r),
                Some(call) = self.calls_rx.recv() => self.on_call(call),
            }
        }
    }

    fn on_signal(&mut self, s: signals::Received) {
        let sighup_reloads = self.agent.sighup == SighupAction::Reload;
        match s.meaning(sighup_reloads, self.self_pid) {
            Meaning::Child => self.reap(),
            Meaning::Own => {}
            Meaning::Shutdown(signo) if self.shutting_down && signals::escalates(signo) => {
                warn!(signal = %signals::name(signo), "second stop signal while stopping; sending SIGKILL to every app");
                self.feed_all(Event::Kill);
            }
            Meaning::Shutdown(signo) => self.shutdown(signo),
            Meaning::Reload => self.reload_apps(&(0..self.apps.len()).collect::<Vec<_>>(), None),
            Meaning::ReopenLogs => self.reopen_logs(),
            Meaning::Forward(signo) => self.forward(signo),
        }
    }

    fn on_samples(&mut self, samples: Vec<TreeUsage>) {
        let rss = self.obs.on_samples(&self.by_pid, samples);
        let turns = memory::turns(&self.apps, |slot| rss.get(&slot).copied());
        for (slot, rss) in rss {
            let turn = turns.contains(&slot);
            self.feed(slot, Event::Memory { rss, turn });
        }
    }

    /// Forwards a signal to every running instance's process group.
    fn forward(&mut self, signo: i32) {
        debug!(signal = %signals::name(signo), "forwarding");
        for pid in self.by_pid.keys() {
            match tree::signal(*pid, signo) {
                Ok(()) => self.signals_forwarded += 1,
                Err(e) => warn!(pid, error = %e, "forwarding a signal failed"),
            }
        }
    }

    /// SIGUSR2, as PM2's daemon takes it (`pm2 reloadLogs`): the apps that
    /// write log files get them reopened instead of the signal; the others
    /// get it forwarded as before.
    fn reopen_logs(&mut self) {
        if (0..self.apps.len()).any(|a| self.logs.writes_files(a)) {
            info!("reopening the log files (SIGUSR2)");
            self.logs.reopen();
        }
        for (pid, (a, _)) in &self.by_pid {
            if !self.logs.writes_files(*a) {
                match tree::signal(*pid, libc::SIGUSR2) {
                    Ok(()) => self.signals_forwarded += 1,
                    Err(e) => warn!(pid, error = %e, "forwarding a signal failed"),
                }
            }
        }
    }

    fn reap(&mut self) {
        let mut exits = Vec::new();
        reaper::reap_all(|pid, status| exits.push((pid, status)));
        for (pid, status) in exits {
            self.ready.forget(pid);
            self.forget_worker(pid);
            match self.by_pid.remove(&pid) {
                Some(slot) => {
                    self.obs.exited(slot, status);
                    self.log_crash(slot, pid, status);
                    let group_alive = tree::group_alive(pid);
                    self.feed(
                        slot,
                        Event::Exited {
                            pid,
                            status,
                            group_alive,
                        },
                    );
                }
                None => self.orphans_reaped += 1,
            }
        }
        // Members of a stopped group are reaped as orphans (procward is
        // their subreaper): the group may have emptied.
        for a in 0..self.apps.len() {
            for i in 0..self.apps[a].instances.len() {
                if let State::Emptying { pgid, .. } = self.apps[a].instances[i].state {
                    if !tree::group_alive(pgid) {
                        self.feed((a, i), Event::GroupEmpty);
                    }
                }
            }
        }
    }

    /// Hands the exit to the captured output; a crash (an exit while
    /// starting or online, other than code 0) logs the last lines of its
    /// stderr, now or once its pipe has been read to the end.
    fn log_crash(&mut self, (a, i): Slot, pid: i32, status: ExitStatus) {
        let state = &self.apps[a].instances[i].state;
        let unexpected = matches!(state, State::Starting { pid: p, .. } | State::Online { pid: p, .. } if *p == pid);
        let crash = (unexpected && status != ExitStatus::Code(0)).then(|| status.to_string());
        if let Some(last_stderr) = self.logs.exited(a, i, pid, crash) {
            warn!(app = %self.apps[a].spec.name, instance = i, pid, %status,
                  last_stderr = last_stderr.as_str(), "crashed");
        }
    }

    /// SIGTERM, SIGINT or SIGQUIT: pass it on, restart nothing, and stop.
    fn shutdown(&mut self, signo: i32) {
        info!(signal = %signals::name(signo), "stopping every app");
        self.shutting_down = true;
        self.cancel_reloads();
        self.ready.manager.stopping();
        self.feed_all(Event::Shutdown { signo });
    }

    /// Feeds `event` to every instance, apps in reverse order.
    fn feed_all(&mut self, event: Event) {
        for a in (0..self.apps.len()).rev() {
            for i in 0..self.apps[a].instances.len() {
                self.feed((a, i), event);
            }
        }
    }

    /// Feeds one event to the instance's machine and carries out its
    /// actions; a spawn is answered in the same turn.
    fn feed(&mut self, slot: Slot, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let (a, i) = slot;
            let online_at_spawn = self.apps[a].spec.ready.source == ReadySource::Started
                && !self.ready_on_listening(a);
            let overlap = self.holds_sockets(a);
            let app = &mut self.apps[a];
            let cx = machine::Ctx {
                online_at_spawn,
                spec: &app.spec,
                now: Instant::now(),
                shutting_down: self.shutting_down,
                index: i,
                overlap,
            };
            let actions = machine::step(&mut app.instances[i], event, &cx);
            for action in actions {
                if let Some(answer) = self.act(slot, action) {
                    queue.push_back(answer);
                }
            }
        }
    }

    /// Carries out one action of the machine; returns the answer to a spawn.
    fn act(&mut self, (a, i): Slot, action: Action) -> Option<Event> {
        match action {
            Action::Spawn => return Some(self.spawn((a, i))),
            Action::Signal { pgid, signo } => signal_logged(pgid, signo),
            Action::AskToStop { pid, signo } => {
                let with_message = self.apps[a].spec.stop.shutdown_with_message;
                let old_worker = self.apps[a].instances[i]
                    .draining
                    .as_ref()
                    .is_some_and(|d| d.pid == pid)
                    && self.apps[a].spec.exec_mode == crate::config::ExecMode::Cluster;
                if with_message || !old_worker || !self.cluster_disconnect(a, pid, signo) {
                    self.ready.ask_to_stop(with_message, pid, signo);
                }
            }
            Action::CountRestart(r) => {
                let inst = &mut self.apps[a].instances[i];
                inst.restarts[r.index()] += 1;
                let record = control::record(r.as_str(), inst);
                if inst.history.len() == crate::control::HISTORY {
                    inst.history.pop_front();
                }
                inst.history.push_back(record);
            }
            Action::Changed { from, reason } => self.changed((a, i), &from, reason),
            Action::ReloadAborted { why } => self.reload_aborted((a, i), why),
            Action::GaveUp => {
                if self.agent.exit_on_error && !self.shutting_down {
                    error!(app = %self.apps[a].spec.name, instance = i,
                           "an app is errored and exit_on_error is set: stopping every app");
                    self.shutdown(libc::SIGTERM);
                }
            }
        }
        None
    }

    /// Starts a process for the instance; the answer for its machine.
    fn spawn(&mut self, slot: Slot) -> Event {
        let (a, i) = slot;
        if let Err(e) = self.rebind_listen(a) {
            return self.spawn_failed(slot, e, true);
        }
        let (mut fds, listen_env) = crate::sockets::listen_fds(&self.sockets[a].listen);
        let readiness = self.prepare_readiness(a, fds.len());
        let output = self.logs.prepare(a, i);
        let spec = &self.apps[a].spec;
        // Readiness needs its channel: a process started without it would
        // never be ready (or never get the shutdown message).
        if let Some(missing) = readiness::missing(&readiness, spec) {
            return self.spawn_failed(slot, missing, true);
        }
        let mut env: Vec<(OsString, OsString)> = spec.env.clone();
        env.extend(
            spec.instance_var
                .as_ref()
                .map(|v| spawn::var(v, i.to_string())),
        );
        env.extend(readiness.env.iter().cloned());
        let listen_pid = !listen_env.is_empty();
        env.extend(listen_env);
        fds.extend(readiness.fds());
        fds.extend(output.fds());
        let req = SpawnRequest {
            argv: &spec.argv,
            cwd: spec.cwd.as_deref(),
            env,
            uid: spec.uid,
            gid: spec.gid,
            fds,
            listen_pid,
        };
        match spawn::spawn(&req) {
            Ok(pid) => {
                output.started(pid);
                self.by_pid.insert(pid, slot);
                self.start_readiness(pid, readiness);
                Event::Spawned { pid }
            }
            Err(e) => {
                let transient = e.is_transient();
                let status = ExitStatus::Code(e.shell_code());
                self.spawn_failed(slot, e.to_string(), transient);
                Event::SpawnFailed { transient, status }
            }
        }
    }

    /// Logs a failed spawn: a transient failure once per burst, with the
    /// retry; a permanent one always.
    fn spawn_failed(&mut self, (a, i): Slot, what: String, transient: bool) -> Event {
        let name = &self.apps[a].spec.name;
        let failures = self.apps[a].instances[i].counters.spawn_failures;
        if !transient {
            error!(app = %name, instance = i, "{what}");
        } else if failures == 0 {
            warn!(app = %name, instance = i, "{what}; retrying with backoff (logged once until it starts)");
        } else {
            debug!(app = %name, instance = i, failures, "{what}");
        }
        Event::SpawnFailed {
            transient,
            status: ExitStatus::Code(exit::NOT_EXECUTABLE),
        }
    }

    /// Logs and observes a state change the machine made.
    fn changed(&mut self, (a, i): Slot, prev: &State, reason: Option<Reason>) {
        let app = &self.apps[a];
        let inst = &app.instances[i];
        if let State::Spawning { .. } = inst.state {
            // Logged once the spawn's answer is in.
        } else {
            let from = match prev {
                State::Spawning { from, .. } => from,
                p => p.name(),
            };
            let status = inst.last_status.map(|s| s.to_string());
            info!(
                app = %app.spec.name,
                instance = i,
                pid = inst.state.pid(),
                from,
                to = inst.state.name(),
                reason = reason.map(Reason::as_str),
                last_exit = status.as_deref(),
                restarts = inst.total_restarts(),
                "state"
            );
        }
        self.obs.on_transition(&self.apps, (a, i), prev);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.apps
            .iter()
            .flat_map(|a| a.instances.iter())
            .filter_map(Instance::deadline)
            .chain(self.ready.next_deadline())
            .min()
    }

    fn on_deadlines(&mut self, now: Instant) {
        for a in 0..self.apps.len() {
            for i in 0..self.apps[a].instances.len() {
                if self.apps[a].instances[i]
                    .deadline()
                    .is_some_and(|d| d <= now)
                {
                    self.feed((a, i), Event::Deadline);
                }
            }
        }
        self.on_watchdog_deadlines(now);
    }

    /// The exit code once every instance has stopped for good.
    fn finished(&self) -> Option<i32> {
        let all: Vec<&Instance> = self.apps.iter().flat_map(|a| a.instances.iter()).collect();
        if !all.iter().all(|i| i.is_final()) || self.waits_for_triggers() {
            return None;
        }
        if !self.shutting_down && !self.held.is_empty() {
            return None;
        }
        if let Some(State::Errored { status }) = all
            .iter()
            .map(|i| &i.state)
            .find(|s| matches!(s, State::Errored { .. }))
        {
            return Some(match status.shell_code() {
                0 => 1,
                c => c,
            });
        }
        Some(
            all.iter()
                .filter_map(|i| i.last_status)
                .map(ExitStatus::shell_code)
                .find(|c| *c != 0)
                .unwrap_or(exit::SUCCESS),
        )
    }
}

/// Waits for the next tick of an interval that may not exist.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends a signal to a group, logging (not failing) on error.
fn signal_logged(pgid: i32, signo: i32) {
    if let Err(e) = tree::signal(pgid, signo) {
        warn!(pid = pgid, signal = %signals::name(signo), error = %e, "sending a signal failed");
    }
}
