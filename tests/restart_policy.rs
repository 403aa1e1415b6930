//! PM2's restart policy on real crash loops: counting, delays, backoff
//! growth, the errored exit, stop_exit_codes and --no-autorestart.

mod common;
use common::*;

/// The start times (ms, CLOCK_MONOTONIC) crash.js appended to `out`.
fn starts_ms(out: &str) -> Vec<f64> {
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("start ").unwrap().parse::<f64>().unwrap() / 1e6)
        .collect()
}

fn gaps(starts: &[f64]) -> Vec<f64> {
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn a_crash_loop_with_pm2_defaults_stops_after_16_starts_and_fails() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    let script = format!("echo start >> {out}; exit 5");
    let mut run = Running::start(&["--", "sh", "-c", &script]);
    assert_eq!(
        code_of(run.wait_exit()),
        5,
        "errored exit keeps the app's code"
    );
    let starts = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(starts, 16, "max_restarts 16 (PM2's default)");
    assert_eq!(run.count_lines(&["to=\"online\"", "reason=\"crash\""]), 15);
    assert_eq!(run.count_lines(&["to=\"online\"", "restarts=15"]), 1);
    assert_eq!(run.count_lines(&["too many unstable restarts"]), 1);
    // A longer min_uptime makes more runs unstable, not fewer: the hint
    // names the two settings that really allow more restarts.
    assert_eq!(
        run.count_lines(&["raise max_restarts or lower min_uptime to allow more"]),
        1
    );
    assert_eq!(run.count_lines(&["to=\"errored\""]), 1);
}

#[test]
fn an_errored_app_whose_last_exit_was_zero_still_fails() {
    let mut run = Running::start(&["--max-restarts", "3", "--", "sh", "-c", "exit 0"]);
    assert_eq!(code_of(run.wait_exit()), 1);
    assert_eq!(run.count_lines(&["to=\"online\"", "reason=\"exit\""]), 2);
}

#[test]
fn exponential_backoff_grows_by_half_each_restart() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    let mut run = Running::start(&[
        "--exp-backoff-restart-delay",
        "100ms",
        "--max-restarts",
        "6",
        "--",
        "node",
        &core("crash.js"),
        &out,
        "3",
    ]);
    assert_eq!(code_of(run.wait_exit()), 3);
    let g = gaps(&starts_ms(&out));
    // PM2 lib/God.js: 100, then x1.5 floored each time.
    let want = [100.0, 150.0, 225.0, 337.0, 505.0];
    assert_eq!(g.len(), want.len(), "starts: {g:?}");
    for (got, min) in g.iter().zip(want) {
        // Lower bound exact; upper bound generous (node start-up, 2 busy cores).
        assert!(
            *got >= min && *got < min + 2000.0,
            "gaps {g:?}, expected about {want:?}"
        );
    }
    assert_eq!(run.count_lines(&["restart delayed", "delay_ms=505"]), 1);
}

#[test]
fn restart_delay_waits_between_each_restart() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    let mut run = Running::start(&[
        "--restart-delay",
        "300ms",
        "--max-restarts",
        "3",
        "--",
        "node",
        &core("crash.js"),
        &out,
        "1",
    ]);
    assert_eq!(code_of(run.wait_exit()), 1);
    let g = gaps(&starts_ms(&out));
    assert_eq!(g.len(), 2);
    assert!(g.iter().all(|d| *d >= 300.0 && *d < 2300.0), "gaps {g:?}");
    assert_eq!(run.count_lines(&["to=\"waiting\""]), 2);
}

#[test]
fn a_stop_exit_code_ends_supervision_without_a_restart() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    // Crashes with 4 twice, then exits with 3, a stop exit code.
    let script = format!(
        "n=$(cat {out} 2>/dev/null | wc -l); echo start >> {out}; [ $n -ge 2 ] && exit 3; exit 4"
    );
    let mut run = Running::start(&["--stop-exit-codes", "3", "--", "sh", "-c", &script]);
    assert_eq!(code_of(run.wait_exit()), 3);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
    assert_eq!(run.count_lines(&["to=\"online\"", "reason=\"crash\""]), 2);
    assert_eq!(run.count_lines(&["to=\"stopped\""]), 1);
}

#[test]
fn no_autorestart_exits_with_the_first_status() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    let script = format!("echo start >> {out}; exit 4");
    let mut run = Running::start(&["--no-autorestart", "--", "sh", "-c", &script]);
    assert_eq!(code_of(run.wait_exit()), 4);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}

#[test]
fn a_stable_run_resets_the_unstable_count() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    // Run 3 lasts past min_uptime; runs 1, 2, 4, 5 crash at once. With
    // max_restarts 3 only a reset lets it reach a fifth start.
    let script = format!(
        "n=$(cat {out} 2>/dev/null | wc -l); echo start >> {out}; [ $n -eq 2 ] && sleep 0.5; exit 6"
    );
    let mut run = Running::start(&[
        "--min-uptime",
        "300ms",
        "--max-restarts",
        "3",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code_of(run.wait_exit()), 6);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 6);
}
