//! PM2's `ecosystem.config.js` (`.cjs`, `.mjs`): evaluated by `node`, as PM2
//! does (it `require`s the file), then read as JSON.
//!
//! Variables the file adds to `process.env` while it is evaluated (the
//! `require('dotenv').config()` idiom) are reported too: under PM2 they
//! reach every app, because PM2 builds each app's environment from its own
//! `process.env` (Common.js `prepareAppConf`). This runs before the
//! supervisor exists, so waiting for node here does not race the reaper.

use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{fatal, Errors};
use super::json;
use super::raw::{Node, Span, Value};

/// Loads the module, prints `{config, env}` as JSON. `config` is what the
/// file exports (`module.exports`, or the default export of an ES module);
/// `env` the variables it added or changed.
const LOADER: &str = r#"
const file = process.argv[process.argv.length - 1];
const before = Object.assign({}, process.env);
(async () => {
  let mod;
  try {
    mod = require(file);
  } catch (e) {
    if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE' || e instanceof SyntaxError) && /\.(m?js)$/.test(file)) {
      const ns = await import(require('url').pathToFileURL(file).href);
      mod = ns.default !== undefined ? ns.default : Object.assign({}, ns);
    } else {
      throw e;
    }
  }
  // An ES module loaded by require (node >= 20.19) is its namespace.
  if (mod && mod.__esModule && 'default' in mod && Object.keys(mod).every((k) => k === 'default' || k === '__esModule')) mod = mod.default;
  const env = {};
  for (const k of Object.keys(process.env)) if (before[k] !== process.env[k]) env[k] = process.env[k];
  process.stdout.write(JSON.stringify({ config: mod === undefined ? null : mod, env }));
})().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
"#;

/// What evaluating the file gave.
pub struct Evaluated {
    /// The exported configuration (no positions: line 0).
    pub config: Node,
    /// Variables the file added to `process.env`.
    pub env: Vec<(String, String)>,
}

/// Evaluates `file` with node.
pub fn evaluate(file: &Path) -> Result<Evaluated, Errors> {
    let abs = std::fs::canonicalize(file)
        .map_err(|e| fatal(file, Span::default(), format!("cannot read the file: {e}"), None))?;
    let out = Command::new("node")
        .arg("-e")
        .arg(LOADER)
        .arg(&abs)
        .current_dir(abs.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fatal(
                file,
                Span::default(),
                "cannot evaluate a JavaScript process file: `node` is not in PATH",
                Some(format!(
                    "install node, or convert the file once where node is installed: `procward convert {} > procward.yaml`",
                    file.display()
                )),
            ))
        }
        Err(e) => return Err(fatal(file, Span::default(), format!("cannot run node: {e}"), None)),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(fatal(
            file,
            Span::default(),
            format!("node could not evaluate the file:\n{}", stderr.trim_end()),
            None,
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = json::parse(&text).map_err(|e| fatal(file, Span::default(), format!("node printed something that is not JSON: {}", e.message), None))?;
    let mut config = Node::new(Value::Null, Span::default());
    let mut env = Vec::new();
    if let Value::Map(entries) = parsed.value {
        for (k, v) in entries {
            match k.name.as_str() {
                "config" => config = forget_spans(v),
                "env" => {
                    for (name, value) in v.as_map().unwrap_or_default() {
                        env.push((name.name.clone(), value.js_string().unwrap_or_default()));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Evaluated { config, env })
}

/// Positions in node's output mean nothing to the user: drop them, so
/// errors name the key path instead.
fn forget_spans(mut n: Node) -> Node {
    n.span = Span::default();
    n.value = match n.value {
        Value::Seq(items) => Value::Seq(items.into_iter().map(forget_spans).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(mut k, v)| {
                    k.span = Span::default();
                    (k, forget_spans(v))
                })
                .collect(),
        ),
        v => v,
    };
    n
}
