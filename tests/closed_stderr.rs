//! procward keeps supervising when its own stderr is a pipe nobody reads
//! any more: log writes fail with EPIPE, its own SIGPIPE is not the app's
//! business, and nothing else changes.

mod common;
use common::*;
use std::process::{Command, Stdio};

#[test]
fn procward_keeps_working_when_its_stderr_is_a_closed_pipe() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let mut child = Command::new(bin())
        .args([
            "--",
            "python3",
            &core("catch.py"),
            &out,
            "child",
            "--exit",
            "2:0",
            "--exit",
            "15:9",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn procward");
    drop(child.stderr.take());
    let pid = child.id() as i32;
    wait_lines(&out, "ready", |l| !l.is_empty());
    send(pid, libc::SIGUSR1);
    wait_for_line(&out, &format!("child {}", libc::SIGUSR1));
    // A reload logs several lines, each failing with EPIPE.
    send(pid, libc::SIGHUP);
    wait_lines(&out, "a second start", |l| {
        l.iter().filter(|x| x.contains(" ready ")).count() == 2
    });
    send(pid, libc::SIGTERM);
    let status = wait_timeout(&mut child, PATIENCE).expect("procward did not exit");
    assert_eq!(code_of(status), 9);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains(&format!("child {}\n", libc::SIGPIPE)),
        "procward's own SIGPIPE was forwarded:\n{text}"
    );
}
