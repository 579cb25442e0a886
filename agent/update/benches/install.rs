//! Install benchmark: verify + write of a large system image read at USB-stick speed, beside a
//! plain copy of the same file at the same speed and an unthrottled `dd … conv=fsync`, in one
//! run. Everything lives in a temporary directory under /tmp and is deleted at the end.
//!
//! Run: `cargo bench -p wardbox-update --bench install` (WARDBOX_BENCH_MIB sets the image size,
//! default 1024; WARDBOX_BENCH_MBPS the stick speed in MB/s, default 100).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{Timestamp, ToSpan};
use tough::{Transport, TransportError, TransportStream};
use url::Url;
use wardbox_update::build::{self, BuildSpec, RootSpec};
use wardbox_update::manifest::{BundleKind, BundleManifest, Compatibility, ContentRole, Version};
use wardbox_update::transport::StickTransport;
use wardbox_update::{BoxFacts, SlotPlan, State, verify_bundle_via, write_to_slot};

/// Reads the stick no faster than `bytes_per_sec`, as a USB stick would deliver it.
#[derive(Debug, Clone, Copy)]
struct Throttled {
    bytes_per_sec: u64,
}

#[tough::async_trait]
impl Transport for Throttled {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let rate = self.bytes_per_sec as f64;
        let inner = StickTransport.fetch(url).await?;
        let start = Instant::now();
        let mut total = 0u64;
        Ok(Box::pin(inner.then(move |chunk| {
            if let Ok(bytes) = &chunk {
                total += bytes.len() as u64;
            }
            let due = Duration::from_secs_f64(total as f64 / rate);
            async move {
                let elapsed = start.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
                chunk
            }
        })))
    }
}

fn drop_cache(path: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    if let Ok(f) = File::open(path) {
        let _ = f.sync_all();
        let _ = posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn write_image(path: &Path, mib: u64) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    let mut block = vec![0u8; 1024 * 1024];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&block)?;
    }
    f.sync_all()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mib = env_u64("WARDBOX_BENCH_MIB", 1024);
    let rate = env_u64("WARDBOX_BENCH_MBPS", 100) * 1_000_000;
    let work = tempfile::Builder::new().prefix("wardbox-update-bench-").tempdir_in("/tmp").expect("temp dir in /tmp");
    let w = work.path();
    let len = mib * 1024 * 1024;
    println!("image {mib} MiB, stick throttled to {} MB/s, work dir {}", rate / 1_000_000, w.display());

    // Keys, root, bundle.
    let keys = w.join("keys");
    fs::create_dir_all(&keys).expect("keys");
    let key = |n: &str| build::generate_key(&keys.join(n)).expect("key");
    let (r1, r2, r3) = (key("r1"), key("r2"), key("r3"));
    let (t, s, ts) = (key("targets"), key("snapshot"), key("timestamp"));
    let expires = Timestamp::now().checked_add(24.hours().checked_mul(365).expect("span")).expect("time");
    let spec = RootSpec { version: 1, expires, root_keys: vec![r1, r2, r3], root_threshold: 2, targets_keys: vec![t], snapshot_keys: vec![s], timestamp_keys: vec![ts] };
    let mut root = build::new_root(&spec).expect("root");
    build::sign_root(&mut root, &keys.join("r1")).await.expect("sign");
    build::sign_root(&mut root, &keys.join("r2")).await.expect("sign");
    let roots = w.join("roots");
    fs::create_dir_all(&roots).expect("roots");
    build::write_root(&root, &roots.join("1.root.json")).expect("write root");
    let image = w.join("root.img");
    write_image(&image, mib).expect("image");
    let uki = w.join("wardbox.efi");
    fs::write(&uki, b"MZ").expect("uki");
    let bundle = w.join("bundle");
    let started = Instant::now();
    build::build_bundle(&BuildSpec {
        roots_dir: roots.clone(),
        targets_key: keys.join("targets"),
        snapshot_key: keys.join("snapshot"),
        timestamp_key: keys.join("timestamp"),
        manifest: BundleManifest {
            schema: 1,
            product: "wardbox".into(),
            kind: BundleKind::Full,
            version: Version::new(1, 1, 0),
            min_starting_version: Version::new(1, 0, 0),
            compatibility: Compatibility { architecture: "x86_64".into() },
            created: Timestamp::now(),
            contents: vec![],
        },
        expires,
        system_image: Some(image.clone()),
        uki_a: Some(uki.clone()),
        uki_b: Some(uki),
        models_dir: None,
        firmware_policy: None,
        release_notes: None,
        out: bundle.clone(),
    })
    .await
    .expect("build");
    fs::remove_file(&image).expect("remove input image");
    println!("build (hash + copy):                {:>7.1} s", started.elapsed().as_secs_f64());
    let stick_file = bundle.join("targets/system.img");

    // The box.
    let state = State::provision(w.join("state"), &fs::read(roots.join("1.root.json")).expect("root")).expect("state");
    let facts = BoxFacts { product: "wardbox".into(), architecture: "x86_64".into(), system_version: Version::new(1, 0, 0), build_time: Timestamp::now() };
    let staging = w.join("staging");
    fs::create_dir_all(&staging).expect("staging");
    let slot = w.join("slot-b");
    File::create(&slot).and_then(|f| f.set_len(len)).expect("slot");

    // 1. verify + stage + write + read back, stick throttled.
    drop_cache(&stick_file);
    let started = Instant::now();
    let verified = verify_bundle_via(&bundle, &state, &facts, Some(Timestamp::now()), Throttled { bytes_per_sec: rate }).await.expect("verify");
    let metadata_time = started.elapsed();
    let plan = SlotPlan { slot: slot.clone(), running_slot: None, staging_dir: staging.clone(), staging_reserve: 0 };
    let receipt = write_to_slot(&verified, ContentRole::SystemImage, &plan, &mut |_, _, _| {}).await.expect("write");
    let total = started.elapsed();

    // 2. The same file copied plainly to a slot at the same stick speed (what `dd` through a
    // 100 MB/s stick would do), synced.
    drop_cache(&stick_file);
    let plain_slot = w.join("slot-plain");
    let started = Instant::now();
    {
        let mut out = File::create(&plain_slot).expect("plain slot");
        let mut stream = Throttled { bytes_per_sec: rate }.fetch(Url::from_file_path(&stick_file).expect("url")).await.expect("fetch");
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk.expect("chunk")).expect("write");
        }
        out.sync_all().expect("sync");
    }
    let plain = started.elapsed();
    fs::remove_file(&plain_slot).expect("remove");

    // 3. Plain dd of the same file, unthrottled: the disk's own speed on this machine.
    drop_cache(&stick_file);
    let dd_slot = w.join("slot-dd");
    let started = Instant::now();
    let status = Command::new("dd")
        .arg(format!("if={}", stick_file.display()))
        .arg(format!("of={}", dd_slot.display()))
        .args(["bs=4M", "conv=fsync", "status=none"])
        .status()
        .expect("dd");
    let dd = started.elapsed();
    assert!(status.success(), "dd failed");

    println!("metadata + manifest verify:         {:>7.3} s", metadata_time.as_secs_f64());
    println!(
        "verify+write, throttled stick:      {:>7.1} s  {:>6.1} MB/s  (stage+verify {:.1} s, write {:.1} s, read back {:.1} s)",
        total.as_secs_f64(),
        mbps(len, total),
        receipt.verify_time.as_secs_f64(),
        receipt.write_time.as_secs_f64(),
        receipt.read_back_time.as_secs_f64()
    );
    println!("plain copy, throttled stick:        {:>7.1} s  {:>6.1} MB/s", plain.as_secs_f64(), mbps(len, plain));
    println!("dd bs=4M conv=fsync, unthrottled:   {:>7.1} s  {:>6.1} MB/s", dd.as_secs_f64(), mbps(len, dd));
    println!("verify+write / plain copy at stick speed: {:.2}x the time", total.as_secs_f64() / plain.as_secs_f64());
    drop(work);
}
