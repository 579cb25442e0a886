//! Sealing the TPM keyslot secret under a PCR policy, and unsealing it at boot.
//!
//! Shape of the seal:
//! - a primary storage key (ECC P-256, the TCG storage-key template) is created in the owner
//!   hierarchy on every use. The same template on the same TPM gives the same key, so nothing is
//!   persisted in TPM NV memory and nothing is left behind;
//! - the secret is a keyed-hash "sealed data" object under it whose only authorisation is a
//!   policy: PolicyPCR over the firmware policy's PCRs, with their values at seal time;
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

use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tss_esapi::{
    Context, TctiNameConf,
    attributes::{ObjectAttributesBuilder, SessionAttributesBuilder},
    constants::{
        CapabilityType, SessionType,
        response_code::Tss2ResponseCodeKind,
        tss::{TPM2_LOADED_SESSION_FIRST, TPM2_TRANSIENT_FIRST},
    },
    handles::{KeyHandle, ObjectHandle, PcrHandle, SessionHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, PublicAlgorithm},
        ecc::EccCurve,
        resource_handles::Hierarchy,
        session_handles::{AuthSession, PolicySession},
    },
    structures::{
        CapabilityData, Digest, DigestValues, EccPoint, KeyedHashScheme, PcrSelectionList,
        PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder,
        PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData, SymmetricDefinition,
        SymmetricDefinitionObject,
    },
    traits::{Marshall, UnMarshall},
};
use wardbox_firmware_policy::{PcrBank, PcrBinding};

use crate::keys::{KeyError, TpmSecret};

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

/// Whether the sealed key would unseal with the PCRs as they are now. Computed without
/// unsealing: the sealed object's policy digest is compared with a trial policy over the
/// current PCR values, so the secret never leaves the TPM for a status check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsealCheck {
    WouldUnseal,
    PcrsChanged,
}

/// The sealed object, as stored in the LUKS2 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// The PCRs the object's policy covers (also what the token shows).
    pub binding: PcrBinding,
    /// TPM2B_PUBLIC contents, marshalled.
    public: Vec<u8>,
    /// TPM2B_PRIVATE contents (encrypted by the TPM's storage key).
    private: Vec<u8>,
}

const BLOB_MAGIC: &[u8; 8] = b"WBXTPM2\0";
const BLOB_VERSION: u8 = 1;

fn bank_code(bank: PcrBank) -> u8 {
    match bank {
        PcrBank::Sha1 => 1,
        PcrBank::Sha256 => 2,
        PcrBank::Sha384 => 3,
    }
}

impl SealedBlob {
    /// Serialise: magic, version, bank, PCR count and list, public and private parts (u16
    /// big-endian lengths), then a SHA-256 of everything before it so damage is named as such.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.public.len() + self.private.len() + 32);
        out.extend_from_slice(BLOB_MAGIC);
        out.push(BLOB_VERSION);
        out.push(bank_code(self.binding.bank()));
        out.push(self.binding.pcrs().len() as u8);
        out.extend_from_slice(self.binding.pcrs());
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
        if version != BLOB_VERSION {
            return Err(corrupt(&format!("format version {version} is not known (this agent reads {BLOB_VERSION})")));
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
        let mut part = || -> Result<Vec<u8>, TpmError> {
            let len = take(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            Ok(take(len)?.to_vec())
        };
        let public = part()?;
        let private = part()?;
        if !rest.is_empty() {
            return Err(corrupt("it has trailing bytes"));
        }
        // Check that the TPM structures parse now, so a damaged blob is named before any TPM call.
        Public::unmarshall(&public).map_err(|e| corrupt(&format!("the public part does not parse: {e}")))?;
        Private::try_from(private.clone()).map_err(|e| corrupt(&format!("the private part does not parse: {e}")))?;
        Ok(SealedBlob { binding, public, private })
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
        Ok(Tpm { ctx, tcti: tcti.to_string() })
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

    /// The policy digest of PolicyPCR over the binding's PCRs as they are now (trial session).
    fn trial_pcr_policy(&mut self, binding: &PcrBinding) -> Result<Digest, TpmError> {
        let pcrs = selection(binding)?;
        let session = self
            .ctx
            .start_auth_session(None, None, None, SessionType::Trial, SymmetricDefinition::AES_128_CFB, HashingAlgorithm::Sha256)
            .map_err(cmd("StartAuthSession (trial)"))?
            .ok_or(TpmError::Command {
                op: "StartAuthSession (trial)",
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm),
            })?;
        let handle: ObjectHandle = SessionHandle::from(session).into();
        let result = (|| {
            let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            // An empty PCR digest tells the TPM to use the PCR values as they are now.
            self.ctx
                .execute_without_session(|ctx| ctx.policy_pcr(policy, Digest::default(), pcrs))
                .map_err(cmd("PolicyPCR (trial)"))?;
            self.ctx.execute_without_session(|ctx| ctx.policy_get_digest(policy)).map_err(cmd("PolicyGetDigest"))
        })();
        flushed(&mut self.ctx, handle, result)
    }

    /// Seal `secret` so that it unseals only while the binding's PCRs hold their current values.
    pub fn seal(&mut self, secret: &TpmSecret, binding: &PcrBinding) -> Result<SealedBlob, TpmError> {
        let policy = self.trial_pcr_policy(binding)?;
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
            .with_auth_policy(policy)
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
        Ok(SealedBlob { binding: binding.clone(), public, private: created.out_private.value().to_vec() })
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

    /// Unseal the secret. Refused with [`TpmError::PcrMismatch`] when the PCRs changed.
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

    /// [`Tpm::unseal`], calling `between(tpm, attempt)` after PolicyPCR and before Unseal in
    /// every attempt (attempt 1, 2, ...). Tests use it to extend a PCR at exactly that moment,
    /// as a measurement by another process would; the box calls [`Tpm::unseal`].
    #[doc(hidden)]
    pub fn unseal_with_interference(
        &mut self,
        blob: &SealedBlob,
        mut between: impl FnMut(&mut Self, u32) -> Result<(), TpmError>,
    ) -> Result<TpmSecret, TpmError> {
        let pcrs = selection(&blob.binding)?;
        let binding_text = blob.binding.to_string();
        self.with_loaded(blob, |tpm, primary, object| {
            for attempt in 1..=UNSEAL_ATTEMPTS {
                let session = tpm.salted_session(primary, SessionType::Policy, false)?;
                let result = (|| {
                    let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
                    tpm.ctx
                        .execute_without_session(|ctx| ctx.policy_pcr(policy, Digest::default(), pcrs.clone()))
                        .map_err(cmd("PolicyPCR"))?;
                    between(tpm, attempt)?;
                    match tpm.ctx.execute_with_session(Some(session), |ctx| ctx.unseal(object.into())) {
                        Ok(data) => Ok(Some(TpmSecret::from_slice(data.value())?)),
                        Err(e) => match tss_kind(&e) {
                            Some(Tss2ResponseCodeKind::PcrChanged) => Ok(None),
                            Some(Tss2ResponseCodeKind::PolicyFail) => {
                                Err(TpmError::PcrMismatch { binding: binding_text.clone() })
                            }
                            _ => Err(TpmError::Command { op: "Unseal", source: e }),
                        },
                    }
                })();
                if let Some(secret) = flushed(&mut tpm.ctx, SessionHandle::from(session).into(), result)? {
                    return Ok(secret);
                }
                tracing::debug!(attempt, "a PCR changed during the unseal policy session; trying again");
            }
            Err(TpmError::PcrsKeptChanging { attempts: UNSEAL_ATTEMPTS })
        })
    }

    /// Would the blob unseal now? Loads the object (so a blob from another TPM is named as such)
    /// and compares its policy with a trial policy over the current PCR values.
    pub fn check_unseal(&mut self, blob: &SealedBlob) -> Result<UnsealCheck, TpmError> {
        let sealed_policy = blob.public()?.auth_policy().clone();
        self.with_loaded(blob, |_, _, _| Ok(()))?;
        let now = self.trial_pcr_policy(&blob.binding)?;
        Ok(if now.value() == sealed_policy.value() { UnsealCheck::WouldUnseal } else { UnsealCheck::PcrsChanged })
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
        let blob = SealedBlob { binding, public: vec![1, 2, 3], private: vec![4, 5] };
        let bytes = blob.to_bytes();
        let err = SealedBlob::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("public part does not parse"), "{err}");
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(SealedBlob::from_bytes(&flipped).unwrap_err().to_string().contains("checksum"));
        assert!(SealedBlob::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err().to_string().contains("checksum"));
        assert!(SealedBlob::from_bytes(b"hello").unwrap_err().to_string().contains("header"));
    }
}
