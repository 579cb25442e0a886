//! A full bundle's kernel image (UKI), as the box reads it before the install: the PE section
//! table must give a value or an error, never panic or read outside the input; what parses must
//! agree with itself (every section's data lies inside the input, no more than it maps), its
//! `.pcrpkey` and `.pcrsig` are read as the agent reads them, and PCR 11 is predicted the same
//! way in one step and in two.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wardbox_firmware_policy::pcrsig::{PcrSignatures, PcrSigningKey};
use wardbox_update::uki::{MEASURED_SECTIONS, PeImage, after_phase, measure_sections, predict_pcr11};

/// Predict PCR 11 only when the sections map at most this much (one may map 512 MiB of zeros:
/// hashed correctly, but slowly; the code path is the same for a few bytes).
const MAX_HASHED: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = PeImage::parse(data) else {
        return;
    };
    assert_eq!(PeImage::parse(data).as_ref(), Ok(&image), "parsing is deterministic");
    assert!(image.sections.len() <= 96);
    let input = data.as_ptr_range();
    for s in &image.sections {
        assert!(s.name.len() <= 8 && !s.name.contains(&0), "a name is at most 8 bytes, up to its NUL");
        assert!(s.raw.len() <= s.virtual_size as usize, "no more raw data than the section maps");
        if !s.raw.is_empty() {
            let raw = s.raw.as_ptr_range();
            assert!(input.start <= raw.start && raw.end <= input.end, "a section's data lies inside the input");
        }
        assert_eq!(s.contents().is_some(), s.raw.len() == s.virtual_size as usize);
    }
    // A measured name twice is refused; otherwise the lookup finds the one there is.
    let mut twice = false;
    for name in MEASURED_SECTIONS {
        let count = image.sections.iter().filter(|s| s.name == name.as_bytes()).count();
        match image.section(name) {
            Ok(found) => assert_eq!(found.is_some(), count == 1),
            Err(_) => {
                assert!(count > 1);
                twice = true;
            }
        }
    }
    // The key and the signatures, read as the agent's check reads them (the `pcrsig` target
    // fuzzes these parsers on their own).
    if let Ok(Some(section)) = image.section(".pcrpkey")
        && let Some(pem) = section.contents()
    {
        let _ = PcrSigningKey::from_pem(&String::from_utf8_lossy(pem), ".pcrpkey");
    }
    if let Ok(Some(section)) = image.section(".pcrsig")
        && let Some(text) = section.contents().and_then(|b| std::str::from_utf8(b).ok())
    {
        let _ = PcrSignatures::parse(text, Path::new(".pcrsig"));
    }
    let hashed: u64 = image.sections.iter().map(|s| u64::from(s.virtual_size)).sum();
    if hashed > MAX_HASHED {
        return;
    }
    match measure_sections(&image) {
        Err(_) => assert!(twice, "only a repeated measured section stops the prediction"),
        Ok(stub) => {
            assert!(!twice);
            let ready = predict_pcr11(&image, "sysinit:ready").expect("predicts");
            assert_eq!(ready, after_phase(after_phase(stub, "sysinit"), "ready"));
            assert_eq!(predict_pcr11(&image, "").expect("predicts"), stub);
        }
    }
});
