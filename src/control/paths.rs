//! Where the control socket lives, and how a command finds it.
//!
//! The server takes, in order:
//! 1. `--control PATH` or the process file's `procward: control_socket`;
//! 2. `$RUNTIME_DIRECTORY/procward.sock` (systemd's `RuntimeDirectory=`;
//!    `procward@.service` has `RuntimeDirectory=procward/%i`, so each
//!    instance of the template gets `/run/procward/NAME/procward.sock`);
//! 3. `BASE/procward.sock`, or `BASE/NAME/procward.sock` when another
//!    procward already serves the first, where BASE is `/run/procward`,
//!    else `procward-UID` in the temporary directory, and NAME is the
//!    procward's name ([`name_of`]).
//!
//! A directory is used only when it is procward's own: owned by its user and
//! writable by nobody else, the rule the notify sockets follow
//! ([`crate::ready::claim`]).
//!
//! A command looks at the same places: with `--name NAME` at
//! `BASE/NAME/procward.sock` (and at `BASE/procward.sock` if the procward
//! there has that name), without it at `$RUNTIME_DIRECTORY/procward.sock`
//! first (a command run by the unit itself), then at every socket found;
//! one live socket is used, several are listed with their names.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::SOCKET_NAME;

/// The directories sockets are made in, most preferred first:
/// `/run/procward`, then `procward-UID` in the temporary directory.
pub fn bases(uid: u32) -> Vec<PathBuf> {
    vec![
        PathBuf::from("/run/procward"),
        std::env::temp_dir().join(format!("procward-{uid}")),
    ]
}

/// `$RUNTIME_DIRECTORY`'s first entry, when set (systemd may list several,
/// colon-separated: systemd.exec(5)).
pub fn runtime_directory() -> Option<PathBuf> {
    let d = std::env::var_os("RUNTIME_DIRECTORY")?;
    d.to_string_lossy()
        .split(':')
        .next()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// A procward's name: the stem of its process file (`/etc/procward/web.yaml`
/// and `web.config.js` give `web`, as `procward@web` runs `web.yaml`), else
/// its first app's name; made safe as one path component.
pub fn name_of(process_file: Option<&Path>, first_app: &str) -> String {
    let stem = process_file
        .and_then(|p| p.file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .map(|f| f.split('.').next().unwrap_or_default().to_string())
        .filter(|s| !s.is_empty());
    let raw = stem.unwrap_or_else(|| first_app.to_string());
    let safe: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match safe.trim_matches('.') {
        "" => "procward".into(),
        _ => safe,
    }
}

/// What connecting to a socket path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A procward answers there.
    Live,
    /// Nothing at that path.
    Absent,
    /// A socket file nobody listens on (a procward that was killed).
    Stale,
    /// The socket exists but this user may not connect.
    Denied,
    /// Something else went wrong (the text says what).
    Other(String),
}

/// Tries to connect to `path`.
pub fn probe(path: &Path) -> (Probe, Option<UnixStream>) {
    match UnixStream::connect(path) {
        Ok(s) => (Probe::Live, Some(s)),
        Err(e) => (
            match e.kind() {
                ErrorKind::NotFound => Probe::Absent,
                ErrorKind::ConnectionRefused => Probe::Stale,
                ErrorKind::PermissionDenied => Probe::Denied,
                _ => Probe::Other(e.to_string()),
            },
            None,
        ),
    }
}

/// Where the server should bind, and the directory it claimed; the error
/// says why there is no place.
pub fn server_path(explicit: Option<&Path>, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let mut why = Vec::new();
    if let Some(dir) = runtime_directory() {
        match crate::ready::claim(&dir) {
            Ok(()) => return Ok(dir.join(SOCKET_NAME)),
            Err(e) => why.push(e.to_string()),
        }
    }
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    for base in bases(uid) {
        if let Err(e) = crate::ready::claim(&base) {
            why.push(e.to_string());
            continue;
        }
        let plain = base.join(SOCKET_NAME);
        if probe(&plain).0 != Probe::Live {
            return Ok(plain);
        }
        // Another procward has the plain name: this one goes by its own.
        let dir = base.join(name);
        match crate::ready::claim(&dir) {
            Ok(()) => return Ok(dir.join(SOCKET_NAME)),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(why.join("; "))
}

/// The socket paths a command looks at, for `--name` or for any procward.
pub fn client_candidates(name: Option<&str>) -> Vec<PathBuf> {
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut bases = bases(uid);
    // root may act on every user's procward.
    if uid == 0 {
        if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
            let mut others: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("procward-") && n != "procward-0"
                })
                .map(|e| e.path())
                .collect();
            others.sort();
            bases.extend(others);
        }
    }
    let mut out = Vec::new();
    if name.is_none() {
        out.extend(runtime_directory().map(|d| d.join(SOCKET_NAME)));
    }
    for base in bases {
        match name {
            Some(n) => out.push(base.join(n).join(SOCKET_NAME)),
            None => {
                out.push(base.join(SOCKET_NAME));
                let mut subs: Vec<PathBuf> = std::fs::read_dir(&base)
                    .map(|rd| {
                        rd.flatten()
                            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                            .map(|e| e.path().join(SOCKET_NAME))
                            .filter(|p| p.exists())
                            .collect()
                    })
                    .unwrap_or_default();
                subs.sort();
                out.extend(subs);
            }
        }
    }
    // With a name, the unnamed sockets are asked for theirs last.
    if let Some(_n) = name {
        for base in self::bases(uid) {
            out.push(base.join(SOCKET_NAME));
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_process_file_or_the_app() {
        let n = |f: Option<&str>, app: &str| name_of(f.map(Path::new), app);
        assert_eq!(n(Some("/etc/procward/web.yaml"), "api"), "web");
        assert_eq!(n(Some("ecosystem.config.js"), "api"), "ecosystem");
        assert_eq!(n(None, "server"), "server");
        assert_eq!(n(None, "a/b c"), "a_b_c");
        assert_eq!(n(None, ".."), "procward");
        assert_eq!(n(Some(".hidden"), "x"), "x");
    }

    #[test]
    fn an_explicit_path_wins() {
        assert_eq!(
            server_path(Some(Path::new("/x/y.sock")), "web").unwrap(),
            PathBuf::from("/x/y.sock")
        );
    }

    #[test]
    fn a_missing_socket_is_absent_and_a_dead_one_stale() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        assert_eq!(probe(&p).0, Probe::Absent);
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        assert_eq!(probe(&p).0, Probe::Stale);
        let _l = {
            std::fs::remove_file(&p).unwrap();
            std::os::unix::net::UnixListener::bind(&p).unwrap()
        };
        assert_eq!(probe(&p).0, Probe::Live);
    }
}
