//! PM2's `ecosystem.config.js` (`.cjs`, `.mjs`): evaluated by `node`, as PM2
//! does (it `require`s the file), then read as JSON.
//!
//! Variables the file adds to `process.env` while it is evaluated (the
//! `require('dotenv').config()` idiom) are reported too: under PM2 they
//! reach every app, because PM2 builds each app's environment from its own
//! `process.env` (Common.js `prepareAppConf`). This runs before the
//! supervisor exists, so waiting for node here does not race the reaper.
//!
//! A `.mjs` file is imported as the ES module it is (PM2's
//! `Common.parseConfig` imports it too); other files are `require`d, and
//! imported when node says they are ES modules. The loader runs under
//! `node -e`, which puts `require`, `module`, `exports`, `__filename` and
//! `__dirname` on `globalThis`; it takes them away first, so an ES module
//! that uses `require` fails as it would under PM2.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::error::{fatal, Errors};
use super::json;
use super::raw::{Node, Span, Value};

/// Loads the module, prints `{config, env}` as JSON. `config` is what the
/// file exports (`module.exports`, or the default export of an ES module);
/// `env` the variables it added or changed.
const LOADER: &str = r#"
const load = require;
for (const k of ['require', 'module', 'exports', '__filename', '__dirname']) delete globalThis[k];
const file = process.argv[process.argv.length - 1];
const before = Object.assign({}, process.env);
const importIt = async () => {
  const ns = await import(load('url').pathToFileURL(file).href);
  return ns.default !== undefined ? ns.default : Object.assign({}, ns);
};
(async () => {
  let mod;
  if (/\.mjs$/.test(file)) {
    mod = await importIt();
  } else {
    try {
      mod = load(file);
    } catch (e) {
      if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE' || e instanceof SyntaxError) && /\.js$/.test(file)) {
        mod = await importIt();
      } else {
        throw e;
      }
    }
  }
  // An ES module loaded by require (node >= 20.19) is its namespace.
  if (mod && mod.__esModule && 'default' in mod && Object.keys(mod).every((k) => k === 'default' || k === '__esModule')) mod = mod.default;
  const env = {};
  for (const k of Object.keys(process.env)) if (before[k] !== process.env[k]) env[k] = process.env[k];
  process.stdout.write(JSON.stringify({ config: mod === undefined ? null : mod, env }));
  // Writes to a pipe are synchronous on Linux; timers or sockets the file
  // left open must not keep node alive.
  process.exit(0);
})().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
"#;

/// How long node may take to evaluate a process file.
const EVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Collects the child's output, killing it when it takes longer than
/// `limit` (`None`).
fn finish_within(child: Child, limit: Duration) -> Option<std::io::Result<Output>> {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(result) => Some(result),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped
            // (the thread above reaps it once it dies).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
            None
        }
    }
}

/// What evaluating the file gave.
pub struct Evaluated {
    /// The exported configuration (no positions: line 0).
    pub config: Node,
    /// Variables the file added to `process.env`.
    pub env: Vec<(String, String)>,
}

/// Evaluates `file` with node.
pub fn evaluate(file: &Path) -> Result<Evaluated, Errors> {
    let abs = std::fs::canonicalize(file).map_err(|e| {
        fatal(
            file,
            Span::default(),
            format!("cannot read the file: {e}"),
            None,
        )
    })?;
    let child = Command::new("node")
        .arg("-e")
        .arg(LOADER)
        .arg(&abs)
        .current_dir(abs.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
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
    let out = match finish_within(child, EVAL_TIMEOUT) {
        Some(Ok(o)) => o,
        Some(Err(e)) => return Err(fatal(file, Span::default(), format!("cannot read node's output: {e}"), None)),
        None => {
            return Err(fatal(
                file,
                Span::default(),
                format!("node did not finish evaluating the file within {}s", EVAL_TIMEOUT.as_secs()),
                Some("a process file should only build its configuration: start no servers and wait for nothing at load time".into()),
            ))
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (span, message) = node_error(&stderr, &abs.to_string_lossy());
        let hint = missing_package(&message).map(|pkg| {
            let dir = abs.parent().unwrap_or(Path::new("/"));
            let install = if dir.join("pnpm-lock.yaml").exists() {
                "pnpm install --frozen-lockfile"
            } else if dir.join("yarn.lock").exists() {
                "yarn install --frozen-lockfile"
            } else {
                "npm ci"
            };
            format!(
                "the file needs the package `{pkg}`: install the project's dependencies first (`{install}` in the process file's directory), then run procward again"
            )
        });
        return Err(fatal(
            file,
            span,
            format!("node could not evaluate the file:\n{message}"),
            hint,
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = json::parse(&text).map_err(|e| {
        fatal(
            file,
            Span::default(),
            format!("node printed something that is not JSON: {}", e.message),
            None,
        )
    })?;
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

/// The package a "Cannot find module 'x'" (CommonJS) or "Cannot find
/// package 'x'" (ES module) error names, when it is a package and not a
/// relative or absolute path.
fn missing_package(message: &str) -> Option<&str> {
    ["Cannot find module '", "Cannot find package '"]
        .iter()
        .find_map(|m| {
            let at = message.find(m)? + m.len();
            let name = &message[at..at + message[at..].find('\'')?];
            (!name.starts_with(['.', '/']) && !name.starts_with("file:")).then_some(name)
        })
}

/// node's error, shortened to what helps: where in the file it happened
/// (the first mention of `path:LINE[:COL]`) and the message lines, without
/// node's internal stack frames, the loader's own `[eval]` module, or what
/// is about node's process rather than the file: `(node:PID)` warnings
/// (the advice to set `"type": "module"`), the hint to run with
/// `--trace-warnings`, and the `Node.js vX` trailer.
fn node_error(stderr: &str, path: &str) -> (Span, String) {
    let mut span = Span::default();
    if let Some(at) = stderr.find(&format!("{path}:")) {
        let rest = &stderr[at + path.len() + 1..];
        let mut nums = rest
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .map(|n| n.parse::<u32>().ok());
        if let Some(Some(line)) = nums.next() {
            let col = if rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(':')
            {
                nums.next().flatten()
            } else {
                None
            };
            span = Span::new(line, col.unwrap_or(1));
        }
    }
    let message = stderr
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("at ")
                && !l.ends_with("[eval]")
                && !t.starts_with("(node:")
                && !t.starts_with("(Use `node --trace-warnings")
                && !t
                    .strip_prefix("Node.js v")
                    .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        })
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("  {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (span, message.trim_end().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_keep_the_place_and_the_message() {
        let stderr = "Error: Cannot find module './x.json'\nRequire stack:\n- /app/eco.js\n- /app/[eval]\n    at Module._resolveFilename (node:internal/modules/cjs/loader:1207:15)\n    at Object.<anonymous> (/app/eco.js:1:17)\n";
        let (span, msg) = node_error(stderr, "/app/eco.js");
        assert_eq!(span, Span::new(1, 17));
        assert_eq!(
            msg,
            "  Error: Cannot find module './x.json'\n  Require stack:\n  - /app/eco.js"
        );
        let syntax =
            "/app/eco.js:3\n  apps: [{ name: 'x' }\n  ^\n\nSyntaxError: Unexpected token\n";
        assert_eq!(node_error(syntax, "/app/eco.js").0, Span::new(3, 1));
    }

    #[test]
    fn node_process_noise_is_dropped() {
        let stderr = "(node:12345) Warning: To load an ES module, set \"type\": \"module\" in the package.json or use the .mjs extension.\n(Use `node --trace-warnings ...` to show where the warning was created)\n/app/eco.cjs:1\nimport x from 'y';\n^^^^^^\n\nSyntaxError: Cannot use import statement outside a module\n\nNode.js v20.20.2\n";
        let (_, msg) = node_error(stderr, "/app/eco.cjs");
        assert_eq!(
            msg,
            "  /app/eco.cjs:1\n  import x from 'y';\n  ^^^^^^\n\n  SyntaxError: Cannot use import statement outside a module"
        );
    }

    #[test]
    fn missing_packages_are_told_from_missing_files() {
        assert_eq!(
            missing_package("Error: Cannot find module 'dotenv'\nRequire stack:"),
            Some("dotenv")
        );
        assert_eq!(
            missing_package(
                "Error [ERR_MODULE_NOT_FOUND]: Cannot find package '@scope/x' imported from /a.mjs"
            ),
            Some("@scope/x")
        );
        assert_eq!(
            missing_package("Error: Cannot find module './x.json'"),
            None
        );
    }
}
