//! The Updates page over the real update service (`BoxUpdates`: the same verification, install
//! flow, install log and audit as `wardbox update`), a real SQLCipher store and audit writer,
//! and bundles built and signed with the workstation code (`wardbox_update::build`: tough,
//! real ed25519 keys), placed in a directory standing for the mounted USB stick. A policy
//! bundle is applied through the page: listed as inspect shows it, confirmed by an admin,
//! progress polled, outcome shown, receipt downloaded. Refusals: other roles, no CSRF token, no
//! confirmation, a digest that no longer matches, a bundle signed by keys the box does not
//! trust; each changes nothing. The USB window: opened and closed from the page through the
//! window helper's protocol behind a real Unix socket (the helper's rules over a sysfs-shaped
//! directory; loading drivers is recorded, not done), audited as the admin.

mod web_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use jiff::{Timestamp, ToSpan};
use wardbox::config::Config;
use wardbox::update::service::BoxUpdates;
use wardbox::web::Role;
use wardbox_update::build::{self, BuildSpec, RootSpec};
use wardbox_update::manifest::{BundleKind, BundleManifest, Compatibility};
use web_support::*;

/// A signing workstation: root-1..2 (threshold 1 for brevity), targets, snapshot, timestamp.
struct Signing {
    dir: tempfile::TempDir,
}

impl Signing {
    async fn new() -> Signing {
        let s = Signing { dir: tempfile::tempdir().expect("tempdir") };
        std::fs::create_dir_all(s.dir.path().join("roots")).expect("roots");
        let mut public = BTreeMap::new();
        for k in ["root", "targets", "snapshot", "timestamp"] {
            public.insert(k, build::generate_key(&s.key(k)).expect("key"));
        }
        let spec = RootSpec {
            version: 1,
            expires: Timestamp::now().checked_add(24.hours().checked_mul(365).expect("span")).expect("time"),
            root_keys: vec![public["root"].clone()],
            root_threshold: 1,
            targets_keys: vec![public["targets"].clone()],
            snapshot_keys: vec![public["snapshot"].clone()],
            timestamp_keys: vec![public["timestamp"].clone()],
        };
        let mut root = build::new_root(&spec).expect("root");
        build::sign_root(&mut root, &s.key("root")).await.expect("sign");
        build::write_root(&root, &s.roots().join("1.root.json")).expect("write root");
        s
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pk8"))
    }
    fn roots(&self) -> PathBuf {
        self.dir.path().join("roots")
    }

    /// A policy-only bundle holding `policy`, written to `out`.
    async fn policy(&self, version: &str, policy: &str, out: &Path) {
        let inputs = self.dir.path().join(format!("inputs-{version}"));
        std::fs::create_dir_all(&inputs).expect("inputs");
        std::fs::write(inputs.join("policy.toml"), policy).expect("policy");
        std::fs::write(inputs.join("notes.txt"), format!("Wardbox policy {version}\n- pins the clinic's Secure Boot keys\n")).expect("notes");
        let spec = BuildSpec {
            roots_dir: self.roots(),
            targets_key: self.key("targets"),
            snapshot_key: self.key("snapshot"),
            timestamp_key: self.key("timestamp"),
            manifest: BundleManifest {
                schema: 1,
                product: "wardbox".into(),
                kind: BundleKind::PolicyOnly,
                version: version.parse().expect("version"),
                min_starting_version: "0.0.1".parse().expect("version"),
                compatibility: Compatibility { architecture: std::env::consts::ARCH.into() },
                created: Timestamp::now(),
                contents: vec![],
            },
            expires: Timestamp::now().checked_add(24.hours().checked_mul(90).expect("span")).expect("time"),
            system_image: None,
            uki_a: None,
            uki_b: None,
            models_dir: None,
            firmware_policy: Some(inputs.join("policy.toml")),
            release_notes: Some(inputs.join("notes.txt")),
            out: out.to_owned(),
        };
        build::build_bundle(&spec).await.expect("build bundle");
    }
}

fn harness(roots: PathBuf) -> Harness {
    harness_with(roots, "")
}

/// [`harness`] with more `[update]` lines (`{d}` stands for the box's directory).
fn harness_with(roots: PathBuf, update_lines: &'static str) -> Harness {
    Harness::with_updates(Box::new(move |store_path: &Path, _key, audit| {
        let dir = store_path.parent().expect("dir").to_path_buf();
        std::fs::create_dir_all(dir.join("usb")).expect("usb");
        let text = format!(
            "profile = \"dev\"\nstate_dir = \"{d}/state\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{d}\"\n[update]\nimage_root = \"{r}\"\nfirmware_policy = \"{d}/firmware-policy.toml\"\nusb_dir = \"{d}/usb\"\n{extra}",
            d = dir.display(),
            r = roots.join("1.root.json").display(),
            extra = update_lines.replace("{d}", &dir.display().to_string())
        );
        let config = Config::parse(&text, Path::new("t.toml")).expect("config");
        Arc::new(BoxUpdates::new(config, dir, audit))
    }))
}

fn update_actions(h: &Harness) -> Vec<(String, serde_json::Value)> {
    h.audit_records()
        .into_iter()
        .map(|r| (r.actor.clone(), serde_json::from_str::<serde_json::Value>(&r.detail).expect("json")))
        .filter(|(_, d)| d["action"].as_str().is_some_and(|a| a.starts_with("update_")))
        .collect()
}

fn sha_on_page(html: &str, id: &str) -> String {
    let at = html.find(&format!("name=\"bundle\" value=\"{id}\"")).unwrap_or_else(|| panic!("no apply form for {id}: {html}"));
    let rest = &html[at..];
    let v = rest.find("name=\"sha256\" value=\"").expect("sha field") + "name=\"sha256\" value=\"".len();
    rest[v..v + 64].to_owned()
}

#[tokio::test]
async fn an_admin_sees_the_stick_confirms_applies_follows_progress_and_downloads_the_receipt() {
    let s = Signing::new().await;
    let h = harness(s.roots());
    let usb = h.dir.path().join("usb");
    let policy_file = h.dir.path().join("firmware-policy.toml");
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);

    // Nothing inserted yet.
    let html = body_text(h.send(get_with("/admin/updates", &token)).await).await;
    assert!(html.contains("No update bundle found"), "{html}");
    assert!(html.contains("no update was ever applied"), "the status is on the page: {html}");

    // A stick with a policy bundle: shown as inspect shows it, nothing applied by itself.
    let policy = wardbox_firmware_policy::DEFAULT_POLICY_TOML;
    s.policy("1.0.0", policy, &usb.join("sdb1/wardbox-policy-1.0.0")).await;
    let html = body_text(h.send(get_with("/admin/updates", &token)).await).await;
    assert!(html.contains("sdb1/wardbox-policy-1.0.0: policy-only 1.0.0"), "{html}");
    assert!(html.contains("Signed: targets") && html.contains("1 of 1 needed"), "signers: {html}");
    assert!(html.contains("firmware-policy") && html.contains("pins the clinic&#39;s Secure Boot keys"), "contents and notes: {html}");
    assert!(!policy_file.exists(), "inserting a stick installed something");
    let sha = sha_on_page(&html, "sdb1/wardbox-policy-1.0.0");
    let form = |confirm: bool, digest: &str| {
        let mut f = vec![("csrf", csrf.as_str()), ("bundle", "sdb1/wardbox-policy-1.0.0"), ("sha256", digest)];
        if confirm {
            f.push(("confirm", "yes"));
        }
        f.into_iter().map(|(k, v)| (k, v.to_owned())).collect::<Vec<_>>()
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_form("/admin/updates/apply", Some(&token), &refs)
    };

    // Not without the tick; not with a digest other than the one shown.
    let r = h.send(post(form(false, &sha))).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(r).await.contains("Tick the box to confirm this update; nothing was applied"));
    let r = h.send(post(form(true, &"0".repeat(64)))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body_text(r).await.contains("is not the one shown"));
    assert!(!policy_file.exists());

    // Confirmed: verified, then installed in the background; the page follows it.
    let r = h.send(post(form(true, &sha))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", body_text(r).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    let apply = loop {
        let p = h.send(get_with("/admin/updates/progress", &token)).await;
        assert_eq!(p.status(), StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body_text(p).await).expect("json");
        if v["apply"]["running"] == false {
            break v["apply"].clone();
        }
        assert!(Instant::now() < deadline, "the apply did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(apply["outcome"], "installed", "{apply}");
    assert_eq!(apply["by"], "it.admin");
    assert_eq!(apply["percent"], 100);
    assert_eq!(std::fs::read_to_string(&policy_file).expect("installed policy"), policy);
    let html = body_text(h.send(get_with("/admin/updates", &token)).await).await;
    assert!(html.contains("Last apply: policy-only 1.0.0") && html.contains("Outcome: installed"), "{html}");
    assert!(html.contains("policy-only none -&#62; 1.0.0 installed"), "the status shows the install: {html}");
    // The same bundle again is a downgrade now: the page says the box would refuse it.
    assert!(html.contains("This box would refuse it: downgrade refused"), "{html}");

    // The receipt, as a download.
    let r = h.send(post_form("/admin/updates/receipt", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(r.status(), StatusCode::OK);
    let disposition = r.headers().get(header::CONTENT_DISPOSITION).and_then(|v| v.to_str().ok()).expect("attachment").to_owned();
    assert!(disposition.starts_with("attachment; filename=\"wardbox-update-receipt-1.0.0-"), "{disposition}");
    let doc: serde_json::Value = serde_json::from_str(&body_text(r).await).expect("receipt json");
    let inner: serde_json::Value = serde_json::from_str(doc["receipt"].as_str().expect("receipt")).expect("inner");
    assert_eq!((inner["install"]["bundle_sha256"].as_str(), inner["exported_by"].as_str()), (Some(sha.as_str()), Some("it.admin")));
    assert_eq!(doc["signed"], false, "a dev box has no TPM to quote it");

    // Every step audited with who did it: the refused digest, started, finished, the receipt.
    let acts = update_actions(&h);
    let steps: Vec<(String, &str, &str)> = acts
        .iter()
        .map(|(actor, d)| (actor.clone(), d["action"].as_str().unwrap_or(""), d["phase"].as_str().or(d["outcome"].as_str()).unwrap_or("")))
        .collect();
    assert_eq!(
        steps,
        [
            ("it.admin".to_owned(), "update_refused", ""),
            ("it.admin".to_owned(), "update_apply", "started"),
            ("it.admin".to_owned(), "update_apply", "finished"),
            ("it.admin".to_owned(), "update_receipt", ""),
        ],
        "{acts:?}"
    );
    let finished = &acts[2].1;
    assert_eq!((finished["bundle_sha256"].as_str(), finished["to"].as_str(), finished["outcome"].as_str()), (Some(sha.as_str()), Some("1.0.0"), Some("installed")));
    for (_, d) in &acts {
        assert!(!d.to_string().contains("secure_boot"), "policy content reached the audit trail: {d}");
    }
}

#[tokio::test]
async fn other_roles_a_missing_token_and_an_untrusted_bundle_change_nothing() {
    let s = Signing::new().await;
    let h = harness(s.roots());
    let usb = h.dir.path().join("usb");
    let policy_file = h.dir.path().join("firmware-policy.toml");
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    // Signed by a workstation whose keys this box never trusted.
    let stranger = Signing::new().await;
    stranger.policy("2.0.0", wardbox_firmware_policy::DEFAULT_POLICY_TOML, &usb.join("sdc1/wardbox-policy-2.0.0")).await;

    for role in [Role::Clinician, Role::Nurse, Role::Auditor] {
        let user = h.add_user(&format!("u-{}", role.as_str()), role, false);
        let (t, c) = h.session(&user);
        assert_eq!(h.send(get_with("/admin/updates", &t)).await.status(), StatusCode::FORBIDDEN, "{role:?}");
        let r = h
            .send(post_form("/admin/updates/apply", Some(&t), &[("csrf", &c), ("bundle", "sdc1/wardbox-policy-2.0.0"), ("sha256", &"a".repeat(64)), ("confirm", "yes")]))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{role:?}");
        assert_eq!(h.send(post_form("/admin/updates/receipt", Some(&t), &[("csrf", &c)])).await.status(), StatusCode::FORBIDDEN);
    }

    // The page shows why this box would refuse it, and offers no apply button.
    let html = body_text(h.send(get_with("/admin/updates", &token)).await).await;
    assert!(html.contains("sdc1/wardbox-policy-2.0.0") && html.contains("This box would refuse it: bad signature"), "{html}");
    assert!(!html.contains("name=\"bundle\" value=\"sdc1/wardbox-policy-2.0.0\""), "an apply form for an untrusted bundle: {html}");

    // A forged request without the session's token.
    let r = h
        .send(post_form("/admin/updates/apply", Some(&token), &[("bundle", "sdc1/wardbox-policy-2.0.0"), ("sha256", &"a".repeat(64)), ("confirm", "yes")]))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(update_actions(&h).is_empty(), "a refused request reached the update code");

    // Posted anyway by an admin: refused by verification with its exit code, audited, nothing changed.
    let r = h
        .send(post_form("/admin/updates/apply", Some(&token), &[("csrf", &csrf), ("bundle", "sdc1/wardbox-policy-2.0.0"), ("sha256", &"a".repeat(64)), ("confirm", "yes")]))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = body_text(r).await;
    assert!(html.contains("Refused (exit code 10): bad signature") && html.contains("nothing was changed"), "{html}");
    // A name that is not on a stick (and never a path).
    let r = h
        .send(post_form("/admin/updates/apply", Some(&token), &[("csrf", &csrf), ("bundle", "../../etc"), ("sha256", &"a".repeat(64)), ("confirm", "yes")]))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!policy_file.exists(), "a refused bundle changed the policy");
    assert!(!h.dir.path().join("update/installs.json").exists(), "a refused bundle reached the install log");
    let acts = update_actions(&h);
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!((acts[0].0.as_str(), acts[0].1["action"].as_str(), acts[0].1["exit_code"].as_i64()), ("it.admin", Some("update_refused"), Some(10)));

    // No install yet: no receipt.
    let r = h.send(post_form("/admin/updates/receipt", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body_text(r).await.contains("no update was ever applied"));
}

/// The window helper's host side for a test: loading and unloading drivers, mount units and the
/// expiry timer are recorded, not done (the qemu full-update scenario does them for real).
#[derive(Clone, Default)]
struct RecordingHost(Arc<std::sync::Mutex<Vec<String>>>);

impl wardbox::usb::control::Host for RecordingHost {
    fn load_storage_drivers(&mut self) -> Result<(), String> {
        self.0.lock().expect("lock").push("load".into());
        Ok(())
    }
    fn unload_storage_drivers(&mut self) -> Result<(), String> {
        self.0.lock().expect("lock").push("unload".into());
        Ok(())
    }
    fn unmount(&mut self, dir: &Path) -> Result<(), String> {
        self.0.lock().expect("lock").push(format!("unmount {}", dir.display()));
        Ok(())
    }
    fn schedule_close(&mut self, seconds: i64) -> Result<(), String> {
        self.0.lock().expect("lock").push(format!("schedule {seconds}"));
        Ok(())
    }
    fn cancel_scheduled_close(&mut self) {}
}

/// A USB stick's descriptors as the kernel shows them: device, configuration, one mass-storage
/// interface (bulk-only).
fn stick_descriptors() -> Vec<u8> {
    let mut d = vec![18, 1, 0, 2, 0, 0, 0, 64, 0x81, 0x07, 0x83, 0x55, 0, 1, 1, 2, 3, 1];
    d.extend_from_slice(&[9, 2, 18, 0, 1, 1, 0, 0x80, 50]);
    d.extend_from_slice(&[9, 4, 0, 0, 2, 8, 6, 0x50, 0]);
    d
}

#[tokio::test]
async fn the_usb_window_opens_and_closes_through_the_root_helper_and_is_audited() {
    let s = Signing::new().await;
    let h = harness_with(s.roots(), "usb_window_helper = \"{d}/usb-window.sock\"\nusb_window_file = \"{d}/run-usb/window.json\"\n");
    let d = h.dir.path().to_path_buf();
    let paths = wardbox::usb::control::Paths {
        sysfs_devices: d.join("sys"),
        window: d.join("run-usb/window.json"),
        events: d.join("usb-events"),
        mounts: d.join("usb"),
        backup_disk: d.join("backup-disk"),
        mount_table: d.join("proc-mounts"),
    };
    // A stick plugged in, not authorized (the image boots with usbcore.authorized_default=0).
    std::fs::create_dir_all(paths.sysfs_devices.join("1-2")).expect("sysfs");
    std::fs::write(paths.sysfs_devices.join("1-2/descriptors"), stick_descriptors()).expect("descriptors");
    std::fs::write(paths.sysfs_devices.join("1-2/authorized"), "0").expect("authorized");
    let authorized = || std::fs::read_to_string(paths.sysfs_devices.join("1-2/authorized")).expect("read").trim() == "1";
    // The helper behind its socket, one request per connection as systemd's Accept=yes runs it.
    let listener = std::os::unix::net::UnixListener::bind(d.join("usb-window.sock")).expect("bind");
    let host = RecordingHost::default();
    let (served_paths, served_host) = (paths.clone(), host.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.expect("accept");
            let mut host = served_host.clone();
            let input = stream.try_clone().expect("clone");
            let _ = wardbox::usb::helper::serve(input, stream, &served_paths, &mut host, Timestamp::now().as_second());
        }
    });
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    // Sessions are made on the harness's clock: all of them before the first request.
    let nurse = h.add_user("n.nurse", Role::Nurse, false);
    let (t, c) = h.session(&nurse);
    let window_form = |action: &str| post_form("/admin/updates/usb-window", Some(&token), &[("csrf", &csrf), ("action", action)]);

    let html = body_text(h.send(get_with("/admin/updates", &token)).await).await;
    assert!(html.contains("USB window: closed: no USB stick is let in.") && html.contains("id=\"usb-window-open\""), "{html}");
    assert!(!authorized());

    // Other roles, a forged form and a form that says neither change nothing.
    let r = h.send(post_form("/admin/updates/usb-window", Some(&token), &[("action", "open")])).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h.send(post_form("/admin/updates/usb-window", Some(&t), &[("csrf", &c), ("action", "open")])).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = h.send(window_form("format")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!authorized() && !paths.window.exists() && host.0.lock().expect("lock").is_empty());

    // Opened: the stick already plugged in is let in; the page says by whom and until when.
    let r = h.send(window_form("open")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = body_text(r).await;
    assert!(html.contains("The USB window is open for 15 minutes"), "{html}");
    assert!(html.contains("USB window: open for an update by admin:it.admin until") && html.contains("id=\"usb-window-close\""), "{html}");
    assert!(authorized(), "the stick was not let in");
    assert_eq!(host.0.lock().expect("lock").clone(), vec!["schedule 900", "load"]);
    // Opening it twice is refused, with the helper's reason.
    let r = h.send(window_form("open")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(body_text(r).await.contains("The USB window was not opened: a USB window is already open"));

    // Closed: the stick is taken out, the drivers unloaded.
    let r = h.send(window_form("close")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = body_text(r).await;
    assert!(html.contains("The USB window is closed; 1 stick(s) taken out.") && html.contains("USB window: closed"), "{html}");
    assert!(!authorized());
    assert_eq!(host.0.lock().expect("lock").last().map(String::as_str), Some("unload"));

    // Audited: the page's requests as the admin, and the helper's events for the daemon.
    let acts: Vec<(String, String, bool)> = h
        .audit_records()
        .into_iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).map(|d| (r.actor.clone(), d)).expect("json"))
        .filter(|(_, d)| d["action"].as_str().is_some_and(|a| a.starts_with("usb_window")))
        .map(|(actor, d)| (actor, d["action"].as_str().unwrap_or_default().to_owned(), d["ok"].as_bool().unwrap_or_default()))
        .collect();
    let want = |a: &str, ok| ("it.admin".to_owned(), a.to_owned(), ok);
    assert_eq!(acts, vec![want("usb_window_open", true), want("usb_window_open", false), want("usb_window_close", true)]);
    let events: Vec<String> = wardbox::usb::events::drain(&paths.events)
        .expect("events")
        .into_iter()
        .map(|e| e.map(|e| format!("{} {}", e.event, e.detail)).unwrap_or_else(|e| e))
        .collect();
    assert!(events.iter().any(|e| e.starts_with("window-opened for update by admin:it.admin")), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("device-authorized 0781:5583 storage")), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("window-closed closed on the Updates page by admin:it.admin")), "{events:?}");
}

#[tokio::test]
async fn a_box_without_a_window_helper_says_so_and_opens_nothing() {
    let s = Signing::new().await;
    let h = harness(s.roots());
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    let html = body_text(h.send(get_with("/admin/updates", &token)).await).await;
    assert!(html.contains("USB window: none on this box: bundles are read from") && !html.contains("usb-window-open"), "{html}");
    let r = h.send(post_form("/admin/updates/usb-window", Some(&token), &[("csrf", &csrf), ("action", "open")])).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(body_text(r).await.contains("this box has no USB window"));
}
