//! procward as the real PID 1 of a PID namespace (`unshare --pid --fork
//! --mount-proc`): the kernel drops signals PID 1 has no handler for
//! (pid_namespaces(7)), so these check that signals sent from inside the
//! namespace are acted on, that the exit status comes out, and that orphans
//! are reaped.

mod common;
use common::*;

#[test]
fn signals_sent_to_pid_1_from_inside_the_namespace_are_handled() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    // The app sends SIGUSR1 (forwarded back to it) then SIGTERM (stop) to PID 1.
    let catch = core("catch.py");
    let (mut run, _) = start_as_pid1(&[
        "--", "python3", &catch, &out, "child", "--exit", "15:7", "--send", "1:10", "--send",
        "1:15",
    ]);
    assert_eq!(code_of(run.wait_exit()), 7);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("child ready 2\n"),
        "the app is not PID 2:\n{text}"
    );
    assert!(
        text.contains("child 10\n") && text.contains("child 15\n"),
        "{text}"
    );
}

#[test]
fn signals_sent_from_the_parent_namespace_are_forwarded() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let (mut run, pid) = start_as_pid1(&[
        "--",
        "python3",
        &core("catch.py"),
        &out,
        "child",
        "--exit",
        "15:0",
    ]);
    wait_lines(&out, "ready", |l| !l.is_empty());
    for signo in [libc::SIGUSR1, libc::SIGWINCH, libc::SIGHUP] {
        send(pid, signo);
        if signo == libc::SIGHUP {
            // Reload: the app is stopped with SIGINT and started again.
            wait_lines(&out, "a second ready", |l| {
                l.iter().filter(|x| x.contains(" ready ")).count() == 2
            });
        } else {
            wait_for_line(&out, &format!("child {signo}"));
        }
    }
    send(pid, libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 0);
}

#[test]
fn the_exit_status_of_the_app_comes_out_of_the_namespace() {
    for (script, want) in [
        ("exit 42", 42),
        ("exit 0", 0),
        ("kill -USR2 $$", 128 + libc::SIGUSR2),
    ] {
        let (mut run, _) = start_as_pid1(&["--no-autorestart", "--", "sh", "-c", script]);
        assert_eq!(code_of(run.wait_exit()), want, "{script}");
    }
}

#[test]
fn five_hundred_orphans_are_reaped_by_pid_1() {
    let dir = scratch();
    let out = path_in(&dir, "parents");
    let (mut run, pid) = start_as_pid1(&["--", "python3", &core("orphans.py"), "500", &out]);
    let lines = wait_lines(&out, "500 orphans and done", |l| {
        l.iter().filter(|x| *x != "done").count() == 500 && l.iter().any(|x| x == "done")
    });
    let strangers: Vec<&String> = lines.iter().filter(|l| *l != "done" && *l != "1").collect();
    assert!(
        strangers.is_empty(),
        "orphans re-parented elsewhere than PID 1: {strangers:?}"
    );
    wait_until("no zombie left under PID 1", || {
        zombies_of(pid).is_empty().then_some(())
    });
    send(pid, libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 0);
}
