//! The rolling reload: every instance of the apps asked for, one at a
//! time, the next only once the one in flight has settled.
//!
//! An app whose sockets procward holds (cluster mode, or `listen`) is
//! reloaded with overlap: the machine starts the replacement beside the
//! serving process and asks the old one to stop only once the new one is
//! ready, so the app never has fewer ready instances than it had. A
//! replacement that exits, cannot be started or is not ready within
//! `listen_timeout` aborts the reload: it is killed and the old process
//! serves on. Any other app gets PM2's fork-mode reload, stop then start,
//! and a log line says why.
//!
//! A request waits for its instances: [`Supervisor::reload_apps`] takes a
//! sender that gets one [`InstanceReload`] per instance once each has
//! settled. It is answered only by reloads that start after it: an
//! instance already being replaced when it comes (by an earlier reload, or
//! by a cron or watch restart, which share the queue) is queued again, so
//! its answer names a process started after the request.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::machine::Event;
use super::state::State;
use super::{Slot, Supervisor};

/// How the reload of one instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new process is ready; the old one has been asked to stop.
    Done,
    /// The replacement failed (why); the old process serves on where it
    /// could overlap, else the instance restarts under its policy.
    Aborted(String),
    /// Nothing ran to reload (stopped, errored, waiting out a delay).
    NotRunning,
}

impl ReloadResult {
    /// The `result` label of `procward_reloads_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReloadResult::Done => "done",
            ReloadResult::Aborted(_) => "aborted",
            ReloadResult::NotRunning => "not_running",
        }
    }
}

/// The reload of one instance, as a request's answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReload {
    /// The app's name.
    pub app: String,
    /// The instance's index.
    pub instance: usize,
    /// Its process before the reload.
    pub pid_before: Option<i32>,
    /// Its current process once settled.
    pub pid: Option<i32>,
    /// How it ended.
    pub result: ReloadResult,
}

/// Every instance of a reload request, in order.
pub type ReloadReport = Vec<InstanceReload>;

/// The reloads queued and in flight.
#[derive(Default)]
pub struct Reloads {
    /// Instances to replace one at a time, each with its event: `reload`,
    /// or a trigger's restart of an app whose sockets are held.
    queue: VecDeque<(Slot, Event)>,
    in_flight: Option<InFlight>,
    waiters: Vec<Waiter>,
    /// Entries taken from the queue so far; each is numbered by it, and a
    /// request is answered by entries numbered after it.
    taken: u64,
    /// Why the last reload of an app was aborted, until one is done: shown
    /// in STATUS=.
    pub aborted: HashMap<usize, String>,
}

struct InFlight {
    slot: Slot,
    /// A reload (reported and counted), not a trigger's restart.
    reload: bool,
    before: Option<i32>,
    aborted: Option<&'static str>,
    /// Its number in [`Reloads::taken`].
    run: u64,
}

struct Waiter {
    /// [`Reloads::taken`] when the request came.
    since: u64,
    slots: Vec<Slot>,
    results: Vec<Option<InstanceReload>>,
    reply: oneshot::Sender<ReloadReport>,
}

impl Reloads {
    /// Whether no reload is queued or under way.
    pub fn is_done(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }
}

impl Supervisor {
    /// Reloads every instance of the apps `apps` (indexes), one at a time.
    /// When `reply` is given, it gets one result per instance once every
    /// one has settled (a control request waits on it); SIGHUP and
    /// systemd's `ExecReload` reload every app without one.
    pub fn reload_apps(&mut self, apps: &[usize], reply: Option<oneshot::Sender<ReloadReport>>) {
        let slots: Vec<Slot> = apps
            .iter()
            .filter(|a| **a < self.apps.len())
            .flat_map(|&a| (0..self.apps[a].instances.len()).map(move |i| (a, i)))
            .collect();
        if self.shutting_down {
            if let Some(reply) = reply {
                let report = slots
                    .iter()
                    .map(|&s| self.result_of(s, None, ReloadResult::NotRunning))
                    .collect();
                let _ = reply.send(report);
            }
            return;
        }
        let names: Vec<&str> = apps
            .iter()
            .filter_map(|&a| self.apps.get(a).map(|x| x.spec.name.as_str()))
            .collect();
        info!(apps = names.join(","), "reloading");
        self.ready.manager.reloading();
        for &a in apps.iter().filter(|a| **a < self.apps.len()) {
            if !self.holds_sockets(a) {
                info!(app = %self.apps[a].spec.name,
                      "reloading by stop then start: procward holds no socket for this app, so a new process could not bind while the old one holds the port; give it `--listen ADDR` (`listen:`) or run it in cluster mode (`-i N`, exec_mode: cluster) for overlapping reloads");
            }
        }
        for &slot in &slots {
            self.queue_rolling(slot, Event::Reload);
        }
        if let Some(reply) = reply {
            if slots.is_empty() {
                let _ = reply.send(Vec::new());
                return self.reload_next();
            }
            self.reloads.waiters.push(Waiter {
                since: self.reloads.taken,
                results: vec![None; slots.len()],
                slots,
                reply,
            });
        }
        self.reload_next();
    }

    /// Moves a reload on once the instance in flight has settled: its new
    /// process is ready, or the reload was aborted or failed. Called after
    /// every event.
    pub(super) fn advance_reload(&mut self) {
        let Some(f) = &self.reloads.in_flight else {
            // The next one may have waited for an old process to go.
            return self.reload_next();
        };
        let (a, i) = f.slot;
        let inst = &self.apps[a].instances[i];
        let result = match (&inst.state, f.aborted) {
            (_, Some(why)) => ReloadResult::Aborted(why.into()),
            (
                State::Spawning { .. }
                | State::Starting { .. }
                | State::Stopping { .. }
                | State::Emptying { .. },
                None,
            ) => return,
            (State::Online { pid, .. }, None) if Some(*pid) != f.before => ReloadResult::Done,
            (_, None) => ReloadResult::Aborted(match inst.last_status {
                Some(s) => format!("the new process failed ({s})"),
                None => "the new process failed".into(),
            }),
        };
        let before = f.before;
        let slot = f.slot;
        let reload = f.reload;
        let run = f.run;
        self.reloads.in_flight = None;
        if !reload {
            // A trigger's restart: the policy and its log line say the
            // rest, and no request waits for it.
            return self.reload_next();
        }
        let name = &self.apps[a].spec.name;
        match &result {
            ReloadResult::Aborted(why) => {
                warn!(app = %name, instance = i, why = why.as_str(), "reload aborted");
                self.reloads
                    .aborted
                    .insert(a, format!("instance {i}: {why}"));
            }
            _ => {
                info!(app = %name, instance = i, pid_before = before, pid = inst.state.pid(),
                      "reloaded");
                self.reloads.aborted.remove(&a);
            }
        }
        self.obs.reloaded(a, result.as_str());
        let r = self.result_of(slot, before, result);
        self.deliver(slot, run, r);
        self.reload_next();
    }

    /// Queues `event` for the instance, to be fed when its turn comes,
    /// unless the same kind (a reload, or a trigger's restart) is already
    /// queued for it and not yet begun. A reload is queued again behind
    /// one in flight: that one's new process was started before it was
    /// asked for. A trigger's restart is not.
    pub(super) fn queue_rolling(&mut self, slot: Slot, event: Event) {
        let reload = event == Event::Reload;
        let queued = self
            .reloads
            .queue
            .iter()
            .any(|(s, e)| *s == slot && (*e == Event::Reload) == reload);
        let in_flight = !reload
            && self
                .reloads
                .in_flight
                .as_ref()
                .is_some_and(|f| f.slot == slot && !f.reload);
        if !queued && !in_flight {
            self.reloads.queue.push_back((slot, event));
        }
    }

    /// Whether an instance of app `a` waits in, or is in flight of, the
    /// one-at-a-time queue.
    pub(super) fn rolling_pending(&self, a: usize) -> bool {
        self.reloads
            .in_flight
            .as_ref()
            .is_some_and(|f| f.slot.0 == a)
            || self.reloads.queue.iter().any(|((x, _), _)| *x == a)
    }

    /// Instances of app `a` from `from` on are gone (a scale-down): none
    /// of them stays queued or in flight.
    pub(super) fn forget_rolling(&mut self, a: usize, from: usize) {
        let gone = |(x, i): Slot| x == a && i >= from;
        self.reloads.queue.retain(|(s, _)| !gone(*s));
        if self
            .reloads
            .in_flight
            .as_ref()
            .is_some_and(|f| gone(f.slot))
        {
            self.reloads.in_flight = None;
        }
    }

    /// The machine aborted the reload of `slot`.
    pub(super) fn reload_aborted(&mut self, slot: Slot, why: &'static str) {
        match &mut self.reloads.in_flight {
            Some(f) if f.slot == slot => f.aborted = Some(why),
            _ => {}
        }
    }

    /// procward is stopping: every waiting request gets its answer as it
    /// stands.
    pub(super) fn cancel_reloads(&mut self) {
        self.reloads.queue.clear();
        self.reloads.in_flight = None;
        for w in std::mem::take(&mut self.reloads.waiters) {
            let report = w
                .slots
                .iter()
                .zip(w.results)
                .map(|(&slot, r)| {
                    r.unwrap_or_else(|| {
                        let pid = self.apps[slot.0].instances[slot.1].state.pid();
                        self.result_of(
                            slot,
                            pid,
                            ReloadResult::Aborted("procward is stopping".into()),
                        )
                    })
                })
                .collect();
            let _ = w.reply.send(report);
        }
    }

    pub(super) fn reload_next(&mut self) {
        while self.reloads.in_flight.is_none() {
            let Some(&(slot, event)) = self.reloads.queue.front() else {
                return;
            };
            let (a, i) = slot;
            let inst = &self.apps[a].instances[i];
            if inst.draining.is_some() {
                // Its last old process is still going: one overlap at a
                // time. Its exit is an event; this runs again then.
                return;
            }
            self.reloads.queue.pop_front();
            self.reloads.taken += 1;
            let run = self.reloads.taken;
            let reload = event == Event::Reload;
            match inst.state {
                State::Starting { pid, .. } | State::Online { pid, .. } => {
                    self.reloads.in_flight = Some(InFlight {
                        slot,
                        reload,
                        before: Some(pid),
                        aborted: None,
                        run,
                    });
                    self.feed(slot, event);
                }
                // A trigger's restart also starts one that has stopped.
                _ if !reload => {
                    self.feed(slot, event);
                    let busy = matches!(
                        self.apps[a].instances[i].state,
                        State::Starting { .. } | State::Stopping { .. } | State::Emptying { .. }
                    );
                    if busy {
                        self.reloads.in_flight = Some(InFlight {
                            slot,
                            reload,
                            before: None,
                            aborted: None,
                            run,
                        });
                    }
                }
                _ => {
                    let r = self.result_of(slot, None, ReloadResult::NotRunning);
                    self.deliver(slot, run, r);
                }
            }
        }
    }

    fn result_of(&self, (a, i): Slot, before: Option<i32>, result: ReloadResult) -> InstanceReload {
        InstanceReload {
            app: self.apps[a].spec.name.clone(),
            instance: i,
            pid_before: before,
            pid: self.apps[a].instances[i].state.pid(),
            result,
        }
    }

    /// Gives `r`, the outcome of queue entry `run`, to every request
    /// waiting for `slot` that came before the entry was begun; answers
    /// those that are complete.
    fn deliver(&mut self, slot: Slot, run: u64, r: InstanceReload) {
        let mut k = 0;
        while k < self.reloads.waiters.len() {
            let w = &mut self.reloads.waiters[k];
            if w.since >= run {
                k += 1;
                continue;
            }
            for (s, out) in w.slots.iter().zip(w.results.iter_mut()) {
                if *s == slot && out.is_none() {
                    *out = Some(r.clone());
                }
            }
            if w.results.iter().all(Option::is_some) {
                let w = self.reloads.waiters.swap_remove(k);
                let _ = w.reply.send(w.results.into_iter().flatten().collect());
            } else {
                k += 1;
            }
        }
    }
}
