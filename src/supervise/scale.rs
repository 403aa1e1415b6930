//! `procward scale APP N` (PM2's `pm2 scale`): instances added to or
//! removed from an app while it runs.
//!
//! Up: each new instance takes the next number (`NODE_APP_INSTANCE`,
//! `pm_id`) and starts as the app's instances start at start-up: the same
//! readiness source, the app's held `listen` sockets, the cluster sockets
//! made for its workers, a fresh `NODE_UNIQUE_ID`. The answer waits until
//! each is ready (or has failed), as `start` does.
//!
//! Down: the highest-numbered instances get the normal stop (the kill
//! signal or the shutdown message, `kill_timeout`, SIGKILL); once nothing of
//! them runs they are removed, with their metric series, and the answer
//! goes. PM2 deletes the oldest processes instead (`lib/API.js` `scale`,
//! `rmProcs` from the front of the list); removing from the end keeps the
//! numbers 0..N-1, which apps use to elect one instance
//! (`NODE_APP_INSTANCE === '0'`).
//!
//! Where procward differs from PM2 on purpose: 0 is refused (PM2 deletes
//! the app; `procward stop APP` stops it and keeps it for a `start`), and
//! asking for the current count answers "nothing to do" with success
//! (PM2 fails with "Nothing to do"), so a deploy script may scale every
//! time. A scale is refused while the app is reloading or another request
//! on it is under way, and other requests on it wait for none: they are
//! refused while it is being scaled.

use std::collections::HashMap;

use tokio::sync::oneshot;
use tracing::info;

use super::control::{outcome, Answer, Kind, Wait};
use super::instance::Instance;
use super::machine::Event;
use super::state::State;
use super::Supervisor;
use crate::control::{Outcome, Reply};

/// The most instances an app may be scaled to: the process file's own
/// limit on `instances`.
pub const MAX: u32 = 100_000;

/// Apps being scaled down, by index.
#[derive(Default)]
pub struct Scales {
    retiring: HashMap<usize, Retiring>,
}

/// The instances of one app on their way out.
struct Retiring {
    /// How many instances the app keeps; those past it are stopping.
    keep: usize,
    /// Each removed instance's process before the request.
    before: Vec<Option<i32>>,
    /// Where their outcomes go once they are removed.
    reply: oneshot::Sender<Vec<Outcome>>,
}

impl Supervisor {
    /// How many instances of app `a` stay: all but those being removed.
    pub(super) fn kept(&self, a: usize) -> usize {
        self.scales
            .retiring
            .get(&a)
            .map_or(self.apps[a].instances.len(), |r| r.keep)
    }

    /// Whether app `a` is being scaled, up or down.
    pub(super) fn is_scaling(&self, a: usize) -> bool {
        self.scales.retiring.contains_key(&a) || self.pending.iter().any(|p| p.scaling == Some(a))
    }

    /// Gives app `a` `n` instances.
    pub(super) fn scale(&mut self, a: usize, n: u32) -> Answer {
        let name = self.apps[a].spec.name.clone();
        if n == 0 {
            return Ok(Reply::refused(
                "bad_request",
                format!("cannot scale `{name}` to 0 instances"),
                Some(format!(
                    "`procward stop {name}` stops every instance and keeps the app for a `start`"
                )),
            ));
        }
        if n > MAX {
            return Ok(Reply::refused(
                "bad_request",
                format!("cannot scale `{name}` to {n} instances: at most {MAX}"),
                None,
            ));
        }
        if self.rolling_pending(a) {
            return Ok(Reply::refused(
                "busy",
                format!("`{name}` is being reloaded"),
                Some("scale it once the reload is done".into()),
            ));
        }
        if self.is_scaling(a) || self.pending.iter().any(|p| p.touches(a)) {
            return Ok(Reply::refused(
                "busy",
                format!("an earlier request on `{name}` is still under way"),
                Some("scale it once that one has answered".into()),
            ));
        }
        let now = self.apps[a].instances.len();
        if n as usize == now {
            return Ok(Reply::outcomes(Vec::new()));
        }
        // `describe` and `check` show the count it runs with now.
        self.apps[a].spec.instances = n;
        let n = n as usize;
        if n > now {
            info!(app = %name, from = now, to = n, "scaling up");
            self.logs.grow(a, n);
            for i in now..n {
                self.apps[a].instances.push(Instance::new(i as u32));
            }
            self.obs.resize(&self.apps, a);
            for i in now..n {
                self.apps[a].instances[i].state = State::Spawning {
                    reason: None,
                    from: "stopped",
                };
                let first = self.spawn((a, i));
                self.feed((a, i), first);
            }
            let slots = (now..n).map(|i| ((a, i), None)).collect();
            return Err((Wait::Settle(Kind::Renew("added"), slots), Vec::new()));
        }
        info!(app = %name, from = now, to = n, "scaling down: stopping the last instances");
        let (reply, rx) = oneshot::channel();
        let before: Vec<Option<i32>> = (n..now)
            .map(|i| self.apps[a].instances[i].state.pid())
            .collect();
        let slots = (n..now)
            .zip(before.iter())
            .map(|(i, b)| ((a, i), *b))
            .collect();
        self.scales.retiring.insert(
            a,
            Retiring {
                keep: n,
                before,
                reply,
            },
        );
        for i in n..now {
            self.feed((a, i), Event::Stop);
        }
        Err((Wait::Retire(rx, slots), Vec::new()))
    }

    /// Removes the instances of a scale-down once nothing of them runs;
    /// called after every event.
    pub(super) fn advance_scales(&mut self) {
        let done: Vec<usize> = self
            .scales
            .retiring
            .iter()
            .filter(|(a, r)| {
                self.apps[**a].instances[r.keep..]
                    .iter()
                    .all(Instance::is_final)
            })
            .map(|(a, _)| *a)
            .collect();
        for a in done {
            let Some(r) = self.scales.retiring.remove(&a) else {
                continue;
            };
            let app = &self.apps[a];
            let outs = app.instances[r.keep..]
                .iter()
                .zip(&r.before)
                .map(|(inst, before)| {
                    let detail = match (before, inst.last_status) {
                        (Some(_), Some(s)) => format!("stopped ({s})"),
                        _ => "not running".to_string(),
                    };
                    let mut o = outcome(app, inst, *before, true, detail);
                    o.state = "removed".into();
                    o
                })
                .collect();
            self.apps[a].instances.truncate(r.keep);
            self.held.retain(|&(x, i)| x != a || i < r.keep);
            self.forget_rolling(a, r.keep);
            self.obs.resize(&self.apps, a);
            info!(app = %self.apps[a].spec.name, instances = r.keep, "scaled down");
            let _ = r.reply.send(outs);
        }
    }
}
