//! Started with its standard descriptors closed (as a careless init may
//! start it), procward opens them on /dev/null before anything else, so
//! none of its own sockets becomes descriptor 0, 1 or 2 and the app starts
//! with all three open.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn closed_standard_descriptors_are_opened_on_dev_null() {
    let dir = scratch();
    let out = path_in(&dir, "fds");
    let mut cmd = Command::new(bin());
    cmd.args([
        "--no-autorestart",
        "--",
        "sh",
        "-c",
        "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2 > \"$1.tmp\"; mv \"$1.tmp\" \"$1\"",
        "sh",
        &out,
    ]);
    // SAFETY: only close(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..=2 {
                libc::close(fd);
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().expect("spawn procward");
    let status = wait_timeout(&mut child, PATIENCE).expect("procward did not exit");
    assert_eq!(code_of(status), 0);
    let text = wait_file(std::path::Path::new(&out));
    // The app's stdout is the file it writes; stdin and stderr are procward's.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "/dev/null", "stdin: {text}");
    assert_eq!(lines[2], "/dev/null", "stderr: {text}");
}
