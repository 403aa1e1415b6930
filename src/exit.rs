//! Exit statuses: how an app ended, and the code procward exits with.
//!
//! | procward exits with | when |
//! |---|---|
//! | the app's exit code | the app stopped for good (no restart, or procward was told to stop) |
//! | 128 + N | the app was killed by signal N (what sh and bash report) |
//! | 127 | the command was not found |
//! | 126 | the command was found but could not be executed |
//! | the app's last status, or 1 if that was 0 | the app is errored (too many unstable restarts) |
//! | 2 | procward's own usage or configuration error |
//! | 111 | procward could not set itself up (a system call failed) |

use std::fmt;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit(code).
    Code(i32),
    /// It was killed by a signal.
    Signal {
        /// The signal number.
        signo: i32,
        /// Whether it left a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// The status as a shell reports it: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal { signo, .. } => 128 + signo,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal { signo, core_dumped } => {
                write!(f, "killed by {}", crate::init::signals::name(*signo))?;
                if *core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Everything stopped cleanly.
pub const SUCCESS: i32 = 0;
/// Usage or configuration error.
pub const USAGE: i32 = 2;
/// A system call procward needs at start-up failed.
pub const SETUP: i32 = 111;
/// The command was not found (tini, sh).
pub const NOT_FOUND: i32 = 127;
/// The command could not be executed (tini, sh).
pub const NOT_EXECUTABLE: i32 = 126;
