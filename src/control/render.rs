//! How answers are printed for people: the `status` table (laid out as
//! `pm2 list` lays out its own), `describe`, and what an action did.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Outcome;

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const GREY: &str = "\x1b[90m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The colour of a state, as PM2 colours its own.
fn state_colour(state: &str) -> &'static str {
    match state {
        "online" => GREEN,
        "starting" | "stopping" | "waiting" | "emptying" | "spawning" => YELLOW,
        "errored" => RED,
        _ => GREY,
    }
}

/// Time since `started_ms` (Unix milliseconds) as PM2 prints it: `12s`,
/// `5m`, `3h`, `2D`.
pub fn uptime(started_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(started_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}D", s / 86400),
    }
}

/// Bytes as PM2 prints them: `812b`, `41.2mb`, `1.1gb`.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n}b")
    } else if f < K * K {
        format!("{:.1}kb", f / K)
    } else if f < K * K * K {
        format!("{:.1}mb", f / K / K)
    } else {
        format!("{:.1}gb", f / K / K / K)
    }
}

/// One cell: its text and an optional colour.
struct Cell {
    text: String,
    colour: Option<&'static str>,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        colour: None,
    }
}

/// The `status` table from a `/status` snapshot.
pub fn status_table(status: &Value, colour: bool) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let header = [
        "id", "name", "inst", "mode", "pid", "uptime", "↺", "status", "ready", "cpu", "mem",
    ];
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    let empty = Vec::new();
    for app in status["apps"].as_array().unwrap_or(&empty) {
        let name = app["name"].as_str().unwrap_or("?");
        let mode = app["mode"].as_str().unwrap_or("fork");
        for inst in app["instances"].as_array().unwrap_or(&empty) {
            let state = inst["status"].as_str().unwrap_or("?");
            let running = inst["pid"].as_i64().is_some();
            let restarts = inst["restart_time"].as_u64().unwrap_or(0);
            let restarts = match inst["last_reason"].as_str() {
                Some(r) if restarts > 0 => format!("{restarts} ({r})"),
                _ => restarts.to_string(),
            };
            let ready = inst["ready"].as_bool().unwrap_or(false);
            let monit = &inst["monit"];
            rows.push(vec![
                cell(inst["pm_id"].to_string()),
                Cell {
                    text: name.to_string(),
                    colour: Some(BOLD),
                },
                cell(inst["instance"].to_string()),
                cell(mode),
                cell(match inst["pid"].as_i64() {
                    Some(p) => p.to_string(),
                    None => "-".into(),
                }),
                cell(match inst["pm_uptime"].as_u64() {
                    Some(t) if running => uptime(t, now_ms),
                    _ => "-".into(),
                }),
                cell(restarts),
                Cell {
                    text: state.to_string(),
                    colour: Some(state_colour(state)),
                },
                Cell {
                    text: if ready { "yes" } else { "no" }.into(),
                    colour: Some(if ready { GREEN } else { GREY }),
                },
                cell(match monit["cpu"].as_f64() {
                    Some(c) if running => format!("{c:.1}%"),
                    _ => "-".into(),
                }),
                cell(match monit["memory"].as_u64() {
                    Some(m) if running && m > 0 => bytes(m),
                    _ => "-".into(),
                }),
            ]);
        }
    }
    table(&header, &rows, colour)
}

/// Draws a table with box-drawing lines, as `pm2 list` does.
fn table(header: &[&str], rows: &[Vec<Cell>], colour: bool) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (k, c) in row.iter().enumerate() {
            widths[k] = widths[k].max(width(&c.text));
        }
    }
    let rule = |l: &str, m: &str, r: &str| {
        let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    let line = |cells: Vec<(String, Option<&'static str>)>| {
        let mut s = String::from("│");
        for (k, (text, c)) in cells.into_iter().enumerate() {
            let pad = " ".repeat(widths[k] - width(&text));
            match c.filter(|_| colour) {
                Some(c) => s.push_str(&format!(" {c}{text}{RESET}{pad} │")),
                None => s.push_str(&format!(" {text}{pad} │")),
            }
        }
        s + "\n"
    };
    let mut out = rule("┌", "┬", "┐");
    out += &line(header.iter().map(|h| (h.to_string(), Some(BOLD))).collect());
    out += &rule("├", "┼", "┤");
    for row in rows {
        out += &line(row.iter().map(|c| (c.text.clone(), c.colour)).collect());
    }
    out += &rule("└", "┴", "┘");
    out
}

/// `describe`: settings, environment names, and each instance's history.
pub fn description(d: &Value) -> String {
    let mut out = format!("{}\n", d["name"].as_str().unwrap_or("?"));
    out += "  settings (as `procward check` prints them):\n";
    if let Some(config) = d["config"].as_object() {
        let w = config.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in config {
            if k == "env" {
                continue;
            }
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out += &format!("    {k:<w$}  {v}\n");
        }
    }
    let names: Vec<&str> = d["env_names"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    out += &format!(
        "  environment (values not shown): {}\n",
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    );
    let empty = Vec::new();
    for inst in d["instances"].as_array().unwrap_or(&empty) {
        out += &format!(
            "  instance {}: {}{}\n",
            inst["instance"],
            inst["state"].as_str().unwrap_or("?"),
            match inst["pid"].as_i64() {
                Some(p) => format!(", pid {p}"),
                None => String::new(),
            }
        );
        let restarts = inst["restarts"].as_array().unwrap_or(&empty);
        if restarts.is_empty() {
            out += "    no restarts\n";
        }
        for r in restarts {
            let at = r["at_ms"].as_u64().unwrap_or(0);
            out += &format!(
                "    {}  {:<13}  {}\n",
                clock(at),
                r["reason"].as_str().unwrap_or("?"),
                r["exit"].as_str().unwrap_or("-")
            );
        }
        if let Some(lines) = inst["last_crash"]["lines"].as_array() {
            out += &format!(
                "    last lines of stderr of pid {} ({}):\n",
                inst["last_crash"]["pid"],
                inst["last_crash"]["status"].as_str().unwrap_or("?")
            );
            for l in lines {
                out += &format!("      {}\n", l.as_str().unwrap_or(""));
            }
        }
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One line of `procward logs`, as PM2 prints it: `0|web  | text`, with
/// the app's name coloured on a terminal and stderr lines in red.
pub fn log_line(l: &super::Line, width: usize, colour: bool) -> String {
    let tag = format!("{}|{}", l.instance, l.app);
    let pad = " ".repeat(width.saturating_sub(tag.chars().count()));
    match (colour, l.stream.as_str()) {
        (true, "err") => format!("{GREY}{tag}{pad} |{RESET} {RED}{}{RESET}\n", l.text),
        (true, _) => format!("{GREEN}{tag}{pad} |{RESET} {}\n", l.text),
        (false, _) => format!("{tag}{pad} | {}\n", l.text),
    }
}

/// What an action did, one line per instance.
pub fn outcomes(command: &str, instances: &[Outcome], colour: bool) -> String {
    if instances.is_empty() {
        return format!("{command}: nothing to do\n");
    }
    let mut out = String::new();
    for o in instances {
        let mark = match (o.ok, colour) {
            (true, true) => format!("{GREEN}✓{RESET}"),
            (false, true) => format!("{RED}✗{RESET}"),
            (true, false) => "ok".into(),
            (false, false) => "FAILED".into(),
        };
        let pids = match (o.pid_before, o.pid) {
            (Some(a), Some(b)) if a != b => format!(" (pid {a} -> {b})"),
            (_, Some(b)) => format!(" (pid {b})"),
            (Some(a), None) => format!(" (was pid {a})"),
            (None, None) => String::new(),
        };
        out += &format!(
            "{mark} {}/{} {}: {}{pids}\n",
            o.app, o.instance, o.state, o.detail
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_and_sizes_read_as_pm2_prints_them() {
        assert_eq!(uptime(0, 12_000), "12s");
        assert_eq!(uptime(0, 300_000), "5m");
        assert_eq!(uptime(0, 3 * 3_600_000), "3h");
        assert_eq!(uptime(0, 2 * 86_400_000), "2D");
        assert_eq!(uptime(5_000, 1_000), "0s");
        assert_eq!(bytes(812), "812b");
        assert_eq!(bytes(43_200_000), "41.2mb");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(clock(0), "1970-01-01 00:00:00");
        assert_eq!(clock(1_796_000_000_000), "2026-11-30 00:53:20");
    }

    #[test]
    fn the_table_lines_up_and_colours_only_when_asked() {
        let status = serde_json::json!({"apps": [{"name": "web", "mode": "cluster", "instances": [
            {"pm_id": 0, "instance": 0, "pid": 4242, "status": "online", "ready": true,
             "restart_time": 2, "last_reason": "crash", "pm_uptime": 0,
             "monit": {"cpu": 0.5, "memory": 43_200_000u64}},
            {"pm_id": 1, "instance": 1, "pid": null, "status": "errored", "ready": false,
             "restart_time": 0, "monit": {"cpu": 0.0, "memory": 0}}]}]});
        let plain = status_table(&status, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 6, "{plain}");
        let w = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == w), "{plain}");
        assert!(
            lines[3].contains("2 (crash)") && lines[3].contains("41.2mb"),
            "{plain}"
        );
        assert!(
            lines[4].contains("errored") && lines[4].contains(" - "),
            "{plain}"
        );
        let coloured = status_table(&status, true);
        assert!(
            coloured.contains(&format!("{GREEN}online{RESET}")),
            "{coloured}"
        );
    }
}
