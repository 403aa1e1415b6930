//! Fault injection with real processes: the app killed outright in each
//! state (an overlapping reload's old process and its replacement
//! included), procward killed outright as PID 1 and under a real systemd,
//! procward short of descriptors and of pids, and the wall clock stepped
//! under its timers.
//!
//! Covered elsewhere and not repeated here: procward killed outright as a
//! child (`parent_death.rs`: the app dies by PDEATHSIG) and a `--listen`
//! address already in use (`cluster.rs`:
//! `a_listen_address_in_use_stops_procward_with_111`).

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starting: spawned, not ready yet (`--wait-ready`, an app that never
/// says so). SIGKILL is a crash: restarted at once, counted as one.
#[test]
fn sigkill_before_ready_is_a_crash_and_the_app_restarts() {
    let mut run = Running::start(&[
        "--wait-ready",
        "--listen-timeout",
        "60s",
        "--",
        "sleep",
        "1000",
    ]);
    let first = pid_field(&run.wait_line(&["to=\"starting\"", "restarts=0"]));
    send(first, libc::SIGKILL);
    let line = run.wait_line(&["to=\"starting\"", "restarts=1"]);
    let second = pid_field(&line);
    assert_ne!(first, second);
    assert!(alive(second));
    assert_eq!(run.count_lines(&["to=\"starting\""]), 2);
}

/// Online: the ordinary crash.
#[test]
fn sigkill_when_online_is_a_crash_and_the_app_restarts() {
    let mut run = Running::start(&["--", "sleep", "1000"]);
    let first = pid_field(&run.wait_line(&["to=\"online\"", "restarts=0"]));
    send(first, libc::SIGKILL);
    let second = pid_field(&run.wait_line(&["to=\"online\"", "restarts=1"]));
    assert_ne!(first, second);
}

/// Stopping, at procward's own stop: the app that ignores SIGTERM is
/// killed from outside before kill_timeout; procward ends at once with
/// its status instead of waiting out the timeout, and restarts nothing.
#[test]
fn sigkill_while_stopping_ends_the_stop_at_once() {
    let dir = scratch();
    let out = path_in(&dir, "events");
    let mut run = Running::start(&[
        "--kill-timeout",
        "60s",
        "--",
        "node",
        &core("stubborn.js"),
        &out,
    ]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    wait_lines(&out, "ready", |l| !l.is_empty());
    run.signal(libc::SIGTERM);
    run.wait_line(&["to=\"stopping\""]);
    wait_lines(&out, "the stop signal seen by the app", |l| {
        l.iter().any(|x| x.starts_with("SIG"))
    });
    let killed = Instant::now();
    send(app, libc::SIGKILL);
    let status = run.wait_exit();
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "procward waited out kill_timeout"
    );
    assert_eq!(code_of(status), 128 + libc::SIGKILL);
    assert_eq!(
        run.count_lines(&["to=\"online\""]),
        1,
        "restarted while stopping"
    );
}

/// Stopping for a restart (SIGHUP): killed from outside, the restart
/// goes on without waiting for kill_timeout, and is not counted as a crash.
#[test]
fn sigkill_while_stopping_for_a_reload_starts_the_new_one_at_once() {
    let dir = scratch();
    let out = path_in(&dir, "events");
    let mut run = Running::start(&[
        "--kill-timeout",
        "60s",
        "--",
        "node",
        &core("stubborn.js"),
        &out,
    ]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    wait_lines(&out, "ready", |l| !l.is_empty());
    run.signal(libc::SIGHUP);
    run.wait_line(&["to=\"stopping\""]);
    wait_lines(&out, "the stop signal seen by the app", |l| {
        l.iter().any(|x| x.starts_with("SIG"))
    });
    let killed = Instant::now();
    send(app, libc::SIGKILL);
    let line = run.wait_line(&["to=\"online\"", "reason=\"reload\""]);
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "the reload waited out kill_timeout"
    );
    assert_ne!(pid_field(&line), app);
    assert_eq!(
        run.count_lines(&["reason=\"crash\""]),
        0,
        "{}",
        run.seen.join("\n")
    );
}

/// A Node server in cluster mode (procward holds its socket) whose start
/// waits while the file `hold` exists in `dir`: it writes its pid to
/// `starts`, then listens on $PORT and answers each request with its pid.
fn start_held_app(dir: &tempfile::TempDir, port: u16, metrics: &str) -> Running {
    let app = path_in(dir, "app.js");
    std::fs::write(
        &app,
        r#"const fs = require('fs');
const dir = process.env.DIR;
fs.appendFileSync(dir + '/starts', process.pid + '\n');
const serve = () => require('http')
  .createServer((req, res) => res.end(`${process.pid}\n`))
  .listen(Number(process.env.PORT));
const wait = () => (fs.existsSync(dir + '/hold') ? setTimeout(wait, 10) : serve());
wait();
"#,
    )
    .unwrap();
    Running::start_cmd(
        Command::new(bin())
            .args(["-i", "1", "--name", "web", "--listen-timeout", "60s"])
            .args(["--metrics", metrics, "--", "node", &app])
            .env("DIR", dir.path())
            .env("PORT", port.to_string()),
    )
}

/// One HTTP/1.0 request to 127.0.0.1:port; the pid that answered.
fn answered_by(port: u16) -> std::io::Result<i32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    body.parse()
        .map_err(|_| std::io::Error::other(format!("bad answer {text:?}")))
}

/// Starts a reload whose replacement is held before it listens; returns
/// (old pid, new pid) once both run.
fn reload_into_overlap(run: &mut Running, dir: &tempfile::TempDir, port: u16) -> (i32, i32) {
    let old = pid_field(&run.wait_line(&["to=\"online\"", "restarts=0"]));
    assert_eq!(answered_by(port).unwrap(), old);
    std::fs::write(dir.path().join("hold"), "").unwrap();
    run.signal(libc::SIGHUP);
    let new = pid_field(&run.wait_line(&["to=\"starting\"", "reason=\"reload\""]));
    wait_lines(&path_in(dir, "starts"), "the replacement's start", |l| {
        l.len() == 2
    });
    assert!(alive(old) && alive(new), "old {old} and new {new} both run");
    (old, new)
}

/// The value of a series in a scrape, 0 when absent.
fn series(body: &str, s: &str) -> f64 {
    metric(body, s).unwrap_or(0.0)
}

/// Reloading with overlap, the old process killed outright while its
/// replacement starts: the new one takes over when ready, and a client
/// that connected in between (the socket is procward's) is answered by
/// it. The old process is reaped; nothing counts as a crash.
#[test]
fn sigkill_to_the_old_process_during_an_overlapping_reload_hands_over_to_the_new_one() {
    let dir = scratch();
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut run = start_held_app(&dir, port, &metrics);
    let (old, new) = reload_into_overlap(&mut run, &dir, port);
    send(old, libc::SIGKILL);
    run.wait_line(&["old process exited", &format!("pid={old} ")]);
    assert!(alive(new));
    let waiting = std::thread::spawn(move || answered_by(port));
    std::fs::remove_file(dir.path().join("hold")).unwrap();
    let line = run.wait_line(&["app=web", "reloaded"]);
    assert!(line.contains(&format!("pid={new}")), "{line}");
    assert_eq!(waiting.join().unwrap().unwrap(), new, "the waiting client");
    assert_eq!(answered_by(port).unwrap(), new);
    assert!(!alive(old));
    assert_eq!(zombies_of(run.pid()), Vec::<i32>::new());
    let body = scrape(&metrics);
    let reloads = "procward_reloads_total{app=\"web\",result=";
    assert_eq!(
        series(&body, &format!("{reloads}\"done\"}}")),
        1.0,
        "{body}"
    );
    assert_eq!(series(&body, &format!("{reloads}\"aborted\"}}")), 0.0);
    let restarts = "procward_restarts_total{app=\"web\",instance=\"0\",reason=";
    assert_eq!(
        series(&body, &format!("{restarts}\"crash\"}}")),
        0.0,
        "{body}"
    );
    assert_eq!(series(&body, &format!("{restarts}\"signal\"}}")), 0.0);
    assert_eq!(series(&body, &format!("{restarts}\"reload\"}}")), 1.0);
    // The old process's death is an exit like any other.
    let killed = "procward_exits_total{app=\"web\",code=\"\",instance=\"0\",signal=\"SIGKILL\"}";
    assert_eq!(series(&body, killed), 1.0, "{body}");
    run.signal(libc::SIGTERM);
    // Node's default for SIGTERM, passed on: 128 + 15.
    assert_eq!(code_of(run.wait_exit()), 143);
    assert!(!alive(new));
}

/// Reloading with overlap, the replacement killed outright before it is
/// ready: the reload is aborted, the old process serves on, the
/// replacement is reaped, and the next reload works.
#[test]
fn sigkill_to_the_replacement_during_an_overlapping_reload_keeps_the_old_one_serving() {
    let dir = scratch();
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut run = start_held_app(&dir, port, &metrics);
    let (old, new) = reload_into_overlap(&mut run, &dir, port);
    send(new, libc::SIGKILL);
    run.wait_line(&["app=web", "reload aborted"]);
    assert_eq!(answered_by(port).unwrap(), old);
    assert!(!alive(new));
    assert_eq!(zombies_of(run.pid()), Vec::<i32>::new());
    let body = scrape(&metrics);
    let reloads = "procward_reloads_total{app=\"web\",result=";
    assert_eq!(
        series(&body, &format!("{reloads}\"aborted\"}}")),
        1.0,
        "{body}"
    );
    assert_eq!(series(&body, &format!("{reloads}\"done\"}}")), 0.0);
    let restarts = "procward_restarts_total{app=\"web\",instance=\"0\",reason=";
    assert_eq!(
        series(&body, &format!("{restarts}\"crash\"}}")),
        0.0,
        "{body}"
    );
    assert_eq!(series(&body, &format!("{restarts}\"signal\"}}")), 0.0);
    let killed = "procward_exits_total{app=\"web\",code=\"\",instance=\"0\",signal=\"SIGKILL\"}";
    assert_eq!(series(&body, killed), 1.0, "{body}");
    // The next reload goes through.
    std::fs::remove_file(dir.path().join("hold")).unwrap();
    run.signal(libc::SIGHUP);
    let line = run.wait_line(&["app=web", "reloaded"]);
    let third = wait_lines(&path_in(&dir, "starts"), "the third start", |l| {
        l.len() == 3
    })[2]
        .parse::<i32>()
        .unwrap();
    assert!(line.contains(&format!("pid={third}")), "{line}");
    assert_eq!(answered_by(port).unwrap(), third);
    wait_until("the old process gone", || (!alive(old)).then_some(()));
    assert_eq!(zombies_of(run.pid()), Vec::<i32>::new());
}

/// PID 1 killed outright from the parent namespace: the kernel kills
/// everything in the namespace, the app and its own children included.
#[test]
fn sigkill_to_procward_as_pid_1_takes_the_whole_namespace_down() {
    let (mut run, pid1) = start_as_pid1(&["--", "sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    let _ = app;
    let tree = wait_until("the app's two children", || {
        let sh = children_of(pid1);
        let kids: Vec<i32> = sh.iter().flat_map(|p| children_of(*p)).collect();
        (sh.len() == 1 && kids.len() == 2).then(|| [sh, kids].concat())
    });
    send(pid1, libc::SIGKILL);
    run.wait_exit();
    wait_until("every process of the namespace to be gone", || {
        tree.iter().all(|p| !alive(*p)).then_some(())
    });
}

/// Out of descriptors (RLIMIT_NOFILE lowered on the running procward):
/// connections and spawns fail, procward says so and goes on; with the
/// limit back, a restart and a scrape work again.
#[test]
fn out_of_descriptors_procward_keeps_serving_and_recovers() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = Running::start(&[
        "--metrics",
        &addr,
        "--restart-delay",
        "100ms",
        "--",
        "sleep",
        "1000",
    ]);
    let first = pid_field(&run.wait_line(&["to=\"online\"", "restarts=0"]));
    assert!(scrape(&addr).contains("procward_restarts_total"));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", run.pid()))
        .unwrap()
        .count();
    prlimit(run.pid(), fds as u64);
    // A few connections the server cannot accept, and a crash whose
    // restart cannot open the app's pipes.
    let stuck: Vec<_> = (0..4)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    run.wait_line(&["accepting an HTTP connection failed"]);
    send(first, libc::SIGKILL);
    run.wait_line(&["pid=", &format!("{first}")]);
    assert!(alive(run.pid()), "procward died short of descriptors");
    drop(stuck);
    prlimit(run.pid(), 1024);
    let line = run.wait_line(&["to=\"online\"", "restarts=1"]);
    assert!(alive(pid_field(&line)));
    assert!(scrape(&addr).contains("procward_restarts_total"));
}

/// A pids cgroup (v1's pids controller, or v2), removed on drop once
/// empty.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    /// `None` when this machine does not let us make one (not root, no
    /// pids controller, read-only cgroupfs).
    fn new() -> Option<PidsCgroup> {
        let name = format!("procward-faults-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/pids");
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let dir = if v1.join("cgroup.procs").exists() {
            v1.join(name)
        } else {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+pids");
            v2.join(name)
        };
        std::fs::create_dir(&dir).ok()?;
        let cg = PidsCgroup(dir);
        cg.0.join("pids.max").exists().then_some(cg)
    }

    fn set_max(&self, max: &str) {
        std::fs::write(self.0.join("pids.max"), max).expect("write pids.max");
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("pids.max"), "max");
        // Its last processes may still be on their way out.
        let deadline = Instant::now() + PATIENCE;
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `GET path` on procward's HTTP server: the status code and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map_or("", |x| x.1).into())
}

/// Out of pids (procward and its app in a pids cgroup whose pids.max is
/// lowered below what runs): the restart after a crash cannot fork
/// (EAGAIN); procward retries with backoff and counts each failure as
/// `spawn_failed`, answers /healthz and /metrics all along, and once pids
/// are free again the app runs. Skipped (and passes) without a pids
/// cgroup to make.
#[test]
fn out_of_pids_restarts_are_retried_and_counted_and_procward_keeps_serving() {
    let Some(cg) = PidsCgroup::new() else {
        println!("SKIPPED: no pids cgroup can be made here");
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let mut run = Running::start_cmd(
        Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
            .arg(&cg.0)
            .arg(bin())
            .args(["--metrics", &addr, "--restart-delay", "100ms"])
            .args(["--", "sleep", "1000"]),
    );
    let first = pid_field(&run.wait_line(&["to=\"online\"", "restarts=0"]));
    let members = cg.read("cgroup.procs");
    assert!(
        members.lines().any(|p| p == first.to_string()),
        "the app is not in the cgroup: {members}"
    );
    // No new process or thread in the cgroup from now on.
    cg.set_max("1");
    send(first, libc::SIGKILL);
    run.wait_line(&["Resource temporarily unavailable", "retrying with backoff"]);
    run.wait_line(&["reason=\"spawn_failed\"", "restarts=3"]);
    assert_eq!(get(&addr, "/healthz").0, 200, "/healthz while out of pids");
    let (code, body) = get(&addr, "/metrics");
    assert_eq!(code, 200, "/metrics while out of pids");
    let restarts = "procward_restarts_total{app=\"sleep\",instance=\"0\",reason=";
    let failed = series(&body, &format!("{restarts}\"spawn_failed\"}}"));
    assert!(failed >= 3.0, "{body}");
    assert!(alive(run.pid()), "procward died out of pids");
    cg.set_max("max");
    let line = run.wait_line(&["to=\"online\"", "reason=\"signal\""]);
    let second = pid_field(&line);
    assert!(alive(second));
    let body = scrape(&addr);
    assert_eq!(
        series(&body, &format!("{restarts}\"signal\"}}")),
        1.0,
        "{body}"
    );
    assert_eq!(series(&body, &format!("{restarts}\"crash\"}}")), 0.0);
    assert!(series(&body, &format!("{restarts}\"spawn_failed\"}}")) >= failed);
    // The kernel refused at least the forks procward counted.
    let refused: f64 = cg
        .read("pids.events")
        .trim()
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        refused >= failed,
        "pids.events max {refused}, counted {failed}"
    );
    run.signal(libc::SIGTERM);
    run.wait_exit();
}

/// Sets RLIMIT_NOFILE of `pid` (soft and hard) with prlimit(1).
fn prlimit(pid: i32, n: u64) {
    output_of_success(
        Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={n}:{}", n.max(1024))),
        "prlimit",
    );
}

/// procward.service as shipped, under a real systemd (the sandbox of
/// scripts/tools/systemd-sandbox), killed outright: systemd restarts it
/// (Restart=on-failure) and kills what was left of the old run in the
/// unit's cgroup, a process that left the app's session included
/// (tests/systemd/sigkill.sh). Needs root; without it says so and passes.
#[test]
fn sigkill_to_procward_under_systemd_restarts_the_unit_and_leaves_nothing_behind() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the systemd sandbox needs root");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sandbox = std::env::var_os("SYSTEMD_SANDBOX")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("scripts/tools/systemd-sandbox"));
    let out = Command::new(sandbox)
        // The tree tests/systemd.rs uses and scripts/test prepares.
        .env("SYSTEMD_SANDBOX_PACKAGES", "nodejs")
        .args(["run", "-t", "120"])
        .args([
            "-f",
            &format!("{}:/usr/local/bin/procward", bin().display()),
        ])
        .args([
            "-u",
            &root.join("systemd/procward.service").display().to_string(),
        ])
        .arg(root.join("tests/systemd/sigkill.sh"))
        .output()
        .expect("run the systemd sandbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("\n0 failed"),
        "checks failed under systemd ({}):\n{stdout}",
        out.status
    );
}

/// libfaketime, installed by scripts/test (Debian's libfaketime).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// procward with libfaketime preloaded: its wall clock (CLOCK_REALTIME,
/// what log timestamps show) is offset by what the file `clock` in `dir`
/// says, read again on every call; the monotonic clock is left alone
/// (DONT_FAKE_MONOTONIC), as a real clock step leaves it. The machine's
/// clock is never touched.
fn with_fake_wall_clock(dir: &tempfile::TempDir) -> (Command, std::path::PathBuf) {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install libfaketime (scripts/test does)"
    );
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "+0\n").unwrap();
    let mut cmd = Command::new(bin());
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1");
    (cmd, clock)
}

/// The date (YYYY-MM-DD) a log line was stamped with.
fn stamped(line: &str) -> &str {
    &line[..10]
}

/// The wall clock stepped a day forward, then two back, while restarts
/// wait out restart_delay: each restart comes after its delay (a step
/// forward does not cut it short, a step back does not stall it), and
/// /healthz answers throughout. The log's timestamps show the steps took.
#[test]
fn wall_clock_steps_leave_restart_delays_and_health_alone() {
    let dir = scratch();
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut cmd, clock) = with_fake_wall_clock(&dir);
    cmd.args(["--metrics", &addr, "--restart-delay", "2s"])
        .args(["--", "sh", "-c", "exit 3"]);
    let mut run = Running::start_cmd(&mut cmd);
    let first = run.wait_line(&["restart delayed", "delay_ms=2000"]);
    std::fs::write(&clock, "+1d\n").unwrap();
    let stepped = Instant::now();
    assert_eq!(get(&addr, "/healthz").0, 200);
    let line = run.wait_line(&["to=\"online\"", "restarts=1"]);
    let waited = stepped.elapsed();
    assert!(stamped(&line) > stamped(&first), "no step forward: {line}");
    assert!(
        waited >= Duration::from_millis(1500),
        "restarted {waited:?} after the step, before its 2 s delay"
    );
    assert_eq!(get(&addr, "/healthz").0, 200);
    run.wait_line(&["to=\"waiting\"", "restarts=1"]);
    std::fs::write(&clock, "-1d\n").unwrap();
    let stepped = Instant::now();
    let line = run.wait_line(&["to=\"online\"", "restarts=2"]);
    let waited = stepped.elapsed();
    assert!(stamped(&line) < stamped(&first), "no step back: {line}");
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert_eq!(get(&addr, "/healthz").0, 200);
    let body = scrape(&addr);
    let crashes = "procward_restarts_total{app=\"sh\",instance=\"0\",reason=\"crash\"}";
    assert!(series(&body, crashes) >= 2.0, "{body}");
}

/// The wall clock stepped a day forward while procward waits out
/// kill_timeout for an app that ignores its stop signal: SIGKILL still
/// comes only once kill_timeout has passed.
#[test]
fn a_wall_clock_step_forward_does_not_cut_kill_timeout_short() {
    let dir = scratch();
    let trapped = dir.path().join("trapped");
    let (mut cmd, clock) = with_fake_wall_clock(&dir);
    cmd.args(["--kill-timeout", "3s", "--", "sh", "-c"])
        .arg("trap '' TERM INT; echo > \"$0\"; exec sleep 1000")
        .arg(&trapped);
    let mut run = Running::start_cmd(&mut cmd);
    let first = run.wait_line(&["to=\"online\""]);
    wait_file(&trapped);
    run.signal(libc::SIGTERM);
    run.wait_line(&["to=\"stopping\""]);
    std::fs::write(&clock, "+1d\n").unwrap();
    let stepped = Instant::now();
    let status = run.wait_exit();
    let waited = stepped.elapsed();
    assert_eq!(code_of(status), 128 + libc::SIGKILL);
    assert!(
        waited >= Duration::from_millis(2500),
        "killed {waited:?} after the step, before kill_timeout (3 s)"
    );
    let last = run.seen.last().cloned().unwrap_or_default();
    assert!(stamped(&last) > stamped(&first), "no step forward: {last}");
}
