//! `max_memory_restart`: whose turn it is to be restarted for memory.
//!
//! PM2 checks every `PM2_WORKER_INTERVAL` (30 s by default) whether an
//! instance's memory exceeds the cap and restarts it (pm2 lib/Worker.js,
//! `max_memory_restart < monit.memory`). procward checks every sample
//! (1 s by default, sooner near the cap: `crate::resources`), sums the
//! whole process tree, and restarts gracefully.
//! Within one app only one instance is restarted for memory at a time, and
//! only while no other instance of it is starting or stopping, so the app
//! keeps serving; the others are caught again at the next sample. The
//! decision itself (graceful restart, or SIGKILL at the hard limit, which
//! waits for no turn) is the instance machine's.

use crate::supervise::state::State;
use crate::supervise::{App, Slot};

/// The instances that may be restarted for memory now, one per app at
/// most, given each instance's resident bytes at the last sample (`None`
/// where it has no process).
pub fn turns(apps: &[App], rss: impl Fn(Slot) -> Option<u64>) -> Vec<Slot> {
    over_cap(apps, rss)
        .into_iter()
        .map(|(slot, _, _)| slot)
        .collect()
}

/// The instance to restart for memory in each app, with its resident bytes
/// and the cap.
fn over_cap(apps: &[App], rss: impl Fn(Slot) -> Option<u64>) -> Vec<(Slot, u64, u64)> {
    let mut picks = Vec::new();
    for (a, app) in apps.iter().enumerate() {
        let Some(limit) = app.spec.max_memory_restart else {
            continue;
        };
        let busy = |skip: usize| {
            app.instances.iter().enumerate().any(|(i, inst)| {
                i != skip
                    && matches!(
                        inst.state,
                        State::Starting { .. } | State::Stopping { .. } | State::Emptying { .. }
                    )
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::AppSpec;
    use crate::supervise::instance::Instance;

    fn app(states: Vec<State>) -> App {
        let mut spec = AppSpec::new("web", vec!["node".into()]);
        spec.max_memory_restart = Some(100);
        let instances = states
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut inst = Instance::new(i as u32);
                inst.state = s;
                inst
            })
            .collect();
        App { spec, instances }
    }

    fn online(pid: i32) -> State {
        let now = Instant::now();
        State::Online {
            pid,
            since: now,
            ready_at: now,
        }
    }

    #[test]
    fn the_largest_instance_over_the_cap_goes_first_and_alone() {
        let apps = [app(vec![online(1), online(2), online(3)])];
        let rss = [150, 300, 90];
        assert_eq!(
            over_cap(&apps, |(_, i)| Some(rss[i])),
            vec![((0, 1), 300, 100)]
        );
    }

    #[test]
    fn nothing_is_restarted_while_another_instance_is_starting_or_stopping() {
        let now = Instant::now();
        let stopping = State::Stopping {
            pid: 2,
            since: now,
            kill_at: None,
            then: crate::supervise::state::Then::Stop,
        };
        let apps = [app(vec![online(1), stopping])];
        assert!(over_cap(&apps, |_| Some(500)).is_empty());
        let apps = [app(vec![online(1)])];
        assert_eq!(over_cap(&apps, |_| Some(101)).len(), 1);
        assert!(
            over_cap(&apps, |_| Some(100)).is_empty(),
            "at the cap is not over it"
        );
    }
}
