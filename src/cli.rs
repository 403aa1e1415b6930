//! Command-line definitions.
//!
//! `procward [OPTIONS] -- CMD [ARGS...]` supervises one command; `procward
//! run -c FILE` runs a PM2 process file. Option names follow PM2's own CLI.
//! Every option is optional here so that, with a process file, only the
//! options actually given override the file.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::app::PM2_INSTANCE_VAR;
use crate::config::error::closest;
use crate::config::keys::{self, Bad, Draft, Handling};
use crate::config::raw::{Node, Span, Value};
use crate::config::{agent, AgentSettings, AppSpec, ExecMode, ReadySource};

/// A small init-style agent: PID 1 duties, PM2-style supervision, readiness
/// for systemd and Kubernetes, Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "procward", version, args_conflicts_with_subcommands = true)]
#[command(
    override_usage = "procward [OPTIONS] [--] CMD [ARGS]...\n       procward <COMMAND> [OPTIONS]"
)]
pub struct Cli {
    /// What to do other than supervising CMD.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the supervised app.
    #[command(flatten)]
    pub app: AppOpts,
    /// Options of the agent.
    #[command(flatten)]
    pub agent: AgentOpts,
    /// The command to run and its arguments, passed exactly as given.
    /// Only what follows `--`, or the first word that does not start with
    /// `-`, is the command: an unknown option is an error, not a program.
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

/// Subcommands.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
pub enum Command {
    /// Run the apps of a process file.
    Run(RunArgs),
    /// Validate a process file and print its apps.
    Check(CheckArgs),
    /// Print a process file as procward YAML.
    Convert(ConvertArgs),
    /// Watch an app that procward did not start (Kubernetes sidecar).
    Observe(crate::observe::ObserveArgs),
    /// Talk to a running procward (`status`, `reload`, `restart`, ...).
    Control(ControlCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page.
    Man,
}

/// The commands that talk to a running procward over its control socket.
#[derive(Debug)]
pub enum ControlCommand {
    /// `status [--json]`.
    Status(StatusArgs),
    /// `describe APP`.
    Describe(DescribeArgs),
    /// `reload|restart|stop|start [APP|all]`.
    Action(&'static str, ActionArgs),
    /// `signal SIG APP`.
    Signal(SignalArgs),
    /// `scale APP N`.
    Scale(ScaleArgs),
    /// `logs [APP] [--lines N] [--follow]`.
    Logs(LogsArgs),
}

/// Help shared by the commands that talk to a running procward.
const CONTROL_HELP: &str = "Exit codes: 0 done; 1 done but not everywhere (an instance \
failed, a reload was aborted); 2 usage, or the request was refused; 3 no procward is \
running here; 4 not allowed (only procward's user and root); 111 the conversation failed.";

/// The actions on apps, with their help.
const ACTIONS: [(&str, &str); 4] = [
    (
        "reload",
        "Replace each instance's process with a new one, one instance at a time, and wait \
         until every one is ready again",
    ),
    (
        "restart",
        "Stop each instance, then start it again, and wait until it is ready",
    ),
    (
        "stop",
        "Stop each instance for good (until `procward start`)",
    ),
    (
        "start",
        "Start each stopped or errored instance, and wait until it is ready",
    ),
];

/// The subcommands' own arguments are defined only when one is invoked
/// (`Command::defer`): `procward -- CMD`, the path every container start
/// takes, does not build the ~40 arguments it never uses, which is a
/// measurable share of procward's start-up time.
impl Subcommand for Command {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd.subcommand(
            clap::Command::new("run")
                .about("Run the apps of a process file (YAML, JSON or PM2's ecosystem.config.js)")
                .defer(RunArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("check")
                .about(
                    "Validate a process file and print its apps, normalized, as YAML \
                     (exit 0 when valid, 1 when not)",
                )
                .defer(CheckArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("convert")
                .about("Print a process file (ecosystem.config.js, JSON or YAML) as procward YAML")
                .defer(ConvertArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("observe")
                .about(
                    "Watch, measure and cap an app that procward did not start \
                     (a Kubernetes sidecar with shareProcessNamespace: true)",
                )
                .defer(crate::observe::ObserveArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("status")
                .visible_alias("list")
                .about("Show the apps of the running procward, as `pm2 list` does")
                .after_help(CONTROL_HELP)
                .defer(StatusArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("describe")
                .about("Show one app: its settings (no environment values) and restart history")
                .after_help(CONTROL_HELP)
                .defer(DescribeArgs::augment_args),
        )
        .subcommands(ACTIONS.map(|(name, about)| {
            clap::Command::new(name)
                .about(about)
                .after_help(CONTROL_HELP)
                .defer(ActionArgs::augment_args)
        }))
        .subcommand(
            clap::Command::new("signal")
                .about("Send a signal to each instance's process group (PM2's sendSignal)")
                .after_help(CONTROL_HELP)
                .defer(SignalArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("scale")
                .about("Set an app's number of instances")
                .after_help(CONTROL_HELP)
                .defer(ScaleArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("logs")
                .about("Print an app's last lines of output (when procward keeps them), and follow new ones")
                .after_help(CONTROL_HELP)
                .defer(LogsArgs::augment_args),
        )
        .subcommand(
            clap::Command::new("completions")
                .about("Print a completion script for bash, zsh or fish")
                .defer(CompletionsArgs::augment_args),
        )
        .subcommand(clap::Command::new("man").about("Print procward's man page (roff)"))
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        matches!(
            name,
            "run"
                | "check"
                | "convert"
                | "observe"
                | "status"
                | "list"
                | "describe"
                | "reload"
                | "restart"
                | "stop"
                | "start"
                | "signal"
                | "scale"
                | "logs"
                | "completions"
                | "man"
        )
    }
}

impl clap::FromArgMatches for Command {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        match m.subcommand() {
            Some(("run", sub)) => Ok(Command::Run(RunArgs::from_arg_matches(sub)?)),
            Some(("check", sub)) => Ok(Command::Check(CheckArgs::from_arg_matches(sub)?)),
            Some(("convert", sub)) => Ok(Command::Convert(ConvertArgs::from_arg_matches(sub)?)),
            Some(("observe", sub)) => Ok(Command::Observe(
                crate::observe::ObserveArgs::from_arg_matches(sub)?,
            )),
            Some(("status", sub)) => Ok(Command::Control(ControlCommand::Status(
                StatusArgs::from_arg_matches(sub)?,
            ))),
            Some(("describe", sub)) => Ok(Command::Control(ControlCommand::Describe(
                DescribeArgs::from_arg_matches(sub)?,
            ))),
            Some((name, sub)) if ACTIONS.iter().any(|(a, _)| *a == name) => {
                let name = ACTIONS.iter().find(|(a, _)| *a == name).expect("found").0;
                Ok(Command::Control(ControlCommand::Action(
                    name,
                    ActionArgs::from_arg_matches(sub)?,
                )))
            }
            Some(("signal", sub)) => Ok(Command::Control(ControlCommand::Signal(
                SignalArgs::from_arg_matches(sub)?,
            ))),
            Some(("scale", sub)) => Ok(Command::Control(ControlCommand::Scale(
                ScaleArgs::from_arg_matches(sub)?,
            ))),
            Some(("logs", sub)) => Ok(Command::Control(ControlCommand::Logs(
                LogsArgs::from_arg_matches(sub)?,
            ))),
            Some(("completions", sub)) => Ok(Command::Completions(
                CompletionsArgs::from_arg_matches(sub)?,
            )),
            Some(("man", _)) => Ok(Command::Man),
            Some((other, _)) => Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                format!("unknown subcommand `{other}`"),
            )),
            None => Err(clap::Error::raw(
                clap::error::ErrorKind::MissingSubcommand,
                "a subcommand is required",
            )),
        }
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// The process file, and which of its apps and environments to use.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The process file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Merge `env_<NAME>` over `env` (PM2's `--env`).
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
    /// Use only these apps (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
}

/// Validate a process file and print its apps, normalized, as YAML (exit 0
/// when valid, 1 when not).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The process file and its selection.
    #[command(flatten)]
    pub file: FileArgs,
}

/// Print a process file (ecosystem.config.js, JSON or YAML) as procward YAML.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The process file to convert.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Which running procward a command talks to.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// The procward's name: its process file's (`web` for web.yaml and the
    /// `procward@web` unit) or its app's [default: the only one running].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Its control socket [default: found in $RUNTIME_DIRECTORY,
    /// /run/procward, or procward-UID in the temporary directory].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

/// `procward status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the same JSON as `/status`.
    #[arg(long)]
    pub json: bool,
    /// Which procward.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `procward describe APP`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The app's name.
    #[arg(value_name = "APP")]
    pub app: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// Which procward.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `procward reload|restart|stop|start [APP|all]`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// An app's name, or `all`.
    #[arg(value_name = "APP", default_value = "all")]
    pub app: String,
    /// Print what happened as JSON.
    #[arg(long)]
    pub json: bool,
    /// Which procward.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `procward signal SIG APP`.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The signal: SIGUSR2, USR2 or 12.
    #[arg(value_name = "SIG")]
    pub signal: String,
    /// An app's name, or `all`.
    #[arg(value_name = "APP")]
    pub app: String,
    /// Print what happened as JSON.
    #[arg(long)]
    pub json: bool,
    /// Which procward.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `procward scale APP N`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The app's name.
    #[arg(value_name = "APP")]
    pub app: String,
    /// How many instances it should have: N, or +N / -N more or fewer
    /// than now, as `pm2 scale`.
    #[arg(value_name = "N", allow_hyphen_values = true)]
    pub instances: String,
    /// Print what happened as JSON.
    #[arg(long)]
    pub json: bool,
    /// Which procward.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `procward logs [APP]`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// An app's name, or `all`.
    #[arg(value_name = "APP", default_value = "all")]
    pub app: String,
    /// How many of the last lines [default: 15, as PM2].
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub lines: usize,
    /// Keep printing new lines until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Which procward.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `procward completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh or fish.
    #[arg(value_name = "SHELL", value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Run the apps of a process file (YAML, JSON or PM2's ecosystem.config.js).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The process file and its selection.
    #[command(flatten)]
    pub file: FileArgs,
    /// Options that override every app of the file.
    #[command(flatten)]
    pub app: AppOpts,
    /// Options that override the file's `procward:` section.
    #[command(flatten)]
    pub agent: AgentOpts,
}

/// Per-app options (PM2 CLI names). Each is read by the definition of the
/// process-file key of the same name (`--min-uptime` by `min_uptime`,
/// config/keys.rs), so a value is valid on the command line exactly when it
/// is valid in a file.
#[derive(Debug, Args, Default, Clone)]
pub struct AppOpts {
    /// App name, shown in logs and metrics [default: the script's file name,
    /// or the interpreter's name for inline code (`python3 -c`, `node -e`)].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Do not restart the app when it exits: exit with its status (as tini).
    #[arg(long)]
    pub no_autorestart: bool,
    /// Consecutive unstable restarts before the app is errored [default: 16].
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<String>,
    /// A run shorter than this is unstable [default: 1000ms].
    #[arg(long, value_name = "DUR")]
    pub min_uptime: Option<String>,
    /// Wait this long before each restart [default: 0].
    #[arg(long, value_name = "DUR")]
    pub restart_delay: Option<String>,
    /// First delay of an exponential backoff (x1.5 per restart, capped at 15s).
    #[arg(long, value_name = "DUR")]
    pub exp_backoff_restart_delay: Option<String>,
    /// Exit codes that end supervision without a restart (`0,3` or `0 3`).
    #[arg(
        long,
        value_name = "CODES",
        num_args = 1..,
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub stop_exit_codes: Option<Vec<String>>,
    /// After the stop signal, wait this long before SIGKILL [default: 1600ms].
    #[arg(long, value_name = "DUR")]
    pub kill_timeout: Option<String>,
    /// Signal that asks the app to stop [default: SIGINT, as PM2].
    #[arg(long, value_name = "SIG")]
    pub kill_signal: Option<String>,
    /// Number of instances: N, `max` or 0 (one per CPU), -1 (one fewer than
    /// the CPUs) [default: 1]. Each gets NODE_APP_INSTANCE, as under PM2.
    #[arg(short = 'i', long, value_name = "N", allow_negative_numbers = true)]
    pub instances: Option<String>,
    /// Wait for `process.send('ready')` (PM2's --wait-ready).
    #[arg(long)]
    pub wait_ready: bool,
    /// Readiness source: started, ipc, notify, tcp:PORT, http://HOST:PORT/PATH.
    #[arg(long, value_name = "SOURCE")]
    pub ready: Option<String>,
    /// Time allowed to become ready [default: 3000ms].
    #[arg(long, value_name = "DUR")]
    pub listen_timeout: Option<String>,
    /// Treat hitting --listen-timeout as a failed start (PM2 treats it as ready).
    #[arg(long)]
    pub strict_ready: bool,
    /// Send "shutdown" on the IPC channel instead of the kill signal.
    #[arg(long)]
    pub shutdown_with_message: bool,
    /// Restart gracefully when the app's memory exceeds this (500M, 1G).
    #[arg(long, value_name = "SIZE")]
    pub max_memory_restart: Option<String>,
    /// Restart when the app's own sd_notify WATCHDOG=1 pings stop this long.
    #[arg(long, value_name = "DUR")]
    pub watchdog: Option<String>,
    /// Hold a listening socket for the app and pass it to every instance as
    /// LISTEN_FDS (0.0.0.0:3000, [::]:3000, unix:/path); repeatable.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// At this memory a memory restart sends SIGKILL at once [default: 1.5x --max-memory-restart].
    #[arg(long, value_name = "SIZE")]
    pub max_memory_hard: Option<String>,
    /// Write the app's stdout to FILE (captures the output; /dev/null discards).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<String>,
    /// Write the app's stderr to FILE (captures the output; /dev/null discards).
    #[arg(short = 'e', long = "error", value_name = "FILE")]
    pub error: Option<String>,
    /// Write both streams of the app to FILE as well.
    #[arg(short = 'l', long = "log", value_name = "FILE")]
    pub log: Option<String>,
    /// Prefix each output line with the time in this dayjs format.
    #[arg(long, value_name = "FORMAT")]
    pub log_date_format: Option<String>,
    /// Prefix each output line with the time (YYYY-MM-DDTHH:mm:ss).
    #[arg(long)]
    pub time: bool,
    /// All instances write the same log files (no -N suffix).
    #[arg(long)]
    pub merge_logs: bool,
    /// `json`: write the output as one JSON object per line.
    #[arg(long, value_name = "TYPE")]
    pub log_type: Option<String>,
    /// Prefix each output line with `app-N | `, coloured on a terminal.
    #[arg(long)]
    pub log_prefix: bool,
    /// Rotate a log file before it grows past this size (10M, 1G).
    #[arg(long, value_name = "SIZE")]
    pub log_max_size: Option<String>,
    /// Rotated log files kept [default: 30].
    #[arg(long, value_name = "N")]
    pub log_retain: Option<String>,
    /// Send the app's output to /dev/null.
    #[arg(long)]
    pub disable_logs: bool,
    /// Restart when files change: under the app's directory, or under
    /// PATHS (`--watch src,lib`, `--watch=src`). Dot files and node_modules
    /// are not watched.
    #[arg(
        long,
        value_name = "PATHS",
        num_args = 0..=1,
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub watch: Option<Vec<String>>,
    /// Restart every instance at the times of a cron expression (five
    /// fields, or six with seconds first), in local time.
    #[arg(long = "cron-restart", visible_alias = "cron", value_name = "CRON")]
    pub cron_restart: Option<String>,
}

/// Agent options, read by the same definitions as the process file's
/// `procward:` section (config/agent.rs).
#[derive(Debug, Args, Default, Clone)]
pub struct AgentOpts {
    /// What SIGHUP does: reload (one instance at a time) or forward
    /// [default: reload].
    #[arg(long, value_name = "ACTION")]
    pub sighup: Option<String>,
    /// Format of procward's own log lines: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve /metrics, /healthz, /readyz and /status on this address
    /// (0.0.0.0:9079, :9079 or localhost:9079).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// How often each instance's processes are sampled, above zero [default: 1s].
    #[arg(long, value_name = "DUR")]
    pub sample_interval: Option<String>,
    /// Also export the metric names of another tool: pm2.
    #[arg(long, value_name = "TOOL")]
    pub metrics_compat: Option<String>,
    /// Stop every app and exit once one app is errored [default: the others keep running].
    #[arg(long)]
    pub exit_on_error: bool,
    /// Serve the control socket (`procward status`, `reload`, ...) at this
    /// path [default: $RUNTIME_DIRECTORY/procward.sock, else in
    /// /run/procward, else in procward-UID in the temporary directory].
    #[arg(long, value_name = "PATH")]
    pub control: Option<String>,
}

/// Parses a `--ready` source.
pub fn parse_ready(text: &str) -> Result<ReadySource, String> {
    match text {
        "started" | "none" => Ok(ReadySource::Started),
        "ipc" | "node-ipc" => Ok(ReadySource::NodeIpc),
        "notify" | "sd-notify" => Ok(ReadySource::SdNotify),
        t if t.starts_with("tcp:") => t[4..]
            .parse()
            .map(ReadySource::Tcp)
            .map_err(|_| format!("invalid ready source `{text}`: expected tcp:PORT with PORT in 1..65535")),
        t if t.starts_with("http://") => Ok(ReadySource::Http(t.to_string())),
        _ => Err(format!(
            "invalid ready source `{text}`: expected started, ipc, notify, tcp:PORT or http://HOST:PORT/PATH"
        )),
    }
}

/// One option given on the command line, as its process-file key would
/// hold it.
struct Given {
    /// The flag, for the error message.
    flag: &'static str,
    /// The key whose definition reads it.
    key: &'static str,
    /// The value.
    value: Node,
}

fn text(s: &str) -> Node {
    Node::new(Value::Str(s.to_string()), Span::default())
}

fn flag(b: bool) -> Node {
    Node::new(Value::Bool(b), Span::default())
}

/// The error for a refused value, in the process file's words.
fn refused(g: &Given, b: Bad) -> String {
    let found = match &g.value.value {
        Value::Str(s) => format!("`{s}`"),
        Value::Seq(items) => format!(
            "`{}`",
            items
                .iter()
                .filter_map(|i| i.js_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => g.value.found(),
    };
    let mut m = format!("error: {}: expected {}, found {found}", g.flag, b.expected);
    if let Some(h) = b.hint {
        m.push_str(&format!("\n  hint: {h}"));
    }
    m
}

impl AppOpts {
    /// The options given, in the order their keys apply (`--wait-ready`
    /// before `--ready`, which overrides it).
    fn given(&self) -> Vec<Given> {
        let mut g = Vec::new();
        let mut add = |flag, key, value: Option<Node>| {
            if let Some(value) = value {
                g.push(Given { flag, key, value });
            }
        };
        let s = |o: &Option<String>| o.as_deref().map(text);
        let on = |b: bool| b.then(|| flag(true));
        add("--name", "name", s(&self.name));
        add(
            "--no-autorestart",
            "autorestart",
            self.no_autorestart.then(|| flag(false)),
        );
        add("--max-restarts", "max_restarts", s(&self.max_restarts));
        add("--min-uptime", "min_uptime", s(&self.min_uptime));
        add("--restart-delay", "restart_delay", s(&self.restart_delay));
        add(
            "--exp-backoff-restart-delay",
            "exp_backoff_restart_delay",
            s(&self.exp_backoff_restart_delay),
        );
        add(
            "--stop-exit-codes",
            "stop_exit_codes",
            self.stop_exit_codes.as_ref().map(|c| {
                Node::new(
                    Value::Seq(c.iter().map(|c| text(c)).collect()),
                    Span::default(),
                )
            }),
        );
        add("--kill-timeout", "kill_timeout", s(&self.kill_timeout));
        add("--kill-signal", "kill_signal", s(&self.kill_signal));
        add("--instances", "instances", s(&self.instances));
        add("--wait-ready", "wait_ready", on(self.wait_ready));
        add("--ready", "ready", s(&self.ready));
        add(
            "--listen-timeout",
            "listen_timeout",
            s(&self.listen_timeout),
        );
        add("--strict-ready", "strict_ready", on(self.strict_ready));
        add(
            "--shutdown-with-message",
            "shutdown_with_message",
            on(self.shutdown_with_message),
        );
        add(
            "--max-memory-restart",
            "max_memory_restart",
            s(&self.max_memory_restart),
        );
        add("--watchdog", "watchdog", s(&self.watchdog));
        add(
            "--listen",
            "listen",
            (!self.listen.is_empty()).then(|| {
                Node::new(
                    Value::Seq(self.listen.iter().map(|a| text(a)).collect()),
                    Span::default(),
                )
            }),
        );
        add(
            "--max-memory-hard",
            "max_memory_hard",
            s(&self.max_memory_hard),
        );
        add("--output", "out_file", s(&self.output));
        add("--error", "error_file", s(&self.error));
        add("--log", "log_file", s(&self.log));
        add(
            "--log-date-format",
            "log_date_format",
            s(&self.log_date_format),
        );
        add("--time", "time", on(self.time));
        add("--merge-logs", "merge_logs", on(self.merge_logs));
        add("--log-type", "log_type", s(&self.log_type));
        add("--log-prefix", "log_prefix", on(self.log_prefix));
        add("--log-max-size", "log_max_size", s(&self.log_max_size));
        add("--log-retain", "log_retain", s(&self.log_retain));
        add("--disable-logs", "disable_logs", on(self.disable_logs));
        add(
            "--watch",
            "watch",
            self.watch.as_ref().map(|p| match &p[..] {
                [] => flag(true),
                paths => Node::new(
                    Value::Seq(paths.iter().map(|p| text(p)).collect()),
                    Span::default(),
                ),
            }),
        );
        add("--cron-restart", "cron_restart", s(&self.cron_restart));
        g
    }

    /// Overrides the settings of `app` with the options given, each read by
    /// its key's definition; `cpus` counts the CPUs for `-i max`.
    pub fn apply(&self, app: &mut AppSpec, cpus: impl FnOnce() -> u32) -> Result<(), String> {
        let mut d = Draft {
            restart: app.restart.clone(),
            stop: app.stop.clone(),
            ready: app.ready.clone(),
            max_memory_restart: app.max_memory_restart,
            watchdog: app.watchdog,
            max_memory_hard: app.max_memory_hard,
            logs: app.logs.clone(),
            ..Draft::default()
        };
        for g in self.given() {
            let apply = keys::find(g.key)
                .and_then(|def| def.apply)
                .expect("every app flag has a key definition");
            apply(&mut d, &g.value).map_err(|b| refused(&g, b))?;
        }
        if self.cron_restart.is_some() {
            app.cron_restart = d.cron_restart.clone();
        }
        if let Some(watched) = &d.watch {
            let base = match &app.cwd {
                Some(cwd) => cwd.clone(),
                None => std::env::current_dir().map_err(|e| {
                    format!("error: --watch: cannot read the current directory: {e}")
                })?,
            };
            let mut spec = crate::config::load::watch_spec(&d, watched, &base);
            // The file's other watch settings stay.
            if let Some(old) = &app.watch {
                spec.ignore = old.ignore.clone();
                spec.delay = old.delay;
                spec.follow_symlinks = old.follow_symlinks;
            }
            if let Some((typed, _)) = watched.iter().zip(&spec.paths).find(|(_, p)| !p.exists()) {
                return Err(format!(
                    "error: --watch: expected paths that exist, found `{typed}`\n  hint: `--watch` alone watches the app's directory: `procward --watch -- node app.js`"
                ));
            }
            app.watch = Some(spec);
        }
        if let Some((name, _)) = d.name {
            app.name = name;
        }
        app.restart = d.restart;
        app.stop = d.stop;
        app.ready = d.ready;
        app.max_memory_restart = d.max_memory_restart;
        app.watchdog = d.watchdog;
        if !d.listen.is_empty() {
            app.listen = d.listen;
        }
        app.max_memory_hard = d.max_memory_hard;
        app.logs = d.logs;
        if let Some(n) = d.instances {
            app.instances = keys::instances_for(n, cpus());
            // `-i` is where PM2 gives each process its instance number.
            app.instance_var
                .get_or_insert_with(|| PM2_INSTANCE_VAR.to_string());
        }
        Ok(())
    }

    /// Overrides an observed app's settings with the options given; an
    /// option that only means something for a started app is refused.
    pub fn apply_observed(&self, app: &mut crate::observe::ObservedSpec) -> Result<(), String> {
        let mut d = Draft::default();
        d.stop.kill_signal = app.kill_signal;
        d.stop.kill_timeout = app.kill_timeout;
        d.ready.source = app.ready.clone();
        d.max_memory_restart = app.max_memory_restart;
        for g in self.given() {
            if !matches!(
                g.key,
                "name" | "max_memory_restart" | "kill_signal" | "kill_timeout" | "ready"
            ) {
                return Err(format!(
                    "error: {} does not apply to `{}`: procward observes it and does not start it",
                    g.flag, app.name
                ));
            }
            let apply = keys::find(g.key)
                .and_then(|def| def.apply)
                .expect("every app flag has a key definition");
            apply(&mut d, &g.value).map_err(|b| refused(&g, b))?;
        }
        if matches!(d.ready.source, ReadySource::NodeIpc | ReadySource::SdNotify) {
            return Err(format!(
                "error: --ready {} needs the app as procward's child; `{}` is observed: use tcp:PORT or http://HOST:PORT/PATH",
                d.ready.source, app.name
            ));
        }
        if let Some((name, _)) = d.name {
            app.name = name;
        }
        app.kill_signal = d.stop.kill_signal;
        app.kill_timeout = d.stop.kill_timeout;
        app.ready = d.ready.source;
        app.max_memory_restart = d.max_memory_restart;
        Ok(())
    }
}

impl AgentOpts {
    /// Overrides the agent settings with the options given, each read by
    /// its `procward:` setting's definition.
    pub fn apply(&self, agent: &mut AgentSettings) -> Result<(), String> {
        let given = [
            ("--sighup", "sighup", &self.sighup),
            ("--log-format", "log_format", &self.log_format),
            ("--log-level", "log_level", &self.log_level),
            ("--metrics", "metrics", &self.metrics),
            (
                "--sample-interval",
                "sample_interval",
                &self.sample_interval,
            ),
            ("--metrics-compat", "metrics_compat", &self.metrics_compat),
            ("--control", "control_socket", &self.control),
        ];
        for (flag, key, value) in given {
            let Some(value) = value else { continue };
            let g = Given {
                flag,
                key,
                value: text(value),
            };
            let def = agent::find(g.key).expect("every agent flag has a definition");
            (def.apply)(agent, &g.value).map_err(|b| refused(&g, b))?;
        }
        if self.exit_on_error {
            agent.exit_on_error = true;
        }
        Ok(())
    }
}

/// PM2's `sink.determineExecMode` (lib/Common.js) for a command line: a
/// node or bun command with `-i` runs in cluster mode.
pub fn exec_mode(cmd: &[OsString], instances: bool) -> ExecMode {
    let base = cmd
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if instances && matches!(base.as_str(), "node" | "nodejs" | "bun") {
        ExecMode::Cluster
    } else {
        ExecMode::Fork
    }
}

/// PM2 commands typed out of habit, with the procward way to do the same.
/// None of them runs a program: `procward -- start` does. A word leaves
/// this table when procward gains a command of that name.
const PM2_VERBS: &[(&[&str], &str)] = &[
    (
        &["delete", "del"],
        "procward keeps every app of its process file: `procward stop APP` stops one for good",
    ),
    (
        &["gracefulReload", "startOrReload"],
        "`procward reload [APP]` replaces each instance, one at a time, once the new one is ready",
    ),
    (
        &["startOrRestart"],
        "`procward restart [APP]` restarts an app of the running procward",
    ),
    (
        &["jlist", "prettylist"],
        "`procward status --json` prints the apps' state as JSON",
    ),
    (
        &["show", "info"],
        "`procward describe APP` shows an app's settings and restart history",
    ),
    (
        &["monit"],
        "`procward status` shows CPU and memory; `--metrics ADDR` serves them to Prometheus",
    ),
    (
        &["flush"],
        "procward does not empty log files: its rotation (`max_size`, `retain` under `procward:`) keeps them bounded",
    ),
    (
        &["sendSignal"],
        "`procward signal SIG APP` sends a signal to each instance of an app",
    ),
    (
        &["save", "resurrect", "startup", "unstartup"],
        "procward keeps no process list: start it from your image's ENTRYPOINT or a systemd unit",
    ),
];

/// The error for a PM2 command typed where procward expects the command to
/// run; `None` when `cmd` is not one.
pub fn pm2_verb(cmd: &[OsString]) -> Option<String> {
    let verb = cmd.first()?.to_str()?;
    let (_, how) = PM2_VERBS.iter().find(|(words, _)| words.contains(&verb))?;
    let mut m =
        format!("error: `{verb}` is a PM2 command; procward has no `{verb}`\n  hint: {how}");
    m.push_str(&format!(
        "\n  hint: to run a program named `{verb}`, write `procward -- {verb}`"
    ));
    Some(m)
}

/// `procward completions SHELL`: the script on stdout.
pub fn completions(shell: &str) -> i32 {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "procward",
        &mut std::io::stdout(),
    );
    0
}

/// `procward man`: the man page, in roff, on stdout.
pub fn man() -> i32 {
    use clap::CommandFactory;
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("procward: error: cannot write the man page: {e}");
            crate::exit::SETUP
        }
    }
}

/// How procward runs what `pm2 start TARGET` would.
pub fn way_to_run(target: &str) -> String {
    let ext = std::path::Path::new(target)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let file = target.rsplit('/').next().unwrap_or(target);
    if file.contains("ecosystem")
        || file.contains(".config.")
        || matches!(ext, "json" | "json5" | "yaml" | "yml")
    {
        return format!("procward run -c {target}");
    }
    match ext {
        "js" | "cjs" | "mjs" => format!("procward -- node {target}"),
        "ts" => format!("procward -- npx tsx {target}"),
        "py" => format!("procward -- python3 {target}"),
        "sh" => format!("procward -- bash {target}"),
        _ => format!("procward -- {target}"),
    }
}

/// Whether the command came after an explicit `--` in `args` (the whole
/// command line): the command is always its last words.
pub fn after_dashdash(args: &[OsString], cmd: &[OsString]) -> bool {
    args.len() > cmd.len() && args[args.len() - cmd.len() - 1] == "--"
}

/// Parses procward's command line. Unknown options are usage errors with
/// the procward way or a "did you mean", never the command to run.
pub fn parse(args: Vec<OsString>) -> Result<Cli, String> {
    if let Some(cli) = parse_plain(&args) {
        return Ok(cli);
    }
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok(cli),
        Err(e) if e.kind() == clap::error::ErrorKind::UnknownArgument => {
            let arg = match e.get(clap::error::ContextKind::InvalidArg) {
                Some(clap::error::ContextValue::String(s)) => s.clone(),
                _ => e.exit(),
            };
            let sub = args
                .get(1)
                .and_then(|a| a.to_str())
                .filter(|a| Command::has_subcommand(a));
            Err(unknown_option(&arg, sub))
        }
        Err(e) => e.exit(),
    }
}

/// The plain wrap, `procward [FLAGS] -- CMD [ARGS]...`, where each flag
/// takes no value and is given at most once, parsed without building
/// clap's definition of every option (a tenth of the page faults of
/// `procward --no-autorestart -- /bin/true`). Anything else is left to
/// clap; the result is the one clap gives (checked for every combination
/// of these flags in the tests).
fn parse_plain(args: &[OsString]) -> Option<Cli> {
    let dashdash = args.iter().position(|a| a == "--")?;
    if dashdash + 1 == args.len() {
        return None;
    }
    let (mut app, mut agent) = (AppOpts::default(), AgentOpts::default());
    for flag in args.get(1..dashdash)? {
        let set = match flag.to_str()? {
            "--no-autorestart" => &mut app.no_autorestart,
            "--wait-ready" => &mut app.wait_ready,
            "--strict-ready" => &mut app.strict_ready,
            "--shutdown-with-message" => &mut app.shutdown_with_message,
            "--time" => &mut app.time,
            "--merge-logs" => &mut app.merge_logs,
            "--log-prefix" => &mut app.log_prefix,
            "--disable-logs" => &mut app.disable_logs,
            "--exit-on-error" => &mut agent.exit_on_error,
            _ => return None,
        };
        if *set {
            return None;
        }
        *set = true;
    }
    Some(Cli {
        command: None,
        app,
        agent,
        cmd: args[dashdash + 1..].to_vec(),
    })
}

/// The error for an option procward (or its subcommand `sub`) does not
/// have.
fn unknown_option(arg: &str, sub: Option<&str>) -> String {
    let word = arg.split('=').next().unwrap_or(arg);
    let key = word.trim_start_matches('-').replace('-', "_");
    // PM2's own spellings of options that map to its keys.
    let key = match word {
        "-o" | "--output" => "out_file".to_string(),
        "-e" | "--error" => "error_file".to_string(),
        "-l" | "--log" => "log_file".to_string(),
        "--interpreter-args" => "node_args".to_string(),
        _ => key,
    };
    let respelled =
        similar_flag(word).filter(|f| *f == word.to_ascii_lowercase().replace('_', "-"));
    let hint = match (word, keys::find(&key)) {
        _ if respelled.is_some() => format!("did you mean `{}`?", respelled.unwrap_or_default()),
        ("-c" | "--config", _) => "a process file runs with `procward run -c FILE`".to_string(),
        ("--only" | "--env", _) => {
            format!("`{word}` picks from a process file: `procward run -c FILE {word} NAME`")
        }
        ("--no-daemon", _) => "procward always runs in the foreground: drop it".to_string(),
        (_, Some(def)) => match def.handling {
            Handling::Ignored(why) => format!("procward has no `{word}`: {why}"),
            _ => match def.name {
                "interpreter" | "node_args" => {
                    "write the interpreter and its options into the command: \
                     `procward -- node --max-old-space-size=512 app.js`"
                        .to_string()
                }
                name => format!(
                    "`{name}` has no option; set it in a process file and run `procward run -c FILE`"
                ),
            },
        },
        (_, None) => match similar_flag(word) {
            Some(f) => format!("did you mean `{f}`?"),
            None => "see `procward --help` for the options".to_string(),
        },
    };
    match sub {
        Some(sub) => format!("error: unknown option `{word}` for `procward {sub}`\n  hint: {hint}"),
        None => format!(
            "error: unknown option `{word}`\n  hint: {hint}\n  \
             the command to run comes after `--` (`procward [OPTIONS] -- CMD [ARGS]...`), \
             or is the first word that does not start with `-`"
        ),
    }
}

/// The option closest to `word`: the same with `_` for `-`, an option it
/// starts (`--max-memory`), or one a typo away.
fn similar_flag(word: &str) -> Option<String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").cloned();
    let mut longs: Vec<String> = cmd
        .get_arguments()
        .chain(run.iter().flat_map(|r| r.get_arguments()))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    longs.dedup();
    let typed = word.to_ascii_lowercase().replace('_', "-");
    if let Some(f) = longs.iter().find(|l| **l == typed) {
        return Some(f.clone());
    }
    if typed.len() >= 5 {
        if let Some(f) = longs.iter().find(|l| l.starts_with(&typed)) {
            return Some(f.clone());
        }
    }
    closest(&typed, longs.iter().map(String::as_str)).map(String::from)
}

/// The default app name for a command: its script's file name (`node
/// server.js` gives `server`, as PM2 names an app after its script). Inline
/// code (`python3 -c CODE`, `node -e CODE`) has no file: the app is named
/// after the interpreter, so no code (and no secret in it) becomes a
/// metric label or a log field.
pub fn default_name(cmd: &[OsString]) -> String {
    let stem = |p: &OsStr| {
        std::path::Path::new(p)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
    };
    let Some(program) = cmd.first() else {
        return "app".into();
    };
    let base = std::path::Path::new(program)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match interpreter(&base) {
        Some(kind) => match script_of(kind, &cmd[1..]) {
            Script::File(f) => stem(f),
            Script::Module(m) => Some(m.to_string_lossy().into_owned()),
            Script::Inline | Script::None => Some(base),
        },
        None => stem(program),
    };
    name.unwrap_or_else(|| "app".into())
}

/// Interpreters whose first argument names the script.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Interp {
    Node,
    Deno,
    Python,
    Ruby,
    Perl,
    Php,
}

fn interpreter(base: &str) -> Option<Interp> {
    Some(match base {
        "node" | "nodejs" | "bun" => Interp::Node,
        "deno" => Interp::Deno,
        b if b.starts_with("python") => Interp::Python,
        "ruby" => Interp::Ruby,
        "perl" => Interp::Perl,
        b if b.starts_with("php") => Interp::Php,
        _ => return None,
    })
}

/// What an interpreter's arguments run.
#[derive(Debug, PartialEq)]
enum Script<'a> {
    /// A script file.
    File(&'a OsStr),
    /// A module (`python3 -m http.server`).
    Module(&'a OsStr),
    /// Code given inline.
    Inline,
    /// Nothing: a REPL.
    None,
}

/// Finds the script among an interpreter's arguments, skipping its options
/// and their values.
fn script_of(kind: Interp, args: &[OsString]) -> Script<'_> {
    // Short options that run inline code, and those that take a value.
    let (inline, valued): (&str, &str) = match kind {
        Interp::Node => ("ep", "rC"),
        Interp::Deno => ("", ""),
        Interp::Python => ("c", "WXQ"),
        Interp::Ruby => ("e", "rIC"),
        Interp::Perl => ("eE", "IM"),
        Interp::Php => ("rRBE", "cdz"),
    };
    const LONG_INLINE: [&str; 2] = ["--eval", "--print"];
    const LONG_VALUED: [&str; 9] = [
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "--env-file",
        "--title",
        "--conditions",
        "--input-type",
        "--inspect-port",
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            return it.next().map_or(Script::None, |f| Script::File(f));
        }
        if let Some(long) = s.strip_prefix("--") {
            let name = format!("--{}", long.split('=').next().unwrap_or(""));
            if LONG_INLINE.contains(&name.as_str()) {
                return Script::Inline;
            }
            if LONG_VALUED.contains(&name.as_str()) && !long.contains('=') {
                it.next();
            }
            continue;
        }
        if let Some(short) = s.strip_prefix('-').filter(|x| !x.is_empty()) {
            for (i, c) in short.char_indices() {
                if inline.contains(c) {
                    return Script::Inline;
                }
                if kind == Interp::Python && c == 'm' {
                    let rest = &short[i + 1..];
                    return if rest.is_empty() {
                        it.next().map_or(Script::None, |m| Script::Module(m))
                    } else {
                        Script::Inline
                    };
                }
                if valued.contains(c) {
                    // The value is the rest of the word, or the next one.
                    if i + c.len_utf8() == short.len() {
                        it.next();
                    }
                    break;
                }
            }
            continue;
        }
        // `deno run app.ts`, `deno eval CODE`.
        if kind == Interp::Deno {
            match s.as_ref() {
                "run" | "serve" | "task" => continue,
                "eval" | "repl" => return Script::Inline,
                _ => {}
            }
        }
        return Script::File(a);
    }
    Script::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_wrap_parses_as_clap_does() {
        const FLAGS: [&str; 9] = [
            "--no-autorestart",
            "--wait-ready",
            "--strict-ready",
            "--shutdown-with-message",
            "--time",
            "--merge-logs",
            "--log-prefix",
            "--disable-logs",
            "--exit-on-error",
        ];
        let cmds: [&[&str]; 3] = [&["/bin/true"], &["run", "--", "-x"], &["--time", "a b"]];
        for set in 0..1u32 << FLAGS.len() {
            for cmd in cmds {
                let mut args = vec!["procward"];
                args.extend(
                    (0..FLAGS.len())
                        .filter(|i| set & 1 << i != 0)
                        .map(|i| FLAGS[i]),
                );
                args.push("--");
                args.extend(cmd);
                let args: Vec<OsString> = args.iter().map(OsString::from).collect();
                let plain = parse_plain(&args).expect("a plain wrap");
                let clap = Cli::try_parse_from(&args).unwrap();
                assert_eq!(format!("{plain:?}"), format!("{clap:?}"), "{args:?}");
            }
        }
        // Left to clap: values, repeats, other words before `--`, no CMD.
        for args in [
            &["procward", "--name", "x", "--", "a"][..],
            &["procward", "--time", "--time", "--", "a"],
            &["procward", "--time=true", "--", "a"],
            &["procward", "run", "--", "a"],
            &["procward", "--no-autorestart", "--"],
            &["procward", "/bin/true"],
        ] {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            assert!(parse_plain(&args).is_none(), "{args:?}");
        }
    }

    fn v(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn default_name_follows_the_script() {
        let name = |s: &[&str]| default_name(&v(s));
        assert_eq!(name(&["node", "--inspect", "server.js"]), "server");
        assert_eq!(
            name(&["node", "-r", "dotenv/config", "dist/main.js"]),
            "main"
        );
        assert_eq!(name(&["node", "--require=dotenv/config", "app.js"]), "app");
        assert_eq!(name(&["/usr/bin/python3", "-u", "worker.py"]), "worker");
        assert_eq!(name(&["python3", "-W", "ignore", "worker.py"]), "worker");
        assert_eq!(name(&["python3", "-m", "uvicorn", "app:api"]), "uvicorn");
        assert_eq!(name(&["deno", "run", "-A", "server.ts"]), "server");
        assert_eq!(name(&["/bin/sleep", "10"]), "sleep");
        assert_eq!(name(&["node"]), "node");
    }

    #[test]
    fn inline_code_never_names_the_app() {
        let name = |s: &[&str]| default_name(&v(s));
        assert_eq!(name(&["python3", "-c", "TOKEN='s3cr3t'; run()"]), "python3");
        assert_eq!(name(&["python3", "-uc", "TOKEN='s3cr3t'"]), "python3");
        assert_eq!(name(&["node", "-e", "const t='s3cr3t'"]), "node");
        assert_eq!(name(&["node", "--eval=const t='s3cr3t'"]), "node");
        assert_eq!(name(&["node", "-p", "process.env.X"]), "node");
        assert_eq!(name(&["bun", "--print", "1"]), "bun");
        assert_eq!(name(&["ruby", "-e", "puts 1"]), "ruby");
        assert_eq!(name(&["perl", "-E", "say 1"]), "perl");
        assert_eq!(name(&["php", "-r", "echo 1;"]), "php");
        assert_eq!(name(&["deno", "eval", "console.log(1)"]), "deno");
    }

    #[test]
    fn pm2_verbs_are_refused_with_the_procward_way() {
        let e = pm2_verb(&v(&["delete", "web"])).unwrap();
        assert!(e.contains("procward stop APP"), "{e}");
        assert!(e.contains("procward -- delete"), "{e}");
        for verb in ["flush", "delete", "monit", "jlist", "gracefulReload"] {
            assert!(pm2_verb(&v(&[verb])).is_some(), "{verb}");
        }
        // Now procward commands of their own.
        for verb in [
            "start", "stop", "reload", "restart", "status", "list", "describe",
        ] {
            assert!(pm2_verb(&v(&[verb])).is_none(), "{verb}");
            assert!(Command::has_subcommand(verb), "{verb}");
        }
        for program in ["node", "env", "ls", "kill", "sleep"] {
            assert!(pm2_verb(&v(&[program])).is_none(), "{program}");
        }
    }

    #[test]
    fn only_words_after_a_double_dash_are_marked_as_such() {
        assert!(after_dashdash(
            &v(&["procward", "--", "start"]),
            &v(&["start"])
        ));
        assert!(!after_dashdash(&v(&["procward", "start"]), &v(&["start"])));
        assert!(after_dashdash(
            &v(&["procward", "-i", "2", "--", "a", "b"]),
            &v(&["a", "b"])
        ));
    }

    #[test]
    fn unknown_options_suggest_the_right_one() {
        assert_eq!(
            similar_flag("--max-memory").unwrap(),
            "--max-memory-restart"
        );
        assert_eq!(similar_flag("--wait_ready").unwrap(), "--wait-ready");
        assert_eq!(similar_flag("--kill-timout").unwrap(), "--kill-timeout");
        let e = unknown_option("--namespace", None);
        assert!(e.contains("procward has no `--namespace`"), "{e}");
        let e = unknown_option("-c", None);
        assert!(e.contains("procward run -c FILE"), "{e}");
    }

    #[test]
    fn watch_takes_no_value_or_paths_as_pm2_spells_it() {
        let watch = |args: &[&str]| {
            let mut a = v(&["procward"]);
            a.extend(v(args));
            parse(a).unwrap().app.watch
        };
        assert_eq!(watch(&["--watch", "--", "node", "a.js"]), Some(vec![]));
        assert_eq!(
            watch(&["--watch", "src,lib", "--", "node", "a.js"]),
            Some(vec!["src".to_string(), "lib".to_string()])
        );
        assert_eq!(
            watch(&["--watch=src", "--watch", "lib", "--", "node", "a.js"]),
            Some(vec!["src".to_string(), "lib".to_string()])
        );
        assert_eq!(watch(&["--", "node", "a.js"]), None);
        let cli = parse(v(&["procward", "--cron", "0 3 * * *", "--", "node"])).unwrap();
        assert_eq!(cli.app.cron_restart.as_deref(), Some("0 3 * * *"));
    }

    #[test]
    fn ready_sources_parse() {
        assert_eq!(parse_ready("tcp:8080").unwrap(), ReadySource::Tcp(8080));
        assert!(parse_ready("tcp:http").is_err());
        assert!(parse_ready("smoke-signals").is_err());
    }
}
