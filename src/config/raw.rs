//! The raw layer: a process file as it was written, every value with the
//! line and column it came from.
//!
//! YAML, JSON (strict or the relaxed kind PM2 accepts) and evaluated `.js`
//! files all become a [`Node`] tree; nothing here knows what a key means.
//! The validated layer (`config::load`) reads this tree and produces
//! [`AppSpec`](super::AppSpec)s, pointing back at spans in its errors.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A 1-based position in the file. Line 0 means "not known": values of an
/// evaluated `.js` file come from node's output, not from the file's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl Span {
    /// A position.
    pub fn new(line: u32, col: u32) -> Span {
        Span { line, col }
    }

    /// Whether the position points into the file.
    pub fn known(self) -> bool {
        self.line > 0
    }
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub span: Span,
}

/// A mapping key and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where it starts.
    pub span: Span,
}

/// The values a process file can hold (the JSON data model).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty YAML value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number; JSON and JavaScript have only one kind.
    Num(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in the order written.
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// A node at `span`.
    pub fn new(value: Value, span: Span) -> Node {
        Node { value, span }
    }

    /// What the value is, for "found ..." in errors: `` `lots` (a string)``.
    pub fn found(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("`{b}` (a boolean)"),
            Value::Num(n) => format!("`{}` (a number)", js_number(*n)),
            Value::Str(s) => format!("`{s}` (a string)"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The value as a string the way JavaScript's `String(v)` makes it,
    /// which is what a PM2 app sees in its environment; `None` for lists
    /// and mappings.
    pub fn js_string(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some("null".into()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Num(n) => Some(js_number(*n)),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The entries, when this is a mapping.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of `key`, when this is a mapping holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }
}

/// A number printed as JavaScript prints it (`3000`, not `3000.0`).
pub fn js_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{}", n as i128)
    } else {
        format!("{n}")
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => s.serialize_i64(*n as i64),
            Value::Num(n) => s.serialize_f64(*n),
            Value::Str(v) => s.serialize_str(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&k.name, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_strings_as_javascript_makes_them() {
        let n = |v| Node::new(v, Span::default());
        assert_eq!(n(Value::Num(3000.0)).js_string().unwrap(), "3000");
        assert_eq!(n(Value::Num(1.5)).js_string().unwrap(), "1.5");
        assert_eq!(n(Value::Bool(true)).js_string().unwrap(), "true");
        assert_eq!(n(Value::Null).js_string().unwrap(), "null");
        assert_eq!(n(Value::Seq(vec![])).js_string(), None);
    }
}
