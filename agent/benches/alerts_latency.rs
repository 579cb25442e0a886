//! What the alert detector adds to an audited request: the same requests timed with the
//! detector's daemon task (`alerting::feed::run`) following the audit chain and without it,
//! in one run, in alternating blocks so that a change of load on the machine falls on both.
//!
//! A request here is what a page view of a patient costs the agent outside its rendering: the
//! shared store locked for a read (the feed takes the same lock per batch), then the access
//! record appended and awaited until its commit (synchronous=FULL), as the web layer does.
//! 15 users view patients in turn, so the detector runs every rule it would on a real day.
//!
//! Run: `cargo bench -p wardbox --bench alerts_latency` (WARDBOX_BENCH_REQUESTS: requests per
//! block, 2000 by default; WARDBOX_BENCH_BLOCKS: alternating blocks, 10 by default;
//! WARDBOX_BENCH_CLIENTS: concurrent clients, 4 by default). Prints the median and 99th
//! percentile with and without the detector, and their ratio. A block must last many of the
//! feed's pass intervals (100 ms), or it hardly sees the feed at all.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wardbox::alerting::DeliveryConfig;
use wardbox::audit::{AuditEvent, AuditLog, EventKind};
use wardbox::store::{Store, StoreKey};
use wardbox_alerts::AlertsConfig;

fn main() {
    let per_block: usize = env_or("WARDBOX_BENCH_REQUESTS", 2000);
    let blocks: usize = env_or("WARDBOX_BENCH_BLOCKS", 10);
    let clients: usize = env_or("WARDBOX_BENCH_CLIENTS", 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = StoreKey::random();
    let path = dir.path().join("bench.db");
    let (mut store, _) = Store::open_or_create(&path, &key).expect("create");
    store.migrate().expect("migrate");
    let store = Arc::new(Mutex::new(store));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (audit, writer) = AuditLog::start(&path, &key).expect("audit");

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut request_no = 0u64;
    for block in 0..blocks {
        // Alternate: off, on, off, on, … The feed replays the chain at each start; the block
        // is timed only after that replay has caught up.
        let detector_on = block % 2 == 1;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The position one record behind the head: the feed's replay judges that record and
        // writes the position at its end, which tells that the replay is done.
        let head = wardbox::audit::read_head(&store.lock().expect("store lock")).expect("head").0;
        if detector_on {
            let lock = store.lock().expect("store lock");
            wardbox::alerting::outbox::set_processed_seq(lock.conn(), head.saturating_sub(1)).expect("position");
        }
        let task = detector_on.then(|| {
            runtime.spawn(wardbox::alerting::feed::run(
                store.clone(),
                audit.clone(),
                AlertsConfig::default(),
                DeliveryConfig::default(),
                |m| eprintln!("feed: {m}"),
                stop_rx,
            ))
        });
        if detector_on {
            wait_caught_up(&store, head);
        }
        let times = runtime.block_on(requests(&store, &audit, per_block, clients, request_no));
        request_no += per_block as u64;
        if let Some(task) = task {
            let _ = stop_tx.send(true);
            runtime.block_on(task).expect("feed task");
        }
        if detector_on { with.extend(times) } else { without.extend(times) }
    }
    drop(audit);
    writer.join_within(Duration::from_secs(5));

    let (m0, p0) = (percentile(&mut without, 0.5), percentile(&mut without, 0.99));
    let (m1, p1) = (percentile(&mut with, 0.5), percentile(&mut with, 0.99));
    println!("audited request ({clients} clients, {} requests each way, {blocks} alternating blocks)", without.len());
    println!("{:<28} {:>12} {:>12}", "", "median", "p99");
    println!("{:<28} {:>12.3?} {:>12.3?}", "without the detector", m0, p0);
    println!("{:<28} {:>12.3?} {:>12.3?}", "with the detector following", m1, p1);
    println!(
        "{:<28} {:>12.3} {:>12.3}",
        "ratio (with / without)",
        m1.as_secs_f64() / m0.as_secs_f64(),
        p1.as_secs_f64() / p0.as_secs_f64()
    );
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A page view of a patient by one of 15 users, as the web layer records it.
fn event(client: usize, n: u64) -> AuditEvent {
    let user = format!("dr{:02}", (n as usize + client) % 15);
    let who = json!({ "user": user, "role": "clinician", "client": "10.0.0.7", "session": "s1", "break_glass": false });
    let detail = json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{}", n % 400) });
    AuditEvent::new(EventKind::Access, &user, detail)
}

/// `per_block` requests spread over `clients` concurrent clients; each request's latency.
async fn requests(store: &Arc<Mutex<Store>>, audit: &AuditLog, per_block: usize, clients: usize, first: u64) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (store, audit) = (store.clone(), audit.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for i in (client..per_block).step_by(clients) {
                let started = Instant::now();
                let store2 = store.clone();
                tokio::task::spawn_blocking(move || {
                    let guard = store2.lock().expect("store lock");
                    let n: i64 = guard.conn().query_row("SELECT count(*) FROM users", [], |r| r.get(0)).expect("read");
                    n
                })
                .await
                .expect("read task");
                audit.append(event(client, first + i as u64)).await.expect("append");
                times.push(started.elapsed());
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all
}

/// Wait until the feed's stored position reaches `seq`.
fn wait_caught_up(store: &Arc<Mutex<Store>>, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at: Option<i64> = store
            .lock()
            .expect("store lock")
            .conn()
            .query_row("SELECT max(processed_seq) FROM alert_detector", [], |r| r.get(0))
            .unwrap_or(None);
        if at.is_some_and(|a| a as u64 >= seq) {
            return;
        }
        assert!(Instant::now() < deadline, "the feed did not catch up with record {seq} within 60 s (at {at:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(times: &mut [Duration], q: f64) -> Duration {
    times.sort();
    times[((times.len() - 1) as f64 * q).round() as usize]
}
