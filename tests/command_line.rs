//! The command line a PM2 user types: unknown options and PM2 verbs are
//! usage errors (exit 2) that run nothing, every value is checked as the
//! process file checks it before anything starts, and a plain
//! `procward -- CMD` passes the environment through untouched.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs procward with `args` and an environment of `env` only; returns
/// (exit code, stdout, stderr).
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run procward");
    (
        code_of(out.status),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A PATH whose first directory holds the given programs, each of which
/// records that it ran by appending its name to `ran`.
fn path_with_programs(dir: &tempfile::TempDir, names: &[&str]) -> (String, String) {
    let ran = path_in(dir, "ran");
    for name in names {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho {name} >> {ran}\n")).unwrap();
        let exec = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&p, exec).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, ran)
}

#[test]
fn unknown_options_are_usage_errors_not_the_command() {
    let dir = scratch();
    let (path, ran) = path_with_programs(&dir, &["node"]);
    for (args, hint) in [
        (
            &["--max-memory", "300M", "--", "node", "server.js"][..],
            "did you mean `--max-memory-restart`?",
        ),
        (
            &["--wait_ready", "--", "node", "server.js"],
            "did you mean `--wait-ready`?",
        ),
        (
            &["--namespace", "web", "--", "node", "server.js"],
            "procward has no `--namespace`",
        ),
        (
            &["-c", "ecosystem.config.js"],
            "a process file runs with `procward run -c FILE`",
        ),
        (
            &["--kill-timout", "3s", "node", "server.js"],
            "did you mean `--kill-timeout`?",
        ),
    ] {
        let (code, _, err) = run_with_env(args, &[("PATH", &path)]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("unknown option"), "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?}: {err}");
    }
    assert!(!Path::new(&ran).exists(), "a command ran");
}

#[test]
fn options_after_the_command_belong_to_the_command() {
    let (code, out, err) = run_with_env(
        &[
            "--no-autorestart",
            "sh",
            "-c",
            "echo $0 $1",
            "--watch",
            "-i",
        ],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "--watch -i");
}

#[test]
fn pm2_verbs_show_the_procward_way_and_run_nothing() {
    let dir = scratch();
    // `start`, `stop`, `status`, `list`, `reload`, `restart` and `logs` are procward
    // commands of their own (tests/control.rs); these are not.
    let verbs = ["delete", "monit", "jlist", "flush", "sendSignal", "start"];
    let (path, ran) = path_with_programs(&dir, &verbs);
    for verb in &verbs[..5] {
        let verb = *verb;
        let (code, _, err) = run_with_env(&[verb, "web"], &[("PATH", &path)]);
        assert_eq!(code, 2, "{verb}: {err}");
        assert!(err.contains("is a PM2 command"), "{verb}: {err}");
        assert!(
            err.contains(&format!("procward -- {verb}")),
            "{verb}: {err}"
        );
    }
    // `pm2 start app.js` out of habit: `start` starts a stopped app of a
    // running procward, and a file says how procward runs it instead.
    let (code, _, err) = run_with_env(&["start", "app.js"], &[("PATH", &path)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`procward -- node app.js`"), "{err}");
    let (_, _, err) = run_with_env(&["start", "ecosystem.config.js"], &[("PATH", &path)]);
    assert!(
        err.contains("`procward run -c ecosystem.config.js`"),
        "{err}"
    );
    assert!(
        !Path::new(&ran).exists(),
        "a program named after a verb ran"
    );
    // After `--` the word is a command like any other.
    let (code, _, err) = run_with_env(&["--no-autorestart", "--", "start"], &[("PATH", &path)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "start\n");
}

#[test]
fn every_value_is_checked_before_anything_starts() {
    let dir = scratch();
    let (path, ran) = path_with_programs(&dir, &["app"]);
    for (args, expected) in [
        (
            &["--sample-interval", "0"][..],
            "--sample-interval: expected `sample_interval` to be a duration above zero",
        ),
        (
            &["--log-level", "verbose"],
            "--log-level: expected `log_level` to be error, warn, info, debug or trace, found `verbose`",
        ),
        (
            &["--kill-timeout", "soon"],
            "--kill-timeout: expected `kill_timeout` to be a duration",
        ),
        (&["-i", "lots"], "-i"),
        (
            &["--max-memory-restart", "huge"],
            "expected `max_memory_restart` to be bytes or a size",
        ),
        (&["--stop-exit-codes", "0,300"], "0 to 255"),
        (&["--metrics", "nowhere"], "`metrics` to be an address"),
        (&["--sighup", "restart"], "`sighup` to be reload or forward"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--", "app"]);
        let (code, _, err) = run_with_env(&all, &[("PATH", &path)]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(!Path::new(&ran).exists(), "the app was started");
}

/// The number of instances `procward check` gives `instances: VALUE` in a
/// file: the command line must agree.
fn instances_in_a_file(dir: &tempfile::TempDir, value: &str) -> usize {
    let file = path_in(dir, &format!("count{value}.yaml"));
    std::fs::write(
        &file,
        format!("apps:\n  - script: /bin/sleep\n    args: '1000'\n    instances: {value}\n"),
    )
    .unwrap();
    let out = output_of_success(
        Command::new(bin()).args(["check", "-c", &file]),
        "procward check",
    );
    out.lines()
        .find_map(|l| l.trim().strip_prefix("instances: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instances in:\n{out}"))
}

#[test]
fn instances_on_the_command_line_mean_what_they_mean_in_a_file() {
    let dir = scratch();
    for value in ["max", "0", "-1", "2"] {
        let want = instances_in_a_file(&dir, value);
        let out = path_in(&dir, &format!("started{value}"));
        let script = format!("echo $NODE_APP_INSTANCE >> {out}; exec sleep 1000");
        let mut run = Running::start(&["-i", value, "--", "sh", "-c", &script]);
        let lines = wait_lines(&out, "every instance to start", |l| l.len() >= want);
        let mut got: Vec<String> = lines.clone();
        got.sort();
        let expected: Vec<String> = (0..want).map(|i| i.to_string()).collect();
        assert_eq!(got, expected, "-i {value}");
        run.signal(libc::SIGTERM);
        run.wait_exit();
    }
}

#[test]
fn the_plain_wrap_passes_the_environment_untouched() {
    let (code, out, err) = run_with_env(&["--no-autorestart", "--", "/usr/bin/env"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "",
        "an app started with an empty environment saw variables"
    );
    let (_, out, _) = run_with_env(&["--no-autorestart", "--", "/usr/bin/env"], &[("A", "1")]);
    assert_eq!(out, "A=1\n");
}

#[test]
fn instances_and_process_files_get_pm2s_instance_variable() {
    let (_, out, err) = run_with_env(&["-i", "2", "--no-autorestart", "--", "/usr/bin/env"], &[]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["NODE_APP_INSTANCE=0", "NODE_APP_INSTANCE=1"],
        "{err}"
    );
    let dir = scratch();
    for (extra, var) in [
        ("", "NODE_APP_INSTANCE"),
        ("    instance_var: INSTANCE_ID\n", "INSTANCE_ID"),
    ] {
        let file = path_in(&dir, "app.yaml");
        std::fs::write(
            &file,
            format!("apps:\n  - script: /usr/bin/env\n    autorestart: false\n{extra}"),
        )
        .unwrap();
        let (code, out, err) = run_with_env(&["run", "-c", &file], &[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("{var}=0\n"), "{err}");
    }
}

#[test]
fn metrics_addresses_are_taken_as_exporters_take_them() {
    for host in ["", "localhost", "127.0.0.1"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("{host}:{port}");
        let mut run = Running::start(&["--metrics", &addr, "--", "sleep", "1000"]);
        run.wait_line(&["serving /metrics"]);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("--metrics {addr}: {e}"));
        std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.0 200"),
            "--metrics {addr}: {reply}"
        );
        run.signal(libc::SIGTERM);
        run.wait_exit();
    }
}

#[test]
fn stop_exit_codes_take_a_list_as_pm2s_option_does() {
    let dir = scratch();
    let starts = path_in(&dir, "starts");
    let script = format!("echo start >> {starts}; exit 3");
    for codes in [&["0", "3"][..], &["0,3"]] {
        std::fs::write(&starts, "").unwrap();
        let mut args = vec!["--stop-exit-codes"];
        args.extend(codes);
        args.extend(["--", "sh", "-c", &script]);
        let (code, _, err) = run_with_env(&args, &[("PATH", "/usr/bin:/bin")]);
        assert_eq!(code, 3, "{codes:?}: {err}");
        assert_eq!(
            std::fs::read_to_string(&starts).unwrap(),
            "start\n",
            "{codes:?}"
        );
    }
    // Without `--`, the list would take the command: refused, never run.
    let app = path_in(&dir, "app.sh");
    std::fs::write(&app, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(&starts, "").unwrap();
    let (code, _, err) = run_with_env(&["--stop-exit-codes", "0", &app], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("found `0,{app}`")), "{err}");
    assert_eq!(std::fs::read_to_string(&starts).unwrap(), "", "the app ran");
}
