//! Escrow at provisioning: the backup key printed on the provisioning sheet (made by
//! `backup::escrow::provision_key`, what `wardbox volume provision` calls on the new volume
//! before the store exists) is the key of the backups made later, and it alone restores them
//! onto a replacement box through `wardbox backup restore-box`. The key is in no audit record;
//! its fingerprint is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wardbox::backup::escrow;
use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox::web::accounts::{self, NewUser, Role};

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct DevBox {
    config_path: PathBuf,
    key: StoreKey,
    store_path: PathBuf,
    data_dir: PathBuf,
}

/// A dev box as provisioning and the agent's first start leave it: the data directory (the
/// volume's root), then the configuration, the store key and a migrated store. With
/// `escrow_at_provisioning`, provisioning left the backup key on the volume before the store was
/// made, and the key as the sheet prints it is returned.
fn dev_box(base: &Path, escrow_at_provisioning: bool) -> (DevBox, Option<String>) {
    let config = Config::dev_defaults(base);
    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let sheet = escrow_at_provisioning.then(|| escrow::grouped(&escrow::provision_key(&data_dir).unwrap()).to_string());
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let store_path = data_dir.join(&config.store.file_name);
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    (DevBox { config_path, key, store_path, data_dir }, sheet)
}

impl DevBox {
    fn c(&self) -> &str {
        self.config_path.to_str().unwrap()
    }

    fn store(&self) -> Store {
        Store::open_existing(&self.store_path, &self.key).unwrap()
    }
}

#[test]
fn the_key_on_the_provisioning_sheet_restores_a_backup_made_later() {
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let r = usb.to_str().unwrap();

    // Box A is provisioned: the sheet carries the backup key (groups of eight hex digits).
    let (a, sheet) = dev_box(&dir.path().join("a"), true);
    let sheet = sheet.unwrap();
    assert_eq!(sheet.split(' ').count(), 8, "{}", sheet.len());
    let escrowed = wardbox_backup::RepositoryKey::from_hex(&sheet).unwrap();
    assert!(escrow::escrowed_key_path(&a.data_dir).is_file());
    accounts::add_user(
        a.store().conn(),
        &NewUser { username: "dr.grey", display_name: "Dr Grey", role: Role::Clinician, password: "correct horse battery", break_glass: false },
        "2026-11-29T08:00:00Z",
    )
    .unwrap();

    // Later, the first backup: it adopts the escrowed key (no "new key" notice), and the copy
    // outside the store is gone.
    let out = wardbox(&["backup", "now", "-c", a.c(), "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("a new backup key was made"), "{}", text(&out));
    assert!(!escrow::escrowed_key_path(&a.data_dir).exists(), "the key file left at provisioning is deleted once the store holds it");
    let stored = wardbox::backup::stored_key(&a.store()).unwrap().unwrap();
    assert_eq!(stored.fingerprint(), escrowed.fingerprint());

    // The audit trail names the key by its fingerprint only.
    let details: Vec<String> = {
        let store = a.store();
        let mut stmt = store.conn().prepare("SELECT detail FROM audit").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(|d| d.unwrap()).collect()
    };
    let all = details.join("\n");
    assert!(all.contains(&escrowed.fingerprint()), "the backup's audit record names the key's fingerprint");
    assert!(!all.contains(escrowed.to_hex().as_str()) && !all.contains(&sheet[..17]), "the key itself is in an audit record");

    // A replacement box, provisioned with its own sheet (another key), restores A's backup with
    // only the disk and A's provisioning sheet, typed into a file as printed.
    let (b, b_sheet) = dev_box(&dir.path().join("b"), true);
    let b_sheet = b_sheet.unwrap();
    assert_ne!(b_sheet, sheet);
    let b_unused = wardbox_backup::RepositoryKey::from_hex(&b_sheet).unwrap().fingerprint();
    let key_file = dir.path().join("escrow.key");
    std::fs::write(&key_file, format!("{sheet}\n")).unwrap();
    let out = wardbox(&["backup", "restore-box", "-c", b.c(), "--repo", r, "--key-file", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let users: i64 = b.store().conn().query_row("SELECT count(*) FROM users WHERE username = 'dr.grey'", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 1, "A's account restored onto B");
    // B's own provisioning key, never used, is not left on the volume; the restore names it.
    assert!(!escrow::escrowed_key_path(&b.data_dir).exists(), "B's unused provisioning key left on the volume");
    let restore_detail: String = b
        .store()
        .conn()
        .query_row("SELECT detail FROM audit WHERE detail LIKE '%restored_onto_replacement%'", [], |r| r.get(0))
        .unwrap();
    let restore_detail: serde_json::Value = serde_json::from_str(&restore_detail).unwrap();
    assert_eq!(restore_detail["unused_provisioning_key_removed"].as_str(), Some(b_unused.as_str()));
    // B now backs up with A's key (restored with A's store), to the same repository.
    let out = wardbox(&["backup", "now", "-c", b.c(), "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(wardbox::backup::stored_key(&b.store()).unwrap().unwrap().fingerprint(), escrowed.fingerprint());
}

#[test]
fn a_damaged_escrowed_key_stops_the_backup_instead_of_making_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let (a, _) = dev_box(&dir.path().join("a"), false);
    std::fs::write(escrow::escrowed_key_path(&a.data_dir), "0123 not a key").unwrap();
    let out = wardbox(&["backup", "now", "-c", a.c(), "--repo", usb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(escrow::ESCROWED_KEY_FILE), "{}", text(&out));
    assert!(wardbox::backup::stored_key(&a.store()).unwrap().is_none(), "no key other than the sheet's was made");
    assert_eq!(std::fs::read_dir(&usb).unwrap().count(), 0, "nothing written to the backup disk");
}
