//! The `[alerts]` configuration section: every threshold of every rule.
//!
//! Every table denies unknown keys, every key has a default, and [`AlertsConfig::validate`]
//! turns the text into the checked form the detector uses; its errors name the key
//! (`alerts.clinic_hours.mon`, `alerts.bulk_access.window_minutes`).

use serde::{Deserialize, Serialize};

/// A bad value in the `[alerts]` section, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alerts.{key}: {problem}")]
pub struct ConfigError {
    /// The key under `alerts.`, e.g. `clinic_hours.holidays[1]`.
    pub key: String,
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    pub clinic_hours: ClinicHours,
    pub bulk_access: BulkAccess,
    pub large_prompt: LargePrompt,
    pub signin: Signin,
    pub denied_access: DeniedAccess,
    pub break_glass: BreakGlass,
    pub dormant: Dormant,
    pub baseline: Baseline,
    pub related_records: RelatedRecords,
}

/// When the clinic is open, in its local time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClinicHours {
    /// Local time minus UTC, in minutes (60 for CET). A fixed offset: the box's store keeps
    /// UTC timestamps and the image carries no time zone database.
    pub utc_offset_minutes: i32,
    /// Opening hours per weekday: `"07:30-18:30"`, several ranges `"08:00-12:00,14:00-18:00"`,
    /// or `"closed"`.
    pub mon: String,
    pub tue: String,
    pub wed: String,
    pub thu: String,
    pub fri: String,
    pub sat: String,
    pub sun: String,
    /// Days the clinic is closed (`YYYY-MM-DD`, local).
    pub holidays: Vec<String>,
    /// Activity this many minutes before opening or after closing is not off-hours (staff
    /// arriving early or finishing notes).
    pub grace_minutes: u32,
    /// After an off-hours alert for a user, further off-hours activity of that user within
    /// this many minutes belongs to the same alert.
    pub cooldown_minutes: u32,
}

impl Default for ClinicHours {
    fn default() -> Self {
        let day = || "07:30-18:30".to_string();
        Self {
            utc_offset_minutes: 0,
            mon: day(),
            tue: day(),
            wed: day(),
            thu: day(),
            fri: day(),
            sat: "closed".into(),
            sun: "closed".into(),
            holidays: Vec::new(),
            grace_minutes: 30,
            cooldown_minutes: 240,
        }
    }
}

/// More than `max_patients` distinct patients in `window_minutes` by one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkAccess {
    pub max_patients: u32,
    pub window_minutes: u32,
}

impl Default for BulkAccess {
    fn default() -> Self {
        Self {
            max_patients: 30,
            window_minutes: 60,
        }
    }
}

/// A question longer than `max_chars` characters (a whole record pasted in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LargePrompt {
    pub max_chars: u32,
}

impl Default for LargePrompt {
    fn default() -> Self {
        Self { max_chars: 8000 }
    }
}

/// Failed sign-ins: bursts per account, per client address, and across accounts (spraying).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Signin {
    /// Alert at this many failures for one account within `window_minutes`.
    pub account_failures: u32,
    /// Alert at this many failures from one client address within `window_minutes`.
    pub address_failures: u32,
    pub window_minutes: u32,
    /// Alert when this many different accounts fail within `spray_window_minutes`.
    pub spray_accounts: u32,
    pub spray_window_minutes: u32,
}

impl Default for Signin {
    fn default() -> Self {
        Self {
            account_failures: 5,
            address_failures: 10,
            window_minutes: 15,
            spray_accounts: 5,
            spray_window_minutes: 30,
        }
    }
}

/// Repeated refused requests by one user (a role's page, a patient not granted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeniedAccess {
    pub max_denials: u32,
    pub window_minutes: u32,
}

impl Default for DeniedAccess {
    fn default() -> Self {
        Self {
            max_denials: 3,
            window_minutes: 10,
        }
    }
}

/// Emergency access: every use alerts; activity past the session limit alerts again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakGlass {
    /// The emergency session's absolute limit (the web UI's `break_glass_absolute_secs`).
    pub session_limit_minutes: u32,
    /// An emergency sign-in's alert not reviewed within this many days raises
    /// `break_glass_unreviewed` (the agent checks its stored alerts).
    pub review_within_days: u32,
}

impl Default for BreakGlass {
    fn default() -> Self {
        Self {
            session_limit_minutes: 60,
            review_within_days: 7,
        }
    }
}

/// An account unused for more than `days` that becomes active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dormant {
    pub days: u32,
}

impl Default for Dormant {
    fn default() -> Self {
        Self { days: 90 }
    }
}

/// A user opening their own record, the record of a patient who shares their surname, a
/// co-worker's record, one of a patient at their address, or one whose record names them as a
/// contact. Names are compared in memory when the relations are built
/// (`relations.rs`), never written anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelatedRecords {
    pub own_record: bool,
    pub same_surname: bool,
    pub coworker: bool,
    /// A surname more patients than this carry is common: sharing it says little about
    /// kinship, so it raises no `same_surname` alert.
    pub max_patients_per_surname: u32,
    /// A full name more patients than this carry belongs to namesakes: which of them is the
    /// staff member cannot be told from a name, so it raises no `own_record` or
    /// `coworker_record` alert.
    pub max_patients_per_name: u32,
    /// Shorter surnames (after titles are dropped: `Dr A`) are not compared.
    pub min_surname_chars: u32,
    /// A user opening the record of a patient who lives at the user's postal address (the
    /// account's address, set by an administrator, against the patient record's address lines).
    pub same_address: bool,
    /// An address more patients than this share (a care home, a shelter) says little about a
    /// household, so it raises no `same_address` alert. In a block of flats whose records
    /// often leave the flat out, only the records naming the staff member's flat count.
    pub max_patients_per_address: u32,
    /// A user opening the record of a patient whose record names the user as a contact (FHIR
    /// `Patient.contact`: next of kin, emergency contact), by the user's full name. A name
    /// more than `max_patients_per_name` patients carry, or that another account carries too,
    /// names a namesake as likely as the user, so it raises no `next_of_kin` alert.
    pub next_of_kin: bool,
}

impl Default for RelatedRecords {
    fn default() -> Self {
        Self {
            own_record: true,
            same_surname: true,
            coworker: true,
            max_patients_per_surname: 10,
            max_patients_per_name: 1,
            min_surname_chars: 2,
            same_address: true,
            max_patients_per_address: 6,
            next_of_kin: true,
        }
    }
}

/// Per-user baselines: median and MAD of the user's own history, after a cold start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Baseline {
    /// Days with activity a user needs before the patients-per-day and working-hours
    /// baselines judge.
    pub cold_start_days: u32,
    /// Questions a user needs before the prompt-size baseline judges.
    pub cold_start_prompts: u32,
    /// How much history each baseline keeps (the newest values).
    pub history_days: u32,
    pub history_prompts: u32,
    /// How many scaled MADs above the median counts as unusual, per baseline.
    pub patients_mads: f64,
    pub prompt_mads: f64,
    pub hour_mads: f64,
    /// Floors, so a very regular user is not alerted for a small absolute change (the
    /// working-hours floor: minutes before the user's usual start or after their usual end).
    pub min_patients_excess: u32,
    pub min_prompt_chars: u32,
    pub min_hour_shift_minutes: u32,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            cold_start_days: 10,
            cold_start_prompts: 30,
            history_days: 60,
            history_prompts: 200,
            patients_mads: 5.0,
            prompt_mads: 3.0,
            hour_mads: 3.0,
            min_patients_excess: 8,
            min_prompt_chars: 1500,
            min_hour_shift_minutes: 120,
        }
    }
}

/// The checked configuration the detector runs on.
#[derive(Debug, Clone)]
pub struct Checked {
    pub raw: AlertsConfig,
    pub utc_offset_secs: i64,
    /// Opening ranges in minutes of the local day, per weekday (0 = Monday).
    pub week: [Vec<(u32, u32)>; 7],
    /// Holidays as days since 1970-01-01 (local).
    pub holidays: std::collections::HashSet<i64>,
}

impl AlertsConfig {
    /// Check every value and precompute the clinic's week; the first bad value is the error.
    pub fn validate(&self) -> Result<Checked, ConfigError> {
        let h = &self.clinic_hours;
        if h.utc_offset_minutes.abs() > 14 * 60 {
            return Err(bad(
                "clinic_hours.utc_offset_minutes",
                "must be between -840 and 840",
            ));
        }
        let days = [
            ("mon", &h.mon),
            ("tue", &h.tue),
            ("wed", &h.wed),
            ("thu", &h.thu),
            ("fri", &h.fri),
            ("sat", &h.sat),
            ("sun", &h.sun),
        ];
        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for (i, (name, text)) in days.iter().enumerate() {
            week[i] = parse_ranges(text).map_err(|p| bad(format!("clinic_hours.{name}"), p))?;
        }
        let mut holidays = std::collections::HashSet::new();
        for (i, d) in h.holidays.iter().enumerate() {
            let date: jiff::civil::Date = d.parse().map_err(|e| {
                bad(
                    format!("clinic_hours.holidays[{i}]"),
                    format!("{d:?} is not a date YYYY-MM-DD: {e}"),
                )
            })?;
            holidays.insert(crate::time::days_from_civil(
                date.year().into(),
                date.month().into(),
                date.day().into(),
            ));
        }
        if h.grace_minutes > 240 {
            return Err(bad("clinic_hours.grace_minutes", "must be at most 240"));
        }
        positive("clinic_hours.cooldown_minutes", h.cooldown_minutes)?;
        positive("bulk_access.max_patients", self.bulk_access.max_patients)?;
        positive(
            "bulk_access.window_minutes",
            self.bulk_access.window_minutes,
        )?;
        positive("large_prompt.max_chars", self.large_prompt.max_chars)?;
        let s = &self.signin;
        at_least("signin.account_failures", s.account_failures, 2)?;
        at_least("signin.address_failures", s.address_failures, 2)?;
        positive("signin.window_minutes", s.window_minutes)?;
        at_least("signin.spray_accounts", s.spray_accounts, 2)?;
        positive("signin.spray_window_minutes", s.spray_window_minutes)?;
        positive("denied_access.max_denials", self.denied_access.max_denials)?;
        positive(
            "denied_access.window_minutes",
            self.denied_access.window_minutes,
        )?;
        positive(
            "break_glass.session_limit_minutes",
            self.break_glass.session_limit_minutes,
        )?;
        positive(
            "break_glass.review_within_days",
            self.break_glass.review_within_days,
        )?;
        positive("dormant.days", self.dormant.days)?;
        let b = &self.baseline;
        at_least("baseline.cold_start_days", b.cold_start_days, 3)?;
        at_least("baseline.cold_start_prompts", b.cold_start_prompts, 3)?;
        at_least("baseline.history_days", b.history_days, b.cold_start_days).map_err(|_| {
            bad(
                "baseline.history_days",
                "must be at least baseline.cold_start_days",
            )
        })?;
        at_least(
            "baseline.history_prompts",
            b.history_prompts,
            b.cold_start_prompts,
        )
        .map_err(|_| {
            bad(
                "baseline.history_prompts",
                "must be at least baseline.cold_start_prompts",
            )
        })?;
        for (key, v) in [
            ("baseline.patients_mads", b.patients_mads),
            ("baseline.prompt_mads", b.prompt_mads),
            ("baseline.hour_mads", b.hour_mads),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return Err(bad(key, "must be a number of at least 1.0"));
            }
        }
        let r = &self.related_records;
        positive(
            "related_records.max_patients_per_surname",
            r.max_patients_per_surname,
        )?;
        positive(
            "related_records.max_patients_per_name",
            r.max_patients_per_name,
        )?;
        positive(
            "related_records.max_patients_per_address",
            r.max_patients_per_address,
        )?;
        if !(1..=20).contains(&r.min_surname_chars) {
            return Err(bad(
                "related_records.min_surname_chars",
                "must be between 1 and 20",
            ));
        }
        Ok(Checked {
            raw: self.clone(),
            utc_offset_secs: i64::from(h.utc_offset_minutes) * 60,
            week,
            holidays,
        })
    }
}

fn positive(key: &str, v: u32) -> Result<(), ConfigError> {
    at_least(key, v, 1)
}

fn at_least(key: &str, v: u32, min: u32) -> Result<(), ConfigError> {
    if v < min {
        Err(bad(key, format!("must be at least {min}, not {v}")))
    } else {
        Ok(())
    }
}

/// `"07:30-18:30,19:00-20:00"` or `"closed"` into minute ranges of the day.
fn parse_ranges(text: &str) -> Result<Vec<(u32, u32)>, String> {
    let text = text.trim();
    if text == "closed" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let (a, b) = part
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("{part:?} is not a range HH:MM-HH:MM (or \"closed\")"))?;
        let (a, b) = (minute_of(a.trim())?, minute_of(b.trim())?);
        if a >= b {
            return Err(format!("{part:?} ends before it starts"));
        }
        if out.last().is_some_and(|&(_, end)| a < end) {
            return Err(format!("{part:?} overlaps or precedes the range before it"));
        }
        out.push((a, b));
    }
    Ok(out)
}

fn minute_of(hhmm: &str) -> Result<u32, String> {
    let parsed = hhmm.split_once(':').and_then(|(h, m)| {
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0)) && hhmm.len() == 5).then_some(h * 60 + m)
    });
    parsed.ok_or_else(|| format!("{hhmm:?} is not a time HH:MM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Checked, String> {
        let raw: AlertsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_validate() {
        let c = parse("").expect("defaults are valid");
        assert_eq!(c.week[0], vec![(450, 1110)]);
        assert!(c.week[6].is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[clinic_hours]\nmon = \"18:00-08:00\"",
                "alerts.clinic_hours.mon",
            ),
            ("[clinic_hours]\ntue = \"8-18\"", "alerts.clinic_hours.tue"),
            (
                "[clinic_hours]\nholidays = [\"2026-12-25\", \"25.12.2026\"]",
                "alerts.clinic_hours.holidays[1]",
            ),
            (
                "[bulk_access]\nwindow_minutes = 0",
                "alerts.bulk_access.window_minutes",
            ),
            (
                "[signin]\nspray_accounts = 1",
                "alerts.signin.spray_accounts",
            ),
            (
                "[baseline]\nprompt_mads = 0.5",
                "alerts.baseline.prompt_mads",
            ),
            (
                "[related_records]\nmax_patients_per_surname = 0",
                "alerts.related_records.max_patients_per_surname",
            ),
            (
                "[baseline]\ncold_start_days = 90",
                "alerts.baseline.history_days",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("[bulk_access]\nmax_patient = 3").expect_err("typo");
        assert!(e.contains("max_patient"), "{e}");
        assert!(parse("[nonsense]\n").is_err());
    }

    #[test]
    fn split_days_and_holidays_parse() {
        let c = parse(
            "[clinic_hours]\nsat = \"08:00-12:00, 14:00-16:00\"\nholidays = [\"1970-01-02\"]",
        )
        .expect("valid");
        assert_eq!(c.week[5], vec![(480, 720), (840, 960)]);
        assert!(c.holidays.contains(&1));
    }
}
