//! Errors and warnings about a process file.
//!
//! Each reads `file:line:col: expected ..., found ...` followed by a hint
//! when there is one (nextest's style). Values of an evaluated `.js` file
//! have no position in its text; their errors name the key path instead
//! (`ecosystem.config.js: apps[0].instances: ...`).

use std::fmt;
use std::path::PathBuf;

use super::raw::Span;

/// One problem found in a process file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// Where in the file.
    pub span: Span,
    /// The key path, used when the span is not known (`apps[0].instances`).
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.span.known() {
            write!(f, ":{}:{}", self.span.line, self.span.col)?;
        } else if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Everything wrong with a file; it is refused as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Errors(pub Vec<Problem>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {p}")?;
        }
        Ok(())
    }
}

/// A syntax or read error: the file could not become a tree at all.
pub fn fatal(
    file: &std::path::Path,
    span: Span,
    message: impl Into<String>,
    hint: Option<String>,
) -> Errors {
    Errors(vec![Problem {
        file: file.to_path_buf(),
        span,
        path: String::new(),
        message: message.into(),
        hint,
    }])
}

/// The known name closest to `word`, when one is close enough to be a typo
/// (a third of its letters changed at most, between 1 and 3 edits).
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_key_meant() {
        let keys = [
            "max_memory_restart",
            "max_restarts",
            "min_uptime",
            "instances",
        ];
        assert_eq!(
            closest("max_memory_restrat", keys),
            Some("max_memory_restart")
        );
        assert_eq!(closest("instance", keys), Some("instances"));
        assert_eq!(closest("colour", keys), None);
    }

    #[test]
    fn problems_read_file_line_col_then_hint() {
        let p = Problem {
            file: "a.yaml".into(),
            span: Span::new(3, 16),
            path: "apps[0].instances".into(),
            message: "expected a number, found `lots` (a string)".into(),
            hint: Some("use `max`".into()),
        };
        assert_eq!(
            p.to_string(),
            "a.yaml:3:16: expected a number, found `lots` (a string)\n  hint: use `max`"
        );
        let js = Problem {
            span: Span::default(),
            ..p
        };
        assert!(js
            .to_string()
            .starts_with("a.yaml: apps[0].instances: expected"));
    }
}
