//! The bundle manifest: the one signed target that says what a bundle is (product, kind,
//! version, what it may be applied on) and what each of its other targets is for.
//!
//! Everything here is pure. [`parse_manifest`] is the only way the box turns manifest bytes into
//! a value, and it is also the entry point of the fuzz harness: it never panics, whatever the
//! bytes. The box only calls it on bytes whose signature, size and hash TUF has already checked,
//! but a signer's mistake must still end in an error that names the problem, not in a crash.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The TUF target name of the manifest itself. Every bundle has exactly one.
pub const MANIFEST_TARGET: &str = "bundle.json";

/// The manifest format this code reads and writes.
pub const MANIFEST_SCHEMA: u32 = 1;

/// A manifest larger than this is refused before it is read (a real one is a few KiB; the
/// largest part is the list of model blobs).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// More contents than this is not a bundle anyone built on purpose.
pub const MAX_CONTENTS: usize = 10_000;

/// What a bundle updates. Each kind has its own version track and its own floor on the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BundleKind {
    /// A system image for the inactive slot and its signed UKI (plus, optionally, models,
    /// the firmware policy and release notes). Needs a reboot.
    Full,
    /// Models only (Ollama-layout manifests and blobs). Applies without a reboot.
    ModelsOnly,
    /// The firmware policy only. Applies without a reboot.
    PolicyOnly,
}

impl BundleKind {
    /// The name used in the manifest, on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleKind::Full => "full",
            BundleKind::ModelsOnly => "models-only",
            BundleKind::PolicyOnly => "policy-only",
        }
    }
}

impl fmt::Display for BundleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BundleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(BundleKind::Full),
            "models-only" => Ok(BundleKind::ModelsOnly),
            "policy-only" => Ok(BundleKind::PolicyOnly),
            other => Err(format!("unknown bundle kind {other:?} (full, models-only, policy-only)")),
        }
    }
}

/// What one target of the bundle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentRole {
    /// The root filesystem image for the inactive slot.
    SystemImage,
    /// The signed unified kernel image that boots slot A: its signed command line names
    /// `root=PARTUUID=<wardbox-root-a>`, so a UKI boots exactly one slot and a full bundle
    /// carries one for each (the box installs the one for the slot it writes).
    UkiA,
    /// The signed unified kernel image that boots slot B (`root=PARTUUID=<wardbox-root-b>`).
    UkiB,
    /// An Ollama model manifest; `path` is where it goes under the models directory.
    ModelManifest,
    /// An Ollama blob (`blobs/sha256-<hex>`); `path` is where it goes under the models directory.
    ModelBlob,
    /// The firmware policy file.
    FirmwarePolicy,
    /// Release notes (plain UTF-8 text), shown by `inspect` before anything is applied.
    ReleaseNotes,
}

impl ContentRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentRole::SystemImage => "system-image",
            ContentRole::UkiA => "uki-a",
            ContentRole::UkiB => "uki-b",
            ContentRole::ModelManifest => "model-manifest",
            ContentRole::ModelBlob => "model-blob",
            ContentRole::FirmwarePolicy => "firmware-policy",
            ContentRole::ReleaseNotes => "release-notes",
        }
    }

    fn is_model(self) -> bool {
        matches!(self, ContentRole::ModelManifest | ContentRole::ModelBlob)
    }
}

impl fmt::Display for ContentRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release version: exactly `MAJOR.MINOR.PATCH`, decimal, no leading zeros, compared
/// numerically. Deliberately no pre-release or build suffixes: "is this higher than what is
/// installed" must have one obvious answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version { major, minor, patch }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("version {s:?} is not MAJOR.MINOR.PATCH (decimal, no leading zeros)");
        let parts: Vec<&str> = s.split('.').collect();
        let [a, b, c] = parts.as_slice() else {
            return Err(bad());
        };
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
                return Err(bad());
            }
            p.parse::<u32>().map_err(|_| bad())
        };
        Ok(Version::new(num(a)?, num(b)?, num(c)?))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the box must be for the bundle to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compatibility {
    /// The CPU architecture of the system image and engine (`x86_64`); a models or policy bundle
    /// names it too, so a bundle never lands on hardware nobody tested it on.
    pub architecture: String,
}

/// One target of the bundle and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentEntry {
    /// The TUF target name (a flat file name under `targets/`).
    pub target: String,
    pub role: ContentRole,
    /// For model files only: the path under the Ollama models directory
    /// (`manifests/registry.ollama.ai/library/NAME/TAG` or `blobs/sha256-HEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The signed bundle manifest (`bundle.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// The manifest format; only [`MANIFEST_SCHEMA`] is read.
    pub schema: u32,
    /// The product this bundle is for (`wardbox`); a bundle for another product is refused.
    pub product: String,
    pub kind: BundleKind,
    /// The version this bundle installs, on the track of its kind.
    pub version: Version,
    /// The lowest installed *system* version this bundle may be applied on (an update path that
    /// needs an intermediate release says so here).
    pub min_starting_version: Version,
    pub compatibility: Compatibility,
    /// When the bundle was built. It raises the box's time floor once the bundle is accepted
    /// (see `docs/update.md`, "Time without a clock").
    pub created: jiff::Timestamp,
    pub contents: Vec<ContentEntry>,
}

/// Why a manifest is not acceptable, whatever the box it is for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error("bundle manifest is {0} bytes, more than the {MAX_MANIFEST_BYTES} allowed")]
    TooLarge(u64),
    #[error("bundle manifest is not valid: {0}")]
    Syntax(String),
    #[error("bundle manifest schema {0} is not supported (this box reads schema {MANIFEST_SCHEMA})")]
    Schema(u32),
    #[error("bundle manifest field {field} is not valid: {why}")]
    Field { field: String, why: String },
    #[error("bundle manifest is not consistent with its kind {kind}: {why}")]
    Kind { kind: BundleKind, why: String },
    #[error("signed target {0:?} is not listed in the bundle manifest")]
    Unlisted(String),
    #[error("bundle manifest lists {0:?}, which is not a signed target")]
    NotSigned(String),
}

fn field(field: impl Into<String>, why: impl Into<String>) -> ManifestError {
    ManifestError::Field { field: field.into(), why: why.into() }
}

/// A plain name: ASCII letters, digits, `.`, `_`, `-`; not starting with `.`; 1..=128 bytes.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A relative path of plain names, at most 8 deep (so no `..`, no absolute path, no empty part).
fn is_plain_path(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 8 && parts.iter().all(|p| is_plain_name(p))
}

/// Parses and checks manifest bytes. The fuzz entry point: any input gives a value or an error.
pub fn parse_manifest(bytes: &[u8]) -> Result<BundleManifest, ManifestError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(bytes.len() as u64));
    }
    let manifest: BundleManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Syntax(e.to_string()))?;
    validate(&manifest)?;
    Ok(manifest)
}

/// The checks that need no knowledge of the box or of the signed target list.
pub fn validate(m: &BundleManifest) -> Result<(), ManifestError> {
    if m.schema != MANIFEST_SCHEMA {
        return Err(ManifestError::Schema(m.schema));
    }
    if !is_plain_name(&m.product) {
        return Err(field("product", "must be a plain name (letters, digits, . _ -)"));
    }
    if !is_plain_name(&m.compatibility.architecture) {
        return Err(field("compatibility.architecture", "must be a plain name"));
    }
    if m.min_starting_version > m.version {
        return Err(field(
            "min_starting_version",
            format!("{} is higher than the bundle's own version {}", m.min_starting_version, m.version),
        ));
    }
    if m.contents.len() > MAX_CONTENTS {
        return Err(field("contents", format!("{} entries, more than {MAX_CONTENTS}", m.contents.len())));
    }
    let mut targets = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut count: BTreeMap<ContentRole, usize> = BTreeMap::new();
    for (i, entry) in m.contents.iter().enumerate() {
        let at = |f: &str| format!("contents[{i}].{f}");
        if !is_plain_name(&entry.target) || entry.target == MANIFEST_TARGET {
            return Err(field(at("target"), format!("{:?} is not a plain target name", entry.target)));
        }
        if !targets.insert(entry.target.as_str()) {
            return Err(field(at("target"), format!("{:?} is listed twice", entry.target)));
        }
        match (&entry.path, entry.role.is_model()) {
            (None, true) => return Err(field(at("path"), "a model file needs its path in the models directory")),
            (Some(_), false) => return Err(field(at("path"), format!("only model files have a path, not {}", entry.role))),
            (Some(path), true) => {
                check_model_path(entry.role, path).map_err(|why| field(at("path"), why))?;
                if !paths.insert(path.as_str()) {
                    return Err(field(at("path"), format!("{path:?} is listed twice")));
                }
            }
            (None, false) => {}
        }
        *count.entry(entry.role).or_default() += 1;
    }
    check_kind(m.kind, &count)
}

fn check_model_path(role: ContentRole, path: &str) -> Result<(), String> {
    if !is_plain_path(path) {
        return Err(format!("{path:?} is not a plain relative path"));
    }
    match role {
        ContentRole::ModelManifest if path.starts_with("manifests/") && path.split('/').count() >= 3 => Ok(()),
        ContentRole::ModelManifest => Err(format!("{path:?} is not under manifests/")),
        _ => {
            let hex = path.strip_prefix("blobs/sha256-").unwrap_or("");
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!("{path:?} is not blobs/sha256-<64 lowercase hex>"))
            }
        }
    }
}

fn check_kind(kind: BundleKind, count: &BTreeMap<ContentRole, usize>) -> Result<(), ManifestError> {
    let n = |r: ContentRole| count.get(&r).copied().unwrap_or(0);
    let bad = |why: String| Err(ManifestError::Kind { kind, why });
    if n(ContentRole::ReleaseNotes) > 1 {
        return bad("more than one release-notes target".into());
    }
    if n(ContentRole::FirmwarePolicy) > 1 {
        return bad("more than one firmware-policy target".into());
    }
    if (n(ContentRole::ModelBlob) > 0) != (n(ContentRole::ModelManifest) > 0) {
        return bad("model blobs and model manifests come together".into());
    }
    match kind {
        BundleKind::Full => {
            if n(ContentRole::SystemImage) != 1 || n(ContentRole::UkiA) != 1 || n(ContentRole::UkiB) != 1 {
                return bad(
                    "a full bundle has exactly one system-image, one uki-a and one uki-b (each UKI names the root partition of its slot on its signed command line)".into(),
                );
            }
        }
        BundleKind::ModelsOnly => {
            if n(ContentRole::SystemImage) + n(ContentRole::UkiA) + n(ContentRole::UkiB) + n(ContentRole::FirmwarePolicy) > 0 {
                return bad("a models-only bundle holds models and release notes only".into());
            }
            if n(ContentRole::ModelManifest) == 0 {
                return bad("a models-only bundle holds at least one model manifest".into());
            }
        }
        BundleKind::PolicyOnly => {
            if n(ContentRole::SystemImage) + n(ContentRole::UkiA) + n(ContentRole::UkiB) + n(ContentRole::ModelManifest) + n(ContentRole::ModelBlob) > 0
            {
                return bad("a policy-only bundle holds the policy and release notes only".into());
            }
            if n(ContentRole::FirmwarePolicy) != 1 {
                return bad("a policy-only bundle holds exactly one firmware-policy".into());
            }
        }
    }
    Ok(())
}

/// The manifest must name exactly the signed targets (other than itself): a signed file the
/// manifest does not explain, or an entry nobody signed, means the bundle was not built by
/// `wardbox-bundle build` and is refused.
pub fn check_contents<'a>(
    m: &BundleManifest,
    signed_targets: impl IntoIterator<Item = &'a str>,
) -> Result<(), ManifestError> {
    let listed: BTreeSet<&str> = m.contents.iter().map(|e| e.target.as_str()).collect();
    let mut signed = BTreeSet::new();
    for name in signed_targets {
        if name == MANIFEST_TARGET {
            continue;
        }
        if !listed.contains(name) {
            return Err(ManifestError::Unlisted(name.to_owned()));
        }
        signed.insert(name);
    }
    if let Some(missing) = listed.iter().find(|t| !signed.contains(*t)) {
        return Err(ManifestError::NotSigned((*missing).to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BundleManifest {
        BundleManifest {
            schema: 1,
            product: "wardbox".into(),
            kind: BundleKind::Full,
            version: Version::new(1, 2, 0),
            min_starting_version: Version::new(1, 0, 0),
            compatibility: Compatibility { architecture: "x86_64".into() },
            created: "2026-11-29T10:00:00Z".parse().expect("time"),
            contents: vec![
                ContentEntry { target: "system.img".into(), role: ContentRole::SystemImage, path: None },
                ContentEntry { target: "wardbox-a.efi".into(), role: ContentRole::UkiA, path: None },
                ContentEntry { target: "wardbox-b.efi".into(), role: ContentRole::UkiB, path: None },
            ],
        }
    }

    #[test]
    fn round_trip_and_unknown_fields() {
        let m = sample();
        let bytes = serde_json::to_vec(&m).expect("serialise");
        assert_eq!(parse_manifest(&bytes), Ok(m));
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["extra"] = serde_json::json!(1);
        let err = parse_manifest(&serde_json::to_vec(&v).expect("json")).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn versions_compare_numerically_and_parse_strictly() {
        let v = |s: &str| s.parse::<Version>();
        assert!(v("1.10.0").expect("v") > v("1.9.9").expect("v"));
        for bad in ["1.2", "1.2.3.4", "01.2.3", "1.2.x", "", "1..2", "-1.2.3", "1.2.3-rc1"] {
            assert!(v(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn kind_rules() {
        let mut m = sample();
        m.kind = BundleKind::ModelsOnly;
        assert!(matches!(validate(&m), Err(ManifestError::Kind { .. })));
        let mut m = sample();
        m.contents.pop();
        assert!(matches!(validate(&m), Err(ManifestError::Kind { .. })));
        let mut m = sample();
        m.contents.push(ContentEntry {
            target: "m".into(),
            role: ContentRole::ModelBlob,
            path: Some("blobs/sha256-../../etc".into()),
        });
        assert!(matches!(validate(&m), Err(ManifestError::Field { .. })));
    }

    #[test]
    fn a_full_bundle_carries_one_uki_for_each_slot() {
        // Each UKI's signed command line names the root partition of one slot, so a bundle
        // with one UKI could boot only one of the two slots it may be written to.
        for drop in [ContentRole::UkiA, ContentRole::UkiB] {
            let mut m = sample();
            m.contents.retain(|e| e.role != drop);
            let err = validate(&m).expect_err("one UKI only").to_string();
            assert!(err.contains("one uki-a and one uki-b"), "{err}");
        }
        let mut m = sample();
        m.contents.push(ContentEntry { target: "other-b.efi".into(), role: ContentRole::UkiB, path: None });
        assert!(matches!(validate(&m), Err(ManifestError::Kind { .. })));
        // The single-UKI form of earlier builds is refused, naming the roles.
        let mut v = serde_json::to_value(sample()).expect("json");
        v["contents"] = serde_json::json!([{ "target": "system.img", "role": "system-image" }, { "target": "wardbox.efi", "role": "uki" }]);
        let err = parse_manifest(&serde_json::to_vec(&v).expect("json")).expect_err("role uki").to_string();
        assert!(err.contains("unknown variant `uki`"), "{err}");
    }

    #[test]
    fn contents_must_match_the_signed_targets() {
        let m = sample();
        assert_eq!(check_contents(&m, ["bundle.json", "system.img", "wardbox-a.efi", "wardbox-b.efi"]), Ok(()));
        assert_eq!(
            check_contents(&m, ["bundle.json", "system.img", "wardbox-a.efi", "wardbox-b.efi", "x"]),
            Err(ManifestError::Unlisted("x".into()))
        );
        assert_eq!(check_contents(&m, ["system.img", "wardbox-b.efi"]), Err(ManifestError::NotSigned("wardbox-a.efi".into())));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [&b""[..], b"{", b"null", b"[]", &[0xff; 64], b"{\"schema\":1}"] {
            assert!(parse_manifest(input).is_err());
        }
    }
}
