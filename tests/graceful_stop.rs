//! A graceful stop: the signal first, then SIGKILL to the whole group once
//! kill_timeout has passed, for an app that ignores SIGTERM and SIGINT.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn an_app_ignoring_sigterm_is_killed_after_kill_timeout() {
    for signo in [libc::SIGTERM, libc::SIGINT] {
        let dir = scratch();
        let out = path_in(&dir, "events");
        let mut run = Running::start(&[
            "--kill-timeout",
            "700ms",
            "--",
            "node",
            &core("stubborn.js"),
            &out,
        ]);
        wait_lines(&out, "ready", |l| !l.is_empty());
        let sent = Instant::now();
        run.signal(signo);
        let status = run.wait_exit();
        let took = sent.elapsed();
        assert_eq!(code_of(status), 128 + libc::SIGKILL);
        assert!(took >= Duration::from_millis(700), "SIGKILL after {took:?}");
        let text = std::fs::read_to_string(&out).unwrap();
        let name = if signo == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        assert!(text.contains(name), "the app never saw {name}:\n{text}");
        assert_eq!(
            run.count_lines(&["still running after kill_timeout; sending SIGKILL"]),
            1
        );
    }
}

#[test]
fn kill_timeout_also_bounds_a_reload_of_an_app_ignoring_the_kill_signal() {
    let dir = scratch();
    let out = path_in(&dir, "events");
    let mut run = Running::start(&[
        "--kill-timeout",
        "500ms",
        "--",
        "node",
        &core("stubborn.js"),
        &out,
    ]);
    let first = wait_lines(&out, "ready", |l| !l.is_empty());
    run.signal(libc::SIGHUP);
    run.wait_line(&["still running after kill_timeout; sending SIGKILL"]);
    let line = run.wait_line(&["to=\"online\"", "reason=\"reload\""]);
    let lines = wait_lines(&out, "a second ready", |l| {
        l.iter().filter(|x| x.starts_with("ready")).count() == 2
    });
    assert!(
        lines.iter().any(|l| l.starts_with("SIGINT")),
        "the kill signal was not sent: {lines:?}"
    );
    assert_ne!(first[0], lines.last().unwrap().clone(), "same process");
    assert_eq!(
        format!("ready {}", pid_field(&line)),
        *lines.last().unwrap()
    );
    run.signal(libc::SIGKILL);
}
