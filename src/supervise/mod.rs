//! Supervision: the one task that owns every instance's state.
//!
//! Signals, exits (from the one reaper), readiness and other messages reach
//! [`Supervisor::run`] as events; it changes states, starts and stops
//! processes, and decides when procward is done. Nothing else touches an
//! instance. Apps are started in the order listed and stopped in reverse.

pub mod cluster;
pub mod instance;
pub mod memory;
pub mod message;
pub mod observe;
pub mod policy;
pub mod readiness;
pub mod state;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::{AgentSettings, AppSpec, ReadySource, SighupAction};
use crate::exit::{self, ExitStatus};
use crate::init::{reaper, signals};
use crate::spawn::{self, SpawnRequest};
use instance::Instance;
use message::Message;
use policy::{Decision, Reason};
use state::{State, Then};

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
    pub orphans_reaped: u64,
    /// Signals forwarded to the apps.
    pub signals_forwarded: u64,
    reload_queue: VecDeque<Slot>,
    reloading: Option<Slot>,
    tx: mpsc::Sender<Message>,
    rx: mpsc::Receiver<Message>,
    self_pid: i32,
    obs: observe::Observer,
    /// Readiness channels of running processes, and the service manager.
    pub ready: readiness::Readiness,
    /// Listening sockets held for each app, by app index.
    sockets: Vec<cluster::AppSockets>,
    /// The apps' output: pipes for captured apps, recent lines, crash tails.
    logs: crate::logs::Logs,
}

impl Supervisor {
    /// A supervisor for these apps; nothing is started yet.
    pub fn new(specs: Vec<AppSpec>, agent: AgentSettings) -> Self {
        let (tx, rx) = mpsc::channel(INBOX);
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
            reload_queue: VecDeque::new(),
            reloading: None,
            tx,
            rx,
            self_pid: std::process::id() as i32,
            ready: readiness::Readiness::new(),
            sockets: (0..n_apps)
                .map(|_| cluster::AppSockets::default())
                .collect(),
        }
    }

    /// Handles for the sampler and the HTTP server.
    pub fn handles(&self) -> crate::status::Handles {
        self.obs.handles()
    }

    /// The apps' output, for reading recent lines and draining at exit.
    pub fn logs(&self) -> crate::logs::Logs {
        self.logs.clone()
    }

    /// A sender for messages to this supervisor.
    pub fn sender(&self) -> mpsc::Sender<Message> {
        self.tx.clone()
    }

    /// Starts every app and supervises until all have stopped for good;
    /// returns procward's exit code. From here on errors are logged, never
    /// fatal: a PID 1 that dies takes the container with it.
    pub async fn run(mut self, mut sigs: signals::SignalSource) -> i32 {
        for a in 0..self.apps.len() {
            for i in 0..self.apps[a].instances.len() {
                self.spawn((a, i), None);
            }
        }
        let mut watchdog = self.ready.manager.watchdog_interval().map(|d| {
            let mut i = tokio::time::interval(d);
            // After a stall, one ping, not a burst of the missed ones.
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            self.obs
                .tick(&self.apps, self.orphans_reaped, self.signals_forwarded);
            self.advance_reload();
            self.after_event();
            self.release_sockets();
            if let Some(code) = self.finished() {
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
                Some(msg) = self.rx.recv() => self.on_message(msg),
            }
        }
    }

    fn on_signal(&mut self, s: signals::Received) {
        if s.signo == libc::SIGCHLD {
            self.reap();
            return;
        }
        // A signal procward raised itself (SIGPIPE on its own write) is not
        // the apps' business.
        if s.sender == self.self_pid {
            return;
        }
        match Signal::try_from(s.signo) {
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) => self.shutdown(s.signo),
            Ok(Signal::SIGHUP) if self.agent.sighup == SighupAction::Reload => self.reload(),
            Ok(Signal::SIGUSR2) => self.reopen_logs(),
            _ => self.forward(s.signo),
        }
    }

    fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Ready { pid } => {
                if let Some(&slot) = self.by_pid.get(&pid) {
                    self.on_ready(slot, Instant::now());
                }
            }
            Message::AppMetric { pid, name, value } => {
                self.obs.app_metric(&self.by_pid, pid, &name, value)
            }
            Message::Samples(samples) => {
                for slot in self.obs.on_samples(&self.apps, &self.by_pid, samples) {
                    self.request_stop(slot, Then::Restart(Reason::Memory));
                }
            }
            Message::App { pid, event } => self.on_app_event(pid, event),
            Message::Cluster { pid, request } => self.on_cluster(pid, request),
        }
    }

    /// Forwards a signal to every running instance's process group.
    fn forward(&mut self, signo: i32) {
        debug!(signal = %signals::name(signo), "forwarding");
        for pid in self.by_pid.keys() {
            match spawn::signal_group(*pid, signo) {
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
                match spawn::signal_group(*pid, libc::SIGUSR2) {
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
            match self.by_pid.remove(&pid) {
                Some(slot) => self.on_exit(slot, pid, status),
                None => self.orphans_reaped += 1,
            }
        }
    }

    /// SIGTERM, SIGINT or SIGQUIT: pass it on, restart nothing, and stop.
    fn shutdown(&mut self, signo: i32) {
        info!(signal = %signals::name(signo), "stopping every app");
        self.shutting_down = true;
        self.reload_queue.clear();
        self.ready.manager.stopping();
        for a in (0..self.apps.len()).rev() {
            for i in 0..self.apps[a].instances.len() {
                let slot = (a, i);
                match self.apps[a].instances[i].state.clone() {
                    State::Starting { .. } | State::Online { .. } => {
                        self.stop_with(slot, signo, Then::Stop);
                    }
                    // Already stopping (a restart, say): pass the signal on,
                    // keep the SIGKILL deadline, and restart nothing.
                    State::Stopping {
                        pid,
                        since,
                        kill_at,
                        ..
                    } => {
                        signal_logged(pid, signo);
                        let next = State::Stopping {
                            pid,
                            since,
                            kill_at,
                            then: Then::Stop,
                        };
                        self.transition(slot, next, None);
                    }
                    State::Waiting { .. } => {
                        let status = self.apps[a].instances[i].last_status;
                        self.transition(slot, State::Stopped { status }, None);
                    }
                    State::Stopped { .. } | State::Errored { .. } => {}
                }
            }
        }
    }

    /// Restarts every instance gracefully, one at a time: the next one only
    /// once the previous is ready again.
    fn reload(&mut self) {
        if self.shutting_down {
            return;
        }
        info!("reloading every app");
        self.ready.manager.reloading();
        for a in 0..self.apps.len() {
            for i in 0..self.apps[a].instances.len() {
                let slot = (a, i);
                if Some(slot) != self.reloading && !self.reload_queue.contains(&slot) {
                    self.reload_queue.push_back(slot);
                }
            }
        }
        self.reload_next();
    }

    /// Moves a reload on once the instance in flight is ready again (or
    /// has failed): called after every event.
    fn advance_reload(&mut self) {
        if let Some((a, i)) = self.reloading {
            if !matches!(
                self.apps[a].instances[i].state,
                State::Starting { .. } | State::Stopping { .. }
            ) {
                self.reloading = None;
                self.reload_next();
            }
        }
    }

    fn reload_next(&mut self) {
        while self.reloading.is_none() {
            let Some(slot) = self.reload_queue.pop_front() else {
                return;
            };
            if self.request_stop(slot, Then::Restart(Reason::Reload)) {
                self.reloading = Some(slot);
            }
        }
    }

    /// Stops the instance's process with the app's kill signal; returns
    /// whether there was a process to stop.
    pub fn request_stop(&mut self, slot: Slot, then: Then) -> bool {
        let signo = self.apps[slot.0].spec.stop.kill_signal as i32;
        self.stop_with(slot, signo, then)
    }

    /// Asks the instance's process to stop with `signo` (or the shutdown
    /// message) and arms the SIGKILL deadline; returns whether there was a
    /// running process that is not already stopping.
    fn stop_with(&mut self, (a, i): Slot, signo: i32, then: Then) -> bool {
        let stop = &self.apps[a].spec.stop;
        let (kill_timeout, with_message) = (stop.kill_timeout, stop.shutdown_with_message);
        let next = match self.apps[a].instances[i].state.clone() {
            State::Starting { pid, since, .. } | State::Online { pid, since, .. } => {
                self.ready.ask_to_stop(with_message, pid, signo);
                State::Stopping {
                    pid,
                    since,
                    kill_at: Some(Instant::now() + kill_timeout),
                    then,
                }
            }
            State::Stopping { .. }
            | State::Waiting { .. }
            | State::Stopped { .. }
            | State::Errored { .. } => return false,
        };
        self.transition((a, i), next, None);
        true
    }

    fn on_ready(&mut self, slot: Slot, now: Instant) {
        let inst = &mut self.apps[slot.0].instances[slot.1];
        let next = match inst.state.clone() {
            State::Starting { pid, since, .. } => State::Online {
                pid,
                since,
                ready_at: now,
            },
            // Readiness is only news while starting.
            s @ (State::Online { .. }
            | State::Stopping { .. }
            | State::Waiting { .. }
            | State::Stopped { .. }
            | State::Errored { .. }) => s,
        };
        if next != inst.state {
            inst.first_ready.get_or_insert(now);
            self.transition(slot, next, None);
        }
    }

    fn on_exit(&mut self, slot: Slot, pid: i32, status: ExitStatus) {
        let (a, i) = slot;
        // Whatever the main process left behind in its group goes with it,
        // as systemd does with a service's cgroup.
        let _ = spawn::signal_group(pid, libc::SIGKILL);
        let inst = &mut self.apps[a].instances[i];
        inst.last_status = Some(status);
        let now = Instant::now();
        let shutting_down = self.shutting_down;
        let unexpected = matches!(inst.state, State::Starting { .. } | State::Online { .. });
        let crash = (unexpected && status != ExitStatus::Code(0)).then(|| status.to_string());
        let last_stderr = self.logs.exited(a, i, pid, crash);
        match self.apps[a].instances[i].state.clone() {
            State::Starting { since, .. } | State::Online { since, .. } => {
                let uptime = now - since;
                info!(app = %self.apps[a].spec.name, instance = i, pid, %status,
                      uptime_ms = uptime.as_millis() as u64, last_stderr = last_stderr.as_deref(), "exited");
                let app = &mut self.apps[a];
                let decision = if shutting_down {
                    Decision::Stop
                } else {
                    policy::after_exit(
                        &app.spec.restart,
                        &mut app.instances[i].counters,
                        status,
                        uptime,
                    )
                };
                match decision {
                    Decision::Restart { delay, reason } if delay.is_zero() => {
                        self.spawn(slot, Some(reason))
                    }
                    Decision::Restart { delay, reason } => {
                        info!(app = %self.apps[a].spec.name, instance = i, delay_ms = delay.as_millis() as u64,
                              reason = reason.as_str(), "restart delayed");
                        self.transition(
                            slot,
                            State::Waiting {
                                until: now + delay,
                                reason,
                            },
                            None,
                        )
                    }
                    Decision::Stop => self.transition(
                        slot,
                        State::Stopped {
                            status: Some(status),
                        },
                        None,
                    ),
                    Decision::Errored => self.errored(slot, status),
                }
            }
            State::Stopping { then, .. } => {
                info!(app = %self.apps[a].spec.name, instance = i, pid, %status, "stopped");
                match then {
                    Then::Restart(reason) if !shutting_down => self.spawn(slot, Some(reason)),
                    Then::Restart(_) | Then::Stop => self.transition(
                        slot,
                        State::Stopped {
                            status: Some(status),
                        },
                        None,
                    ),
                }
            }
            s @ (State::Waiting { .. } | State::Stopped { .. } | State::Errored { .. }) => {
                debug_assert!(false, "exit of pid {pid} in state {}", s.name());
                warn!(
                    pid,
                    state = s.name(),
                    "can't happen: an exit for an instance without a process"
                );
            }
        }
    }

    fn errored(&mut self, slot: Slot, status: ExitStatus) {
        let name = &self.apps[slot.0].spec.name;
        error!(app = %name, instance = slot.1, %status,
               max_restarts = self.apps[slot.0].spec.restart.max_restarts,
               "too many unstable restarts; giving up (raise max_restarts or lower min_uptime to allow more)");
        self.transition(slot, State::Errored { status }, None);
        if !self.shutting_down {
            self.shutdown(libc::SIGTERM);
        }
    }

    fn on_deadlines(&mut self, now: Instant) {
        for a in 0..self.apps.len() {
            for i in 0..self.apps[a].instances.len() {
                let slot = (a, i);
                let state = self.apps[a].instances[i].state.clone();
                if state.deadline().is_none_or(|d| d > now) {
                    continue;
                }
                match state {
                    State::Starting { pid, since, .. } => {
                        if self.apps[a].spec.ready.strict {
                            warn!(app = %self.apps[a].spec.name, instance = i, pid,
                                  "not ready within listen_timeout; restarting");
                            self.request_stop(slot, Then::Restart(Reason::ReadyTimeout));
                        } else {
                            warn!(app = %self.apps[a].spec.name, instance = i, pid,
                                  "not ready within listen_timeout; treating it as ready (as PM2 does)");
                            self.apps[a].instances[i].first_ready.get_or_insert(now);
                            self.transition(
                                slot,
                                State::Online {
                                    pid,
                                    since,
                                    ready_at: now,
                                },
                                None,
                            );
                        }
                    }
                    State::Stopping {
                        pid, since, then, ..
                    } => {
                        warn!(app = %self.apps[a].spec.name, instance = i, pid,
                              "still running after kill_timeout; sending SIGKILL");
                        signal_logged(pid, libc::SIGKILL);
                        self.apps[a].instances[i].state = State::Stopping {
                            pid,
                            since,
                            kill_at: None,
                            then,
                        };
                    }
                    State::Waiting { reason, .. } => self.spawn(slot, Some(reason)),
                    State::Online { .. } | State::Stopped { .. } | State::Errored { .. } => {}
                }
            }
        }
        self.on_watchdog_deadlines(now);
    }

    /// Starts a process for the instance; `reason` is set for a restart.
    fn spawn(&mut self, slot: Slot, reason: Option<Reason>) {
        let (a, i) = slot;
        let (mut fds, listen_env) = crate::sockets::listen_fds(&self.sockets[a].listen);
        let readiness = self.prepare_readiness(a, fds.len());
        let output = self.logs.prepare(a, i);
        let spec = &self.apps[a].spec;
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
        let now = Instant::now();
        match spawn::spawn(&req) {
            Ok(pid) => {
                output.started(pid);
                self.by_pid.insert(pid, slot);
                self.start_readiness(pid, readiness);
                let spec = &self.apps[a].spec;
                let next = match spec.ready.source {
                    ReadySource::Started if !self.ready_on_listening(a) => State::Online {
                        pid,
                        since: now,
                        ready_at: now,
                    },
                    _ => State::Starting {
                        pid,
                        since: now,
                        ready_by: now + spec.ready.listen_timeout,
                    },
                };
                if let Some(r) = reason {
                    self.apps[a].instances[i].restarts[r.index()] += 1;
                }
                if next.is_ready() {
                    self.apps[a].instances[i].first_ready.get_or_insert(now);
                }
                self.transition(slot, next, reason);
            }
            Err(e) => {
                error!(app = %spec.name, instance = i, "{e}");
                let status = ExitStatus::Code(e.shell_code());
                self.apps[a].instances[i].last_status = Some(status);
                // Not found or not executable will not fix itself: no retry.
                self.transition(slot, State::Errored { status }, reason);
                if !self.shutting_down {
                    self.shutdown(libc::SIGTERM);
                }
            }
        }
    }

    /// Records and logs a state change.
    fn transition(&mut self, (a, i): Slot, next: State, reason: Option<Reason>) {
        let app = &mut self.apps[a];
        let inst = &mut app.instances[i];
        let from = inst.state.name();
        let status = inst.last_status.map(|s| s.to_string());
        let prev = std::mem::replace(&mut inst.state, next);
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
        self.obs.on_transition(&self.apps, (a, i), &prev);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.apps
            .iter()
            .flat_map(|a| a.instances.iter())
            .filter_map(|i| i.state.deadline())
            .chain(self.ready.next_deadline())
            .min()
    }

    /// The exit code once every instance has stopped for good.
    fn finished(&self) -> Option<i32> {
        let all: Vec<&Instance> = self.apps.iter().flat_map(|a| a.instances.iter()).collect();
        if !all.iter().all(|i| i.state.is_final()) {
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
    if let Err(e) = spawn::signal_group(pgid, signo) {
        warn!(pid = pgid, signal = %signals::name(signo), error = %e, "sending a signal failed");
    }
}
