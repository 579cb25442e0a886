//! The report's TPM quote against real software TPMs (swtpm), started and stopped by each test.
//! These are device tests: without swtpm they fail saying so, never pass in silence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wardbox_report::json::PcrValue;
use wardbox_report::quote::{BOOT_PCRS, sign_report};
use wardbox_report::{AkPublic, Quoter, VerifyError, evaluate, sample, verify};
use wardbox_volume::swtpm::SoftwareTpm;

struct Swtpm {
    inner: SoftwareTpm,
    _state: tempfile::TempDir,
}

impl Swtpm {
    fn start() -> Swtpm {
        let state = tempfile::tempdir().unwrap();
        match SoftwareTpm::start(state.path()) {
            Ok(inner) => Swtpm { inner, _state: state },
            Err(e) => panic!("swtpm_ tests need a software TPM: {e}"),
        }
    }

    fn quoter(&self) -> Quoter {
        Quoter::connect(&self.inner.tcti()).unwrap()
    }
}

fn now() -> jiff::Timestamp {
    "2026-11-29T10:00:00Z".parse().unwrap()
}

fn report() -> wardbox_report::Report {
    evaluate(&sample::healthy(now()), now())
}

#[test]
fn swtpm_a_quoted_report_verifies_with_the_exported_ak() {
    let tpm = Swtpm::start();
    let mut quoter = tpm.quoter();
    let ak = quoter.ak_public().unwrap();
    // The AK is re-derived from the endorsement seed: the same key every time.
    assert_eq!(quoter.ak_public().unwrap(), ak);
    let ak = AkPublic::from_pem(&ak.to_pem()).unwrap();

    let out = sign_report(&mut quoter, &report()).unwrap();
    let verified = verify(&out.json, &ak).unwrap();
    assert_eq!(verified.report, report());
    assert_eq!(verified.digest, format!("sha256:{}", hex::encode(out.digest)));
    assert_eq!(verified.pcrs.iter().map(|p| p.index).collect::<Vec<_>>(), BOOT_PCRS.to_vec());
    assert_eq!(verified.pcrs, quoter.read_pcrs(&BOOT_PCRS).unwrap());
    assert!(verified.rendering_matches(&out.html));
    assert!(verified.rendering_matches(&out.oscal));
    assert!(!verified.rendering_matches(b"<html>another page</html>"));
    assert_eq!(quoter.transient_objects().unwrap(), 0, "the AK was left loaded in the TPM");

    // Two reports of the same state differ only in their quote (the TPM's clock and the
    // signature's random ECDSA nonce change): same report bytes, same renderings.
    let again = sign_report(&mut quoter, &report()).unwrap();
    assert_eq!(again.digest, out.digest);
    assert_eq!(again.html, out.html);
    assert_eq!(again.oscal, out.oscal);
    assert_ne!(again.json, out.json, "two quotes came out identical");
}

#[test]
fn swtpm_any_changed_byte_is_refused() {
    let tpm = Swtpm::start();
    let mut quoter = tpm.quoter();
    let ak = quoter.ak_public().unwrap();
    let out = sign_report(&mut quoter, &report()).unwrap();
    verify(&out.json, &ak).unwrap();
    // Every byte of the integrity block and a spread of bytes of the report and renderings.
    let integrity_at = out.json.windows(13).position(|w| w == b",\"integrity\":").unwrap();
    let positions: Vec<usize> = (0..integrity_at).step_by(37).chain(integrity_at..out.json.len()).collect();
    for i in positions {
        for flip in [0x01u8, 0x20] {
            let mut changed = out.json.clone();
            changed[i] ^= flip;
            if let Ok(v) = verify(&changed, &ak) {
                panic!("byte {i} changed ({:?} -> {:?}) and the report still verified: {}", out.json[i] as char, changed[i] as char, v.digest);
            }
        }
    }
    // A change inside the report, with the report still valid JSON, is named as an edit.
    let text = String::from_utf8(out.json.clone()).unwrap();
    let edited = text.replacen("\"status\":\"pass\"", "\"status\":\"fail\"", 1);
    assert!(matches!(verify(edited.as_bytes(), &ak), Err(VerifyError::Edited { .. })));
}

#[test]
fn swtpm_a_quote_from_another_tpm_is_refused() {
    let (first, second) = (Swtpm::start(), Swtpm::start());
    let ak_first = first.quoter().ak_public().unwrap();
    let mut other = second.quoter();
    assert_ne!(other.ak_public().unwrap(), ak_first, "two TPMs derived the same AK");
    let foreign = sign_report(&mut other, &report()).unwrap();
    match verify(&foreign.json, &ak_first) {
        Err(VerifyError::WrongSigner { fingerprint }) => assert_eq!(fingerprint, ak_first.fingerprint()),
        other => panic!("expected WrongSigner, got {other:?}"),
    }

    // The other TPM's quote grafted onto a report of the first box: refused too.
    let own = sign_report(&mut first.quoter(), &report()).unwrap();
    let integrity = |json: &[u8]| {
        let at = json.windows(13).position(|w| w == b",\"integrity\":").unwrap();
        json[at..].to_vec()
    };
    let own_at = own.json.windows(13).position(|w| w == b",\"integrity\":").unwrap();
    let mut grafted = own.json[..own_at].to_vec();
    grafted.extend(integrity(&foreign.json));
    assert!(matches!(verify(&grafted, &ak_first), Err(VerifyError::WrongSigner { .. })));
}

#[test]
fn swtpm_wrong_pcr_values_are_reported() {
    let tpm = Swtpm::start();
    let mut quoter = tpm.quoter();
    let ak = quoter.ak_public().unwrap();
    let expected: Vec<PcrValue> = quoter.read_pcrs(&BOOT_PCRS).unwrap();
    let out = sign_report(&mut quoter, &report()).unwrap();
    let verified = verify(&out.json, &ak).unwrap();
    assert_eq!(verified.pcr_differences(&expected), vec![]);

    // PCR values edited in the file (still well-formed): refused, the quote covers others.
    let text = String::from_utf8(out.json.clone()).unwrap();
    let zero = "0".repeat(64);
    let pcr7 = format!("{{\"index\":7,\"value\":\"{zero}\"}}");
    assert!(text.contains(&pcr7), "swtpm's PCR 7 should start at zero");
    let edited = text.replace(&pcr7, &format!("{{\"index\":7,\"value\":\"{}\"}}", "1".repeat(64)));
    match verify(edited.as_bytes(), &ak) {
        Err(VerifyError::PcrValuesAltered { reason }) => assert!(reason.contains("quoted PCR digest"), "{reason}"),
        other => panic!("expected PcrValuesAltered, got {other:?}"),
    }

    // The box booted differently (PCR 7, the Secure Boot policy, extended): the quote verifies
    // (it is this TPM's) and the difference from the expected values is named.
    drop(quoter);
    let mut volume_tpm = wardbox_volume::Tpm::connect(&tpm.inner.tcti()).unwrap();
    volume_tpm.extend_pcr(wardbox_volume::PcrBank::Sha256, 7, b"a different Secure Boot db").unwrap();
    drop(volume_tpm);
    let mut quoter = tpm.quoter();
    let changed = sign_report(&mut quoter, &report()).unwrap();
    let verified = verify(&changed.json, &ak).unwrap();
    let diffs = verified.pcr_differences(&expected);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].index, 7);
    assert_eq!(diffs[0].expected, zero);
    assert_ne!(diffs[0].quoted.as_deref(), Some(zero.as_str()));
}

#[test]
fn swtpm_an_unsigned_report_is_refused() {
    let tpm = Swtpm::start();
    let ak = tpm.quoter().ak_public().unwrap();
    let unsigned = wardbox_report::json::assemble::<wardbox_report::json::DocumentError>(&report(), |_| Ok(None)).unwrap();
    assert!(matches!(verify(&unsigned.json, &ak), Err(VerifyError::NotSigned)));
}
