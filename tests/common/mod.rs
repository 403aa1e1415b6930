//! Shared helpers for the integration tests: run the real binary, watch its
//! log lines, wait for events with generous bounds.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds: it only
/// catches a hang, it does not measure.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_procward"))
}

/// A directory of test programs shipped with the tests.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A running procward with its stderr lines collected.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    /// Every stderr line seen so far.
    pub seen: Vec<String>,
}

impl Running {
    /// Starts procward with these arguments; stdout is inherited unless
    /// `capture_stdout` is used.
    pub fn start(args: &[&str]) -> Running {
        Running::start_cmd(Command::new(bin()).args(args))
    }

    /// Starts a prepared command (procward or a wrapper around it, such as
    /// `unshare`), collecting stderr.
    pub fn start_cmd(cmd: &mut Command) -> Running {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn procward");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("PROCWARD_TEST_ECHO").is_some() {
                    eprintln!("| {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing every one of `parts`; returns it.
    pub fn wait_line(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {parts:?} within {PATIENCE:?}; seen:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "procward closed stderr before a line with {parts:?}; seen:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Counts the lines seen so far (and drains pending ones) containing all `parts`.
    pub fn count_lines(&mut self, parts: &[&str]) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Waits for procward to exit and returns its status; drains stderr.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_timeout(&mut self.child, PATIENCE).unwrap_or_else(|| {
            panic!(
                "procward did not exit within {PATIENCE:?}; seen:\n{}",
                self.seen.join("\n")
            )
        });
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status
    }

    /// Sends a signal to procward itself.
    pub fn signal(&self, signo: i32) {
        send(self.child.id() as i32, signo);
    }

    /// procward's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signo` to `pid`.
pub fn send(pid: i32, signo: i32) {
    // SAFETY: kill(2) with integers.
    let rc = unsafe { libc::kill(pid, signo) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signo}): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls `child` until it exits or `limit` passes.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs procward to completion and returns (exit code or 128+signal, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn procward");
    let mut out = String::new();
    let mut err = String::new();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = se.read_to_string(&mut e);
        e
    });
    let _ = so.read_to_string(&mut out);
    let status = wait_timeout(&mut child, PATIENCE).expect("procward did not exit in time");
    err.push_str(&t.join().unwrap());
    (code_of(status), out, err)
}

/// Runs a tool to completion and returns its stdout and stderr together;
/// fails the test with that output, under `what`, unless it exited 0.
pub fn output_of_success(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// An exit status as a shell reports it.
pub fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits until `path` exists (a child writes it when it reaches a point).
pub fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {PATIENCE:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pids of zombie processes whose parent is `ppid`.
pub fn zombies_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|x| !x.1.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// A test program under tests/fixtures/core, as a string for argv.
pub fn core(name: &str) -> String {
    fixture("core").join(name).to_string_lossy().into_owned()
}

/// A fresh directory removed at the end of the test.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A path inside `dir`, as a string for argv.
pub fn path_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

/// Polls `check` until it returns `Some`, failing after [`PATIENCE`] with
/// `what` in the message. For events only visible in /proc or a file.
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the file's complete lines satisfy `done`; returns them.
pub fn wait_lines(path: &str, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    wait_until(what, || {
        let text = std::fs::read_to_string(path).ok()?;
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<String> = complete.lines().map(str::to_owned).collect();
        done(&lines).then_some(lines)
    })
}

/// Waits until the file has a line equal to `line`.
pub fn wait_for_line(path: &str, line: &str) -> Vec<String> {
    wait_lines(path, &format!("line {line:?} in {path}"), |l| {
        l.iter().any(|x| x == line)
    })
}

/// The pid named in a log line's `pid=N` field.
pub fn pid_field(line: &str) -> i32 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {line:?}"))
}

/// The direct children of `pid` (from /proc/PID/task/*/children).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

/// The one-letter state of a process (R, S, T, Z...), if it exists.
pub fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Starts procward as PID 1 of a new PID namespace (`unshare --pid --fork
/// --mount-proc`); returns it with procward's pid as seen from here (0 if
/// it had already exited by the time it was looked for).
pub fn start_as_pid1(args: &[&str]) -> (Running, i32) {
    let mut run = Running::start_cmd(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(bin())
            .args(args),
    );
    let unshare = run.pid();
    let pid = wait_until("procward to start under unshare", || {
        if let Some(pid) = children_of(unshare).first() {
            return Some(*pid);
        }
        // A short-lived app: everything may be over before we look.
        matches!(run.child.try_wait(), Ok(Some(_))).then_some(0)
    });
    (run, pid)
}

/// The static procward (`-C target-feature=+crt-static` on the gnu target),
/// built once per test binary as deploy/docker/Dockerfile builds it, into
/// `static/` of the target directory in use (so `CARGO_TARGET_DIR` is
/// honoured).
pub fn static_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // CARGO_BIN_EXE_procward is TARGET/<profile>/procward.
        let target = bin()
            .parent()
            .and_then(Path::parent)
            .expect("the binary lies in TARGET/<profile>/")
            .join("static");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--target", "x86_64-unknown-linux-gnu"])
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C relocation-model=static",
            )
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root)
            .status()
            .expect("run cargo");
        assert!(status.success(), "static build failed");
        target.join("x86_64-unknown-linux-gnu/debug/procward")
    })
    .clone()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /metrics` from procward's server at `addr`.
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default()
}

/// The value of the series whose line starts with `series` (name and labels).
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
