//! The images of deploy/docker/ built and run by a real container engine:
//! podman with runc, vfs storage and the settings in tests/container/
//! (containers.conf, storage.conf). tests/container/images.sh builds them
//! offline: base images made with `podman import`, `--pull=never`, the
//! static procward (common::static_binary) standing in for the Rust build
//! stage.
//!
//! Needs root and podman (scripts/test installs podman and runc); without
//! root each test says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

/// The image of deploy/docker/Dockerfile (busybox base).
const PROCWARD: &str = "localhost/procward-test";
/// The image of deploy/docker/Dockerfile.node-app (examples/web).
const WEB: &str = "localhost/procward-test-web";

/// tests/container/: the engine's settings and the image builder.
fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/container")
}

fn podman() -> Command {
    let conf = here();
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", conf.join("storage.conf"));
    cmd
}

/// Builds the images once per run; false (after saying so) without root.
fn engine(test: &str) -> bool {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED {test}: podman needs root here");
        return false;
    }
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        output_of_success(
            Command::new(here().join("images.sh"))
                .arg(static_binary())
                .envs(podman().get_envs().map(|(k, v)| (k, v.unwrap()))),
            "tests/container/images.sh (podman and runc are needed: apt-get install podman runc)",
        );
    });
    true
}

/// A container name unique to this test run; the container is removed when
/// the value is dropped, whatever happened.
struct Name(String);

impl Name {
    fn new(test: &str) -> Name {
        Name(format!("procward-{test}-{}", std::process::id()))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `podman run --rm --name NAME --network none ARGS`, attached: procward's
/// stderr comes through podman's, and podman exits with the container's
/// status.
fn run(name: &Name, args: &[&str]) -> Running {
    Running::start_cmd(
        podman()
            .args(["run", "--rm", "--name", &name.0, "--network", "none"])
            .args(args)
            .stdout(Stdio::null()),
    )
}

/// Runs `podman ARGS` and returns its output; fails the test unless it
/// succeeds.
fn podman_ok(args: &[&str]) -> String {
    output_of_success(podman().args(args), &format!("podman {args:?}"))
}

/// The host pid of the container's PID 1.
fn pid1(name: &Name) -> i32 {
    podman_ok(&["inspect", "--format", "{{.State.Pid}}", &name.0])
        .trim()
        .parse()
        .expect("a pid from podman inspect")
}

#[test]
fn procward_is_pid1_of_the_image_and_the_apps_exit_status_is_the_containers() {
    if !engine("procward_is_pid1") {
        return;
    }
    let name = Name::new("pid1");
    let script = "echo ppid=$PPID pid1=$(tr '\\0' ' ' < /proc/1/cmdline) >&2; exit 7";
    let mut pw = run(
        &name,
        &[PROCWARD, "--no-autorestart", "--", "sh", "-c", script],
    );
    let line = pw.wait_line(&["ppid="]);
    assert!(
        line.contains("ppid=1 pid1=/procward --no-autorestart"),
        "{line}"
    );
    assert_eq!(code_of(pw.wait_exit()), 7, "{}", pw.seen.join("\n"));
}

#[test]
fn podman_stop_is_graceful_and_the_apps_exit_code_becomes_the_containers() {
    if !engine("podman_stop") {
        return;
    }
    let name = Name::new("stop");
    // Ready once started; on SIGTERM a short clean-up, then exit code 3.
    let app = "process.send('ready'); \
               process.on('SIGTERM', () => setTimeout(() => process.exit(3), 200)); \
               setInterval(() => {}, 1000)";
    let mut pw = run(&name, &[WEB, "node", "-e", app]);
    pw.wait_line(&["to=\"online\""]);
    let t0 = Instant::now();
    podman_ok(&["stop", "--time", "30", &name.0]);
    let took = t0.elapsed();
    // Within the grace period: podman did not need its SIGKILL.
    assert!(took < Duration::from_secs(20), "podman stop took {took:?}");
    assert_eq!(code_of(pw.wait_exit()), 3, "{}", pw.seen.join("\n"));
    assert_eq!(pw.count_lines(&["stopping every app", "signal=SIGTERM"]), 1);
}

#[test]
fn podman_kill_hup_reloads_the_app() {
    if !engine("podman_kill_hup") {
        return;
    }
    let name = Name::new("hup");
    let mut pw = run(&name, &[WEB]);
    let first = pid_field(&pw.wait_line(&["to=\"online\""]));
    podman_ok(&["kill", "--signal", "HUP", &name.0]);
    pw.wait_line(&["reason=\"reload\""]);
    let second = pid_field(&pw.wait_line(&["to=\"online\""]));
    assert_ne!(first, second, "the app was not restarted");
    // The reloaded app serves: the image's HEALTHCHECK-style request, to the app.
    let served = podman_ok(&[
        "exec",
        &name.0,
        "node",
        "-e",
        "require('http').get('http://127.0.0.1:3000/', r => r.pipe(process.stdout))",
    ]);
    assert!(served.contains(&format!("(pid {second})")), "{served}");
    podman_ok(&["stop", "--time", "30", &name.0]);
    assert_eq!(code_of(pw.wait_exit()), 0, "{}", pw.seen.join("\n"));
}

/// `podman exec CTR procward status`, as `docker exec` would: a second
/// process in the container's namespaces reaches the running procward over
/// its control socket and lists the app.
#[test]
fn podman_exec_procward_status_lists_the_running_app() {
    if !engine("podman_exec_status") {
        return;
    }
    let name = Name::new("status");
    let mut pw = run(&name, &[WEB]);
    let pid = pid_field(&pw.wait_line(&["to=\"online\""]));
    let table = podman_ok(&["exec", &name.0, "procward", "status"]);
    assert!(table.contains("online"), "{table}");
    assert!(table.contains(&format!(" {pid} ")), "{table}");
    let json = podman_ok(&["exec", &name.0, "procward", "status", "--json"]);
    assert!(json.contains(&format!("\"pid\": {pid},")), "{json}");
    podman_ok(&["stop", "--time", "30", &name.0]);
    assert_eq!(code_of(pw.wait_exit()), 0, "{}", pw.seen.join("\n"));
}

#[test]
fn orphans_are_reaped_inside_the_container() {
    if !engine("orphans_are_reaped") {
        return;
    }
    let name = Name::new("orphans");
    // Two orphans (subshells whose parent exits) are re-parented to PID 1.
    let script = "(sleep 1000 &) ; (sleep 1000 &) ; trap 'exit 0' TERM; echo orphans-left >&2; \
                  while :; do sleep 1; done";
    let mut pw = run(&name, &[PROCWARD, "--", "sh", "-c", script]);
    pw.wait_line(&["orphans-left"]);
    let init = pid1(&name);
    let children = wait_until("the app and its two orphans under PID 1", || {
        let c = children_of(init);
        (c.len() == 3).then_some(c)
    });
    let orphan = *children.iter().max().unwrap();
    send(orphan, libc::SIGKILL);
    wait_until(&format!("orphan {orphan} to be reaped by PID 1"), || {
        (!children_of(init).contains(&orphan)).then_some(())
    });
    assert!(
        zombies_of(init).is_empty(),
        "zombies: {:?}",
        zombies_of(init)
    );
    podman_ok(&["stop", "--time", "30", &name.0]);
    assert_eq!(code_of(pw.wait_exit()), 0, "{}", pw.seen.join("\n"));
}

#[test]
fn podman_run_it_gives_the_app_the_terminal_and_ctrl_c_stops_both() {
    if !engine("podman_run_it") {
        return;
    }
    let name = Name::new("tty");
    // What the app sees of the terminal: a tty on stdin, its process group
    // and the terminal's foreground group (fields 5 and 8 of /proc/PID/stat).
    let script = "[ -t 0 ] && echo stdin-is-a-tty; \
                  echo pgrp=$(cut -d' ' -f5 /proc/$$/stat) tpgid=$(cut -d' ' -f8 /proc/$$/stat); \
                  exec sleep 1000";
    // Ctrl-C is typed once the app has printed what it sees.
    let out = Command::new("python3")
        .arg(core("in_terminal.py"))
        .arg("tpgid=")
        .arg("podman")
        .args(["run", "-it", "--rm", "--name", &name.0, "--network", "none"])
        .args([PROCWARD, "--", "sh", "-c", script])
        .envs(podman().get_envs().map(|(k, v)| (k, v.unwrap())))
        .output()
        .expect("run in_terminal.py");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().next(),
        Some(format!("exit {}", 128 + libc::SIGINT).as_str()),
        "{text}"
    );
    assert!(text.contains("stdin-is-a-tty"), "{text}");
    let seen = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("pgrp="))
        .expect("the app printed its groups");
    let (pgrp, tpgid) = seen.split_once(" tpgid=").expect("pgrp=N tpgid=N");
    assert_eq!(pgrp, tpgid, "the app is the terminal's foreground:\n{text}");
    assert!(text.contains("stopping every app signal=SIGINT"), "{text}");
    assert!(
        !text.contains("reason=\"signal\""),
        "the app was restarted:\n{text}"
    );
}

#[test]
fn the_images_healthcheck_asks_healthz() {
    if !engine("healthcheck") {
        return;
    }
    let name = Name::new("health");
    let mut pw = run(&name, &[WEB]);
    pw.wait_line(&["to=\"online\""]);
    let health = || {
        podman()
            .args(["healthcheck", "run", &name.0])
            .output()
            .expect("podman healthcheck run")
            .status
            .success()
    };
    assert!(health(), "healthy while procward runs");
    // A frozen procward answers nothing: the check gives up after 2 s and fails.
    podman_ok(&["kill", "--signal", "STOP", &name.0]);
    let frozen = health();
    podman_ok(&["kill", "--signal", "CONT", &name.0]);
    assert!(!frozen, "healthy while procward was stopped");
    assert!(health(), "healthy again once procward runs");
    podman_ok(&["stop", "--time", "30", &name.0]);
    assert_eq!(code_of(pw.wait_exit()), 0, "{}", pw.seen.join("\n"));
}

#[test]
fn a_memory_limit_above_max_memory_restart_restarts_the_app_before_the_oom_killer() {
    if !engine("memory_limit") {
        return;
    }
    let name = Name::new("memory");
    let fixtures = format!("{}:/fixtures:ro", fixture("metrics").display());
    // 20 MiB every 200 ms against a 256 MiB container without swap; procward
    // restarts the app at 100 MiB.
    let mut pw = run(
        &name,
        &[
            "--memory",
            "256m",
            "--memory-swap",
            "256m",
            "--volume",
            &fixtures,
            "--env",
            "LEAK_MB=20",
            "--env",
            "LEAK_EVERY_MS=200",
            "--entrypoint",
            "procward",
            WEB,
            "--max-memory-restart",
            "100M",
            "--sample-interval",
            "200ms",
            "--",
            "node",
            "/fixtures/leak.js",
        ],
    );
    // Two memory restarts: the limit is hit again and again, never the OOM killer.
    pw.wait_line(&["reason=\"memory\""]);
    pw.wait_line(&["reason=\"memory\""]);
    let limit = podman_ok(&[
        "exec",
        &name.0,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(limit.trim(), (256u64 << 20).to_string());
    let oom = podman_ok(&[
        "exec",
        &name.0,
        "cat",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ]);
    assert!(oom.contains("oom_kill 0"), "{oom}");
    let state = podman_ok(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.OOMKilled}}",
        &name.0,
    ]);
    assert_eq!(state.trim(), "true false");
    assert_eq!(pw.count_lines(&["signal=SIGKILL"]), 0);
    podman_ok(&["stop", "--time", "30", &name.0]);
    pw.wait_exit();
}
