//! Process files: every fixture in tests/fixtures/process-files normalizes
//! to the apps its `expected.yaml` lists, every broken file fails with the
//! exact error text beside it, and converted files load the same.
//!
//! Each fixture directory holds a process file written the way PM2 users
//! write them, the scripts it names, `cmdline` (the arguments after
//! `procward check`), `expected.yaml` (stdout) and, when there are
//! warnings, `expected.stderr`. Absolute paths into the fixture read
//! `$DIR`. `check` runs pinned to one CPU (taskset), so `instances: max`
//! resolves the same on every machine; the cgroup test below covers
//! counting. `tests/fixtures/process-files/bin` stands in for npm, yarn,
//! pnpm and bun in PATH.
//!
//! PROCWARD_BLESS=1 rewrites the expected files from the current output
//! (review the diff before committing it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn corpus() -> PathBuf {
    common::fixture("process-files")
}

/// Runs `procward ARGS` in `dir`, pinned to CPU 0, with the stand-in
/// programs first in PATH; returns (exit code, stdout, stderr) with `dir`
/// written as `$DIR`.
fn procward_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let path = format!(
        "{}:{}",
        corpus().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(common::bin())
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("WEB_CONCURRENCY")
        .stdin(Stdio::null())
        .output()
        .expect("run taskset procward (taskset is in util-linux)");
    let dir_text = dir.to_string_lossy().into_owned();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&dir_text, "$DIR");
    (
        common::code_of(out.status),
        clean(&out.stdout),
        clean(&out.stderr),
    )
}

fn fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cmdline").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn cmdline(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cmdline"))
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Compares `got` with the file's contents (missing file: empty), or
/// rewrites it under PROCWARD_BLESS; returns a description of a mismatch.
fn compare(file: &Path, got: &str) -> Option<String> {
    if std::env::var_os("PROCWARD_BLESS").is_some() {
        if got.is_empty() {
            let _ = std::fs::remove_file(file);
        } else {
            std::fs::write(file, got).unwrap();
        }
        return None;
    }
    let want = std::fs::read_to_string(file).unwrap_or_default();
    (want != got).then(|| format!("--- {}\n+++ got\n{}", file.display(), diff(&want, got)))
}

/// A small line diff, enough to see what changed.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                out.push_str(&format!(
                    "{:>4}: - {}\n      + {}\n",
                    i + 1,
                    a.unwrap_or(&""),
                    b.unwrap_or(&"")
                ));
            }
        }
    }
    out
}

#[test]
fn the_corpus_has_twenty_files_in_three_formats() {
    let files: Vec<String> = fixtures().iter().map(|d| cmdline(d)[1].clone()).collect();
    assert!(files.len() >= 20, "{files:?}");
    for ext in [".js", ".json", ".yaml"] {
        assert!(
            files.iter().filter(|f| f.ends_with(ext)).count() >= 4,
            "few {ext} files: {files:?}"
        );
    }
}

#[test]
fn every_fixture_normalizes_to_its_expected_apps() {
    let mut failures = Vec::new();
    for dir in fixtures() {
        let args = cmdline(&dir);
        let mut check = vec!["check"];
        check.extend(args.iter().map(String::as_str));
        let (code, out, err) = procward_in(&dir, &check);
        if code != 0 {
            failures.push(format!("{}: exit {code}\n{err}", dir.display()));
            continue;
        }
        failures.extend(compare(&dir.join("expected.yaml"), &out));
        failures.extend(compare(&dir.join("expected.stderr"), &err));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_broken_file_fails_with_its_exact_error() {
    let dir = corpus().join("broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e != "expected"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let mut failures = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let (code, out, err) = procward_in(&dir, &["check", "-c", &name]);
        if code != 1 || !out.is_empty() {
            failures.push(format!("{name}: exit {code}, stdout {out:?}"));
        }
        failures.extend(compare(&dir.join(format!("{name}.expected")), &err));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn converted_files_load_to_the_same_apps() {
    let mut failures = Vec::new();
    for dir in fixtures() {
        let args = cmdline(&dir);
        let (code, converted, err) = procward_in(&dir, &["convert", &args[1]]);
        if code != 0 {
            failures.push(format!("{}: convert exit {code}\n{err}", dir.display()));
            continue;
        }
        if let Some(m) = dir
            .join("expected-convert.yaml")
            .is_file()
            .then(|| compare(&dir.join("expected-convert.yaml"), &converted))
            .flatten()
        {
            failures.push(m);
        }
        // Next to the original, so relative paths mean the same.
        let copy = dir.join(format!(".converted-{}.yaml", std::process::id()));
        std::fs::write(&copy, converted.replace("$DIR", &dir.to_string_lossy())).unwrap();
        let copy_name = copy.file_name().unwrap().to_string_lossy().into_owned();
        let mut original = vec!["check".to_string()];
        original.extend(args.iter().cloned());
        let mut again = original.clone();
        again[2] = copy_name;
        let a = procward_in(
            &dir,
            &original.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let b = procward_in(&dir, &again.iter().map(String::as_str).collect::<Vec<_>>());
        std::fs::remove_file(&copy).unwrap();
        if !b.2.is_empty() {
            failures.push(format!(
                "{}: the converted file warns, it should leave ignored keys out\n{}",
                dir.display(),
                b.2
            ));
        }
        if a.1 != b.1 || b.0 != 0 {
            failures.push(format!(
                "{}: the converted file loads differently\n{}{}",
                dir.display(),
                diff(&a.1, &b.1),
                b.2
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `check` prints a process file: checked again (with no `--env` or
/// `--only`, which it already applied), it prints the same text, without
/// a warning.
#[test]
fn check_output_checks_to_itself() {
    let mut failures = Vec::new();
    for dir in fixtures() {
        let args = cmdline(&dir);
        let mut check = vec!["check"];
        check.extend(args.iter().map(String::as_str));
        let (code, first, err) = procward_in(&dir, &check);
        if code != 0 {
            failures.push(format!("{}: exit {code}\n{err}", dir.display()));
            continue;
        }
        let copy = dir.join(format!(".checked-{}.yaml", std::process::id()));
        std::fs::write(&copy, first.replace("$DIR", &dir.to_string_lossy())).unwrap();
        let copy_name = copy.file_name().unwrap().to_string_lossy().into_owned();
        let (code, again, err) = procward_in(&dir, &["check", "-c", &copy_name]);
        std::fs::remove_file(&copy).unwrap();
        if code != 0 || first != again || !err.is_empty() {
            failures.push(format!(
                "{}: check of check's output differs (exit {code})\n{}{err}",
                dir.display(),
                diff(&first, &again)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_javascript_file_without_node_says_how_to_convert_it() {
    let dir = corpus().join("js-npm-start");
    let out = Command::new(common::bin())
        .args(["check", "-c", "ecosystem.config.js"])
        .current_dir(&dir)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "procward: error: ecosystem.config.js: cannot evaluate a JavaScript process file: `node` is not in PATH\n  \
         hint: install node, or convert the file once where node is installed: \
         `procward convert ecosystem.config.js > procward.yaml`\n"
    );
}

/// A cgroup with a CPU quota of one CPU, removed on drop.
struct QuotaCgroup(PathBuf);

impl QuotaCgroup {
    /// Creates it under cgroup v1's cpu controller or cgroup v2; `None`
    /// when this machine does not let us (not root, read-only cgroupfs).
    fn one_cpu() -> Option<QuotaCgroup> {
        let name = format!("procward-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").exists() {
            let dir = v1.join(name);
            std::fs::create_dir(&dir).ok()?;
            let cg = QuotaCgroup(dir);
            std::fs::write(cg.0.join("cpu.cfs_period_us"), "100000").ok()?;
            std::fs::write(cg.0.join("cpu.cfs_quota_us"), "100000").ok()?;
            return Some(cg);
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
        let dir = v2.join(name);
        std::fs::create_dir(&dir).ok()?;
        let cg = QuotaCgroup(dir);
        std::fs::write(cg.0.join("cpu.max"), "100000 100000").ok()?;
        Some(cg)
    }
}

impl Drop for QuotaCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The `instances` procward resolves for `instances: max` when started by
/// `sh -c PREFIX; exec procward check`, on CPUs 0 and 1.
fn instances_max(prefix: &str) -> String {
    let file = corpus().join("js-cluster-max/ecosystem.config.js");
    let script = format!("{prefix} exec \"$0\" check -c \"$1\" | grep '^  instances:'");
    let out = Command::new("taskset")
        .args(["-c", "0,1", "sh", "-c", &script])
        .arg(common::bin())
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn instances_max_counts_the_cpus_of_the_cgroup_quota_not_the_host() {
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if online < 2 {
        eprintln!("skipped: this machine has one CPU, so a one-CPU quota changes nothing");
        return;
    }
    assert_eq!(
        instances_max(""),
        "instances: 2",
        "two CPUs in the affinity mask, no quota"
    );
    let Some(cg) = QuotaCgroup::one_cpu() else {
        eprintln!("skipped: cannot create a cgroup with a CPU quota here (needs root and a writable cgroupfs)");
        return;
    };
    let join = format!("echo $$ > {}/cgroup.procs &&", cg.0.display());
    assert_eq!(
        instances_max(&join),
        "instances: 1",
        "a one-CPU quota on a two-CPU machine"
    );
}

#[test]
fn only_must_name_apps_of_the_file() {
    let dir = corpus().join("js-several-apps");
    let (code, out, err) = procward_in(
        &dir,
        &["check", "-c", "ecosystem.config.js", "--only", "web,wrker"],
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "procward: error: ecosystem.config.js: expected `--only` to name apps of this file, found `wrker`\n  \
         hint: the apps are: web, queue-worker, thumbnailer, sync\n"
    );
    let (code, out, _) = procward_in(
        &dir,
        &["check", "-c", "ecosystem.config.js", "--only", "sync,web"],
    );
    assert_eq!(code, 0);
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("- name: "))
        .collect();
    assert_eq!(names, ["web", "sync"], "the file's order, not --only's");
}
