//! One instance of an app: its state, its policy counters, its history.

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
        }
    }

    /// Restarts so far, all reasons.
    pub fn total_restarts(&self) -> u64 {
        self.restarts.iter().sum()
    }
}
