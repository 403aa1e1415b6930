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

/// The STATUS= line procward sends its service manager names the errored
/// app, as /readyz does. The service manager is a datagram socket the test
/// owns, given as `NOTIFY_SOCKET`.
#[test]
fn the_status_line_names_the_errored_app() {
    use std::os::unix::net::UnixDatagram;
    let dir = scratch();
    let path = file(&dir, "");
    let manager = dir.path().join("manager.sock");
    let sock = UnixDatagram::bind(&manager).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.env("NOTIFY_SOCKET", &manager)
        .env("RUNTIME_DIRECTORY", dir.path())
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .args(["run", "-c", &path]);
    let mut run = Running::start_cmd(&mut cmd);
    let mut got = Vec::new();
    let status = loop {
        let mut buf = [0u8; 4096];
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no STATUS= naming the errored app ({e}); got {got:?}"));
        let d = String::from_utf8_lossy(&buf[..n]).into_owned();
        got.push(d.clone());
        if let Some(s) = d
            .lines()
            .find_map(|l| l.strip_prefix("STATUS="))
            .filter(|s| s.contains("errored"))
        {
            break s.to_string();
        }
    };
    let app = |name: &str| {
        status
            .split("; ")
            .find(|s| s.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {status:?}"))
            .to_string()
    };
    assert!(
        app("bad").starts_with("bad 0/1 ready, ") && app("bad").ends_with(", errored"),
        "{status}"
    );
    assert!(
        app("good").starts_with("good 1/1 ready") && !app("good").contains("errored"),
        "{status}"
    );
    run.signal(libc::SIGTERM);
    run.wait_exit();
}
