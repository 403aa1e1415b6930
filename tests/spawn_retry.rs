//! A spawn that fails for want of a resource is retried with backoff and
//! counted as `spawn_failed`; it never ends procward, and the new process
//! still gets its IPC channel.

mod common;
use common::*;

fn set_nofile(pid: i32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on a pid with valid pointers.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn a_restart_without_free_descriptors_is_retried_until_they_come_back() {
    let dir = scratch();
    let out = path_in(&dir, "starts");
    let app = path_in(&dir, "app.js");
    std::fs::write(
        &app,
        r#"const fs = require('fs');
fs.appendFileSync(process.argv[2], (process.send ? 'channel ' : 'no-channel ') + process.pid + '\n');
if (process.send) process.send('ready');
setInterval(() => {}, 1 << 30);
"#,
    )
    .unwrap();
    let mut run = Running::start(&["--wait-ready", "--", "node", &app, &out]);
    let first = wait_lines(&out, "the first start", |l| !l.is_empty());
    assert!(first[0].starts_with("channel "), "{first:?}");
    let pid: i32 = first[0].split(' ').nth(1).unwrap().parse().unwrap();
    run.wait_line(&["to=\"online\""]);
    // No descriptor can be made above stdio: EMFILE at the restart.
    set_nofile(run.pid(), 3);
    send(pid, libc::SIGKILL);
    run.wait_line(&["retrying with backoff"]);
    run.wait_line(&["to=\"waiting\"", "reason=\"spawn_failed\""]);
    set_nofile(run.pid(), 1024);
    let lines = wait_lines(&out, "the restart", |l| l.len() >= 2);
    assert!(
        lines[1].starts_with("channel "),
        "restarted without its IPC channel: {lines:?}"
    );
    run.wait_line(&["to=\"starting\"", "reason=\"signal\""]);
    assert_eq!(run.child.try_wait().unwrap(), None, "procward exited");
    assert_eq!(
        run.count_lines(&["retrying with backoff"]),
        1,
        "logged once per burst"
    );
}
