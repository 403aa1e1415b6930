//! Resource sampling: a source of samples, nothing more.
//!
//! Every `--sample-interval` the sampler reads /proc once
//! ([`procfs::ProcScan`]) and sends the supervisor one [`TreeUsage`] per
//! instance process tree. It owns no policy: memory caps and metrics are the
//! supervisor's business. Which pids are instance roots reaches it through a
//! watch channel the supervisor publishes on, so no state is shared.
//!
//! An instance with a memory cap is also sampled between passes, as it
//! nears the cap: after each sample of its tree the next one is due when
//! the resident memory, growing at the rate seen over its last samples
//! (at least 100 ms apart), would reach the cap (or the hard limit, once over the cap),
//! within [`MIN_GAP`] and the interval. Only that tree's stat files are
//! read again, not the whole of /proc, so an idle or flat instance costs
//! one pass per interval and a fast leak is caught within milliseconds of
//! the crossing.
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
    let spawned = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || sample(interval, roots, tx));
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the sampler thread: no memory, CPU or fd figures, and max_memory_restart is off");
    }
}

/// The next sample of one tree with a cap.
#[derive(Debug, Clone, Copy)]
struct Near {
    root: Root,
    /// The sample the growth rate is measured from, at least
    /// [`FIRST_GAP`] back: closer samples would see an app that grows in
    /// steps as flat between two of them.
    base: (u64, Instant),
    /// Bytes a second, from `base` to the last sample that moved it.
    rate: f64,
    due: Instant,
}

impl Near {
    fn new(root: Root, rss: u64, at: Instant, interval: Duration) -> Near {
        Near {
            root,
            base: (rss, at),
            rate: 0.0,
            // A growth rate takes two samples: the second soon.
            due: at + FIRST_GAP.min(interval),
        }
    }

    /// After a sample of `rss` bytes at `at`: when the next is due.
    fn update(&mut self, rss: u64, at: Instant, interval: Duration) {
        let (rss0, at0) = self.base;
        let dt = at.saturating_duration_since(at0);
        if dt >= FIRST_GAP.min(interval) {
            self.rate = rss.saturating_sub(rss0) as f64 / dt.as_secs_f64();
            self.base = (rss, at);
        }
        self.due = at + gap(rss, self.rate, self.root, interval);
    }
}

/// How long until a tree at `rss` bytes, growing by `rate` bytes a
/// second, reaches the next limit above it, within [`MIN_GAP`] and
/// `interval`.
fn gap(rss: u64, rate: f64, root: Root, interval: Duration) -> Duration {
    let limit = [root.cap, root.hard]
        .into_iter()
        .flatten()
        .find(|l| *l >= rss);
    let (Some(limit), true) = (limit, rate > 0.0) else {
        return interval;
    };
    let secs = (limit - rss) as f64 / rate;
    Duration::from_secs_f64(secs.min(interval.as_secs_f64())).clamp(MIN_GAP.min(interval), interval)
}

fn sample(interval: Duration, roots: watch::Receiver<Vec<Root>>, tx: mpsc::Sender<Vec<TreeUsage>>) {
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
            std::thread::sleep(wake - now);
        }
        let now = Instant::now();
        let out = if now >= next_full {
            pass += 1;
            next_full = (next_full + interval).max(now);
            let current = roots.borrow().clone();
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
        // 50 MB to go at 100 MB/s: in half a second.
        assert_eq!(
            gap(50 * MB, 100.0 * MB as f64, root(), i),
            Duration::from_millis(500)
        );
        // Almost there: no sooner than MIN_GAP.
        assert_eq!(gap(100 * MB - 1, 100.0 * MB as f64, root(), i), MIN_GAP);
        // Flat or shrinking, or far away: the interval.
        assert_eq!(gap(50 * MB, 0.0, root(), i), i);
        assert_eq!(gap(50 * MB, 1.0, root(), i), i);
        // Over the cap: towards the hard limit.
        assert_eq!(
            gap(140 * MB, 100.0 * MB as f64, root(), i),
            Duration::from_millis(100)
        );
        // Over both, or no cap: the interval.
        assert_eq!(gap(200 * MB, 100.0 * MB as f64, root(), i), i);
        let free = Root {
            cap: None,
            hard: None,
            ..root()
        };
        assert_eq!(gap(50 * MB, 100.0 * MB as f64, free, i), i);
        // An interval under MIN_GAP wins.
        let short = Duration::from_millis(5);
        assert_eq!(gap(99 * MB, 100.0 * MB as f64, root(), short), short);
    }

    #[test]
    fn a_leak_in_steps_keeps_its_rate_between_close_samples() {
        let i = Duration::from_secs(1);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut n = Near::new(root(), 50 * MB, t0, i);
        assert_eq!(n.due, ms(100));
        n.update(60 * MB, ms(100), i);
        assert_eq!(n.due, ms(500), "40 MB to go at 100 MB/s");
        // 10 ms later, between two steps of the leak: still 100 MB/s.
        n.update(60 * MB, ms(110), i);
        assert_eq!(n.due, ms(510));
        // Flat over a whole window: back to the interval.
        n.update(60 * MB, ms(300), i);
        assert_eq!(n.due, ms(1300));
    }
}
