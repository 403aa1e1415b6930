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

/// A reload of several instances is rolling: the next instance is stopped
/// only once the previous one is ready again, so at most one is ever down.
#[test]
fn a_reload_of_three_instances_takes_one_down_at_a_time() {
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
    let mut down = std::collections::BTreeSet::new();
    let mut most_down = 0;
    let mut order = Vec::new();
    while order.len() < 3 {
        let line = run.wait_line(&["app=web", " state "]);
        let instance = instance_of(&line);
        if line.contains("to=\"stopping\"") {
            down.insert(instance.clone());
            order.push(instance);
        } else if line.contains("to=\"online\"") {
            down.remove(&instance);
        }
        most_down = most_down.max(down.len());
    }
    run.wait_line(&["instance=2", "to=\"online\""]);
    assert_eq!(
        most_down,
        1,
        "more than one instance down at once:\n{}",
        run.seen.join("\n")
    );
    assert_eq!(order, ["0", "1", "2"]);
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
