//! The container case without a container engine: the static procward as
//! PID 1 of a new PID namespace, chrooted into a minimal root that holds
//! nothing but procward, busybox and an empty /proc — what a `FROM scratch`
//! or distroless image gives it.
//!
//! The static binary is built (common::static_binary) as
//! deploy/docker/Dockerfile builds it. tests/container_engine.rs runs the
//! real images under podman.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A minimal root: /procward, /bin/busybox with sh and sleep, /proc, /dev/null.
fn minimal_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    // Shells give background jobs /dev/null for stdin.
    let null = std::ffi::CString::new(root.join("dev/null").into_os_string().into_encoded_bytes())
        .unwrap();
    // SAFETY: mknod(2) with a valid path; we run as root.
    let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        rc,
        0,
        "mknod /dev/null: {}",
        std::io::Error::last_os_error()
    );
    std::fs::copy(static_binary(), root.join("procward")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is needed (apt-get install busybox-static)");
    for applet in ["sh", "sleep", "cat", "echo", "kill"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    dir
}

/// `unshare --pid --fork --mount-proc=ROOT/proc chroot ROOT /procward ARGS`.
fn in_container(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.arg("--pid")
        .arg("--fork")
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .arg(which("chroot"))
        .arg(root)
        .arg("/procward")
        .args(args)
        .env("PATH", "/bin");
    cmd
}

#[test]
fn static_binary_runs_as_pid1_in_an_empty_root_and_passes_the_exit_status_on() {
    let root = minimal_root();
    let script = "echo ppid=$PPID; exit 7";
    let out = in_container(
        root.path(),
        &["--no-autorestart", "--", "/bin/sh", "-c", script],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The app's parent is procward, and procward is PID 1.
    assert!(stdout.contains("ppid=1"), "stdout: {stdout}");
}

#[test]
fn sigterm_to_the_container_stops_the_app_and_reaps_its_orphans() {
    let root = minimal_root();
    let marker = root.path().join("started");
    // The app leaves two orphans behind (subshells whose parent exits), then
    // waits for SIGTERM; the orphans are re-parented to procward, PID 1.
    let script = "(sleep 1000 &) ; (sleep 1000 &) ; trap 'exit 0' TERM; echo up > /started; while :; do sleep 1; done";
    let mut run = Running::start_cmd(&mut in_container(
        root.path(),
        &["--", "/bin/sh", "-c", script],
    ));
    let _cleanup = KillOnDrop(run.pid());
    wait_file(&marker);
    // The outer pid of the namespace's init is unshare's child.
    let init = children_of(run.pid());
    assert_eq!(
        init.len(),
        1,
        "unshare should have one child, the namespace's PID 1"
    );
    let init = init[0];
    // The app and its two orphans are all children of PID 1 now.
    let children = children_of(init);
    assert_eq!(children.len(), 3, "children of PID 1: {children:?}");
    // An orphan that dies is reaped by PID 1: no zombie stays behind.
    let orphan = *children.iter().max().unwrap();
    send(orphan, libc::SIGKILL);
    wait_until(&format!("orphan {orphan} to be reaped by PID 1"), || {
        (!children_of(init).contains(&orphan)).then_some(())
    });
    send(init, libc::SIGTERM);
    let status = run.wait_exit();
    assert_eq!(code_of(status), 0, "seen:\n{}", run.seen.join("\n"));
    assert!(run.count_lines(&["stopping every app"]) >= 1);
}

/// The absolute path of a host program (PATH inside the root is /bin).
fn which(name: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found in PATH"))
}

/// Kills the namespace's init if a test fails half-way (killing unshare
/// alone would leave it running).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in children_of(self.0) {
            // SAFETY: kill(2) with integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
