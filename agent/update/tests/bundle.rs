//! Bundles built with the real workstation code (tough's editor, real ed25519 keys) and verified
//! with the real box code, from a directory as the stick would present it. Every refused case
//! also checks that the slot file is byte-for-byte unchanged and that nothing is left staged.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use jiff::{Timestamp, ToSpan};
use sha2::{Digest, Sha256};
use tough::{Transport, TransportError, TransportStream};
use url::Url;
use wardbox_update::build::{self, BuildSpec, RootSpec};
use wardbox_update::error::exit;
use wardbox_update::manifest::{BundleKind, BundleManifest, Compatibility, ContentRole, Version};
use wardbox_update::transport::{CHUNK, StickTransport};
use wardbox_update::{BoxFacts, SlotPlan, State, UpdateError, verify_bundle, verify_bundle_via, write_to_slot};

const IMAGE_LEN: usize = 3 * 1024 * 1024 + 12_345;
const SLOT_LEN: usize = 8 * 1024 * 1024;

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pk8"))
    }
    /// Generates the key on first use.
    fn public(&self, name: &str) -> tough::schema::key::Key {
        let p = self.path(name);
        if p.exists() { build::public_key(&p).expect("public key") } else { build::generate_key(&p).expect("generate key") }
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    keys: Keys,
    roots: PathBuf,
    image: Vec<u8>,
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn in_a_year() -> Timestamp {
    now().checked_add(24.hours().checked_mul(365).expect("span")).expect("time")
}

impl Fixture {
    /// Keys root-1..3 (threshold 2), targets, snapshot, timestamp; `1.root.json` signed by
    /// root-1 and root-2.
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = Keys { dir: tmp.path().join("keys") };
        fs::create_dir_all(&keys.dir).expect("keys dir");
        let roots = tmp.path().join("roots");
        fs::create_dir_all(&roots).expect("roots dir");
        let f = Fixture { image: pattern(IMAGE_LEN, 7), tmp, keys, roots };
        f.write_root(1, &["root-1", "root-2", "root-3"], "targets", &["root-1", "root-2"]).await;
        f
    }

    async fn write_root(&self, version: u64, root_keys: &[&str], targets: &str, signers: &[&str]) {
        let spec = RootSpec {
            version,
            expires: in_a_year(),
            root_keys: root_keys.iter().map(|k| self.keys.public(k)).collect(),
            root_threshold: 2,
            targets_keys: vec![self.keys.public(targets)],
            snapshot_keys: vec![self.keys.public("snapshot")],
            timestamp_keys: vec![self.keys.public("timestamp")],
        };
        let mut root = build::new_root(&spec).expect("root");
        for s in signers {
            build::sign_root(&mut root, &self.keys.path(s)).await.expect("sign root");
        }
        build::write_root(&root, &self.roots.join(format!("{version}.root.json"))).expect("write root");
    }

    fn manifest(&self, version: &str) -> BundleManifest {
        BundleManifest {
            schema: 1,
            product: "wardbox".into(),
            kind: BundleKind::Full,
            version: version.parse().expect("version"),
            min_starting_version: Version::new(1, 0, 0),
            compatibility: Compatibility { architecture: "x86_64".into() },
            created: now(),
            contents: vec![],
        }
    }

    fn spec(&self, name: &str, manifest: BundleManifest) -> BuildSpec {
        let inputs = self.tmp.path().join("inputs");
        fs::create_dir_all(&inputs).expect("inputs");
        fs::write(inputs.join("root.img"), &self.image).expect("image");
        fs::write(inputs.join("wardbox-a.efi"), b"MZ pretend signed UKI for slot a").expect("uki a");
        fs::write(inputs.join("wardbox-b.efi"), b"MZ pretend signed UKI for slot b").expect("uki b");
        fs::write(inputs.join("notes.txt"), "Wardbox 1.1.0\n- fixes\n").expect("notes");
        BuildSpec {
            roots_dir: self.roots.clone(),
            targets_key: self.keys.path("targets"),
            snapshot_key: self.keys.path("snapshot"),
            timestamp_key: self.keys.path("timestamp"),
            manifest,
            expires: in_a_year(),
            system_image: Some(inputs.join("root.img")),
            uki_a: Some(inputs.join("wardbox-a.efi")),
            uki_b: Some(inputs.join("wardbox-b.efi")),
            models_dir: None,
            firmware_policy: None,
            release_notes: Some(inputs.join("notes.txt")),
            out: self.tmp.path().join(name),
        }
    }

    async fn build(&self, spec: BuildSpec) -> PathBuf {
        build::build_bundle(&spec).await.expect("build bundle");
        spec.out
    }

    /// A box: state provisioned with `1.root.json`, a slot and a running slot, a staging dir.
    fn make_box(&self) -> TestBox {
        let dir = tempfile::tempdir().expect("box dir");
        let root = fs::read(self.roots.join("1.root.json")).expect("root 1");
        let state = State::provision(dir.path().join("state"), &root).expect("provision");
        let slot = dir.path().join("root-b");
        let slot_before = pattern(SLOT_LEN, 99);
        fs::write(&slot, &slot_before).expect("slot");
        let running = dir.path().join("root-a");
        fs::write(&running, pattern(SLOT_LEN, 1)).expect("running slot");
        let staging = dir.path().join("staging");
        fs::create_dir_all(&staging).expect("staging");
        TestBox { _dir: dir, state, slot, running, staging, slot_before }
    }
}

struct TestBox {
    _dir: tempfile::TempDir,
    state: State,
    slot: PathBuf,
    running: PathBuf,
    staging: PathBuf,
    slot_before: Vec<u8>,
}

impl TestBox {
    fn facts(&self) -> BoxFacts {
        BoxFacts {
            product: "wardbox".into(),
            architecture: "x86_64".into(),
            system_version: Version::new(1, 0, 0),
            build_time: "2026-01-01T00:00:00Z".parse().expect("time"),
        }
    }

    fn plan(&self) -> SlotPlan {
        SlotPlan { slot: self.slot.clone(), running_slot: Some(self.running.clone()), staging_dir: self.staging.clone(), staging_reserve: 0 }
    }

    async fn verify(&self, bundle: &Path) -> Result<wardbox_update::VerifiedBundle, UpdateError> {
        verify_bundle(bundle, &self.state, &self.facts(), Some(now())).await
    }

    /// Verify and write the system image; the error, if any.
    async fn apply(&self, bundle: &Path) -> Result<wardbox_update::SlotReceipt, UpdateError> {
        let verified = self.verify(bundle).await?;
        write_to_slot(&verified, ContentRole::SystemImage, &self.plan(), &mut |_, _, _| {}).await
    }

    fn assert_untouched(&self) {
        let now = fs::read(&self.slot).expect("slot");
        assert!(now == self.slot_before, "the slot changed although the update was refused");
        let left: Vec<_> = fs::read_dir(&self.staging).expect("staging").collect();
        assert!(left.is_empty(), "staging not cleaned up: {left:?}");
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

fn expect_refused(result: Result<impl std::fmt::Debug, UpdateError>, code: u8, needle: &str) -> UpdateError {
    let err = result.expect_err("must be refused");
    assert_eq!(err.exit_code(), code, "wrong exit code for: {err}");
    assert!(err.to_string().contains(needle), "message {err:?} does not contain {needle:?}");
    err
}

#[tokio::test]
async fn good_bundle_lands_in_the_slot_with_the_signed_hash() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    let verified = b.verify(&bundle).await.expect("verifies");
    assert_eq!(verified.manifest.version, Version::new(1, 1, 0));
    let mut last = (None, 0, 0);
    let receipt = write_to_slot(&verified, ContentRole::SystemImage, &b.plan(), &mut |p, d, t| last = (Some(p), d, t))
        .await
        .expect("writes");
    let want = hex::encode(Sha256::digest(&f.image));
    assert_eq!(receipt.sha256, want);
    assert_eq!(last, (Some(wardbox_update::Phase::ReadingBack), IMAGE_LEN as u64, IMAGE_LEN as u64));
    let slot = fs::read(&b.slot).expect("slot");
    assert_eq!(hex::encode(Sha256::digest(&slot[..IMAGE_LEN])), want);
    assert_eq!(&slot[IMAGE_LEN..], &b.slot_before[IMAGE_LEN..], "bytes past the image are not touched");
    assert_eq!(fs::read_dir(&b.staging).expect("staging").count(), 0);

    // Accepting raises the time floor; recording the install raises the version floor, after
    // which the same bundle is a downgrade.
    verified.accept(&b.state).expect("accept");
    assert_eq!(b.state.floors().expect("floors").time, Some(verified.manifest.created));
    b.state.record_installed(&verified.manifest).expect("record");
    expect_refused(b.verify(&bundle).await, exit::DOWNGRADE, "version 1.1.0 is already installed");
}

#[tokio::test]
async fn the_running_slot_is_never_written() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    let verified = b.verify(&bundle).await.expect("verifies");
    let mut plan = b.plan();
    plan.slot = b.running.clone();
    let before = fs::read(&b.running).expect("running");
    let err = write_to_slot(&verified, ContentRole::SystemImage, &plan, &mut |_, _, _| {}).await.expect_err("refused");
    assert!(matches!(err, UpdateError::RunningSlot(_)), "{err}");
    assert!(fs::read(&b.running).expect("running") == before);
}

#[tokio::test]
async fn unknown_signer_is_refused() {
    let f = Fixture::new().await;
    // A whole repository under keys the box never trusted, with a root of its own on the stick.
    let other = Fixture::new().await;
    let bundle = other.build(other.spec("b", other.manifest("1.1.0"))).await;
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::BAD_SIGNATURE, "bad signature");
    b.assert_untouched();
}

#[tokio::test]
async fn root_rotation_signed_by_strangers_is_refused() {
    let f = Fixture::new().await;
    f.write_root(2, &["stranger-1", "stranger-2", "stranger-3"], "targets", &["stranger-1", "stranger-2"]).await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::BAD_SIGNATURE, "bad signature");
    b.assert_untouched();
}

#[tokio::test]
async fn fewer_signatures_than_the_threshold_are_refused() {
    let f = Fixture::new().await;
    // Root 2 is signed by one old root key (threshold 2) and two new ones.
    f.write_root(2, &["root-4", "root-5", "root-6"], "targets-2", &["root-1", "root-4", "root-5"]).await;
    let mut spec = f.spec("b", f.manifest("1.1.0"));
    spec.targets_key = f.keys.path("targets-2");
    let bundle = f.build(spec).await;
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::BAD_SIGNATURE, "bad signature");
    b.assert_untouched();
}

#[tokio::test]
async fn root_rotation_signed_by_old_and_new_keys_is_accepted() {
    let f = Fixture::new().await;
    let old_bundle = f.build(f.spec("old", f.manifest("1.1.0"))).await;
    f.write_root(2, &["root-4", "root-5", "root-6"], "targets-2", &["root-1", "root-2", "root-4", "root-5"]).await;
    let mut spec = f.spec("new", f.manifest("1.2.0"));
    spec.targets_key = f.keys.path("targets-2");
    let bundle = f.build(spec).await;
    let b = f.make_box();
    let verified = b.verify(&bundle).await.expect("rotation verifies");
    assert_eq!(verified.root_version, 2);
    write_to_slot(&verified, ContentRole::SystemImage, &b.plan(), &mut |_, _, _| {}).await.expect("writes");
    verified.accept(&b.state).expect("accept");
    let trusted: serde_json::Value = serde_json::from_slice(&b.state.trusted_root().expect("root")).expect("json");
    assert_eq!(trusted["signed"]["version"], 2);
    // The box now trusts root 2 as stored: a later bundle under root 2 verifies, and one signed
    // with the retired targets key is refused.
    let mut spec = f.spec("later", f.manifest("1.3.0"));
    spec.targets_key = f.keys.path("targets-2");
    let later = f.build(spec).await;
    b.verify(&later).await.expect("a bundle under the stored root 2 verifies");
    expect_refused(b.verify(&old_bundle).await, exit::BAD_SIGNATURE, "bad signature");
}

#[tokio::test]
async fn a_damaged_trusted_root_is_a_box_side_error() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    let path = b.state.dir().join("root.json");
    let mut root: serde_json::Value = serde_json::from_slice(&fs::read(&path).expect("root")).expect("json");
    root["signed"]["expires"] = serde_json::json!("2099-01-01T00:00:00Z");
    fs::write(&path, serde_json::to_vec(&root).expect("json")).expect("write");
    expect_refused(b.apply(&bundle).await, exit::OPERATIONAL, "the box's trusted root is not usable");
    b.assert_untouched();
}

#[tokio::test]
async fn stale_staging_files_are_cleaned() {
    let f = Fixture::new().await;
    let b = f.make_box();
    fs::write(b.staging.join(".wardbox-update-abc123"), b"half an image").expect("stale");
    fs::write(b.staging.join("keep.txt"), b"not ours").expect("other");
    assert_eq!(wardbox_update::slot::clean_stale_staging(&b.staging).expect("clean"), 1);
    assert!(b.staging.join("keep.txt").exists());
    assert!(!b.staging.join(".wardbox-update-abc123").exists());
}

#[tokio::test]
async fn truncated_target_is_caught_before_the_slot_is_written() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let img = bundle.join("targets/system.img");
    let len = fs::metadata(&img).expect("img").len();
    fs::OpenOptions::new().write(true).open(&img).expect("open").set_len(len - 1).expect("truncate");
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::CORRUPT, "corrupt bundle");
    b.assert_untouched();
}

#[tokio::test]
async fn bit_flipped_target_is_caught_before_the_slot_is_written() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let img = bundle.join("targets/system.img");
    let mut bytes = fs::read(&img).expect("img");
    bytes[IMAGE_LEN - 10] ^= 0x10;
    fs::write(&img, bytes).expect("flip");
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::CORRUPT, "Hash mismatch");
    b.assert_untouched();
}

/// Counts the bytes the transport hands to tough.
#[derive(Debug, Clone, Default)]
struct CountingTransport(Arc<AtomicU64>);

#[tough::async_trait]
impl Transport for CountingTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let counter = self.0.clone();
        let inner = StickTransport.fetch(url).await?;
        Ok(Box::pin(inner.map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counter.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            }
            chunk
        })))
    }
}

#[tokio::test]
async fn larger_than_declared_target_stops_at_the_declared_size() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let img = bundle.join("targets/system.img");
    // 64 MiB more than signed: the box must stop reading about where the signed size ends.
    let extra = 64 * 1024 * 1024;
    fs::OpenOptions::new().write(true).open(&img).expect("open").set_len((IMAGE_LEN + extra) as u64).expect("grow");
    let b = f.make_box();
    let counter = CountingTransport::default();
    let verified = verify_bundle_via(&bundle, &b.state, &b.facts(), Some(now()), counter.clone()).await.expect("metadata verifies");
    let before_target = counter.0.load(Ordering::SeqCst);
    let err = write_to_slot(&verified, ContentRole::SystemImage, &b.plan(), &mut |_, _, _| {}).await.expect_err("too long");
    assert_eq!(err.exit_code(), exit::CORRUPT, "{err}");
    let read = counter.0.load(Ordering::SeqCst) - before_target;
    assert!(read <= (IMAGE_LEN + CHUNK) as u64, "read {read} bytes of a target signed as {IMAGE_LEN}");
    b.assert_untouched();
}

#[tokio::test]
async fn a_file_the_metadata_does_not_name_is_refused() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    for extra in ["targets/autorun.sh", "metadata/mirrors.json", "README.txt"] {
        let p = bundle.join(extra);
        fs::write(&p, b"#!/bin/sh\n").expect("extra");
        let err = expect_refused(b.apply(&bundle).await, exit::UNKNOWN_FILE, "unknown file");
        assert!(err.to_string().contains(extra.rsplit('/').next().expect("name")), "{err}");
        fs::remove_file(&p).expect("remove");
    }
    std::os::unix::fs::symlink("/dev/zero", bundle.join("targets/zero")).expect("symlink");
    expect_refused(b.apply(&bundle).await, exit::UNKNOWN_FILE, "not a regular file");
    fs::remove_file(bundle.join("targets/zero")).expect("remove");
    b.assert_untouched();
}

#[tokio::test]
async fn a_fifo_or_link_in_place_of_a_signed_file_is_refused_without_hanging() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    for name in ["metadata/timestamp.json", "targets/system.img"] {
        let p = bundle.join(name);
        let saved = p.with_extension("saved");
        fs::rename(&p, &saved).expect("move aside");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let result = tokio::time::timeout(std::time::Duration::from_secs(20), b.apply(&bundle)).await.expect("a FIFO must not hang the box");
        expect_refused(result, exit::UNKNOWN_FILE, "not a regular file");
        fs::remove_file(&p).expect("remove fifo");
        std::os::unix::fs::symlink(&saved, &p).expect("symlink");
        expect_refused(b.apply(&bundle).await, exit::UNKNOWN_FILE, "not a regular file");
        fs::remove_file(&p).expect("remove link");
        fs::rename(&saved, &p).expect("restore");
    }
    b.apply(&bundle).await.expect("the restored bundle applies");
}

#[tokio::test]
async fn another_product_or_starting_version_is_refused_saying_so() {
    let f = Fixture::new().await;
    let mut m = f.manifest("1.1.0");
    m.product = "otherbox".into();
    let bundle = f.build(f.spec("other", m)).await;
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::INCOMPATIBLE, "this bundle is for product \"otherbox\", but this box is \"wardbox\"");
    let mut m = f.manifest("2.0.0");
    m.min_starting_version = Version::new(1, 5, 0);
    let bundle = f.build(f.spec("jump", m)).await;
    expect_refused(b.apply(&bundle).await, exit::INCOMPATIBLE, "needs system version 1.5.0 or later");
    b.assert_untouched();
}

#[tokio::test]
async fn downgrade_is_refused() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.0.0"))).await;
    let b = f.make_box();
    expect_refused(b.apply(&bundle).await, exit::DOWNGRADE, "downgrade refused");
    b.assert_untouched();
}

#[tokio::test]
async fn expired_metadata_is_refused_at_the_trusted_time_even_with_the_clock_set_back() {
    let f = Fixture::new().await;
    let mut spec = f.spec("b", f.manifest("1.1.0"));
    let expires = now().checked_add(48.hours()).expect("time");
    spec.expires = expires;
    let bundle = f.build(spec).await;
    let b = f.make_box();
    // The box once accepted a bundle created after this one expires.
    let mut floors = b.state.floors().expect("floors");
    floors.raise_time(expires.checked_add(24.hours()).expect("time"));
    b.state.save_floors(&floors).expect("save");
    let clock_set_back: Timestamp = "2001-01-01T00:00:00Z".parse().expect("time");
    let result = verify_bundle(&bundle, &b.state, &b.facts(), Some(clock_set_back)).await;
    expect_refused(result, exit::EXPIRED, "timestamp metadata expired");
    // A right clock past the expiry refuses it too, with no floor at all.
    let b2 = f.make_box();
    let late = expires.checked_add(1.hour()).expect("time");
    expect_refused(verify_bundle(&bundle, &b2.state, &b2.facts(), Some(late)).await, exit::EXPIRED, "expired");
    b.assert_untouched();
}

#[tokio::test]
async fn no_space_in_staging_is_refused_before_reading() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    let verified = b.verify(&bundle).await.expect("verifies");
    let mut plan = b.plan();
    plan.staging_reserve = u64::MAX / 2;
    let err = write_to_slot(&verified, ContentRole::SystemImage, &plan, &mut |_, _, _| {}).await.expect_err("no space");
    assert_eq!(err.exit_code(), exit::NO_SPACE, "{err}");
    // A slot smaller than the image is no space too.
    fs::write(&b.slot, vec![0u8; 1024]).expect("small slot");
    let err = write_to_slot(&verified, ContentRole::SystemImage, &b.plan(), &mut |_, _, _| {}).await.expect_err("small slot");
    assert_eq!(err.exit_code(), exit::NO_SPACE, "{err}");
    assert!(fs::read(&b.slot).expect("slot") == vec![0u8; 1024]);
}

#[tokio::test]
async fn inspect_shows_signers_contents_and_notes_and_changes_nothing() {
    let f = Fixture::new().await;
    let bundle = f.build(f.spec("b", f.manifest("1.1.0"))).await;
    let b = f.make_box();
    let state_before = fs::read(b.state.dir().join("root.json")).expect("root");
    let i = wardbox_update::inspect::inspect_for_box(&bundle, &b.state, &b.facts(), Some(now())).await.expect("inspect");
    let text = wardbox_update::inspect::render(&i);
    for needle in ["wardbox full 1.1.0", "root       version 1", "2 of 2 needed", "system-image", "release notes:", "- fixes", "would apply it"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert_eq!(fs::read(b.state.dir().join("root.json")).expect("root"), state_before);
    assert!(!b.state.dir().join("floors.json").exists(), "inspect wrote floors");
}

/// An Ollama models directory as `ollama pull` leaves it: one manifest, a config blob and a
/// model blob.
fn ollama_dir(root: &Path) -> (Vec<u8>, String) {
    let model = pattern(200_000, 3);
    let config = br#"{"model_format":"gguf","model_family":"gemma3"}"#.to_vec();
    let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
    let (dm, dc) = (digest(&model), digest(&config));
    fs::create_dir_all(root.join("blobs")).expect("blobs");
    fs::write(root.join(format!("blobs/sha256-{dm}")), &model).expect("model");
    fs::write(root.join(format!("blobs/sha256-{dc}")), &config).expect("config");
    // A blob no manifest names is not carried.
    fs::write(root.join("blobs/sha256-0000000000000000000000000000000000000000000000000000000000000000"), b"x").expect("stray");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": format!("sha256:{dc}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{dm}"), "size": model.len()}],
    });
    let mdir = root.join("manifests/registry.ollama.ai/library/tiny");
    fs::create_dir_all(&mdir).expect("manifest dir");
    fs::write(mdir.join("latest"), serde_json::to_vec(&manifest).expect("json")).expect("manifest");
    (model, dm)
}

#[tokio::test]
async fn models_only_bundle_carries_the_ollama_layout() {
    let f = Fixture::new().await;
    let models = f.tmp.path().join("ollama-models");
    let (model, digest) = ollama_dir(&models);
    let mut m = f.manifest("2.0.0");
    m.kind = BundleKind::ModelsOnly;
    let mut spec = f.spec("models", m);
    spec.system_image = None;
    spec.uki_a = None;
    spec.uki_b = None;
    spec.models_dir = Some(models);
    let bundle = f.build(spec).await;
    let b = f.make_box();
    let verified = b.verify(&bundle).await.expect("verifies");
    let paths: Vec<(ContentRole, String)> =
        verified.targets.iter().filter_map(|t| Some((t.role?, t.path.clone()?))).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths.contains(&(ContentRole::ModelManifest, "manifests/registry.ollama.ai/library/tiny/latest".into())));
    let blob = verified.targets.iter().find(|t| t.path.as_deref() == Some(&format!("blobs/sha256-{digest}"))).expect("model blob");
    assert_eq!(verified.read_small(blob, 1 << 20).await.expect("read blob"), model);
    // A models bundle has no system image to write.
    let err = write_to_slot(&verified, ContentRole::SystemImage, &b.plan(), &mut |_, _, _| {}).await.expect_err("no image");
    assert!(matches!(err, UpdateError::NoSuchTarget(_)), "{err}");
    b.assert_untouched();
}
