//! Orphaned grandchildren are re-parented to procward (a child subreaper
//! when it is not PID 1) and reaped: no zombie is left.

mod common;
use common::*;

#[test]
fn five_hundred_orphaned_grandchildren_are_reaped_by_the_subreaper() {
    let dir = scratch();
    let out = path_in(&dir, "parents");
    let mut run = Running::start(&["--", "python3", &core("orphans.py"), "500", &out]);
    let lines = wait_lines(&out, "500 orphans and done", |l| {
        l.iter().filter(|x| *x != "done").count() == 500 && l.iter().any(|x| x == "done")
    });
    let me = run.pid().to_string();
    let strangers: Vec<&String> = lines.iter().filter(|l| *l != "done" && **l != me).collect();
    assert!(
        strangers.is_empty(),
        "orphans re-parented elsewhere than procward ({me}): {strangers:?}"
    );
    wait_until("no zombie left under procward", || {
        zombies_of(run.pid()).is_empty().then_some(())
    });
    assert!(alive(run.pid()));
    run.signal(libc::SIGTERM);
    assert_eq!(code_of(run.wait_exit()), 0);
}
