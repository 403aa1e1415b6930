//! The command runs exactly as given: arguments with spaces, empty ones and
//! ones that look like options reach it unchanged.

mod common;
use common::*;

const PRINT_ARGV: &str = "import json, sys; print(json.dumps(sys.argv[1:]))";

fn argv_seen(procward_args: &[&str]) -> String {
    let (code, out, err) = run_to_end(procward_args);
    assert_eq!(code, 0, "{err}");
    out.trim_end().to_string()
}

#[test]
fn arguments_with_spaces_empty_ones_and_dashes_pass_exactly() {
    let got = argv_seen(&[
        "--no-autorestart",
        "--",
        "python3",
        "-c",
        PRINT_ARGV,
        "a b",
        "",
        "-x",
        "--name",
        "--",
        "  leading",
        "tab\there",
        "--kill-timeout=1",
    ]);
    assert_eq!(
        got,
        r#"["a b", "", "-x", "--name", "--", "  leading", "tab\there", "--kill-timeout=1"]"#
    );
}

#[test]
fn options_after_the_command_belong_to_the_command_even_without_a_double_dash() {
    let got = argv_seen(&[
        "--no-autorestart",
        "python3",
        "-c",
        PRINT_ARGV,
        "--no-autorestart",
        "-i",
        "3",
    ]);
    assert_eq!(got, r#"["--no-autorestart", "-i", "3"]"#);
}

#[test]
fn environment_and_working_directory_are_inherited() {
    let dir = scratch();
    let output = std::process::Command::new(bin())
        .args([
            "--no-autorestart",
            "--",
            "sh",
            "-c",
            "echo \"$PROCWARD_TEST_VAR|$(pwd -P)\"",
        ])
        .env("PROCWARD_TEST_VAR", "x y")
        .current_dir(dir.path())
        .output()
        .expect("run procward");
    let (code, err) = (
        code_of(output.status),
        String::from_utf8_lossy(&output.stderr),
    );
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(code, 0, "{err}");
    let real = dir.path().canonicalize().unwrap();
    assert_eq!(out.trim_end(), format!("x y|{}", real.display()));
}
