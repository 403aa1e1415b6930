//! Resources, memory caps and the HTTP endpoints, with real Node apps, a
//! real promtool and a real Prometheus scraping procward.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, output_of_success, Running, PATIENCE};

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// procward with `--metrics` on a free port, once its server is up.
fn start_with_metrics(args: &[&str]) -> (Running, String) {
    start_with_metrics_env(args, &[])
}

fn start_with_metrics_env(args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(common::bin());
    cmd.args(["--metrics", &addr])
        .args(args)
        .envs(env.iter().copied());
    let mut pw = Running::start_cmd(&mut cmd);
    pw.wait_line(&["serving /metrics"]);
    (pw, addr)
}

/// One HTTP/1.1 request on a fresh connection: (status code, body).
fn request(addr: &str, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// The value of the series whose line starts with `series` (name and labels).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until `pred` holds for the file's contents.
fn wait_file_until(path: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {PATIENCE:?} in {}:\n{s}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn artifact_check() -> Option<PathBuf> {
    let p = repo("scripts/tools/artifact-check");
    p.exists().then_some(p)
}

#[test]
fn a_leaking_app_is_restarted_for_memory_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let cap: u64 = 150 * 1024 * 1024;
    let (mut pw, addr) = start_with_metrics_env(
        &[
            "--max-memory-restart",
            "150M",
            "--sample-interval",
            "500ms",
            "--",
            "node",
            fixture("metrics/leak.js").to_str().unwrap(),
        ],
        &[
            ("LEAK_MB", "20"),
            ("LEAK_EVERY_MS", "200"),
            ("RECORD", record.to_str().unwrap()),
        ],
    );
    let warn = pw.wait_line(&["memory above max_memory_restart"]);
    let log = pw.wait_line(&["reason=\"memory\""]);
    assert!(warn.contains("max_memory_restart=157286400"), "{warn}");
    assert!(log.contains("restarts=1"), "{log}");
    let text = wait_file_until(&record, "a second start", |s| {
        s.matches("start ").count() >= 2
    });
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let first_pid = lines[0][2];
    // When the app recorded itself above the cap; if procward saw the
    // crossing in the middle of an allocation, before the app could write
    // it down, the app's last record comes before the crossing, so timing
    // from it can only overstate the delay.
    let first_rss = || lines.iter().filter(|l| l[0] == "rss" && l[2] == first_pid);
    let crossed: u64 = first_rss()
        .find(|l| l[3].parse::<u64>().unwrap() > cap)
        .or_else(|| first_rss().next_back())
        .map(|l| l[1].parse().unwrap())
        .expect("the app recorded its memory");
    let peak: u64 = lines
        .iter()
        .filter(|l| l[0] == "rss" && l[2] == first_pid)
        .map(|l| l[3].parse().unwrap())
        .max()
        .unwrap();
    let restarted: u64 = lines.iter().filter(|l| l[0] == "start").nth(1).unwrap()[1]
        .parse()
        .unwrap();
    // Target: one interval (500 ms) plus the graceful stop; the bound only
    // catches breakage on a loaded machine.
    assert!(
        restarted - crossed < 5_000,
        "restart {} ms after crossing",
        restarted - crossed
    );
    assert!(peak < cap * 2, "peak RSS {peak} for a cap of {cap}");
    let (_, m) = get(&addr, "/metrics");
    assert_eq!(
        value(
            &m,
            r#"procward_restarts_total{app="leak",instance="0",reason="memory"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            r#"procward_memory_limit_bytes{app="leak",instance="0"}"#
        ),
        Some(cap as f64)
    );
}

#[test]
fn a_replacement_process_is_sampled_from_its_start() {
    // 25 MiB/s from Node's ~45 MB: each process crosses 100 MiB about 2 s
    // after it starts. With a 10 s interval, the next full pass after the
    // first memory restart comes long after the replacement crossed: only
    // sampling the replacement from its start stops it in time.
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let cap: u64 = 100 * 1024 * 1024;
    let (mut pw, _addr) = start_with_metrics_env(
        &[
            "--max-memory-restart",
            "100M",
            "--sample-interval",
            "10s",
            "--",
            "node",
            fixture("metrics/leak.js").to_str().unwrap(),
        ],
        &[
            ("LEAK_MB", "5"),
            ("LEAK_EVERY_MS", "200"),
            ("RECORD", record.to_str().unwrap()),
        ],
    );
    pw.wait_line(&["memory above max_memory_restart"]);
    pw.wait_line(&["memory above max_memory_restart"]);
    let text = wait_file_until(&record, "the replacement's stop signal", |s| {
        s.matches("signal ").count() >= 2
    });
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let second = lines.iter().filter(|l| l[0] == "start").nth(1).unwrap()[2];
    let ms = |l: &Vec<&str>| l[1].parse::<u64>().unwrap();
    let of_second = || lines.iter().filter(|l| l[2] == second);
    let crossed = of_second()
        .find(|l| l[0] == "rss" && l[3].parse::<u64>().unwrap() > cap)
        .map(ms)
        .expect("the replacement recorded itself over the cap");
    let signalled = of_second()
        .find(|l| l[0] == "signal")
        .map(ms)
        .expect("the replacement got a stop signal");
    // Milliseconds on an idle machine; the bound is far below the 10 s
    // interval a full pass would take.
    assert!(
        signalled.saturating_sub(crossed) < 3_000,
        "the replacement was signalled {} ms after crossing the cap",
        signalled.saturating_sub(crossed)
    );
}

/// Starts procward on the crash-then-run script and waits until it stays up.
fn crash_loop() -> (Running, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("runs");
    let (mut pw, addr) = start_with_metrics(&[
        "--name",
        "loop",
        "--",
        fixture("metrics/crash_then_run.sh").to_str().unwrap(),
        count.to_str().unwrap(),
    ]);
    pw.wait_line(&["to=\"online\"", "restarts=4"]);
    (pw, addr, dir)
}

#[test]
fn restart_counters_by_reason_are_exact_after_a_crash_loop() {
    let (_pw, addr, _dir) = crash_loop();
    let (code, m) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let r = |reason: &str| {
        value(
            &m,
            &format!(r#"procward_restarts_total{{app="loop",instance="0",reason="{reason}"}}"#),
        )
    };
    assert_eq!(r("crash"), Some(3.0), "{m}");
    assert_eq!(r("signal"), Some(1.0));
    for other in [
        "exit",
        "memory",
        "watchdog",
        "reload",
        "manual",
        "ready_timeout",
    ] {
        assert_eq!(r(other), Some(0.0), "{other}");
    }
    assert_eq!(
        value(
            &m,
            r#"procward_exits_total{app="loop",code="3",instance="0",signal=""}"#
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            r#"procward_exits_total{app="loop",code="",instance="0",signal="SIGKILL"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, r#"procward_up{app="loop",instance="0"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            r#"procward_state{app="loop",instance="0",state="online"}"#
        ),
        Some(1.0)
    );
    let (_, status) = get(&addr, "/status");
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    let inst = &s["apps"][0]["instances"][0];
    assert_eq!(inst["restart_time"], 4, "{status}");
    assert_eq!(inst["restarts"]["crash"], 3);
    assert_eq!(inst["status"], "online");
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let (mut pw, addr) = start_with_metrics(&[
        "--metrics-compat",
        "pm2",
        "--max-memory-restart",
        "1G",
        "-i",
        "2",
        "--sample-interval",
        "100ms",
        "--",
        "node",
        fixture("metrics/idle.js").to_str().unwrap(),
    ]);
    pw.wait_line(&["instance=1", "to=\"online\""]);
    let (code, m) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(m.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics:\n{findings}\n{m}"
    );
    for name in [
        "pm2_up{",
        "pm2_cpu{",
        "pm2_memory{",
        "pm2_uptime{",
        "pm2_restarts{",
        "pm2_instances{",
        "process_resident_memory_bytes",
        "procward_build_info{",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    assert_eq!(
        value(&m, r#"pm2_instances{instance="1",name="idle"}"#),
        Some(2.0)
    );
}

#[test]
fn a_real_prometheus_scrapes_restart_counters() {
    let (_pw, addr, _dir) = crash_loop();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: procward\n    static_configs: [{{targets: ['{addr}']}}]\n",
            repo("deploy/prometheus/alerts.yml").display()
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package) is installed");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(prom);
    let query = "/api/v1/query?query=procward_restarts_total%7Breason%3D%22crash%22%7D";
    // Prometheus applies new targets on a 5 s tick, so the first sample can
    // take several seconds: poll its API, the only event it offers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let got = TcpStream::connect(&web).ok().map(|_| get(&web, query));
        if let Some((200, body)) = &got {
            if body.contains("\"value\"") {
                break body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus had no procward_restarts_total within 60 s: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = &v["data"]["result"][0];
    assert_eq!(result["metric"]["app"], "loop", "{body}");
    assert_eq!(result["value"][1], "3", "{body}");
}

#[test]
fn alert_rules_and_scrape_config_pass_promtool() {
    let run = |args: &[&str]| {
        output_of_success(
            Command::new("promtool")
                .args(args)
                .current_dir(repo("deploy/prometheus")),
            &format!("promtool {args:?}"),
        );
    };
    run(&["check", "rules", "alerts.yml"]);
    run(&["test", "rules", "alerts_test.yml"]);
    run(&["check", "config", "prometheus.yml"]);
}

#[test]
fn the_dashboard_and_rules_work_against_a_live_procward() {
    let Some(tool) = artifact_check() else {
        panic!("scripts/tools/artifact-check is missing");
    };
    let dashboard = repo("deploy/grafana/procward-dashboard.json");
    output_of_success(
        Command::new(&tool).arg("dashboard").arg(&dashboard),
        "artifact-check dashboard",
    );
    let (_pw, addr) = start_with_metrics(&[
        "--max-memory-restart",
        "1G",
        "--sample-interval",
        "200ms",
        "--",
        "node",
        fixture("metrics/idle.js").to_str().unwrap(),
    ]);
    output_of_success(
        Command::new(&tool)
            .args([
                "scrape-check",
                &addr,
                "--metric-prefix",
                "procward_",
                "--rules",
            ])
            .arg(repo("deploy/prometheus/alerts.yml"))
            .arg("--dashboard")
            .arg(&dashboard),
        "artifact-check scrape-check",
    );
}

/// Runs procward with `args` until the app is online and sampled, reads
/// every endpoint, stops it; returns (everything served, its log lines).
fn served_and_logged(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let (mut pw, addr) = start_with_metrics_env(args, env);
    pw.wait_line(&["to=\"online\""]);
    // Once a sample is in, /status shows every field it has.
    let deadline = Instant::now() + PATIENCE;
    while get(&addr, "/status").1.contains("\"threads\":0") {
        assert!(Instant::now() < deadline, "no sample within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = request(&addr, b"NOT HTTP\r\n\r\n");
    let mut seen = String::new();
    for path in ["/metrics", "/status", "/readyz", "/healthz", "/nope"] {
        let (_, body) = get(&addr, path);
        seen.push_str(&body);
    }
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
    // The app really ran (so the checks of the callers can fail).
    assert!(seen.contains("\"pid\""), "{seen}");
    (seen, pw.seen.join("\n"))
}

#[test]
fn a_secret_in_the_apps_environment_and_arguments_stays_inside() {
    const ENV_SECRET: &str = "env-s3cr3t-7f1e";
    const ARG_SECRET: &str = "arg-s3cr3t-91c2";
    let (seen, logs) = served_and_logged(
        &[
            "--log-level",
            "debug",
            "--",
            "node",
            fixture("metrics/idle.js").to_str().unwrap(),
            ARG_SECRET,
        ],
        &[("API_TOKEN", ENV_SECRET)],
    );
    for secret in [ENV_SECRET, ARG_SECRET] {
        assert!(!seen.contains(secret), "{secret} served over HTTP:\n{seen}");
        assert!(
            !logs.contains(secret),
            "{secret} in procward's logs:\n{logs}"
        );
    }
}

/// Inline code has no script file to name the app after: the app is named
/// after its interpreter, not after the code (which held the secret in the
/// `app` label, /status and every log line).
#[test]
fn a_secret_in_inline_code_stays_inside() {
    const CODE_SECRET: &str = "code-s3cr3t-5d0a";
    let python = format!("TOKEN = '{CODE_SECRET}'\nimport time\ntime.sleep(1000)");
    let node = format!("const token = '{CODE_SECRET}'; setInterval(() => {{}}, 1000)");
    for cmd in [
        ["python3", "-c", python.as_str()],
        ["node", "-e", node.as_str()],
    ] {
        let mut args = vec!["--log-level", "debug", "--"];
        args.extend(cmd);
        let (seen, logs) = served_and_logged(&args, &[]);
        assert!(
            seen.contains(&format!("app=\"{}\"", cmd[0])),
            "not named {}:\n{seen}",
            cmd[0]
        );
        assert!(
            !seen.contains(CODE_SECRET),
            "{CODE_SECRET} served over HTTP:\n{seen}"
        );
        assert!(
            !logs.contains(CODE_SECRET),
            "{CODE_SECRET} in procward's logs:\n{logs}"
        );
    }
}

#[test]
fn malformed_http_gets_400_and_procward_keeps_serving() {
    let (_pw, addr) =
        start_with_metrics(&["--", "node", fixture("metrics/idle.js").to_str().unwrap()]);
    assert_eq!(request(&addr, b"GARBAGE\r\n\r\n").0, 400);
    assert_eq!(request(&addr, b"GET /metrics HTTP/9.9\r\n\r\n").0, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(request(&addr, huge.as_bytes()).0, 431);
    assert_eq!(
        request(
            &addr,
            b"POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        .0,
        405
    );
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (_, m) = get(&addr, "/metrics");
    assert_eq!(
        value(&m, r#"procward_dropped_inputs_total{input="http"}"#),
        Some(3.0),
        "{m}"
    );

    // Idle connections fill the cap; the next one is still served, the
    // quietest idle one making room, and that is counted.
    let idle: Vec<TcpStream> = (0..70)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "not served over the connection cap: {}",
        String::from_utf8_lossy(&buf)
    );
    drop(idle);
    let deadline = Instant::now() + PATIENCE;
    let m = loop {
        let (code, m) = get(&addr, "/metrics");
        if code == 200 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "procward stopped serving after the connection cap"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        value(&m, r#"procward_dropped_inputs_total{input="http_busy"}"#).unwrap() >= 1.0,
        "{m}"
    );
}

#[test]
fn readyz_names_what_is_not_ready() {
    let (mut pw, addr) = start_with_metrics(&[
        "--wait-ready",
        "--listen-timeout",
        "3s",
        "--",
        "node",
        fixture("metrics/idle.js").to_str().unwrap(),
    ]);
    pw.wait_line(&["to=\"starting\""]);
    let (code, body) = get(&addr, "/readyz");
    assert_eq!(
        (code, body.as_str()),
        (503, "not ready: idle/0 (starting)\n")
    );
    // No readiness message comes, so PM2's rule makes it ready at listen_timeout.
    // The snapshot is published in the same loop turn as the transition,
    // before the HTTP task runs again.
    pw.wait_line(&["to=\"online\""]);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".to_string()));
    let (_, m) = get(&addr, "/metrics");
    assert_eq!(
        value(&m, r#"procward_ready{app="idle",instance="0"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&m, r#"procward_time_to_ready_seconds_count{app="idle"}"#),
        Some(1.0)
    );
}

#[test]
fn instances_over_the_cap_are_restarted_one_at_a_time() {
    let (mut pw, _addr) = start_with_metrics_env(
        &[
            "-i",
            "2",
            "--max-memory-restart",
            "120M",
            "--sample-interval",
            "200ms",
            "--",
            "node",
            fixture("metrics/leak.js").to_str().unwrap(),
        ],
        &[("LEAK_MB", "30"), ("LEAK_EVERY_MS", "100")],
    );
    // Both instances leak at the same pace, so both cross the cap together;
    // the second restart may only begin once the first instance runs again.
    let first = pw.wait_line(&["memory above max_memory_restart"]);
    let inst = if first.contains("instance=0") {
        "instance=0"
    } else {
        "instance=1"
    };
    pw.wait_line(&["memory above max_memory_restart"]);
    let lines = pw.seen.clone();
    let at = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let second = lines
        .iter()
        .rposition(|l| l.contains("memory above max_memory_restart"))
        .unwrap();
    let back = at(&|l: &str| l.contains(inst) && l.contains("reason=\"memory\""))
        .expect("first instance restarted");
    assert!(
        back < second,
        "a second memory restart began before the first instance was back:\n{}",
        lines.join("\n")
    );
}
