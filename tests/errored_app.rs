//! One errored app does not stop the others (PM2's behaviour); with
//! `exit_on_error` (process file) or `--exit-on-error`, it does.

mod common;
use common::*;

fn file(dir: &tempfile::TempDir, agent: &str) -> String {
    let path = path_in(dir, "procward.yaml");
    std::fs::write(
        &path,
        format!(
            "{agent}apps:
  - name: good
    script: sleep
    args: \"1000\"
  - name: bad
    script: \"false\"
    max_restarts: 2
"
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_errored_app_leaves_the_others_running() {
    let dir = scratch();
    let path = file(&dir, "");
    let mut run = Running::start(&["run", "-c", &path]);
    run.wait_line(&["app=bad", "to=\"errored\""]);
    // Still supervising: a reload restarts the good app.
    run.signal(libc::SIGHUP);
    run.wait_line(&["app=good", "to=\"online\"", "reason=\"reload\""]);
    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    assert_eq!(
        code_of(status),
        1,
        "the errored app's status; {:?}",
        run.seen
    );
}

#[test]
fn exit_on_error_stops_every_app_at_the_first_errored_one() {
    for (agent, flag) in [
        ("procward:\n  exit_on_error: true\n", None),
        ("", Some("--exit-on-error")),
    ] {
        let dir = scratch();
        let path = file(&dir, agent);
        let mut args = vec!["run", "-c", &path];
        args.extend(flag);
        let mut run = Running::start(&args);
        let status = run.wait_exit();
        assert_eq!(code_of(status), 1, "{:?}", run.seen);
        assert_eq!(
            run.count_lines(&["app=good", "to=\"stopped\""]),
            1,
            "{:?}",
            run.seen
        );
    }
}

#[test]
fn exit_on_error_must_be_a_boolean() {
    let dir = scratch();
    let path = file(&dir, "procward:\n  exit_on_error: maybe\n");
    let (code, _, err) = run_to_end(&["run", "-c", &path]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("exit_on_error") && err.contains("true or false"),
        "{err}"
    );
}
