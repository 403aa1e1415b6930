//! The supervisor's side of readiness: per-process channels made at spawn
//! and dropped at exit, what the apps say (`ready::Event`), their sd_notify
//! watchdogs, PM2's `shutdown_with_message`, and the report to the service
//! manager after every event (`notify`). The readers in `ready/` only send
//! messages; every decision is taken here, by the one owner of state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::state::State;
use super::{machine, signal_logged, Supervisor};
use crate::config::{AppSpec, ReadySource};
use crate::notify::{ServiceManager, View};
use crate::ready::{self, Channels, Dropped, Event, Input, Prepared};

/// What the supervisor keeps for readiness.
pub struct Readiness {
    /// Per running process: its readers, IPC channel and notify socket.
    channels: HashMap<i32, Channels>,
    runtime_dir: Option<PathBuf>,
    seq: u64,
    /// The service manager above procward.
    pub manager: ServiceManager,
    /// Input dropped from the apps, indexed by [`Dropped::index`].
    pub dropped: [u64; Dropped::ALL.len()],
}

impl Readiness {
    /// Nothing prepared yet; the service manager read from the environment.
    pub fn new() -> Self {
        Readiness {
            channels: HashMap::new(),
            runtime_dir: None,
            seq: 0,
            manager: ServiceManager::from_env(),
            dropped: [0; Dropped::ALL.len()],
        }
    }

    /// The process `pid` has exited: its channels go (readers stop, the
    /// notify socket is removed).
    pub fn forget(&mut self, pid: i32) {
        self.channels.remove(&pid);
    }

    /// The channels of process `pid`.
    pub fn channels(&self, pid: i32) -> Option<&Channels> {
        self.channels.get(&pid)
    }

    /// The earliest app watchdog deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.channels.values().filter_map(|c| c.watchdog_due).min()
    }

    /// Asks process `pid` to stop: PM2's `"shutdown"` message on its IPC
    /// channel when `with_message`, else (or if that fails) `signo` to its
    /// group (PM2 `lib/God/Methods.js` `killProcess`).
    pub fn ask_to_stop(&self, with_message: bool, pid: i32, signo: i32) {
        if with_message {
            if self
                .channels
                .get(&pid)
                .is_some_and(|c| c.send_ipc(&serde_json::json!("shutdown")))
            {
                info!(pid, "sent \"shutdown\" on the IPC channel");
                return;
            }
            warn!(
                pid,
                "cannot send \"shutdown\" on the IPC channel; sending the kill signal instead"
            );
        }
        signal_logged(pid, signo);
    }
}

/// What the process about to be spawned would lack for its readiness
/// source or shutdown message, as an error line: its IPC channel, which
/// socketpair(2) fails to make only for want of a resource (EMFILE, ENFILE,
/// ENOMEM), so the spawn is retried rather than made without it. A notify
/// socket that could not be made may be a directory procward refuses: the
/// app then runs without one, as the error line already said.
pub(super) fn missing(prepared: &Prepared, spec: &AppSpec) -> Option<String> {
    let has = |k: &str| prepared.env.iter().any(|(key, _)| key == k);
    if (spec.ready.source == ReadySource::NodeIpc || spec.stop.shutdown_with_message)
        && !has("NODE_CHANNEL_FD")
    {
        return Some("cannot make the IPC channel for the new process".into());
    }
    None
}

impl Supervisor {
    /// Makes the readiness resources of the next process of app `a`; the
    /// IPC channel follows its `listen_fds` `LISTEN_FDS` sockets.
    pub(super) fn prepare_readiness(&mut self, a: usize, listen_fds: usize) -> Prepared {
        let r = &mut self.ready;
        r.seq += 1;
        let dir = r.runtime_dir.get_or_insert_with(ready::runtime_dir);
        ready::prepare(&self.apps[a].spec, dir, r.seq, listen_fds)
    }

    /// Process `pid` runs: start reading what it says.
    pub(super) fn start_readiness(&mut self, pid: i32, prepared: Prepared) {
        let channels = prepared.start(pid, &self.tx);
        self.ready.channels.insert(pid, channels);
    }

    /// Something an app said.
    pub(super) fn on_app_event(&mut self, report: ready::Report) {
        let ready::Report { pid, event } = report;
        let Some(&slot) = self.by_pid.get(&pid) else {
            return;
        };
        let current = self.apps[slot.0].instances[slot.1].state.pid() == Some(pid);
        let event = match event {
            // The old process of a reload was ready long ago.
            Event::Ready if !current => return,
            Event::Ready => {
                self.ready_first(slot);
                return self.feed(slot, machine::Event::Ready);
            }
            Event::Metric { name, value } => {
                return self.obs.app_metric(&self.by_pid, pid, &name, value)
            }
            Event::Cluster(request) => return self.on_cluster(pid, request),
            Event::HandleReceived(received) => return self.on_handle_answer(pid, received),
            other => other,
        };
        let (a, i) = slot;
        let spec = &self.apps[a].spec;
        let app = spec.name.as_str();
        match event {
            // Handled above, before borrowing the spec.
            Event::Ready | Event::Metric { .. } | Event::Cluster(_) | Event::HandleReceived(_) => {}
            Event::Status(status) => info!(app, instance = i, pid, status, "app status"),
            Event::WatchdogPing => match spec.watchdog {
                Some(interval) => {
                    if let Some(c) = self.ready.channels.get_mut(&pid) {
                        c.ping(Instant::now(), interval);
                    }
                }
                None => debug!(app, pid, "WATCHDOG=1 ignored: no watchdog set for the app"),
            },
            Event::WatchdogTrigger if !current => {}
            Event::WatchdogTrigger => {
                warn!(
                    app,
                    instance = i,
                    pid,
                    "the app asked for its watchdog (WATCHDOG=trigger); restarting"
                );
                self.feed(slot, machine::Event::WatchdogMissed);
            }
            Event::Disconnected => self.on_disconnected(pid),
            Event::Stopping => info!(app, instance = i, pid, "app is stopping (STOPPING=1)"),
            Event::Reloading => info!(app, instance = i, pid, "app is reloading (RELOADING=1)"),
            Event::MainPid(other) => {
                warn!(
                    app,
                    instance = i,
                    pid,
                    mainpid = other,
                    "MAINPID= is not supported: procward keeps supervising the process it started"
                )
            }
            Event::Errno(errno) => warn!(
                app,
                instance = i,
                pid,
                errno,
                "app reported an error (ERRNO=)"
            ),
            Event::ProcessMsg(data) => debug!(app, instance = i, pid, %data, "process:msg"),
            Event::Axm(kind) => debug!(app, instance = i, pid, kind, "@pm2/io message"),
            Event::Dropped {
                input,
                counts,
                over,
            } => {
                for (reason, &count) in Dropped::ALL.iter().zip(&counts) {
                    self.ready.dropped[reason.index()] += count;
                    // procward_dropped_inputs_total{input="ipc"|"notify"|
                    // "notify_sender"|"notify_descriptors"}
                    let label = match (input, reason) {
                        (Input::Notify, Dropped::Foreign) => "notify_sender",
                        (Input::Notify, Dropped::Descriptors) => "notify_descriptors",
                        (input, _) => input.as_str(),
                    };
                    if count > 0 {
                        self.obs.input_dropped(label, count);
                    }
                }
                warn!(
                    app,
                    instance = i,
                    pid,
                    input = input.as_str(),
                    "{}",
                    dropped_summary(input, &counts, over)
                );
            }
        }
    }

    /// Restarts the instances whose sd_notify watchdog expired.
    pub(super) fn on_watchdog_deadlines(&mut self, now: Instant) {
        let due: Vec<i32> = self
            .ready
            .channels
            .iter_mut()
            .filter(|(_, c)| c.watchdog_due.is_some_and(|d| d <= now))
            .map(|(pid, c)| {
                c.watchdog_due = None;
                *pid
            })
            .collect();
        for pid in due {
            let Some(&slot) = self.by_pid.get(&pid) else {
                continue;
            };
            if self.apps[slot.0].instances[slot.1].state.pid() != Some(pid) {
                // An old process of a reload, on its way out.
                continue;
            }
            warn!(app = %self.apps[slot.0].spec.name, instance = slot.1, pid,
                  "no WATCHDOG=1 within the app's watchdog interval; restarting");
            self.feed(slot, machine::Event::WatchdogMissed);
        }
    }

    /// After every event: tell the service manager what changed.
    pub(super) fn after_event(&mut self) {
        if !self.ready.manager.is_active() {
            return;
        }
        let view = self.view(None);
        self.ready.manager.update(&view, Instant::now());
    }

    /// Before a starting instance at `slot` takes its ready report: when
    /// that makes every instance ready for the first time, READY=1 (and
    /// the status it brings) goes out now, before the transition is
    /// logged. A starting instance always goes online on it; the update
    /// after the event then finds nothing new to send.
    fn ready_first(&mut self, (a, i): (usize, usize)) {
        let inst = &self.apps[a].instances[i];
        let last = matches!(inst.state, State::Starting { .. })
            && inst.first_ready.is_none()
            && self.apps.iter().enumerate().all(|(b, app)| {
                app.instances
                    .iter()
                    .enumerate()
                    .all(|(j, o)| (b, j) == (a, i) || o.first_ready.is_some())
            });
        if last && self.ready.manager.is_active() {
            let view = self.view(Some((a, i)));
            self.ready.manager.update(&view, Instant::now());
        }
    }

    /// What the service manager is told; with `assume`, as if that
    /// instance were ready already.
    fn view(&self, assume: Option<(usize, usize)>) -> View {
        let all = || self.apps.iter().flat_map(|a| a.instances.iter());
        let assumed = |a: usize, i: usize| assume == Some((a, i));
        let status = self
            .apps
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let ready = a
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(j, i)| i.state.is_ready() || assumed(k, *j))
                    .count();
                let restarts: u64 = a.instances.iter().map(|i| i.total_restarts()).sum();
                let s = if restarts == 1 { "" } else { "s" };
                // An errored instance is never restarted again: say so,
                // as /readyz does, so `systemctl status` names the app.
                let errored = a
                    .instances
                    .iter()
                    .filter(|i| matches!(i.state, State::Errored { .. }))
                    .count();
                let errored = match errored {
                    0 => String::new(),
                    n if n == a.instances.len() => ", errored".to_string(),
                    n => format!(", {n} errored"),
                };
                format!(
                    "{} {ready}/{} ready, {restarts} restart{s}{errored}",
                    a.spec.name,
                    a.instances.len()
                )
            })
            .enumerate()
            .map(|(k, line)| match self.reloads.aborted.get(&k) {
                Some(why) => format!("{line}, last reload aborted ({why})"),
                None => line,
            })
            .collect::<Vec<_>>()
            .join("; ");
        View {
            all_ready_once: self.apps.iter().enumerate().all(|(k, a)| {
                a.instances
                    .iter()
                    .enumerate()
                    .all(|(j, i)| i.first_ready.is_some() || assumed(k, j))
            }),
            reload_done: self.reloads.is_done(),
            status,
            starting_until: all()
                .filter_map(|i| match i.state {
                    State::Starting { ready_by, .. } => Some(ready_by),
                    _ => None,
                })
                .max(),
        }
    }
}

/// One line for a report of dropped input: "12,345 notify datagrams
/// dropped in the last 10 s: 12,000 garbage, 345 foreign_sender; 20
/// descriptors closed".
fn dropped_summary(
    input: Input,
    counts: &[u64; Dropped::ALL.len()],
    over: Option<std::time::Duration>,
) -> String {
    let noun = match input {
        Input::Ipc => ("IPC line", "IPC lines"),
        Input::Notify => ("notify datagram", "notify datagrams"),
    };
    let when = over
        .map(|d| format!(" in the last {} s", d.as_secs()))
        .unwrap_or_default();
    let fds = counts[Dropped::Descriptors.index()];
    let reasons: Vec<String> = Dropped::ALL
        .iter()
        .zip(counts)
        .filter(|(r, n)| **r != Dropped::Descriptors && **n > 0)
        .map(|(r, n)| format!("{} {}", thousands(*n), r.as_str()))
        .collect();
    let total: u64 = counts.iter().sum::<u64>() - fds;
    let mut line = String::new();
    if total > 0 {
        let noun = if total == 1 { noun.0 } else { noun.1 };
        line = format!(
            "{} {noun} dropped{when}: {}",
            thousands(total),
            reasons.join(", ")
        );
    }
    if fds > 0 {
        let s = if fds == 1 { "" } else { "s" };
        line = if line.is_empty() {
            format!(
                "{} descriptor{s} sent with notify datagrams closed{when}",
                thousands(fds)
            )
        } else {
            format!("{line}; {} descriptor{s} closed", thousands(fds))
        };
    }
    line
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_window_of_drops_reads_as_one_summary_line() {
        let mut counts = [0; Dropped::ALL.len()];
        counts[Dropped::Garbage.index()] = 12_000;
        counts[Dropped::Foreign.index()] = 345;
        counts[Dropped::Descriptors.index()] = 20;
        assert_eq!(
            dropped_summary(Input::Notify, &counts, Some(Duration::from_secs(10))),
            "12,345 notify datagrams dropped in the last 10 s: 12,000 garbage, 345 foreign_sender; 20 descriptors closed"
        );
    }

    #[test]
    fn a_single_drop_reads_in_the_singular() {
        let mut counts = [0; Dropped::ALL.len()];
        counts[Dropped::TooLong.index()] = 1;
        assert_eq!(
            dropped_summary(Input::Ipc, &counts, None),
            "1 IPC line dropped: 1 too_long"
        );
        let mut counts = [0; Dropped::ALL.len()];
        counts[Dropped::Descriptors.index()] = 1_000_000;
        assert_eq!(
            dropped_summary(Input::Notify, &counts, Some(Duration::from_secs(10))),
            "1,000,000 descriptors sent with notify datagrams closed in the last 10 s"
        );
    }
}
