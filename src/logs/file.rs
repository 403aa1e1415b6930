//! One log file: appended to by the threads of every stream that writes
//! it (a merged file has several), rotated by size, reopened after SIGUSR2.
//!
//! A write that fails (full disk, a directory that is read-only or gone)
//! is reported once, its bytes are counted in
//! `procward_log_bytes_dropped_total`, and the app goes on: the next write
//! tries again (a file that could not be opened at most once a second), and
//! "writing again" is reported when it works. Nothing here stops or
//! restarts an app.
//!
//! Rotation follows logrotate's numbering: `out.log` becomes `out.log.1`,
//! `.1` becomes `.2`, and so on up to `retain`; with `compress` the rotated
//! file is gzipped (`out.log.1.gz`) before the next line is written, so the
//! app's writes wait meanwhile (about 0.1 s per 10 MB), as they wait for
//! any slow sink.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::{info, warn};

/// How a file rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write that would take the file past this size.
    pub max_size: Option<u64>,
    /// Rotated files kept.
    pub retain: u32,
    /// Gzip rotated files.
    pub compress: bool,
}

/// A log file shared by the streams that write it.
pub struct FileSink {
    path: PathBuf,
    app: String,
    rotation: Rotation,
    dropped: IntCounter,
    /// Bumped by SIGUSR2; a sink that sees a new value reopens its file.
    reopen: Arc<AtomicU64>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    file: Option<File>,
    size: u64,
    seen_reopen: u64,
    /// Set while writes fail, so the failure is reported once.
    failing: bool,
    next_open: Option<Instant>,
}

impl FileSink {
    /// A sink for `path`; the file is opened on the first write.
    pub fn new(
        path: PathBuf,
        app: String,
        rotation: Rotation,
        dropped: IntCounter,
        reopen: Arc<AtomicU64>,
    ) -> FileSink {
        FileSink {
            path,
            app,
            rotation,
            dropped,
            reopen,
            state: Mutex::new(State::default()),
        }
    }

    /// Appends whole lines. Blocks while the disk is slow; never fails.
    pub fn write(&self, bytes: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.reopen.load(Ordering::Relaxed);
        if generation != st.seen_reopen {
            st.seen_reopen = generation;
            st.file = None;
            st.next_open = None;
        }
        if st.file.is_none() && st.next_open.is_none_or(|t| Instant::now() >= t) {
            self.open(&mut st);
        }
        if let (Some(max), Some(_)) = (self.rotation.max_size, &st.file) {
            if st.size > 0 && st.size + bytes.len() as u64 > max {
                self.rotate(&mut st);
            }
        }
        let Some(file) = st.file.as_mut() else {
            self.dropped.inc_by(bytes.len() as u64);
            return;
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed(&mut st, "cannot write", &e);
                    break;
                }
            }
        }
        let written = bytes.len() - rest.len();
        st.size += written as u64;
        if rest.is_empty() && st.failing {
            st.failing = false;
            info!(app = %self.app, path = %self.path.display(), "writing the log file again");
        }
        self.dropped.inc_by(rest.len() as u64);
    }

    fn open(&self, st: &mut State) {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                st.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                st.file = Some(f);
                st.next_open = None;
            }
            Err(e) => {
                st.next_open = Some(Instant::now() + Duration::from_secs(1));
                self.failed(st, "cannot open", &e);
            }
        }
    }

    /// Reports a failure once per run of failures. The file stays open
    /// after a full disk (space may come back); after anything else it is
    /// reopened, at most once a second.
    fn failed(&self, st: &mut State, what: &str, e: &io::Error) {
        if !st.failing {
            st.failing = true;
            let hint = match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => "free some space; lines are dropped and counted until then",
                Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM) => {
                    "make the directory writable for procward; lines are dropped and counted until then"
                }
                Some(libc::ENOENT) => "create the directory; lines are dropped and counted until then",
                _ => "lines are dropped and counted until it works again",
            };
            warn!(app = %self.app, path = %self.path.display(), error = %e,
                  "{what} the log file; the app keeps running ({hint})");
        }
        if !matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            st.file = None;
            st.next_open
                .get_or_insert(Instant::now() + Duration::from_secs(1));
        }
    }

    fn rotate(&self, st: &mut State) {
        st.file = None;
        let retain = self.rotation.retain;
        let numbered = |n: u32, gz: bool| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}{}", if gz { ".gz" } else { "" }));
            PathBuf::from(p)
        };
        let result = (|| -> io::Result<()> {
            for gz in [false, true] {
                let _ = std::fs::remove_file(numbered(retain, gz));
                for n in (1..retain).rev() {
                    match std::fs::rename(numbered(n, gz), numbered(n + 1, gz)) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
            if retain == 0 {
                return std::fs::remove_file(&self.path);
            }
            std::fs::rename(&self.path, numbered(1, false))?;
            if self.rotation.compress {
                gzip(&numbered(1, false), &numbered(1, true))?;
                std::fs::remove_file(numbered(1, false))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            warn!(app = %self.app, path = %self.path.display(), error = %e,
                  "cannot rotate the log file; writing on in the same file");
        }
        self.open(st);
    }
}

/// Compresses `from` into `to`.
fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = File::open(from)?;
    let out = File::create(to)?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    io::copy(&mut input, &mut enc)?;
    enc.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sink(dir: &Path, rotation: Rotation) -> FileSink {
        FileSink::new(
            dir.join("out.log"),
            "web".into(),
            rotation,
            IntCounter::new("d", "d").unwrap(),
            Arc::new(AtomicU64::new(0)),
        )
    }

    #[test]
    fn rotates_by_size_and_keeps_retain_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(
            dir.path(),
            Rotation {
                max_size: Some(10),
                retain: 2,
                compress: false,
            },
        );
        for line in ["aaaaaaaa\n", "bbbbbbbb\n", "cccccccc\n", "dddddddd\n"] {
            s.write(line.as_bytes());
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("out.log"), "dddddddd\n");
        assert_eq!(read("out.log.1"), "cccccccc\n");
        assert_eq!(read("out.log.2"), "bbbbbbbb\n");
        assert!(!dir.path().join("out.log.3").exists());
    }

    #[test]
    fn compresses_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink(
            dir.path(),
            Rotation {
                max_size: Some(10),
                retain: 3,
                compress: true,
            },
        );
        s.write(b"first line\n");
        s.write(b"second\n");
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(dir.path().join("out.log.1.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first line\n");
        assert!(!dir.path().join("out.log.1").exists());
    }

    #[test]
    fn an_unopenable_file_counts_the_bytes_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSink::new(
            dir.path().join("missing/out.log"),
            "web".into(),
            Rotation {
                max_size: None,
                retain: 1,
                compress: false,
            },
            IntCounter::new("d", "d").unwrap(),
            Arc::new(AtomicU64::new(0)),
        );
        s.write(b"lost\n");
        s.write(b"lost too\n");
        assert_eq!(s.dropped.get(), 14);
    }
}
