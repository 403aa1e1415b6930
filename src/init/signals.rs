//! Receiving signals: all of them blocked, read one at a time from a signalfd.
//!
//! procward blocks every signal it may receive and reads them from a
//! signalfd(2) in its event loop, as catatonit does. Blocking (rather than
//! installing handlers) is what makes PID 1 work: the kernel drops a signal
//! sent to a namespace's init only when its disposition is the default and it
//! is not blocked (pid_namespaces(7), kernel/signal.c `sig_ignored`), and a
//! blocked signal is always queued. Real-time signals stay queued one per
//! send, so a burst of them is forwarded one for one.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Signals the kernel sends us when *we* went wrong (catatonit's
/// `kernel_signals`): never blocked, never forwarded, allowed to kill us.
pub const KERNEL_SIGNALS: [Signal; 7] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// One received signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The signal number (real-time signals included).
    pub signo: i32,
    /// Who sent it (0 for the kernel).
    pub sender: i32,
}

/// The set procward blocks: everything but the kernel signals.
fn blocked_set() -> SigSet {
    let mut set = SigSet::all();
    for s in KERNEL_SIGNALS {
        set.remove(s);
    }
    set
}

/// The signals whose disposition a new child sets back to the default
/// before exec, bit `n - 1` for signal `n`: every one until [`block_all`]
/// has set them to the default in procward itself, then only those it could
/// not set (glibc's own 32 and 33, when not the default). procward changes
/// no disposition after `block_all`, so a child inherits the default for
/// every other signal (a handler would be reset by execve; an ignored
/// signal would not be). Checked in debug builds by
/// `spawn::envelope_violation`.
pub static CHILD_RESETS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Blocks every catchable signal in the calling thread, which must be the
/// only thread (threads made later inherit the mask), after setting every
/// disposition back to the default. An inherited SIG_IGN must not survive:
/// an ignored SIGCHLD makes the kernel reap children itself and send no
/// SIGCHLD (wait(2) NOTES, kernel/signal.c `do_notify_parent`), so exits
/// would never reach the reaper; and setting SIG_IGN discards a pending
/// signal (signal(7)). Rust's runtime ignores SIGPIPE at start-up; `nohup`
/// and shells ignore SIGHUP, SIGINT and SIGQUIT for background jobs.
pub fn block_all() -> io::Result<()> {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for s in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: setting the default disposition installs no handler.
        unsafe { sigaction(s, &dfl) }.map_err(io::Error::from)?;
    }
    for signo in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: as above, for the real-time signals nix has no name for.
        unsafe { libc::signal(signo, libc::SIG_DFL) };
    }
    // glibc's own signals (32 and 33) are the only ones left as inherited:
    // a child sets those back itself when they are not the default.
    let mut resets = 0;
    for signo in 32..libc::SIGRTMIN() {
        let mut old = [0u64; 4];
        // SAFETY: reads one disposition into a buffer the size of the
        // kernel's struct sigaction, with its 8-byte signal set.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8,
            )
        };
        if old != [0; 4] {
            resets |= 1 << (signo - 1);
        }
    }
    CHILD_RESETS.store(resets, Ordering::Relaxed);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked_set()), None)
        .map_err(io::Error::from)
}

/// The signalfd, registered with the event loop.
pub struct SignalSource {
    fd: AsyncFd<SignalFd>,
    /// A SIGCHLD held back while the terminal's interrupt that caused it is
    /// reported first (see `terminal::interrupted`).
    held: Option<Received>,
}

impl SignalSource {
    /// Opens a non-blocking signalfd for every blocked signal.
    pub fn new() -> io::Result<Self> {
        let sfd = SignalFd::with_flags(
            &blocked_set(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // SAFETY: the SignalFd is owned by the AsyncFd and closed only with it.
        let fd = unsafe { AsyncFd::register_with_interest(sfd, Interest::READABLE)? };
        Ok(SignalSource { fd, held: None })
    }

    /// Waits for the next signal. When a SIGCHLD comes from the app that
    /// holds the terminal dying of the terminal's SIGINT or SIGQUIT, that
    /// signal is reported first, as if from the kernel to procward, and the
    /// SIGCHLD next: Ctrl-C ends supervision as when procward keeps the
    /// terminal, instead of an exit to restart from.
    pub async fn recv(&mut self) -> io::Result<Received> {
        if let Some(held) = self.held.take() {
            return Ok(held);
        }
        loop {
            let mut guard = self.fd.readable_mut().await?;
            match guard.get_inner_mut().read_signal() {
                Ok(Some(info)) => {
                    let got = Received {
                        signo: info.ssi_signo as i32,
                        sender: info.ssi_pid as i32,
                    };
                    if got.signo == libc::SIGCHLD {
                        if let Some(signo) = super::terminal::interrupted() {
                            self.held = Some(got);
                            return Ok(Received { signo, sender: 0 });
                        }
                    }
                    return Ok(got);
                }
                Ok(None) => guard.clear_ready(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for SignalSource {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_fd().as_raw_fd()
    }
}

impl AsFd for SignalSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

/// A signal's name for logs (`SIGTERM`, `SIGRTMIN+3`).
pub fn name(signo: i32) -> String {
    match Signal::try_from(signo) {
        Ok(s) => s.as_str().to_string(),
        Err(_) if signo >= libc::SIGRTMIN() && signo <= libc::SIGRTMAX() => {
            format!("SIGRTMIN+{}", signo - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {signo}"),
    }
}

/// What a received signal means to the supervisor, decided here so that
/// the supervisor never matches signal numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// A child changed state: reap.
    Child,
    /// Stop every app with this signal (SIGTERM, SIGINT, SIGQUIT).
    Shutdown(i32),
    /// Reload every app (SIGHUP, unless told to forward it).
    Reload,
    /// Reopen the apps' log files (SIGUSR2, as PM2's `reloadLogs`).
    ReopenLogs,
    /// Pass it on to every app's process group.
    Forward(i32),
    /// A signal procward raised itself (SIGPIPE on its own write): not the
    /// apps' business.
    Own,
}

impl Received {
    /// What this signal means, given whether SIGHUP reloads and procward's
    /// own pid.
    pub fn meaning(&self, sighup_reloads: bool, self_pid: i32) -> Meaning {
        if self.signo == libc::SIGCHLD {
            return Meaning::Child;
        }
        if self.sender == self_pid {
            return Meaning::Own;
        }
        match Signal::try_from(self.signo) {
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) => Meaning::Shutdown(self.signo),
            Ok(Signal::SIGHUP) if sighup_reloads => Meaning::Reload,
            Ok(Signal::SIGUSR2) => Meaning::ReopenLogs,
            _ => Meaning::Forward(self.signo),
        }
    }
}

/// Whether a second `signo` while stopping escalates to SIGKILL, as a
/// double Ctrl-C does for container users.
pub fn escalates(signo: i32) -> bool {
    signo == libc::SIGTERM || signo == libc::SIGINT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(signo: i32, sender: i32) -> Received {
        Received { signo, sender }
    }

    #[test]
    fn signals_become_meanings() {
        assert_eq!(got(libc::SIGCHLD, 0).meaning(true, 1), Meaning::Child);
        assert_eq!(
            got(libc::SIGTERM, 7).meaning(true, 1),
            Meaning::Shutdown(libc::SIGTERM)
        );
        assert_eq!(got(libc::SIGHUP, 7).meaning(true, 1), Meaning::Reload);
        assert_eq!(
            got(libc::SIGHUP, 7).meaning(false, 1),
            Meaning::Forward(libc::SIGHUP)
        );
        assert_eq!(
            got(libc::SIGUSR1, 7).meaning(true, 1),
            Meaning::Forward(libc::SIGUSR1)
        );
        assert_eq!(got(libc::SIGPIPE, 1).meaning(true, 1), Meaning::Own);
        assert!(escalates(libc::SIGINT) && !escalates(libc::SIGQUIT));
    }
}
