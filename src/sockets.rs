//! Listening sockets procward holds for its apps: bound once, kept open
//! through every restart of the app (a connection that arrives while no
//! instance accepts waits in the backlog instead of being refused), and
//! closed when the app stops for good.
//!
//! Two ways in:
//! - `listen:` / `--listen ADDR` sockets, passed to every instance with
//!   systemd's socket-activation protocol (sd_listen_fds(3)): descriptors
//!   from 3, `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` set to the
//!   child's own pid by the spawn, between clone and exec;
//! - sockets a Node cluster worker asks the primary for (`queryServer`),
//!   made the way Node's primary makes them (`lib/net.js`
//!   `_createServerHandle`, `lib/internal/cluster/shared_handle.js`) and
//!   kept under Node's key.
//!
//! When procward is itself socket-activated (its `LISTEN_PID` is its own
//! pid), [`Inherited::take`] adopts the sockets it was given; a `listen`
//! address is then served by the inherited socket of the same name (the
//! app's name, systemd's `FileDescriptorName=`) or bound to the same
//! address, instead of a new bind.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, UnixAddr};

use crate::ready::FIRST_FD;

/// The backlog of a socket procward binds: Node's default for
/// `server.listen` (`lib/net.js`, 511) and what the kernel caps to
/// `net.core.somaxconn`.
pub const BACKLOG: i32 = 511;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub enum ListenAddr {
    /// A TCP address; `[::]:PORT` is dual-stack (IPv4 too).
    Tcp(SocketAddr),
    /// A unix stream socket at this path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    /// The spelling `--listen` and `listen:` take.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<ListenAddr> for String {
    fn from(a: ListenAddr) -> String {
        a.to_string()
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    /// `0.0.0.0:3000`, `[::]:3000`, `127.0.0.1:8080`, `3000` (= `[::]:3000`)
    /// or `unix:/run/app.sock`.
    fn from_str(text: &str) -> Result<ListenAddr, String> {
        let t = text.trim();
        if let Some(path) = t.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!(
                    "invalid listen address `{text}`: expected a path after unix:"
                ));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(port) = t.parse::<u16>() {
            return Ok(ListenAddr::Tcp(SocketAddr::new(
                Ipv6Addr::UNSPECIFIED.into(),
                port,
            )));
        }
        t.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!(
                "invalid listen address `{text}`: expected HOST:PORT with an IP address \
                 (0.0.0.0:3000, [::]:3000), a port, or unix:/path"
            )
        })
    }
}

/// How to make a TCP socket.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// Refuse IPv4 on an IPv6 socket (`IPV6_V6ONLY`).
    pub ipv6_only: bool,
    /// The listen(2) backlog.
    pub backlog: i32,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            ipv6_only: false,
            backlog: BACKLOG,
        }
    }
}

/// Binds and listens on a TCP address with `SO_REUSEADDR` (as libuv's
/// `uv__tcp_bind` sets it), close-on-exec. Blocking, as systemd passes
/// sockets (`NonBlocking=no`); [`set_nonblocking`] before handing it to
/// libuv.
pub fn bind_tcp(addr: SocketAddr, opts: TcpOptions) -> io::Result<OwnedFd> {
    let (family, sa): (AddressFamily, SockaddrStorage) = match addr {
        SocketAddr::V4(_) => (AddressFamily::Inet, SockaddrStorage::from(addr)),
        SocketAddr::V6(_) => (AddressFamily::Inet6, SockaddrStorage::from(addr)),
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true)?;
    if family == AddressFamily::Inet6 {
        socket::setsockopt(&fd, socket::sockopt::Ipv6V6Only, &opts.ipv6_only)?;
    }
    socket::bind(fd.as_raw_fd(), &sa)?;
    listen(&fd, opts.backlog)?;
    Ok(fd)
}

/// Binds and listens on a unix stream socket at `path`. A socket file left
/// there by an earlier run is replaced (as systemd does for
/// `ListenStream=`); any other file is an error.
pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, backlog)?;
    Ok(fd)
}

fn listen(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One socket held for an app.
#[derive(Debug)]
pub struct Held {
    /// The socket.
    pub fd: OwnedFd,
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// A unix socket file procward made, removed when the socket is closed.
    unix_path: Option<PathBuf>,
    /// Passed by procward's own service manager, which keeps its copy:
    /// held until procward exits, as it cannot be bound again.
    pub adopted: bool,
}

impl Held {
    /// A socket bound to a unix path procward made (removed on drop).
    pub fn unix(fd: OwnedFd, name: String, path: PathBuf) -> Held {
        Held {
            fd,
            name,
            unix_path: Some(path),
            adopted: false,
        }
    }

    /// A socket with nothing to clean up but itself.
    pub fn plain(fd: OwnedFd, name: String) -> Held {
        Held {
            fd,
            name,
            unix_path: None,
            adopted: false,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Sockets procward was given by its own service manager.
#[derive(Debug, Default)]
pub struct Inherited {
    /// (name, socket), in the order given.
    fds: Vec<(String, Option<OwnedFd>)>,
}

impl Inherited {
    /// Adopts the sockets of sd_listen_fds(3) when `LISTEN_PID` is our
    /// own pid; otherwise nothing. The descriptors are made close-on-exec:
    /// they reach an app only as procward passes them on.
    pub fn take() -> Inherited {
        let pid = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok());
        if pid != Some(std::process::id()) {
            return Inherited::default();
        }
        let n = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        let fds = (0..n)
            .map(|k| {
                let fd = FIRST_FD + k as RawFd;
                let name = names.next().unwrap_or("unknown").to_string();
                // A number that is not open (a manager that lied) is
                // skipped, not owned: closing it later would close
                // whatever took the number meanwhile.
                if !set_cloexec(fd) {
                    tracing::warn!(
                        fd,
                        name,
                        "LISTEN_FDS names a descriptor that is not open; ignored"
                    );
                    return (name, None);
                }
                // SAFETY: sd_listen_fds(3) hands these numbers to us, once,
                // and the descriptor is open.
                (name, Some(unsafe { OwnedFd::from_raw_fd(fd) }))
            })
            .collect();
        Inherited { fds }
    }

    /// The descriptor numbers adopted (kept open by
    /// [`close_inherited_on_exec`]).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        (0..self.fds.len()).map(|k| FIRST_FD + k as RawFd).collect()
    }

    /// Takes the inherited socket named `name`, else one bound to `addr`.
    pub fn adopt(&mut self, name: &str, addr: &ListenAddr) -> Option<OwnedFd> {
        let by_name = self
            .fds
            .iter()
            .position(|(n, fd)| fd.is_some() && n == name);
        let k = by_name.or_else(|| {
            self.fds
                .iter()
                .position(|(_, fd)| fd.as_ref().is_some_and(|fd| bound_to(fd, addr)))
        })?;
        self.fds[k].1.take()
    }
}

/// Sets O_NONBLOCK on a socket, for every process that shares it. libuv
/// (a Node worker) needs it: on a listening socket it calls accept(2) until
/// EAGAIN, and a blocking socket would stall the worker's event loop in the
/// second accept. A socket libuv made itself (in Node's primary) has it.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) with integer arguments on a descriptor we hold.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether `fd` is a socket bound to `addr`.
fn bound_to(fd: &OwnedFd, addr: &ListenAddr) -> bool {
    let Ok(local) = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) else {
        return false;
    };
    match addr {
        ListenAddr::Tcp(SocketAddr::V4(a)) => local
            .as_sockaddr_in()
            .is_some_and(|l| l.ip() == *a.ip() && l.port() == a.port()),
        ListenAddr::Tcp(SocketAddr::V6(a)) => local
            .as_sockaddr_in6()
            .is_some_and(|l| l.ip() == *a.ip() && l.port() == a.port()),
        ListenAddr::Unix(p) => local
            .as_unix_addr()
            .and_then(|u| u.path())
            .is_some_and(|lp| lp == p),
    }
}

/// Makes every descriptor above stderr that procward inherited
/// close-on-exec, except `keep`, so nothing leaks into the apps (catatonit
/// does the same). Called first thing, before procward opens anything.
pub fn close_inherited_on_exec(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    // The directory's own descriptor is gone by now; setting the flag on a
    // closed number fails harmlessly with EBADF.
    for fd in fds {
        set_cloexec(fd);
    }
}

/// Sets FD_CLOEXEC; false if `fd` is not open.
fn set_cloexec(fd: RawFd) -> bool {
    // SAFETY: fcntl(2) with integer arguments on a descriptor number.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) >= 0
    }
}

/// Binds the `listen` sockets of one app, adopting inherited ones first.
pub fn bind_app(
    app: &str,
    addrs: &[ListenAddr],
    inherited: &mut Inherited,
) -> Result<Vec<Held>, String> {
    addrs
        .iter()
        .map(|addr| {
            let name = app.to_string();
            if let Some(fd) = inherited.adopt(app, addr) {
                let mut held = Held::plain(fd, name);
                held.adopted = true;
                return Ok(held);
            }
            match addr {
                ListenAddr::Tcp(a) => {
                    bind_tcp(*a, TcpOptions::default()).map(|fd| Held::plain(fd, name))
                }
                ListenAddr::Unix(p) => {
                    bind_unix(p, BACKLOG).map(|fd| Held::unix(fd, name, p.clone()))
                }
            }
            .map_err(|e| format!("app {app}: cannot listen on {addr}: {e}"))
        })
        .collect()
}

/// One environment variable.
pub type EnvVar = (OsString, OsString);

/// What a process gets for the app's `listen` sockets: descriptors to move
/// (ours, its number from 3) and the variables of sd_listen_fds(3) other
/// than `LISTEN_PID`, which the spawn sets.
pub fn listen_fds(held: &[Held]) -> (Vec<(RawFd, RawFd)>, Vec<EnvVar>) {
    if held.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let fds = held
        .iter()
        .enumerate()
        .map(|(k, h)| (h.fd.as_raw_fd(), FIRST_FD + k as RawFd))
        .collect();
    let names = held
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(":");
    let env = vec![
        crate::spawn::var("LISTEN_FDS", held.len().to_string()),
        crate::spawn::var("LISTEN_FDNAMES", names),
    ];
    (fds, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        let p = |s: &str| s.parse::<ListenAddr>();
        assert_eq!(p("0.0.0.0:3000").unwrap().to_string(), "0.0.0.0:3000");
        assert_eq!(p("[::]:3000").unwrap().to_string(), "[::]:3000");
        assert_eq!(p("3000").unwrap().to_string(), "[::]:3000");
        assert_eq!(
            p("unix:/run/app.sock").unwrap(),
            ListenAddr::Unix("/run/app.sock".into())
        );
        assert!(p("localhost:3000").is_err());
        assert!(p("unix:").is_err());
        assert!(p(":3000").is_err());
    }

    #[test]
    fn a_socket_is_bound_once_and_found_by_its_address() {
        let fd = bind_tcp("127.0.0.1:0".parse().unwrap(), TcpOptions::default()).unwrap();
        let port = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
            .unwrap()
            .as_sockaddr_in()
            .unwrap()
            .port();
        let addr: ListenAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(bound_to(&fd, &addr));
        // Listening already: a second bind of the same address fails.
        let ListenAddr::Tcp(a) = addr else {
            unreachable!()
        };
        assert!(bind_tcp(a, TcpOptions::default()).is_err());
    }
}
