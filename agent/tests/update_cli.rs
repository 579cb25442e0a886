//! `wardbox update …` with the real binary on a dev-profile box (a real store and audit chain,
//! created by booting `wardbox dev` once), and bundles built with the real workstation code
//! (`wardbox_update::build`: tough's editor, real ed25519 keys). Slots and the ESP are files.
//! Every refusal checks that what it protects is byte-for-byte unchanged.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jiff::{Timestamp, ToSpan};
use sha2::{Digest, Sha256};
use wardbox_update::build::{self, BuildSpec, RootSpec};
use wardbox_update::manifest::{BundleKind, BundleManifest, Compatibility, Version};

const SLOT_LEN: usize = 4 * 1024 * 1024;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The running system's version, and versions above it.
fn running() -> Version {
    env!("CARGO_PKG_VERSION").parse().expect("version")
}
fn above(minor: u32) -> String {
    let r = running();
    format!("{}.{}.0", r.major, r.minor + minor)
}

// ---------------------------------------------------------------------------------------------
// A booted dev box, copied per test

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = String::new();
    let _ = s.read_to_string(&mut head);
    head.starts_with("HTTP/1.1 200")
}

/// Boots `wardbox dev` in `dir` once and stops it: its `state/` and `data/` then hold a store
/// and an audit chain, as on a box whose agent has run.
fn boot_dev_box(dir: &Path) {
    boot_dev_box_as(dir, None);
}

/// [`boot_dev_box`], telling the agent which boot this is (as systemd does, `WARDBOX_BOOT_ID`).
fn boot_dev_box_as(dir: &Path, boot_id: Option<&str>) {
    boot_dev_box_until(dir, boot_id, || true);
}

/// [`boot_dev_box_as`], stopping the agent only once `done` holds after it served (work the
/// agent does in the background after its boot).
fn boot_dev_box_until(dir: &Path, boot_id: Option<&str>, done: impl Fn() -> bool) {
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", dir.to_str().expect("utf8"), "--listen", &addr.to_string()])
        // No engine: these tests need the store, not the model.
        .env("WARDBOX_ENGINE_BIN", "/nonexistent/wardbox-engine")
        .envs(boot_id.map(|id| ("WARDBOX_BOOT_ID", id)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wardbox dev");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !healthy(addr) {
        assert!(Instant::now() < deadline, "the dev box did not answer /health within 120 s");
        assert!(agent.try_wait().expect("wait").is_none(), "wardbox dev exited before it was healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    while !done() {
        assert!(Instant::now() < deadline, "the dev box did not finish its work after the boot within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("stop wardbox dev");
    // How it exits does not matter here: the store and the chain are on disk once it served.
    let _ = agent.wait().expect("wait");
}

/// Every regular file under `dir`, with the sha256 of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), hex::encode(Sha256::digest(std::fs::read(&p).expect("read"))));
        }
    }
    out
}

struct TestBox {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl TestBox {

    /// The box's slots and ESP as the install takes them, slot A running.
    fn slots_running_a(&self) -> wardbox::update::SlotsConfig {
        wardbox::update::SlotsConfig {
            a: self.path("root-a"),
            b: self.path("root-b"),
            esp_dir: self.path("esp/EFI/Linux"),
            running: Some(wardbox::update::SlotName::A),
        }
    }
    fn new(roots: &Path) -> TestBox {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        boot_dev_box(base);
        std::fs::write(base.join("root-a"), pattern(SLOT_LEN, 1)).expect("slot a");
        std::fs::write(base.join("root-b"), vec![0u8; SLOT_LEN]).expect("slot b");
        std::fs::create_dir_all(base.join("esp/EFI/Linux")).expect("esp");
        std::fs::write(base.join("esp/EFI/Linux/wardbox-running.efi"), b"MZ the running UKI").expect("running uki");
        std::fs::create_dir_all(base.join("models")).expect("models");
        // The dev box's own configuration, with the update inputs of this test.
        let config = base.join("wardbox.toml");
        let mut table: toml::Table = std::fs::read_to_string(&config).expect("config").parse().expect("toml");
        let p = |rel: &str| toml::Value::String(base.join(rel).display().to_string());
        let mut slots = toml::Table::new();
        slots.insert("a".into(), p("root-a"));
        slots.insert("b".into(), p("root-b"));
        slots.insert("esp_dir".into(), p("esp/EFI/Linux"));
        slots.insert("running".into(), "a".into());
        let mut update = toml::Table::new();
        update.insert("image_root".into(), roots.join("1.root.json").display().to_string().into());
        update.insert("models_store".into(), p("models"));
        update.insert("firmware_policy".into(), p("firmware-policy.toml"));
        update.insert("slots".into(), toml::Value::Table(slots));
        update.insert("usb_dir".into(), p("usb"));
        table.insert("update".into(), toml::Value::Table(update));
        std::fs::write(&config, toml::to_string(&table).expect("toml")).expect("config");
        TestBox { dir, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["update"])
            .args(args)
            .args(["-c", self.config.to_str().expect("utf8")])
            .stdin(Stdio::null())
            .output()
            .expect("run wardbox update")
    }

    fn apply(&self, bundle: &Path) -> Output {
        self.run(&["apply", "--yes", bundle.to_str().expect("utf8")])
    }

    /// The details of every audit record of this month, through `wardbox audit export`.
    fn audit_details(&self) -> Vec<serde_json::Value> {
        let out_dir = self.path("export");
        let month = Timestamp::now().strftime("%Y-%m").to_string();
        let o = Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["audit", "export", "--month", &month, "--out", out_dir.to_str().expect("utf8"), "-c"])
            .arg(&self.config)
            .output()
            .expect("export");
        assert!(o.status.success(), "{}", text(&o));
        let file = out_dir.join(format!("audit-{month}.jsonl.gz"));
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&file).expect("export file")).read_to_string(&mut s).expect("gunzip");
        let _ = std::fs::remove_dir_all(&out_dir);
        s.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("record")).collect()
    }

    /// The update records: (actor, detail).
    fn update_records(&self) -> Vec<(String, serde_json::Value)> {
        self.audit_details()
            .into_iter()
            .map(|r| {
                let detail = serde_json::from_str(r["detail"].as_str().expect("detail")).expect("detail json");
                (r["actor"].as_str().expect("actor").to_owned(), detail)
            })
            .filter(|(_, d): &(String, serde_json::Value)| d["action"].as_str().is_some_and(|a| a.starts_with("update_")))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Bundles

struct Signing {
    dir: tempfile::TempDir,
}

impl Signing {
    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join("keys").join(format!("{name}.pk8"))
    }
    fn roots(&self) -> PathBuf {
        self.dir.path().join("roots")
    }

    /// root-1..3 (threshold 2), targets, snapshot, timestamp; `1.root.json` signed by two.
    async fn new() -> Signing {
        let s = Signing { dir: tempfile::tempdir().expect("tempdir") };
        std::fs::create_dir_all(s.dir.path().join("keys")).expect("keys");
        std::fs::create_dir_all(s.roots()).expect("roots");
        let mut public = BTreeMap::new();
        for k in ["root-1", "root-2", "root-3", "targets", "snapshot", "timestamp"] {
            public.insert(k, build::generate_key(&s.key(k)).expect("key"));
        }
        let spec = RootSpec {
            version: 1,
            expires: Timestamp::now().checked_add(24.hours().checked_mul(365).expect("span")).expect("time"),
            root_keys: vec![public["root-1"].clone(), public["root-2"].clone(), public["root-3"].clone()],
            root_threshold: 2,
            targets_keys: vec![public["targets"].clone()],
            snapshot_keys: vec![public["snapshot"].clone()],
            timestamp_keys: vec![public["timestamp"].clone()],
        };
        let mut root = build::new_root(&spec).expect("root");
        build::sign_root(&mut root, &s.key("root-1")).await.expect("sign");
        build::sign_root(&mut root, &s.key("root-2")).await.expect("sign");
        build::write_root(&root, &s.roots().join("1.root.json")).expect("write root");
        s
    }

    fn spec(&self, name: &str, kind: BundleKind, version: &str) -> BuildSpec {
        let inputs = self.dir.path().join(format!("inputs-{name}"));
        std::fs::create_dir_all(&inputs).expect("inputs");
        let notes = inputs.join("notes.txt");
        std::fs::write(&notes, format!("Wardbox {kind} {version}\n- what changed, in words\n")).expect("notes");
        BuildSpec {
            roots_dir: self.roots(),
            targets_key: self.key("targets"),
            snapshot_key: self.key("snapshot"),
            timestamp_key: self.key("timestamp"),
            manifest: BundleManifest {
                schema: 1,
                product: "wardbox".into(),
                kind,
                version: version.parse().expect("version"),
                min_starting_version: running(),
                compatibility: Compatibility { architecture: std::env::consts::ARCH.into() },
                created: Timestamp::now(),
                contents: vec![],
            },
            expires: Timestamp::now().checked_add(24.hours().checked_mul(90).expect("span")).expect("time"),
            system_image: None,
            uki_a: None,
            uki_b: None,
            models_dir: None,
            firmware_policy: None,
            release_notes: Some(notes),
            out: self.dir.path().join(name),
        }
    }

    async fn build(&self, spec: BuildSpec) -> PathBuf {
        build::build_bundle(&spec).await.expect("build bundle");
        spec.out
    }

    /// A models bundle with one tiny model (`tiny:1b`): a stand-in GGUF, a template and a
    /// config blob, in the layout `ollama pull` leaves. `extra_layer`: a layer type the store
    /// does not know (the model does not resolve once installed).
    async fn models(&self, name: &str, version: &str, weights: &[u8], extra_layer: Option<&str>) -> PathBuf {
        let models = self.dir.path().join(format!("ollama-{name}"));
        std::fs::create_dir_all(models.join("blobs")).expect("blobs");
        let blob = |bytes: &[u8], media: &str| {
            let hex = hex::encode(Sha256::digest(bytes));
            std::fs::write(models.join("blobs").join(format!("sha256-{hex}")), bytes).expect("blob");
            serde_json::json!({ "mediaType": media, "digest": format!("sha256:{hex}"), "size": bytes.len() })
        };
        let config = blob(br#"{"model_format":"gguf","model_family":"llama","model_type":"1B","file_type":"Q8_0"}"#, "application/vnd.docker.container.image.v1+json");
        let mut layers = vec![
            blob(weights, "application/vnd.ollama.image.model"),
            blob(b"{{ .Prompt }}", "application/vnd.ollama.image.template"),
        ];
        if let Some(media) = extra_layer {
            layers.push(blob(b"something else", media));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config,
            "layers": layers,
        });
        let dir = models.join("manifests/registry.ollama.ai/library/tiny");
        std::fs::create_dir_all(&dir).expect("manifest dir");
        std::fs::write(dir.join("1b"), serde_json::to_vec(&manifest).expect("json")).expect("manifest");
        let mut spec = self.spec(name, BundleKind::ModelsOnly, version);
        spec.models_dir = Some(models);
        self.build(spec).await
    }

    async fn policy(&self, name: &str, version: &str, text: &str) -> PathBuf {
        let file = self.dir.path().join(format!("policy-{name}.toml"));
        std::fs::write(&file, text).expect("policy");
        let mut spec = self.spec(name, BundleKind::PolicyOnly, version);
        spec.firmware_policy = Some(file);
        self.build(spec).await
    }

    /// A full bundle; `uki_b` is the UKI for slot B (the one a box running slot A installs),
    /// slot A's UKI has other bytes (each UKI names its own slot's root on its command line).
    async fn full(&self, name: &str, version: &str, image: &[u8], uki_b: &[u8]) -> PathBuf {
        let inputs = self.dir.path().join(format!("system-{name}"));
        std::fs::create_dir_all(&inputs).expect("inputs");
        std::fs::write(inputs.join("root.img"), image).expect("image");
        std::fs::write(inputs.join("wardbox-a.efi"), b"MZ pretend signed UKI booting slot a").expect("uki a");
        std::fs::write(inputs.join("wardbox-b.efi"), uki_b).expect("uki b");
        let mut spec = self.spec(name, BundleKind::Full, version);
        spec.system_image = Some(inputs.join("root.img"));
        spec.uki_a = Some(inputs.join("wardbox-a.efi"));
        spec.uki_b = Some(inputs.join("wardbox-b.efi"));
        self.build(spec).await
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The keys an update audit record may hold: what happened to which bundle, never a file's
/// content, a model's text or anything about a patient.
const AUDIT_KEYS: &[&str] =
    &["action", "phase", "bundle_sha256", "kind", "from", "to", "outcome", "reason", "exit_code", "slot", "boot_entry", "signed"];

fn check_update_audit(records: &[(String, serde_json::Value)], forbidden: &[&str]) {
    assert!(!records.is_empty(), "no update audit records");
    for (actor, detail) in records {
        let object = detail.as_object().unwrap_or_else(|| panic!("detail is not an object: {detail}"));
        for key in object.keys() {
            assert!(AUDIT_KEYS.contains(&key.as_str()), "unexpected key {key:?} in an update audit record: {detail}");
        }
        assert!(actor.starts_with("cli:"), "the actor is not the OS user: {actor}");
        let all = detail.to_string();
        for f in forbidden {
            assert!(!all.contains(f), "an update audit record holds {f:?}: {all}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn inspect_shows_signers_versions_contents_and_notes_and_changes_nothing() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let bundle = rt.block_on(s.models("m1", "1.1.0", &pattern(5000, 3), None));
    let before = snapshot(&b.path("data"));
    let o = b.run(&["inspect", bundle.to_str().expect("utf8")]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "bundle     wardbox models-only 1.1.0",
        "signed     targets",
        "1 of 1 needed",
        "2 of 2 needed",
        "model-blob",
        "5000",
        "-> manifests/registry.ollama.ai/library/tiny/1b",
        "release notes:",
        "  - what changed, in words",
        "this box:  would apply it",
        "versions   bundle models-only 1.1.0; installed on this box: none",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(snapshot(&b.path("data")), before, "inspect changed the data directory");
    assert!(!b.path("data/update/state").exists(), "inspect provisioned the update state");

    // A tampered stick: the inspect fails with the documented code, still changing nothing.
    let blob = std::fs::read_dir(bundle.join("targets"))
        .expect("targets")
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model-blob")))
        .expect("a blob");
    std::fs::write(bundle.join("targets/bundle.json"), b"{}").expect("tamper");
    let o = b.run(&["inspect", bundle.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(13), "{}", text(&o));
    assert!(blob.exists());
}

#[test]
fn models_apply_installs_the_model_and_it_resolves_a_downgrade_is_refused_and_a_reinstall_repairs() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    // As on the appliance: the engine reads the store through the store directory's group.
    let engine_gid = 65534;
    std::os::unix::fs::chown(b.path("models"), None, Some(engine_gid)).expect("the store's group (run as root)");
    let bundle = rt.block_on(s.models("m1", "1.1.0", &pattern(5000, 3), None));
    let o = b.apply(&bundle);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("installed  models tiny:1b"), "{}", text(&o));
    let store = wardbox_models_bundle::Store::new(b.path("models"));
    let model = store.resolve(&"tiny:1b".parse().expect("name")).expect("the installed model resolves");
    assert_eq!(std::fs::read(&model.model_path).expect("weights"), pattern(5000, 3));
    // Everything the install added is readable by that group and writable by nobody else.
    {
        use std::os::unix::fs::MetadataExt;
        let manifest = b.path("models/manifests/registry.ollama.ai/library/tiny/1b");
        let mut checked = vec![(model.model_path.clone(), 0o640), (manifest.clone(), 0o640)];
        let mut dir = manifest.parent().map(Path::to_path_buf);
        while let Some(d) = dir.filter(|d| *d != b.path("models")) {
            checked.push((d.clone(), 0o750));
            dir = d.parent().map(Path::to_path_buf);
        }
        for (path, mode) in checked {
            let meta = std::fs::metadata(&path).expect("installed file");
            assert_eq!((meta.mode() & 0o777, meta.gid()), (mode, engine_gid), "{}", path.display());
        }
    }

    let status = b.run(&["status"]);
    assert!(text(&status).contains("models     1.1.0"), "{}", text(&status));
    assert!(text(&status).contains("last       models-only none -> 1.1.0 installed"), "{}", text(&status));

    // An older version: refused as a downgrade, nothing changes.
    let before = snapshot(&b.path("models"));
    let older = rt.block_on(s.models("m0", "1.0.0", &pattern(4000, 9), None));
    let o = b.apply(&older);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert!(text(&o).contains("downgrade refused"), "{}", text(&o));
    assert_eq!(snapshot(&b.path("models")), before);

    // The installed version again is a reinstall: it repairs a damaged blob in the store (as
    // on a replacement box restored from a backup, whose floors say 1.1.0 but whose store is
    // empty).
    std::fs::write(&model.model_path, b"damaged").expect("damage the weights");
    assert!(store.resolve(&"tiny:1b".parse().expect("name")).is_err(), "a damaged blob still resolves");
    let o = b.apply(&bundle);
    assert!(o.status.success(), "{}", text(&o));
    let model = store.resolve(&"tiny:1b".parse().expect("name")).expect("the reinstalled model resolves");
    assert_eq!(std::fs::read(&model.model_path).expect("weights"), pattern(5000, 3));

    let records = b.update_records();
    check_update_audit(&records, &["what changed, in words", "{{ .Prompt }}"]);
    let installed: Vec<&serde_json::Value> = records.iter().map(|(_, d)| d).filter(|d| d["outcome"] == "installed").collect();
    assert_eq!(installed.len(), 2, "{records:?}");
    assert!(installed.iter().all(|d| d["to"] == "1.1.0" && d["kind"] == "models-only"), "{records:?}");
    assert_eq!(installed[0]["bundle_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(records.iter().filter(|(_, d)| d["action"] == "update_refused" && d["exit_code"] == 11).count(), 1, "{records:?}");
}

#[test]
fn a_models_bundle_with_a_bad_blob_or_a_model_that_does_not_resolve_changes_nothing() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let v1 = rt.block_on(s.models("m1", "1.1.0", &pattern(5000, 3), None));
    assert!(b.apply(&v1).status.success());
    let before = snapshot(&b.path("models"));

    // A bit flipped in a blob on the stick: caught while staging, before the store is touched.
    let v2 = rt.block_on(s.models("m2", "1.2.0", &pattern(6000, 5), None));
    let blob = std::fs::read_dir(v2.join("targets"))
        .expect("targets")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model-blob")))
        .max_by_key(|p| std::fs::metadata(p).expect("meta").len())
        .expect("the weights");
    let mut bytes = std::fs::read(&blob).expect("read");
    bytes[100] ^= 0x04;
    std::fs::write(&blob, bytes).expect("flip");
    let o = b.apply(&v2);
    assert_eq!(o.status.code(), Some(13), "{}", text(&o));
    assert!(text(&o).contains("nothing was changed"), "{}", text(&o));
    assert_eq!(snapshot(&b.path("models")), before, "the store changed after a refused bundle");

    // A signed model with a layer the store does not understand: installed, fails the health
    // check, and the previous model comes back byte for byte.
    let v3 = rt.block_on(s.models("m3", "1.3.0", &pattern(7000, 7), Some("application/vnd.example.unknown")));
    let o = b.apply(&v3);
    assert_eq!(o.status.code(), Some(18), "{}", text(&o));
    assert!(text(&o).contains("does not resolve") && text(&o).contains("previous version is back"), "{}", text(&o));
    assert_eq!(snapshot(&b.path("models")), before, "the rollback did not restore the store");
    let status = text(&b.run(&["status"]));
    assert!(status.contains("models     1.1.0"), "{status}");
    assert!(status.contains("FAILED     models-only 1.1.0 -> 1.3.0"), "{status}");
    check_update_audit(&b.update_records(), &[]);
}

#[test]
fn policy_apply_replaces_the_policy_and_an_invalid_one_is_refused_with_the_old_intact() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let old = wardbox_firmware_policy::DEFAULT_POLICY_TOML;
    std::fs::write(b.path("firmware-policy.toml"), old).expect("old policy");
    let new_text = old.replace("pcrs = [7]", "pcrs = [7, 11]");
    assert_ne!(new_text, old, "the default policy no longer binds pcrs = [7]; update this test");
    wardbox_firmware_policy::FirmwarePolicy::from_toml_str(&new_text, "test").expect("the new policy is valid");
    let p1 = rt.block_on(s.policy("p1", "1.0.0", &new_text));
    let o = b.apply(&p1);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(b.path("firmware-policy.toml")).expect("policy"), new_text);
    assert_eq!(std::fs::read_to_string(b.path("data/update/previous/firmware-policy.toml")).expect("kept"), old);

    let bad = new_text.replace("pcrs = [7, 11]", "pcrs = [7, 99]");
    let p2 = rt.block_on(s.policy("p2", "1.1.0", &bad));
    let o = b.apply(&p2);
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    assert!(text(&o).contains("does not validate") && text(&o).contains("nothing was changed"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(b.path("firmware-policy.toml")).expect("policy"), new_text);
    assert!(text(&b.run(&["status"])).contains("policy     1.0.0"));
    check_update_audit(&b.update_records(), &["secure_boot = "]);
}

/// The install helper the admin page hands a full bundle to on the appliance (whose agent unit
/// cannot write the slots or the ESP): over a real Unix socket, one `wardbox update
/// install-helper` per connection on its standard input and output (as systemd's `Accept=yes`
/// starts it), it finds the bundle on the stick by the page's id, verifies it itself, refuses a
/// digest other than the confirmed one with nothing written, and installs the confirmed one as
/// the admin: slot B, the counted ESP entry, progress events, audit records under the admin.
#[test]
fn the_install_helper_installs_only_the_confirmed_bundle_as_the_admin() {
    use std::os::fd::OwnedFd;
    use wardbox::update::helper::{Event, Request, call};
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let image = pattern(512 * 1024 + 3, 9);
    let uki = b"MZ pretend signed UKI booting slot b, through the helper".to_vec();
    let version = above(1);
    let built = rt.block_on(s.full("h1", &version, &image, &uki));
    std::fs::create_dir_all(b.path("usb/sdb1")).expect("stick");
    std::fs::rename(&built, b.path("usb/sdb1/wardbox-next")).expect("onto the stick");
    let digest = hex::encode(Sha256::digest(std::fs::read(b.path("usb/sdb1/wardbox-next/targets/bundle.json")).expect("manifest")));

    let socket = b.path("update-install.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let config = b.config.clone();
    let server = std::thread::spawn(move || {
        let mut codes = Vec::new();
        for _ in 0..2 {
            let (conn, _) = listener.accept().expect("accept");
            let out = conn.try_clone().expect("clone");
            let status = Command::new(env!("CARGO_BIN_EXE_wardbox"))
                .args(["update", "install-helper", "-c"])
                .arg(&config)
                .stdin(Stdio::from(OwnedFd::from(conn)))
                .stdout(Stdio::from(OwnedFd::from(out)))
                .status()
                .expect("install helper");
            codes.push(status.code());
        }
        codes
    });
    let request = |sha256: String| Request { bundle: "sdb1/wardbox-next".into(), sha256, actor: "it.admin".into() };

    let wrong = call(&socket, &request("00".repeat(32)), &mut |_| {}).expect("an answer");
    assert!(matches!(&wrong, Event::Refused { exit_code: 1, message } if message.contains("not the one confirmed")), "{wrong:?}");
    assert_eq!(std::fs::read(b.path("root-b")).expect("slot b"), vec![0u8; SLOT_LEN], "a refused digest wrote the slot");

    let mut events = Vec::new();
    let done = call(&socket, &request(digest.clone()), &mut |e| events.push(e.clone())).expect("an answer");
    assert!(matches!(&done, Event::Done { outcome, .. } if outcome == "pending-reboot"), "{done:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Verified { version: v, .. } if *v == version)), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Progress { .. })), "{events:?}");
    assert_eq!(server.join().expect("server"), vec![Some(1), Some(0)]);
    let slot_b = std::fs::read(b.path("root-b")).expect("slot b");
    assert_eq!(&slot_b[..image.len()], &image[..], "slot b does not hold the image");
    assert_eq!(std::fs::read(b.path(&format!("esp/EFI/Linux/wardbox-{version}+3.efi"))).expect("the counted ESP entry"), uki);

    let records = b.update_records();
    let by_admin = |action: &str, phase: Option<&str>| {
        records.iter().any(|(actor, d)| actor == "it.admin" && d["action"] == action && phase.is_none_or(|p| d["phase"] == p))
    };
    assert!(by_admin("update_refused", None), "{records:?}");
    assert!(by_admin("update_apply", Some("finished")), "{records:?}");
}

#[test]
fn full_apply_writes_the_inactive_slot_and_a_counted_esp_entry_and_never_the_running_slot() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let image = pattern(1024 * 1024 + 777, 42);
    let uki = b"MZ pretend signed UKI for the next version, booting slot b".to_vec();
    let version = above(1);
    let bundle = rt.block_on(s.full("f1", &version, &image, &uki));
    let running_a = std::fs::read(b.path("root-a")).expect("slot a");

    // Without --yes and without a terminal: refused, nothing written.
    let o = b.run(&["apply", bundle.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("standard input is not a terminal"), "{}", text(&o));
    assert_eq!(std::fs::read(b.path("root-b")).expect("slot b"), vec![0u8; SLOT_LEN]);

    // A dev box's volume is a plain directory: no seal depends on the UKI, and inspect and apply
    // say that the PCR 11 signature check does not apply (the dummy UKI is not checked).
    let not_applicable = "uki        not checked: the data volume is a plain directory (dev profile)";
    let o = b.run(&["inspect", bundle.to_str().expect("utf8")]);
    assert!(o.status.success() && text(&o).contains(not_applicable), "{}", text(&o));
    // A power cut while an earlier install copied its UKI onto the ESP left the copy there.
    let interrupted = b.path(&format!("esp/EFI/Linux/.wardbox-{version}+3.efi.4242.tmp"));
    std::fs::write(&interrupted, &uki[..10]).expect("an interrupted copy");
    let o = b.apply(&bundle);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(not_applicable), "{}", text(&o));
    assert!(!interrupted.exists(), "the copy a power cut left on the ESP is still there");
    let slot_b = std::fs::read(b.path("root-b")).expect("slot b");
    assert_eq!(&slot_b[..image.len()], &image[..], "slot b does not hold the image");
    assert_eq!(std::fs::read(b.path("root-a")).expect("slot a"), running_a, "the running slot changed");
    let entry = b.path(&format!("esp/EFI/Linux/wardbox-{version}+3.efi"));
    // Slot B's UKI (the one whose command line names root-b), not slot A's.
    assert_eq!(std::fs::read(&entry).expect("the counted ESP entry"), uki);
    assert_eq!(std::fs::read(b.path("esp/EFI/Linux/wardbox-running.efi")).expect("running uki"), b"MZ the running UKI");

    let status = text(&b.run(&["status"]));
    assert!(status.contains(&format!("pending    system {version} in slot b (wardbox-{version}+3.efi)")), "{status}");
    // The system floor waits for a healthy boot of the new version.
    assert!(status.contains(&format!("system     {} running from slot a; floor none", running())), "{status}");

    // The running version again: a downgrade.
    let same = rt.block_on(s.full("f0", &running().to_string(), &image, &uki));
    let o = b.apply(&same);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));

    // The receipt of the last install (unsigned in the dev profile, and it says so).
    let receipt_path = b.path("receipt.json");
    let o = b.run(&["receipt", "--out", receipt_path.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("NOT SIGNED"), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt_path).expect("receipt")).expect("json");
    let inner = doc["receipt"].as_str().expect("the receipt's exact bytes");
    assert_eq!(doc["digest"], format!("sha256:{}", hex::encode(Sha256::digest(inner.as_bytes()))));
    let receipt: serde_json::Value = serde_json::from_str(inner).expect("receipt json");
    assert_eq!(receipt["install"]["outcome"], "pending-reboot");
    assert_eq!(receipt["install"]["to"], version);
    assert!(b.run(&["receipt", "--out", receipt_path.to_str().expect("utf8")]).status.code() == Some(1), "a receipt overwrote a file");

    check_update_audit(&b.update_records(), &[]);
}

/// With a TPM (here a software TPM, as the report's tests use), the receipt carries a quote by
/// the attestation key over exactly the receipt's bytes.
#[test]
fn a_receipt_is_quoted_by_the_tpm_when_the_box_has_one() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let tpm_state = b.path("tpm");
    std::fs::create_dir_all(&tpm_state).expect("mkdir");
    let tpm = match wardbox_volume::swtpm::SoftwareTpm::start(&tpm_state) {
        Ok(t) => t,
        Err(e) => panic!("this test needs a software TPM (swtpm): {e}"),
    };
    let o = b.run(&["receipt", "--out", b.path("none.json").to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no update was ever applied"), "{}", text(&o));

    let bundle = rt.block_on(s.models("m1", "1.1.0", &pattern(3000, 1), None));
    assert!(b.apply(&bundle).status.success());
    let path = b.path("receipt.json");
    let o = b.run(&["receipt", "--out", path.to_str().expect("utf8"), "--tcti", &tpm.tcti()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("NOT SIGNED"), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("receipt")).expect("json");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(doc["receipt"].as_str().expect("receipt").as_bytes())));
    assert_eq!(doc["digest"], digest);
    assert_eq!(doc["signed"], true);
    assert_eq!(doc["quote"]["digest"], digest, "the quote is over another digest");
    assert_eq!(doc["quote"]["pcrs"].as_array().map(Vec::len), Some(8), "the quote covers the boot PCRs 0-7");
    assert!(doc["quote"]["signature"].as_str().is_some_and(|s| !s.is_empty()));
    let records = b.update_records();
    assert!(records.iter().any(|(_, d)| d["action"] == "update_receipt" && d["signed"] == true), "{records:?}");
}

/// Every refusal has its documented exit code, says why, and changes neither the store nor the
/// floors: another signer (10), a version not higher (11, above), another product or a starting
/// version the box does not meet (12), a corrupt target (13, above), an unsigned file on the
/// stick (15).
#[test]
fn refusals_carry_their_documented_exit_codes_and_change_nothing() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let models = b.path("models");
    let before = snapshot(&models);
    let check = |bundle: &Path, code: i32, says: &str| {
        let o = b.apply(bundle);
        assert_eq!(o.status.code(), Some(code), "{}", text(&o));
        assert!(text(&o).contains(says), "{says:?} not in: {}", text(&o));
        assert_eq!(snapshot(&models), before, "the store changed after a refusal");
    };

    // Signed under another root: the box does not trust its keys.
    let stranger = rt.block_on(Signing::new());
    check(&rt.block_on(stranger.models("x1", "1.0.0", &pattern(100, 1), None)), 10, "bad signature");

    let mut spec = s.spec("other-product", BundleKind::PolicyOnly, "1.0.0");
    spec.manifest.product = "otherbox".into();
    spec.firmware_policy = Some(b.path("policy-input.toml"));
    std::fs::write(b.path("policy-input.toml"), wardbox_firmware_policy::DEFAULT_POLICY_TOML).expect("policy");
    check(&rt.block_on(s.build(spec)), 12, "this bundle is for product \"otherbox\"");

    let mut spec = s.spec("later-start", BundleKind::PolicyOnly, "1.0.0");
    spec.manifest.min_starting_version = above(5).parse().expect("version");
    spec.firmware_policy = Some(b.path("policy-input.toml"));
    check(&rt.block_on(s.build(spec)), 12, &format!("needs system version {} or later", above(5)));

    let extra = rt.block_on(s.models("m1", "1.0.0", &pattern(100, 2), None));
    std::fs::write(extra.join("targets/payload.sh"), b"#!/bin/sh\n").expect("extra file");
    check(&extra, 15, "the signed metadata does not name it");

    assert!(text(&b.run(&["status"])).contains("models     none"));
    let refused = b.update_records();
    let codes: Vec<i64> = refused.iter().filter_map(|(_, d)| d["exit_code"].as_i64()).collect();
    assert_eq!(codes, vec![10, 12, 12, 15], "{refused:?}");
    check_update_audit(&refused, &[]);
}

/// The daemon settles a pending system update once every boot stage passed: a later boot that
/// still runs the old version means the box fell back (alert, audit, status); a boot that runs
/// the new version raises the system floor.
#[test]
fn the_agent_settles_a_pending_system_update_after_its_boot() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let version = above(1);
    let bundle = rt.block_on(s.full("f1", &version, &pattern(300_000, 9), b"MZ next"));
    let o = b.apply(&bundle);
    assert!(o.status.success(), "{}", text(&o));

    // The next boot (another boot id) still runs this version: the new system did not make it.
    boot_dev_box_as(b.dir.path(), Some("0123456789abcdef0123456789abcdef"));
    let status = text(&b.run(&["status"]));
    assert!(status.contains("pending    none"), "{status}");
    assert!(
        status.contains(&format!("FAILED     full {} -> {version}", running()))
            && status.contains(&format!("the box booted version {}, not {version}", running())),
        "{status}"
    );
    assert!(status.contains(&format!("system     {} running from slot a; floor none", running())), "{status}");
    let health = std::fs::read_to_string(b.path("state/status.json")).expect("status file");
    assert!(health.contains("\"source\": \"update\"") && health.contains("did not reach a healthy boot"), "{health}");
    let alerts: Vec<serde_json::Value> = b
        .audit_details()
        .into_iter()
        .filter(|r| r["kind"] == "security_alert")
        .map(|r| serde_json::from_str(r["detail"].as_str().expect("detail")).expect("json"))
        .filter(|d: &serde_json::Value| d["source"] == "update")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["outcome"], "fell-back");

    // A second install, and a boot that runs what it installed. The agent's version cannot
    // change in a test, so the pending record names the running version, as the new system's
    // own agent would see it after the reboot.
    let bundle = rt.block_on(s.full("f2", &above(2), &pattern(300_000, 8), b"MZ next again"));
    assert!(b.apply(&bundle).status.success());
    let log = b.path("data/update/installs.json");
    let mut installs: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).expect("log")).expect("json");
    let last = installs["installs"].as_array_mut().and_then(|a| a.last_mut()).expect("a record");
    assert_eq!(last["outcome"], "pending-reboot");
    last["to"] = running().to_string().into();
    std::fs::write(&log, serde_json::to_vec(&installs).expect("json")).expect("write log");
    boot_dev_box_as(b.dir.path(), Some("fedcba9876543210fedcba9876543210"));
    let status = text(&b.run(&["status"]));
    assert!(status.contains(&format!("floor {}", running())), "the floor did not rise after the healthy boot: {status}");
    assert!(status.contains("pending    none") && status.contains("installed at"), "{status}");
}

/// The system floor in the TPM's NV counter (a software TPM here): the agent defines the counter
/// and raises it at a healthy boot; a full bundle not above it is refused with 11 even after the
/// state directory was restored from an older copy, and every full bundle is refused (1) when
/// the state directory does not know the counter at all. A box without a TPM says so.
#[test]
fn swtpm_the_tpm_floor_holds_when_an_old_state_directory_is_restored() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let status = text(&b.run(&["status"]));
    assert!(status.contains("tpm floor  none: this box has no TPM for it (dev profile)"), "{status}");

    let tpm_state = b.path("tpm");
    std::fs::create_dir_all(&tpm_state).expect("mkdir");
    let tpm = match wardbox_volume::swtpm::SoftwareTpm::start(&tpm_state) {
        Ok(t) => t,
        Err(e) => panic!("this test needs a software TPM (swtpm): {e}"),
    };
    let mut table: toml::Table = std::fs::read_to_string(&b.config).expect("config").parse().expect("toml");
    table["update"].as_table_mut().expect("update").insert("rollback_tpm".into(), tpm.tcti().into());
    std::fs::write(&b.config, toml::to_string(&table).expect("toml")).expect("config");
    let status = text(&b.run(&["status"]));
    assert!(status.contains("tpm floor  not provisioned yet"), "{status}");

    let state_dir = b.path("data/update/state");
    let tpm_floor = || -> Option<String> {
        let o = b.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v["system"]["tpm_floor"].as_str().map(str::to_owned)
    };
    // The first healthy boot defines the counter and raises it to the running version.
    boot_dev_box_until(b.dir.path(), None, || tpm_floor() == Some(running().to_string()));
    let old_copy = b.path("state-copy");
    std::fs::create_dir_all(&old_copy).expect("mkdir");
    for e in std::fs::read_dir(&state_dir).expect("state dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), old_copy.join(e.file_name())).expect("copy");
    }

    // Version above(2) booted healthy (the state directory's floor says so; the running agent
    // cannot change its version in a test): the next healthy boot raises the TPM to it.
    std::fs::copy(s.roots().join("1.root.json"), state_dir.join("root.json")).expect("trusted root");
    std::fs::write(state_dir.join("floors.json"), format!("{{\"system\": \"{}\"}}\n", above(2))).expect("floors");
    boot_dev_box_until(b.dir.path(), None, || tpm_floor() == Some(above(2)));

    // The old copy of the state directory comes back: it knows no system floor ...
    std::fs::remove_dir_all(&state_dir).expect("rm");
    std::fs::create_dir_all(&state_dir).expect("mkdir");
    for e in std::fs::read_dir(&old_copy).expect("copy") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), state_dir.join(e.file_name())).expect("copy back");
    }
    let status = text(&b.run(&["status"]));
    assert!(status.contains("floor none") && status.contains(&format!("tpm floor  {} (NV counter", above(2))), "{status}");

    // ... but the TPM still refuses what is not above the floor it proves, before the slot is touched.
    let image = pattern(200_000, 5);
    for (name, version) in [("t1", above(1)), ("t2", above(2))] {
        let bundle = rt.block_on(s.full(name, &version, &image, b"MZ older"));
        let inspect = text(&b.run(&["inspect", bundle.to_str().expect("utf8")]));
        assert!(inspect.contains("WOULD BE REFUSED"), "{inspect}");
        let o = b.apply(&bundle);
        assert_eq!(o.status.code(), Some(11), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("proves version {} was installed and booted healthy", above(2))) && text(&o).contains("restored from an older copy"),
            "{}",
            text(&o)
        );
        assert_eq!(std::fs::read(b.path("root-b")).expect("slot b"), vec![0u8; SLOT_LEN], "a refused bundle wrote the slot");
    }
    let bundle = rt.block_on(s.full("t3", &above(3), &image, b"MZ newer"));
    let o = b.apply(&bundle);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("tpm floor  {}", above(2))), "{}", text(&o));

    // A state directory older than the counter itself: the floor is unknown, so no system update.
    std::fs::remove_file(state_dir.join("tpm-counter.json")).expect("rm base");
    let bundle = rt.block_on(s.full("t4", &above(4), &image, b"MZ newest"));
    let o = b.apply(&bundle);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("does not record its base"), "{}", text(&o));
    assert!(text(&b.run(&["status"])).contains("tpm floor  UNKNOWN"));

    // IT adopts the counter again at a floor it states, never below what the box knows.
    let o = b.run(&["tpm-adopt", "--floor", "0.0.1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is below what this box knows is installed"), "{}", text(&o));
    let o = b.run(&["tpm-adopt", "--floor", &above(3)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&b.run(&["status"])).contains(&format!("tpm floor  {} (NV counter", above(3))));
    let o = b.run(&["tpm-adopt", "--floor", &above(3)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing to adopt"), "{}", text(&o));
    let o = b.apply(&bundle);
    assert!(o.status.success(), "{}", text(&o));

    let records = b.update_records();
    let codes: Vec<i64> = records.iter().filter_map(|(_, d)| d["exit_code"].as_i64()).collect();
    assert_eq!(codes, vec![11, 11, 1], "{records:?}");
    assert_eq!(records.iter().filter(|(_, d)| d["action"] == "update_tpm_adopt").count(), 1, "{records:?}");
    check_update_audit(&records, &[]);
}

/// No space (14): a system image larger than the inactive slot is refused before the slot is
/// opened for writing; the slot, the ESP and the install log's pending state are unchanged.
#[test]
fn a_system_image_larger_than_the_slot_is_refused_with_no_space() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let bundle = rt.block_on(s.full("big", &above(1), &pattern(SLOT_LEN + 4096, 3), b"MZ big"));
    let esp = snapshot(&b.path("esp"));
    let o = b.apply(&bundle);
    assert_eq!(o.status.code(), Some(14), "{}", text(&o));
    assert!(text(&o).contains("no space: slot") && text(&o).contains(&format!("needs {} bytes", SLOT_LEN + 4096)), "{}", text(&o));
    assert_eq!(std::fs::read(b.path("root-b")).expect("slot b"), vec![0u8; SLOT_LEN], "the slot was written");
    assert_eq!(snapshot(&b.path("esp")), esp, "the ESP changed");
    assert!(text(&b.run(&["status"])).contains("pending    none"));
    let codes: Vec<i64> = b.update_records().iter().filter_map(|(_, d)| d["exit_code"].as_i64()).collect();
    assert_eq!(codes, vec![14]);
}

/// `wardbox update verify-receipt` on the exported file, with nothing but the box's attestation
/// key (exported by `wardbox report export-ak`): the quoted receipt verifies; one byte changed,
/// another TPM's key, and an unsigned receipt are refused with 3, each saying why.
#[test]
fn swtpm_a_receipt_verifies_with_the_boxs_attestation_key_and_nothing_else() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let start = |name: &str| {
        let state = b.path(name);
        std::fs::create_dir_all(&state).expect("mkdir");
        match wardbox_volume::swtpm::SoftwareTpm::start(&state) {
            Ok(t) => t,
            Err(e) => panic!("this test needs a software TPM (swtpm): {e}"),
        }
    };
    let (tpm, other) = (start("tpm"), start("tpm-other"));
    let export_ak = |tcti: &str, out: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["report", "export-ak", "--out", out.to_str().expect("utf8"), "--tcti", tcti, "-c"])
            .arg(&b.config)
            .output()
            .expect("export-ak");
        assert!(o.status.success(), "{}", text(&o));
    };
    let (ak, other_ak) = (b.path("ak.pem"), b.path("other-ak.pem"));
    export_ak(&tpm.tcti(), &ak);
    export_ak(&other.tcti(), &other_ak);
    assert!(b.apply(&rt.block_on(s.models("m1", "1.1.0", &pattern(3000, 1), None))).status.success());
    let (signed, unsigned) = (b.path("signed.json"), b.path("unsigned.json"));
    assert!(b.run(&["receipt", "--out", signed.to_str().expect("utf8"), "--tcti", &tpm.tcti()]).status.success());
    assert!(b.run(&["receipt", "--out", unsigned.to_str().expect("utf8")]).status.success());

    // Any machine: no configuration, no TPM.
    let verify = |file: &Path, key: &Path| {
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["update", "verify-receipt", file.to_str().expect("utf8"), "--ak", key.to_str().expect("utf8")])
            .output()
            .expect("verify-receipt")
    };
    let o = verify(&signed, &ak);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("VERIFIED") && text(&o).contains("models-only none -> 1.1.0 installed"), "{}", text(&o));

    let o = verify(&signed, &other_ak);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("does not verify with the attestation key"), "{}", text(&o));

    let o = verify(&unsigned, &ak);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("not signed"), "{}", text(&o));

    // The outcome changed by hand, digest left alone: edited.
    let edited = b.path("edited.json");
    let doc = std::fs::read_to_string(&signed).expect("receipt").replacen("installed", "rolled-back", 1);
    std::fs::write(&edited, doc).expect("write");
    let o = verify(&edited, &ak);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("the receipt was edited"), "{}", text(&o));
    // The digest recomputed too: the quote is then over other content.
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&edited).expect("read")).expect("json");
    let inner = doc["receipt"].as_str().expect("receipt").to_owned();
    doc["digest"] = format!("sha256:{}", hex::encode(Sha256::digest(inner.as_bytes()))).into();
    std::fs::write(&edited, serde_json::to_vec(&doc).expect("json")).expect("write");
    let o = verify(&edited, &ak);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("the quote is not over this receipt"), "{}", text(&o));
}

/// USB storage events the image's helpers leave (a stick plugged in while the storage drivers
/// are off, a stick mounted read-only, one the mount helper refused) are each audited by the
/// running agent and removed; a file that is not an event is audited as unreadable, not skipped.
#[test]
fn the_agent_audits_every_usb_storage_event_the_helpers_leave() {
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let events = b.path("usb-events");
    std::fs::create_dir_all(&events).expect("mkdir");
    let mut table: toml::Table = std::fs::read_to_string(&b.config).expect("config").parse().expect("toml");
    table["update"].as_table_mut().expect("update").insert("usb_events_dir".into(), events.display().to_string().into());
    std::fs::write(&b.config, toml::to_string(&table).expect("toml")).expect("config");
    std::fs::write(events.join("1.json"), r#"{"event":"storage-plugged","device":"1-1:1.0","detail":"0781:5583 refused: USB storage is off","time":"t1"}"#).expect("event");
    std::fs::write(events.join("2.json"), r#"{"event":"mounted","device":"sdb1","detail":"vfat","time":"t2"}"#).expect("event");
    std::fs::write(events.join("3.json"), r#"{"event":"mount-refused","device":"sdc1","detail":"ntfs","time":"t3"}"#).expect("event");
    std::fs::write(events.join("4.json"), "{ not an event").expect("event");
    std::fs::write(events.join("5.json"), r#"{"event":"storage-refused","device":"1-2","detail":"0781:5583 USB storage is refused unless an administrator opened a USB window for an update","time":"t5"}"#).expect("event");
    boot_dev_box_until(b.dir.path(), None, || std::fs::read_dir(&events).map(|d| d.count() == 0).unwrap_or(false));
    let usb: Vec<serde_json::Value> = b
        .audit_details()
        .into_iter()
        .filter(|r| r["kind"] == "lifecycle")
        .map(|r| serde_json::from_str(r["detail"].as_str().expect("detail")).expect("json"))
        .filter(|d: &serde_json::Value| d["event"] == "usb_storage")
        .collect();
    let seen: Vec<(&str, &str)> = usb.iter().map(|d| (d["usb_event"].as_str().unwrap_or(""), d["device"].as_str().unwrap_or(""))).collect();
    assert_eq!(seen, [("storage-plugged", "1-1:1.0"), ("mounted", "sdb1"), ("mount-refused", "sdc1"), ("unreadable", ""), ("storage-refused", "1-2")], "{usb:?}");
    assert!(usb[3]["detail"].as_str().is_some_and(|d| d.starts_with("4.json: ")), "{usb:?}");
    // The refused mount and the refused stick are also alerts (source usb); nothing else is.
    let alerts: Vec<serde_json::Value> = b
        .audit_details()
        .into_iter()
        .filter(|r| r["kind"] == "security_alert")
        .map(|r| serde_json::from_str(r["detail"].as_str().expect("detail")).expect("json"))
        .filter(|d: &serde_json::Value| d["source"] == "usb")
        .collect();
    let raised: Vec<(&str, &str)> = alerts.iter().map(|d| (d["event"].as_str().unwrap_or(""), d["device"].as_str().unwrap_or(""))).collect();
    assert_eq!(raised, [("mount_refused", "sdc1"), ("storage_refused", "1-2")], "{alerts:?}");
}

// ---------------------------------------------------------------------------------------------
// The UKI's PCR 11 signature against the data volume's seal

/// Real signed UKIs, made the way `image/uefi.sh` makes them: systemd's stub with the sections
/// added by `objcopy`, PCR 11 predicted and signed by systemd 252's `systemd-measure` (which
/// computes the signed policy digest on a TPM: a throw-away software TPM each time). The kernel
/// and initrd are small stand-ins: the measurement does not look inside them.
struct UkiMaker {
    dir: tempfile::TempDir,
}

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const MEASURE: &str = "/usr/lib/systemd/systemd-measure";
/// The phases `image/uefi.sh` signs (the unlock may run in any of them).
const SIGNED_PHASES: [&str; 3] = [":", "sysinit", "sysinit:ready"];

fn run_tool(cmd: &mut Command) -> Vec<u8> {
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    o.stdout
}

impl UkiMaker {
    /// Fails, naming what is missing, where the tools are not installed (tests/install-deps.sh
    /// installs them).
    fn new() -> UkiMaker {
        let mut missing: Vec<&str> = [STUB, MEASURE].into_iter().filter(|p| !Path::new(p).exists()).collect();
        for tool in ["objcopy", "objdump", "openssl", "swtpm"] {
            if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| !o.status.success()).unwrap_or(true) {
                missing.push(tool);
            }
        }
        assert!(
            missing.is_empty(),
            "cannot make signed UKIs, missing: {missing:?} (apt-get install systemd systemd-boot-efi binutils openssl swtpm; tests/install-deps.sh)"
        );
        let maker = UkiMaker { dir: tempfile::tempdir().expect("tempdir") };
        std::fs::write(maker.path("linux"), pattern(300_000, 7)).expect("kernel stand-in");
        std::fs::write(maker.path("initrd"), pattern(120_000, 9)).expect("initrd stand-in");
        std::fs::write(maker.path("osrel"), "ID=wardbox\nVERSION_ID=test\n").expect("os-release");
        maker
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A PCR-signing key pair (RSA 2048, as uefi.sh makes): the private and the public PEM.
    fn key(&self, name: &str) -> (PathBuf, PathBuf) {
        let (private, public) = (self.path(&format!("{name}.key")), self.path(&format!("{name}.pub.pem")));
        run_tool(Command::new("openssl").args(["genpkey", "-quiet", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"]).arg(&private));
        run_tool(Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public));
        (private, public)
    }

    fn measure_args(&self, name: &str, public: &Path, phases: &[&str]) -> Vec<String> {
        let mut args = vec![
            format!("--linux={}", self.path("linux").display()),
            format!("--osrel={}", self.path("osrel").display()),
            format!("--cmdline={}", self.path(&format!("{name}.cmdline")).display()),
            format!("--initrd={}", self.path("initrd").display()),
            format!("--pcrpkey={}", public.display()),
            "--bank=sha256".into(),
            "--json=short".into(),
        ];
        args.extend(phases.iter().map(|p| format!("--phase={p}")));
        args
    }

    /// `systemd-measure sign` on a throw-away software TPM.
    fn sign(&self, name: &str, private: &Path, public: &Path, phases: &[&str]) -> PathBuf {
        let tpm = self.path(&format!("tpm-{name}"));
        std::fs::create_dir_all(&tpm).expect("tpm dir");
        let sock = tpm.join("sock");
        let mut swtpm = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "startup-clear,not-need-init", "--tpmstate"])
            .arg(format!("dir={}", tpm.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start swtpm");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let signed = Command::new(MEASURE)
            .arg("sign")
            .args(self.measure_args(name, public, phases))
            .arg(format!("--private-key={}", private.display()))
            .arg(format!("--public-key={}", public.display()))
            .arg(format!("--tpm2-device=swtpm:path={}", sock.display()))
            .output();
        let _ = swtpm.kill();
        let _ = swtpm.wait();
        let signed = signed.expect("run systemd-measure sign");
        assert!(signed.status.success(), "systemd-measure sign failed: {}", text(&signed));
        let out = self.path(&format!("{name}.pcrsig.json"));
        std::fs::write(&out, &signed.stdout).expect("pcrsig");
        out
    }

    /// A UKI with `cmdline`, its `.pcrpkey` the public key of `key` and, unless `signed` is
    /// false, its `.pcrsig` from systemd-measure with that key for `phases`.
    fn uki(&self, name: &str, key: &(PathBuf, PathBuf), cmdline: &str, signed: bool, phases: &[&str]) -> PathBuf {
        std::fs::write(self.path(&format!("{name}.cmdline")), cmdline).expect("cmdline");
        let mut sections = vec![
            (".osrel", self.path("osrel")),
            (".cmdline", self.path(&format!("{name}.cmdline"))),
            (".linux", self.path("linux")),
            (".initrd", self.path("initrd")),
        ];
        if signed {
            sections.push((".pcrsig", self.sign(name, &key.0, &key.1, phases)));
        }
        sections.push((".pcrpkey", key.1.clone()));
        // After the stub's last section, each aligned (as uefi.sh places them).
        let table = String::from_utf8(run_tool(Command::new("objdump").args(["-h", "-w", STUB]))).expect("utf8");
        let stub_end = table
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 3 && f[0].parse::<u32>().is_ok())
                    .then(|| u64::from_str_radix(f[2], 16).ok().zip(u64::from_str_radix(f[3], 16).ok()).map(|(size, vma)| vma + size))
                    .flatten()
            })
            .max()
            .expect("the stub's sections");
        let mut next = stub_end;
        let mut objcopy = Command::new("objcopy");
        for (section, file) in &sections {
            let vma = next.div_ceil(0x1000) * 0x1000;
            objcopy.arg("--add-section").arg(format!("{section}={}", file.display()));
            objcopy.arg("--change-section-vma").arg(format!("{section}=0x{vma:x}"));
            next = vma + std::fs::metadata(file).expect("section file").len();
        }
        let out = self.path(&format!("{name}.efi"));
        run_tool(objcopy.arg(STUB).arg(&out));
        out
    }

    /// What `systemd-measure calculate` predicts for this UKI's inputs, per phase.
    fn calculate(&self, name: &str, public: &Path) -> Vec<(String, String)> {
        let out = run_tool(Command::new(MEASURE).arg("calculate").args(self.measure_args(name, public, &SIGNED_PHASES)));
        let json: serde_json::Value = serde_json::from_slice(&out).expect("calculate json");
        json["sha256"]
            .as_array()
            .expect("sha256 bank")
            .iter()
            .map(|e| (e["phase"].as_str().unwrap_or("").to_owned(), e["hash"].as_str().expect("hash").to_owned()))
            .collect()
    }
}

/// A full bundle's UKI must carry a PCR 11 signature by the key the data volume's seal trusts,
/// for the value the UKI will measure, or the update would end at the recovery prompt. Over real
/// systemd-measure output: the box predicts PCR 11 as systemd-measure does; the right key
/// passes; another key, a command line changed after signing, a UKI signed for too few phases
/// and one with no signature are refused (exit 19) before the ESP or the slot changes.
#[test]
fn a_full_bundles_uki_must_be_signed_for_pcr11_by_the_sealed_key_before_the_slot_is_touched() {
    use wardbox::update::apply::{ApplyError, install_full};
    use wardbox::update::uki::{self, PeImage, SealTrust, UkiVerdict};
    use wardbox_volume::pcrsig::PcrSigningKey;

    let maker = UkiMaker::new();
    let fleet = maker.key("fleet");
    let other = maker.key("other");
    let fleet_key = PcrSigningKey::load(&fleet.1).expect("fleet key");
    let trust = SealTrust::Keys(vec![fleet_key.clone()]);
    let cmdline = "root=PARTUUID=bbbbbbbb-0000-4000-8000-000000000002 ro rootfstype=ext4";

    let good = std::fs::read(maker.uki("good", &fleet, cmdline, true, &SIGNED_PHASES)).expect("good uki");
    // The box's prediction is systemd-measure's, for every phase.
    let image = PeImage::parse(&good).expect("the UKI parses");
    for (phase, hash) in maker.calculate("good", &fleet.1) {
        assert_eq!(hex::encode(uki::predict_pcr11(&image, &phase).expect("predict")), hash, "phase {phase:?}");
    }
    assert_eq!(uki::check_uki(&good, "good.efi", &trust), Ok(UkiVerdict::Signed { key: fleet_key.fingerprint_hex() }));

    let by_other = std::fs::read(maker.uki("other", &other, cmdline, true, &SIGNED_PHASES)).expect("uki");
    // The command line changed after signing (same length, so the layout stays).
    let changed_path = maker.path("changed.efi");
    std::fs::write(maker.path("changed.cmdline"), cmdline.replace(" ro ", " rw ")).expect("cmdline");
    run_tool(
        Command::new("objcopy")
            .arg("--update-section")
            .arg(format!(".cmdline={}", maker.path("changed.cmdline").display()))
            .arg(maker.path("good.efi"))
            .arg(&changed_path),
    );
    let changed = std::fs::read(&changed_path).expect("changed uki");
    let unsigned = std::fs::read(maker.uki("unsigned", &fleet, cmdline, false, &[])).expect("uki");
    let too_few = std::fs::read(maker.uki("few", &fleet, cmdline, true, &[":"])).expect("uki");
    let refusals: [(&str, &[u8], &str); 5] = [
        ("another key", &by_other, "signed by another key"),
        ("changed command line", &changed, "not one the key signed"),
        ("no signature", &unsigned, "carries no PCR 11 signature"),
        ("too few phases", &too_few, "phase sysinit:"),
        ("not a UKI", b"MZ pretend signed UKI booting slot b", "cannot be read as a UKI"),
    ];
    for (what, bytes, says) in refusals {
        let why = uki::check_uki(bytes, "wardbox-b.efi", &trust).expect_err(what);
        assert!(why.contains(says) && why.contains("wardbox-b.efi"), "{what}: {why}");
    }
    // The good UKI against a seal that trusts the other key: refused too.
    let other_trust = SealTrust::Keys(vec![PcrSigningKey::load(&other.1).expect("other key")]);
    assert!(uki::check_uki(&good, "good.efi", &other_trust).expect_err("other seal").contains("signed by another key"));

    // Installing: each refused UKI changes neither the ESP nor the slot; the good one installs.
    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let slots = b.slots_running_a();
    let data = b.path("uki-install");
    let paths = wardbox::update::UpdatePaths::new(&data);
    let state = wardbox_update::State::provision(paths.state_dir(), &std::fs::read(s.roots().join("1.root.json")).expect("root"))
        .expect("state");
    let facts = wardbox::update::box_facts().expect("facts");
    let image_bytes = pattern(512 * 1024 + 3, 5);
    let install = |name: &str, uki: &[u8]| {
        let dir = rt.block_on(s.full(name, &above(1), &image_bytes, uki));
        let bundle = rt.block_on(wardbox_update::verify_bundle(&dir, &state, &facts, Some(Timestamp::now()))).expect("verifies");
        rt.block_on(install_full(&bundle, &slots, wardbox::update::SlotName::A, false, &paths, &trust, &mut |_, _, _| {}))
    };
    let esp_before = snapshot(&b.path("esp"));
    let (slot_a, slot_b) = (std::fs::read(b.path("root-a")).expect("a"), std::fs::read(b.path("root-b")).expect("b"));
    for (what, bytes, says) in refusals {
        let err = install(&format!("refused-{}", what.replace(' ', "-")), bytes).expect_err(what);
        assert!(matches!(err, ApplyError::UkiRefused(_)), "{what}: {err}");
        assert_eq!(err.exit_code(), 19, "{what}");
        let message = err.to_string();
        assert!(message.contains(says) && message.contains("recovery prompt") && message.contains("nothing was changed"), "{what}: {message}");
        assert_eq!(snapshot(&b.path("esp")), esp_before, "{what}: the ESP changed");
        assert_eq!(std::fs::read(b.path("root-b")).expect("b"), slot_b, "{what}: the slot was written");
        assert_eq!(std::fs::read(b.path("root-a")).expect("a"), slot_a, "{what}: the running slot changed");
    }
    let installed = install("good", &good).expect("the signed UKI installs");
    assert_eq!(installed.uki, UkiVerdict::Signed { key: fleet_key.fingerprint_hex() });
    assert_eq!(&std::fs::read(b.path("root-b")).expect("b")[..image_bytes.len()], &image_bytes[..]);
    assert_eq!(std::fs::read(b.path(&format!("esp/EFI/Linux/{}", installed.boot_entry))).expect("entry"), good);
}

impl UkiMaker {
    /// One section of a UKI as objcopy takes it out (independently of the box's PE reader);
    /// `None` when the UKI has no such section.
    fn dump_section(&self, uki: &Path, section: &str) -> Option<Vec<u8>> {
        let out = self.path("section.bin");
        let _ = std::fs::remove_file(&out);
        let o = Command::new("objcopy")
            .arg("--dump-section")
            .arg(format!("{section}={}", out.display()))
            .arg(uki)
            .arg(self.path("section-copy.efi"))
            .output()
            .expect("run objcopy");
        // objcopy warns and writes nothing for a section the image does not have.
        assert!(o.status.success(), "objcopy --dump-section {section}: {}", text(&o));
        std::fs::read(&out).ok()
    }
}

/// The update's check agrees with the TPM. A box whose key is sealed (software TPM) to PCR 7
/// and the signed PCR 11 policy of the fleet key is rebooted into each UKI as systemd-stub
/// boots it (each measured section, taken out of the UKI by objcopy, extended into PCR 11,
/// then the phases up to `sysinit:ready`, where the appliance unlocks), with the UKI's own
/// `.pcrsig` where the unlock reads it: the TPM releases the key for exactly the UKIs the
/// update check accepts.
#[test]
fn swtpm_the_tpm_unseals_exactly_the_ukis_the_update_check_accepts() {
    use wardbox::update::uki::{self, MEASURED_SECTIONS, SealTrust};
    use wardbox_volume::pcrsig::PcrSigningKey;
    use wardbox_volume::swtpm::SoftwareTpm;
    use wardbox_volume::{PcrBank, PcrBinding, PcrPolicy, Tpm, TpmSecret};

    let maker = UkiMaker::new();
    let fleet = maker.key("fleet");
    let other = maker.key("other");
    let fleet_key = PcrSigningKey::load(&fleet.1).expect("fleet key");
    let trust = SealTrust::Keys(vec![fleet_key.clone()]);
    let running = maker.uki("running", &fleet, "root=PARTUUID=a ro rootfstype=ext4", true, &SIGNED_PHASES);
    let cmdline = "root=PARTUUID=b ro rootfstype=ext4";
    let good = maker.uki("good", &fleet, cmdline, true, &SIGNED_PHASES);
    let changed = maker.path("changed.efi");
    std::fs::write(maker.path("changed.cmdline"), cmdline.replace(" ro ", " rw ")).expect("cmdline");
    run_tool(
        Command::new("objcopy")
            .arg("--update-section")
            .arg(format!(".cmdline={}", maker.path("changed.cmdline").display()))
            .arg(&good)
            .arg(&changed),
    );
    let candidates = [
        ("signed by the fleet key", good.clone(), true),
        ("signed by another key", maker.uki("other", &other, cmdline, true, &SIGNED_PHASES), false),
        ("command line changed after signing", changed, false),
        ("no signature", maker.uki("unsigned", &fleet, cmdline, false, &[]), false),
        ("signed right after the stub only", maker.uki("few", &fleet, cmdline, true, &[":"]), false),
    ];

    let tpm_state = maker.path("tpm-state");
    std::fs::create_dir_all(&tpm_state).expect("tpm state");
    let signature_file = maker.path("tpm2-pcr-signature.json");
    let boot = |sw: &SoftwareTpm, uki: &Path| -> Tpm {
        let mut tpm = Tpm::connect(&sw.tcti()).expect("connect to the software TPM");
        tpm.set_pcr_signature_paths(vec![signature_file.clone()]);
        tpm.extend_pcr(PcrBank::Sha256, 7, b"secure boot on").expect("PCR 7");
        for name in MEASURED_SECTIONS {
            if let Some(bytes) = maker.dump_section(uki, name).filter(|b| !b.is_empty()) {
                tpm.extend_pcr(PcrBank::Sha256, 11, format!("{name}\0").as_bytes()).expect("extend");
                tpm.extend_pcr(PcrBank::Sha256, 11, &bytes).expect("extend");
            }
        }
        for word in ["sysinit", "ready"] {
            tpm.extend_pcr(PcrBank::Sha256, 11, word.as_bytes()).expect("extend");
        }
        match maker.dump_section(uki, ".pcrsig") {
            Some(signature) => std::fs::write(&signature_file, signature).expect("signature file"),
            None => {
                let _ = std::fs::remove_file(&signature_file);
            }
        }
        tpm
    };
    let start = || SoftwareTpm::start(&tpm_state).unwrap_or_else(|e| panic!("cannot start swtpm (apt-get install swtpm libtss2-tcti-swtpm0): {e}"));

    let mut sw = start();
    let mut tpm = boot(&sw, &running);
    let secret = TpmSecret::generate().expect("secret");
    let policy = PcrPolicy { binding: PcrBinding::new(PcrBank::Sha256, &[7]).expect("binding"), signed_pcr11: Some(fleet_key) };
    let blob = tpm.seal(&secret, policy).expect("seal to the signed PCR 11 policy");
    drop(tpm);
    for (what, path, accepted) in candidates {
        sw.stop();
        sw = start();
        let mut tpm = boot(&sw, &path);
        let unsealed = tpm.unseal(&blob);
        let checked = uki::check_uki(&std::fs::read(&path).expect("uki"), "wardbox-b.efi", &trust);
        assert_eq!(checked.is_ok(), accepted, "{what}: the update check said {checked:?}");
        match unsealed {
            Ok(key) => {
                assert!(accepted, "{what}: the TPM released the key for a UKI the update check refuses");
                assert_eq!(key.expose(), secret.expose());
            }
            Err(e) => assert!(!accepted, "{what}: the update check accepts a UKI the TPM refuses: {e}"),
        }
    }
}

/// A slot image made as the appliance's is (`image/verity.sh`: an ext4 file system, then its
/// dm-verity tree) and the command line arguments that open it.
fn verified_slot_image(dir: &Path) -> (Vec<u8>, String) {
    let fs = dir.join("root.ext4");
    run_tool(Command::new("truncate").args(["-s", "3M"]).arg(&fs));
    run_tool(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&fs));
    let slot = dir.join("root.img");
    let args = run_tool(Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/verity.sh")).arg(&fs).arg(&slot));
    (std::fs::read(&slot).expect("slot image"), String::from_utf8(args).expect("utf-8").trim().to_owned())
}

/// The new slot opens verified or it is not made bootable. The UKI's signed command line names
/// the dm-verity root hash the initrd opens the slot with; the install checks it against the
/// tree in the written slot before the UKI goes onto the ESP. A root hash the image does not
/// have, and (on a box whose own root is verified) a UKI with none, are refused with exit 20
/// and the ESP unchanged; the matching one installs, on both kinds of box.
#[test]
fn a_full_bundles_system_image_must_match_the_verity_root_hash_on_its_uki_before_it_is_made_bootable() {
    use wardbox::update::apply::{ApplyError, install_full};
    use wardbox::update::uki::SealTrust;
    use wardbox_volume::pcrsig::PcrSigningKey;

    let maker = UkiMaker::new();
    let fleet = maker.key("fleet");
    let trust = SealTrust::Keys(vec![PcrSigningKey::load(&fleet.1).expect("fleet key")]);
    let (image_bytes, verity) = verified_slot_image(maker.dir.path());
    let root = "root=PARTUUID=bbbbbbbb-0000-4000-8000-000000000002 ro rootfstype=ext4";
    let matching = std::fs::read(maker.uki("matching", &fleet, &format!("{root} {verity} quiet"), true, &SIGNED_PHASES)).expect("uki");
    let other_hash = {
        // The same arguments with the root hash's last digit changed.
        let (head, offset) = verity.split_once(" wardbox.verity_hash_offset=").expect("both arguments");
        let last = head.chars().last().expect("digit");
        let changed = if last == '0' { '1' } else { '0' };
        format!("{}{changed} wardbox.verity_hash_offset={offset}", &head[..head.len() - 1])
    };
    let mismatched = std::fs::read(maker.uki("mismatched", &fleet, &format!("{root} {other_hash} quiet"), true, &SIGNED_PHASES)).expect("uki");
    let unverified = std::fs::read(maker.uki("unverified", &fleet, &format!("{root} quiet"), true, &SIGNED_PHASES)).expect("uki");

    let rt = rt();
    let s = rt.block_on(Signing::new());
    let b = TestBox::new(&s.roots());
    let slots = b.slots_running_a();
    let paths = wardbox::update::UpdatePaths::new(&b.path("verity-install"));
    let state = wardbox_update::State::provision(paths.state_dir(), &std::fs::read(s.roots().join("1.root.json")).expect("root"))
        .expect("state");
    let facts = wardbox::update::box_facts().expect("facts");
    let install = |name: &str, uki: &[u8], running_verified: bool| {
        let dir = rt.block_on(s.full(name, &above(1), &image_bytes, uki));
        let bundle = rt.block_on(wardbox_update::verify_bundle(&dir, &state, &facts, Some(Timestamp::now()))).expect("verifies");
        rt.block_on(install_full(&bundle, &slots, wardbox::update::SlotName::A, running_verified, &paths, &trust, &mut |_, _, _| {}))
    };
    let esp_before = snapshot(&b.path("esp"));
    let slot_b_before = std::fs::read(b.path("root-b")).expect("b");
    // Refused before the slot is opened, then after it was written (never made bootable).
    for (what, uki, running_verified, says, slot_written) in [
        ("no root hash on a verified box", &unverified, true, "boots its root unverified", false),
        ("another root hash", &mismatched, false, "does not match the root hash", true),
        ("another root hash on a verified box", &mismatched, true, "does not match the root hash", true),
    ] {
        let err = install(&format!("refused-{}", what.replace(' ', "-")), uki, running_verified).expect_err(what);
        assert!(matches!(err, ApplyError::RootUnverified(_)), "{what}: {err}");
        assert_eq!(err.exit_code(), 20, "{what}");
        let message = err.to_string();
        assert!(message.contains(says) && message.contains("not made bootable"), "{what}: {message}");
        assert_eq!(snapshot(&b.path("esp")), esp_before, "{what}: the ESP changed");
        let slot_b = std::fs::read(b.path("root-b")).expect("b");
        assert_eq!(slot_b != slot_b_before, slot_written, "{what}: the slot was (not) written as expected");
    }
    // A UKI with no root hash on a box that does not verify its own root (a dev box): installs.
    install("unverified-dev", &unverified, false).expect("no verity on a box without it");
    for running_verified in [false, true] {
        let installed = install(&format!("matching-{running_verified}"), &matching, running_verified).expect("the matching UKI installs");
        assert_eq!(&std::fs::read(b.path("root-b")).expect("b")[..image_bytes.len()], &image_bytes[..]);
        assert_eq!(std::fs::read(b.path(&format!("esp/EFI/Linux/{}", installed.boot_entry))).expect("entry"), matching);
    }
}
