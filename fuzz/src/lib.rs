//! The fuzz harnesses, one function per parser of outside input; each
//! `fuzz_targets/NAME.rs` calls the function of its name.
//!
//! procward is one binary crate. Rather than split it into a library for
//! the fuzzer's sake, this crate compiles the same module tree from
//! `../src` with `#[path]`: the shipped binary is unchanged byte for byte,
//! and the harnesses reach crate-private parsers (the sd_notify receiver,
//! say) without making them public.
//!
//! Each harness also checks what the parser promises beyond not crashing:
//! descriptors received on the notify socket are all closed, and the
//! HTTP server answers or closes every connection.

#![allow(dead_code, unused_imports, unused_variables, clippy::all)]

#[path = "../../src/cli.rs"]
mod cli;
#[path = "../../src/config/mod.rs"]
mod config;
#[path = "../../src/control/mod.rs"]
mod control;
#[path = "../../src/cron.rs"]
mod cron;
#[path = "../../src/exit.rs"]
mod exit;
#[path = "../../src/http.rs"]
mod http;
#[path = "../../src/init/mod.rs"]
mod init;
#[path = "../../src/logs/mod.rs"]
mod logs;
#[path = "../../src/metrics.rs"]
mod metrics;
#[path = "../../src/notify.rs"]
mod notify;
#[path = "../../src/observe/mod.rs"]
mod observe;
#[path = "../../src/own_log.rs"]
mod own_log;
#[path = "../../src/ready/mod.rs"]
mod ready;
#[path = "../../src/resources/mod.rs"]
mod resources;
#[path = "../../src/sockets.rs"]
mod sockets;
#[path = "../../src/spawn.rs"]
mod spawn;
#[path = "../../src/status.rs"]
mod status;
#[path = "../../src/supervise/mod.rs"]
mod supervise;
#[path = "../../src/tree.rs"]
mod tree;
#[path = "../../src/watch/mod.rs"]
mod watch;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Durations, sizes and signal names, as the CLI and process files give them.
pub fn units(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = config::units::parse_duration(&text);
    let _ = config::units::parse_size(&text);
    let _ = config::units::parse_signal(&text);
}

/// A process file: the first byte picks YAML or (relaxed) JSON, the rest
/// is the file. Parsed, then loaded and validated as `procward run -c`
/// does, and the tree written back as `procward convert` does.
pub fn process_file(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let json = kind & 1 == 1;
    let _ = if json {
        config::json::parse(text)
    } else {
        config::yaml::parse(text)
    };
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("procward-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temporary directory");
        d
    });
    let file = dir.join(if json { "apps.json" } else { "apps.yaml" });
    std::fs::write(&file, text).expect("write the process file");
    let sel = config::load::Selection {
        env: (kind & 2 == 2).then(|| "production".to_string()),
        only: Vec::new(),
    };
    match config::load::load(&file, &sel) {
        Ok(loaded) => {
            let _ = serde_json::to_string(&loaded.tree);
            let _ = serde_norway::to_string(&loaded.tree);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Bytes on the Node IPC channel: split into lines (in two reads, cut
/// where the first byte says), each line read as a message, cluster
/// messages included.
pub fn node_ipc(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * rest.len() / 255).min(rest.len());
    let mut lines = ready::node_ipc::Lines::default();
    for part in [&rest[..cut], &rest[cut..]] {
        lines.feed(part, |line| {
            if let Ok(line) = line {
                let _ = ready::node_ipc::parse(line);
            }
        });
    }
}

/// One datagram on an app's notify socket: the first byte is how many
/// descriptors ride along (SCM_RIGHTS, up to the kernel's 253), the
/// second whether the receiver asks for credentials, the rest the
/// payload (up to the socket's buffer, past procward's 4096 bytes).
/// Received through the real receiver, then judged as from the app.
pub fn sd_notify(data: &[u8]) {
    let [nfds, flags, payload @ ..] = data else {
        return;
    };
    let nfds = *nfds as usize % 254;
    let (rx, tx) = UnixDatagram::pair().expect("socketpair");
    if flags & 1 == 1 {
        nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::PassCred, &true)
            .expect("SO_PASSCRED");
    }
    static NULL: OnceLock<std::fs::File> = OnceLock::new();
    let null = NULL
        .get_or_init(|| std::fs::File::open("/dev/null").expect("/dev/null"))
        .as_raw_fd();
    let fds: Vec<RawFd> = vec![null; nfds];
    let iov = [std::io::IoSlice::new(payload)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let cmsgs: &[nix::sys::socket::ControlMessage] = if nfds > 0 { &cmsg } else { &[] };
    if nix::sys::socket::sendmsg::<()>(
        tx.as_raw_fd(),
        &iov,
        cmsgs,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .is_err()
    {
        // Larger than the socket buffer: no datagram to read.
        return;
    }
    let before = lowest_free_fd();
    let d = ready::sd_notify::recv(&rx).expect("a datagram is waiting");
    assert_eq!(
        lowest_free_fd(),
        before,
        "a descriptor that came with the datagram was left open"
    );
    let me = std::process::id() as i32;
    let _ = ready::sd_notify::judge(&d, me, true);
    let _ = ready::sd_notify::parse(&String::from_utf8_lossy(payload));
}

/// The lowest descriptor number not in use.
fn lowest_free_fd() -> RawFd {
    // SAFETY: F_DUPFD on stdin's number duplicates nothing we own beyond
    // the new descriptor, closed at once.
    unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0);
        if fd < 0 {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            libc::close(fd);
            return fd;
        }
        libc::close(fd);
        fd
    }
}

/// One connection to the real HTTP server (the `--metrics` listener with
/// its limits and routes): the bytes sent, then the write side closed.
/// The server must answer with an HTTP/1.x response or close, within its
/// header timeout.
pub fn http(data: &[u8]) {
    let addr = *server();
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(http::HEADER_TIMEOUT * 3)).unwrap();
    let _ = c.write_all(data);
    let _ = c.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    match c.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server neither answered nor closed: {e}"),
    }
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
}

/// The server, started once on a thread of its own.
fn server() -> &'static SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let registry = prometheus::Registry::new();
                let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
                let busy = prometheus::IntCounter::new("busy", "busy").unwrap();
                registry.register(Box::new(dropped.clone())).unwrap();
                registry.register(Box::new(busy.clone())).unwrap();
                let (_roots_tx, roots) = tokio::sync::watch::channel(Vec::new());
                let (status_tx, status) =
                    tokio::sync::watch::channel(Arc::new(status::Status::default()));
                let h = status::Handles {
                    sample_interval: None,
                    roots,
                    status,
                    heartbeat: Arc::new(status::Heartbeat::new()),
                    registry: Some(registry),
                    http_dropped: Some(dropped),
                    http_busy: Some(busy),
                    control_refused: None,
                    generation: Arc::new(Default::default()),
                };
                // A free port: bind, read it, let go, bind it again.
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap();
                let server = http::Server::bind(port, &h).expect("bind the HTTP server");
                tx.send(port).unwrap();
                let _keep = (status_tx, _roots_tx);
                server.serve().await;
            });
        });
        rx.recv().expect("the server started")
    })
}

/// A control-socket request: the bytes read by the request parser, then
/// sent on one connection to the real control server (peer check, size
/// and time limits, its own answers for `hello`, `status` and `logs`),
/// with a stand-in supervisor that answers the rest as the real one does
/// for a procward running no app.
///
/// Beyond not crashing: a request the parser accepts reads back the same
/// once written out again (as the CLI writes it), every refusal is a
/// reply a client can read, and the server answers with one JSON reply
/// line or closes.
pub fn control(data: &[u8]) {
    use control::Reply;
    match control::parse_request(data) {
        Ok(r) => {
            let line = serde_json::to_vec(&r).expect("a request writes out");
            assert_eq!(
                control::parse_request(&line).as_ref(),
                Ok(&r),
                "{r:?} does not read back from {:?}",
                String::from_utf8_lossy(&line)
            );
        }
        Err(reply) => {
            assert!(matches!(reply, Reply::Refused(_)), "{reply:?}");
            let line = serde_json::to_string(&reply).expect("a reply writes out");
            assert_eq!(serde_json::from_str::<Reply>(&line).ok(), Some(reply));
        }
    }
    // The client reads whatever a server sends back.
    let _ = serde_json::from_slice::<Reply>(data);

    let path = control_server();
    let mut c = std::os::unix::net::UnixStream::connect(path).expect("connect");
    c.set_read_timeout(Some(control::IDLE_TIMEOUT * 3)).unwrap();
    let _ = c.write_all(data);
    let _ = c.shutdown(Shutdown::Write);
    // One line: `logs --follow` keeps the connection open after it.
    let mut answer = Vec::new();
    let mut byte = [0u8];
    loop {
        match c.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => answer.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            // libFuzzer's own SIGALRM, once a second.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!(
                "the control server neither answered nor closed ({:?}): {e}; read so far: {:?}",
                e.kind(),
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    if !answer.is_empty() {
        let reply: Reply = serde_json::from_slice(&answer).unwrap_or_else(|e| {
            panic!(
                "not a reply ({e}): {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            )
        });
        let _ = reply;
    }
}

/// The control server, started once on a thread of its own, with a
/// stand-in for the supervisor's side of [`control::Call`].
fn control_server() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("procward-fuzz-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join(control::SOCKET_NAME);
        let (tx, rx) = std::sync::mpsc::channel();
        let bound_path = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (listener, _bound) =
                    control::server::bind(&bound_path).expect("bind the control socket");
                let (calls, mut inbox) = tokio::sync::mpsc::channel::<control::Call>(16);
                let (_status_tx, status) =
                    tokio::sync::watch::channel(Arc::new(status::Status::default()));
                let logs = logs::Logs::new(&[], Default::default(), |_| unreachable!());
                let shared = control::server::Shared {
                    name: "fuzz".into(),
                    apps: Vec::new(),
                    status,
                    calls,
                    refused: None,
                    sampled: true,
                    logs,
                };
                tokio::spawn(control::server::Server::new(listener, shared).serve());
                tx.send(()).unwrap();
                // What the supervisor answers when it runs no app: the
                // signal is read first, then no app matches the name.
                while let Some(call) = inbox.recv().await {
                    use control::{Reply, Request::*};
                    let answer = match &call.request {
                        Signal { signal, .. } => config::units::parse_signal(signal)
                            .err()
                            .map(|e| Reply::refused("bad_request", e, None)),
                        Scale { .. } => Some(Reply::refused("not_supported", "no", None)),
                        _ => None,
                    };
                    let answer = answer.unwrap_or_else(|| match &call.request {
                        Reload { app }
                        | Restart { app }
                        | Stop { app }
                        | Start { app }
                        | Signal { app, .. }
                            if app == "all" =>
                        {
                            Reply::outcomes(Vec::new())
                        }
                        _ => Reply::refused("unknown_app", "no app named that", None),
                    });
                    let _ = call.reply.send(answer);
                }
            });
        });
        rx.recv().expect("the control server started");
        path
    })
}
