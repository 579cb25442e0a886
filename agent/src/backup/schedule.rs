//! The `[backup]` configuration section and the nightly schedule's decision (pure: the
//! schedule, the time and the last attempt in, what to do out).
//!
//! One attempt per night: at the configured local time the daemon backs up; a run that failed
//! is not retried by the schedule (the alert asks a person to look, and the admin page's "back
//! up now" runs one at once). When the agent was not running at that time (the box was off),
//! the first check after start runs a catch-up backup and reports the nights it missed.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use wardbox_backup::Destination;

use crate::settings::ConfigError;

/// A run that starts this long after its scheduled time still counts as on time (the daemon
/// checks every minute; a busy box may start a little late).
pub const ON_TIME_GRACE: SignedDuration = SignedDuration::from_mins(60);

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// `[backup]`: where the box backs up and when.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// The directory a USB disk is mounted on (`/media/wardbox-backup`). The repository is
    /// made there on the first backup.
    pub usb_path: Option<PathBuf>,
    /// `nightly` (the default) or `off` (backups only when a person starts one).
    pub schedule: ScheduleMode,
    /// The nightly run's local time, `HH:MM` (24 h).
    pub nightly_at: String,
    /// Local time minus UTC, in minutes (60 for CET). Default: `[alerts.clinic_hours]
    /// utc_offset_minutes`, so the box has one idea of the clinic's local time.
    pub utc_offset_minutes: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleMode {
    Nightly,
    Off,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self { usb_path: None, schedule: ScheduleMode::Nightly, nightly_at: "02:30".into(), utc_offset_minutes: None }
    }
}

impl BackupConfig {
    /// Every check; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| Err(ConfigError::invalid(format!("backup.{key}"), problem));
        if let Some(path) = &self.usb_path
            && !path.is_absolute()
        {
            return bad("usb_path", format!("`{}` must be an absolute path (where the backup disk is mounted)", path.display()));
        }
        if parse_hhmm(&self.nightly_at).is_none() {
            return bad("nightly_at", format!("`{}` must be a time of day as HH:MM, e.g. 02:30", self.nightly_at));
        }
        if let Some(offset) = self.utc_offset_minutes
            && !(-14 * 60..=14 * 60).contains(&offset)
        {
            return bad("utc_offset_minutes", format!("{offset} must be between -840 and 840 minutes"));
        }
        Ok(())
    }

    /// The configured destination, if any.
    pub fn destination(&self) -> Option<Destination> {
        self.usb_path.clone().map(Destination::LocalDirectory)
    }

    /// The nightly schedule, when it is on and there is somewhere to back up to. The offset
    /// falls back to `clinic_utc_offset_minutes` (the alerts' clinic hours).
    pub fn nightly(&self, clinic_utc_offset_minutes: i32) -> Option<Nightly> {
        if self.schedule == ScheduleMode::Off || self.destination().is_none() {
            return None;
        }
        let local = parse_hhmm(&self.nightly_at)?;
        Some(Nightly::new(local, self.utc_offset_minutes.unwrap_or(clinic_utc_offset_minutes)))
    }
}

/// `HH:MM` → minutes after midnight.
fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Once a day at a fixed local time (a fixed offset from UTC: the box carries no time zone
/// database, like the alerts' clinic hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nightly {
    /// Minutes after midnight UTC.
    minute_utc: i64,
    /// Local time minus UTC in minutes, to show times the clinic's way.
    utc_offset_minutes: i32,
}

impl Nightly {
    pub fn new(local_minute: u16, utc_offset_minutes: i32) -> Self {
        let minute_utc = (i64::from(local_minute) - i64::from(utc_offset_minutes)).rem_euclid(24 * 60);
        Self { minute_utc, utc_offset_minutes }
    }

    /// The latest scheduled time at or before `now`.
    pub fn slot_at_or_before(&self, now: Timestamp) -> Timestamp {
        let secs = now.as_second();
        let day_start = secs - secs.rem_euclid(86_400);
        let mut slot = day_start + self.minute_utc * 60;
        if slot > secs {
            slot -= 86_400;
        }
        Timestamp::from_second(slot).unwrap_or(now)
    }

    /// The first scheduled time after `now`.
    pub fn next_after(&self, now: Timestamp) -> Timestamp {
        self.slot_at_or_before(now).saturating_add(DAY).unwrap_or(now)
    }

    /// The offset in words: `UTC+01:00`.
    pub fn offset_words(&self) -> String {
        let (sign, m) = if self.utc_offset_minutes < 0 { ('-', -self.utc_offset_minutes) } else { ('+', self.utc_offset_minutes) };
        format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
    }

    /// A time as the clinic reads it: `2026-11-30 02:30 (UTC+01:00)`.
    pub fn local(&self, t: Timestamp) -> String {
        let offset = jiff::tz::Offset::from_seconds(self.utc_offset_minutes * 60).unwrap_or(jiff::tz::Offset::UTC);
        let dt = offset.to_datetime(t);
        format!("{} ({})", dt.strftime("%Y-%m-%d %H:%M"), self.offset_words())
    }
}

/// What the schedule says to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing before `until` (the next scheduled time).
    Wait { until: Timestamp },
    /// Back up now, for the scheduled time `slot`. `missed`: scheduled times since the last
    /// attempt at which no backup started and whose time to start has passed (the box or the
    /// agent was down); more than 0 is an alert.
    Run { slot: Timestamp, missed: u32 },
}

/// Decide from the schedule, the time, and when the last backup (scheduled or by hand, good
/// or failed) started. A box that never backed up runs at once and has missed nothing.
pub fn decide(nightly: &Nightly, now: Timestamp, last_started: Option<Timestamp>) -> Decision {
    let slot = nightly.slot_at_or_before(now);
    let Some(last) = last_started else { return Decision::Run { slot, missed: 0 } };
    if last >= slot {
        return Decision::Wait { until: nightly.next_after(now) };
    }
    // Scheduled times after the last attempt, up to and including `slot`.
    let since = slot.as_second() - last.as_second();
    let slots = (since / 86_400 + i64::from(since % 86_400 != 0)).max(1);
    let on_time = now.duration_since(slot) <= ON_TIME_GRACE;
    let missed = if on_time { slots - 1 } else { slots };
    Decision::Run { slot, missed: u32::try_from(missed).unwrap_or(u32::MAX) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// 02:30 in UTC+1 is 01:30 UTC.
    fn cet() -> Nightly {
        Nightly::new(150, 60)
    }

    #[test]
    fn the_scheduled_time_is_local() {
        let n = cet();
        assert_eq!(n.slot_at_or_before(t("2026-11-30T01:30:00Z")), t("2026-11-30T01:30:00Z"));
        assert_eq!(n.slot_at_or_before(t("2026-11-30T01:29:59Z")), t("2026-11-29T01:30:00Z"));
        assert_eq!(n.next_after(t("2026-11-30T01:30:00Z")), t("2026-12-01T01:30:00Z"));
        assert_eq!(n.local(t("2026-11-30T01:30:00Z")), "2026-11-30 02:30 (UTC+01:00)");
        // West of UTC, across midnight: 22:00 local in UTC-5 is 03:00 UTC the next day.
        let ny = Nightly::new(22 * 60, -300);
        assert_eq!(ny.slot_at_or_before(t("2026-11-30T04:00:00Z")), t("2026-11-30T03:00:00Z"));
        assert_eq!(ny.local(t("2026-11-30T03:00:00Z")), "2026-11-29 22:00 (UTC-05:00)");
    }

    #[test]
    fn one_attempt_per_night_at_the_scheduled_time() {
        let n = cet();
        let last = Some(t("2026-11-29T01:30:20Z"));
        // Before tonight's time: wait for it.
        assert_eq!(decide(&n, t("2026-11-30T01:29:00Z"), last), Decision::Wait { until: t("2026-11-30T01:30:00Z") });
        // At it: run, on time, nothing missed.
        let slot = t("2026-11-30T01:30:00Z");
        assert_eq!(decide(&n, t("2026-11-30T01:30:40Z"), last), Decision::Run { slot, missed: 0 });
        // Once tonight's attempt started (good or failed, by the schedule or by hand), wait
        // for tomorrow's: a failure is not retried by the schedule.
        let tonight = Some(t("2026-11-30T01:30:41Z"));
        assert_eq!(decide(&n, t("2026-11-30T09:00:00Z"), tonight), Decision::Wait { until: t("2026-12-01T01:30:00Z") });
        // A backup by hand in the afternoon does not replace tonight's.
        let by_hand = Some(t("2026-11-30T15:00:00Z"));
        assert_eq!(decide(&n, t("2026-12-01T01:30:30Z"), by_hand), Decision::Run { slot: t("2026-12-01T01:30:00Z"), missed: 0 });
    }

    #[test]
    fn nights_the_box_was_down_are_missed_and_caught_up() {
        let n = cet();
        let last = Some(t("2026-11-27T01:30:05Z"));
        // The box was off from the 28th to the morning of the 30th: three nights (28, 29, 30)
        // passed without a run; the catch-up runs at once and reports them.
        assert_eq!(decide(&n, t("2026-11-30T08:00:00Z"), last), Decision::Run { slot: t("2026-11-30T01:30:00Z"), missed: 3 });
        // Started within the grace after tonight's time: tonight's is on time, two missed.
        assert_eq!(decide(&n, t("2026-11-30T02:10:00Z"), last), Decision::Run { slot: t("2026-11-30T01:30:00Z"), missed: 2 });
        // Only just late for one night.
        let yesterday = Some(t("2026-11-29T01:30:05Z"));
        assert_eq!(decide(&n, t("2026-11-30T02:31:00Z"), yesterday), Decision::Run { slot: t("2026-11-30T01:30:00Z"), missed: 1 });
    }

    #[test]
    fn a_box_that_never_backed_up_runs_at_once() {
        assert_eq!(decide(&cet(), t("2026-11-30T12:00:00Z"), None), Decision::Run { slot: t("2026-11-30T01:30:00Z"), missed: 0 });
    }

    #[test]
    fn the_section_is_validated_naming_the_key() {
        let parse = |text: &str| toml::from_str::<BackupConfig>(text).unwrap().validate().map_err(|e| e.to_string());
        assert!(parse("usb_path = \"/media/wardbox-backup\"\nnightly_at = \"23:59\"").is_ok());
        let cases = [
            ("usb_path = \"media\"", "`backup.usb_path`"),
            ("nightly_at = \"2:30\"", "`backup.nightly_at`"),
            ("nightly_at = \"24:00\"", "`backup.nightly_at`"),
            ("nightly_at = \"02:60\"", "`backup.nightly_at`"),
            ("utc_offset_minutes = 900", "`backup.utc_offset_minutes`"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(toml::from_str::<BackupConfig>("schedule = \"hourly\"").is_err());
        let off: BackupConfig = toml::from_str("usb_path = \"/media/b\"\nschedule = \"off\"").unwrap();
        assert_eq!(off.nightly(0), None, "schedule off");
        assert_eq!(BackupConfig::default().nightly(0), None, "no destination, no schedule");
        let on: BackupConfig = toml::from_str("usb_path = \"/media/b\"").unwrap();
        assert_eq!(on.nightly(60), Some(Nightly::new(150, 60)), "02:30 in the clinic's offset by default");
    }
}
