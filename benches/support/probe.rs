//! The measuring program of the benchmarks in benches/ (kept out of `cargo bench`
//! discovery in this directory); std only, built with plain
//! `rustc -O`. Three modes:
//!
//! - `probe stamp FILE`: the crashing app of the restart benchmark. Appends
//!   "START END" (CLOCK_MONOTONIC ns at the top of main and just before
//!   exiting) to FILE and exits 1 at once.
//! - `probe child`: the app of the signal benchmark. Blocks SIGUSR1, writes
//!   8 zero bytes to the FIFO named by $PROBE_FIFO, then for each SIGUSR1
//!   taken (sigwaitinfo(2)) writes the CLOCK_MONOTONIC ns it woke at.
//! - `probe latency N self|child CMD...`: runs CMD with $PROBE_FIFO set,
//!   waits for the app, then N times: note the time, kill(2) SIGUSR1 to the
//!   process CMD started (`self`) or to its first child (`child`, for a
//!   supervisor started by `unshare --fork`), and read the app's wake-up
//!   time. Prints the median, 90th percentile and mean latency in us.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
struct SigSet([u64; 16]);

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn sigemptyset(set: *mut SigSet) -> i32;
    fn sigaddset(set: *mut SigSet, sig: i32) -> i32;
    fn sigprocmask(how: i32, set: *const SigSet, old: *mut SigSet) -> i32;
    fn sigwaitinfo(set: *const SigSet, info: *mut [u8; 128]) -> i32;
    fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

const CLOCK_MONOTONIC: i32 = 1;
const SIGUSR1: i32 = 10;
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const SIG_BLOCK: i32 = 0;

fn now_ns() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

fn usr1_set() -> SigSet {
    let mut set = SigSet([0; 16]);
    // SAFETY: plain libc calls on a local set.
    unsafe {
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGUSR1);
    }
    set
}

fn stamp(path: &str) -> ! {
    let start = now_ns();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open stamp file");
    let end = now_ns();
    let _ = writeln!(f, "{start} {end}");
    std::process::exit(1)
}

fn child() -> ! {
    let set = usr1_set();
    // SAFETY: blocking a signal in a single-threaded process.
    unsafe { sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()) };
    let path = std::env::var("PROBE_FIFO").expect("PROBE_FIFO");
    let mut fifo = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open fifo");
    fifo.write_all(&0u64.to_ne_bytes()).unwrap();
    let mut info = [0u8; 128];
    loop {
        // SAFETY: waits for the blocked signal.
        if unsafe { sigwaitinfo(&set, &mut info) } == SIGUSR1 {
            let t = now_ns();
            if fifo.write_all(&t.to_ne_bytes()).is_err() {
                std::process::exit(0);
            }
        }
    }
}

fn read_u64(f: &mut File) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact(&mut b).expect("read fifo");
    u64::from_ne_bytes(b)
}

fn first_child(pid: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = text.split_whitespace().next() {
            return c.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no child of {pid}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn latency(n: usize, target: &str, cmd: &[String]) {
    let dir = std::env::temp_dir().join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo_path = dir.join("fifo");
    let c = std::ffi::CString::new(fifo_path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    // Read-write, so opening does not wait for the writer.
    let mut fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo_path)
        .unwrap();
    let mut proc = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("PROBE_FIFO", &fifo_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    read_u64(&mut fifo);
    let pid = match target {
        "self" => proc.id() as i32,
        _ => first_child(proc.id()),
    };
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t0 = now_ns();
        // SAFETY: kill(2) with integers.
        unsafe { kill(pid, SIGUSR1) };
        let t1 = read_u64(&mut fifo);
        if i >= 20 {
            lat.push((t1 - t0) as f64 / 1000.0);
        }
    }
    // SAFETY: as above.
    unsafe { kill(pid, SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { kill(proc.id() as i32, SIGKILL) };
            let _ = proc.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    println!(
        "{:.1} {:.1} {:.1}",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        mean
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("stamp") => stamp(&args[2]),
        Some("child") => child(),
        Some("latency") => latency(args[2].parse().unwrap(), &args[3], &args[4..]),
        _ => {
            eprintln!("usage: probe stamp FILE | probe child | probe latency N self|child CMD...");
            std::process::exit(2)
        }
    }
}
