//! `max_memory_restart`: which instance to restart for memory, if any.
//!
//! PM2 checks every `PM2_WORKER_INTERVAL` (30 s by default) whether an
//! instance's memory exceeds the cap and restarts it (pm2 lib/Worker.js,
//! `max_memory_restart < monit.memory`). procward checks every sample
//! (1 s by default), sums the whole process tree, and restarts gracefully.
//! Within one app only one instance is restarted for memory at a time, and
//! only while no other instance of it is starting or stopping, so the app
//! keeps serving; the others are caught again at the next sample.

use crate::supervise::state::State;
use crate::supervise::{App, Slot};

/// The instance to restart for memory in each app, given each instance's
/// resident bytes at the last sample (`None` where it has no process).
pub fn over_cap(apps: &[App], rss: impl Fn(Slot) -> Option<u64>) -> Vec<(Slot, u64, u64)> {
    let mut picks = Vec::new();
    for (a, app) in apps.iter().enumerate() {
        let Some(limit) = app.spec.max_memory_restart else {
            continue;
        };
        let busy = |skip: usize| {
            app.instances.iter().enumerate().any(|(i, inst)| {
                i != skip && matches!(inst.state, State::Starting { .. } | State::Stopping { .. })
            })
        };
        let worst = app
            .instances
            .iter()
            .enumerate()
            .filter(|(_, inst)| matches!(inst.state, State::Starting { .. } | State::Online { .. }))
            .filter_map(|(i, _)| rss((a, i)).filter(|r| *r > limit).map(|r| (i, r)))
            .max_by_key(|(_, r)| *r);
        if let Some((i, r)) = worst {
            if !busy(i) {
                picks.push(((a, i), r, limit));
            }
        }
    }
    picks
}
