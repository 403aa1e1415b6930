//! One pass over /proc: every process's parent, CPU time, threads and
//! resident memory, summed per process tree.
//!
//! Buffers (the directory listing, file contents, the pid index) are kept
//! between passes, so a steady-state pass allocates nothing per process:
//! paths are formatted on the stack and std opens them through a stack
//! C string, and directories are listed with getdents64(2) into a reused
//! buffer instead of `read_dir`, which allocates a name per entry.
//!
//! Fields read, as documented in proc(5) (proc_pid_stat(5), proc_pid_fd(5),
//! proc_pid_smaps_rollup(5) in newer man-pages):
//! - `/proc/PID/stat`, after the `(comm)` field: (4) `ppid`; (14) `utime`
//!   and (15) `stime`, CPU time in clock ticks (divide by
//!   `sysconf(_SC_CLK_TCK)`); (20) `num_threads`; (24) `rss`, resident set
//!   size in pages (multiply by the page size).
//! - `/proc/PID/fd/`: one entry per open file descriptor.
//! - `/proc/PID/smaps_rollup` (Linux 4.14+): `Pss:` in kB, the process's
//!   proportional share of its resident pages, shared pages divided among
//!   the processes mapping them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::tree;

/// Usage of one process tree, summed over its live members.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeUsage {
    /// The root of the tree (an instance's main process).
    pub pid: i32,
    /// Processes in the tree, the root included.
    pub processes: u32,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Proportional set size, bytes; `None` where smaps_rollup is missing or
    /// unreadable, or on a pass without the slow fields.
    pub pss_bytes: Option<u64>,
    /// User plus system CPU time of the live members, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors; `None` on a pass without the slow fields.
    pub fds: Option<u64>,
}

/// One process as read from its stat file.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    ticks: u64,
    threads: u64,
    rss_pages: u64,
}

/// Not yet resolved to a tree.
const UNKNOWN: u32 = u32::MAX;
/// In no tree procward samples.
const NONE: u32 = u32::MAX - 1;

/// The scanner and its reused buffers.
pub struct ProcScan {
    proc_dir: OwnedFd,
    dents: Vec<u8>,
    file: Vec<u8>,
    procs: Vec<Proc>,
    index: HashMap<i32, u32>,
    owner: Vec<u32>,
    walk: Vec<u32>,
    /// Each process of the last full pass that belongs to a tree, with its
    /// root: what [`ProcScan::reread`] reads again.
    members: Vec<(i32, i32)>,
    page_size: u64,
    clk_tck: f64,
    /// Whether this kernel has smaps_rollup (Linux 4.14+).
    pss: bool,
}

impl ProcScan {
    /// Opens /proc.
    pub fn new() -> io::Result<Self> {
        let proc_dir = open_dir(b"/proc")?;
        // SAFETY: sysconf(3) with valid names.
        let (page, tck) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        Ok(ProcScan {
            proc_dir,
            dents: vec![0; 32 * 1024],
            file: vec![0; 4096],
            procs: Vec::with_capacity(256),
            index: HashMap::with_capacity(256),
            owner: Vec::with_capacity(256),
            walk: Vec::with_capacity(16),
            members: Vec::with_capacity(64),
            page_size: if page > 0 { page as u64 } else { 4096 },
            clk_tck: if tck > 0 { tck as f64 } else { 100.0 },
            pss: Path::new("/proc/self/smaps_rollup").exists(),
        })
    }

    /// Reads every process once and writes one [`TreeUsage`] per root into
    /// `out` (cleared first), in the order of `roots`. A root that has gone
    /// gets `processes: 0`. With `slow`, also the fields that cost more
    /// than a stat file to read: open fds and PSS (smaps_rollup walks the
    /// process's page tables, the largest cost of a pass).
    pub fn scan(&mut self, roots: &[i32], slow: bool, out: &mut Vec<TreeUsage>) {
        out.clear();
        out.extend(roots.iter().map(|&pid| TreeUsage {
            pid,
            ..TreeUsage::default()
        }));
        self.members.clear();
        if roots.is_empty() {
            return;
        }
        self.read_all();
        self.index.clear();
        for (i, p) in self.procs.iter().enumerate() {
            self.index.insert(p.pid, i as u32);
        }
        self.owner.clear();
        self.owner.resize(self.procs.len(), UNKNOWN);
        for (k, root) in roots.iter().enumerate() {
            if let Some(&i) = self.index.get(root) {
                self.owner[i as usize] = k as u32;
            }
        }
        for i in 0..self.procs.len() {
            let k = self.resolve(i as u32, roots);
            if k == NONE {
                continue;
            }
            let p = self.procs[i];
            self.members.push((roots[k as usize], p.pid));
            let u = &mut out[k as usize];
            u.processes += 1;
            u.rss_bytes += p.rss_pages * self.page_size;
            u.cpu_seconds += p.ticks as f64 / self.clk_tck;
            u.threads += p.threads;
            if !slow {
                continue;
            }
            *u.fds.get_or_insert(0) += self.count_fds(p.pid);
            if self.pss {
                // A process gone since its stat was read adds nothing.
                if let Some(kb) = self.read_pss(p.pid) {
                    *u.pss_bytes.get_or_insert(0) += kb * 1024;
                }
            }
        }
    }

    /// Reads again only the stat files of the processes the last [`scan`]
    /// found in the tree rooted at `root`, without listing /proc: memory,
    /// CPU and threads, not the slow fields. A process that joined the tree
    /// since is counted from the next full pass; one gone since adds
    /// nothing; `processes: 0` if none is left. A root the last pass did
    /// not see (started since) is read alone.
    ///
    /// [`scan`]: ProcScan::scan
    pub fn reread(&mut self, root: i32) -> TreeUsage {
        let mut u = TreeUsage {
            pid: root,
            ..TreeUsage::default()
        };
        let mut known = false;
        for k in 0..self.members.len() {
            let (r, pid) = self.members[k];
            if r != root {
                continue;
            }
            known = true;
            self.add(pid, &mut u);
        }
        if !known {
            self.add(root, &mut u);
        }
        u
    }

    /// Adds process `pid`'s stat figures to `u`, if it is still there.
    fn add(&mut self, pid: i32, u: &mut TreeUsage) {
        if let Some(p) = read_stat(pid, &mut self.file) {
            u.processes += 1;
            u.rss_bytes += p.rss_pages * self.page_size;
            u.cpu_seconds += p.ticks as f64 / self.clk_tck;
            u.threads += p.threads;
        }
    }

    /// The tree (index into roots) process `i` belongs to, by the one rule
    /// of `crate::tree`: its own group's root, else its parent's tree,
    /// walking up until a known owner and remembering the answer for the
    /// path.
    fn resolve(&mut self, i: u32, roots: &[i32]) -> u32 {
        self.walk.clear();
        let mut cur = i;
        let found = loop {
            let o = self.owner[cur as usize];
            if o != UNKNOWN {
                break o;
            }
            let p = self.procs[cur as usize];
            let ids = tree::Ids {
                ppid: p.ppid,
                pgrp: p.pgrp,
            };
            if let Some(root) = tree::direct(p.pid, ids, |r| roots.contains(&r)) {
                if let Some(k) = roots.iter().position(|r| *r == root) {
                    break k as u32;
                }
            }
            self.walk.push(cur);
            let ppid = self.procs[cur as usize].ppid;
            match self.index.get(&ppid) {
                // A cycle cannot happen in a consistent tree; a pass over a
                // changing /proc may still see one, so bound the walk.
                Some(&parent) if self.walk.len() < 4096 => cur = parent,
                _ => break NONE,
            }
        };
        for &w in &self.walk {
            self.owner[w as usize] = found;
        }
        found
    }

    /// Lists /proc and reads each process's stat file into `procs`.
    fn read_all(&mut self) {
        self.procs.clear();
        // SAFETY: lseek(2) on a directory fd we own rewinds its listing.
        unsafe { libc::lseek(self.proc_dir.as_raw_fd(), 0, libc::SEEK_SET) };
        loop {
            let n = getdents(&self.proc_dir, &mut self.dents);
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                let (name, next) = dirent_name(&self.dents[..n], off);
                off = next;
                let Some(pid) = parse_pid(name) else { continue };
                if let Some(p) = read_stat(pid, &mut self.file) {
                    self.procs.push(p);
                }
            }
        }
    }

    /// Counts /proc/PID/fd entries; 0 if the process has gone.
    fn count_fds(&mut self, pid: i32) -> u64 {
        let mut path = PathBuf64::new();
        path.push(b"/proc/").push_num(pid as u64).push(b"/fd");
        let Ok(fd) = open_dir(path.bytes()) else {
            return 0;
        };
        let mut count = 0;
        loop {
            let n = getdents(&fd, &mut self.dents);
            if n == 0 {
                return count;
            }
            let mut off = 0;
            while off < n {
                let (name, next) = dirent_name(&self.dents[..n], off);
                off = next;
                if name != b"." && name != b".." {
                    count += 1;
                }
            }
        }
    }

    /// The `Pss:` line of /proc/PID/smaps_rollup, kB.
    fn read_pss(&mut self, pid: i32) -> Option<u64> {
        let mut path = PathBuf64::new();
        path.push(b"/proc/")
            .push_num(pid as u64)
            .push(b"/smaps_rollup");
        let n = read_into(path.bytes(), &mut self.file)?;
        let text = &self.file[..n];
        let at = find(text, b"\nPss:")?;
        let rest = &text[at + 5..];
        let digits = rest
            .iter()
            .skip_while(|b| **b == b' ')
            .take_while(|b| b.is_ascii_digit());
        Some(digits.fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
    }
}

/// Reads and parses /proc/PID/stat.
fn read_stat(pid: i32, buf: &mut [u8]) -> Option<Proc> {
    let mut path = PathBuf64::new();
    path.push(b"/proc/").push_num(pid as u64).push(b"/stat");
    let n = read_into(path.bytes(), buf)?;
    parse_stat(pid, &buf[..n])
}

/// Parses a stat line. `comm` (field 2) may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(pid: i32, line: &[u8]) -> Option<Proc> {
    let close = line.iter().rposition(|b| *b == b')')?;
    // Field 3 (state) is the first after ") ".
    let mut fields = line[close + 1..]
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty());
    let mut get = |skip: usize| -> Option<u64> { parse_u64(fields.nth(skip)?) };
    let ppid = get(1)?; // field 4 (skip 3)
    let pgrp = get(0)?; // field 5
    let utime = get(8)?; // field 14
    let stime = get(0)?; // field 15
    let threads = get(4)?; // field 20
    let rss = get(3)?; // field 24
    Some(Proc {
        pid,
        ppid: ppid as i32,
        pgrp: pgrp as i32,
        ticks: utime + stime,
        threads,
        rss_pages: rss,
    })
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, d| {
        acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
    }))
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    parse_u64(name)
        .filter(|p| *p > 0 && *p <= i32::MAX as u64)
        .map(|p| p as i32)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads up to `buf.len()` bytes of a file; `None` if it cannot be opened.
fn read_into(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    let mut f = File::open(Path::new(OsStr::from_bytes(path))).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(n)
}

fn open_dir(path: &[u8]) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(Path::new(OsStr::from_bytes(path)))?;
    Ok(OwnedFd::from(f))
}

/// getdents64(2) into `buf`; the number of bytes filled, 0 at the end or on
/// error (a process that vanished mid-listing).
fn getdents(dir: &OwnedFd, buf: &mut [u8]) -> usize {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n > 0 {
        n as usize
    } else {
        0
    }
}

/// The name of the `linux_dirent64` at `off` and the offset of the next:
/// `d_ino` u64, `d_off` i64, `d_reclen` u16, `d_type` u8, then the
/// NUL-terminated name (getdents64(2)).
fn dirent_name(buf: &[u8], off: usize) -> (&[u8], usize) {
    let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
    let end = (off + reclen).min(buf.len());
    let raw = &buf[(off + 19).min(end)..end];
    let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    (&raw[..len], end.max(off + 1))
}

/// A short path built on the stack.
struct PathBuf64 {
    buf: [u8; 64],
    len: usize,
}

impl PathBuf64 {
    fn new() -> Self {
        PathBuf64 {
            buf: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    fn push_num(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line =
            b"42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 123 1000 77 1844";
        let p = parse_stat(42, line).unwrap();
        assert_eq!((p.ppid, p.ticks, p.threads, p.rss_pages), (7, 300, 3, 77));
    }

    #[test]
    fn a_tree_is_the_root_and_its_descendants() {
        let me = std::process::id() as i32;
        // `read` returns once the child's final image runs: it writes the
        // line itself, after exec, so it has memory to count.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "print('up', flush=True); import time; time.sleep(30)"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 3];
        child.stdout.take().unwrap().read_exact(&mut line).unwrap();
        let mut scan = ProcScan::new().unwrap();
        let mut out = Vec::new();
        scan.scan(&[me, child.id() as i32], true, &mut out);
        let _ = child.kill();
        let _ = child.wait();
        // The child is its own root here, so it is not counted under `me`.
        assert_eq!(out[1].processes, 1);
        assert!(
            out[0].processes >= 1
                && out[0].rss_bytes > 0
                && out[0].threads >= 1
                && out[0].fds >= Some(3)
        );
        assert!(out[1].rss_bytes > 0);
    }

    #[test]
    fn a_root_started_since_the_last_pass_is_read_alone() {
        let me = std::process::id() as i32;
        let mut scan = ProcScan::new().unwrap();
        let mut out = Vec::new();
        scan.scan(&[], false, &mut out);
        let u = scan.reread(me);
        assert_eq!(u.processes, 1);
        assert!(u.rss_bytes > 0 && u.threads >= 1);
        assert_eq!(scan.reread(i32::MAX).processes, 0);
    }

    #[test]
    fn a_gone_root_has_no_processes() {
        let mut scan = ProcScan::new().unwrap();
        let mut out = Vec::new();
        scan.scan(&[i32::MAX], true, &mut out);
        assert_eq!(out[0].processes, 0);
    }
}
