//! The sockets the supervisor holds for each app, and its part as the
//! primary of Node cluster workers (`ready::cluster` has the protocol).
//!
//! An app's sockets live as long as the app runs: its `listen` sockets are
//! bound before its first instance starts, a cluster worker's socket is made
//! at the first `queryServer` for its key and then handed to every worker
//! that asks for the same key, including every replacement after a
//! restart. They close when every instance of the app has stopped for good
//! ([`Supervisor::release_sockets`]). A rolling reload can therefore start
//! a replacement while the old process still accepts: both get the same
//! socket.
//!
//! A socket goes to a worker as Node's `child_process` sends a handle
//! (`lib/internal/child_process.js`, `target._send` and the
//! `internalMessage` listener of `setupChannel`): stop and wait. Once a
//! message with a descriptor is written, every later message to that worker
//! waits until it answers `NODE_HANDLE_ACK`. `NODE_HANDLE_NACK` means the
//! descriptor did not arrive (the kernel dropped it, `MSG_CTRUNC`, when the
//! worker had no free descriptor): the message and its descriptor are sent
//! again, at most [`MAX_HANDLE_RETRANSMISSIONS`] times, after which Node
//! gives up with a `SentHandleNotReceivedWarning` and so does procward,
//! with a warning.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use tracing::{debug, info, warn};

use super::{Slot, Supervisor};
use crate::config::{ExecMode, ReadySource};
use crate::ready::cluster::{self, Act, AddressType, Query, Request};
use crate::ready::FIRST_FD;
use crate::sockets::{self, Held, TcpOptions};

/// The sockets of one app.
#[derive(Debug, Default)]
pub struct AppSockets {
    /// `listen` sockets, passed as `LISTEN_FDS` in this order.
    pub listen: Vec<Held>,
    /// Sockets made for cluster workers, by Node's key.
    pub cluster: HashMap<String, Held>,
    /// Workers told to disconnect, with the signal that follows once they
    /// have (Node's `worker.kill()`).
    pub disconnecting: HashMap<i32, i32>,
    /// What waits for each worker's answer to a socket sent to it.
    outbox: HashMap<i32, Outbox>,
}

/// How often a socket a worker did not receive is sent again
/// (`MAX_HANDLE_RETRANSMISSIONS` in `lib/internal/child_process.js`).
pub const MAX_HANDLE_RETRANSMISSIONS: u32 = 3;

/// A message to a worker, with the socket it carries.
#[derive(Debug)]
struct Message {
    value: serde_json::Value,
    /// procward's own copy of the socket, kept until the worker has it.
    fd: Option<OwnedFd>,
}

/// Messages to one worker while a socket sent to it is not yet
/// acknowledged (Node's `_pendingMessage` and `_handleQueue`).
#[derive(Debug)]
struct Outbox {
    /// The message whose socket awaits `NODE_HANDLE_ACK`.
    pending: Message,
    /// Times it was sent again after a `NODE_HANDLE_NACK`.
    retransmissions: u32,
    /// Later messages, in order.
    queue: VecDeque<Message>,
}

impl AppSockets {
    /// Whether any socket is held.
    pub fn is_empty(&self) -> bool {
        self.listen.is_empty() && self.cluster.is_empty()
    }
}

impl Supervisor {
    /// Takes the `listen` sockets bound for each app (in app order).
    pub fn hold_sockets(&mut self, listen: Vec<Vec<Held>>) {
        for (a, held) in listen.into_iter().enumerate() {
            if let Some(s) = self.sockets.get_mut(a) {
                s.listen = held;
            }
        }
    }

    /// Binds app `a`'s `listen` sockets again if they were closed when it
    /// stopped for good and it is starting again (`procward start`, a cron
    /// or watch trigger, a scale-up); an address now taken is an error the
    /// spawn retries.
    pub(super) fn rebind_listen(&mut self, a: usize) -> Result<(), String> {
        let spec = &self.apps[a].spec;
        if spec.listen.is_empty() || !self.sockets[a].listen.is_empty() {
            return Ok(());
        }
        let held = sockets::bind_app(&spec.name, &spec.listen, &mut Default::default())?;
        info!(app = %spec.name, "listening again on the app's sockets");
        self.sockets[a].listen = held;
        Ok(())
    }

    /// Whether an instance of app `a` is ready only once its cluster
    /// worker listens (PM2's cluster mode without `wait_ready`).
    pub(super) fn ready_on_listening(&self, a: usize) -> bool {
        let spec = &self.apps[a].spec;
        spec.exec_mode == ExecMode::Cluster && spec.ready.source == ReadySource::Started
    }

    /// Whether procward holds (or will make) the sockets app `a` listens
    /// on: a cluster-mode app, or one with `listen` sockets. Its reload
    /// overlaps the old and the new process.
    pub(super) fn holds_sockets(&self, a: usize) -> bool {
        self.apps[a].spec.exec_mode == ExecMode::Cluster || !self.sockets[a].listen.is_empty()
    }

    /// Asks the old worker `pid` of a reload to stop as Node's primary
    /// does (`worker.kill()` in `lib/internal/cluster/primary.js`): the
    /// `disconnect` message, on which the worker closes its servers, lets
    /// its open connections finish and closes the IPC channel; then
    /// `signo`. False when the message cannot be sent.
    pub(super) fn cluster_disconnect(&mut self, a: usize, pid: i32, signo: i32) -> bool {
        let msg = serde_json::json!({"cmd": "NODE_CLUSTER", "act": "disconnect"});
        if !self.send_to_worker(a, pid, msg, None) {
            return false;
        }
        debug!(app = %self.apps[a].spec.name, pid, "told the old cluster worker to disconnect");
        self.sockets[a].disconnecting.insert(pid, signo);
        true
    }

    /// Process `pid` closed its IPC channel: a worker told to disconnect
    /// gets its stop signal now.
    pub(super) fn on_disconnected(&mut self, pid: i32) {
        let running = self.by_pid.contains_key(&pid);
        for held in &mut self.sockets {
            held.outbox.remove(&pid);
            match held.disconnecting.remove(&pid) {
                Some(signo) if running => super::signal_logged(pid, signo),
                _ => {}
            }
        }
    }

    /// Process `pid` is gone: nothing more is sent to it.
    pub(super) fn forget_worker(&mut self, pid: i32) {
        for held in &mut self.sockets {
            held.outbox.remove(&pid);
            held.disconnecting.remove(&pid);
        }
    }

    /// Sends `value` to worker `pid` of app `a`, with socket `fd` attached
    /// if given, or queues it behind a socket not yet acknowledged. False
    /// when it cannot be written.
    fn send_to_worker(
        &mut self,
        a: usize,
        pid: i32,
        value: serde_json::Value,
        fd: Option<OwnedFd>,
    ) -> bool {
        let msg = Message { value, fd };
        match self.sockets[a].outbox.get_mut(&pid) {
            Some(out) => {
                out.queue.push_back(msg);
                true
            }
            None => self.write_to_worker(a, pid, msg),
        }
    }

    /// Writes `msg` now; one carrying a socket waits for its answer.
    fn write_to_worker(&mut self, a: usize, pid: i32, msg: Message) -> bool {
        let Some(c) = self.ready_channels(pid) else {
            return false;
        };
        let Some(fd) = &msg.fd else {
            return c.send_ipc(&msg.value);
        };
        if let Err(e) = c.send_ipc_fd(&msg.value, fd.as_raw_fd()) {
            warn!(app = %self.apps[a].spec.name, pid, error = %e,
                  "cannot send the socket to the cluster worker");
            return false;
        }
        self.sockets[a].outbox.insert(
            pid,
            Outbox {
                pending: msg,
                retransmissions: 0,
                queue: VecDeque::new(),
            },
        );
        true
    }

    /// Worker `pid` answered the socket sent to it: received (ACK), or not
    /// (NACK: sent again, up to [`MAX_HANDLE_RETRANSMISSIONS`] times). Once
    /// it is received, or given up, the messages waiting behind it go.
    pub(super) fn on_handle_answer(&mut self, pid: i32, received: bool) {
        let Some(&(a, i)) = self.by_pid.get(&pid) else {
            return;
        };
        let app = &self.apps[a].spec.name;
        let Some(out) = self.sockets[a].outbox.get_mut(&pid) else {
            debug!(%app, pid, received, "answer to a socket that was not sent: ignored");
            return;
        };
        if !received && out.retransmissions < MAX_HANDLE_RETRANSMISSIONS {
            out.retransmissions += 1;
            warn!(%app, instance = i, pid, retransmission = out.retransmissions,
                  "the cluster worker did not receive its socket (NODE_HANDLE_NACK): sending it again");
            let resent = match (self.ready.channels(pid), &out.pending.fd) {
                (Some(c), Some(fd)) => c.send_ipc_fd(&out.pending.value, fd.as_raw_fd()),
                _ => Err(std::io::ErrorKind::NotConnected.into()),
            };
            match resent {
                Ok(()) => return,
                Err(e) => {
                    warn!(%app, pid, error = %e, "cannot send the socket to the cluster worker again")
                }
            }
        } else if !received {
            warn!(%app, instance = i, pid, retransmissions = out.retransmissions,
                  "the cluster worker did not receive its socket, sent again as often as Node does: giving up, its server will not listen");
        }
        let Some(out) = self.sockets[a].outbox.remove(&pid) else {
            return;
        };
        let mut queue = out.queue;
        while let Some(msg) = queue.pop_front() {
            let handle = msg.fd.is_some();
            if !self.write_to_worker(a, pid, msg) {
                warn!(pid, "cannot write to the cluster worker");
            } else if handle {
                if let Some(o) = self.sockets[a].outbox.get_mut(&pid) {
                    o.queue = queue;
                }
                return;
            }
        }
    }

    /// A cluster message from worker `pid`.
    pub(super) fn on_cluster(&mut self, pid: i32, request: Request) {
        let Some(&slot) = self.by_pid.get(&pid) else {
            return;
        };
        let app = self.apps[slot.0].spec.name.clone();
        match request.act {
            Act::Online => debug!(app, instance = slot.1, pid, "cluster worker online"),
            Act::QueryServer(q) => self.query_server(slot, pid, request.seq, q),
            Act::Listening => {
                debug!(app, instance = slot.1, pid, "cluster worker listening");
                // The old process of a reload listened long ago.
                let current = self.apps[slot.0].instances[slot.1].state.pid() == Some(pid);
                if self.ready_on_listening(slot.0) && current {
                    self.feed(slot, super::machine::Event::Ready);
                }
            }
            // The socket stays held for the workers to come (Node's primary
            // closes a shared handle once no worker has it).
            Act::Close { key } => debug!(app, pid, key, "cluster worker closed a server"),
            Act::ExitedAfterDisconnect => {
                self.cluster_send(pid, cluster::answer(0, request.seq, serde_json::json!({})));
            }
            Act::Other(act) => debug!(app, pid, act, "cluster message ignored"),
        }
    }

    /// `server.listen()` in a worker: answer with the app's socket for that
    /// key, made now if it is the first to ask.
    fn query_server(&mut self, (a, i): Slot, pid: i32, seq: Option<u64>, q: Query) {
        let app = self.apps[a].spec.name.clone();
        let answer = match self.socket_for(a, &q) {
            Ok(fd) => {
                if let Err(e) = sockets::set_nonblocking(fd.as_raw_fd()) {
                    warn!(app, error = %e, "cannot make the socket non-blocking");
                }
                info!(
                    app,
                    instance = i,
                    pid,
                    key = q.key,
                    "cluster worker listens on a socket procward holds"
                );
                let msg = cluster::with_handle(cluster::query_answer(0, seq, &q.key, 0));
                self.send_to_worker(a, pid, msg, Some(fd));
                return;
            }
            Err(errno) => {
                warn!(app, instance = i, pid, key = q.key,
                      error = %std::io::Error::from_raw_os_error(errno),
                      "cannot make the socket a cluster worker asked for");
                cluster::query_answer(0, seq, &q.key, -errno)
            }
        };
        self.cluster_send(pid, answer);
    }

    /// A copy of the descriptor to give for `q` (kept until the worker
    /// has it): a socket made before for its key, a `listen` socket (by its
    /// descriptor number in the worker, or its address), or a new one made
    /// as Node's primary makes it.
    fn socket_for(&mut self, a: usize, q: &Query) -> Result<OwnedFd, i32> {
        let copy = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EMFILE))
        };
        let held = &mut self.sockets[a];
        if let Some(h) = held.cluster.get(&q.key) {
            return copy(&h.fd);
        }
        // listen({fd: 3}) in a worker: the app's LISTEN_FDS sockets.
        if let Some(fd) = q.fd {
            let k = usize::try_from(fd - FIRST_FD as i64).map_err(|_| libc::EBADF)?;
            return held
                .listen
                .get(k)
                .ok_or(libc::EBADF)
                .and_then(|h| copy(&h.fd));
        }
        let wanted = listen_addr(q)?;
        for (k, addr) in self.apps[a].spec.listen.iter().enumerate() {
            if *addr == wanted {
                if let Some(h) = held.listen.get(k) {
                    return copy(&h.fd);
                }
            }
        }
        let backlog = q.backlog.unwrap_or(sockets::BACKLOG);
        let made = match &wanted {
            sockets::ListenAddr::Tcp(addr) => {
                let opts = TcpOptions {
                    ipv6_only: q.ipv6_only,
                    backlog,
                };
                // lib/net.js _createServerHandle: no address means `::`,
                // and 0.0.0.0 where IPv6 is not available.
                sockets::bind_tcp(*addr, opts)
                    .or_else(|e| match (&q.address, addr) {
                        (None, SocketAddr::V6(v6)) => sockets::bind_tcp(
                            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), v6.port()),
                            opts,
                        ),
                        _ => Err(e),
                    })
                    .map(|fd| Held::plain(fd, self.apps[a].spec.name.clone()))
            }
            sockets::ListenAddr::Unix(path) => sockets::bind_unix(path, backlog)
                .map(|fd| Held::unix(fd, self.apps[a].spec.name.clone(), path.clone())),
        };
        let h = made.map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
        let fd = copy(&h.fd);
        self.sockets[a].cluster.insert(q.key.clone(), h);
        fd
    }

    fn ready_channels(&self, pid: i32) -> Option<&crate::ready::Channels> {
        self.ready.channels(pid)
    }

    fn cluster_send(&mut self, pid: i32, msg: serde_json::Value) {
        let Some(&(a, _)) = self.by_pid.get(&pid) else {
            return;
        };
        if !self.send_to_worker(a, pid, msg, None) {
            warn!(pid, "cannot answer the cluster worker");
        }
    }

    /// Closes the sockets of every app whose instances have all stopped for
    /// good, so connections are refused; called after every event. Sockets
    /// from procward's own service manager stay (it holds them too); the
    /// others are bound again when the app starts again.
    pub(super) fn release_sockets(&mut self) {
        for (a, app) in self.apps.iter().enumerate() {
            let s = &mut self.sockets[a];
            let releasable = !s.cluster.is_empty() || s.listen.iter().any(|h| !h.adopted);
            if releasable && app.instances.iter().all(|i| i.state.is_final()) {
                let mut listen = std::mem::take(&mut s.listen);
                listen.retain(|h| h.adopted);
                *s = AppSockets {
                    listen,
                    ..AppSockets::default()
                };
                info!(app = %app.spec.name, "closed the app's listening sockets");
            }
        }
    }
}

/// The address a `queryServer` asks for; an errno when procward cannot
/// serve it (UDP, a name that is not an IP address).
fn listen_addr(q: &Query) -> Result<sockets::ListenAddr, i32> {
    let port = u16::try_from(q.port).unwrap_or(0);
    match q.address_type {
        AddressType::Pipe => q
            .address
            .as_ref()
            .map(|p| sockets::ListenAddr::Unix(PathBuf::from(p)))
            .ok_or(libc::EINVAL),
        AddressType::Ip4 | AddressType::Ip6 => {
            let ip: IpAddr = match &q.address {
                None => Ipv6Addr::UNSPECIFIED.into(),
                Some(a) => a.parse().map_err(|_| libc::EINVAL)?,
            };
            Ok(sockets::ListenAddr::Tcp(SocketAddr::new(ip, port)))
        }
        AddressType::Other(_) => Err(libc::ENOTSUP),
    }
}
