//! Every catchable signal procward receives reaches the child's whole
//! process group (a shell's background grandchild included), except
//! SIGCHLD and those procward acts on itself.

mod common;
use common::*;

/// Forwarded as is (SIGTERM, SIGINT and SIGQUIT are covered by
/// shutdown_signals.rs, SIGHUP below).
fn forwarded() -> Vec<i32> {
    let rt = libc::SIGRTMIN();
    vec![
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
        libc::SIGALRM,
        libc::SIGPIPE,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGSTKFLT,
        rt,
        rt + 1,
        rt + 7,
        libc::SIGRTMAX(),
    ]
}

/// procward running a shell that leaves a background grandchild, then
/// execs the child; both record every signal in `out`.
fn start_family(out: &str, extra: &[&str]) -> Running {
    let catch = core("catch.py");
    let script = format!(
        "python3 {catch} {out} grandchild --exit 15:0 & exec python3 {catch} {out} child --exit 15:0"
    );
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--", "sh", "-c", &script]);
    let run = Running::start(&args);
    wait_lines(out, "child and grandchild ready", |l| {
        l.iter().any(|x| x.starts_with("child ready"))
            && l.iter().any(|x| x.starts_with("grandchild ready"))
    });
    run
}

fn both_got(run: &Running, out: &str, signo: i32) {
    let (c, g) = (format!("child {signo}"), format!("grandchild {signo}"));
    wait_lines(
        out,
        &format!("signal {signo} at child and grandchild"),
        |l| l.contains(&c) && l.contains(&g),
    );
    assert!(alive(run.pid()), "procward died after signal {signo}");
}

#[test]
fn every_catchable_signal_reaches_the_child_and_its_grandchild() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let run = start_family(&out, &[]);
    for signo in forwarded() {
        run.signal(signo);
        both_got(&run, &out, signo);
    }
    stop(run);
}

#[test]
fn sighup_is_forwarded_with_sighup_forward() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let mut run = start_family(&out, &["--sighup", "forward"]);
    run.signal(libc::SIGHUP);
    both_got(&run, &out, libc::SIGHUP);
    assert_eq!(
        run.count_lines(&["reason=\"reload\""]),
        0,
        "SIGHUP must not reload here"
    );
    stop(run);
}

#[test]
fn sigchld_sent_to_procward_is_not_forwarded() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let run = start_family(&out, &[]);
    run.signal(libc::SIGCHLD);
    // Pending signals are taken lowest number first, so SIGWINCH (28) comes
    // after SIGCHLD (17): once it has arrived, SIGCHLD would have too.
    run.signal(libc::SIGWINCH);
    both_got(&run, &out, libc::SIGWINCH);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains(&format!("child {}", libc::SIGCHLD)),
        "{text}"
    );
    stop(run);
}

/// Stops procward with SIGTERM, which the family exits 0 on.
fn stop(mut run: Running) {
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 0);
}
