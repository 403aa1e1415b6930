//! The validated layer: a process file's raw tree becomes the apps to run
//! and the agent's settings, or a list of errors before anything starts.
//!
//! Formats: YAML (`.yaml`, `.yml`), JSON including the relaxed JSON PM2
//! accepts (`.json`, `.json5`), and JavaScript (`.js`, `.cjs`, `.mjs`)
//! evaluated by node. The file holds an `apps:` list (PM2's
//! `module.exports = { apps: [...] }`), a bare list of apps, or a single
//! app, plus an optional `procward:` section for the agent. Of PM2's own
//! `deploy:` section only `deploy.<env>.env` is read (merged under
//! `--env <env>`, as PM2 merges it); the rest is ignored with a warning.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::agent::{self, AgentSettings};
use super::app::ReadySource;
use super::app::{AppSpec, ExecMode};
use super::error::{closest, Errors, Problem};
use super::keys::{self, Draft, Handling};
use super::raw::{Key, Node, Span, Value};
use super::{cpus, js, json, users, yaml};
use crate::observe::find::Matcher;
use crate::observe::ObservedSpec;

/// What the caller picks from the file.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    /// `--env NAME`: merge each app's `env_NAME` over its `env`.
    pub env: Option<String>,
    /// `--only a,b`: keep these apps only.
    pub only: Vec<String>,
}

/// A loaded process file.
#[derive(Debug)]
pub struct Loaded {
    /// The apps to start, in the order listed.
    pub apps: Vec<AppSpec>,
    /// The apps to observe (an `observe:` block), in the order listed.
    pub observed: Vec<ObservedSpec>,
    /// The agent's settings from the `procward:` section (CLI flags not yet
    /// applied).
    pub agent: AgentSettings,
    /// Ignored keys and other things worth knowing, one per key.
    pub warnings: Vec<Problem>,
    /// The file as read, for `procward convert`; an evaluated `.js` file's
    /// `process.env` additions are already merged into each app's `env`.
    pub tree: Node,
    /// Keys of `tree` that procward does not use: (index of the app, key),
    /// or (`None`, key) at the top level.
    pub unused: Vec<(Option<usize>, String)>,
}

/// Reads, validates and resolves a process file.
pub fn load(file: &Path, sel: &Selection) -> Result<Loaded, Errors> {
    let (tree, dotenv) = read(file)?;
    let mut v = Validator {
        file: file.to_path_buf(),
        errors: Vec::new(),
        warnings: Vec::new(),
        deploy_envs: Vec::new(),
        unused: Vec::new(),
    };
    let base = std::path::absolute(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    let (app_nodes, agent_node) = v.top(&tree);
    let agent = agent_node.map(|n| v.agent(n)).unwrap_or_default();
    let deploy_env = sel.env.as_ref().and_then(|e| {
        v.deploy_envs
            .iter()
            .find(|(name, _)| name == e)
            .map(|(_, vars)| vars.clone())
    });
    let mut drafts = Vec::new();
    for (i, n) in app_nodes.iter().enumerate() {
        if let Some(d) = v.app(n, i, sel.env.as_deref(), deploy_env.as_deref()) {
            drafts.push((d, n.span, i));
        }
    }
    v.unique_names(&drafts);
    if let Some(env) = &sel.env {
        let known = deploy_env.is_some()
            || app_nodes
                .iter()
                .any(|n| n.get(&format!("env_{env}")).is_some());
        if !known && !app_nodes.is_empty() {
            v.warn(
                Span::default(),
                String::new(),
                format!("no app has `env_{env}`; `--env {env}` changes nothing"),
            );
        }
    }
    let (passwd, group) = users::system_files();
    let ctx = Context {
        base,
        dotenv,
        passwd,
        group,
        cpus: cpus::available(),
    };
    let mut apps = Vec::new();
    let mut observed = Vec::new();
    for (d, _, i) in &drafts {
        if let Some(matcher) = &d.observe {
            observed.push(ObservedSpec {
                name: d.name.clone().map_or_else(|| "app".into(), |n| n.0),
                matcher: matcher.clone(),
                ready: d.ready.source.clone(),
                max_memory_restart: d.max_memory_restart,
                // The kubelet's stop signal, as `procward observe` sends.
                kill_signal: match app_nodes[*i].get("kill_signal") {
                    Some(_) => d.stop.kill_signal,
                    None => nix::sys::signal::Signal::SIGTERM,
                },
                kill_timeout: d.stop.kill_timeout,
            });
            continue;
        }
        if let Some(app) = v.resolve(d, app_nodes[*i], *i, &ctx) {
            apps.push(app);
        }
    }
    if matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("js" | "cjs" | "mjs")
    ) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        v.errors
            .iter_mut()
            .chain(v.warnings.iter_mut())
            .for_each(|p| locate_in_source(p, &text));
    }
    if !v.errors.is_empty() {
        return Err(Errors(v.errors));
    }
    if !sel.only.is_empty() {
        let names: Vec<&str> = apps
            .iter()
            .map(|a| a.name.as_str())
            .chain(observed.iter().map(|o| o.name.as_str()))
            .collect();
        let unknown: Vec<&String> = sel
            .only
            .iter()
            .filter(|o| !names.contains(&o.as_str()))
            .collect();
        if !unknown.is_empty() {
            let p = Problem {
                file: file.to_path_buf(),
                span: Span::default(),
                path: String::new(),
                message: format!(
                    "expected `--only` to name apps of this file, found `{}`",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("`, `")
                ),
                hint: Some(format!("the apps are: {}", names.join(", "))),
            };
            return Err(Errors(vec![p]));
        }
        apps.retain(|a| sel.only.contains(&a.name));
        observed.retain(|o| sel.only.contains(&o.name));
    }
    // One procward is either the apps' entrypoint or their sidecar.
    if let (Some(o), Some(a)) = (observed.first(), apps.first()) {
        let at = drafts
            .iter()
            .find(|(d, _, _)| d.observe.is_some() && d.name.as_ref().is_some_and(|n| n.0 == o.name))
            .map_or(Span::default(), |(_, span, _)| *span);
        return Err(Errors(vec![Problem {
            file: file.to_path_buf(),
            span: at,
            path: String::new(),
            message: format!(
                "expected every app to have `observe:` or none, found `{}` observed and `{}` started",
                o.name, a.name
            ),
            hint: Some("one procward either starts its apps (the container's entrypoint) or observes them (a sidecar): give the observed apps a procward and a file of their own, or pick one kind with --only".into()),
        }]));
    }
    let tree = with_dotenv(tree, &ctx.dotenv);
    Ok(Loaded {
        apps,
        observed,
        agent,
        warnings: v.warnings,
        tree,
        unused: v.unused,
    })
}

/// Reads the file into a tree, by its extension (content decides for any
/// other name: `{` or `[` first means JSON). Also returns the variables an
/// evaluated `.js` file added to `process.env`.
pub fn read(file: &Path) -> Result<(Node, Vec<(String, String)>), Errors> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "js" | "cjs" | "mjs") {
        let e = js::evaluate(file)?;
        return Ok((e.config, e.env));
    }
    let text = std::fs::read_to_string(file).map_err(|e| {
        super::error::fatal(
            file,
            Span::default(),
            format!("cannot read the process file: {e}"),
            Some("check the path given to -c".into()),
        )
    })?;
    let looks_json = matches!(ext, "json" | "json5")
        || (!matches!(ext, "yaml" | "yml") && text.trim_start().starts_with(['{', '[']));
    let parsed = if looks_json {
        json::parse(&text)
    } else {
        yaml::parse(&text)
    };
    let hint = if looks_json {
        "PM2 reads .json files as JavaScript object literals: comments, unquoted keys and trailing commas are fine"
    } else {
        "check the indentation: list items start with `- `, keys end with `:`"
    };
    let node =
        parsed.map_err(|e| super::error::fatal(file, e.span, e.message, Some(hint.into())))?;
    Ok((node, Vec::new()))
}

/// Adds the evaluated file's `process.env` additions to each app's `env`,
/// under the app's own values, so the converted file means the same.
fn with_dotenv(mut tree: Node, dotenv: &[(String, String)]) -> Node {
    if dotenv.is_empty() {
        return tree;
    }
    let add = |app: &mut Node| {
        let Value::Map(entries) = &mut app.value else {
            return;
        };
        let extra: Vec<(Key, Node)> = dotenv
            .iter()
            .map(|(k, v)| {
                (
                    Key {
                        name: k.clone(),
                        span: Span::default(),
                    },
                    Node::new(Value::Str(v.clone()), Span::default()),
                )
            })
            .collect();
        match entries.iter_mut().find(|(k, _)| k.name == "env") {
            Some((
                _,
                Node {
                    value: Value::Map(env),
                    ..
                },
            )) => {
                for (k, v) in extra.into_iter().rev() {
                    if !env.iter().any(|(e, _)| e.name == k.name) {
                        env.insert(0, (k, v));
                    }
                }
            }
            Some(_) => {}
            None => entries.push((
                Key {
                    name: "env".into(),
                    span: Span::default(),
                },
                Node::new(Value::Map(extra), Span::default()),
            )),
        }
    };
    match &mut tree.value {
        Value::Seq(apps) => apps.iter_mut().for_each(add),
        Value::Map(entries) => match entries.iter_mut().find(|(k, _)| k.name == "apps") {
            Some((
                _,
                Node {
                    value: Value::Seq(apps),
                    ..
                },
            )) => apps.iter_mut().for_each(add),
            Some((_, app)) => add(app),
            None => add(&mut tree),
        },
        _ => {}
    }
    tree
}

/// What resolving an app needs besides its draft.
struct Context {
    /// The process file's directory: the default `cwd`.
    base: PathBuf,
    /// Variables an evaluated `.js` file added to `process.env`.
    dotenv: Vec<(String, String)>,
    /// /etc/passwd.
    passwd: String,
    /// /etc/group.
    group: String,
    /// CPUs available, for `instances: max`.
    cpus: u32,
}

struct Validator {
    file: PathBuf,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    /// `deploy.<env>.env` of the file, by env name.
    deploy_envs: Vec<(String, Vec<(String, String)>)>,
    /// Keys procward does not use (see `Loaded::unused`).
    unused: Vec<(Option<usize>, String)>,
}

const TOP_KEYS: [&str; 3] = ["apps", "procward", "deploy"];

/// Keys of PM2 modules that users write into a process file, each with
/// whether procward takes it in its `procward:` section. pm2-logrotate's
/// keys are set with `pm2 set pm2-logrotate:<key>`, never in an app.
pub const MODULE_KEYS: &[(&str, &str, bool)] = &[
    ("max_size", "pm2-logrotate", true),
    ("retain", "pm2-logrotate", true),
    ("compress", "pm2-logrotate", true),
    ("rotateInterval", "pm2-logrotate", false),
    ("workerInterval", "pm2-logrotate", false),
    ("rotateModule", "pm2-logrotate", false),
    ("dateFormat", "pm2-logrotate", false),
];

/// The hint for a key of a PM2 module (`max_size`), if it is one.
fn module_key_hint(key: &str) -> Option<String> {
    let (_, module, taken) = MODULE_KEYS.iter().find(|(k, _, _)| *k == key)?;
    Some(if *taken {
        format!(
            "`{key}` is a {module} setting (`pm2 set {module}:{key}`): put it under the top-level `procward:` section, for every app's log files"
        )
    } else {
        format!(
            "`{key}` is a {module} setting (`pm2 set {module}:{key}`); procward rotates log files by size only (`max_size` in the `procward:` section); for a schedule, run logrotate and send procward SIGUSR2"
        )
    })
}

/// Where a key written in the wrong place belongs, if it belongs somewhere.
fn misplaced_hint(key: &str, here: &str) -> Option<String> {
    if here != "app" && keys::find(key).is_some() {
        return Some(format!(
            "`{key}` is an app key: put it in an app, under `apps:`"
        ));
    }
    if here != "agent" && agent::find(key).is_some() {
        return Some(format!(
            "`{key}` is a setting of procward itself: put it under the top-level `procward:` section"
        ));
    }
    None
}

impl Validator {
    fn error(&mut self, span: Span, path: String, message: String, hint: Option<String>) {
        self.errors.push(Problem {
            file: self.file.clone(),
            span,
            path,
            message,
            hint,
        });
    }

    fn warn(&mut self, span: Span, path: String, message: String) {
        self.warnings.push(Problem {
            file: self.file.clone(),
            span,
            path,
            message,
            hint: None,
        });
    }

    fn unknown_key(&mut self, key: &Key, path: String, known: Vec<&str>, what: &str) {
        let here = match what {
            "app key" => "app",
            "top-level key" => "top",
            _ => "agent",
        };
        let hint = match (
            module_key_hint(&key.name),
            misplaced_hint(&key.name, here),
            closest(&key.name, known.iter().copied()),
        ) {
            (Some(h), _, _) | (None, Some(h), _) => h,
            (None, None, Some(k)) => format!("did you mean `{k}`?"),
            (None, None, None) => {
                format!("see \"Coming from PM2\" in the README for the {what}s procward knows")
            }
        };
        self.error(
            key.span,
            path,
            format!("expected a known {what}, found `{}`", key.name),
            Some(hint),
        );
    }

    /// The app nodes and the `procward:` section.
    fn top<'a>(&mut self, tree: &'a Node) -> (Vec<&'a Node>, Option<&'a Node>) {
        match &tree.value {
            Value::Seq(items) => (items.iter().collect(), None),
            Value::Map(_) if tree.get("apps").is_none() && tree.get("script").is_some() => {
                (vec![tree], None)
            }
            Value::Map(entries) => {
                let mut apps = Vec::new();
                for (k, v) in entries {
                    match k.name.as_str() {
                        "apps" => match &v.value {
                            Value::Seq(items) => apps = items.iter().collect(),
                            Value::Map(_) => apps = vec![v],
                            _ => self.error(
                                v.span,
                                "apps".into(),
                                format!(
                                    "expected `apps` to be a list of apps, found {}",
                                    v.found()
                                ),
                                None,
                            ),
                        },
                        "procward" => {}
                        "deploy" => self.deploy(k, v),
                        _ => {
                            self.unknown_key(k, k.name.clone(), TOP_KEYS.to_vec(), "top-level key")
                        }
                    }
                }
                if tree.get("apps").is_none() && self.errors.is_empty() {
                    self.error(
                        tree.span,
                        String::new(),
                        "expected an `apps:` list of apps, found none".into(),
                        Some(
                            "a process file looks like `apps: [{name: web, script: server.js}]`"
                                .into(),
                        ),
                    );
                }
                (apps, tree.get("procward"))
            }
            _ => {
                self.error(
                    tree.span,
                    String::new(),
                    format!(
                        "expected a mapping with an `apps:` list, found {}",
                        tree.found()
                    ),
                    None,
                );
                (Vec::new(), None)
            }
        }
    }

    /// PM2's `deploy:` section: its `<env>.env` mappings are kept for
    /// `--env <env>`, the rest is ignored with one warning.
    fn deploy(&mut self, k: &Key, v: &Node) {
        for (env, target) in v.as_map().unwrap_or_default() {
            let Some(vars) = target.get("env") else {
                continue;
            };
            match keys::env_map("env", vars) {
                Ok(e) => self.deploy_envs.push((env.name.clone(), e)),
                Err(b) => self.error(
                    vars.span,
                    format!("deploy.{}.env", env.name),
                    format!("expected {}, found {}", b.expected, vars.found()),
                    b.hint,
                ),
            }
        }
        let kept = if self.deploy_envs.is_empty() {
            String::new()
        } else {
            " but for `deploy.<env>.env`, merged by `--env <env>` as PM2 merges it".into()
        };
        self.unused.push((None, k.name.clone()));
        self.warn(
            k.span,
            "deploy".into(),
            format!(
                "`deploy` is ignored{kept}: procward does not deploy; use your CI or image build"
            ),
        );
    }

    /// Reads one app's keys into a draft; `None` when it is not a mapping.
    /// `deploy_env` is the file's `deploy.<env>.env` for `--env <env>`.
    fn app(
        &mut self,
        n: &Node,
        i: usize,
        env_name: Option<&str>,
        deploy_env: Option<&[(String, String)]>,
    ) -> Option<Draft> {
        let path = format!("apps[{i}]");
        let Some(entries) = n.as_map() else {
            self.error(
                n.span,
                path,
                format!(
                    "expected an app (a mapping with `script`), found {}",
                    n.found()
                ),
                None,
            );
            return None;
        };
        let mut d = Draft::default();
        let mut selected_env = None;
        for (k, v) in entries {
            let kpath = format!("{path}.{}", k.name);
            if let Some(suffix) = k.name.strip_prefix("env_") {
                // schema.json accepts any `env_*` key; only mappings are
                // merged (Common.js mergeEnvironmentVariables).
                if !matches!(v.value, Value::Map(_) | Value::Null) {
                    let why = if k.name == "env_file" {
                        "PM2 does not load env files; load it in the process file or the container (see \"Loading a .env file\" in the README)".to_string()
                    } else {
                        format!(
                            "it is not a mapping of variables, so `--env {suffix}` would set none"
                        )
                    };
                    self.warn(k.span, kpath, format!("`{}` is ignored: {why}", k.name));
                    self.unused.push((Some(i), k.name.clone()));
                    continue;
                }
                match keys::env_map(&k.name, v) {
                    Ok(e) if Some(suffix) == env_name => selected_env = Some(e),
                    Ok(_) => {}
                    Err(b) => self.error(
                        v.span,
                        kpath,
                        format!("expected {}, found {}", b.expected, v.found()),
                        b.hint,
                    ),
                }
                continue;
            }
            let Some(def) = keys::find(&k.name) else {
                self.unknown_key(k, kpath, keys::spellings().collect(), "app key");
                continue;
            };
            if matches!(def.handling, Handling::Ignored(_)) {
                self.unused.push((Some(i), k.name.clone()));
            }
            match (def.handling, def.apply) {
                // `watch: false` and the like ask for nothing: no warning.
                (Handling::Ignored(_), _)
                    if matches!(v.value, Value::Bool(false) | Value::Null) => {}
                (Handling::Ignored(why), _) => {
                    if !self
                        .warnings
                        .iter()
                        .any(|w| w.message.starts_with(&format!("`{}` ", k.name)))
                    {
                        self.warn(k.span, kpath, format!("`{}` is ignored: {why}", k.name));
                    }
                }
                (_, Some(apply)) => {
                    if let Err(b) = apply(&mut d, v) {
                        self.error(
                            v.span,
                            kpath,
                            format!("expected {}, found {}", b.expected, v.found()),
                            b.hint,
                        );
                    }
                    for (span, sub, message) in std::mem::take(&mut d.notes) {
                        self.warn(span, format!("{path}.{sub}"), message);
                    }
                }
                (_, None) => {}
            }
        }
        // Common.js mergeEnvironmentVariables: under `--env <name>`,
        // `deploy.<name>.env` is assigned into the app's `env` object itself
        // (so its values win over `env`, whatever the comment there says),
        // then `env_<name>` over both.
        for (k, val) in deploy_env
            .filter(|_| env_name.is_some())
            .unwrap_or_default()
            .iter()
            .cloned()
            .chain(selected_env.into_iter().flatten())
        {
            d.env.retain(|(n, _)| *n != k);
            d.env.push((k, val));
        }
        if let Some(block) = n.get("observe").filter(|b| b.as_map().is_some()) {
            self.observed(&mut d, n, block, &path);
            return Some(d);
        }
        if d.script.is_none() {
            self.error(
                n.span,
                path,
                "expected `script` (the file or command to run) in this app, found none".into(),
                Some("e.g. `script: server.js`, or `script: npm` with `args: start`".into()),
            );
        }
        Some(d)
    }

    /// An app with an `observe:` block: how its processes are matched, and
    /// only the keys that mean something for an app procward does not start.
    fn observed(&mut self, d: &mut Draft, n: &Node, block: &Node, path: &str) {
        const KEYS: [&str; 6] = [
            "name",
            "observe",
            "ready",
            "max_memory_restart",
            "kill_signal",
            "kill_timeout",
        ];
        for (k, _) in n.as_map().unwrap_or_default() {
            if !KEYS.contains(&k.name.as_str()) {
                self.error(
                    k.span,
                    format!("{path}.{}", k.name),
                    format!(
                        "expected only `{}` in an observed app, found `{}`",
                        KEYS.join("`, `"),
                        k.name
                    ),
                    Some("procward does not start an observed app (its own container does): drop the key, or drop `observe:` to have procward start the app".into()),
                );
            }
        }
        if matches!(d.ready.source, ReadySource::NodeIpc | ReadySource::SdNotify) {
            let at = n
                .get("ready")
                .or(n.get("wait_ready"))
                .map_or(n.span, |r| r.span);
            self.error(
                at,
                format!("{path}.ready"),
                format!(
                    "expected `ready` to be started, tcp:PORT or http://HOST:PORT/PATH in an observed app, found `{}`",
                    d.ready.source
                ),
                Some("ipc and notify need the app as procward's child".into()),
            );
        }
        let before = self.errors.len();
        let mut found: Vec<(&Key, Matcher)> = Vec::new();
        for (k, v) in block.as_map().unwrap_or_default() {
            let kpath = format!("{path}.observe.{}", k.name);
            let m = match (k.name.as_str(), &v.value) {
                ("match", Value::Str(re)) => {
                    match regex_lite::Regex::new(re) {
                        Ok(r) => Matcher::Cmdline(r),
                        Err(e) => {
                            self.error(
                            v.span,
                            kpath,
                            format!("expected `match` to be a regular expression, found `{re}`: {e}"),
                            None,
                        );
                            continue;
                        }
                    }
                }
                ("exe", Value::Str(p)) if !p.is_empty() => Matcher::Exe(PathBuf::from(p)),
                ("all", Value::Bool(true)) => Matcher::AllTrees,
                ("match" | "exe" | "all", _) => {
                    let expected = match k.name.as_str() {
                        "match" => "`match` to be a regular expression matched against the command line (\"node .*server.js\")",
                        "exe" => "`exe` to be an executable, as a full path or a file name",
                        _ => "`all` to be true (every process tree but procward's own and PID 1)",
                    };
                    self.error(
                        v.span,
                        kpath,
                        format!("expected {expected}, found {}", v.found()),
                        None,
                    );
                    continue;
                }
                _ => {
                    let hint = match closest(&k.name, ["match", "exe", "all"]) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => "`observe:` takes one of `match`, `exe` or `all`".into(),
                    };
                    self.error(
                        k.span,
                        kpath,
                        format!("expected `match`, `exe` or `all`, found `{}`", k.name),
                        Some(hint),
                    );
                    continue;
                }
            };
            found.push((k, m));
        }
        match found.len() {
            0 if self.errors.len() == before => self.error(
                block.span,
                format!("{path}.observe"),
                "expected `match`, `exe` or `all` in `observe`, found none".into(),
                Some("e.g. `observe: {match: \"node .*server.js\"}`".into()),
            ),
            0 => {}
            1 => d.observe = found.pop().map(|(_, m)| m),
            _ => self.error(
                found[1].0.span,
                format!("{path}.observe.{}", found[1].0.name),
                format!(
                    "expected one of `match`, `exe` or `all`, found `{}` and `{}`",
                    found[0].0.name, found[1].0.name
                ),
                Some("keep the one that picks the app's processes".into()),
            ),
        }
        if d.name.is_none() {
            let name = match &d.observe {
                Some(Matcher::Exe(exe)) => exe
                    .file_name()
                    .map_or_else(|| "app".into(), |f| f.to_string_lossy().into_owned()),
                _ => "app".into(),
            };
            d.name = Some((name, n.span));
        }
    }

    fn unique_names(&mut self, drafts: &[(Draft, Span, usize)]) {
        let mut seen: Vec<(String, Span)> = Vec::new();
        for (d, span, i) in drafts {
            let (name, at) = match (&d.name, &d.script) {
                (Some((n, s)), _) => (n.clone(), *s),
                (None, Some((s, _))) => (default_name(s), *span),
                (None, None) => continue,
            };
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                let where_ = if first.known() {
                    format!(" (first at line {})", first.line)
                } else {
                    String::new()
                };
                self.error(
                    at,
                    format!("apps[{i}].name"),
                    format!("expected app names to be unique, found `{name}` again{where_}"),
                    Some("give each app its own `name`".into()),
                );
            } else {
                seen.push((name, at));
            }
        }
    }

    /// Turns a draft into an app: paths, command line, instances, users.
    fn resolve(&mut self, d: &Draft, n: &Node, i: usize, ctx: &Context) -> Option<AppSpec> {
        let (script, script_span) = d.script.clone()?;
        let path = format!("apps[{i}].script");
        let cwd = match &d.cwd {
            Some(c) => ctx.base.join(c),
            None => ctx.base.clone(),
        };
        let cwd = normalize(&cwd);
        // API.js `_startJson`: `script: serve` is PM2's own static file
        // server (lib/API/Serve.js), whatever `serve` is in PATH.
        if script == "serve" {
            let var = |k: &str, default: &str| {
                d.env
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(default.to_string(), |(_, v)| v.clone())
            };
            self.error(
                script_span,
                path,
                "expected `script` to be a file or a command, found `serve`, which PM2 runs as its built-in static file server; procward has none".into(),
                Some(format!(
                    "run a static file server as the app, e.g. `script: npx` with `args: serve --single {} --listen {}` (the `serve` package), or let nginx or caddy serve the files",
                    var("PM2_SERVE_PATH", "."),
                    var("PM2_SERVE_PORT", "8080"),
                )),
            );
            return None;
        }
        let mut args = d.args.clone();
        let mut script = script;
        let mut interpreter_set = d.interpreter.clone();
        let mut interpreter_args = d.interpreter_args.clone();
        // Common.js verifyConfs: a script holding a space is a command line,
        // run by `bash -c` (else `sh -c`), replacing `args`. A file whose
        // name has a space is still that file.
        let command_line = script.contains(' ') && !cwd.join(&script).exists();
        if command_line {
            let shell = if which("bash").is_some() {
                "bash"
            } else {
                "sh"
            };
            let mut dropped: Vec<&str> = Vec::new();
            if !args.is_empty() {
                dropped.push("args");
            }
            if interpreter_set.as_ref().is_some_and(|(s, _)| s != "none") {
                dropped.push("interpreter");
            }
            if !interpreter_args.is_empty() {
                dropped.push("node_args");
            }
            for key in [
                "args",
                "interpreter",
                "exec_interpreter",
                "node_args",
                "interpreter_args",
                "interpreterArgs",
            ] {
                if n.get(key).is_some() {
                    self.unused.push((Some(i), key.into()));
                }
            }
            if !dropped.is_empty() {
                let at = dropped
                    .iter()
                    .find_map(|k| n.get(k))
                    .map_or(script_span, |v| v.span);
                self.warn(
                    at,
                    format!("apps[{i}].{}", dropped[0]),
                    format!(
                        "`{}` dropped: `script` holds a whole command line, which runs as `{shell} -c '{script}'` as under PM2; write the arguments into the command line",
                        dropped.join("`, `")
                    ),
                );
            }
            args = vec!["-c".into(), script];
            script = shell.into();
            interpreter_set = Some(("none".into(), script_span));
            interpreter_args.clear();
        }
        // Common.js prepareAppConf: path.resolve(cwd, script), else which(script).
        let as_file = normalize(&cwd.join(&script));
        let (program, in_path): (PathBuf, bool) = if as_file.is_file() {
            (as_file, false)
        } else if !script.contains('/') && which(&script).is_some() {
            (PathBuf::from(&script), true)
        } else {
            self.error(
                script_span,
                path,
                format!("expected `script` to be a file or a program in PATH, found `{script}`"),
                Some(format!("looked for {} and in PATH", as_file.display())),
            );
            return None;
        };
        let interpreter = match &interpreter_set {
            Some((s, _)) => Some(s.clone()),
            None if in_path => None,
            None => by_extension(&program),
        }
        .filter(|s| s != "none");
        if let (Some(interp), Some((_, ispan))) = (&interpreter, &interpreter_set) {
            if interp.starts_with('/') && !Path::new(interp).exists() {
                self.error(
                    *ispan,
                    format!("apps[{i}].interpreter"),
                    format!("expected `interpreter` to exist, found `{interp}`"),
                    Some(
                        "give an absolute path that exists, a program name in PATH, or `none`"
                            .into(),
                    ),
                );
            }
        }
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(interp) = &interpreter {
            argv.push(interp.into());
            argv.extend(interpreter_args.iter().map(OsString::from));
            // A program found in PATH and run by an interpreter needs its path.
            argv.push(if in_path {
                which(&script).unwrap_or(program).into()
            } else {
                program.into()
            });
        } else {
            argv.push(program.into());
        }
        argv.extend(args.iter().map(OsString::from));
        let name = d
            .name
            .as_ref()
            .map(|n| n.0.clone())
            .unwrap_or_else(|| default_name(d.script.as_ref().map_or("", |s| s.0.as_str())));
        // Environment: the evaluated file's process.env additions, then env
        // (env_<name> already merged), then PORT (Common.js prepareAppConf).
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v.to_string()));
        };
        ctx.dotenv.iter().for_each(|(k, v)| set(k, v));
        d.env.iter().for_each(|(k, v)| set(k, v));
        if let Some(p) = &d.port {
            set("PORT", p);
        }
        // Common.js sink.resolveInterpreter: python buffers its output when
        // it is not a terminal; PM2 turns that off.
        if interpreter.as_deref().is_some_and(|s| {
            Path::new(s)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().contains("python"))
        }) {
            set("PYTHONUNBUFFERED", "1");
        }
        let instances = d.instances.map_or(1, |n| keys::instances_for(n, ctx.cpus));
        // Common.js sink.determineExecMode: instances set, no exec_mode, and
        // a node or bun interpreter means cluster mode.
        let node_like = interpreter
            .as_deref()
            .is_some_and(|s| s.contains("node") || s.contains("bun"));
        let exec_mode = d
            .exec_mode
            .unwrap_or(if d.instances.is_some() && node_like {
                ExecMode::Cluster
            } else {
                ExecMode::Fork
            });
        let (mut uid, mut gid) = (None, None);
        if let Some((u, uspan)) = &d.user {
            match users::user(&ctx.passwd, u) {
                Some(found) => {
                    uid = Some(found.uid);
                    gid = Some(found.gid);
                }
                None => self.error(
                    *uspan,
                    format!("apps[{i}].uid"),
                    format!("expected a user of /etc/passwd or a user id, found `{u}`"),
                    None,
                ),
            }
        }
        if let Some((g, gspan)) = &d.group {
            match users::group(&ctx.group, g) {
                Some(found) => gid = Some(found),
                None => self.error(
                    *gspan,
                    format!("apps[{i}].gid"),
                    format!("expected a group of /etc/group or a group id, found `{g}`"),
                    None,
                ),
            }
        }
        let mut app = AppSpec::new(name, argv);
        app.cwd = Some(cwd);
        app.env_keys = env.iter().map(|(k, _)| k.clone()).collect();
        app.env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        app.instances = instances;
        app.exec_mode = exec_mode;
        app.uid = uid;
        app.gid = gid;
        app.restart = d.restart.clone();
        app.stop = d.stop.clone();
        app.ready = d.ready.clone();
        app.max_memory_restart = d.max_memory_restart;
        app.watchdog = d.watchdog;
        app.max_memory_hard = d.max_memory_hard;
        app.logs = d.logs.clone();
        if let Some(var) = &d.instance_var {
            app.instance_var = Some(var.clone());
        }
        app.listen = d.listen.clone();
        app.cron_restart = d.cron_restart.clone();
        if let Some(watched) = &d.watch {
            let base = app.cwd.clone().unwrap_or_default();
            let spec = watch_spec(d, watched, &base);
            for p in spec.paths.iter().filter(|p| !p.exists()) {
                let at = n.get("watch").map_or(Span::default(), |w| w.span);
                self.warn(
                    at,
                    format!("apps[{i}].watch"),
                    format!(
                        "`{}` does not exist: nothing is watched there (PM2's chokidar would wait for it)",
                        p.display()
                    ),
                );
            }
            app.watch = Some(spec);
        }
        Some(app)
    }

    /// The `procward:` section.
    fn agent(&mut self, n: &Node) -> AgentSettings {
        let mut a = AgentSettings::default();
        let Some(entries) = n.as_map() else {
            self.error(
                n.span,
                "procward".into(),
                format!(
                    "expected `procward` to be a mapping of agent settings, found {}",
                    n.found()
                ),
                None,
            );
            return a;
        };
        for (k, v) in entries {
            let path = format!("procward.{}", k.name);
            match agent::find(&k.name) {
                Some(def) => {
                    if let Err(b) = (def.apply)(&mut a, v) {
                        let message = format!("expected {}, found {}", b.expected, v.found());
                        self.error(v.span, path, message, b.hint);
                    }
                }
                None => {
                    let known = agent::AGENT_KEYS.iter().map(|d| d.name).collect();
                    self.unknown_key(k, path, known, "`procward:` setting")
                }
            }
        }
        a
    }
}

/// The watch settings of a draft whose `watch` is on: `watched` empty is
/// the app's directory `base` (Watcher.js `enable`), relative paths are
/// taken from it.
pub fn watch_spec(d: &Draft, watched: &[String], base: &Path) -> crate::config::app::WatchSpec {
    let paths = if watched.is_empty() {
        vec![base.to_path_buf()]
    } else {
        watched.iter().map(|p| normalize(&base.join(p))).collect()
    };
    crate::config::app::WatchSpec {
        paths,
        ignore: d.ignore_watch.clone(),
        delay: d.watch_delay.unwrap_or(crate::watch::PM2_WATCH_DELAY),
        follow_symlinks: d.follow_symlinks.unwrap_or(true),
        base: base.to_path_buf(),
    }
}

/// Gives a problem in an evaluated `.js` file a position when its key is
/// written exactly once in the source (`max_memory_restrat: '1G'`); keys
/// written several times keep their path (`apps[1].instances`).
fn locate_in_source(p: &mut Problem, text: &str) {
    let Some(key) = p
        .path
        .rsplit('.')
        .next()
        .filter(|k| !k.is_empty() && !k.contains('['))
    else {
        return;
    };
    if p.span.known() {
        return;
    }
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut found = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        for (col, _) in line.match_indices(key) {
            let before = line[..col].chars().next_back();
            let after = &line[col + key.len()..];
            let quoted = matches!(before, Some('\'' | '"'));
            let start_ok = before.is_none_or(|c| !ident(c));
            let rest = if quoted {
                after.strip_prefix(['\'', '"']).unwrap_or("~")
            } else {
                after
            };
            if start_ok && !rest.starts_with(ident) && rest.trim_start().starts_with(':') {
                let col = line[..col].chars().count() + 1 - usize::from(quoted);
                found.push(Span::new(line_no as u32 + 1, col as u32));
            }
        }
    }
    if let [one] = found[..] {
        p.span = one;
    }
}

/// PM2's default name (Common.js `renderApplicationName`): the script's
/// last path component without its last extension, so a command line
/// `npm run start:prod` names its app `npm run start:prod` and
/// `PORT=4010 node dist/tunnel.js` names it `tunnel`.
fn default_name(script: &str) -> String {
    let base = script
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let name = match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    };
    if name.is_empty() {
        "app".into()
    } else {
        name.into()
    }
}

/// lib/API/interpreter.json, with python3 for `.py` (Debian and most images
/// have no `python`); `.cjs`/`.mjs` are node's too. A file with another
/// extension runs itself when it is executable, else with node (PM2's
/// default interpreter, for `bin/www`-style scripts).
fn by_extension(script: &Path) -> Option<String> {
    let ext = script.extension().and_then(|e| e.to_str()).unwrap_or("");
    let known = match ext {
        "js" | "cjs" | "mjs" => "node",
        "py" => "python3",
        "sh" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        "coffee" => "coffee",
        "ls" => "lsc",
        "ts" | "tsx" => "bun",
        _ => {
            use std::os::unix::fs::PermissionsExt;
            let executable = std::fs::metadata(script)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            return if executable {
                None
            } else {
                Some("node".into())
            };
        }
    };
    Some(known.into())
}

/// Finds a program in PATH.
fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_follow_the_script() {
        assert_eq!(default_name("./dist/server.js"), "server");
        assert_eq!(default_name("npm"), "npm");
        assert_eq!(default_name("npm run start:prod"), "npm run start:prod");
        assert_eq!(default_name("PORT=4010 node dist/tunnel.js"), "tunnel");
        assert_eq!(default_name("sudo bash x.sh && yarn start"), "sudo bash x");
        assert_eq!(default_name("server.min.js"), "server.min");
    }

    #[test]
    fn interpreters_by_extension() {
        assert_eq!(
            by_extension(Path::new("/x/app.js")).as_deref(),
            Some("node")
        );
        assert_eq!(
            by_extension(Path::new("/x/job.py")).as_deref(),
            Some("python3")
        );
        assert_eq!(
            by_extension(Path::new("/x/run.sh")).as_deref(),
            Some("bash")
        );
        assert_eq!(by_extension(Path::new("/bin/sh")), None);
    }

    #[test]
    fn keys_written_once_in_javascript_get_a_position() {
        let text = "module.exports = {\n  apps: [{\n    script: 'a.js',\n    'max_memory_restrat': '1G',\n    instances: 2,\n  }, { script: 'b.js', instances: 3 }]\n}\n";
        let mut p = Problem {
            file: "e.js".into(),
            span: Span::default(),
            path: "apps[0].max_memory_restrat".into(),
            message: String::new(),
            hint: None,
        };
        locate_in_source(&mut p, text);
        assert_eq!(p.span, Span::new(4, 5));
        let mut twice = Problem {
            path: "apps[0].instances".into(),
            span: Span::default(),
            ..p
        };
        locate_in_source(&mut twice, text);
        assert!(!twice.span.known());
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
