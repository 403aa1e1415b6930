//! SIGHUP means reload by default: a graceful restart (the kill signal,
//! then a new process) counted with reason `reload`.

mod common;
use common::*;

#[test]
fn sighup_restarts_the_app_gracefully_with_reason_reload() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    // SIGINT (the default kill signal) makes the app exit 0 at once.
    let mut run = Running::start(&[
        "--",
        "python3",
        &core("catch.py"),
        &out,
        "child",
        "--exit",
        "2:0",
        "--exit",
        "15:0",
    ]);
    let first = pid_field(&run.wait_line(&["to=\"online\""]));
    wait_for_line(&out, &format!("child ready {first}"));
    run.signal(libc::SIGHUP);
    let line = run.wait_line(&["to=\"online\""]);
    assert!(
        line.contains("reason=\"reload\"") && line.contains("restarts=1"),
        "{line}"
    );
    let second = pid_field(&line);
    let lines = wait_for_line(&out, &format!("child ready {second}"));
    assert_ne!(first, second);
    assert!(
        lines.contains(&"child 2".to_string()),
        "stopped without SIGINT: {lines:?}"
    );
    assert!(
        !lines.contains(&"child 1".to_string()),
        "SIGHUP was forwarded: {lines:?}"
    );
    assert_eq!(run.count_lines(&["still running after kill_timeout"]), 0);
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 0);
}
