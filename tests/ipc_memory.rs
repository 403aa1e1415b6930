//! What an app says on the IPC channel costs procward little memory,
//! however large: values it does not use are scanned over, not built.

mod common;

use common::*;

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

#[test]
fn sixty_four_large_ipc_messages_leave_procwards_memory_bounded() {
    let dir = scratch();
    let go = path_in(&dir, "go");
    let mut p = Running::start_cmd(
        std::process::Command::new(bin())
            .args([
                "--wait-ready",
                "--listen-timeout",
                "60s",
                "--strict-ready",
                "--",
            ])
            .arg("node")
            .arg(fixture("ready/ipc_flood.js"))
            .env("GO", &go),
    );
    p.wait_line(&["to=\"starting\""]);
    let before = status_kb(p.pid(), "VmRSS:");
    std::fs::write(&go, "").unwrap();
    p.wait_line(&["to=\"online\""]);
    let peak = status_kb(p.pid(), "VmHWM:");
    // 64 MB went through. Building each 1 MB array as a value took about
    // 6 MB more at the peak; one line's buffer is 1 MB.
    assert!(
        peak < before + 4 * 1024,
        "procward grew from {before} kB to a peak of {peak} kB"
    );
}
