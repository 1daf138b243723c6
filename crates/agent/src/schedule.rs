//! Cron schedules (5 fields, `min hour day-of-month month day-of-week`, or 6 with seconds
//! first; `@hourly`, `@daily`, ... as cron knows them), evaluated in UTC.
use std::str::FromStr;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let cron = croner::Cron::from_str(expr.trim()).map_err(|e| format!("schedule {expr:?}: {e}"))?;
        Ok(Schedule { expr: expr.to_string(), cron })
    }

    /// The first time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The longest time between two consecutive runs after `from`, over the runs of the
    /// following 400 days (a schedule's gaps repeat within a year; at most 10 000 runs are
    /// looked at, which covers every minute of a week): how old its newest run may be. A
    /// schedule that runs at most once in that time gives the time to its next run.
    pub fn max_interval(&self, from: DateTime<Utc>) -> Option<chrono::Duration> {
        let horizon = from + chrono::Duration::days(400);
        let mut prev = self.next_after(from)?;
        let mut max = prev - from;
        for _ in 0..10_000 {
            match self.next_after(prev) {
                Some(t) if t <= horizon => {
                    max = max.max(t - prev);
                    prev = t;
                }
                _ => break,
            }
        }
        Some(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_fields_and_nicknames() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 16, 30, 5).unwrap();
        assert_eq!(s.next_after(t).unwrap(), Utc.with_ymd_and_hms(2026, 11, 23, 17, 0, 0).unwrap());
        let s = Schedule::parse("*/15 2 * * *").unwrap();
        assert_eq!(s.next_after(t).unwrap(), Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap());
        let s = Schedule::parse("@daily").unwrap();
        assert_eq!(s.next_after(t).unwrap(), Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap());
        assert!(Schedule::parse("61 * * * *").is_err());
        // Longest gaps: hourly; weekdays at 02:00 (Friday to Monday); every 3 seconds.
        assert_eq!(Schedule::parse("0 * * * *").unwrap().max_interval(t).unwrap(), chrono::Duration::hours(1));
        assert_eq!(Schedule::parse("0 2 * * 1-5").unwrap().max_interval(t).unwrap(), chrono::Duration::days(3));
        assert_eq!(Schedule::parse("*/3 * * * * *").unwrap().max_interval(t).unwrap(), chrono::Duration::seconds(3));
        assert!(Schedule::parse("every hour").is_err());
    }
}
