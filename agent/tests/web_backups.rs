//! The Backups page over the real backup service (a SQLCipher store, the audit writer, a
//! restic-format repository in a directory standing for the USB disk): status, "back up now"
//! and "run a drill" (confirmed, audited, refused while another run holds the lock), and the
//! escrow sheet (confirmed, not cached, audited by fingerprint, the key never in the audit
//! trail), and the key's rotation (confirmed, audited, the new sheet shown, the old key no longer
//! opening the repository; over a REST server that refuses deletion, rolled back and said so;
//! on a disk that fails with I/O errors half way, rotated in part with the new sheet shown).
//! Administrators only for the buttons and the key; auditors see the status; clinical
//! roles see nothing.

mod web_support;
#[path = "../backup/tests/failing_disk/mod.rs"]
mod failing_disk;

use std::path::Path;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use wardbox::backup::service::{BoxBackups, BoxPaths};
use wardbox::config::Config;
use wardbox::web::Role;
use web_support::*;

fn harness() -> Harness {
    harness_with(None)
}

/// The destination is `rest_url` when given, else a directory standing for the USB disk.
fn harness_with(rest_url: Option<String>) -> Harness {
    Harness::with_backups(Box::new(move |store_path: &Path, key, audit| {
        let dir = store_path.parent().expect("dir").to_path_buf();
        let usb = dir.join("usb");
        std::fs::create_dir_all(&usb).expect("usb");
        let destination = match &rest_url {
            Some(url) => format!("rest_url = \"{url}\""),
            None => format!("usb_path = \"{}\"", usb.display()),
        };
        let text = format!(
            "profile = \"dev\"\nstate_dir = \"{d}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{d}\"\n[backup]\n{destination}\nutc_offset_minutes = 60\n",
            d = dir.display(),
        );
        let config = Config::parse(&text, Path::new("t.toml")).expect("config");
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).expect("state");
        let paths = BoxPaths { store_path: store_path.to_owned(), data_dir: dir, state_dir, config_file: None };
        Arc::new(BoxBackups::new(&config, paths, key, audit))
    }))
}

fn actions(h: &Harness) -> Vec<serde_json::Value> {
    h.audit_records()
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).expect("json"))
        .filter(|d| d["action"].as_str().is_some_and(|a| a.starts_with("backup_")))
        .collect()
}

#[tokio::test]
async fn an_admin_backs_up_drills_and_sees_the_outcome() {
    let h = harness();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);

    let html = body_text(h.send(get_with("/admin/backups", &token)).await).await;
    assert!(html.contains("nightly at 02:30 local time, UTC+01:00"), "{html}");
    assert!(html.contains("No backup has run yet") && html.contains("not made yet"), "{html}");
    assert!(html.contains(&format!("{}", h.dir.path().join("usb").display())), "{html}");

    // Not without the tick, not without the form's token.
    let unconfirmed = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(unconfirmed).await.contains("Tick the box to confirm the backup"));
    let forged = h.send(post_form("/admin/backups/run", Some(&token), &[("confirm", "yes")])).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(actions(&h).is_empty(), "nothing ran");

    let done = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(done.status(), StatusCode::OK);
    let html = body_text(done).await;
    assert!(html.contains("Backup done: snapshot "), "{html}");
    assert!(html.contains("<td>backup</td>") && html.contains("<td>good</td>") && html.contains(" KiB new)"), "the run with its size: {html}");
    assert!(html.contains("fingerprint "), "{html}");
    assert!(!html.contains("Last good backup</th><td id=\"last-good\">never"), "{html}");

    let drilled = h.send(post_form("/admin/backups/drill", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(drilled.status(), StatusCode::OK);
    let html = body_text(drilled).await;
    assert!(html.contains("Restore drill passed: snapshot "), "{html}");
    assert!(html.contains("id=\"last-drill\">20") && html.contains(": passed</td>"), "{html}");

    // Another run holds the lock: refused, saying so; nothing recorded.
    let running = wardbox::backup::RunLock::acquire(h.dir.path(), "backup").expect("lock");
    let busy = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    assert!(body_text(busy).await.contains("No backup was started: another backup, restore or drill is running on this box"));
    drop(running);

    // Audited with who did it.
    let acts = actions(&h);
    let names: Vec<&str> = acts.iter().filter_map(|d| d["action"].as_str()).collect();
    assert_eq!(names, ["backup_now", "backup_drill"], "{acts:?}");
    let store = wardbox::store::Store::open_existing(&h.store_path, &h.key).expect("store");
    let runs: i64 = store.conn().query_row("SELECT count(*) FROM backup_runs", [], |r| r.get(0)).expect("count");
    assert_eq!(runs, 2);
    let by: Vec<String> = h
        .audit_records()
        .into_iter()
        .filter(|r| r.detail.contains("\"backup_now\"") || r.detail.contains("\"backup_drill\""))
        .map(|r| r.actor)
        .collect();
    assert_eq!(by, ["it.admin", "it.admin"]);
}

#[tokio::test]
async fn the_escrow_sheet_is_shown_after_a_confirmation_and_audited_without_the_key() {
    let h = harness();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);

    let unconfirmed = h.send(post_form("/admin/backups/key", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    assert!(!body_text(unconfirmed).await.contains("repository-key"));

    let sheet = h.send(post_form("/admin/backups/key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(sheet.status(), StatusCode::OK);
    assert_eq!(sheet.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"));
    let html = body_text(sheet).await;
    let store = wardbox::store::Store::open_existing(&h.store_path, &h.key).expect("store");
    let key = wardbox::backup::stored_key(&store).expect("read").expect("made on first use");
    let hex = key.to_hex();
    let grouped: Vec<&str> = hex.as_bytes().chunks(8).map(|c| std::str::from_utf8(c).expect("hex")).collect();
    assert!(html.contains(&format!("<code id=\"repository-key\">{}</code>", grouped.join(" "))), "{html}");
    assert!(html.contains(&key.fingerprint()) && html.contains("restic -r DISK check --read-data"), "{html}");

    // Audited by fingerprint; the key is in no audit record, whole or grouped.
    let acts = actions(&h);
    assert_eq!(acts.len(), 1);
    assert_eq!((acts[0]["action"].as_str(), acts[0]["key_fingerprint"].as_str()), (Some("backup_key_shown"), Some(key.fingerprint().as_str())));
    for r in h.audit_records() {
        assert!(!r.detail.contains(hex.as_str()) && !r.detail.contains(grouped[0]), "the key reached the audit trail: {}", r.detail);
    }
    // The same key opens what a backup writes: the stock restic reads the repository with it.
    let done = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert!(body_text(done).await.contains("Backup done"));
    let restic = std::path::PathBuf::from("/usr/bin/restic");
    assert!(restic.is_file(), "stock restic not found at /usr/bin/restic (Debian package `restic`)");
    let out = std::process::Command::new(restic)
        .args(["-r", h.dir.path().join("usb").to_str().expect("utf-8"), "--no-cache", "snapshots"])
        .env("RESTIC_PASSWORD", grouped.concat())
        .output()
        .expect("restic");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn an_admin_rotates_the_key_and_the_old_one_no_longer_opens_the_backups() {
    let h = harness();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    let usb = wardbox_backup::Destination::LocalDirectory(h.dir.path().join("usb"));
    let stored = || {
        let store = wardbox::store::Store::open_existing(&h.store_path, &h.key).expect("store");
        wardbox::backup::stored_key(&store).expect("read").expect("a key")
    };

    // Nothing to rotate before the disk holds a repository: refused, nothing changed.
    let sheet = h.send(post_form("/admin/backups/key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(sheet.status(), StatusCode::OK);
    let first = stored();
    let early = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    let html = body_text(early).await;
    assert!(html.contains("The key rotation failed: the backup key was not rotated (nothing changed)") && html.contains("no backup repository"), "{html}");
    assert!(!html.contains("repository-key"), "{html}");
    assert_eq!(stored().fingerprint(), first.fingerprint());

    let done = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert!(body_text(done).await.contains("Backup done"));
    let old = stored();
    let page = body_text(h.send(get_with("/admin/backups", &token)).await).await;
    assert!(page.contains("id=\"rotate-key-form\""), "{page}");

    // Not without the tick.
    let unconfirmed = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(unconfirmed).await.contains("Tick the box to confirm the key rotation"));
    assert_eq!(stored().fingerprint(), old.fingerprint());

    // Rotated: the new sheet, not cached; the box holds the new key; the old one opens nothing.
    let rotated = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(rotated.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"));
    let html = body_text(rotated).await;
    let new = stored();
    assert_ne!(new.fingerprint(), old.fingerprint());
    let grouped = wardbox::backup::escrow::grouped(&new);
    assert!(html.contains(&format!("<code id=\"repository-key\">{}</code>", grouped.as_str())), "{html}");
    assert!(html.contains("The key was rotated") && html.contains(&old.fingerprint()), "{html}");
    assert!(matches!(wardbox_backup::BackupRepository::open(&usb, &old), Err(wardbox_backup::BackupError::WrongKey { .. })));
    assert_eq!(wardbox_backup::BackupRepository::open(&usb, &new).expect("the new key opens it").key_ids().expect("keys").len(), 1);

    // Audited by fingerprint with who did it; neither key is in the audit trail.
    let rotations: Vec<_> = actions(&h).into_iter().filter(|d| d["action"] == "backup_key_rotated").collect();
    assert_eq!(rotations.len(), 2, "the refused and the done rotation: {rotations:?}");
    assert_eq!((rotations[1]["ok"].as_bool(), rotations[1]["via"].as_str()), (Some(true), Some("web")));
    assert_eq!(rotations[1]["new_key_fingerprint"].as_str(), Some(new.fingerprint().as_str()));
    for r in h.audit_records() {
        for key in [&old, &new] {
            assert!(!r.detail.contains(key.to_hex().as_str()) && !r.detail.contains(&key.to_hex()[..8]), "a key reached the audit trail: {}", r.detail);
        }
        if r.detail.contains("backup_key_rotated") {
            assert_eq!(r.actor, "it.admin");
        }
    }
    // The box backs up with the new key.
    let done = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert!(body_text(done).await.contains("Backup done"));

    // Another run holds the lock: refused, nothing changed.
    let running = wardbox::backup::RunLock::acquire(h.dir.path(), "backup").expect("lock");
    let busy = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    assert!(body_text(busy).await.contains("No key rotation was started"));
    drop(running);
    assert_eq!(stored().fingerprint(), new.fingerprint());
}

/// A REST server that refuses deletion (`rclone serve restic --append-only`): the page's rotation
/// rolls back (the box keeps its key, no sheet is shown), says so, and is audited as such.
#[tokio::test]
async fn a_rotation_the_server_half_refuses_is_rolled_back_and_says_so() {
    let root = tempfile::tempdir().expect("tempdir");
    let rclone = std::path::PathBuf::from("/usr/bin/rclone");
    assert!(rclone.is_file(), "rclone not found at {} (Debian package `rclone`: its `serve restic` is the REST server of this test)", rclone.display());
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    /// Stops the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Server(std::process::Command::new(rclone)
        .args(["serve", "restic", "--append-only", "--addr", &addr.to_string(), "--config", "/dev/null"])
        .arg(root.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rclone serve restic"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_err() {
        assert!(std::time::Instant::now() < deadline, "rclone serve restic did not listen on {addr}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let url = format!("http://{addr}/wardbox/");
    let h = harness_with(Some(url.clone()));
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    let stored = || {
        let store = wardbox::store::Store::open_existing(&h.store_path, &h.key).expect("store");
        wardbox::backup::stored_key(&store).expect("read").expect("a key")
    };
    // The box's key (made by its escrow sheet) and a repository on the server under it.
    let sheet = h.send(post_form("/admin/backups/key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(sheet.status(), StatusCode::OK);
    let old = stored();
    let server_repo = wardbox_backup::Destination::RestServer { url, ca_file: None, credentials: None };
    // rustic's REST client blocks on a runtime of its own: called off this test's runtime.
    let off_runtime = |f: &(dyn Fn() + Sync)| std::thread::scope(|s| s.spawn(f).join().expect("thread"));
    off_runtime(&|| {
        wardbox_backup::BackupRepository::init(&server_repo, &old).expect("init on the server");
    });

    let rotated = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    let html = body_text(rotated).await;
    assert!(html.contains("The key rotation failed: the backup key was not rotated (nothing changed)") && html.contains("the old escrow sheet stays valid"), "{html}");
    assert!(!html.contains("repository-key"), "a sheet for a rotation that was rolled back: {html}");
    assert_eq!(stored().fingerprint(), old.fingerprint(), "the box keeps its key");
    off_runtime(&|| {
        let repo = wardbox_backup::BackupRepository::open(&server_repo, &old).expect("the old key still opens it");
        assert_eq!(repo.key_ids().expect("keys").len(), 2, "the old key and the leftover file the server would not delete");
    });
    let rotation = actions(&h).into_iter().rfind(|d| d["action"] == "backup_key_rotated").expect("audited");
    assert_eq!((rotation["ok"].as_bool(), rotation["rolled_back"].as_bool(), rotation["via"].as_str()), (Some(false), Some(true), Some("web")));
}

/// The backup disk (a real filesystem that returns I/O errors, `failing_disk`) fails as the old
/// key file is removed, after the new key was added and the store took it: the page shows the
/// new sheet (the box backs up with that key now) with what is left to do, audited as not
/// complete; with the disk working again both keys open the repository, and a second rotation
/// on the page finishes: only its key opens it.
#[tokio::test]
async fn a_rotation_whose_disk_fails_half_way_shows_the_new_sheet_and_a_second_one_finishes() {
    let h = harness();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    let stored = || {
        let store = wardbox::store::Store::open_existing(&h.store_path, &h.key).expect("store");
        wardbox::backup::stored_key(&store).expect("read").expect("a key")
    };
    let usb_path = h.dir.path().join("usb");
    let failing = failing_disk::FailingDisk::mount(&h.dir.path().join("disk"), &usb_path, &h.dir.path().join("disk-control"));
    let usb = wardbox_backup::Destination::LocalDirectory(usb_path);
    let done = h.send(post_form("/admin/backups/run", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert!(body_text(done).await.contains("Backup done"));
    let old = stored();

    failing.fail_at_first_unlink_in("keys");
    let rotated = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(rotated.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"));
    let html = body_text(rotated).await;
    let fired = failing.fired();
    assert!(fired.as_deref().is_some_and(|f| f.starts_with("unlink /keys/")), "the disk's fault did not fire: {fired:?}; {html}");
    let new = stored();
    assert_ne!(new.fingerprint(), old.fingerprint(), "the store holds the new key");
    let grouped = wardbox::backup::escrow::grouped(&new);
    assert!(html.contains(&format!("<code id=\"repository-key\">{}</code>", grouped.as_str())), "the new sheet: {html}");
    assert!(html.contains("rotated only in part") && html.contains("error while trying to remove a key"), "{html}");
    assert!(html.contains("Rotate the key") && html.contains("again does the same"), "what is left to do, on the page: {html}");
    let rotation = actions(&h).into_iter().rfind(|d| d["action"] == "backup_key_rotated").expect("audited");
    assert_eq!((rotation["ok"].as_bool(), rotation["complete"].as_bool(), rotation["via"].as_str()), (Some(false), Some(false), Some("web")), "{rotation}");

    // The disk works again: both keys open the repository; rotating once more finishes.
    failing.heal();
    for key in [&old, &new] {
        assert_eq!(wardbox_backup::BackupRepository::open(&usb, key).expect("opens").key_ids().expect("keys").len(), 2);
    }
    let again = h.send(post_form("/admin/backups/rotate-key", Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
    let html = body_text(again).await;
    assert!(html.contains("The key was rotated"), "{html}");
    let newest = stored();
    for gone in [&old, &new] {
        assert!(matches!(wardbox_backup::BackupRepository::open(&usb, gone), Err(wardbox_backup::BackupError::WrongKey { .. })));
    }
    assert_eq!(wardbox_backup::BackupRepository::open(&usb, &newest).expect("opens").key_ids().expect("keys").len(), 1);
    drop(failing);
}

#[tokio::test]
async fn auditors_see_the_status_only_and_clinical_roles_nothing() {
    let h = harness();
    let auditor = h.add_user("privacy.officer", Role::Auditor, false);
    let (token, csrf) = h.session(&auditor);
    let page = h.send(get_with("/admin/backups", &token)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = body_text(page).await;
    assert!(html.contains("Recent runs") && !html.contains("Back up now") && !html.contains("Show the escrow sheet") && !html.contains("Rotate the key"), "{html}");
    for path in ["/admin/backups/run", "/admin/backups/drill", "/admin/backups/key", "/admin/backups/rotate-key"] {
        let refused = h.send(post_form(path, Some(&token), &[("csrf", &csrf), ("confirm", "yes")])).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let clinician = h.add_user("dr.a", Role::Clinician, false);
    let (token, _) = h.session(&clinician);
    assert_eq!(h.send(get_with("/admin/backups", &token)).await.status(), StatusCode::FORBIDDEN);
    assert!(actions(&h).is_empty());
}
