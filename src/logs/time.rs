//! Timestamps in PM2's `log_date_format`: the dayjs tokens PM2 passes its
//! format to (`lib/Utility.js` / `lib/God.js` call `dayjs().format(...)`),
//! in local time (`TZ` as the C library reads it).
//!
//! Tokens: `YYYY YY MM M DD D HH H hh h mm m ss s SSS A a Z ZZ X x`; text
//! in `[brackets]` is literal, and so is every other character (as dayjs
//! leaves unknown letters alone).

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(String),
    Year4,
    Year2,
    Month2,
    Month,
    Day2,
    Day,
    Hour2,
    Hour,
    Hour12x2,
    Hour12,
    Min2,
    Min,
    Sec2,
    Sec,
    Millis,
    AmPm,
    AmPmLower,
    Offset,
    OffsetCompact,
    UnixSecs,
    UnixMillis,
}

/// A parsed `log_date_format`, with the text of the last second rendered
/// kept so that a busy stream formats once per second.
#[derive(Debug, Clone)]
pub struct DateFormat {
    toks: Vec<Tok>,
    per_ms: bool,
    cached: Option<(i64, String)>,
}

const TOKENS: &[(&str, Tok)] = &[
    ("YYYY", Tok::Year4),
    ("YY", Tok::Year2),
    ("MM", Tok::Month2),
    ("M", Tok::Month),
    ("DD", Tok::Day2),
    ("D", Tok::Day),
    ("HH", Tok::Hour2),
    ("H", Tok::Hour),
    ("hh", Tok::Hour12x2),
    ("h", Tok::Hour12),
    ("mm", Tok::Min2),
    ("m", Tok::Min),
    ("ss", Tok::Sec2),
    ("s", Tok::Sec),
    ("SSS", Tok::Millis),
    ("A", Tok::AmPm),
    ("a", Tok::AmPmLower),
    ("ZZ", Tok::OffsetCompact),
    ("Z", Tok::Offset),
    ("X", Tok::UnixSecs),
    ("x", Tok::UnixMillis),
];

impl DateFormat {
    /// Parses a dayjs format; every string is a valid format.
    pub fn new(fmt: &str) -> DateFormat {
        let mut toks = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        'outer: while let Some(c) = rest.chars().next() {
            if c == '[' {
                if let Some(end) = rest.find(']') {
                    lit.push_str(&rest[1..end]);
                    rest = &rest[end + 1..];
                    continue;
                }
            }
            for (name, tok) in TOKENS {
                if let Some(after) = rest.strip_prefix(name) {
                    if !lit.is_empty() {
                        toks.push(Tok::Lit(std::mem::take(&mut lit)));
                    }
                    toks.push(tok.clone());
                    rest = after;
                    continue 'outer;
                }
            }
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            toks.push(Tok::Lit(lit));
        }
        let per_ms = toks
            .iter()
            .any(|t| matches!(t, Tok::Millis | Tok::UnixMillis));
        DateFormat {
            toks,
            per_ms,
            cached: None,
        }
    }

    /// Appends `now` formatted to `out`.
    pub fn render(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs() as i64;
        if !self.per_ms {
            if let Some((s, text)) = &self.cached {
                if *s == secs {
                    out.extend_from_slice(text.as_bytes());
                    return;
                }
            }
        }
        let text = self.format(secs, since.subsec_millis(), local(secs));
        out.extend_from_slice(text.as_bytes());
        if !self.per_ms {
            self.cached = Some((secs, text));
        }
    }

    fn format(&self, secs: i64, ms: u32, t: Broken) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(32);
        let h12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        let off = t.offset / 60;
        let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
        for tok in &self.toks {
            let _ = match tok {
                Tok::Lit(l) => write!(s, "{l}"),
                Tok::Year4 => write!(s, "{:04}", t.year),
                Tok::Year2 => write!(s, "{:02}", t.year % 100),
                Tok::Month2 => write!(s, "{:02}", t.month),
                Tok::Month => write!(s, "{}", t.month),
                Tok::Day2 => write!(s, "{:02}", t.day),
                Tok::Day => write!(s, "{}", t.day),
                Tok::Hour2 => write!(s, "{:02}", t.hour),
                Tok::Hour => write!(s, "{}", t.hour),
                Tok::Hour12x2 => write!(s, "{h12:02}"),
                Tok::Hour12 => write!(s, "{h12}"),
                Tok::Min2 => write!(s, "{:02}", t.min),
                Tok::Min => write!(s, "{}", t.min),
                Tok::Sec2 => write!(s, "{:02}", t.sec),
                Tok::Sec => write!(s, "{}", t.sec),
                Tok::Millis => write!(s, "{ms:03}"),
                Tok::AmPm => write!(s, "{}", if t.hour < 12 { "AM" } else { "PM" }),
                Tok::AmPmLower => write!(s, "{}", if t.hour < 12 { "am" } else { "pm" }),
                Tok::Offset => write!(s, "{sign}{:02}:{:02}", off / 60, off % 60),
                Tok::OffsetCompact => write!(s, "{sign}{:02}{:02}", off / 60, off % 60),
                Tok::UnixSecs => write!(s, "{secs}"),
                Tok::UnixMillis => write!(s, "{}", secs * 1000 + ms as i64),
            };
        }
        s
    }
}

/// RFC 3339 in UTC with milliseconds, the `time` of JSON lines when no
/// `log_date_format` is set: `2026-11-29T18:04:05.123Z`.
pub fn rfc3339_utc(now: SystemTime, out: &mut Vec<u8>) {
    use std::io::Write;
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (era * 400 + yoe + i64::from(m <= 2), m, d)
}

/// Local broken-down time.
#[derive(Debug, Clone, Copy)]
struct Broken {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    /// Seconds east of UTC.
    offset: i64,
}

fn local(secs: i64) -> Broken {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r(3) fills the zeroed struct we own; it returns
    // NULL only for years that do not fit, where the zeros stay.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    Broken {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        min: tm.tm_min as u32,
        sec: tm.tm_sec as u32,
        offset: tm.tm_gmtoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
    }

    #[test]
    fn formats_dayjs_tokens() {
        // Only the zone-independent parts are compared.
        let f = DateFormat::new("x [at] X");
        assert_eq!(
            f.format(1_700_000_000, 42, local(0)),
            "1700000000042 at 1700000000"
        );
        let t = Broken {
            year: 2026,
            month: 3,
            day: 7,
            hour: 15,
            min: 4,
            sec: 5,
            offset: -5 * 3600 - 1800,
        };
        assert_eq!(
            DateFormat::new("YYYY-MM-DD HH:mm:ss.SSS Z").format(0, 9, t),
            "2026-03-07 15:04:05.009 -05:30"
        );
        assert_eq!(
            DateFormat::new("D/M/YY h:m:s A ZZ").format(0, 0, t),
            "7/3/26 3:4:5 PM -0530"
        );
        assert_eq!(DateFormat::new("[YYYY] T").format(0, 0, t), "YYYY T");
    }

    #[test]
    fn utc_rfc3339() {
        let mut out = Vec::new();
        rfc3339_utc(at(1_700_000_000, 5), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "2023-11-14T22:13:20.005Z");
        let mut out = Vec::new();
        rfc3339_utc(at(951_782_400, 0), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "2000-02-29T00:00:00.000Z");
    }
}
