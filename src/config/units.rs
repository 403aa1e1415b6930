//! Small parsers for the units users type: durations and signal names.
//!
//! Durations follow PM2: a bare number is milliseconds (`1500`), and the
//! suffixes `ms`, `s`, `m`, `h` are accepted (`1500ms`, `2s`, `1m`).

use std::time::Duration;

use nix::sys::signal::Signal;

/// Parses `1500`, `1500ms`, `2s`, `1.5s`, `1m`, `1h` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: expected a number of milliseconds or a number with ms, s, m or h (e.g. 1500, 2s, 1m)"))?;
    let factor_ms = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        other => {
            return Err(format!(
                "invalid duration `{text}`: unknown unit `{other}` (expected ms, s, m or h)"
            ))
        }
    };
    let ms = value * factor_ms;
    if !(0.0..=1e13).contains(&ms) {
        return Err(format!("invalid duration `{text}`: out of range"));
    }
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or `15` into a signal.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| format!("invalid signal `{text}`: no signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| {
        format!(
            "invalid signal `{text}`: expected a name such as SIGINT, TERM or a number such as 15"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_pm2_units() {
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("2").unwrap(), Signal::SIGINT);
        assert!(parse_signal("SIGNOPE").is_err());
    }
}

/// Parses PM2 sizes: raw bytes (`1048576`), or a number with `K`, `M` or `G`
/// (powers of 1024, as PM2's `max_memory_restart`), optionally followed by
/// `B`/`iB` (`500M`, `1G`, `512MiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid size `{text}`: expected bytes or a number with K, M or G (e.g. 500M, 1G)")
    })?;
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{other}` (expected K, M or G)"
            ))
        }
    };
    let bytes = value * factor;
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("invalid size `{text}`: out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_in_pm2_units() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10K").unwrap(), 10 << 10);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
    }
}
