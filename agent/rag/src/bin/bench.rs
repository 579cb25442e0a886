//! `wardbox-rag-bench`: de-identification detection throughput, ingest throughput, retrieval latency at 10k and 100k chunks inside an
//! encrypted store, and store size per 10k chunks. Prints a table.
//!
//!   wardbox-rag-bench [--sizes 10000,100000] [--queries 200] [--embed-url http://127.0.0.1:11434/]
//!                     [--embed-model all-minilm:l6-v2] [--dir /tmp]
//!
//! Ingest throughput is measured through the whole pipeline (parse, de-identify, chunk, embed,
//! index) on the synthetic corpus, with the real model when --embed-url points at a running
//! engine, and with the hashing embedder (pipeline cost without a model) always. The large
//! indexes are bulk-loaded with synthetic de-identified-style text and hashing-embedder
//! vectors (embedding 100k chunks through a CPU model would take hours); search latency does
//! not depend on where the vectors came from. The query's own embedding time is reported
//! separately when a model is given.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wardbox_rag::embed::{Embedder, HashEmbedder, OllamaEmbedder};
use wardbox_rag::index::{self, Access, NewChunk, Scope};
use wardbox_rag::ingest::{self, ChunkConfig};
use wardbox_rag::synth;

struct Args {
    sizes: Vec<usize>,
    queries: usize,
    embed_url: Option<String>,
    embed_model: String,
    dir: std::path::PathBuf,
    /// SQLite page cache in MiB (SQLCipher keeps decrypted pages there; the default is 2 MiB).
    cache_mib: u32,
    /// Only the retrieval latencies (no detection or ingest rates).
    search_only: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args { sizes: vec![10_000, 100_000], queries: 200, embed_url: None, embed_model: "all-minilm:l6-v2".into(), dir: std::env::temp_dir(), cache_mib: 256, search_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => a.sizes = val()?.split(',').map(|s| s.trim().parse().map_err(|_| format!("bad size {s:?}"))).collect::<Result<_, _>>()?,
            "--queries" => a.queries = val()?.parse().map_err(|_| "bad --queries")?,
            "--embed-url" => a.embed_url = Some(val()?),
            "--embed-model" => a.embed_model = val()?,
            "--dir" => a.dir = val()?.into(),
            "--cache-mib" => a.cache_mib = val()?.parse().map_err(|_| "bad --cache-mib")?,
            "--search-only" => a.search_only = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// De-identification detection alone over the labelled synthetic notes: MB of text per second
/// (run for at least three seconds, after the rules are compiled).
fn detect_rate() -> (usize, f64, f64) {
    let notes = synth::labelled_notes(0x5eed_b00c, 200);
    let bytes: usize = notes.iter().map(|n| n.text.len()).sum();
    let known = wardbox_rag::deid::KnownIdentifiers::default();
    // The rules compile on first use; that one-time cost is not throughput.
    std::hint::black_box(wardbox_rag::deid::detect(&notes[0].text, &known));
    let start = Instant::now();
    let mut rounds = 0usize;
    let mut spans = 0usize;
    while rounds == 0 || start.elapsed().as_secs_f64() < 3.0 {
        for n in &notes {
            spans += wardbox_rag::deid::detect(&n.text, &known).len();
        }
        rounds += 1;
    }
    std::hint::black_box(spans);
    let per_note = (bytes * rounds) as f64 / 1e6 / start.elapsed().as_secs_f64();
    // The same text as one long document (a large PDF): the rate must not fall with length.
    let one = notes.iter().map(|n| n.text.as_str()).collect::<Vec<_>>().join("\n\n");
    let start = Instant::now();
    let mut rounds = 0usize;
    while rounds == 0 || start.elapsed().as_secs_f64() < 3.0 {
        std::hint::black_box(wardbox_rag::deid::detect(&one, &known));
        rounds += 1;
    }
    (bytes, per_note, (one.len() * rounds) as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Ingest the synthetic corpus `rounds` times (each round's bytes differ, so nothing is
/// skipped as unchanged); chunks per second.
async fn ingest_rate(emb: &dyn Embedder, dir: &std::path::Path, rounds: usize) -> Result<(usize, f64), String> {
    let path = dir.join(format!("wardbox-rag-bench-ingest-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut conn = index::open_encrypted(&path, &[0x11; 32]).map_err(|e| e.to_string())?;
    let docs = synth::corpus().docs;
    let start = Instant::now();
    let mut chunks = 0;
    for r in 0..rounds {
        for d in &docs {
            let mut bytes = d.bytes.clone();
            if !d.name.ends_with(".json") && !d.name.ends_with(".pdf") {
                bytes.extend_from_slice(format!("\nAddendum {r}.").as_bytes());
            } else if r > 0 {
                continue;
            }
            match ingest::ingest_bytes(&mut conn, emb, &d.name, &bytes, &d.owner(), ChunkConfig::default()).await.map_err(|e| e.to_string())? {
                ingest::Outcome::Ingested { chunks: n, .. } => chunks += n,
                ingest::Outcome::Unchanged { .. } => {}
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok((chunks, chunks as f64 / secs))
}

/// Synthetic text with a realistic word-frequency shape: a 20,000-word vocabulary drawn with
/// Zipf's law (s = 1), like clinical prose, so that BM25 sees frequent and rare terms in
/// natural proportions. Real de-identified chunks carry pseudonyms and shifted dates the same way.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        let cumulative = (1..=n).map(|r| { acc += 1.0 / r as f64; acc }).collect();
        Self { cumulative }
    }
    fn rank(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.random_range(0.0..total);
        self.cumulative.partition_point(|c| *c < x)
    }
}

fn word(rank: usize) -> String {
    // Pronounceable, distinct per rank: consonant-vowel pairs from the rank's digits.
    const C: &[u8] = b"bcdfghklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut r = rank + 1;
    let mut w = String::new();
    while r > 0 {
        w.push(C[r % C.len()] as char);
        r /= C.len();
        w.push(V[r % V.len()] as char);
        r /= V.len();
    }
    w
}

fn filler(rng: &mut StdRng, zipf: &Zipf, words: usize) -> String {
    (0..words).map(|_| word(zipf.rank(rng))).collect::<Vec<_>>().join(" ")
}

/// A question: two common words and four content words of middling frequency.
fn question(rng: &mut StdRng, zipf: &Zipf) -> String {
    let mut w: Vec<String> = (0..2).map(|_| word(zipf.rank(rng))).collect();
    w.extend((0..4).map(|_| word(rng.random_range(50..5000))));
    w.join(" ")
}

struct SizeResult {
    chunks: usize,
    load_s: f64,
    bytes_per_10k: f64,
    patient_p50: f64,
    patient_p95: f64,
    all_p50: f64,
    all_p95: f64,
    /// Plain sqlite-vec brute force, k = 10, over the same vectors, in the same run.
    anchor_p50: f64,
    anchor_p95: f64,
    /// Median seconds per phase (FTS, KNN, fusion, row fetch), one patient + library and all.
    patient_phases: [f64; 4],
    all_phases: [f64; 4],
}

/// The anchor: the same vectors in a plain (unencrypted) SQLite file, one `vec0` float table
/// with nothing else, searched by brute force for the 10 nearest. What sqlite-vec does alone.
struct Anchor {
    conn: rusqlite::Connection,
    path: std::path::PathBuf,
}

impl Anchor {
    fn open(path: std::path::PathBuf, cache_mib: u32) -> Result<Anchor, String> {
        let _ = std::fs::remove_file(&path);
        index::register_sqlite_vec();
        let conn = rusqlite::Connection::open(&path).map_err(|x| x.to_string())?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{};
             CREATE VIRTUAL TABLE anchor USING vec0(embedding float[{}] distance_metric=cosine);",
            u64::from(cache_mib) * 1024,
            index::DIMS
        ))
        .map_err(|x| x.to_string())?;
        Ok(Anchor { conn, path })
    }
    fn insert(&mut self, vectors: &[Vec<f32>]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|x| x.to_string())?;
        {
            let mut ins = tx.prepare("INSERT INTO anchor (embedding) VALUES (?1)").map_err(|x| x.to_string())?;
            for v in vectors {
                ins.execute([v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()]).map_err(|x| x.to_string())?;
            }
        }
        tx.commit().map_err(|x| x.to_string())
    }
    fn knn10(&self, v: &[f32]) -> Result<Vec<i64>, String> {
        let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut stmt = self.conn.prepare_cached("SELECT rowid FROM anchor WHERE embedding MATCH ?1 AND k = 10").map_err(|x| x.to_string())?;
        stmt.query_map([blob], |r| r.get(0)).map_err(|x| x.to_string())?.collect::<Result<_, _>>().map_err(|x| x.to_string())
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

fn phases(t: &index::SearchTimings) -> [f64; 4] {
    [t.fts_s, t.knn_s, t.fuse_s, t.fetch_s]
}

/// Per-phase medians, in ms.
fn phase_medians(all: &[[f64; 4]]) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (i, o) in out.iter_mut().enumerate() {
        let mut v: Vec<f64> = all.iter().map(|p| p[i] * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        *o = pct(&v, 0.5);
    }
    out
}

/// Bulk-load `n` chunks over 200 patients and the library, then time searches.
fn size_run(n: usize, queries: usize, dir: &std::path::Path, cache_mib: u32) -> Result<SizeResult, String> {
    let e = |x: index::IndexError| x.to_string();
    let path = dir.join(format!("wardbox-rag-bench-{n}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut conn = index::open_encrypted(&path, &[0x22; 32]).map_err(e)?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{};", u64::from(cache_mib) * 1024)).map_err(|x| x.to_string())?;
    index::check_model(&conn, "wardbox-hash-dev").map_err(e)?;
    let emb = HashEmbedder::new(index::DIMS);
    let mut rng = StdRng::seed_from_u64(n as u64);
    let zipf = Zipf::new(20_000);
    let patients: Vec<i64> = (0..200).map(|i| index::patient_owner(&conn, &format!("bench-{i}")).map(|p| p.0)).collect::<Result<_, _>>().map_err(e)?;
    let mut anchor = Anchor::open(dir.join(format!("wardbox-rag-bench-anchor-{n}-{}.db", std::process::id())), cache_mib)?;
    let per_doc = 20;
    let mut anchor_s = 0.0;
    let start = Instant::now();
    let mut made = 0;
    let mut doc = 0;
    while made < n {
        let owner = if doc % 20 == 0 { index::LIBRARY } else { patients[doc % patients.len()] };
        let k = per_doc.min(n - made);
        let chunks: Vec<NewChunk> = (0..k)
            .map(|_| {
                let text = filler(&mut rng, &zipf, 120);
                NewChunk { section: "Note".into(), embedding: emb.embed_one(&text), text }
            })
            .collect();
        index::insert_document(&mut conn, owner, &format!("bench-doc-{doc}"), "text", "bench", &chunks).map_err(e)?;
        let t = Instant::now();
        anchor.insert(&chunks.iter().map(|c| c.embedding.clone()).collect::<Vec<_>>())?;
        anchor_s += t.elapsed().as_secs_f64();
        made += k;
        doc += 1;
    }
    let load_s = start.elapsed().as_secs_f64() - anchor_s;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(|x| x.to_string())?;
    anchor.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(|x| x.to_string())?;
    let bytes = std::fs::metadata(&path).map_err(|x| x.to_string())?.len() as f64;
    let mut patient_ms = Vec::new();
    let mut all_ms = Vec::new();
    let mut anchor_ms = Vec::new();
    let mut patient_phases = Vec::new();
    let mut all_phases = Vec::new();
    // Warm both page caches before timing: what the agent does after opening the store, and
    // one query for the anchor.
    index::warm_cache(&conn).map_err(e)?;
    anchor.knn10(&emb.embed_one("warm"))?;
    for q in 0..queries {
        let text = question(&mut rng, &zipf);
        let v = emb.embed_one(&text);
        let p = patients[q % patients.len()];
        let t = Instant::now();
        let (_, timings) = index::search_timed(&conn, &text, &v, &Scope { patient: Some(p), include_library: true }, &Access::AllPatients, 5).map_err(e)?;
        patient_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        patient_phases.push(phases(&timings));
        let t = Instant::now();
        let (_, timings) = index::search_timed(&conn, &text, &v, &Scope { patient: None, include_library: true }, &Access::AllPatients, 5).map_err(e)?;
        all_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        all_phases.push(phases(&timings));
        let t = Instant::now();
        std::hint::black_box(anchor.knn10(&v)?);
        anchor_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    patient_ms.sort_by(f64::total_cmp);
    all_ms.sort_by(f64::total_cmp);
    anchor_ms.sort_by(f64::total_cmp);
    drop(anchor);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(SizeResult {
        chunks: n,
        load_s,
        bytes_per_10k: bytes / (n as f64 / 10_000.0),
        patient_p50: pct(&patient_ms, 0.5),
        patient_p95: pct(&patient_ms, 0.95),
        all_p50: pct(&all_ms, 0.5),
        all_p95: pct(&all_ms, 0.95),
        anchor_p50: pct(&anchor_ms, 0.5),
        anchor_p95: pct(&anchor_ms, 0.95),
        patient_phases: phase_medians(&patient_phases),
        all_phases: phase_medians(&all_phases),
    })
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wardbox-rag-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardbox-rag-bench: tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("wardbox-rag-bench (SQLCipher + sqlite-vec + FTS5; {} CPUs visible)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!();
    if !a.search_only {
        ingest_rates(&a, &rt);
    }
    search_latencies(&a);
    std::process::ExitCode::SUCCESS
}

/// De-identification and ingest throughput; query embedding latency with a model.
fn ingest_rates(a: &Args, rt: &tokio::runtime::Runtime) {
    let (bytes, mbs, mbs_one) = detect_rate();
    println!("{:<44} {:>12.2}   ({} KB of synthetic notes)", "de-identification detection, MB/s", mbs, bytes / 1000);
    println!("{:<44} {:>12.2}   (the same notes as one document)", "  one long document, MB/s", mbs_one);
    println!("{:<44} {:>12}", "ingest (parse, de-identify, chunk, embed, index)", "chunks/s");
    match rt.block_on(ingest_rate(&HashEmbedder::new(index::DIMS), &a.dir, 20)) {
        Ok((n, r)) => println!("{:<44} {:>12.1}   ({n} chunks)", "  hashing embedder (pipeline without model)", r),
        Err(e) => println!("  hashing embedder: failed: {e}"),
    }
    let mut query_embed_ms = None;
    match &a.embed_url {
        None => println!("{:<44} {:>12}", "  real model", "n/a (no --embed-url)"),
        Some(url) => match OllamaEmbedder::new(url, &a.embed_model, index::DIMS) {
            Err(e) => println!("  {}: {e}", a.embed_model),
            Ok(emb) => {
                // Load the model first: the first request pays for it, ingest should not.
                let _ = rt.block_on(emb.embed(&["warm up".to_owned()]));
                match rt.block_on(ingest_rate(&emb, &a.dir, 5)) {
                    Ok((n, r)) => println!("{:<44} {:>12.2}   ({n} chunks)", format!("  {} via {url}", a.embed_model), r),
                    Err(e) => println!("  {}: failed: {e}", a.embed_model),
                }
                let mut ms = Vec::new();
                for i in 0..20 {
                    let q = vec![format!("Which anticoagulant was started after the fall, question {i}?")];
                    let t = Instant::now();
                    if rt.block_on(emb.embed(&q)).is_ok() {
                        ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                ms.sort_by(f64::total_cmp);
                if !ms.is_empty() {
                    query_embed_ms = Some((pct(&ms, 0.5), pct(&ms, 0.95)));
                }
            }
        },
    }
    match query_embed_ms {
        Some((p50, p95)) => println!("query embedding ({}): p50 {p50:.1} ms, p95 {p95:.1} ms (add to search latency)", a.embed_model),
        None => println!("query embedding: not measured (no --embed-url)"),
    }
    println!();
}

/// Search latency at each size, beside the anchor, and where the time goes.
fn search_latencies(a: &Args) {
    println!(
        "{:>8} {:>7} {:>7} {:>17} {:>17} {:>17} {:>13} {:>13}",
        "chunks", "load s", "MB/10k", "patient p50/p95", "all p50/p95 ms", "anchor p50/p95", "patient/anc", "all/anc"
    );
    let mut results = Vec::new();
    for n in &a.sizes {
        match size_run(*n, a.queries, &a.dir, a.cache_mib) {
            Ok(r) => {
                println!(
                    "{:>8} {:>7.1} {:>7.1} {:>7.2} / {:<7.2} {:>7.2} / {:<7.2} {:>7.2} / {:<7.2} {:>5.2} / {:<5.2} {:>5.2} / {:<5.2}",
                    r.chunks,
                    r.load_s,
                    r.bytes_per_10k / 1_048_576.0,
                    r.patient_p50,
                    r.patient_p95,
                    r.all_p50,
                    r.all_p95,
                    r.anchor_p50,
                    r.anchor_p95,
                    r.patient_p50 / r.anchor_p50,
                    r.patient_p95 / r.anchor_p95,
                    r.all_p50 / r.anchor_p50,
                    r.all_p95 / r.anchor_p95,
                );
                results.push(r);
            }
            Err(e) => println!("{n:>8} failed: {e}"),
        }
    }
    println!();
    println!("where the time goes, median ms per phase:  FTS    KNN    fusion  fetch");
    for r in &results {
        let [f, k, u, d] = r.patient_phases;
        println!("{:>8} one patient + library            {f:>6.2} {k:>6.2} {u:>6.2} {d:>6.2}", r.chunks);
        let [f, k, u, d] = r.all_phases;
        println!("{:>8} all                              {f:>6.2} {k:>6.2} {u:>6.2} {d:>6.2}", r.chunks);
    }

    println!();
    println!("page cache {} MiB (--cache-mib).", a.cache_mib);
    println!("search = FTS5 BM25 (common words left out) + sqlite-vec cosine KNN (vectors partitioned by owner; one scan per owner in scope) + RRF, top 5; \"patient\" = one patient + library, \"all\" = no owner filter.");
    println!("anchor = plain sqlite-vec (unencrypted file, one float vec0 table), brute force k = 10 over the same vectors; x/anc = our time / anchor time (p50 / p95).");
}
