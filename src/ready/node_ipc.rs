//! The Node IPC channel: what `child_process.fork` gives a child, so that
//! `process.send` exists in an app procward starts.
//!
//! Wire format, as in Node's sources:
//! - `lib/child_process.js` `fork` passes one end of a unix stream
//!   socketpair as the child's fd 3 (`stdio: [0, 1, 2, 'ipc']`) and sets
//!   `NODE_CHANNEL_FD`; `NODE_CHANNEL_SERIALIZATION_MODE` picks `json` (the
//!   default) or `advanced`. We always ask for `json`.
//! - `lib/internal/child_process/serialization.js` (`json`): each message is
//!   `JSON.stringify(message) + '\n'`; the reader splits on `'\n'` and
//!   `JSON.parse`s each line. JSON escapes newlines inside strings, so a line
//!   is a message.
//! - `lib/internal/child_process.js` `setupChannel`: messages whose `cmd` is a
//!   string starting `NODE_` are internal. The only one a child sends us
//!   unasked is `NODE_HANDLE` (a handle passed with SCM_RIGHTS); Node's
//!   receiver answers `{"cmd":"NODE_HANDLE_ACK"}`, and without that answer the
//!   sender queues every later message. We read with plain reads (the kernel
//!   closes any descriptor passed to us) and acknowledge.
//! - `lib/child_process.js` `_forkChild`: the child `unref`s the channel and
//!   refs it only while a `'message'`/`'disconnect'` listener exists, so an
//!   app that never listens still exits on its own.
//!
//! procward keeps its end open and reads for the process's whole life: a
//! closed channel makes a later `process.send` emit an error that crashes an
//! app without an error handler. Lines are bounded ([`MAX_LINE`]); a longer
//! line is skipped up to its newline, and it and lines that are not JSON are
//! dropped and counted.
//!
//! Messages understood (PM2's `lib/ProcessContainerFork.js` apps and
//! `@pm2/io`):
//! - `"ready"`: the app is ready (PM2 `wait_ready`);
//! - `{"type":"process:msg","data":...}`: handed to the supervisor;
//! - `{"type":"axm:monitor","data":{NAME:{"value":N,...},...}}`: each
//!   numeric value becomes a [`Message::AppMetric`];
//! - other `axm:*` types: handed over by type;
//! - anything else that is JSON: ignored.
//!
//! procward sends `"shutdown"` (PM2's `shutdown_with_message`).

use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::{deliver, Dropped, Event, Input, FIRST_FD};
use crate::supervise::message::Message;

/// The longest line kept (1 MiB): `@pm2/io` metric batches are a few KiB.
pub const MAX_LINE: usize = 1 << 20;

/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;

/// The channel's number in the child: after the `LISTEN_FDS` sockets, which
/// start at 3 too (sd_listen_fds(3)).
pub fn channel_fd(listen_fds: usize) -> RawFd {
    FIRST_FD + listen_fds as RawFd
}

/// A connected pair: (the child's end, ours). Both are close-on-exec; the
/// spawn moves the child's end to [`channel_fd`] without that flag.
pub fn pair() -> io::Result<(OwnedFd, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    Ok((OwnedFd::from(theirs), ours))
}

/// Our writing end, kept while the process lives.
pub struct Writer(UnixStream);

impl Writer {
    /// Writes one message; false if it could not be written whole at once.
    pub fn send(&self, value: &Value) -> bool {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        (&self.0).write_all(&line).is_ok()
    }
}

/// Reading the channel of one process.
pub struct Channel;

impl Channel {
    /// Starts reading `ours` for process `pid`; `"ready"` becomes
    /// [`Message::Ready`] when `forward_ready` (the app's readiness source is
    /// this channel).
    pub fn start(
        ours: UnixStream,
        pid: i32,
        forward_ready: bool,
        tx: mpsc::Sender<Message>,
    ) -> io::Result<(Writer, JoinHandle<()>)> {
        ours.set_nonblocking(true)?;
        let writer = Writer(ours.try_clone()?);
        let stream = tokio::net::UnixStream::from_std(ours)?;
        Ok((
            writer,
            tokio::spawn(read_loop(stream, pid, forward_ready, tx)),
        ))
    }
}

async fn read_loop(
    mut stream: tokio::net::UnixStream,
    pid: i32,
    forward_ready: bool,
    tx: mpsc::Sender<Message>,
) {
    let mut lines = Lines::default();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return, // every copy of the child's end is closed
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!(pid, error = %e, "IPC channel read failed");
                return;
            }
        };
        let mut out = Vec::new();
        let (mut garbage, mut too_long, mut acks) = (0u64, 0u64, 0usize);
        lines.feed(&chunk[..n], |line| match line {
            Err(_) => too_long += 1,
            Ok(bytes) => match parse(bytes) {
                Line::Ready if forward_ready => out.push(Message::Ready { pid }),
                Line::Ready => debug!(
                    pid,
                    "\"ready\" on the IPC channel ignored: readiness comes from elsewhere"
                ),
                Line::Internal(cmd) if cmd == "NODE_HANDLE" => acks += 1,
                Line::Internal(cmd) => trace!(pid, cmd, "Node internal message ignored"),
                Line::Metrics(m) => {
                    out.extend(m.into_iter().map(|(name, value)| Message::AppMetric {
                        pid,
                        name,
                        value,
                    }))
                }
                Line::Event(event) => out.push(Message::App { pid, event }),
                Line::Other => trace!(pid, "IPC message ignored"),
                Line::Garbage => garbage += 1,
            },
        });
        for _ in 0..acks {
            if stream
                .write_all(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n")
                .await
                .is_err()
            {
                return;
            }
        }
        for (reason, count) in [(Dropped::Garbage, garbage), (Dropped::TooLong, too_long)] {
            if count > 0 {
                out.push(Message::App {
                    pid,
                    event: Event::Dropped {
                        input: Input::Ipc,
                        reason,
                        count,
                    },
                });
            }
        }
        for msg in out {
            if !deliver(&tx, msg).await {
                return;
            }
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Inside a line that is already too long: skip to its newline.
    skipping: bool,
}

impl Lines {
    /// Feeds bytes; calls `each` with every complete line (without its
    /// newline), or `Err(Dropped::TooLong)` once for each overlong line.
    pub fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(Result<&[u8], Dropped>)) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let head = &data[..nl];
            data = &data[nl + 1..];
            if self.skipping {
                self.skipping = false;
                each(Err(Dropped::TooLong));
            } else if self.buf.len() + head.len() > MAX_LINE {
                self.reset();
                each(Err(Dropped::TooLong));
            } else if self.buf.is_empty() {
                each(Ok(head));
            } else {
                self.buf.extend_from_slice(head);
                let line = std::mem::take(&mut self.buf);
                each(Ok(&line));
                self.buf = line;
                self.reset();
            }
        }
        if self.skipping {
            return;
        }
        if self.buf.len() + data.len() > MAX_LINE {
            self.reset();
            self.skipping = true;
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Empties the buffer, giving back memory a long line took.
    fn reset(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > CHUNK {
            self.buf = Vec::new();
        }
    }
}

/// What one line means.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// `"ready"`.
    Ready,
    /// A Node internal message (`{"cmd":"NODE_..."}`); its `cmd`.
    Internal(String),
    /// `axm:monitor` values.
    Metrics(Vec<(String, f64)>),
    /// Something else to hand over.
    Event(Event),
    /// Valid JSON nobody here needs.
    Other,
    /// Not JSON.
    Garbage,
}

/// Reads one line.
pub fn parse(line: &[u8]) -> Line {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return Line::Garbage;
    };
    if v.as_str() == Some("ready") {
        return Line::Ready;
    }
    // setupChannel's isInternal: a string `cmd` starting "NODE_".
    if let Some(cmd) = v
        .get("cmd")
        .and_then(Value::as_str)
        .filter(|c| c.starts_with("NODE_"))
    {
        return Line::Internal(cmd.to_string());
    }
    match v.get("type").and_then(Value::as_str) {
        Some("process:msg") => Line::Event(Event::ProcessMsg(
            v.get("data").cloned().unwrap_or(Value::Null),
        )),
        Some("axm:monitor") => Line::Metrics(metrics(v.get("data"))),
        Some(t) if t.starts_with("axm:") => Line::Event(Event::Axm(t.to_string())),
        _ => Line::Other,
    }
}

/// `@pm2/io`'s `_cookData` output: `{NAME: {"value": V, ...}}`; plain
/// `{NAME: V}` is taken too. Values that are not numbers are skipped.
fn metrics(data: Option<&Value>) -> Vec<(String, f64)> {
    let Some(map) = data.and_then(Value::as_object) else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(name, v)| {
            let v = v.get("value").unwrap_or(v);
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.filter(|n| n.is_finite()).map(|n| (name.clone(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(l: &mut Lines, data: &[u8]) -> Vec<Result<Vec<u8>, Dropped>> {
        let mut v = Vec::new();
        l.feed(data, |x| v.push(x.map(|b| b.to_vec())));
        v
    }

    #[test]
    fn lines_are_split_across_reads() {
        let mut l = Lines::default();
        assert!(collect(&mut l, b"\"rea").is_empty());
        assert_eq!(
            collect(&mut l, b"dy\"\n{}\n{"),
            vec![Ok(b"\"ready\"".to_vec()), Ok(b"{}".to_vec())]
        );
        assert_eq!(collect(&mut l, b"}\n"), vec![Ok(b"{}".to_vec())]);
    }

    #[test]
    fn an_overlong_line_is_dropped_once_and_the_next_one_kept() {
        let mut l = Lines::default();
        let big = vec![b'x'; MAX_LINE / 2 + 1];
        assert!(collect(&mut l, &big).is_empty());
        assert!(collect(&mut l, &big).is_empty());
        assert!(collect(&mut l, &big).is_empty());
        assert_eq!(
            collect(&mut l, b"x\n\"ready\"\n"),
            vec![Err(Dropped::TooLong), Ok(b"\"ready\"".to_vec())]
        );
        assert!(l.buf.capacity() <= CHUNK);
    }

    #[test]
    fn messages_are_recognised() {
        assert_eq!(parse(b"\"ready\""), Line::Ready);
        assert_eq!(
            parse(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Server\"}"),
            Line::Internal("NODE_HANDLE".into())
        );
        assert_eq!(parse(b"not json"), Line::Garbage);
        assert_eq!(parse(b""), Line::Garbage);
        assert_eq!(parse(b"{\"hello\":1}"), Line::Other);
        assert_eq!(
            parse(br#"{"type":"axm:monitor","data":{"req/min":{"value":12.5,"unit":"req"},"n":3,"s":"x"}}"#),
            Line::Metrics(vec![("n".into(), 3.0), ("req/min".into(), 12.5)])
        );
        assert_eq!(
            parse(br#"{"type":"process:msg","data":{"a":1}}"#),
            Line::Event(Event::ProcessMsg(serde_json::json!({"a":1})))
        );
        assert_eq!(
            parse(br#"{"type":"axm:action","data":{}}"#),
            Line::Event(Event::Axm("axm:action".into()))
        );
    }

    #[test]
    fn the_channel_follows_listen_fds() {
        assert_eq!(channel_fd(0), 3);
        assert_eq!(channel_fd(2), 5);
    }
}
