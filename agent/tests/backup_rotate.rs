//! Rotation of the escrowed repository key, through `wardbox backup rotate-key` on a dev box with
//! a real SQLCipher store and a restic-format repository in a directory standing for the USB
//! disk: the new key printed on the new sheet restores a backup onto a replacement box, the old
//! key no longer opens the repository (for our code and for the stock restic), the box's
//! nightly backup goes on with the new key, the audit trail names both keys by fingerprint only;
//! a rotation whose destination cannot be reached (disk not mounted, LAN server down) changes
//! nothing. Over a real restic REST server (`rclone serve restic`): one that refuses deletion
//! (`--append-only`) makes the rotation roll back (nothing changed, the old sheet valid), and
//! on a server that allows deletion it goes through. A second backup disk, not plugged in at the
//! rotation, is brought onto the new key with the old sheet (`wardbox backup adopt-key`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wardbox::audit::AuditLog;
use wardbox::backup::escrow;
use wardbox::backup::service::{BoxBackups, BoxPaths};
use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox::web::accounts::{self, NewUser, Role};
use wardbox_backup::{BackupError, BackupRepository, Destination, RepositoryKey};

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct DevBox {
    config_path: PathBuf,
    config: Config,
    key: StoreKey,
    store_path: PathBuf,
    data_dir: PathBuf,
}

/// A dev box as provisioning and the agent's first start leave it, backing up to `destination`
/// (`usb_path`, or `rest_url` when it starts with `http`) nightly at a time that passed five
/// minutes ago. Provisioning left the backup key on the volume; the sheet's key is returned.
fn dev_box(base: &Path, destination: &str) -> (DevBox, String) {
    let mut config = Config::dev_defaults(base);
    if destination.starts_with("http") {
        config.backup.rest_url = Some(destination.to_owned());
    } else {
        config.backup.usb_path = Some(PathBuf::from(destination));
    }
    let due = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(5)).unwrap();
    config.backup.nightly_at = due.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string();
    config.backup.utc_offset_minutes = Some(0);
    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let sheet = escrow::grouped(&escrow::provision_key(&data_dir).unwrap()).to_string();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let store_path = data_dir.join(&config.store.file_name);
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    (DevBox { config_path, config, key, store_path, data_dir }, sheet)
}

impl DevBox {
    fn c(&self) -> &str {
        self.config_path.to_str().unwrap()
    }

    fn store(&self) -> Store {
        Store::open_existing(&self.store_path, &self.key).unwrap()
    }

    fn repository_key(&self) -> RepositoryKey {
        wardbox::backup::stored_key(&self.store()).unwrap().expect("the box has a backup key")
    }

    fn audit_details(&self) -> Vec<serde_json::Value> {
        let store = self.store();
        let mut stmt = store.conn().prepare("SELECT detail FROM audit ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|d| serde_json::from_str(&d.unwrap()).unwrap()).collect()
    }

    fn rotations(&self) -> Vec<serde_json::Value> {
        self.audit_details().into_iter().filter(|d| d["action"] == "backup_key_rotated").collect()
    }

    /// The nightly backup as the daemon runs it (`BoxBackups::nightly_step`), a day from now.
    fn nightly_backup(&self) -> Result<wardbox::backup::BackupDone, wardbox::backup::RunError> {
        let (audit, writer) = AuditLog::start(&self.store_path, &self.key).unwrap();
        let paths = BoxPaths {
            store_path: self.store_path.clone(),
            data_dir: self.data_dir.clone(),
            state_dir: self.config.state_dir.clone(),
            config_file: Some(self.config_path.clone()),
        };
        let backups = BoxBackups::new(&self.config, paths, &self.key, audit);
        let tomorrow = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24)).unwrap();
        let outcome = backups.nightly_step(tomorrow).unwrap().expect("a nightly backup is due");
        drop(backups);
        writer.join_within(Duration::from_secs(5));
        outcome
    }
}

/// A running `rclone serve restic` over `root`; stopped when dropped.
struct RestServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RestServer {
    fn start(root: &Path, extra: &[&str]) -> RestServer {
        let rclone = PathBuf::from("/usr/bin/rclone");
        assert!(rclone.is_file(), "rclone not found at {} (Debian package `rclone`: its `serve restic` is the REST server of this test)", rclone.display());
        std::fs::create_dir_all(root).unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new(rclone)
            .args(["serve", "restic", "--addr", &addr.to_string(), "--config", "/dev/null"])
            .args(extra)
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rclone serve restic");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "rclone serve restic did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        RestServer { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/wardbox/", self.addr)
    }
}

impl DevBox {
    /// Point the box at another REST server address (a restarted server listens elsewhere).
    fn set_rest_url(&mut self, url: &str) {
        self.config.backup.rest_url = Some(url.to_owned());
        std::fs::write(&self.config_path, toml::to_string_pretty(&self.config).unwrap()).unwrap();
    }
}

/// The key as the rotation's sheet prints it: the indented line of eight groups of eight hex
/// digits after "NEW BACKUP KEY".
fn printed_key(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let after = stdout.split("NEW BACKUP KEY").nth(1).unwrap_or_else(|| panic!("no new sheet printed: {}", text(out)));
    let line = after.lines().find(|l| l.starts_with("    ")).unwrap_or_else(|| panic!("no key line: {}", text(out)));
    let groups: Vec<&str> = line.split_whitespace().collect();
    assert!(groups.len() == 8 && groups.iter().all(|g| g.len() == 8 && g.chars().all(|c| c.is_ascii_hexdigit())), "{line:?}");
    groups.join(" ")
}

fn restic(repo: &Path, key: &RepositoryKey, args: &[&str]) -> Output {
    let restic = std::env::var_os("RESTIC_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/restic"));
    assert!(restic.is_file(), "stock restic not found at {} (Debian package `restic`, or set RESTIC_BIN)", restic.display());
    Command::new(restic)
        .arg("-r")
        .arg(repo)
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_PASSWORD", key.to_hex().as_str())
        .env_remove("RESTIC_PASSWORD_FILE")
        .env_remove("RESTIC_REPOSITORY")
        .output()
        .unwrap()
}

#[test]
fn after_rotation_the_new_sheet_restores_onto_another_box_and_the_old_key_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let (a, old_sheet) = dev_box(&dir.path().join("a"), usb.to_str().unwrap());
    let old = RepositoryKey::from_hex(&old_sheet).unwrap();
    accounts::add_user(
        a.store().conn(),
        &NewUser { username: "dr.grey", display_name: "Dr Grey", role: Role::Clinician, password: "correct horse battery", break_glass: false },
        "2026-11-29T08:00:00Z",
    )
    .unwrap();
    let out = wardbox(&["backup", "now", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(a.repository_key().fingerprint(), old.fingerprint(), "the box backs up with the key on its provisioning sheet");

    // Rotate: a new sheet is printed; the box holds the new key.
    let out = wardbox(&["backup", "rotate-key", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let new_sheet = printed_key(&out);
    let new = RepositoryKey::from_hex(&new_sheet).unwrap();
    assert_ne!(new.fingerprint(), old.fingerprint());
    assert!(text(&out).contains(&format!("fingerprint {}", new.fingerprint())), "{}", text(&out));
    assert!(text(&out).contains(&old.fingerprint()) && text(&out).contains("no longer opens"), "{}", text(&out));
    assert_eq!(a.repository_key().fingerprint(), new.fingerprint());

    // The old key opens nothing: our restore refuses it by name, so does the stock restic,
    // and the repository holds exactly one key file.
    let old_file = dir.path().join("old.key");
    std::fs::write(&old_file, &old_sheet).unwrap();
    let out = wardbox(&["backup", "restore", "--repo", usb.to_str().unwrap(), "--target", dir.path().join("t1").to_str().unwrap(), "--key-file", old_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong key"), "{}", text(&out));
    assert!(!restic(&usb, &old, &["snapshots"]).status.success(), "the stock restic opens the repository with the old key");
    let keys = restic(&usb, &new, &["key", "list", "--json"]);
    assert!(keys.status.success(), "{}", text(&keys));
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");

    // Audited once, by fingerprint; neither key is in the audit trail, whole or grouped.
    let rotations = a.rotations();
    assert_eq!(rotations.len(), 1);
    let r = &rotations[0];
    assert_eq!((r["ok"].as_bool(), r["via"].as_str()), (Some(true), Some("cli")));
    assert_eq!(r["old_key_fingerprint"].as_str(), Some(old.fingerprint().as_str()));
    assert_eq!(r["new_key_fingerprint"].as_str(), Some(new.fingerprint().as_str()));
    assert_eq!(r["removed_key_ids"].as_array().unwrap().len(), 1);
    let all: String = a.audit_details().iter().map(ToString::to_string).collect();
    for key in [&old_sheet, &new_sheet] {
        assert!(!all.contains(&key.replace(' ', "")) && !all.contains(&key[..17]), "a key reached the audit trail");
    }

    // A replacement box restores with the new sheet. The latest snapshot was taken before the
    // rotation (its store carries the old key); the box takes the key that opened the
    // repository, so its own backups to the same repository work.
    let (b, _) = dev_box(&dir.path().join("b"), usb.to_str().unwrap());
    let new_file = dir.path().join("new.key");
    std::fs::write(&new_file, format!("{new_sheet}\n")).unwrap();
    let out = wardbox(&["backup", "restore-box", "-c", b.c(), "--key-file", new_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let users: i64 = b.store().conn().query_row("SELECT count(*) FROM users WHERE username = 'dr.grey'", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 1, "A's account restored onto B");
    assert_eq!(b.repository_key().fingerprint(), new.fingerprint());
    let restored = b.audit_details().into_iter().find(|d| d["event"] == "restored_onto_replacement").unwrap();
    assert_eq!(restored["superseded_repository_key"].as_str(), Some(old.fingerprint().as_str()), "{restored}");
    let out = wardbox(&["backup", "now", "-c", b.c()]);
    assert!(out.status.success(), "{}", text(&out));

    // A's nightly backup goes on, with the new key.
    let done = a.nightly_backup().expect("the nightly backup after the rotation");
    let nightly = a.audit_details().into_iter().rfind(|d| d["action"] == "backup_nightly").unwrap();
    assert_eq!((nightly["snapshot"].as_str(), nightly["key_fingerprint"].as_str()), (Some(done.snapshot.id.as_str()), Some(new.fingerprint().as_str())));
    let check = restic(&usb, &new, &["check", "--read-data"]);
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn a_rotation_that_cannot_reach_the_destination_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let (a, sheet) = dev_box(&dir.path().join("a"), usb.to_str().unwrap());
    let out = wardbox(&["backup", "now", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let destination = Destination::LocalDirectory(usb.clone());
    let keys_before = BackupRepository::open(&destination, &a.repository_key()).unwrap().key_ids().unwrap();

    // The disk is not mounted.
    let away = dir.path().join("usb-away");
    std::fs::rename(&usb, &away).unwrap();
    let out = wardbox(&["backup", "rotate-key", "-c", a.c()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not rotated (nothing changed)") && text(&out).contains("is not available"), "{}", text(&out));
    assert!(!text(&out).contains("NEW BACKUP KEY"), "a sheet was printed for a rotation that did not happen: {}", text(&out));
    assert!(!usb.exists(), "the refused rotation wrote where the disk should be");
    std::fs::rename(&away, &usb).unwrap();
    assert_eq!(a.repository_key().fingerprint(), RepositoryKey::from_hex(&sheet).unwrap().fingerprint(), "the store's key changed");
    assert_eq!(BackupRepository::open(&destination, &a.repository_key()).unwrap().key_ids().unwrap(), keys_before);
    let rotations = a.rotations();
    assert_eq!(rotations.len(), 1, "the refused rotation is audited");
    assert_eq!((rotations[0]["ok"].as_bool(), rotations[0]["changed"].as_bool()), (Some(false), Some(false)));
    let out = wardbox(&["backup", "now", "-c", a.c()]);
    assert!(out.status.success(), "the backup after the refused rotation: {}", text(&out));

    // A LAN server that is down (nothing listens on the port).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (c, _) = dev_box(&dir.path().join("c"), &format!("http://127.0.0.1:{port}/wardbox/"));
    let out = wardbox(&["backup", "key", "-c", c.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let before = c.repository_key().fingerprint();
    let out = wardbox(&["backup", "rotate-key", "-c", c.c()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not rotated (nothing changed)") && text(&out).contains("cannot be reached"), "{}", text(&out));
    assert_eq!(c.repository_key().fingerprint(), before);

    // A repository the box's key does not open (another box's disk): refused by name.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    BackupRepository::init(&Destination::LocalDirectory(other.clone()), &RepositoryKey::generate().unwrap()).unwrap();
    let out = wardbox(&["backup", "rotate-key", "-c", a.c(), "--repo", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nothing changed") && text(&out).contains("wrong key"), "{}", text(&out));
    assert!(matches!(
        BackupRepository::open(&Destination::LocalDirectory(other), &a.repository_key()),
        Err(BackupError::WrongKey { .. })
    ));
    assert_eq!(a.repository_key().fingerprint(), RepositoryKey::from_hex(&sheet).unwrap().fingerprint());
}

#[test]
fn a_server_that_refuses_deletion_rolls_the_rotation_back_and_one_that_allows_it_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let server = RestServer::start(&root, &[]);
    let (mut c, sheet) = dev_box(&dir.path().join("c"), &server.url());
    let old = RepositoryKey::from_hex(&sheet).unwrap();
    let out = wardbox(&["backup", "now", "-c", c.c()]);
    assert!(out.status.success(), "{}", text(&out));
    drop(server);

    // The server now refuses deletion: the new key is added and verified, the old one cannot be
    // removed, so the box goes back to its key: nothing changed, no sheet, the old one is valid.
    let server = RestServer::start(&root, &["--append-only"]);
    c.set_rest_url(&server.url());
    let out = wardbox(&["backup", "rotate-key", "-c", c.c()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not rotated (nothing changed)") && text(&out).contains("the old escrow sheet stays valid"), "{}", text(&out));
    // The server refused to delete the new key file too: said, and harmless.
    assert!(text(&out).contains("could not be removed from the repository again") && text(&out).contains("never shown"), "{}", text(&out));
    assert!(!text(&out).contains("NEW BACKUP KEY"), "a sheet for a rotation that was rolled back: {}", text(&out));
    assert_eq!(c.repository_key().fingerprint(), old.fingerprint(), "the box went back to its key");
    let destination = c.config.backup.destination().unwrap();
    assert_eq!(BackupRepository::open(&destination, &old).unwrap().key_ids().unwrap().len(), 2, "the old key and the leftover file");
    let r = c.rotations().pop().unwrap();
    assert_eq!((r["ok"].as_bool(), r["changed"].as_bool(), r["rolled_back"].as_bool()), (Some(false), Some(false), Some(true)), "{r}");
    drop(server);

    // A server that allows deletion: the rotation goes through and removes the leftover too;
    // only the new key opens the repository, and the box backs up with it.
    let server = RestServer::start(&root, &[]);
    c.set_rest_url(&server.url());
    let out = wardbox(&["backup", "rotate-key", "-c", c.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let new = RepositoryKey::from_hex(&printed_key(&out)).unwrap();
    assert_eq!(c.repository_key().fingerprint(), new.fingerprint());
    let destination = c.config.backup.destination().unwrap();
    assert_eq!(BackupRepository::open(&destination, &new).unwrap().key_ids().unwrap().len(), 1);
    assert!(matches!(BackupRepository::open(&destination, &old), Err(BackupError::WrongKey { .. })));
    assert_eq!(c.rotations().pop().unwrap()["removed_key_ids"].as_array().unwrap().len(), 2);
    let out = wardbox(&["backup", "now", "-c", c.c()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_second_backup_disk_is_brought_onto_the_rotated_key_with_the_old_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let (usb, second) = (dir.path().join("usb"), dir.path().join("second"));
    std::fs::create_dir(&usb).unwrap();
    std::fs::create_dir(&second).unwrap();
    let (a, old_sheet) = dev_box(&dir.path().join("a"), usb.to_str().unwrap());
    let s = second.to_str().unwrap();
    for args in [&["backup", "now", "-c", a.c()][..], &["backup", "now", "-c", a.c(), "--repo", s][..]] {
        let out = wardbox(args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = wardbox(&["backup", "rotate-key", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let new = a.repository_key();
    // The second disk, not plugged in at the rotation, is still on the old key.
    let out = wardbox(&["backup", "now", "-c", a.c(), "--repo", s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong key"), "{}", text(&out));

    // A key that does not open it changes nothing.
    let second_repo = Destination::LocalDirectory(second.clone());
    let old = RepositoryKey::from_hex(&old_sheet).unwrap();
    let before = BackupRepository::open(&second_repo, &old).unwrap().key_ids().unwrap();
    let wrong_file = dir.path().join("wrong.key");
    std::fs::write(&wrong_file, RepositoryKey::generate().unwrap().to_hex().as_str()).unwrap();
    let out = wardbox(&["backup", "adopt-key", "-c", a.c(), "--repo", s, "--old-key-file", wrong_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("was not brought onto this box's key") && text(&out).contains("wrong key"), "{}", text(&out));
    assert_eq!(BackupRepository::open(&second_repo, &old).unwrap().key_ids().unwrap(), before);

    // With the old sheet: the box's key opens it, the old one no longer does, backups go on.
    let old_file = dir.path().join("old.key");
    std::fs::write(&old_file, &old_sheet).unwrap();
    let out = wardbox(&["backup", "adopt-key", "-c", a.c(), "--repo", s, "--old-key-file", old_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&new.fingerprint()), "{}", text(&out));
    assert!(matches!(BackupRepository::open(&second_repo, &old), Err(BackupError::WrongKey { .. })));
    assert_eq!(BackupRepository::open(&second_repo, &new).unwrap().key_ids().unwrap().len(), 1);
    let out = wardbox(&["backup", "now", "-c", a.c(), "--repo", s]);
    assert!(out.status.success(), "{}", text(&out));
    let adopted: Vec<_> = a.audit_details().into_iter().filter(|d| d["action"] == "backup_key_adopted").collect();
    assert_eq!(adopted.iter().map(|d| d["ok"].as_bool()).collect::<Vec<_>>(), [Some(false), Some(true)]);
    assert_eq!(adopted[1]["key_fingerprint"].as_str(), Some(new.fingerprint().as_str()));
    let all: String = a.audit_details().iter().map(ToString::to_string).collect();
    assert!(!all.contains(old.to_hex().as_str()) && !all.contains(new.to_hex().as_str()), "a key reached the audit trail");
}
