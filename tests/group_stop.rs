//! kill_timeout covers the whole process group: after the main process has
//! exited on the stop signal, the rest of its group gets the rest of
//! kill_timeout to finish, and only what remains is killed. A second SIGTERM
//! or SIGINT while stopping kills at once.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// The main process starts a worker in its own group and exits at once on
/// SIGTERM; the worker needs half a second to clean up, then writes `done`.
/// Both traps are set once `up` exists.
fn main_with_slow_worker(done: &str, up: &str, worker_trap: &str) -> String {
    format!(
        r#"trap "exit 0" TERM
sh -c 'trap "{worker_trap}" TERM; echo up > {up}; while :; do sleep 0.05; done' &
while :; do sleep 0.05; done
# {done}"#
    )
}

#[test]
fn a_worker_left_by_the_main_process_gets_the_rest_of_kill_timeout_to_clean_up() {
    let dir = scratch();
    let done = path_in(&dir, "done");
    let up = path_in(&dir, "up");
    let script = main_with_slow_worker(
        &done,
        &up,
        &format!("sleep 0.5; echo cleaned > {done}; exit 0"),
    );
    let mut run = Running::start(&[
        "--kill-signal",
        "SIGTERM",
        "--kill-timeout",
        "10s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    wait_file(std::path::Path::new(&up));
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    let took = sent.elapsed();
    assert_eq!(
        std::fs::read_to_string(&done).ok().as_deref(),
        Some("cleaned\n"),
        "the worker was killed before it had cleaned up; seen:\n{}",
        run.seen.join("\n")
    );
    assert_eq!(code_of(status), 0, "{:?}", run.seen);
    assert!(took >= Duration::from_millis(400), "exited after {took:?}");
    assert_eq!(run.count_lines(&["sending SIGKILL"]), 0, "{:?}", run.seen);
}

#[test]
fn what_is_left_of_the_group_at_kill_timeout_is_killed() {
    let dir = scratch();
    let up = path_in(&dir, "up");
    // The worker ignores SIGTERM.
    let script = main_with_slow_worker("-", &up, "");
    let mut run = Running::start(&[
        "--kill-signal",
        "SIGTERM",
        "--kill-timeout",
        "700ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    wait_file(std::path::Path::new(&up));
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    let took = sent.elapsed();
    assert_eq!(
        code_of(status),
        0,
        "the main process's status; {:?}",
        run.seen
    );
    assert!(took >= Duration::from_millis(700), "exited after {took:?}");
    assert_eq!(
        run.count_lines(&["process group is still running after kill_timeout; sending SIGKILL"]),
        1,
        "{:?}",
        run.seen
    );
}

#[test]
fn a_second_stop_signal_while_stopping_kills_at_once() {
    for signo in [libc::SIGTERM, libc::SIGINT] {
        let dir = scratch();
        let out = path_in(&dir, "events");
        let mut run = Running::start(&[
            "--kill-timeout",
            "120s",
            "--",
            "node",
            &core("stubborn.js"),
            &out,
        ]);
        wait_lines(&out, "ready", |l| !l.is_empty());
        run.signal(signo);
        // The app has had the first one: procward is stopping.
        wait_lines(&out, "the first stop signal", |l| l.len() >= 2);
        run.signal(signo);
        let status = run.wait_exit();
        assert_eq!(code_of(status), 128 + libc::SIGKILL, "{:?}", run.seen);
        assert_eq!(
            run.count_lines(&["second stop signal while stopping; sending SIGKILL"]),
            1
        );
    }
}
