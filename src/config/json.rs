//! A tolerant JSON reader that keeps the position of every value.
//!
//! PM2 evaluates `.json` process files as JavaScript object literals, so
//! real files carry comments, unquoted keys, single-quoted strings and
//! trailing commas. This reader accepts those (the JSON5 subset people
//! write) as well as strict JSON, and reports `expected ..., found ...` at
//! the line and column where reading stopped.

use super::raw::{Key, Node, Span, Value};

/// A syntax error: where, and what was expected and found.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where reading stopped.
    pub span: Span,
    /// `expected ..., found ...`.
    pub message: String,
}

/// Reads one JSON (or JSON5-style) document.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut r = Reader {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
        depth: 0,
    };
    r.skip_space()?;
    let node = r.value()?;
    r.skip_space()?;
    if r.peek().is_some() {
        return Err(r.error("expected the end of the file"));
    }
    Ok(node)
}

/// Nesting deeper than this is refused rather than overflowing the stack.
const MAX_DEPTH: usize = 128;

struct Reader {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    col: u32,
    depth: usize,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn span(&self) -> Span {
        Span::new(self.line, self.col)
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the file".into(),
            Some('\n') => "the end of the line".into(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn error(&self, expected: &str) -> SyntaxError {
        SyntaxError {
            span: self.span(),
            message: format!("{expected}, found {}", self.found()),
        }
    }

    /// Skips whitespace and `//` / `/* */` comments.
    fn skip_space(&mut self) -> Result<(), SyntaxError> {
        loop {
            match (self.peek(), self.peek2()) {
                (Some(c), _) if c.is_whitespace() || c == '\u{feff}' => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.span();
                    self.bump();
                    self.bump();
                    loop {
                        match (self.peek(), self.peek2()) {
                            (None, _) => return Err(SyntaxError {
                                span: start,
                                message:
                                    "expected `*/` to close this comment, found the end of the file"
                                        .into(),
                            }),
                            (Some('*'), Some('/')) => {
                                self.bump();
                                self.bump();
                                break;
                            }
                            _ => {
                                self.bump();
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        let span = self.span();
        let value = match self.peek() {
            Some('{') => self.nested(Self::object)?,
            Some('[') => self.nested(Self::array)?,
            Some(q @ ('"' | '\'')) => Value::Str(self.string(q)?),
            Some(c) if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => {
                Value::Num(self.number()?)
            }
            Some(c) if c.is_alphabetic() || c == '_' || c == '$' => {
                let word = self.ident();
                match word.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    "Infinity" => Value::Num(f64::INFINITY),
                    "NaN" => Value::Num(f64::NAN),
                    _ => {
                        return Err(SyntaxError {
                            span,
                            message: format!("expected a value (string, number, true, false, null, list or mapping), found `{word}`"),
                        })
                    }
                }
            }
            _ => {
                return Err(self.error(
                    "expected a value (string, number, true, false, null, list or mapping)",
                ))
            }
        };
        Ok(Node::new(value, span))
    }

    fn nested(
        &mut self,
        f: fn(&mut Self) -> Result<Value, SyntaxError>,
    ) -> Result<Value, SyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("expected at most 128 levels of nesting"));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Result<Value, SyntaxError> {
        self.bump(); // {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        loop {
            self.skip_space()?;
            if self.peek() == Some('}') {
                self.bump();
                return Ok(Value::Map(entries));
            }
            let span = self.span();
            let name = match self.peek() {
                Some(q @ ('"' | '\'')) => self.string(q)?,
                Some(c) if c.is_alphanumeric() || c == '_' || c == '$' => self.ident(),
                _ => return Err(self.error("expected a key or `}`")),
            };
            self.skip_space()?;
            if self.peek() != Some(':') {
                return Err(self.error(&format!("expected `:` after the key `{name}`")));
            }
            self.bump();
            self.skip_space()?;
            let value = self.value()?;
            // As in JavaScript, a repeated key replaces the earlier one.
            entries.retain(|(k, _)| k.name != name);
            entries.push((Key { name, span }, value));
            self.skip_space()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {}
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, SyntaxError> {
        self.bump(); // [
        let mut items = Vec::new();
        loop {
            self.skip_space()?;
            if self.peek() == Some(']') {
                self.bump();
                return Ok(Value::Seq(items));
            }
            items.push(self.value()?);
            self.skip_space()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {}
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn ident(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
        {
            s.push(c);
            self.bump();
        }
        s
    }

    fn string(&mut self, quote: char) -> Result<String, SyntaxError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => {
                    return Err(self.error(&format!("expected `{quote}` to close the string")))
                }
                Some(c) if c == quote => {
                    self.bump();
                    return Ok(s);
                }
                Some('\\') => {
                    self.bump();
                    let Some(e) = self.peek() else { continue };
                    self.bump();
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        '0' => s.push('\0'),
                        '\n' => {} // a line continuation
                        'u' => s.push(self.unicode_escape()?),
                        other => s.push(other),
                    }
                }
                Some(c) => {
                    s.push(c);
                    self.bump();
                }
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let hex4 = |r: &mut Self| -> Result<u32, SyntaxError> {
            let mut v = 0;
            for _ in 0..4 {
                let d = r
                    .peek()
                    .and_then(|c| c.to_digit(16))
                    .ok_or_else(|| r.error("expected 4 hex digits after `\\u`"))?;
                r.bump();
                v = v * 16 + d;
            }
            Ok(v)
        };
        let hi = hex4(self)?;
        if (0xD800..0xDC00).contains(&hi) && self.peek() == Some('\\') && self.peek2() == Some('u')
        {
            self.bump();
            self.bump();
            let lo = hex4(self)?;
            return Ok(char::from_u32(
                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF),
            )
            .unwrap_or('\u{fffd}'));
        }
        Ok(char::from_u32(hi).unwrap_or('\u{fffd}'))
    }

    fn number(&mut self) -> Result<f64, SyntaxError> {
        let start = self.span();
        let mut text = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'))
        {
            // `-` and `+` only lead or follow an exponent.
            if matches!(c, '+' | '-') && !(text.is_empty() || text.ends_with(['e', 'E'])) {
                break;
            }
            text.push(c);
            self.bump();
        }
        let (sign, body) = match text.strip_prefix('-') {
            Some(rest) => (-1.0, rest),
            None => (1.0, text.strip_prefix('+').unwrap_or(&text)),
        };
        let parsed = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"))
        {
            u64::from_str_radix(hex, 16).ok().map(|v| v as f64)
        } else if body == "Infinity" {
            Some(f64::INFINITY)
        } else {
            body.parse::<f64>()
                .ok()
                .filter(|_| !body.starts_with(|c: char| c.is_alphabetic()))
        };
        parsed.map(|v| sign * v).ok_or(SyntaxError {
            span: start,
            message: format!("expected a number, found `{text}`"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_reads_with_positions() {
        let n = parse("{\n  \"apps\": [{\"name\": \"web\", \"instances\": 4}]\n}").unwrap();
        let apps = n.get("apps").unwrap();
        assert_eq!(apps.span, Span::new(2, 11));
        let Value::Seq(items) = &apps.value else {
            panic!()
        };
        assert_eq!(items[0].get("instances").unwrap().value, Value::Num(4.0));
        assert_eq!(items[0].get("instances").unwrap().span, Span::new(2, 41));
    }

    #[test]
    fn what_pm2_users_write_in_json_reads_too() {
        let text = "// ecosystem\n{\n  apps: [{\n    name: 'web', /* the site */\n    script: \"server.js\",\n    instances: -1,\n  },],\n}\n";
        let n = parse(text).unwrap();
        let Value::Seq(items) = &n.get("apps").unwrap().value else {
            panic!()
        };
        assert_eq!(
            items[0].get("name").unwrap().value,
            Value::Str("web".into())
        );
        assert_eq!(items[0].get("instances").unwrap().value, Value::Num(-1.0));
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        let e = parse("{\n  \"apps\": [\n    {\"name\": \"web\" \"script\": \"a.js\"}\n  ]\n}")
            .unwrap_err();
        assert_eq!(e.span, Span::new(3, 20));
        assert_eq!(e.message, "expected `,` or `}`, found `\"`");
        let e = parse("{\"a\": 1").unwrap_err();
        assert_eq!(e.message, "expected `,` or `}`, found the end of the file");
        assert!(parse("[1, 2,, 3]").is_err());
        assert!(parse(&"[".repeat(500)).is_err());
    }
}
