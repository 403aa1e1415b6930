//! Capture of the apps' output with real Node apps: byte-exact files
//! through rotation, long lines, merged instances, SIGUSR2 reopen, and
//! failing files (a read-only directory, a full tmpfs) that never stop
//! the app.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn logs_fixture(name: &str) -> String {
    fixture("logs").join(name).to_string_lossy().into_owned()
}

/// Line `k` of write.js for instance `tag`, `width` bytes with its newline.
fn expected_line(tag: u32, k: u64, width: usize) -> String {
    let head = format!("{tag}{k:010}");
    let head = &head[head.len() - 11..];
    format!("{head}{}\n", "x".repeat(width - 12))
}

/// write.js's output rounded up to whole lines.
fn expected_len(bytes: u64, width: u64) -> u64 {
    bytes.div_ceil(width) * width
}

/// `path` and its rotated files (`path.N`, `path.N.gz`), oldest first.
fn rotated_set(path: &Path) -> Vec<PathBuf> {
    let mut n = 1;
    let mut out = Vec::new();
    loop {
        let plain = PathBuf::from(format!("{}.{n}", path.display()));
        let gz = PathBuf::from(format!("{}.{n}.gz", path.display()));
        if plain.exists() {
            out.push(plain);
        } else if gz.exists() {
            out.push(gz);
        } else {
            break;
        }
        n += 1;
    }
    out.reverse();
    out.push(path.to_path_buf());
    out
}

/// A reader of a log file, decompressing `.gz` files.
fn open_log(p: &Path) -> Box<dyn Read> {
    let f = std::fs::File::open(p).unwrap();
    if p.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    }
}

fn total_size(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// procward's peak resident memory (VmHWM), KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_gigabyte_arrives_byte_exact_through_rotation_in_bounded_memory() {
    const BYTES: u64 = 1 << 30;
    const WIDTH: usize = 100;
    let dir = scratch();
    let out = dir.path().join("out.log");
    let started = std::time::Instant::now();
    let mut pw = Running::start(&[
        "--no-autorestart",
        "-o",
        out.to_str().unwrap(),
        "--log-max-size",
        "100M",
        "--log-retain",
        "100",
        "--",
        "node",
        &logs_fixture("write.js"),
        &BYTES.to_string(),
        &WIDTH.to_string(),
        "out",
        "stay",
    ]);
    let want = expected_len(BYTES, WIDTH as u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while total_size(&rotated_set(&out)) < want {
        assert!(
            std::time::Instant::now() < deadline,
            "1 GiB not written within 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let peak = peak_rss_kib(pw.pid());
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
    let files = rotated_set(&out);
    eprintln!(
        "1 GiB through capture in {elapsed:?}, {} files, procward peak RSS {peak} KiB",
        files.len()
    );
    assert!(files.len() >= 10, "rotated at 100M: {files:?}");
    for f in &files[..files.len() - 1] {
        assert!(std::fs::metadata(f).unwrap().len() <= 100 << 20, "{f:?}");
    }
    // Byte-exact: every line, in order, nothing more.
    let mut k = 0u64;
    let mut line = String::new();
    for f in &files {
        let mut r = BufReader::with_capacity(1 << 20, open_log(f));
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            assert_eq!(line, expected_line(0, k, WIDTH), "line {k} in {f:?}");
            k += 1;
        }
    }
    assert_eq!(k * WIDTH as u64, want);
    assert!(
        peak < 64 * 1024,
        "procward's peak RSS {peak} KiB: it should not grow with the output"
    );
}

#[test]
fn a_10_mb_line_is_written_in_counted_pieces() {
    let dir = scratch();
    let out = path_in(&dir, "out.log");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let script = "const fs=require('fs');\
        let s='';for(let i=0;s.length<10*1024*1024+5;i++)s+=String(i%10);\
        fs.writeSync(1,s+'\\n');fs.writeSync(1,'after\\n');setInterval(()=>{},1e9)";
    let mut pw = Running::start(&[
        "--metrics",
        &addr,
        "--name",
        "long",
        "-o",
        &out,
        "--",
        "node",
        "-e",
        script,
    ]);
    pw.wait_line(&["serving /metrics"]);
    let lines = wait_for_line(&out, "after");
    let long: Vec<&String> = lines.iter().take(lines.len() - 1).collect();
    let total: usize = long.iter().map(|l| l.len()).sum();
    assert_eq!(total, 10 * 1024 * 1024 + 5);
    assert_eq!(long.len(), 161, "pieces of 64 KiB");
    assert!(long.iter().all(|l| l.len() <= 64 * 1024));
    let joined: String = long.iter().map(|l| l.as_str()).collect();
    assert!(joined
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'0' + (i % 10) as u8));
    let m = scrape(&addr);
    assert_eq!(
        metric(&m, "procward_log_lines_split_total{app=\"long\"}"),
        Some(1.0),
        "{m}"
    );
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
}

#[test]
fn four_instances_with_merge_logs_write_whole_lines_to_shared_files() {
    const BYTES: u64 = 4 << 20;
    const WIDTH: usize = 100;
    let dir = scratch();
    let (out, err, all) = (
        path_in(&dir, "out.log"),
        path_in(&dir, "err.log"),
        path_in(&dir, "all.log"),
    );
    let mut pw = Running::start(&[
        "-i",
        "4",
        "--merge-logs",
        "-o",
        &out,
        "-e",
        &err,
        "-l",
        &all,
        "--",
        "node",
        &logs_fixture("write.js"),
        &BYTES.to_string(),
        &WIDTH.to_string(),
        "both",
        "stay",
    ]);
    let want = expected_len(BYTES, WIDTH as u64) * 4;
    let files = [PathBuf::from(&out), PathBuf::from(&err)];
    wait_until("every line of the 4 instances", || {
        (total_size(&files) >= want && total_size(&[PathBuf::from(&all)]) >= want).then_some(())
    });
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
    assert!(!Path::new(&path_in(&dir, "out-0.log")).exists(), "merged");
    // Each instance's lines arrive whole and in its own order; stdout has
    // the even ones, stderr the odd ones, the combined file both.
    let check = |path: &str, parity: Option<u64>| {
        let text = std::fs::read_to_string(path).unwrap();
        let mut next = [0u64; 4];
        if let Some(p) = parity {
            next = [p; 4];
        }
        let mut seen = [0u64; 4];
        for line in text.split_inclusive('\n') {
            let tag = line[..1].parse::<u32>().unwrap();
            let k: u64 = line[1..11].parse().unwrap();
            assert_eq!(line, expected_line(tag, k, WIDTH), "{path}");
            if parity.is_some() {
                assert_eq!(k, next[tag as usize], "{path}: instance {tag}");
                next[tag as usize] += 2;
            }
            seen[tag as usize] += 1;
        }
        seen
    };
    let per = expected_len(BYTES, WIDTH as u64) / WIDTH as u64;
    let o = check(&out, Some(0));
    let e = check(&err, Some(1));
    let a = check(&all, None);
    for i in 0..4 {
        assert_eq!(o[i] + e[i], per, "instance {i}");
        assert_eq!(a[i], per, "instance {i} in the combined file");
    }
}

#[test]
fn rotation_under_load_with_compression_keeps_every_line() {
    const BYTES: u64 = 4 << 20;
    const WIDTH: usize = 100;
    let dir = scratch();
    let file = dir.path().join("web.log");
    std::fs::write(
        dir.path().join("apps.yaml"),
        format!(
            "procward:\n  max_size: 1M\n  retain: 1000\n  compress: true\napps:\n  - name: web\n    script: {}\n    args: [{BYTES}, {WIDTH}, out]\n    instances: 2\n    exec_mode: fork\n    autorestart: false\n    merge_logs: true\n    out_file: {}\n",
            logs_fixture("write.js"),
            file.display()
        ),
    )
    .unwrap();
    let mut pw = Running::start(&["run", "-c", &path_in(&dir, "apps.yaml")]);
    let per = expected_len(BYTES, WIDTH as u64) / WIDTH as u64;
    let count = |files: &[PathBuf]| {
        let mut seen = [0u64; 2];
        for f in files {
            for line in BufReader::new(open_log(f)).lines() {
                let line = line.unwrap() + "\n";
                let tag = line[..1].parse::<u32>().unwrap();
                let k: u64 = line[1..11].parse().unwrap();
                assert_eq!(line, expected_line(tag, k, WIDTH), "{f:?}");
                assert_eq!(k, seen[tag as usize], "{f:?}: instance {tag} in order");
                seen[tag as usize] += 1;
            }
        }
        seen
    };
    // Both instances write at once into one file rotated every 1 MB;
    // procward exits once both are done.
    assert_eq!(code_of(pw.wait_exit()), 0);
    let files = rotated_set(&file);
    assert!(files.len() > 6, "{files:?}");
    assert_eq!(count(&files), [per, per]);
    assert!(files[..files.len() - 1]
        .iter()
        .all(|f| f.extension().is_some_and(|e| e == "gz")));
}

/// A tmpfs mounted for one test, unmounted at the end.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs -o {options} (needs root)");
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// procward with `--metrics` running tick.js with its stdout in `file`.
fn ticking(file: &str, burst: u64) -> (Running, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut pw = Running::start(&[
        "--metrics",
        &addr,
        "--name",
        "tick",
        "-o",
        file,
        "--",
        "node",
        &logs_fixture("tick.js"),
        "2",
        &burst.to_string(),
    ]);
    pw.wait_line(&["serving /metrics"]);
    (pw, addr)
}

fn dropped(addr: &str) -> f64 {
    metric(
        &scrape(addr),
        "procward_log_bytes_dropped_total{app=\"tick\"}",
    )
    .unwrap_or(0.0)
}

#[test]
fn a_read_only_log_directory_is_reported_once_and_the_app_runs_on() {
    let dir = scratch();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let _m = Mount::tmpfs(&logs, "ro,size=1m");
    let file = logs.join("out.log");
    let (mut pw, addr) = ticking(file.to_str().unwrap(), 0);
    let warning = pw.wait_line(&["cannot open the log file", "app keeps running"]);
    assert!(warning.contains("Read-only file system"), "{warning}");
    let first = wait_until("dropped bytes to be counted", || {
        let d = dropped(&addr);
        (d > 0.0).then_some(d)
    });
    wait_until("more dropped bytes: the app still writes", || {
        (dropped(&addr) > first + 100.0).then_some(())
    });
    assert_eq!(pw.count_lines(&["cannot open the log file"]), 1);
    assert_eq!(pw.count_lines(&["exited"]), 0, "never stopped or restarted");
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
}

#[test]
fn a_full_filesystem_drops_and_counts_then_writes_again_once_there_is_room() {
    let dir = scratch();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let _m = Mount::tmpfs(&logs, "size=1m");
    let file = logs.join("out.log");
    // 2 MB of burst lines into a 1 MB filesystem, then a tick every 2 ms.
    let (mut pw, addr) = ticking(file.to_str().unwrap(), 2 << 20);
    pw.wait_line(&["cannot write the log file", "No space left on device"]);
    let lost = wait_until("dropped bytes to be counted", || {
        let d = dropped(&addr);
        (d > 900_000.0).then_some(d)
    });
    assert!(lost < 1.2e6, "about 1 MB of 2 MB is lost: {lost}");
    // Room again: the file is emptied (as an external logrotate's
    // copytruncate does), and new lines land in it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    pw.wait_line(&["writing the log file again"]);
    wait_lines(
        file.to_str().unwrap(),
        "ticks after the disk had room",
        |l| l.iter().filter(|x| x.starts_with("tick ")).count() >= 3,
    );
    assert_eq!(pw.count_lines(&["cannot write the log file"]), 1);
    assert_eq!(pw.count_lines(&["exited"]), 0, "never stopped or restarted");
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
}

#[test]
fn sigusr2_reopens_the_log_file_and_loses_no_line() {
    let dir = scratch();
    let file = path_in(&dir, "out.log");
    let moved = path_in(&dir, "out.log.old");
    let (mut pw, _addr) = ticking(&file, 0);
    wait_lines(&file, "ticks", |l| l.len() >= 5);
    // What logrotate does: move the file, then signal.
    std::fs::rename(&file, &moved).unwrap();
    pw.signal(libc::SIGUSR2);
    pw.wait_line(&["reopening the log files"]);
    wait_lines(&file, "ticks in the new file", |l| l.len() >= 5);
    pw.signal(libc::SIGTERM);
    pw.wait_exit();
    assert_eq!(
        pw.count_lines(&["exited"]),
        0,
        "SIGUSR2 reopens files; it is not forwarded to an app that logs to files"
    );
    let old = std::fs::read_to_string(&moved).unwrap();
    let new = std::fs::read_to_string(&file).unwrap();
    let ticks: Vec<u64> = old
        .lines()
        .chain(new.lines())
        .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert!(old.lines().count() >= 5);
    assert_eq!(ticks, (0..ticks.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_crash_shows_the_last_lines_of_stderr() {
    let dir = scratch();
    let err = path_in(&dir, "err.log");
    let mut pw = Running::start(&[
        "--no-autorestart",
        "-e",
        &err,
        "--",
        "sh",
        "-c",
        "for i in $(seq 1 30); do echo line $i >&2; done; echo 'Error: boom' >&2; exit 3",
    ]);
    let line = pw.wait_line(&["last_stderr="]);
    assert!(line.contains("Error: boom"), "{line}");
    assert!(line.contains("line 30"), "{line}");
    assert!(
        !line.contains("line 10\\n"),
        "only the last 20 lines: {line}"
    );
    assert_eq!(code_of(pw.wait_exit()), 3);
    assert!(std::fs::read_to_string(&err)
        .unwrap()
        .ends_with("Error: boom\n"));
}

#[test]
fn json_lines_and_timestamps() {
    let dir = scratch();
    let out = path_in(&dir, "out.log");
    let (code, stdout, _) = run_to_end(&[
        "--no-autorestart",
        "--log-prefix",
        "--log-date-format",
        "[at] X",
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        "echo hello",
    ]);
    assert_eq!(code, 0);
    let line = stdout.lines().next().unwrap();
    let rest = line
        .strip_prefix("web | at ")
        .unwrap_or_else(|| panic!("{line}"));
    let (secs, text) = rest.split_once(": ").unwrap();
    assert!(secs.parse::<u64>().is_ok(), "{line}");
    assert_eq!(text, "hello");
    let (code, _, _) = run_to_end(&[
        "--no-autorestart",
        "--log-type",
        "json",
        "-o",
        &out,
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        "printf 'say \"hi\"\\n'",
    ]);
    assert_eq!(code, 0);
    let json = std::fs::read_to_string(&out).unwrap();
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["app"], "web");
    assert_eq!(v["instance"], 0);
    assert_eq!(v["stream"], "out");
    assert_eq!(v["message"], "say \"hi\"");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn prefixes_are_coloured_per_app_on_a_terminal_only() {
    // script(1) gives procward a terminal for stdout.
    let cmd = format!(
        "{} --no-autorestart --log-prefix -i 2 --name web -- echo hi",
        bin().display()
    );
    let out = Command::new("script")
        .args(["-qc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    for i in 0..2 {
        assert!(
            text.contains(&format!("\x1b[36mweb-{i} | \x1b[0mhi")),
            "{text:?}"
        );
    }
    let (_, plain, _) = run_to_end(&[
        "--no-autorestart",
        "--log-prefix",
        "--name",
        "web",
        "--",
        "echo",
        "hi",
    ]);
    assert_eq!(plain, "web | hi\n");
}
