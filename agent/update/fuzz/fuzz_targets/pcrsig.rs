//! A UKI's `.pcrsig` (systemd-measure's JSON) and `.pcrpkey` (the PCR-signing key, PEM), as the
//! box reads them from a full bundle's kernel image before the install (and from /run at the
//! unlock). The input is the signature file, a NUL, then the key. Parsing must give a value or an
//! error, never panic; a key that parses has a size RSA allows and parses back from its own
//! stored form; a lookup in a signature file that parses gives an answer for any key and policy.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wardbox_firmware_policy::PcrBank;
use wardbox_firmware_policy::pcrsig::{PcrSignatures, PcrSigningKey, SIGNED_PCR, SignatureMiss, policy_pcr_digest};

fn check_key(key: &PcrSigningKey) {
    assert!(matches!(key.modulus().len(), 256 | 384 | 512), "RSA 2048, 3072 or 4096");
    assert!(key.exponent() > 0);
    let again = PcrSigningKey::from_pkcs1_der(key.pkcs1_der()).expect("the stored form parses back");
    assert_eq!(&again, key);
    assert_eq!(again.fingerprint(), key.fingerprint());
    assert_eq!(key.fingerprint_hex().len(), 64);
}

fuzz_target!(|data: &[u8]| {
    let (signatures, key) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    // The DER forms on their own (the sealed blob stores PKCS#1; the PEM holds an SPKI).
    for der in [key, signatures] {
        if let Ok(k) = PcrSigningKey::from_spki_der(der) {
            check_key(&k);
        }
        if let Ok(k) = PcrSigningKey::from_pkcs1_der(der) {
            check_key(&k);
            assert_eq!(k.pkcs1_der(), der, "PKCS#1 is stored as given");
        }
    }
    let key = PcrSigningKey::from_pem(&String::from_utf8_lossy(key), "fuzz.pem").ok();
    if let Some(k) = &key {
        check_key(k);
    }
    let Ok(text) = std::str::from_utf8(signatures) else { return };
    let Ok(parsed) = PcrSignatures::parse(text, Path::new("fuzz.json")) else { return };
    assert_eq!(PcrSignatures::parse(text, Path::new("fuzz.json")).ok().as_ref(), Some(&parsed), "deterministic");
    let Some(key) = key else { return };
    for pcr11 in [[0u8; 32], [0xff; 32]] {
        let policy = policy_pcr_digest(&[SIGNED_PCR], &[&pcr11]);
        for bank in [PcrBank::Sha256, PcrBank::Sha1] {
            match parsed.find(bank, &[SIGNED_PCR], &key, &policy) {
                Ok(_) => {}
                Err(SignatureMiss::NotByThisKey { other_keys, .. }) => {
                    assert!(!other_keys.contains(&key.fingerprint_hex()), "a key with entries is not listed as another");
                    assert!(other_keys.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
                }
                Err(miss) => assert!(!miss.to_string().is_empty()),
            }
        }
    }
});
