//! Verifying a bundle directory on the box, before anything is written anywhere.
//!
//! Order matters and is the point of this module:
//! 0. The directory holds only `metadata/` and `targets/` with regular files in them (no link,
//!    FIFO or device node is ever opened; [`crate::transport`] checks each opened file again).
//! 1. tough loads the TUF metadata from the stick against the box's trusted root: root rotation,
//!    signatures and thresholds of every role, metadata sizes and hashes. Nothing from the stick
//!    is interpreted before this succeeds.
//! 2. The directory must hold exactly the files the verified metadata names (no extra file, no
//!    link, no device node).
//! 3. Expiry is checked against the box's trusted time (see [`crate::decide::TrustedTime`]).
//! 4. The manifest target is read through tough (declared size enforced, hash checked) and only
//!    then parsed; it must name exactly the signed targets.
//! 5. The pure decision: product, architecture, starting version, version floors.
//!
//! The state directory is only read here. [`VerifiedBundle::accept`] is what moves the trust
//! forward (rotated root, time floor), after an install succeeded.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tough::schema::{Root, Signed};
use tough::{ExpirationEnforcement, Limits, RepositoryLoader, TargetName, Transport};
use url::Url;

use crate::decide::{BoxFacts, TrustedTime, check_expiry, decide};
use crate::error::{UpdateError, from_tough};
use crate::manifest::{BundleManifest, ContentRole, MANIFEST_TARGET, MAX_MANIFEST_BYTES, check_contents, parse_manifest};
use crate::state::State;
use crate::transport::StickTransport;

/// The bundle's metadata directory and targets directory, under the bundle directory.
pub const METADATA_DIR: &str = "metadata";
pub const TARGETS_DIR: &str = "targets";

/// Walking a directory with more entries than this is refused (a stick crafted to make the box
/// walk millions of files).
const MAX_DIR_ENTRIES: usize = 20_000;

/// One signed target, as the verified metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTarget {
    pub name: String,
    /// What the manifest says it is for (`None` for the manifest itself).
    pub role: Option<ContentRole>,
    /// Where a model file goes under the models directory.
    pub path: Option<String>,
    pub length: u64,
    pub sha256: String,
}

/// A bundle whose metadata verified against a trusted root, whose directory holds exactly the
/// signed files and whose signed manifest parsed and names exactly the signed targets. Whether
/// it is for this box (expiry, product, versions) is not decided yet: that is [`VerifiedBundle`].
#[derive(Debug)]
pub struct Bundle {
    pub(crate) repo: tough::Repository,
    pub manifest: BundleManifest,
    /// sha256 of the signed manifest: the bundle's identity in audit records and receipts.
    pub manifest_sha256: String,
    pub targets: Vec<SignedTarget>,
    /// Key ids that signed each role, with the role's threshold (for `inspect` and audit).
    pub signers: Vec<RoleSigners>,
    pub root_version: u64,
    /// Each role's expiry.
    pub expiries: [(&'static str, Timestamp); 4],
    // tough keeps the metadata it loaded here; it lives as long as the repository.
    _datastore: tempfile::TempDir,
}

/// Who signed one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSigners {
    pub role: &'static str,
    pub version: u64,
    pub threshold: u64,
    /// Key ids with a valid signature (only keys the root lists for the role count).
    pub valid: Vec<String>,
    pub expires: Timestamp,
}

/// A [`Bundle`] that also passed the decision for this box: not expired at the trusted time,
/// the right product and architecture, a starting version the box meets, and higher than the
/// installed version of its track. Only this type can be written to a slot.
#[derive(Debug)]
pub struct VerifiedBundle {
    bundle: Bundle,
    /// The trusted time the expiry was checked against.
    pub checked_at: Timestamp,
}

impl std::ops::Deref for VerifiedBundle {
    type Target = Bundle;
    fn deref(&self) -> &Bundle {
        &self.bundle
    }
}

impl Bundle {
    /// The one target with a role (system image, UKI, firmware policy, release notes).
    pub fn target_for(&self, role: ContentRole) -> Result<&SignedTarget, UpdateError> {
        let mut it = self.targets.iter().filter(|t| t.role == Some(role));
        match (it.next(), it.next()) {
            (Some(t), None) => Ok(t),
            _ => Err(UpdateError::NoSuchTarget(role.to_string())),
        }
    }

    /// Reads a small target fully (release notes, policy), through tough's size and hash checks.
    pub async fn read_small(&self, target: &SignedTarget, max: u64) -> Result<Vec<u8>, UpdateError> {
        if target.length > max {
            return Err(UpdateError::Corrupt(format!("{} is {} bytes, more than {max}", target.name, target.length)));
        }
        read_target(&self.repo, &target.name).await
    }
}

impl VerifiedBundle {
    /// Moves the box's trust forward after an install succeeded: stores a rotated root (only a
    /// newer one: tough has verified it chains from the trusted one) and raises the time floor
    /// to the bundle's `created` time. Version floors are raised separately, by the caller,
    /// once the new version proved healthy ([`State::record_installed`]).
    pub fn accept(&self, state: &State) -> Result<(), UpdateError> {
        let trusted: Signed<Root> = serde_json::from_slice(&state.trusted_root()?)
            .map_err(|e| UpdateError::TrustedRoot(format!("it does not parse: {e}")))?;
        if self.repo.root().signed.version > trusted.signed.version {
            let mut bytes = serde_json::to_vec_pretty(self.repo.root()).map_err(|e| UpdateError::Tuf(e.to_string()))?;
            bytes.push(b'\n');
            state.save_root(&bytes)?;
        }
        let mut floors = state.floors()?;
        floors.raise_time(self.manifest.created);
        state.save_floors(&floors)
    }
}

impl State {
    /// Raises the version floor of the bundle's track (after the new version proved healthy).
    pub fn record_installed(&self, manifest: &BundleManifest) -> Result<(), UpdateError> {
        let mut floors = self.floors()?;
        floors.raise(manifest.kind, manifest.version);
        self.save_floors(&floors)
    }
}

/// Verifies a bundle directory for this box, reading the stick with [`StickTransport`].
/// `clock` is the real-time clock's reading, if the box has one (it only ever raises the
/// trusted time; see [`TrustedTime`]).
pub async fn verify_bundle(
    dir: &Path,
    state: &State,
    facts: &BoxFacts,
    clock: Option<Timestamp>,
) -> Result<VerifiedBundle, UpdateError> {
    verify_bundle_via(dir, state, facts, clock, StickTransport).await
}

/// [`verify_bundle`] with another transport (the benchmark reads through a throttled one).
pub async fn verify_bundle_via<T: Transport + Send + Sync + 'static>(
    dir: &Path,
    state: &State,
    facts: &BoxFacts,
    clock: Option<Timestamp>,
    transport: T,
) -> Result<VerifiedBundle, UpdateError> {
    let floors = state.floors()?;
    let time = TrustedTime { build_time: facts.build_time, floor: floors.time, clock };
    let bundle = load_bundle_via(dir, &state.trusted_root()?, Some(&time), transport).await?;
    // Steps 3 (with the manifest's `created`) and 5.
    check_expiry(&bundle.expiries, bundle.manifest.created, &time)?;
    decide(&bundle.manifest, facts, &floors)?;
    Ok(VerifiedBundle { bundle, checked_at: time.now() })
}

/// Steps 1, 2 and 4 (and 3 when a trusted time is given): what `inspect` shows, without the
/// decision for a particular box. Changes nothing anywhere.
pub async fn load_bundle_via<T: Transport + Send + Sync + 'static>(
    dir: &Path,
    trusted_root: &[u8],
    time: Option<&TrustedTime>,
    transport: T,
) -> Result<Bundle, UpdateError> {
    let dir = fs::canonicalize(dir).map_err(UpdateError::io("opening bundle directory", dir))?;
    // Before tough opens anything: the directory's shape (only `metadata/` and `targets/`,
    // holding only regular files), so no link, FIFO or device node is ever read.
    check_bundle_shape(&dir)?;

    // 1. TUF. tough's own expiry check uses the clock alone, so it is off; ours follows below,
    // before any target is read. tough's datastore is a fresh temporary directory: each bundle
    // is a repository of its own, and the anti-rollback that matters is the manifest's version
    // against the floors (plus the root version, which the trusted root carries).
    let datastore = tempfile::tempdir().map_err(UpdateError::io("creating temporary directory", std::env::temp_dir()))?;
    let metadata_url = dir_url(&dir.join(METADATA_DIR))?;
    let targets_url = dir_url(&dir.join(TARGETS_DIR))?;
    let repo = RepositoryLoader::new(&trusted_root, metadata_url, targets_url)
        .transport(transport)
        .limits(Limits::default())
        .datastore(datastore.path())
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(from_tough)?;

    // 2. Exactly the files the verified metadata names.
    let root_version = repo.root().signed.version.get();
    let names: BTreeSet<String> = repo.all_targets().map(|(n, _)| n.raw().to_owned()).collect();
    check_bundle_files(&dir, root_version, &names)?;

    // 3. Expiry at the trusted time, before any target is read (the manifest's `created` is
    // checked against the expiries once it is read).
    let expiries = [
        ("root", repo.root().signed.expires),
        ("timestamp", repo.timestamp().signed.expires),
        ("snapshot", repo.snapshot().signed.expires),
        ("targets", repo.targets().signed.expires),
    ];
    if let Some(time) = time {
        check_expiry(&expiries, Timestamp::MIN, time)?;
    }

    // 4. The manifest, read through tough's checks, then parsed.
    let manifest_bytes = read_target(&repo, MANIFEST_TARGET).await?;
    let manifest = parse_manifest(&manifest_bytes)?;
    check_contents(&manifest, names.iter().map(String::as_str))?;

    let targets = signed_targets(&repo, &manifest);
    let signers = role_signers(&repo);
    Ok(Bundle {
        manifest_sha256: hex::encode(Sha256::digest(&manifest_bytes)),
        repo,
        manifest,
        targets,
        signers,
        root_version,
        expiries,
        _datastore: datastore,
    })
}

fn dir_url(path: &Path) -> Result<Url, UpdateError> {
    Url::from_directory_path(path)
        .map_err(|()| UpdateError::Corrupt(format!("{} cannot be a file URL", path.display())))
}

/// Reads a whole target through tough (size and hash enforced while streaming).
pub(crate) async fn read_target(repo: &tough::Repository, name: &str) -> Result<Vec<u8>, UpdateError> {
    let target_name = TargetName::new(name).map_err(from_tough)?;
    let declared = repo
        .targets()
        .signed
        .targets
        .get(&target_name)
        .map(|t| t.length)
        .ok_or_else(|| UpdateError::Corrupt(format!("{name} is not a signed target")))?;
    if name == MANIFEST_TARGET && declared > MAX_MANIFEST_BYTES {
        return Err(UpdateError::Corrupt(format!("{name} is declared as {declared} bytes, more than {MAX_MANIFEST_BYTES}")));
    }
    let mut stream = repo
        .read_target(&target_name)
        .await
        .map_err(from_tough)?
        .ok_or_else(|| UpdateError::Corrupt(format!("{name} is not a signed target")))?;
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(from_tough)?);
    }
    Ok(out)
}

fn signed_targets(repo: &tough::Repository, manifest: &BundleManifest) -> Vec<SignedTarget> {
    let mut out: Vec<SignedTarget> = repo
        .all_targets()
        .map(|(name, t)| {
            let entry = manifest.contents.iter().find(|e| e.target == name.raw());
            SignedTarget {
                name: name.raw().to_owned(),
                role: entry.map(|e| e.role),
                path: entry.and_then(|e| e.path.clone()),
                length: t.length,
                sha256: hex::encode(&t.hashes.sha256),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn role_signers(repo: &tough::Repository) -> Vec<RoleSigners> {
    use tough::schema::RoleType;
    let root = &repo.root().signed;
    let of = |role: &'static str, rt: RoleType, sigs: &[tough::schema::Signature], version: u64, expires: Timestamp| {
        let keys = root.roles.get(&rt);
        let mut valid: Vec<String> = sigs
            .iter()
            .filter(|s| keys.is_some_and(|k| k.keyids.contains(&s.keyid)))
            .map(|s| hex::encode(&s.keyid))
            .collect();
        valid.sort();
        valid.dedup();
        RoleSigners { role, version, threshold: keys.map_or(0, |k| k.threshold.get()), valid, expires }
    };
    vec![
        of("root", RoleType::Root, &repo.root().signatures, root.version.get(), root.expires),
        of("targets", RoleType::Targets, &repo.targets().signatures, repo.targets().signed.version.get(), repo.targets().signed.expires),
        of("snapshot", RoleType::Snapshot, &repo.snapshot().signatures, repo.snapshot().signed.version.get(), repo.snapshot().signed.expires),
        of("timestamp", RoleType::Timestamp, &repo.timestamp().signatures, repo.timestamp().signed.version.get(), repo.timestamp().signed.expires),
    ]
}

/// The structural half of [`check_bundle_files`], before any metadata is trusted: two
/// directories of regular files and nothing else.
fn check_bundle_shape(dir: &Path) -> Result<(), UpdateError> {
    let unknown = |path: PathBuf, why: &'static str| UpdateError::UnknownFile { path, why };
    for (name, meta, path) in read_dir(dir)? {
        if !(meta.is_dir() && (name == METADATA_DIR || name == TARGETS_DIR)) {
            return Err(unknown(path, if meta.is_dir() { "a directory" } else if meta.is_file() { "a file" } else { "not a regular file" }));
        }
        for (_, meta, path) in read_dir(&path)? {
            if !meta.is_file() {
                return Err(unknown(path, if meta.is_dir() { "a directory" } else { "not a regular file" }));
            }
        }
    }
    Ok(())
}

/// The bundle directory may hold only `metadata/{1..=N}.root.json`, `metadata/timestamp.json`,
/// `metadata/snapshot.json`, `metadata/targets.json` and `targets/<name>` for each signed target,
/// all regular files. Every signed target must be present.
pub fn check_bundle_files(dir: &Path, root_version: u64, target_names: &BTreeSet<String>) -> Result<(), UpdateError> {
    let mut seen_targets = BTreeSet::new();
    let mut count = 0usize;
    let unknown = |path: PathBuf, why: &'static str| UpdateError::UnknownFile { path, why };
    for top in read_dir(dir)? {
        let (name, meta, path) = top;
        count += 1;
        match (name.as_str(), meta.is_dir()) {
            (METADATA_DIR, true) | (TARGETS_DIR, true) => {}
            (_, true) => return Err(unknown(path, "a directory")),
            _ => return Err(unknown(path, if meta.is_file() { "a file" } else { "not a regular file" })),
        }
        for (inner, meta, path) in read_dir(&path)? {
            count += 1;
            if count > MAX_DIR_ENTRIES {
                return Err(unknown(path, "more entries than any bundle has"));
            }
            if !meta.is_file() {
                return Err(unknown(path, if meta.is_dir() { "a directory" } else { "not a regular file" }));
            }
            let known = if name == METADATA_DIR {
                matches!(inner.as_str(), "timestamp.json" | "snapshot.json" | "targets.json")
                    || inner
                        .strip_suffix(".root.json")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n >= 1 && n <= root_version && inner == format!("{n}.root.json"))
            } else {
                seen_targets.insert(inner.clone());
                target_names.contains(&inner)
            };
            if !known {
                return Err(unknown(path, "a file"));
            }
        }
    }
    if let Some(missing) = target_names.iter().find(|n| !seen_targets.contains(*n)) {
        return Err(UpdateError::Corrupt(format!("signed target {missing} is missing from {}", dir.join(TARGETS_DIR).display())));
    }
    Ok(())
}

/// Entries of a directory without following links: (name, metadata, path). A name that is not
/// UTF-8 is kept lossily; it matches no signed name and is refused as unknown.
fn read_dir(dir: &Path) -> Result<Vec<(String, fs::Metadata, PathBuf)>, UpdateError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(UpdateError::io("reading bundle directory", dir))? {
        let entry = entry.map_err(UpdateError::io("reading bundle directory", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(UpdateError::io("reading", &path))?;
        out.push((entry.file_name().to_string_lossy().into_owned(), meta, path));
        if out.len() > MAX_DIR_ENTRIES {
            return Err(UpdateError::UnknownFile { path: dir.to_owned(), why: "more entries than any bundle has" });
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
