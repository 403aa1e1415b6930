//! Readiness with real children: Node apps calling `process.send('ready')`
//! over the IPC channel, apps speaking sd_notify through procward's proxy,
//! tcp/http probes, and what procward itself tells the service manager.
//!
//! The service manager here is a unix datagram socket the test owns, given
//! to procward as `NOTIFY_SOCKET`: the real protocol, read as systemd reads
//! it. tests/systemd.rs runs the same apps under a real systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{alive, fixture, wait_file, Running, PATIENCE};

/// A fake service manager: receives what procward sends to `NOTIFY_SOCKET`.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every datagram so far.
    got: Vec<String>,
}

impl Manager {
    fn new(dir: &Path) -> Manager {
        let path = dir.join("manager.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Manager {
            sock,
            path,
            got: Vec::new(),
        }
    }

    /// Waits for a datagram with a line equal to `line` (or starting with
    /// it when it ends with '='); returns that datagram.
    fn wait(&mut self, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        if let Some(d) = self.got.iter().find(|d| has(d, line)) {
            return d.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no datagram with {line:?} within {PATIENCE:?}; got {:?}",
                self.got
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                let d = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push(d.clone());
                if has(&d, line) {
                    return d;
                }
            }
        }
    }

    /// Waits until `n` datagrams with `line` have arrived.
    fn wait_count(&mut self, line: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.got.iter().filter(|d| has(d, line)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "fewer than {n} datagrams with {line:?} within {PATIENCE:?}; got {:?}",
                self.got
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(len) = self.sock.recv(&mut buf) {
                self.got
                    .push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
    }

    /// Takes whatever has arrived without waiting.
    fn drain(&mut self) -> &[String] {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.got
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.sock.set_nonblocking(false).unwrap();
        &self.got
    }

    fn count(&mut self, line: &str) -> usize {
        self.drain().iter().filter(|d| has(d, line)).count()
    }
}

fn has(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| {
        if line.ends_with('=') {
            l.starts_with(line)
        } else {
            l == line
        }
    })
}

/// procward under a fake service manager, with a fixture app.
fn start(manager: &Manager, opts: &[&str], app: &[&str]) -> Running {
    let mut cmd = Command::new(common::bin());
    cmd.env("NOTIFY_SOCKET", &manager.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    cmd.env("RUNTIME_DIRECTORY", manager.path.parent().unwrap());
    cmd.args(opts).arg("--").args(app);
    Running::start_cmd(&mut cmd)
}

fn node_app(dir: &Path, mode: &str) -> Vec<String> {
    let f = fixture("ready/ipc_app.js");
    vec![
        "node".into(),
        f.display().to_string(),
        dir.display().to_string(),
        mode.into(),
    ]
}

fn notify_app(dir: &Path, mode: &str) -> Vec<String> {
    let f = fixture("ready/notify_app.py");
    vec![
        "python3".into(),
        f.display().to_string(),
        dir.display().to_string(),
        mode.into(),
    ]
}

/// A free local port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `/metrics` text of a procward started with `--metrics 127.0.0.1:PORT`.
fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn pid_in(dir: &Path) -> i32 {
    wait_file(&dir.join("pid")).trim().parse().unwrap()
}

#[test]
fn process_send_ready_after_listen_becomes_ready_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "ready");
    let mut p = start(
        &m,
        &["--wait-ready", "--listen-timeout", "30s", "--name", "web"],
        &strs(&app),
    );
    let ready = m.wait("READY=1");
    assert!(has(&ready, "STATUS=web 1/1 ready, 0 restarts"), "{ready:?}");
    p.wait_line(&["from=\"starting\"", "to=\"online\""]);
    // Ready came from the app, not from the timeout.
    assert_eq!(p.count_lines(&["listen_timeout"]), 0, "{:?}", p.seen);
    // The app got neither procward's NOTIFY_SOCKET nor a watchdog, and Node
    // took NODE_CHANNEL_FD for itself.
    assert_eq!(wait_file(&dir.path().join("env")).trim(), "[]");
    p.signal(libc::SIGTERM);
    p.wait_exit();
    assert_eq!(m.count("STOPPING=1"), 1, "{:?}", m.got);
}

#[test]
fn the_channel_stays_open_after_ready_and_pm2_messages_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "chatty");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let opts = ["--wait-ready", "--log-level", "debug", "--metrics", &addr];
    let mut p = start(&m, &opts, &strs(&app));
    m.wait("READY=1");
    assert_eq!(wait_file(&dir.path().join("later")).trim(), "ok");
    p.wait_line(&["process:msg", "peers"]);
    assert!(alive(pid_in(dir.path())));
    // The axm:monitor value becomes a gauge; /metrics is polled, there is no
    // event to wait for.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = metrics(port);
        if text
            .lines()
            .any(|l| l.starts_with("procward_app_metric{") && l.ends_with(" 42"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no app metric 42 in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_app_that_never_uses_the_channel_still_exits() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::new(dir.path());
    let app = node_app(dir.path(), "quiet");
    let mut p = start(
        &m,
        &[
            "--wait-ready",
            "--listen-timeout",
            "60s",
            "--no-autorestart",
        ],
        &strs(&app),
    );
    let status = p.wait_exit();
    assert_eq!(status.code(), Some(0), "{:?}", p.seen);
}

#[test]
fn never_ready_is_ready_after_listen_timeout_as_pm2_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "never");
    let mut p = start(
        &m,
        &["--wait-ready", "--listen-timeout", "500ms"],
        &strs(&app),
    );
    // A slow start first extends systemd's start timeout.
    m.wait("EXTEND_TIMEOUT_USEC=");
    p.wait_line(&["not ready within listen_timeout; treating it as ready"]);
    m.wait("READY=1");
}

#[test]
fn never_ready_with_strict_readiness_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "never");
    let mut p = start(
        &m,
        &[
            "--wait-ready",
            "--listen-timeout",
            "500ms",
            "--strict-ready",
        ],
        &strs(&app),
    );
    // The first process's pid from procward's own line: the pid file may
    // already be the replacement's by the time the test reads it.
    let started = p.wait_line(&["from=\"stopped\"", "to=\"starting\""]);
    let first: i32 = started
        .split_once(" pid=")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {started}"));
    p.wait_line(&["not ready within listen_timeout; restarting"]);
    p.wait_line(&["to=\"starting\"", "reason=\"ready_timeout\""]);
    assert!(!alive(first), "the unready process is gone");
    assert_eq!(m.count("READY=1"), 0, "{:?}", m.got);
    m.wait("STATUS=ipc_app 0/1 ready, 1 restart");
}

#[test]
fn a_crash_before_ready_is_restarted_and_never_reported_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "crash");
    let mut p = start(
        &m,
        &[
            "--wait-ready",
            "--listen-timeout",
            "30s",
            "--max-restarts",
            "2",
        ],
        &strs(&app),
    );
    p.wait_line(&["to=\"starting\"", "reason=\"crash\""]);
    let status = p.wait_exit();
    assert_eq!(
        status.code(),
        Some(1),
        "errored with the app's status; {:?}",
        p.seen
    );
    assert_eq!(m.count("READY=1"), 0, "{:?}", m.got);
    m.wait("STOPPING=1");
}

#[test]
fn garbage_and_a_10mb_line_are_dropped_and_counted_and_ready_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "garbage");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let opts = [
        "--wait-ready",
        "--listen-timeout",
        "60s",
        "--metrics",
        &addr,
    ];
    let mut p = start(&m, &opts, &strs(&app));
    let pid = pid_in(dir.path());
    let line = p.wait_line(&["IPC lines dropped: ", " garbage"]);
    assert!(
        line.contains("3 garbage"),
        "three lines that are not JSON: {line}"
    );
    p.wait_line(&["IPC line", " dropped: ", "1 too_long"]);
    m.wait("READY=1");
    wait_file(&dir.path().join("alive"));
    assert!(alive(pid), "the app keeps running");
    let text = metrics(port);
    let counted = "procward_dropped_inputs_total{input=\"ipc\"} 4";
    assert!(text.contains(counted), "{text}");
    assert!(alive(p.pid()), "procward keeps running");
    assert_eq!(p.count_lines(&["listen_timeout"]), 0);
}

#[test]
fn shutdown_with_message_sends_shutdown_instead_of_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "shutdown");
    let mut p = start(
        &m,
        &["--wait-ready", "--shutdown-with-message"],
        &strs(&app),
    );
    m.wait("READY=1");
    p.signal(libc::SIGTERM);
    assert_eq!(
        wait_file(&dir.path().join("shutdown")).trim(),
        "got shutdown"
    );
    let status = p.wait_exit();
    assert_eq!(status.code(), Some(0), "{:?}", p.seen);
    assert!(
        !dir.path().join("sigint").exists(),
        "the app got a signal too"
    );
}

#[test]
fn an_sd_notify_app_is_ready_through_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = notify_app(dir.path(), "ready");
    let mut p = start(
        &m,
        &[
            "--ready",
            "notify",
            "--listen-timeout",
            "30s",
            "--name",
            "py",
        ],
        &strs(&app),
    );
    m.wait("READY=1");
    p.wait_line(&["app status", "status=\"serving\""]);
    let socket = wait_file(&dir.path().join("socket"));
    let socket = socket.trim();
    assert!(!socket.is_empty(), "the app has a NOTIFY_SOCKET");
    assert_ne!(
        Path::new(socket),
        m.path,
        "never procward's own NOTIFY_SOCKET"
    );
    assert_eq!(p.count_lines(&["listen_timeout"]), 0);
    p.signal(libc::SIGTERM);
    p.wait_exit();
    assert!(
        !Path::new(socket).exists(),
        "the proxy socket is removed with its process"
    );
}

#[test]
fn a_datagram_from_a_foreign_process_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = notify_app(dir.path(), "wait");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let opts = [
        "--ready",
        "notify",
        "--listen-timeout",
        "60s",
        "--metrics",
        &addr,
    ];
    let mut p = start(&m, &opts, &strs(&app));
    let socket = wait_file(&dir.path().join("socket")).trim().to_string();
    // The test process is not in the app's tree.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"READY=1", &socket)
        .unwrap();
    p.wait_line(&["1 notify datagram dropped: 1 foreign_sender"]);
    let text = metrics(port);
    let counted = "procward_dropped_inputs_total{input=\"notify_sender\"} 1";
    assert!(text.contains(counted), "{text}");
    assert_eq!(m.count("READY=1"), 0, "{:?}", m.got);
    assert_eq!(p.count_lines(&["to=\"online\""]), 0);
    // The app itself is believed.
    std::fs::write(dir.path().join("go"), "").unwrap();
    m.wait("READY=1");
    p.wait_line(&["to=\"online\""]);
}

#[test]
fn an_app_whose_watchdog_pings_stop_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::new(dir.path());
    let app = notify_app(dir.path(), "watchdog");
    let mut p = start(&m, &["--ready", "notify", "--watchdog", "1s"], &strs(&app));
    let first = pid_in(dir.path());
    wait_file(&dir.path().join("stopped_pinging"));
    p.wait_line(&["no WATCHDOG=1 within the app's watchdog interval; restarting"]);
    p.wait_line(&["to=\"starting\"", "reason=\"watchdog\""]);
    assert!(!alive(first));
}

#[test]
fn tcp_and_http_probes_mark_ready() {
    for source in ["tcp", "http"] {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manager::new(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ready = match source {
            "tcp" => format!("tcp:{port}"),
            _ => format!("http://127.0.0.1:{port}/healthz"),
        };
        // Answers 503 until it has served twice, then 200.
        let server = format!(
            "let n=0;require('http').createServer((q,r)=>{{r.statusCode=(q.url==='/healthz'&&++n>2)?200:503;r.end()}}).listen({port},'127.0.0.1')"
        );
        let mut p = start(
            &m,
            &["--ready", &ready, "--listen-timeout", "60s"],
            &["node", "-e", &server],
        );
        m.wait("READY=1");
        p.wait_line(&["to=\"online\""]);
        assert_eq!(p.count_lines(&["listen_timeout"]), 0, "{source}");
    }
}

#[test]
fn reload_is_announced_and_ends_with_ready_once_every_instance_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let app = node_app(dir.path(), "ready");
    let p = start(
        &m,
        &["--wait-ready", "-i", "2", "--name", "web"],
        &strs(&app),
    );
    m.wait("STATUS=web 2/2 ready, 0 restarts");
    assert_eq!(m.count("READY=1"), 1);
    p.signal(libc::SIGHUP);
    let reloading = m.wait("RELOADING=1");
    assert!(has(&reloading, "MONOTONIC_USEC="), "{reloading:?}");
    m.wait_count("READY=1", 2);
    // Both instances were restarted before READY=1.
    let last_ready = m.got.iter().rposition(|d| has(d, "READY=1")).unwrap();
    let restarted = m.got[..=last_ready]
        .iter()
        .any(|d| has(d, "STATUS=web 2/2 ready, 2 restarts"));
    assert!(restarted, "{:?}", m.got);
}

#[test]
fn procward_pings_its_watchdog_only_while_its_loop_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manager::new(dir.path());
    let mut cmd = Command::new(common::bin());
    cmd.env("NOTIFY_SOCKET", &m.path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    cmd.args(["--", "sleep", "60"]);
    let p = Running::start_cmd(&mut cmd);
    m.wait("WATCHDOG=1");
    m.got.clear();
    m.wait("WATCHDOG=1");
    common::send(p.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(300));
    m.drain();
    m.got.clear();
    // Stopped for ten intervals: not one ping.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(m.count("WATCHDOG=1"), 0, "{:?}", m.got);
    common::send(p.pid(), libc::SIGCONT);
    m.wait("WATCHDOG=1");
}

#[test]
fn an_abstract_notify_socket_is_understood() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("procward-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.env("NOTIFY_SOCKET", format!("@{name}"))
        .env_remove("WATCHDOG_USEC");
    cmd.args(["--", "sleep", "60"]);
    let _p = Running::start_cmd(&mut cmd);
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a datagram on the abstract socket");
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(has(&got, "READY=1"), "{got:?}");
}
