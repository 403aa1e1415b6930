//! A memory cap is a cap: at the hard limit (max_memory_hard, 1.5x
//! max_memory_restart by default) a memory restart kills at once, even an app
//! that ignores the stop signal; and memory restarts go through the restart
//! policy like any other (crash loops end, --no-autorestart stops them).

mod common;
use common::*;
use std::time::{Duration, Instant};

/// A node app that grows by `step_mb` every 50 ms up to `max_mb`, then
/// holds; with `stubborn`, it ignores SIGINT and SIGTERM.
fn grower(dir: &tempfile::TempDir, step_mb: u32, max_mb: u32, stubborn: bool) -> String {
    let path = path_in(dir, "grow.js");
    std::fs::write(
        &path,
        format!(
            r#"if ({stubborn}) {{ process.on('SIGINT', () => {{}}); process.on('SIGTERM', () => {{}}); }}
const keep = [];
let total = 0;
const grow = () => {{
  if (total < {max_mb}) {{ keep.push(Buffer.alloc({step_mb} << 20, 1)); total += {step_mb}; }}
}};
grow();
setInterval(grow, 50);
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_app_ignoring_the_stop_signal_is_killed_at_the_hard_limit() {
    let dir = scratch();
    let app = grower(&dir, 20, 600, true);
    let mut run = Running::start(&[
        "--max-memory-restart",
        "150M",
        "--max-memory-hard",
        "250M",
        "--kill-timeout",
        "120s",
        "--sample-interval",
        "100ms",
        "--",
        "node",
        &app,
    ]);
    let first = pid_field(&run.wait_line(&["to=\"online\""]));
    let t = Instant::now();
    run.wait_line(&["memory above the hard limit", "sending SIGKILL"]);
    run.wait_line(&["to=\"online\"", "reason=\"memory\""]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "not killed until kill_timeout"
    );
    assert!(!alive(first), "the first process is gone");
}

#[test]
fn an_app_over_the_cap_from_its_start_ends_errored_after_max_restarts() {
    let dir = scratch();
    let app = grower(&dir, 150, 150, false);
    let mut run = Running::start(&[
        "--max-memory-restart",
        "100M",
        "--max-memory-hard",
        "2G",
        "--max-restarts",
        "2",
        "--sample-interval",
        "200ms",
        "--",
        "node",
        &app,
    ]);
    let status = run.wait_exit();
    assert_eq!(code_of(status), 128 + libc::SIGINT, "{:?}", run.seen);
    assert_eq!(run.count_lines(&["to=\"errored\""]), 1);
    assert_eq!(run.count_lines(&["reason=\"memory\"", "to=\"online\""]), 1);
}

#[test]
fn no_autorestart_stops_instead_of_restarting_for_memory() {
    let dir = scratch();
    let app = grower(&dir, 150, 150, false);
    let mut run = Running::start(&[
        "--no-autorestart",
        "--max-memory-restart",
        "100M",
        "--max-memory-hard",
        "2G",
        "--sample-interval",
        "200ms",
        "--",
        "node",
        &app,
    ]);
    let status = run.wait_exit();
    assert_eq!(code_of(status), 128 + libc::SIGINT, "{:?}", run.seen);
    assert_eq!(run.count_lines(&["reason=\"memory\""]), 0, "{:?}", run.seen);
}

#[test]
fn a_double_forked_daemon_counts_towards_the_cap_as_it_does_for_sd_notify() {
    // The daemon is re-parented to procward (its parent subshell exits at
    // once) but stays in the app's process group: it is in the app's tree.
    let script = r#"( python3 -c 'big = b"\x01" * (200 << 20); import time; time.sleep(1000)' >/dev/null 2>&1 & ); while :; do sleep 0.1; done"#;
    let mut run = Running::start(&[
        "--max-memory-restart",
        "100M",
        "--max-memory-hard",
        "4G",
        "--sample-interval",
        "100ms",
        "--",
        "sh",
        "-c",
        script,
    ]);
    run.wait_line(&["memory above max_memory_restart"]);
    run.wait_line(&["to=\"online\"", "reason=\"memory\""]);
    // Stopping takes the new daemon with the group.
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn a_fast_leak_is_restarted_long_before_the_next_full_sample() {
    let dir = scratch();
    // 200 MB/s from a start near 50 MB: the 100M cap is crossed within
    // half a second, while full passes come every 30 s.
    let app = grower(&dir, 10, 400, false);
    let mut run = Running::start(&[
        "--max-memory-restart",
        "100M",
        "--sample-interval",
        "30s",
        "--",
        "node",
        &app,
    ]);
    let first = pid_field(&run.wait_line(&["to=\"online\""]));
    let t = Instant::now();
    run.wait_line(&["memory above max_memory_restart"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the leak was caught only after {:?}",
        t.elapsed()
    );
    run.wait_line(&["to=\"online\"", "reason=\"memory\""]);
    assert!(!alive(first), "the first process is gone");
}
