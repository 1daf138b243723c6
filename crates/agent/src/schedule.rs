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
        assert!(Schedule::parse("every hour").is_err());
    }
}
