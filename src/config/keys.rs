//! One definition per PM2 app key: its doc, PM2's default, the PM2 source
//! it copies, how procward treats it, and how its value is read. The
//! README's "Coming from PM2" table lists the same keys.
//!
//! PM2 sources: `lib/API/schema.json` (types, defaults, aliases),
//! `lib/Common.js` (`prepareAppConf`, `sink.resolveInterpreter`,
//! `sink.determineExecMode`), `lib/API/interpreter.json`, `lib/God.js`.

use std::time::Duration;

use super::app::{ExecMode, ReadySource, ReadySpec, RestartPolicy, StopPolicy};
use super::logs::{LogSpec, PM2_TIME_FORMAT};
use super::raw::{Node, Span, Value};
use super::units::{parse_duration, parse_signal, parse_size};

/// How procward treats a PM2 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Same meaning as in PM2.
    Honoured,
    /// Accepted, with a difference explained here.
    Different(&'static str),
    /// Accepted and ignored with one warning saying why.
    Ignored(&'static str),
    /// A procward addition, not a PM2 key.
    Procward,
}

/// What a key's value did not match: "expected {expected}" plus a hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad {
    /// What was expected, e.g. "`instances` to be a number".
    pub expected: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// Reads a key's value into the draft app.
pub type Apply = fn(&mut Draft, &Node) -> Result<(), Bad>;

/// One PM2 key. `doc`, `default` and `pm2` feed the README table (checked
/// by a test below), not the binary.
#[allow(dead_code)]
pub struct KeyDef {
    /// The name (PM2's main spelling).
    pub name: &'static str,
    /// Other spellings PM2 accepts (schema.json `alias`).
    pub aliases: &'static [&'static str],
    /// What it does.
    pub doc: &'static str,
    /// PM2's default.
    pub default: &'static str,
    /// Where PM2 defines the behaviour copied.
    pub pm2: &'static str,
    /// How procward treats it.
    pub handling: Handling,
    /// Reads the value; `None` for ignored keys.
    pub apply: Option<Apply>,
}

/// An app as read from the file, before paths, the command line and
/// instances are resolved (`config::load` does that).
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// `name`.
    pub name: Option<(String, Span)>,
    /// `script` and where it was written.
    pub script: Option<(String, Span)>,
    /// `args`.
    pub args: Vec<String>,
    /// `interpreter` and where it was written.
    pub interpreter: Option<(String, Span)>,
    /// `node_args` / `interpreter_args`.
    pub interpreter_args: Vec<String>,
    /// `cwd`, as written.
    pub cwd: Option<String>,
    /// `env`, values made strings.
    pub env: Vec<(String, String)>,
    /// `instances` as PM2 reads it: 0 means all CPUs, negative means that
    /// many fewer.
    pub instances: Option<i64>,
    /// `exec_mode`.
    pub exec_mode: Option<ExecMode>,
    /// `uid` / `user`.
    pub user: Option<(String, Span)>,
    /// `gid` / `group`.
    pub group: Option<(String, Span)>,
    /// Restart keys.
    pub restart: RestartPolicy,
    /// Stop keys.
    pub stop: StopPolicy,
    /// Readiness keys.
    pub ready: ReadySpec,
    /// `max_memory_restart` in bytes.
    pub max_memory_restart: Option<u64>,
    /// procward's `watchdog`.
    pub watchdog: Option<Duration>,
    /// procward's `max_memory_hard` in bytes.
    pub max_memory_hard: Option<u64>,
    /// `port`, set as `PORT` in the environment.
    pub port: Option<String>,
    /// `instance_var`.
    pub instance_var: Option<String>,
    /// procward's `listen`.
    pub listen: Vec<crate::sockets::ListenAddr>,
    /// The log keys.
    pub logs: LogSpec,
    /// `cron_restart`, checked.
    pub cron_restart: Option<crate::cron::Schedule>,
    /// `watch`: `None` when off, an empty list for the app's directory,
    /// else the paths as written.
    pub watch: Option<Vec<String>>,
    /// `ignore_watch` as written; `None` for PM2's default.
    pub ignore_watch: Option<Vec<String>>,
    /// `watch_delay`.
    pub watch_delay: Option<Duration>,
    /// `watch_options.followSymlinks`.
    pub follow_symlinks: Option<bool>,
    /// Warnings a key leaves while it is read: (where, key path below the
    /// app, message).
    pub notes: Vec<(Span, String, String)>,
    /// procward's `observe:` block, read by `config::load` (it reports
    /// errors at the block's own keys): the app is observed, not started.
    pub observe: Option<crate::observe::find::Matcher>,
}

const LOG_FILES: &str = "without any log key the output passes through untouched to procward's own, for the container runtime or journald; a stream with a file goes only to its file";
const PM2_ONLY: &str = "a PM2 feature with no meaning under procward";

/// Every app key procward knows, in the order of the README table.
pub const APP_KEYS: &[KeyDef] = &[
    KeyDef { name: "name", aliases: &[], doc: "Name in logs, metrics and /status.", default: "the script's last path component without its extension, a command line's too", pm2: "schema.json `name`, Common.js `renderApplicationName`", handling: Handling::Honoured, apply: Some(name) },
    KeyDef { name: "script", aliases: &["exec", "cmd", "command"], doc: "File or command to run: a path relative to `cwd`, a program in PATH (`npm`), or a whole command line (`npm run start:prod`, `PORT=4010 node dist/tunnel.js`), run with `bash -c` and then named after it; `args` beside a command line are dropped with a warning. `serve` (PM2's static file server) is refused.", default: "required", pm2: "Common.js `verifyConfs` (cmd/command aliases; a script with a space runs as `bash -c`), `prepareAppConf` (path.resolve(cwd, script), else which(script))", handling: Handling::Honoured, apply: Some(script) },
    KeyDef { name: "args", aliases: &[], doc: "Arguments after the script: a list, or a string split like a shell line.", default: "none", pm2: "schema.json `args`", handling: Handling::Honoured, apply: Some(args) },
    KeyDef { name: "interpreter", aliases: &["exec_interpreter"], doc: "Program that runs the script: `node`, `bash`, `python3`, an absolute path, or `none` to execute the script itself. A python interpreter gets `PYTHONUNBUFFERED=1`.", default: "by extension (.js node, .py python3, .sh bash, ...), else none", pm2: "Common.js `sink.resolveInterpreter`, interpreter.json", handling: Handling::Different("`.py` runs with python3 (PM2 says python); a program found in PATH runs directly"), apply: Some(interpreter) },
    KeyDef { name: "node_args", aliases: &["interpreter_args", "interpreterArgs"], doc: "Arguments for the interpreter, before the script.", default: "none", pm2: "schema.json `node_args`", handling: Handling::Honoured, apply: Some(interpreter_args) },
    KeyDef { name: "cwd", aliases: &[], doc: "Working directory; relative to the process file's directory.", default: "the process file's directory", pm2: "Common.js `prepareAppConf`", handling: Handling::Honoured, apply: Some(cwd) },
    KeyDef { name: "env", aliases: &[], doc: "Variables set over procward's environment; numbers, booleans and null become strings as in JavaScript.", default: "none", pm2: "Common.js `prepareAppConf` (process.env, then app.env)", handling: Handling::Honoured, apply: Some(env) },
    KeyDef { name: "env_<name>", aliases: &[], doc: "Merged over `env` when run with `--env <name>`, after the file's `deploy.<name>.env`. Any `env_*` key is accepted; one that is not a mapping (`env_file: .env`) is ignored with a warning, as PM2 loads no env files.", default: "none", pm2: "Common.js `mergeEnvironmentVariables`", handling: Handling::Honoured, apply: None },
    KeyDef { name: "instances", aliases: &[], doc: "How many copies: a number, `max` or 0 (every CPU), -1 (one fewer), or a numeric string.", default: "1", pm2: "God.js `prepare` (0 = CPUs, negative = CPUs + n)", handling: Handling::Different("CPUs are those the container's cgroup quota and affinity allow, not the host's"), apply: Some(instances) },
    KeyDef { name: "exec_mode", aliases: &[], doc: "`fork` or `cluster` (`fork_mode`, `cluster_mode`). Without it, a node or bun app with `instances` runs in cluster mode.", default: "fork", pm2: "Common.js `sink.determineExecMode`", handling: Handling::Different("procward, not a Node process, is the cluster primary: it hands each worker's `listen()` a socket it holds"), apply: Some(exec_mode) },
    KeyDef { name: "autorestart", aliases: &[], doc: "Restart the app when it exits.", default: "true", pm2: "schema.json `autorestart`", handling: Handling::Honoured, apply: Some(autorestart) },
    KeyDef { name: "max_restarts", aliases: &[], doc: "Consecutive unstable restarts before the app is errored.", default: "16", pm2: "schema.json `max_restarts`", handling: Handling::Honoured, apply: Some(max_restarts) },
    KeyDef { name: "min_uptime", aliases: &[], doc: "A run shorter than this is unstable (ms, or 2s, 1m, 1h).", default: "1000", pm2: "schema.json `min_uptime`", handling: Handling::Honoured, apply: Some(min_uptime) },
    KeyDef { name: "restart_delay", aliases: &[], doc: "Wait before each restart (ms or with a unit).", default: "0", pm2: "schema.json `restart_delay`", handling: Handling::Honoured, apply: Some(restart_delay) },
    KeyDef { name: "exp_backoff_restart_delay", aliases: &[], doc: "First delay of a growing backoff between restarts.", default: "off", pm2: "schema.json `exp_backoff_restart_delay`", handling: Handling::Honoured, apply: Some(exp_backoff_restart_delay) },
    KeyDef { name: "max_memory_restart", aliases: &[], doc: "Restart gracefully above this memory: bytes, or 500K, 500M, 1G.", default: "off", pm2: "schema.json `max_memory_restart`", handling: Handling::Honoured, apply: Some(max_memory_restart) },
    KeyDef { name: "kill_timeout", aliases: &[], doc: "After the stop signal, wait this long before SIGKILL.", default: "1600", pm2: "schema.json `kill_timeout`", handling: Handling::Honoured, apply: Some(kill_timeout) },
    KeyDef { name: "wait_ready", aliases: &[], doc: "Ready when the app calls `process.send('ready')`.", default: "false", pm2: "schema.json `wait_ready`", handling: Handling::Honoured, apply: Some(wait_ready) },
    KeyDef { name: "listen_timeout", aliases: &[], doc: "Time allowed to become ready; then it counts as ready anyway.", default: "3000", pm2: "schema.json `listen_timeout`", handling: Handling::Honoured, apply: Some(listen_timeout) },
    KeyDef { name: "shutdown_with_message", aliases: &[], doc: "Stop by sending `shutdown` on the IPC channel instead of a signal.", default: "false", pm2: "schema.json `shutdown_with_message`", handling: Handling::Honoured, apply: Some(shutdown_with_message) },
    KeyDef { name: "stop_exit_codes", aliases: &[], doc: "Exit codes after which the app is not restarted.", default: "none", pm2: "God.js `handleExit` (`stop_exit_codes`)", handling: Handling::Honoured, apply: Some(stop_exit_codes) },
    KeyDef { name: "uid", aliases: &["user"], doc: "Run as this user (name or number), with its primary group unless `gid` is set.", default: "procward's user", pm2: "schema.json `uid` (alias `user`)", handling: Handling::Different("names come from /etc/passwd read directly (no NSS)"), apply: Some(user) },
    KeyDef { name: "gid", aliases: &["group"], doc: "Run with this group (name or number).", default: "the user's primary group", pm2: "schema.json `gid`", handling: Handling::Different("names come from /etc/group read directly (no NSS)"), apply: Some(group) },
    KeyDef { name: "port", aliases: &[], doc: "Shortcut for `PORT` in the environment.", default: "none", pm2: "Common.js `prepareAppConf` (app.env.PORT = app.port)", handling: Handling::Honoured, apply: Some(port) },
    KeyDef { name: "kill_signal", aliases: &[], doc: "Signal that asks the app to stop.", default: "SIGINT", pm2: "PM2's PM2_KILL_SIGNAL variable", handling: Handling::Procward, apply: Some(kill_signal) },
    KeyDef { name: "observe", aliases: &[], doc: "Observe this app instead of starting it (a sidecar in a pod that shares its PID namespace): `match: REGEX` on the command line, `exe: PATH`, or `all: true`. Only `name`, `ready` (tcp or http), `max_memory_restart`, `kill_signal` (default SIGTERM) and `kill_timeout` apply.", default: "none", pm2: "-", handling: Handling::Procward, apply: Some(observe) },
    KeyDef { name: "ready", aliases: &[], doc: "Readiness source: started, ipc, notify, tcp:PORT or http://HOST:PORT/PATH.", default: "started (ipc with wait_ready)", pm2: "-", handling: Handling::Procward, apply: Some(ready) },
    KeyDef { name: "strict_ready", aliases: &[], doc: "Hitting listen_timeout is a failed start.", default: "false", pm2: "-", handling: Handling::Procward, apply: Some(strict_ready) },
    KeyDef { name: "max_memory_hard", aliases: &[], doc: "At this memory a memory restart sends SIGKILL at once instead of waiting for kill_timeout.", default: "1.5x max_memory_restart", pm2: "-", handling: Handling::Procward, apply: Some(max_memory_hard) },
    KeyDef { name: "watchdog", aliases: &[], doc: "Restart when the app's own sd_notify WATCHDOG=1 pings stop this long.", default: "off", pm2: "-", handling: Handling::Procward, apply: Some(watchdog) },
    KeyDef { name: "listen", aliases: &[], doc: "Sockets procward binds once and passes to every instance with LISTEN_FDS: `0.0.0.0:3000`, `[::]:3000`, `unix:/path`, or a list.", default: "none", pm2: "-", handling: Handling::Procward, apply: Some(listen) },
    KeyDef { name: "cron_restart", aliases: &["cron"], doc: "Restart every instance gracefully at the times of a cron expression: five fields, or six with seconds first (`0 3 * * *`, `*/30 * * * * *`), read as PM2's croner reads them, in the local time zone (`TZ` when set). `0` turns it off. `procward check` prints the next three times; an expression that cannot be read is an error.", default: "off", pm2: "Common.js `sink.determineCron`, Worker.js `registerCron` (croner, default options)", handling: Handling::Honoured, apply: Some(cron_restart) },
    KeyDef { name: "watch", aliases: &[], doc: "Restart the app when files change: `true` watches `cwd`; or a path, or a list of paths, relative to `cwd`. Changes within `watch_delay` of the first make one restart, and changes during a restart are skipped.", default: "false", pm2: "Watcher.js `enable` (true or [] watch pm_cwd)", handling: Handling::Honoured, apply: Some(watch) },
    KeyDef { name: "ignore_watch", aliases: &[], doc: "Paths or globs not watched, relative to `cwd`; a path covers everything under it, and an ignored directory is never walked (a `node_modules` of any size costs nothing).", default: "dot files and directories, and `node_modules`", pm2: "Watcher.js `enable` (chokidar `ignored`)", handling: Handling::Different("the default is matched below the watched directory, not against the whole path"), apply: Some(ignore_watch) },
    KeyDef { name: "watch_delay", aliases: &[], doc: "From the first change to the restart (ms or with a unit).", default: "0", pm2: "Watcher.js `enable` (`watch_delay || 0`)", handling: Handling::Honoured, apply: Some(watch_delay) },
    KeyDef { name: "watch_options", aliases: &[], doc: "chokidar's options; `followSymlinks` (walk into links to directories) is read, the others are ignored with a warning.", default: "followSymlinks: true", pm2: "Watcher.js `enable` (merged into chokidar's options)", handling: Handling::Different("only `followSymlinks`: procward watches with inotify, not chokidar"), apply: Some(watch_options) },
    KeyDef { name: "out_file", aliases: &["out", "output", "out_log"], doc: "File for stdout (`/dev/null` or `NULL`: discard); `-N` is added per instance unless `merge_logs`.", default: "~/.pm2/logs/<app>-out.log", pm2: "Common.js `prepareAppConf`, God.js (`-<pm_id>` suffix)", handling: Handling::Different(LOG_FILES), apply: Some(out_file) },
    KeyDef { name: "error_file", aliases: &["error", "err", "err_file", "err_log"], doc: "File for stderr (`/dev/null` or `NULL`: discard); `-N` is added per instance unless `merge_logs`.", default: "~/.pm2/logs/<app>-error.log", pm2: "Common.js `prepareAppConf`, God.js (`-<pm_id>` suffix)", handling: Handling::Different(LOG_FILES), apply: Some(error_file) },
    KeyDef { name: "log_file", aliases: &["log"], doc: "File for both streams.", default: "none", pm2: "schema.json `log_file`", handling: Handling::Different("a path is required (PM2's `true` means a file under ~/.pm2)"), apply: Some(log_file) },
    KeyDef { name: "log_date_format", aliases: &[], doc: "Prefix each line with the time in this dayjs format (`YYYY-MM-DD HH:mm:ss Z`), then `: `.", default: "none", pm2: "God.js (`dayjs().format(log_date_format)`)", handling: Handling::Honoured, apply: Some(log_date_format) },
    KeyDef { name: "time", aliases: &[], doc: "Prefix each line with the time (`YYYY-MM-DDTHH:mm:ss`).", default: "false", pm2: "schema.json `time`", handling: Handling::Honoured, apply: Some(time) },
    KeyDef { name: "merge_logs", aliases: &["combine_logs"], doc: "Every instance writes the same files.", default: "false", pm2: "God.js (no `-<pm_id>` suffix)", handling: Handling::Honoured, apply: Some(merge_logs) },
    KeyDef { name: "log_type", aliases: &[], doc: "`json`: one JSON object per line (time, app, instance, stream, message).", default: "none", pm2: "schema.json `log_type`", handling: Handling::Different("the JSON fields are named time, app, instance, stream, message"), apply: Some(log_type) },
    KeyDef { name: "disable_logs", aliases: &[], doc: "Send both streams to /dev/null.", default: "false", pm2: "schema.json `disable_logs`", handling: Handling::Honoured, apply: Some(disable_logs) },
    KeyDef { name: "log_prefix", aliases: &[], doc: "Prefix each line with `app-N | `, coloured per app on a terminal, as `docker compose` does.", default: "false", pm2: "-", handling: Handling::Procward, apply: Some(log_prefix) },
    KeyDef { name: "log_max_size", aliases: &[], doc: "Rotate a log file before it grows past this size (10M, 1G); the `procward:` section's `max_size` applies to every app.", default: "off", pm2: "pm2-logrotate `max_size`", handling: Handling::Procward, apply: Some(log_max_size) },
    KeyDef { name: "log_retain", aliases: &[], doc: "Rotated files kept (`out.log.1` newest); the `procward:` section's `retain` applies to every app.", default: "30", pm2: "pm2-logrotate `retain`", handling: Handling::Procward, apply: Some(log_retain) },
    KeyDef { name: "pid_file", aliases: &["pid"], doc: "File for the pid.", default: "~/.pm2/pids/<app>-<id>.pid", pm2: "schema.json `pid_file`", handling: Handling::Ignored("pids are in /status and the metrics"), apply: None },
    KeyDef { name: "instance_var", aliases: &[], doc: "Name of the variable holding each instance's number (0, 1, ...); set for process files and `-i`, never for a plain `procward -- CMD`.", default: "NODE_APP_INSTANCE", pm2: "schema.json `instance_var`", handling: Handling::Honoured, apply: Some(instance_var) },
    KeyDef { name: "increment_var", aliases: &[], doc: "A variable incremented per instance.", default: "none", pm2: "schema.json `increment_var`", handling: Handling::Ignored(PM2_ONLY), apply: None },
    KeyDef { name: "filter_env", aliases: &[], doc: "Drop inherited variables.", default: "false", pm2: "schema.json `filter_env`", handling: Handling::Ignored("the app inherits procward's whole environment"), apply: None },
    KeyDef { name: "treekill", aliases: &[], doc: "Kill the process tree on stop.", default: "true", pm2: "schema.json `treekill`", handling: Handling::Ignored("procward always signals the app's whole process group"), apply: None },
    KeyDef { name: "namespace", aliases: &[], doc: "PM2 process namespace.", default: "default", pm2: "schema.json `namespace`", handling: Handling::Ignored(PM2_ONLY), apply: None },
    KeyDef { name: "source_map_support", aliases: &["disable_source_map_support"], doc: "Source map support in PM2's wrapper.", default: "true", pm2: "schema.json `source_map_support`", handling: Handling::Ignored("procward runs node directly; use `node_args: --enable-source-maps`"), apply: None },
    KeyDef { name: "vizion", aliases: &[], doc: "Versioning metadata.", default: "true", pm2: "schema.json `vizion`", handling: Handling::Ignored(PM2_ONLY), apply: None },
    KeyDef { name: "pmx", aliases: &["automation", "trace", "disable_trace", "v8", "event_loop_inspector", "deep_monitoring", "io"], doc: "PM2 Plus / pmx monitoring.", default: "true", pm2: "schema.json `pmx`", handling: Handling::Ignored("procward exports Prometheus metrics instead"), apply: None },
    KeyDef { name: "force", aliases: &["append_env_to_name", "name_prefix", "post_update", "install_url", "windowsHide", "kill_retry_time", "write", "username", "execute_command"], doc: "Other PM2 daemon and CLI settings.", default: "-", pm2: "schema.json", handling: Handling::Ignored(PM2_ONLY), apply: None },
];

/// The definition of `key` (by name or alias), if any.
pub fn find(key: &str) -> Option<&'static KeyDef> {
    APP_KEYS
        .iter()
        .find(|d| d.name == key || d.aliases.contains(&key))
}

/// Every spelling, for "did you mean".
pub fn spellings() -> impl Iterator<Item = &'static str> {
    APP_KEYS
        .iter()
        .flat_map(|d| std::iter::once(d.name).chain(d.aliases.iter().copied()))
        .filter(|n| !n.contains('<'))
}

fn bad(expected: impl Into<String>, hint: Option<&str>) -> Bad {
    Bad {
        expected: expected.into(),
        hint: hint.map(String::from),
    }
}

fn string(key: &str, v: &Node) -> Result<String, Bad> {
    match &v.value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(bad(format!("`{key}` to be a string"), None)),
    }
}

fn boolean(key: &str, v: &Node) -> Result<bool, Bad> {
    match v.value {
        Value::Bool(b) => Ok(b),
        _ => Err(bad(format!("`{key}` to be true or false"), None)),
    }
}

/// A duration: a number of milliseconds or a string with a unit.
pub fn duration(key: &str, v: &Node) -> Result<Duration, Bad> {
    let expected = || {
        let hint = match &v.value {
            Value::Null => format!("leave `{key}` out to get its default"),
            Value::Num(n) if *n < 0.0 => "durations cannot be negative".into(),
            Value::Str(s) if s.trim_start().starts_with('-') => {
                "durations cannot be negative".into()
            }
            _ => "e.g. `3000` or `3s`".into(),
        };
        Bad {
            expected: format!(
                "`{key}` to be a duration in milliseconds (1500) or with a unit (1500ms, 2s, 1m)"
            ),
            hint: Some(hint),
        }
    };
    match &v.value {
        Value::Num(n) if n.is_finite() && *n >= 0.0 => {
            Ok(Duration::from_micros((n * 1000.0).round() as u64))
        }
        Value::Str(s) => parse_duration(s).map_err(|_| expected()),
        _ => Err(expected()),
    }
}

/// A whole number, written as a number or a numeric string.
fn whole(v: &Node) -> Option<i64> {
    match &v.value {
        Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => Some(*n as i64),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Arguments: a list of strings (numbers allowed), or one string split as a
/// shell would split it (quotes group words).
pub fn words(key: &str, v: &Node) -> Result<Vec<String>, Bad> {
    match &v.value {
        Value::Str(s) => Ok(split_words(s)),
        Value::Seq(items) => items
            .iter()
            .map(|i| match &i.value {
                Value::Str(_) | Value::Num(_) | Value::Bool(_) => {
                    Ok(i.js_string().unwrap_or_default())
                }
                _ => Err(bad(
                    format!("`{key}` to be a string or a list of strings"),
                    None,
                )),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(bad(
            format!("`{key}` to be a string or a list of strings"),
            None,
        )),
    }
}

/// Splits a command line into words: whitespace separates, single and
/// double quotes group, a backslash escapes the next character.
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn name(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match v
        .js_string()
        .filter(|s| !s.is_empty() && !matches!(v.value, Value::Null | Value::Bool(_)))
    {
        Some(s) => {
            d.name = Some((s, v.span));
            Ok(())
        }
        None => Err(bad("`name` to be a non-empty string", None)),
    }
}

fn script(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match &v.value {
        Value::Str(s) if !s.trim().is_empty() => {
            d.script = Some((s.trim().to_string(), v.span));
            Ok(())
        }
        _ => Err(bad(
            "`script` to be the file or command to run",
            Some("e.g. `script: server.js` or `script: npm` with `args: start`"),
        )),
    }
}

fn args(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.args = words("args", v)?;
    Ok(())
}

fn interpreter(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let s = string("interpreter", v)?;
    d.interpreter = Some((s, v.span));
    Ok(())
}

fn interpreter_args(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.interpreter_args = words("node_args", v)?;
    Ok(())
}

fn cwd(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.cwd = Some(string("cwd", v)?);
    Ok(())
}

/// `env`: a mapping whose values become strings as JavaScript's `String()`
/// makes them (what the app sees under PM2); lists and mappings are passed
/// as JSON text.
pub fn env_map(key: &str, v: &Node) -> Result<Vec<(String, String)>, Bad> {
    match &v.value {
        Value::Map(entries) => Ok(entries
            .iter()
            .map(|(k, val)| {
                let s = val
                    .js_string()
                    .unwrap_or_else(|| serde_json::to_string(val).unwrap_or_default());
                (k.name.clone(), s)
            })
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(bad(
            format!("`{key}` to be a mapping of variable names to values"),
            Some("e.g. `env: {NODE_ENV: production, PORT: 3000}`"),
        )),
    }
}

fn env(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.env = env_map("env", v)?;
    Ok(())
}

fn instances(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let n = match &v.value {
        Value::Str(s) if s.trim() == "max" => Some(0),
        _ => whole(v),
    };
    match n {
        Some(n) if n <= 100_000 => {
            d.instances = Some(n);
            Ok(())
        }
        _ => Err(bad(
            "`instances` to be a number, `max` (one per CPU) or -1 (one fewer than the CPUs)",
            Some("e.g. `instances: 4` or `instances: max`"),
        )),
    }
}

/// How many instances `instances: n` gives with `cpus` CPUs available
/// (pm2 lib/God.js `prepare`): 0 (`max`) means every CPU, a negative
/// number that many fewer, and never fewer than one.
pub fn instances_for(n: i64, cpus: u32) -> u32 {
    match n {
        0 => cpus.max(1),
        n if n < 0 => (cpus as i64 + n).max(1) as u32,
        n => n.min(u32::MAX as i64) as u32,
    }
}

fn exec_mode(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    // schema.json: "^(cluster|fork)(_mode)?$"
    let mode = match &v.value {
        Value::Str(s) => match s.as_str() {
            "fork" | "fork_mode" => Some(ExecMode::Fork),
            "cluster" | "cluster_mode" => Some(ExecMode::Cluster),
            _ => None,
        },
        _ => None,
    };
    d.exec_mode = Some(mode.ok_or_else(|| {
        bad(
            "`exec_mode` to be `fork` or `cluster` (or `fork_mode`, `cluster_mode`)",
            None,
        )
    })?);
    Ok(())
}

fn autorestart(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.restart.autorestart = boolean("autorestart", v)?;
    Ok(())
}

fn max_restarts(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match whole(v) {
        Some(n) if (0..=u32::MAX as i64).contains(&n) => {
            d.restart.max_restarts = n as u32;
            Ok(())
        }
        _ => Err(bad("`max_restarts` to be a whole number, 0 or more", None)),
    }
}

fn min_uptime(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.restart.min_uptime = duration("min_uptime", v)?;
    Ok(())
}

fn restart_delay(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.restart.restart_delay = duration("restart_delay", v)?;
    Ok(())
}

fn exp_backoff_restart_delay(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    if v.value == Value::Null {
        d.restart.exp_backoff_restart_delay = None;
        return Ok(());
    }
    let t = duration("exp_backoff_restart_delay", v)?;
    // schema.json's default 0 means off.
    d.restart.exp_backoff_restart_delay = (!t.is_zero()).then_some(t);
    Ok(())
}

fn max_memory_restart(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let expected = || {
        bad(
            "`max_memory_restart` to be bytes or a size with K, M or G (500M, 1G)",
            None,
        )
    };
    d.max_memory_restart = Some(match &v.value {
        // Off, as when the key is left out.
        Value::Null => {
            d.max_memory_restart = None;
            return Ok(());
        }
        Value::Num(n) if n.is_finite() && *n >= 1.0 => *n as u64,
        Value::Str(s) => parse_size(s).map_err(|_| expected())?,
        _ => return Err(expected()),
    });
    Ok(())
}

fn max_memory_hard(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let expected = || {
        bad(
            "`max_memory_hard` to be bytes or a size with K, M or G (750M, 1G)",
            None,
        )
    };
    d.max_memory_hard = Some(match &v.value {
        Value::Num(n) if n.is_finite() && *n >= 1.0 => *n as u64,
        Value::Str(s) => parse_size(s).map_err(|_| expected())?,
        _ => return Err(expected()),
    });
    Ok(())
}

fn kill_timeout(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.stop.kill_timeout = duration("kill_timeout", v)?;
    Ok(())
}

fn wait_ready(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    if boolean("wait_ready", v)? && d.ready.source == ReadySource::Started {
        d.ready.source = ReadySource::NodeIpc;
    }
    Ok(())
}

fn listen_timeout(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.ready.listen_timeout = duration("listen_timeout", v)?;
    Ok(())
}

fn shutdown_with_message(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.stop.shutdown_with_message = boolean("shutdown_with_message", v)?;
    Ok(())
}

fn stop_exit_codes(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let one = |n: &Node| whole(n).filter(|c| (0..=255).contains(c)).map(|c| c as i32);
    let expected = || {
        bad(
            "`stop_exit_codes` to be an exit code (0 to 255) or a list of them",
            None,
        )
    };
    d.restart.stop_exit_codes = match &v.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| one(i).ok_or_else(expected))
            .collect::<Result<_, _>>()?,
        _ => vec![one(v).ok_or_else(expected)?],
    };
    Ok(())
}

/// A log file path; `~/` is the home directory, as PM2's `resolveHome`.
fn log_path(key: &str, v: &Node) -> Result<std::path::PathBuf, Bad> {
    match &v.value {
        Value::Str(s) if !s.trim().is_empty() => Ok(match s.strip_prefix("~/") {
            Some(rest) => {
                std::path::Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/".into()))
                    .join(rest)
            }
            None => s.into(),
        }),
        _ => Err(bad(
            format!("`{key}` to be a file path"),
            Some("e.g. `./logs/out.log`, or `/dev/null` to discard"),
        )),
    }
}

fn out_file(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.out_file = Some(log_path("out_file", v)?);
    Ok(())
}

fn error_file(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.error_file = Some(log_path("error_file", v)?);
    Ok(())
}

fn log_file(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match v.value {
        Value::Bool(false) | Value::Null => Ok(()),
        _ => {
            d.logs.log_file = Some(log_path("log_file", v)?);
            Ok(())
        }
    }
}

fn log_date_format(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let f = string("log_date_format", v)?;
    d.logs.date_format = (!f.is_empty()).then_some(f);
    Ok(())
}

fn time(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    if boolean("time", v)? && d.logs.date_format.is_none() {
        d.logs.date_format = Some(PM2_TIME_FORMAT.into());
    }
    Ok(())
}

fn merge_logs(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.merge = boolean("merge_logs", v)?;
    Ok(())
}

fn log_type(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match &v.value {
        Value::Str(s) if s == "json" => {
            d.logs.json = true;
            Ok(())
        }
        Value::Str(s) if s == "raw" || s.is_empty() => Ok(()),
        _ => Err(bad("`log_type` to be `json`", None)),
    }
}

fn disable_logs(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.disabled = boolean("disable_logs", v)?;
    Ok(())
}

fn log_prefix(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.prefix = boolean("log_prefix", v)?;
    Ok(())
}

/// A size in bytes: a number or a string with K, M or G.
pub fn size(key: &str, v: &Node) -> Result<u64, Bad> {
    let expected = || {
        bad(
            format!("`{key}` to be bytes or a size with K, M or G (10M, 1G)"),
            None,
        )
    };
    match &v.value {
        Value::Num(n) if n.is_finite() && *n >= 1.0 => Ok(*n as u64),
        Value::Str(s) => parse_size(s).map_err(|_| expected()),
        _ => Err(expected()),
    }
}

fn log_max_size(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.max_size = Some(size("log_max_size", v)?);
    Ok(())
}

/// A count of rotated files to keep.
pub fn retain(key: &str, v: &Node) -> Result<u32, Bad> {
    match whole(v) {
        Some(n) if (0..=10_000).contains(&n) => Ok(n as u32),
        _ => Err(bad(
            format!("`{key}` to be a number of files (0 to 10000)"),
            None,
        )),
    }
}

fn log_retain(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.logs.retain = Some(retain("log_retain", v)?);
    Ok(())
}

fn id_or_name(key: &str, v: &Node) -> Result<String, Bad> {
    match &v.value {
        Value::Str(s) if !s.is_empty() => Ok(s.clone()),
        Value::Num(n) if n.fract() == 0.0 && *n >= 0.0 => Ok(format!("{}", *n as u64)),
        _ => Err(bad(format!("`{key}` to be a name or a number"), None)),
    }
}

fn user(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.user = Some((id_or_name("uid", v)?, v.span));
    Ok(())
}

fn group(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.group = Some((id_or_name("gid", v)?, v.span));
    Ok(())
}

fn port(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match whole(v) {
        Some(p) if (1..=65535).contains(&p) => {
            d.port = Some(p.to_string());
            Ok(())
        }
        _ => Err(bad("`port` to be a port number (1 to 65535)", None)),
    }
}

fn kill_signal(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let s = v.js_string().unwrap_or_default();
    d.stop.kill_signal = parse_signal(&s).map_err(|_| {
        bad(
            "`kill_signal` to be a signal name (SIGTERM, TERM) or number",
            None,
        )
    })?;
    Ok(())
}

fn ready(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let s = string("ready", v)?;
    d.ready.source = crate::cli::parse_ready(&s).map_err(|_| {
        bad(
            "`ready` to be started, ipc, notify, tcp:PORT or http://HOST:PORT/PATH",
            None,
        )
    })?;
    Ok(())
}

/// Only the block's shape is checked here; `config::load` reads its keys.
fn observe(_: &mut Draft, v: &Node) -> Result<(), Bad> {
    match v.value {
        Value::Map(_) => Ok(()),
        _ => Err(bad(
            "`observe` to be a mapping with `match`, `exe` or `all`",
            Some("e.g. `observe: {match: \"node .*server.js\"}`"),
        )),
    }
}

fn strict_ready(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.ready.strict = boolean("strict_ready", v)?;
    Ok(())
}

fn listen(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let expected = || {
        bad(
            "`listen` to be an address or a list of them: 0.0.0.0:3000, [::]:3000, unix:/path",
            Some("an IP address, not a host name: `listen: 0.0.0.0:3000`"),
        )
    };
    let one = |n: &Node| match &n.value {
        Value::Str(s) => s.parse().map_err(|_| expected()),
        Value::Num(p) if p.fract() == 0.0 && (1.0..=65535.0).contains(p) => {
            format!("{p}").parse().map_err(|_| expected())
        }
        _ => Err(expected()),
    };
    d.listen = match &v.value {
        Value::Seq(items) => items.iter().map(one).collect::<Result<_, _>>()?,
        _ => vec![one(v)?],
    };
    Ok(())
}

/// `watchdog: null` (or 0) is off, as when the key is left out.
fn watchdog(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.watchdog = match v.value {
        Value::Null => None,
        _ => Some(duration("watchdog", v)?).filter(|t| !t.is_zero()),
    };
    Ok(())
}

fn instance_var(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    match &v.value {
        Value::Str(s)
            if !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            d.instance_var = Some(s.clone());
            Ok(())
        }
        _ => Err(bad(
            "`instance_var` to be a variable name (letters, digits and _)",
            Some("e.g. `instance_var: INSTANCE_ID`"),
        )),
    }
}

/// PM2's `cron_restart`: `0`, `'0'`, an empty string or null is off
/// (Common.js `sink.determineCron`); anything else must read as a cron
/// expression.
fn cron_restart(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let expected = "`cron_restart` to be a cron expression of five fields (minute hour day month weekday) or six (seconds first)";
    d.cron_restart = match &v.value {
        Value::Null | Value::Bool(false) => None,
        Value::Num(n) if *n == 0.0 => None,
        Value::Str(s) if s.trim().is_empty() || s.trim() == "0" => None,
        Value::Str(s) => Some(crate::cron::Schedule::parse(s).map_err(|e| Bad {
            expected: expected.into(),
            hint: Some(format!(
                "{}; e.g. `0 3 * * *` (03:00 every day) or `*/30 * * * * *` (every 30 seconds)",
                e.trim_end_matches('.')
            )),
        })?),
        _ => return Err(bad(expected, Some("e.g. `cron_restart: '0 3 * * *'`"))),
    };
    Ok(())
}

/// A path or a list of paths; `key` names the key in the message.
fn paths(key: &str, v: &Node) -> Result<Vec<String>, Bad> {
    let expected = || bad(format!("`{key}` to be a path or a list of paths"), None);
    match &v.value {
        Value::Str(s) => Ok(vec![s.clone()]),
        Value::Seq(items) => items
            .iter()
            .map(|i| match &i.value {
                Value::Str(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(expected()),
            })
            .collect(),
        _ => Err(expected()),
    }
}

/// PM2's `watch`: `true` (or an empty list) is the app's directory; a
/// false value (`false`, null, an empty string) is off.
fn watch(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.watch = match &v.value {
        Value::Bool(true) => Some(Vec::new()),
        Value::Bool(false) | Value::Null => None,
        Value::Str(s) if s.is_empty() => None,
        _ => Some(paths("watch", v).map_err(|mut b| {
            b.expected = "`watch` to be true, a path, or a list of paths".into();
            b.hint = Some("e.g. `watch: true` (the app's cwd) or `watch: [src, config]`".into());
            b
        })?),
    };
    Ok(())
}

fn ignore_watch(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.ignore_watch = match v.value {
        Value::Null => None,
        _ => Some(paths("ignore_watch", v)?),
    };
    Ok(())
}

fn watch_delay(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    d.watch_delay = match v.value {
        Value::Null => None,
        _ => Some(duration("watch_delay", v)?),
    };
    Ok(())
}

/// chokidar's options: `followSymlinks` is read; the others are ignored
/// with a warning each.
fn watch_options(d: &mut Draft, v: &Node) -> Result<(), Bad> {
    let entries = match &v.value {
        Value::Map(entries) => entries,
        Value::Null => return Ok(()),
        _ => {
            return Err(bad(
                "`watch_options` to be a mapping of chokidar options",
                Some("e.g. `watch_options: {followSymlinks: false}`"),
            ))
        }
    };
    for (k, val) in entries {
        if k.name == "followSymlinks" {
            d.follow_symlinks = Some(boolean("watch_options.followSymlinks", val)?);
        } else {
            d.notes.push((
                k.span,
                format!("watch_options.{}", k.name),
                format!(
                    "`watch_options.{}` is ignored: procward watches with inotify, not chokidar; of chokidar's options only `followSymlinks` is read",
                    k.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    /// Applies `key: value` (YAML) to a fresh draft.
    fn with(key: &str, value: &str) -> Result<Draft, Bad> {
        let node = yaml::parse(&format!("v: {value}\n")).unwrap();
        let mut d = Draft::default();
        (find(key).unwrap().apply.unwrap())(&mut d, node.get("v").unwrap())?;
        Ok(d)
    }

    #[test]
    fn every_key_is_documented_once() {
        let mut seen = std::collections::HashSet::new();
        for d in APP_KEYS {
            assert!(
                !d.doc.is_empty() && !d.pm2.is_empty() && !d.default.is_empty(),
                "{}",
                d.name
            );
            for s in std::iter::once(d.name).chain(d.aliases.iter().copied()) {
                assert!(seen.insert(s), "{s} defined twice");
            }
            let ignored = matches!(d.handling, Handling::Ignored(_));
            assert_eq!(
                ignored,
                d.apply.is_none() && d.name != "env_<name>",
                "{}",
                d.name
            );
        }
    }

    /// The README's table of PM2 keys, made from the definitions above.
    fn readme_table() -> String {
        let mut t =
            String::from("| key | what it does | PM2 default | procward |\n|---|---|---|---|\n");
        for d in APP_KEYS {
            let mut key = format!("`{}`", d.name);
            for a in d.aliases {
                key.push_str(&format!(", `{a}`"));
            }
            let how = match d.handling {
                Handling::Honoured => "honoured".to_string(),
                Handling::Different(why) => format!("honoured; different: {why}"),
                Handling::Ignored(why) => format!("ignored with a warning: {why}"),
                Handling::Procward => "procward only".to_string(),
            };
            t.push_str(&format!("| {key} | {} | {} | {how} |\n", d.doc, d.default));
        }
        t
    }

    #[test]
    fn the_readme_table_matches_the_definitions() {
        let readme = include_str!("../../README.md");
        let table = readme_table();
        if !readme.contains(&table) {
            panic!(
                "README.md's \"Coming from PM2\" table is out of date; it should read:\n{table}"
            );
        }
    }

    #[test]
    fn name() {
        assert_eq!(with("name", "web").unwrap().name.unwrap().0, "web");
        assert!(with("name", "''").is_err());
    }

    #[test]
    fn script_and_its_alias() {
        assert_eq!(
            with("script", "server.js").unwrap().script.unwrap().0,
            "server.js"
        );
        assert_eq!(with("exec", "npm").unwrap().script.unwrap().0, "npm");
        assert_eq!(with("cmd", "npm").unwrap().script.unwrap().0, "npm");
        assert_eq!(
            with("command", "'npm run start:prod'")
                .unwrap()
                .script
                .unwrap()
                .0,
            "npm run start:prod"
        );
        assert!(with("script", "42").is_err());
    }

    #[test]
    fn args_as_string_or_list() {
        assert_eq!(with("args", "start").unwrap().args, ["start"]);
        assert_eq!(
            with("args", "\"--port 80 --title 'my app'\"").unwrap().args,
            ["--port", "80", "--title", "my app"]
        );
        assert_eq!(with("args", "[-p, 80]").unwrap().args, ["-p", "80"]);
        assert!(with("args", "{a: 1}").is_err());
    }

    #[test]
    fn interpreter_and_its_args() {
        assert_eq!(
            with("interpreter", "none").unwrap().interpreter.unwrap().0,
            "none"
        );
        assert_eq!(
            with("exec_interpreter", "/usr/bin/python3")
                .unwrap()
                .interpreter
                .unwrap()
                .0,
            "/usr/bin/python3"
        );
        assert_eq!(
            with("node_args", "--max-old-space-size=512 --inspect")
                .unwrap()
                .interpreter_args
                .len(),
            2
        );
        assert_eq!(
            with("interpreter_args", "[--harmony]")
                .unwrap()
                .interpreter_args,
            ["--harmony"]
        );
    }

    #[test]
    fn cwd() {
        assert_eq!(with("cwd", "./api").unwrap().cwd.unwrap(), "./api");
    }

    #[test]
    fn env_values_become_strings() {
        let d = with(
            "env",
            "{PORT: 3000, DEBUG: false, EMPTY: null, NAME: web, RATIO: 0.5}",
        )
        .unwrap();
        let get = |k: &str| d.env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("PORT"), "3000");
        assert_eq!(get("DEBUG"), "false");
        assert_eq!(get("EMPTY"), "null");
        assert_eq!(get("RATIO"), "0.5");
        assert!(with("env", "[A, B]").is_err());
    }

    #[test]
    fn instances() {
        assert_eq!(with("instances", "4").unwrap().instances, Some(4));
        assert_eq!(with("instances", "max").unwrap().instances, Some(0));
        assert_eq!(with("instances", "'-1'").unwrap().instances, Some(-1));
        assert_eq!(with("instances", "'2'").unwrap().instances, Some(2));
        assert!(with("instances", "lots").is_err());
        assert!(with("instances", "1.5").is_err());
    }

    #[test]
    fn listen() {
        let addrs = |v: &str| {
            with("listen", v)
                .unwrap()
                .listen
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs("'0.0.0.0:3000'"), ["0.0.0.0:3000"]);
        assert_eq!(
            addrs("['[::]:80', 'unix:/run/a.sock']"),
            ["[::]:80", "unix:/run/a.sock"]
        );
        assert_eq!(addrs("3000"), ["[::]:3000"]);
        assert!(with("listen", "'localhost:3000'").is_err());
        assert!(with("listen", "true").is_err());
    }

    #[test]
    fn exec_mode() {
        assert_eq!(
            with("exec_mode", "cluster_mode").unwrap().exec_mode,
            Some(ExecMode::Cluster)
        );
        assert_eq!(
            with("exec_mode", "fork").unwrap().exec_mode,
            Some(ExecMode::Fork)
        );
        assert!(with("exec_mode", "threads").is_err());
    }

    #[test]
    fn autorestart() {
        assert!(!with("autorestart", "false").unwrap().restart.autorestart);
        assert!(with("autorestart", "'no'").is_err());
    }

    #[test]
    fn max_restarts() {
        assert_eq!(with("max_restarts", "3").unwrap().restart.max_restarts, 3);
        assert!(with("max_restarts", "-1").is_err());
    }

    #[test]
    fn times_in_ms_or_with_units() {
        assert_eq!(
            with("min_uptime", "5000").unwrap().restart.min_uptime,
            Duration::from_secs(5)
        );
        assert_eq!(
            with("min_uptime", "10s").unwrap().restart.min_uptime,
            Duration::from_secs(10)
        );
        assert_eq!(
            with("restart_delay", "'250'")
                .unwrap()
                .restart
                .restart_delay,
            Duration::from_millis(250)
        );
        assert_eq!(
            with("kill_timeout", "3000").unwrap().stop.kill_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            with("listen_timeout", "1m").unwrap().ready.listen_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(
            with("exp_backoff_restart_delay", "100")
                .unwrap()
                .restart
                .exp_backoff_restart_delay,
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            with("exp_backoff_restart_delay", "0")
                .unwrap()
                .restart
                .exp_backoff_restart_delay,
            None
        );
        assert!(with("kill_timeout", "-5").is_err());
        assert!(with("kill_timeout", "soon").is_err());
        assert!(with("watchdog", "30s").unwrap().watchdog.is_some());
        assert!(with("watchdog", "null").unwrap().watchdog.is_none());
        assert!(with("watchdog", "0").unwrap().watchdog.is_none());
        assert!(with("exp_backoff_restart_delay", "null")
            .unwrap()
            .restart
            .exp_backoff_restart_delay
            .is_none());
        assert!(with("max_memory_restart", "null")
            .unwrap()
            .max_memory_restart
            .is_none());
        let null = with("kill_timeout", "null").unwrap_err();
        assert_eq!(
            null.hint.as_deref(),
            Some("leave `kill_timeout` out to get its default")
        );
        assert_eq!(
            with("kill_timeout", "-5").unwrap_err().hint.as_deref(),
            Some("durations cannot be negative")
        );
    }

    #[test]
    fn max_memory_restart() {
        assert_eq!(
            with("max_memory_restart", "500M")
                .unwrap()
                .max_memory_restart,
            Some(500 << 20)
        );
        assert_eq!(
            with("max_memory_restart", "1G").unwrap().max_memory_restart,
            Some(1 << 30)
        );
        assert_eq!(
            with("max_memory_restart", "1048576")
                .unwrap()
                .max_memory_restart,
            Some(1 << 20)
        );
        assert!(with("max_memory_restart", "huge").is_err());
    }

    #[test]
    fn readiness_keys() {
        assert_eq!(
            with("wait_ready", "true").unwrap().ready.source,
            ReadySource::NodeIpc
        );
        assert_eq!(
            with("ready", "tcp:8080").unwrap().ready.source,
            ReadySource::Tcp(8080)
        );
        assert!(with("strict_ready", "true").unwrap().ready.strict);
        assert!(
            with("shutdown_with_message", "true")
                .unwrap()
                .stop
                .shutdown_with_message
        );
    }

    #[test]
    fn stop_exit_codes() {
        assert_eq!(
            with("stop_exit_codes", "[0, 3]")
                .unwrap()
                .restart
                .stop_exit_codes,
            [0, 3]
        );
        assert_eq!(
            with("stop_exit_codes", "0")
                .unwrap()
                .restart
                .stop_exit_codes,
            [0]
        );
        assert!(with("stop_exit_codes", "[300]").is_err());
    }

    #[test]
    fn user_group_and_port() {
        assert_eq!(with("user", "node").unwrap().user.unwrap().0, "node");
        assert_eq!(with("uid", "1000").unwrap().user.unwrap().0, "1000");
        assert_eq!(with("group", "staff").unwrap().group.unwrap().0, "staff");
        assert_eq!(with("port", "8080").unwrap().port.unwrap(), "8080");
        assert!(with("port", "70000").is_err());
    }

    #[test]
    fn instance_var_and_count() {
        assert_eq!(
            with("instance_var", "INSTANCE_ID")
                .unwrap()
                .instance_var
                .unwrap(),
            "INSTANCE_ID"
        );
        assert!(with("instance_var", "'A=B'").is_err());
        assert!(with("instance_var", "''").is_err());
        assert_eq!(instances_for(0, 4), 4);
        assert_eq!(instances_for(-1, 4), 3);
        assert_eq!(instances_for(-8, 4), 1);
        assert_eq!(instances_for(2, 4), 2);
        assert_eq!(instances_for(0, 0), 1);
    }

    #[test]
    fn log_keys() {
        let d = with("out_file", "./out.log").unwrap();
        assert_eq!(d.logs.out_file.unwrap(), std::path::Path::new("./out.log"));
        assert!(with("error_file", "''").is_err());
        assert!(with("log_file", "false").unwrap().logs.log_file.is_none());
        assert!(with("log_file", "true").is_err());
        assert_eq!(
            with("time", "true").unwrap().logs.date_format.unwrap(),
            PM2_TIME_FORMAT
        );
        assert_eq!(
            with("log_date_format", "'YYYY-MM-DD HH:mm Z'")
                .unwrap()
                .logs
                .date_format
                .unwrap(),
            "YYYY-MM-DD HH:mm Z"
        );
        assert!(with("log_type", "json").unwrap().logs.json);
        assert!(with("log_type", "xml").is_err());
        assert!(with("combine_logs", "true").unwrap().logs.merge);
        assert!(with("disable_logs", "true").unwrap().logs.disabled);
        assert!(with("log_prefix", "true").unwrap().logs.prefix);
        assert_eq!(
            with("log_max_size", "10M").unwrap().logs.max_size,
            Some(10 << 20)
        );
        assert_eq!(with("log_retain", "5").unwrap().logs.retain, Some(5));
        assert!(with("log_retain", "-1").is_err());
    }

    #[test]
    fn kill_signal() {
        assert_eq!(
            with("kill_signal", "SIGTERM").unwrap().stop.kill_signal,
            nix::sys::signal::Signal::SIGTERM
        );
        assert!(with("kill_signal", "SIGNOPE").is_err());
    }
}
