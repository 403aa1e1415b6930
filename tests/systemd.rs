//! procward under a REAL systemd (252, in a systemd-nspawn container made by
//! scripts/tools/systemd-sandbox), driven by tests/systemd/check.sh.
//!
//! The shipped units run as they are (procward.service with
//! /etc/procward/procward.yaml, procward@web.service with
//! /etc/procward/web.yaml), then with drop-ins choosing the app:
//! `systemctl start` blocks until the Node app has said ready, StatusText is
//! procward's summary, `systemctl reload` restarts the apps and ends with
//! READY=1, `systemctl stop` stops cleanly, the watchdog kills a stopped
//! (hung) procward, plus listen_timeout (lenient and strict), a crash before
//! ready, garbage on the channel, an sd_notify app, a spoofed datagram, and
//! socket activation (a .socket unit; procward adopts the socket by name),
//! all under the units' hardening (`systemd-analyze security` below 3).
//!
//! Needs root (the sandbox installs systemd-nspawn and builds its tree on
//! first use); without root it says so and passes. The
//! sandbox is found at $SYSTEMD_SANDBOX, else scripts/tools/systemd-sandbox.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sandbox() -> PathBuf {
    std::env::var_os("SYSTEMD_SANDBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tools/systemd-sandbox")
        })
}

fn cannot_run() -> Option<&'static str> {
    // The sandbox installs its own host tools (systemd-container,
    // debootstrap) with apt-get, which needs root.
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    None
}

#[test]
fn procward_service_under_a_real_systemd() {
    if let Some(why) = cannot_run() {
        println!("SKIPPED procward_service_under_a_real_systemd: the systemd sandbox cannot run here ({why})");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = |src: &str, dest: &str| format!("{}:{dest}", root.join(src).display());
    let unit = |name: &str| root.join("systemd").join(name).display().to_string();
    let out = Command::new(sandbox())
        .env("SYSTEMD_SANDBOX_PACKAGES", "nodejs")
        .args(["run", "-t", "300"])
        .args([
            "-f",
            &format!("{}:/usr/local/bin/procward", env!("CARGO_BIN_EXE_procward")),
        ])
        .args([
            "-f",
            &file("tests/fixtures/ready", "/sandbox/fixtures/ready"),
        ])
        .args(["-u", &unit("procward.service")])
        .args(["-u", &unit("procward@.service")])
        .arg(root.join("tests/systemd/check.sh"))
        .output()
        .expect("run the systemd sandbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "checks failed under systemd ({}):\n{stdout}",
        out.status
    );
    assert!(stdout.contains("\n0 failed"), "{stdout}");
}
