//! Configuration: the validated app model, the agent's settings and the
//! parsers for their units.

pub mod agent;
pub mod app;
pub mod units;

pub use agent::{AgentSettings, LogFormat, MetricsCompat, SighupAction};
pub use app::{AppSpec, ReadySource, RestartPolicy};
