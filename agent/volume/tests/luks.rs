//! LUKS2 volumes in files made by the tests with libcryptsetup, unlocked through a real
//! software TPM (swtpm). Activation through device-mapper is not tested here: the build host
//! has no device-mapper; the qemu guest test of the image (issue 9) covers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Swtpm, file_sha256, volume_file};
use secrecy::ExposeSecret;
use serde_json::json;
use wardbox_volume::luks::{KdfParams, LuksError, LuksVolume};
use wardbox_volume::ops::{
    self, SlotRole, TPM_TOKEN_TYPE, TpmCheck, UnlockPath, VolumeError, parse_tpm_token, tpm_token_json,
};
use wardbox_volume::tpm::{Tpm, TpmError};
use wardbox_volume::{PcrBank, PcrBinding, RecoveryKey, TpmSecret};

const KDF: KdfParams = KdfParams::TEST_ONLY_MINIMAL;

fn pcr7() -> PcrBinding {
    PcrBinding::new(PcrBank::Sha256, &[7]).unwrap()
}

#[test]
fn luks_format_keyslots_and_token_round_trip_without_a_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let path = volume_file(dir.path(), "plain.img");
    let mut luks = LuksVolume::format(&path, &KDF).unwrap();
    let a = luks.add_keyslot_after_format(b"first passphrase").unwrap();
    let b = luks.add_keyslot(b"first passphrase", b"second passphrase").unwrap();
    assert_ne!(a, b);
    let (slot_a, key_a) = luks.volume_key(None, b"first passphrase").unwrap();
    let (slot_b, key_b) = luks.volume_key(None, b"second passphrase").unwrap();
    assert_eq!((slot_a, slot_b), (a, b));
    assert_eq!(key_a.expose(), key_b.expose(), "both keyslots must open the same volume key");

    // Wrong key refused, on any slot and on a named slot; the test path activates nothing.
    assert!(matches!(luks.test_passphrase(None, b"nope"), Err(LuksError::WrongKey { .. })));
    assert!(matches!(luks.test_passphrase(Some(a), b"second passphrase"), Err(LuksError::WrongKey { .. })));
    assert_eq!(luks.test_passphrase(Some(b), b"second passphrase").unwrap(), b);

    // Token round trip through a fresh open of the header.
    let token = json!({"type": "wardbox-test", "keyslots": [a.to_string()], "note": "round trip"});
    let id = luks.add_token(&token).unwrap();
    drop(luks);
    let mut luks = LuksVolume::open(&path, None).unwrap();
    let tokens = luks.tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].0, id);
    assert_eq!(tokens[0].1["note"], "round trip");
    assert_eq!(tokens[0].1["keyslots"], json!([a.to_string()]));
    luks.remove_token(id).unwrap();
    assert!(luks.tokens().unwrap().is_empty());

    // A token naming a keyslot that does not exist is refused by libcryptsetup.
    assert!(luks.add_token(&json!({"type": "wardbox-test", "keyslots": ["9"]})).is_err());

    // Removing a keyslot: its passphrase stops working, the other still opens.
    luks.destroy_keyslot(a).unwrap();
    assert!(matches!(luks.volume_key(None, b"first passphrase"), Err(LuksError::WrongKey { .. })));
    assert_eq!(luks.volume_key(None, b"second passphrase").unwrap().1.expose(), key_a.expose());
}

#[test]
fn luks_provision_then_unlock_by_tpm_and_by_recovery_key() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = volume_file(dir.path(), "data.img");

    let p = ops::provision(&mut tpm, &path, pcr7(), &KDF).unwrap();
    assert_ne!(p.tpm_keyslot, p.recovery_keyslot);
    assert_eq!(p.recovery_key.display().len(), 47);

    // The header describes itself: the TPM token carries the blob, bank and PCRs.
    let mut luks = LuksVolume::open(&path, None).unwrap();
    let tokens = luks.tokens().unwrap();
    let (tid, tjson) = tokens.iter().find(|(_, j)| j["type"] == TPM_TOKEN_TYPE).unwrap();
    assert_eq!(tjson["pcr_bank"], "sha256");
    assert_eq!(tjson["pcrs"], json!([7]));
    assert_eq!(tjson["keyslots"], json!([p.tpm_keyslot.to_string()]));
    let parsed = parse_tpm_token(&path, *tid, tjson).unwrap();
    assert_eq!(parsed.keyslot, p.tpm_keyslot);
    assert_eq!(parsed.blob.binding, pcr7());
    // The random TPM secret gets the cheap KDF; the typed recovery key gets argon2id.
    assert_eq!(luks.keyslot_kdf(p.tpm_keyslot).unwrap(), "pbkdf2");
    assert_eq!(luks.keyslot_kdf(p.recovery_keyslot).unwrap(), "argon2id");
    drop(luks);

    let by_tpm = ops::unlock_with_tpm(&mut tpm, &path).unwrap();
    assert_eq!(by_tpm.via, UnlockPath::Tpm { token: p.tpm_token, keyslot: p.tpm_keyslot });
    let typed = p.recovery_key.display().to_lowercase().replace('-', " ");
    let by_recovery = ops::unlock_with_recovery(&path, &RecoveryKey::parse(&typed).unwrap()).unwrap();
    assert_eq!(by_recovery.via, UnlockPath::RecoveryKey { keyslot: p.recovery_keyslot });
    assert_eq!(by_tpm.volume_key.expose(), by_recovery.volume_key.expose());
    // The store key is the same on both paths, and is not the volume key.
    assert_eq!(by_tpm.store_key().expose_secret(), by_recovery.store_key().expose_secret());
    assert_ne!(&by_tpm.store_key().expose_secret()[..], &by_tpm.volume_key.expose()[..32]);

    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    assert!(status.tpm_would_unseal());
    let roles: Vec<_> = status.keyslots.iter().map(|k| (k.keyslot, k.role)).collect();
    assert!(roles.contains(&(p.tpm_keyslot, SlotRole::Tpm)), "{roles:?}");
    assert!(roles.contains(&(p.recovery_keyslot, SlotRole::Recovery)), "{roles:?}");
    let text = status.to_string();
    assert!(text.contains("the TPM would release the key now"), "{text}");
    assert!(text.contains("recovery key"), "{text}");

    // Provisioning again is refused and changes nothing.
    let before = file_sha256(&path);
    let err = ops::provision(&mut tpm, &path, pcr7(), &KDF).unwrap_err();
    assert!(matches!(err, VolumeError::Luks(LuksError::AlreadyLuks { .. })), "{err:?}");
    assert_eq!(file_sha256(&path), before);
}

#[test]
fn luks_rotation_adds_the_new_tpm_keyslot_then_removes_the_old() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = volume_file(dir.path(), "data.img");
    let p = ops::provision(&mut tpm, &path, pcr7(), &KDF).unwrap();
    let before = ops::unlock_with_tpm(&mut tpm, &path).unwrap();

    let r = ops::rotate_tpm_key(&mut tpm, &path, pcr7(), &KDF).unwrap();
    assert_ne!(r.new_keyslot, p.tpm_keyslot);
    assert_eq!(r.removed_keyslots, vec![p.tpm_keyslot]);
    assert_eq!(r.removed_tokens, vec![p.tpm_token]);

    let after = ops::unlock_with_tpm(&mut tpm, &path).unwrap();
    assert_eq!(after.via, UnlockPath::Tpm { token: r.new_token, keyslot: r.new_keyslot });
    assert_eq!(after.volume_key.expose(), before.volume_key.expose(), "rotation must not change the data key");
    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    let slots: Vec<u32> = status.keyslots.iter().map(|k| k.keyslot).collect();
    assert!(!slots.contains(&p.tpm_keyslot), "old TPM keyslot still there: {slots:?}");
    assert!(slots.contains(&p.recovery_keyslot));
    assert_eq!(status.tpm_bindings.len(), 1);
    // The recovery key still works after rotation.
    assert!(ops::unlock_with_recovery(&path, &p.recovery_key).is_ok());

    // Rotation to a wider policy (PCRs 7 and 11) applies the new binding.
    let wider = PcrBinding::new(PcrBank::Sha256, &[7, 11]).unwrap();
    let r2 = ops::rotate_tpm_key(&mut tpm, &path, &wider, &KDF).unwrap();
    assert_eq!(r2.removed_keyslots, vec![r.new_keyslot]);
    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    assert_eq!(status.tpm_bindings[0].binding.as_ref(), Some(&wider));
}

#[test]
fn luks_pcr_change_then_reseal_with_the_recovery_key() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = volume_file(dir.path(), "data.img");
    let p = ops::provision(&mut tpm, &path, pcr7(), &KDF).unwrap();
    let original = ops::unlock_with_tpm(&mut tpm, &path).unwrap();

    // A firmware update changes PCR 7: the TPM refuses, clearly, and the volume is untouched.
    tpm.extend_pcr(PcrBank::Sha256, 7, b"firmware update").unwrap();
    let before = file_sha256(&path);
    let err = ops::unlock_with_tpm(&mut tpm, &path).unwrap_err();
    assert!(matches!(err, VolumeError::Tpm(TpmError::PcrMismatch { .. })), "{err:?}");
    assert!(err.to_string().contains("the boot chain changed since the key was sealed"), "{err}");
    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    assert_eq!(status.tpm_bindings[0].check, TpmCheck::PcrsChanged);
    assert!(status.to_string().contains("REFUSE"), "{status}");
    assert_eq!(file_sha256(&path), before);

    // A wrong (but well-formed) recovery key changes nothing.
    let wrong = RecoveryKey::generate().unwrap();
    let err = ops::reseal_with_recovery(&mut tpm, &path, &wrong, pcr7(), &KDF).unwrap_err();
    assert!(matches!(err, VolumeError::WrongRecoveryKey { .. }), "{err:?}");
    assert!(err.to_string().contains("does not open"), "{err}");
    assert_eq!(file_sha256(&path), before);

    // The right one reseals under the new PCR values; the TPM path works again.
    let r = ops::reseal_with_recovery(&mut tpm, &path, &p.recovery_key, pcr7(), &KDF).unwrap();
    assert_eq!(r.removed_keyslots, vec![p.tpm_keyslot]);
    let again = ops::unlock_with_tpm(&mut tpm, &path).unwrap();
    assert_eq!(again.via, UnlockPath::Tpm { token: r.new_token, keyslot: r.new_keyslot });
    assert_eq!(again.volume_key.expose(), original.volume_key.expose());
    assert_eq!(again.store_key().expose_secret(), original.store_key().expose_secret());
    assert!(ops::status(&path, Some(&mut tpm)).unwrap().tpm_would_unseal());
    assert_eq!(tpm.handle_counts().unwrap().transient_objects, 0);
}

#[test]
fn luks_bad_input_is_refused_and_changes_nothing() {
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A file that is not LUKS2.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5a; 4 * 1024 * 1024]).unwrap();
    let junk_sum = file_sha256(&junk);
    let err = ops::unlock_with_tpm(&mut tpm, &junk).unwrap_err();
    assert!(matches!(err, VolumeError::Luks(LuksError::NotLuks2 { .. })), "{err:?}");
    assert!(err.to_string().contains("is not a LUKS2 volume"), "{err}");
    assert!(ops::status(&junk, Some(&mut tpm)).is_err());
    let any_key = RecoveryKey::generate().unwrap();
    assert!(matches!(
        ops::reseal_with_recovery(&mut tpm, &junk, &any_key, pcr7(), &KDF),
        Err(VolumeError::Luks(LuksError::NotLuks2 { .. }))
    ));
    assert_eq!(file_sha256(&junk), junk_sum);
    let missing = dir.path().join("missing.img");
    assert!(matches!(ops::unlock_with_tpm(&mut tpm, &missing), Err(VolumeError::Luks(LuksError::Missing { .. }))));

    // A provisioned volume for the rest.
    let path = volume_file(dir.path(), "data.img");
    let p = ops::provision(&mut tpm, &path, pcr7(), &KDF).unwrap();

    // Wrong recovery key, and a typo, are refused; nothing changes.
    let before = file_sha256(&path);
    assert!(matches!(ops::unlock_with_recovery(&path, &any_key), Err(VolumeError::WrongRecoveryKey { .. })));
    let mut typo: Vec<char> = p.recovery_key.display().chars().collect();
    typo[3] = if typo[3] == '7' { '8' } else { '7' };
    let typo: String = typo.into_iter().collect();
    let err = RecoveryKey::parse(&typo).unwrap_err();
    assert!(err.to_string().contains("typo"), "{err}");
    assert_eq!(file_sha256(&path), before);

    // A corrupted sealed blob in the token: clear error, and unlock writes nothing.
    let mut luks = LuksVolume::open(&path, Some(&KDF)).unwrap();
    let (tid, tjson) = luks.tokens().unwrap().into_iter().find(|(_, j)| j["type"] == TPM_TOKEN_TYPE).unwrap();
    let mut damaged = tjson.clone();
    let mut hexblob = damaged["sealed_key"].as_str().unwrap().to_string();
    let flip = hexblob.len() / 2;
    let c = if &hexblob[flip..flip + 1] == "0" { "1" } else { "0" };
    hexblob.replace_range(flip..flip + 1, c);
    damaged["sealed_key"] = json!(hexblob);
    luks.remove_token(tid).unwrap();
    luks.add_token(&damaged).unwrap();
    drop(luks);
    let before = file_sha256(&path);
    let err = ops::unlock_with_tpm(&mut tpm, &path).unwrap_err();
    assert!(matches!(err, VolumeError::Tpm(TpmError::CorruptBlob { .. })), "{err:?}");
    assert!(err.to_string().contains("damaged"), "{err}");
    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    assert!(matches!(status.tpm_bindings[0].check, TpmCheck::NotChecked(_)));
    assert_eq!(file_sha256(&path), before);

    // ...and the recovery key reseals it, replacing the damaged token and its keyslot.
    let r = ops::reseal_with_recovery(&mut tpm, &path, &p.recovery_key, pcr7(), &KDF).unwrap();
    assert_eq!(r.removed_keyslots, vec![p.tpm_keyslot]);
    assert!(ops::unlock_with_tpm(&mut tpm, &path).is_ok());

    // A token whose PCR list was edited no longer matches its blob.
    let blob = ops::parse_tpm_token(&path, r.new_token, &{
        let mut l = LuksVolume::open(&path, None).unwrap();
        l.tokens().unwrap().into_iter().find(|(id, _)| *id == r.new_token).unwrap().1
    })
    .unwrap()
    .blob;
    let mut edited = tpm_token_json(r.new_keyslot, &blob);
    edited["pcrs"] = json!([0]);
    let err = parse_tpm_token(&path, 0, &edited).unwrap_err();
    assert!(err.to_string().contains("do not match the sealed key"), "{err}");

    // The TPM disappears mid-way: provisioning a fresh file fails before writing anything.
    let fresh = volume_file(dir.path(), "fresh.img");
    let fresh_sum = file_sha256(&fresh);
    drop(sw);
    let err = ops::provision(&mut tpm, &fresh, pcr7(), &KDF).unwrap_err();
    assert!(matches!(err, VolumeError::Tpm(_)), "{err:?}");
    assert_eq!(file_sha256(&fresh), fresh_sum);
    // And the TPM-sealed secret alone is not a recovery key: the LUKS header rejects nonsense.
    let mut l = LuksVolume::open(&path, None).unwrap();
    let random = TpmSecret::generate().unwrap();
    assert!(matches!(l.test_passphrase(None, random.expose()), Err(LuksError::WrongKey { .. })));
}
