//! PM2's other restart triggers, `cron_restart` and `watch`, with a real
//! Node app: each restart is counted by the app itself (a line per start in
//! a file outside the watched directory) and by procward's
//! `procward_restarts_total{reason=...}`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{fixture, wait_lines, Running, PATIENCE};

/// Long enough for a restart that was wrongly asked for to show: the app
/// restarts in well under a second here. Only used to check that
/// something does not happen.
const QUIET: Duration = Duration::from_millis(1500);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `procward_restarts_total` of instance 0 of `app` for `reason`.
fn restarts(addr: &str, app: &str, reason: &str) -> f64 {
    let series =
        format!("procward_restarts_total{{app=\"{app}\",instance=\"0\",reason=\"{reason}\"}} ");
    metrics(addr)
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// A directory holding the app, and a file outside it where each start
/// of the app appends its pid.
struct Project {
    dir: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = common::scratch();
        std::fs::copy(fixture("watch/app.js"), dir.path().join("app.js")).unwrap();
        Project {
            dir,
            out: common::scratch(),
        }
    }

    fn starts_file(&self) -> String {
        common::path_in(&self.out, "starts")
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// procward in the app's directory with `args`, metrics on; returns it
    /// and the metrics address once the app has started.
    fn start(&self, args: &[&str]) -> (Running, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(common::bin());
        cmd.current_dir(self.dir.path())
            .env("STARTS", self.starts_file());
        // The agent's options go before the command, or after `run -c FILE`.
        if args.first() == Some(&"run") {
            cmd.args(args).args(["--metrics", &addr]);
        } else {
            cmd.args(["--metrics", &addr]).args(args);
        }
        let mut pw = Running::start_cmd(&mut cmd);
        pw.wait_line(&["serving /metrics"]);
        self.wait_starts(1);
        (pw, addr)
    }

    /// Waits until the app has started `n` times; returns the pids.
    fn wait_starts(&self, n: usize) -> Vec<String> {
        wait_lines(&self.starts_file(), &format!("{n} starts"), |l| {
            l.len() >= n
        })
    }

    fn starts(&self) -> usize {
        std::fs::read_to_string(self.starts_file())
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn touch(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_six_field_cron_expression_restarts_the_app_with_reason_cron() {
    let p = Project::new();
    let (mut pw, addr) = p.start(&["--cron-restart", "*/2 * * * * *", "--", "node", "app.js"]);
    let pids = p.wait_starts(3);
    assert_ne!(pids[0], pids[1], "a new process each time");
    pw.wait_line(&["reason=\"cron\""]);
    assert!(restarts(&addr, "app", "cron") >= 2.0);
    assert_eq!(restarts(&addr, "app", "crash"), 0.0);
}

#[test]
fn a_file_change_restarts_the_app_exactly_once() {
    let p = Project::new();
    let (mut pw, addr) = p.start(&["--watch", "--", "node", "app.js"]);
    pw.wait_line(&["watching for changes"]);
    touch(&p.path("lib.js"), "module.exports = 1\n");
    p.wait_starts(2);
    pw.wait_line(&["reason=\"watch\""]);
    std::thread::sleep(QUIET);
    assert_eq!(p.starts(), 2, "one change, one restart");
    assert_eq!(restarts(&addr, "app", "watch"), 1.0);
}

#[test]
fn changes_while_the_app_restarts_for_an_earlier_one_are_skipped() {
    let p = Project::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut pw = Running::start_cmd(
        Command::new(common::bin())
            .current_dir(p.dir.path())
            .env("STARTS", p.starts_file())
            .env("READY_AFTER", "1000")
            .args([
                "--metrics",
                &addr,
                "--wait-ready",
                "--watch",
                "--",
                "node",
                "app.js",
            ]),
    );
    pw.wait_line(&["to=\"online\""]);
    touch(&p.path("a.js"), "");
    p.wait_starts(2);
    // The new process is starting (ready in a second): this change is
    // part of the restart under way.
    touch(&p.path("b.js"), "");
    pw.wait_line(&["to=\"online\"", "restarts=1"]);
    std::thread::sleep(QUIET);
    assert_eq!(
        p.starts(),
        2,
        "the change during the restart restarted it again"
    );
    assert_eq!(restarts(&addr, "app", "watch"), 1.0);
}

#[test]
fn a_change_under_node_modules_restarts_nothing_and_it_is_never_walked() {
    let p = Project::new();
    // 50,000 files in 500 packages.
    for pkg in 0..500 {
        let d = p.path(&format!("node_modules/pkg{pkg}/lib"));
        std::fs::create_dir_all(&d).unwrap();
        for f in 0..100 {
            touch(&d.join(format!("f{f}.js")), "");
        }
    }
    let (mut pw, addr) = p.start(&["--watch", "--", "node", "app.js"]);
    // The app's directory alone: nothing under node_modules is watched.
    pw.wait_line(&["watching for changes", "directories=1 "]);
    touch(&p.path("node_modules/pkg7/lib/f3.js"), "changed");
    touch(&p.path("node_modules/new.js"), "new");
    std::fs::create_dir_all(p.path("node_modules/pkg9000/lib")).unwrap();
    std::thread::sleep(QUIET);
    assert_eq!(p.starts(), 1, "no restart for node_modules");
    assert_eq!(restarts(&addr, "app", "watch"), 0.0);
    // The watcher is alive: a change beside it restarts the app.
    touch(&p.path("index.js"), "");
    p.wait_starts(2);
}

#[test]
fn a_burst_of_100_changes_within_watch_delay_is_one_restart() {
    let p = Project::new();
    let file = p.out.path().join("ecosystem.yaml");
    touch(
        &file,
        &format!(
            "apps:\n  - name: web\n    script: app.js\n    cwd: {}\n    watch: true\n    watch_delay: 500\n",
            p.dir.path().display()
        ),
    );
    let (mut pw, addr) = p.start(&["run", "-c", file.to_str().unwrap()]);
    pw.wait_line(&["watching for changes"]);
    for i in 0..100 {
        touch(&p.path(&format!("src{i}.js")), "x");
    }
    p.wait_starts(2);
    std::thread::sleep(QUIET);
    assert_eq!(p.starts(), 2, "100 changes, one restart");
    assert_eq!(restarts(&addr, "web", "watch"), 1.0);
}

#[test]
fn watches_beyond_the_inotify_limit_give_one_warning_and_the_rest_still_works() {
    let p = Project::new();
    for i in 0..20 {
        std::fs::create_dir_all(p.path(&format!("src/d{i}"))).unwrap();
    }
    // A user namespace of its own, with a limit of 5 watches in it
    // (Linux 5.11 and later), so the host's limit is left alone.
    let mut cmd = Command::new("unshare");
    cmd.current_dir(p.dir.path())
        .env("STARTS", p.starts_file())
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 5 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"")
        .arg(common::bin())
        .args(["--watch", "--", "node", "app.js"]);
    let mut pw = Running::start_cmd(&mut cmd);
    pw.wait_line(&["inotify watch limit is reached", "max_inotify_watches = 5"]);
    pw.wait_line(&["watching for changes"]);
    p.wait_starts(1);
    // More directories: walked again, and no second warning.
    std::fs::create_dir_all(p.path("src/more/deeper")).unwrap();
    // The app's directory is watched first: a change there restarts.
    touch(&p.path("index.js"), "");
    p.wait_starts(2);
    std::thread::sleep(QUIET);
    assert_eq!(pw.count_lines(&["inotify watch limit is reached"]), 1);
}

#[test]
fn check_prints_the_next_three_cron_times_in_the_local_zone_and_refuses_a_bad_expression() {
    let p = Project::new();
    let good = p.out.path().join("good.yaml");
    touch(
        &good,
        &format!(
            "apps:\n  - name: web\n    script: app.js\n    cwd: {}\n    cron_restart: '0 3 * * *'\n",
            p.dir.path().display()
        ),
    );
    let out = common::output_of_success(
        Command::new(common::bin()).env("TZ", "Asia/Kolkata").args([
            "check",
            "-c",
            good.to_str().unwrap(),
        ]),
        "procward check",
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("# web: cron_restart `0 3 * * *` restarts next at "))
        .unwrap_or_else(|| panic!("no cron line in:\n{out}"));
    assert_eq!(line.matches(" 03:00:00 +05:30").count(), 3, "{line}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("cron_restart:") && l.contains("0 3 * * *")),
        "{out}"
    );

    let bad = p.out.path().join("bad.yaml");
    touch(
        &bad,
        "apps:\n  - name: web\n    script: app.js\n    cron_restart: '* * * asdasd'\n",
    );
    let (code, _, err) = common::run_to_end(&["check", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad.yaml:4:19: expected `cron_restart` to be a cron expression"),
        "{err}"
    );
}

/// The position of the first line at or after `from` with every part.
fn position(lines: &[String], from: usize, parts: &[&str]) -> Option<usize> {
    lines[from..]
        .iter()
        .position(|l| parts.iter().all(|p| l.contains(p)))
        .map(|k| k + from)
}

#[test]
fn a_cron_restart_goes_one_instance_at_a_time_when_the_sockets_are_held() {
    let out = common::scratch();
    let starts = common::path_in(&out, "starts");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut pw = Running::start_cmd(Command::new(common::bin()).env("STARTS", &starts).args([
        "--listen",
        &listen,
        "-i",
        "2",
        "--cron-restart",
        "*/3 * * * * *",
        "--",
        "sh",
        "-c",
        "echo $$ >> \"$STARTS\"; exec sleep 1000",
    ]));
    // Both instances restarted once by the first time.
    wait_lines(&starts, "4 starts", |l| l.len() >= 4);
    pw.wait_line(&["instance=1", "to=\"online\"", "reason=\"cron\""]);
    pw.count_lines(&[]);
    let seen = pw.seen.clone();
    let first = position(&seen, 0, &["cron time: restarting"]).expect("a cron line");
    let stop0 = position(&seen, first, &["instance=0", "to=\"stopping\""]).expect("0 stops");
    let up0 = position(
        &seen,
        stop0,
        &["instance=0", "to=\"online\"", "reason=\"cron\""],
    )
    .expect("0 back");
    let stop1 = position(&seen, first, &["instance=1", "to=\"stopping\""]).expect("1 stops");
    assert!(
        up0 < stop1,
        "instance 1 stopped before instance 0 was back:\n{}",
        seen[first..].join("\n")
    );
}

#[test]
fn a_script_that_exits_runs_again_at_each_cron_time_with_autorestart_off() {
    let out = common::scratch();
    let runs = common::path_in(&out, "runs");
    let mut pw = Running::start_cmd(Command::new(common::bin()).env("RUNS", &runs).args([
        "--no-autorestart",
        "--cron-restart",
        "*/2 * * * * *",
        "--",
        "sh",
        "-c",
        "echo run >> \"$RUNS\"",
    ]));
    // It ran, stopped, and was started again: procward did not exit.
    wait_lines(&runs, "3 runs", |l| l.len() >= 3);
    assert!(pw.child.try_wait().unwrap().is_none(), "procward exited");
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
}
