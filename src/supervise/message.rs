//! Messages other tasks send to the supervisor, the one owner of state.
//!
//! A message about a process names its pid; one that arrives after that
//! process has gone (a late readiness line, say) is ignored.

/// A message for the supervisor.
#[derive(Debug)]
pub enum Message {
    /// The process `pid` said it is ready.
    Ready {
        /// The process.
        pid: i32,
    },
    /// A custom metric the app reported (`@pm2/io` `axm:monitor`).
    AppMetric {
        /// The process.
        pid: i32,
        /// The metric's name as the app gave it (not yet sanitized).
        name: String,
        /// Its value.
        value: f64,
    },
    /// A Node cluster message from the worker `pid`.
    Cluster {
        /// The process.
        pid: i32,
        /// What it asked or said.
        request: crate::ready::cluster::Request,
    },
    /// One sample of every instance's process tree, keyed by root pid.
    Samples(Vec<crate::resources::TreeUsage>),
    /// Something else the process `pid` said (sd_notify, PM2 messages), or
    /// input from it that was dropped.
    App {
        /// The process.
        pid: i32,
        /// What it said.
        event: crate::ready::Event,
    },
}
