//! Observe mode in a real pod: podman (runc, vfs storage, settings of our
//! own through CONTAINERS_CONF) runs a pod whose containers share one PID
//! and one network namespace (`podman pod create --share pid,net`), as a
//! Kubernetes pod with `shareProcessNamespace: true` does. The app
//! container runs a leaking Node app with `--restart always`; procward runs
//! `procward observe` in a container of its own. The image is made offline
//! with `podman import` of a root tree holding busybox, node, procward and
//! the libraries they link.
//!
//! Skips (and says so) only when podman is not installed.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{fixture, output_of_success, wait_until};

const IMAGE: &str = "localhost/procward-sidecar-test";

/// The engine's settings: runc, cgroupfs, no raised RLIMIT_NOFILE (not
/// permitted on every host), and vfs storage of its own.
const CONTAINERS_CONF: &str = r#"[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"#;
const STORAGE_CONF: &str = r#"[storage]
driver = "vfs"
runroot = "/run/procward-sidecar-test/containers"
graphroot = "/var/lib/procward-sidecar-test/containers"
"#;

/// Builds the root tree and imports it: busybox, node, procward, the
/// libraries the last two link, and `/pause` for the pod's infra container.
const IMPORT: &str = r#"set -euo pipefail
procward=$1 tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,etc,tmp,usr/bin,proc,dev,sys}
chmod 1777 "$tree/tmp"
cp /bin/busybox "$tree/bin/busybox"
for applet in $("$tree/bin/busybox" --list); do
    [ -e "$tree/bin/$applet" ] || ln -s busybox "$tree/bin/$applet"
done
printf '#!/bin/sh\nexec sleep 2147483647\n' >"$tree/pause"
chmod +x "$tree/pause"
node=$(readlink -f "$(command -v node)")
cp "$node" "$tree/usr/bin/node"
cp "$procward" "$tree/procward"
for f in "$node" "$procward"; do
    for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
        mkdir -p "$tree$(dirname "$lib")"
        cp -L "$lib" "$tree$lib"
    done
done
tar -C "$tree" -c . | podman import --quiet --change 'ENV PATH=/usr/bin:/bin' - "$2" >/dev/null
"#;

fn conf_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("containers.conf"), CONTAINERS_CONF).unwrap();
        std::fs::write(d.path().join("storage.conf"), STORAGE_CONF).unwrap();
        d
    })
    .path()
}

fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf_dir().join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", conf_dir().join("storage.conf"));
    cmd
}

fn podman_ok(args: &[&str]) -> String {
    output_of_success(podman().args(args), &format!("podman {args:?}"))
}

/// Imports the image once; false (after saying so) when podman is missing.
fn engine(test: &str) -> bool {
    if Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("SKIPPED {test}: podman is not installed (apt-get install podman runc)");
        return false;
    }
    static IMPORTED: OnceLock<()> = OnceLock::new();
    IMPORTED.get_or_init(|| {
        output_of_success(
            Command::new("bash")
                .args(["-c", IMPORT, "import"])
                .arg(common::bin())
                .arg(IMAGE)
                .envs(podman().get_envs().map(|(k, v)| (k, v.unwrap()))),
            "podman import of the test image",
        );
    });
    true
}

/// A pod, removed with its containers when dropped.
struct Pod(String);

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman()
            .args(["pod", "rm", "--force", "--time", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn metric(addr: &str, prefix: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_engine_restarts_the_app_after_the_memory_stop_and_the_counts_carry_across() {
    if !engine("sidecar_pod") {
        return;
    }
    let pod = Pod(format!("procward-sidecar-{}", std::process::id()));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    podman_ok(&[
        "pod",
        "create",
        "--name",
        &pod.0,
        "--share",
        "pid,net",
        "--network",
        "host",
        "--infra-image",
        IMAGE,
        "--infra-command",
        "/pause",
    ]);
    let app = format!("{}-app", pod.0);
    let leak = format!("{}:/leak.js:ro", fixture("observe/leak.js").display());
    podman_ok(&[
        "run",
        "--detach",
        "--pod",
        &pod.0,
        "--name",
        &app,
        "--restart",
        "always",
        "--volume",
        &leak,
        IMAGE,
        "node",
        "/leak.js",
    ]);
    let sidecar = format!("{}-procward", pod.0);
    podman_ok(&[
        "run",
        "--detach",
        "--pod",
        &pod.0,
        "--name",
        &sidecar,
        IMAGE,
        "/procward",
        "observe",
        "--match",
        "^node /leak.js",
        "--max-memory-restart",
        "80M",
        "--kill-timeout",
        "3s",
        "--metrics",
        &addr,
    ]);
    let memory = r#"procward_restarts_total{app="app",instance="0",reason="memory"}"#;
    wait_until("two memory stops in /metrics", || {
        metric(&addr, memory).filter(|n| *n >= 2.0)
    });
    let restarted: u64 = podman_ok(&["inspect", "--format", "{{.RestartCount}}", &app])
        .trim()
        .parse()
        .unwrap();
    assert!(restarted >= 1, "podman restarted the app container");
    let external = r#"procward_restarts_total{app="app",instance="0",reason="external"}"#;
    assert_eq!(
        metric(&addr, external),
        Some(0.0),
        "a restart after the memory stop is the memory stop's"
    );
    let logs = podman_ok(&["logs", &app]);
    assert!(
        logs.contains("draining"),
        "the app drained on SIGTERM: {logs}"
    );
    let pw_logs = podman_ok(&["logs", &sidecar]);
    assert!(
        !pw_logs.contains("sending SIGKILL"),
        "no SIGKILL was needed: {pw_logs}"
    );
}
