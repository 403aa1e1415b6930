//! Command-line definitions.
//!
//! `procward [OPTIONS] -- CMD [ARGS...]` supervises one command; `procward
//! run -c FILE` runs a PM2 process file. Option names follow PM2's own CLI.
//! Every option is optional here so that, with a process file, only the
//! options actually given override the file.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::config::units::{parse_duration, parse_signal, parse_size};
use crate::config::{AgentSettings, AppSpec, LogFormat, MetricsCompat, ReadySource, SighupAction};

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
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
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
}

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
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        matches!(name, "run" | "check" | "convert")
    }
}

impl clap::FromArgMatches for Command {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        match m.subcommand() {
            Some(("run", sub)) => Ok(Command::Run(RunArgs::from_arg_matches(sub)?)),
            Some(("check", sub)) => Ok(Command::Check(CheckArgs::from_arg_matches(sub)?)),
            Some(("convert", sub)) => Ok(Command::Convert(ConvertArgs::from_arg_matches(sub)?)),
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

/// Per-app options (PM2 CLI names).
#[derive(Debug, Args, Default, Clone)]
pub struct AppOpts {
    /// App name, shown in logs and metrics [default: the command's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Do not restart the app when it exits: exit with its status (as tini).
    #[arg(long)]
    pub no_autorestart: bool,
    /// Consecutive unstable restarts before the app is errored [default: 16].
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// A run shorter than this is unstable [default: 1000ms].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub min_uptime: Option<Duration>,
    /// Wait this long before each restart [default: 0].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub restart_delay: Option<Duration>,
    /// First delay of an exponential backoff (x1.5 per restart, capped at 15s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub exp_backoff_restart_delay: Option<Duration>,
    /// Exit codes that end supervision without a restart.
    #[arg(long, value_name = "CODE", num_args = 1.., value_delimiter = ',', allow_negative_numbers = true)]
    pub stop_exit_codes: Option<Vec<i32>>,
    /// After the stop signal, wait this long before SIGKILL [default: 1600ms].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub kill_timeout: Option<Duration>,
    /// Signal that asks the app to stop [default: SIGINT, as PM2].
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub kill_signal: Option<Signal>,
    /// Number of instances [default: 1].
    #[arg(short = 'i', long, value_name = "N")]
    pub instances: Option<u32>,
    /// Wait for `process.send('ready')` (PM2's --wait-ready).
    #[arg(long)]
    pub wait_ready: bool,
    /// Readiness source: started, ipc, notify, tcp:PORT, http://HOST:PORT/PATH.
    #[arg(long, value_name = "SOURCE", value_parser = parse_ready)]
    pub ready: Option<ReadySource>,
    /// Time allowed to become ready [default: 3000ms].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub listen_timeout: Option<Duration>,
    /// Treat hitting --listen-timeout as a failed start (PM2 treats it as ready).
    #[arg(long)]
    pub strict_ready: bool,
    /// Send "shutdown" on the IPC channel instead of the kill signal.
    #[arg(long)]
    pub shutdown_with_message: bool,
    /// Restart gracefully when the app's memory exceeds this (500M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory_restart: Option<u64>,
    /// Restart when the app's own sd_notify WATCHDOG=1 pings stop this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub watchdog: Option<Duration>,
}

/// Agent options.
#[derive(Debug, Args, Default, Clone)]
pub struct AgentOpts {
    /// What SIGHUP does [default: reload].
    #[arg(long, value_enum, value_name = "ACTION")]
    pub sighup: Option<SighupAction>,
    /// Format of procward's own log lines [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve /metrics, /healthz, /readyz and /status on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// How often each instance's processes are sampled [default: 1s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub sample_interval: Option<Duration>,
    /// Also export the metric names of another tool.
    #[arg(long, value_enum, value_name = "TOOL")]
    pub metrics_compat: Option<MetricsCompat>,
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

impl AppOpts {
    /// Overrides the settings of `app` with the options given.
    pub fn apply(&self, app: &mut AppSpec) {
        if let Some(n) = &self.name {
            app.name = n.clone();
        }
        if self.no_autorestart {
            app.restart.autorestart = false;
        }
        if let Some(n) = self.max_restarts {
            app.restart.max_restarts = n;
        }
        if let Some(d) = self.min_uptime {
            app.restart.min_uptime = d;
        }
        if let Some(d) = self.restart_delay {
            app.restart.restart_delay = d;
        }
        if let Some(d) = self.exp_backoff_restart_delay {
            app.restart.exp_backoff_restart_delay = Some(d);
        }
        if let Some(c) = &self.stop_exit_codes {
            app.restart.stop_exit_codes = c.clone();
        }
        if let Some(d) = self.kill_timeout {
            app.stop.kill_timeout = d;
        }
        if let Some(s) = self.kill_signal {
            app.stop.kill_signal = s;
        }
        if let Some(n) = self.instances {
            app.instances = n.max(1);
        }
        if self.wait_ready {
            app.ready.source = ReadySource::NodeIpc;
        }
        if let Some(r) = &self.ready {
            app.ready.source = r.clone();
        }
        if let Some(d) = self.listen_timeout {
            app.ready.listen_timeout = d;
        }
        if self.strict_ready {
            app.ready.strict = true;
        }
        if self.shutdown_with_message {
            app.stop.shutdown_with_message = true;
        }
        if let Some(m) = self.max_memory_restart {
            app.max_memory_restart = Some(m);
        }
        if let Some(w) = self.watchdog {
            app.watchdog = Some(w);
        }
    }
}

impl AgentOpts {
    /// Overrides the agent settings with the options given.
    pub fn apply(&self, agent: &mut AgentSettings) {
        if let Some(s) = self.sighup {
            agent.sighup = s;
        }
        if let Some(f) = self.log_format {
            agent.log_format = f;
        }
        if let Some(l) = &self.log_level {
            agent.log_level = l.clone();
        }
        if let Some(a) = self.metrics {
            agent.metrics_addr = Some(a);
        }
        if let Some(i) = self.sample_interval {
            agent.sample_interval = i;
        }
        if let Some(c) = self.metrics_compat {
            agent.metrics_compat = Some(c);
        }
    }
}

/// The default app name for a command: its file name (`node server.js` gives
/// `server`, as PM2 names an app after its script).
pub fn default_name(cmd: &[OsString]) -> String {
    let script = cmd
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .filter(|_| is_interpreter(&cmd[0]))
        .unwrap_or(&cmd[0]);
    let path = std::path::Path::new(script);
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "app".into())
}

fn is_interpreter(program: &OsString) -> bool {
    let base = std::path::Path::new(program)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    matches!(
        base.as_str(),
        "node" | "nodejs" | "bun" | "deno" | "python" | "python3" | "ruby" | "perl" | "php"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_follows_the_script() {
        let v = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            default_name(&v(&["node", "--inspect", "server.js"])),
            "server"
        );
        assert_eq!(default_name(&v(&["/bin/sleep", "10"])), "sleep");
    }

    #[test]
    fn ready_sources_parse() {
        assert_eq!(parse_ready("tcp:8080").unwrap(), ReadySource::Tcp(8080));
        assert!(parse_ready("tcp:http").is_err());
        assert!(parse_ready("smoke-signals").is_err());
    }
}
