//! The lifecycle of one instance. Each state carries only the data valid in
//! it: a pid exists only where a process does.
//!
//! ```text
//!            spawn                 ready / listen_timeout
//!   (new) ─────────▶ Starting ───────────────────────────▶ Online
//!                       │  exit                              │ exit
//!                       ▼                                    ▼
//!            ┌── policy: restart now ── spawn ─▶ Starting
//!            ├── policy: restart later ─▶ Waiting ── timer ─▶ spawn
//!            ├── policy: stop ─▶ Stopped
//!            └── policy: give up ─▶ Errored
//!   Starting/Online ── stop request ─▶ Stopping ── exit ─▶ spawn (restart) or Stopped
//!                                          │  └── exit, group not empty ─▶ Emptying ── empty ─▶ (same)
//!                                          └── kill_timeout ─▶ SIGKILL, still Stopping
//! ```
//!
//! The full table of (state, event) pairs is `docs/design/instance-machine.md`;
//! the transitions themselves are in [`crate::supervise::machine`].

use std::time::Instant;

use crate::exit::ExitStatus;
use crate::supervise::policy::Reason;

/// What happens once a process procward is stopping has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Start it again at once, counting a restart for this reason.
    Restart(Reason),
    /// Leave it stopped.
    Stop,
}

/// The state of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Spawned, not ready yet.
    Starting {
        /// Its pid, also its process group.
        pid: i32,
        /// When it was spawned.
        since: Instant,
        /// When listen_timeout expires.
        ready_by: Instant,
    },
    /// Running and ready.
    Online {
        /// Its pid, also its process group.
        pid: i32,
        /// When it was spawned.
        since: Instant,
        /// When it became ready.
        ready_at: Instant,
    },
    /// Asked to stop; waiting for it to exit.
    Stopping {
        /// Its pid, also its process group.
        pid: i32,
        /// When it was spawned.
        since: Instant,
        /// When SIGKILL is due; `None` once it has been sent.
        kill_at: Option<Instant>,
        /// What follows the exit.
        then: Then,
    },
    /// The main process has exited after a stop request, but others of its
    /// process group have not: waiting for the group to empty, at most until
    /// the rest of kill_timeout (systemd's control-group stop).
    Emptying {
        /// The process group (the exited main process's pid).
        pgid: i32,
        /// When the main process was spawned.
        since: Instant,
        /// When SIGKILL is due; `None` once it has been sent.
        kill_at: Option<Instant>,
        /// What follows once the group is empty.
        then: Then,
    },
    /// A process is being spawned: only between the spawn action and its
    /// result, within one turn of the loop.
    Spawning {
        /// Why, for a restart.
        reason: Option<Reason>,
        /// The name of the state it was spawned from, for the log line.
        from: &'static str,
    },
    /// Waiting out a restart delay.
    Waiting {
        /// When to spawn again.
        until: Instant,
        /// Why it will be restarted (`None`: the first start failed).
        reason: Option<Reason>,
    },
    /// Not running, and not to be restarted.
    Stopped {
        /// How its last process ended, if one ran.
        status: Option<ExitStatus>,
    },
    /// Given up after too many unstable restarts, or it could not be run.
    Errored {
        /// How its last process ended.
        status: ExitStatus,
    },
}

impl State {
    /// The pid of its process, where one runs.
    pub fn pid(&self) -> Option<i32> {
        match self {
            State::Starting { pid, .. }
            | State::Online { pid, .. }
            | State::Stopping { pid, .. } => Some(*pid),
            State::Emptying { .. }
            | State::Spawning { .. }
            | State::Waiting { .. }
            | State::Stopped { .. }
            | State::Errored { .. } => None,
        }
    }

    /// The next time something is due in this state.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            State::Starting { ready_by, .. } => Some(*ready_by),
            State::Stopping { kill_at, .. } | State::Emptying { kill_at, .. } => *kill_at,
            State::Waiting { until, .. } => Some(*until),
            State::Online { .. }
            | State::Spawning { .. }
            | State::Stopped { .. }
            | State::Errored { .. } => None,
        }
    }

    /// Whether supervision of it has ended.
    pub fn is_final(&self) -> bool {
        matches!(self, State::Stopped { .. } | State::Errored { .. })
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Online { .. })
    }

    /// The state's name, as logged and exported (`state` label).
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting { .. } => "starting",
            State::Online { .. } => "online",
            // Still stopping, as far as anyone outside can tell.
            State::Stopping { .. } | State::Emptying { .. } => "stopping",
            // Never seen outside one loop turn.
            State::Spawning { .. } => "starting",
            State::Waiting { .. } => "waiting",
            State::Stopped { .. } => "stopped",
            State::Errored { .. } => "errored",
        }
    }

    /// Every state name, in label order.
    pub const NAMES: [&'static str; 6] = [
        "starting", "online", "stopping", "waiting", "stopped", "errored",
    ];
}
