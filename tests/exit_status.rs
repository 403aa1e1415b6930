//! procward exits with the app's status: its exit code, 128+N when a signal
//! killed it, 127/126 when it cannot be run (as tini and sh do).

mod common;
use common::*;

#[test]
fn exit_codes_pass_through_unchanged() {
    for code in [0, 1, 42, 255] {
        let (got, _, _) = run_to_end(&[
            "--no-autorestart",
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(got, code, "sh exiting {code}");
    }
}

#[test]
fn a_node_app_exit_code_passes_through() {
    let (got, _, _) = run_to_end(&["--no-autorestart", "--", "node", "-e", "process.exit(42)"]);
    assert_eq!(got, 42);
}

#[test]
fn an_app_killed_by_signal_n_gives_128_plus_n() {
    for signo in [libc::SIGUSR1, libc::SIGTERM, libc::SIGKILL, libc::SIGSEGV] {
        let script = format!("kill -{signo} $$");
        let (got, _, err) = run_to_end(&["--no-autorestart", "--", "sh", "-c", &script]);
        assert_eq!(got, 128 + signo, "sh killed by {signo}; stderr:\n{err}");
    }
}

#[test]
fn a_missing_command_exits_127_with_a_clear_message() {
    let (got, _, err) = run_to_end(&["--", "no-such-command-procward"]);
    assert_eq!(got, 127);
    assert!(
        err.contains("cannot run `no-such-command-procward`: No such file or directory"),
        "{err}"
    );
    assert!(err.contains("check the command name and PATH"), "{err}");
}

#[test]
fn a_file_that_is_not_executable_exits_126_with_a_clear_message() {
    let dir = scratch();
    let script = path_in(&dir, "app.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let (got, _, err) = run_to_end(&["--", &script]);
    assert_eq!(got, 126);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("is it executable? chmod +x"), "{err}");
}
