//! The nightly schedule as the daemon runs it (`BoxBackups::nightly_step`), over a real store,
//! audit writer and alert detector: a failed night raises a `backup` alert with its outbox row
//! (through the audit chain, as the daemon's feed reads it) and a health alert; the same night
//! is not retried; the next good night clears both; nights the box was down are reported as
//! missed and caught up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wardbox::alerting::{Feed, outbox};
use wardbox::audit::AuditLog;
use wardbox::backup::service::{AlertChange, BACKUP_RULE, BoxBackups, BoxPaths};
use wardbox::config::{Config, Profile};
use wardbox::store::{Store, StoreKey};
use wardbox_alerts::Rule;

/// Fields drop in order: the service (and its audit handle) first, then the writer is joined,
/// then the directory goes.
struct Box_ {
    backups: BoxBackups,
    _writer: WriterGuard,
    usb: PathBuf,
    store_path: PathBuf,
    key: StoreKey,
    changes: Arc<Mutex<Vec<AlertChange>>>,
    config: Config,
    _dir: tempfile::TempDir,
}

struct WriterGuard(Option<wardbox::audit::WriterThread>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.join_within(std::time::Duration::from_secs(5));
        }
    }
}

/// A box whose nightly backup is due five minutes ago (UTC), to a USB path not yet mounted,
/// with syslog delivery configured (so alerts get an outbox row).
fn test_box() -> Box_ {
    test_box_as(Profile::Dev)
}

/// [`test_box`] as if it were the given profile (the rest of the configuration stays a dev
/// box's: these tests are about the schedule, not the boot).
fn test_box_as(profile: Profile) -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (data_dir, state_dir, usb) = (base.join("data"), base.join("state"), base.join("usb"));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    let due = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(5)).unwrap();
    let at = due.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string();
    let text = format!(
        "profile = \"dev\"\nstate_dir = \"{}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{}\"\n\
         [backup]\nusb_path = \"{}\"\nnightly_at = \"{at}\"\nutc_offset_minutes = 0\n\
         [alert_delivery]\nadmin_url = \"https://wardbox.clinic.local:8443\"\n\
         [alert_delivery.syslog]\naddress = \"127.0.0.1:6514\"\nserver_name = \"syslog.clinic.local\"\nca_file = \"/etc/wardbox/clinic-ca.pem\"\n",
        state_dir.display(),
        data_dir.display(),
        usb.display()
    );
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, text).unwrap();
    let mut config = Config::load(&config_path).unwrap();
    config.profile = profile;
    let key = StoreKey::random();
    let store_path = data_dir.join("wardbox.db");
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    let (audit, writer) = AuditLog::start(&store_path, &key).unwrap();
    let paths = BoxPaths { store_path: store_path.clone(), data_dir, state_dir, config_file: Some(config_path) };
    let backups = BoxBackups::new(&config, paths, &key, audit);
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    backups.set_health(Arc::new(move |c: &AlertChange| seen.lock().unwrap().push(c.clone())));
    Box_ { backups, _writer: WriterGuard(Some(writer)), usb, store_path, key, changes, config, _dir: dir }
}

fn later(days: i64, hours: i64) -> jiff::Timestamp {
    jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(days * 24 + hours)).unwrap()
}

fn store(b: &Box_) -> Store {
    Store::open_existing(&b.store_path, &b.key).unwrap()
}

/// The daemon's alert feed, one step: the alerts the new audit records raise.
fn feed_step(b: &Box_, feed: &mut Feed) -> Vec<outbox::StoredAlert> {
    let mut s = store(b);
    let step = feed.step(&mut s).unwrap();
    assert!(step.unreadable.is_empty());
    step.new_alerts.iter().map(|id| outbox::get(s.conn(), *id).unwrap().unwrap()).collect()
}

fn audit_details(b: &Box_) -> Vec<serde_json::Value> {
    let s = store(b);
    let mut stmt = s.conn().prepare("SELECT detail FROM audit ORDER BY seq").unwrap();
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    rows.iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[test]
fn a_failed_night_alerts_through_the_outbox_and_the_next_good_night_clears_it() {
    let b = test_box();
    assert_eq!(BACKUP_RULE, Rule::Backup.as_str());
    let mut feed = Feed::start(&store(&b), &b.config.alerts, &b.config.alert_delivery).unwrap();

    // Tonight: the disk is not mounted. The run fails, is recorded, and raises the alert.
    let tonight = b.backups.nightly_step(jiff::Timestamp::now()).unwrap().expect("due");
    let err = tonight.unwrap_err().to_string();
    assert!(err.contains("is not available"), "{err}");
    let raised = feed_step(&b, &mut feed);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let alert = &raised[0];
    assert_eq!((alert.alert.rule, alert.alert.subject.as_str(), alert.alert.observed.as_str()), (Rule::Backup, "box", "backup_failed"));
    assert_eq!(alert.deliveries.iter().map(|d| (d.0.as_str(), d.1.as_str())).collect::<Vec<_>>(), [("syslog", "new")], "queued for the collector");
    assert!(alert.reviewed_by.is_none());
    assert!(matches!(&b.changes.lock().unwrap()[..], [AlertChange::Raise { event: "backup_failed", reason }] if reason.contains("is not available")));
    // The alert's record names the destination's problem and nothing of the store.
    let records = audit_details(&b);
    let alert_record = records.iter().find(|d| d["source"] == "backup" && d["event"] == "backup_failed").expect("security_alert record");
    assert!(alert_record["reason"].as_str().unwrap().contains(&b.usb.display().to_string()));

    // Later the same night: not retried by the schedule.
    assert!(b.backups.nightly_step(later(0, 2)).unwrap().is_none(), "a failed night is not retried");

    // The next night the disk is there: the backup succeeds and clears the alert.
    std::fs::create_dir(&b.usb).unwrap();
    let next = b.backups.nightly_step(later(1, 0)).unwrap().expect("due the next night");
    let done = next.unwrap();
    assert!(feed_step(&b, &mut feed).is_empty(), "a recovery raises nothing");
    let cleared = outbox::get(store(&b).conn(), alert.id).unwrap().unwrap();
    assert_eq!(cleared.reviewed_by.as_deref(), Some("system"));
    assert!(cleared.review_note.unwrap().contains(&format!("snapshot {}", done.snapshot.id)));
    assert_eq!(b.changes.lock().unwrap().last(), Some(&AlertChange::Clear));
    let recovered = audit_details(&b).into_iter().find(|d| d["event"] == "backup_recovered").expect("the clearing is audited");
    assert_eq!(recovered["alerts_acknowledged"], 1);
    // Through the alert workflow: the step is recorded, and closing stays a person's.
    let steps = wardbox::alerting::workflow::history(store(&b).conn(), alert.id).unwrap();
    assert_eq!(steps.iter().map(|s| (s.0.as_str(), s.1.as_str())).collect::<Vec<_>>(), [("acknowledge", "system")]);
    let status = wardbox::alerting::workflow::status(store(&b).conn(), alert.id).unwrap().unwrap();
    assert!(status.acknowledged && status.closed_at.is_none());
    // Its run was audited as the schedule's, with the key's fingerprint and never the key.
    let key_hex = wardbox::backup::stored_key(&store(&b)).unwrap().unwrap().to_hex();
    let details = audit_details(&b);
    assert!(details.iter().any(|d| d["action"] == "backup_nightly" && d["ok"] == true));
    assert!(details.iter().all(|d| !d.to_string().contains(key_hex.as_str())));
}

#[test]
fn nights_the_box_was_down_are_caught_up_and_reported_as_missed() {
    let b = test_box();
    std::fs::create_dir(&b.usb).unwrap();
    let mut feed = Feed::start(&store(&b), &b.config.alerts, &b.config.alert_delivery).unwrap();
    b.backups.nightly_step(jiff::Timestamp::now()).unwrap().expect("due").unwrap();
    assert!(feed_step(&b, &mut feed).is_empty(), "a good first night raises nothing");

    // The agent next looks four days and three hours later: four nights passed unattended.
    b.backups.nightly_step(later(4, 3)).unwrap().expect("a catch-up").unwrap();
    let raised = feed_step(&b, &mut feed);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!((raised[0].alert.rule, raised[0].alert.observed.as_str()), (Rule::Backup, "backup_missed"));
    let changes = b.changes.lock().unwrap().clone();
    assert!(
        matches!(&changes[..], [AlertChange::Raise { event: "backup_missed", reason }] if reason.starts_with("4 scheduled nightly backup(s) did not run since")),
        "{changes:?}"
    );
    let runs: i64 = store(&b).conn().query_row("SELECT count(*) FROM backup_runs WHERE ok = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(runs, 2);
}

/// On the appliance, a backup directory with no disk mounted on it (an empty mount point, a
/// directory of the system disk) is refused like a missing disk: recorded, alerted, nothing
/// written there.
#[test]
fn on_the_appliance_an_empty_mount_point_is_not_a_backup_disk() {
    let b = test_box_as(Profile::Appliance);
    std::fs::create_dir(&b.usb).unwrap();
    let mut feed = Feed::start(&store(&b), &b.config.alerts, &b.config.alert_delivery).unwrap();
    let err = b.backups.nightly_step(jiff::Timestamp::now()).unwrap().expect("due").unwrap_err().to_string();
    assert!(err.contains("no disk is mounted there"), "{err}");
    assert_eq!(std::fs::read_dir(&b.usb).unwrap().count(), 0, "nothing written onto the system disk");
    let raised = feed_step(&b, &mut feed);
    assert_eq!(raised.iter().map(|a| (a.alert.rule, a.alert.observed.as_str())).collect::<Vec<_>>(), [(Rule::Backup, "backup_failed")]);
}
