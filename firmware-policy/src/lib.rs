//! The firmware policy: which TPM PCRs bind the data-volume key, whether Secure Boot must be on,
//! and what the box does when the TPM refuses to release the key.
//!
//! The policy is a small TOML file (`default.toml` beside this crate is the shipped default).
//! Everything here is pure: parsing, validation, and the decisions "may the boot go on given
//! this Secure Boot state" and "are the enrolled Secure Boot keys the ones the policy pins".
//! Reading the firmware's variables (`SecureBoot`, `PK`, `KEK`, `db`) is done by small functions
//! that take the efivars directory as a parameter, so tests point them at a temporary tree.
//!
//! [`pcrsig`]: the signed PCR 11 policy's other half, the fleet's PCR-signing public key and
//! the signature file `systemd-measure sign` writes for each UKI (parsed from bytes a UKI or
//! `/run` hands over; fuzzed in `agent/update/fuzz`, target `uki`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod boot_variables;
pub use boot_variables::BootVariables;
pub mod pcrsig;

/// The policy file shipped with the image, compiled in so the agent always has one.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../default.toml");

/// Where Linux exposes UEFI variables.
pub const DEFAULT_EFIVARS_DIR: &str = "/sys/firmware/efi/efivars";

/// The UEFI global variable GUID that `SecureBoot`, `PK` and `KEK` live under.
const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// `EFI_IMAGE_SECURITY_DATABASE_GUID`, which `db` lives under.
const EFI_IMAGE_SECURITY_DATABASE_GUID: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

/// `EFI_CERT_X509_GUID` (a5c059a1-94e4-4aa7-87b5-ab155c2bf072) as stored in a signature list:
/// its first three fields little-endian.
const EFI_CERT_X509_GUID: [u8; 16] =
    [0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72];

/// The highest PCR index a TPM 2.0 PC client implements (24 PCRs, 0..=23).
pub const MAX_PCR: u8 = 23;

/// The PCR systemd-stub measures the unified kernel image into, and the one a signed policy
/// covers (`[signed_pcr11]`).
pub const UKI_PCR: u8 = 11;

/// Errors reading or checking the firmware policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read the firmware policy file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The policy file is not valid TOML or has unknown or missing fields.
    #[error("the firmware policy {origin} is not valid: {message}")]
    Parse { origin: String, message: String },
    /// The policy parsed but a value is not acceptable.
    #[error("the firmware policy field `{field}` is not acceptable: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Secure Boot is required by the policy but the firmware says it is off or cannot say.
    #[error(
        "the firmware policy requires Secure Boot, but {observed}; turn Secure Boot on in the \
         firmware setup, or (lab machines only) set secure_boot = \"not-required\" in the policy"
    )]
    SecureBootRequired { observed: SecureBootState },
    /// A Secure Boot key variable (PK, KEK, db) could not be read or decoded.
    #[error("the firmware's Secure Boot {variable} cannot be read: {reason}")]
    KeysUnreadable { variable: &'static str, reason: String },
    /// The enrolled Secure Boot keys are not the ones the policy pins.
    #[error(
        "the firmware's Secure Boot {variable} {reason}: the firmware policy pins other keys, so \
         this boot chain is not the one the box was built for; restore the box's keys in the \
         firmware setup, or put keys IT has checked in the policy's [secure_boot_keys]"
    )]
    KeysNotPinned { variable: &'static str, reason: String },
}

/// The PCR bank (hash algorithm) the volume key is sealed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PcrBank {
    Sha1,
    Sha256,
    Sha384,
}

impl PcrBank {
    /// The name used in the policy file and in LUKS2 tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            PcrBank::Sha1 => "sha1",
            PcrBank::Sha256 => "sha256",
            PcrBank::Sha384 => "sha384",
        }
    }

    /// Parse the name used in the policy file and in LUKS2 tokens.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(PcrBank::Sha1),
            "sha256" => Some(PcrBank::Sha256),
            "sha384" => Some(PcrBank::Sha384),
            _ => None,
        }
    }
}

impl std::fmt::Display for PcrBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether Secure Boot must be on for the TPM key to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBootRequirement {
    Required,
    NotRequired,
}

/// What happens when the TPM refuses to release the key. A single variant on purpose: there is
/// no way to write "fall back to an unencrypted volume" in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnTpmRefusal {
    /// The volume stays locked until IT types the recovery key.
    RecoveryOnly,
}

/// The set of PCRs the key is bound to, in one bank. Validated: non-empty, each index in
/// 0..=23, sorted, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBinding {
    bank: PcrBank,
    pcrs: Vec<u8>,
}

impl PcrBinding {
    /// Build a binding, checking the PCR list. The list is sorted so that two bindings with the
    /// same PCRs in another order compare equal.
    pub fn new(bank: PcrBank, pcrs: &[u8]) -> Result<Self, PolicyError> {
        if pcrs.is_empty() {
            return Err(PolicyError::Invalid {
                field: "pcrs",
                reason: "the list is empty; a key bound to no PCR would unseal on any boot chain \
                         (use at least [7])"
                    .into(),
            });
        }
        let mut sorted = pcrs.to_vec();
        sorted.sort_unstable();
        if let Some(bad) = sorted.iter().find(|p| **p > MAX_PCR) {
            return Err(PolicyError::Invalid {
                field: "pcrs",
                reason: format!("PCR {bad} does not exist; a TPM 2.0 has PCRs 0 to {MAX_PCR}"),
            });
        }
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(PolicyError::Invalid {
                field: "pcrs",
                reason: format!("the list {pcrs:?} names a PCR twice"),
            });
        }
        Ok(PcrBinding { bank, pcrs: sorted })
    }

    pub fn bank(&self) -> PcrBank {
        self.bank
    }

    /// The PCR indices, sorted ascending.
    pub fn pcrs(&self) -> &[u8] {
        &self.pcrs
    }
}

impl std::fmt::Display for PcrBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.pcrs.iter().map(u8::to_string).collect();
        write!(f, "{} PCRs {}", self.bank, list.join(","))
    }
}

/// The sha256 of a certificate's DER encoding, as lowercase hex: how the policy names a
/// Secure Boot key (`openssl x509 -outform DER | sha256sum`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertFingerprint(String);

impl CertFingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        CertFingerprint(hex::encode(Sha256::digest(der)))
    }

    /// Parse 64 hex digits (either case; stored lowercase).
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| CertFingerprint(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl std::fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three UEFI variables that hold the Secure Boot keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVariable {
    /// The platform key: whoever holds it controls KEK.
    Pk,
    /// Key exchange keys: whoever holds one may change db and dbx.
    Kek,
    /// The signature database: what boot binaries may be signed with.
    Db,
}

impl KeyVariable {
    pub const ALL: [KeyVariable; 3] = [KeyVariable::Pk, KeyVariable::Kek, KeyVariable::Db];

    /// The variable's name, as UEFI and the policy file (lowercase) spell it.
    pub fn name(self) -> &'static str {
        match self {
            KeyVariable::Pk => "PK",
            KeyVariable::Kek => "KEK",
            KeyVariable::Db => "db",
        }
    }

    /// The variable's file name under efivarfs.
    pub fn file_name(self) -> String {
        match self {
            KeyVariable::Pk | KeyVariable::Kek => format!("{}-{EFI_GLOBAL_GUID}", self.name()),
            KeyVariable::Db => format!("db-{EFI_IMAGE_SECURITY_DATABASE_GUID}"),
        }
    }
}

/// The certificates the policy allows in each Secure Boot key variable (`[secure_boot_keys]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBootKeys {
    pub pk: Vec<CertFingerprint>,
    pub kek: Vec<CertFingerprint>,
    pub db: Vec<CertFingerprint>,
}

impl SecureBootKeys {
    pub fn allowed(&self, variable: KeyVariable) -> &[CertFingerprint] {
        match variable {
            KeyVariable::Pk => &self.pk,
            KeyVariable::Kek => &self.kek,
            KeyVariable::Db => &self.db,
        }
    }
}

/// One entry of a UEFI signature list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureEntry {
    /// An X.509 certificate, by the sha256 of its DER encoding.
    X509(CertFingerprint),
    /// Anything else (a sha256 hash of one binary, ...), by its signature type GUID.
    Other { signature_type: String },
}

/// What the firmware has enrolled in PK, KEK and db.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledKeys {
    pub pk: Vec<SignatureEntry>,
    pub kek: Vec<SignatureEntry>,
    pub db: Vec<SignatureEntry>,
}

impl EnrolledKeys {
    pub fn entries(&self, variable: KeyVariable) -> &[SignatureEntry] {
        match variable {
            KeyVariable::Pk => &self.pk,
            KeyVariable::Kek => &self.kek,
            KeyVariable::Db => &self.db,
        }
    }
}

/// The outcome of a key check that did not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// The policy pins no keys (no `[secure_boot_keys]`): any enrolled keys are accepted.
    NotPinned,
    /// Every enrolled PK, KEK and db certificate is one the policy lists.
    Pinned,
}

/// The file as written on disk. Kept separate from [`FirmwarePolicy`] so that a parsed policy
/// is always a validated one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy_version: u32,
    pcr_bank: PcrBank,
    pcrs: Vec<u8>,
    secure_boot: SecureBootRequirement,
    on_tpm_refusal: OnTpmRefusal,
    #[serde(default)]
    secure_boot_keys: Option<SecureBootKeysFile>,
    #[serde(default)]
    signed_pcr11: Option<SignedPcr11File>,
}

/// `[signed_pcr11]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedPcr11File {
    public_key: String,
}

/// The volume key is also bound to PCR 11 (the booted unified kernel image), not to one value of
/// it but to any value the fleet's PCR-signing key signed (TPM2_PolicyAuthorize, as
/// `systemd-cryptenroll --tpm2-public-key` does). A new signed kernel image then unlocks without
/// a reseal; an unsigned one does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPcr11 {
    /// The PCR-signing public key (RSA, PEM), the one the image build embeds in each UKI as
    /// `.pcrpkey`. Read when the key is sealed; the seal then carries the key itself.
    pub public_key: PathBuf,
}

/// `[secure_boot_keys]` as written: sha256 fingerprints of the allowed certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecureBootKeysFile {
    pk: Vec<String>,
    kek: Vec<String>,
    db: Vec<String>,
}

impl SecureBootKeysFile {
    fn validate(self) -> Result<SecureBootKeys, PolicyError> {
        let list = |field: &'static str, values: Vec<String>| -> Result<Vec<CertFingerprint>, PolicyError> {
            if values.is_empty() {
                return Err(PolicyError::Invalid {
                    field,
                    reason: "the list is empty; name at least one certificate, or leave out \
                             [secure_boot_keys] to pin no keys"
                        .into(),
                });
            }
            values
                .iter()
                .map(|v| {
                    CertFingerprint::parse(v).ok_or_else(|| PolicyError::Invalid {
                        field,
                        reason: format!("`{v}` is not a sha256 fingerprint (64 hex digits)"),
                    })
                })
                .collect()
        };
        Ok(SecureBootKeys {
            pk: list("secure_boot_keys.pk", self.pk)?,
            kek: list("secure_boot_keys.kek", self.kek)?,
            db: list("secure_boot_keys.db", self.db)?,
        })
    }
}

impl SignedPcr11File {
    fn validate(self, binding: &PcrBinding) -> Result<SignedPcr11, PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid { field: "signed_pcr11.public_key", reason };
        if !self.public_key.starts_with('/') {
            return Err(invalid(format!("`{}` is not an absolute path", self.public_key)));
        }
        if binding.pcrs().contains(&UKI_PCR) {
            return Err(PolicyError::Invalid {
                field: "pcrs",
                reason: "PCR 11 is listed in `pcrs` and in [signed_pcr11]: a literal PCR 11 binds the \
                         key to one kernel image, so every update would need a reseal; remove 11 from \
                         `pcrs`"
                    .into(),
            });
        }
        if binding.bank() != PcrBank::Sha256 {
            return Err(PolicyError::Invalid {
                field: "pcr_bank",
                reason: format!(
                    "[signed_pcr11] needs pcr_bank = \"sha256\" (the bank the image build signs), not {}",
                    binding.bank()
                ),
            });
        }
        Ok(SignedPcr11 { public_key: PathBuf::from(self.public_key) })
    }
}

/// A validated firmware policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwarePolicy {
    /// The PCRs (and bank) the volume key is sealed against.
    pub binding: PcrBinding,
    /// Whether the boot may go on with Secure Boot off.
    pub secure_boot: SecureBootRequirement,
    /// What to do when the TPM refuses the key (always recovery only).
    pub on_tpm_refusal: OnTpmRefusal,
    /// The Secure Boot certificates the firmware may hold; `None`: not pinned.
    pub secure_boot_keys: Option<SecureBootKeys>,
    /// Also bind the key to PCR 11 through a signed policy; `None`: the literal PCRs only.
    pub signed_pcr11: Option<SignedPcr11>,
}

impl FirmwarePolicy {
    /// The policy shipped in `default.toml`: sha256 PCR 7, Secure Boot required.
    pub fn shipped_default() -> Self {
        // The shipped file is part of this crate and covered by a unit test; failing to parse it
        // is a build defect, not a runtime condition.
        #[allow(clippy::expect_used)]
        Self::from_toml_str(DEFAULT_POLICY_TOML, "default.toml (built in)")
            .expect("the built-in default.toml is valid")
    }

    /// Parse and validate policy text. `origin` names the source in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            origin: origin.to_string(),
            message: e.message().to_string(),
        })?;
        if file.policy_version != 1 {
            return Err(PolicyError::Invalid {
                field: "policy_version",
                reason: format!("version {} is not known; this agent reads version 1", file.policy_version),
            });
        }
        let binding = PcrBinding::new(file.pcr_bank, &file.pcrs)?;
        let secure_boot_keys = file.secure_boot_keys.map(SecureBootKeysFile::validate).transpose()?;
        let signed_pcr11 = file.signed_pcr11.map(|s| SignedPcr11File::validate(s, &binding)).transpose()?;
        Ok(FirmwarePolicy {
            binding,
            secure_boot: file.secure_boot,
            on_tpm_refusal: file.on_tpm_refusal,
            secure_boot_keys,
            signed_pcr11,
        })
    }

    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Read { path: path.display().to_string(), source })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The boot decision: may the TPM key be used given the observed Secure Boot state.
    /// `Unknown` (no EFI variables, or unreadable) counts as off when Secure Boot is required:
    /// failing closed is the point of the policy.
    pub fn check_secure_boot(&self, observed: SecureBootState) -> Result<(), PolicyError> {
        match (self.secure_boot, observed) {
            (SecureBootRequirement::NotRequired, _) | (SecureBootRequirement::Required, SecureBootState::Enabled) => {
                Ok(())
            }
            (SecureBootRequirement::Required, observed) => Err(PolicyError::SecureBootRequired { observed }),
        }
    }

    /// The key decision: when the policy pins Secure Boot keys, every entry of PK, KEK and db
    /// must be a certificate the policy lists for that variable, and none may be empty. An
    /// extra KEK could rewrite db, an extra db certificate could sign a kernel, and a hash entry
    /// lets one binary run that no pinned key signed: each is refused.
    pub fn check_secure_boot_keys(&self, enrolled: &EnrolledKeys) -> Result<KeyCheck, PolicyError> {
        let Some(pinned) = &self.secure_boot_keys else {
            return Ok(KeyCheck::NotPinned);
        };
        for variable in KeyVariable::ALL {
            let entries = enrolled.entries(variable);
            let refuse = |reason: String| PolicyError::KeysNotPinned { variable: variable.name(), reason };
            if entries.is_empty() {
                return Err(refuse("is empty (the firmware is in setup mode, or the keys were cleared)".into()));
            }
            for entry in entries {
                match entry {
                    SignatureEntry::X509(fp) if pinned.allowed(variable).contains(fp) => {}
                    SignatureEntry::X509(fp) => {
                        return Err(refuse(format!("holds the certificate {fp}, which the policy does not list")));
                    }
                    SignatureEntry::Other { signature_type } => {
                        return Err(refuse(format!(
                            "holds an entry of type {signature_type}, not a certificate (the policy pins certificates only)"
                        )));
                    }
                }
            }
        }
        Ok(KeyCheck::Pinned)
    }
}

/// Read PK, KEK and db from an efivars directory (normally [`DEFAULT_EFIVARS_DIR`]). A variable
/// that does not exist reads as empty (no keys enrolled); one that cannot be read or decoded
/// is an error.
pub fn read_enrolled_keys(efivars_dir: &Path) -> Result<EnrolledKeys, PolicyError> {
    let read = |variable: KeyVariable| -> Result<Vec<SignatureEntry>, PolicyError> {
        let path = efivars_dir.join(variable.file_name());
        let unreadable = |reason: String| PolicyError::KeysUnreadable { variable: variable.name(), reason };
        match std::fs::read(&path) {
            // efivarfs: 4 bytes of attributes, then the value.
            Ok(bytes) if bytes.len() >= 4 => {
                decode_signature_lists(&bytes[4..]).map_err(|e| unreadable(format!("{}: {e}", path.display())))
            }
            Ok(_) => Err(unreadable(format!("{} is shorter than its attributes", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if efivars_dir.is_dir() {
                    Ok(Vec::new())
                } else {
                    Err(unreadable(format!("{} does not exist: not booted through UEFI", efivars_dir.display())))
                }
            }
            Err(e) => Err(unreadable(format!("cannot read {}: {e}", path.display()))),
        }
    };
    Ok(EnrolledKeys { pk: read(KeyVariable::Pk)?, kek: read(KeyVariable::Kek)?, db: read(KeyVariable::Db)? })
}

/// Decode a UEFI signature database (a sequence of `EFI_SIGNATURE_LIST`s: type GUID, list size,
/// header size, entry size, header, then entries of owner GUID + data).
pub fn decode_signature_lists(mut data: &[u8]) -> Result<Vec<SignatureEntry>, String> {
    let u32_at = |b: &[u8], at: usize| -> u32 { u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) };
    let mut entries = Vec::new();
    while !data.is_empty() {
        if data.len() < 28 {
            return Err(format!("a signature list header is cut short ({} bytes left)", data.len()));
        }
        let signature_type: [u8; 16] = data[..16].try_into().map_err(|_| "bad signature type")?;
        let list_size = u32_at(data, 16) as usize;
        let header_size = u32_at(data, 20) as usize;
        let entry_size = u32_at(data, 24) as usize;
        if list_size < 28 || list_size > data.len() {
            return Err(format!("a signature list claims {list_size} bytes, {} are there", data.len()));
        }
        let body = &data[28..list_size];
        if entry_size <= 16 || header_size > body.len() || !(body.len() - header_size).is_multiple_of(entry_size) {
            return Err(format!(
                "a signature list's sizes do not add up (list {list_size}, header {header_size}, entry {entry_size})"
            ));
        }
        for entry in body[header_size..].chunks_exact(entry_size) {
            // 16 bytes of owner GUID, then the signature data.
            let payload = &entry[16..];
            entries.push(if signature_type == EFI_CERT_X509_GUID {
                SignatureEntry::X509(CertFingerprint::of_der(payload))
            } else {
                SignatureEntry::Other { signature_type: guid_to_string(&signature_type) }
            });
        }
        data = &data[list_size..];
    }
    Ok(entries)
}

/// A GUID in its textual form, from its mixed-endian storage.
fn guid_to_string(g: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}-{}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        hex::encode(&g[8..10]),
        hex::encode(&g[10..16])
    )
}

/// What the firmware reports about Secure Boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureBootState {
    Enabled,
    Disabled,
    /// No EFI variables (legacy BIOS boot, container) or the variable could not be read.
    Unknown(String),
}

impl std::fmt::Display for SecureBootState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecureBootState::Enabled => f.write_str("Secure Boot is on"),
            SecureBootState::Disabled => f.write_str("the firmware reports Secure Boot off"),
            SecureBootState::Unknown(why) => write!(f, "the Secure Boot state cannot be read ({why})"),
        }
    }
}

/// Read the `SecureBoot` UEFI variable from an efivars directory
/// (normally [`DEFAULT_EFIVARS_DIR`]). The file holds 4 bytes of attributes then one data byte:
/// 1 means on.
pub fn read_secure_boot_state(efivars_dir: &Path) -> SecureBootState {
    let path = efivars_dir.join(format!("SecureBoot-{EFI_GLOBAL_GUID}"));
    match std::fs::read(&path) {
        Ok(bytes) => decode_secure_boot_var(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            SecureBootState::Unknown(format!("{} does not exist: not booted through UEFI", path.display()))
        }
        Err(e) => SecureBootState::Unknown(format!("cannot read {}: {e}", path.display())),
    }
}

/// The vendor GUID of systemd-boot's variables (the Boot Loader Interface).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// The boot entry systemd-boot started this boot (its `LoaderEntrySelected` variable: for a
/// unified kernel image, its file name under `EFI/Linux` as it was before this boot's try was
/// counted, e.g. `wardbox-0.1.0+3.efi`). None when the variable is absent (no systemd-boot) or
/// not a UTF-16 string.
pub fn read_loader_entry_selected(efivars_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(efivars_dir.join(format!("LoaderEntrySelected-{LOADER_GUID}"))).ok()?;
    decode_loader_string(&bytes)
}

/// Where Linux shows the TPM's sha256 PCRs (one file per PCR, hex), readable without a TPM
/// session or access to the TPM device.
pub const DEFAULT_TPM_PCR_DIR: &str = "/sys/class/tpm/tpm0/pcr-sha256";

/// The measured boot as the running system sees it: the Secure Boot state, the boot entry
/// systemd-boot started, and PCR 7 (Secure Boot state and keys) and PCR 11 (the UKI), for
/// `wardbox status` and the compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeasuredBoot {
    /// "on", "off", or why it is unknown.
    pub secure_boot: String,
    /// `LoaderEntrySelected`; None when systemd-boot did not start this boot.
    pub boot_entry: Option<String>,
    /// sha256 PCR 7 and 11 in lower-case hex; None when the kernel shows no TPM.
    pub pcr7: Option<String>,
    pub pcr11: Option<String>,
}

impl MeasuredBoot {
    pub fn read(efivars_dir: &Path, pcr_dir: &Path) -> Self {
        let pcr = |n: u8| {
            std::fs::read_to_string(pcr_dir.join(n.to_string()))
                .ok()
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit()))
        };
        MeasuredBoot {
            secure_boot: match read_secure_boot_state(efivars_dir) {
                SecureBootState::Enabled => "on".into(),
                SecureBootState::Disabled => "off".into(),
                SecureBootState::Unknown(why) => format!("unknown ({why})"),
            },
            boot_entry: read_loader_entry_selected(efivars_dir),
            pcr7: pcr(7),
            pcr11: pcr(11),
        }
    }
}

impl std::fmt::Display for MeasuredBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = "-";
        write!(
            f,
            "Secure Boot {}; boot entry {}; PCR 7 {}; PCR 11 {}",
            self.secure_boot,
            self.boot_entry.as_deref().unwrap_or("none (not started by systemd-boot)"),
            self.pcr7.as_deref().unwrap_or(none),
            self.pcr11.as_deref().unwrap_or(none)
        )
    }
}

/// Decode an efivars file that holds a UTF-16LE string (4 bytes of attributes first; the
/// string may end with a NUL).
pub fn decode_loader_string(bytes: &[u8]) -> Option<String> {
    let data = bytes.get(4..)?;
    if data.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    String::from_utf16(&units).ok().filter(|s| !s.is_empty())
}

/// Decode the contents of the `SecureBoot` efivars file.
pub fn decode_secure_boot_var(bytes: &[u8]) -> SecureBootState {
    match bytes {
        [_, _, _, _, 1] => SecureBootState::Enabled,
        [_, _, _, _, 0] => SecureBootState::Disabled,
        other => SecureBootState::Unknown(format!(
            "the SecureBoot variable has an unexpected form ({} bytes)",
            other.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The file name Linux gives the variable, as the UEFI specification defines its GUID
    /// (EFI_GLOBAL_VARIABLE, 8BE4DF61-93CA-11D2-AA0D-00E098032B8C). A wrong GUID makes every
    /// real box read Secure Boot as unknown, which the appliance treats as off.
    #[test]
    fn secure_boot_is_read_from_the_efi_global_variable_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(read_secure_boot_state(dir.path()), SecureBootState::Enabled);
    }

    /// systemd-boot writes `LoaderEntrySelected` as UTF-16LE with a final NUL, after the four
    /// attribute bytes efivarfs puts first.
    #[test]
    fn the_selected_boot_entry_is_read_from_systemd_boots_variable() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![6, 0, 0, 0];
        for u in "wardbox-0.1.0+3.efi".encode_utf16().chain([0]) {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(dir.path().join(format!("LoaderEntrySelected-{LOADER_GUID}")), bytes).unwrap();
        assert_eq!(read_loader_entry_selected(dir.path()).as_deref(), Some("wardbox-0.1.0+3.efi"));
        assert_eq!(read_loader_entry_selected(&dir.path().join("absent")), None);
        assert_eq!(decode_loader_string(&[6, 0, 0, 0, b'w']), None, "an odd length is not UTF-16");
        assert_eq!(decode_loader_string(&[6, 0, 0]), None);
    }

    #[test]
    fn the_measured_boot_is_read_from_efivars_and_the_kernels_pcr_files() {
        let dir = tempfile::tempdir().unwrap();
        let (efivars, pcrs) = (dir.path().join("efivars"), dir.path().join("pcr-sha256"));
        std::fs::create_dir_all(&efivars).unwrap();
        std::fs::create_dir_all(&pcrs).unwrap();
        std::fs::write(efivars.join(format!("SecureBoot-{EFI_GLOBAL_GUID}")), [6, 0, 0, 0, 1]).unwrap();
        let mut entry = vec![6, 0, 0, 0];
        entry.extend("wardbox-1.efi\0".encode_utf16().flat_map(u16::to_le_bytes));
        std::fs::write(efivars.join(format!("LoaderEntrySelected-{LOADER_GUID}")), entry).unwrap();
        std::fs::write(pcrs.join("7"), "AB01\n").unwrap();
        let boot = MeasuredBoot::read(&efivars, &pcrs);
        assert_eq!(boot.secure_boot, "on");
        assert_eq!(boot.boot_entry.as_deref(), Some("wardbox-1.efi"));
        assert_eq!(boot.pcr7.as_deref(), Some("ab01"));
        assert_eq!(boot.pcr11, None);
        assert_eq!(boot.to_string(), "Secure Boot on; boot entry wardbox-1.efi; PCR 7 ab01; PCR 11 -");
        let nothing = MeasuredBoot::read(&dir.path().join("no-efivars"), &dir.path().join("no-tpm"));
        assert!(nothing.secure_boot.starts_with("unknown ("), "{nothing:?}");
        assert_eq!((nothing.boot_entry, nothing.pcr7), (None, None));
    }

    #[test]
    fn shipped_default_is_sha256_pcr7_secure_boot_required() {
        let p = FirmwarePolicy::shipped_default();
        assert_eq!(p.binding.bank(), PcrBank::Sha256);
        assert_eq!(p.binding.pcrs(), &[7]);
        assert_eq!(p.secure_boot, SecureBootRequirement::Required);
        assert_eq!(p.on_tpm_refusal, OnTpmRefusal::RecoveryOnly);
        assert_eq!(p.secure_boot_keys, None, "the shipped policy cannot know a fleet's keys; the image build pins them");
    }

    fn parse(text: &str) -> Result<FirmwarePolicy, PolicyError> {
        FirmwarePolicy::from_toml_str(text, "test")
    }

    const BASE: &str = "policy_version = 1\npcr_bank = \"sha256\"\nsecure_boot = \"required\"\non_tpm_refusal = \"recovery-only\"\n";

    #[test]
    fn extra_pcrs_are_sorted() {
        let p = parse(&format!("{BASE}pcrs = [11, 7]\n")).unwrap();
        assert_eq!(p.binding.pcrs(), &[7, 11]);
        assert_eq!(p.binding.to_string(), "sha256 PCRs 7,11");
    }

    #[test]
    fn bad_policies_are_refused_with_the_field_named() {
        let with_pcr7 = format!("{BASE}pcrs = [7]\n");
        let cases: Vec<(String, &str)> = vec![
            (format!("{BASE}pcrs = []\n"), "`pcrs`"),
            (format!("{BASE}pcrs = [24]\n"), "PCR 24 does not exist"),
            (format!("{BASE}pcrs = [7, 7]\n"), "names a PCR twice"),
            (with_pcr7.replace("recovery-only", "unlock-without-key"), "unlock-without-key"),
            (with_pcr7.replace("sha256", "md5"), "md5"),
            (with_pcr7.replace("policy_version = 1", "policy_version = 2"), "policy_version"),
            (format!("{with_pcr7}allow_plain = true\n"), "allow_plain"),
            ("pcrs = [7]\n".to_string(), "policy_version"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "error for {text:?} was {err:?}, expected it to mention {needle}");
        }
    }

    #[test]
    fn signed_pcr11_is_optional_and_checked() {
        assert_eq!(FirmwarePolicy::shipped_default().signed_pcr11, None);
        let text = format!("{BASE}pcrs = [7]\n[signed_pcr11]\npublic_key = \"/usr/share/wardbox/pcr-sign.pub.pem\"\n");
        let p = parse(&text).unwrap();
        assert_eq!(
            p.signed_pcr11,
            Some(SignedPcr11 { public_key: PathBuf::from("/usr/share/wardbox/pcr-sign.pub.pem") })
        );
        let cases: Vec<(String, &str)> = vec![
            (text.replace("/usr/share", "usr/share"), "not an absolute path"),
            (text.replace("pcrs = [7]", "pcrs = [7, 11]"), "remove 11 from `pcrs`"),
            (text.replace("\"sha256\"", "\"sha1\""), "needs pcr_bank = \"sha256\""),
            (format!("{text}signature = \"/x\"\n"), "signature"),
            (format!("{BASE}pcrs = [7]\n[signed_pcr11]\n"), "public_key"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "error for {text:?} was {err:?}, expected it to mention {needle}");
        }
    }

    #[test]
    fn secure_boot_decision_fails_closed() {
        let p = FirmwarePolicy::shipped_default();
        assert!(p.check_secure_boot(SecureBootState::Enabled).is_ok());
        assert!(p.check_secure_boot(SecureBootState::Disabled).is_err());
        let unknown = p.check_secure_boot(SecureBootState::Unknown("no efivars".into())).unwrap_err();
        assert!(unknown.to_string().contains("cannot be read"), "{unknown}");
        let lab = FirmwarePolicy { secure_boot: SecureBootRequirement::NotRequired, ..p };
        assert!(lab.check_secure_boot(SecureBootState::Disabled).is_ok());
    }

    #[test]
    fn secure_boot_variable_is_read_from_the_given_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_secure_boot_state(dir.path()), SecureBootState::Unknown(_)));
        let var = dir.path().join(format!("SecureBoot-{EFI_GLOBAL_GUID}"));
        std::fs::write(&var, [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(read_secure_boot_state(dir.path()), SecureBootState::Enabled);
        std::fs::write(&var, [6, 0, 0, 0, 0]).unwrap();
        assert_eq!(read_secure_boot_state(dir.path()), SecureBootState::Disabled);
        std::fs::write(&var, [6, 0]).unwrap();
        assert!(matches!(read_secure_boot_state(dir.path()), SecureBootState::Unknown(_)));
    }

    /// An `EFI_SIGNATURE_LIST` of `signature_type` holding `payloads` (each with an owner
    /// GUID), laid out as the UEFI specification (and OVMF) store it.
    /// All payloads of one list have the same size, as in a real list.
    fn signature_list(signature_type: [u8; 16], payloads: &[&[u8]]) -> Vec<u8> {
        let entry_size = 16 + payloads[0].len();
        let mut out = signature_type.to_vec();
        out.extend(u32::try_from(28 + entry_size * payloads.len()).unwrap().to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(u32::try_from(entry_size).unwrap().to_le_bytes());
        for payload in payloads {
            out.extend([0x5a; 16]);
            out.extend(*payload);
        }
        out
    }

    /// An efivars tree with PK, KEK and db holding the given lists (attributes first).
    fn efivars(pk: &[u8], kek: &[u8], db: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (variable, value) in [(KeyVariable::Pk, pk), (KeyVariable::Kek, kek), (KeyVariable::Db, db)] {
            let mut bytes = vec![0x27, 0, 0, 0];
            bytes.extend(value);
            std::fs::write(dir.path().join(variable.file_name()), bytes).unwrap();
        }
        dir
    }

    const PK_CERT: &[u8] = b"pk certificate DER";
    const KEK_CERT: &[u8] = b"kek certificate DER";
    const DB_CERT: &[u8] = b"db certificate DER";
    /// EFI_CERT_SHA256_GUID (c1c41626-504c-4092-aca9-41f936934328), stored mixed-endian.
    const SHA256_TYPE: [u8; 16] =
        [0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28];

    fn pinned_policy() -> FirmwarePolicy {
        let fp = |der: &[u8]| CertFingerprint::of_der(der).to_string();
        parse(&format!(
            "{BASE}pcrs = [7]\n[secure_boot_keys]\npk = [\"{}\"]\nkek = [\"{}\"]\ndb = [\"{}\", \"{}\"]\n",
            fp(PK_CERT),
            fp(KEK_CERT),
            fp(DB_CERT),
            fp(b"next year's db certificate").to_uppercase()
        ))
        .unwrap()
    }

    #[test]
    fn the_x509_type_guid_is_stored_mixed_endian() {
        assert_eq!(guid_to_string(&EFI_CERT_X509_GUID), "a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
        assert_eq!(guid_to_string(&SHA256_TYPE), "c1c41626-504c-4092-aca9-41f936934328");
    }

    #[test]
    fn fingerprints_are_the_sha256_of_the_der_certificate() {
        // sha256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            CertFingerprint::of_der(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn enrolled_keys_that_the_policy_pins_are_accepted() {
        let dir = efivars(
            &signature_list(EFI_CERT_X509_GUID, &[PK_CERT]),
            &signature_list(EFI_CERT_X509_GUID, &[KEK_CERT]),
            &signature_list(EFI_CERT_X509_GUID, &[DB_CERT]),
        );
        let enrolled = read_enrolled_keys(dir.path()).unwrap();
        assert_eq!(enrolled.db, vec![SignatureEntry::X509(CertFingerprint::of_der(DB_CERT))]);
        assert_eq!(pinned_policy().check_secure_boot_keys(&enrolled).unwrap(), KeyCheck::Pinned);
        assert_eq!(FirmwarePolicy::shipped_default().check_secure_boot_keys(&enrolled).unwrap(), KeyCheck::NotPinned);
    }

    #[test]
    fn keys_the_policy_does_not_pin_are_refused_naming_the_variable() {
        let pk = signature_list(EFI_CERT_X509_GUID, &[PK_CERT]);
        let kek = signature_list(EFI_CERT_X509_GUID, &[KEK_CERT]);
        let db = signature_list(EFI_CERT_X509_GUID, &[DB_CERT]);
        let foreign = b"someone else's certificate";
        let mut db_plus_foreign = db.clone();
        db_plus_foreign.extend(signature_list(EFI_CERT_X509_GUID, &[foreign]));
        let mut db_plus_hash = db.clone();
        db_plus_hash.extend(signature_list(SHA256_TYPE, &[&[7u8; 32]]));
        let mut kek_plus_foreign = kek.clone();
        kek_plus_foreign.extend(signature_list(EFI_CERT_X509_GUID, &[foreign]));
        let foreign_fp = CertFingerprint::of_der(foreign).to_string();
        let cases: Vec<(tempfile::TempDir, &str, &str)> = vec![
            (efivars(&pk, &kek, &db_plus_foreign), "Secure Boot db", foreign_fp.as_str()),
            (efivars(&pk, &kek_plus_foreign, &db), "Secure Boot KEK", foreign_fp.as_str()),
            (efivars(&signature_list(EFI_CERT_X509_GUID, &[foreign]), &kek, &db), "Secure Boot PK", foreign_fp.as_str()),
            (efivars(&pk, &kek, &db_plus_hash), "Secure Boot db", "c1c41626-504c-4092-aca9-41f936934328"),
            // Setup mode: no PK at all.
            (efivars(&[], &kek, &db), "Secure Boot PK", "is empty"),
        ];
        for (dir, variable, detail) in cases {
            let enrolled = read_enrolled_keys(dir.path()).unwrap();
            let err = pinned_policy().check_secure_boot_keys(&enrolled).unwrap_err().to_string();
            assert!(err.contains(variable) && err.contains(detail), "expected {variable} and {detail} in: {err}");
        }
    }

    #[test]
    fn unreadable_key_variables_are_errors_not_empty_lists() {
        let pk = signature_list(EFI_CERT_X509_GUID, &[PK_CERT]);
        let cut = &pk[..pk.len() - 3];
        let dir = efivars(cut, &pk, &pk);
        let err = read_enrolled_keys(dir.path()).unwrap_err().to_string();
        assert!(err.contains("Secure Boot PK cannot be read"), "{err}");
        let err = read_enrolled_keys(Path::new("/nonexistent/efivars")).unwrap_err().to_string();
        assert!(err.contains("not booted through UEFI"), "{err}");
    }

    #[test]
    fn pinned_key_lists_are_validated() {
        let good = CertFingerprint::of_der(b"x").to_string();
        let cases = [
            (format!("pk = []\nkek = [\"{good}\"]\ndb = [\"{good}\"]\n"), "secure_boot_keys.pk"),
            (format!("pk = [\"{good}\"]\nkek = [\"abc\"]\ndb = [\"{good}\"]\n"), "secure_boot_keys.kek"),
            (format!("pk = [\"{good}\"]\nkek = [\"{good}\"]\n"), "db"),
            (format!("pk = [\"{good}\"]\nkek = [\"{good}\"]\ndb = [\"{good}\"]\ndbx = []\n"), "dbx"),
        ];
        for (keys, needle) in cases {
            let err = parse(&format!("{BASE}pcrs = [7]\n[secure_boot_keys]\n{keys}")).unwrap_err().to_string();
            assert!(err.contains(needle), "error for {keys:?} was {err:?}, expected it to mention {needle}");
        }
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = FirmwarePolicy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/policy.toml"), "{err}");
    }
}
