//! Timings of the unlock path, printed as a table: TPM seal/unseal against a software TPM
//! (swtpm, started here on free ports) and LUKS2 keyslot opening at several argon2id costs.
//!
//! Run: `cargo run --release -p wardbox-volume --bin wardbox-volume-bench`
//! Needs swtpm (`apt-get install swtpm`), libcryptsetup and, for the signed PCR 11 rows, openssl
//! (it makes a PCR-signing key and signs this swtpm's PCR 11 in systemd-measure's format); writes
//! only to a temporary directory.
//! Figures from swtpm are a lower bound: a hardware TPM is slower (tens of ms per command).

use std::path::Path;
use std::time::Instant;

use wardbox_volume::luks::{KdfParams, LuksVolume};
use wardbox_volume::pcrsig::{PcrSigningKey, policy_pcr_digest};
use wardbox_volume::tpm::{PcrPolicy, Tpm};
use wardbox_volume::{PcrBank, PcrBinding, TpmSecret};

fn main() {
    if let Err(e) = run() {
        eprintln!("wardbox-volume-bench: {e}");
        std::process::exit(1);
    }
}

/// A scratch directory removed on drop (the bench has no dev-dependencies at run time).
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("wardbox-volume-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Row {
    what: String,
    n: usize,
    mean_ms: f64,
    p95_ms: f64,
}

fn time<T>(what: &str, n: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<Row, String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let mean_ms = samples.iter().sum::<f64>() / n as f64;
    let p95_ms = samples[((n as f64 * 0.95).ceil() as usize).saturating_sub(1).min(n - 1)];
    Ok(Row { what: what.to_string(), n, mean_ms, p95_ms })
}

/// Make a PCR-signing key with openssl and sign PCR 11's current value the way
/// `systemd-measure sign` does (pol = PolicyPCR digest, RSASSA-PKCS1-v1_5 SHA-256 over it), into
/// a signature file the TPM connection then reads. Returns the public key.
fn sign_current_pcr11(tpm: &mut Tpm, dir: &Path) -> Result<PcrSigningKey, String> {
    use base64::Engine as _;
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("/usr/bin/openssl").args(args).output().map_err(|e| format!("openssl: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr))) }
    };
    let path = |name: &str| dir.join(name).display().to_string();
    run(&["genpkey", "-quiet", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &path("pcr.key")])?;
    run(&["pkey", "-pubout", "-in", &path("pcr.key"), "-out", &path("pcr.pub.pem")])?;
    let key = PcrSigningKey::load(&dir.join("pcr.pub.pem")).map_err(|e| e.to_string())?;
    let pcr11 = PcrBinding::new(PcrBank::Sha256, &[11]).map_err(|e| e.to_string())?;
    let value = tpm.read_pcrs(&pcr11).map_err(|e| e.to_string())?.remove(0).1;
    let pol = policy_pcr_digest(&[11], &[&value]);
    std::fs::write(dir.join("pol.bin"), pol).map_err(|e| e.to_string())?;
    run(&["dgst", "-sha256", "-sign", &path("pcr.key"), "-out", &path("sig.bin"), &path("pol.bin")])?;
    let sig = std::fs::read(dir.join("sig.bin")).map_err(|e| e.to_string())?;
    let json = serde_json::json!({"sha256": [{
        "pcrs": [11],
        "pkfp": key.fingerprint_hex(),
        "pol": hex::encode(pol),
        "sig": base64::engine::general_purpose::STANDARD.encode(sig),
    }]});
    let file = dir.join("tpm2-pcr-signature.json");
    std::fs::write(&file, json.to_string()).map_err(|e| e.to_string())?;
    tpm.set_pcr_signature_paths(vec![file]);
    Ok(key)
}

fn run() -> Result<(), String> {
    let dir = TempDir::new()?;
    let state = dir.path().join("tpm");
    std::fs::create_dir(&state).map_err(|e| e.to_string())?;
    let swtpm = wardbox_volume::swtpm::SoftwareTpm::start(&state).map_err(|e| e.to_string())?;
    let tcti = swtpm.tcti();
    let binding = PcrBinding::new(PcrBank::Sha256, &[7]).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();

    rows.push(time("TPM connect", 20, || Tpm::connect(&tcti).map(drop).map_err(|e| e.to_string()))?);
    let mut tpm = Tpm::connect(&tcti).map_err(|e| e.to_string())?;
    let secret = TpmSecret::generate().map_err(|e| e.to_string())?;
    rows.push(time("TPM seal (PCR 7)", 20, || tpm.seal(&secret, &binding).map(drop).map_err(|e| e.to_string()))?);
    let blob = tpm.seal(&secret, &binding).map_err(|e| e.to_string())?;
    rows.push(time("TPM unseal", 50, || tpm.unseal(&blob).map(drop).map_err(|e| e.to_string()))?);
    rows.push(time("TPM would-unseal check", 50, || tpm.check_unseal(&blob).map(drop).map_err(|e| e.to_string()))?);

    // The signed PCR 11 mode: a key and a signature for PCR 11 as this swtpm holds it.
    let signed = PcrPolicy { binding: binding.clone(), signed_pcr11: Some(sign_current_pcr11(&mut tpm, dir.path())?) };
    rows.push(time("TPM seal (PCR 7 + signed PCR 11)", 20, || tpm.seal(&secret, &signed).map(drop).map_err(|e| e.to_string()))?);
    let signed_blob = tpm.seal(&secret, &signed).map_err(|e| e.to_string())?;
    rows.push(time("TPM unseal (signed PCR 11: + VerifySignature, PolicyAuthorize)", 50, || {
        tpm.unseal(&signed_blob).map(drop).map_err(|e| e.to_string())
    })?);
    rows.push(time("TPM would-unseal check (signed PCR 11)", 50, || {
        tpm.check_unseal(&signed_blob).map(drop).map_err(|e| e.to_string())
    })?);

    let costs = [
        ("argon2id 32 KiB x1 (tests)", KdfParams::TEST_ONLY_MINIMAL),
        ("argon2id 64 MiB x4", KdfParams { iterations: 4, memory_kib: 64 * 1024, parallel_threads: 4 }),
    ];
    for (label, kdf) in costs {
        let path = dir.path().join("vol.img");
        let _ = std::fs::remove_file(&path);
        std::fs::File::create(&path).and_then(|f| f.set_len(32 * 1024 * 1024)).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut luks = LuksVolume::format(&path, &kdf).map_err(|e| e.to_string())?;
        luks.add_keyslot_after_format(secret.expose()).map_err(|e| e.to_string())?;
        rows.push(Row {
            what: format!("LUKS2 format + 1 keyslot, {label}"),
            n: 1,
            mean_ms: t.elapsed().as_secs_f64() * 1000.0,
            p95_ms: t.elapsed().as_secs_f64() * 1000.0,
        });
        let n = if kdf.memory_kib > 100_000 { 3 } else { 10 };
        rows.push(time(&format!("LUKS2 open keyslot, {label}"), n, || {
            luks.volume_key(None, secret.expose()).map(drop).map_err(|e| e.to_string())
        })?);
    }

    // The real boot path on an appliance-cost volume: TPM keyslot (PBKDF2, random secret)
    // and recovery keyslot (argon2id 1 GiB).
    let path = dir.path().join("appliance.img");
    std::fs::File::create(&path).and_then(|f| f.set_len(32 * 1024 * 1024)).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let provisioned =
        wardbox_volume::ops::provision(&mut tpm, &path, &binding, &KdfParams::APPLIANCE).map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    rows.push(Row { what: "provision (appliance argon2id)".into(), n: 1, mean_ms: ms, p95_ms: ms });
    rows.push(time("boot unlock: unseal + open TPM keyslot", 20, || {
        wardbox_volume::ops::unlock_with_tpm(&mut tpm, &path).map(drop).map_err(|e| e.to_string())
    })?);
    rows.push(time("recovery unlock (argon2id 1 GiB x4)", 2, || {
        wardbox_volume::ops::unlock_with_recovery(&path, &provisioned.recovery_key).map(drop).map_err(|e| e.to_string())
    })?);

    println!("{:<56} {:>4} {:>10} {:>10}", "operation", "n", "mean ms", "p95 ms");
    for r in &rows {
        println!("{:<56} {:>4} {:>10.1} {:>10.1}", r.what, r.n, r.mean_ms, r.p95_ms);
    }
    let handles = tpm.handle_counts().map_err(|e| e.to_string())?;
    println!(
        "TPM handles left after the run: {} transient objects, {} loaded sessions",
        handles.transient_objects, handles.loaded_sessions
    );
    Ok(())
}
