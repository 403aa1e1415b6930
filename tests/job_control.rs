//! Job-control signals (SIGTSTP, SIGTTIN, SIGTTOU) are forwarded to the
//! app's group; procward itself is never stopped by them.

mod common;
use common::*;

#[test]
fn job_control_signals_stop_the_app_but_never_procward() {
    let mut run = Running::start(&["--", "sleep", "1000"]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    for signo in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        run.signal(signo);
        wait_until(&format!("the app stopped by {signo}"), || {
            (state_of(app) == Some('T')).then_some(())
        });
        assert_ne!(
            state_of(run.pid()),
            Some('T'),
            "procward was stopped by {signo}"
        );
        run.signal(libc::SIGCONT);
        wait_until("the app to continue", || {
            (state_of(app) == Some('S')).then_some(())
        });
    }
    assert_eq!(
        run.count_lines(&["exited"]),
        0,
        "a stopped app is not an exit"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 128 + libc::SIGTERM);
}

#[test]
fn a_stopped_app_can_still_be_stopped_for_good() {
    let mut run = Running::start(&["--kill-timeout", "300ms", "--", "sleep", "1000"]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    run.signal(libc::SIGTSTP);
    wait_until("the app stopped", || {
        (state_of(app) == Some('T')).then_some(())
    });
    run.signal(libc::SIGTERM);
    let code = code_of(run.wait_exit());
    assert!(
        code == 128 + libc::SIGTERM || code == 128 + libc::SIGKILL,
        "exit {code}"
    );
}
