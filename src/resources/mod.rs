//! Resource sampling: a source of samples, nothing more.
//!
//! Every `--sample-interval` the sampler reads /proc once
//! ([`procfs::ProcScan`]) and sends the supervisor one [`TreeUsage`] per
//! instance process tree. It owns no policy: memory caps and metrics are the
//! supervisor's business. Which pids are instance roots reaches it through a
//! watch channel the supervisor publishes on, so no state is shared.
//!
//! cgroup v2 memory events (`memory.events` `high`/`oom`) are not used: they
//! need a delegated, writable cgroup v2 hierarchy per instance, and /proc
//! sampling works everywhere procward runs (cgroup v1 hosts included).

pub mod procfs;

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::warn;

pub use procfs::TreeUsage;

/// Open fds and PSS are read every this many passes (every 10 s at the
/// default interval), and one pass after a new process appears; memory,
/// CPU and threads on every pass.
pub const SLOW_EVERY: u64 = 10;

/// Samples the trees rooted at the pids in `roots` every `interval` and
/// sends them, one `Vec` per pass, through the sender the supervisor gave,
/// until it is closed.
pub async fn run(
    interval: Duration,
    roots: watch::Receiver<Vec<i32>>,
    tx: mpsc::Sender<Vec<TreeUsage>>,
) {
    let mut scan = match procfs::ProcScan::new() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot open /proc: no memory, CPU or fd figures, and max_memory_restart is off");
            return;
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pids: Vec<i32> = Vec::new();
    let mut before: Vec<i32> = Vec::new();
    // A new process is read in full one interval after it is first seen,
    // once it has started, rather than as the bare image it is at spawn.
    let mut fresh = false;
    for pass in 1u64.. {
        ticks.tick().await;
        std::mem::swap(&mut pids, &mut before);
        pids.clear();
        pids.extend_from_slice(&roots.borrow());
        let changed = pids != before;
        let slow = (fresh && !changed) || pass % SLOW_EVERY == 0;
        fresh = changed || (fresh && !slow);
        let mut out = Vec::with_capacity(pids.len());
        scan.scan(&pids, slow, &mut out);
        if tx.send(out).await.is_err() {
            return;
        }
    }
}
