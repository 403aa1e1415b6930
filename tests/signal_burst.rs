//! A burst of signals: real-time signals queue one per send, so each of 200
//! must be forwarded; standard signals coalesce, and procward must stay up.

mod common;
use common::*;

#[test]
fn two_hundred_real_time_signals_are_forwarded_one_for_one() {
    let dir = scratch();
    let out = path_in(&dir, "count");
    let mut run = Running::start(&[
        "--no-autorestart",
        "--",
        "python3",
        &core("rtcount.py"),
        &out,
    ]);
    wait_for_line(&out, "ready");
    for _ in 0..200 {
        run.signal(libc::SIGRTMIN());
    }
    // The end marker has a higher number, so it is taken after all 200.
    run.signal(libc::SIGRTMIN() + 1);
    let lines = wait_lines(&out, "the count", |l| {
        l.iter().any(|x| x.starts_with("count "))
    });
    assert_eq!(lines.last().map(String::as_str), Some("count 200"));
    assert_eq!(code_of(run.wait_exit()), 0);
}

#[test]
fn a_burst_of_standard_signals_leaves_procward_and_the_app_running() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let mut run = Running::start(&[
        "--",
        "python3",
        &core("catch.py"),
        &out,
        "child",
        "--exit",
        "15:3",
    ]);
    let ready = wait_lines(&out, "ready", |l| !l.is_empty());
    let sigs = [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGALRM,
        libc::SIGCONT,
    ];
    for k in 0..200 {
        run.signal(sigs[k % sigs.len()]);
    }
    let want: Vec<String> = sigs.iter().map(|s| format!("child {s}")).collect();
    wait_lines(&out, "every kind of signal at the child", |l| {
        want.iter().all(|w| l.contains(w))
    });
    assert!(alive(run.pid()), "procward died in the burst");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.matches(" ready ").count(),
        1,
        "the app was restarted:\n{text}"
    );
    assert_eq!(ready.len(), 1);
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 3);
}
