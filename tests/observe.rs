//! Observe mode: `procward observe` watches apps it did not start. Each app
//! here is started by the test in a session of its own, so the test is its
//! parent and sees how it ended, which procward cannot.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{fixture, path_in, scratch, wait_for_line, wait_until, Running, PATIENCE};

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command-line token no other process has.
fn token() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "observed-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An app the test started; killed and reaped when dropped, so a failed
/// test leaves nothing behind.
struct App(Child);

impl App {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fixture app, in a session of its own (not procward's child).
fn start_app(token: &str, env: &[(&str, &str)]) -> App {
    let mut cmd = Command::new("python3");
    cmd.arg(fixture("observe/app.py"))
        .arg(token)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    App(cmd.spawn().expect("start the app"))
}

/// `procward observe ARGS --metrics ADDR`, once it serves.
fn observe(args: &[&str]) -> (Running, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(common::bin());
    cmd.arg("observe").args(args).args(["--metrics", &addr]);
    let mut pw = Running::start_cmd(&mut cmd);
    pw.wait_line(&["serving /metrics"]);
    (pw, addr)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    (code, body.to_string())
}

/// The value of the series starting with `prefix` (name and labels).
fn metric(addr: &str, prefix: &str) -> Option<f64> {
    let (_, body) = get(addr, "/metrics");
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn status(addr: &str) -> serde_json::Value {
    let (_, body) = get(addr, "/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["apps"][0]["instances"][0].clone()
}

/// Waits until /status shows `pid` as the app's main process.
fn wait_pid(addr: &str, pid: u32) -> serde_json::Value {
    wait_until(&format!("pid {pid} in /status"), || {
        let s = status(addr);
        (s["pid"] == pid).then_some(s)
    })
}

fn end(app: App) {
    drop(app);
}

#[test]
fn an_observed_apps_memory_and_readiness_come_from_its_own_processes() {
    let t = token();
    let port = free_port().to_string();
    let (pw, addr) = observe(&[
        "--match",
        &t,
        "--name",
        "web",
        "--ready",
        &format!("tcp:{port}"),
    ]);
    assert_eq!(get(&addr, "/readyz").0, 503, "nothing matches yet");
    let dir = scratch();
    let record = path_in(&dir, "record");
    let app = start_app(
        &t,
        &[("ALLOC_MB", "48"), ("PORT", &port), ("RECORD", &record)],
    );
    wait_for_line(&record, &format!("up {}", app.id()));
    wait_pid(&addr, app.id());
    let rss = wait_until("48 MiB resident in /metrics", || {
        metric(
            &addr,
            r#"procward_resident_memory_bytes{app="web",instance="0"}"#,
        )
        .filter(|r| *r >= 48.0 * 1024.0 * 1024.0)
    });
    assert!(rss < 200.0 * 1024.0 * 1024.0, "only the app's tree: {rss}");
    wait_until("/readyz 200 from the app's own port", || {
        (get(&addr, "/readyz").0 == 200).then_some(())
    });
    assert_eq!(
        metric(&addr, r#"procward_up{app="web",instance="0"}"#),
        Some(1.0)
    );
    assert!(
        metric(&addr, r#"procward_threads{app="web",instance="0"}"#).unwrap() >= 1.0,
        "threads are sampled"
    );
    wait_until("open fds in /metrics", || {
        metric(&addr, r#"procward_open_fds{app="web",instance="0"}"#).filter(|n| *n >= 3.0)
    });
    assert!(
        metric(
            &addr,
            r#"procward_cpu_seconds_total{app="web",instance="0"}"#
        )
        .is_some(),
        "CPU time is exported"
    );
    let s = status(&addr);
    assert_eq!(s["status"], "online", "{s}");
    assert_eq!(s["restart_time"], 0, "{s}");
    end(app);
    drop(pw);
}

#[test]
fn a_replaced_app_counts_as_an_external_restart_whose_exit_is_not_visible() {
    let t = token();
    let (pw, addr) = observe(&["--match", &t, "--name", "web"]);
    let first = start_app(&t, &[]);
    wait_pid(&addr, first.id());
    end(first);
    let second = start_app(&t, &[]);
    let s = wait_pid(&addr, second.id());
    assert_eq!(s["restarts"]["external"], 1, "{s}");
    assert_eq!(s["restart_time"], 1, "{s}");
    let last_exit = s["last_exit"].as_str().unwrap_or_default();
    assert!(last_exit.starts_with("not visible"), "{s}");
    assert_eq!(
        metric(
            &addr,
            r#"procward_restarts_total{app="web",instance="0",reason="external"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&addr, r#"procward_exits_total{"#),
        None,
        "no exit status is made up"
    );
    end(second);
    drop(pw);
}

#[test]
fn the_memory_cap_stops_the_app_with_its_stop_signal() {
    let t = token();
    let dir = scratch();
    let record = path_in(&dir, "record");
    let (mut pw, addr) = observe(&[
        "--match",
        &t,
        "--name",
        "web",
        "--max-memory-restart",
        "40M",
        "--kill-timeout",
        "10s",
    ]);
    let mut app = start_app(&t, &[("ALLOC_MB", "64"), ("RECORD", &record)]);
    let status_of_app = common::wait_timeout(&mut app.0, PATIENCE).expect("the app was stopped");
    assert_eq!(
        status_of_app.code(),
        Some(0),
        "SIGTERM ended it gracefully, no SIGKILL: {status_of_app:?}"
    );
    // The app may be stopped before it has written "up": only SIGTERM counts.
    wait_lines_with_term(&record);
    pw.wait_line(&["memory above max_memory_restart", "signal=SIGTERM"]);
    wait_until("a memory restart in /metrics", || {
        metric(
            &addr,
            r#"procward_restarts_total{app="web",instance="0",reason="memory"}"#,
        )
        .filter(|n| *n == 1.0)
    });
    assert_eq!(pw.count_lines(&["sending SIGKILL"]), 0);
}

#[test]
fn sigkill_follows_the_stop_signal_only_after_kill_timeout() {
    let t = token();
    let dir = scratch();
    let record = path_in(&dir, "record");
    let (mut pw, addr) = observe(&[
        "--match",
        &t,
        "--name",
        "web",
        "--max-memory-restart",
        "40M",
        "--kill-timeout",
        "2s",
    ]);
    let mut app = start_app(
        &t,
        &[
            ("ALLOC_MB", "64"),
            ("RECORD", &record),
            ("ON_TERM", "ignore"),
        ],
    );
    let lines = wait_lines_with_term(&record);
    let term_ms: u128 = lines
        .iter()
        .find_map(|l| l.strip_prefix("term ")?.parse().ok())
        .unwrap();
    let ended = common::wait_timeout(&mut app.0, PATIENCE).expect("SIGKILL ended it");
    let died_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(ended.signal(), Some(libc::SIGKILL), "{ended:?}");
    // Generous: SIGKILL is due 2 s after the stop signal was sent.
    assert!(
        died_ms - term_ms >= 1000,
        "SIGKILL came {} ms after SIGTERM",
        died_ms - term_ms
    );
    pw.wait_line(&["sending SIGKILL"]);
    // The container engine would start it again: the replacement follows
    // the memory stop, so it is not counted again as external.
    let next = start_app(&t, &[]);
    let s = wait_pid(&addr, next.id());
    assert_eq!(s["restarts"]["memory"], 1, "{s}");
    assert!(s["restarts"].get("external").is_none(), "{s}");
    end(next);
}

/// Waits for the app's "term" line.
fn wait_lines_with_term(record: &str) -> Vec<String> {
    common::wait_lines(record, "a term line", |l| {
        l.iter().any(|x| x.starts_with("term "))
    })
}

#[test]
fn without_permission_to_signal_the_memory_cap_says_how_to_fix_it() {
    let t = token();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(common::bin())
    .args(["observe", "--match", &t, "--max-memory-restart", "10M"]);
    let mut pw = Running::start_cmd(&mut cmd);
    pw.wait_line(&["observing processes"]);
    let dir = scratch();
    let record = path_in(&dir, "record");
    let app = start_app(&t, &[("ALLOC_MB", "32"), ("RECORD", &record)]);
    let line = pw.wait_line(&["not permitted to signal"]);
    assert!(line.contains("CAP_KILL") && line.contains("uid"), "{line}");
    assert!(common::alive(app.id() as i32), "the app keeps running");
    pw.signal(libc::SIGTERM);
    assert!(pw.wait_exit().success(), "procward stops cleanly");
    assert_eq!(pw.count_lines(&["not permitted to signal"]), 1, "said once");
    end(app);
}

/// A pod in miniature: a PID namespace whose PID 1 is a pause-like
/// `sleep`, the app and procward each entered into it from outside (their
/// parent is outside the namespace, as a container's first process's is).
#[test]
fn in_a_shared_pid_namespace_every_tree_but_procwards_and_pid1_is_the_app() {
    // --kill-child: when the test ends, the namespace's PID 1 dies and the
    // kernel kills everything in the namespace (pid_namespaces(7)).
    let pause = App(Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .args(["sleep", "600"])
        .spawn()
        .unwrap());
    let pid1 = wait_until("the namespace's PID 1", || {
        common::children_of(pause.id() as i32).first().copied()
    });
    let enter = |prog: &str| {
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid1.to_string(), "-p", "-m", "--", prog]);
        c
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let mut pw = Running::start_cmd(enter(common::bin().to_str().unwrap()).args([
        "observe",
        "--all",
        "--metrics",
        &addr,
    ]));
    pw.wait_line(&["serving /metrics"]);
    let dir = scratch();
    let t = token();
    let start_inside = |record: &str| {
        let nsenter = App(enter("python3")
            .arg(fixture("observe/app.py"))
            .arg(&t)
            .env("RECORD", record)
            .spawn()
            .unwrap());
        let up = wait_lines_with_prefix(record, "up ");
        let inner: i32 = up.trim_start_matches("up ").parse().unwrap();
        (nsenter, inner)
    };
    let (first, inner) = start_inside(&path_in(&dir, "first"));
    let line = pw.wait_line(&["found the main process"]);
    assert_eq!(
        common::pid_field(&line),
        inner,
        "pids as the namespace sees them"
    );
    // nsenter forked the app: kill the app itself, by its pid outside.
    let outer = common::children_of(first.id() as i32)[0];
    common::send(outer, libc::SIGKILL);
    drop(first);
    let (second, inner) = start_inside(&path_in(&dir, "second"));
    let line = pw.wait_line(&["new main process", "reason=\"external\""]);
    assert_eq!(common::pid_field(&line), inner);
    wait_until("an external restart in /metrics", || {
        metric(
            &addr,
            r#"procward_restarts_total{app="app",instance="0",reason="external"}"#,
        )
        .filter(|n| *n == 1.0)
    });
    drop(pause);
    drop(second);
    let _ = pw.wait_exit();
}

fn wait_lines_with_prefix(record: &str, prefix: &str) -> String {
    common::wait_lines(record, prefix, |l| l.iter().any(|x| x.starts_with(prefix)))
        .into_iter()
        .find(|x| x.starts_with(prefix))
        .unwrap()
}

#[test]
fn bad_observe_arguments_are_refused_with_what_to_use_instead() {
    let (code, _, err) = common::run_to_end(&["observe", "--all", "--ready", "ipc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use tcp:PORT or http://"), "{err}");
    let (code, _, err) = common::run_to_end(&["observe", "--match", "("]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid --match `(`"), "{err}");
    let (code, _, err) = common::run_to_end(&["observe"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--match <REGEX>|--exe <PATH>|--all"), "{err}");
}

#[test]
fn alone_in_its_pid_namespace_procward_says_the_namespace_must_be_shared() {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(common::bin())
        .args(["observe", "--all"]);
    let mut pw = Running::start_cmd(&mut cmd);
    let line = pw.wait_line(&["no process but procward's own is visible"]);
    assert!(line.contains("shareProcessNamespace: true"), "{line}");
}

/// A process file whose app has an `observe:` block: `procward run -c`
/// observes it instead of starting it, with the app keys that apply.
#[test]
fn an_app_with_an_observe_block_in_a_process_file_is_observed_not_started() {
    let t = token();
    let dir = scratch();
    let file = path_in(&dir, "procward.yaml");
    std::fs::write(
        &file,
        format!(
            "apps:\n  - name: web\n    observe:\n      match: \"{t}\"\n    max_memory_restart: 1G\n    kill_timeout: 5s\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut pw = Running::start(&["run", "-c", &file, "--metrics", &addr]);
    pw.wait_line(&["serving /metrics"]);
    let (_, body) = get(&addr, "/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["mode"], "observe", "{v}");
    assert_eq!(v["apps"][0]["name"], "web", "{v}");
    assert_eq!(v["apps"][0]["memory_limit"], 1u64 << 30, "{v}");
    assert_eq!(v["apps"][0]["instances"][0]["status"], "waiting", "{v}");
    let record = path_in(&dir, "record");
    let app = start_app(&t, &[("RECORD", &record)]);
    wait_for_line(&record, &format!("up {}", app.id()));
    let s = wait_pid(&addr, app.id());
    assert_eq!(s["status"], "online", "{s}");
    // procward's exit leaves the observed app running.
    pw.signal(libc::SIGTERM);
    assert_eq!(pw.wait_exit().code(), Some(0), "{:?}", pw.seen);
    assert!(common::alive(app.id() as i32), "the app is not procward's");
    end(app);
}

#[test]
fn a_started_apps_status_says_supervise() {
    let addr = format!("127.0.0.1:{}", free_port());
    let pw = Running::start(&["--metrics", &addr, "--", "sleep", "1000"]);
    let v = wait_until("/status", || {
        let (code, body) = TcpStream::connect(&addr)
            .ok()
            .map(|_| get(&addr, "/status"))?;
        (code == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    });
    assert_eq!(v["mode"], "supervise", "{v}");
    drop(pw);
}

/// `procward run -c FILE` with these apps: its exit code and stderr.
fn run_file(apps: &str) -> (i32, String) {
    let dir = scratch();
    let file = path_in(&dir, "procward.yaml");
    std::fs::write(&file, apps).unwrap();
    let (code, _, err) = common::run_to_end(&["run", "-c", &file]);
    (code, err)
}

#[test]
fn a_bad_observe_block_is_refused_at_its_line_and_column() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "apps:\n  - name: web\n    observe:\n      match: \"node (\"\n",
            &[
                "procward.yaml:4:14",
                "expected `match` to be a regular expression",
            ],
        ),
        (
            "apps:\n  - name: web\n    observe:\n      mach: node\n",
            &["procward.yaml:4:7", "found `mach`", "did you mean `match`?"],
        ),
        (
            "apps:\n  - name: web\n    observe:\n      match: node\n      exe: node\n",
            &["procward.yaml:5:7", "found `match` and `exe`"],
        ),
        (
            "apps:\n  - name: web\n    observe: {}\n",
            &["procward.yaml:3:14", "in `observe`, found none"],
        ),
        (
            "apps:\n  - name: web\n    script: server.js\n    observe:\n      match: node\n",
            &["procward.yaml:3:5", "in an observed app, found `script`"],
        ),
        (
            "apps:\n  - name: web\n    ready: ipc\n    observe:\n      all: true\n",
            &["procward.yaml:3:12", "need the app as procward's child"],
        ),
    ];
    for (file, want) in cases {
        let (code, err) = run_file(file);
        assert_eq!(code, 2, "{file}\n{err}");
        for w in want {
            assert!(err.contains(w), "{file}\nwanted {w:?} in:\n{err}");
        }
    }
}

#[test]
fn a_file_mixing_observed_and_started_apps_is_refused() {
    let (code, err) = run_file(
        "apps:\n  - name: web\n    observe:\n      match: node\n  - name: worker\n    script: sleep\n    args: \"1000\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("procward.yaml:2:5: expected every app to have `observe:` or none")
            && err.contains("`web` observed and `worker` started")
            && err.contains("--only"),
        "{err}"
    );
    // --only picks one kind.
    let dir = scratch();
    let file = path_in(&dir, "procward.yaml");
    std::fs::write(
        &file,
        "apps:\n  - name: web\n    observe:\n      match: node\n  - name: worker\n    script: \"true\"\n    autorestart: false\n",
    )
    .unwrap();
    let (code, _, err) = common::run_to_end(&["run", "-c", &file, "--only", "worker"]);
    assert_eq!(code, 0, "{err}");
}

/// JSON and JavaScript process files take the same block; `check` prints
/// the observed app with what applies to it, and prints it again from that.
#[test]
fn json_and_js_process_files_take_the_observe_block_too() {
    let dir = scratch();
    let js = path_in(&dir, "ecosystem.config.js");
    std::fs::write(
        &js,
        "module.exports = { apps: [{ name: 'web', observe: { exe: 'python3' }, ready: 'tcp:3000', max_memory_restart: '400M' }] };\n",
    )
    .unwrap();
    let (code, out, err) = common::run_to_end(&["check", "-c", &js]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "observe:\n    exe: python3",
        "ready: tcp:3000",
        "kill_signal: SIGTERM",
        "max_memory_restart: 419430400",
    ] {
        assert!(out.contains(want), "wanted {want:?} in:\n{out}");
    }
    let again = path_in(&dir, "again.yaml");
    std::fs::write(&again, &out).unwrap();
    let (code, out2, err) = common::run_to_end(&["check", "-c", &again]);
    assert_eq!((code, out2.as_str()), (0, out.as_str()), "{err}");
    let json = path_in(&dir, "procward.json");
    std::fs::write(
        &json,
        "{\"apps\": [{\"name\": \"web\",\n  \"observe\": {\"match\": \"(\"}}]}\n",
    )
    .unwrap();
    let (code, _, err) = common::run_to_end(&["run", "-c", &json]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("procward.json:2:24") && err.contains("regular expression"),
        "{err}"
    );
}

#[test]
fn check_refuses_a_file_mixing_observed_and_started_apps_too() {
    let dir = scratch();
    let file = path_in(&dir, "procward.yaml");
    std::fs::write(
        &file,
        "apps:\n  - name: worker\n    script: sleep\n  - name: web\n    observe:\n      all: true\n",
    )
    .unwrap();
    let (code, _, err) = common::run_to_end(&["check", "-c", &file]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("procward.yaml:4:5: expected every app"),
        "{err}"
    );
}
