//! Reading YAML with the position of every value.
//!
//! serde_norway's `Value` forgets where values were, so this walks the
//! events of the same libyaml parser serde_norway runs on
//! (`unsafe-libyaml-norway`) and builds a [`Node`] tree with spans. Plain
//! scalars are typed by the YAML 1.2 core schema, as serde_norway types
//! them: `null`/`~`/empty, `true`/`false`, integers, floats; anything
//! quoted is a string. Anchors, aliases and `<<` merge keys work.

use std::collections::HashMap;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use unsafe_libyaml_norway as unsafe_libyaml;

use super::json::SyntaxError;
use super::raw::{Key, Node, Span, Value};

/// An event of the parser, with owned data.
enum Event {
    Scalar {
        value: String,
        plain: bool,
        anchor: Option<String>,
    },
    Alias(String),
    SeqStart(Option<String>),
    SeqEnd,
    MapStart(Option<String>),
    MapEnd,
    Other,
    DocumentEnd,
    StreamEnd,
}

/// Reads the first document of a YAML file; an empty file is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let events = events(text)?;
    let mut b = Builder {
        events,
        pos: 0,
        anchors: HashMap::new(),
        depth: 0,
        size: 0,
    };
    while matches!(b.events.get(b.pos), Some((Event::Other, _))) {
        b.pos += 1;
    }
    match b.events.get(b.pos) {
        None | Some((Event::StreamEnd | Event::DocumentEnd, _)) => {
            Ok(Node::new(Value::Null, Span::new(1, 1)))
        }
        Some(_) => b.node(),
    }
}

/// Runs the libyaml parser over the text, up to the end of the first
/// document.
fn events(text: &str) -> Result<Vec<(Event, Span)>, SyntaxError> {
    let mut out = Vec::new();
    let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
    let p = parser.as_mut_ptr();
    // SAFETY: `p` points at memory owned by `parser` for this whole
    // function; libyaml initialises it, reads `text` (which outlives the
    // parser) and is deleted below on every path. Each event is copied into
    // owned Rust data and deleted before the next is read.
    unsafe {
        if unsafe_libyaml::yaml_parser_initialize(p).fail {
            return Err(SyntaxError {
                span: Span::new(1, 1),
                message: "cannot start the YAML parser (out of memory)".into(),
            });
        }
        unsafe_libyaml::yaml_parser_set_encoding(p, unsafe_libyaml::YAML_UTF8_ENCODING);
        unsafe_libyaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as _);
        let result = loop {
            let mut ev = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
            if unsafe_libyaml::yaml_parser_parse(p, ev.as_mut_ptr()).fail {
                break Err(parse_error(&*p));
            }
            let ev = ev.assume_init_mut();
            let span = Span::new(
                ev.start_mark.line as u32 + 1,
                ev.start_mark.column as u32 + 1,
            );
            let event = convert(ev);
            unsafe_libyaml::yaml_event_delete(ev);
            let done = matches!(event, Event::DocumentEnd | Event::StreamEnd);
            out.push((event, span));
            if done {
                break Ok(());
            }
        };
        unsafe_libyaml::yaml_parser_delete(p);
        result.map(|()| out)
    }
}

/// SAFETY: `ev` is an event just produced by `yaml_parser_parse`.
unsafe fn convert(ev: &unsafe_libyaml::yaml_event_t) -> Event {
    let text = |ptr: *const u8| -> Option<String> {
        if ptr.is_null() {
            None
        } else {
            Some(
                // SAFETY: a non-null string of the event, NUL-terminated by libyaml.
                unsafe { CStr::from_ptr(ptr.cast()) }
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    // SAFETY: the union field read is the one `type_` names, and scalar
    // values are `length` bytes long (libyaml's yaml_event_t).
    unsafe {
        match ev.type_ {
            unsafe_libyaml::YAML_SCALAR_EVENT => {
                let s = &ev.data.scalar;
                let bytes = std::slice::from_raw_parts(s.value, s.length as usize);
                Event::Scalar {
                    value: String::from_utf8_lossy(bytes).into_owned(),
                    plain: s.style == unsafe_libyaml::YAML_PLAIN_SCALAR_STYLE && s.tag.is_null(),
                    anchor: text(s.anchor),
                }
            }
            unsafe_libyaml::YAML_ALIAS_EVENT => {
                Event::Alias(text(ev.data.alias.anchor).unwrap_or_default())
            }
            unsafe_libyaml::YAML_SEQUENCE_START_EVENT => {
                Event::SeqStart(text(ev.data.sequence_start.anchor))
            }
            unsafe_libyaml::YAML_SEQUENCE_END_EVENT => Event::SeqEnd,
            unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                Event::MapStart(text(ev.data.mapping_start.anchor))
            }
            unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::MapEnd,
            unsafe_libyaml::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
            unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
            _ => Event::Other,
        }
    }
}

/// SAFETY: `p` is a parser whose last call failed.
unsafe fn parse_error(p: &unsafe_libyaml::yaml_parser_t) -> SyntaxError {
    let problem = if p.problem.is_null() {
        "invalid YAML".to_string()
    } else {
        // SAFETY: non-null, a static NUL-terminated string of libyaml.
        unsafe { CStr::from_ptr(p.problem) }
            .to_string_lossy()
            .into_owned()
    };
    let context = (!p.context.is_null()).then(|| {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(p.context) }
            .to_string_lossy()
            .into_owned()
    });
    let mark = p.problem_mark;
    let message = match context {
        Some(c) => format!("invalid YAML: {problem} {c}"),
        None => format!("invalid YAML: {problem}"),
    };
    SyntaxError {
        span: Span::new(mark.line as u32 + 1, mark.column as u32 + 1),
        message,
    }
}

struct Builder {
    events: Vec<(Event, Span)>,
    pos: usize,
    anchors: HashMap<String, Node>,
    depth: usize,
    /// Values built so far, aliases counted in full.
    size: usize,
}

/// More values than this (aliases of aliases can multiply) are refused.
const MAX_VALUES: usize = 100_000;

/// Nesting deeper than this is refused rather than overflowing the stack.
const MAX_DEPTH: usize = 128;

impl Builder {
    fn next(&mut self) -> Result<(Event, Span), SyntaxError> {
        let Some(slot) = self.events.get_mut(self.pos) else {
            return Err(SyntaxError {
                span: Span::new(1, 1),
                message: "expected more YAML, found the end of the file".into(),
            });
        };
        self.pos += 1;
        let span = slot.1;
        Ok((std::mem::replace(&mut slot.0, Event::Other), span))
    }

    fn node(&mut self) -> Result<Node, SyntaxError> {
        if self.depth >= MAX_DEPTH {
            let span = self.events.get(self.pos).map(|e| e.1).unwrap_or_default();
            return Err(SyntaxError {
                span,
                message: "expected at most 128 levels of nesting, found more".into(),
            });
        }
        self.depth += 1;
        let node = self.node_inner();
        self.depth -= 1;
        node
    }

    fn node_inner(&mut self) -> Result<Node, SyntaxError> {
        let (event, span) = self.next()?;
        let (node, anchor) = match event {
            Event::Scalar {
                value,
                plain,
                anchor,
            } => {
                let v = if plain {
                    plain_scalar(value)
                } else {
                    Value::Str(value)
                };
                (Node::new(v, span), anchor)
            }
            Event::Alias(name) => match self.anchors.get(&name) {
                Some(n) => {
                    self.size += count(n);
                    if self.size > MAX_VALUES {
                        return Err(SyntaxError {
                            span,
                            message: format!("expected at most {MAX_VALUES} values once aliases are expanded, found more at `*{name}`"),
                        });
                    }
                    (Node::new(n.value.clone(), span), None)
                }
                None => {
                    return Err(SyntaxError {
                        span,
                        message: format!("expected a defined anchor, found the alias `*{name}`"),
                    })
                }
            },
            Event::SeqStart(anchor) => {
                let mut items = Vec::new();
                while !matches!(self.events.get(self.pos), Some((Event::SeqEnd, _))) {
                    items.push(self.node()?);
                }
                self.pos += 1;
                (Node::new(Value::Seq(items), span), anchor)
            }
            Event::MapStart(anchor) => (Node::new(Value::Map(self.entries()?), span), anchor),
            _ => {
                return Err(SyntaxError {
                    span,
                    message: "expected a YAML value".into(),
                })
            }
        };
        if let Some(a) = anchor {
            self.anchors.insert(a, node.clone());
        }
        Ok(node)
    }

    fn entries(&mut self) -> Result<Vec<(Key, Node)>, SyntaxError> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        let mut merged: Vec<(Key, Node)> = Vec::new();
        while !matches!(self.events.get(self.pos), Some((Event::MapEnd, _))) {
            let k = self.node()?;
            let name = match k.js_string() {
                Some(s) => s,
                None => {
                    return Err(SyntaxError {
                        span: k.span,
                        message: format!("expected a string key, found {}", k.found()),
                    })
                }
            };
            let v = self.node()?;
            if name == "<<" {
                // Merge keys: entries written in this mapping win.
                let sources = match v.value {
                    Value::Seq(items) => items,
                    _ => vec![v],
                };
                for s in sources {
                    match s.value {
                        Value::Map(m) => merged.extend(m),
                        _ => {
                            return Err(SyntaxError {
                                span: s.span,
                                message: format!(
                                    "expected a mapping to merge, found {}",
                                    s.found()
                                ),
                            })
                        }
                    }
                }
                continue;
            }
            entries.retain(|(e, _)| e.name != name);
            entries.push((Key { name, span: k.span }, v));
        }
        self.pos += 1;
        for (k, v) in merged {
            if !entries.iter().any(|(e, _)| e.name == k.name) {
                entries.push((k, v));
            }
        }
        Ok(entries)
    }
}

/// How many values a tree holds.
fn count(n: &Node) -> usize {
    1 + match &n.value {
        Value::Seq(items) => items.iter().map(count).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| 1 + count(v)).sum(),
        _ => 0,
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
fn plain_scalar(s: String) -> Value {
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::Num(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Num(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Num(f64::NAN),
        _ => {}
    }
    let body = s.trim_start_matches(['-', '+']);
    let neg = s.starts_with('-');
    let radix = |p: &str, r: u32| {
        body.strip_prefix(p)
            .and_then(|d| u64::from_str_radix(d, r).ok())
    };
    if let Some(v) = radix("0x", 16).or_else(|| radix("0o", 8)) {
        return Value::Num(if neg { -(v as f64) } else { v as f64 });
    }
    let numeric = body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && s.len() - body.len() <= 1;
    match s.parse::<f64>() {
        Ok(v) if numeric => Value::Num(v),
        _ => Value::Str(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_positions_and_types() {
        let n = parse("apps:\n  - name: web\n    instances: max\n    port: 3000\n    debug: false\n    note: '42'\n    x: ~\n").unwrap();
        let Value::Seq(apps) = &n.get("apps").unwrap().value else {
            panic!()
        };
        let app = &apps[0];
        assert_eq!(app.get("instances").unwrap().span, Span::new(3, 16));
        assert_eq!(
            app.get("instances").unwrap().value,
            Value::Str("max".into())
        );
        assert_eq!(app.get("port").unwrap().value, Value::Num(3000.0));
        assert_eq!(app.get("debug").unwrap().value, Value::Bool(false));
        assert_eq!(app.get("note").unwrap().value, Value::Str("42".into()));
        assert_eq!(app.get("x").unwrap().value, Value::Null);
        let keys: Vec<_> = app
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| (k.name.as_str(), k.span))
            .collect();
        assert_eq!(keys[0], ("name", Span::new(2, 5)));
    }

    #[test]
    fn anchors_and_merge_keys_work() {
        let n = parse("base: &b\n  max_restarts: 3\n  kill_timeout: 5000\napp:\n  <<: *b\n  kill_timeout: 100\n").unwrap();
        let app = n.get("app").unwrap();
        assert_eq!(app.get("max_restarts").unwrap().value, Value::Num(3.0));
        assert_eq!(app.get("kill_timeout").unwrap().value, Value::Num(100.0));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("apps:\n  - name: web\n   script: a.js\n").unwrap_err();
        assert_eq!(e.span.line, 3);
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, next) in ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h"])
        {
            laughs.push_str(&format!("{next}: &{next} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse(&laughs)
            .unwrap_err()
            .message
            .contains("aliases are expanded"));
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }
}
