//! `procward run -c`: the apps of one PM2 process file run together, with
//! `--env` and `--only`, start in the order listed and stop in reverse on
//! SIGTERM.

mod common;

use std::path::Path;

use common::{wait_file, Running};

/// An ecosystem.config.js with a shell app, a Node app and an app that
/// `--only` leaves out. Each app writes `started-<name>` with what it saw
/// of its environment, and `stopped-<name>` when asked to stop.
fn write_project(dir: &Path) {
    std::fs::write(dir.join(".env"), "FROM_DOTENV=loaded\n").unwrap();
    std::fs::write(
        dir.join("ecosystem.config.js"),
        r#"const fs = require('fs');
const path = require('path');
// dotenv-style: variables set while the file is evaluated reach the apps.
for (const line of fs.readFileSync(path.join(__dirname, '.env'), 'utf8').split('\n')) {
  const [k, v] = line.split('=');
  if (k) process.env[k] = v;
}
module.exports = {
  apps: [
    {
      name: 'shell',
      script: './shell.sh',
      env: { NAME: 'shell', GREETING: 'hello' },
      env_production: { GREETING: 'production' },
    },
    {
      name: 'node',
      script: path.join(__dirname, 'server.js'),
      env: { PORT: 3000, VERBOSE: false },
    },
    { name: 'left-out', script: './shell.sh', env: { NAME: 'left-out' } },
  ],
};
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("shell.sh"),
        "trap 'echo stopped > stopped-$NAME; exit 0' TERM INT\n\
         echo \"$GREETING $FROM_DOTENV\" > started-$NAME.tmp && mv started-$NAME.tmp started-$NAME\n\
         while :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.js"),
        r#"const fs = require('fs');
const e = process.env;
process.on('SIGTERM', () => { fs.writeFileSync('stopped-node', 'stopped\n'); process.exit(0); });
fs.writeFileSync('started-node.tmp', `${e.PORT} ${e.VERBOSE} ${e.FROM_DOTENV} ${e.GREETING}\n`);
fs.renameSync('started-node.tmp', 'started-node');
setInterval(() => {}, 1000);
"#,
    )
    .unwrap();
}

/// Whether a line with all of `parts` was seen before `line`.
fn seen_before(p: &Running, parts: &[&str], line: &str) -> bool {
    let at = p.seen.iter().position(|s| s == line).unwrap();
    p.seen[..at]
        .iter()
        .any(|s| parts.iter().all(|x| s.contains(x)))
}

#[test]
fn two_apps_from_one_file_run_with_env_and_only_and_stop_in_reverse_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_project(dir);
    let file = dir.join("ecosystem.config.js");
    let mut p = Running::start(&[
        "run",
        "-c",
        file.to_str().unwrap(),
        "--env",
        "production",
        "--only",
        "shell,node",
    ]);

    // Both run, each with its own environment: env_production over env,
    // numbers and booleans as strings, the file's dotenv variables, and
    // nothing of the other app's env.
    assert_eq!(wait_file(&dir.join("started-shell")), "production loaded\n");
    assert_eq!(
        wait_file(&dir.join("started-node")),
        "3000 false loaded undefined\n"
    );
    // Each wait returns the later line; the earlier must already be seen.
    let node_online = p.wait_line(&["app=node", "to=\"online\""]);
    assert!(
        seen_before(&p, &["app=shell", "to=\"online\""], &node_online),
        "started in the order listed"
    );

    p.signal(libc::SIGTERM);
    let shell_stopping = p.wait_line(&["app=shell", "to=\"stopping\""]);
    assert!(
        seen_before(&p, &["app=node", "to=\"stopping\""], &shell_stopping),
        "stopped in reverse order"
    );
    let status = p.wait_exit();
    assert_eq!(
        common::code_of(status),
        0,
        "both apps exited 0 on SIGTERM; seen:\n{}",
        p.seen.join("\n")
    );
    assert_eq!(wait_file(&dir.join("stopped-node")), "stopped\n");
    assert_eq!(wait_file(&dir.join("stopped-shell")), "stopped\n");

    // --only left the third app out entirely.
    assert_eq!(p.count_lines(&["app=left-out"]), 0);
    assert!(!dir.join("started-left-out").exists());
}

#[test]
fn an_invalid_file_starts_nothing_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("app.sh"), "touch started\n").unwrap();
    std::fs::write(
        dir.join("procward.yaml"),
        "apps:\n  - name: ok\n    script: app.sh\n  - name: bad\n    script: app.sh\n    instances: lots\n",
    )
    .unwrap();
    let (code, _out, err) =
        common::run_to_end(&["run", "-c", dir.join("procward.yaml").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("procward.yaml:6:16: expected `instances` to be a number"),
        "{err}"
    );
    assert!(
        !dir.join("started").exists(),
        "nothing may start when the file is invalid"
    );
}

#[test]
fn cli_flags_override_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("once.sh"), "echo ran >> runs\nexit 3\n").unwrap();
    std::fs::write(
        dir.join("procward.yaml"),
        "procward:\n  log_format: text\napps:\n  - name: once\n    script: once.sh\n",
    )
    .unwrap();
    // Without --no-autorestart this would restart until errored.
    let (code, _out, err) = common::run_to_end(&[
        "run",
        "-c",
        dir.join("procward.yaml").to_str().unwrap(),
        "--no-autorestart",
        "--log-format",
        "json",
    ]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("runs")).unwrap(), "ran\n");
    assert!(
        err.lines()
            .any(|l| l.starts_with('{') && l.contains("\"app\":\"once\"")),
        "json logs: {err}"
    );
}

#[test]
fn apps_that_ignore_sigterm_are_killed_together_after_one_kill_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("stubborn.sh"),
        "trap '' TERM INT\necho up > started-$NAME\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("procward.yaml"),
        "apps:\n\
         - {name: first, script: stubborn.sh, kill_timeout: 3000, env: {NAME: first}}\n\
         - {name: second, script: stubborn.sh, kill_timeout: 3s, env: {NAME: second}}\n",
    )
    .unwrap();
    let mut p = Running::start(&["run", "-c", dir.join("procward.yaml").to_str().unwrap()]);
    wait_file(&dir.join("started-first"));
    wait_file(&dir.join("started-second"));
    let asked = std::time::Instant::now();
    p.signal(libc::SIGTERM);
    p.wait_exit();
    let took = asked.elapsed();
    assert_eq!(
        p.count_lines(&["sending SIGKILL"]),
        2,
        "{}",
        p.seen.join("\n")
    );
    // One after the other would take two kill_timeouts (6s); together, one.
    assert!(
        took >= std::time::Duration::from_millis(2900),
        "killed before kill_timeout: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_millis(5500),
        "stops were not in parallel: {took:?}"
    );
}

/// `user:` switches the app to that user and its primary group, with no
/// supplementary groups left from procward (root).
#[test]
fn an_app_with_a_user_runs_as_that_user_and_its_group() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("ids");
    let file = dir.path().join("process.yaml");
    std::fs::write(
        &file,
        format!(
            "apps:\n  - name: unprivileged\n    script: /bin/sh\n    interpreter: none\n    user: daemon\n    autorestart: false\n    args: ['-c', 'echo $(id -u) $(id -g) $(id -G) > {}.tmp && mv {}.tmp {}']\n",
            out.display(),
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    let (uid, gid) = passwd_ids("daemon");
    let mut run = Running::start(&["run", "-c", file.to_str().unwrap()]);
    let ids = wait_file(&out);
    assert_eq!(ids.trim(), format!("{uid} {gid} {gid}"));
    assert_eq!(common::code_of(run.wait_exit()), 0);
}

/// (uid, gid) of a user, from /etc/passwd.
fn passwd_ids(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no {user} in /etc/passwd"));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// Process files as PM2 runs them: a command line in `script` (or `cmd`)
/// runs through bash, so `VAR=value` and `&&` work; `deploy.production.env`
/// reaches the app under `--env production`; a python app runs unbuffered.
#[test]
fn command_lines_deploy_env_and_python_run_as_under_pm2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("tunnel.js"),
        "require('fs').writeFileSync('port.tmp', `${process.env.PORT} ${process.env.NODE_ENV}\\n`);\n\
         require('fs').renameSync('port.tmp', 'port');\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("worker.py"),
        "import os\nopen('python.tmp', 'w').write(os.environ.get('PYTHONUNBUFFERED', 'unset') + '\\n')\nos.rename('python.tmp', 'python')\n",
    )
    .unwrap();
    let port = 4010;
    std::fs::write(
        dir.join("ecosystem.config.js"),
        format!(
            r#"module.exports = {{
  apps: [
    {{ script: `PORT=${{{port}}} node ./tunnel.js`, autorestart: false, env: {{ NODE_ENV: 'development' }} }},
    {{ name: 'chained', cmd: 'test -f tunnel.js && echo chained > chained.tmp && mv chained.tmp chained', args: '--ignored', autorestart: false }},
    {{ name: 'py', script: 'worker.py', autorestart: false }},
  ],
  deploy: {{ production: {{ host: ['web-1'], env: {{ NODE_ENV: 'production' }} }} }},
}};
"#
        ),
    )
    .unwrap();
    let mut run = Running::start(&[
        "run",
        "-c",
        dir.join("ecosystem.config.js").to_str().unwrap(),
        "--env",
        "production",
    ]);
    assert_eq!(wait_file(&dir.join("port")), "4010 production\n");
    assert_eq!(wait_file(&dir.join("chained")), "chained\n");
    assert_eq!(wait_file(&dir.join("python")), "1\n");
    assert_eq!(common::code_of(run.wait_exit()), 0);
    assert!(
        run.count_lines(&["app=tunnel "]) > 0,
        "the unnamed command line is named as PM2 names it:\n{}",
        run.seen.join("\n")
    );
    assert_eq!(
        run.count_lines(&["`args` dropped", "bash -c"]),
        1,
        "{}",
        run.seen.join("\n")
    );
}

/// `script: serve` is PM2's static file server: refused before anything
/// starts, even with a `serve` program in PATH.
#[test]
fn script_serve_is_refused_not_looked_up_in_path() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("serve"), "#!/bin/sh\ntouch \"$0.ran\"\n").unwrap();
    std::fs::set_permissions(bin.join("serve"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("process.yaml"), "apps:\n  - script: serve\n").unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["run", "-c", dir.join("process.yaml").to_str().unwrap()])
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("built-in static file server"), "{err}");
    assert!(!bin.join("serve.ran").exists(), "the `serve` in PATH ran");
}
