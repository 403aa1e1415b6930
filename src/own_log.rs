//! procward's own log lines on stderr, written so that the event loop
//! never waits for them.
//!
//! When stderr is a pipe nobody reads, a plain write blocks once the pipe
//! is full (64 KiB, pipe(7)), and with it reaping, signal forwarding,
//! /healthz and even SIGTERM. So procward writes without blocking: a line
//! that cannot be written now waits in a bounded queue, which a task of the
//! event loop writes out when stderr can take it again. When the queue is
//! full the line is dropped and counted (`procward_log_lines_dropped_total`):
//! losing log lines is better than losing the agent. A write error (stderr
//! closed: EPIPE) drops the line too, silently, as ripgrep treats a broken
//! pipe.
//!
//! Non-blocking without touching the app: the app usually shares procward's
//! stderr, and O_NONBLOCK on that open file would make the app's own writes
//! fail with EAGAIN. So a pipe or a terminal is opened again through
//! `/proc/self/fd/2`, which gives procward an open file of its own (proc(5)),
//! and made non-blocking there; a socket (journald's stream under systemd)
//! is written with `send(MSG_DONTWAIT)` (send(2)); a regular file never
//! blocks and is written as it is. No thread is needed, so procward stays
//! one thread and its app is PID 2 under `unshare --pid`.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Lines waiting for stderr at most. A line is at most a few KiB (an
/// app's `STATUS=` is at most a 4 KiB datagram), so the queue holds at
/// most a few MiB, and usually nothing.
pub const QUEUE_LINES: usize = 1024;

/// Lines dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Where lines go, once [`start`] has looked at stderr.
static OUT: Mutex<Option<Out>> = Mutex::new(None);

/// Wakes [`drain`] when lines start waiting.
static WAITING: OnceLock<Notify> = OnceLock::new();

/// Lines dropped so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// How a line reaches stderr.
enum Via {
    /// write(2) on our own non-blocking open file of stderr.
    Own(OwnedFd),
    /// send(2) with MSG_DONTWAIT on fd 2, a socket.
    Send,
    /// write(2) on fd 2 as it is: a regular file, or where stderr could
    /// not be opened again.
    Plain,
    /// stderr is closed: lines are discarded.
    Nowhere,
}

struct Out {
    via: Via,
    /// Lines (or the rest of one) that could not be written yet.
    queue: VecDeque<Vec<u8>>,
}

/// What one write attempt did.
enum Wrote {
    /// This many bytes.
    Bytes(usize),
    /// Nothing: stderr is full.
    Full,
    /// Nothing, and never will: the line is discarded.
    Broken,
}

impl Out {
    fn open() -> Out {
        // SAFETY: fstat(2) on fd 2 into a zeroed struct it fills.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(2, &mut st) } != 0 {
            return Out::with(Via::Nowhere);
        }
        let via = match st.st_mode & libc::S_IFMT {
            libc::S_IFSOCK => Via::Send,
            libc::S_IFIFO | libc::S_IFCHR => reopen().map_or(Via::Plain, Via::Own),
            _ => Via::Plain,
        };
        Out::with(via)
    }

    fn with(via: Via) -> Out {
        Out {
            via,
            queue: VecDeque::new(),
        }
    }

    /// The descriptor to wait on for room, when writes can find it full.
    fn pollable(&self) -> Option<RawFd> {
        match &self.via {
            Via::Own(fd) => Some(fd.as_raw_fd()),
            Via::Send => Some(2),
            Via::Plain | Via::Nowhere => None,
        }
    }

    fn write(&self, bytes: &[u8]) -> Wrote {
        write(&self.via, bytes)
    }

    /// Writes queued lines until stderr is full; true when none is left.
    fn flush_queue(&mut self) -> bool {
        while let Some(front) = self.queue.front_mut() {
            match write(&self.via, front) {
                Wrote::Bytes(n) if n < front.len() => {
                    front.drain(..n);
                }
                Wrote::Bytes(_) | Wrote::Broken => {
                    self.queue.pop_front();
                }
                Wrote::Full => return false,
            }
        }
        true
    }

    /// Writes one line now if stderr has room and nothing waits before
    /// it; else queues it, or drops it when the queue is full. True when
    /// something is left waiting.
    fn line(&mut self, mut line: Vec<u8>) -> bool {
        if self.flush_queue() {
            match self.write(&line) {
                Wrote::Bytes(n) if n == line.len() => return false,
                Wrote::Broken => return false,
                Wrote::Bytes(n) => {
                    line.drain(..n);
                    self.queue.push_back(line);
                    return true;
                }
                Wrote::Full => {}
            }
        }
        if self.queue.len() >= QUEUE_LINES {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        } else {
            self.queue.push_back(line);
        }
        true
    }
}

/// One write attempt.
fn write(via: &Via, bytes: &[u8]) -> Wrote {
    // SAFETY: write(2)/send(2) from a live slice of that length.
    let n = unsafe {
        match via {
            Via::Own(fd) => libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()),
            Via::Send => libc::send(
                2,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            ),
            Via::Plain => libc::write(2, bytes.as_ptr().cast(), bytes.len()),
            Via::Nowhere => return Wrote::Broken,
        }
    };
    if n >= 0 {
        return Wrote::Bytes(n as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Wrote::Full,
        _ => Wrote::Broken,
    }
}

/// Our own open file of stderr (a pipe or a terminal), non-blocking.
fn reopen() -> Option<OwnedFd> {
    // SAFETY: open(2) of a constant C string; the result, when valid, is a
    // new descriptor nobody else owns.
    let fd = unsafe {
        libc::open(
            c"/proc/self/fd/2".as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    // SAFETY: a descriptor open(2) just returned, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn out() -> MutexGuard<'static, Option<Out>> {
    OUT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Looks at stderr and chooses how to write to it; lines logged before
/// are written as they are.
pub fn start() {
    let _ = WAITING.set(Notify::new());
    *out() = Some(Out::open());
}

/// Writes waiting lines whenever stderr has room again; runs for as long
/// as the event loop does.
pub async fn drain() {
    let Some(fd) = out().as_ref().and_then(Out::pollable) else {
        return;
    };
    // A duplicate to register, so the one we write to stays ours alone.
    // SAFETY: dup(2); the result, when valid, is ours.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return;
    }
    // SAFETY: just made, owned by nobody else.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: the duplicate is owned by the AsyncFd and closed only with it.
    let Ok(afd) = (unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::WRITABLE) })
    else {
        return;
    };
    let Some(waiting) = WAITING.get() else { return };
    loop {
        waiting.notified().await;
        loop {
            let Ok(mut guard) = afd.writable().await else {
                return;
            };
            if out().as_mut().is_none_or(Out::flush_queue) {
                break;
            }
            guard.clear_ready();
        }
    }
}

/// Waits up to `limit` for the waiting lines to reach stderr (at exit, so
/// the last lines are not lost when stderr is read).
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut guard = out();
        let Some(o) = guard.as_mut() else { return };
        if o.flush_queue() {
            return;
        }
        let Some(fd) = o.pollable() else { return };
        drop(guard);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
    }
}

/// The `MakeWriter` for tracing-subscriber: one [`Line`] per event.
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One formatted event, written or queued when dropped.
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.0);
        let mut guard = out();
        let Some(o) = guard.as_mut() else {
            drop(guard);
            let _ = std::io::stderr().write_all(&line);
            return;
        };
        if o.line(line) {
            drop(guard);
            if let Some(w) = WAITING.get() {
                w.notify_one();
            }
        }
    }
}
