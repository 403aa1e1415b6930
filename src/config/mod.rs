//! Configuration: the validated app model, the agent's settings, the
//! parsers for their units, and process files (raw tree with positions,
//! then validated apps).

pub mod agent;
pub mod app;
pub mod commands;
pub mod cpus;
pub mod error;
pub mod js;
pub mod json;
pub mod keys;
pub mod load;
pub mod logs;
pub mod raw;
pub mod units;
pub mod users;
pub mod yaml;

pub use agent::{AgentSettings, LogFormat, MetricsCompat, SighupAction};
pub use app::{AppSpec, ExecMode, ReadySource, RestartPolicy};
