//! Talking to the service manager: the one place that sends sd_notify
//! messages (sd_notify(3)). Nothing is sent unless `NOTIFY_SOCKET` is set,
//! i.e. procward runs as a systemd `Type=notify` service (or under anything
//! speaking the same protocol). The `sd-notify` crate formats the
//! assignments and reads `WATCHDOG_USEC`; they are sent from one socket kept
//! open, to a path or, when `NOTIFY_SOCKET` starts with `@`, to an abstract
//! socket (sd_notify(3) allows both; `vsock:` addresses are not supported).
//!
//! Sent, each when it becomes true, several in one datagram when together:
//! - `READY=1`: once every instance of every app has been ready at least
//!   once (after start-up), and again when a reload has finished;
//! - `STATUS=...`: a one-line summary (`web 4/4 ready, 2 restarts`; an app
//!   that gave up adds `, errored`) whenever
//!   it changes;
//! - `STOPPING=1`: when procward starts stopping its apps;
//! - `RELOADING=1` with `MONOTONIC_USEC=...`: when a reload begins (SIGHUP,
//!   `systemctl reload` through `ExecReload=/bin/kill -HUP $MAINPID`); it is
//!   closed by `READY=1` when every instance has been restarted;
//! - `EXTEND_TIMEOUT_USEC=...`: before the first `READY=1`, whenever an
//!   instance starts whose listen_timeout ends later than any announced so
//!   far: the time until then plus a second, so a slow but progressing start
//!   is not cut short by `TimeoutStartSec=`;
//! - `WATCHDOG=1`: every half `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset
//!   or names procward), from a timer in the supervisor loop, so a loop that
//!   hangs stops pinging and systemd's watchdog acts.
//!
//! Not sent: `MAINPID=` (procward is the main process), `ERRNO=`/`BUSERROR=`
//! (the exit status says it), `FDSTORE=`/`FDNAME=` (no descriptor store),
//! `WATCHDOG=trigger` and `WATCHDOG_USEC=` (the interval is systemd's).
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are never passed to
//! the apps (`spawn::SCRUBBED_ENV`); each gets its own socket instead
//! (`ready::sd_notify`).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{debug, warn};

/// What the supervisor reports after each event.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Every instance of every app has been ready at least once.
    pub all_ready_once: bool,
    /// No reload is queued or under way.
    pub reload_done: bool,
    /// The one-line summary.
    pub status: String,
    /// The latest listen_timeout of the instances now starting.
    pub starting_until: Option<Instant>,
}

/// procward's side of the protocol.
#[derive(Debug)]
pub struct ServiceManager {
    /// Where to send, and the socket to send from; `None` outside systemd.
    target: Option<(SocketAddr, UnixDatagram)>,
    watchdog: Option<Duration>,
    ready_sent: bool,
    reloading: bool,
    stopping: bool,
    status: String,
    extended_to: Option<Instant>,
    failures: u64,
}

/// `NOTIFY_SOCKET` when a service manager set it (not empty).
pub fn socket_from_env() -> Option<std::ffi::OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let target = socket_from_env().and_then(|s| match address(s.as_bytes()).and_then(|a| Ok((a, UnixDatagram::unbound()?))) {
                Ok(t) => Some(t),
                Err(e) => {
                    warn!(error = %e, socket = %s.to_string_lossy(),
                          "NOTIFY_SOCKET is unusable: the service manager will not hear from procward");
                    None
                }
            });
        ServiceManager {
            watchdog: target.as_ref().and_then(|_| sd_notify::watchdog_enabled()),
            target,
            ready_sent: false,
            reloading: false,
            stopping: false,
            status: String::new(),
            extended_to: None,
            failures: 0,
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as
    /// sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)))
    }

    /// `WATCHDOG=1`.
    pub fn ping(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1`, once.
    pub fn stopping(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.send(&[NotifyState::Stopping]);
        }
    }

    /// `RELOADING=1` and `MONOTONIC_USEC`, once per reload.
    pub fn reloading(&mut self) {
        if self.reloading || self.stopping {
            return;
        }
        self.reloading = true;
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Whether there is a service manager to tell anything (NOTIFY_SOCKET
    /// was set); without one, nothing needs to be worked out for it.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends what changed since the last call.
    pub fn update(&mut self, view: &View, now: Instant) {
        let mut states = Vec::new();
        if self.stopping {
            // Only the status from here on.
        } else if !self.ready_sent && view.all_ready_once {
            self.ready_sent = true;
            self.reloading = false;
            states.push(NotifyState::Ready);
        } else if self.reloading && view.reload_done && self.ready_sent {
            self.reloading = false;
            states.push(NotifyState::Ready);
        } else if !self.ready_sent {
            if let Some(until) = view
                .starting_until
                .filter(|u| self.extended_to.is_none_or(|e| *u > e))
            {
                self.extended_to = Some(until);
                let usec =
                    (until.saturating_duration_since(now) + Duration::from_secs(1)).as_micros();
                states.push(NotifyState::ExtendTimeoutUsec(
                    usec.min(u32::MAX as u128) as u32
                ));
            }
        }
        if view.status != self.status {
            states.push(NotifyState::Status(&view.status));
        }
        if !states.is_empty() {
            let text = lines(&states);
            self.status.clone_from(&view.status);
            self.send_text(&text);
        }
    }

    fn send(&mut self, states: &[NotifyState]) {
        if self.target.is_some() {
            self.send_text(&lines(states));
        }
    }

    fn send_text(&mut self, text: &str) {
        let Some((addr, sock)) = &self.target else {
            return;
        };
        match sock.send_to_addr(text.as_bytes(), addr) {
            Ok(_) => debug!(sent = text.trim_end(), "notified the service manager"),
            Err(e) => {
                self.failures += 1;
                // A failing socket fails every time: say so once, then quietly.
                if self.failures == 1 {
                    warn!(error = %e, sent = text.trim_end(),
                          "cannot notify the service manager (NOTIFY_SOCKET)");
                }
            }
        }
    }
}

/// One assignment per line, as sd_notify(3) sends them.
fn lines(states: &[NotifyState]) -> String {
    states.iter().map(|s| format!("{s}\n")).collect()
}

/// `NOTIFY_SOCKET` as an address: a path, or `@NAME` for an abstract socket.
fn address(s: &[u8]) -> io::Result<SocketAddr> {
    match s.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_addresses() {
        assert_eq!(
            address(b"/run/systemd/notify").unwrap().as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert_eq!(
            address(b"@sd-notify").unwrap().as_abstract_name(),
            Some(&b"sd-notify"[..])
        );
    }

    #[test]
    fn assignments_are_lines() {
        assert_eq!(
            lines(&[NotifyState::Ready, NotifyState::Status("a 1/1 ready")]),
            "READY=1\nSTATUS=a 1/1 ready\n"
        );
    }
}
