//! Fault injection with real processes: the app killed outright in each
//! state, procward killed outright as PID 1, procward short of descriptors.
//!
//! Covered elsewhere and not repeated here: procward killed outright as a
//! child (`parent_death.rs`: the app dies by PDEATHSIG) and a `--listen`
//! address already in use (`cluster.rs`:
//! `a_listen_address_in_use_stops_procward_with_111`).

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starting: spawned, not ready yet (`--wait-ready`, an app that never
/// says so). SIGKILL is a crash: restarted at once, counted as one.
#[test]
fn sigkill_before_ready_is_a_crash_and_the_app_restarts() {
    let mut run = Running::start(&[
        "--wait-ready",
        "--listen-timeout",
        "60s",
        "--",
        "sleep",
        "1000",
    ]);
    let first = pid_field(&run.wait_line(&["to=\"starting\"", "restarts=0"]));
    send(first, libc::SIGKILL);
    let line = run.wait_line(&["to=\"starting\"", "restarts=1"]);
    let second = pid_field(&line);
    assert_ne!(first, second);
    assert!(alive(second));
    assert_eq!(run.count_lines(&["to=\"starting\""]), 2);
}

/// Online: the ordinary crash.
#[test]
fn sigkill_when_online_is_a_crash_and_the_app_restarts() {
    let mut run = Running::start(&["--", "sleep", "1000"]);
    let first = pid_field(&run.wait_line(&["to=\"online\"", "restarts=0"]));
    send(first, libc::SIGKILL);
    let second = pid_field(&run.wait_line(&["to=\"online\"", "restarts=1"]));
    assert_ne!(first, second);
}

/// Stopping, at procward's own stop: the app that ignores SIGTERM is
/// killed from outside before kill_timeout; procward ends at once with
/// its status instead of waiting out the timeout, and restarts nothing.
#[test]
fn sigkill_while_stopping_ends_the_stop_at_once() {
    let dir = scratch();
    let out = path_in(&dir, "events");
    let mut run = Running::start(&[
        "--kill-timeout",
        "60s",
        "--",
        "node",
        &core("stubborn.js"),
        &out,
    ]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    wait_lines(&out, "ready", |l| !l.is_empty());
    run.signal(libc::SIGTERM);
    run.wait_line(&["to=\"stopping\""]);
    wait_lines(&out, "the stop signal seen by the app", |l| {
        l.iter().any(|x| x.starts_with("SIG"))
    });
    let killed = Instant::now();
    send(app, libc::SIGKILL);
    let status = run.wait_exit();
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "procward waited out kill_timeout"
    );
    assert_eq!(code_of(status), 128 + libc::SIGKILL);
    assert_eq!(
        run.count_lines(&["to=\"online\""]),
        1,
        "restarted while stopping"
    );
}

/// Stopping for a restart (SIGHUP): killed from outside, the restart
/// goes on without waiting for kill_timeout, and is not counted as a crash.
#[test]
fn sigkill_while_stopping_for_a_reload_starts_the_new_one_at_once() {
    let dir = scratch();
    let out = path_in(&dir, "events");
    let mut run = Running::start(&[
        "--kill-timeout",
        "60s",
        "--",
        "node",
        &core("stubborn.js"),
        &out,
    ]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    wait_lines(&out, "ready", |l| !l.is_empty());
    run.signal(libc::SIGHUP);
    run.wait_line(&["to=\"stopping\""]);
    wait_lines(&out, "the stop signal seen by the app", |l| {
        l.iter().any(|x| x.starts_with("SIG"))
    });
    let killed = Instant::now();
    send(app, libc::SIGKILL);
    let line = run.wait_line(&["to=\"online\"", "reason=\"reload\""]);
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "the reload waited out kill_timeout"
    );
    assert_ne!(pid_field(&line), app);
    assert_eq!(
        run.count_lines(&["reason=\"crash\""]),
        0,
        "{}",
        run.seen.join("\n")
    );
}

/// PID 1 killed outright from the parent namespace: the kernel kills
/// everything in the namespace, the app and its own children included.
#[test]
fn sigkill_to_procward_as_pid_1_takes_the_whole_namespace_down() {
    let (mut run, pid1) = start_as_pid1(&["--", "sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    let _ = app;
    let tree = wait_until("the app's two children", || {
        let sh = children_of(pid1);
        let kids: Vec<i32> = sh.iter().flat_map(|p| children_of(*p)).collect();
        (sh.len() == 1 && kids.len() == 2).then(|| [sh, kids].concat())
    });
    send(pid1, libc::SIGKILL);
    run.wait_exit();
    wait_until("every process of the namespace to be gone", || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
}

/// Out of descriptors (RLIMIT_NOFILE lowered on the running procward):
/// connections and spawns fail, procward says so and goes on; with the
/// limit back, a restart and a scrape work again.
#[test]
fn out_of_descriptors_procward_keeps_serving_and_recovers() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = Running::start(&[
        "--metrics",
        &addr,
        "--restart-delay",
        "100ms",
        "--",
        "sleep",
        "1000",
    ]);
    let first = pid_field(&run.wait_line(&["to=\"online\"", "restarts=0"]));
    assert!(scrape(&addr).contains("procward_restarts_total"));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", run.pid()))
        .unwrap()
        .count();
    prlimit(run.pid(), fds as u64);
    // A few connections the server cannot accept, and a crash whose
    // restart cannot open the app's pipes.
    let stuck: Vec<_> = (0..4)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    run.wait_line(&["accepting an HTTP connection failed"]);
    send(first, libc::SIGKILL);
    run.wait_line(&["pid=", &format!("{first}")]);
    assert!(alive(run.pid()), "procward died short of descriptors");
    drop(stuck);
    prlimit(run.pid(), 1024);
    let line = run.wait_line(&["to=\"online\"", "restarts=1"]);
    assert!(alive(pid_field(&line)));
    assert!(scrape(&addr).contains("procward_restarts_total"));
}

/// Sets RLIMIT_NOFILE of `pid` (soft and hard) with prlimit(1).
fn prlimit(pid: i32, n: u64) {
    output_of_success(
        Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={n}:{}", n.max(1024))),
        "prlimit",
    );
}
