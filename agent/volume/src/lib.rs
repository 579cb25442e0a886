//! Data volume unlock: the volume key sealed in the TPM (tss-esapi) and the LUKS2 volume
//! (libcryptsetup-rs), with a recovery key for when the TPM refuses.
//!
//! Layers, bottom up:
//! - [`keys`]: the secrets (redacting, zeroed on drop) and the store-key derivation;
//! - [`recovery`]: the typeable recovery key;
//! - [`pcrsig`]: signed PCR 11 policies: the PCR-signing key and systemd-measure's signature file
//!   (in `wardbox-firmware-policy`, re-exported);
//! - [`tpm`]: seal / unseal under a PCR policy, against any TPM named by a TCTI string;
//! - [`luks`]: the LUKS2 header: format, keyslots, tokens, key test, activation;
//! - [`ops`]: the life cycle IT sees: provision, unlock, recover, reseal, rotate, status;
//! - [`mount`]: the filesystem on the opened volume (appliance and qemu guest only);
//! - [`swtpm`]: a software TPM process for tests, the bench and the dev profile;
//! - [`nvcounter`]: the TPM NV counter behind the system-version anti-rollback floor (updates).
//!
//! Nothing here depends on the agent; the agent's unlock stage and `wardbox volume` CLI call
//! [`ops`].

pub mod keys;
pub mod luks;
pub mod mount;
pub mod nvcounter;
pub mod ops;
pub mod recovery;
pub mod swtpm;
pub mod tpm;

pub use keys::{TpmSecret, VolumeKey, derive_store_key};
pub use luks::{KdfParams, LuksError};
pub use ops::{Provisioned, Rebound, Unlocked, UnlockPath, VolumeError, VolumeStatus};
pub use recovery::{RecoveryError, RecoveryKey};
pub use tpm::{PcrPolicy, Tpm, TpmError};
pub use wardbox_firmware_policy::{FirmwarePolicy, PcrBank, PcrBinding};
/// Pure parsing, so it lives with the policy (and is fuzzed there without the TPM and LUKS2
/// libraries); the path `wardbox_volume::pcrsig` stays.
pub use wardbox_firmware_policy::pcrsig;
