//! Retention: which snapshots to keep. Pure: snapshots and the time in, a decision out.
//!
//! 7 daily, 4 weekly, 12 monthly and 6 yearly snapshots: the yearly ones keep six years of
//! audit trail reachable in the repository (HIPAA's retention period) while the repository
//! stays about 29 snapshots deep. rustic applies the policy exactly as `restic forget
//! --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --keep-yearly 6` does: each rule keeps
//! the newest snapshot of each of its last N periods that have a snapshot.

use rustic_core::repofile::SnapshotFile;
use rustic_core::{ForgetSnapshot, KeepOptions};

/// The box's retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub daily: u16,
    pub weekly: u16,
    pub monthly: u16,
    pub yearly: u16,
}

/// What the box keeps: see the module comment.
pub const RETENTION: Retention = Retention { daily: 7, weekly: 4, monthly: 12, yearly: 6 };

impl Retention {
    /// The policy as rustic's forget options.
    pub fn keep_options(&self) -> KeepOptions {
        KeepOptions::default()
            .keep_daily(Some(i32::from(self.daily)))
            .keep_weekly(Some(i32::from(self.weekly)))
            .keep_monthly(Some(i32::from(self.monthly)))
            .keep_yearly(Some(i32::from(self.yearly)))
    }

    /// Decide, for each snapshot, keep or forget (with rustic's reasons), as of `now`.
    pub fn decide(
        &self,
        snapshots: Vec<SnapshotFile>,
        now: &rustic_core::jiff::Zoned,
    ) -> Result<Vec<ForgetSnapshot>, Box<rustic_core::RusticError>> {
        self.keep_options().apply(snapshots, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustic_core::jiff::{ToSpan, Zoned};

    fn snapshot_at(time: &Zoned) -> SnapshotFile {
        SnapshotFile { time: time.clone(), ..SnapshotFile::default() }
    }

    /// One nightly snapshot for eight years: exactly 7 + 4 + 12 + 6 distinct periods are kept,
    /// minus overlaps (the newest snapshot counts for every rule), and the oldest kept is from
    /// the sixth year back.
    #[test]
    fn eight_years_of_nightly_snapshots_keep_six_years() {
        let now: Zoned = "2026-11-29T02:00:00+00:00[UTC]".parse().unwrap();
        let snapshots: Vec<SnapshotFile> = (0..(8 * 365))
            .map(|days| snapshot_at(&now.checked_sub(days.days()).unwrap()))
            .collect();
        let decided = RETENTION.decide(snapshots, &now).unwrap();
        let kept: Vec<&ForgetSnapshot> = decided.iter().filter(|s| s.keep).collect();
        // 7 daily; the weekly rule's newest is already a daily one, so 3 more weeks; months
        // whose last snapshot is not already kept; years likewise.
        assert!(kept.len() >= 7 + 3 + 10 + 5 && kept.len() <= 7 + 4 + 12 + 6, "kept {}", kept.len());
        let oldest = kept.iter().map(|s| s.snapshot.time.clone()).min().unwrap();
        assert_eq!(oldest.year(), 2021, "the sixth yearly snapshot is the last of 2021");
        // Every one of the last 7 days is kept.
        for days in 0..7 {
            let t = now.checked_sub(days.days()).unwrap();
            assert!(kept.iter().any(|s| s.snapshot.time == t), "day -{days} kept");
        }
        // A snapshot from 7 years ago is forgotten.
        let old = now.checked_sub((7 * 365).days()).unwrap();
        assert!(decided.iter().any(|s| s.snapshot.time == old && !s.keep));
    }

    #[test]
    fn few_snapshots_are_all_kept() {
        let now: Zoned = "2026-11-29T02:00:00+00:00[UTC]".parse().unwrap();
        let snapshots = vec![snapshot_at(&now), snapshot_at(&now.checked_sub(1.day()).unwrap())];
        let decided = RETENTION.decide(snapshots, &now).unwrap();
        assert!(decided.iter().all(|s| s.keep));
    }
}
