//! The sd_notify proxy: each process gets its own `NOTIFY_SOCKET`, a unix
//! datagram socket procward owns, so an app written for systemd reports to
//! procward exactly as it would to systemd (sd_notify(3)).
//!
//! Accepted assignments (sd_notify(3)), one per line of a datagram:
//! `READY=1`, `STATUS=...`, `WATCHDOG=1`, `WATCHDOG=trigger`, `STOPPING=1`,
//! `RELOADING=1`, `MAINPID=N`, `ERRNO=N`. Others (`MONOTONIC_USEC`,
//! `EXTEND_TIMEOUT_USEC`, `FDSTORE`, `BUSERROR`, ...) are ignored, as the
//! service manager ignores assignments it does not know; descriptors passed
//! with a datagram are closed.
//!
//! Senders are checked as systemd's `NotifyAccess=all` checks its cgroup:
//! the kernel attaches the sender's credentials (SO_PASSCRED, unix(7)), and
//! only a datagram from the instance's own process tree is believed: the
//! process itself, a member of its process group (procward made it a group
//! leader), or a descendant (the `/proc/PID/stat` parent chain, proc(5)).
//! Anything else is dropped and counted. As with systemd, a sender that has
//! already exited when its datagram is read cannot be checked and is
//! dropped; send from the app's own process, not from a helper that exits
//! at once.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::{deliver, Dropped, Event, Input};
use crate::supervise::message::Message;

/// The longest datagram accepted: systemd's own limit (`NOTIFY_BUFFER_MAX`,
/// PIPE_BUF).
pub const MAX_DATAGRAM: usize = 4096;

/// Descriptors accepted (and closed) with one datagram.
const MAX_FDS: usize = 16;

/// A bound socket waiting for its process.
pub struct Proxy {
    sock: Option<UnixDatagram>,
    path: PathBuf,
}

impl Proxy {
    /// Binds `DIR/notify-PROCWARDPID-SEQ.sock`, owned by the app's user so it
    /// can write to it.
    pub fn bind(dir: &Path, seq: u64, uid: Option<u32>, gid: Option<u32>) -> io::Result<Proxy> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("notify-{}-{seq}.sock", std::process::id()));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let sock = UnixDatagram::bind(&path)?;
        let proxy = Proxy {
            sock: Some(sock),
            path,
        };
        let sock = proxy.sock.as_ref().expect("just bound");
        socket::setsockopt(sock, sockopt::PassCred, &true).map_err(io::Error::from)?;
        sock.set_nonblocking(true)?;
        // connect(2) on a unix socket needs write permission on its file.
        std::fs::set_permissions(&proxy.path, std::fs::Permissions::from_mode(0o600))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(&proxy.path, uid, gid)?;
        }
        Ok(proxy)
    }

    /// The socket's path (the child's `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts reading for process `pid`. `READY=1` becomes
    /// [`Message::Ready`] when `forward_ready` (this socket is the app's
    /// readiness source). The socket file is then the caller's to remove.
    pub fn start(
        mut self,
        pid: i32,
        forward_ready: bool,
        tx: mpsc::Sender<Message>,
    ) -> io::Result<JoinHandle<()>> {
        let sock = self.sock.take().expect("started once");
        // SAFETY: the socket is owned by the AsyncFd and closed only with it.
        let fd = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE)? };
        Ok(tokio::spawn(read_loop(fd, pid, forward_ready, tx)))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Never started (the spawn failed): nobody else will remove it.
        if self.sock.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One datagram: its sender (0 when the kernel gave none) and its text.
struct Datagram {
    sender: i32,
    bytes: Vec<u8>,
    truncated: bool,
}

async fn read_loop(
    fd: AsyncFd<UnixDatagram>,
    pid: i32,
    forward_ready: bool,
    tx: mpsc::Sender<Message>,
) {
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                debug!(pid, error = %e, "notify socket failed");
                return;
            }
        };
        let d = match guard.try_io(|s| recv(s.get_ref())) {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                debug!(pid, error = %e, "reading the notify socket failed");
                continue;
            }
            Err(_would_block) => continue,
        };
        for msg in judge(&d, pid, forward_ready) {
            if !deliver(&tx, msg).await {
                return;
            }
        }
    }
}

/// Receives one datagram with its sender's credentials; closes any
/// descriptors that came with it.
fn recv(sock: &UnixDatagram) -> io::Result<Datagram> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut cmsg = nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; MAX_FDS]);
    let (len, truncated, sender) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let mut sender = 0;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => sender = cred.pid(),
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        // SAFETY: received with this message, owned by nobody else.
                        unsafe { libc::close(fd) };
                    }
                }
                _ => {}
            }
        }
        (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), sender)
    };
    buf.truncate(len);
    Ok(Datagram {
        sender,
        bytes: buf,
        truncated,
    })
}

/// The messages one datagram gives, after the sender check.
fn judge(d: &Datagram, pid: i32, forward_ready: bool) -> Vec<Message> {
    let dropped = |reason| {
        vec![Message::App {
            pid,
            event: Event::Dropped {
                input: Input::Notify,
                reason,
                count: 1,
            },
        }]
    };
    if !in_tree(d.sender, pid) {
        debug!(
            pid,
            sender = d.sender,
            "notify datagram from outside the app's process tree dropped"
        );
        return dropped(Dropped::Foreign);
    }
    if d.truncated {
        return dropped(Dropped::TooLong);
    }
    let Ok(text) = std::str::from_utf8(&d.bytes) else {
        return dropped(Dropped::Garbage);
    };
    let (ready, events) = parse(text);
    let mut out = Vec::new();
    if ready && forward_ready {
        out.push(Message::Ready { pid });
    }
    out.extend(events.into_iter().map(|event| Message::App { pid, event }));
    out
}

/// Reads the assignments of one datagram: (`READY=1` seen, other events).
pub fn parse(text: &str) -> (bool, Vec<Event>) {
    let mut ready = false;
    let mut events = Vec::new();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key, value) {
            ("READY", "1") => ready = true,
            ("STATUS", s) => events.push(Event::Status(s.to_string())),
            ("WATCHDOG", "1") => events.push(Event::WatchdogPing),
            ("WATCHDOG", "trigger") => events.push(Event::WatchdogTrigger),
            ("STOPPING", "1") => events.push(Event::Stopping),
            ("RELOADING", "1") => events.push(Event::Reloading),
            ("MAINPID", n) => events.extend(n.parse().ok().filter(|p| *p > 0).map(Event::MainPid)),
            ("ERRNO", n) => events.extend(n.parse().ok().map(Event::Errno)),
            _ => {}
        }
    }
    (ready, events)
}

/// Whether `sender` is `root`, in its process group, or a descendant of it.
pub fn in_tree(sender: i32, root: i32) -> bool {
    if sender <= 0 {
        return false;
    }
    if sender == root {
        return true;
    }
    // SAFETY: getpgid(2) with an integer.
    if unsafe { libc::getpgid(sender) } == root {
        return true;
    }
    let mut p = sender;
    for _ in 0..64 {
        match parent_of(p) {
            Some(pp) if pp == root => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// The parent pid from `/proc/PID/stat` (field 4, after the parenthesised
/// command name, which may itself hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_read() {
        let (ready, ev) = parse(
            "READY=1\nSTATUS=warming up: 3/4\nWATCHDOG=1\nMAINPID=42\nERRNO=2\nFDSTORE=1\nbogus\n",
        );
        assert!(ready);
        assert_eq!(
            ev,
            vec![
                Event::Status("warming up: 3/4".into()),
                Event::WatchdogPing,
                Event::MainPid(42),
                Event::Errno(2)
            ]
        );
        assert_eq!(
            parse("READY=0\nWATCHDOG=trigger").1,
            vec![Event::WatchdogTrigger]
        );
        assert!(!parse("READY=0").0);
    }

    #[test]
    fn the_tree_is_ours_and_our_parent_is_not() {
        let me = std::process::id() as i32;
        // SAFETY: getppid(2).
        let parent = unsafe { libc::getppid() };
        assert!(in_tree(me, me));
        assert!(in_tree(me, parent));
        assert!(!in_tree(parent, me));
        assert!(!in_tree(0, me));
    }
}
