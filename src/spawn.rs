//! Building a child: argv, environment, working directory, user and group,
//! inherited file descriptors, and a clean signal state in its own process
//! group.
//!
//! The child is made with `std::process::Command` (never `tokio::process`,
//! which would reap it behind the one reaper's back). The `pre_exec` closure
//! runs between fork and exec, where only async-signal-safe calls are allowed:
//! it allocates nothing and logs nothing. Its steps, in order:
//! 1. own process group (setpgid(2)). The terminal's foreground stays with
//!    procward, as nextest keeps it (its signal-handling design note): a
//!    Ctrl-C reaches procward, which stops the apps, instead of killing the
//!    app behind its back to be restarted. An app that reads the terminal
//!    gets SIGTTIN, as any background job does;
//! 2. PR_SET_PDEATHSIG = SIGKILL (prctl(2)), so nothing outlives procward;
//! 3. extra descriptors moved to the numbers the child expects;
//! 4. every signal disposition back to default and an empty mask, whatever
//!    procward blocks itself (tini's `restore_signals`; an ignored signal
//!    would otherwise stay ignored across exec).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::exit;

/// Variables that belong to procward's own service manager and must not
/// reach the app (sd_notify(3), sd_listen_fds(3)); procward sets its own
/// where it proxies them.
pub const SCRUBBED_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// The most descriptors one child can be given beyond stdio.
pub const MAX_EXTRA_FDS: usize = 16;

/// Everything needed to start one process of an instance.
#[derive(Debug, Default)]
pub struct SpawnRequest<'a> {
    /// Program and arguments.
    pub argv: &'a [OsString],
    /// Working directory.
    pub cwd: Option<&'a std::path::Path>,
    /// Variables set over the inherited environment, in order.
    pub env: Vec<(OsString, OsString)>,
    /// User and group to switch to.
    pub uid: Option<u32>,
    /// Group to switch to.
    pub gid: Option<u32>,
    /// Descriptors to pass: (descriptor in procward, number in the child).
    pub fds: Vec<(RawFd, RawFd)>,
}

/// Why a child could not be started.
#[derive(Debug)]
pub struct SpawnError {
    /// The program.
    pub program: OsString,
    /// The OS error.
    pub error: io::Error,
}

impl SpawnError {
    /// The exit status a shell would give (127 not found, 126 not executable).
    pub fn shell_code(&self) -> i32 {
        match self.error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => exit::NOT_FOUND,
            _ => exit::NOT_EXECUTABLE,
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = match self.error.raw_os_error() {
            Some(libc::ENOENT) => " (check the command name and PATH, or the working directory)",
            Some(libc::EACCES) => " (is it executable? chmod +x, or name an interpreter)",
            _ => "",
        };
        write!(
            f,
            "cannot run `{}`: {}{hint}",
            self.program.to_string_lossy(),
            self.error
        )
    }
}

/// Starts the process and returns its pid, which is also its process group.
pub fn spawn(req: &SpawnRequest<'_>) -> Result<i32, SpawnError> {
    let err = |error| SpawnError {
        program: req.argv[0].clone(),
        error,
    };
    if req.fds.len() > MAX_EXTRA_FDS {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        )));
    }
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..]);
    for k in SCRUBBED_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    if let Some(dir) = req.cwd {
        cmd.current_dir(dir);
    }
    if let Some(gid) = req.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = req.uid {
        cmd.uid(uid);
    }
    let mut fds = [(-1, -1); MAX_EXTRA_FDS];
    fds[..req.fds.len()].copy_from_slice(&req.fds);
    let nfds = req.fds.len();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure makes only async-signal-safe calls (signal(7)) on
    // data copied into it before fork; it does not allocate.
    unsafe {
        cmd.pre_exec(move || child_setup(parent, &fds[..nfds]));
    }
    cmd.spawn().map(|c| c.id() as i32).map_err(err)
}

/// Runs in the child between fork and exec: async-signal-safe calls only.
fn child_setup(parent: libc::pid_t, fds: &[(RawFd, RawFd)]) -> io::Result<()> {
    // SAFETY: plain system calls on stack data.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }

        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // procward died between fork and prctl: the signal will never come.
        if libc::getppid() != parent {
            libc::_exit(exit::SETUP);
        }

        move_fds(fds)?;

        // The raw system call, because glibc's signal() refuses 32 and 33
        // (its own SIGCANCEL and SIGSETXID), which a parent may have left
        // ignored. All zeros is SIG_DFL with no flags and an empty mask in
        // every architecture's `struct sigaction` (rt_sigaction(2)).
        let dfl = [0u64; 4];
        for signo in 1..=libc::SIGRTMAX() {
            if signo != libc::SIGKILL && signo != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8,
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// Moves each (source, target) descriptor into place without clobbering a
/// source that is another pair's target: first every source is duplicated
/// above all targets, then onto its target (dup2 clears FD_CLOEXEC).
unsafe fn move_fds(fds: &[(RawFd, RawFd)]) -> io::Result<()> {
    let mut high = [-1; MAX_EXTRA_FDS];
    let floor = fds.iter().map(|&(_, t)| t).max().unwrap_or(0) + 1;
    for (i, &(src, _)) in fds.iter().enumerate() {
        let fd = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        high[i] = fd;
    }
    for (i, &(_, target)) in fds.iter().enumerate() {
        if libc::dup2(high[i], target) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `signo` to the process group `pgid`. A group already gone (ESRCH)
/// is not an error: the exit is on its way to the reaper.
pub fn signal_group(pgid: i32, signo: i32) -> io::Result<()> {
    // SAFETY: kill(2) with integer arguments.
    let rc = unsafe { libc::kill(-pgid, signo) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Convenience for building the environment list.
pub fn var(k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> (OsString, OsString) {
    (k.as_ref().to_owned(), v.as_ref().to_owned())
}
