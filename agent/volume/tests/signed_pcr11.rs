//! The signed PCR 11 policy against a real software TPM, with signatures made by the real
//! `systemd-measure sign` (systemd 252) over small test "kernel images".
//!
//! Each test plays the firmware: it extends PCR 7 (Secure Boot state) and PCR 11 exactly as
//! systemd-stub measures a UKI (each section's name with its NUL, then its contents), checks that
//! value against `systemd-measure calculate`, and puts the signature where the booted system
//! would find it. A reboot restarts swtpm on the same state: same seeds, PCRs back at zero.
//!
//! Needs swtpm, openssl and /usr/lib/systemd/systemd-measure (Debian's systemd 252); without them
//! the tests fail saying what is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::Swtpm;
use wardbox_volume::luks::KdfParams;
use wardbox_volume::ops::{self, TpmCheck, VolumeError};
use wardbox_volume::pcrsig::{PcrSigningKey, policy_pcr_digest};
use wardbox_volume::tpm::{HandleCounts, PcrPolicy, SealedBlob, Tpm, TpmError, UnsealCheck, UnsealStep};
use wardbox_volume::{PcrBank, PcrBinding, TpmSecret};

const SYSTEMD_MEASURE: &str = "/usr/lib/systemd/systemd-measure";
const OPENSSL: &str = "/usr/bin/openssl";
const CLEAN: HandleCounts = HandleCounts { transient_objects: 0, loaded_sessions: 0 };
const KDF: KdfParams = KdfParams::TEST_ONLY_MINIMAL;

fn need(path: &str, package: &str) {
    assert!(Path::new(path).exists(), "swtpm_ signed-policy tests need {path} (apt-get install {package})");
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A PCR-signing key pair made by openssl, as image/uefi.sh makes the test one.
struct SigningKey {
    private: PathBuf,
    public: PathBuf,
}

impl SigningKey {
    fn generate(dir: &Path, name: &str) -> SigningKey {
        need(OPENSSL, "openssl");
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub.pem"));
        run(Command::new(OPENSSL).args(["genpkey", "-quiet", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"]).arg(&private));
        run(Command::new(OPENSSL).args(["pkey", "-pubout", "-in"]).arg(&private).arg("-out").arg(&public));
        SigningKey { private, public }
    }

    fn public_key(&self) -> PcrSigningKey {
        PcrSigningKey::load(&self.public).unwrap()
    }
}

/// A test UKI's measured sections, in the order systemd-stub measures them.
struct Uki {
    sections: Vec<(&'static str, PathBuf)>,
}

impl Uki {
    /// A kernel image whose command line is `cmdline` (an update changes it, as a new kernel
    /// would change `.linux`). `.pcrpkey` is the signing key's public half, as in the real UKI.
    fn new(dir: &Path, name: &str, cmdline: &str, key: &SigningKey) -> Uki {
        let file = |section: &str, body: &[u8]| {
            let path = dir.join(format!("{name}{section}"));
            std::fs::write(&path, body).unwrap();
            path
        };
        Uki {
            sections: vec![
                (".linux", file(".linux", format!("test kernel for {name}").as_bytes())),
                (".osrel", file(".osrel", b"ID=wardbox\nVERSION_ID=test\n")),
                (".cmdline", file(".cmdline", cmdline.as_bytes())),
                (".initrd", file(".initrd", b"test initrd")),
                (".pcrpkey", key.public.clone()),
            ],
        }
    }

    fn measure_args(&self) -> Vec<String> {
        let mut args: Vec<String> =
            self.sections.iter().map(|(s, p)| format!("--{}={}", &s[1..], p.display())).collect();
        args.extend(["--bank=sha256".to_string(), "--phase=:".to_string(), "--phase=sysinit".to_string()]);
        args
    }

    /// systemd-stub's measurements into PCR 11: each section's name (with its NUL), then its
    /// contents, each extended as its SHA-256.
    fn boot(&self, tpm: &mut Tpm) {
        for (section, path) in &self.sections {
            tpm.extend_pcr(PcrBank::Sha256, 11, format!("{section}\0").as_bytes()).unwrap();
            tpm.extend_pcr(PcrBank::Sha256, 11, &std::fs::read(path).unwrap()).unwrap();
        }
    }

    /// PCR 11 as `systemd-measure calculate` predicts it right after the stub (phase `:`).
    fn predicted_pcr11(&self) -> Vec<u8> {
        need(SYSTEMD_MEASURE, "systemd");
        let out = run(Command::new(SYSTEMD_MEASURE).arg("calculate").args(self.measure_args()).arg("--json=short"));
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let first = &json["sha256"][0];
        assert!(first.get("phase").is_none(), "the first prediction is the one right after the stub: {json}");
        hex::decode(first["hash"].as_str().unwrap()).unwrap()
    }

    /// `systemd-measure sign` with `key`, as image/uefi.sh runs it. systemd 252 computes the
    /// policy digest it signs on a TPM: a throw-away one, as on the build machine.
    fn sign(&self, key: &SigningKey) -> Vec<u8> {
        need(SYSTEMD_MEASURE, "systemd");
        let signer = Swtpm::start();
        let tcti = signer.tcti();
        run(Command::new(SYSTEMD_MEASURE)
            .arg("sign")
            .args(self.measure_args())
            .arg(format!("--private-key={}", key.private.display()))
            .arg(format!("--public-key={}", key.public.display()))
            .arg(format!("--tpm2-device={tcti}"))
            .arg("--json=short"))
    }
}

fn pcr7() -> PcrBinding {
    PcrBinding::new(PcrBank::Sha256, &[7]).unwrap()
}

/// One boot of the test machine: Secure Boot state into PCR 7, the UKI into PCR 11, the UKI's
/// signature where the booted system finds it (here: `signature_file`, `None`: no file).
fn boot(tpm: &mut Tpm, secure_boot: &str, uki: &Uki, signature: Option<&[u8]>, signature_file: &Path) {
    tpm.extend_pcr(PcrBank::Sha256, 7, secure_boot.as_bytes()).unwrap();
    uki.boot(tpm);
    let _ = std::fs::remove_file(signature_file);
    if let Some(sig) = signature {
        std::fs::write(signature_file, sig).unwrap();
    }
}

fn connect(sw: &Swtpm, signature_file: &Path) -> Tpm {
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    tpm.set_pcr_signature_paths(vec![signature_file.to_path_buf()]);
    tpm
}

fn pcr11(tpm: &mut Tpm) -> Vec<u8> {
    tpm.read_pcrs(&PcrBinding::new(PcrBank::Sha256, &[11]).unwrap()).unwrap().remove(0).1
}

struct Fixture {
    dir: tempfile::TempDir,
    sw: Swtpm,
    key: SigningKey,
    v1: Uki,
    v2: Uki,
    sig_file: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(dir.path(), "fleet");
    let v1 = Uki::new(dir.path(), "wardbox-1", "root=PARTUUID=x ro", &key);
    let v2 = Uki::new(dir.path(), "wardbox-2", "root=PARTUUID=x ro quiet", &key);
    let sig_file = dir.path().join("tpm2-pcr-signature.json");
    Fixture { sw: Swtpm::start(), key, v1, v2, sig_file, dir }
}

#[test]
fn swtpm_signed_pcr11_stub_emulation_and_policy_digest_match_systemd_measure() {
    let f = fixture();
    let mut tpm = connect(&f.sw, &f.sig_file);
    f.v1.boot(&mut tpm);
    // The test's firmware measures as systemd-stub does: the TPM holds what systemd-measure
    // predicts for this UKI.
    let value = pcr11(&mut tpm);
    assert_eq!(hex::encode(&value), hex::encode(f.v1.predicted_pcr11()));
    // And the `pol` systemd-measure signed for that value is the PolicyPCR digest computed here.
    let sig: serde_json::Value = serde_json::from_slice(&f.v1.sign(&f.key)).unwrap();
    let entry = &sig["sha256"][0];
    assert_eq!(entry["pcrs"], serde_json::json!([11]));
    assert_eq!(entry["pol"].as_str().unwrap(), hex::encode(policy_pcr_digest(&[11], &[&value])));
    assert_eq!(entry["pkfp"].as_str().unwrap(), f.key.public_key().fingerprint_hex());
}

#[test]
fn swtpm_signed_pcr11_unseals_after_a_kernel_update_without_reseal() {
    let mut f = fixture();
    let (sig1, sig2) = (f.v1.sign(&f.key), f.v2.sign(&f.key));
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on, db v1", &f.v1, Some(&sig1[..]), &f.sig_file);

    let secret = TpmSecret::generate().unwrap();
    let policy = PcrPolicy { binding: pcr7(), signed_pcr11: Some(f.key.public_key()) };
    let blob = tpm.seal(&secret, &policy).unwrap();
    let bytes = blob.to_bytes();
    assert_eq!(bytes[8], 2, "a signed seal is blob format version 2");
    // For contrast: the same key sealed to PCR 11's literal value (what a reseal at every
    // update would have to maintain).
    let literal = tpm.seal(&secret, PcrBinding::new(PcrBank::Sha256, &[7, 11]).unwrap()).unwrap();

    // (a) The right signature: it unseals, and status agrees.
    assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose());
    assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::WouldUnseal);
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "the signed unseal left handles in the TPM");
    let before = pcr11(&mut tpm);

    // (b) An update: the next boot runs another kernel image, signed by the same key. PCR 11
    // differs; the blob sealed before the update unseals with no reseal.
    drop(tpm);
    f.sw.reboot();
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on, db v1", &f.v2, Some(&sig2[..]), &f.sig_file);
    assert_ne!(pcr11(&mut tpm), before, "the update did not change PCR 11");
    let blob = SealedBlob::from_bytes(&bytes).unwrap();
    assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose());
    assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::WouldUnseal);
    let err = tpm.unseal(&literal).unwrap_err();
    assert!(matches!(err, TpmError::PcrMismatch { .. }), "a literal PCR 11 seal should refuse after the update: {err:?}");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);

    // systemd-pcrphase may have extended PCR 11 with "sysinit" before the unlock runs: the
    // image signs that phase too, so it still unseals.
    tpm.extend_pcr(PcrBank::Sha256, 11, b"sysinit").unwrap();
    assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose());
}

#[test]
fn swtpm_signed_pcr11_a_pcr_extended_between_the_two_policy_pcrs_is_retried() {
    // Seen on the appliance at first boot: IMA measured a module load into PCR 10 between
    // PolicyPCR(11) and PolicyPCR(7) of the same session, and the second PolicyPCR answered
    // TPM_RC_PCR_CHANGED. A race like the one at Unseal: tried again, not a failure.
    let f = fixture();
    let sig1 = f.v1.sign(&f.key);
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on, db v1", &f.v1, Some(&sig1[..]), &f.sig_file);
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, &PcrPolicy { binding: pcr7(), signed_pcr11: Some(f.key.public_key()) }).unwrap();

    let mut attempts = Vec::new();
    let back = tpm
        .unseal_with_interference_at(&blob, UnsealStep::AfterSignedPcr11, |tpm, attempt| {
            attempts.push(attempt);
            if attempt <= 2 { tpm.extend_pcr(PcrBank::Sha256, 10, b"a module load") } else { Ok(()) }
        })
        .unwrap();
    assert_eq!(back.expose(), secret.expose());
    assert_eq!(attempts, [1, 2, 3], "the unseal was not tried again after PolicyPCR's TPM_RC_PCR_CHANGED");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "the retried sessions were left in the TPM");

    // Extended during every attempt: named as what it is.
    let err = tpm
        .unseal_with_interference_at(&blob, UnsealStep::AfterSignedPcr11, |tpm, _| tpm.extend_pcr(PcrBank::Sha256, 10, b"busy"))
        .unwrap_err();
    assert!(matches!(err, TpmError::PcrsKeptChanging { .. }), "{err:?}");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);
}

#[test]
fn swtpm_signed_pcr11_refuses_unsigned_and_foreign_kernel_images() {
    let mut f = fixture();
    let other = SigningKey::generate(f.dir.path(), "someone-else");
    let sig1 = f.v1.sign(&f.key);
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on", &f.v1, Some(&sig1[..]), &f.sig_file);
    let secret = TpmSecret::generate().unwrap();
    let policy = PcrPolicy { binding: pcr7(), signed_pcr11: Some(f.key.public_key()) };
    let blob = tpm.seal(&secret, &policy).unwrap();
    drop(tpm);

    f.sw.reboot();
    let mut tpm = connect(&f.sw, &f.sig_file);
    // A kernel image nobody signed, next to the old image's signature file.
    boot(&mut tpm, "secure boot on", &f.v2, Some(&sig1[..]), &f.sig_file);
    let err = tpm.unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::Pcr11NotSigned { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("none for the PCR 11 value this boot measured") && text.contains("recovery key"), "{text}");
    assert!(matches!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::Pcr11NotSigned(_)));

    // The same image signed by another key.
    std::fs::write(&f.sig_file, f.v2.sign(&other)).unwrap();
    let err = tpm.unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::Pcr11NotSigned { .. }), "{err:?}");
    assert!(err.to_string().contains("signed by another key"), "{err}");
    assert!(err.to_string().contains(&other.public_key().fingerprint_hex()), "{err}");

    // No signature file at all (booted without a signed UKI, or the image lost it).
    std::fs::remove_file(&f.sig_file).unwrap();
    let err = tpm.unseal(&blob).unwrap_err();
    assert!(err.to_string().contains("there is no PCR signature file"), "{err}");
    assert!(err.to_string().contains(&f.sig_file.display().to_string()), "{err}");

    // A forged signature: the entry names our key and this boot's policy digest, but the
    // signature bytes are not the key's. The TPM's TPM2_VerifySignature refuses it.
    let genuine: serde_json::Value = serde_json::from_slice(&f.v2.sign(&f.key)).unwrap();
    let mut forged = genuine.clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64.decode(genuine["sha256"][0]["sig"].as_str().unwrap()).unwrap();
    sig[100] ^= 0x01;
    forged["sha256"][0]["sig"] = serde_json::Value::String(b64.encode(&sig));
    std::fs::write(&f.sig_file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let err = tpm.unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::PcrSignatureInvalid { .. }), "{err:?}");
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert!(matches!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::Pcr11NotSigned(_)));
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN, "refusals left handles in the TPM");

    // With the genuine signature back it unseals (the refusals above were about the signature).
    std::fs::write(&f.sig_file, serde_json::to_vec(&genuine).unwrap()).unwrap();
    assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose());
}

#[test]
fn swtpm_signed_pcr11_still_binds_pcr7() {
    let f = fixture();
    let sig1 = f.v1.sign(&f.key);
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on", &f.v1, Some(&sig1[..]), &f.sig_file);
    let secret = TpmSecret::generate().unwrap();
    let blob = tpm.seal(&secret, &PcrPolicy { binding: pcr7(), signed_pcr11: Some(f.key.public_key()) }).unwrap();
    // A signed kernel image does not help when the Secure Boot state or keys changed.
    tpm.extend_pcr(PcrBank::Sha256, 7, b"secure boot keys changed").unwrap();
    let err = tpm.unseal(&blob).unwrap_err();
    assert!(matches!(err, TpmError::PcrMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("sha256 PCRs 7 differ"), "{err}");
    assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::PcrsChanged);
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);
}

#[test]
fn swtpm_version_1_blobs_still_unseal() {
    // Blobs written before signed policies existed: format version 1, laid out as docs/volume.md
    // describes. Encoded here by hand from the documented layout, not by the agent's writer.
    let sw = Swtpm::start();
    let mut tpm = Tpm::connect(&sw.tcti()).unwrap();
    let secret = TpmSecret::generate().unwrap();
    let written = tpm.seal(&secret, pcr7()).unwrap().to_bytes();
    assert_eq!(written[8], 1, "a literal-only seal keeps format version 1, so an older agent reads it");
    // Take the TPM parts out of the agent's bytes (magic 8, version, bank, count, PCR 7, then
    // u16-length public and private), then frame them again by hand.
    let mut at = 12;
    let mut part = || {
        let len = usize::from(u16::from_be_bytes([written[at], written[at + 1]]));
        let body = written[at + 2..at + 2 + len].to_vec();
        at += 2 + len;
        body
    };
    let (public, private) = (part(), part());
    let mut v1 = b"WBXTPM2\0".to_vec();
    v1.extend_from_slice(&[1, 2, 1, 7]);
    for p in [&public, &private] {
        v1.extend_from_slice(&(p.len() as u16).to_be_bytes());
        v1.extend_from_slice(p);
    }
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(&v1);
    v1.extend_from_slice(&sum);
    assert_eq!(v1, written, "the version 1 writer changed");
    let blob = SealedBlob::from_bytes(&v1).unwrap();
    assert_eq!(blob.signed_pcr11, None);
    assert_eq!(tpm.unseal(&blob).unwrap().expose(), secret.expose());
    assert_eq!(tpm.check_unseal(&blob).unwrap(), UnsealCheck::WouldUnseal);
}

#[test]
fn luks_signed_pcr11_provision_update_unlock_and_status() {
    let mut f = fixture();
    let (sig1, sig2) = (f.v1.sign(&f.key), f.v2.sign(&f.key));
    let path = common::volume_file(f.dir.path(), "data.img");
    let policy = PcrPolicy { binding: pcr7(), signed_pcr11: Some(f.key.public_key()) };

    // Provisioning on a box booted through an unsigned image is refused before any write: the
    // new seal could not be verified, and would not unlock at the next boot either.
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on", &f.v1, None, &f.sig_file);
    let before = common::file_sha256(&path);
    let err = ops::provision(&mut tpm, &path, &policy, &KDF).unwrap_err();
    assert!(matches!(err, VolumeError::SealNotVerified(_)), "{err:?}");
    assert!(err.to_string().contains("there is no PCR signature file"), "{err}");
    assert_eq!(common::file_sha256(&path), before);

    std::fs::write(&f.sig_file, &sig1).unwrap();
    let p = ops::provision(&mut tpm, &path, &policy, &KDF).unwrap();
    assert_eq!(p.policy, policy);
    let first = ops::unlock_with_tpm(&mut tpm, &path).unwrap();
    // The token shows the mode; `cryptsetup luksDump` readers see it.
    let mut luks = wardbox_volume::luks::LuksVolume::open(&path, None).unwrap();
    let (_, token) = luks.tokens().unwrap().into_iter().find(|(_, j)| j["type"] == "wardbox-tpm2").unwrap();
    assert_eq!(token["signed_pcrs"], serde_json::json!([11]));
    assert_eq!(token["pcr_signing_key"].as_str().unwrap(), f.key.public_key().fingerprint_hex());
    drop(luks);
    drop(tpm);

    // The update: another signed image; unlock and status work with no reseal, same volume key.
    f.sw.reboot();
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on", &f.v2, Some(&sig2[..]), &f.sig_file);
    let second = ops::unlock_with_tpm(&mut tpm, &path).unwrap();
    assert_eq!(first.volume_key.expose(), second.volume_key.expose());
    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    assert_eq!(status.tpm_bindings[0].check, TpmCheck::WouldUnseal);
    assert_eq!(status.tpm_bindings[0].policy.as_ref(), Some(&policy));
    assert!(status.to_string().contains("sha256 PCRs 7 + PCR 11 signed by key"), "{status}");

    // An unsigned image: status says the next boot needs the recovery key, unlock refuses.
    std::fs::write(&f.sig_file, &sig1).unwrap();
    let status = ops::status(&path, Some(&mut tpm)).unwrap();
    assert!(matches!(status.tpm_bindings[0].check, TpmCheck::Pcr11NotSigned(_)), "{:?}", status.tpm_bindings[0].check);
    assert!(!status.tpm_would_unseal());
    assert!(status.to_string().contains("would REFUSE"), "{status}");
    let err = ops::unlock_with_tpm(&mut tpm, &path).unwrap_err();
    assert!(matches!(err, VolumeError::Tpm(TpmError::Pcr11NotSigned { .. })), "{err:?}");
    assert_eq!(tpm.handle_counts().unwrap(), CLEAN);
}

#[test]
fn luks_signed_pcr11_token_fields_must_match_the_sealed_key() {
    let f = fixture();
    let sig1 = f.v1.sign(&f.key);
    let path = common::volume_file(f.dir.path(), "data.img");
    let mut tpm = connect(&f.sw, &f.sig_file);
    boot(&mut tpm, "secure boot on", &f.v1, Some(&sig1[..]), &f.sig_file);
    let policy = PcrPolicy { binding: pcr7(), signed_pcr11: Some(f.key.public_key()) };
    ops::provision(&mut tpm, &path, &policy, &KDF).unwrap();

    // Someone edits the header so that the token no longer shows the signing key (or shows
    // another one): the token is reported as edited, and the TPM is not asked.
    for edit in [None, Some("00".repeat(32))] {
        let mut luks = wardbox_volume::luks::LuksVolume::open(&path, Some(&KDF)).unwrap();
        let (id, mut token) = luks.tokens().unwrap().into_iter().find(|(_, j)| j["type"] == "wardbox-tpm2").unwrap();
        let original = token.clone();
        match &edit {
            None => drop(token.as_object_mut().unwrap().remove("pcr_signing_key")),
            Some(fp) => token["pcr_signing_key"] = serde_json::Value::String(fp.clone()),
        }
        luks.remove_token(id).unwrap();
        luks.add_token(&token).unwrap();
        drop(luks);
        let err = ops::unlock_with_tpm(&mut tpm, &path).unwrap_err();
        assert!(matches!(err, VolumeError::BadToken { .. }), "{err:?}");
        assert!(err.to_string().contains("signed_pcrs/pcr_signing_key fields do not match"), "{err}");
        let status = ops::status(&path, Some(&mut tpm)).unwrap();
        assert!(matches!(&status.tpm_bindings[0].check, TpmCheck::NotChecked(why) if why.contains("edited")));
        // Put the genuine token back.
        let mut luks = wardbox_volume::luks::LuksVolume::open(&path, Some(&KDF)).unwrap();
        let (id, _) = luks.tokens().unwrap().into_iter().find(|(_, j)| j["type"] == "wardbox-tpm2").unwrap();
        luks.remove_token(id).unwrap();
        luks.add_token(&original).unwrap();
    }
    assert!(ops::unlock_with_tpm(&mut tpm, &path).is_ok());
}
