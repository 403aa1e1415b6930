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
//!   closes any descriptor passed to us) and acknowledge. The child's answers
//!   to the sockets procward sends it, `NODE_HANDLE_ACK` and
//!   `NODE_HANDLE_NACK` (the descriptor did not arrive: send it again), are
//!   handed to the supervisor.
//! - `NODE_CLUSTER` messages (a worker's `online`, `queryServer`,
//!   `listening`, `close`) are handed to the supervisor as
//!   [`Event::Cluster`]; [`super::cluster`] describes the protocol.
//! - `lib/child_process.js` `_forkChild`: the child `unref`s the channel and
//!   refs it only while a `'message'`/`'disconnect'` listener exists, so an
//!   app that never listens still exits on its own.
//!
//! procward keeps its end open and reads for the process's whole life: a
//! closed channel makes a later `process.send` emit an error that crashes an
//! app without an error handler. What is kept per process is bounded: one
//! line of at most [`MAX_LINE`] bytes (a longer line is skipped up to its
//! newline; it and lines that are not JSON are dropped and counted), and a
//! line is read without building what is not used: only a few top-level
//! fields are looked at, borrowed from the line, and any other value,
//! however large, is scanned over, not built ([`parse`]).
//!
//! Messages understood (PM2's `lib/ProcessContainerFork.js` apps and
//! `@pm2/io`):
//! - `"ready"`: the app is ready (PM2 `wait_ready`);
//! - `{"type":"process:msg","data":...}`: handed to the supervisor;
//! - `{"type":"axm:monitor","data":{NAME:{"value":N,...},...}}`: each
//!   numeric value becomes a [`Event::Metric`];
//! - other `axm:*` types: handed over by type;
//! - anything else that is JSON: ignored.
//!
//! procward sends `"shutdown"` (PM2's `shutdown_with_message`).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::{cluster, deliver, Dropped, Event, Input, Report, FIRST_FD};

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

    /// Writes one message with descriptor `fd` attached (SCM_RIGHTS), in
    /// one sendmsg(2) so that the descriptor arrives with the message's
    /// first byte, as libuv's `uv_write2` sends a handle; the rest, if the
    /// socket took only part, follows. The receiver gets its own copy of
    /// the descriptor: ours stays open.
    pub fn send_with_fd(&self, value: &Value, fd: RawFd) -> io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(&line)];
        let sent = loop {
            match sendmsg::<UnixAddr>(
                self.0.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        (&self.0).write_all(&line[sent..])
    }
}

/// Reading the channel of one process.
pub struct Channel;

impl Channel {
    /// Starts reading `ours` for process `pid`; `"ready"` becomes
    /// [`Event::Ready`] when `forward_ready` (the app's readiness source is
    /// this channel).
    pub fn start(
        ours: UnixStream,
        pid: i32,
        forward_ready: bool,
        tx: mpsc::Sender<Report>,
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
    tx: mpsc::Sender<Report>,
) {
    let mut lines = Lines::default();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) => {
                // Every copy of the child's end is closed: it called
                // process.disconnect() (a cluster worker told to
                // disconnect does, once its servers have closed), or exited.
                deliver(
                    &tx,
                    Report {
                        pid,
                        event: Event::Disconnected,
                    },
                )
                .await;
                return;
            }
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
                Line::Ready if forward_ready => out.push(Report {
                    pid,
                    event: Event::Ready,
                }),
                Line::Ready => debug!(
                    pid,
                    "\"ready\" on the IPC channel ignored: readiness comes from elsewhere"
                ),
                Line::Cluster(request) => out.push(Report {
                    pid,
                    event: Event::Cluster(request),
                }),
                Line::Internal(cmd) if cmd == "NODE_HANDLE" => acks += 1,
                Line::Internal(cmd) if cmd == "NODE_HANDLE_ACK" || cmd == "NODE_HANDLE_NACK" => out
                    .push(Report {
                        pid,
                        event: Event::HandleReceived(cmd == "NODE_HANDLE_ACK"),
                    }),
                Line::Internal(cmd) => trace!(pid, cmd, "Node internal message ignored"),
                Line::Metrics(m) => out.extend(m.into_iter().map(|(name, value)| Report {
                    pid,
                    event: Event::Metric { name, value },
                })),
                Line::Event(event) => out.push(Report { pid, event }),
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
        if garbage > 0 || too_long > 0 {
            let mut counts = [0; Dropped::ALL.len()];
            counts[Dropped::Garbage.index()] = garbage;
            counts[Dropped::TooLong.index()] = too_long;
            out.push(Report {
                pid,
                event: Event::Dropped {
                    input: Input::Ipc,
                    counts,
                    over: None,
                },
            });
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
    /// A Node cluster message (`{"cmd":"NODE_CLUSTER",...}`) from a worker.
    Cluster(cluster::Request),
    /// Another Node internal message (`{"cmd":"NODE_..."}`); its `cmd`.
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

/// The largest `data` of a `process:msg` or `axm:monitor` message that is
/// parsed into a value; a larger one is described by its size.
pub const MAX_DATA: usize = 64 * 1024;

/// The top-level fields of an object message, each borrowed as raw JSON
/// text: nothing is copied or built for a field nobody reads, and values of
/// other fields (a 1 MiB array, say) are only scanned over.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Fields<'a> {
    #[serde(borrow, deserialize_with = "raw")]
    cmd: Option<&'a RawValue>,
    #[serde(rename = "type", borrow, deserialize_with = "raw")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    data: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    act: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    seq: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    key: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    address: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    port: Option<&'a RawValue>,
    #[serde(rename = "addressType", borrow, deserialize_with = "raw")]
    address_type: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    fd: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    index: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    backlog: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    flags: Option<&'a RawValue>,
    #[serde(rename = "ipv6Only", borrow, deserialize_with = "raw")]
    ipv6_only: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    ack: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "raw")]
    accepted: Option<&'a RawValue>,
}

/// A present field, `null` included (`Option<&RawValue>` alone would read
/// `null` as absent, and Node's keys tell `null` from `undefined`).
fn raw<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl cluster::Fields for Fields<'_> {
    fn raw(&self, name: &str) -> Option<&RawValue> {
        match name {
            "act" => self.act,
            "seq" => self.seq,
            "key" => self.key,
            "address" => self.address,
            "port" => self.port,
            "addressType" => self.address_type,
            "fd" => self.fd,
            "index" => self.index,
            "backlog" => self.backlog,
            "flags" => self.flags,
            "ipv6Only" => self.ipv6_only,
            "ack" => self.ack,
            "accepted" => self.accepted,
            _ => None,
        }
    }
}

/// A raw JSON string's text, if it is one.
fn text<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw?.get()).ok()
}

/// Reads one line, building only what is used: strings are borrowed where
/// they have no escapes, and values nobody reads are skipped, not built.
pub fn parse(line: &[u8]) -> Line {
    // The one message on the path to READY=1, as Node writes it: no
    // JSON parser for it.
    if line.trim_ascii() == b"\"ready\"" {
        return Line::Ready;
    }
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'"') => match serde_json::from_slice::<Cow<'_, str>>(line) {
            Ok(s) if s == "ready" => Line::Ready,
            Ok(_) => Line::Other,
            Err(_) => Line::Garbage,
        },
        Some(b'{') => match serde_json::from_slice::<Fields<'_>>(line) {
            Ok(f) => object(&f),
            // A duplicate or odd field: JSON still, just not ours.
            Err(_) => valid(line),
        },
        _ => valid(line),
    }
}

/// Other JSON is checked without being built.
fn valid(line: &[u8]) -> Line {
    match serde_json::from_slice::<IgnoredAny>(line) {
        Ok(_) => Line::Other,
        Err(_) => Line::Garbage,
    }
}

fn object(f: &Fields<'_>) -> Line {
    // setupChannel's isInternal: a string `cmd` starting "NODE_".
    if let Some(cmd) = text(f.cmd).filter(|c| c.starts_with("NODE_")) {
        if cmd == "NODE_CLUSTER" {
            return Line::Cluster(cluster::request(f));
        }
        return Line::Internal(cmd.into_owned());
    }
    let small = |r: Option<&RawValue>| {
        r.filter(|r| r.get().len() <= MAX_DATA)
            .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
    };
    match text(f.kind).as_deref() {
        Some("process:msg") => Line::Event(Event::ProcessMsg(match f.data {
            Some(r) if r.get().len() > MAX_DATA => {
                Value::String(format!("({} bytes, not shown)", r.get().len()))
            }
            r => small(r).unwrap_or(Value::Null),
        })),
        Some("axm:monitor") => Line::Metrics(metrics(small(f.data).as_ref())),
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
        assert_eq!(parse(b" \"ready\"\r"), Line::Ready);
        assert_eq!(parse(b"\"re\\u0061dy\""), Line::Ready);
        assert_eq!(parse(b"\"ready\"x"), Line::Garbage);
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
    fn large_values_are_skipped_not_built() {
        let array = format!("[{}1]", "123456,".repeat(150_000));
        assert_eq!(parse(array.as_bytes()), Line::Other);
        assert_eq!(parse(format!("{{\"x\":{array}}}").as_bytes()), Line::Other);
        assert_eq!(
            parse(format!("{{\"type\":\"process:msg\",\"data\":{array}}}").as_bytes()),
            Line::Event(Event::ProcessMsg(Value::String(format!(
                "({} bytes, not shown)",
                array.len()
            ))))
        );
        // Odd shapes are JSON still: not garbage.
        assert_eq!(parse(br#"{"type":5,"cmd":[1]}"#), Line::Other);
        assert_eq!(parse(br#"{"a":1,"a":2}"#), Line::Other);
        assert_eq!(
            parse(br#"{"cmd":"NODE_HANDLE_ACK"}"#),
            Line::Internal("NODE_HANDLE_ACK".into())
        );
        assert_eq!(parse(b"[1,"), Line::Garbage);
        assert_eq!(parse(br#""re\u0061dy""#), Line::Ready);
    }

    #[test]
    fn the_channel_follows_listen_fds() {
        assert_eq!(channel_fd(0), 3);
        assert_eq!(channel_fd(2), 5);
    }
}
