//! Sealing the TPM keyslot secret under a PCR policy, and unsealing it at boot.
//!
//! Shape of the seal:
//! - a primary storage key (ECC P-256, the TCG storage-key template) is created in the owner
//!   hierarchy on every use. The same template on the same TPM gives the same key, so nothing is
//!   persisted in TPM NV memory and nothing is left behind;
//! - the secret is a keyed-hash "sealed data" object under it whose only authorisation is a
//!   policy: PolicyPCR over the firmware policy's PCRs, with their values at seal time; with a
//!   signed PCR 11 policy ([`PcrPolicy::signed_pcr11`]) it is PolicyAuthorize(the PCR-signing
//!   key) followed by that PolicyPCR, as `systemd-cryptenroll --tpm2-public-key` makes it: at
//!   unseal, PolicyPCR(11) over the current value, TPM2_VerifySignature of the signature the
//!   booted UKI shipped for that value (a ticket), then PolicyAuthorize with the ticket, then
//!   PolicyPCR over the literal PCRs;
//! - the object's public and private parts (the private part is encrypted by the TPM and useless
//!   elsewhere) are kept in a [`SealedBlob`] with a version header and a checksum, stored in the
//!   LUKS2 token so the volume describes itself.
//!
//! There may be no resource manager (`/dev/tpm0`, swtpm): every transient object and session
//! this module creates is flushed before the call returns, on the error paths too. The swtpm
//! tests check that the TPM holds no transient handles or sessions after 100 cycles.
//!
//! Sessions that carry the secret are salted with the primary key, so the secret is encrypted
//! on the bus between the CPU and the TPM (TPM2_Create's input, TPM2_Unseal's output).

use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tss_esapi::{
    Context, TctiNameConf,
    attributes::{ObjectAttributesBuilder, SessionAttributesBuilder},
    constants::{
        CapabilityType, SessionType,
        response_code::Tss2ResponseCodeKind,
        tss::{TPM2_LOADED_SESSION_FIRST, TPM2_RH_OWNER, TPM2_ST_VERIFIED, TPM2_TRANSIENT_FIRST},
    },
    handles::{KeyHandle, ObjectHandle, PcrHandle, SessionHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, PublicAlgorithm},
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        resource_handles::Hierarchy,
        session_handles::{AuthSession, PolicySession},
    },
    structures::{
        CapabilityData, Digest, DigestValues, EccPoint, KeyedHashScheme, Name, Nonce, PcrSelectionList,
        PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder,
        PublicKeyRsa, PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
        RsaSignature, SensitiveData, Signature, SymmetricDefinition, SymmetricDefinitionObject,
        VerifiedTicket,
    },
    traits::{Marshall, UnMarshall},
    tss2_esys::TPMT_TK_VERIFIED,
};
use wardbox_firmware_policy::{FirmwarePolicy, PcrBank, PcrBinding};

use crate::keys::{KeyError, TpmSecret};
use crate::pcrsig::{DEFAULT_SIGNATURE_PATHS, PcrSigError, PcrSignatures, PcrSigningKey, SIGNED_PCR, SignatureMiss};

/// Errors talking to the TPM or reading a sealed blob.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string is not one this agent accepts.
    #[error(
        "the TPM connection string {tcti:?} is not valid: {reason} (expected \
         \"device:/dev/tpmrm0\" on the appliance or \"swtpm:host=127.0.0.1,port=2321\" for a software TPM)"
    )]
    WrongTcti { tcti: String, reason: String },
    /// Nothing answered at the configured TPM.
    #[error(
        "no TPM answered at {tcti:?}: {detail}. On the appliance, check that the TPM is enabled in \
         the firmware setup and that /dev/tpmrm0 exists; in development, check that swtpm runs"
    )]
    NoTpm { tcti: String, detail: String },
    /// The PCRs differ from their values at seal time: the TPM refused the key.
    #[error(
        "the boot chain changed since the key was sealed ({binding} differ from their sealed \
         values): the TPM refuses to release the volume key. Use the recovery key \
         (`wardbox volume recover`), then `wardbox volume reseal` if the change was legitimate \
         (for example a firmware update)"
    )]
    PcrMismatch { binding: String },
    /// PCRs were extended during every unseal attempt (TPM_RC_PCR_CHANGED each time).
    #[error(
        "the TPM could not check the volume key's PCR policy: PCRs were extended while it checked, \
         {attempts} times in a row (something on this box is measuring continuously). This is not a \
         changed boot chain; reboot, and if it persists, look for what extends PCRs (IMA policy)"
    )]
    PcrsKeptChanging { attempts: u32 },
    /// The sealed blob is damaged or not a blob at all.
    #[error("the sealed TPM key is damaged ({reason}); use the recovery key, then `wardbox volume reseal`")]
    CorruptBlob { reason: String },
    /// The TPM rejected the blob's integrity: altered, or sealed by another TPM.
    #[error(
        "this TPM rejects the sealed key: it was sealed by another TPM, the TPM was cleared, or the \
         key was altered ({detail}); use the recovery key, then `wardbox volume reseal`"
    )]
    NotThisTpm { detail: String },
    /// A TPM command failed for another reason.
    #[error("the TPM command {op} failed: {source}")]
    Command { op: &'static str, source: tss_esapi::Error },
    /// PCR 11 (the booted kernel image) holds a value the sealed PCR-signing key did not sign,
    /// or no signature is at hand: the TPM would refuse, so it is not asked.
    #[error(
        "the TPM will not release the volume key: {reason}. The key is bound to kernel images \
         signed by the PCR-signing key {key}; boot a signed image, or use the recovery key \
         (`wardbox volume recover`)"
    )]
    Pcr11NotSigned { key: String, reason: String },
    /// The signature for the current PCR 11 value does not verify with the sealed key.
    #[error(
        "the PCR 11 signature for this boot (in {files}) does not verify against the sealed \
         PCR-signing key {key}: it is forged or damaged, and the TPM refuses the volume key \
         ({detail}). Use the recovery key (`wardbox volume recover`)"
    )]
    PcrSignatureInvalid { key: String, files: String, detail: String },
    /// A PCR-signing key or signature file could not be read.
    #[error(transparent)]
    Signature(#[from] PcrSigError),
    /// Key material could not be made or had the wrong size.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { op, source }
}

/// Which TPM to talk to, checked before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TctiSpec {
    /// A TPM character device (`/dev/tpmrm0` with the kernel resource manager, or `/dev/tpm0`).
    Device(String),
    /// A software TPM over TCP (swtpm's TPM protocol).
    Swtpm { host: String, port: u16 },
}

/// Parse and check a TCTI string. Pure, so the accepted forms are unit-tested.
pub fn parse_tcti(tcti: &str) -> Result<TctiSpec, TpmError> {
    let wrong = |reason: &str| TpmError::WrongTcti { tcti: tcti.to_string(), reason: reason.to_string() };
    let (kind, rest) = tcti.split_once(':').ok_or_else(|| wrong("it has no \"kind:\" prefix"))?;
    match kind {
        "device" => {
            if !rest.starts_with('/') {
                return Err(wrong("the device must be an absolute path"));
            }
            Ok(TctiSpec::Device(rest.to_string()))
        }
        "swtpm" => {
            let mut host = None;
            let mut port = None;
            for part in rest.split(',').filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some(("host", h)) if !h.is_empty() => host = Some(h.to_string()),
                    Some(("port", p)) => {
                        port = Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| wrong("the port is not a number from 1 to 65535"))?)
                    }
                    _ => return Err(wrong(&format!("unknown setting {part:?}; use host= and port="))),
                }
            }
            Ok(TctiSpec::Swtpm {
                host: host.unwrap_or_else(|| "127.0.0.1".to_string()),
                port: port.ok_or_else(|| wrong("swtpm needs port=N"))?,
            })
        }
        other => Err(wrong(&format!("the kind {other:?} is not supported; use device or swtpm"))),
    }
}

impl TctiSpec {
    fn to_tcti_string(&self) -> String {
        match self {
            TctiSpec::Device(path) => format!("device:{path}"),
            TctiSpec::Swtpm { host, port } => format!("swtpm:host={host},port={port}"),
        }
    }
}

/// Where in an unseal attempt a test's interference runs ([`Tpm::unseal_with_interference_at`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsealStep {
    /// After PolicyPCR(11) and PolicyAuthorize of a signed PCR 11 policy, before PolicyPCR over
    /// the literal PCRs (not reached for a literal-only seal).
    AfterSignedPcr11,
    /// After the policy commands, before Unseal.
    BeforeUnseal,
}

/// How many policy sessions an unseal tries when PCRs are extended during the session
/// (TPM_RC_PCR_CHANGED); see [`Tpm::unseal`]. Module loads at boot come in bursts of a few.
pub const UNSEAL_ATTEMPTS: u32 = 8;

/// A PCR bank as the TPM names it.
fn hash_alg(bank: PcrBank) -> HashingAlgorithm {
    match bank {
        PcrBank::Sha1 => HashingAlgorithm::Sha1,
        PcrBank::Sha256 => HashingAlgorithm::Sha256,
        PcrBank::Sha384 => HashingAlgorithm::Sha384,
    }
}

fn selection(binding: &PcrBinding) -> Result<PcrSelectionList, TpmError> {
    let slots = binding
        .pcrs()
        .iter()
        .map(|p| PcrSlot::try_from(1u32 << p).map_err(cmd("PCR selection")))
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(hash_alg(binding.bank()), &slots)
        .build()
        .map_err(cmd("PCR selection"))
}

/// What a key is sealed to: literal PCR values, and optionally PCR 11 through a signed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrPolicy {
    /// PCRs that must hold their values at seal time (PolicyPCR).
    pub binding: PcrBinding,
    /// When set, PCR 11 must hold a value this key signed (PolicyAuthorize), whatever it was at
    /// seal time.
    pub signed_pcr11: Option<PcrSigningKey>,
}

impl From<&PcrBinding> for PcrPolicy {
    fn from(binding: &PcrBinding) -> Self {
        PcrPolicy { binding: binding.clone(), signed_pcr11: None }
    }
}

impl From<PcrBinding> for PcrPolicy {
    fn from(binding: PcrBinding) -> Self {
        PcrPolicy { binding, signed_pcr11: None }
    }
}

impl From<&PcrPolicy> for PcrPolicy {
    fn from(policy: &PcrPolicy) -> Self {
        policy.clone()
    }
}

impl PcrPolicy {
    /// The policy the firmware policy asks for; reads the PCR-signing public key it names.
    pub fn from_firmware(policy: &FirmwarePolicy) -> Result<Self, PcrSigError> {
        let signed_pcr11 = policy.signed_pcr11.as_ref().map(|s| PcrSigningKey::load(&s.public_key)).transpose()?;
        Ok(PcrPolicy { binding: policy.binding.clone(), signed_pcr11 })
    }

    /// The mode in words, for status output.
    pub fn mode(&self) -> &'static str {
        if self.signed_pcr11.is_some() { "literal PCRs + signed PCR 11" } else { "literal PCRs" }
    }
}

impl std::fmt::Display for PcrPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.binding)?;
        if let Some(key) = &self.signed_pcr11 {
            write!(f, " + PCR 11 signed by key {}", short_fingerprint(key))?;
        }
        Ok(())
    }
}

/// The first 16 hex digits of a key's fingerprint, for messages.
fn short_fingerprint(key: &PcrSigningKey) -> String {
    format!("{}…", &key.fingerprint_hex()[..16])
}

/// Whether the sealed key would unseal with the PCRs as they are now. Computed without
/// unsealing: the sealed object's policy digest is compared with a trial policy over the
/// current PCR values, so the secret never leaves the TPM for a status check. For a signed
/// PCR 11 policy the signature for the current PCR 11 value is also looked up and verified by
/// the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsealCheck {
    WouldUnseal,
    PcrsChanged,
    /// The literal PCRs match, but PCR 11 has no valid signature by the sealed key; says why.
    Pcr11NotSigned(String),
}

/// The sealed object, as stored in the LUKS2 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// The PCRs the object's policy covers with their seal-time values (also what the token shows).
    pub binding: PcrBinding,
    /// The PCR-signing key whose signatures PCR 11 must carry; `None` in format version 1.
    pub signed_pcr11: Option<PcrSigningKey>,
    /// TPM2B_PUBLIC contents, marshalled.
    public: Vec<u8>,
    /// TPM2B_PRIVATE contents (encrypted by the TPM's storage key).
    private: Vec<u8>,
}

const BLOB_MAGIC: &[u8; 8] = b"WBXTPM2\0";
/// Literal PCRs only. Still written for such seals, so an older agent (an A/B rollback) reads them.
const BLOB_VERSION_LITERAL: u8 = 1;
/// Literal PCRs plus a signed PCR 11 policy: adds the signed PCR list and the signing key.
const BLOB_VERSION_SIGNED: u8 = 2;

fn bank_code(bank: PcrBank) -> u8 {
    match bank {
        PcrBank::Sha1 => 1,
        PcrBank::Sha256 => 2,
        PcrBank::Sha384 => 3,
    }
}

impl SealedBlob {
    /// Serialise: magic, version, bank, PCR count and list, (version 2: signed PCR count and
    /// list, the signing key as DER PKCS#1 with a u16 length), public and private parts (u16
    /// big-endian lengths), then a SHA-256 of everything before it so damage is named as such.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.public.len() + self.private.len() + 32);
        out.extend_from_slice(BLOB_MAGIC);
        out.push(if self.signed_pcr11.is_some() { BLOB_VERSION_SIGNED } else { BLOB_VERSION_LITERAL });
        out.push(bank_code(self.binding.bank()));
        out.push(self.binding.pcrs().len() as u8);
        out.extend_from_slice(self.binding.pcrs());
        if let Some(key) = &self.signed_pcr11 {
            out.push(1);
            out.push(SIGNED_PCR);
            out.extend_from_slice(&(key.pkcs1_der().len() as u16).to_be_bytes());
            out.extend_from_slice(key.pkcs1_der());
        }
        for part in [&self.public, &self.private] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parse and check a serialised blob.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TpmError> {
        let corrupt = |reason: &str| TpmError::CorruptBlob { reason: reason.to_string() };
        if bytes.len() < BLOB_MAGIC.len() + 32 || &bytes[..BLOB_MAGIC.len()] != BLOB_MAGIC {
            return Err(corrupt("it does not start with the Wardbox sealed-key header"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(corrupt("its checksum does not match: the bytes were altered or truncated"));
        }
        let mut rest = &body[BLOB_MAGIC.len()..];
        let mut take = |n: usize| -> Result<&[u8], TpmError> {
            if rest.len() < n {
                return Err(corrupt("it ends early"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let version = take(1)?[0];
        if version != BLOB_VERSION_LITERAL && version != BLOB_VERSION_SIGNED {
            return Err(corrupt(&format!(
                "format version {version} is not known (this agent reads {BLOB_VERSION_LITERAL} and {BLOB_VERSION_SIGNED})"
            )));
        }
        let bank = match take(1)?[0] {
            1 => PcrBank::Sha1,
            2 => PcrBank::Sha256,
            3 => PcrBank::Sha384,
            other => return Err(corrupt(&format!("unknown PCR bank code {other}"))),
        };
        let count = usize::from(take(1)?[0]);
        let pcrs = take(count)?.to_vec();
        let binding = PcrBinding::new(bank, &pcrs).map_err(|e| corrupt(&e.to_string()))?;
        let signed_pcrs = if version == BLOB_VERSION_SIGNED {
            let count = usize::from(take(1)?[0]);
            let signed_pcrs = take(count)?.to_vec();
            if signed_pcrs != [SIGNED_PCR] {
                return Err(corrupt(&format!("its signed PCR list {signed_pcrs:?} is not [11]")));
            }
            Some(signed_pcrs)
        } else {
            None
        };
        let mut part = || -> Result<Vec<u8>, TpmError> {
            let len = take(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            Ok(take(len)?.to_vec())
        };
        let signed_pcr11 = match signed_pcrs {
            Some(_) => {
                let der = part()?;
                Some(
                    PcrSigningKey::from_pkcs1_der(&der)
                        .map_err(|e| corrupt(&format!("its PCR-signing key does not parse: {e}")))?,
                )
            }
            None => None,
        };
        let public = part()?;
        let private = part()?;
        if !rest.is_empty() {
            return Err(corrupt("it has trailing bytes"));
        }
        // Check that the TPM structures parse now, so a damaged blob is named before any TPM call.
        Public::unmarshall(&public).map_err(|e| corrupt(&format!("the public part does not parse: {e}")))?;
        Private::try_from(private.clone()).map_err(|e| corrupt(&format!("the private part does not parse: {e}")))?;
        Ok(SealedBlob { binding, signed_pcr11, public, private })
    }

    /// The policy this blob was sealed to.
    pub fn policy(&self) -> PcrPolicy {
        PcrPolicy { binding: self.binding.clone(), signed_pcr11: self.signed_pcr11.clone() }
    }

    fn public(&self) -> Result<Public, TpmError> {
        Public::unmarshall(&self.public).map_err(|e| TpmError::CorruptBlob { reason: e.to_string() })
    }

    fn private(&self) -> Result<Private, TpmError> {
        Private::try_from(self.private.clone()).map_err(|e| TpmError::CorruptBlob { reason: e.to_string() })
    }
}

/// Handles the TPM holds right now: transient objects and loaded sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleCounts {
    pub transient_objects: usize,
    pub loaded_sessions: usize,
}

/// A connection to one TPM. Holds no TPM objects between calls.
pub struct Tpm {
    ctx: Context,
    tcti: String,
    /// Where the booted UKI's PCR signature is looked for (every existing file is read); only
    /// for keys sealed with a signed PCR 11 policy. A parameter so tests use their own files.
    pcr_signature_paths: Vec<PathBuf>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish_non_exhaustive()
    }
}

/// Flush `handle` whatever `result` is; the first error wins.
fn flushed<T>(ctx: &mut Context, handle: ObjectHandle, result: Result<T, TpmError>) -> Result<T, TpmError> {
    let flush = ctx.flush_context(handle).map_err(cmd("FlushContext"));
    let value = result?;
    flush?;
    Ok(value)
}

impl Tpm {
    /// Connect to the TPM named by a TCTI string and check that it answers.
    pub fn connect(tcti: &str) -> Result<Self, TpmError> {
        let spec = parse_tcti(tcti)?;
        if let TctiSpec::Device(path) = &spec
            && !std::path::Path::new(path).exists()
        {
            return Err(TpmError::NoTpm { tcti: tcti.to_string(), detail: format!("{path} does not exist") });
        }
        let conf = TctiNameConf::from_str(&spec.to_tcti_string())
            .map_err(|e| TpmError::WrongTcti { tcti: tcti.to_string(), reason: e.to_string() })?;
        let mut ctx = Context::new(conf).map_err(|e| TpmError::NoTpm { tcti: tcti.to_string(), detail: e.to_string() })?;
        // A context can exist without a live TPM behind it on some TCTIs; ask for a property to
        // be sure something answers.
        ctx.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 1)
            .map_err(|e| TpmError::NoTpm { tcti: tcti.to_string(), detail: e.to_string() })?;
        Ok(Tpm {
            ctx,
            tcti: tcti.to_string(),
            pcr_signature_paths: DEFAULT_SIGNATURE_PATHS.iter().map(PathBuf::from).collect(),
        })
    }

    /// Look for the booted UKI's PCR signature in these files instead of systemd's places
    /// ([`DEFAULT_SIGNATURE_PATHS`]).
    pub fn set_pcr_signature_paths(&mut self, paths: Vec<PathBuf>) {
        self.pcr_signature_paths = paths;
    }

    /// Where the PCR signature is looked for.
    pub fn pcr_signature_paths(&self) -> &[PathBuf] {
        &self.pcr_signature_paths
    }

    /// The signatures at hand, or the refusal naming where they were looked for.
    fn signatures_for(&self, key: &PcrSigningKey) -> Result<PcrSignatures, TpmError> {
        PcrSignatures::load_existing(&self.pcr_signature_paths)?.ok_or_else(|| TpmError::Pcr11NotSigned {
            key: short_fingerprint(key),
            reason: SignatureMiss::NoFile { looked_at: self.pcr_signature_paths.clone() }.to_string(),
        })
    }

    /// The TCTI string this connection was made with.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The storage primary key template: the TCG "ECC P-256 storage key" shape with an empty
    /// unique field, so the same TPM always derives the same key from its owner seed.
    fn primary_template() -> Result<Public, TpmError> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_restricted(true)
            .with_decrypt(true)
            .build()
            .map_err(cmd("primary attributes"))?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()
                .map_err(cmd("primary parameters"))?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .map_err(cmd("primary template"))
    }

    fn create_primary(&mut self) -> Result<KeyHandle, TpmError> {
        let template = Self::primary_template()?;
        // The owner hierarchy's authorisation is empty on the appliance (documented in
        // docs/volume.md); a password session carries that empty value and no secret.
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(|e| TpmError::Command { op: "CreatePrimary (owner hierarchy storage key)", source: e })
    }

    /// Start a session salted by `primary`, so its parameter encryption uses a key the bus
    /// never carries.
    fn salted_session(
        &mut self,
        primary: KeyHandle,
        kind: SessionType,
        decrypt: bool,
    ) -> Result<AuthSession, TpmError> {
        let session = self
            .ctx
            .start_auth_session(Some(primary), None, None, kind, SymmetricDefinition::AES_128_CFB, HashingAlgorithm::Sha256)
            .map_err(cmd("StartAuthSession"))?
            .ok_or(TpmError::Command {
                op: "StartAuthSession",
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm),
            })?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(decrypt)
            .with_encrypt(true)
            .build();
        let set = self.ctx.tr_sess_set_attributes(session, attrs, mask).map_err(cmd("TRSess_SetAttributes"));
        if let Err(e) = set {
            let _ = self.ctx.flush_context(SessionHandle::from(session).into());
            return Err(e);
        }
        Ok(session)
    }

    /// Start an unsalted trial session: it only computes policy digests; nothing secret passes.
    fn trial_session(&mut self) -> Result<AuthSession, TpmError> {
        self.ctx
            .start_auth_session(None, None, None, SessionType::Trial, SymmetricDefinition::AES_128_CFB, HashingAlgorithm::Sha256)
            .map_err(cmd("StartAuthSession (trial)"))?
            .ok_or(TpmError::Command {
                op: "StartAuthSession (trial)",
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm),
            })
    }

    /// PolicyPCR over `binding` with the PCR values as they are now.
    fn policy_pcr_now(&mut self, policy: PolicySession, binding: &PcrBinding) -> Result<(), TpmError> {
        let pcrs = selection(binding)?;
        // An empty PCR digest tells the TPM to use the PCR values as they are now.
        self.ctx.execute_without_session(|ctx| ctx.policy_pcr(policy, Digest::default(), pcrs)).map_err(cmd("PolicyPCR"))
    }

    fn policy_digest(&mut self, policy: PolicySession) -> Result<Digest, TpmError> {
        self.ctx.execute_without_session(|ctx| ctx.policy_get_digest(policy)).map_err(cmd("PolicyGetDigest"))
    }

    /// Load the PCR-signing public key, run `f` with its handle and TPM name, flush it. It goes
    /// into the owner hierarchy as systemd loads it: TPM2_VerifySignature with a key in the null
    /// hierarchy returns a null ticket, which PolicyAuthorize refuses.
    fn with_signing_key<T>(
        &mut self,
        key: &PcrSigningKey,
        f: impl FnOnce(&mut Self, KeyHandle, &Name) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let public = signing_key_public(key)?;
        let handle = self
            .ctx
            .execute_without_session(|ctx| ctx.load_external_public(public, Hierarchy::Owner))
            .map_err(cmd("LoadExternal (PCR-signing public key)"))?;
        let result = (|| {
            let name = self.ctx.tr_get_name(handle.into()).map_err(cmd("TR_GetName (PCR-signing key)"))?;
            f(self, handle, &name)
        })();
        flushed(&mut self.ctx, handle.into(), result)
    }

    /// Find the signature by `key` for `approved` (the PolicyPCR(11) digest of this boot) and
    /// have the TPM verify it: the ticket PolicyAuthorize needs. TPM2_VerifySignature checks the
    /// RSA part only, so the SHA-256 of the signed message (the digest) is computed here, as
    /// systemd does.
    fn verify_pcr11_signature(
        &mut self,
        key: &PcrSigningKey,
        key_handle: KeyHandle,
        approved: &Digest,
        signatures: &PcrSignatures,
    ) -> Result<VerifiedTicket, TpmError> {
        let sig = signatures
            .find(PcrBank::Sha256, &[SIGNED_PCR], key, approved.value())
            .map_err(|miss| TpmError::Pcr11NotSigned { key: short_fingerprint(key), reason: miss.to_string() })?;
        let files = signatures.sources().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let invalid = |detail: String| TpmError::PcrSignatureInvalid { key: short_fingerprint(key), files: files.clone(), detail };
        let digest = Digest::try_from(Sha256::digest(approved.value()).to_vec()).map_err(cmd("digest"))?;
        let rsa = PublicKeyRsa::try_from(sig.to_vec()).map_err(|e| invalid(e.to_string()))?;
        let signature =
            Signature::RsaSsa(RsaSignature::create(HashingAlgorithm::Sha256, rsa).map_err(|e| invalid(e.to_string()))?);
        self.ctx.execute_without_session(|ctx| ctx.verify_signature(key_handle, digest, signature)).map_err(|e| {
            match tss_kind(&e) {
                Some(
                    Tss2ResponseCodeKind::Signature | Tss2ResponseCodeKind::Value | Tss2ResponseCodeKind::Size,
                ) => invalid(e.to_string()),
                _ => TpmError::Command { op: "VerifySignature (PCR 11 signature)", source: e },
            }
        })
    }

    /// The PCR 11 half of a signed policy, into `policy`: PolicyPCR(11) over the current value,
    /// then PolicyAuthorize by the key. With `signatures` (a real session, unsealing) the
    /// signature for that value must verify, and its ticket goes to PolicyAuthorize; without
    /// (a trial session, sealing) a null ticket, which a trial session does not check.
    fn policy_signed_pcr11(
        &mut self,
        policy: PolicySession,
        key: &PcrSigningKey,
        loaded: (KeyHandle, &Name),
        signatures: Option<&PcrSignatures>,
    ) -> Result<(), TpmError> {
        let (key_handle, key_name) = loaded;
        self.policy_pcr_now(policy, &signed_pcr11_binding()?)?;
        let approved = self.policy_digest(policy)?;
        let ticket = match signatures {
            Some(signatures) => self.verify_pcr11_signature(key, key_handle, &approved, signatures)?,
            None => null_verified_ticket()?,
        };
        self.ctx
            .execute_without_session(|ctx| ctx.policy_authorize(policy, approved, Nonce::default(), key_name, ticket))
            .map_err(cmd("PolicyAuthorize"))
    }

    /// The policy digest a sealed object gets for `policy` with the PCRs as they are now (trial
    /// session): [PolicyPCR(11), PolicyAuthorize(key)] when signed, then PolicyPCR(literal PCRs).
    /// PolicyAuthorize replaces the digest by one that names only the key, so it comes first.
    fn trial_policy(&mut self, policy: &PcrPolicy) -> Result<Digest, TpmError> {
        let session = self.trial_session()?;
        let handle: ObjectHandle = SessionHandle::from(session).into();
        let result = (|| {
            let trial = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            if let Some(key) = &policy.signed_pcr11 {
                self.with_signing_key(key, |tpm, key_handle, name| {
                    tpm.policy_signed_pcr11(trial, key, (key_handle, name), None)
                })?;
            }
            self.policy_pcr_now(trial, &policy.binding)?;
            self.policy_digest(trial)
        })();
        flushed(&mut self.ctx, handle, result)
    }

    /// Seal `secret` so that it unseals only while the policy's literal PCRs hold their current
    /// values and, with a signed PCR 11 policy, PCR 11 holds a value the key signed.
    pub fn seal(&mut self, secret: &TpmSecret, policy: impl Into<PcrPolicy>) -> Result<SealedBlob, TpmError> {
        let policy: PcrPolicy = policy.into();
        let digest = self.trial_policy(&policy)?;
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            // The policy is the only way in: no password use, and admin actions need it too.
            .with_user_with_auth(false)
            .with_admin_with_policy(true)
            // A refused policy is not a password guess; keep the dictionary-attack counter out.
            .with_no_da(true)
            .build()
            .map_err(cmd("sealed object attributes"))?;
        let template = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_auth_policy(digest)
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(cmd("sealed object template"))?;
        let data = SensitiveData::try_from(secret.expose().to_vec()).map_err(cmd("sealed data"))?;

        let primary = self.create_primary()?;
        let result = (|| {
            let session = self.salted_session(primary, SessionType::Hmac, true)?;
            let created = self
                .ctx
                .execute_with_session(Some(session), |ctx| ctx.create(primary, template, None, Some(data), None, None))
                .map_err(cmd("Create (sealed object)"));
            flushed(&mut self.ctx, SessionHandle::from(session).into(), created)
        })();
        let created = flushed(&mut self.ctx, primary.into(), result)?;
        let public = created.out_public.marshall().map_err(cmd("marshal public"))?;
        Ok(SealedBlob {
            binding: policy.binding,
            signed_pcr11: policy.signed_pcr11,
            public,
            private: created.out_private.value().to_vec(),
        })
    }

    /// Load the sealed object under a fresh primary, run `f` with both handles, flush both.
    fn with_loaded<T>(
        &mut self,
        blob: &SealedBlob,
        f: impl FnOnce(&mut Self, KeyHandle, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let public = blob.public()?;
        let private = blob.private()?;
        let primary = self.create_primary()?;
        let result = (|| {
            let object = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| ctx.load(primary, private, public))
                .map_err(|e| match tss_kind(&e) {
                    Some(
                        Tss2ResponseCodeKind::Integrity
                        | Tss2ResponseCodeKind::Binding
                        | Tss2ResponseCodeKind::Size
                        | Tss2ResponseCodeKind::Key
                        | Tss2ResponseCodeKind::Value,
                    ) => TpmError::NotThisTpm { detail: e.to_string() },
                    _ => TpmError::Command { op: "Load (sealed object)", source: e },
                })?;
            let inner = f(self, primary, object);
            flushed(&mut self.ctx, object.into(), inner)
        })();
        flushed(&mut self.ctx, primary.into(), result)
    }

    /// Unseal the secret. Refused with [`TpmError::PcrMismatch`] when the literal PCRs changed,
    /// and, for a signed PCR 11 policy, with [`TpmError::Pcr11NotSigned`] or
    /// [`TpmError::PcrSignatureInvalid`] when PCR 11 has no valid signature by the sealed key.
    ///
    /// A PCR extended by someone else *during* the policy session (between PolicyPCR and
    /// Unseal) makes the TPM answer TPM_RC_PCR_CHANGED, whichever PCR it was: the TPM only
    /// knows that its PCR update counter moved. That is a race, not a changed boot chain, and
    /// it happens on the box: with Secure Boot on, the kernel's IMA architecture policy
    /// measures every module load into PCR 10, and at boot the firewall (nf_tables) and
    /// dm-crypt load modules while the volume is being unlocked. So the unseal is tried again
    /// in a fresh policy session, up to [`UNSEAL_ATTEMPTS`] times; only a policy that does not
    /// match (TPM_RC_POLICY_FAIL) is a refusal.
    pub fn unseal(&mut self, blob: &SealedBlob) -> Result<TpmSecret, TpmError> {
        self.unseal_with_interference(blob, |_, _| Ok(()))
    }

    /// [`Tpm::unseal`], calling `between(tpm, attempt)` after the policy commands and before
    /// Unseal in every attempt (attempt 1, 2, ...). Tests use it to extend a PCR at exactly that
    /// moment, as a measurement by another process would; the box calls [`Tpm::unseal`].
    #[doc(hidden)]
    pub fn unseal_with_interference(
        &mut self,
        blob: &SealedBlob,
        mut between: impl FnMut(&mut Self, u32) -> Result<(), TpmError>,
    ) -> Result<TpmSecret, TpmError> {
        self.unseal_with_interference_at(blob, UnsealStep::BeforeUnseal, |tpm, attempt| between(tpm, attempt))
    }

    /// [`Tpm::unseal`], calling `between(tpm, attempt)` at `step` of every attempt (tests).
    #[doc(hidden)]
    pub fn unseal_with_interference_at(
        &mut self,
        blob: &SealedBlob,
        step: UnsealStep,
        mut between: impl FnMut(&mut Self, u32) -> Result<(), TpmError>,
    ) -> Result<TpmSecret, TpmError> {
        let mut between = |tpm: &mut Self, attempt: u32, at: UnsealStep| if at == step { between(tpm, attempt) } else { Ok(()) };
        // The signature file is read before the TPM is asked anything: no file, no TPM work.
        let signatures = blob.signed_pcr11.as_ref().map(|key| self.signatures_for(key)).transpose()?;
        self.with_loaded(blob, |tpm, primary, object| match (&blob.signed_pcr11, &signatures) {
            (Some(key), Some(signatures)) => tpm.with_signing_key(key, |tpm, key_handle, name| {
                tpm.unseal_attempts(primary, object, &blob.binding, Some((key, key_handle, name, signatures)), &mut between)
            }),
            _ => tpm.unseal_attempts(primary, object, &blob.binding, None, &mut between),
        })
    }

    /// The unseal policy sessions, tried again on TPM_RC_PCR_CHANGED (see [`Tpm::unseal`]).
    fn unseal_attempts(
        &mut self,
        primary: KeyHandle,
        object: KeyHandle,
        binding: &PcrBinding,
        signed: Option<(&PcrSigningKey, KeyHandle, &Name, &PcrSignatures)>,
        between: &mut dyn FnMut(&mut Self, u32, UnsealStep) -> Result<(), TpmError>,
    ) -> Result<TpmSecret, TpmError> {
        for attempt in 1..=UNSEAL_ATTEMPTS {
            let session = self.salted_session(primary, SessionType::Policy, false)?;
            let result = (|| {
                let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
                if let Some((key, key_handle, name, signatures)) = signed {
                    self.policy_signed_pcr11(policy, key, (key_handle, name), Some(signatures))?;
                    between(self, attempt, UnsealStep::AfterSignedPcr11)?;
                }
                // A PCR extended since PolicyPCR(11) makes this PolicyPCR answer
                // TPM_RC_PCR_CHANGED (the session records the TPM's PCR update counter): the
                // same race as at Unseal, tried again below.
                match self.policy_pcr_now(policy, binding) {
                    Err(TpmError::Command { source, .. }) if tss_kind(&source) == Some(Tss2ResponseCodeKind::PcrChanged) => {
                        return Ok(None);
                    }
                    other => other?,
                }
                between(self, attempt, UnsealStep::BeforeUnseal)?;
                match self.ctx.execute_with_session(Some(session), |ctx| ctx.unseal(object.into())) {
                    Ok(data) => Ok(Some(TpmSecret::from_slice(data.value())?)),
                    Err(e) => match tss_kind(&e) {
                        Some(Tss2ResponseCodeKind::PcrChanged) => Ok(None),
                        // With a signed policy PCR 11 passed PolicyAuthorize already (a valid
                        // ticket), so a policy that does not match is the literal PCRs.
                        Some(Tss2ResponseCodeKind::PolicyFail) => Err(TpmError::PcrMismatch { binding: binding.to_string() }),
                        _ => Err(TpmError::Command { op: "Unseal", source: e }),
                    },
                }
            })();
            if let Some(secret) = flushed(&mut self.ctx, SessionHandle::from(session).into(), result)? {
                return Ok(secret);
            }
            tracing::debug!(attempt, "a PCR changed during the unseal policy session; trying again");
        }
        Err(TpmError::PcrsKeptChanging { attempts: UNSEAL_ATTEMPTS })
    }

    /// Is there a signature by `key` for PCR 11 as it is now, and does the TPM verify it?
    fn check_pcr11_signature(&mut self, key: &PcrSigningKey) -> Result<(), TpmError> {
        let signatures = self.signatures_for(key)?;
        let session = self.trial_session()?;
        let handle: ObjectHandle = SessionHandle::from(session).into();
        let result = (|| {
            let trial = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            self.policy_pcr_now(trial, &signed_pcr11_binding()?)?;
            let approved = self.policy_digest(trial)?;
            self.with_signing_key(key, |tpm, key_handle, _| {
                tpm.verify_pcr11_signature(key, key_handle, &approved, &signatures).map(drop)
            })
        })();
        flushed(&mut self.ctx, handle, result)
    }

    /// Would the blob unseal now? Loads the object (so a blob from another TPM is named as such)
    /// and compares its policy with a trial policy over the current PCR values; for a signed
    /// PCR 11 policy, also looks up and verifies the signature for the current PCR 11 value.
    pub fn check_unseal(&mut self, blob: &SealedBlob) -> Result<UnsealCheck, TpmError> {
        let sealed_policy = blob.public()?.auth_policy().clone();
        self.with_loaded(blob, |_, _, _| Ok(()))?;
        let now = self.trial_policy(&blob.policy())?;
        if now.value() != sealed_policy.value() {
            return Ok(UnsealCheck::PcrsChanged);
        }
        let Some(key) = &blob.signed_pcr11 else {
            return Ok(UnsealCheck::WouldUnseal);
        };
        match self.check_pcr11_signature(key) {
            Ok(()) => Ok(UnsealCheck::WouldUnseal),
            Err(e @ (TpmError::Pcr11NotSigned { .. } | TpmError::PcrSignatureInvalid { .. } | TpmError::Signature(_))) => {
                Ok(UnsealCheck::Pcr11NotSigned(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// Read the binding's PCR values (index, digest), for status output and tests.
    pub fn read_pcrs(&mut self, binding: &PcrBinding) -> Result<Vec<(u8, Vec<u8>)>, TpmError> {
        let mut out = Vec::new();
        // One PCR per read keeps within the 8-digest limit of TPM2_PCR_Read without bookkeeping.
        for pcr in binding.pcrs() {
            let single = PcrBinding::new(binding.bank(), &[*pcr]).map_err(|e| TpmError::CorruptBlob { reason: e.to_string() })?;
            let (_, _, digests) =
                self.ctx.execute_without_session(|ctx| ctx.pcr_read(selection(&single)?.clone()).map_err(cmd("PCR_Read")))?;
            let value = digests.value().first().map(|d| d.value().to_vec()).unwrap_or_default();
            out.push((*pcr, value));
        }
        Ok(out)
    }

    /// Extend a PCR with a digest of `data` in the given bank. The box itself does not call this;
    /// tests use it to stand in for a changed boot chain.
    pub fn extend_pcr(&mut self, bank: PcrBank, pcr: u8, data: &[u8]) -> Result<(), TpmError> {
        let handle = PcrHandle::try_from(u32::from(pcr)).map_err(cmd("PCR handle"))?;
        let digest = match bank {
            PcrBank::Sha256 => Sha256::digest(data).to_vec(),
            PcrBank::Sha1 | PcrBank::Sha384 => {
                return Err(TpmError::Command {
                    op: "PCR_Extend",
                    source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::UnsupportedParam),
                });
            }
        };
        let mut values = DigestValues::new();
        values.set(hash_alg(bank), Digest::try_from(digest).map_err(cmd("digest"))?);
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.pcr_extend(handle, values))
            .map_err(cmd("PCR_Extend"))
    }

    /// How many transient objects and loaded sessions the TPM holds now. After any call of this
    /// module both should be what they were before (zero on a TPM nobody else uses).
    pub fn handle_counts(&mut self) -> Result<HandleCounts, TpmError> {
        let mut count = |first: u32| -> Result<usize, TpmError> {
            let (data, _) = self
                .ctx
                .execute_without_session(|ctx| ctx.get_capability(CapabilityType::Handles, first, 256))
                .map_err(cmd("GetCapability (handles)"))?;
            Ok(match data {
                CapabilityData::Handles(list) => list.len(),
                _ => 0,
            })
        };
        Ok(HandleCounts { transient_objects: count(TPM2_TRANSIENT_FIRST)?, loaded_sessions: count(TPM2_LOADED_SESSION_FIRST)? })
    }
}

/// sha256 PCR 11, the one a signed policy covers.
fn signed_pcr11_binding() -> Result<PcrBinding, TpmError> {
    PcrBinding::new(PcrBank::Sha256, &[SIGNED_PCR]).map_err(|e| TpmError::CorruptBlob { reason: e.to_string() })
}

/// The ticket a trial session's PolicyAuthorize takes (systemd passes the same when sealing):
/// a trial session does not check it.
fn null_verified_ticket() -> Result<VerifiedTicket, TpmError> {
    VerifiedTicket::try_from(TPMT_TK_VERIFIED { tag: TPM2_ST_VERIFIED, hierarchy: TPM2_RH_OWNER, digest: Default::default() })
        .map_err(cmd("null ticket"))
}

/// The PCR-signing key as the TPM loads it, in systemd's template (RSA, SHA-256 name,
/// decrypt|sign|userWithAuth, no scheme, no symmetric key), so its TPM name is the one
/// `systemd-cryptenroll --tpm2-public-key` binds to for the same key.
fn signing_key_public(key: &PcrSigningKey) -> Result<Public, TpmError> {
    let bits = match key.modulus().len() {
        256 => RsaKeyBits::Rsa2048,
        384 => RsaKeyBits::Rsa3072,
        512 => RsaKeyBits::Rsa4096,
        other => {
            return Err(TpmError::Signature(PcrSigError::KeyFormat {
                origin: "the PCR-signing key".into(),
                reason: format!("a {}-bit modulus", other * 8),
            }));
        }
    };
    let attributes = ObjectAttributesBuilder::new()
        .with_decrypt(true)
        .with_sign_encrypt(true)
        .with_user_with_auth(true)
        .build()
        .map_err(cmd("PCR-signing key attributes"))?;
    let parameters = PublicRsaParametersBuilder::new()
        .with_scheme(RsaScheme::Null)
        .with_key_bits(bits)
        .with_exponent(RsaExponent::create(key.exponent()).map_err(cmd("RSA exponent"))?)
        .with_is_signing_key(true)
        .with_is_decryption_key(true)
        .with_restricted(false)
        .build()
        .map_err(cmd("PCR-signing key parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(parameters)
        .with_rsa_unique_identifier(PublicKeyRsa::try_from(key.modulus().to_vec()).map_err(cmd("RSA modulus"))?)
        .build()
        .map_err(cmd("PCR-signing key template"))
}

fn tss_kind(e: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        tss_esapi::Error::Tss2Error(rc) => rc.kind(),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tcti_strings_are_checked_before_connecting() {
        assert_eq!(parse_tcti("device:/dev/tpmrm0").unwrap(), TctiSpec::Device("/dev/tpmrm0".into()));
        assert_eq!(
            parse_tcti("swtpm:host=127.0.0.1,port=2321").unwrap(),
            TctiSpec::Swtpm { host: "127.0.0.1".into(), port: 2321 }
        );
        assert_eq!(parse_tcti("swtpm:port=9").unwrap(), TctiSpec::Swtpm { host: "127.0.0.1".into(), port: 9 });
        for bad in ["", "tpmrm0", "device:tpmrm0", "swtpm:", "swtpm:port=x", "swtpm:port=0", "swtpm:speed=1,port=2", "tabrmd:", "mssim:port=1"] {
            let err = parse_tcti(bad).unwrap_err();
            assert!(matches!(err, TpmError::WrongTcti { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_device_is_named_without_touching_anything() {
        let err = Tpm::connect("device:/nonexistent/tpmrm0").unwrap_err();
        assert!(matches!(err, TpmError::NoTpm { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/tpmrm0 does not exist"), "{err}");
    }

    #[test]
    fn blob_header_and_checksum_catch_damage() {
        let binding = PcrBinding::new(PcrBank::Sha256, &[7]).unwrap();
        // Hand-built TPM2B_PUBLIC contents are not needed to exercise the framing: a blob whose
        // parts do not parse is refused after the framing checks pass.
        let blob = SealedBlob { binding, signed_pcr11: None, public: vec![1, 2, 3], private: vec![4, 5] };
        let bytes = blob.to_bytes();
        let err = SealedBlob::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("public part does not parse"), "{err}");
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(SealedBlob::from_bytes(&flipped).unwrap_err().to_string().contains("checksum"));
        assert!(SealedBlob::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err().to_string().contains("checksum"));
        assert!(SealedBlob::from_bytes(b"hello").unwrap_err().to_string().contains("header"));
    }

    #[test]
    fn version_2_framing_carries_the_signing_key_and_is_checked() {
        // An RSA 2048 public key as DER PKCS#1: SEQUENCE { INTEGER n (257 bytes), INTEGER 65537 }.
        let mut der = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00];
        der.extend(std::iter::repeat_n(0xc5, 256));
        der.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let key = PcrSigningKey::from_pkcs1_der(&der).unwrap();
        let binding = PcrBinding::new(PcrBank::Sha256, &[7]).unwrap();
        let blob = SealedBlob { binding, signed_pcr11: Some(key), public: vec![1, 2, 3], private: vec![4, 5] };
        let bytes = blob.to_bytes();
        assert_eq!(bytes[8], 2);
        // The key and the signed list parse; the (dummy) TPM public part is what is refused.
        let err = SealedBlob::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("public part does not parse"), "{err}");
        // A signed PCR list other than [11], with a fixed-up checksum, is named.
        let mut other = bytes[..bytes.len() - 32].to_vec();
        other[13] = 12; // the signed PCR (after magic, version, bank, count 1, PCR 7, count 1)
        let sum = Sha256::digest(&other);
        other.extend_from_slice(&sum);
        let err = SealedBlob::from_bytes(&other).unwrap_err();
        assert!(err.to_string().contains("signed PCR list [12] is not [11]"), "{err}");
        // An unknown version is named as such.
        let mut v3 = bytes[..bytes.len() - 32].to_vec();
        v3[8] = 3;
        let sum = Sha256::digest(&v3);
        v3.extend_from_slice(&sum);
        assert!(SealedBlob::from_bytes(&v3).unwrap_err().to_string().contains("format version 3 is not known"));
    }
}
