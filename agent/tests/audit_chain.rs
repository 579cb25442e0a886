//! The audit chain against a real SQLCipher file: append, verify, and each way of tampering.
//!
//! The tampering is done as an attacker holding the store key would: drop the append-only
//! triggers and edit the table directly. The chain, not the triggers, must catch it.

use std::path::{Path, PathBuf};

use serde_json::json;
use wardbox::audit::{self, AuditEvent, AuditLog, ChainBreak, CheckpointLog, EventKind, TextDigest};
use wardbox::store::{Store, StoreKey};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: StoreKey,
    checkpoints: CheckpointLog,
}

/// A store with `n` audit records and no checkpoints.
fn fixture(n: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.db");
    let key = StoreKey::random();
    let (mut store, _) = Store::open_or_create(&path, &key).expect("create");
    store.migrate().expect("migrate");
    drop(store);
    let (log, writer) = AuditLog::start(&path, &key).expect("start");
    for i in 0..n {
        let seq = log
            .append_blocking(AuditEvent::new(
                EventKind::Query,
                format!("user-{}", i % 3),
                json!({ "patient": i, "prompt": TextDigest::of("what is the latest HbA1c") }),
            ))
            .expect("append");
        assert_eq!(seq, i + 1, "sequence numbers are dense and start at 1");
    }
    drop(log);
    writer.join();
    let checkpoints = CheckpointLog::new(dir.path().join("checkpoints.jsonl"));
    Fixture { _dir: dir, path, key, checkpoints }
}

fn open(f: &Fixture) -> Store {
    Store::open_existing(&f.path, &f.key).expect("open")
}

fn verify(f: &Fixture) -> Option<ChainBreak> {
    let store = open(f);
    let cps = f.checkpoints.read_all().expect("checkpoints");
    audit::verify_chain(&store, &cps).expect("verify").first_break
}

/// Run SQL as an attacker with the key: without the append-only triggers.
fn tamper(f: &Fixture, sql: &str) {
    let store = open(f);
    store
        .conn()
        .execute_batch(&format!(
            "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete; {sql}"
        ))
        .expect("tamper");
}

#[test]
fn an_untouched_chain_verifies() {
    let f = fixture(50);
    let store = open(&f);
    let report = audit::verify_chain(&store, &[]).expect("verify");
    assert!(report.intact(), "{:?}", report.first_break);
    assert_eq!(report.records, 50);
    assert_eq!(report.head_seq, 50);
}

#[test]
fn the_triggers_refuse_updates_and_deletes() {
    let f = fixture(3);
    let store = open(&f);
    let err = store.conn().execute("UPDATE audit SET actor = 'x' WHERE seq = 2", []).expect_err("update");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = store.conn().execute("DELETE FROM audit WHERE seq = 3", []).expect_err("delete");
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[test]
fn an_edited_field_names_the_record() {
    let f = fixture(20);
    tamper(&f, "UPDATE audit SET actor = 'someone-else' WHERE seq = 7");
    assert_eq!(verify(&f), Some(ChainBreak::Altered { seq: 7 }));
    let f = fixture(20);
    tamper(&f, "UPDATE audit SET detail = '{\"patient\":999}' WHERE seq = 12");
    assert_eq!(verify(&f), Some(ChainBreak::Altered { seq: 12 }));
}

#[test]
fn a_recomputed_hash_still_breaks_the_link_to_the_next_record() {
    // A careful attacker edits record 7 and recomputes its hash; record 8 still names the old one.
    let f = fixture(20);
    let store = open(&f);
    let (ts, kind, detail, prev): (String, String, String, String) = store
        .conn()
        .query_row("SELECT ts, kind, detail, prev_hash FROM audit WHERE seq = 7", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .expect("row");
    drop(store);
    let forged = wardbox::audit::AuditRecord::compute_hash(7, &ts, &kind, "mallory", &detail, &prev);
    tamper(&f, &format!("UPDATE audit SET actor = 'mallory', hash = '{forged}' WHERE seq = 7"));
    assert_eq!(verify(&f), Some(ChainBreak::NotLinked { seq: 8 }));
}

#[test]
fn a_deleted_row_names_the_gap() {
    let f = fixture(20);
    tamper(&f, "DELETE FROM audit WHERE seq = 9");
    assert_eq!(verify(&f), Some(ChainBreak::Missing { after: 8, next_found: 10 }));
}

#[test]
fn deleted_and_renumbered_rows_break_the_link() {
    let f = fixture(20);
    tamper(&f, "DELETE FROM audit WHERE seq = 9; UPDATE audit SET seq = seq - 1 WHERE seq > 9");
    // Renumbering changes the hashed seq, so record 9 (formerly 10) no longer matches its hash.
    assert_eq!(verify(&f), Some(ChainBreak::Altered { seq: 9 }));
}

#[test]
fn two_swapped_rows_name_the_first() {
    let f = fixture(20);
    tamper(
        &f,
        "UPDATE audit SET seq = -5 WHERE seq = 5;
         UPDATE audit SET seq = 5 WHERE seq = 6;
         UPDATE audit SET seq = 6 WHERE seq = -5;",
    );
    assert_eq!(verify(&f), Some(ChainBreak::Altered { seq: 5 }));
}

#[test]
fn a_truncated_tail_is_caught_by_the_checkpoint() {
    let f = fixture(30);
    let store = open(&f);
    let (seq, hash) = audit::read_head(&store).expect("head");
    assert_eq!(seq, 30);
    f.checkpoints.record(seq, &hash).expect("checkpoint");
    drop(store);
    assert_eq!(verify(&f), None, "intact before truncation");
    tamper(&f, "DELETE FROM audit WHERE seq > 25");
    assert_eq!(verify(&f), Some(ChainBreak::Truncated { last_present: 25, checkpoint_seq: 30 }));
}

#[test]
fn a_rewritten_chain_is_caught_by_the_checkpoint() {
    // Rewrite the whole chain from record 10 on with consistent hashes: only the checkpoint,
    // kept outside the database, can tell.
    let f = fixture(12);
    let store = open(&f);
    let (seq, hash) = audit::read_head(&store).expect("head");
    f.checkpoints.record(seq, &hash).expect("checkpoint");
    let rows: Vec<(u64, String, String, String, String)> = {
        let mut stmt = store.conn().prepare("SELECT seq, ts, kind, detail, prev_hash FROM audit WHERE seq >= 10 ORDER BY seq").expect("prep");
        stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    drop(store);
    let mut prev = rows[0].4.clone();
    let mut sql = String::new();
    for (seq, ts, kind, detail, _) in rows {
        let h = wardbox::audit::AuditRecord::compute_hash(seq, &ts, &kind, "mallory", &detail, &prev);
        sql.push_str(&format!("UPDATE audit SET actor='mallory', prev_hash='{prev}', hash='{h}' WHERE seq={seq};"));
        prev = h;
    }
    tamper(&f, &sql);
    assert_eq!(verify(&f), Some(ChainBreak::CheckpointMismatch { seq: 12 }));
}

/// A chain longer than several of the walk's batches (1,024 records each), written with many
/// appends in flight as the agent writes under load: the first of two edited records is named,
/// wherever the hashing threads finish first.
#[test]
fn a_chain_of_several_batches_names_its_first_edited_record() {
    let f = fixture(0);
    let (log, writer) = AuditLog::start(&f.path, &f.key).expect("start");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let appends = (0..3500u64).map(|i| {
            log.append(AuditEvent::new(EventKind::Access, format!("user-{}", i % 7), json!({ "patient": i })))
        });
        for seq in futures_util::future::join_all(appends).await {
            seq.expect("append");
        }
    });
    drop(log);
    writer.join();
    let store = open(&f);
    let report = audit::verify_chain(&store, &[]).expect("verify");
    assert_eq!((report.records, report.head_seq, report.first_break), (3500, 3500, None));
    drop(store);
    tamper(&f, "UPDATE audit SET actor = 'mallory' WHERE seq IN (1500, 3100)");
    assert_eq!(verify(&f), Some(ChainBreak::Altered { seq: 1500 }));
}

#[test]
fn the_cli_names_the_broken_record_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path();
    let config = write_dev_config(base);
    std::fs::create_dir_all(base.join("state")).expect("mkdir");
    let key = wardbox::stages::unlock::load_or_create_key_file(&base.join("state/dev-store.key"))
        .expect("key");
    let db = base.join("data/wardbox.db");
    std::fs::create_dir_all(base.join("data")).expect("mkdir");
    let (mut store, _) = Store::open_or_create(&db, &key).expect("create");
    store.migrate().expect("migrate");
    drop(store);
    let (log, writer) = AuditLog::start(&db, &key).expect("start");
    for i in 0..10 {
        log.append_blocking(AuditEvent::new(EventKind::Login, format!("u{i}"), json!({}))).expect("append");
    }
    drop(log);
    writer.join();

    let ok = wardbox_cmd(&["audit", "verify", "-c", config.to_str().expect("utf8")]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("audit chain intact"));

    let store = Store::open_existing(&db, &key).expect("open");
    store
        .conn()
        .execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'x' WHERE seq = 4;")
        .expect("tamper");
    drop(store);
    let bad = wardbox_cmd(&["audit", "verify", "-c", config.to_str().expect("utf8")]);
    assert_eq!(bad.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("record 4 was altered"), "{stderr}");
}

#[test]
fn export_writes_compressed_jsonl_with_a_checksum_and_deletes_nothing() {
    let f = fixture(25);
    let store = open(&f);
    let month = &jiff::Timestamp::now().to_string()[..7];
    let out = f._dir.path().join("export");
    let summary = audit::export_month(&store, month, &out).expect("export");
    assert_eq!(summary.records, 25);
    let gz = std::fs::read(&summary.file).expect("read");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).expect("gunzip");
    let lines: Vec<audit::AuditRecord> = text.lines().map(|l| serde_json::from_str(l).expect("record")).collect();
    assert_eq!(lines.len(), 25);
    assert!(lines.iter().all(|r| r.expected_hash() == r.hash), "exported records re-verify");
    let sum = std::fs::read_to_string(&summary.checksum_file).expect("sum");
    use sha2::Digest;
    assert!(sum.starts_with(&hex::encode(sha2::Sha256::digest(&gz))));
    let remaining: i64 = store.conn().query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).expect("count");
    assert_eq!(remaining, 25);
    assert!(audit::export_month(&store, month, &out).is_err(), "an export is never overwritten");
    assert!(audit::export_month(&store, "2026-13", &out).is_err());
}

pub fn write_dev_config(base: &Path) -> PathBuf {
    let config = wardbox::config::Config::dev_defaults(base);
    let path = base.join("wardbox.toml");
    std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("write config");
    path
}

fn wardbox_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).output().expect("run wardbox")
}
