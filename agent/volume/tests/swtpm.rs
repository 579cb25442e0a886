//! Sealing against a real software TPM (swtpm), started and stopped by each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Swtpm;
use wardbox_volume::tpm::{HandleCounts, SealedBlob, Tpm, TpmError, UNSEAL_ATTEMPTS, UnsealCheck};
use wardbox_volume::{PcrBank, PcrBinding, TpmSecret};

fn pcr7() -> PcrBinding {
    PcrBinding::new(PcrBank::Sha256, &[7]).unwrap()
}

const CLEAN: HandleCounts = HandleCounts { transient_objects: 0, loaded_sessions: 0 };

#[test]
fn swtpm_seal_then_unseal_returns_the_secret() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, pcr7()).unwrap();
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "sealing left handles in the TPM");

    // The blob survives serialisation, and a fresh connection unseals it.
    let bytes = blob.to_bytes();
    drop(tpm);
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let back = tpm.unseal(&SealedBlob::from_bytes(&bytes).unwrap()).unwrap();
    assert_eq!(back.expose(), secret.expose());
    assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::WouldUnseal);
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);

    // Two PCRs work too.
    let two = PcrBinding::new(PcrBank::Sha256, &[7, 11]).unwrap();
    let blob2 = tpm.seal(&secret, &two).unwrap();
    assert_eq!(tpm.unseal(&blob2).unwrap().expose(), secret.expose());
}

#[test]
fn swtpm_extending_the_bound_pcr_refuses_unseal_with_a_clear_error() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, pcr7()).unwrap();
    let before = tpm.read_pcrs(&pcr7()).unwrap();

    // An unrelated PCR does not matter.
    tpm.extend_pcr(PcrBank::Sha256, 8, b"unrelated").unwrap();
    assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose());

    tpm.extend_pcr(PcrBank::Sha256, 7, b"a different Secure Boot db").unwrap();
    assert_ne!(tpm.read_pcrs(&pcr7()).unwrap(), before, "PCR 7 did not change");
    let err = tpm.unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::PcrMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("the boot chain changed since the key was sealed"), "{text}");
    assert!(text.contains("recovery key"), "{text}");
    assert!(text.contains("sha256 PCRs 7"), "{text}");
    assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::PcrsChanged);
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "the refused unseal left handles in the TPM");

    // Sealing again under the new values works (what reseal does).
    let blob2 = tpm.seal(&secret, pcr7()).unwrap();
    assert_eq!(tpm.unseal(&blob2).unwrap().expose(), secret.expose());
}

#[test]
fn swtpm_a_pcr_extended_during_the_unseal_session_is_retried_not_a_refusal() {
    // On the box, IMA measures every kernel module load into PCR 10 (Secure Boot on), and at
    // boot modules load while the volume unlocks. Any extend between PolicyPCR and Unseal makes
    // the TPM answer TPM_RC_PCR_CHANGED: a race, not a changed boot chain.
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, pcr7()).unwrap();

    let mut attempts = Vec::new();
    let back = tpm
        .unseal_with_interference(&blob, |tpm, attempt| {
            attempts.push(attempt);
            if attempt <= 2 { tpm.extend_pcr(PcrBank::Sha256, 10, b"a module load") } else { Ok(()) }
        })
        .unwrap();
    assert_eq!(back.expose(), secret.expose());
    assert_eq!(attempts, [1, 2, 3], "the unseal was not tried again after TPM_RC_PCR_CHANGED");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "the retried sessions were left in the TPM");

    // Extended during every attempt: named as what it is, not as a changed boot chain (which
    // would send IT to the recovery key for nothing).
    let err = tpm.unseal_with_interference(&blob, |tpm, _| tpm.extend_pcr(PcrBank::Sha256, 10, b"busy")).unwrap_err();
    assert!(matches!(err, TpmError::PcrsKeptChanging { attempts: UNSEAL_ATTEMPTS }), "{err:?}");
    assert!(!err.to_string().contains("boot chain changed"), "{err}");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);

    // A real change of the bound PCR is still a refusal, at the first attempt.
    tpm.extend_pcr(PcrBank::Sha256, 7, b"a different Secure Boot db").unwrap();
    let mut tries = 0;
    let err = tpm.unseal_with_interference(&blob, |_, _| { tries += 1; Ok(()) }).unwrap_err();
    assert!(matches!(err, TpmError::PcrMismatch { .. }), "{err:?}");
    assert_eq!(tries, 1);
}

#[test]
fn swtpm_hundred_unseal_cycles_leave_no_handles() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, pcr7()).unwrap();
    // One connection for all cycles: with no resource manager a leaked object or session would
    // pile up here (and swtpm runs out of object slots after 3).
    for i in 0..100 {
        assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose(), "cycle {i}");
        if i % 10 == 0 {
            assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "after cycle {i}");
        }
    }
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);
    // The refusal path and the status check must not leak either.
    tpm.extend_pcr(PcrBank::Sha256, 7, b"changed").unwrap();
    for _ in 0..20 {
        assert!(matches!(tpm.unseal(&blob), Err(TpmError::PcrMismatch { .. })));
        assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::PcrsChanged);
    }
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);
}

#[test]
fn swtpm_damaged_or_foreign_blobs_are_named() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, pcr7()).unwrap();
    let bytes = blob.to_bytes();

    // A flipped byte is caught by the checksum before the TPM is asked.
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 2;
    flipped[mid] ^= 0x40;
    let err = SealedBlob::from_bytes(&flipped).unwrap_err();
    assert!(matches!(err, TpmError::CorruptBlob { .. }), "{err:?}");

    // A forged blob with a fixed-up checksum: the TPM's own integrity check refuses it.
    let body_len = bytes.len() - 32;
    let mut forged = bytes[..body_len].to_vec();
    let last = forged.len() - 5; // inside the encrypted private part
    forged[last] ^= 0x01;
    use sha2::{Digest, Sha256};
    let sum = Sha256::digest(&forged);
    forged.extend_from_slice(&sum);
    let forged = SealedBlob::from_bytes(&forged).unwrap();
    let err = tpm.unseal(&forged).unwrap_err();
    assert!(matches!(err, TpmError::NotThisTpm { .. }), "{err:?}");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);

    // A blob sealed by another TPM is refused the same way.
    let other = Swtpm::start();
    let mut other_tpm = Tpm::connect(&other.tcti()).unwrap();
    let err = other_tpm.unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::NotThisTpm { .. }), "{err:?}");
    assert!(err.to_string().contains("sealed by another TPM"), "{err}");
    assert_eq!(other_tpm.handle_counts().unwrap(), CLEAN);
}

#[test]
fn swtpm_absent_or_misnamed_tpm_is_a_clear_error() {
    // Start and stop one to learn a port pair where nothing listens now.
    let mut sw = Swtpm::start();
    let tcti = sw.tcti();
    sw.stop();
    let err = Tpm::connect(&tcti).unwrap_err();
    assert!(matches!(err, TpmError::NoTpm { .. }), "{err:?}");
    assert!(err.to_string().contains("no TPM answered"), "{err}");

    let err = Tpm::connect("tpm0").unwrap_err();
    assert!(matches!(err, TpmError::WrongTcti { .. }), "{err:?}");
    let err = Tpm::connect("device:/nonexistent/tpmrm0").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tpmrm0 does not exist"), "{err}");
}
