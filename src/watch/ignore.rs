//! Which changed paths do not restart the app: PM2's `ignore_watch`.
//!
//! PM2 hands `ignore_watch` to chokidar as its `ignored` option, with the
//! app's directory as chokidar's `cwd` (`lib/Watcher.js` `enable`), and
//! chokidar 3 (`index.js` `_isIgnored`) matches each entry with anymatch
//! (picomatch, `dot: true`) against the path:
//!
//! - a relative entry is joined to the app's directory (`normalizeIgnored`),
//!   so `*.log` is the `.log` files directly in it and `logs` is that one
//!   directory;
//! - an entry that is not a glob also ignores everything under it
//!   (`path + '/**'`);
//! - a directory that is ignored is not walked into, so its files are
//!   never watched at all.
//!
//! Without `ignore_watch` PM2 passes the regular expression
//! `/[\/\\]\.|node_modules/`: any path with a component starting with a dot
//! or containing `node_modules`. procward applies it to the components
//! below the watched directory (PM2 applies it to the whole absolute path,
//! so an app under a dot-directory would watch nothing).
//!
//! Globs here are picomatch's common subset: `*` (within a component, dot
//! files included), `**` (any number of components), `?`, `[abc]`, `[a-z]`,
//! `[!a]`, `{a,b}` and `\` escaping the next character.

use std::path::{Component, Path, PathBuf};

/// The ignore rules of one app.
#[derive(Debug, Clone, PartialEq)]
pub enum Ignore {
    /// PM2's default: dot components and `node_modules`.
    Pm2Default,
    /// `ignore_watch` entries, each made absolute.
    Globs(Vec<Glob>),
}

impl Ignore {
    /// Rules from `ignore_watch` entries, relative ones taken from `cwd`.
    pub fn globs(entries: &[String], cwd: &Path) -> Ignore {
        Ignore::Globs(entries.iter().map(|e| Glob::new(e, cwd)).collect())
    }

    /// Whether a change at `path`, found under the watched `root`, is
    /// ignored.
    pub fn ignores(&self, root: &Path, path: &Path) -> bool {
        match self {
            Ignore::Pm2Default => path
                .strip_prefix(root)
                .unwrap_or(path)
                .components()
                .any(|c| match c {
                    Component::Normal(s) => {
                        let s = s.to_string_lossy();
                        s.starts_with('.') || s.contains("node_modules")
                    }
                    _ => false,
                }),
            Ignore::Globs(globs) => {
                let text = path.to_string_lossy();
                globs.iter().any(|g| g.matches(&text))
            }
        }
    }
}

/// One `ignore_watch` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    /// The entry as written, for display.
    pub written: String,
    /// Its alternatives after `{a,b}` expansion, each split into
    /// components.
    alternatives: Vec<Vec<String>>,
    /// Not a glob: everything under it is ignored too.
    plain: bool,
}

impl Glob {
    /// Reads an entry; a relative one is taken from `cwd`.
    pub fn new(entry: &str, cwd: &Path) -> Glob {
        let absolute = if entry.starts_with('/') {
            entry.to_string()
        } else {
            let mut p = PathBuf::from(cwd);
            p.push(entry);
            p.to_string_lossy().into_owned()
        };
        let plain = !is_glob(entry);
        let alternatives = expand_braces(&absolute)
            .into_iter()
            .map(|a| {
                let mut parts: Vec<String> = Vec::new();
                for part in a.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p.to_string()),
                    }
                }
                parts
            })
            .collect();
        Glob {
            written: entry.to_string(),
            alternatives,
            plain,
        }
    }

    /// Whether the absolute `path` matches (or is under a plain entry).
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        self.alternatives.iter().any(|alt| {
            let pat: Vec<&str> = alt.iter().map(String::as_str).collect();
            if match_parts(&pat, &parts) {
                return true;
            }
            self.plain && parts.len() > pat.len() && match_parts(&pat, &parts[..pat.len()])
        })
    }
}

/// is-glob's answer, as chokidar asks it: a wildcard, a class or a brace
/// that is not escaped.
fn is_glob(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' | '{' => return true,
            _ => {}
        }
    }
    false
}

/// `a{b,c}d` -> `abd`, `acd`; nested braces are expanded from the inside
/// out. An unbalanced brace is literal.
fn expand_braces(s: &str) -> Vec<String> {
    let bytes: Vec<char> = s.chars().collect();
    let mut depth = 0;
    let mut open = None;
    let mut commas = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '\\' => i += 1,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                    commas.clear();
                }
                depth += 1;
            }
            ',' if depth == 1 => commas.push(i),
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open.unwrap_or(0);
                    if commas.is_empty() {
                        // `{a}` is literal, as in bash.
                        i += 1;
                        continue;
                    }
                    let head: String = bytes[..start].iter().collect();
                    let tail: String = bytes[i + 1..].iter().collect();
                    let mut bounds = vec![start];
                    bounds.extend(&commas);
                    bounds.push(i);
                    let mut out = Vec::new();
                    for w in bounds.windows(2) {
                        let alt: String = bytes[w[0] + 1..w[1]].iter().collect();
                        for a in expand_braces(&alt) {
                            for t in expand_braces(&tail) {
                                out.push(format!("{head}{a}{t}"));
                            }
                        }
                    }
                    return out;
                }
            }
            _ => {}
        }
        i += 1;
    }
    vec![s.to_string()]
}

/// Matches components, `**` standing for any number of them.
fn match_parts(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| match_parts(rest, &path[skip..])),
        Some((p, rest)) => match path.split_first() {
            Some((c, more)) => match_component(p, c) && match_parts(rest, more),
            None => false,
        },
    }
}

/// Matches one component: `*`, `?`, classes and escapes.
fn match_component(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    match_chars(&p, &s)
}

fn match_chars(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|k| match_chars(&p[1..], &s[k..])),
        Some('?') => !s.is_empty() && match_chars(&p[1..], &s[1..]),
        Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && match_chars(&p[2..], &s[1..]),
        Some('[') => match class(&p[1..]) {
            Some((set, used)) => {
                !s.is_empty() && set.contains(s[0]) && match_chars(&p[1 + used..], &s[1..])
            }
            // No closing `]`: a literal `[`.
            None => s.first() == Some(&'[') && match_chars(&p[1..], &s[1..]),
        },
        Some(c) => s.first() == Some(c) && match_chars(&p[1..], &s[1..]),
    }
}

/// A character class.
struct Class {
    negated: bool,
    items: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.items.iter().any(|(a, b)| *a <= c && c <= *b) != self.negated
    }
}

/// Reads a class after its `[`; returns it and the characters used,
/// the closing `]` included.
fn class(p: &[char]) -> Option<(Class, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    while i < p.len() {
        let c = p[i];
        if c == ']' && !first {
            return Some((Class { negated, items }, i + 1));
        }
        first = false;
        let c = if c == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            c
        };
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            items.push((c, p[i + 2]));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(entries: &[&str], path: &str) -> bool {
        let e: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Ignore::globs(&e, Path::new("/srv/app")).ignores(Path::new("/srv/app"), Path::new(path))
    }

    #[test]
    fn pm2_default_ignores_dot_components_and_node_modules() {
        let i = Ignore::Pm2Default;
        let root = Path::new("/home/me/.apps/web");
        assert!(!i.ignores(root, Path::new("/home/me/.apps/web/src/a.js")));
        assert!(i.ignores(root, Path::new("/home/me/.apps/web/.git/index")));
        assert!(i.ignores(root, Path::new("/home/me/.apps/web/node_modules")));
        assert!(i.ignores(
            root,
            Path::new("/home/me/.apps/web/lib/node_modules/x/y.js")
        ));
        assert!(i.ignores(root, Path::new("/home/me/.apps/web/src/.a.js.swp")));
    }

    #[test]
    fn entries_are_relative_to_the_app_and_plain_ones_cover_their_tree() {
        assert!(ignored(&["node_modules"], "/srv/app/node_modules"));
        assert!(ignored(&["node_modules"], "/srv/app/node_modules/x/y.js"));
        assert!(!ignored(&["node_modules"], "/srv/app/lib/node_modules"));
        assert!(ignored(&["client/img"], "/srv/app/client/img/a.png"));
        assert!(ignored(&["./logs"], "/srv/app/logs/out.log"));
        assert!(ignored(&["/var/cache"], "/var/cache/x"));
    }

    #[test]
    fn globs_as_picomatch_reads_them() {
        assert!(ignored(&["*.log"], "/srv/app/out.log"));
        assert!(!ignored(&["*.log"], "/srv/app/logs/out.log"));
        assert!(ignored(&["**/*.log"], "/srv/app/logs/deep/out.log"));
        assert!(ignored(&["**/*.log"], "/srv/app/out.log"));
        assert!(ignored(&["*.{tmp,swp}"], "/srv/app/a.swp"));
        assert!(ignored(&["*.{tmp,swp}"], "/srv/app/a.tmp"));
        assert!(!ignored(&["*.{tmp,swp}"], "/srv/app/a.js"));
        assert!(ignored(&["file?.txt"], "/srv/app/file1.txt"));
        assert!(ignored(&["[ab]*.js"], "/srv/app/b1.js"));
        assert!(!ignored(&["[!ab]*.js"], "/srv/app/b1.js"));
        assert!(ignored(&["[a-c]x"], "/srv/app/bx"));
        // `dot: true`: a star matches dot files.
        assert!(ignored(&["*"], "/srv/app/.env"));
        // PM2's README writes `\\.git`: an escaped dot.
        assert!(ignored(&["\\.git"], "/srv/app/.git"));
        assert!(ignored(&["\\.git"], "/srv/app/.git/HEAD"));
        assert!(!ignored(&["\\.git"], "/srv/app/xgit"));
        // No closing bracket: literal.
        assert!(ignored(&["a[b"], "/srv/app/a[b"));
    }

    #[test]
    fn braces_expand_and_nest() {
        assert_eq!(expand_braces("a{b,c}d"), ["abd", "acd"]);
        assert_eq!(expand_braces("{a,b{c,d}}"), ["a", "bc", "bd"]);
        assert_eq!(expand_braces("{x}"), ["{x}"]);
        assert_eq!(expand_braces("a{b"), ["a{b"]);
    }
}
