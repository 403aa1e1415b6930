//! The process-file subcommands: `run -c`, `check` and `convert`.
//!
//! Exit codes: `check` and `convert` exit 0 when the file is valid and 1
//! when it is not; `run` exits 2 (a configuration error, see `exit.rs`)
//! before starting anything when the file is invalid.

use serde_norway::{Mapping, Value as Yaml};

use super::error::{Errors, Problem};
use super::load::{self, Loaded, Selection};
use super::raw::{Key, Node, Span, Value};
use super::{AgentSettings, AppSpec};
use crate::cli::{CheckArgs, ConvertArgs, FileArgs, RunArgs};
use crate::observe::ObservedSpec;

/// Loads the process file with the `--env` and `--only` selection.
fn load_file(file: &FileArgs) -> Result<Loaded, Errors> {
    let sel = Selection {
        env: file.env.clone(),
        only: file.only.clone(),
    };
    load::load(&file.config, &sel)
}

/// What `procward run -c` runs.
pub enum Plan {
    /// Start and supervise the apps.
    Supervise(Vec<AppSpec>, AgentSettings),
    /// Observe apps procward does not start (every app has `observe:`).
    Observe(Vec<ObservedSpec>, AgentSettings),
}

/// Loads the file of `procward run -c`, applies the CLI overrides, and
/// returns what to run; warnings go to stderr. A file whose apps are all
/// observed runs in observe mode; a file that mixes observed and started
/// apps is refused: one agent is either an entrypoint or a sidecar.
pub fn plan_run(args: RunArgs) -> Result<Plan, String> {
    let mut loaded = load_file(&args.file).map_err(|e| with_prefix(&e))?;
    print_warnings(&loaded.warnings);
    if !loaded.observed.is_empty() {
        // `load` refuses a file that mixes observed and started apps.
        if args.app.name.is_some() && loaded.observed.len() > 1 {
            return Err(format!(
                "error: --name would give all {} apps the same name\n  hint: rename apps in the file, or pick one with --only",
                loaded.observed.len()
            ));
        }
        for o in &mut loaded.observed {
            args.app.apply_observed(o)?;
        }
        args.agent.apply(&mut loaded.agent)?;
        return Ok(Plan::Observe(loaded.observed, loaded.agent));
    }
    if args.app.name.is_some() && loaded.apps.len() > 1 {
        return Err(format!(
            "error: --name would give all {} apps the same name\n  hint: rename apps in the file, or pick one with --only",
            loaded.apps.len()
        ));
    }
    for app in &mut loaded.apps {
        args.app.apply(app, super::cpus::available)?;
    }
    args.agent.apply(&mut loaded.agent)?;
    Ok(Plan::Supervise(loaded.apps, loaded.agent))
}

/// What `procward check` prints in place of each environment value.
const HIDDEN: &str = "(hidden)";

/// The normalized form printed by `procward check`: a process file in
/// procward's own keys, with every setting spelled out and the command
/// line resolved (`interpreter: none`), so checking it again prints it
/// again. Environment values are not printed (they may be secrets); their
/// names are, each with the value `(hidden)`.
fn normalized(agent: &AgentSettings, apps: &[AppSpec], observed: &[ObservedSpec]) -> Yaml {
    fn ms(d: std::time::Duration) -> Yaml {
        Yaml::Number((d.as_millis() as u64).into())
    }
    fn text(s: impl ToString) -> Yaml {
        Yaml::String(s.to_string())
    }
    let mut a = Mapping::new();
    a.insert(
        text("sighup"),
        serde_norway::to_value(agent.sighup).unwrap_or(Yaml::Null),
    );
    a.insert(
        text("log_format"),
        serde_norway::to_value(agent.log_format).unwrap_or(Yaml::Null),
    );
    a.insert(text("log_level"), text(&agent.log_level));
    a.insert(text("sample_interval"), ms(agent.sample_interval));
    if let Some(addr) = agent.metrics_addr {
        a.insert(text("metrics"), text(addr));
    }
    if let Some(c) = agent.metrics_compat {
        a.insert(
            text("metrics_compat"),
            serde_norway::to_value(c).unwrap_or(Yaml::Null),
        );
    }
    if let Some(sock) = &agent.control_socket {
        a.insert(text("control_socket"), text(sock.display()));
    }
    let rotate = &agent.log_rotate;
    if !rotate.is_default() {
        if let Some(n) = rotate.max_size {
            a.insert(text("max_size"), Yaml::Number(n.into()));
        }
        a.insert(text("retain"), Yaml::Number(rotate.retain.into()));
        a.insert(text("compress"), Yaml::Bool(rotate.compress));
    }
    let mut list = Vec::new();
    for app in apps {
        let mut m = Mapping::new();
        let mut put = |k: &str, v: Yaml| {
            m.insert(text(k), v);
        };
        put("name", text(&app.name));
        let mut argv = app.argv.iter().map(|a| text(a.to_string_lossy()));
        put("script", argv.next().unwrap_or(Yaml::Null));
        put("interpreter", text("none"));
        let args: Vec<Yaml> = argv.collect();
        if !args.is_empty() {
            put("args", Yaml::Sequence(args));
        }
        if let Some(cwd) = &app.cwd {
            put("cwd", text(cwd.display()));
        }
        if !app.env_keys.is_empty() {
            let env: Mapping = app
                .env_keys
                .iter()
                .map(|k| (text(k), text(HIDDEN)))
                .collect();
            put("env", Yaml::Mapping(env));
        }
        put("instances", Yaml::Number(app.instances.into()));
        put(
            "exec_mode",
            serde_norway::to_value(app.exec_mode).unwrap_or(Yaml::Null),
        );
        if let Some(uid) = app.uid {
            put("uid", Yaml::Number(uid.into()));
        }
        if let Some(gid) = app.gid {
            put("gid", Yaml::Number(gid.into()));
        }
        let r = &app.restart;
        put("autorestart", Yaml::Bool(r.autorestart));
        put("max_restarts", Yaml::Number(r.max_restarts.into()));
        put("min_uptime", ms(r.min_uptime));
        put("restart_delay", ms(r.restart_delay));
        if let Some(d) = r.exp_backoff_restart_delay {
            put("exp_backoff_restart_delay", ms(d));
        }
        if !r.stop_exit_codes.is_empty() {
            let codes = r.stop_exit_codes.iter().map(|c| Yaml::Number((*c).into()));
            put("stop_exit_codes", Yaml::Sequence(codes.collect()));
        }
        put("kill_signal", text(app.stop.kill_signal.as_str()));
        put("kill_timeout", ms(app.stop.kill_timeout));
        put(
            "shutdown_with_message",
            Yaml::Bool(app.stop.shutdown_with_message),
        );
        put("ready", text(&app.ready.source));
        put("listen_timeout", ms(app.ready.listen_timeout));
        put("strict_ready", Yaml::Bool(app.ready.strict));
        if let Some(bytes) = app.max_memory_restart {
            put("max_memory_restart", Yaml::Number(bytes.into()));
        }
        if let Some(w) = app.watchdog {
            put("watchdog", ms(w));
        }
        let l = &app.logs;
        let files = [
            ("out_file", &l.out_file),
            ("error_file", &l.error_file),
            ("log_file", &l.log_file),
        ];
        for (key, file) in files {
            if let Some(f) = file {
                put(key, text(f.display()));
            }
        }
        if let Some(f) = &l.date_format {
            put("log_date_format", text(f));
        }
        let flags = [
            ("merge_logs", l.merge),
            ("log_prefix", l.prefix),
            ("disable_logs", l.disabled),
        ];
        for (key, on) in flags {
            if on {
                put(key, Yaml::Bool(true));
            }
        }
        if l.json {
            put("log_type", text("json"));
        }
        if let Some(n) = l.max_size {
            put("log_max_size", Yaml::Number(n.into()));
        }
        if let Some(n) = l.retain {
            put("log_retain", Yaml::Number(n.into()));
        }
        if let Some(c) = &app.cron_restart {
            put("cron_restart", text(c.as_str()));
        }
        if let Some(w) = &app.watch {
            let paths = w.paths.iter().map(|p| text(p.display()));
            put("watch", Yaml::Sequence(paths.collect()));
            if let Some(ignore) = &w.ignore {
                put(
                    "ignore_watch",
                    Yaml::Sequence(ignore.iter().map(text).collect()),
                );
            }
            put("watch_delay", ms(w.delay));
            if !w.follow_symlinks {
                let mut o = Mapping::new();
                o.insert(text("followSymlinks"), Yaml::Bool(false));
                put("watch_options", Yaml::Mapping(o));
            }
        }
        list.push(Yaml::Mapping(m));
    }
    for o in observed {
        use crate::observe::find::Matcher;
        let mut m = Mapping::new();
        m.insert(text("name"), text(&o.name));
        let (k, v) = match &o.matcher {
            Matcher::Cmdline(re) => ("match", text(re.as_str())),
            Matcher::Exe(p) => ("exe", text(p.display())),
            Matcher::AllTrees => ("all", Yaml::Bool(true)),
        };
        m.insert(
            text("observe"),
            Yaml::Mapping([(text(k), v)].into_iter().collect()),
        );
        m.insert(text("ready"), text(&o.ready));
        if let Some(bytes) = o.max_memory_restart {
            m.insert(text("max_memory_restart"), Yaml::Number(bytes.into()));
        }
        m.insert(text("kill_signal"), text(o.kill_signal.as_str()));
        m.insert(text("kill_timeout"), ms(o.kill_timeout));
        list.push(Yaml::Mapping(m));
    }
    let mut top = Mapping::new();
    top.insert(text("procward"), Yaml::Mapping(a));
    top.insert(text("apps"), Yaml::Sequence(list));
    Yaml::Mapping(top)
}

/// The next three restart times of each app with `cron_restart`, one
/// line per app, in `now`'s time zone (the local one, as they run).
fn cron_times<Tz: chrono::TimeZone>(apps: &[AppSpec], now: &chrono::DateTime<Tz>) -> Vec<String>
where
    Tz::Offset: std::fmt::Display,
{
    apps.iter()
        .filter_map(|app| {
            let c = app.cron_restart.as_ref()?;
            let times: Vec<String> = c
                .upcoming(now, 3)
                .iter()
                .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
                .collect();
            Some(format!(
                "{}: cron_restart `{}` restarts next at {}",
                app.name,
                c.as_str(),
                times.join(", ")
            ))
        })
        .collect()
}

/// One app as `procward check` prints it (environment values hidden), for
/// `procward describe`.
pub fn app_settings(app: &AppSpec) -> serde_json::Value {
    let all = normalized(&AgentSettings::default(), std::slice::from_ref(app), &[]);
    let one = all
        .get("apps")
        .and_then(|a| a.get(0))
        .cloned()
        .unwrap_or(Yaml::Null);
    serde_json::to_value(one).unwrap_or_default()
}

/// `procward check -c FILE`.
pub fn check(args: &CheckArgs) -> i32 {
    match load_file(&args.file) {
        Ok(Loaded {
            apps,
            observed,
            agent,
            warnings,
            ..
        }) => {
            print_warnings(&warnings);
            match serde_norway::to_string(&normalized(&agent, &apps, &observed)) {
                Ok(text) => {
                    println!("# The apps as procward runs them; `procward check` of this prints it again.");
                    println!("# Environment values are not shown: each reads {HIDDEN}.");
                    for line in cron_times(&apps, &chrono::Local::now()) {
                        println!("# {line}");
                    }
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("procward: error: cannot print the apps: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!(
                "{}",
                with_prefix(&e).replacen("error:", "procward: error:", 1)
            );
            1
        }
    }
}

/// `procward convert FILE`: the file as procward YAML. It is validated
/// first, so a converted file always loads. Keys procward ignores are left
/// out (a comment lists them), so the converted file loads without a
/// warning; `deploy.<env>.env` moves into each app's `env_<env>`, under
/// its own values, which keeps what `--env <env>` gives.
pub fn convert(args: &ConvertArgs) -> i32 {
    match load::load(&args.file, &Selection::default()) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            let (tree, left_out) = without_unused(loaded.tree, &loaded.unused);
            match serde_norway::to_string(&tree) {
                Ok(text) => {
                    println!(
                        "# Converted from {} by `procward convert`.",
                        args.file.display()
                    );
                    if !left_out.is_empty() {
                        println!(
                            "# Left out, as procward does not use them: `{}`.",
                            left_out.join("`, `")
                        );
                    }
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("procward: error: cannot print the file: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!(
                "{}",
                with_prefix(&e).replacen("error:", "procward: error:", 1)
            );
            1
        }
    }
}

/// The app nodes of a process file's tree.
fn apps_mut(tree: &mut Node) -> Vec<&mut Node> {
    if tree.get("apps").is_none() && tree.get("script").is_some() {
        return vec![tree];
    }
    match &mut tree.value {
        Value::Seq(apps) => apps.iter_mut().collect(),
        Value::Map(entries) => match entries.iter_mut().find(|(k, _)| k.name == "apps") {
            Some((
                _,
                Node {
                    value: Value::Seq(apps),
                    ..
                },
            )) => apps.iter_mut().collect(),
            Some((_, app)) => vec![app],
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The tree without the keys procward does not use, and their names. The
/// `deploy` section's `<env>.env` variables move into each app's
/// `env_<env>`, under the app's own.
fn without_unused(mut tree: Node, unused: &[(Option<usize>, String)]) -> (Node, Vec<String>) {
    let mut left_out: Vec<String> = Vec::new();
    let mut deploy_envs: Vec<(String, Node)> = Vec::new();
    if let Value::Map(entries) = &mut tree.value {
        let deploy_unused = unused.iter().any(|(i, k)| i.is_none() && k == "deploy");
        if let Some(at) = entries
            .iter()
            .position(|(k, _)| k.name == "deploy" && deploy_unused)
        {
            let (_, deploy) = entries.remove(at);
            for (env, target) in deploy.as_map().unwrap_or_default() {
                if let Some(
                    vars @ Node {
                        value: Value::Map(_),
                        ..
                    },
                ) = target.get("env")
                {
                    deploy_envs.push((env.name.clone(), vars.clone()));
                }
            }
            left_out.push("deploy".into());
        }
    }
    for (i, app) in apps_mut(&mut tree).into_iter().enumerate() {
        let Value::Map(entries) = &mut app.value else {
            continue;
        };
        entries.retain(|(k, _)| {
            let ignored = unused.iter().any(|(at, u)| *at == Some(i) && *u == k.name);
            if ignored && !left_out.contains(&k.name) {
                left_out.push(k.name.clone());
            }
            !ignored
        });
        for (env, vars) in &deploy_envs {
            let key = format!("env_{env}");
            let Value::Map(from_deploy) = &vars.value else {
                continue;
            };
            match entries.iter_mut().find(|(k, _)| k.name == key) {
                Some((
                    _,
                    Node {
                        value: Value::Map(own),
                        ..
                    },
                )) => {
                    for (k, v) in from_deploy.iter().rev() {
                        if !own.iter().any(|(o, _)| o.name == k.name) {
                            own.insert(0, (k.clone(), v.clone()));
                        }
                    }
                }
                Some((_, other)) => *other = vars.clone(),
                None => entries.push((
                    Key {
                        name: key,
                        span: Span::default(),
                    },
                    vars.clone(),
                )),
            }
        }
    }
    (tree, left_out)
}

fn print_warnings(warnings: &[Problem]) {
    for w in warnings {
        eprintln!("procward: warning: {w}");
    }
}

/// Every problem on its own `error:` line; the caller prefixes the first
/// with `procward: `, as every other line already is.
fn with_prefix(e: &Errors) -> String {
    e.0.iter()
        .map(|p| format!("error: {p}"))
        .collect::<Vec<_>>()
        .join("\nprocward: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lists_the_next_three_cron_times() {
        let mut app = AppSpec::new("web", vec!["node".into()]);
        app.cron_restart = Some(crate::cron::Schedule::parse("0 3 * * *").unwrap());
        let plain = AppSpec::new("worker", vec!["node".into()]);
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T20:00:00+01:00").unwrap();
        assert_eq!(
            cron_times(&[app, plain], &now),
            [
                "web: cron_restart `0 3 * * *` restarts next at 2026-11-30 03:00:00 +01:00, \
              2026-12-01 03:00:00 +01:00, 2026-12-02 03:00:00 +01:00"
            ]
        );
    }
}
