//! SIGTERM, SIGINT and SIGQUIT are forwarded to the whole group, end
//! supervision (no restart) and procward exits with the app's status.

mod common;
use common::*;

#[test]
fn sigterm_sigint_and_sigquit_stop_with_the_apps_exit_code() {
    for signo in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
        let dir = scratch();
        let out = path_in(&dir, "signals");
        let code = format!("{signo}:{}", 30 + signo);
        let catch = core("catch.py");
        let script = format!(
            "python3 {catch} {out} grandchild --exit {code} & exec python3 {catch} {out} child --exit {code}"
        );
        let mut run = Running::start(&["--", "sh", "-c", &script]);
        wait_lines(&out, "both ready", |l| {
            l.iter().filter(|x| x.contains(" ready ")).count() == 2
        });
        run.signal(signo);
        assert_eq!(code_of(run.wait_exit()), 30 + signo, "after signal {signo}");
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains(&format!("grandchild {signo}\n")), "{text}");
        assert_eq!(
            text.matches(" ready ").count(),
            2,
            "restarted after {signo}:\n{text}"
        );
    }
}

#[test]
fn an_app_killed_by_the_forwarded_sigterm_gives_143() {
    let mut run = Running::start(&["--", "sleep", "1000"]);
    run.wait_line(&["to=\"online\""]);
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 128 + libc::SIGTERM);
    assert_eq!(
        run.count_lines(&["to=\"online\""]),
        1,
        "restarted after SIGTERM"
    );
}
