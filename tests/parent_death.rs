//! PR_SET_PDEATHSIG: when procward is killed outright (SIGKILL), its app
//! dies with it instead of running on unsupervised.

mod common;
use common::*;

#[test]
fn sigkill_to_procward_takes_the_app_down() {
    let mut run = Running::start(&["--", "sleep", "1000"]);
    let app = pid_field(&run.wait_line(&["to=\"online\""]));
    assert!(alive(app));
    run.signal(libc::SIGKILL);
    run.wait_exit();
    wait_until("the app to die after procward", || {
        (!alive(app)).then_some(())
    });
}
