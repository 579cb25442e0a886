//! Timings of the unlock path, printed as a table: TPM seal/unseal against a software TPM
//! (swtpm, started here on free ports) and LUKS2 keyslot opening at several argon2id costs.
//!
//! Run: `cargo run --release -p wardbox-volume --bin wardbox-volume-bench`
//! Needs swtpm (`apt-get install swtpm`) and libcryptsetup; writes only to a temporary directory.
//! Figures from swtpm are a lower bound: a hardware TPM is slower (tens of ms per command).

use std::path::Path;
use std::time::Instant;

use wardbox_volume::luks::{KdfParams, LuksVolume};
use wardbox_volume::tpm::Tpm;
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
