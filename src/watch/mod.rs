//! PM2's `watch`: restart an app when files under its directory change.
//!
//! PM2 (`lib/Watcher.js` `enable`) watches `watch` (a path, a list of
//! paths, or the app's directory for `true` and for an empty list) with
//! chokidar, skipping `ignore_watch` (see [`ignore`]); at the first change
//! it waits `watch_delay` (`setTimeout(..., pm2_env.watch_delay || 0)`,
//! so 0 when unset), restarts the app, and skips every change until that
//! restart is done ("Already restarting, skipping"). procward does the
//! same: this module reports the first change after `watch_delay`, having
//! absorbed the ones in between; the supervisor skips reports while the
//! app is still being restarted for an earlier one.
//!
//! Watching uses inotify through the `notify` crate, one inotify instance
//! per app and one watch per directory, added here, directory by
//! directory: ignored directories (`node_modules` by default) are never
//! walked, so a dependency tree of any size costs nothing. (notify's own
//! recursive mode would walk and watch everything first.) A directory
//! created later, or moved in, is walked when its event arrives. When the
//! kernel's watch limit (`fs.inotify.max_user_watches`) is reached, one
//! warning says so and how to raise it; what is watched by then stays
//! watched.
//!
//! Nothing runs when `watch` is off: no inotify instance, no thread, no
//! task. When on, notify runs one thread per app blocked in the kernel;
//! its events come here through a bounded channel. notify 8.0 also asks
//! the kernel for opens (IN_OPEN): files the app opens under a watched
//! directory wake that thread, and the events are dropped there, before
//! the channel (PM2's chokidar reports no reads either). When that channel is
//! full the event is dropped and the tree is walked again for directories
//! it may have missed (the same as inotify's own queue overflow): a change
//! is never lost, only merged.
//!
//! Like `ready/`, this is a source: it sends [`Report`]s through the
//! sender it is given and knows nothing of the supervisor.

pub mod ignore;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::app::WatchSpec;
use ignore::Ignore;

/// A change that restarts the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The app, by its index in the list of apps.
    pub app: usize,
    /// The first path that changed, for the log line.
    pub path: PathBuf,
}

/// Events waiting between notify's thread and the task; beyond this they
/// are merged (see the module doc).
const EVENTS: usize = 1024;

/// Where the kernel's watch limits are read, for the warning: the
/// per-user limit of the host, and the one of procward's user namespace
/// (a container's; ucounts, Linux 5.11 and later).
const WATCH_LIMITS: [(&str, &str); 2] = [
    (
        "fs.inotify.max_user_watches",
        "/proc/sys/fs/inotify/max_user_watches",
    ),
    (
        "user.max_inotify_watches",
        "/proc/sys/user/max_inotify_watches",
    ),
];

/// Starts watching for app `app` (named `name` in logs); reports go to
/// `tx`. A watcher that cannot be set up (no inotify instance left) is a
/// warning: the app runs, unwatched.
pub fn spawn(
    app: usize,
    name: String,
    spec: WatchSpec,
    tx: mpsc::Sender<Report>,
) -> JoinHandle<()> {
    tokio::spawn(run(app, name, spec, tx))
}

/// What notify's thread passes on.
enum Incoming {
    Event(notify::Event),
    Error(notify::Error),
}

async fn run(app: usize, name: String, spec: WatchSpec, tx: mpsc::Sender<Report>) {
    let (etx, mut erx) = mpsc::channel::<Incoming>(EVENTS);
    let overflow = Arc::new(AtomicBool::new(false));
    let lost = overflow.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let item = match res {
            // Reads (PM2's chokidar reports none) are the app at work.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) && !ev.need_rescan() => return,
            Ok(ev) => Incoming::Event(ev),
            Err(e) => Incoming::Error(e),
        };
        if etx.try_send(item).is_err() {
            lost.store(true, Ordering::Relaxed);
        }
    };
    let watcher = match RecommendedWatcher::new(handler, notify::Config::default()) {
        Ok(w) => w,
        Err(e) => {
            warn!(app = %name, error = %e,
                  "cannot watch files: the app runs without watch (too many inotify instances? see fs.inotify.max_user_instances)");
            return;
        }
    };
    let mut tree = Tree::new(&name, &spec, watcher);
    let roots: Vec<PathBuf> = tree.roots.clone();
    tree = walk_blocking(tree, roots).await;
    info!(app = %name, directories = tree.watched, delay_ms = spec.delay.as_millis() as u64,
          "watching for changes");
    let mut due: Option<(Instant, PathBuf)> = None;
    loop {
        let deadline = due.as_ref().map(|(at, _)| *at);
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = erx.recv() => {
                let Some(item) = item else { return };
                let mut changed = None;
                let mut new_dirs = Vec::new();
                match item {
                    Incoming::Event(ev) => {
                        if ev.need_rescan() {
                            overflow.store(true, Ordering::Relaxed);
                        }
                        changed = tree.relevant(&ev, &mut new_dirs);
                    }
                    Incoming::Error(e) => debug!(app = %name, error = %e, "watch error"),
                }
                if overflow.swap(false, Ordering::Relaxed) {
                    // Events were dropped: something changed, and new
                    // directories may be unwatched.
                    debug!(app = %name, "watch events merged; walking the tree again");
                    new_dirs = tree.roots.clone();
                    changed = changed.or_else(|| tree.roots.first().cloned());
                }
                if !new_dirs.is_empty() {
                    tree = walk_blocking(tree, new_dirs).await;
                }
                if let (Some(path), None) = (changed, &due) {
                    debug!(app = %name, path = %path.display(), "change; restart due after watch_delay");
                    due = Some((Instant::now() + spec.delay, path));
                }
            }
            _ = timer => {
                if let Some((_, path)) = due.take() {
                    if tx.send(Report { app, path }).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Walks `dirs` off the runtime's thread (a large tree takes a while, and
/// each watch is a round trip to notify's thread), on a thread of its own;
/// here when no thread can be made (out of pids), rather than not at all.
async fn walk_blocking(tree: Tree, dirs: Vec<PathBuf>) -> Tree {
    let (done, walked) = tokio::sync::oneshot::channel();
    let job = std::sync::Arc::new(std::sync::Mutex::new(Some((tree, dirs))));
    let theirs = job.clone();
    let started = std::thread::Builder::new()
        .name("watch-walk".into())
        .spawn(move || {
            let taken = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((mut tree, dirs)) = taken {
                dirs.into_iter().for_each(|d| tree.walk(d));
                let _ = done.send(tree);
            }
        });
    if started.is_ok() {
        if let Ok(tree) = walked.await {
            return tree;
        }
    }
    let taken = job.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((mut tree, dirs)) = taken else {
        // Only a panic on the walking thread gets here.
        warn!("walking the watched tree failed; the app runs unwatched from now on");
        return std::future::pending().await;
    };
    dirs.into_iter().for_each(|d| tree.walk(d));
    tree
}

/// What is watched for one app.
struct Tree {
    name: String,
    /// Watched directories, each with everything under it.
    roots: Vec<PathBuf>,
    /// Watched files (their directory is watched for them, so a file
    /// replaced by a rename, as editors save, is still seen).
    files: Vec<PathBuf>,
    ignore: Ignore,
    follow_symlinks: bool,
    watcher: RecommendedWatcher,
    /// Directories watched.
    watched: usize,
    /// Whether the watch-limit warning was given.
    limit_warned: bool,
}

impl Tree {
    fn new(name: &str, spec: &WatchSpec, watcher: RecommendedWatcher) -> Tree {
        let ignore = match &spec.ignore {
            Some(entries) => Ignore::globs(entries, &spec.base),
            None => Ignore::Pm2Default,
        };
        let (mut roots, mut files) = (Vec::new(), Vec::new());
        for p in &spec.paths {
            if p.is_dir() {
                roots.push(p.clone());
            } else {
                files.push(p.clone());
            }
        }
        Tree {
            name: name.to_string(),
            roots,
            files,
            ignore,
            follow_symlinks: spec.follow_symlinks,
            watcher,
            watched: 0,
            limit_warned: false,
        }
    }

    /// The root directory `path` is under.
    fn root_of(&self, path: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .find(|r| path.starts_with(r))
            .map(PathBuf::as_path)
    }

    /// The path of `ev` that restarts the app, if any; directories that
    /// appeared (created or moved in) go to `new_dirs`.
    fn relevant(&self, ev: &notify::Event, new_dirs: &mut Vec<PathBuf>) -> Option<PathBuf> {
        let mut changed = None;
        for p in &ev.paths {
            let ignored = match self.root_of(p) {
                Some(root) => self.ignore.ignores(root, p),
                None if self.files.contains(p) => false,
                None => true,
            };
            if ignored {
                continue;
            }
            let appeared = matches!(
                ev.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
            );
            if appeared && self.root_of(p).is_some() && self.is_walkable(p) {
                new_dirs.push(p.clone());
            }
            changed.get_or_insert_with(|| p.clone());
        }
        changed
    }

    /// Whether `p` is a directory to walk into: a real one, or a link to
    /// one when links are followed (`watch_options.followSymlinks`).
    fn is_walkable(&self, p: &Path) -> bool {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => true,
            Ok(m) if m.file_type().is_symlink() => {
                self.follow_symlinks && std::fs::metadata(p).is_ok_and(|m| m.is_dir())
            }
            _ => false,
        }
    }

    /// Watches `start` and every directory under it that is not ignored;
    /// a watched file's directory is watched on its own.
    fn walk(&mut self, start: PathBuf) {
        use std::os::unix::fs::MetadataExt;
        if self.files.contains(&start) {
            if let Some(dir) = start.parent() {
                self.add(dir);
            }
            return;
        }
        let Some(root) = self.root_of(&start).map(Path::to_path_buf) else {
            return;
        };
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            if dir != root && self.ignore.ignores(&root, &dir) {
                continue;
            }
            // A directory reached twice through links is walked once.
            match std::fs::metadata(&dir) {
                Ok(m) if seen.insert((m.dev(), m.ino())) => {}
                _ => continue,
            }
            if !self.add(&dir) {
                return;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                let into = ft.is_dir()
                    || (ft.is_symlink()
                        && self.follow_symlinks
                        && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()));
                if into && !self.ignore.ignores(&root, &path) {
                    stack.push(path);
                }
            }
        }
    }

    /// Watches one directory; false once the kernel's limit is reached.
    fn add(&mut self, dir: &Path) -> bool {
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched += 1;
                true
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                if !self.limit_warned {
                    self.limit_warned = true;
                    warn!(app = %self.name, watched = self.watched, "{}", limit_warning());
                }
                false
            }
            // It went away between listing and watching: nothing to do.
            Err(e) => {
                debug!(app = %self.name, dir = %dir.display(), error = %e, "not watched");
                true
            }
        }
    }
}

/// The one warning given when the kernel's watch limit is reached,
/// naming the lower of the two limits.
fn limit_warning() -> String {
    let (name, limit) = WATCH_LIMITS
        .iter()
        .filter_map(|(name, path)| {
            let n: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
            Some((*name, n))
        })
        .min_by_key(|(_, n)| *n)
        .unwrap_or(("fs.inotify.max_user_watches", 0));
    format!(
        "the inotify watch limit is reached ({name} = {limit}, shared by every process of this \
         user): changes in the directories not yet watched restart nothing; raise it \
         (`sysctl -w {name}=524288`, on the host for a container) or list large directories \
         in `ignore_watch`"
    )
}

/// `watch_delay` when the key is not set (`lib/Watcher.js`:
/// `pm2_env.watch_delay || 0`).
pub const PM2_WATCH_DELAY: Duration = Duration::ZERO;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, ignore: Option<Vec<String>>, delay: Duration) -> WatchSpec {
        WatchSpec {
            paths: vec![dir.to_path_buf()],
            ignore,
            delay,
            follow_symlinks: true,
            base: dir.to_path_buf(),
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Report>, within: Duration) -> Option<Report> {
        tokio::time::timeout(within, rx.recv()).await.ok().flatten()
    }

    /// Waits until the watcher has walked the tree: a change to a probe
    /// file is reported.
    async fn settled(dir: &Path, rx: &mut mpsc::Receiver<Report>) {
        for i in 0..50 {
            std::fs::write(dir.join("probe"), i.to_string()).unwrap();
            if next(rx, Duration::from_millis(200)).await.is_some() {
                // Drain what the probe may still send.
                while next(rx, Duration::from_millis(100)).await.is_some() {}
                return;
            }
        }
        panic!("the watcher never reported the probe");
    }

    #[tokio::test]
    async fn a_burst_within_the_delay_is_one_report() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let task = spawn(
            3,
            "t".into(),
            spec(dir.path(), None, Duration::from_millis(300)),
            tx,
        );
        settled(dir.path(), &mut rx).await;
        for i in 0..100 {
            std::fs::write(dir.path().join(format!("f{i}.js")), "x").unwrap();
        }
        let r = next(&mut rx, Duration::from_secs(3))
            .await
            .expect("a report");
        assert_eq!(r.app, 3);
        assert!(next(&mut rx, Duration::from_millis(600)).await.is_none());
        task.abort();
    }

    #[tokio::test]
    async fn node_modules_and_dot_dirs_are_neither_walked_nor_reported() {
        let dir = tempfile::tempdir().unwrap();
        let nm = dir.path().join("node_modules");
        for i in 0..200 {
            std::fs::create_dir_all(nm.join(format!("p{i}/lib"))).unwrap();
        }
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("src/a")).unwrap();
        let watcher = RecommendedWatcher::new(|_| {}, notify::Config::default()).unwrap();
        let mut tree = Tree::new("t", &spec(dir.path(), None, Duration::ZERO), watcher);
        tree.walk(dir.path().to_path_buf());
        // The root, src and src/a: nothing under node_modules or .git.
        assert_eq!(tree.watched, 3);

        let (tx, mut rx) = mpsc::channel(16);
        let task = spawn(0, "t".into(), spec(dir.path(), None, Duration::ZERO), tx);
        settled(dir.path(), &mut rx).await;
        std::fs::write(nm.join("p1/lib/index.js"), "x").unwrap();
        std::fs::write(nm.join("new.js"), "x").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        assert!(next(&mut rx, Duration::from_millis(500)).await.is_none());
        task.abort();
    }

    #[tokio::test]
    async fn new_directories_are_watched_and_ignore_globs_apply() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let task = spawn(
            0,
            "t".into(),
            spec(
                dir.path(),
                Some(vec!["*.log".into(), "tmp".into()]),
                Duration::ZERO,
            ),
            tx,
        );
        settled(dir.path(), &mut rx).await;
        std::fs::create_dir_all(dir.path().join("tmp/x")).unwrap();
        std::fs::write(dir.path().join("tmp/x/a"), "x").unwrap();
        std::fs::write(dir.path().join("out.log"), "x").unwrap();
        assert!(next(&mut rx, Duration::from_millis(500)).await.is_none());
        std::fs::create_dir_all(dir.path().join("lib/deep")).unwrap();
        let r = next(&mut rx, Duration::from_secs(2)).await.expect("mkdir");
        assert!(r.path.starts_with(dir.path().join("lib")), "{r:?}");
        while next(&mut rx, Duration::from_millis(200)).await.is_some() {}
        std::fs::write(dir.path().join("lib/deep/x.js"), "x").unwrap();
        let r = next(&mut rx, Duration::from_secs(2))
            .await
            .expect("a file in a new dir");
        assert_eq!(r.path, dir.path().join("lib/deep/x.js"));
        task.abort();
    }

    #[test]
    fn the_limit_warning_says_how_to_raise_it() {
        let w = limit_warning();
        assert!(
            w.contains("max_user_watches = ") || w.contains("max_inotify_watches = "),
            "{w}"
        );
        assert!(w.contains("sysctl -w"), "{w}");
    }
}
