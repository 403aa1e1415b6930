//! The controlling terminal: which process group is in its foreground.
//!
//! With a terminal on stdin, tini makes its child the terminal's foreground
//! process group (tcsetpgrp(3), `isolate_child` in tini.c), so that an
//! interactive shell or REPL reads what is typed, and the keys' signals
//! (Ctrl-C's SIGINT, Ctrl-\'s SIGQUIT, Ctrl-Z's SIGTSTP) reach the app from
//! the terminal, as they would without an init in between. procward does
//! the same when it runs one app with one instance and was itself in the
//! terminal's foreground when it started; with several processes nobody
//! can own the terminal alone, and the foreground stays with procward, so
//! Ctrl-C reaches procward, which stops them all.
//!
//! The child takes the foreground itself, between clone and exec (spawn.rs),
//! while every signal is still blocked: a blocked SIGTTOU lets a background
//! group call tcsetpgrp (the kernel's `tty_check_change` treats blocked as
//! ignored). procward keeps SIGTTOU blocked too, so it can take the
//! foreground back when it exits (`give_back`).
//!
//! Ctrl-C then reaches the app, not procward. When the app dies of the
//! terminal's SIGINT or SIGQUIT, which procward did not send, procward takes
//! it as the interrupt it would have received had it kept the terminal: the
//! signal source reports that signal before the exit (`interrupted`), so
//! supervision ends as it does on Ctrl-C in every other case, without a
//! restart. It only peeks at the exit (waitid(2) with WNOWAIT); reaping
//! stays with the one reaper.
//!
//! The state here is process-wide and set once before the supervisor runs;
//! only the pid of the process holding the terminal changes afterwards.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Whether spawned processes take the terminal.
static HAND_OVER: AtomicBool = AtomicBool::new(false);
/// procward's own process group: the foreground when it started.
static OWN_GROUP: AtomicI32 = AtomicI32::new(0);
/// The process (and group) the terminal was last handed to; 0 for none.
static HOLDER: AtomicI32 = AtomicI32::new(0);
/// Whether an exit of the holder by SIGINT or SIGQUIT is the terminal's:
/// false once procward sent it one of those itself.
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Decides, once, whether spawned processes take the terminal: only for a
/// single process (`single`), and only when stdin is procward's controlling
/// terminal with procward's group in its foreground (a procward started in
/// the background must not take the terminal from the shell).
pub fn claim(single: bool) {
    // SAFETY: getpgrp and tcgetpgrp take and return integers.
    let (own, foreground) = unsafe { (libc::getpgrp(), libc::tcgetpgrp(libc::STDIN_FILENO)) };
    // Both read 0 when the group lies outside procward's PID namespace
    // (`unshare --pid --fork procward`, whose parent's group procward
    // shares): the same group, still in the foreground.
    if single && foreground >= 0 && foreground == own {
        OWN_GROUP.store(own, Ordering::Relaxed);
        HAND_OVER.store(true, Ordering::Relaxed);
    }
}

/// Whether the process about to be spawned takes the terminal: it is
/// handed over while the foreground is still procward's or its previous
/// holder's (an app restarted after a crash gets it back; a terminal that
/// a shell took meanwhile stays the shell's).
pub fn hand_over() -> bool {
    if !HAND_OVER.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: tcgetpgrp takes and returns integers.
    let foreground = unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) };
    let holder = HOLDER.load(Ordering::Relaxed);
    foreground >= 0
        && (foreground == OWN_GROUP.load(Ordering::Relaxed)
            || (holder != 0 && foreground == holder))
}

/// Records that `pid` (the leader of its own group) took the terminal.
pub fn handed_to(pid: i32) {
    HOLDER.store(pid, Ordering::Relaxed);
    WATCHING.store(true, Ordering::Relaxed);
}

/// Notes a signal procward sends to group `pgid`: a SIGINT or SIGQUIT of
/// its own to the holder is not the terminal's.
pub fn sending(pgid: i32, signo: i32) {
    if pgid == HOLDER.load(Ordering::Relaxed) && matches!(signo, libc::SIGINT | libc::SIGQUIT) {
        WATCHING.store(false, Ordering::Relaxed);
    }
}

/// The terminal's signal that killed the process holding the terminal, if
/// it died of one: reported once, without reaping it.
pub fn interrupted() -> Option<i32> {
    if !WATCHING.load(Ordering::Relaxed) {
        return None;
    }
    let holder = HOLDER.load(Ordering::Relaxed);
    // SAFETY: an all-zero siginfo_t is valid; waitid(2) fills it in. WNOWAIT
    // leaves the child waitable: the reaper collects it as usual.
    let info = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            holder as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 || info.si_pid() != holder {
            return None; // still running, or not our child any more
        }
        info
    };
    WATCHING.store(false, Ordering::Relaxed);
    // SAFETY: for CLD_KILLED and CLD_DUMPED, si_status is the signal.
    let signo = unsafe { info.si_status() };
    let killed = matches!(info.si_code, libc::CLD_KILLED | libc::CLD_DUMPED);
    (killed && matches!(signo, libc::SIGINT | libc::SIGQUIT)).then_some(signo)
}

/// Takes the foreground back for procward's own group when procward exits
/// (the app's group, or one it made, may still hold it), so that whatever
/// started procward (a shell without job control, `script`, a test
/// harness) reads the terminal again. A job-control shell takes it back for
/// itself anyway once procward is gone.
pub fn give_back() {
    if !HAND_OVER.load(Ordering::Relaxed) {
        return;
    }
    let own = OWN_GROUP.load(Ordering::Relaxed);
    // SAFETY: tcgetpgrp and tcsetpgrp take integers; SIGTTOU is blocked in
    // procward, so a background procward is allowed to call tcsetpgrp.
    unsafe {
        let foreground = libc::tcgetpgrp(libc::STDIN_FILENO);
        // A group outside procward's PID namespace (0) cannot be named.
        if own > 0 && foreground > 0 && foreground != own {
            libc::tcsetpgrp(libc::STDIN_FILENO, own);
        }
    }
}
