//! Settings of the agent itself, as opposed to the apps it runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
        }
    }
}
