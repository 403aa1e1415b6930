//! Restarts asked for by PM2's other triggers: `cron_restart` (`cron.rs`)
//! and `watch` (`watch/`).
//!
//! Both are sources: they send their own reports through the senders made
//! here and know nothing of the supervisor. A report becomes the machine's
//! `restart` event, with reason `cron` or `watch`, for every instance of the
//! app (PM2 restarts every process of the app: `God.restartProcessId` per
//! instance for cron, `God.restartProcessName` for watch). When the app's
//! listening sockets are held, the instances go one at a time through the
//! reload queue, as SIGHUP's reload does, so a connection is never
//! refused; otherwise they restart together, as under PM2.
//!
//! A watch report that arrives while the app is still being restarted for
//! an earlier one is skipped, as PM2's watcher skips changes until its
//! restart is done (`lib/Watcher.js`: "Already restarting, skipping").

use tokio::sync::mpsc;
use tracing::{debug, info};

use super::machine::Event;
use super::policy::Reason;
use super::state::State;
use super::Supervisor;
use crate::{cron, watch};

/// Reports waiting for the supervisor; a source waits when it is full.
const REPORTS: usize = 64;

/// The receiving ends of the trigger sources, and what each app is doing
/// about them.
pub struct Triggers {
    cron_tx: mpsc::Sender<cron::Report>,
    /// Cron times.
    pub cron_rx: mpsc::Receiver<cron::Report>,
    watch_tx: mpsc::Sender<watch::Report>,
    /// File changes.
    pub watch_rx: mpsc::Receiver<watch::Report>,
    /// Apps (by index) being restarted for a change.
    watch_restarting: Vec<bool>,
}

impl Triggers {
    /// Channels for `apps` apps; no source runs yet.
    pub fn new(apps: usize) -> Triggers {
        let (cron_tx, cron_rx) = mpsc::channel(REPORTS);
        let (watch_tx, watch_rx) = mpsc::channel(REPORTS);
        Triggers {
            cron_tx,
            cron_rx,
            watch_tx,
            watch_rx,
            watch_restarting: vec![false; apps],
        }
    }
}

impl Supervisor {
    /// Starts the schedule and the watcher of every app that has one.
    /// Nothing runs for an app without them.
    pub(super) fn start_triggers(&mut self) {
        for (a, app) in self.apps.iter().enumerate() {
            if let Some(schedule) = &app.spec.cron_restart {
                info!(app = %app.spec.name, cron = schedule.as_str(), "cron restart scheduled");
                cron::spawn(a, schedule.clone(), self.triggers.cron_tx.clone());
            }
            if let Some(spec) = &app.spec.watch {
                watch::spawn(
                    a,
                    app.spec.name.clone(),
                    spec.clone(),
                    self.triggers.watch_tx.clone(),
                );
            }
        }
    }

    /// Whether some app waits for a trigger: its instances are started
    /// again at the next time or change even once stopped for good, as
    /// PM2 does, so procward keeps running for it until told to stop.
    pub(super) fn waits_for_triggers(&self) -> bool {
        !self.shutting_down
            && self
                .apps
                .iter()
                .any(|a| a.spec.cron_restart.is_some() || a.spec.watch.is_some())
    }

    /// It is one of the app's cron times.
    pub(super) fn on_cron(&mut self, r: cron::Report) {
        if self.shutting_down {
            return;
        }
        info!(app = %self.apps[r.app].spec.name, "cron time: restarting");
        self.restart_app(r.app, Reason::Cron);
    }

    /// A file of the app changed.
    pub(super) fn on_watch(&mut self, r: watch::Report) {
        if self.shutting_down {
            return;
        }
        let name = &self.apps[r.app].spec.name;
        if self.triggers.watch_restarting[r.app] {
            debug!(app = %name, path = %r.path.display(), "change while restarting for an earlier one: skipped");
            return;
        }
        info!(app = %name, path = %r.path.display(), "change detected: restarting");
        self.triggers.watch_restarting[r.app] = true;
        self.restart_app(r.app, Reason::Watch);
    }

    /// Restarts every instance of app `a` for `reason`: one at a time when
    /// its sockets are held, else all together.
    fn restart_app(&mut self, a: usize, reason: Reason) {
        let event = Event::Restart(reason);
        // Not the instances a scale-down is removing.
        let kept = self.kept(a);
        if self.sockets[a].is_empty() {
            for i in 0..kept {
                self.feed((a, i), event);
            }
        } else {
            for i in 0..kept {
                self.queue_rolling((a, i), event);
            }
            self.reload_next();
        }
    }

    /// Clears an app's watch restart once none of its instances is on its
    /// way to a new process any more (called after every event).
    pub(super) fn advance_triggers(&mut self) {
        for a in 0..self.apps.len() {
            if !self.triggers.watch_restarting[a] {
                continue;
            }
            let busy = self.apps[a].instances.iter().any(|inst| {
                matches!(
                    inst.state,
                    State::Starting { .. }
                        | State::Stopping { .. }
                        | State::Emptying { .. }
                        | State::Spawning { .. }
                )
            }) || self.rolling_pending(a);
            if !busy {
                self.triggers.watch_restarting[a] = false;
            }
        }
    }
}
