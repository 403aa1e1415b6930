//! Hardening: what an app, a client or an unlucky operator can do to
//! procward must not take it down. Descriptors sent on the notify socket
//! are closed, many idle HTTP connections leave /healthz answering, a
//! stderr nobody reads does not stop the event loop, and an unsafe runtime
//! directory is refused.
//!
//! `PROCWARD_BIN` runs another build under the same tests, to measure the
//! figures before a change.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn procward() -> PathBuf {
    std::env::var_os("PROCWARD_BIN").map_or_else(bin, PathBuf::from)
}

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// One `GET path` on a fresh connection: the status code (0 when there was
/// no answer within `limit`).
fn get_within(addr: &str, path: &str, limit: Duration) -> u16 {
    let Ok(sock) = addr.parse() else { return 0 };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, limit) else {
        return 0;
    };
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Open descriptors of a process.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn pid_in(dir: &Path) -> i32 {
    wait_file(&dir.join("pid")).trim().parse().unwrap()
}

/// Sends `datagrams` datagrams with 20 descriptors each to `socket`, from
/// a process outside the app's tree.
fn send_fds_from_outside(socket: &str, datagrams: usize) {
    let code = format!(
        "import os, socket\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.connect({socket:?})\n\
         fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(20)]\n\
         for _ in range({datagrams}):\n    socket.send_fds(s, [b'READY=1'], fds)\n"
    );
    output_of_success(
        Command::new("python3").args(["-c", &code]),
        "sending descriptors from outside",
    );
}

/// Regression (hardening item 1): more than 16 descriptors in a notify
/// datagram truncated the control data, and none of those that arrived
/// were closed: 40 datagrams took procward from about 10 to 650 open fds,
/// and under a low `ulimit -n` restarted apps got no NOTIFY_SOCKET.
#[test]
fn descriptors_sent_on_the_notify_socket_are_all_closed() {
    let dir = scratch();
    let addr = free_addr();
    let app = fixture("hardening/fd_flood.py");
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=200:200")
        .arg(procward())
        .args(["--metrics", &addr, "--ready", "notify", "--"])
        .args([
            "python3",
            app.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ])
        .env("RUNTIME_DIRECTORY", dir.path());
    let mut pw = Running::start_cmd(&mut cmd);
    pw.wait_line(&["to=\"online\""]);
    let socket = wait_file(&dir.path().join("socket")).trim().to_string();
    let first = pid_in(dir.path());
    let before = fd_count(pw.pid());

    // From outside the app's tree, then from the app itself; the app's
    // last datagram, without descriptors, comes after all of them.
    send_fds_from_outside(&socket, 40);
    std::fs::write(dir.path().join("flood"), "").unwrap();
    pw.wait_line(&["app status", "status=\"flooded\""]);
    let after = fd_count(pw.pid());
    eprintln!("procward's open fds: {before} before 80 datagrams of 20 descriptors, {after} after");
    assert!(
        after <= before + 2,
        "procward kept descriptors: {before} open before, {after} after"
    );
    assert_eq!(get_within(&addr, "/healthz", PATIENCE), 200);

    // A restarted app still gets its notify socket and is ready again.
    std::fs::remove_file(dir.path().join("socket")).unwrap();
    send(first, libc::SIGKILL);
    let line = pw.wait_line(&["to=\"online\""]);
    assert_ne!(pid_field(&line), first, "{line}");
    let socket = wait_file(&dir.path().join("socket"));
    assert!(
        !socket.trim().is_empty(),
        "the restarted app got no NOTIFY_SOCKET"
    );
}
