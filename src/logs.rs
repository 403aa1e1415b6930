//! procward's own log lines on stderr, written so that the event loop
//! never waits for them.
//!
//! When stderr is a pipe nobody reads, a plain write blocks once the pipe
//! is full (64 KiB, pipe(7)), and with it reaping, signal forwarding,
//! /healthz and even SIGTERM. So each formatted line goes into a bounded
//! queue, and one thread of its own writes the queue to stderr. When the
//! queue is full the line is dropped and counted
//! (`procward_log_lines_dropped_total`): losing log lines is better than
//! losing the agent. A write error (stderr closed: EPIPE) drops the line
//! too, silently, as ripgrep treats a broken pipe.

use std::io::Write;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Lines waiting for stderr at most. A line is at most a few KiB (an
/// app's `STATUS=` is at most a 4 KiB datagram), so the queue holds at
/// most a few MiB, and usually nothing.
pub const QUEUE_LINES: usize = 1024;

/// Lines dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The queue's sending end, once the writer thread runs.
static QUEUE: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();

/// Lines queued and not yet written, for [`flush`].
static PENDING: Mutex<usize> = Mutex::new(0);
static WRITTEN: Condvar = Condvar::new();

/// Lines dropped so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Starts the writer thread. Until it runs (or if it cannot be started),
/// lines are written to stderr directly.
pub fn start() {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
    // The thread must not take signals meant for the event loop's
    // signalfd: it inherits the mask of the thread that creates it
    // (pthread_create(3)), so every signal is blocked around the spawn.
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old));
    let spawned = std::thread::Builder::new()
        .name("log".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let stderr = std::io::stderr();
            for line in rx {
                let _ = stderr.lock().write_all(&line);
                let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
                *pending = pending.saturating_sub(1);
                if *pending == 0 {
                    WRITTEN.notify_all();
                }
            }
        });
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    if spawned.is_ok() {
        let _ = QUEUE.set(tx);
    }
}

/// Waits up to `limit` for the queued lines to reach stderr (at exit, so
/// the last lines are not lost when stderr is read).
pub fn flush(limit: Duration) {
    let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let _ = WRITTEN.wait_timeout_while(pending, limit, |p| *p > 0);
}

/// The `MakeWriter` for tracing-subscriber: one [`Line`] per event.
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One formatted event, queued when dropped.
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
        let Some(tx) = QUEUE.get() else {
            let _ = std::io::stderr().write_all(&line);
            return;
        };
        *PENDING.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
            let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            *pending = pending.saturating_sub(1);
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}
