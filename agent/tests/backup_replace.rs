//! Restore onto a replacement box, through the CLI: box A backs up to a disk and its key is
//! escrowed; box B, provisioned separately with another store key, restores with only the
//! disk and the escrowed key. B then holds A's accounts (the password still signs in), its
//! certificates, the audit chain verifies and continues with a record linking A's head, the
//! store opens with B's key and not A's, and B backs up to the same repository and drills.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox::web::accounts::{self, NewUser, Role};

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A dev box as `wardbox dev` leaves it: its configuration file, its own random store key, a
/// migrated store.
struct DevBox {
    config_path: PathBuf,
    config: Config,
    key: StoreKey,
    store_path: PathBuf,
}

fn dev_box(base: &Path) -> DevBox {
    dev_box_with_state(base, None)
}

/// [`dev_box`] whose state directory is `state_dir` (another file system, as the appliance's
/// state partition is not its data volume).
fn dev_box_with_state(base: &Path, state_dir: Option<PathBuf>) -> DevBox {
    let mut config = Config::dev_defaults(base);
    if let Some(state_dir) = state_dir {
        config.state_dir = state_dir;
    }
    std::fs::create_dir_all(&config.state_dir).unwrap();
    std::fs::create_dir_all(base).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let store_path = data_dir.join(&config.store.file_name);
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    DevBox { config_path, config, key, store_path }
}

impl DevBox {
    fn c(&self) -> &str {
        self.config_path.to_str().unwrap()
    }

    fn store(&self) -> Store {
        Store::open_existing(&self.store_path, &self.key).unwrap()
    }
}

const PASSWORD: &str = "correct horse battery";

#[test]
fn a_replacement_box_restores_with_the_escrowed_key_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let r = usb.to_str().unwrap();

    // Box A: an account, its local CA, some audited activity; backed up; the key escrowed.
    let a = dev_box(&dir.path().join("a"));
    accounts::add_user(
        a.store().conn(),
        &NewUser { username: "dr.house", display_name: "Dr House", role: Role::Clinician, password: PASSWORD, break_glass: false },
        "2026-11-29T08:00:00Z",
    )
    .unwrap();
    std::fs::create_dir_all(a.config.state_dir.join("tls")).unwrap();
    std::fs::write(a.config.state_dir.join("tls/ca.pem"), "box A's local CA\n").unwrap();
    let out = wardbox(&["audit", "verify", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    // The key is printed for the escrow sheet at provisioning, before the first backup (that
    // is audited, so A's chain has records in the snapshot).
    let out = wardbox(&["backup", "key", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let escrow = dir.path().join("escrow.key");
    std::fs::write(&escrow, String::from_utf8(out.stdout).unwrap()).unwrap();
    let out = wardbox(&["backup", "now", "-c", a.c(), "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    let snapshot_head: i64 = a
        .store()
        .conn()
        .query_row("SELECT json_extract(detail, '$.audit_head_seq') FROM backup_runs WHERE ok = 1", [], |r| r.get(0))
        .unwrap();
    let snapshot_head = snapshot_head as u64;
    assert!(snapshot_head >= 1, "A's chain has records in the snapshot");
    let snapshot_head_hash: String =
        a.store().conn().query_row("SELECT hash FROM audit WHERE seq = ?1", [snapshot_head as i64], |r| r.get(0)).unwrap();

    // Box B: provisioned on its own (another key), with a short history of its own. Its state
    // directory is on another file system than its data, as on the appliance (a RAM disk here),
    // so the restore cannot simply rename what it restored into place.
    let state_fs = tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm (tmpfs), for a state directory on another file system");
    let b = dev_box_with_state(&dir.path().join("b"), Some(state_fs.path().join("state")));
    {
        use std::os::unix::fs::MetadataExt;
        let device = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(device(&b.config.state_dir), device(b.store_path.parent().unwrap()), "box B's state directory must be on another file system than its data");
    }
    assert_ne!(a.key.expose(), b.key.expose());
    let out = wardbox(&["audit", "verify", "-c", b.c()]);
    assert!(out.status.success(), "{}", text(&out));

    // A wrong key changes nothing.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, wardbox_backup::RepositoryKey::generate().unwrap().to_hex().as_str()).unwrap();
    let out = wardbox(&["backup", "restore-box", "-c", b.c(), "--repo", r, "--key-file", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong key"), "{}", text(&out));
    let users: i64 = b.store().conn().query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 0, "box B untouched");

    let out = wardbox(&["backup", "restore-box", "-c", b.c(), "--repo", r, "--key-file", escrow.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("store re-encrypted under this box's key"), "{}", text(&out));

    // A's account is on B, and its password signs in.
    let store = b.store();
    let hash: String = store.conn().query_row("SELECT password_hash FROM users WHERE username = 'dr.house'", [], |r| r.get(0)).unwrap();
    assert!(accounts::verify_password(&hash, PASSWORD));
    // The store is B's: A's key no longer opens it.
    assert!(Store::open_existing(&b.store_path, &a.key).is_err(), "the restored store opened with the old box's key");
    // A's local CA (what the workstations trust), and A's configuration beside B's own.
    assert_eq!(std::fs::read_to_string(b.config.state_dir.join("tls/ca.pem")).unwrap(), "box A's local CA\n");
    assert!(b.config.state_dir.join("restored-wardbox.toml").is_file());
    // B's own store was moved aside, not deleted.
    let aside = std::fs::read_dir(b.store_path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("wardbox.db.replaced-"));
    assert!(aside, "box B's own store moved aside");

    // The chain continues: the restore record follows A's snapshot head and names it.
    let (seq, prev, detail): (i64, String, String) = store
        .conn()
        .query_row("SELECT seq, prev_hash, detail FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["event"], "restored_onto_replacement");
    assert_eq!(seq as u64, snapshot_head + 1);
    assert_eq!(prev, snapshot_head_hash);
    assert_eq!(detail["restored_head_hash"].as_str(), Some(snapshot_head_hash.as_str()));
    let out = wardbox(&["audit", "verify", "-c", b.c()]);
    assert!(out.status.success(), "the continued chain verifies: {}", text(&out));

    // B carries on: the same repository and key, a drill over B's own backup.
    let out = wardbox(&["backup", "now", "-c", b.c(), "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    let out = wardbox(&["backup", "drill", "-c", b.c(), "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    let out = wardbox(&["backup", "key", "-c", b.c()]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), std::fs::read_to_string(&escrow).unwrap(), "the same escrowed key");
}
