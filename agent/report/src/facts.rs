//! `Facts`: a plain snapshot of everything the box knows at the moment a report is generated.
//!
//! The agent gathers these from its components (boot records, the volume, the TPM, the firewall,
//! live probes, the audit chain, the accounts table, configuration, attestations entered on the
//! Reports page); [`crate::evaluate`] turns them into a report without any I/O. Nothing here may
//! hold patient data: accounts are staff user ids, models are files, probes are addresses.
//!
//! A live probe that could not run is [`Probe::Unavailable`] with its reason. The checklist never
//! turns an unavailable probe into a pass.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The result of one live probe: either what it observed, or why it could not observe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "probe", rename_all = "snake_case")]
pub enum Probe<T> {
    Observed { value: T },
    Unavailable { reason: String },
}

impl<T> Probe<T> {
    pub fn observed(value: T) -> Self {
        Probe::Observed { value }
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Probe::Unavailable { reason: reason.into() }
    }
}

/// Everything the checklist looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The box's name as IT knows it (hostname or asset tag); names the report.
    pub box_name: String,
    /// "appliance" or "dev"; a dev box's report says so at the top.
    pub profile: String,
    /// The boot stage records of the running agent, in boot order.
    pub boot: Vec<StageFact>,
    pub volume: Probe<VolumeFacts>,
    pub tpm: Probe<TpmFacts>,
    pub store: Probe<StoreFacts>,
    pub firewall: Probe<FirewallFacts>,
    pub tls: Probe<TlsProbe>,
    pub engine_reach: Probe<EngineReachProbe>,
    pub audit: Probe<AuditFacts>,
    pub request_audit: Probe<RequestAudit>,
    /// Free space on the data volume, judged by the agent against its `[disk]` thresholds: a
    /// full volume refuses the audit records of requests, and with them the requests.
    pub data_space: Probe<DataSpace>,
    pub retention: Probe<RetentionFacts>,
    pub accounts: Probe<Vec<Account>>,
    pub sessions: SessionPolicy,
    pub sign_ins: Probe<SignInActivity>,
    pub ldap: LdapFacts,
    pub backups: BackupFacts,
    /// The weekly activity review as the Activity review page recorded it.
    pub activity_review: Probe<Option<ActivityReview>>,
    /// The quarterly access review as the Access page recorded it.
    pub access_review: Probe<Option<AccessReview>>,
    pub usb: Probe<UsbFacts>,
    /// How this boot was verified and measured: Secure Boot, the booted kernel image, PCR 7 and
    /// 11, and the firmware policy's keys.
    pub measured_boot: MeasuredBootFacts,
    pub network: NetworkFacts,
    pub inventory: Inventory,
    pub attestations: Vec<Attestation>,
    pub waivers: Vec<Waiver>,
}

/// One boot stage's record (the agent's `StageRecord`, flattened to strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFact {
    /// config, unlock, firewall, store, gpu, engine, serve.
    pub stage: String,
    /// ok, degraded, failed, not_run.
    pub outcome: String,
    pub reason: String,
    /// Protections the stage could not prove (empty on a healthy appliance).
    pub missing_protections: Vec<String>,
}

/// What `cryptsetup status` shows for the data volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFacts {
    /// The data directory is a dev-profile plain directory: nothing is encrypted.
    pub plain_directory: bool,
    /// The device-mapper mapping is open (the volume is in use, decrypted by the kernel).
    pub active: bool,
    /// 2 for LUKS2; 0 when there is no LUKS header.
    pub luks_version: u8,
    /// e.g. "aes-xts-plain64".
    pub cipher: String,
    /// The volume key size in bits (512 for AES-256 in XTS mode).
    pub key_bits: u32,
    /// The backing device, e.g. "/dev/vda3".
    pub device: String,
    /// How this boot unlocked it: "tpm" or "recovery".
    pub unlocked_by: String,
}

/// The TPM and the volume key's seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmFacts {
    pub manufacturer: String,
    pub firmware_version: String,
    /// "sha256" etc.
    pub pcr_bank: String,
    /// The PCRs the volume key is sealed to.
    pub sealed_pcrs: Vec<u8>,
    /// Whether the sealed key would unseal with the PCRs as they are now.
    pub seal_matches_current_pcrs: bool,
    /// The key is also bound to PCR 11 through a signed policy (TPM2_PolicyAuthorize): the
    /// SHA-256 fingerprint of the PCR-signing public key the seal carries. `None`: the literal
    /// PCRs only.
    #[serde(default)]
    pub signed_pcr11_key: Option<String>,
    /// With a signed PCR 11 seal: whether this boot's PCR 11 carries a valid signature by that
    /// key, i.e. the running kernel image is one the fleet signed (`None`: not checked).
    #[serde(default)]
    pub pcr11_signed: Option<bool>,
    /// What the seal check said, in words (why PCR 11 is not signed, or why nothing was checked).
    #[serde(default)]
    pub seal_check: String,
}

/// The SQLCipher store: the mechanism that authenticates ePHI at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFacts {
    pub cipher_version: String,
    /// e.g. "HMAC_SHA512"; empty when the store runs without per-page HMAC.
    pub hmac_algorithm: String,
    /// Pages whose HMAC did not verify in `PRAGMA cipher_integrity_check`.
    pub integrity_errors: u64,
    pub pages_checked: u64,
}

/// The egress firewall: live read-back of the ruleset and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallFacts {
    /// Drift found by the read-back verification (empty: the kernel holds exactly the policy).
    pub drift: Vec<String>,
    /// The output chain's policy as read back ("drop" when outbound is closed).
    pub output_policy: String,
    /// Packets the output chain dropped since the ruleset was applied.
    pub blocked_outbound_packets: u64,
    /// Packets the input chain dropped since the ruleset was applied.
    pub blocked_inbound_packets: u64,
    /// The outbound allow-list (each entry a destination the clinic chose, e.g. its directory).
    pub allowed_outbound: Vec<OutboundRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRule {
    pub destination: String,
    pub port: u16,
    pub protocol: String,
    pub purpose: String,
}

/// A live TLS handshake against the box's own HTTPS port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsProbe {
    /// Address and port that were probed, e.g. "192.168.10.5:443".
    pub target: String,
    pub tls13: Handshake,
    pub tls12: Handshake,
    /// A plain-HTTP request to the same port: true when it was refused (no HTTP answer).
    pub plain_http_refused: bool,
    /// The certificate's expiry.
    pub certificate_not_after: Timestamp,
    pub certificate_subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub accepted: bool,
    /// The negotiated cipher suite, or the error the handshake ended with.
    pub detail: String,
}

/// Live TCP connects to the engine's port on each of the box's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineReachProbe {
    pub attempts: Vec<ConnectAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAttempt {
    /// "address:port".
    pub target: String,
    /// "refused", "timed_out", "unreachable" or "connected".
    pub result: String,
}

impl ConnectAttempt {
    pub fn connected(&self) -> bool {
        self.result == "connected"
    }
}

/// The audit chain, verified at generation time (incrementally from the last checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFacts {
    pub records: u64,
    /// The first record the verification walked (records before it are covered by a matching
    /// checkpoint).
    pub verified_from_seq: u64,
    pub head_seq: u64,
    /// The first broken record and what is wrong with it, if any.
    pub first_break: Option<String>,
    pub checkpoints_checked: u64,
    pub checkpoints_mismatched: u64,
    /// This verification recomputed every record's hash (a full walk); false when it walked
    /// only the records after its anchor (`verified_from_seq`).
    pub full_walk: bool,
    /// The newest full walk that found the chain intact: when, and up to which record. An
    /// incremental check relies on it for the records before its anchor.
    pub last_full_walk: Option<FullWalk>,
}

/// A full walk of the audit chain that found it intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullWalk {
    pub at: Timestamp,
    pub head_seq: u64,
}

/// The running web layer's request counters since the agent started, per route class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAudit {
    /// When the counters started (the agent's start), as the agent reports it.
    pub since: String,
    pub classes: Vec<RouteClassCount>,
}

/// One class of routes (patient data, administration, sign-in, ...) and what the web layer
/// counted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteClassCount {
    /// e.g. "patient_data", "administration", "sign_in", "monitoring".
    pub class: String,
    /// Every request of this class must have an audit record before it is served (patient
    /// data and administration); the others are audited by what they do (a sign-in writes
    /// `login` or `login_failed`) or not at all (static files, loopback monitoring).
    pub audit_required: bool,
    /// Requests that reached their handler.
    pub served: u64,
    /// Requests whose audit record was written before the handler ran.
    pub audited: u64,
    /// Audit writes that failed (their requests were refused, not served).
    pub audit_failures: u64,
}

/// Six-year retention: the policy and the monthly exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionFacts {
    pub retention_years: u32,
    /// Month of the oldest audit record, "YYYY-MM"; absent on a box without records.
    pub first_record_month: Option<String>,
    pub exports: Vec<MonthExport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthExport {
    /// "YYYY-MM".
    pub month: String,
    /// The export's `.sha256` matches its bytes.
    pub checksum_ok: bool,
}

/// A sign-in account (staff, never patients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user_id: String,
    /// clinician, admin, auditor.
    pub role: String,
    /// "local" or "directory".
    pub source: String,
    pub disabled: bool,
    /// When the account was created, when the store records it.
    pub created_at: Option<Timestamp>,
    /// The last successful sign-in (from the audit chain), if any.
    pub last_sign_in: Option<Timestamp>,
    /// "argon2id" for local accounts; empty for directory accounts.
    pub password_scheme: String,
    /// The account still has the password it was created with.
    pub must_change_password: bool,
    /// `last_sign_in` was looked for in the chain since this time only (`None`: the whole
    /// chain), so "no sign-in" means none since then, not never.
    #[serde(default)]
    pub sign_ins_searched_since: Option<Timestamp>,
}

/// The web layer's session, sign-in throttling and account-lock settings, as running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    pub idle_timeout_secs: u64,
    pub absolute_timeout_secs: u64,
    pub break_glass_enabled: bool,
    pub break_glass_timeout_secs: u64,
    /// Failed sign-ins from one client address before its further attempts are spaced out.
    pub signin_free_failures: u32,
    /// Failed sign-ins from one client address after which sign-in from it is paused.
    pub signin_block_after: u32,
    /// How long sign-in from such an address is paused.
    pub signin_block_secs: u64,
    /// Failed sign-ins against one account that lock it, when they come from at least
    /// `lockout_addresses` different addresses within `lockout_window_secs`.
    pub lockout_threshold: u32,
    pub lockout_addresses: u32,
    pub lockout_window_secs: u64,
    /// How long a locked account stays locked.
    pub lockout_secs: u64,
    pub password_min_length: u32,
}

/// Sign-in activity over the last 30 days, counted from the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInActivity {
    pub successful: u64,
    pub failed: u64,
    /// Accounts locked out right now (after repeated failures).
    pub accounts_locked_now: u64,
    pub break_glass_uses: u64,
    /// Failed sign-ins are audit records (the web layer writes one for each).
    pub failures_audited: bool,
}

/// Directory (LDAP) sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LdapFacts {
    NotConfigured,
    Configured { url: String, bind: Probe<LdapBind> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapBind {
    /// The connection was TLS (ldaps or StartTLS).
    pub tls: bool,
    pub bind_ok: bool,
    pub detail: String,
}

/// Backups. The box has no backup component yet: the agent reports `configured: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFacts {
    pub configured: bool,
    pub last_backup: Option<Timestamp>,
    pub encrypted: bool,
    pub last_tested_restore: Option<Timestamp>,
}

/// The newest weekly review of the audit activity recorded on the box's Activity review page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityReview {
    /// The reviewed week's Monday, e.g. "2026-11-16".
    pub week: String,
    /// The staff user id of the reviewer.
    pub reviewed_by: String,
    pub reviewed_at: Timestamp,
}

/// The newest decision of the quarterly access review recorded on the box's Access page, and
/// how complete that quarter's review is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReview {
    /// The quarter the decision belongs to, e.g. "2026-Q4".
    pub quarter: String,
    /// The staff user id of the reviewer.
    pub reviewed_by: String,
    pub reviewed_at: Timestamp,
    /// Users whose access was confirmed or revoked in that quarter.
    pub users_decided: u64,
    /// Enabled clinicians and nurses (the users whose patient access is reviewed) with no
    /// decision in that quarter, by user id.
    pub not_decided: Vec<String>,
}

/// Free space on the data volume at the moment of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSpace {
    /// The store's directory, whose filesystem was read.
    pub path: String,
    pub total_bytes: u64,
    /// What the agent may still write.
    pub free_bytes: u64,
    /// In words: `4.1 GiB free of 51.0 GiB (8.0 %)`.
    pub summary: String,
    /// `ok`, `low` (below the warning threshold) or `critical`.
    pub level: String,
    /// The thresholds in words: `low below 10 % free, critical below 3 % free`.
    pub thresholds: String,
}

/// USB storage policy, as the kernel enforces it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsbFacts {
    /// The usb-storage and uas drivers cannot load (module blacklist or not in the image).
    pub storage_driver_blocked: bool,
    /// USB block devices present right now, e.g. "sdb (USB 16 GB)".
    pub usb_block_devices: Vec<String>,
    /// How the block is enforced, e.g. "modprobe blacklist in /etc/modprobe.d/wardbox-usb.conf".
    pub method: String,
    /// The kernel's `usbcore.authorized_default` (0: no USB device is used until the box's USB
    /// policy lets it in); `None` when it cannot be read. Reports made before the policy
    /// existed have none.
    #[serde(default)]
    pub authorized_default: Option<i32>,
    /// An administrator's USB window open now, in words ("for update by admin:jo until
    /// 2026-11-29T10:42:00Z"); `None` when it is closed.
    #[serde(default)]
    pub open_window: Option<String>,
}

/// Who reaches the box, on which port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFacts {
    /// The box's addresses, e.g. "192.168.10.5".
    pub addresses: Vec<String>,
    pub listeners: Vec<Listener>,
    /// How the agent reaches the engine, e.g. "unix:/run/wardbox/engine.sock".
    pub engine_channel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// "address:port".
    pub bind: String,
    pub protocol: String,
    pub service: String,
    /// Who is meant to reach it, e.g. "clinic LAN (staff browsers)".
    pub audience: String,
}

/// The asset and model inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub hardware_vendor: String,
    pub hardware_model: String,
    pub serial: String,
    pub cpu: String,
    pub memory_mib: u64,
    pub gpus: Vec<Gpu>,
    pub os: String,
    pub kernel: String,
    pub image_version: String,
    pub agent_version: String,
    pub secure_boot: Option<bool>,
    pub models: Vec<Model>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub name: String,
    pub memory_mib: u64,
    pub driver: String,
    pub health: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    /// "chat" or "embedding".
    pub role: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// The digest was re-computed and matched the bundle manifest at load.
    pub digest_verified: bool,
}

/// An administrative or physical control an admin vouches for on the Reports page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// Which checklist item it answers (an item id, e.g. "golive-training").
    pub item: String,
    pub attested_by: String,
    pub attested_at: Timestamp,
    /// The document it rests on, e.g. "Security training log 2026, binder B".
    pub document: String,
    pub valid_until: Timestamp,
}

/// An accepted exception to one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiver {
    pub item: String,
    pub approver: String,
    pub justification: String,
    pub approved_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The measured boot, read live when the report is generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredBootFacts {
    /// The UEFI variables of this boot; unavailable when the box shows none (not booted through
    /// UEFI, as on a dev machine).
    pub firmware: Probe<FirmwareBoot>,
    /// PCR 7 and PCR 11 (SHA-256 bank), read from the TPM that quotes the report.
    pub pcrs: Probe<BootPcrs>,
    /// The firmware policy and the Secure Boot keys it pins, checked against the firmware's as
    /// the agent's config stage checks them; unavailable without a firmware policy (dev profile).
    pub policy: Probe<BootPolicy>,
    /// The root file system this boot runs from, and the dm-verity arguments it was booted
    /// with. Facts gathered before the root was verified have none.
    #[serde(default = "root_not_gathered")]
    pub root: Probe<RootFileSystem>,
}

fn root_not_gathered() -> Probe<RootFileSystem> {
    Probe::unavailable("not gathered (facts from an agent that did not read the root file system)")
}

/// What the kernel command line and the mount table say about the root file system: the root
/// is verified when the signed command line names a dm-verity root hash and `/` is mounted from
/// the device-mapper device `wardbox-root` that veritysetup opened with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFileSystem {
    /// `wardbox.verity_root_hash` on the kernel command line (SHA-256, lower-case hex); `None`
    /// when the command line names no dm-verity arguments.
    pub root_hash: Option<String>,
    /// `wardbox.verity_hash_offset`: where the hash tree starts in the slot, in bytes.
    pub hash_offset: Option<u64>,
    /// Why the command line's dm-verity arguments are not usable (one without the other, one
    /// twice, a malformed value); `None` when they are usable or absent.
    pub arguments_refused: Option<String>,
    /// The device `/` is mounted from, as the mount table names it, e.g.
    /// `/dev/mapper/wardbox-root`.
    pub device: String,
    /// Its device number, `major:minor`.
    pub device_number: String,
    /// The device-mapper name of that device (`wardbox-root`); `None`: not a device-mapper
    /// device.
    pub dm_name: Option<String>,
    /// The device-mapper device was made by veritysetup (its DM UUID starts with
    /// `CRYPT-VERITY-`).
    pub dm_verity: bool,
}

/// What the firmware, systemd-boot and systemd-stub say about this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareBoot {
    /// `SecureBoot`; `None`: the variable is absent or unreadable.
    pub secure_boot: Option<bool>,
    /// `SetupMode`: true when no platform key is enrolled (nothing is enforced).
    pub setup_mode: Option<bool>,
    /// `AuditMode`: true when images failing verification still run; `None` on firmware older
    /// than UEFI 2.5, which has no audit mode.
    pub audit_mode: Option<bool>,
    /// `DeployedMode`: true when the OS cannot put the platform back into setup or audit mode.
    pub deployed_mode: Option<bool>,
    /// systemd-boot's `LoaderEntrySelected`: the entry it started, e.g. `wardbox-0.4.0.efi`.
    pub boot_entry: Option<String>,
    /// systemd-boot's `LoaderBootCountPath`: present when the entry booted with a try counter
    /// (not yet blessed when it booted).
    pub boot_count_path: Option<String>,
    /// systemd-stub's `StubInfo`: present when the kernel was started from a unified kernel
    /// image.
    pub stub_info: Option<String>,
}

/// Two PCRs of the SHA-256 bank, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPcrs {
    /// The Secure Boot state and the keys that verified the boot chain.
    pub pcr7: String,
    /// The unified kernel image, as systemd-stub measured it (and the boot phases after it).
    pub pcr11: String,
}

/// The firmware policy as the agent holds the boot to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPolicy {
    /// The policy file.
    pub file: String,
    /// `secure_boot = "required"`.
    pub secure_boot_required: bool,
    /// The literal PCRs the policy binds the volume key to.
    pub pcrs: Vec<u8>,
    /// The policy binds the key to PCR 11 through a signed policy (`[signed_pcr11]`).
    pub signed_pcr11: bool,
    /// The certificates the policy pins, per variable (PK, KEK, db); empty: it pins none.
    pub pinned_keys: Vec<KeyList>,
    /// What the firmware holds in PK, KEK and db.
    pub enrolled_keys: Probe<Vec<KeyList>>,
    /// Why the config stage's key check refuses the enrolled keys; `None` when it accepts them
    /// (or pins none, or could not read them).
    pub keys_refused: Option<String>,
}

/// The entries of one Secure Boot key variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// "PK", "KEK" or "db".
    pub variable: String,
    /// Certificates by the SHA-256 of their DER; other entries by their type.
    pub entries: Vec<String>,
}
