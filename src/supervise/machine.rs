//! The instance machine: one function of (state, event, the app's policy,
//! now) that returns the next state and the actions to take.
//!
//! It performs no I/O: no process is spawned or signalled here, no clock is
//! read. The event loop (`supervise/mod.rs`) turns what happens (an exit
//! from the reaper, a readiness report, a signal's meaning, a deadline, a
//! memory sample) into an [`Event`], calls [`step`], and executes the
//! returned [`Action`]s in order; a [`Action::Spawn`] is answered with
//! [`Event::Spawned`] or [`Event::SpawnFailed`] in the same turn.
//!
//! Every (state, event) pair is written out in one `match` without a
//! catch-all arm, as s6-supervise's table is: adding a state or an event
//! does not compile until each pair has been decided. A pair that cannot
//! happen logs a warning and changes nothing. Deadlines are data of the
//! states (`ready_by`, `kill_at`, `until`): entering a state arms its
//! deadline, leaving it cancels it, and the loop sleeps until the earliest.
//! The reference a newcomer reads first is
//! `docs/design/instance-machine.md`.

use std::time::Instant;

use tracing::{error, info, warn};

use crate::config::AppSpec;
#[cfg(test)]
use crate::config::ReadySource;
use crate::exit::ExitStatus;
use crate::supervise::instance::{Draining, Instance};
use crate::supervise::policy::{self, Decision, Reason};
use crate::supervise::state::{State, Then};

/// Something that happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The process asked for by [`Action::Spawn`] runs.
    Spawned {
        /// Its pid, also its process group.
        pid: i32,
    },
    /// The process asked for by [`Action::Spawn`] could not be started.
    SpawnFailed {
        /// For want of a resource (EMFILE, ENFILE, EAGAIN, ENOMEM): retried.
        transient: bool,
        /// The status a shell would give (127 not found, 126 not executable).
        status: ExitStatus,
    },
    /// The process said it is ready (or its probe succeeded).
    Ready,
    /// A process of the instance exited (reaped by the one reaper).
    Exited {
        /// Which one: the current process or a draining one.
        pid: i32,
        /// How.
        status: ExitStatus,
        /// Whether other members of its process group are still alive.
        group_alive: bool,
    },
    /// The process group of an exited main process has emptied.
    GroupEmpty,
    /// The instance's deadline (its state's, or its draining process's
    /// kill_timeout) has been reached.
    Deadline,
    /// Stop it for good (a control request; none is wired to it yet).
    #[allow(dead_code)]
    Stop,
    /// Restart it gracefully, or start it if stopped, for this reason:
    /// `cron` and `watch` (the app's triggers), `manual` (a control
    /// request).
    Restart(Reason),
    /// Reload it: replace its process with a new one.
    Reload,
    /// procward is stopping: stop with this signal, restart nothing.
    Shutdown {
        /// The signal procward received.
        signo: i32,
    },
    /// A second SIGTERM or SIGINT while stopping: SIGKILL now.
    Kill,
    /// A memory sample of the process tree.
    Memory {
        /// Resident bytes of the tree.
        rss: u64,
        /// Whether this instance may be restarted for memory now (only one
        /// instance of an app at a time, see `memory.rs`).
        turn: bool,
    },
    /// The app's sd_notify watchdog expired, or it asked for it
    /// (`WATCHDOG=trigger`).
    WatchdogMissed,
}

/// Something the loop must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a process for the instance; answer with [`Event::Spawned`] or
    /// [`Event::SpawnFailed`].
    Spawn,
    /// Send a signal to a process group.
    Signal {
        /// The group.
        pgid: i32,
        /// The signal.
        signo: i32,
    },
    /// Ask the process to stop: PM2's `"shutdown"` message when the app
    /// has `shutdown_with_message`, else `signo` to its group.
    AskToStop {
        /// The process.
        pid: i32,
        /// The signal to use.
        signo: i32,
    },
    /// Count a restart for this reason.
    CountRestart(Reason),
    /// The state changed from `from`: log it, update metrics and status.
    Changed {
        /// The state before.
        from: State,
        /// Why, for a restart.
        reason: Option<Reason>,
    },
    /// The instance is errored: too many unstable restarts, or its command
    /// cannot be run.
    GaveUp,
    /// A rolling reload of the instance failed: its replacement was killed
    /// (or never ran) and the old process is current again.
    ReloadAborted {
        /// What went wrong, for the log, the metric and STATUS=.
        why: &'static str,
    },
}

/// What the machine reads besides the instance: the app's policy, the time,
/// and whether procward is stopping.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The app's settings.
    pub spec: &'a AppSpec,
    /// Now.
    pub now: Instant,
    /// Whether procward is stopping (nothing is restarted).
    pub shutting_down: bool,
    /// The instance's index, for log lines.
    pub index: usize,
    /// Whether a new process is ready as soon as it runs (no readiness
    /// source, and not a cluster worker that must listen first).
    pub online_at_spawn: bool,
    /// Whether a reload may run the old and the new process side by side:
    /// procward holds the app's sockets (cluster mode, or `listen`), so
    /// the replacement can accept on the socket the old one serves.
    pub overlap: bool,
}

/// Feeds one event to the instance; returns the actions to take.
pub fn step(inst: &mut Instance, event: Event, cx: &Ctx) -> Vec<Action> {
    let mut m = Machine {
        inst,
        cx,
        out: Vec::new(),
    };
    if !m.draining(event) && !m.overlap(event) {
        m.current(event);
    }
    m.settle_overlap();
    m.out
}

struct Machine<'i, 'c, 's> {
    inst: &'i mut Instance,
    cx: &'c Ctx<'s>,
    out: Vec<Action>,
}

impl Machine<'_, '_, '_> {
    /// Events for the draining old process of an overlap; true when the
    /// event was its.
    fn draining(&mut self, event: Event) -> bool {
        let Some(old) = self.inst.draining.clone() else {
            return false;
        };
        match event {
            Event::Exited { pid, status, .. } if pid == old.pid => {
                info!(app = %self.cx.spec.name, instance = self.cx.index, pid, %status,
                      "old process exited");
                // What it left in its group goes with it.
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                self.inst.draining = None;
                true
            }
            Event::Deadline if old.kill_at.is_some_and(|k| k <= self.cx.now) => {
                self.out.push(Action::Signal {
                    pgid: old.pid,
                    signo: libc::SIGKILL,
                });
                self.inst.draining = Some(Draining {
                    kill_at: None,
                    ..old
                });
                // The current process may have a deadline due too.
                self.inst.state.deadline().is_none_or(|d| d > self.cx.now)
            }
            Event::Shutdown { signo } => {
                self.out.push(Action::Signal {
                    pgid: old.pid,
                    signo,
                });
                if old.serving.is_some() {
                    // Nobody waits for its replacement any more.
                    self.inst.draining = Some(Draining {
                        kill_at: Some(self.cx.now + self.cx.spec.stop.kill_timeout),
                        serving: None,
                        ..old
                    });
                }
                false
            }
            Event::Kill => {
                self.out.push(Action::Signal {
                    pgid: old.pid,
                    signo: libc::SIGKILL,
                });
                self.inst.draining = Some(Draining {
                    kill_at: None,
                    serving: None,
                    ..old
                });
                false
            }
            _ => false,
        }
    }

    /// The rows of a rolling reload, before the table: a reload of an
    /// online instance whose sockets procward holds starts the replacement
    /// beside the serving process, and a replacement that fails before it
    /// is ready gives the instance back to the old one. True when the
    /// event was handled here.
    fn overlap(&mut self, event: Event) -> bool {
        let now = self.cx.now;
        let serving = self.inst.draining.clone().filter(|d| d.serving.is_some());
        match (self.inst.state.clone(), serving, event) {
            (
                State::Online {
                    pid,
                    since,
                    ready_at,
                },
                None,
                Event::Reload,
            ) if self.cx.overlap && self.inst.draining.is_none() => {
                info!(app = %self.cx.spec.name, instance = self.cx.index, pid,
                      "reloading: starting the replacement while the process serves");
                self.inst.draining = Some(Draining {
                    pid,
                    since,
                    kill_at: None,
                    serving: Some(ready_at),
                });
                self.spawn(Some(Reason::Reload));
                true
            }
            // Already being replaced.
            (_, Some(_), Event::Reload) => true,
            (State::Starting { pid, .. }, Some(old), Event::Exited { pid: p, status, .. })
                if p == pid =>
            {
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                self.inst.last_status = Some(status);
                self.abort(old, None, pid, "the replacement exited before it was ready");
                true
            }
            (
                State::Starting {
                    pid,
                    since,
                    ready_by,
                },
                Some(old),
                Event::Deadline,
            ) if ready_by <= now => {
                // The whole group, at once: it never served.
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                let killed = Draining {
                    pid,
                    since,
                    kill_at: None,
                    serving: None,
                };
                self.abort(
                    old,
                    Some(killed),
                    pid,
                    "the replacement was not ready within listen_timeout",
                );
                true
            }
            (State::Spawning { .. }, Some(old), Event::SpawnFailed { .. }) => {
                self.abort(old, None, 0, "the replacement could not be started");
                true
            }
            _ => false,
        }
    }

    /// The replacement failed: the old process is current again, and
    /// `killed` (the replacement, SIGKILLed) drains in its place.
    fn abort(&mut self, old: Draining, killed: Option<Draining>, pid: i32, why: &'static str) {
        warn!(app = %self.cx.spec.name, instance = self.cx.index, pid, old = old.pid,
              "{why}: reload aborted, the old process keeps serving");
        let ready_at = old.serving.unwrap_or(self.cx.now);
        self.inst.first_ready = Some(ready_at);
        self.inst.draining = killed;
        self.set(
            State::Online {
                pid: old.pid,
                since: old.since,
                ready_at,
            },
            None,
        );
        self.out.push(Action::ReloadAborted { why });
    }

    /// After every event: an old process still serving is asked to stop
    /// once its replacement is online (the reload is done), or once the
    /// replacement is being stopped for another reason (nothing waits for
    /// it any more).
    fn settle_overlap(&mut self) {
        let Some(old) = self.inst.draining.clone().filter(|d| d.serving.is_some()) else {
            return;
        };
        match self.inst.state {
            State::Spawning { .. } | State::Starting { .. } => return,
            State::Online { pid, .. } => {
                info!(app = %self.cx.spec.name, instance = self.cx.index, pid, old = old.pid,
                      "replacement ready; asking the old process to stop");
            }
            State::Stopping { .. }
            | State::Emptying { .. }
            | State::Waiting { .. }
            | State::Stopped { .. }
            | State::Errored { .. } => {
                info!(app = %self.cx.spec.name, instance = self.cx.index, old = old.pid,
                      "the replacement is stopping; asking the old process to stop too");
            }
        }
        self.out.push(Action::AskToStop {
            pid: old.pid,
            signo: self.cx.spec.stop.kill_signal as i32,
        });
        self.inst.draining = Some(Draining {
            kill_at: Some(self.cx.now + self.cx.spec.stop.kill_timeout),
            serving: None,
            ..old
        });
    }

    /// The table for the current process.
    fn current(&mut self, event: Event) {
        let now = self.cx.now;
        let spec = self.cx.spec;
        match (self.inst.state.clone(), event) {
            // ---- Spawning: only the answer to the Spawn action ----
            (State::Spawning { reason, .. }, Event::Spawned { pid }) => {
                self.inst.fit = false;
                self.inst.under_cap_since = None;
                self.inst.first_ready = None;
                if let Some(r) = reason {
                    self.out.push(Action::CountRestart(r));
                }
                if self.inst.counters.spawn_failures > 0 {
                    info!(app = %spec.name, instance = self.cx.index, pid,
                          failed = self.inst.counters.spawn_failures,
                          "spawned after failed attempts");
                    self.inst.counters.spawn_failures = 0;
                }
                let next = match self.cx.online_at_spawn {
                    true => {
                        self.inst.first_ready = Some(now);
                        State::Online {
                            pid,
                            since: now,
                            ready_at: now,
                        }
                    }
                    false => State::Starting {
                        pid,
                        since: now,
                        ready_by: now + spec.ready.listen_timeout,
                    },
                };
                self.set(next, reason);
            }
            (State::Spawning { reason, .. }, Event::SpawnFailed { transient, status }) => {
                if transient && !self.cx.shutting_down {
                    let n = self.inst.counters.spawn_failures + 1;
                    self.inst.counters.spawn_failures = n;
                    self.out.push(Action::CountRestart(Reason::SpawnFailed));
                    let delay = policy::spawn_retry_delay(&spec.restart, n);
                    self.set(
                        State::Waiting {
                            until: now + delay,
                            reason,
                        },
                        Some(Reason::SpawnFailed),
                    );
                } else if transient {
                    self.inst.last_status = Some(status);
                    self.set(
                        State::Stopped {
                            status: Some(status),
                        },
                        None,
                    );
                } else {
                    // Not found or not executable will not fix itself.
                    self.inst.last_status = Some(status);
                    self.set(State::Errored { status }, reason);
                    self.out.push(Action::GaveUp);
                }
            }
            (
                s @ (State::Starting { .. }
                | State::Online { .. }
                | State::Stopping { .. }
                | State::Emptying { .. }
                | State::Waiting { .. }
                | State::Stopped { .. }
                | State::Errored { .. }),
                e @ (Event::Spawned { .. } | Event::SpawnFailed { .. }),
            ) => self.cant_happen(&s, e),
            // The loop answers a Spawn within the same turn: nothing else
            // can reach a spawning instance.
            (
                s @ State::Spawning { .. },
                e @ (Event::Ready
                | Event::Exited { .. }
                | Event::GroupEmpty
                | Event::Deadline
                | Event::Stop
                | Event::Restart(_)
                | Event::Reload
                | Event::Shutdown { .. }
                | Event::Kill
                | Event::Memory { .. }
                | Event::WatchdogMissed),
            ) => self.cant_happen(&s, e),

            // ---- Ready ----
            (State::Starting { pid, since, .. }, Event::Ready) => {
                self.inst.first_ready.get_or_insert(now);
                self.set(
                    State::Online {
                        pid,
                        since,
                        ready_at: now,
                    },
                    None,
                );
            }
            // Readiness is only news while starting; a late report is stale.
            (
                State::Online { .. }
                | State::Stopping { .. }
                | State::Emptying { .. }
                | State::Waiting { .. }
                | State::Stopped { .. }
                | State::Errored { .. },
                Event::Ready,
            ) => {}

            // ---- Exited ----
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::Exited { pid: p, status, .. },
            ) if p == pid => {
                // Whatever the main process left behind in its group goes
                // with it, as systemd does with a service's cgroup.
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                self.inst.last_status = Some(status);
                let uptime = now.saturating_duration_since(since);
                info!(app = %spec.name, instance = self.cx.index, pid, %status,
                      uptime_ms = uptime.as_millis() as u64, "exited");
                let decision = if self.cx.shutting_down {
                    Decision::Stop
                } else {
                    policy::after_exit(&spec.restart, &mut self.inst.counters, status, uptime)
                };
                self.decided(decision, Some(status));
            }
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    then,
                },
                Event::Exited {
                    pid: p,
                    status,
                    group_alive,
                },
            ) if p == pid => {
                self.inst.last_status = Some(status);
                info!(app = %spec.name, instance = self.cx.index, pid, %status, "stopped");
                match kill_at {
                    // kill_timeout covers the whole group: wait for the rest.
                    Some(kill_at) if group_alive => self.set(
                        State::Emptying {
                            pgid: pid,
                            since,
                            kill_at: Some(kill_at),
                            then,
                        },
                        None,
                    ),
                    _ => {
                        self.out.push(Action::Signal {
                            pgid: pid,
                            signo: libc::SIGKILL,
                        });
                        self.finish(since, then);
                    }
                }
            }
            (
                s @ (State::Starting { .. } | State::Online { .. } | State::Stopping { .. }),
                e @ Event::Exited { .. },
            ) => self.cant_happen(&s, e),
            (
                s @ (State::Emptying { .. }
                | State::Waiting { .. }
                | State::Stopped { .. }
                | State::Errored { .. }),
                e @ Event::Exited { .. },
            ) => self.cant_happen(&s, e),

            // ---- GroupEmpty ----
            (State::Emptying { since, then, .. }, Event::GroupEmpty) => self.finish(since, then),
            (
                s @ (State::Starting { .. }
                | State::Online { .. }
                | State::Stopping { .. }
                | State::Waiting { .. }
                | State::Stopped { .. }
                | State::Errored { .. }),
                e @ Event::GroupEmpty,
            ) => self.cant_happen(&s, e),

            // ---- Deadline ----
            (State::Starting { pid, since, .. }, Event::Deadline) => {
                if spec.ready.strict {
                    warn!(app = %spec.name, instance = self.cx.index, pid,
                          "not ready within listen_timeout; restarting");
                    self.stop(
                        pid,
                        since,
                        spec.stop.kill_signal as i32,
                        restart(Reason::ReadyTimeout, spec),
                    );
                } else {
                    warn!(app = %spec.name, instance = self.cx.index, pid,
                          "not ready within listen_timeout; treating it as ready (as PM2 does)");
                    self.inst.first_ready.get_or_insert(now);
                    self.set(
                        State::Online {
                            pid,
                            since,
                            ready_at: now,
                        },
                        None,
                    );
                }
            }
            (
                State::Stopping {
                    pid, since, then, ..
                },
                Event::Deadline,
            ) => {
                warn!(app = %spec.name, instance = self.cx.index, pid,
                      "still running after kill_timeout; sending SIGKILL");
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                self.set(
                    State::Stopping {
                        pid,
                        since,
                        kill_at: None,
                        then,
                    },
                    None,
                );
            }
            (
                State::Emptying {
                    pgid, since, then, ..
                },
                Event::Deadline,
            ) => {
                warn!(app = %spec.name, instance = self.cx.index, pgid,
                      "its process group is still running after kill_timeout; sending SIGKILL");
                self.out.push(Action::Signal {
                    pgid,
                    signo: libc::SIGKILL,
                });
                self.finish(since, then);
            }
            (State::Waiting { reason, .. }, Event::Deadline) => self.spawn(reason),
            (
                s @ (State::Online { .. } | State::Stopped { .. } | State::Errored { .. }),
                e @ Event::Deadline,
            ) => self.cant_happen(&s, e),

            // ---- Stop (for good) ----
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::Stop,
            ) => self.stop(pid, since, spec.stop.kill_signal as i32, Then::Stop),
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    ..
                },
                Event::Stop,
            ) => self.set(
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    then: Then::Stop,
                },
                None,
            ),
            (
                State::Emptying {
                    pgid,
                    since,
                    kill_at,
                    ..
                },
                Event::Stop,
            ) => self.set(
                State::Emptying {
                    pgid,
                    since,
                    kill_at,
                    then: Then::Stop,
                },
                None,
            ),
            (State::Waiting { .. }, Event::Stop) => self.set(
                State::Stopped {
                    status: self.inst.last_status,
                },
                None,
            ),
            (State::Stopped { .. } | State::Errored { .. }, Event::Stop) => {}

            // ---- Restart (manual) and Reload ----
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::Restart(reason),
            ) => self.stop(
                pid,
                since,
                spec.stop.kill_signal as i32,
                Then::Restart(reason),
            ),
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::Reload,
            ) => self.stop(
                pid,
                since,
                spec.stop.kill_signal as i32,
                Then::Restart(Reason::Reload),
            ),
            // Already on its way to a new process.
            (
                State::Stopping { .. } | State::Emptying { .. },
                Event::Restart(_) | Event::Reload,
            ) => {}
            (State::Waiting { .. }, Event::Restart(reason)) => self.spawn(Some(reason)),
            (State::Stopped { .. } | State::Errored { .. }, Event::Restart(reason)) => {
                self.inst.counters = Default::default();
                self.spawn(Some(reason));
            }
            // A reload replaces running processes; it starts nothing.
            (
                State::Waiting { .. } | State::Stopped { .. } | State::Errored { .. },
                Event::Reload,
            ) => {}

            // ---- Shutdown ----
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::Shutdown { signo },
            ) => self.stop(pid, since, signo, Then::Stop),
            // Already stopping (a restart, say): pass the signal on, keep
            // the SIGKILL deadline, and restart nothing.
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at,
                    ..
                },
                Event::Shutdown { signo },
            ) => {
                self.out.push(Action::Signal { pgid: pid, signo });
                self.set(
                    State::Stopping {
                        pid,
                        since,
                        kill_at,
                        then: Then::Stop,
                    },
                    None,
                );
            }
            (
                State::Emptying {
                    pgid,
                    since,
                    kill_at,
                    ..
                },
                Event::Shutdown { signo },
            ) => {
                self.out.push(Action::Signal { pgid, signo });
                self.set(
                    State::Emptying {
                        pgid,
                        since,
                        kill_at,
                        then: Then::Stop,
                    },
                    None,
                );
            }
            (State::Waiting { .. }, Event::Shutdown { .. }) => self.set(
                State::Stopped {
                    status: self.inst.last_status,
                },
                None,
            ),
            (State::Stopped { .. } | State::Errored { .. }, Event::Shutdown { .. }) => {}

            // ---- Kill: a second SIGTERM/SIGINT while stopping ----
            (
                State::Starting { pid, since, .. }
                | State::Online { pid, since, .. }
                | State::Stopping { pid, since, .. },
                Event::Kill,
            ) => {
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                self.set(
                    State::Stopping {
                        pid,
                        since,
                        kill_at: None,
                        then: Then::Stop,
                    },
                    None,
                );
            }
            (State::Emptying { pgid, .. }, Event::Kill) => {
                self.out.push(Action::Signal {
                    pgid,
                    signo: libc::SIGKILL,
                });
                self.set(
                    State::Stopped {
                        status: self.inst.last_status,
                    },
                    None,
                );
            }
            (State::Waiting { .. }, Event::Kill) => self.set(
                State::Stopped {
                    status: self.inst.last_status,
                },
                None,
            ),
            (State::Stopped { .. } | State::Errored { .. }, Event::Kill) => {}

            // ---- Memory ----
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::Memory { rss, turn },
            ) => {
                // Over the hard limit too, the restart starts gracefully, on
                // the instance's turn; the next sample over it while the
                // process is stopping sends SIGKILL (below).
                let Some(soft) = spec.max_memory_restart else {
                    return;
                };
                if rss <= soft {
                    // Stable once under the cap for min_uptime: an app that
                    // passes the cap while it starts up is not.
                    let since = *self.inst.under_cap_since.get_or_insert(now);
                    self.inst.fit |=
                        now.saturating_duration_since(since) >= spec.restart.min_uptime;
                } else if turn {
                    warn!(app = %spec.name, instance = self.cx.index, pid, rss_bytes = rss,
                          max_memory_restart = soft, "memory above max_memory_restart; restarting gracefully");
                    self.stop(
                        pid,
                        since,
                        spec.stop.kill_signal as i32,
                        restart(Reason::Memory, spec),
                    );
                }
            }
            (
                State::Stopping {
                    pid,
                    since,
                    kill_at: Some(_),
                    then,
                },
                Event::Memory { rss, .. },
            ) if spec.memory_hard_limit().is_some_and(|h| rss > h) => {
                warn!(app = %spec.name, instance = self.cx.index, pid, rss_bytes = rss,
                      max_memory_hard = spec.memory_hard_limit(),
                      "memory above the hard limit while stopping; sending SIGKILL");
                self.out.push(Action::Signal {
                    pgid: pid,
                    signo: libc::SIGKILL,
                });
                self.set(
                    State::Stopping {
                        pid,
                        since,
                        kill_at: None,
                        then,
                    },
                    None,
                );
            }
            // Under the hard limit, or SIGKILL already sent: the stop runs.
            (State::Stopping { .. } | State::Emptying { .. }, Event::Memory { .. }) => {}
            (
                s @ (State::Waiting { .. } | State::Stopped { .. } | State::Errored { .. }),
                e @ Event::Memory { .. },
            ) => self.cant_happen(&s, e),

            // ---- Watchdog ----
            (
                State::Starting { pid, since, .. } | State::Online { pid, since, .. },
                Event::WatchdogMissed,
            ) => self.stop(
                pid,
                since,
                spec.stop.kill_signal as i32,
                restart(Reason::Watchdog, spec),
            ),
            // A ping that was due from a process already going.
            (
                State::Stopping { .. }
                | State::Emptying { .. }
                | State::Waiting { .. }
                | State::Stopped { .. }
                | State::Errored { .. },
                Event::WatchdogMissed,
            ) => {}
        }
    }

    /// Asks the process to stop (with `signo` or the shutdown message) and
    /// arms the SIGKILL deadline.
    fn stop(&mut self, pid: i32, since: Instant, signo: i32, then: Then) {
        self.out.push(Action::AskToStop { pid, signo });
        self.set(
            State::Stopping {
                pid,
                since,
                kill_at: Some(self.cx.now + self.cx.spec.stop.kill_timeout),
                then,
            },
            None,
        );
    }

    /// The stopped process and its group are gone: what `then` says, through
    /// the one restart policy.
    fn finish(&mut self, since: Instant, then: Then) {
        let status = self.inst.last_status;
        let reason = match then {
            Then::Restart(r) if !self.cx.shutting_down => r,
            Then::Restart(_) | Then::Stop => {
                return self.set(State::Stopped { status }, None);
            }
        };
        let uptime = self.cx.now.saturating_duration_since(since);
        let restart = &self.cx.spec.restart;
        let unstable = match reason {
            // Asked for: a new process at once, outside the policy.
            Reason::Reload | Reason::Manual | Reason::Cron | Reason::Watch => {
                return self.spawn(Some(reason))
            }
            // It never became ready: a failed start.
            Reason::ReadyTimeout => true,
            // Never under the cap for min_uptime: it cannot run within it.
            Reason::Memory => uptime < restart.min_uptime || !self.inst.fit,
            Reason::Watchdog
            | Reason::Crash
            | Reason::Signal
            | Reason::Exit
            | Reason::SpawnFailed => uptime < restart.min_uptime,
        };
        let d = policy::decide(restart, &mut self.inst.counters, reason, unstable, uptime);
        self.decided(d, status);
    }

    /// Carries out the policy's decision.
    fn decided(&mut self, decision: Decision, status: Option<ExitStatus>) {
        match decision {
            Decision::Restart { delay, reason } if delay.is_zero() => self.spawn(Some(reason)),
            Decision::Restart { delay, reason } => {
                info!(app = %self.cx.spec.name, instance = self.cx.index,
                      delay_ms = delay.as_millis() as u64, reason = reason.as_str(), "restart delayed");
                self.set(
                    State::Waiting {
                        until: self.cx.now + delay,
                        reason: Some(reason),
                    },
                    None,
                );
            }
            Decision::Stop => self.set(State::Stopped { status }, None),
            Decision::Errored => {
                let status = status.unwrap_or(ExitStatus::Code(1));
                error!(app = %self.cx.spec.name, instance = self.cx.index, %status,
                       max_restarts = self.cx.spec.restart.max_restarts,
                       "too many unstable restarts; giving up (raise max_restarts or lower min_uptime to allow more)");
                self.set(State::Errored { status }, None);
                self.out.push(Action::GaveUp);
            }
        }
    }

    fn spawn(&mut self, reason: Option<Reason>) {
        let from = self.inst.state.name();
        self.set(State::Spawning { reason, from }, reason);
        self.out.push(Action::Spawn);
    }

    fn set(&mut self, next: State, reason: Option<Reason>) {
        if next == self.inst.state {
            return;
        }
        let from = std::mem::replace(&mut self.inst.state, next);
        self.out.push(Action::Changed { from, reason });
    }

    fn cant_happen(&self, s: &State, e: Event) {
        warn!(app = %self.cx.spec.name, instance = self.cx.index, state = s.name(), event = ?e,
              "can't happen: event ignored");
    }
}

/// What follows a stop procward starts itself for `reason`: a restart, or
/// with autorestart off, a stop (`--no-autorestart` ends memory, watchdog
/// and ready_timeout restarts too).
fn restart(reason: Reason, spec: &AppSpec) -> Then {
    if spec.restart.autorestart {
        Then::Restart(reason)
    } else {
        Then::Stop
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PID: i32 = 100;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn spec() -> AppSpec {
        let mut s = AppSpec::new("web", vec!["node".into()]);
        s.ready.source = ReadySource::NodeIpc;
        s.max_memory_restart = Some(100);
        s
    }

    /// A fixed origin of time; tests move `now` forward from it.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn at(n: u64) -> Instant {
        t0() + ms(n)
    }

    fn inst(state: State) -> Instance {
        let mut i = Instance::new(0);
        i.state = state;
        i
    }

    fn run(i: &mut Instance, spec: &AppSpec, now: u64, e: Event) -> Vec<Action> {
        step(
            i,
            e,
            &Ctx {
                spec,
                now: at(now),
                shutting_down: false,
                index: 0,
                online_at_spawn: spec.ready.source == ReadySource::Started,
                overlap: false,
            },
        )
    }

    fn run_down(i: &mut Instance, spec: &AppSpec, now: u64, e: Event) -> Vec<Action> {
        step(
            i,
            e,
            &Ctx {
                spec,
                now: at(now),
                shutting_down: true,
                index: 0,
                online_at_spawn: spec.ready.source == ReadySource::Started,
                overlap: false,
            },
        )
    }

    fn starting() -> State {
        State::Starting {
            pid: PID,
            since: at(0),
            ready_by: at(3000),
        }
    }
    fn online() -> State {
        State::Online {
            pid: PID,
            since: at(0),
            ready_at: at(10),
        }
    }
    fn stopping(then: Then) -> State {
        State::Stopping {
            pid: PID,
            since: at(0),
            kill_at: Some(at(5000)),
            then,
        }
    }
    fn emptying(then: Then) -> State {
        State::Emptying {
            pgid: PID,
            since: at(0),
            kill_at: Some(at(5000)),
            then,
        }
    }
    fn spawning() -> State {
        State::Spawning {
            reason: Some(Reason::Crash),
            from: "online",
        }
    }
    fn waiting() -> State {
        State::Waiting {
            until: at(4000),
            reason: Some(Reason::Crash),
        }
    }
    fn stopped() -> State {
        State::Stopped { status: None }
    }
    fn errored() -> State {
        State::Errored {
            status: ExitStatus::Code(1),
        }
    }
    fn exited(code: i32, group_alive: bool) -> Event {
        Event::Exited {
            pid: PID,
            status: ExitStatus::Code(code),
            group_alive,
        }
    }
    fn kill(pgid: i32) -> Action {
        Action::Signal {
            pgid,
            signo: libc::SIGKILL,
        }
    }

    fn signals(actions: &[Action]) -> Vec<(i32, i32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal { pgid, signo } => Some((*pgid, *signo)),
                Action::AskToStop { pid, signo } => Some((*pid, *signo)),
                _ => None,
            })
            .collect()
    }

    // ---- spawning ----

    #[test]
    fn spawned_with_a_readiness_source_is_starting_until_listen_timeout() {
        let s = spec();
        let mut i = inst(spawning());
        let out = run(&mut i, &s, 0, Event::Spawned { pid: PID });
        assert_eq!(i.state, starting());
        assert_eq!(out[0], Action::CountRestart(Reason::Crash));
        assert!(matches!(out[1], Action::Changed { .. }));
        assert_eq!(i.deadline(), Some(at(3000)), "the ready deadline is armed");
    }

    #[test]
    fn spawned_without_a_readiness_source_is_online_at_once() {
        let mut s = spec();
        s.ready.source = ReadySource::Started;
        let mut i = inst(State::Spawning {
            reason: None,
            from: "stopped",
        });
        let out = run(&mut i, &s, 0, Event::Spawned { pid: PID });
        assert!(i.state.is_ready());
        assert_eq!(i.first_ready, Some(at(0)));
        assert!(!out.iter().any(|a| matches!(a, Action::CountRestart(_))));
    }

    #[test]
    fn a_transient_spawn_failure_waits_with_backoff_and_counts_spawn_failed() {
        let s = spec();
        let mut i = inst(spawning());
        let failed = Event::SpawnFailed {
            transient: true,
            status: ExitStatus::Code(126),
        };
        let out = run(&mut i, &s, 0, failed);
        assert_eq!(
            i.state,
            State::Waiting {
                until: at(100),
                reason: Some(Reason::Crash)
            }
        );
        assert!(out.contains(&Action::CountRestart(Reason::SpawnFailed)));
        assert!(!out.contains(&Action::GaveUp));
        // The next failure backs off further; many never give up.
        for n in 0..30 {
            i.state = spawning();
            run(&mut i, &s, 0, failed);
            assert!(matches!(i.state, State::Waiting { .. }), "attempt {n}");
        }
        assert_eq!(i.deadline(), Some(at(15_000)));
        assert_eq!(i.counters.unstable, 0, "the app never ran: not unstable");
        i.state = spawning();
        run(&mut i, &s, 0, Event::Spawned { pid: PID });
        assert_eq!(i.counters.spawn_failures, 0, "a spawn ends the burst");
    }

    #[test]
    fn a_missing_or_unexecutable_command_errors_at_once() {
        let s = spec();
        let mut i = inst(spawning());
        let out = run(
            &mut i,
            &s,
            0,
            Event::SpawnFailed {
                transient: false,
                status: ExitStatus::Code(127),
            },
        );
        assert_eq!(
            i.state,
            State::Errored {
                status: ExitStatus::Code(127)
            }
        );
        assert_eq!(out.last(), Some(&Action::GaveUp));
    }

    #[test]
    fn a_transient_spawn_failure_while_shutting_down_stops() {
        let s = spec();
        let mut i = inst(spawning());
        run_down(
            &mut i,
            &s,
            0,
            Event::SpawnFailed {
                transient: true,
                status: ExitStatus::Code(126),
            },
        );
        assert!(matches!(i.state, State::Stopped { .. }));
    }

    // ---- ready ----

    #[test]
    fn ready_while_starting_is_online_and_cancels_the_ready_deadline() {
        let s = spec();
        let mut i = inst(starting());
        run(&mut i, &s, 50, Event::Ready);
        assert!(i.state.is_ready());
        assert_eq!(i.deadline(), None);
        assert_eq!(i.first_ready, Some(at(50)));
    }

    #[test]
    fn ready_in_any_other_state_is_stale_and_ignored() {
        let s = spec();
        for st in [
            online(),
            stopping(Then::Stop),
            emptying(Then::Stop),
            waiting(),
            stopped(),
            errored(),
        ] {
            let mut i = inst(st.clone());
            assert!(run(&mut i, &s, 50, Event::Ready).is_empty());
            assert_eq!(i.state, st);
        }
    }

    // ---- exits the supervisor did not ask for ----

    #[test]
    fn a_crash_after_min_uptime_restarts_at_once_and_kills_the_rest_of_the_group() {
        let s = spec();
        let mut i = inst(online());
        let out = run(&mut i, &s, 5000, exited(1, true));
        assert_eq!(out[0], kill(PID));
        assert!(out.contains(&Action::Spawn));
        assert_eq!(i.counters.unstable, 0);
        assert_eq!(i.last_status, Some(ExitStatus::Code(1)));
    }

    #[test]
    fn exit_before_min_uptime_counts_as_unstable() {
        let s = spec();
        let mut i = inst(starting());
        run(&mut i, &s, 10, exited(1, false));
        assert_eq!(i.counters.unstable, 1);
    }

    #[test]
    fn a_crash_loop_ends_errored_after_max_restarts() {
        let mut s = spec();
        s.restart.max_restarts = 2;
        let mut i = inst(starting());
        run(&mut i, &s, 10, exited(1, false));
        assert!(matches!(i.state, State::Spawning { .. }));
        i.state = starting();
        let out = run(&mut i, &s, 10, exited(1, false));
        assert!(matches!(i.state, State::Errored { .. }));
        assert_eq!(out.last(), Some(&Action::GaveUp));
    }

    #[test]
    fn a_restart_delay_waits_before_the_spawn() {
        let mut s = spec();
        s.restart.restart_delay = ms(250);
        let mut i = inst(online());
        run(&mut i, &s, 5000, exited(1, false));
        assert_eq!(
            i.state,
            State::Waiting {
                until: at(5250),
                reason: Some(Reason::Crash)
            }
        );
        let out = run(&mut i, &s, 5250, Event::Deadline);
        assert_eq!(out.last(), Some(&Action::Spawn));
    }

    #[test]
    fn an_exit_while_shutting_down_is_not_restarted() {
        let s = spec();
        let mut i = inst(online());
        run_down(&mut i, &s, 5000, exited(1, false));
        assert!(matches!(i.state, State::Stopped { .. }));
    }

    #[test]
    fn an_exit_with_no_autorestart_stops() {
        let mut s = spec();
        s.restart.autorestart = false;
        let mut i = inst(online());
        run(&mut i, &s, 5000, exited(3, false));
        assert_eq!(
            i.state,
            State::Stopped {
                status: Some(ExitStatus::Code(3))
            }
        );
    }

    #[test]
    fn an_exit_of_a_pid_that_is_not_the_instances_changes_nothing() {
        let s = spec();
        for st in [starting(), online(), stopping(Then::Stop)] {
            let mut i = inst(st.clone());
            let out = run(
                &mut i,
                &s,
                10,
                Event::Exited {
                    pid: 7,
                    status: ExitStatus::Code(0),
                    group_alive: false,
                },
            );
            assert!(out.is_empty());
            assert_eq!(i.state, st);
        }
    }

    // ---- stopping ----

    #[test]
    fn an_exit_while_stopping_with_the_group_empty_restarts_for_the_stops_reason() {
        let s = spec();
        let mut i = inst(stopping(Then::Restart(Reason::Reload)));
        let out = run(&mut i, &s, 10, exited(0, false));
        assert!(out.contains(&Action::Spawn));
        assert_eq!(
            i.state,
            State::Spawning {
                reason: Some(Reason::Reload),
                from: "stopping"
            }
        );
        assert_eq!(i.counters.unstable, 0, "a reload is not unstable");
    }

    #[test]
    fn kill_timeout_covers_the_group_the_main_process_left() {
        let s = spec();
        let mut i = inst(stopping(Then::Stop));
        let out = run(&mut i, &s, 10, exited(0, true));
        assert_eq!(i.state, emptying(Then::Stop));
        assert!(signals(&out).is_empty(), "no SIGKILL while time is left");
        assert_eq!(i.deadline(), Some(at(5000)), "the rest of kill_timeout");
        run(&mut i, &s, 600, Event::GroupEmpty);
        assert_eq!(
            i.state,
            State::Stopped {
                status: Some(ExitStatus::Code(0))
            }
        );
    }

    #[test]
    fn a_group_still_running_at_kill_timeout_gets_sigkill_and_the_stop_completes() {
        let s = spec();
        let mut i = inst(emptying(Then::Restart(Reason::Reload)));
        let out = run(&mut i, &s, 5000, Event::Deadline);
        assert_eq!(out[0], kill(PID));
        assert!(out.contains(&Action::Spawn));
    }

    #[test]
    fn kill_timeout_sends_sigkill_and_keeps_stopping() {
        let s = spec();
        let mut i = inst(stopping(Then::Stop));
        let out = run(&mut i, &s, 5000, Event::Deadline);
        assert_eq!(out[0], kill(PID));
        assert!(matches!(i.state, State::Stopping { kill_at: None, .. }));
        // After SIGKILL nothing is left to wait for in the group.
        let out = run(&mut i, &s, 5010, exited(137, true));
        assert_eq!(out[0], kill(PID));
        assert!(matches!(i.state, State::Stopped { .. }));
    }

    #[test]
    fn stop_during_starting_cancels_the_ready_deadline_and_arms_kill_timeout() {
        let s = spec();
        let mut i = inst(starting());
        let out = run(&mut i, &s, 100, Event::Stop);
        assert_eq!(
            out[0],
            Action::AskToStop {
                pid: PID,
                signo: libc::SIGINT
            }
        );
        assert_eq!(i.state, {
            let mut st = stopping(Then::Stop);
            if let State::Stopping { kill_at, .. } = &mut st {
                *kill_at = Some(at(1700));
            }
            st
        });
    }

    #[test]
    fn stop_while_stopping_for_a_restart_turns_it_into_a_stop() {
        let s = spec();
        let mut i = inst(stopping(Then::Restart(Reason::Memory)));
        run(&mut i, &s, 100, Event::Stop);
        assert_eq!(i.state, stopping(Then::Stop));
        let mut i = inst(emptying(Then::Restart(Reason::Memory)));
        run(&mut i, &s, 100, Event::Stop);
        assert_eq!(i.state, emptying(Then::Stop));
    }

    #[test]
    fn stop_while_waiting_cancels_the_restart() {
        let s = spec();
        let mut i = inst(waiting());
        run(&mut i, &s, 100, Event::Stop);
        assert!(i.state.is_final());
    }

    #[test]
    fn restart_starts_a_stopped_or_errored_instance_afresh() {
        let s = spec();
        for st in [stopped(), errored()] {
            let mut i = inst(st);
            i.counters.unstable = 9;
            let out = run(&mut i, &s, 100, Event::Restart(Reason::Manual));
            assert_eq!(out.last(), Some(&Action::Spawn));
            assert_eq!(i.counters.unstable, 0);
        }
        let mut i = inst(waiting());
        assert_eq!(
            run(&mut i, &s, 100, Event::Restart(Reason::Manual)).last(),
            Some(&Action::Spawn)
        );
        let mut i = inst(online());
        run(&mut i, &s, 100, Event::Restart(Reason::Manual));
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Restart(Reason::Manual),
                ..
            }
        ));
    }

    #[test]
    fn reload_stops_a_running_process_to_replace_it_and_starts_nothing_else() {
        let s = spec();
        let mut i = inst(online());
        run(&mut i, &s, 100, Event::Reload);
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Restart(Reason::Reload),
                ..
            }
        ));
        for st in [
            stopping(Then::Stop),
            emptying(Then::Stop),
            waiting(),
            stopped(),
            errored(),
        ] {
            let mut i = inst(st.clone());
            assert!(run(&mut i, &s, 100, Event::Reload).is_empty());
            assert_eq!(i.state, st);
        }
    }

    // ---- shutdown and the second signal ----

    #[test]
    fn shutdown_stops_with_procwards_signal_and_restarts_nothing() {
        let s = spec();
        let mut i = inst(online());
        let out = run(
            &mut i,
            &s,
            100,
            Event::Shutdown {
                signo: libc::SIGTERM,
            },
        );
        assert_eq!(signals(&out), [(PID, libc::SIGTERM)]);
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Stop,
                ..
            }
        ));
    }

    #[test]
    fn shutdown_while_stopping_passes_the_signal_on_and_keeps_the_deadline() {
        let s = spec();
        let sig = Event::Shutdown {
            signo: libc::SIGTERM,
        };
        let mut i = inst(stopping(Then::Restart(Reason::Memory)));
        let out = run(&mut i, &s, 100, sig);
        assert_eq!(signals(&out), [(PID, libc::SIGTERM)]);
        assert_eq!(i.state, stopping(Then::Stop));
        let mut i = inst(emptying(Then::Restart(Reason::Memory)));
        run(&mut i, &s, 100, sig);
        assert_eq!(i.state, emptying(Then::Stop));
    }

    #[test]
    fn shutdown_while_waiting_stops_without_a_process() {
        let s = spec();
        let mut i = inst(waiting());
        let out = run(&mut i, &s, 100, Event::Shutdown { signo: 15 });
        assert!(signals(&out).is_empty());
        assert!(i.state.is_final());
    }

    #[test]
    fn a_second_stop_signal_sends_sigkill_at_once() {
        let s = spec();
        let mut i = inst(stopping(Then::Stop));
        let out = run(&mut i, &s, 100, Event::Kill);
        assert_eq!(out[0], kill(PID));
        assert!(matches!(i.state, State::Stopping { kill_at: None, .. }));
        let mut i = inst(emptying(Then::Stop));
        let out = run(&mut i, &s, 100, Event::Kill);
        assert_eq!(out[0], kill(PID));
        assert!(i.state.is_final());
    }

    // ---- memory ----

    #[test]
    fn memory_over_the_cap_restarts_gracefully_on_the_instances_turn() {
        let s = spec();
        let mut i = inst(online());
        let out = run(
            &mut i,
            &s,
            100,
            Event::Memory {
                rss: 120,
                turn: false,
            },
        );
        assert!(out.is_empty(), "waits for its turn");
        let out = run(
            &mut i,
            &s,
            100,
            Event::Memory {
                rss: 120,
                turn: true,
            },
        );
        assert_eq!(signals(&out), [(PID, libc::SIGINT)]);
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Restart(Reason::Memory),
                kill_at: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn memory_over_the_hard_limit_while_stopping_sends_sigkill_at_once() {
        let s = spec();
        let mut i = inst(online());
        let out = run(
            &mut i,
            &s,
            100,
            Event::Memory {
                rss: 151,
                turn: true,
            },
        );
        assert_eq!(signals(&out), [(PID, libc::SIGINT)], "a graceful start");
        // While the memory stop runs, growth past the hard limit kills.
        let out = run(
            &mut i,
            &s,
            200,
            Event::Memory {
                rss: 150,
                turn: false,
            },
        );
        assert!(out.is_empty(), "at the hard limit is not over it");
        let out = run(
            &mut i,
            &s,
            300,
            Event::Memory {
                rss: 151,
                turn: false,
            },
        );
        assert_eq!(out[0], kill(PID));
        assert!(matches!(i.state, State::Stopping { kill_at: None, .. }));
    }

    #[test]
    fn the_hard_limit_can_be_set() {
        let mut s = spec();
        s.max_memory_hard = Some(1000);
        let mut i = inst(online());
        let out = run(
            &mut i,
            &s,
            100,
            Event::Memory {
                rss: 500,
                turn: true,
            },
        );
        assert_eq!(signals(&out), [(PID, libc::SIGINT)]);
    }

    #[test]
    fn an_app_over_the_cap_from_the_start_ends_errored_like_any_crash_loop() {
        let mut s = spec();
        s.restart.max_restarts = 2;
        let mut i = inst(online());
        for round in 0..2 {
            i.state = online();
            // Under the cap while it starts up, then over it.
            run(
                &mut i,
                &s,
                0,
                Event::Memory {
                    rss: 50,
                    turn: true,
                },
            );
            run(
                &mut i,
                &s,
                300,
                Event::Memory {
                    rss: 120,
                    turn: true,
                },
            );
            // Slower than min_uptime, but never under the cap that long:
            // unstable.
            run(&mut i, &s, 5000, exited(0, false));
            if round == 0 {
                assert!(matches!(i.state, State::Spawning { .. }));
                run(&mut i, &s, 5000, Event::Spawned { pid: PID });
            }
        }
        assert!(matches!(i.state, State::Errored { .. }));
    }

    #[test]
    fn a_memory_restart_of_an_app_that_ran_under_the_cap_is_stable_and_backs_off() {
        let mut s = spec();
        s.restart.exp_backoff_restart_delay = Some(ms(100));
        let mut i = inst(online());
        for t in [0, 500] {
            run(
                &mut i,
                &s,
                t,
                Event::Memory {
                    rss: 50,
                    turn: true,
                },
            );
        }
        assert!(!i.fit, "not yet under the cap for min_uptime");
        run(
            &mut i,
            &s,
            1000,
            Event::Memory {
                rss: 50,
                turn: true,
            },
        );
        assert!(i.fit);
        run(
            &mut i,
            &s,
            2000,
            Event::Memory {
                rss: 120,
                turn: true,
            },
        );
        run(&mut i, &s, 2100, exited(0, false));
        assert_eq!(i.counters.unstable, 0);
        assert_eq!(
            i.state,
            State::Waiting {
                until: at(2200),
                reason: Some(Reason::Memory)
            }
        );
    }

    #[test]
    fn no_autorestart_stops_a_memory_restart_instead() {
        let mut s = spec();
        s.restart.autorestart = false;
        let mut i = inst(online());
        run(
            &mut i,
            &s,
            0,
            Event::Memory {
                rss: 120,
                turn: true,
            },
        );
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Stop,
                ..
            }
        ));
    }

    #[test]
    fn memory_without_a_cap_is_only_observed() {
        let mut s = spec();
        s.max_memory_restart = None;
        let mut i = inst(online());
        assert!(run(
            &mut i,
            &s,
            0,
            Event::Memory {
                rss: 1 << 40,
                turn: true
            }
        )
        .is_empty());
    }

    // ---- ready_timeout and watchdog ----

    #[test]
    fn listen_timeout_without_strict_readiness_counts_as_ready() {
        let s = spec();
        let mut i = inst(starting());
        run(&mut i, &s, 3000, Event::Deadline);
        assert!(i.state.is_ready());
    }

    #[test]
    fn a_strict_ready_timeout_restarts_as_unstable_through_the_policy() {
        let mut s = spec();
        s.ready.strict = true;
        s.restart.max_restarts = 1;
        let mut i = inst(starting());
        run(&mut i, &s, 3000, Event::Deadline);
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Restart(Reason::ReadyTimeout),
                ..
            }
        ));
        run(&mut i, &s, 3100, exited(130, false));
        assert!(
            matches!(i.state, State::Errored { .. }),
            "max_restarts ends it"
        );
    }

    #[test]
    fn a_missed_watchdog_restarts_a_running_instance_and_is_stale_otherwise() {
        let s = spec();
        let mut i = inst(online());
        run(&mut i, &s, 3000, Event::WatchdogMissed);
        assert!(matches!(
            i.state,
            State::Stopping {
                then: Then::Restart(Reason::Watchdog),
                ..
            }
        ));
        for st in [emptying(Then::Stop), waiting(), stopped(), errored()] {
            let mut i = inst(st.clone());
            assert!(run(&mut i, &s, 0, Event::WatchdogMissed).is_empty());
        }
    }

    // ---- overlap ----

    #[test]
    fn a_draining_old_process_is_killed_at_its_deadline_and_forgotten_at_its_exit() {
        let s = spec();
        let mut i = inst(starting());
        i.draining = Some(Draining {
            pid: 50,
            since: at(0),
            kill_at: Some(at(1000)),
            serving: None,
        });
        assert_eq!(i.deadline(), Some(at(1000)));
        let out = run(&mut i, &s, 1000, Event::Deadline);
        assert_eq!(out, [kill(50)]);
        assert_eq!(i.state, starting(), "the new process is untouched");
        assert!(!i.is_final());
        let out = run(
            &mut i,
            &s,
            1010,
            Event::Exited {
                pid: 50,
                status: ExitStatus::Code(0),
                group_alive: false,
            },
        );
        assert_eq!(out, [kill(50)]);
        assert!(i.draining.is_none());
        assert_eq!(i.state, starting());
    }

    #[test]
    fn shutdown_reaches_a_draining_process_too() {
        let s = spec();
        let mut i = inst(online());
        i.draining = Some(Draining {
            pid: 50,
            since: at(0),
            kill_at: Some(at(1000)),
            serving: None,
        });
        let out = run(&mut i, &s, 10, Event::Shutdown { signo: 15 });
        assert_eq!(signals(&out), [(50, 15), (PID, 15)]);
    }

    // ---- rolling reload with overlap ----

    fn run_overlap(i: &mut Instance, spec: &AppSpec, now: u64, e: Event) -> Vec<Action> {
        step(
            i,
            e,
            &Ctx {
                spec,
                now: at(now),
                shutting_down: false,
                index: 0,
                online_at_spawn: spec.ready.source == ReadySource::Started,
                overlap: true,
            },
        )
    }

    const NEW: i32 = 200;

    /// An online instance reloaded with overlap, its replacement spawned
    /// at 100 ms and starting.
    fn replacing(s: &AppSpec) -> Instance {
        let mut i = inst(online());
        let out = run_overlap(&mut i, s, 100, Event::Reload);
        assert_eq!(out.last(), Some(&Action::Spawn));
        run_overlap(&mut i, s, 100, Event::Spawned { pid: NEW });
        i
    }

    #[test]
    fn a_reload_with_held_sockets_starts_the_replacement_while_the_old_process_serves() {
        let s = spec();
        let mut i = inst(online());
        let out = run_overlap(&mut i, &s, 100, Event::Reload);
        assert!(signals(&out).is_empty(), "nothing is stopped: {out:?}");
        assert_eq!(out.last(), Some(&Action::Spawn));
        assert_eq!(
            i.draining,
            Some(Draining {
                pid: PID,
                since: at(0),
                kill_at: None,
                serving: Some(at(10)),
            })
        );
        let out = run_overlap(&mut i, &s, 100, Event::Spawned { pid: NEW });
        assert!(out.contains(&Action::CountRestart(Reason::Reload)));
        assert_eq!(i.state.pid(), Some(NEW));
        assert!(matches!(i.state, State::Starting { .. }));
        assert_eq!(i.deadline(), Some(at(3100)), "only listen_timeout is armed");
        assert!(!i.is_final());
    }

    #[test]
    fn the_old_process_is_asked_to_stop_once_the_replacement_is_ready() {
        let s = spec();
        let mut i = replacing(&s);
        let out = run_overlap(&mut i, &s, 300, Event::Ready);
        assert!(i.state.is_ready());
        assert_eq!(i.state.pid(), Some(NEW));
        assert_eq!(signals(&out), [(PID, s.stop.kill_signal as i32)]);
        assert!(matches!(
            out.last(),
            Some(Action::AskToStop { pid: PID, .. })
        ));
        let old = i.draining.clone().unwrap();
        assert_eq!(old.serving, None);
        assert_eq!(old.kill_at, Some(at(300) + s.stop.kill_timeout));
        // Its exit ends the overlap; nothing else changes.
        let out = run_overlap(&mut i, &s, 400, exited(0, false));
        assert_eq!(out, [kill(PID)]);
        assert!(i.draining.is_none());
        assert_eq!(i.state.pid(), Some(NEW));
    }

    #[test]
    fn a_replacement_online_at_spawn_stops_the_old_process_at_once() {
        let mut s = spec();
        s.ready.source = ReadySource::Started;
        let mut i = inst(online());
        run_overlap(&mut i, &s, 100, Event::Reload);
        let out = run_overlap(&mut i, &s, 100, Event::Spawned { pid: NEW });
        assert!(i.state.is_ready());
        assert!(matches!(
            out.last(),
            Some(Action::AskToStop { pid: PID, .. })
        ));
    }

    #[test]
    fn a_replacement_that_exits_before_ready_aborts_and_the_old_process_serves_on() {
        let s = spec();
        let mut i = replacing(&s);
        let out = run_overlap(
            &mut i,
            &s,
            200,
            Event::Exited {
                pid: NEW,
                status: ExitStatus::Code(1),
                group_alive: false,
            },
        );
        assert_eq!(
            signals(&out),
            [(NEW, libc::SIGKILL)],
            "the old one is left alone"
        );
        assert!(out.contains(&Action::ReloadAborted {
            why: "the replacement exited before it was ready"
        }));
        assert_eq!(i.state, online(), "the old process is current again");
        assert!(i.draining.is_none());
        assert_eq!(i.last_status, Some(ExitStatus::Code(1)));
        assert_eq!(i.counters.unstable, 0, "not a crash of the instance");
    }

    #[test]
    fn a_replacement_not_ready_within_listen_timeout_is_killed_and_the_old_process_serves_on() {
        let mut s = spec();
        s.ready.strict = false; // even where a timeout would count as ready
        let mut i = replacing(&s);
        let out = run_overlap(&mut i, &s, 3100, Event::Deadline);
        assert_eq!(signals(&out), [(NEW, libc::SIGKILL)]);
        assert!(out.contains(&Action::ReloadAborted {
            why: "the replacement was not ready within listen_timeout"
        }));
        assert_eq!(i.state, online());
        // The killed replacement drains: its exit is consumed, not news.
        assert_eq!(i.draining.as_ref().map(|d| d.pid), Some(NEW));
        assert_eq!(i.deadline(), None, "SIGKILL already sent");
        let out = run_overlap(
            &mut i,
            &s,
            3110,
            Event::Exited {
                pid: NEW,
                status: ExitStatus::Signal {
                    signo: libc::SIGKILL,
                    core_dumped: false,
                },
                group_alive: false,
            },
        );
        assert_eq!(out, [kill(NEW)]);
        assert_eq!(i.state, online());
        assert!(i.draining.is_none());
    }

    #[test]
    fn a_replacement_that_cannot_be_spawned_aborts_the_reload() {
        let s = spec();
        let mut i = inst(online());
        run_overlap(&mut i, &s, 100, Event::Reload);
        let out = run_overlap(
            &mut i,
            &s,
            100,
            Event::SpawnFailed {
                transient: true,
                status: ExitStatus::Code(126),
            },
        );
        assert!(matches!(out.last(), Some(Action::ReloadAborted { .. })));
        assert_eq!(i.state, online());
        assert!(i.draining.is_none());
    }

    #[test]
    fn a_reload_while_the_replacement_starts_is_ignored() {
        let s = spec();
        let mut i = replacing(&s);
        let before = i.state.clone();
        assert!(run_overlap(&mut i, &s, 200, Event::Reload).is_empty());
        assert_eq!(i.state, before);
    }

    #[test]
    fn a_reload_while_an_old_process_still_drains_stops_then_starts() {
        let s = spec();
        let mut i = replacing(&s);
        run_overlap(&mut i, &s, 300, Event::Ready);
        // One overlap at a time (the supervisor waits for the old one to
        // go); the machine never holds two old processes.
        run_overlap(&mut i, &s, 350, Event::Reload);
        assert!(matches!(i.state, State::Stopping { pid: NEW, .. }));
        assert_eq!(i.draining.as_ref().map(|d| d.pid), Some(PID));
    }

    #[test]
    fn shutdown_during_a_reload_stops_both_and_arms_the_old_processs_deadline() {
        let s = spec();
        let mut i = replacing(&s);
        let out = run_overlap(&mut i, &s, 200, Event::Shutdown { signo: 15 });
        assert_eq!(signals(&out), [(PID, 15), (NEW, 15)]);
        let old = i.draining.clone().unwrap();
        assert_eq!(old.serving, None);
        assert_eq!(old.kill_at, Some(at(200) + s.stop.kill_timeout));
        assert!(matches!(i.state, State::Stopping { pid: NEW, .. }));
    }

    #[test]
    fn a_stop_during_a_reload_asks_the_old_process_to_stop_too() {
        let s = spec();
        let mut i = replacing(&s);
        let out = run_overlap(&mut i, &s, 200, Event::Stop);
        let sig = s.stop.kill_signal as i32;
        assert_eq!(signals(&out), [(NEW, sig), (PID, sig)]);
        assert!(i.draining.as_ref().is_some_and(|d| d.kill_at.is_some()));
    }

    #[test]
    fn the_old_process_crashing_during_a_reload_leaves_the_replacement_to_finish() {
        let s = spec();
        let mut i = replacing(&s);
        let out = run_overlap(&mut i, &s, 200, exited(1, false));
        assert_eq!(out, [kill(PID)]);
        assert!(i.draining.is_none());
        let out = run_overlap(&mut i, &s, 300, Event::Ready);
        assert!(i.state.is_ready());
        assert!(!out.iter().any(|a| matches!(a, Action::AskToStop { .. })));
    }

    // ---- the whole table ----

    fn all_states() -> Vec<State> {
        vec![
            starting(),
            online(),
            stopping(Then::Stop),
            emptying(Then::Stop),
            spawning(),
            waiting(),
            stopped(),
            errored(),
        ]
    }

    fn all_events() -> Vec<Event> {
        vec![
            Event::Spawned { pid: PID },
            Event::SpawnFailed {
                transient: true,
                status: ExitStatus::Code(126),
            },
            Event::Ready,
            exited(0, false),
            Event::GroupEmpty,
            Event::Deadline,
            Event::Stop,
            Event::Restart(Reason::Cron),
            Event::Reload,
            Event::Shutdown { signo: 15 },
            Event::Kill,
            Event::Memory {
                rss: 120,
                turn: true,
            },
            Event::WatchdogMissed,
        ]
    }

    /// The state each (state, event) pair leads to, by name; `-` for a pair
    /// that cannot happen (warned and ignored). Rows are states, columns
    /// the events of [`all_events`]. docs/design/instance-machine.md is
    /// this table in words.
    const TABLE: [(&str, [&str; 13]); 8] = [
        //            spawned     spawnfail  ready     exited      groupempty deadline    stop        restart     reload      shutdown    kill        memory      watchdog
        (
            "starting",
            [
                "-", "-", "online", "spawning", "-", "online", "stopping", "stopping", "stopping",
                "stopping", "stopping", "stopping", "stopping",
            ],
        ),
        (
            "online",
            [
                "-", "-", "online", "spawning", "-", "-", "stopping", "stopping", "stopping",
                "stopping", "stopping", "stopping", "stopping",
            ],
        ),
        (
            "stopping",
            [
                "-", "-", "stopping", "stopped", "-", "stopping", "stopping", "stopping",
                "stopping", "stopping", "stopping", "stopping", "stopping",
            ],
        ),
        (
            "emptying",
            [
                "-", "-", "emptying", "-", "stopped", "stopped", "emptying", "emptying",
                "emptying", "emptying", "stopped", "emptying", "emptying",
            ],
        ),
        (
            "spawning",
            [
                "starting", "waiting", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-",
            ],
        ),
        (
            "waiting",
            [
                "-", "-", "waiting", "-", "-", "spawning", "stopped", "spawning", "waiting",
                "stopped", "stopped", "-", "waiting",
            ],
        ),
        (
            "stopped",
            [
                "-", "-", "stopped", "-", "-", "-", "stopped", "spawning", "stopped", "stopped",
                "stopped", "-", "stopped",
            ],
        ),
        (
            "errored",
            [
                "-", "-", "errored", "-", "-", "-", "errored", "spawning", "errored", "errored",
                "errored", "-", "errored",
            ],
        ),
    ];

    fn debug_name(s: &State) -> &'static str {
        match s {
            State::Emptying { .. } => "emptying",
            State::Spawning { .. } => "spawning",
            s => s.name(),
        }
    }

    #[test]
    fn every_state_event_pair_has_its_row_and_impossible_ones_change_nothing() {
        let s = spec();
        for (st, (row, cols)) in all_states().into_iter().zip(TABLE) {
            assert_eq!(debug_name(&st), row);
            for (e, want) in all_events().into_iter().zip(cols) {
                let mut i = inst(st.clone());
                // A deadline is only fed once it is due.
                let now = i.deadline().map_or(100, |d| (d - t0()).as_millis() as u64);
                let out = run(&mut i, &s, now, e);
                if want == "-" {
                    assert!(out.is_empty(), "{row} x {e:?}: {out:?}");
                    assert_eq!(i.state, st, "{row} x {e:?}");
                } else {
                    assert_eq!(debug_name(&i.state), want, "{row} x {e:?}");
                }
            }
        }
    }
}
