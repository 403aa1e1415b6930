//! The thread that reads one stream of one process: framing into lines,
//! formatting, and writing to the stream's sinks.
//!
//! Reads and writes block, on purpose: while a sink is slow this thread
//! waits, stops reading, the pipe fills, and the app's next write waits,
//! as it would on a slow terminal. Nothing is buffered beyond one read
//! ([`BUF`]) and one line ([`MAX_LINE`]), so procward's memory does not
//! grow with the app's output.

use std::borrow::Cow;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus::IntCounter;
use tracing::warn;

use super::file::FileSink;
use super::time::{rfc3339_utc, DateFormat};
use super::{InstanceLog, LogLine, Stream};

/// Longest line written as one; a longer one is cut into pieces of this
/// size, each ending with a newline, and counted in
/// `procward_log_lines_split_total`.
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes read from the pipe at once.
pub const BUF: usize = 256 * 1024;

/// procward's own stdout or stderr, shared by every stream sent there; the
/// lock keeps each batch of lines whole.
pub struct Console {
    fd: RawFd,
    /// ANSI colours for the prefix: only on a terminal, and not with
    /// `NO_COLOR` (no-color.org).
    pub colour: bool,
    lock: Mutex<()>,
    failing: AtomicBool,
}

impl Console {
    /// procward's descriptor `fd` (1 or 2).
    pub fn new(fd: RawFd) -> Console {
        // SAFETY: isatty(3) on a descriptor number.
        let tty = unsafe { libc::isatty(fd) } == 1;
        Console {
            fd,
            colour: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            lock: Mutex::new(()),
            failing: AtomicBool::new(false),
        }
    }

    /// Writes all of `bytes`, waiting while the reader is slow; returns
    /// how many could not be written (stdout closed, say).
    fn write(&self, bytes: &[u8]) -> usize {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: write(2) from a live slice.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                rest = &rest[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // A descriptor inherited non-blocking: wait until writable.
                Some(libc::EAGAIN) => {
                    let mut p = libc::pollfd {
                        fd: self.fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: poll(2) on one pollfd we own.
                    unsafe { libc::poll(&mut p, 1, -1) };
                }
                _ => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        warn!(fd = self.fd, error = %e,
                              "cannot write the apps' output to procward's own output; dropping and counting it");
                    }
                    return rest.len();
                }
            }
        }
        0
    }
}

/// Where one stream's lines go.
#[derive(Clone)]
pub enum Out {
    /// procward's stdout or stderr.
    Console(Arc<Console>),
    /// A file.
    File(Arc<FileSink>),
}

/// How lines of one stream look.
pub struct Format {
    /// `app-N | `, padded, or empty.
    pub prefix: String,
    /// ANSI colour of the prefix on a terminal.
    pub colour: &'static str,
    /// The timestamp format, if any.
    pub date: Option<DateFormat>,
    /// One JSON object per line.
    pub json: bool,
    /// For JSON lines.
    pub app: String,
    /// For JSON lines.
    pub instance: u32,
    /// For JSON lines.
    pub stream: Stream,
}

impl Format {
    /// Lines are written as the app wrote them.
    fn is_raw(&self) -> bool {
        !self.json && self.prefix.is_empty() && self.date.is_none()
    }

    /// Appends one formatted line (without its newline in `text`) and a
    /// newline to `out`.
    fn line(&mut self, out: &mut Vec<u8>, text: &[u8], now: SystemTime, colour: bool) {
        if self.json {
            let mut time = Vec::with_capacity(32);
            match &mut self.date {
                Some(d) => d.render(now, &mut time),
                None => rfc3339_utc(now, &mut time),
            }
            #[derive(serde::Serialize)]
            struct Rec<'a> {
                time: Cow<'a, str>,
                app: &'a str,
                instance: u32,
                stream: &'a str,
                message: Cow<'a, str>,
            }
            let rec = Rec {
                time: String::from_utf8_lossy(&time),
                app: &self.app,
                instance: self.instance,
                stream: self.stream.as_str(),
                message: String::from_utf8_lossy(text),
            };
            let _ = serde_json::to_writer(&mut *out, &rec);
            out.push(b'\n');
            return;
        }
        if !self.prefix.is_empty() {
            if colour {
                out.extend_from_slice(self.colour.as_bytes());
                out.extend_from_slice(self.prefix.as_bytes());
                out.extend_from_slice(b"\x1b[0m");
            } else {
                out.extend_from_slice(self.prefix.as_bytes());
            }
        }
        if let Some(d) = &mut self.date {
            // PM2: `${timestamp}: ${line}`.
            d.render(now, out);
            out.extend_from_slice(b": ");
        }
        out.extend_from_slice(text);
        out.push(b'\n');
    }
}

/// Everything the thread of one stream needs.
pub struct StreamCtx {
    /// Sinks.
    pub outs: Vec<Out>,
    /// Line format.
    pub format: Format,
    /// The instance's ring and crash tail.
    pub log: Arc<InstanceLog>,
    /// Which process of the instance this is (see `InstanceLog`).
    pub serial: u64,
    /// Bytes that could not be written.
    pub dropped: IntCounter,
    /// Lines longer than [`MAX_LINE`].
    pub split: IntCounter,
    /// Followers of `procward logs --follow`.
    pub follow: tokio::sync::broadcast::Sender<Arc<LogLine>>,
}

/// Reads `fd` until every writer has closed it.
pub fn run(mut ctx: StreamCtx, fd: OwnedFd) {
    let mut buf = vec![0u8; BUF];
    let mut len = 0;
    let mut splitting = false;
    let plain_needed = ctx
        .outs
        .iter()
        .any(|o| !matches!(o, Out::Console(c) if c.colour));
    let colour_needed = ctx
        .outs
        .iter()
        .any(|o| matches!(o, Out::Console(c) if c.colour));
    let raw = ctx.format.is_raw() && !colour_needed;
    let mut plain_buf = Vec::with_capacity(if plain_needed && !raw { BUF + 4096 } else { 0 });
    let mut coloured = Vec::with_capacity(if colour_needed { BUF + 4096 } else { 0 });
    // (start, end) of each line of the last read, for the ring.
    let mut lines: Vec<(usize, usize)> = Vec::new();
    loop {
        // SAFETY: read(2) into the free part of our buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[len..].as_mut_ptr().cast(),
                buf.len() - len,
            )
        };
        let eof = match n {
            0 => true,
            n if n > 0 => {
                len += n as usize;
                false
            }
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            _ => true,
        };
        let now = SystemTime::now();
        lines.clear();
        let mut start = 0;
        // Whether the lines of this read are the bytes read, unchanged.
        let mut as_read = raw;
        while start < len {
            let end = match memchr::memchr(b'\n', &buf[start..len]) {
                // The newline that ends a line written in pieces.
                Some(0) if splitting => {
                    splitting = false;
                    as_read = false;
                    start += 1;
                    continue;
                }
                Some(i) if i <= MAX_LINE => start + i,
                // No newline within MAX_LINE: a piece of a long line.
                _ if len - start >= MAX_LINE => {
                    if !splitting {
                        ctx.split.inc();
                        splitting = true;
                    }
                    as_read = false;
                    lines.push((start, start + MAX_LINE));
                    start += MAX_LINE;
                    continue;
                }
                // The rest of the stream, without a newline.
                None if eof => {
                    as_read = false;
                    len
                }
                None => break,
                Some(_) => unreachable!("handled by the arm above"),
            };
            lines.push((start, end));
            splitting = false;
            start = end + 1;
        }
        let start = start.min(len);
        if !as_read {
            for &(s, e) in &lines {
                if plain_needed {
                    ctx.format.line(&mut plain_buf, &buf[s..e], now, false);
                }
                if colour_needed {
                    ctx.format.line(&mut coloured, &buf[s..e], now, true);
                }
            }
        }
        if !lines.is_empty() {
            // Unformatted lines are written straight from the read buffer.
            let plain: &[u8] = if as_read { &buf[..start] } else { &plain_buf };
            for out in &ctx.outs {
                match out {
                    Out::Console(c) => {
                        let bytes = if c.colour { &coloured } else { plain };
                        ctx.dropped.inc_by(c.write(bytes) as u64);
                    }
                    Out::File(f) => f.write(plain),
                }
            }
            plain_buf.clear();
            coloured.clear();
            ctx.log.record(
                ctx.serial,
                ctx.format.instance,
                ctx.format.stream,
                now,
                lines.iter().map(|&(s, e)| &buf[s..e]),
                &ctx.follow,
            );
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if eof {
            break;
        }
    }
    drop(fd);
    ctx.log.closed(ctx.serial, ctx.format.stream);
}
