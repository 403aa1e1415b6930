//! The one reaper: `waitpid(-1, WNOHANG)` until nothing is left (wait(2)).
//!
//! Nothing else in procward waits on a child. Every status is returned with
//! its pid; the supervisor routes it to the instance that owns the pid, and
//! statuses of pids nobody owns (orphans re-parented to us) are counted.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::exit::ExitStatus;

/// Reaps every child that has exited, calling `each` with its pid and status.
/// Returns how many were reaped.
pub fn reap_all(mut each: impl FnMut(i32, ExitStatus)) -> usize {
    let mut n = 0;
    loop {
        match waitpid(
            Pid::from_raw(-1),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::Exited(pid, code)) => {
                n += 1;
                each(pid.as_raw(), ExitStatus::Code(code));
            }
            Ok(WaitStatus::Signaled(pid, sig, core)) => {
                n += 1;
                each(
                    pid.as_raw(),
                    ExitStatus::Signal {
                        signo: sig as i32,
                        core_dumped: core,
                    },
                );
            }
            // Stopped/continued children are not exits; WNOHANG's "none yet".
            Ok(WaitStatus::StillAlive) => return n,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all.
            Err(_) => return n,
        }
    }
}
