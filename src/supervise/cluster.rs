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
//!
//! A TCP socket a worker asks for by address is, by default, given to
//! every worker, which all accept on it (Node's `none` policy). With
//! `NODE_CLUSTER_SCHED_POLICY=rr`, in the app's environment or procward's,
//! it is shared out round-robin as Node's primary does on Linux
//! (`lib/internal/cluster/round_robin_handle.js`): procward accepts the
//! connections and hands each one to the next free worker as a `newconn`
//! message with the connection attached; the worker answers `accepted`,
//! and only then gets another. A connection is accepted only when a
//! worker is free, so the others wait in the kernel's backlog; one a worker
//! did not take (its server is closing) or could not receive goes to
//! another worker. Unix socket paths, `listen({fd})` and the app's
//! `listen` sockets are always shared.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
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
    /// The round-robin sockets among `cluster`, by key.
    round_robin: HashMap<String, RoundRobin>,
}

/// A connection accepted on a round-robin socket, for the supervisor.
#[derive(Debug)]
pub struct Connection {
    app: usize,
    key: String,
    fd: OwnedFd,
}

/// Where the accepting tasks send the connections they accept.
#[derive(Debug)]
pub struct Connections {
    tx: mpsc::Sender<Connection>,
    /// Read by the supervisor's loop.
    pub rx: mpsc::Receiver<Connection>,
}

impl Default for Connections {
    fn default() -> Self {
        // One connection per free worker is accepted at a time.
        let (tx, rx) = mpsc::channel(64);
        Connections { tx, rx }
    }
}

/// A connection procward holds until a worker has taken it.
type Conn = Arc<OwnedFd>;

/// A connection handed to a worker, waiting for its answer.
#[derive(Debug)]
struct InFlight {
    conn: Conn,
    /// The `seq` of the `newconn` message.
    seq: u64,
    /// The worker acknowledged the descriptor (`NODE_HANDLE_ACK`).
    received: bool,
}

/// One round-robin socket (Node's `RoundRobinHandle`): the workers
/// listening on it, by pid, and the connections accepted for them.
#[derive(Debug)]
struct RoundRobin {
    /// Workers that asked for it and have not closed it.
    all: Vec<i32>,
    /// Workers waiting for a connection, the longest-waiting first.
    free: VecDeque<i32>,
    /// Connections accepted while no worker was free (one whose worker
    /// went away or refused it).
    queued: VecDeque<Conn>,
    /// A connection handed to each busy worker.
    busy: HashMap<i32, InFlight>,
    /// `seq` of the last `newconn`.
    seq: u64,
    /// One permit per connection the accepting task may accept.
    credits: Arc<Semaphore>,
    /// Permits given and not yet turned into a connection.
    granted: usize,
    /// `sockname` of the `queryServer` answer.
    sockname: Option<serde_json::Value>,
    task: JoinHandle<()>,
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoundRobin {
    /// Takes back the permits of workers no longer free, where the
    /// accepting task does not hold them already (a connection it accepts
    /// then waits in `queued`).
    fn reclaim(&mut self) {
        while self.granted > self.free.len() {
            match self.credits.try_acquire() {
                Ok(p) => {
                    p.forget();
                    self.granted -= 1;
                }
                Err(_) => break,
            }
        }
    }

    /// Worker `pid` gets no more connections; the one it was handed, if
    /// it never acknowledged receiving it, is returned to give to another.
    fn remove(&mut self, pid: i32) -> Option<Conn> {
        self.all.retain(|p| *p != pid);
        self.free.retain(|p| *p != pid);
        self.reclaim();
        self.busy
            .remove(&pid)
            .filter(|f| !f.received)
            .map(|f| f.conn)
    }
}

/// Accepts connections on `listener` as long as `credits` allow, and
/// sends them to the supervisor. Nothing is accepted while no worker is
/// free: the connections wait in the backlog.
async fn accept_loop(
    listener: OwnedFd,
    credits: Arc<Semaphore>,
    tx: mpsc::Sender<Connection>,
    app: usize,
    key: String,
) {
    // SAFETY: the AsyncFd owns the descriptor, open until it is dropped.
    let listener = match unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) } {
        Ok(l) => l,
        Err(e) => {
            warn!(key, error = %e, "cannot watch the round-robin socket: no connection will be accepted");
            return;
        }
    };
    loop {
        let Ok(permit) = credits.acquire().await else {
            return;
        };
        permit.forget();
        let fd = loop {
            let Ok(mut ready) = listener.readable().await else {
                return;
            };
            match ready.try_io(|l| accept(l.as_raw_fd())) {
                Ok(Ok(fd)) => break fd,
                Err(_would_block) => {}
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Ok(Err(e)) => {
                    // Out of descriptors or memory: the connection stays
                    // in the backlog; try again in a while.
                    warn!(key, error = %e, "cannot accept a connection on the round-robin socket");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
        let conn = Connection {
            app,
            key: key.clone(),
            fd,
        };
        if tx.send(conn).await.is_err() {
            return;
        }
    }
}

/// accept4(2), non-blocking and close-on-exec as libuv accepts.
fn accept(fd: std::os::fd::RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: accept4(2) on a descriptor we hold, with no address buffer.
    let c = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if c < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}

/// A TCP socket's address as Node's `getsockname` gives it.
fn sockname(fd: &OwnedFd) -> Option<serde_json::Value> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let sa: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    let (ip, family, port): (IpAddr, _, _) = if let Some(v4) = sa.as_sockaddr_in() {
        (v4.ip().into(), "IPv4", v4.port())
    } else if let Some(v6) = sa.as_sockaddr_in6() {
        (v6.ip().into(), "IPv6", v6.port())
    } else {
        return None;
    };
    Some(serde_json::json!({"address": ip.to_string(), "family": family, "port": port}))
}

/// How often a socket a worker did not receive is sent again
/// (`MAX_HANDLE_RETRANSMISSIONS` in `lib/internal/child_process.js`).
pub const MAX_HANDLE_RETRANSMISSIONS: u32 = 3;

/// A message to a worker, with the socket it carries.
#[derive(Debug)]
struct Message {
    value: serde_json::Value,
    /// procward's own copy of the socket, kept until the worker has it.
    fd: Option<Conn>,
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
        // It answers a connection already handed to it (not accepted once
        // its server is closed) but gets no other.
        for rr in self.sockets[a].round_robin.values_mut() {
            rr.all.retain(|p| *p != pid);
            rr.free.retain(|p| *p != pid);
            rr.reclaim();
        }
        true
    }

    /// Process `pid` closed its IPC channel: a worker told to disconnect
    /// gets its stop signal now.
    pub(super) fn on_disconnected(&mut self, pid: i32) {
        let running = self.by_pid.contains_key(&pid);
        self.round_robin_forget(pid);
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
        self.round_robin_forget(pid);
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
        fd: Option<Conn>,
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
        drop(out.pending);
        self.round_robin_received(a, pid, received);
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
            // A round-robin socket's worker that closed its server gets
            // no more connections.
            Act::Close { key } => {
                debug!(app, pid, key, "cluster worker closed a server");
                if let Some(rr) = self.sockets[slot.0].round_robin.get_mut(&key) {
                    rr.all.retain(|p| *p != pid);
                    rr.free.retain(|p| *p != pid);
                    rr.reclaim();
                }
            }
            Act::Accepted { ack, accepted } => self.on_accepted(slot.0, pid, ack, accepted),
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
        let round_robin = self.round_robin_for(a, &q);
        let answer = match self.socket_for(a, &q) {
            Ok(fd) if round_robin => {
                info!(
                    app,
                    instance = i,
                    pid,
                    key = q.key,
                    "cluster worker gets connections round-robin from a socket procward holds"
                );
                self.round_robin_add(a, pid, seq, &q.key, fd);
                return;
            }
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
                self.send_to_worker(a, pid, msg, Some(Arc::new(fd)));
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
        // A backlog of 0 (`listen(port)`) is libuv's 511 (`lib/net.js` `_listen2`).
        let backlog = q.backlog.filter(|b| *b > 0).unwrap_or(sockets::BACKLOG);
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

    /// Whether the socket for `q` is shared out round-robin: a TCP address
    /// (not a descriptor, not one of the app's `listen` sockets) with
    /// `NODE_CLUSTER_SCHED_POLICY=rr`, read as Node's primary reads it, from
    /// the app's environment, then procward's. Otherwise every worker gets
    /// the listening socket itself (Node's `none`): the kernel spreads
    /// connections within 1.4x of fair here, with a higher new-connection
    /// rate and a lower p99 during reloads than round-robin.
    fn round_robin_for(&self, a: usize, q: &Query) -> bool {
        if q.fd.is_some() || !matches!(q.address_type, AddressType::Ip4 | AddressType::Ip6) {
            return false;
        }
        if self.sockets[a].round_robin.contains_key(&q.key) {
            return true;
        }
        if self.sockets[a].cluster.contains_key(&q.key) {
            return false;
        }
        let spec = &self.apps[a].spec;
        if let Ok(wanted) = listen_addr(q) {
            if spec.listen.contains(&wanted) {
                return false;
            }
        }
        let policy = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "NODE_CLUSTER_SCHED_POLICY")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var_os("NODE_CLUSTER_SCHED_POLICY"));
        policy.as_deref() == Some(std::ffi::OsStr::new("rr"))
    }

    /// Worker `pid` listens on the round-robin socket of `key` (procward's
    /// copy `fd`): it is answered without a socket, and is free for a
    /// connection. The first worker starts the accepting.
    fn round_robin_add(&mut self, a: usize, pid: i32, seq: Option<u64>, key: &str, fd: OwnedFd) {
        let held = &mut self.sockets[a];
        let rr = match held.round_robin.entry(key.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // accept(2) must never block supervision.
                if let Err(e) = sockets::set_nonblocking(fd.as_raw_fd()) {
                    warn!(key, error = %e, "cannot make the socket non-blocking");
                }
                let credits = Arc::new(Semaphore::new(0));
                let sockname = sockname(&fd);
                let task = tokio::spawn(accept_loop(
                    fd,
                    credits.clone(),
                    self.conns.tx.clone(),
                    a,
                    key.to_string(),
                ));
                e.insert(RoundRobin {
                    all: Vec::new(),
                    free: VecDeque::new(),
                    queued: VecDeque::new(),
                    busy: HashMap::new(),
                    seq: 0,
                    credits,
                    granted: 0,
                    sockname,
                    task,
                })
            }
        };
        if !rr.all.contains(&pid) {
            rr.all.push(pid);
        }
        let answer = cluster::round_robin_answer(0, seq, key, rr.sockname.clone());
        if !self.send_to_worker(a, pid, answer, None) {
            warn!(pid, "cannot answer the cluster worker");
        }
        self.round_robin_free(a, key, pid);
    }

    /// Worker `pid` can take a connection on `key`: the first one waiting
    /// in procward, or the next one accepted.
    fn round_robin_free(&mut self, a: usize, key: &str, pid: i32) {
        let Some(rr) = self.sockets[a].round_robin.get_mut(key) else {
            return;
        };
        if !rr.all.contains(&pid) || rr.busy.contains_key(&pid) || rr.free.contains(&pid) {
            return;
        }
        if let Some(conn) = rr.queued.pop_front() {
            self.hand_off(a, key, pid, conn);
            return;
        }
        rr.free.push_back(pid);
        if rr.granted < rr.free.len() {
            rr.credits.add_permits(1);
            rr.granted += 1;
        }
    }

    /// A connection accepted on a round-robin socket.
    pub(super) fn on_connection(&mut self, c: Connection) {
        let Some(rr) = self
            .sockets
            .get_mut(c.app)
            .and_then(|s| s.round_robin.get_mut(&c.key))
        else {
            return;
        };
        rr.granted = rr.granted.saturating_sub(1);
        debug!(key = c.key, fd = c.fd.as_raw_fd(), "connection accepted");
        self.distribute(c.app, &c.key, Arc::new(c.fd));
    }

    /// Gives `conn` to the longest-waiting free worker, or keeps it until
    /// one is free.
    fn distribute(&mut self, a: usize, key: &str, conn: Conn) {
        let Some(rr) = self.sockets[a].round_robin.get_mut(key) else {
            return;
        };
        match rr.free.pop_front() {
            Some(pid) => {
                rr.reclaim();
                self.hand_off(a, key, pid, conn);
            }
            None => rr.queued.push_back(conn),
        }
    }

    /// Sends `conn` to worker `pid` (`newconn`); it gets no other until it
    /// answers. One that cannot be written to is dropped from the socket
    /// and the connection goes to another worker.
    fn hand_off(&mut self, a: usize, key: &str, pid: i32, conn: Conn) {
        let Some(rr) = self.sockets[a].round_robin.get_mut(key) else {
            return;
        };
        rr.seq += 1;
        let seq = rr.seq;
        rr.busy.insert(
            pid,
            InFlight {
                conn: conn.clone(),
                seq,
                received: false,
            },
        );
        let msg = cluster::with_handle(cluster::new_connection(seq, key));
        debug!(pid, seq, "connection handed to the cluster worker");
        if self.send_to_worker(a, pid, msg, Some(conn)) {
            return;
        }
        warn!(app = %self.apps[a].spec.name, pid, "cannot hand a connection to the cluster worker: giving it to another");
        if let Some(conn) = self.sockets[a]
            .round_robin
            .get_mut(key)
            .and_then(|rr| rr.remove(pid))
        {
            self.distribute(a, key, conn);
        }
    }

    /// Worker `pid` answered whether it received the descriptor last sent
    /// to it. A connection it did not receive goes to another worker, and
    /// it gets no more on that socket.
    fn round_robin_received(&mut self, a: usize, pid: i32, received: bool) {
        let keys: Vec<String> = self.sockets[a]
            .round_robin
            .iter()
            .filter(|(_, rr)| rr.busy.get(&pid).is_some_and(|f| !f.received))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(rr) = self.sockets[a].round_robin.get_mut(&key) else {
                continue;
            };
            if received {
                if let Some(f) = rr.busy.get_mut(&pid) {
                    f.received = true;
                }
            } else if let Some(conn) = rr.remove(pid) {
                self.distribute(a, &key, conn);
            }
        }
    }

    /// Worker `pid`'s answer to the connection `ack`: taken (procward
    /// closes its copy), or refused (its server is closing, or full: the
    /// connection goes to another worker). Either way it is free again.
    fn on_accepted(&mut self, a: usize, pid: i32, ack: Option<u64>, accepted: bool) {
        let found = self.sockets[a].round_robin.iter_mut().find_map(|(k, rr)| {
            if rr.busy.get(&pid).is_some_and(|f| Some(f.seq) == ack) {
                rr.busy.remove(&pid).map(|f| (k.clone(), f.conn))
            } else {
                None
            }
        });
        let Some((key, conn)) = found else {
            debug!(
                pid,
                ?ack,
                "answer to a connection that was not handed over: ignored"
            );
            return;
        };
        if accepted {
            drop(conn);
        } else {
            debug!(
                pid,
                key, "the cluster worker did not take the connection: giving it to another"
            );
            self.distribute(a, &key, conn);
        }
        self.round_robin_free(a, &key, pid);
    }

    /// Worker `pid` is gone or closed its channel: it gets no more
    /// connections, and one it had not acknowledged receiving goes to
    /// another worker.
    fn round_robin_forget(&mut self, pid: i32) {
        for a in 0..self.sockets.len() {
            let back: Vec<(String, Conn)> = self.sockets[a]
                .round_robin
                .iter_mut()
                .filter_map(|(k, rr)| rr.remove(pid).map(|c| (k.clone(), c)))
                .collect();
            for (key, conn) in back {
                self.distribute(a, &key, conn);
            }
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
