//! The firmware policy: which TPM PCRs bind the data-volume key, whether Secure Boot must be on,
//! and what the box does when the TPM refuses to release the key.
//!
//! The policy is a small TOML file (`default.toml` beside this crate is the shipped default).
//! Everything here is pure: parsing, validation, and the decision "may the boot go on given
//! this Secure Boot state". Reading the firmware's Secure Boot variable is one small function
//! that takes the efivars directory as a parameter, so tests point it at a temporary tree.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The policy file shipped with the image, compiled in so the agent always has one.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../default.toml");

/// Where Linux exposes UEFI variables.
pub const DEFAULT_EFIVARS_DIR: &str = "/sys/firmware/efi/efivars";

/// The UEFI global variable GUID that `SecureBoot` lives under.
const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The highest PCR index a TPM 2.0 PC client implements (24 PCRs, 0..=23).
pub const MAX_PCR: u8 = 23;

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
        Ok(FirmwarePolicy { binding, secure_boot: file.secure_boot, on_tpm_refusal: file.on_tpm_refusal })
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

    #[test]
    fn shipped_default_is_sha256_pcr7_secure_boot_required() {
        let p = FirmwarePolicy::shipped_default();
        assert_eq!(p.binding.bank(), PcrBank::Sha256);
        assert_eq!(p.binding.pcrs(), &[7]);
        assert_eq!(p.secure_boot, SecureBootRequirement::Required);
        assert_eq!(p.on_tpm_refusal, OnTpmRefusal::RecoveryOnly);
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

    #[test]
    fn load_names_a_missing_file() {
        let err = FirmwarePolicy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/policy.toml"), "{err}");
    }
}
