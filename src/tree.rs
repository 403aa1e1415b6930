//! An instance's process tree, defined once.
//!
//! A process belongs to the tree of an instance whose main process is
//! `root` when it is the root, when it is in the root's process group (the
//! group procward made for it at spawn), or when its parent does. So a
//! worker that made its own group (setsid, setpgid) while its parent lives
//! belongs by its parent, and a daemon that double-forked (re-parented to
//! procward, the subreaper) belongs by its group. The same rule decides
//! whose memory counts towards `max_memory_restart` (`resources/procfs.rs`,
//! in one pass over /proc) and whose sd_notify datagrams are believed
//! (`ready/sd_notify.rs`, for one sender).
//!
//! Signals go to the group ([`signal`]): that is what a terminal does, and
//! it is one kill(2). A process that left both the group and its parent
//! (setsid after a double fork) is in no tree: only a PID namespace or a
//! cgroup can follow it.

use std::io;

/// The two ids that decide membership, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// Field 4, the parent.
    pub ppid: i32,
    /// Field 5, the process group.
    pub pgrp: i32,
}

/// The root whose tree `pid` belongs to without looking at its parent: the
/// root itself, or the root whose group it is in. `None`: decide by its
/// parent.
pub fn direct(pid: i32, ids: Ids, is_root: impl Fn(i32) -> bool) -> Option<i32> {
    if is_root(pid) {
        Some(pid)
    } else if is_root(ids.pgrp) {
        Some(ids.pgrp)
    } else {
        None
    }
}

/// Whether `pid` is in the tree of `root`, read from /proc now.
pub fn contains(root: i32, pid: i32) -> bool {
    let mut p = pid;
    // A pass over a changing /proc may see a cycle: bound the walk.
    for _ in 0..64 {
        if p <= 1 {
            return false;
        }
        let Some(ids) = read_ids(p) else {
            return false;
        };
        if direct(p, ids, |r| r == root).is_some() {
            return true;
        }
        p = ids.ppid;
    }
    false
}

/// Reads the ids of `pid` from /proc; `None` if it has gone.
pub fn read_ids(pid: i32) -> Option<Ids> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_ids(&stat)
}

/// The ids of a stat line. `comm` (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_ids(line: &[u8]) -> Option<Ids> {
    let close = line.iter().rposition(|b| *b == b')')?;
    let mut fields = line[close + 1..]
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty());
    fields.next()?; // field 3, the state letter
    let mut num = || -> Option<i32> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    Some(Ids {
        ppid: num()?,
        pgrp: num()?,
    })
}

/// Sends `signo` to the tree's process group. A group already gone (ESRCH)
/// is not an error: the exit is on its way to the reaper.
pub fn signal(root: i32, signo: i32) -> io::Result<()> {
    crate::init::terminal::sending(root, signo);
    // SAFETY: kill(2) with integer arguments.
    let rc = unsafe { libc::kill(-root, signo) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Whether any process is left in the tree's process group (kill(2) with
/// signal 0; a zombie not yet reaped still counts).
pub fn group_alive(root: i32) -> bool {
    // SAFETY: kill(2) with integer arguments and signal 0 sends nothing.
    let rc = unsafe { libc::kill(-root, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_after_the_command_name_whatever_it_holds() {
        let ids = parse_ids(b"42 (a) b (c) S 7 9 9 0 -1").unwrap();
        assert_eq!(ids, Ids { ppid: 7, pgrp: 9 });
        assert_eq!(parse_ids(b"42 (x"), None);
    }

    #[test]
    fn a_member_of_the_group_or_a_descendant_belongs_and_the_parent_does_not() {
        let me = std::process::id() as i32;
        // SAFETY: getppid(2) and getpgid(2) with integers.
        let (parent, group) = unsafe { (libc::getppid(), libc::getpgid(0)) };
        assert!(contains(me, me));
        assert!(contains(parent, me), "a descendant");
        assert!(contains(group, me), "in the group");
        assert!(!contains(me, parent));
        assert!(!contains(me, 0));
        let root = |r: i32| r == 5;
        assert_eq!(direct(5, Ids { ppid: 1, pgrp: 5 }, root), Some(5));
        assert_eq!(
            direct(8, Ids { ppid: 1, pgrp: 5 }, root),
            Some(5),
            "re-parented, same group"
        );
        assert_eq!(
            direct(8, Ids { ppid: 5, pgrp: 8 }, root),
            None,
            "decided by its parent"
        );
    }
}
