//! `quorum forget`: which backups a retention policy keeps.
//!
//! Per cluster, backups are taken newest first. `--keep-last N` keeps the N newest;
//! `--keep-hourly N` keeps the newest backup of each of the N newest hours that have one;
//! likewise daily, weekly (ISO weeks) and monthly, in UTC. A backup is kept when any rule
//! keeps it, and every kept backup lists the rules that keep it. With no rule at all nothing
//! is removed (a policy must be given explicitly).
use chrono::{DateTime, Datelike, Timelike, Utc};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly == 0
    }
}

/// One backup's fate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub cluster: String,
    pub time: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// Decide for `(id, cluster, time)` triples, newest first per cluster; backups of the same
/// time keep their order in `backups` ([`crate::Repository::manifests`] lists the higher
/// revision first: times have second resolution).
pub fn apply(policy: &Policy, backups: &[(String, String, DateTime<Utc>)]) -> Vec<Decision> {
    let mut clusters: Vec<&str> = backups.iter().map(|b| b.1.as_str()).collect();
    clusters.sort();
    clusters.dedup();
    let mut out = Vec::new();
    for c in clusters {
        let mut group: Vec<&(String, String, DateTime<Utc>)> = backups.iter().filter(|b| b.1 == c).collect();
        // A stable sort: ties stay in the caller's order.
        group.sort_by_key(|b| std::cmp::Reverse(b.2));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); group.len()];
        if policy.is_empty() {
            for r in reasons.iter_mut() {
                r.push("no policy".into());
            }
        }
        for r in reasons.iter_mut().take(policy.last) {
            r.push("last".into());
        }
        type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);
        let buckets: [(&str, usize, Bucket); 4] = [
            ("hourly", policy.hourly, |t| (t.year(), t.ordinal(), t.hour(), 0)),
            ("daily", policy.daily, |t| (t.year(), t.ordinal(), 0, 0)),
            ("weekly", policy.weekly, |t| (t.iso_week().year(), t.iso_week().week(), 0, 0)),
            ("monthly", policy.monthly, |t| (t.year(), t.month(), 0, 0)),
        ];
        for (name, n, key) in buckets {
            let mut seen = 0usize;
            let mut last = None;
            for (i, b) in group.iter().enumerate() {
                if seen >= n {
                    break;
                }
                let k = key(&b.2);
                if last != Some(k) {
                    last = Some(k);
                    seen += 1;
                    reasons[i].push(name.to_string());
                }
            }
        }
        for (b, r) in group.iter().zip(reasons) {
            out.push(Decision {
                id: b.0.clone(),
                cluster: b.1.clone(),
                time: b.2.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                keep: !r.is_empty(),
                reasons: r,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    #[test]
    fn hourly_daily_last() {
        // Every 20 minutes over two days, one cluster.
        let mut b = Vec::new();
        for d in 20..=21 {
            for h in 0..24 {
                for m in [0, 20, 40] {
                    b.push((format!("{d}-{h}-{m}"), "prod".to_string(), at(d, h, m)));
                }
            }
        }
        let p = Policy { last: 2, hourly: 5, daily: 2, ..Default::default() };
        let r = apply(&p, &b);
        let kept: Vec<&str> = r.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        // last 2: 21-23-40, 21-23-20; hourly 5: the :40 of hours 23..19 of the 21st; daily 2:
        // 21-23-40 and 20-23-40.
        assert_eq!(kept, vec!["21-23-40", "21-23-20", "21-22-40", "21-21-40", "21-20-40", "21-19-40", "20-23-40"]);
        let newest = &r[0];
        assert_eq!(newest.reasons, vec!["last", "hourly", "daily"]);
    }

    #[test]
    fn backups_of_the_same_second_keep_the_callers_order() {
        // Listed newest first (the repository puts the higher revision first within a second).
        for ids in [["zz-newer", "aa-older"], ["aa-newer", "zz-older"]] {
            let b: Vec<_> = ids.iter().map(|id| (id.to_string(), "a".to_string(), at(1, 1, 0))).collect();
            let r = apply(&Policy { last: 1, ..Default::default() }, &b);
            let kept: Vec<&str> = r.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
            assert_eq!(kept, vec![ids[0]]);
        }
    }

    #[test]
    fn clusters_are_separate_and_empty_policy_keeps_all() {
        let b = vec![
            ("a1".to_string(), "a".to_string(), at(1, 1, 0)),
            ("a2".to_string(), "a".to_string(), at(2, 1, 0)),
            ("b1".to_string(), "b".to_string(), at(1, 1, 0)),
        ];
        let r = apply(&Policy { last: 1, ..Default::default() }, &b);
        let kept: Vec<&str> = r.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(kept, vec!["a2", "b1"]);
        assert!(apply(&Policy::default(), &b).iter().all(|d| d.keep));
        assert!(r.iter().all(|d| d.time.ends_with('Z') && !d.time.contains("+00:00")), "times as backups list prints them: {:?}", r[0].time);
    }

    #[test]
    fn weekly_uses_iso_weeks_and_monthly_months() {
        let b = vec![
            ("sun".to_string(), "c".to_string(), Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()),
            ("sat".to_string(), "c".to_string(), Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()),
            ("prev-sun".to_string(), "c".to_string(), Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0).unwrap()),
            ("oct".to_string(), "c".to_string(), Utc.with_ymd_and_hms(2026, 10, 31, 12, 0, 0).unwrap()),
        ];
        let r = apply(&Policy { weekly: 2, ..Default::default() }, &b);
        let kept: Vec<&str> = r.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(kept, vec!["sun", "prev-sun"]);
        let r = apply(&Policy { monthly: 2, ..Default::default() }, &b);
        let kept: Vec<&str> = r.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(kept, vec!["sun", "oct"]);
    }
}
