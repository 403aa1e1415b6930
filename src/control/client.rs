//! The commands that talk to a running procward: find its socket, send one
//! request, print the answer.
//!
//! Plain blocking I/O, no event loop: a command is one connect, one write
//! and one read, and its cost is mostly starting the binary.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | done: every instance ended where the command meant it to |
//! | 1 | done, but not everywhere: an instance failed to start, a reload was aborted |
//! | 2 | usage: a bad command line, or procward refused the request (an unknown app, a bad signal) |
//! | 3 | no procward is running here (or several are, and none was chosen) |
//! | 4 | not allowed: only procward's own user and root may control it |
//! | 111 | the conversation failed: the connection broke, or the answer could not be read |

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::paths::{self, Probe};
use super::{render, Reply, Request};

/// Done everywhere.
pub const OK: i32 = 0;
/// Done, but not everywhere.
pub const FAILED: i32 = 1;
/// A usage error or a refused request.
pub const USAGE: i32 = 2;
/// No procward found.
pub const NOT_RUNNING: i32 = 3;
/// This user may not control that procward.
pub const NOT_ALLOWED: i32 = 4;
/// The conversation failed.
pub const BROKEN: i32 = 111;

/// Which procward to talk to.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// An explicit socket path.
    pub control: Option<PathBuf>,
    /// A procward's name.
    pub name: Option<String>,
}

/// How to print the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// For people; colours on a terminal.
    Text,
    /// The answer's JSON as it came.
    Json,
}

/// Runs one command; returns the exit code.
pub fn run(target: &Target, request: Request, output: Output) -> i32 {
    let (path, stream) = match connect(target) {
        Ok(c) => c,
        Err((code, msg)) => {
            eprintln!("{msg}");
            return code;
        }
    };
    // Actions wait for the supervisor (a reload for every instance to come
    // back); questions are answered at once.
    let patience = match request {
        Request::Hello | Request::Status | Request::Describe { .. } => {
            Some(Duration::from_secs(10))
        }
        _ => None,
    };
    let reply = match ask(stream, &request, patience) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("procward: error: no answer from {}: {e}", path.display());
            return BROKEN;
        }
    };
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match reply {
        Reply::Refused(r) => {
            eprintln!("procward: error: {}", r.error);
            if let Some(h) = r.hint {
                eprintln!("  hint: {h}");
            }
            match r.kind.as_str() {
                "not_allowed" => NOT_ALLOWED,
                "shutting_down" | "busy" => FAILED,
                _ => USAGE,
            }
        }
        Reply::Done(done) => {
            let mut out = std::io::stdout().lock();
            let text = match (&request, output) {
                (_, Output::Json) => {
                    let v = done.data.clone().unwrap_or_else(|| {
                        serde_json::to_value(&done.instances).unwrap_or_default()
                    });
                    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
                }
                (Request::Status, Output::Text) => render::status_table(
                    done.data.as_ref().unwrap_or(&serde_json::Value::Null),
                    colour,
                ),
                (Request::Describe { .. }, Output::Text) => {
                    render::description(done.data.as_ref().unwrap_or(&serde_json::Value::Null))
                }
                (Request::Hello, Output::Text) => {
                    serde_json::to_string(&done.data).unwrap_or_default() + "\n"
                }
                (_, Output::Text) => render::outcomes(request.name(), &done.instances, colour),
            };
            // A closed stdout (`| head`) is not an error of procward's.
            let _ = out.write_all(text.as_bytes());
            if done.instances.iter().all(|i| i.ok) {
                OK
            } else {
                FAILED
            }
        }
    }
}

/// Writes `request` as one line. A refusal (a user not allowed, say) may
/// come, and the server close, before the request is written: the answer
/// is still there to read, so a broken connection here is not an error.
fn write_request(stream: &mut UnixStream, request: &Request) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    match stream.write_all(&line) {
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Sends one request on `stream` and reads the answer.
fn ask(
    mut stream: UnixStream,
    request: &Request,
    patience: Option<Duration>,
) -> std::io::Result<Reply> {
    stream.set_read_timeout(patience)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write_request(&mut stream, request)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed without an answer",
        ));
    }
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable answer: {e}"),
        )
    })
}

/// Finds the procward to talk to and connects; the error is an exit code
/// and the message.
fn connect(target: &Target) -> Result<(PathBuf, UnixStream), (i32, String)> {
    if let Some(p) = &target.control {
        return match paths::probe(p) {
            (Probe::Live, Some(s)) => Ok((p.clone(), s)),
            (probe, _) => Err(not_reached(&[(p.clone(), probe)])),
        };
    }
    // Inside a unit (`ExecReload=procward reload`), its own procward.
    if target.name.is_none() {
        if let Some(p) = paths::runtime_directory().map(|d| d.join(super::SOCKET_NAME)) {
            if let (Probe::Live, Some(s)) = paths::probe(&p) {
                return Ok((p, s));
            }
        }
    }
    let mut looked = Vec::new();
    let mut live = Vec::new();
    for path in paths::client_candidates(target.name.as_deref()) {
        let (probe, stream) = paths::probe(&path);
        if let Some(s) = stream {
            live.push((path.clone(), s));
        }
        looked.push((path, probe));
    }
    if let Some(name) = &target.name {
        // Its own directory first; an unnamed socket only if the procward
        // there goes by that name.
        let mut found = None;
        for (path, stream) in live {
            let own = path.parent().and_then(|d| d.file_name()) == Some(name.as_ref());
            if own || hello(&path).is_some_and(|h| &h.name == name) {
                found = Some((path, stream));
                break;
            }
        }
        return found.ok_or_else(|| {
            let (code, msg) = not_reached(&looked);
            (
                code,
                msg.replacen("No procward", &format!("No procward named `{name}`"), 1),
            )
        });
    }
    match live.len() {
        0 => Err(not_reached(&looked)),
        1 => Ok(live.pop().expect("one")),
        _ => {
            let mut m = String::from("procward: error: several procwards run here:\n");
            for (path, _) in &live {
                let name = hello(path).map(|h| h.name).unwrap_or_else(|| "?".into());
                m.push_str(&format!("  {name:<16} {}\n", path.display()));
            }
            m.push_str("  hint: pick one with --name NAME (or --control PATH)");
            Err((NOT_RUNNING, m))
        }
    }
}

/// Asks the procward at `path` who it is.
pub fn hello(path: &Path) -> Option<super::Hello> {
    let (_, stream) = paths::probe(path);
    match ask(stream?, &Request::Hello, Some(Duration::from_secs(2))).ok()? {
        Reply::Done(d) => serde_json::from_value(d.data?).ok(),
        Reply::Refused(_) => None,
    }
}

/// "No procward is running here", naming each path and what was there.
fn not_reached(looked: &[(PathBuf, Probe)]) -> (i32, String) {
    let denied = looked.iter().any(|(_, p)| *p == Probe::Denied);
    let mut m = if denied {
        String::from(
            "procward: error: not allowed to control the procward running here; looked at:\n",
        )
    } else {
        String::from("procward: error: No procward is running here; looked at:\n")
    };
    for (path, probe) in looked {
        let what = match probe {
            Probe::Live => "running".to_string(),
            Probe::Absent => "no socket".to_string(),
            Probe::Stale => "a socket nobody listens on (a procward that was killed)".to_string(),
            Probe::Denied => {
                "permission denied: only procward's own user and root may use it".to_string()
            }
            Probe::Other(e) => e.clone(),
        };
        m.push_str(&format!("  {}: {what}\n", path.display()));
    }
    if denied {
        m.push_str("  hint: run the command as procward's user, or with sudo");
        (NOT_ALLOWED, m)
    } else {
        m.push_str(
            "  hint: start one (`procward -- CMD`, `procward run -c FILE`), or point at its socket \
             with --control PATH (its `control_socket`) or --name NAME",
        );
        (NOT_RUNNING, m)
    }
}

/// Runs a control command from the command line; returns the exit code.
pub fn command(c: &crate::cli::ControlCommand) -> i32 {
    use crate::cli::{ControlCommand as C, TargetArgs};
    let target = |t: &TargetArgs| Target {
        control: t.control.clone(),
        name: t.name.clone(),
    };
    let out = |json: bool| if json { Output::Json } else { Output::Text };
    match c {
        C::Status(a) => run(&target(&a.target), Request::Status, out(a.json)),
        C::Describe(a) => run(
            &target(&a.target),
            Request::Describe { app: a.app.clone() },
            out(a.json),
        ),
        C::Action(name, a) => {
            let app = a.app.clone();
            // `pm2 start app.js` out of habit: say how procward runs a file.
            let script = Path::new(&app)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| {
                    matches!(
                        e,
                        "js" | "cjs" | "mjs" | "ts" | "py" | "sh" | "json" | "yaml" | "yml"
                    )
                });
            if *name == "start" && (script || app.contains('/')) {
                eprintln!(
                    "procward: error: `procward start APP` starts a stopped app of the running procward; \
                     `{app}` names a file\n  hint: to run it: `{}`",
                    crate::cli::way_to_run(&app)
                );
                return USAGE;
            }
            let request = match *name {
                "reload" => Request::Reload { app },
                "restart" => Request::Restart { app },
                "stop" => Request::Stop { app },
                _ => Request::Start { app },
            };
            run(&target(&a.target), request, out(a.json))
        }
        C::Signal(a) => {
            if let Err(e) = crate::config::units::parse_signal(&a.signal) {
                eprintln!("procward: error: {e}");
                return USAGE;
            }
            let request = Request::Signal {
                app: a.app.clone(),
                signal: a.signal.clone(),
            };
            run(&target(&a.target), request, out(a.json))
        }
        C::Logs(a) => logs(
            &target(&a.target),
            Request::Logs {
                app: a.app.clone(),
                lines: a.lines,
                follow: a.follow,
            },
            out(a.json),
        ),
        C::Scale(a) => {
            let t = target(&a.target);
            let n = match scale_to(&t, &a.app, &a.instances) {
                Ok(n) => n,
                Err((code, msg)) => {
                    eprintln!("{msg}");
                    return code;
                }
            };
            let request = Request::Scale {
                app: a.app.clone(),
                instances: n,
            };
            run(&t, request, out(a.json))
        }
    }
}

/// The number of instances `pm2 scale APP N` means: N, or the current
/// count plus or minus N for `+N` and `-N`.
fn scale_to(target: &Target, app: &str, text: &str) -> Result<u32, (i32, String)> {
    let bad = || {
        (
            USAGE,
            format!("procward: error: invalid number of instances `{text}`: expected N, +N or -N"),
        )
    };
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => (0, text),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if sign == 0 {
        return u32::try_from(n).map_err(|_| bad());
    }
    let (_, stream) = connect(target)?;
    let reply = ask(stream, &Request::Status, Some(Duration::from_secs(10)))
        .map_err(|e| (BROKEN, format!("procward: error: no answer: {e}")))?;
    let current = match reply {
        Reply::Done(d) => d
            .data
            .as_ref()
            .and_then(|s| s["apps"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .find(|a| a["name"] == app)
            .map(|a| a["instances"].as_array().map_or(0, |i| i.len()) as i64),
        Reply::Refused(r) => return Err((USAGE, format!("procward: error: {}", r.error))),
    };
    let Some(current) = current else {
        return Err((USAGE, format!("procward: error: no app named `{app}`")));
    };
    u32::try_from((current + sign * n).max(0)).map_err(|_| bad())
}

/// `procward logs`: the last lines, then (with `--follow`) new ones until
/// interrupted.
fn logs(target: &Target, request: Request, output: Output) -> i32 {
    let (path, stream) = match connect(target) {
        Ok(c) => c,
        Err((code, msg)) => {
            eprintln!("{msg}");
            return code;
        }
    };
    let follow = matches!(request, Request::Logs { follow: true, .. });
    let broken = |e: std::io::Error| {
        eprintln!("procward: error: no answer from {}: {e}", path.display());
        BROKEN
    };
    let mut reader = match (|| {
        let mut stream = stream;
        stream.set_read_timeout((!follow).then(|| Duration::from_secs(10)))?;
        write_request(&mut stream, &request)?;
        Ok(BufReader::new(stream))
    })() {
        Ok(r) => r,
        Err(e) => return broken(e),
    };
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    let mut first = String::new();
    if let Err(e) = reader.read_line(&mut first) {
        return broken(e);
    }
    let lines: Vec<super::Line> = match serde_json::from_str::<Reply>(&first) {
        Ok(Reply::Done(d)) => d
            .data
            .and_then(|v| serde_json::from_value(v["lines"].clone()).ok())
            .unwrap_or_default(),
        Ok(Reply::Refused(r)) => {
            eprintln!("procward: error: {}", r.error);
            if let Some(h) = r.hint {
                eprintln!("  hint: {h}");
            }
            return if r.kind == "not_allowed" {
                NOT_ALLOWED
            } else {
                USAGE
            };
        }
        Err(e) => {
            return broken(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
    };
    let width = lines
        .iter()
        .map(|l| format!("{}|{}", l.instance, l.app).len())
        .max()
        .unwrap_or(0)
        .max(8);
    let print = |out: &mut std::io::StdoutLock, l: &super::Line| {
        let text = match output {
            Output::Json => serde_json::to_string(l).unwrap_or_default() + "\n",
            Output::Text => render::log_line(l, width, colour),
        };
        out.write_all(text.as_bytes()).is_ok()
    };
    for l in &lines {
        if !print(&mut out, l) {
            return OK;
        }
    }
    if !follow {
        return OK;
    }
    let _ = out.flush();
    let mut next = String::new();
    loop {
        next.clear();
        match reader.read_line(&mut next) {
            Ok(0) => return OK,
            Ok(_) => {}
            Err(e) => return broken(e),
        }
        if let Ok(l) = serde_json::from_str::<super::Line>(&next) {
            if !print(&mut out, &l) {
                return OK;
            }
            let _ = out.flush();
        }
    }
}
