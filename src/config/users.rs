//! User and group names resolved by reading /etc/passwd and /etc/group
//! (passwd(5), group(5)) directly, without NSS, so a static binary works in
//! a minimal image.

/// A user's uid and primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Looks a user up by name or number in `passwd` (the file's text). A
/// number not in the file is accepted as is, with itself as group.
pub fn user(passwd: &str, name_or_id: &str) -> Option<User> {
    let found = entries(passwd)
        .find(|f| f[0] == name_or_id || (name_or_id.parse::<u32>().is_ok() && f[2] == name_or_id));
    match found {
        Some(f) => Some(User {
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        }),
        None => name_or_id.parse().ok().map(|id| User { uid: id, gid: id }),
    }
}

/// Looks a group up by name or number in `group` (the file's text).
pub fn group(group: &str, name_or_id: &str) -> Option<u32> {
    if let Ok(id) = name_or_id.parse() {
        return Some(id);
    }
    entries(group)
        .find(|f| f[0] == name_or_id)
        .and_then(|f| f[2].parse().ok())
}

/// The system's /etc/passwd and /etc/group (empty when missing).
pub fn system_files() -> (String, String) {
    (
        std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        std::fs::read_to_string("/etc/group").unwrap_or_default(),
    )
}

fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/sh\n# comment\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nnode:x:1000:\nwww-data:x:33:\nstaff:x:50:node\n";

    #[test]
    fn names_and_numbers_resolve() {
        assert_eq!(
            user(PASSWD, "node"),
            Some(User {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(user(PASSWD, "33"), Some(User { uid: 33, gid: 33 }));
        assert_eq!(
            user(PASSWD, "4242"),
            Some(User {
                uid: 4242,
                gid: 4242
            })
        );
        assert_eq!(user(PASSWD, "nobody-here"), None);
        assert_eq!(group(GROUP, "staff"), Some(50));
        assert_eq!(group(GROUP, "7"), Some(7));
        assert_eq!(group(GROUP, "wheel"), None);
    }
}
