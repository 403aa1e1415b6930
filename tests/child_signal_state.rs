//! Children start with an empty signal mask and default dispositions,
//! whatever procward inherited or blocks itself (tini's `restore_signals`).

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn mask_lines(out: &str) -> String {
    out.lines()
        .filter(|l| l.starts_with("SigBlk") || l.starts_with("SigIgn"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_child_starts_with_no_blocked_and_no_ignored_signal() {
    let (code, out, err) = run_to_end(&[
        "--no-autorestart",
        "--",
        "grep",
        "-E",
        "^Sig(Blk|Ign)",
        "/proc/self/status",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        mask_lines(&out),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000"
    );
}

/// procward started the way a careless parent leaves it: SIGCHLD, SIGHUP,
/// SIGINT, SIGPIPE and SIGUSR1 ignored, SIGUSR2 and SIGTERM blocked.
fn careless_parent() -> Command {
    let mut cmd = Command::new(bin());
    // SAFETY: signal(2) and sigprocmask(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for s in [
                libc::SIGCHLD,
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGPIPE,
                libc::SIGUSR1,
            ] {
                libc::signal(s, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd
}

#[test]
fn inherited_ignored_and_blocked_signals_do_not_reach_the_child() {
    let out = careless_parent()
        .args([
            "--no-autorestart",
            "--",
            "sh",
            "-c",
            "grep -E '^Sig(Blk|Ign)' /proc/self/status; exit 42",
        ])
        .output()
        .expect("run procward");
    // An ignored SIGCHLD would have the kernel reap the app behind the
    // reaper's back, and procward would wait forever.
    assert_eq!(
        code_of(out.status),
        42,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        mask_lines(&text),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000"
    );
}

#[test]
fn signals_procward_inherited_as_ignored_are_still_forwarded() {
    let dir = scratch();
    let out = path_in(&dir, "signals");
    let mut run = Running::start_cmd(careless_parent().args([
        "--",
        "python3",
        &core("catch.py"),
        &out,
        "child",
        "--exit",
        "15:0",
    ]));
    wait_lines(&out, "ready", |l| !l.is_empty());
    for signo in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGPIPE] {
        run.signal(signo);
        wait_for_line(&out, &format!("child {signo}"));
    }
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 0);
}
