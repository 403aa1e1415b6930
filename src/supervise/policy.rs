//! PM2's restart policy, as pure functions of an exit and the counters.
//!
//! Sources (pm2 5.x): `lib/God.js` `handleExit` for min_uptime, max_restarts,
//! restart_delay and exp_backoff_restart_delay; `constants.js` and
//! `lib/Worker.js` for the backoff reset. One deliberate difference: PM2
//! counts unstable restarts only within `min_uptime * max_restarts` of the
//! app's creation, so a crash loop that starts later never ends; ours counts
//! consecutive unstable runs, and a stable run resets the count.

use std::time::Duration;

use crate::config::RestartPolicy;
use crate::exit::ExitStatus;

/// Growth factor of the exponential backoff (`prev_restart_delay * 1.5`,
/// pm2 lib/God.js handleExit).
pub const BACKOFF_FACTOR: f64 = 1.5;
/// Cap of the exponential backoff (`Math.min(15000, ...)`, pm2 lib/God.js).
pub const BACKOFF_CAP: Duration = Duration::from_millis(15_000);
/// A run longer than this resets the backoff to its first delay
/// (`EXP_BACKOFF_RESET_TIMER`, 30000 ms, pm2 constants.js; applied by
/// lib/Worker.js to a process whose uptime exceeds it).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_millis(30_000);

/// Why an instance was restarted; the `reason` label of the restart counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// It exited with a non-zero code.
    Crash,
    /// It was killed by a signal procward did not send.
    Signal,
    /// It exited with code 0 and autorestart is on.
    Exit,
    /// Its memory exceeded `max_memory_restart`.
    Memory,
    /// Its sd_notify watchdog pings stopped.
    Watchdog,
    /// A reload (SIGHUP or the control API).
    Reload,
    /// A restart asked for through the control API.
    Manual,
    /// One of the app's `cron_restart` times.
    Cron,
    /// A file changed under the app's `watch`.
    Watch,
    /// It did not become ready within `listen_timeout` (strict readiness).
    ReadyTimeout,
    /// Spawning it failed for want of a resource (EMFILE, ENFILE, EAGAIN,
    /// ENOMEM); counted once per failed attempt.
    SpawnFailed,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 11] = [
        Reason::Crash,
        Reason::Signal,
        Reason::Exit,
        Reason::Memory,
        Reason::Watchdog,
        Reason::Reload,
        Reason::Manual,
        Reason::ReadyTimeout,
        Reason::SpawnFailed,
        Reason::Cron,
        Reason::Watch,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Crash => "crash",
            Reason::Signal => "signal",
            Reason::Exit => "exit",
            Reason::Memory => "memory",
            Reason::Watchdog => "watchdog",
            Reason::Reload => "reload",
            Reason::Manual => "manual",
            Reason::ReadyTimeout => "ready_timeout",
            Reason::SpawnFailed => "spawn_failed",
            Reason::Cron => "cron",
            Reason::Watch => "watch",
        }
    }

    /// The reason for an exit procward did not ask for.
    pub fn of_exit(status: ExitStatus) -> Reason {
        match status {
            ExitStatus::Code(0) => Reason::Exit,
            ExitStatus::Code(_) => Reason::Crash,
            ExitStatus::Signal { .. } => Reason::Signal,
        }
    }

    /// Its position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The policy's memory between runs of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Consecutive runs shorter than min_uptime (PM2 `unstable_restarts`).
    pub unstable: u32,
    /// Last backoff delay used (PM2 `prev_restart_delay`).
    pub prev_backoff: Option<Duration>,
    /// Consecutive spawns that failed for want of a resource.
    pub spawn_failures: u32,
}

/// What to do after an exit procward did not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`.
    Restart {
        /// Time to wait first.
        delay: Duration,
        /// Why.
        reason: Reason,
    },
    /// Supervision of this instance ends normally (autorestart off, or a
    /// stop_exit_code).
    Stop,
    /// Too many unstable restarts: give up, and fail.
    Errored,
}

/// Decides what follows an unrequested exit after `uptime` of running.
pub fn after_exit(
    policy: &RestartPolicy,
    counters: &mut Counters,
    status: ExitStatus,
    uptime: Duration,
) -> Decision {
    if let ExitStatus::Code(code) = status {
        if policy.stop_exit_codes.contains(&code) {
            return Decision::Stop;
        }
    }
    decide(
        policy,
        counters,
        Reason::of_exit(status),
        uptime < policy.min_uptime,
        uptime,
    )
}

/// The one restart policy, for every reason: autorestart, the count of
/// consecutive unstable runs that ends a crash loop, and the delay
/// (restart_delay or the exponential backoff). `unstable` says whether the
/// run that ended counts as unstable; `uptime` is how long it ran.
pub fn decide(
    policy: &RestartPolicy,
    counters: &mut Counters,
    reason: Reason,
    unstable: bool,
    uptime: Duration,
) -> Decision {
    if !policy.autorestart {
        return Decision::Stop;
    }
    if unstable {
        counters.unstable += 1;
    } else {
        counters.unstable = 0;
    }
    // pm2 lib/God.js: `if (unstable_restarts >= max_restarts)` -> errored;
    // so max_restarts 0 means never restart.
    if counters.unstable >= policy.max_restarts {
        return Decision::Errored;
    }
    if uptime > BACKOFF_RESET_AFTER {
        counters.prev_backoff = None;
    }
    let delay = match policy.exp_backoff_restart_delay {
        Some(base) => {
            let next = grow(counters.prev_backoff, base);
            counters.prev_backoff = Some(next);
            next
        }
        None => policy.restart_delay,
    };
    Decision::Restart { delay, reason }
}

/// First delay before retrying a spawn that failed for want of a resource;
/// the retries back off from it as `exp_backoff_restart_delay` does.
pub const SPAWN_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The delay before retrying after the `n`th consecutive spawn that failed
/// for want of a resource (n >= 1). Such failures are not unstable runs
/// (the app never ran) and never end supervision: descriptors or memory
/// come back, and the retries back off up to [`BACKOFF_CAP`].
pub fn spawn_retry_delay(policy: &RestartPolicy, n: u32) -> Duration {
    let first = policy
        .exp_backoff_restart_delay
        .unwrap_or(policy.restart_delay)
        .max(SPAWN_RETRY_FIRST);
    let mut d = first;
    for _ in 1..n.min(64) {
        d = grow(Some(d), first);
        if d >= BACKOFF_CAP {
            break;
        }
    }
    d.min(BACKOFF_CAP.max(first))
}

/// The next backoff delay after `prev` (or `base` for the first).
fn grow(prev: Option<Duration>, base: Duration) -> Duration {
    match prev {
        None => base,
        Some(prev) => {
            let grown = (prev.as_millis() as f64 * BACKOFF_FACTOR).floor() as u64;
            Duration::from_millis(grown).min(BACKOFF_CAP)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn crash_loop_errors_after_max_restarts_consecutive_unstable_runs() {
        let policy = RestartPolicy {
            max_restarts: 3,
            ..Default::default()
        };
        let mut c = Counters::default();
        let crash = ExitStatus::Code(1);
        for _ in 0..2 {
            assert!(matches!(
                after_exit(&policy, &mut c, crash, ms(10)),
                Decision::Restart { .. }
            ));
        }
        assert_eq!(
            after_exit(&policy, &mut c, crash, ms(10)),
            Decision::Errored
        );
    }

    #[test]
    fn a_stable_run_resets_the_unstable_count() {
        let policy = RestartPolicy {
            max_restarts: 2,
            ..Default::default()
        };
        let mut c = Counters::default();
        let crash = ExitStatus::Code(1);
        assert!(matches!(
            after_exit(&policy, &mut c, crash, ms(10)),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            after_exit(&policy, &mut c, crash, ms(5000)),
            Decision::Restart { .. }
        ));
        assert_eq!(c.unstable, 0);
        assert!(matches!(
            after_exit(&policy, &mut c, crash, ms(10)),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn backoff_grows_by_half_and_caps_at_fifteen_seconds() {
        let policy = RestartPolicy {
            max_restarts: 1000,
            exp_backoff_restart_delay: Some(ms(100)),
            ..Default::default()
        };
        let mut c = Counters::default();
        let mut delays = Vec::new();
        for _ in 0..14 {
            match after_exit(&policy, &mut c, ExitStatus::Code(1), ms(5)) {
                Decision::Restart { delay, .. } => delays.push(delay.as_millis() as u64),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&delays[..6], &[100, 150, 225, 337, 505, 757]);
        assert_eq!(*delays.last().unwrap(), 15_000);
    }

    #[test]
    fn backoff_resets_after_thirty_seconds_up() {
        let policy = RestartPolicy {
            exp_backoff_restart_delay: Some(ms(100)),
            ..Default::default()
        };
        let mut c = Counters {
            prev_backoff: Some(ms(5000)),
            ..Counters::default()
        };
        let d = after_exit(&policy, &mut c, ExitStatus::Code(1), ms(31_000));
        assert_eq!(
            d,
            Decision::Restart {
                delay: ms(100),
                reason: Reason::Crash
            }
        );
    }

    #[test]
    fn stop_exit_codes_and_no_autorestart_stop() {
        let mut c = Counters::default();
        let p = RestartPolicy {
            stop_exit_codes: vec![0, 3],
            ..Default::default()
        };
        assert_eq!(
            after_exit(&p, &mut c, ExitStatus::Code(3), ms(5)),
            Decision::Stop
        );
        let p = RestartPolicy {
            autorestart: false,
            ..Default::default()
        };
        assert_eq!(
            after_exit(&p, &mut c, ExitStatus::Code(1), ms(5)),
            Decision::Stop
        );
    }

    #[test]
    fn reasons_follow_the_exit() {
        assert_eq!(Reason::of_exit(ExitStatus::Code(0)), Reason::Exit);
        assert_eq!(Reason::of_exit(ExitStatus::Code(2)), Reason::Crash);
        assert_eq!(
            Reason::of_exit(ExitStatus::Signal {
                signo: 9,
                core_dumped: false
            }),
            Reason::Signal
        );
    }

    #[test]
    fn spawn_retries_back_off_from_a_tenth_of_a_second_to_fifteen() {
        let p = RestartPolicy::default();
        assert_eq!(spawn_retry_delay(&p, 1), ms(100));
        assert_eq!(spawn_retry_delay(&p, 2), ms(150));
        assert_eq!(spawn_retry_delay(&p, 3), ms(225));
        assert_eq!(spawn_retry_delay(&p, 40), ms(15_000));
        let p = RestartPolicy {
            restart_delay: ms(500),
            ..Default::default()
        };
        assert_eq!(spawn_retry_delay(&p, 1), ms(500));
    }
}
