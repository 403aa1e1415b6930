//! Building a child: argv, environment, working directory, user and group,
//! inherited file descriptors, and a clean signal state in its own process
//! group.
//!
//! The child is made with clone(CLONE_VM | CLONE_VFORK), as glibc's
//! posix_spawn makes it, and never with `tokio::process`, which would reap it
//! behind the one reaper's back. Between clone and exec only async-signal-safe
//! calls are allowed: the child allocates nothing and logs nothing, and
//! everything it needs is prepared before. Its steps, in order:
//! 1. own process group (setpgid(2)), and with it the terminal's foreground
//!    when procward hands the terminal over (tcsetpgrp(3), as tini does for
//!    its child; `init::terminal` says when): an interactive shell or REPL
//!    reads what is typed, and Ctrl-C reaches it from the terminal. Without
//!    the terminal, an app that reads it gets SIGTTIN, as any background
//!    job does;
//! 2. PR_SET_PDEATHSIG = SIGKILL (prctl(2)), so nothing outlives procward;
//! 3. extra descriptors moved to the numbers the child expects (and, with
//!    `LISTEN_FDS` sockets, `LISTEN_PID` written into the prepared
//!    environment as the child's own pid), then the working directory,
//!    group and user;
//! 4. every signal disposition back to default and an empty mask, whatever
//!    procward blocks itself (tini's `restore_signals`; an ignored signal
//!    would otherwise stay ignored across exec).

use std::cell::UnsafeCell;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

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
    /// Set `LISTEN_PID` to the child's own pid (sd_listen_fds(3)), known
    /// only in the child, between clone and exec.
    pub listen_pid: bool,
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
    /// Whether it failed for want of a resource that may come back (too
    /// many open files in procward or the system, no memory, the process
    /// limit), or whose program file is still open for writing (ETXTBSY:
    /// a deploy replacing it): retried with the restart backoff. Only the
    /// command itself being missing or not executable is permanent (127, 126).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.error.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM | libc::ETXTBSY)
        )
    }

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
    let plan = ChildPlan::new(req).map_err(err)?;
    // The child runs on its own stack in procward's memory (CLONE_VM), and
    // procward is suspended until it has called execve or _exit
    // (CLONE_VFORK): no page tables are copied and no page is faulted in
    // copy-on-write, which is most of the cost of fork for a process of
    // procward's size. This is how glibc's posix_spawn works; posix_spawn
    // itself cannot set PR_SET_PDEATHSIG.
    #[cfg(debug_assertions)]
    if let Some(broken) = envelope_violation() {
        panic!("the clone spawn's safety envelope is broken: {broken}");
    }
    // Left uninitialized: zeroing it would fault in every page of it.
    let mut stack: Vec<u8> = Vec::with_capacity(CHILD_STACK);
    // SAFETY: the envelope of clone(CLONE_VM | CLONE_VFORK). The child runs
    // in procward's memory on `stack` until execve or _exit, while the
    // calling thread is suspended. It is sound because every one of these
    // holds:
    // 1. No signal handler is ever installed in procward
    //    (`init::signals::block_all` resets every disposition to the
    //    default, Rust's SIGSEGV/SIGBUS stack-overflow handlers included).
    //    A handler run in the child would run procward's code on the
    //    child's stack against memory shared with procward.
    // 2. Every signal but the kernel's own (SIGSEGV, SIGBUS, ...: default
    //    action, they kill the child) is blocked in the calling thread,
    //    and the child inherits that mask until `child_setup` has reset
    //    every disposition to the default, only then unblocking them.
    //    Threads made later (tokio's, a log writer's) inherit the mask.
    //    Checked in debug builds by [`envelope_violation`], so every
    //    integration test that spawns checks it.
    // 3. The child allocates nothing, takes no lock, logs nothing and
    //    cannot panic: another thread may hold the allocator's lock, and
    //    the parent's heap is shared. Everything it reads is prepared in
    //    `plan` before the clone; `child_main` only reads the plan, makes
    //    system calls and writes `plan.error`.
    // 4. errno and thread-local storage are shared with the suspended
    //    calling thread (no CLONE_SETTLS): the child's errno writes land in
    //    the parent's; the parent reads the outcome from `plan.error`, and
    //    reads errno only when clone itself failed (no child ran).
    // 5. The stack is CHILD_STACK bytes of this Vec with no guard page
    //    below it: an overflow would write into procward's heap. The
    //    child's frames are small (no buffers on the stack) and execve
    //    needs little; the stack is freed only after the child has exec'd
    //    or exited (CLONE_VFORK), so it outlives every use.
    // 6. `child_setup` resets signal state with raw rt_sigaction and
    //    rt_sigprocmask calls whose set size is the kernel's 8 bytes
    //    (64 signals, SIGRTMAX <= 64 on every Linux architecture procward
    //    builds for; asserted in the tests).
    let pid = unsafe {
        // One past the end of the allocation; glibc's clone aligns it.
        let top = stack.as_mut_ptr().add(CHILD_STACK) as *mut libc::c_void;
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &plan as *const ChildPlan as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let errno = plan.error.load(Ordering::Acquire);
    if errno != 0 {
        // The child never became the app: it has already exited, and
        // nobody else knows its pid, so it is collected here rather than
        // by the reaper (as std::process::Command does in the same case).
        // SAFETY: waitpid(2) on our own exited child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
        return Err(err(io::Error::from_raw_os_error(errno)));
    }
    if plan.terminal {
        crate::init::terminal::handed_to(pid);
    }
    Ok(pid)
}

/// The `LISTEN_PID=` entry, filled in by the child.
const LISTEN_PID: &[u8] = b"LISTEN_PID=";
/// Room for it, the digits of any pid and the terminating NUL.
const LISTEN_PID_LEN: usize = 32;

/// Writes `pid` in decimal after `LISTEN_PID=`, NUL-terminated, without
/// allocating (the child may not).
fn write_pid(buf: &mut [u8; LISTEN_PID_LEN], mut pid: u64) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let start = LISTEN_PID.len();
    for k in 0..n {
        buf[start + k] = digits[n - 1 - k];
    }
    buf[start + n] = 0;
}

/// Size of the stack the child runs on until it calls execve.
const CHILD_STACK: usize = 64 * 1024;

/// Everything the child needs, prepared before the clone so that the child
/// allocates nothing.
struct ChildPlan {
    /// Paths to try in order (execvp(3)'s PATH search, done here).
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    uid: Option<u32>,
    gid: Option<u32>,
    fds: [(RawFd, RawFd); MAX_EXTRA_FDS],
    nfds: usize,
    /// `LISTEN_PID=` and room for the digits; the child fills them in.
    /// `envp_ptrs` points at it.
    listen_pid: Option<Box<UnsafeCell<[u8; LISTEN_PID_LEN]>>>,
    parent: libc::pid_t,
    /// Whether the child takes the terminal's foreground.
    terminal: bool,
    /// Set by the child to the errno of what failed; 0 once exec succeeded.
    error: AtomicI32,
}

impl ChildPlan {
    fn new(req: &SpawnRequest<'_>) -> io::Result<ChildPlan> {
        let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        if req.fds.len() > MAX_EXTRA_FDS {
            return Err(invalid("too many descriptors"));
        }
        let cstr = |b: &[u8]| {
            CString::new(b).map_err(|_| {
                invalid("a NUL byte in the command line, environment or working directory")
            })
        };
        let argv: Vec<CString> = req
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let env = environment(&req.env);
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstr(&kv)
            })
            .collect::<io::Result<_>>()?;
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_bytes().to_vec())
            .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
        let candidates = candidates(req.argv[0].as_bytes(), &path)
            .into_iter()
            .map(|c| cstr(&c))
            .collect::<io::Result<_>>()?;
        let cwd = req
            .cwd
            .map(|d| cstr(d.as_os_str().as_bytes()))
            .transpose()?;
        let mut fds = [(-1, -1); MAX_EXTRA_FDS];
        fds[..req.fds.len()].copy_from_slice(&req.fds);
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let mut envp_ptrs = ptrs(&envp);
        let listen_pid = req.listen_pid.then(|| {
            let mut buf = [0u8; LISTEN_PID_LEN];
            buf[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
            Box::new(UnsafeCell::new(buf))
        });
        if let Some(cell) = &listen_pid {
            envp_ptrs.insert(envp_ptrs.len() - 1, cell.get() as *const libc::c_char);
        }
        Ok(ChildPlan {
            candidates,
            argv_ptrs: ptrs(&argv),
            _argv: argv,
            envp_ptrs,
            _envp: envp,
            cwd,
            uid: req.uid,
            gid: req.gid,
            fds,
            nfds: req.fds.len(),
            listen_pid,
            parent: std::process::id() as libc::pid_t,
            terminal: crate::init::terminal::hand_over(),
            error: AtomicI32::new(0),
        })
    }
}

/// procward's environment without [`SCRUBBED_ENV`], with `set` applied over
/// it: an existing variable keeps its place, a new one is appended.
fn environment(set: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !SCRUBBED_ENV.iter().any(|s| k == s))
        .collect();
    for (k, v) in set {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// The paths execvp(3) would try for `program`: itself when it contains a
/// slash, else each PATH directory in turn (an empty entry is the current
/// directory).
fn candidates(program: &[u8], path: &[u8]) -> Vec<Vec<u8>> {
    if program.contains(&b'/') || program.is_empty() {
        return vec![program.to_vec()];
    }
    path.split(|b| *b == b':')
        .map(|dir| {
            let mut p = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            p.push(b'/');
            p.extend_from_slice(program);
            p
        })
        .collect()
}

/// The child, between clone and exec: async-signal-safe calls only, and raw
/// system calls where glibc's wrappers would touch other threads (setuid,
/// setgid and setgroups broadcast to every thread of the process, which
/// here would be procward's).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the plan, alive while the parent is suspended.
    let plan = unsafe { &*(arg as *const ChildPlan) };
    // SAFETY: we are the child of `spawn`'s clone, inside its envelope.
    let errno = unsafe { child_setup(plan) }
        .err()
        // SAFETY: as above.
        .unwrap_or_else(|| unsafe { exec(plan) });
    plan.error.store(errno.max(1), Ordering::Release);
    // SAFETY: leave without running any of procward's exit handlers.
    unsafe { libc::syscall(libc::SYS_exit, exit::NOT_FOUND) };
    exit::NOT_FOUND
}

/// Runs in the child: process group, parent-death signal, descriptors,
/// working directory, user and group, then clean signal state.
///
/// # Safety
/// Only in the child of `spawn`'s clone, before exec.
unsafe fn child_setup(plan: &ChildPlan) -> Result<(), i32> {
    let check = |rc: libc::c_long| if rc < 0 { Err(errno()) } else { Ok(()) };
    // SAFETY: setpgid(2) and prctl(2) with integer arguments.
    check(unsafe { libc::setpgid(0, 0) } as libc::c_long)?;
    if plan.terminal {
        // Every signal is still blocked here, SIGTTOU included, which lets
        // a background group take the foreground (tcsetpgrp(3)). A failure
        // (the terminal is gone: ENOTTY, ENXIO, which tini also lets pass)
        // leaves the foreground where it is; the app runs all the same.
        // SAFETY: tcsetpgrp(3) and getpid(2) with integers.
        unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid()) };
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // procward died before prctl: the signal will never come.
    // SAFETY: getppid(2) and exit(2) take and give integers only.
    if unsafe { libc::getppid() } != plan.parent {
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_exit, exit::SETUP) };
    }
    // SAFETY: the descriptors are ours, prepared by the parent.
    unsafe { move_fds(&plan.fds[..plan.nfds]) }
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    if let Some(cell) = &plan.listen_pid {
        // The raw system call: the child's own pid, not a cached one.
        // SAFETY: the buffer is the plan's, in an UnsafeCell; the parent is
        // suspended (CLONE_VFORK) and nothing else reads it until execve,
        // which reads it through `envp_ptrs`. write_pid only stores bytes.
        write_pid(
            unsafe { &mut *cell.get() },
            unsafe { libc::syscall(libc::SYS_getpid) } as u64,
        );
    }
    if let Some(dir) = &plan.cwd {
        // SAFETY: a NUL-terminated path owned by the plan.
        check(unsafe { libc::chdir(dir.as_ptr()) } as libc::c_long)?;
    }
    // Raw setgroups(2), setgid(2) and setuid(2), because glibc's wrappers
    // would signal every thread of the process, which here are procward's.
    let no_groups = || {
        // SAFETY: setgroups(2) with an empty list.
        unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) }
    };
    if let Some(gid) = plan.gid {
        check(no_groups())?;
        // SAFETY: setgid(2) with an integer.
        check(unsafe { libc::syscall(libc::SYS_setgid, gid) })?;
    }
    if let Some(uid) = plan.uid {
        if plan.gid.is_none() {
            check(no_groups())?;
        }
        // SAFETY: setuid(2) with an integer.
        check(unsafe { libc::syscall(libc::SYS_setuid, uid) })?;
    }
    // The raw system call, because glibc's signal() refuses 32 and 33
    // (its own SIGCANCEL and SIGSETXID), which a parent may have left
    // ignored. All zeros is SIG_DFL with no flags and an empty mask in
    // every architecture's `struct sigaction` (rt_sigaction(2)).
    // Only the signals procward has not set back itself (`CHILD_RESETS`):
    // one system call each, between the clone and the exec.
    let dfl = [0u64; 4];
    let resets = crate::init::signals::CHILD_RESETS.load(Ordering::Relaxed);
    for signo in 1..=libc::SIGRTMAX() {
        if resets & (1 << (signo - 1)) != 0 && signo != libc::SIGKILL && signo != libc::SIGSTOP {
            // SAFETY: a valid kernel sigaction (all zeros) and an 8-byte
            // signal set (the envelope's item 6).
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8,
                )
            };
        }
    }
    let empty = [0u64; 1];
    // SAFETY: an empty 8-byte signal set, as above.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            empty.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8,
        )
    };
    Ok(())
}

/// Tries each candidate as execvp(3) does; returns the errno to report
/// (EACCES if any candidate was found but not executable, else the last).
///
/// # Safety
/// Only in the child of `spawn`'s clone.
unsafe fn exec(plan: &ChildPlan) -> i32 {
    let mut result = libc::ENOENT;
    for path in &plan.candidates {
        // SAFETY: NUL-terminated path, and NULL-terminated argv and envp
        // arrays of strings the plan owns.
        unsafe {
            libc::execve(
                path.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
            )
        };
        match errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => result = libc::EACCES,
            other => return other,
        }
    }
    result
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Moves each (source, target) descriptor into place without clobbering a
/// source that is another pair's target: first every source is duplicated
/// above all targets, then onto its target (dup2 clears FD_CLOEXEC).
///
/// # Safety
/// Only in the child of `spawn`'s clone: it overwrites descriptor numbers.
unsafe fn move_fds(fds: &[(RawFd, RawFd)]) -> io::Result<()> {
    let mut high = [-1; MAX_EXTRA_FDS];
    let floor = fds.iter().map(|&(_, t)| t).max().unwrap_or(0) + 1;
    for (i, &(src, _)) in fds.iter().enumerate() {
        // SAFETY: fcntl(2) with integers.
        let fd = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        high[i] = fd;
    }
    for (i, &(_, target)) in fds.iter().enumerate() {
        // SAFETY: dup2(2) with integers.
        if unsafe { libc::dup2(high[i], target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What breaks the clone spawn's safety envelope (its items 1 and 2) in
/// the calling thread, if anything: a signal other than the kernel's own
/// that is not blocked, or a signal with a handler installed. Checked at
/// every spawn in debug builds and by the unit tests.
#[cfg(any(debug_assertions, test))]
pub fn envelope_violation() -> Option<String> {
    use crate::init::signals::KERNEL_SIGNALS;
    let kernel = |signo: i32| KERNEL_SIGNALS.iter().any(|s| *s as i32 == signo);
    // SAFETY: an all-zero sigset_t is a valid value to be filled in.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: reads the calling thread's mask into `mask`.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) };
    // glibc keeps 32 and 33 for itself: never blocked, never handled by us.
    let signals = (1..libc::SIGRTMAX() + 1).filter(|&s| {
        s != libc::SIGKILL && s != libc::SIGSTOP && !(32..libc::SIGRTMIN()).contains(&s)
    });
    for signo in signals {
        // SAFETY: reads one signal's membership of a valid set.
        if !kernel(signo) && unsafe { libc::sigismember(&mask, signo) } != 1 {
            return Some(format!(
                "signal {signo} is not blocked in the spawning thread"
            ));
        }
        // SAFETY: as above, for a sigaction read back by the kernel.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads the disposition of `signo` into `act`.
        unsafe { libc::sigaction(signo, std::ptr::null(), &mut act) };
        if act.sa_sigaction != libc::SIG_DFL && act.sa_sigaction != libc::SIG_IGN {
            return Some(format!("signal {signo} has a handler installed"));
        }
        let resets = crate::init::signals::CHILD_RESETS.load(Ordering::Relaxed);
        if act.sa_sigaction == libc::SIG_IGN && resets & (1 << (signo - 1)) == 0 {
            return Some(format!(
                "signal {signo} is ignored and a child would not set it back"
            ));
        }
    }
    None
}

/// Convenience for building the environment list.
pub fn var(k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> (OsString, OsString) {
    (k.as_ref().to_owned(), v.as_ref().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_pid_entry_is_written_in_place() {
        let mut buf = [0u8; LISTEN_PID_LEN];
        buf[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
        write_pid(&mut buf, 4194304);
        assert_eq!(
            std::ffi::CStr::from_bytes_until_nul(&buf).unwrap(),
            c"LISTEN_PID=4194304"
        );
        write_pid(&mut buf, 7);
        assert_eq!(
            std::ffi::CStr::from_bytes_until_nul(&buf).unwrap(),
            c"LISTEN_PID=7"
        );
    }

    #[test]
    fn the_raw_signal_calls_fit_the_kernels_eight_byte_set() {
        assert!(libc::SIGRTMAX() <= 64);
    }

    #[test]
    fn the_envelope_check_sees_an_unblocked_signal_and_an_installed_handler() {
        // In a fresh thread: its mask is the test harness's, nothing blocked.
        let found = std::thread::spawn(envelope_violation).join().unwrap();
        assert!(found.is_some_and(|f| f.contains("not blocked")));
        let found = std::thread::spawn(|| {
            extern "C" fn nothing(_: libc::c_int) {}
            let mut all = nix::sys::signal::SigSet::all();
            for s in crate::init::signals::KERNEL_SIGNALS {
                all.remove(s);
            }
            all.thread_block().unwrap();
            let handler = nix::sys::signal::SigAction::new(
                nix::sys::signal::SigHandler::Handler(nothing),
                nix::sys::signal::SaFlags::empty(),
                nix::sys::signal::SigSet::empty(),
            );
            // SAFETY: a handler that does nothing, for a signal nobody sends
            // in this test binary, put back to the default below.
            let old =
                unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR2, &handler) }
                    .unwrap();
            let found = envelope_violation();
            // SAFETY: restores the previous disposition.
            unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGUSR2, &old) }
                .unwrap();
            found
        })
        .join()
        .unwrap();
        // The harness's own SIGSEGV handler (stack overflow) may be found
        // first; either is a handler.
        assert!(
            found.is_some_and(|f| f.contains("handler")),
            "a handler must be seen"
        );
    }

    #[test]
    fn only_missing_or_unexecutable_commands_are_permanent_spawn_failures() {
        let e = |errno| SpawnError {
            program: "app".into(),
            error: io::Error::from_raw_os_error(errno),
        };
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::EAGAIN,
            libc::ENOMEM,
            libc::ETXTBSY,
        ] {
            assert!(e(errno).is_transient(), "{errno}");
        }
        for (errno, code) in [
            (libc::ENOENT, 127),
            (libc::ENOTDIR, 127),
            (libc::EACCES, 126),
            (libc::ENOEXEC, 126),
        ] {
            assert!(!e(errno).is_transient(), "{errno}");
            assert_eq!(e(errno).shell_code(), code);
        }
    }

    #[test]
    fn a_program_is_looked_up_in_path_as_execvp_does() {
        let c = |p: &str, path: &str| -> Vec<String> {
            candidates(p.as_bytes(), path.as_bytes())
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect()
        };
        assert_eq!(
            c("node", "/usr/local/bin:/usr/bin"),
            ["/usr/local/bin/node", "/usr/bin/node"]
        );
        assert_eq!(
            c("node", "/bin::/usr/bin"),
            ["/bin/node", "./node", "/usr/bin/node"]
        );
        assert_eq!(c("./app.sh", "/bin"), ["./app.sh"]);
        assert_eq!(c("/bin/sh", "/usr/bin"), ["/bin/sh"]);
    }

    #[test]
    fn the_environment_drops_the_service_managers_variables_and_applies_the_apps() {
        let set = vec![
            var("NOTIFY_SOCKET", "/run/app.sock"),
            var("PATH", "/opt/bin"),
        ];
        let env = environment(&set);
        let get = |k: &str| {
            env.iter()
                .filter(|(ek, _)| ek == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        // Set explicitly by procward (its own proxy), so it stays; once.
        assert_eq!(get("NOTIFY_SOCKET"), [OsString::from("/run/app.sock")]);
        assert_eq!(get("PATH"), [OsString::from("/opt/bin")]);
        assert!(get("LISTEN_FDS").is_empty());
    }
}
