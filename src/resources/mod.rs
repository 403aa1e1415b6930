//! Resource sampling: a source of samples, nothing more.
//!
//! Every `--sample-interval` the sampler reads /proc once
//! ([`procfs::ProcScan`]) and sends the supervisor one [`TreeUsage`] per
//! instance process tree. It owns no policy: memory caps and metrics are the
//! supervisor's business. Which pids are instance roots reaches it through a
//! watch channel the supervisor publishes on, so no state is shared.
//!
//! An instance with a memory cap is also sampled between passes, as it
//! nears the cap: after each sample of its tree the next one is due
//! halfway to when the resident memory, growing at the rate seen over its
//! last samples (at least 100 ms apart) from where it last moved, would
//! reach the cap (or the hard limit, once over the cap), within
//! [`MIN_GAP`] and the interval. Halfway, so the samples close in on the
//! crossing; from where it last moved, so a leak that grows in steps, flat
//! between two, is sampled every [`MIN_GAP`] once the step that crosses is
//! due. Only that tree's stat files are read again, not the whole of
//! /proc, so an idle or flat instance costs one pass per interval and a
//! fast leak is caught within milliseconds of the crossing.
//!
//! A new process of an instance with a cap is sampled as soon as the
//! supervisor publishes it, not at the next pass, and every [`FIRST_GAP`]
//! while it is [`YOUNG`]: its growth while it loads says little about
//! what follows, and a fast leak can reach the cap within one interval of
//! the start.
//!
//! The passes run on a thread of their own, so a pass over many trees
//! never delays a signal, a reap or a request on the event loop. The
//! thread is started once the first instance has a process: under
//! `unshare --pid` the first app is still PID 2. It inherits the main
//! thread's mask, every signal blocked, so signals still reach the
//! signalfd only.
//!
//! cgroup v2 memory events (`memory.events` `high`/`oom`, or PSI) are not
//! used: they need a delegated, writable cgroup v2 hierarchy per instance,
//! and /proc sampling works everywhere procward runs (cgroup v1 hosts
//! included). Where a hierarchy is delegated, a `memory.high` set at the
//! cap and a poll(2) on `memory.events` would report the crossing with no
//! sampling at all.

pub mod procfs;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::warn;

pub use procfs::TreeUsage;

/// Open fds and PSS are read every this many passes (every 10 s at the
/// default interval), and one pass after a new process appears; memory,
/// CPU and threads on every pass.
pub const SLOW_EVERY: u64 = 10;

/// The shortest gap between two samples of one tree near its cap.
pub const MIN_GAP: Duration = Duration::from_millis(10);

/// The gap between the first two samples of a tree with a cap, which
/// give its growth rate, and the shortest span a rate is measured over.
pub const FIRST_GAP: Duration = Duration::from_millis(100);

/// How long after its first sample a tree with a cap is sampled at least
/// every [`FIRST_GAP`], whatever its growth so far.
pub const YOUNG: Duration = Duration::from_secs(2);

/// An instance's main process, and the memory limits its tree is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub pid: i32,
    /// `max_memory_restart`.
    pub cap: Option<u64>,
    /// The hard limit, which matters once over the cap.
    pub hard: Option<u64>,
}

/// Samples the trees rooted at the pids in `roots` every `interval` (those
/// near a cap more often) and sends them through the sender the
/// supervisor gave, until it is closed. Waits on the event loop for the
/// first root, then samples on a thread of its own.
pub async fn run(
    interval: Duration,
    mut roots: watch::Receiver<Vec<Root>>,
    tx: mpsc::Sender<Vec<TreeUsage>>,
) {
    while roots.borrow_and_update().is_empty() {
        if roots.changed().await.is_err() {
            return;
        }
    }
    let mut published = roots.clone();
    let spawned = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || sample(interval, roots, tx));
    let thread = match spawned {
        Ok(handle) => handle.thread().clone(),
        Err(e) => {
            warn!(error = %e, "cannot start the sampler thread: no memory, CPU or fd figures, and max_memory_restart is off");
            return;
        }
    };
    // Wakes the thread when the roots change, so a new process with a cap
    // is sampled from its start.
    while published.changed().await.is_ok() {
        if published
            .borrow_and_update()
            .iter()
            .any(|r| r.cap.is_some())
        {
            thread.unpark();
        }
    }
}

/// The next sample of one tree with a cap.
#[derive(Debug, Clone, Copy)]
struct Near {
    root: Root,
    /// When the tree was first due: it is [`YOUNG`] for a while after.
    born: Instant,
    /// The sample the growth rate is measured from, at least
    /// [`FIRST_GAP`] back: closer samples would see an app that grows in
    /// steps as flat between two of them. `None` before the first sample
    /// (a process just published).
    base: Option<(u64, Instant)>,
    /// Bytes a second, from `base` to the last sample that moved it, or
    /// half the rate before when that is more.
    rate: f64,
    /// The last sample's resident bytes, and when they were first seen.
    last: (u64, Instant),
    due: Instant,
}

impl Near {
    /// A tree not sampled yet: due at once.
    fn fresh(root: Root, now: Instant) -> Near {
        Near {
            root,
            born: now,
            base: None,
            rate: 0.0,
            last: (0, now),
            due: now,
        }
    }

    fn new(root: Root, rss: u64, at: Instant, interval: Duration) -> Near {
        let mut n = Near::fresh(root, at);
        n.update(rss, at, interval);
        n
    }

    /// After a sample of `rss` bytes at `at`: when the next is due.
    fn update(&mut self, rss: u64, at: Instant, interval: Duration) {
        if self.base.is_none() || rss != self.last.0 {
            self.last = (rss, at);
        }
        let (rss0, at0) = *self.base.get_or_insert((rss, at));
        let dt = at.saturating_duration_since(at0);
        if dt >= FIRST_GAP.min(interval) {
            // A window without growth halves the rate rather than zeroing
            // it: a leak in steps further apart than a window is flat in
            // every other one.
            let seen = rss.saturating_sub(rss0) as f64 / dt.as_secs_f64();
            self.rate = seen.max(self.rate / 2.0);
            self.base = Some((rss, at));
        }
        let still = at.saturating_duration_since(self.last.1);
        let mut next = gap(rss, self.rate, still, self.root, interval);
        if at.saturating_duration_since(self.born) < YOUNG {
            next = next.min(FIRST_GAP);
        }
        self.due = at + next;
    }
}

/// When to sample again a tree at `rss` bytes, growing by `rate` bytes a
/// second, whose size has not moved for `still`: halfway to when it
/// reaches the next limit above it, within [`MIN_GAP`] and `interval`.
fn gap(rss: u64, rate: f64, still: Duration, root: Root, interval: Duration) -> Duration {
    let limit = [root.cap, root.hard]
        .into_iter()
        .flatten()
        .find(|l| *l >= rss);
    let (Some(limit), true) = (limit, rate > 0.0) else {
        return interval;
    };
    let reach = (limit - rss) as f64 / rate - still.as_secs_f64();
    Duration::from_secs_f64((reach / 2.0).clamp(0.0, interval.as_secs_f64()))
        .clamp(MIN_GAP.min(interval), interval)
}

fn sample(
    interval: Duration,
    mut roots: watch::Receiver<Vec<Root>>,
    tx: mpsc::Sender<Vec<TreeUsage>>,
) {
    let mut scan = match procfs::ProcScan::new() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot open /proc: no memory, CPU or fd figures, and max_memory_restart is off");
            return;
        }
    };
    let mut pids: Vec<i32> = Vec::new();
    let mut before: Vec<i32> = Vec::new();
    let mut near: Vec<Near> = Vec::new();
    let mut next_full = Instant::now();
    // A new process is read in full one interval after it is first seen,
    // once it has started, rather than as the bare image it is at spawn.
    let mut fresh = false;
    let mut pass = 0u64;
    loop {
        let wake = near.iter().map(|n| n.due).fold(next_full, Instant::min);
        let now = Instant::now();
        if wake > now {
            // Unparked early when the roots change (see `run`); a
            // spurious wake-up finds nothing due and comes back here.
            std::thread::park_timeout(wake - now);
        }
        let now = Instant::now();
        if roots.has_changed().unwrap_or(false) {
            let current = roots.borrow_and_update();
            for root in current.iter().filter(|r| r.cap.is_some()) {
                if !near.iter().any(|n| n.root == *root) {
                    near.push(Near::fresh(*root, now));
                }
            }
        }
        let out = if now >= next_full {
            pass += 1;
            next_full = (next_full + interval).max(now);
            let current = roots.borrow_and_update().clone();
            std::mem::swap(&mut pids, &mut before);
            pids.clear();
            pids.extend(current.iter().map(|r| r.pid));
            let changed = pids != before;
            let slow = (fresh && !changed) || pass % SLOW_EVERY == 0;
            fresh = changed || (fresh && !slow);
            let mut out = Vec::with_capacity(pids.len());
            scan.scan(&pids, slow, &mut out);
            let now = Instant::now();
            let old = std::mem::take(&mut near);
            for (root, u) in current.iter().zip(&out) {
                if root.cap.is_none() || u.processes == 0 {
                    continue;
                }
                match old.iter().find(|n| n.root == *root) {
                    Some(n) => {
                        let mut n = *n;
                        n.update(u.rss_bytes, now, interval);
                        near.push(n);
                    }
                    None => near.push(Near::new(*root, u.rss_bytes, now, interval)),
                }
            }
            out
        } else {
            let mut out = Vec::new();
            for n in near.iter_mut().filter(|n| n.due <= now) {
                let u = scan.reread(n.root.pid);
                n.update(u.rss_bytes, Instant::now(), interval);
                if u.processes == 0 {
                    // Gone: the next full pass says so.
                    n.due = next_full;
                }
                out.push(u);
            }
            out
        };
        if !out.is_empty() && tx.blocking_send(out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn root() -> Root {
        Root {
            pid: 1,
            cap: Some(100 * MB),
            hard: Some(150 * MB),
        }
    }

    #[test]
    fn the_next_sample_is_due_when_the_growth_would_reach_the_cap() {
        let i = Duration::from_secs(1);
        let now = Duration::ZERO;
        let rate = 100.0 * MB as f64;
        // 50 MB to go at 100 MB/s: in half a second, so halfway there.
        assert_eq!(
            gap(50 * MB, rate, now, root(), i),
            Duration::from_millis(250)
        );
        // Almost there: no sooner than MIN_GAP.
        assert_eq!(gap(100 * MB - 1, rate, now, root(), i), MIN_GAP);
        // 10 MB to go (100 ms), but flat for 60 ms already: the next
        // step is due in 40 ms, so in 20.
        assert_eq!(
            gap(90 * MB, rate, Duration::from_millis(60), root(), i),
            Duration::from_millis(20)
        );
        // Flat past the time the cap was due: every MIN_GAP.
        assert_eq!(
            gap(90 * MB, rate, Duration::from_millis(150), root(), i),
            MIN_GAP
        );
        // Flat or shrinking, or far away: the interval.
        assert_eq!(gap(50 * MB, 0.0, now, root(), i), i);
        assert_eq!(gap(50 * MB, 1.0, now, root(), i), i);
        // Over the cap: towards the hard limit.
        assert_eq!(
            gap(140 * MB, rate, now, root(), i),
            Duration::from_millis(50)
        );
        // Over both, or no cap: the interval.
        assert_eq!(gap(200 * MB, rate, now, root(), i), i);
        let free = Root {
            cap: None,
            hard: None,
            ..root()
        };
        assert_eq!(gap(50 * MB, rate, now, free, i), i);
        // An interval under MIN_GAP wins.
        let short = Duration::from_millis(5);
        assert_eq!(gap(99 * MB, rate, now, root(), short), short);
    }

    #[test]
    fn a_leak_in_steps_keeps_its_rate_between_close_samples() {
        let i = Duration::from_secs(1);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Past YOUNG: a tree first seen a while ago.
        let mut n = Near::new(root(), 50 * MB, t0, i);
        assert_eq!(n.due, ms(100));
        n.born = t0 - YOUNG;
        n.update(60 * MB, ms(100), i);
        assert_eq!(n.due, ms(300), "40 MB to go at 100 MB/s: halfway");
        // 10 ms later, between two steps of the leak: still 100 MB/s, and
        // the cap still due at 500 ms.
        n.update(60 * MB, ms(110), i);
        assert_eq!(n.due, ms(305));
        // Flat over a whole window: half the rate, 50 MB/s, with the cap
        // due at 900 ms (from 100 ms, where it last moved).
        n.update(60 * MB, ms(300), i);
        assert_eq!(n.due, ms(600));
        // Flat for long: the rate fades, back to the interval.
        for t in (400..=2000).step_by(100) {
            n.update(60 * MB, ms(t), i);
        }
        assert_eq!(n.due, ms(3000));
    }

    #[test]
    fn a_leak_in_steps_further_apart_than_a_window_keeps_a_rate() {
        let i = Duration::from_secs(10);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut n = Near::new(root(), 50 * MB, t0, i);
        n.born = t0 - YOUNG;
        // 5 MB every 200 ms, sampled every 100 ms or so.
        let mut rss = 50 * MB;
        for t in (100..=1000).step_by(100) {
            if t % 200 == 0 {
                rss += 5 * MB;
            }
            n.update(rss, ms(t), i);
            if t < 200 {
                continue;
            }
            assert!(n.rate > 0.0, "no rate at {t} ms");
            assert!(n.due <= ms(t) + Duration::from_secs(1), "{t} ms");
        }
    }

    #[test]
    fn a_new_process_is_sampled_at_once_then_every_first_gap_while_young() {
        let i = Duration::from_secs(1);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut n = Near::fresh(root(), t0);
        assert_eq!(n.due, t0);
        n.update(5 * MB, t0, i);
        assert_eq!(n.due, ms(100));
        // Slow growth while it loads would put the next sample a second
        // away; while young, it comes after FIRST_GAP.
        n.update(6 * MB, ms(100), i);
        assert_eq!(n.due, ms(200));
        n.update(7 * MB, ms(1900), i);
        assert_eq!(n.due, ms(2000));
        // Grown up: the interval.
        n.update(7 * MB, ms(2100), i);
        assert_eq!(n.due, ms(3100));
    }
}
