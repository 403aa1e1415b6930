//! On a terminal, procward hands the terminal's foreground to its app, as
//! tini does: an interactive shell or REPL reads what is typed, its exit
//! status comes back, and Ctrl-C reaches the app from the terminal. When
//! the app dies of that Ctrl-C, procward stops as it does on its own
//! SIGINT, instead of restarting it; when procward exits, the foreground
//! goes back to the group that started it. Each test plays a session on a
//! real pseudo-terminal (tests/fixtures/core/terminal_session.py).

mod common;
use common::*;

/// Plays `steps` on a new pseudo-terminal running `cmd`; returns the
/// harness's first line ("exit N" or "timeout: STEP") and the terminal's
/// whole output.
fn session(steps: &[&str], cmd: &[&str]) -> (String, String) {
    let o = std::process::Command::new("python3")
        .arg(core("terminal_session.py"))
        .args(steps)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run terminal_session.py");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let first = out.lines().next().unwrap_or_default().to_string();
    (first, out)
}

fn procward() -> String {
    bin().to_string_lossy().into_owned()
}

#[test]
fn ctrl_c_on_a_terminal_stops_procward_and_the_app() {
    let (code, out, err) = {
        let o = std::process::Command::new("python3")
            .arg(core("in_terminal.py"))
            .arg("to=\"online\"")
            .arg(bin())
            .args(["--", "sleep", "1000"])
            .output()
            .expect("run in_terminal.py");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        (
            code_of(o.status),
            out,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(first, format!("exit {}", 128 + libc::SIGINT), "{out}");
    assert!(out.contains("stopping every app signal=SIGINT"), "{out}");
    assert!(
        !out.contains("reason=\"signal\""),
        "the app was restarted:\n{out}"
    );
}

#[test]
fn the_app_is_the_terminals_foreground_and_reads_its_input() {
    let app = "import os\n\
               print('foreground=%s' % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)\n\
               print('read=' + input())";
    let (first, out) = session(
        &["expect:foreground=", "send:hello\\n", "expect:read=hello"],
        &[&procward(), "--no-autorestart", "--", "python3", "-c", app],
    );
    assert_eq!(first, "exit 0", "{out}");
    assert!(out.contains("foreground=True"), "{out}");
}

#[test]
fn an_interactive_shell_reads_its_input_and_its_exit_status_comes_back() {
    let (first, out) = session(
        &[
            "expect:bash",
            "send:PS1=shell'> '\\n",
            "expect:shell> ",
            "send:echo $((40+2))\\n",
            "expect:42\\r\\n",
            "send:exit 42\\n",
        ],
        &[
            &procward(),
            "--no-autorestart",
            "--",
            "bash",
            "--norc",
            "--noprofile",
            "-i",
        ],
    );
    assert_eq!(first, "exit 42", "{out}");
}

#[test]
fn ctrl_c_reaches_the_app_from_the_terminal() {
    // A REPL catches Ctrl-C and goes on: procward must not take it as its
    // own SIGINT and stop everything.
    let app = "import signal, sys\n\
               signal.signal(signal.SIGINT, lambda *a: print('caught', flush=True))\n\
               print('waiting', flush=True)\n\
               sys.stdin.readline()\n\
               print('done')";
    let (first, out) = session(
        &[
            "expect:waiting",
            "intr",
            "expect:caught",
            "send:x\\n",
            "expect:done",
        ],
        &[&procward(), "--no-autorestart", "--", "python3", "-c", app],
    );
    assert_eq!(first, "exit 0", "{out}");
    assert!(!out.contains("stopping every app"), "{out}");
}

#[test]
fn a_restarted_app_gets_the_terminal_back() {
    let dir = scratch();
    let runs = path_in(&dir, "runs");
    let app = format!(
        "import os, sys\n\
         open('{runs}', 'a').write('run\\n')\n\
         first = open('{runs}').read().count('run') == 1\n\
         print('foreground=%s' % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)\n\
         sys.exit(3) if first else print('read=' + input())"
    );
    let (first, out) = session(
        &[
            "expect:foreground=",
            "expect:foreground=",
            "send:again\\n",
            "expect:read=again",
        ],
        &[
            &procward(),
            "--stop-exit-codes",
            "0",
            "--",
            "python3",
            "-c",
            &app,
        ],
    );
    assert_eq!(first, "exit 0", "{out}");
    assert_eq!(out.matches("foreground=True").count(), 2, "{out}");
}

#[test]
fn the_foreground_goes_back_when_procward_exits() {
    // sh without job control: procward runs in sh's own group, which must
    // be the foreground again once procward is done.
    let script = format!(
        "{} --no-autorestart -- true; \
         python3 -c 'import os; print(\"back=%s\" % (os.tcgetpgrp(0) == os.getpgrp()))'",
        procward()
    );
    let (first, out) = session(&["expect:back="], &["sh", "-c", &script]);
    assert_eq!(first, "exit 0", "{out}");
    assert!(out.contains("back=True"), "{out}");
}

#[test]
fn several_processes_leave_the_terminal_with_procward() {
    let app = "import os\n\
               print('foreground=%s' % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)";
    let (first, out) = session(
        &["expect:foreground=", "expect:foreground="],
        &[
            &procward(),
            "-i",
            "2",
            "--no-autorestart",
            "--",
            "python3",
            "-c",
            app,
        ],
    );
    assert_eq!(first, "exit 0", "{out}");
    assert_eq!(out.matches("foreground=False").count(), 2, "{out}");
}

#[test]
fn as_pid1_the_app_gets_the_terminal_and_ctrl_c_still_stops_procward() {
    // `unshare --fork` leaves procward in its parent's group, which lies
    // outside procward's PID namespace, as a container runtime may.
    let pw = procward();
    let as_pid1 = ["unshare", "--pid", "--fork", "--mount-proc", pw.as_str()];
    let app = "import os\n\
               print('foreground=%s' % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)\n\
               print('read=' + input())";
    let mut cmd = as_pid1.to_vec();
    cmd.extend(["--no-autorestart", "--", "python3", "-c", app]);
    let (first, out) = session(
        &["expect:foreground=", "send:hi\\n", "expect:read=hi"],
        &cmd,
    );
    assert_eq!(first, "exit 0", "{out}");
    assert!(out.contains("foreground=True"), "{out}");
    let mut cmd = as_pid1.to_vec();
    cmd.extend(["--", "sleep", "1000"]);
    let (first, out) = session(&["expect:to=\"online\"", "intr"], &cmd);
    assert_eq!(first, format!("exit {}", 128 + libc::SIGINT), "{out}");
    assert!(out.contains("stopping every app signal=SIGINT"), "{out}");
    assert!(!out.contains("reason=\"signal\""), "restarted:\n{out}");
}
