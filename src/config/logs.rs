//! What to do with an app's stdout and stderr (PM2's log keys).
//!
//! The default is pass-through: the app inherits procward's descriptors and
//! procward never sees a byte. Any key that asks for something procward has
//! to do itself (a file, a timestamp, JSON lines, a prefix) turns capture
//! on for that app; `crate::logs` does the capturing.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// PM2's `time: true` format (`lib/God.js`, `YYYY-MM-DDTHH:mm:ss`).
pub const PM2_TIME_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss";

/// Where a stream goes and how its lines look.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogSpec {
    /// PM2 `out_file`: the app's stdout.
    pub out_file: Option<PathBuf>,
    /// PM2 `error_file`: the app's stderr.
    pub error_file: Option<PathBuf>,
    /// PM2 `log_file`: both streams.
    pub log_file: Option<PathBuf>,
    /// PM2 `log_date_format` (dayjs tokens); `time: true` sets PM2's.
    pub date_format: Option<String>,
    /// PM2 `log_type: json`: one JSON object per line.
    pub json: bool,
    /// procward's `log_prefix`: `app-N | ` before each line, as
    /// `docker compose` prints.
    pub prefix: bool,
    /// PM2 `merge_logs`: every instance writes the same files instead of
    /// one per instance.
    pub merge: bool,
    /// PM2 `disable_logs`: both streams go to /dev/null.
    pub disabled: bool,
    /// Rotate a file once it is larger than this many bytes.
    pub max_size: Option<u64>,
    /// How many rotated files to keep.
    pub retain: Option<u32>,
}

/// pm2-logrotate's settings, from the `procward:` section; an app's own
/// `log_max_size` and `log_retain` win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RotateDefaults {
    /// pm2-logrotate `max_size`; no rotation when `None`.
    pub max_size: Option<u64>,
    /// pm2-logrotate `retain` (its default: 30).
    pub retain: u32,
    /// pm2-logrotate `compress`: gzip rotated files.
    pub compress: bool,
}

impl Default for RotateDefaults {
    fn default() -> Self {
        RotateDefaults {
            max_size: None,
            retain: 30,
            compress: false,
        }
    }
}

/// Where one stream of one app is written, once files are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The same stream of procward (stdout for stdout).
    Console,
    /// A file.
    File(PathBuf),
    /// Nowhere.
    Null,
}

impl RotateDefaults {
    /// Whether nothing was set.
    pub fn is_default(&self) -> bool {
        *self == RotateDefaults::default()
    }
}

impl LogSpec {
    /// Whether no log key was set.
    pub fn is_default(&self) -> bool {
        *self == LogSpec::default()
    }

    /// Whether procward reads the app's output itself.
    pub fn capture(&self) -> bool {
        self.out_file.is_some()
            || self.error_file.is_some()
            || self.log_file.is_some()
            || self.date_format.is_some()
            || self.json
            || self.prefix
    }

    /// Where stdout (`err` false) or stderr (`err` true) of instance
    /// `instance` of `instances` goes. Files are relative to `cwd`; with
    /// several instances and without `merge_logs` each gets its own file,
    /// `-N` before the extension as PM2 names them (`lib/God.js`).
    pub fn targets(&self, err: bool, cwd: &Path, instance: u32, instances: u32) -> Vec<Target> {
        if self.disabled {
            return vec![Target::Null];
        }
        let own = if err {
            &self.error_file
        } else {
            &self.out_file
        };
        let mut out = Vec::new();
        for f in [own, &self.log_file].into_iter().flatten() {
            if is_null(f) {
                out.push(Target::Null);
                continue;
            }
            let mut path = cwd.join(f);
            if instances > 1 && !self.merge {
                path = with_instance(&path, instance);
            }
            if !out.contains(&Target::File(path.clone())) {
                out.push(Target::File(path));
            }
        }
        // A stream with no file of its own goes to procward's console;
        // `/dev/null` as its file sends it nowhere.
        if out.is_empty() {
            out.push(Target::Console);
        }
        if out.len() > 1 {
            out.retain(|t| *t != Target::Null);
        }
        out
    }
}

/// PM2's spellings of "no file": `/dev/null` and `NULL` (`lib/Common.js`).
pub fn is_null(p: &Path) -> bool {
    p == Path::new("/dev/null") || p == Path::new("NULL")
}

/// `out.log` becomes `out-2.log`; a name without extension gets `-2`.
fn with_instance(path: &Path, instance: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{instance}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{instance}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LogSpec {
        LogSpec {
            out_file: Some("logs/out.log".into()),
            error_file: Some("/var/log/err".into()),
            ..LogSpec::default()
        }
    }

    #[test]
    fn pass_through_unless_something_asks_for_capture() {
        assert!(!LogSpec::default().capture());
        assert!(!LogSpec {
            merge: true,
            ..LogSpec::default()
        }
        .capture());
        assert!(spec().capture());
        assert!(LogSpec {
            date_format: Some(PM2_TIME_FORMAT.into()),
            ..LogSpec::default()
        }
        .capture());
    }

    #[test]
    fn each_instance_gets_its_own_file_unless_merged() {
        let cwd = Path::new("/app");
        assert_eq!(
            spec().targets(false, cwd, 2, 4),
            [Target::File("/app/logs/out-2.log".into())]
        );
        assert_eq!(
            spec().targets(true, cwd, 1, 4),
            [Target::File("/var/log/err-1".into())]
        );
        assert_eq!(
            spec().targets(false, cwd, 0, 1),
            [Target::File("/app/logs/out.log".into())]
        );
        let merged = LogSpec {
            merge: true,
            ..spec()
        };
        assert_eq!(
            merged.targets(false, cwd, 3, 4),
            [Target::File("/app/logs/out.log".into())]
        );
    }

    #[test]
    fn console_null_and_combined_file() {
        let cwd = Path::new("/app");
        let s = LogSpec {
            out_file: Some("/dev/null".into()),
            log_file: Some("all.log".into()),
            ..LogSpec::default()
        };
        assert_eq!(
            s.targets(false, cwd, 0, 1),
            [Target::File("/app/all.log".into())]
        );
        assert_eq!(
            s.targets(true, cwd, 0, 1),
            [Target::File("/app/all.log".into())]
        );
        let only_null = LogSpec {
            error_file: Some("NULL".into()),
            json: true,
            ..LogSpec::default()
        };
        assert_eq!(only_null.targets(true, cwd, 0, 1), [Target::Null]);
        assert_eq!(only_null.targets(false, cwd, 0, 1), [Target::Console]);
        let off = LogSpec {
            disabled: true,
            ..spec()
        };
        assert_eq!(off.targets(false, cwd, 0, 1), [Target::Null]);
    }
}
