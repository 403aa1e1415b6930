//! Finding an observed app's processes in /proc: which processes match, and
//! which of them is the app's main process.
//!
//! Fields read, as documented in proc(5) (proc_pid_stat(5),
//! proc_pid_cmdline(5), proc_pid_exe(5) in newer man-pages):
//! - `/proc/PID/stat`: (3) `state` (`Z` zombie and `X` dead count as gone:
//!   a zombie's exit status waits for a parent that is not procward);
//!   (4) `ppid`; (22) `starttime`, clock ticks after boot. A pid and its
//!   start time name one process: a reused pid has another start time.
//! - `/proc/PID/cmdline`: the arguments, NUL-separated; matched joined by
//!   spaces. Empty for kernel threads.
//! - `/proc/PID/exe`: a link to the executable. Reading it needs the
//!   process's uid or CAP_SYS_PTRACE (ptrace access mode read, proc(5)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex_lite::Regex;

/// One process, named so that a reused pid is a different process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its start time, clock ticks after boot.
    pub start: u64,
}

/// What is read of one process to match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The process.
    pub proc: Proc,
    /// Its parent's pid (0 when the parent is outside the PID namespace).
    pub ppid: i32,
    /// Its arguments joined by spaces; empty for kernel threads.
    pub cmdline: String,
    /// Its executable, where readable.
    pub exe: Option<PathBuf>,
}

/// How an observed app's processes are recognised.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A regular expression matched anywhere in the command line.
    Cmdline(Regex),
    /// The executable: a full path, or a file name matched against the
    /// executable's file name.
    Exe(PathBuf),
    /// Every process tree but procward's own and PID 1 (the pod's pause
    /// process when the PID namespace is shared).
    AllTrees,
}

impl Matcher {
    /// Whether reading `/proc/PID/exe` is needed.
    pub fn needs_exe(&self) -> bool {
        matches!(self, Matcher::Exe(_))
    }

    fn matches(&self, s: &Seen) -> bool {
        match self {
            Matcher::Cmdline(re) => !s.cmdline.is_empty() && re.is_match(&s.cmdline),
            Matcher::Exe(want) => s.exe.as_deref().is_some_and(|exe| same_exe(exe, want)),
            Matcher::AllTrees => !s.cmdline.is_empty(),
        }
    }
}

fn same_exe(exe: &Path, want: &Path) -> bool {
    if want.components().count() > 1 {
        exe == want
    } else {
        exe.file_name() == want.file_name()
    }
}

/// Reads `/proc/PID/stat`: the process and its parent, or `None` when it
/// is gone, a zombie or unreadable.
pub fn stat(pid: i32) -> Option<(Proc, i32)> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Whether `p` still runs (same pid, same start time, not a zombie).
pub fn alive(p: Proc) -> bool {
    stat(p.pid).is_some_and(|(now, _)| now == p)
}

fn parse_stat(pid: i32, line: &[u8]) -> Option<(Proc, i32)> {
    // `comm` (field 2) may hold spaces and parentheses: count from the last `)`.
    let close = line.iter().rposition(|b| *b == b')')?;
    let text = std::str::from_utf8(&line[close + 1..]).ok()?;
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    // fields[0] is field 3.
    let state = *fields.first()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((Proc { pid, start }, ppid))
}

/// Reads every live process; the executable link only `with_exe`.
pub fn list(with_exe: bool) -> Vec<Seen> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Some((proc, ppid)) = stat(pid) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
                String::from_utf8_lossy(raw).replace('\0', " ")
            })
            .unwrap_or_default();
        let exe = with_exe
            .then(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .flatten();
        out.push(Seen {
            proc,
            ppid,
            cmdline,
            exe,
        });
    }
    out
}

/// The app's process trees in `procs`, oldest first: the first is its main
/// process. Processes in the tree of `own` (procward) never count.
///
/// With a command line or executable, a tree's root is a matching process
/// whose parent does not match (`sh -c 'node server.js'` gives the shell
/// when both match), and only the oldest tree is the app. With
/// [`Matcher::AllTrees`], every tree whose root's parent is outside the
/// namespace (ppid 0) or PID 1 is the app, PID 1 itself excluded.
pub fn choose(procs: &[Seen], matcher: &Matcher, own: i32) -> Vec<Proc> {
    let by_pid: HashMap<i32, &Seen> = procs.iter().map(|s| (s.proc.pid, s)).collect();
    let in_own_tree = |s: &Seen| {
        let (mut pid, mut ppid) = (s.proc.pid, s.ppid);
        // Bounded: a /proc that changes during the pass may show a cycle.
        for _ in 0..4096 {
            if pid == own {
                return true;
            }
            match by_pid.get(&ppid) {
                Some(parent) => (pid, ppid) = (parent.proc.pid, parent.ppid),
                None => return false,
            }
        }
        false
    };
    let mut roots: Vec<&Seen> = procs
        .iter()
        .filter(|s| matcher.matches(s) && !in_own_tree(s))
        .filter(|s| match matcher {
            Matcher::AllTrees => s.proc.pid != 1 && (s.ppid <= 1 || !by_pid.contains_key(&s.ppid)),
            Matcher::Cmdline(_) | Matcher::Exe(_) => by_pid
                .get(&s.ppid)
                .is_none_or(|parent| !matcher.matches(parent)),
        })
        .collect();
    roots.sort_by_key(|s| (s.proc.start, s.proc.pid));
    if !matches!(matcher, Matcher::AllTrees) {
        roots.truncate(1);
    }
    roots.into_iter().map(|s| s.proc).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pid: i32, ppid: i32, start: u64, cmdline: &str, exe: &str) -> Seen {
        Seen {
            proc: Proc { pid, start },
            ppid,
            cmdline: cmdline.into(),
            exe: Some(exe.into()),
        }
    }

    /// A pod with a shared PID namespace: pause, procward, the app's shell
    /// and node, a `kubectl exec` shell, and a kernel-thread-like entry.
    fn pod() -> Vec<Seen> {
        vec![
            seen(1, 0, 10, "/pause", "/pause"),
            seen(
                7,
                0,
                20,
                "procward observe --match node .*server.js",
                "/procward",
            ),
            seen(12, 0, 30, "sh -c node server.js", "/bin/sh"),
            seen(13, 12, 31, "node server.js", "/usr/bin/node"),
            seen(14, 13, 32, "node worker.js", "/usr/bin/node"),
            seen(40, 0, 90, "sh", "/bin/sh"),
            seen(41, 1, 95, "", "/x"),
        ]
    }

    fn pids(v: Vec<Proc>) -> Vec<i32> {
        v.into_iter().map(|p| p.pid).collect()
    }

    #[test]
    fn a_command_line_finds_the_topmost_match_but_never_procward() {
        let m = Matcher::Cmdline(Regex::new("node .*server.js").unwrap());
        assert_eq!(pids(choose(&pod(), &m, 7)), vec![12]);
        let m = Matcher::Cmdline(Regex::new("^node ").unwrap());
        assert_eq!(pids(choose(&pod(), &m, 7)), vec![13]);
        let m = Matcher::Cmdline(Regex::new("ruby").unwrap());
        assert!(choose(&pod(), &m, 7).is_empty());
    }

    #[test]
    fn an_executable_matches_by_path_or_file_name() {
        assert_eq!(
            pids(choose(&pod(), &Matcher::Exe("node".into()), 7)),
            vec![13]
        );
        assert_eq!(
            pids(choose(&pod(), &Matcher::Exe("/usr/bin/node".into()), 7)),
            vec![13]
        );
        assert!(choose(&pod(), &Matcher::Exe("/opt/node".into()), 7).is_empty());
    }

    #[test]
    fn all_trees_leave_out_pause_procward_and_kernel_threads() {
        assert_eq!(pids(choose(&pod(), &Matcher::AllTrees, 7)), vec![12, 40]);
    }

    #[test]
    fn the_oldest_match_is_the_main_process() {
        let mut procs = pod();
        procs.push(seen(50, 0, 5, "node server.js", "/usr/bin/node"));
        let m = Matcher::Cmdline(Regex::new("server").unwrap());
        assert_eq!(pids(choose(&procs, &m, 7)), vec![50]);
    }

    #[test]
    fn stat_lines_give_state_parent_and_start_time() {
        let line = b"42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 123 1000 77";
        assert_eq!(
            parse_stat(42, line),
            Some((
                Proc {
                    pid: 42,
                    start: 123
                },
                7
            ))
        );
        let zombie = b"42 (x) Z 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 123 1000 77";
        assert_eq!(parse_stat(42, zombie), None);
    }
}
