//! PM2's `cron_restart`: restart an app at the times of a cron expression.
//!
//! PM2 checks the expression when the app is started
//! (`lib/Common.js` `sink.determineCron`: `Croner(app.cron_restart)`, an
//! error "Cron pattern error: ..." otherwise) and schedules it in the daemon
//! (`lib/Worker.js` `registerCron`: `Cron(pm2_env.cron_restart, ...)` with
//! croner's default options, calling `God.restartProcessId` at each time).
//! The expression is read here by the Rust port of that same library
//! (`croner`), set the way PM2's defaults read it:
//!
//! - five fields (minute hour day-of-month month day-of-week), or six with
//!   seconds first; no year field;
//! - names (`JAN`, `MON`), ranges, steps, lists and `L` (the last day), as
//!   PM2's croner 4 reads them; the Rust port also reads what later croner
//!   versions added (`W`, `#`, `@daily`), which PM2 may refuse;
//! - a restricted day-of-month and a restricted day-of-week are OR-ed, as
//!   Vixie cron and croner's `legacyMode` (its default) do;
//! - `0` or `'0'` turns it off (`determineCron`: "disabling cron restart").
//!
//! Times are in the local time zone, as PM2's daemon reads them: `TZ` when
//! it is set, else /etc/localtime, else UTC (a container without either).
//!
//! The schedule is a source like `ready/`: a task per app sleeps until the
//! next time and sends a [`Report`] through the sender it was given. It
//! knows nothing of the supervisor; the supervisor turns each report into a
//! restart of the app's instances with reason `cron`.

use std::time::Duration;

use chrono::{DateTime, Local, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

/// A checked cron expression.
#[derive(Clone)]
pub struct Schedule {
    /// The expression as written (trimmed), for `procward check` and logs.
    text: String,
    cron: Cron,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl Schedule {
    /// Reads an expression as PM2's croner does (see the module doc); the
    /// error is croner's own message.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(text).map_err(|e| e.to_string())?;
        // An expression that can never match (`0 0 31 2 *`) is refused
        // now rather than found out at run time.
        cron.find_next_occurrence(&Local::now(), false)
            .map_err(|_| "it never matches a date".to_string())?;
        Ok(Schedule {
            text: text.trim().to_string(),
            cron,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `t`, in `t`'s time zone; `None` when
    /// there is none (croner gives up searching after a few years).
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_next_occurrence(t, false).ok()
    }

    /// The next `n` times after `from`.
    pub fn upcoming<Tz: TimeZone>(&self, from: &DateTime<Tz>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out: Vec<DateTime<Tz>> = Vec::with_capacity(n);
        let mut t = from.clone();
        while out.len() < n {
            match self.next_after(&t) {
                Some(next) => {
                    t = next.clone();
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }
}

/// It is one of the app's times: restart it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The app, by its index in the list of apps.
    pub app: usize,
}

/// The longest single sleep: the wall clock may be set (NTP, a suspended
/// VM) while the task sleeps on the monotonic clock, so it looks again at
/// least this often.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What to do now: fire, or sleep this long and look again.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Fire,
    Sleep(Duration),
}

/// The decision for time `now` with the next time `due`.
fn step<Tz: TimeZone>(now: &DateTime<Tz>, due: &DateTime<Tz>) -> Step {
    match (due.clone() - now.clone()).to_std() {
        Ok(left) if !left.is_zero() => Step::Sleep(left.min(MAX_SLEEP)),
        // `due` is now or past.
        _ => Step::Fire,
    }
}

/// Starts the app's schedule: one [`Report`] per time, until the receiver
/// is gone.
pub fn spawn(app: usize, schedule: Schedule, tx: mpsc::Sender<Report>) -> JoinHandle<()> {
    tokio::spawn(run(app, schedule, tx))
}

async fn run(app: usize, schedule: Schedule, tx: mpsc::Sender<Report>) {
    let mut due = match schedule.next_after(&Local::now()) {
        Some(t) => t,
        None => return,
    };
    debug!(app, next = %due, "cron restart scheduled");
    loop {
        match step(&Local::now(), &due) {
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Fire => {
                if tx.send(Report { app }).await.is_err() {
                    return;
                }
                // Strictly after both the time just fired and now: a time
                // is fired once, and times missed while the clock jumped
                // forward are not fired in a burst.
                let now = Local::now();
                let from = if now > due { now } else { due };
                due = match schedule.next_after(&from) {
                    Some(t) => t,
                    None => return,
                };
                debug!(app, next = %due, "cron restart scheduled");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn five_fields_are_minutes_six_have_seconds_first() {
        let daily = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            daily.upcoming(&at("2026-11-29T20:00:00+01:00"), 3),
            [
                at("2026-11-30T03:00:00+01:00"),
                at("2026-12-01T03:00:00+01:00"),
                at("2026-12-02T03:00:00+01:00"),
            ]
        );
        let every_2s = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            every_2s.next_after(&at("2026-11-29T20:00:01+00:00")),
            Some(at("2026-11-29T20:00:02+00:00"))
        );
    }

    #[test]
    fn names_nicknames_and_day_fields_or_ed_as_vixie_cron() {
        let s = Schedule::parse("30 4 1 * MON").unwrap();
        // 2026-11-30 is a Monday, 2026-12-01 the first of the month.
        assert_eq!(
            s.upcoming(&at("2026-11-29T12:00:00+00:00"), 2),
            [
                at("2026-11-30T04:30:00+00:00"),
                at("2026-12-01T04:30:00+00:00")
            ]
        );
        let d = Schedule::parse("@daily").unwrap();
        assert_eq!(
            d.next_after(&at("2026-11-29T12:00:00+00:00")),
            Some(at("2026-11-30T00:00:00+00:00"))
        );
        assert!(Schedule::parse("0 0 L * *").is_ok());
        assert!(Schedule::parse("0 0 * JAN-MAR SAT,SUN").is_ok());
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for bad in [
            "",
            "* * * asdasd",
            "61 * * * *",
            "* * * * * * 2030",
            "0 0 31 2 *",
            "every day",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn local_time_follows_tz() {
        // chrono's Local reads TZ; the offset of a time is the zone's.
        let s = Schedule::parse("0 3 * * *").unwrap();
        let utc = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        let paris = utc.with_timezone(&FixedOffset::east_opt(3600).unwrap());
        assert_eq!(
            s.next_after(&paris).unwrap().to_rfc3339(),
            "2026-11-30T03:00:00+01:00"
        );
    }

    #[test]
    fn the_task_fires_when_due_and_sleeps_at_most_a_minute() {
        let now = at("2026-11-29T20:00:00+00:00");
        assert_eq!(step(&now, &now), Step::Fire);
        assert_eq!(step(&now, &at("2026-11-29T19:59:59+00:00")), Step::Fire);
        assert_eq!(
            step(&now, &at("2026-11-29T20:00:02+00:00")),
            Step::Sleep(Duration::from_secs(2))
        );
        assert_eq!(
            step(&now, &at("2026-11-30T03:00:00+00:00")),
            Step::Sleep(MAX_SLEEP)
        );
    }

    #[tokio::test]
    async fn a_six_field_schedule_reports_within_seconds() {
        let (tx, mut rx) = mpsc::channel(4);
        let task = spawn(7, Schedule::parse("* * * * * *").unwrap(), tx);
        let r = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("a report within 3 s");
        assert_eq!(r, Some(Report { app: 7 }));
        task.abort();
    }
}
