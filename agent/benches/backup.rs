//! Backup benchmark: a SQLCipher store of a few hundred MB (WARDBOX_BENCH_STORE_MB, default
//! 300) backed up through `wardbox::backup::run_backup` (VACUUM INTO, rustic_core, retention),
//! then again after 1 % of its rows changed; the stock `restic backup` of the same staged files
//! in the same run; restore times of both. A second pass stages a plaintext export instead of
//! the encrypted snapshot, to show what SQLCipher's per-page random IVs cost deduplication.
//!
//! Run: `cargo bench -p wardbox --bench backup`. Where the files go: TMPDIR (a RAM disk measures
//! the software, a USB disk the stick). Prints a table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use wardbox::backup::{self, BackupInputs, stage};
use wardbox::store::{Store, StoreKey};
use wardbox_backup::{BackupRepository, Destination, RepositoryKey};

const ROW_BYTES: usize = 4096;

fn noise_text(len: usize, seed: u64) -> String {
    // Hex of a xorshift stream: text that compresses about 2:1, like records do roughly.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                total += std::fs::metadata(&p).unwrap().len();
            }
        }
    }
    total
}

fn restic(repo: &Path, password: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_PASSWORD", password)
        .output()
        .expect("stock restic (Debian package `restic`) must be installed");
    assert!(out.status.success(), "restic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// restic's `backup --json` summary line: bytes added.
fn restic_added(out: &std::process::Output) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["data_added"].as_u64())
        .unwrap_or(0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn row(what: &str, secs: f64, bytes: u64, added: u64) {
    println!("| {what:<58} | {secs:>8.2} s | {:>8.1} MB/s | {:>9.1} MB new |", mb(bytes) / secs, mb(added));
}

/// How the 1 % of rows that change lie in the table.
#[derive(Clone, Copy)]
enum Change {
    /// Every hundredth row: the worst case for deduplication (every chunk holds a changed row).
    Scattered,
    /// One run of neighbouring rows: like a day's new and edited records, which sit together.
    Clustered,
}

fn change_one_percent(store: &Store, rows: u64, round: u64, how: Change) {
    let changed = rows / 100;
    let tx = store.conn().unchecked_transaction().unwrap();
    for i in 0..changed {
        let id = match how {
            Change::Scattered => (i * 100 + round) % rows + 1,
            Change::Clustered => (rows / 3 + round * changed + i) % rows + 1,
        };
        tx.execute("UPDATE bench_docs SET body = ?1 WHERE id = ?2", rusqlite::params![noise_text(ROW_BYTES, 1_000_000 + id + round), id as i64])
            .unwrap();
    }
    tx.commit().unwrap();
}

fn main() {
    let store_mb: u64 = std::env::var("WARDBOX_BENCH_STORE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path();
    let (data_dir, state_dir) = (root.join("data"), root.join("state"));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(state_dir.join("tls")).unwrap();
    std::fs::write(state_dir.join("tls/ca.pem"), "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();

    // The store: migrated, plus a table of 4 KiB documents up to the size asked for.
    let key = StoreKey::random();
    let store_path = data_dir.join("wardbox.db");
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    store.conn().execute_batch("CREATE TABLE bench_docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)").unwrap();
    let rows = store_mb * 1_000_000 / ROW_BYTES as u64;
    let fill = Instant::now();
    {
        let tx = store.conn_mut().transaction().unwrap();
        for id in 1..=rows {
            tx.execute("INSERT INTO bench_docs (id, body) VALUES (?1, ?2)", rusqlite::params![id as i64, noise_text(ROW_BYTES, id)]).unwrap();
        }
        tx.commit().unwrap();
    }
    store.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let store_bytes = std::fs::metadata(&store_path).unwrap().len();
    println!(
        "store: {rows} rows of {ROW_BYTES} bytes, {:.0} MB on disk (filled in {:.1} s); files under {}",
        mb(store_bytes),
        fill.elapsed().as_secs_f64(),
        root.display()
    );
    println!("| step                                                       |     time |    throughput |     added |");
    println!("|------------------------------------------------------------|----------|---------------|-----------|");

    let repo_key = RepositoryKey::generate().unwrap();
    let ours = root.join("repo-rustic");
    std::fs::create_dir(&ours).unwrap();
    let destination = Destination::LocalDirectory(ours.clone());
    let inputs = BackupInputs { store: &store, store_key: &key, data_dir: &data_dir, state_dir: &state_dir, config_file: None };

    // The staging step alone (VACUUM INTO + manifest), for the breakdown.
    let staged = root.join("staged");
    let t = Instant::now();
    stage::stage(&staged, &stage::StageSources { store: &store, store_key: &key, state_dir: &state_dir, config_file: None, data_dir: None }).unwrap();
    row("stage: VACUUM INTO + manifest digests", t.elapsed().as_secs_f64(), store_bytes, 0);

    let t = Instant::now();
    let first = backup::run_backup(&inputs, &destination, &repo_key, &["bench"]).unwrap();
    row("wardbox backup (full): stage + rustic_core + retention", t.elapsed().as_secs_f64(), first.snapshot.bytes, first.snapshot.bytes_added);

    // Stock restic on the same staged files.
    let theirs = root.join("repo-restic");
    let password = repo_key.to_hex();
    restic(&theirs, &password, &["init"]);
    let t = Instant::now();
    let out = restic(&theirs, &password, &["backup", "--json", staged.to_str().unwrap()]);
    row("restic backup (full) of the staged files", t.elapsed().as_secs_f64(), dir_bytes(&staged), restic_added(&out));

    for (round, how, name) in [(1, Change::Scattered, "scattered"), (2, Change::Clustered, "clustered")] {
        change_one_percent(&store, rows, round, how);
        let t = Instant::now();
        let next = backup::run_backup(&inputs, &destination, &repo_key, &["bench"]).unwrap();
        row(&format!("wardbox backup after a 1 % {name} change"), t.elapsed().as_secs_f64(), next.snapshot.bytes, next.snapshot.bytes_added);
        stage::stage(&staged, &stage::StageSources { store: &store, store_key: &key, state_dir: &state_dir, config_file: None, data_dir: None }).unwrap();
        let t = Instant::now();
        let out = restic(&theirs, &password, &["backup", "--json", staged.to_str().unwrap()]);
        row("restic backup after the same change (same staged files)", t.elapsed().as_secs_f64(), dir_bytes(&staged), restic_added(&out));
    }
    let latest = BackupRepository::open(&destination, &repo_key).unwrap().snapshots().unwrap().last().unwrap().id.clone();

    // Restore: ours (checks --read-data first, then writes), restic's.
    let target = root.join("restored");
    let t = Instant::now();
    BackupRepository::open(&destination, &repo_key).unwrap().restore_latest(&target).unwrap();
    row("wardbox restore latest (check --read-data, then restore)", t.elapsed().as_secs_f64(), dir_bytes(&target), 0);
    std::fs::remove_dir_all(&target).unwrap();
    let t = Instant::now();
    let repo = BackupRepository::open(&destination, &repo_key).unwrap();
    let _ = repo.check(true).unwrap();
    row("  of which check --read-data", t.elapsed().as_secs_f64(), dir_bytes(&ours), 0);
    let t = Instant::now();
    let drill = backup::run_drill(&data_dir, &destination, &repo_key).unwrap();
    row("wardbox drill (restore + digests + chain + counts)", t.elapsed().as_secs_f64(), store_bytes, 0);
    assert_eq!(drill.snapshot_id, latest);
    let t = Instant::now();
    restic(&theirs, &password, &["restore", "latest", "--target", target.to_str().unwrap()]);
    row("restic restore latest", t.elapsed().as_secs_f64(), dir_bytes(&target), 0);
    std::fs::remove_dir_all(&target).unwrap();
    println!("repository sizes: rustic {:.0} MB, restic {:.0} MB", mb(dir_bytes(&ours)), mb(dir_bytes(&theirs)));
    std::fs::remove_dir_all(&theirs).unwrap();
    std::fs::remove_dir_all(&ours).unwrap();

    // The same with a plaintext export staged instead (what deduplication could save).
    let plain_repo = root.join("repo-plain");
    std::fs::create_dir(&plain_repo).unwrap();
    let plain_dest = Destination::LocalDirectory(plain_repo.clone());
    let plain_dir = data_dir.join(".bench-plain");
    let export_plain = |dir: &PathBuf| {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("wardbox-plain.db");
        store
            .conn()
            .execute_batch(&format!(
                "ATTACH DATABASE '{}' AS plain KEY ''; SELECT sqlcipher_export('plain'); DETACH DATABASE plain;",
                file.display()
            ))
            .unwrap();
    };
    let (mut plain, _) = BackupRepository::open_or_init(&plain_dest, &repo_key).unwrap();
    let t = Instant::now();
    export_plain(&plain_dir);
    let p1 = plain.backup(&plain_dir, &[]).unwrap();
    row("plaintext export + rustic_core (full), for comparison", t.elapsed().as_secs_f64(), p1.bytes, p1.bytes_added);
    for (round, how, name) in [(3, Change::Scattered, "scattered"), (4, Change::Clustered, "clustered")] {
        change_one_percent(&store, rows, round, how);
        let t = Instant::now();
        export_plain(&plain_dir);
        let next = plain.backup(&plain_dir, &[]).unwrap();
        row(&format!("plaintext export + rustic_core after a 1 % {name} change"), t.elapsed().as_secs_f64(), next.bytes, next.bytes_added);
    }
    println!("plaintext repository: {:.0} MB for three snapshots", mb(dir_bytes(&plain_repo)));
    let _ = std::fs::remove_dir_all(&plain_dir);
}
