//! Free space on the data volume, watched so that somebody is told before it is full.
//!
//! A full volume is handled (writes refused naming it, nothing acknowledged lost, recovery
//! without a restart; docs/web.md), but by then sign-ins, record changes and imports already
//! fail. The daemon reads the volume's free space every `disk.check_interval_secs`
//! (`watch`); below the warning threshold the health degrades with a reason that says what to
//! do, and each crossing (into low, into critical) is one `security_alert` with
//! `source: "disk"`, which the detector files under its `disk_space` rule and the outbox
//! delivers (syslog, e-mail). When space returns the health clears, the open `disk_space`
//! alerts are acknowledged by `system` and a lifecycle record says so.
//!
//! This file is the pure part: the `[disk]` section, the level of a reading (with a margin, so
//! a volume hovering at a threshold does not raise an alert at every check), the step from the
//! level on record to the level now, and the words of the health reason.

use serde::{Deserialize, Serialize};

use crate::settings::ConfigError;

pub mod watch;

const GIB: u64 = 1 << 30;

/// `[disk]`: when free space on the data volume is low.
///
/// A threshold in percent and one in GiB: whichever is reached first counts (the percent
/// suits most volumes; the GiB floor keeps a small volume from running out of room for an
/// import or an update before its percent is reached).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskConfig {
    /// How often the free space is read, in seconds.
    pub check_interval_secs: u64,
    /// Low (warning) below this share of the volume free, in percent.
    pub warn_free_percent: u32,
    /// Low (warning) below this many GiB free; 0: the percent alone.
    pub warn_free_gib: u64,
    /// Critical below this share free, in percent; below `warn_free_percent`.
    pub critical_free_percent: u32,
    /// Critical below this many GiB free; 0: the percent alone. At most `warn_free_gib`.
    pub critical_free_gib: u64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self { check_interval_secs: 60, warn_free_percent: 10, warn_free_gib: 0, critical_free_percent: 3, critical_free_gib: 0 }
    }
}

impl DiskConfig {
    /// Every check; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| Err(ConfigError::invalid(format!("disk.{key}"), problem));
        if !(1..=3600).contains(&self.check_interval_secs) {
            return bad("check_interval_secs", format!("{} must be between 1 and 3600 seconds", self.check_interval_secs));
        }
        if !(1..=90).contains(&self.warn_free_percent) {
            return bad("warn_free_percent", format!("{} must be between 1 and 90 (percent of the volume free)", self.warn_free_percent));
        }
        if self.critical_free_percent == 0 || self.critical_free_percent >= self.warn_free_percent {
            return bad(
                "critical_free_percent",
                format!(
                    "{} must be at least 1 and below disk.warn_free_percent ({}): critical is the lower threshold",
                    self.critical_free_percent, self.warn_free_percent
                ),
            );
        }
        if self.critical_free_gib > self.warn_free_gib {
            return bad(
                "critical_free_gib",
                format!("{} must not exceed disk.warn_free_gib ({}): critical is the lower threshold", self.critical_free_gib, self.warn_free_gib),
            );
        }
        Ok(())
    }

    /// The warning and critical thresholds in bytes free, for a volume of `total` bytes.
    pub fn thresholds(&self, total: u64) -> (u64, u64) {
        let percent_of = |p: u32| (u128::from(total) * u128::from(p) / 100) as u64;
        let warn = percent_of(self.warn_free_percent).max(self.warn_free_gib.saturating_mul(GIB));
        let critical = percent_of(self.critical_free_percent).max(self.critical_free_gib.saturating_mul(GIB));
        (warn, critical)
    }

    /// Both thresholds in words: `low below 10 % free, critical below 3 % free`.
    pub fn thresholds_in_words(&self) -> String {
        format!(
            "low below {} free, critical below {} free",
            Self::threshold_words(self.warn_free_percent, self.warn_free_gib),
            Self::threshold_words(self.critical_free_percent, self.critical_free_gib)
        )
    }

    /// A threshold in words, e.g. `10 %` or `10 % or 20 GiB`.
    fn threshold_words(percent: u32, gib: u64) -> String {
        if gib == 0 { format!("{percent} %") } else { format!("{percent} % or {gib} GiB") }
    }
}

/// One reading of the volume: what the agent (not root) may still write, and the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

impl Space {
    /// Free space in percent of the volume, one decimal.
    pub fn free_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        (self.free_bytes as f64 * 1000.0 / self.total_bytes as f64).round() / 10.0
    }

    /// `4.1 GiB free of 51.0 GiB (8.0 %)`.
    pub fn describe(&self) -> String {
        format!("{} free of {} ({:.1} %)", size(self.free_bytes), size(self.total_bytes), self.free_percent())
    }
}

/// A size in words: GiB above 1 GiB, else MiB, one decimal.
pub fn size(bytes: u64) -> String {
    if bytes >= GIB { format!("{:.1} GiB", bytes as f64 / GIB as f64) } else { format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64) }
}

/// How low the free space is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// Below the warning threshold.
    Low,
    /// Below the critical threshold.
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Low => "low",
            Level::Critical => "critical",
        }
    }

    /// The `event` of the alert record of a crossing into this level.
    pub fn event(self) -> Option<&'static str> {
        match self {
            Level::Ok => None,
            Level::Low => Some(EVENT_LOW),
            Level::Critical => Some(EVENT_CRITICAL),
        }
    }
}

/// The alert records' events (the detector's `disk_space` rule reads them) and the recovery's.
pub const EVENT_LOW: &str = "space_low";
pub const EVENT_CRITICAL: &str = "space_critical";
pub const EVENT_RECOVERED: &str = "space_recovered";
/// The detector's rule for these alerts (`wardbox_alerts::Rule::DiskSpace`).
pub const RULE: &str = "disk_space";

/// The level of a reading, given the level shown so far: a level once reached is left only
/// when the free space is back above its threshold by 1 % of the volume, so a volume that
/// hovers at a threshold does not come and go at every check.
pub fn level(space: Space, config: &DiskConfig, shown: Level) -> Level {
    let (warn, critical) = config.thresholds(space.total_bytes);
    let margin = space.total_bytes / 100;
    let free = space.free_bytes;
    if free < critical || (shown == Level::Critical && free < critical.saturating_add(margin)) {
        Level::Critical
    } else if free < warn || (shown >= Level::Low && free < warn.saturating_add(margin)) {
        Level::Low
    } else {
        Level::Ok
    }
}

/// What a new level means for the audit trail, against the level on record there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to record.
    Same,
    /// A crossing into a lower level of free space: one alert.
    Raise(Level),
    /// Better but still low (critical to low): on record without an alert, so that a later
    /// fall back to critical is a crossing again.
    Eased(Level),
    /// Space is back: acknowledge the open alerts and record the recovery.
    Recovered,
}

pub fn step(recorded: Level, now: Level) -> Step {
    match (recorded, now) {
        (r, n) if r == n => Step::Same,
        (r, n) if n > r => Step::Raise(n),
        (_, Level::Ok) => Step::Recovered,
        (_, n) => Step::Eased(n),
    }
}

/// The health reason for a low or critical volume: the figure, the threshold, what to do.
pub fn reason(path: &str, space: Space, config: &DiskConfig, level: Level) -> Option<String> {
    let (which, threshold, urgency) = match level {
        Level::Ok => return None,
        Level::Low => ("warning", DiskConfig::threshold_words(config.warn_free_percent, config.warn_free_gib), "soon"),
        Level::Critical => ("critical", DiskConfig::threshold_words(config.critical_free_percent, config.critical_free_gib), "now"),
    };
    Some(format!(
        "data volume {path}: {}, below the {which} threshold of {threshold} free. Free space {urgency}, or move the box to a larger \
         data volume (`wardbox backup now`, then `wardbox backup restore-box` on the new one): when the volume is full, \
         sign-ins, record changes and imports are refused",
        space.describe()
    ))
}

/// The level an open alert of a crossing stands for (from its observed text), to carry the
/// level on record over a restart of the agent.
pub fn level_of_observed(observed: &str) -> Level {
    if observed.starts_with(EVENT_CRITICAL) {
        Level::Critical
    } else if observed.starts_with(EVENT_LOW) {
        Level::Low
    } else {
        Level::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn space(free_mib: u64) -> Space {
        Space { total_bytes: 1000 * MIB, free_bytes: free_mib * MIB }
    }

    #[test]
    fn the_defaults_validate_and_each_bad_value_names_its_key() {
        DiskConfig::default().validate().expect("defaults");
        let cases: &[(DiskConfig, &str)] = &[
            (DiskConfig { check_interval_secs: 0, ..Default::default() }, "disk.check_interval_secs"),
            (DiskConfig { check_interval_secs: 3601, ..Default::default() }, "disk.check_interval_secs"),
            (DiskConfig { warn_free_percent: 0, ..Default::default() }, "disk.warn_free_percent"),
            (DiskConfig { warn_free_percent: 95, ..Default::default() }, "disk.warn_free_percent"),
            (DiskConfig { critical_free_percent: 10, ..Default::default() }, "disk.critical_free_percent"),
            (DiskConfig { critical_free_percent: 0, ..Default::default() }, "disk.critical_free_percent"),
            (DiskConfig { critical_free_gib: 5, warn_free_gib: 2, ..Default::default() }, "disk.critical_free_gib"),
        ];
        for (config, key) in cases {
            let err = config.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{config:?} gave {err:?}, not naming {key}");
        }
    }

    #[test]
    fn thresholds_take_the_larger_of_the_percent_and_the_gib() {
        let c = DiskConfig::default();
        assert_eq!(c.thresholds(1000 * MIB), (100 * MIB, 30 * MIB));
        let c = DiskConfig { warn_free_gib: 2, critical_free_gib: 1, ..Default::default() };
        assert_eq!(c.thresholds(1000 * MIB), (2 * GIB, GIB));
        assert_eq!(c.thresholds(100 * GIB), (10 * GIB, 3 * GIB));
    }

    #[test]
    fn the_thresholds_in_words() {
        assert_eq!(DiskConfig::default().thresholds_in_words(), "low below 10 % free, critical below 3 % free");
        let c = DiskConfig { warn_free_gib: 20, critical_free_gib: 5, ..Default::default() };
        assert_eq!(c.thresholds_in_words(), "low below 10 % or 20 GiB free, critical below 3 % or 5 GiB free");
    }

    #[test]
    fn levels_follow_the_thresholds_with_a_margin_to_leave_them() {
        let c = DiskConfig::default();
        // 1000 MiB: warn below 100 MiB, critical below 30, margin 10.
        assert_eq!(level(space(500), &c, Level::Ok), Level::Ok);
        assert_eq!(level(space(100), &c, Level::Ok), Level::Ok);
        assert_eq!(level(space(99), &c, Level::Ok), Level::Low);
        assert_eq!(level(space(29), &c, Level::Ok), Level::Critical);
        // Leaving a level takes the margin.
        assert_eq!(level(space(105), &c, Level::Low), Level::Low);
        assert_eq!(level(space(110), &c, Level::Low), Level::Ok);
        assert_eq!(level(space(35), &c, Level::Critical), Level::Critical);
        assert_eq!(level(space(40), &c, Level::Critical), Level::Low);
        assert_eq!(level(space(200), &c, Level::Critical), Level::Ok);
    }

    #[test]
    fn one_alert_per_crossing_and_a_recovery_when_space_returns() {
        assert_eq!(step(Level::Ok, Level::Ok), Step::Same);
        assert_eq!(step(Level::Ok, Level::Low), Step::Raise(Level::Low));
        assert_eq!(step(Level::Low, Level::Low), Step::Same);
        assert_eq!(step(Level::Low, Level::Critical), Step::Raise(Level::Critical));
        assert_eq!(step(Level::Ok, Level::Critical), Step::Raise(Level::Critical));
        assert_eq!(step(Level::Critical, Level::Low), Step::Eased(Level::Low));
        assert_eq!(step(Level::Critical, Level::Ok), Step::Recovered);
        assert_eq!(step(Level::Low, Level::Ok), Step::Recovered);
    }

    #[test]
    fn the_reason_gives_the_figure_the_threshold_and_what_to_do() {
        let c = DiskConfig { warn_free_gib: 20, ..Default::default() };
        assert_eq!(reason("/data", space(500), &c, Level::Ok), None);
        let low = reason("/var/lib/wardbox/data", space(80), &c, Level::Low).expect("low");
        assert!(low.starts_with("data volume /var/lib/wardbox/data: 80.0 MiB free of 1000.0 MiB (8.0 %), below the warning threshold of 10 % or 20 GiB free. Free space soon"), "{low}");
        assert!(low.contains("wardbox backup restore-box") && low.contains("sign-ins, record changes and imports are refused"), "{low}");
        let critical = reason("/data", space(20), &c, Level::Critical).expect("critical");
        assert!(critical.contains("below the critical threshold of 3 % free. Free space now"), "{critical}");
    }

    #[test]
    fn the_level_of_an_open_alert_is_read_from_its_observed_text() {
        assert_eq!(level_of_observed("space_critical: 1.0 MiB free of 48.0 MiB (2.1 %)"), Level::Critical);
        assert_eq!(level_of_observed("space_low"), Level::Low);
        assert_eq!(level_of_observed("backup_failed"), Level::Ok);
    }
}
