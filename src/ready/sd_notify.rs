//! The sd_notify proxy: each process gets its own `NOTIFY_SOCKET`, a unix
//! datagram socket procward owns, so an app written for systemd reports to
//! procward exactly as it would to systemd (sd_notify(3)).
//!
//! Accepted assignments (sd_notify(3)), one per line of a datagram:
//! `READY=1`, `STATUS=...`, `WATCHDOG=1`, `WATCHDOG=trigger`, `STOPPING=1`,
//! `RELOADING=1`, `MAINPID=N`, `ERRNO=N`. Others (`MONOTONIC_USEC`,
//! `EXTEND_TIMEOUT_USEC`, `FDSTORE`, `BUSERROR`, ...) are ignored, as the
//! service manager ignores assignments it does not know. Descriptors passed
//! with a datagram (SCM_RIGHTS) are all closed on arrival and counted as
//! dropped, whatever else is wrong with it (too many to fit, a foreign
//! sender); a datagram with more than [`MAX_FDS`] is dropped whole, as
//! systemd drops one whose control data was truncated.
//!
//! Drops are reported to the supervisor at once for the first one, then
//! summed over [`DROP_REPORT_INTERVAL`], so a flood of bad datagrams costs
//! one log line per interval.
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

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::{deliver, Dropped, Event, Input, Report};

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
        // Checked at every bind: only procward may be able to replace the
        // socket file.
        super::claim(dir)?;
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
    /// [`Event::Ready`] when `forward_ready` (this socket is the app's
    /// readiness source). The socket file is then the caller's to remove.
    pub fn start(
        mut self,
        pid: i32,
        forward_ready: bool,
        tx: mpsc::Sender<Report>,
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

/// One datagram: its sender (0 when the kernel gave none), its text, and
/// what was wrong with it on arrival.
pub(crate) struct Datagram {
    sender: i32,
    bytes: Vec<u8>,
    truncated: bool,
    /// Descriptors that came with it (all closed on arrival).
    fds: usize,
    /// The control data did not fit (MSG_CTRUNC): more descriptors were
    /// sent than [`MAX_FDS`]; the kernel closed those that did not fit.
    control_truncated: bool,
}

/// How long drops are summed before they are reported again: the first
/// drop is reported at once, the rest of a burst once per interval, so a
/// flood of bad datagrams makes one log line per interval, not one each.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Drops not yet reported, and the end of the current reporting window.
#[derive(Default)]
struct Tally {
    pending: [u64; Dropped::ALL.len()],
    window_end: Option<Instant>,
}

impl Tally {
    /// Counts one drop of `count` inputs; returns what to report now
    /// (the first drop of a quiet period), else keeps it for [`Tally::flush`].
    fn add(&mut self, reason: Dropped, count: u64, now: Instant) -> Option<(Dropped, u64)> {
        match self.window_end {
            Some(end) if now < end => {
                self.pending[reason.index()] += count;
                None
            }
            _ => {
                self.window_end = Some(now + DROP_REPORT_INTERVAL);
                Some((reason, count))
            }
        }
    }

    /// When pending drops are due.
    fn due(&self) -> Option<Instant> {
        self.window_end
            .filter(|_| self.pending.iter().any(|&c| c > 0))
    }

    /// Takes the pending drops at the end of a window, and opens the next
    /// one when there were any.
    fn flush(&mut self, now: Instant) -> Vec<(Dropped, u64)> {
        let out: Vec<(Dropped, u64)> = Dropped::ALL
            .iter()
            .map(|&r| (r, std::mem::take(&mut self.pending[r.index()])))
            .filter(|&(_, c)| c > 0)
            .collect();
        self.window_end = (!out.is_empty()).then_some(now + DROP_REPORT_INTERVAL);
        out
    }
}

async fn read_loop(
    fd: AsyncFd<UnixDatagram>,
    pid: i32,
    forward_ready: bool,
    tx: mpsc::Sender<Report>,
) {
    let mut tally = Tally::default();
    loop {
        let due = tally.due();
        let mut guard = tokio::select! {
            r = fd.readable() => match r {
                Ok(g) => g,
                Err(e) => {
                    debug!(pid, error = %e, "notify socket failed");
                    return;
                }
            },
            _ = sleep_until_some(due) => {
                let mut counts = [0; Dropped::ALL.len()];
                for (reason, count) in tally.flush(Instant::now()) {
                    counts[reason.index()] = count;
                }
                if counts.iter().any(|&c| c > 0)
                    && !deliver(&tx, dropped(pid, counts, Some(DROP_REPORT_INTERVAL))).await
                {
                    return;
                }
                continue;
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
        let (drops, msgs) = judge(&d, pid, forward_ready);
        let now = Instant::now();
        let mut counts = [0; Dropped::ALL.len()];
        for (reason, count) in drops
            .into_iter()
            .filter_map(|(reason, count)| tally.add(reason, count, now))
        {
            counts[reason.index()] += count;
        }
        let report = counts
            .iter()
            .any(|&c| c > 0)
            .then(|| dropped(pid, counts, None));
        for msg in msgs.into_iter().chain(report) {
            if !deliver(&tx, msg).await {
                return;
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing due.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn dropped(pid: i32, counts: [u64; Dropped::ALL.len()], over: Option<Duration>) -> Report {
    Report {
        pid,
        event: Event::Dropped {
            input: Input::Notify,
            counts,
            over,
        },
    }
}

/// Receives one datagram with its sender's credentials, and closes every
/// descriptor that came with it, whatever else is wrong with it.
///
/// The control data is walked with the CMSG macros (cmsg(3)) rather than
/// nix's iterator, which refuses a truncated buffer (MSG_CTRUNC) and so
/// would leave the descriptors that did arrive open: with MSG_CTRUNC the
/// kernel still installs as many as fit (`scm_detach_fds` in
/// net/core/scm.c) and closes only the rest.
pub(crate) fn recv(sock: &UnixDatagram) -> io::Result<Datagram> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // u64 elements keep the buffer aligned for cmsghdr.
    let mut control = [0u64; CONTROL_SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = CONTROL_SPACE as _;
    // SAFETY: hdr points at `buf` and `control`, both alive and as long as
    // the lengths given; the kernel writes at most those lengths.
    let len = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut hdr,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sender = 0;
    let mut fds = 0;
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control data the kernel
    // wrote (msg_controllen was updated to its length) and return null at
    // its end; each header's data is read only within its cmsg_len.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let data_len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for k in 0..data_len / std::mem::size_of::<libc::c_int>() {
                        let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(k));
                        // Received with this message, owned by nobody else.
                        libc::close(fd);
                        fds += 1;
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                    if data_len >= std::mem::size_of::<libc::ucred>() =>
                {
                    let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    sender = cred.pid;
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    buf.truncate(len as usize);
    Ok(Datagram {
        sender,
        bytes: buf,
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        fds,
        control_truncated: hdr.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Room for the sender's credentials and [`MAX_FDS`] descriptors.
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const CONTROL_SPACE: usize = unsafe {
    libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32) as usize
        + libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<libc::c_int>()) as u32) as usize
};

/// What one datagram gives, after the sender check: drops to count
/// (reason, how many) and messages for the supervisor.
pub(crate) fn judge(
    d: &Datagram,
    pid: i32,
    forward_ready: bool,
) -> (Vec<(Dropped, u64)>, Vec<Report>) {
    let mut drops = Vec::new();
    // Descriptors are never kept (no FDSTORE=); each one is counted.
    if d.fds > 0 || d.control_truncated {
        debug!(
            pid,
            fds = d.fds,
            "descriptors sent on the notify socket closed"
        );
        drops.push((Dropped::Descriptors, d.fds.max(1) as u64));
    }
    if !in_tree(d.sender, pid) {
        debug!(
            pid,
            sender = d.sender,
            "notify datagram from outside the app's process tree dropped"
        );
        drops.push((Dropped::Foreign, 1));
        return (drops, Vec::new());
    }
    // As systemd does, a datagram whose control data was cut short is
    // not believed at all (manager_dispatch_notify_fd).
    if d.control_truncated {
        return (drops, Vec::new());
    }
    if d.truncated {
        drops.push((Dropped::TooLong, 1));
        return (drops, Vec::new());
    }
    let Ok(text) = std::str::from_utf8(&d.bytes) else {
        drops.push((Dropped::Garbage, 1));
        return (drops, Vec::new());
    };
    let (ready, events) = parse(text);
    let mut out = Vec::new();
    if ready && forward_ready {
        out.push(Report {
            pid,
            event: Event::Ready,
        });
    }
    out.extend(events.into_iter().map(|event| Report { pid, event }));
    (drops, out)
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

/// Whether `sender` is in the app's process tree (`crate::tree`).
pub fn in_tree(sender: i32, root: i32) -> bool {
    crate::tree::contains(root, sender)
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
    fn a_burst_of_drops_is_reported_once_at_once_then_once_per_interval() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        assert_eq!(t.add(Dropped::Garbage, 1, t0), Some((Dropped::Garbage, 1)));
        for _ in 0..12_345 {
            assert_eq!(t.add(Dropped::Garbage, 1, t0), None);
        }
        assert_eq!(t.add(Dropped::Descriptors, 20, t0), None);
        assert_eq!(t.due(), Some(t0 + DROP_REPORT_INTERVAL));
        let end = t0 + DROP_REPORT_INTERVAL;
        assert_eq!(
            t.flush(end),
            vec![(Dropped::Garbage, 12_345), (Dropped::Descriptors, 20)]
        );
        // Still in a burst: the next window sums again.
        assert_eq!(t.add(Dropped::Garbage, 1, end), None);
        assert_eq!(t.flush(end + DROP_REPORT_INTERVAL).len(), 1);
        // A quiet window ends the burst: the next drop is reported at once.
        let quiet = end + DROP_REPORT_INTERVAL * 2;
        assert!(t.flush(quiet).is_empty());
        assert_eq!(t.due(), None);
        assert_eq!(
            t.add(Dropped::TooLong, 1, quiet),
            Some((Dropped::TooLong, 1))
        );
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
