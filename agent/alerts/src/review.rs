//! The weekly activity review ("information system activity review", HIPAA
//! §164.308(a)(1)(ii)(D)): what a week of the audit stream holds that a privacy officer looks
//! at, whether or not a rule raised an alert: off-hours sessions, large prompts, failed
//! sign-ins, emergency access, and users by the number of patients they touched.
//!
//! Pure, like the detector: records in, a summary out, with user names, addresses, counts,
//! times and record numbers; never a patient id (patients are counted by their hash).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::config::{AlertsConfig, ConfigError};
use crate::record::{Fact, Observed, Record};
use crate::time::{Local, hhmm};

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One week's review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WeeklyReview {
    /// Sign-ins and activity outside clinic hours: (user, first local time "Tue 22:10", records
    /// that day off hours, first record number), one row per user and day.
    pub off_hours: Vec<(String, String, u32, u64)>,
    /// Questions longer than `large_prompt.max_chars`: (user, characters, record number).
    pub large_prompts: Vec<(String, u64, u64)>,
    /// Failed sign-ins per account typed (`unknown account` for names that are no account):
    /// (account, failures), most first.
    pub failed_by_account: Vec<(String, u32)>,
    /// Failed sign-ins per client address: (address, failures), most first.
    pub failed_by_address: Vec<(String, u32)>,
    /// Emergency sign-ins: (user, local time, record number).
    pub break_glass: Vec<(String, String, u64)>,
    /// Distinct patients each user touched in the week: (user, patients), most first.
    pub patients_by_user: Vec<(String, u32)>,
    pub records: u64,
}

/// Summarise the records of one week. The caller picks the records (the week's, in sequence
/// order); unreadable records are counted out, not fatal (the detector reports them).
pub fn weekly<'a>(config: &AlertsConfig, records: impl IntoIterator<Item = Record<'a>>) -> Result<WeeklyReview, ConfigError> {
    let cfg = config.validate()?;
    let mut r = WeeklyReview::default();
    let mut off: BTreeMap<(String, i64), (String, u32, u64)> = BTreeMap::new();
    let mut by_account: BTreeMap<String, u32> = BTreeMap::new();
    let mut by_address: BTreeMap<String, u32> = BTreeMap::new();
    let mut touched: BTreeMap<String, HashSet<u64>> = BTreeMap::new();
    let grace = config.clinic_hours.grace_minutes;
    for record in records {
        let Ok(o) = Observed::read(&record) else { continue };
        r.records += 1;
        let local = Local::of(o.ts, cfg.utc_offset_secs);
        let when = format!("{} {}", WEEKDAYS[local.weekday], hhmm(local.minute));
        let open = !cfg.holidays.contains(&local.day)
            && cfg.week[local.weekday].iter().any(|&(a, b)| local.minute + grace >= a && local.minute < b + grace);
        let person = match &o.fact {
            Fact::SignIn { user } => Some(user.clone()),
            Fact::BreakGlassSignIn { user } => {
                r.break_glass.push((user.clone(), when.clone(), o.seq));
                Some(user.clone())
            }
            Fact::Activity { user, patient, prompt_chars, .. } => {
                if let Some(p) = patient {
                    touched.entry(user.clone()).or_default().insert(*p);
                }
                if let Some(chars) = prompt_chars.filter(|&c| c > u64::from(config.large_prompt.max_chars)) {
                    r.large_prompts.push((user.clone(), chars, o.seq));
                }
                Some(user.clone())
            }
            Fact::SignInFailed { account, client, unknown_account } => {
                let name = match account {
                    Some(_) if *unknown_account => "unknown account".to_string(),
                    Some(a) => a.clone(),
                    None => "no name".to_string(),
                };
                *by_account.entry(name).or_default() += 1;
                if let Some(c) = client {
                    *by_address.entry(c.clone()).or_default() += 1;
                }
                None
            }
            _ => None,
        };
        if let (Some(user), false) = (person, open) {
            let e = off.entry((user, local.day)).or_insert((when, 0, o.seq));
            e.1 += 1;
        }
    }
    r.off_hours = off.into_iter().map(|((user, _), (when, n, seq))| (user, when, n, seq)).collect();
    let most_first = |m: BTreeMap<String, u32>| {
        let mut v: Vec<(String, u32)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    r.failed_by_account = most_first(by_account);
    r.failed_by_address = most_first(by_address);
    r.patients_by_user = most_first(touched.into_iter().map(|(u, s)| (u, s.len() as u32)).collect());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_week_summarised_without_patient_ids() {
        // Monday 2026-11-23, UTC, default clinic hours 07:30-18:30 on weekdays.
        let monday = 20_780 * 86_400;
        let rows: Vec<(i64, &str, &str, serde_json::Value)> = vec![
            (9 * 3600, "login", "ann", json!({})),
            (9 * 3600 + 60, "access", "ann", json!({ "path": "/patients/P1" })),
            (9 * 3600 + 120, "access", "ann", json!({ "path": "/patients/P2" })),
            (9 * 3600 + 180, "query", "ann", json!({ "patient": "P2", "text": { "chars": 9000 } })),
            (22 * 3600, "login", "bob", json!({})),
            (22 * 3600 + 60, "access", "bob", json!({ "path": "/patients/P3" })),
            (23 * 3600, "login_failed", "x", json!({ "user": "hunter2", "client": "10.0.0.9", "reason": "unknown_user" })),
            (23 * 3600 + 5, "login_failed", "ann", json!({ "user": "ann", "client": "10.0.0.9", "reason": "bad_password" })),
            (86_400 + 3 * 3600, "security_alert", "cy", json!({ "event": "break_glass_login" })),
        ];
        let ts: Vec<String> = rows.iter().map(|r| jiff::Timestamp::from_second(monday + r.0).expect("ts").to_string()).collect();
        let details: Vec<String> = rows.iter().map(|r| r.3.to_string()).collect();
        let records = rows.iter().enumerate().map(|(i, r)| Record { seq: i as u64 + 1, ts: &ts[i], kind: r.1, actor: r.2, detail: &details[i] });
        let w = weekly(&AlertsConfig::default(), records).expect("valid");
        assert_eq!(w.records, 9);
        assert_eq!(w.off_hours, vec![("bob".to_string(), "Mon 22:00".to_string(), 2, 5), ("cy".to_string(), "Tue 03:00".to_string(), 1, 9)]);
        assert_eq!(w.large_prompts, vec![("ann".to_string(), 9000, 4)]);
        assert_eq!(w.failed_by_account, vec![("ann".to_string(), 1), ("unknown account".to_string(), 1)]);
        assert_eq!(w.failed_by_address, vec![("10.0.0.9".to_string(), 2)]);
        assert_eq!(w.break_glass, vec![("cy".to_string(), "Tue 03:00".to_string(), 9)]);
        assert_eq!(w.patients_by_user, vec![("ann".to_string(), 2), ("bob".to_string(), 1)]);
        let text = serde_json::to_string(&w).expect("json");
        assert!(!text.contains("P1") && !text.contains("hunter2"), "{text}");
    }
}
