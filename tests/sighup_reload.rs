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

/// A reload of several instances is rolling: each replacement starts only
/// once the previous instance's replacement is ready. These are cluster
/// workers (`-i` on a node command), whose sockets procward holds, so no
/// instance is stopped before its replacement is ready: none is ever down.
#[test]
fn a_reload_of_three_instances_replaces_one_at_a_time_and_none_goes_down() {
    let app = "setTimeout(() => process.send('ready'), 50); \
               process.on('SIGINT', () => process.exit(0)); setInterval(() => {}, 1000);";
    let mut run = Running::start(&[
        "--wait-ready",
        "-i",
        "3",
        "--name",
        "web",
        "--",
        "node",
        "-e",
        app,
    ]);
    let mut online = std::collections::BTreeSet::new();
    while online.len() < 3 {
        let line = run.wait_line(&["app=web", "to=\"online\""]);
        online.insert(instance_of(&line));
    }
    run.signal(libc::SIGHUP);
    let mut order = Vec::new();
    while order.len() < 6 {
        let line = run.wait_line(&["app=web"]);
        if line.contains("starting the replacement") {
            order.push(format!("start {}", instance_of(&line)));
        } else if line.contains(" reloaded ") {
            order.push(format!("ready {}", instance_of(&line)));
        }
    }
    assert_eq!(
        order,
        ["start 0", "ready 0", "start 1", "ready 1", "start 2", "ready 2"],
        "{}",
        run.seen.join("\n")
    );
    assert_eq!(
        run.count_lines(&["app=web", "to=\"stopping\""]),
        0,
        "an instance stopped before its replacement was ready:\n{}",
        run.seen.join("\n")
    );
    assert_eq!(
        run.count_lines(&["reason=\"reload\"", "to=\"starting\""]),
        3
    );
}

/// The `instance=N` field of a state line.
fn instance_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("instance="))
        .unwrap()
        .to_string()
}
