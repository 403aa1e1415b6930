//! On a terminal, Ctrl-C stops procward and its app: the terminal's
//! foreground group stays procward's, so the SIGINT reaches procward, which
//! ends supervision, instead of reaching only the app, which procward would
//! then restart.

mod common;
use common::*;

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
