//! The control channel: a unix socket the running procward serves, and the
//! commands (`procward status`, `reload`, `restart`, ...) that speak to it.
//!
//! Theory of operation. The server ([`server`]) accepts connections in its
//! own task and gives each one a task of its own. A connection sends one
//! request, a single JSON line of at most [`MAX_REQUEST`] bytes, within
//! [`IDLE_TIMEOUT`]; it gets one JSON line back and is closed. The peer's
//! credentials (SO_PEERCRED) are checked before anything is read: only
//! procward's own user and root may act. What the supervisor must decide
//! reaches it as a [`Call`], a request with a oneshot reply channel, on an
//! inbox of its own; the supervisor answers when the work is done (a reload
//! once every instance is back), so a connection waits on its channel and
//! never on the supervisor's loop. `status` is answered from the snapshot
//! the supervisor already publishes for `/status`, without a message.
//!
//! Nothing a client sends can block supervision: reading and writing happen
//! in the connection's task, bounded in size and time; a request that is
//! malformed, too long or unknown gets an error reply and changes nothing.

pub mod client;
pub mod paths;
pub mod render;
pub mod server;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Longest request line, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;
/// A connection that has not sent a whole request by then is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// The socket's file name inside its directory.
pub const SOCKET_NAME: &str = "procward.sock";

/// A request, as the client writes it (`{"cmd":"restart","app":"web"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Who is serving: the procward's name, pid and version.
    Hello,
    /// Every app and instance, as `/status`.
    Status,
    /// One app's effective configuration and history.
    Describe {
        /// The app's name.
        app: String,
    },
    /// Replace each instance's process with a new one, one at a time.
    Reload {
        /// An app's name, or `all`.
        #[serde(default = "all")]
        app: String,
    },
    /// Stop each instance, then start it again.
    Restart {
        /// An app's name, or `all`.
        #[serde(default = "all")]
        app: String,
    },
    /// Stop each instance for good (until `start`).
    Stop {
        /// An app's name, or `all`.
        #[serde(default = "all")]
        app: String,
    },
    /// Start each stopped or errored instance.
    Start {
        /// An app's name, or `all`.
        #[serde(default = "all")]
        app: String,
    },
    /// Send a signal to each instance's process group (PM2's `sendSignal`).
    Signal {
        /// An app's name, or `all`.
        app: String,
        /// The signal: `SIGUSR2`, `USR2` or `12`.
        signal: String,
    },
    /// Set the number of instances.
    Scale {
        /// The app's name.
        app: String,
        /// How many instances it should have.
        instances: u32,
    },
    /// The apps' captured output: the last lines, then (with `follow`)
    /// every new line until the client goes.
    Logs {
        /// An app's name, or `all`.
        #[serde(default = "all")]
        app: String,
        /// How many of the last lines.
        #[serde(default = "fifteen")]
        lines: usize,
        /// Keep sending new lines.
        #[serde(default)]
        follow: bool,
    },
}

/// `pm2 logs`' default number of lines.
fn fifteen() -> usize {
    15
}

fn all() -> String {
    "all".into()
}

impl Request {
    /// The command's name, for log lines and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::Status => "status",
            Request::Describe { .. } => "describe",
            Request::Reload { .. } => "reload",
            Request::Restart { .. } => "restart",
            Request::Stop { .. } => "stop",
            Request::Start { .. } => "start",
            Request::Signal { .. } => "signal",
            Request::Scale { .. } => "scale",
            Request::Logs { .. } => "logs",
        }
    }
}

/// A request for the supervisor, and where its answer goes.
#[derive(Debug)]
pub struct Call {
    /// What is asked.
    pub request: Request,
    /// The answer; dropped without one when the supervisor is gone.
    pub reply: oneshot::Sender<Reply>,
}

/// The answer to a request: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// It was refused, and nothing changed. (First: a refusal also has
    /// every field a [`Done`] requires.)
    Refused(Refused),
    /// It was done (or tried: see each instance's outcome).
    Done(Done),
}

/// A refusal: the reason and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// Always false.
    pub ok: bool,
    /// What kind of refusal, for scripts (`bad_request`, `unknown_app`,
    /// `not_allowed`, `busy`, `shutting_down`).
    pub kind: String,
    /// The reason, in a sentence.
    pub error: String,
    /// What to do instead, when there is something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Reply {
    /// A refusal.
    pub fn refused(kind: &str, error: impl Into<String>, hint: Option<String>) -> Reply {
        Reply::Refused(Refused {
            ok: false,
            kind: kind.into(),
            error: error.into(),
            hint,
        })
    }

    /// A success carrying `data`.
    pub fn data(data: serde_json::Value) -> Reply {
        Reply::Done(Done {
            ok: true,
            data: Some(data),
            instances: Vec::new(),
        })
    }

    /// A success listing what happened to each instance.
    pub fn outcomes(instances: Vec<Outcome>) -> Reply {
        Reply::Done(Done {
            ok: true,
            data: None,
            instances,
        })
    }
}

/// A request carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Always true: the request was valid and acted on.
    pub ok: bool,
    /// What was asked for (`status`, `describe`, `hello`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// What happened to each instance (actions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<Outcome>,
}

/// What an action did to one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The app's name.
    pub app: String,
    /// The instance within the app.
    pub instance: u32,
    /// Its process before, if one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_before: Option<i32>,
    /// Its process now, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Its state now (online, stopped, errored, ...).
    pub state: String,
    /// Whether it ended where the action meant it to.
    pub ok: bool,
    /// What happened, in a few words (`reloaded`, `already stopped`,
    /// `exit code 1 before it was ready`).
    pub detail: String,
}

/// What `hello` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The procward's name (its process file or its app).
    pub name: String,
    /// Its pid, as seen in its own PID namespace.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// The apps it runs.
    pub apps: Vec<String>,
}

/// One app as `describe` shows it: settings without secrets, and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// The app's name.
    pub name: String,
    /// Its effective settings, as `procward check` prints them (environment
    /// values hidden, arguments shown only when the user wrote them in).
    pub config: serde_json::Value,
    /// Names of the variables set for it; never their values.
    pub env_names: Vec<String>,
    /// Each instance's restarts, newest last.
    pub instances: Vec<InstanceHistory>,
}

/// One instance's past.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceHistory {
    /// The instance within the app.
    pub instance: u32,
    /// Its state now.
    pub state: String,
    /// Its process now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The last restarts, oldest first (at most [`HISTORY`]).
    pub restarts: Vec<RestartRecord>,
    /// The last lines of stderr of its last crashed process, when its
    /// output is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crash: Option<LastCrash>,
}

/// What `describe` shows of the last crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCrash {
    /// The process that crashed.
    pub pid: i32,
    /// How it ended.
    pub status: String,
    /// Its last lines of stderr, oldest first.
    pub lines: Vec<String>,
}

/// One line of an app's output, as `procward logs` sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The app's name.
    pub app: String,
    /// The instance.
    pub instance: u32,
    /// `out` or `err`.
    pub stream: String,
    /// Unix time procward read it, milliseconds.
    pub at_ms: u64,
    /// The line.
    pub text: String,
}

/// Restarts kept per instance for `describe`.
pub const HISTORY: usize = 20;

/// One restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// Unix time of the restart, milliseconds.
    pub at_ms: u64,
    /// Why (crash, signal, exit, memory, watchdog, reload, manual,
    /// ready_timeout).
    pub reason: String,
    /// How the process before ended, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
}

/// Reads a request line. The error is the reply to send.
pub fn parse_request(line: &[u8]) -> Result<Request, Reply> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Reply::refused("bad_request", "the request is not UTF-8", None))?;
    let text = text.trim_end_matches(['\n', '\r']);
    match serde_json::from_str::<Request>(text) {
        Ok(r) => {
            // serde does not refuse extra fields beside a tag: a field the
            // command does not take is a mistake worth saying.
            let given = serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
            let known = serde_json::to_value(&r).unwrap_or_default();
            let extra = given
                .as_object()
                .and_then(|o| o.keys().find(|k| known.get(k.as_str()).is_none()).cloned());
            match extra {
                Some(k) => Err(Reply::refused(
                    "bad_request",
                    format!("`{}` takes no field `{k}`", r.name()),
                    None,
                )),
                None => Ok(r),
            }
        }
        Err(e) => {
            // An object with an unknown `cmd` is a command this procward
            // does not know (an older one, say): say so plainly.
            let cmd = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("cmd").and_then(|c| c.as_str()).map(String::from));
            Err(match cmd {
                Some(c) if !KNOWN.contains(&c.as_str()) => Reply::refused(
                    "unknown_command",
                    format!("unknown command `{c}`"),
                    Some(format!("this procward knows: {}", KNOWN.join(", "))),
                ),
                _ => Reply::refused(
                    "bad_request",
                    format!("malformed request: {e}"),
                    Some("send one JSON object on one line, such as {\"cmd\":\"status\"}".into()),
                ),
            })
        }
    }
}

/// The commands the server knows.
const KNOWN: [&str; 10] = [
    "hello", "status", "describe", "reload", "restart", "stop", "start", "signal", "scale", "logs",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_written() {
        assert_eq!(
            parse_request(b"{\"cmd\":\"status\"}\n"),
            Ok(Request::Status)
        );
        assert_eq!(
            parse_request(b"{\"cmd\":\"reload\"}"),
            Ok(Request::Reload { app: "all".into() })
        );
        assert_eq!(
            parse_request(br#"{"cmd":"scale","app":"web","instances":4}"#),
            Ok(Request::Scale {
                app: "web".into(),
                instances: 4
            })
        );
        for r in [
            Request::Hello,
            Request::Signal {
                app: "web".into(),
                signal: "USR2".into(),
            },
        ] {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_request(&line), Ok(r));
        }
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let kind = |line: &[u8]| match parse_request(line) {
            Err(Reply::Refused(r)) => r.kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(b"hello"), "bad_request");
        assert_eq!(kind(b"\xff\xfe"), "bad_request");
        assert_eq!(kind(br#"{"cmd":"status","extra":1}"#), "bad_request");
        assert_eq!(
            kind(br#"{"cmd":"scale","app":"web","instances":-1}"#),
            "bad_request"
        );
        assert_eq!(kind(br#"{"cmd":"delete","app":"web"}"#), "unknown_command");
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply::refused("unknown_app", "no app `x`", Some("apps: web".into()));
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"ok\":false"), "{line}");
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), r);
        let r = Reply::outcomes(vec![Outcome {
            app: "web".into(),
            instance: 0,
            pid_before: Some(10),
            pid: Some(11),
            state: "online".into(),
            ok: true,
            detail: "restarted".into(),
        }]);
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), r);
    }
}
