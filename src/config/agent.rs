//! Settings of the agent itself, as opposed to the apps it runs: one
//! definition per setting, read the same way from a process file's
//! `procward:` section and from its command-line flag (`sample_interval`
//! and `--sample-interval`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::keys::{self, Bad};
use super::raw::{Node, Value};

/// The port procward serves `/metrics` on in every example, chart and
/// image. Outside 9100-9999, the range the Prometheus project hands out to
/// exporters (its "Default port allocations" wiki page, now full), so it
/// collides with no exporter a host may already run (9100 is
/// node_exporter's).
pub const DEFAULT_METRICS_PORT: u16 = 9079;

/// What SIGHUP to procward does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SighupAction {
    /// Reload every app (one instance at a time).
    Reload,
    /// Forward SIGHUP to the apps' process groups like any other signal.
    Forward,
}

/// Format of procward's own log lines (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Extra metric names to export for compatibility with other tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsCompat {
    /// The names of the common PM2 Prometheus exporters (`pm2_up`, ...).
    Pm2,
}

/// The agent's settings, after CLI flags have overridden the process file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentSettings {
    /// What SIGHUP does.
    pub sighup: SighupAction,
    /// Log line format.
    pub log_format: LogFormat,
    /// Most verbose level logged.
    pub log_level: String,
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`,
    /// `/status`); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// How often each instance's process tree is sampled.
    #[serde(skip)]
    pub sample_interval: Duration,
    /// Extra compatibility metric names.
    pub metrics_compat: Option<MetricsCompat>,
    /// Path of the control socket.
    pub control_socket: Option<PathBuf>,
    /// Stop every app and exit once one app is errored; by default the
    /// others keep running (as PM2 does).
    pub exit_on_error: bool,
    /// pm2-logrotate's settings for the apps' log files; shown only when
    /// set.
    #[serde(skip_serializing_if = "super::logs::RotateDefaults::is_default")]
    pub log_rotate: super::logs::RotateDefaults,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            sighup: SighupAction::Reload,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            metrics_addr: None,
            sample_interval: Duration::from_secs(1),
            metrics_compat: None,
            control_socket: None,
            exit_on_error: false,
            log_rotate: super::logs::RotateDefaults::default(),
        }
    }
}

/// One agent setting: its name in the `procward:` section (the flag is the
/// same with dashes), and how its value is read.
pub struct AgentKey {
    /// The name (`sample_interval`; the flag is `--sample-interval`).
    pub name: &'static str,
    /// Reads the value into the settings.
    pub apply: fn(&mut AgentSettings, &Node) -> Result<(), Bad>,
}

/// Every agent setting.
pub const AGENT_KEYS: &[AgentKey] = &[
    AgentKey {
        name: "metrics",
        apply: metrics,
    },
    AgentKey {
        name: "log_format",
        apply: log_format,
    },
    AgentKey {
        name: "log_level",
        apply: log_level,
    },
    AgentKey {
        name: "sighup",
        apply: sighup,
    },
    AgentKey {
        name: "sample_interval",
        apply: sample_interval,
    },
    AgentKey {
        name: "metrics_compat",
        apply: metrics_compat,
    },
    AgentKey {
        name: "control_socket",
        apply: control_socket,
    },
    AgentKey {
        name: "exit_on_error",
        apply: exit_on_error,
    },
    // pm2-logrotate's settings, by its names, for every app's log files.
    AgentKey {
        name: "max_size",
        apply: max_size,
    },
    AgentKey {
        name: "retain",
        apply: retain,
    },
    AgentKey {
        name: "compress",
        apply: compress,
    },
];

fn max_size(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    a.log_rotate.max_size = Some(keys::size("max_size", v)?);
    Ok(())
}

fn retain(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    a.log_rotate.retain = keys::retain("retain", v)?;
    Ok(())
}

fn compress(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    match v.value {
        Value::Bool(b) => {
            a.log_rotate.compress = b;
            Ok(())
        }
        _ => Err(expected("`compress` to be true or false".into())),
    }
}

/// The definition of an agent setting.
pub fn find(name: &str) -> Option<&'static AgentKey> {
    AGENT_KEYS.iter().find(|k| k.name == name)
}

fn expected(what: String) -> Bad {
    Bad {
        expected: what,
        hint: None,
    }
}

/// Parses a listen address as Prometheus exporters take one:
/// `0.0.0.0:9079`, `[::1]:9079`, `:9079` (every IPv4 address) or
/// `localhost:9079` (a name, resolved once, first address).
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let wrong = || {
        format!(
            "an address such as 0.0.0.0:{p}, :{p} or localhost:{p}",
            p = DEFAULT_METRICS_PORT
        )
    };
    if let Some(port) = t.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| wrong())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(addr) = t.parse() {
        return Ok(addr);
    }
    let (host, port) = t.rsplit_once(':').ok_or_else(wrong)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(wrong());
    }
    // A name: the first address it resolves to (localhost gives 127.0.0.1
    // or ::1, as /etc/hosts says).
    (host, port.parse::<u16>().map_err(|_| wrong())?)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(wrong)
}

fn metrics(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    let text = v.js_string().unwrap_or_default();
    a.metrics_addr =
        Some(parse_metrics_addr(&text).map_err(|e| expected(format!("`metrics` to be {e}")))?);
    Ok(())
}

fn log_format(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    a.log_format = match v.js_string().as_deref() {
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        _ => return Err(expected("`log_format` to be text or json".into())),
    };
    Ok(())
}

fn log_level(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    match v.js_string() {
        Some(s) if matches!(s.as_str(), "error" | "warn" | "info" | "debug" | "trace") => {
            a.log_level = s;
            Ok(())
        }
        _ => Err(expected(
            "`log_level` to be error, warn, info, debug or trace".into(),
        )),
    }
}

fn sighup(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    a.sighup = match v.js_string().as_deref() {
        Some("reload") => SighupAction::Reload,
        Some("forward") => SighupAction::Forward,
        _ => return Err(expected("`sighup` to be reload or forward".into())),
    };
    Ok(())
}

fn sample_interval(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    match keys::duration("sample_interval", v) {
        // A zero period would make the sampler spin (tokio's interval
        // refuses it outright).
        Ok(d) if !d.is_zero() => {
            a.sample_interval = d;
            Ok(())
        }
        _ => Err(expected(
            "`sample_interval` to be a duration above zero (1000, 1s)".into(),
        )),
    }
}

fn metrics_compat(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    match v.js_string().as_deref() {
        Some("pm2") => {
            a.metrics_compat = Some(MetricsCompat::Pm2);
            Ok(())
        }
        _ => Err(expected("`metrics_compat` to be pm2".into())),
    }
}

fn control_socket(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    match &v.value {
        Value::Str(s) if !s.is_empty() => {
            a.control_socket = Some(PathBuf::from(s));
            Ok(())
        }
        _ => Err(expected("`control_socket` to be a path".into())),
    }
}

fn exit_on_error(a: &mut AgentSettings, v: &Node) -> Result<(), Bad> {
    match v.value {
        Value::Bool(b) => {
            a.exit_on_error = b;
            Ok(())
        }
        _ => Err(expected("`exit_on_error` to be true or false".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addresses_as_exporters_take_them() {
        let p = |s: &str| parse_metrics_addr(s).map(|a| a.to_string());
        assert_eq!(p(":9079").unwrap(), "0.0.0.0:9079");
        assert_eq!(p("0.0.0.0:9079").unwrap(), "0.0.0.0:9079");
        assert_eq!(p("[::1]:9079").unwrap(), "[::1]:9079");
        let local = parse_metrics_addr("localhost:9079").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9079, "{local}");
        assert!(p("nowhere").is_err());
        assert!(p(":http").is_err());
        assert!(p("localhost:99999").is_err());
    }

    #[test]
    fn a_zero_sample_interval_is_refused() {
        let mut a = AgentSettings::default();
        let n = |s: &str| Node::new(Value::Str(s.into()), Default::default());
        assert!(sample_interval(&mut a, &n("0")).is_err());
        assert!(sample_interval(&mut a, &n("0s")).is_err());
        assert!(sample_interval(&mut a, &n("250ms")).is_ok());
        assert_eq!(a.sample_interval, Duration::from_millis(250));
    }

    #[test]
    fn log_levels_are_checked() {
        let mut a = AgentSettings::default();
        let n = |s: &str| Node::new(Value::Str(s.into()), Default::default());
        assert!(log_level(&mut a, &n("debug")).is_ok());
        assert!(log_level(&mut a, &n("verbose")).is_err());
        assert!(log_level(&mut a, &n("DEBUG")).is_err());
    }
}
