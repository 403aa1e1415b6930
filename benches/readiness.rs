//! Readiness translation latency: from a Node app's `process.send('ready')`
//! to `READY=1` arriving at the service manager's notify socket.
//!
//! Each start runs the real procward (`--wait-ready -- node ipc_app.js DIR
//! bench`) under a notify socket this program owns. The app reads
//! CLOCK_MONOTONIC (`process.hrtime.bigint()`) just before `process.send`,
//! this program reads it as soon as `READY=1` is received; the difference is
//! the latency (both clocks are the same kernel clock). Prints the median,
//! quartiles and extremes over the starts (default 60; `READINESS_STARTS`),
//! once with the app's first `process.send` (cold, as in a real start: it
//! includes Node compiling its send path) and once after a first message
//! (warm: closer to procward's own share).
//!
//! The floor takes turns with procward: this program itself holds the app's
//! IPC channel (`NODE_CHANNEL_FD`, as procward would) and reads `"ready"`
//! from it, so the difference is procward's own share: its wake-up, the
//! message's way to the supervisor, the sd_notify datagram and the manager's
//! wake-up.
//!
//! Run: `cargo bench --bench readiness` (or with the debug binary: `cargo
//! bench --profile dev --bench readiness`). It needs only std, so
//! benches/ready.sh builds it with plain `rustc -O` and names the binary to
//! measure in `$PROCWARD` and the repository in `$ROOT`.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn dup2(old: i32, new: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, arg: i32) -> i32;
}

const F_SETFD: i32 = 2;

const CLOCK_MONOTONIC: i32 = 1;
const SIGTERM: i32 = 15;

fn monotonic_ns() -> u128 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime(2) writing into a local.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.sec as u128 * 1_000_000_000 + ts.nsec as u128
}

/// `$NAME`, or else what cargo set at build time.
fn from_env(name: &str, built: Option<&str>) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .or_else(|| built.map(PathBuf::from))
        .unwrap_or_else(|| panic!("set ${name} (or run with cargo bench)"))
}

fn one_start(procward: &Path, app: &Path, dir: &Path, mode: &str) -> Duration {
    let sock_path = dir.join("manager.sock");
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(dir.join("sent_ns"));
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(procward)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RUNTIME_DIRECTORY", dir)
        .args([
            "--log-level",
            "warn",
            "--wait-ready",
            "--listen-timeout",
            "30s",
            "--",
            "node",
        ])
        .arg(app)
        .arg(dir)
        .arg(mode)
        .stderr(Stdio::null())
        .spawn()
        .expect("start procward");
    let mut buf = [0u8; 4096];
    let received = loop {
        let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
        let now = monotonic_ns();
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break now;
        }
    };
    let sent = sent_ns(dir);
    // SAFETY: kill(2) on our own child.
    unsafe { kill(child.id() as i32, SIGTERM) };
    let _ = child.wait();
    Duration::from_nanos(received.saturating_sub(sent) as u64)
}

/// The app's send time, once it has written it.
fn sent_ns(dir: &Path) -> u128 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("sent_ns")) {
            if s.ends_with('\n') {
                return s.trim().parse().expect("a time in ns");
            }
        }
        assert!(Instant::now() < deadline, "the app did not write sent_ns");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The floor: the app's IPC channel read here, with no procward between.
fn one_floor(app: &Path, dir: &Path, mode: &str) -> Duration {
    let _ = std::fs::remove_file(dir.join("sent_ns"));
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new("node");
    cmd.env("NODE_CHANNEL_FD", "3")
        .arg(app)
        .arg(dir)
        .arg(mode)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2(2) and fcntl(2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                fcntl(3, F_SETFD, 0)
            } else {
                dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().expect("start node");
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let received = loop {
        let n = ours.read(&mut buf).expect("\"ready\" within 20 s");
        let now = monotonic_ns();
        assert!(n > 0, "the app closed its channel");
        seen.extend_from_slice(&buf[..n]);
        if seen.split(|b| *b == b'\n').any(|l| l == b"\"ready\"") {
            break now;
        }
    };
    let sent = sent_ns(dir);
    // SAFETY: kill(2) on our own child.
    unsafe { kill(child.id() as i32, SIGTERM) };
    let _ = child.wait();
    Duration::from_nanos(received.saturating_sub(sent) as u64)
}

fn main() {
    let starts: usize = std::env::var("READINESS_STARTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let procward = from_env("PROCWARD", option_env!("CARGO_BIN_EXE_procward"));
    let root = from_env("ROOT", option_env!("CARGO_MANIFEST_DIR"));
    let app = root.join("tests/fixtures/ready/ipc_app.js");
    let dir = std::env::temp_dir().join(format!("procward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in ["bench", "bench-warm"] {
        let (mut lat, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..starts {
            lat.push(one_start(&procward, &app, &dir, mode));
            floor.push(one_floor(&app, &dir, mode));
        }
        let which = if mode == "bench" {
            "first send"
        } else {
            "warm send"
        };
        for (what, lat) in [("", &mut lat), (", floor (no procward)", &mut floor)] {
            lat.sort();
            let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "readiness translation latency (process.send('ready') -> READY=1), {which}{what}, {starts} starts: \
                 median {:.0} us, p25 {:.0} us, p75 {:.0} us, min {:.0} us, max {:.0} us",
                us(at(0.5)),
                us(at(0.25)),
                us(at(0.75)),
                us(lat[0]),
                us(lat[lat.len() - 1])
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
