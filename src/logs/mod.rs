//! The apps' stdout and stderr: pass-through by default, PM2-style capture
//! when asked.
//!
//! Without a log key an app inherits procward's descriptors: no copy, no
//! thread, and the container runtime or journald collects its output. With
//! one (see `config::logs::LogSpec::capture`), each process gets a pipe
//! per stream and a thread per pipe ([`stream::run`]) that splits lines,
//! formats them and writes them to procward's console and/or files. The
//! supervisor only creates the pipes and learns of exits: no log I/O runs
//! on its task, and nothing it owns is shared.
//!
//! Kept here for `procward logs` and `describe`: a bounded ring of recent
//! lines per instance ([`RING_LINES`], [`RING_BYTES`]) and the last lines
//! of stderr of the instance's last crashed process ([`TAIL_LINES`]).

pub mod file;
pub mod stream;
pub mod time;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus::IntCounter;
use tokio::sync::broadcast;
use tracing::warn;

use crate::config::logs::{RotateDefaults, Target};
use crate::config::AppSpec;
use file::{FileSink, Rotation};
use stream::{Console, Format, Out, StreamCtx};
use time::DateFormat;

/// Lines kept per instance for `procward logs`.
pub const RING_LINES: usize = 1000;
/// Bytes of text kept per instance for `procward logs`.
pub const RING_BYTES: usize = 128 * 1024;
/// Lines of stderr kept for a crash report.
pub const TAIL_LINES: usize = 20;
/// Longest line of a crash report, in bytes.
pub const TAIL_LINE_BYTES: usize = 512;

/// docker compose's palette for service names.
const COLOURS: [&str; 6] = [
    "\x1b[36m", "\x1b[33m", "\x1b[32m", "\x1b[35m", "\x1b[34m", "\x1b[96m",
];

/// Which stream of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out,
    /// stderr.
    Err,
}

impl Stream {
    /// `out` or `err`, as PM2's JSON logs name them.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// One line an app wrote.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read by `procward logs`
pub struct LogLine {
    /// The app's index.
    pub app: usize,
    /// The instance.
    pub instance: u32,
    /// Which stream.
    pub stream: Stream,
    /// When procward read it.
    pub time: SystemTime,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// The last stderr lines of a process that crashed.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read by `describe`
pub struct CrashReport {
    /// The process.
    pub pid: i32,
    /// How it ended.
    pub status: String,
    /// Its last lines of stderr, oldest first.
    pub lines: Vec<String>,
}

/// What procward keeps about one instance's output.
pub struct InstanceLog {
    app: usize,
    app_name: String,
    ring: Mutex<VecDeque<LogLine>>,
    ring_bytes: AtomicU64,
    crash: Mutex<CrashBook>,
}

#[derive(Default)]
struct CrashBook {
    /// The stderr tails of this instance's processes whose stderr is
    /// still being read or whose exit is not known yet.
    tails: Vec<Tail>,
    /// (pid, serial) of processes started.
    pids: Vec<(i32, u64)>,
    last: Option<CrashReport>,
}

#[derive(Default)]
struct Tail {
    serial: u64,
    lines: VecDeque<String>,
    eof: bool,
    /// The exit is known: `Some(status)` when it was a crash.
    exited: Option<Option<(i32, String)>>,
}

impl InstanceLog {
    fn new(app: usize, app_name: String) -> InstanceLog {
        InstanceLog {
            app,
            app_name,
            ring: Mutex::new(VecDeque::new()),
            ring_bytes: AtomicU64::new(0),
            crash: Mutex::new(CrashBook::default()),
        }
    }

    /// Keeps the last lines of one read.
    fn record<'a>(
        &self,
        serial: u64,
        instance: u32,
        stream: Stream,
        time: SystemTime,
        lines: impl DoubleEndedIterator<Item = &'a [u8]> + ExactSizeIterator,
        follow: &broadcast::Sender<Arc<LogLine>>,
    ) {
        let following = follow.receiver_count() > 0;
        let total = lines.len();
        let keep = if following {
            total
        } else {
            total.min(RING_LINES)
        };
        let make = |text: &[u8]| LogLine {
            app: self.app,
            instance,
            stream,
            time,
            text: String::from_utf8_lossy(&text[..text.len().min(RING_BYTES)]).into_owned(),
        };
        let mut recent: Vec<LogLine> = Vec::with_capacity(keep.min(64));
        let mut bytes = 0;
        for text in lines.rev().take(keep) {
            if !following && (bytes >= RING_BYTES || recent.len() >= RING_LINES) {
                break;
            }
            bytes += text.len();
            recent.push(make(text));
        }
        recent.reverse();
        if stream == Stream::Err {
            let mut book = self.crash.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = book.tails.iter_mut().find(|t| t.serial == serial) {
                for l in recent.iter().rev().take(TAIL_LINES).rev() {
                    let mut s = l.text.clone();
                    if s.len() > TAIL_LINE_BYTES {
                        let mut cut = TAIL_LINE_BYTES;
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        s.truncate(cut);
                    }
                    t.lines.push_back(s);
                    if t.lines.len() > TAIL_LINES {
                        t.lines.pop_front();
                    }
                }
            }
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut held = self.ring_bytes.load(Ordering::Relaxed) as usize;
        for line in recent {
            if following {
                let _ = follow.send(Arc::new(line.clone()));
            }
            held += line.text.len();
            ring.push_back(line);
        }
        while ring.len() > RING_LINES || (held > RING_BYTES && ring.len() > 1) {
            if let Some(old) = ring.pop_front() {
                held -= old.text.len();
            }
        }
        self.ring_bytes.store(held as u64, Ordering::Relaxed);
    }

    /// The process `serial`'s stream has no writer left.
    fn closed(&self, serial: u64, stream: Stream) {
        if stream != Stream::Err {
            return;
        }
        let mut book = self.crash.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = book.tails.iter().position(|t| t.serial == serial) else {
            return;
        };
        match book.tails[at].exited.clone() {
            None => book.tails[at].eof = true,
            Some(crash) => {
                let tail = book.tails.remove(at);
                if let Some((pid, status)) = crash {
                    let lines: Vec<String> = tail.lines.into();
                    if !lines.is_empty() {
                        warn!(app = %self.app_name, pid, %status, last_stderr = lines.join("\n").as_str(),
                              "the last lines of stderr before the exit");
                    }
                    book.last = Some(CrashReport { pid, status, lines });
                }
            }
        }
    }
}

/// The log side of every app, shared by the supervisor (which starts
/// processes) and the threads reading them. Cheap to clone.
#[derive(Clone)]
pub struct Logs {
    inner: Arc<Inner>,
}

struct Inner {
    /// Stream threads still reading, and a condition to wait for none.
    active: Mutex<usize>,
    idle: std::sync::Condvar,
    apps: Vec<AppLogs>,
    reopen: Arc<AtomicU64>,
    follow: broadcast::Sender<Arc<LogLine>>,
    serial: AtomicU64,
    /// procward's stdout and stderr.
    consoles: [Arc<Console>; 2],
    /// Every log file open, by path: instances writing to the same file
    /// share its sink.
    files: Mutex<HashMap<PathBuf, Arc<FileSink>>>,
}

struct AppLogs {
    name: String,
    capture: bool,
    json: bool,
    prefix: bool,
    date_format: Option<String>,
    colour: &'static str,
    label_width: usize,
    instances: u32,
    writes_files: bool,
    /// [instance][stream] sinks; empty means /dev/null.
    outs: Mutex<Vec<[Vec<Out>; 2]>>,
    /// [stream]: inherit procward's descriptor (pass-through).
    inherit: [bool; 2],
    logs: Mutex<Vec<Arc<InstanceLog>>>,
    dropped: IntCounter,
    split: IntCounter,
    /// What the targets of instances added later are made from.
    spec: crate::config::logs::LogSpec,
    cwd: PathBuf,
    rotation: Rotation,
}

/// Locks a mutex whose holder may have panicked: the data is still sound
/// (only pushes and clones happen under these locks).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sinks of instance `i` of an app, named as for the app's count at
/// start-up: [stdout, stderr], each empty for /dev/null.
fn sinks(
    a: &AppLogs,
    i: u32,
    consoles: &[Arc<Console>; 2],
    files: &mut HashMap<PathBuf, Arc<FileSink>>,
    reopen: &Arc<AtomicU64>,
) -> [Vec<Out>; 2] {
    let mut per = [Vec::new(), Vec::new()];
    for (s, slot) in per.iter_mut().enumerate() {
        for t in a.spec.targets(s == 1, &a.cwd, i, a.instances) {
            match t {
                Target::Console => slot.push(Out::Console(consoles[s].clone())),
                Target::Null => {}
                Target::File(p) => {
                    let sink = files.entry(p.clone()).or_insert_with(|| {
                        Arc::new(FileSink::new(
                            p,
                            a.name.clone(),
                            a.rotation,
                            a.dropped.clone(),
                            reopen.clone(),
                        ))
                    });
                    slot.push(Out::File(sink.clone()));
                }
            }
        }
    }
    per
}

/// The counters of one app: bytes dropped, lines split.
pub type Counters = (IntCounter, IntCounter);

impl Logs {
    /// Resolves every app's targets and opens nothing yet. `counters`
    /// gives each app's (dropped bytes, split lines) counters.
    pub fn new(
        specs: &[&AppSpec],
        rotate: RotateDefaults,
        mut counters: impl FnMut(usize) -> Counters,
    ) -> Logs {
        let reopen = Arc::new(AtomicU64::new(0));
        let consoles = [Arc::new(Console::new(1)), Arc::new(Console::new(2))];
        let files: HashMap<PathBuf, Arc<FileSink>> = HashMap::new();
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let label = |s: &AppSpec, i: u32| {
            if s.instances > 1 {
                format!("{}-{i}", s.name)
            } else {
                s.name.clone()
            }
        };
        let label_width = specs
            .iter()
            .filter(|s| s.logs.prefix)
            .map(|s| label(s, s.instances.saturating_sub(1)).len())
            .max()
            .unwrap_or(0);
        let mut apps = Vec::new();
        let mut any_date = false;
        for (a, spec) in specs.iter().enumerate() {
            let l = &spec.logs;
            let (dropped, split) = counters(a);
            let cwd = spec.cwd.clone().unwrap_or_else(|| here.clone());
            let rotation = Rotation {
                max_size: l.max_size.or(rotate.max_size),
                retain: l.retain.unwrap_or(rotate.retain),
                compress: rotate.compress,
            };
            let n = spec.instances.max(1);
            let writes_files = (0..n).any(|i| {
                [false, true].iter().any(|&err| {
                    l.targets(err, &cwd, i, n)
                        .iter()
                        .any(|t| matches!(t, Target::File(_)))
                })
            });
            let inherit = [false, true]
                .map(|err| !l.capture() && l.targets(err, &cwd, 0, n) == [Target::Console]);
            any_date |= l.date_format.is_some();
            apps.push(AppLogs {
                name: spec.name.clone(),
                capture: l.capture(),
                json: l.json,
                prefix: l.prefix,
                date_format: l.date_format.clone(),
                colour: COLOURS[a % COLOURS.len()],
                label_width,
                instances: n,
                writes_files,
                outs: Mutex::new(Vec::new()),
                inherit,
                logs: Mutex::new(Vec::new()),
                dropped,
                split,
                spec: l.clone(),
                cwd,
                rotation,
            });
        }
        if any_date {
            // Reads TZ once, for localtime_r(3) in the stream threads.
            // SAFETY: tzset(3) before any stream thread exists.
            unsafe { tzset() };
        }
        let logs = Logs {
            inner: Arc::new(Inner {
                active: Mutex::new(0),
                idle: std::sync::Condvar::new(),
                apps,
                reopen,
                follow: broadcast::channel(1024).0,
                serial: AtomicU64::new(0),
                consoles,
                files: Mutex::new(files),
            }),
        };
        for (a, spec) in specs.iter().enumerate() {
            logs.grow(a, spec.instances.max(1) as usize);
        }
        logs
    }

    /// Gives app `app` the sinks of at least `n` instances. An instance
    /// added while procward runs writes where the app's instances wrote at
    /// start-up, as a PM2 process duplicated by `pm2 scale` does: into the
    /// same files for an app started with one instance (or `merge_logs`),
    /// else into its own numbered ones. Instances removed keep their
    /// sinks and recent lines, for `procward logs`.
    pub fn grow(&self, app: usize, n: usize) {
        let a = &self.inner.apps[app];
        let mut outs = lock(&a.outs);
        let mut logs = lock(&a.logs);
        let mut files = lock(&self.inner.files);
        while outs.len() < n {
            let i = outs.len() as u32;
            outs.push(sinks(
                a,
                i,
                &self.inner.consoles,
                &mut files,
                &self.inner.reopen,
            ));
        }
        while logs.len() < n {
            logs.push(Arc::new(InstanceLog::new(app, a.name.clone())));
        }
    }

    /// The descriptors for a new process of instance `instance` of app
    /// `app`: nothing to pass in pass-through, else pipes whose reading
    /// threads are already running (or /dev/null). A pipe or thread that
    /// cannot be made leaves that stream passed through, with a warning.
    pub fn prepare(&self, app: usize, instance: usize) -> Prepared {
        let a = &self.inner.apps[app];
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let mut held = Vec::new();
        for (s, stream) in [Stream::Out, Stream::Err].into_iter().enumerate() {
            if a.inherit[s] {
                continue;
            }
            let target = s as RawFd + 1;
            let outs = lock(&a.outs)[instance][s].clone();
            if outs.is_empty() {
                match std::fs::OpenOptions::new().write(true).open("/dev/null") {
                    Ok(f) => held.push((OwnedFd::from(f), target)),
                    Err(e) => {
                        warn!(app = %a.name, error = %e, "cannot open /dev/null; passing the output through")
                    }
                }
                continue;
            }
            let log = lock(&a.logs)[instance].clone();
            if stream == Stream::Err {
                let mut book = log.crash.lock().unwrap_or_else(|e| e.into_inner());
                book.tails.push(Tail {
                    serial,
                    ..Tail::default()
                });
            }
            let ctx = StreamCtx {
                outs: outs.clone(),
                format: Format {
                    prefix: if a.prefix {
                        let label = if a.instances > 1 || instance > 0 {
                            format!("{}-{instance}", a.name)
                        } else {
                            a.name.clone()
                        };
                        format!("{label:<w$} | ", w = a.label_width)
                    } else {
                        String::new()
                    },
                    colour: a.colour,
                    date: a.date_format.as_deref().map(DateFormat::new),
                    json: a.json,
                    app: a.name.clone(),
                    instance: instance as u32,
                    stream,
                },
                log: log.clone(),
                serial,
                dropped: a.dropped.clone(),
                split: a.split.clone(),
                follow: self.inner.follow.clone(),
            };
            match pipe_and_thread(ctx, &self.inner, &a.name, instance, stream) {
                Ok(write_end) => held.push((write_end, target)),
                Err(e) => {
                    log.closed(serial, stream);
                    warn!(app = %a.name, instance, error = %e,
                          "cannot capture the app's {}; passing it through", stream.as_str());
                }
            }
        }
        Prepared {
            logs: self.clone(),
            app,
            instance,
            serial,
            held,
        }
    }

    /// Waits, at most `limit`, until every captured stream has been read to
    /// its end, so that procward exits with the apps' last lines written.
    /// A stream still held open by a process that left the app's group is
    /// given up on after `limit`.
    pub fn drain(&self, limit: std::time::Duration) {
        let active = self.inner.active.lock().unwrap_or_else(|e| e.into_inner());
        let (left, timeout) = self
            .inner
            .idle
            .wait_timeout_while(active, limit, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            warn!(
                streams = *left,
                "app output still open at exit; its last lines may be lost"
            );
        }
    }

    /// Whether app `app` writes log files (SIGUSR2 reopens them).
    pub fn writes_files(&self, app: usize) -> bool {
        self.inner.apps[app].writes_files
    }

    /// Reopens every log file before its next line (after SIGUSR2, once an
    /// external logrotate has moved them).
    pub fn reopen(&self) {
        self.inner.reopen.fetch_add(1, Ordering::Relaxed);
    }

    /// The process `pid` of an instance exited; `crash` is its status when
    /// it crashed. Returns its last lines of stderr when they are all read
    /// already; else they are logged once its stderr closes.
    pub fn exited(
        &self,
        app: usize,
        instance: usize,
        pid: i32,
        crash: Option<String>,
    ) -> Option<String> {
        let log = lock(&self.inner.apps[app].logs)[instance].clone();
        let mut book = log.crash.lock().unwrap_or_else(|e| e.into_inner());
        let at = book.pids.iter().position(|(p, _)| *p == pid)?;
        let (_, serial) = book.pids.remove(at);
        let t = book.tails.iter().position(|t| t.serial == serial)?;
        if !book.tails[t].eof {
            book.tails[t].exited = Some(crash.map(|s| (pid, s)));
            return None;
        }
        let tail = book.tails.remove(t);
        let status = crash?;
        let lines: Vec<String> = tail.lines.into();
        let text = (!lines.is_empty()).then(|| lines.join("\n"));
        book.last = Some(CrashReport { pid, status, lines });
        text
    }

    // The rest is the API of `procward logs` and `describe`.

    /// Whether app `app` is captured (else `procward logs` says how to
    /// turn capture on).
    #[allow(dead_code)]
    pub fn captured(&self, app: usize) -> bool {
        self.inner.apps[app].capture
    }

    /// The last `n` lines of app `app` (every app when `None`), oldest
    /// first, instances merged by time.
    #[allow(dead_code)]
    pub fn recent(&self, app: Option<usize>, n: usize) -> Vec<LogLine> {
        let mut all: Vec<LogLine> = Vec::new();
        for (i, a) in self.inner.apps.iter().enumerate() {
            if app.is_some_and(|x| x != i) {
                continue;
            }
            for log in lock(&a.logs).iter() {
                let ring = log.ring.lock().unwrap_or_else(|e| e.into_inner());
                let skip = ring.len().saturating_sub(n);
                all.extend(ring.iter().skip(skip).cloned());
            }
        }
        all.sort_by_key(|l| l.time);
        let skip = all.len().saturating_sub(n);
        all.split_off(skip)
    }

    /// Every line read from now on (`procward logs --follow`); a follower
    /// that falls more than 1024 lines behind misses some and is told so
    /// by `RecvError::Lagged`.
    #[allow(dead_code)]
    pub fn follow(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.inner.follow.subscribe()
    }

    /// The last crash of an instance, with its last lines of stderr.
    #[allow(dead_code)]
    pub fn last_crash(&self, app: usize, instance: usize) -> Option<CrashReport> {
        let log = lock(&self.inner.apps[app].logs)[instance].clone();
        let book = log.crash.lock().unwrap_or_else(|e| e.into_inner());
        book.last.clone()
    }
}

/// The descriptors of a process about to start. Dropping it closes
/// procward's copies of the write ends, so that a reader sees end of file
/// once the process and its children have closed theirs.
pub struct Prepared {
    logs: Logs,
    app: usize,
    instance: usize,
    serial: u64,
    held: Vec<(OwnedFd, RawFd)>,
}

impl Prepared {
    /// (descriptor in procward, number in the child) for the spawn.
    pub fn fds(&self) -> Vec<(RawFd, RawFd)> {
        self.held
            .iter()
            .map(|(fd, t)| (fd.as_raw_fd(), *t))
            .collect()
    }

    /// The process started as `pid`.
    pub fn started(self, pid: i32) {
        let log = lock(&self.logs.inner.apps[self.app].logs)[self.instance].clone();
        let mut book = log.crash.lock().unwrap_or_else(|e| e.into_inner());
        book.pids.push((pid, self.serial));
    }
}

/// A pipe whose read end is handed to a new thread running
/// [`stream::run`]; returns the write end.
fn pipe_and_thread(
    ctx: StreamCtx,
    inner: &Arc<Inner>,
    app: &str,
    instance: usize,
    stream: Stream,
) -> std::io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // A larger pipe means fewer wake-ups under load; the kernel may refuse
    // (pipe-max-size, pipe-user-pages-soft), which only costs speed.
    // SAFETY: fcntl(2) F_SETPIPE_SZ on our own pipe.
    unsafe {
        libc::fcntl(
            read.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            stream::BUF as libc::c_int,
        )
    };
    *inner.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let inner = inner.clone();
    let done = inner.clone();
    std::thread::Builder::new()
        .name(format!("log {app}-{instance} {}", stream.as_str()))
        // Virtual size; only the pages touched are resident. Compressing
        // a rotated file needs more than the line loop.
        .stack_size(1024 * 1024)
        .spawn(move || {
            stream::run(ctx, read);
            *inner.active.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            inner.idle.notify_all();
        })
        .inspect_err(|_| {
            *done.active.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        })?;
    Ok(write)
}

extern "C" {
    fn tzset();
}
