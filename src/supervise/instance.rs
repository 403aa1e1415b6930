//! One instance of an app: its state, its policy counters, its history.

use std::collections::VecDeque;
use std::time::Instant;

use crate::exit::ExitStatus;
use crate::supervise::policy::{Counters, Reason};
use crate::supervise::state::State;

/// One copy of an app (PM2's `pm_id` within the app is `index`).
#[derive(Debug)]
pub struct Instance {
    /// Position within its app, from 0 (`NODE_APP_INSTANCE`).
    pub index: u32,
    /// Where it is in its lifecycle.
    pub state: State,
    /// The restart policy's memory.
    pub counters: Counters,
    /// Restarts so far, by reason (indexed by `Reason::index`).
    pub restarts: [u64; Reason::ALL.len()],
    /// How its last process ended.
    pub last_status: Option<ExitStatus>,
    /// When its current process became ready the first time, for the
    /// time-to-ready figure.
    pub first_ready: Option<Instant>,
    /// Since when its current process's memory samples have been under
    /// `max_memory_restart`, from the first such sample.
    pub under_cap_since: Option<Instant>,
    /// Whether its current process has stayed under `max_memory_restart`
    /// for `min_uptime`; one that never did is restarted as unstable.
    pub fit: bool,
    /// An old process still draining while the current one runs: the
    /// overlap of a rolling reload. `None` outside one.
    pub draining: Option<Draining>,
    /// The last restarts, oldest first, for `procward describe`.
    pub history: VecDeque<crate::control::RestartRecord>,
}

/// An old process of the instance during a rolling reload: it serves while
/// its replacement starts, then is asked to stop and may finish its last
/// requests while the new one serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    /// Its pid, also its process group.
    pub pid: i32,
    /// When it was spawned.
    pub since: Instant,
    /// When SIGKILL is due; `None` while it still serves (not asked to
    /// stop yet) and once SIGKILL has been sent.
    pub kill_at: Option<Instant>,
    /// When it became ready, while it still serves: its replacement is
    /// not ready yet, and it becomes the current process again if the
    /// replacement fails. `None` once it has been asked to stop.
    pub serving: Option<Instant>,
}

impl Instance {
    /// A new instance that has not been spawned yet.
    pub fn new(index: u32) -> Self {
        Instance {
            index,
            state: State::Stopped { status: None },
            counters: Counters::default(),
            restarts: [0; Reason::ALL.len()],
            last_status: None,
            first_ready: None,
            under_cap_since: None,
            fit: false,
            draining: None,
            history: VecDeque::new(),
        }
    }

    /// Whether nothing of it runs or will run: a final state and no
    /// draining process.
    pub fn is_final(&self) -> bool {
        self.state.is_final() && self.draining.is_none()
    }

    /// The next time something is due for it.
    pub fn deadline(&self) -> Option<Instant> {
        let old = self.draining.as_ref().and_then(|d| d.kill_at);
        match (self.state.deadline(), old) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The reason of its last restart.
    pub fn restarts_last(&self) -> Option<&'static str> {
        let last = self.history.back()?;
        crate::supervise::policy::Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .find(|r| *r == last.reason)
    }

    /// Restarts so far, all reasons.
    pub fn total_restarts(&self) -> u64 {
        self.restarts.iter().sum()
    }
}
