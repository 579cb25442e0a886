//! The `[backup]` configuration section and the nightly schedule's decision (pure: the
//! schedule, the time and the last attempt in, what to do out).
//!
//! One attempt per night: at the configured local time the daemon backs up; a run that failed
//! is not retried by the schedule (the alert asks a person to look, and the admin page's "back
//! up now" runs one at once). When the agent was not running at that time (the box was off),
//! the first check after start runs a catch-up backup and reports the nights it missed.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use wardbox_backup::{Destination, RestCredentials};

use crate::settings::ConfigError;
use wardbox_firewall::{AllowOut, Protocol};

/// The firewall rule a REST destination opens (it appears in the rule's comment).
pub const REST_RULE: &str = "backup-rest";

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
    /// A restic REST server on the clinic LAN (`http://10.1.5.30:8000/wardbox/`, or https):
    /// an IP address and port, not a name (the firewall opens exactly this destination, and the
    /// box needs no DNS), and no credentials in it. Instead of `usb_path`.
    pub rest_url: Option<String>,
    /// For an https `rest_url` whose certificate a clinic CA signed: that CA (PEM), by
    /// absolute path.
    pub rest_ca_file: Option<PathBuf>,
    /// For a REST server that asks for HTTP basic authentication (https only): the user name,
    /// with `rest_password_file`.
    pub rest_user: Option<String>,
    /// The file (absolute path, mode 0600) whose first line is the REST server's password. The
    /// password itself is never in the configuration.
    pub rest_password_file: Option<PathBuf>,
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
        Self {
            usb_path: None,
            rest_url: None,
            rest_ca_file: None,
            rest_user: None,
            rest_password_file: None,
            schedule: ScheduleMode::Nightly,
            nightly_at: "02:30".into(),
            utc_offset_minutes: None,
        }
    }
}

impl BackupConfig {
    /// Every check; each error names its key. `firewall_on`: with the egress firewall on, a
    /// REST server must be an internal address (the firewall opens it and nothing else).
    pub fn validate(&self, firewall_on: bool) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| Err(ConfigError::invalid(format!("backup.{key}"), problem));
        if self.usb_path.is_some() && self.rest_url.is_some() {
            return bad("rest_url", "give one destination: usb_path or rest_url, not both".into());
        }
        if let Some(url) = &self.rest_url {
            let (https, addr) = parse_rest_url(url).map_err(|problem| ConfigError::invalid("backup.rest_url", problem))?;
            if firewall_on && !crate::settings::is_clinic_address(addr.ip()) {
                return bad(
                    "rest_url",
                    format!("`{}` is not an address inside the clinic (10/8, 172.16/12, 192.168/16, fc00::/7); backups never leave the clinic", addr.ip()),
                );
            }
            if let Some(ca) = &self.rest_ca_file {
                if !https {
                    return bad("rest_ca_file", "a CA file is for an https rest_url".into());
                }
                if !ca.is_absolute() {
                    return bad("rest_ca_file", format!("`{}` must be an absolute path", ca.display()));
                }
            }
            match (&self.rest_user, &self.rest_password_file) {
                (None, None) => {}
                (Some(_), None) => return bad("rest_password_file", "rest_user needs rest_password_file (the file that holds its password)".into()),
                (None, Some(_)) => return bad("rest_user", "rest_password_file needs rest_user (the user name the server knows)".into()),
                (Some(user), Some(file)) => {
                    if !https {
                        return bad("rest_user", "a user and password are sent over https only: basic authentication would send the password across the LAN in clear".into());
                    }
                    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                        return bad("rest_user", "the user name must be non-empty, without `:` or control characters".into());
                    }
                    if !file.is_absolute() {
                        return bad("rest_password_file", format!("`{}` must be an absolute path", file.display()));
                    }
                }
            }
        } else if self.rest_ca_file.is_some() {
            return bad("rest_ca_file", "a CA file needs an https rest_url".into());
        } else if self.rest_user.is_some() || self.rest_password_file.is_some() {
            return bad("rest_user", "a user and password file are for a rest_url".into());
        }
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
        if let Some(url) = &self.rest_url {
            let url = if url.ends_with('/') { url.clone() } else { format!("{url}/") };
            let credentials = match (&self.rest_user, &self.rest_password_file) {
                (Some(user), Some(password_file)) => Some(RestCredentials { user: user.clone(), password_file: password_file.clone() }),
                _ => None,
            };
            return Some(Destination::RestServer { url, ca_file: self.rest_ca_file.clone(), credentials });
        }
        self.usb_path.clone().map(Destination::LocalDirectory)
    }

    /// The outbound rule a REST destination needs: exactly its address, TCP, its port. Added
    /// to the firewall policy when the configuration is loaded (as the alert destinations are),
    /// so the ruleset, its verification and drift repair know it. A USB disk needs none.
    pub fn egress(&self) -> Vec<AllowOut> {
        let Some((_, addr)) = self.rest_url.as_deref().and_then(|u| parse_rest_url(u).ok()) else { return Vec::new() };
        vec![AllowOut { name: REST_RULE.to_owned(), dest: addr.ip().to_string(), protocol: Protocol::Tcp, port: u32::from(addr.port()) }]
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

/// On the appliance the USB disk must be mounted at `usb_path`: an empty mount point is a
/// directory of the system disk, and a backup there would "succeed" onto the wrong disk (and
/// fill it). Refused as [`wardbox_backup::BackupError::DestinationUnavailable`], like a disk
/// that is not there. A disk that is mounted but answers with an I/O error (failing) is
/// [`wardbox_backup::BackupError::DestinationIoError`], as the backup crate names it. A dev box
/// backs up into any directory.
pub fn ensure_mounted(path: &std::path::Path) -> Result<(), wardbox_backup::BackupError> {
    let unavailable = |reason: String| wardbox_backup::BackupError::DestinationUnavailable { path: path.to_owned(), reason };
    match is_mount_point(path) {
        Ok(true) => Ok(()),
        Ok(false) => Err(unavailable("no disk is mounted there (the directory belongs to the system disk); plug in and mount the backup disk".into())),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) => Err(wardbox_backup::BackupError::DestinationIoError {
            location: path.display().to_string(),
            operation: "open the destination",
            detail: e.to_string(),
        }),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// Whether `path` is where a filesystem is mounted: on another device than its parent, or the
/// root itself.
pub fn is_mount_point(path: &std::path::Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(path)?;
    let parent = std::fs::metadata(path.join(".."))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}

/// `http(s)://ADDRESS:PORT/path` → (https, address), or what is wrong with it.
fn parse_rest_url(url: &str) -> Result<(bool, SocketAddr), String> {
    let example = "e.g. http://10.1.5.30:8000/wardbox/";
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return Err(format!("`{url}` must start with http:// or https:// ({example})")),
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` must not contain spaces or control characters"));
    }
    let (authority, _path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err("the URL must not carry credentials (they would be in the configuration and the records)".into());
    }
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| format!("`{authority}` must be an IP address and port ({example}); the firewall opens exactly this destination"))?;
    if addr.port() == 0 {
        return Err("port 0 is not a port".into());
    }
    let _: IpAddr = addr.ip();
    Ok((https, addr))
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
        let parse = |text: &str| toml::from_str::<BackupConfig>(text).unwrap().validate(true).map_err(|e| e.to_string());
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
        // The LAN destination: an internal address and port, no credentials, one destination.
        assert!(parse("rest_url = \"http://10.1.5.30:8000/wardbox/\"").is_ok());
        assert!(parse("rest_url = \"https://10.1.5.30:8443/wardbox\"\nrest_ca_file = \"/etc/wardbox/clinic-ca.pem\"").is_ok());
        let rest_cases = [
            ("rest_url = \"backup.clinic.local:8000\"", "must start with http:// or https://"),
            ("rest_url = \"http://backup.clinic.local:8000/\"", "must be an IP address and port"),
            ("rest_url = \"http://10.1.5.30/\"", "must be an IP address and port"),
            ("rest_url = \"http://user:secret@10.1.5.30:8000/\"", "must not carry credentials"),
            ("rest_url = \"http://52.1.2.3:8000/\"", "is not an address inside the clinic"),
            ("rest_url = \"http://10.1.5.30:8000/\"\nusb_path = \"/media/b\"", "not both"),
            ("rest_url = \"http://10.1.5.30:8000/\"\nrest_ca_file = \"/etc/ca.pem\"", "`backup.rest_ca_file`"),
            // Basic authentication: https only, both keys, the password only in its file.
            ("rest_url = \"http://10.1.5.30:8000/\"\nrest_user = \"wardbox\"\nrest_password_file = \"/etc/wardbox/rest.pw\"", "over https only"),
            ("rest_url = \"https://10.1.5.30:8443/\"\nrest_user = \"wardbox\"", "`backup.rest_password_file`"),
            ("rest_url = \"https://10.1.5.30:8443/\"\nrest_password_file = \"/etc/wardbox/rest.pw\"", "needs rest_user"),
            ("rest_url = \"https://10.1.5.30:8443/\"\nrest_user = \"a:b\"\nrest_password_file = \"/etc/wardbox/rest.pw\"", "without `:`"),
            ("rest_url = \"https://10.1.5.30:8443/\"\nrest_user = \"wardbox\"\nrest_password_file = \"rest.pw\"", "must be an absolute path"),
            ("usb_path = \"/media/b\"\nrest_user = \"wardbox\"", "are for a rest_url"),
        ];
        for (text, expected) in rest_cases {
            let err = parse(text).unwrap_err();
            assert!(
                ["`backup.rest_url`", "`backup.rest_ca_file`", "`backup.rest_user`", "`backup.rest_password_file`"].iter().any(|k| err.contains(k)),
                "{text}: {err}"
            );
            assert!(err.contains(expected), "{text}: {err}\nwanted {expected}");
        }
        // Loopback is fine with the firewall off (a dev box).
        let local: BackupConfig = toml::from_str("rest_url = \"http://127.0.0.1:8000/wardbox\"").unwrap();
        assert!(local.validate(false).is_ok());
        assert_eq!(local.destination(), Some(Destination::RestServer { url: "http://127.0.0.1:8000/wardbox/".into(), ca_file: None, credentials: None }));
        let authed: BackupConfig =
            toml::from_str("rest_url = \"https://10.1.5.30:8443/wardbox/\"\nrest_user = \"wardbox\"\nrest_password_file = \"/etc/wardbox/rest.pw\"").unwrap();
        assert!(authed.validate(true).is_ok());
        let credentials = RestCredentials { user: "wardbox".into(), password_file: "/etc/wardbox/rest.pw".into() };
        assert_eq!(
            authed.destination(),
            Some(Destination::RestServer { url: "https://10.1.5.30:8443/wardbox/".into(), ca_file: None, credentials: Some(credentials) })
        );
        let off: BackupConfig = toml::from_str("usb_path = \"/media/b\"\nschedule = \"off\"").unwrap();
        assert_eq!(off.nightly(0), None, "schedule off");
        assert_eq!(BackupConfig::default().nightly(0), None, "no destination, no schedule");
        let on: BackupConfig = toml::from_str("usb_path = \"/media/b\"").unwrap();
        assert_eq!(on.nightly(60), Some(Nightly::new(150, 60)), "02:30 in the clinic's offset by default");
    }

    /// Through the whole configuration file: a REST destination opens exactly one outbound
    /// rule (its address, TCP, its port), a USB disk none, and a public server is named by its
    /// own key.
    #[test]
    fn the_rest_destination_opens_one_rule_in_the_firewall() {
        let base = "profile = \"dev\"\nstate_dir = \"/tmp/wb/state\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"/tmp/wb/data\"\n[firewall]\nenabled = true\nclinic_lan = [\"10.1.0.0/16\"]\n";
        let text = format!("{base}[backup]\nrest_url = \"http://10.1.5.30:8000/wardbox/\"\n");
        let config = crate::config::Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let rules: Vec<(&str, &str, Protocol, u32)> =
            config.firewall.policy.allow_out.iter().map(|r| (r.name.as_str(), r.dest.as_str(), r.protocol, r.port)).collect();
        assert_eq!(rules, [(REST_RULE, "10.1.5.30", Protocol::Tcp, 8000)]);
        config.firewall.ruleset().expect("the ruleset builds with it");
        let usb = format!("{base}[backup]\nusb_path = \"/media/wardbox-backup\"\n");
        let config = crate::config::Config::parse(&usb, std::path::Path::new("t.toml")).unwrap();
        assert!(config.firewall.policy.allow_out.is_empty(), "a USB disk opens nothing");
        let public = text.replace("10.1.5.30", "52.1.2.3");
        let err = crate::config::Config::parse(&public, std::path::Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("`backup.rest_url`"), "{err}");
        let off = text.replace("enabled = true", "enabled = false");
        let config = crate::config::Config::parse(&off, std::path::Path::new("t.toml")).unwrap();
        assert!(config.firewall.policy.allow_out.is_empty(), "a rule opened while the firewall is off");
    }

    #[test]
    fn an_empty_mount_point_is_not_a_backup_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap(), "a plain directory");
        let err = ensure_mounted(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not available: no disk is mounted there"), "{err}");
        assert!(is_mount_point(std::path::Path::new("/")).unwrap(), "the root");
        assert!(is_mount_point(std::path::Path::new("/proc")).unwrap(), "/proc is a mounted filesystem");
        assert!(ensure_mounted(&dir.path().join("absent")).is_err());
    }
}
