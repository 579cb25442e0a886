//! The alert detector fed by the real audit chain in a real SQLCipher store: alerts are stored
//! once with their outbox rows and audited, a restart rebuilds the detector by replaying the
//! chain without raising anything twice, and the daemon task follows records as they commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::OptionalExtension;
use serde_json::json;
use wardbox::alerting::{DeliveryConfig, Feed, SyslogConfig, outbox};
use wardbox::audit::{AuditEvent, AuditLog, EventKind, WriterThread};
use wardbox::store::{Store, StoreKey};
use wardbox_alerts::AlertsConfig;

struct Chain {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    key: StoreKey,
    audit: Option<AuditLog>,
    writer: Option<WriterThread>,
}

impl Chain {
    fn new() -> Chain {
        Chain::migrated_to(None)
    }

    /// A store migrated up to `version` only (`None`: all), as a box of an older release.
    fn migrated_to(version: Option<u32>) -> Chain {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey::random();
        let path = dir.path().join("wardbox.db");
        let (mut store, _) = Store::open_or_create(&path, &key).expect("store");
        match version {
            Some(v) => store.migrate_to(v).map(|_| ()).expect("migrate"),
            None => store.migrate().map(|_| ()).expect("migrate"),
        }
        let (audit, writer) = AuditLog::start(&path, &key).expect("audit");
        Chain { _dir: dir, path, key, audit: Some(audit), writer: Some(writer) }
    }

    fn store(&self) -> Store {
        Store::open_existing(&self.path, &self.key).expect("open")
    }

    fn audit(&self) -> &AuditLog {
        self.audit.as_ref().expect("audit")
    }

    /// A refused request for a patient, as the web layer records it.
    async fn refusal(&self, user: &str, patient: &str) -> u64 {
        let who = json!({ "user": user, "role": "clinician", "client": "10.0.0.7", "session": "s1", "break_glass": false });
        let detail = json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{patient}"), "outcome": "denied_no_grant" });
        self.audit().append(AuditEvent::new(EventKind::Access, user, detail)).await.expect("append")
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.audit.take();
        if let Some(w) = self.writer.take() {
            w.join_within(Duration::from_secs(2));
        }
    }
}

/// The stored `denied_access` alerts: (id, subject, triggering record). (The clock is the real
/// one, so `off_hours` may fire too, depending on when the test runs.)
fn denied_alerts(store: &Store) -> Vec<(i64, String, i64)> {
    let mut stmt = store
        .conn()
        .prepare("SELECT id, subject, trigger_seq FROM alerts WHERE rule = 'denied_access' ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows")
}

fn all_alerts(store: &Store) -> i64 {
    store.conn().query_row("SELECT count(*) FROM alerts", [], |r| r.get(0)).expect("count")
}

fn syslog_only() -> DeliveryConfig {
    DeliveryConfig {
        admin_url: "https://wardbox.test".into(),
        syslog: Some(SyslogConfig {
            address: "127.0.0.1:6514".into(),
            server_name: "syslog.test".into(),
            ca_file: "/nonexistent/ca.pem".into(),
            client_cert_file: None,
            client_key_file: None,
            timeout_secs: 5,
        }),
        ..DeliveryConfig::default()
    }
}

#[tokio::test]
async fn a_restart_replays_the_chain_and_raises_each_alert_once() {
    let chain = Chain::new();
    let rules = AlertsConfig::default();
    let mut store = chain.store();
    let mut feed = Feed::start(&store, &rules, &syslog_only()).expect("start");
    // Two refusals: under the threshold (three in ten minutes).
    let first = chain.refusal("dr.a", "p-2").await;
    chain.refusal("dr.a", "p-3").await;
    let step = feed.step(&mut store).expect("step");
    assert_eq!(step.records, 2);
    assert!(denied_alerts(&store).is_empty());
    drop(feed);

    // The agent restarts; one more refusal while it was down (the CLI appends too).
    let third = chain.refusal("dr.a", "p-4").await;
    let mut feed = Feed::start(&store, &rules, &syslog_only()).expect("restart");
    let step = feed.step(&mut store).expect("replay");
    assert_eq!(step.records, 3, "the replay reads the chain from its start");
    let denied = denied_alerts(&store);
    assert_eq!(denied.len(), 1, "the refusals before the restart count: the window was rebuilt by the replay");
    assert_eq!((denied[0].1.as_str(), denied[0].2), ("user:dr.a", third as i64));
    assert!(step.new_alerts.contains(&denied[0].0));
    let stored = outbox::get(store.conn(), denied[0].0).expect("get").expect("stored");
    assert_eq!(stored.alert.seqs, [first, first + 1, third]);
    assert_eq!(stored.deliveries, [("syslog".to_owned(), "new".to_owned(), 0, None)], "one outbox row per destination, new");

    // Another restart: the same history raises nothing new, of any rule.
    let before = all_alerts(&store);
    let mut feed = Feed::start(&store, &rules, &syslog_only()).expect("restart");
    let step = feed.step(&mut store).expect("replay");
    assert_eq!((step.records, step.new_alerts.len()), (3, 0));
    assert_eq!(all_alerts(&store), before);
}

/// Open all day, every day: `off_hours` (which would depend on when the test runs) raises
/// nothing, so which records raise an alert, and so when the position moves, is fixed.
/// Everything an alert reaches, lower-cased: the alert rows, the outbox and the audit chain
/// (the related-record tests look in it for a name or an address).
fn where_alerts_reach(store: &Store) -> String {
    let mut text = String::new();
    for q in ["SELECT alert FROM alerts", "SELECT destination || state FROM alert_outbox", "SELECT detail FROM audit"] {
        let mut stmt = store.conn().prepare(q).expect("prepare");
        let rows: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
        text.push_str(&rows.join("\n"));
    }
    text.to_lowercase()
}

fn always_open() -> AlertsConfig {
    let mut rules = AlertsConfig::default();
    let h = &mut rules.clinic_hours;
    for day in [&mut h.mon, &mut h.tue, &mut h.wed, &mut h.thu, &mut h.fri, &mut h.sat, &mut h.sun] {
        *day = "00:00-24:00".into();
    }
    rules
}

fn position(store: &Store) -> Option<u64> {
    outbox::processed_seq(store.conn()).expect("position")
}

/// The detector's position is written with alerts, not after every record (that cost each
/// audited request a store commit). After a crash the records judged since it was last
/// written are judged again at the next start: that stores no alert twice and misses none.
#[tokio::test]
async fn a_restart_from_a_stale_position_raises_nothing_twice_and_misses_nothing() {
    let chain = Chain::new();
    let rules = always_open();
    let mut store = chain.store();
    let mut feed = Feed::start(&store, &rules, &syslog_only()).expect("start");
    let mut dr_a = Vec::new();
    for p in ["p-2", "p-3", "p-4"] {
        dr_a.push(chain.refusal("dr.a", p).await);
    }
    feed.step(&mut store).expect("step");
    assert_eq!(denied_alerts(&store).len(), 1);
    assert_eq!(position(&store), Some(dr_a[2]), "the position moves with the alerts it covers");

    // Records that raise nothing (dr.a's burst goes on: one burst, one alert; dr.b is under the
    // threshold): judged, and the position is not written.
    chain.refusal("dr.a", "p-5").await;
    chain.refusal("dr.b", "p-2").await;
    let judged = chain.refusal("dr.b", "p-3").await;
    let step = feed.step(&mut store).expect("step");
    assert_eq!((step.records, step.new_alerts.len(), feed.seen()), (3, 0, judged));
    assert_eq!(position(&store), Some(dr_a[2]), "a record that raised nothing wrote to the store");
    assert_eq!(feed.saved_position(), dr_a[2]);

    // Killed here (nothing saved at stop); dr.b's third refusal commits while the agent is down.
    drop(feed);
    let third = chain.refusal("dr.b", "p-4").await;
    let mut feed = Feed::start(&store, &rules, &syslog_only()).expect("restart");
    let step = feed.step(&mut store).expect("replay");
    assert_eq!(step.records as u64, third);
    let denied = denied_alerts(&store);
    assert_eq!(
        denied.iter().map(|(_, subject, trigger)| (subject.as_str(), *trigger as u64)).collect::<Vec<_>>(),
        [("user:dr.a", dr_a[2]), ("user:dr.b", third)],
        "dr.a's alert is not stored twice; dr.b's burst across the restart is found"
    );
    assert_eq!(step.new_alerts, [denied[1].0]);
    assert_eq!(all_alerts(&store), 2);
    assert_eq!(position(&store), Some(third));

    // A position further behind (before dr.a's alert, as a restored backup could leave it):
    // the replay raises dr.a's and dr.b's alerts again and stores neither twice.
    outbox::set_processed_seq(store.conn(), 0).expect("rewind");
    let mut feed = Feed::start(&store, &rules, &syslog_only()).expect("restart");
    let step = feed.step(&mut store).expect("replay");
    assert_eq!((step.records as u64, step.new_alerts.len()), (third, 0));
    assert_eq!(all_alerts(&store), 2);
    assert_eq!(denied_alerts(&store), denied);
}

/// The daemon task writes its position at the end of its replay and at stop, having judged
/// what committed before the stop; not in between for records that raise nothing.
#[tokio::test]
async fn the_daemon_task_saves_its_position_after_the_replay_and_at_stop() {
    let chain = Chain::new();
    let store = chain.store();
    drop(Feed::start(&store, &always_open(), &DeliveryConfig::default()).expect("first start"));
    assert_eq!(position(&store), Some(0));
    chain.refusal("dr.a", "p-2").await;
    let before_start = chain.refusal("dr.a", "p-3").await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let p2 = problems.clone();
    let task = tokio::spawn(wardbox::alerting::feed::run(
        Arc::new(Mutex::new(chain.store())),
        chain.audit().clone(),
        always_open(),
        DeliveryConfig::default(),
        move |m| p2.lock().expect("lock").push(m),
        stop_rx,
    ));
    let started = std::time::Instant::now();
    while position(&store) != Some(before_start) {
        assert!(started.elapsed() < Duration::from_secs(10), "the replay's position was not written within 10 s: {:?}", position(&store));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = chain.refusal("dr.b", "p-2").await;
    let _ = stop_tx.send(true);
    task.await.expect("task");
    assert_eq!(position(&store), Some(last), "the record committed before the stop is judged and the position written");
    assert!(problems.lock().expect("lock").is_empty(), "{:?}", problems.lock().expect("lock"));
    assert_eq!(all_alerts(&store), 0);
}

/// A box of a release before alerts (store migrations up to 5) with a history, updated: the
/// migrations put the detector's position at the chain's head, so that history raises nothing.
#[tokio::test]
async fn history_from_before_alerts_existed_raises_nothing() {
    let chain = Chain::migrated_to(Some(5));
    for p in ["p-2", "p-3", "p-4"] {
        chain.refusal("dr.a", p).await;
    }
    let mut store = chain.store();
    store.migrate().expect("the update's migrations");
    let mut feed = Feed::start(&store, &AlertsConfig::default(), &DeliveryConfig::default()).expect("start");
    let step = feed.step(&mut store).expect("step");
    assert_eq!((step.records, step.new_alerts.len()), (3, 0));
    // After the first start, the history counts as the detector's memory: dr.a's burst went on
    // (one burst is one alert, and the replay already spent it), while dr.b's new one raises.
    for p in ["p-5", "p-6", "p-7"] {
        chain.refusal("dr.a", p).await;
        chain.refusal("dr.b", p).await;
    }
    feed.step(&mut store).expect("step");
    let denied = denied_alerts(&store);
    assert_eq!(denied.iter().map(|d| d.1.as_str()).collect::<Vec<_>>(), ["user:dr.b"]);
}

/// A new box judges its chain from the first record: what it records before the detector's
/// first start (a backup failing at once at the first start) is an alert, not history.
#[tokio::test]
async fn on_a_new_box_records_before_the_detectors_first_start_raise_alerts() {
    let chain = Chain::new();
    for p in ["p-2", "p-3", "p-4"] {
        chain.refusal("dr.a", p).await;
    }
    let mut store = chain.store();
    let mut feed = Feed::start(&store, &AlertsConfig::default(), &DeliveryConfig::default()).expect("start");
    feed.step(&mut store).expect("step");
    let denied = denied_alerts(&store);
    assert_eq!(denied.iter().map(|d| d.1.as_str()).collect::<Vec<_>>(), ["user:dr.a"]);
}

#[tokio::test]
async fn the_daemon_task_stores_and_audits_alerts_as_records_commit() {
    let chain = Chain::new();
    let shared = Arc::new(Mutex::new(chain.store()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let p2 = problems.clone();
    let task = tokio::spawn(wardbox::alerting::feed::run(
        shared.clone(),
        chain.audit().clone(),
        AlertsConfig::default(),
        DeliveryConfig::default(),
        move |m| p2.lock().expect("lock").push(m),
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    for p in ["p-2", "p-3", "p-4"] {
        chain.refusal("dr.a", p).await;
    }
    // Done when the alert points at its audit record (written after the record commits).
    let raised = loop {
        let audited: Option<String> = {
            let store = chain.store();
            store
                .conn()
                .query_row(
                    "SELECT a.detail FROM alerts JOIN audit a ON a.seq = alerts.audit_seq WHERE alerts.rule = 'denied_access'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .expect("query")
        };
        if let Some(d) = audited {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no alert audited within 10 s; problems: {:?}", problems.lock().expect("lock"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let latency = started.elapsed();
    let d: serde_json::Value = serde_json::from_str(&raised).expect("json");
    assert_eq!((d["source"].as_str(), d["event"].as_str(), d["rule"].as_str()), (Some("alerts"), Some("alert_raised"), Some("denied_access")));
    assert_eq!(d["subject"], "user:dr.a");
    assert!(!raised.contains("p-2"), "a patient id reached the alert's audit record: {raised}");
    let store = chain.store();
    assert_eq!(denied_alerts(&store).len(), 1);
    let audit_kind: String = store
        .conn()
        .query_row("SELECT a.kind FROM alerts JOIN audit a ON a.seq = alerts.audit_seq WHERE alerts.rule = 'denied_access'", [], |r| r.get(0))
        .expect("row");
    assert_eq!(audit_kind, "security_alert", "the alert points at its audit record");
    let _ = stop_tx.send(true);
    task.await.expect("task");
    assert!(problems.lock().expect("lock").is_empty(), "{:?}", problems.lock().expect("lock"));
    eprintln!("from the third refusal's commit to the alert's audit record: {latency:?}");
}

/// The related-record rules in the agent: the names come from the store's accounts and the
/// patients' records, are compared in memory, and no name reaches an alert, the outbox or the
/// audit chain. A patient imported after the start is seen once the relations are rebuilt.
#[tokio::test]
async fn own_coworker_and_same_surname_records_from_the_stores_names() {
    let chain = Chain::new();
    let mut store = chain.store();
    for (user, display) in [("dr.a", "Dr Ann Quist"), ("rn.b", "Bob Marr, RN")] {
        store
            .conn()
            .execute(
                "INSERT INTO users (username, display_name, role, created_at) VALUES (?1, ?2, 'clinician', 'now')",
                [user, display],
            )
            .expect("user");
    }
    for (id, label) in [(11, "Ann Quist, born 1980-02-03"), (12, "Bob Marr, born 1975-05-06"), (13, "Lena Quist, born 2010-01-01"), (14, "Ed Other")] {
        store
            .conn()
            .execute(
                "INSERT INTO rag_patients (id, key_hash, shift_days, label, created_at) VALUES (?1, ?2, 0, ?3, 'now')",
                rusqlite::params![id, format!("k{id}"), label],
            )
            .expect("patient");
    }
    let mut feed = Feed::start(&store, &AlertsConfig::default(), &syslog_only()).expect("start");
    let view = |user: &'static str, patient: i64| {
        let who = json!({ "user": user, "role": "clinician", "client": "10.0.0.7", "session": "s1", "break_glass": false });
        AuditEvent::new(EventKind::Access, user, json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{patient}") }))
    };
    for (user, patient) in [("dr.a", 14), ("dr.a", 11), ("dr.a", 11), ("dr.a", 12), ("dr.a", 13), ("rn.b", 13)] {
        chain.audit().append(view(user, patient)).await.expect("append");
    }
    feed.step(&mut store).expect("step");
    let rules: Vec<(String, String)> = {
        let mut stmt = store.conn().prepare("SELECT rule, subject FROM alerts WHERE rule IN ('own_record', 'coworker_record', 'same_surname') ORDER BY id").expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    let expected = [("own_record", "user:dr.a"), ("coworker_record", "user:dr.a"), ("same_surname", "user:dr.a")];
    assert_eq!(rules.iter().map(|(r, s)| (r.as_str(), s.as_str())).collect::<Vec<_>>(), expected, "once a day per record; rn.b has no relation to patient 13");
    wardbox::alerting::feed::audit_raised(&Arc::new(Mutex::new(chain.store())), chain.audit()).await.expect("audit");

    // No name anywhere the alerts reach: alert rows, outbox, audit chain.
    let dump = where_alerts_reach(&store);
    for name in ["quist", "marr", "lena", "ann "] {
        assert!(!dump.contains(name), "{name:?} reached the alerts or the audit chain");
    }

    // A patient imported after the start: the relations are rebuilt at the next start (and
    // every 30 s while running).
    store
        .conn()
        .execute("INSERT INTO rag_patients (id, key_hash, shift_days, label, created_at) VALUES (15, 'k15', 0, 'Marr, Tom', 'now')", [])
        .expect("patient");
    chain.audit().append(view("rn.b", 15)).await.expect("append");
    let mut feed = Feed::start(&store, &AlertsConfig::default(), &syslog_only()).expect("restart");
    feed.step(&mut store).expect("step");
    let n: i64 = store.conn().query_row("SELECT count(*) FROM alerts WHERE rule = 'same_surname' AND subject = 'user:rn.b'", [], |r| r.get(0)).expect("count");
    assert_eq!(n, 1);
}

/// The same-address rule in the agent: a staff member's postal address (set as `wardbox users
/// address` sets it) and the patients' address lines from the store are compared in memory;
/// the alert names the rule, the user and the record, and no address reaches an alert, the
/// outbox or the audit chain.
#[tokio::test]
async fn same_address_records_from_the_stores_addresses() {
    let chain = Chain::new();
    let mut store = chain.store();
    for (user, display) in [("dr.a", "Dr Ann Quist"), ("rn.b", "Bob Marr, RN")] {
        store
            .conn()
            .execute("INSERT INTO users (username, display_name, role, created_at) VALUES (?1, ?2, 'clinician', 'now')", [user, display])
            .expect("user");
    }
    wardbox::alerting::relations::set_postal_address(store.conn(), "dr.a", Some("12 Elm Street, Springfield, OR 97000")).expect("address");
    for bad in ["", "Springfield", "12 Elm\u{7}Street"] {
        assert!(wardbox::alerting::relations::set_postal_address(store.conn(), "rn.b", Some(bad)).is_err(), "{bad:?} accepted");
    }
    assert!(wardbox::alerting::relations::set_postal_address(store.conn(), "nobody", Some("1 Oak Road")).is_err());
    // Patient 21 lives with dr.a (another surname), 22 down the road, 23 has no address.
    for (id, label) in [(21, "Carl Berg, born 2001-01-01"), (22, "Dana Holm"), (23, "Eve Lund")] {
        store
            .conn()
            .execute(
                "INSERT INTO rag_patients (id, key_hash, shift_days, label, created_at) VALUES (?1, ?2, 0, ?3, 'now')",
                rusqlite::params![id, format!("k{id}"), label],
            )
            .expect("patient");
    }
    for (owner, idx, line) in [(21, 0, "12 Elm St."), (22, 0, "14 Elm Street")] {
        store
            .conn()
            .execute(
                "INSERT INTO rag_pseudonyms (owner, category, idx, norm, original) VALUES (?1, 'ADDRESS', ?2, ?3, ?3)",
                rusqlite::params![owner, idx, line],
            )
            .expect("address");
    }
    let mut feed = Feed::start(&store, &AlertsConfig::default(), &syslog_only()).expect("start");
    let view = |user: &'static str, patient: i64| {
        let who = json!({ "user": user, "role": "clinician", "client": "10.0.0.7", "session": "s1", "break_glass": false });
        AuditEvent::new(EventKind::Access, user, json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{patient}") }))
    };
    let mut seqs = Vec::new();
    for (user, patient) in [("dr.a", 22), ("dr.a", 23), ("dr.a", 21), ("dr.a", 21), ("rn.b", 21)] {
        seqs.push(chain.audit().append(view(user, patient)).await.expect("append"));
    }
    feed.step(&mut store).expect("step");
    let alerts: Vec<(String, String, String)> = {
        let mut stmt = store
            .conn()
            .prepare("SELECT rule, subject, alert FROM alerts WHERE rule IN ('own_record', 'coworker_record', 'same_surname', 'same_address') ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    assert_eq!(
        alerts.iter().map(|(r, s, _)| (r.as_str(), s.as_str())).collect::<Vec<_>>(),
        [("same_address", "user:dr.a")],
        "once a day per record; the neighbour, the patient without an address and rn.b raise nothing"
    );
    let alert: serde_json::Value = serde_json::from_str(&alerts[0].2).expect("alert JSON");
    assert_eq!(alert["seqs"], json!([seqs[2]]), "{alert}");
    wardbox::alerting::feed::audit_raised(&Arc::new(Mutex::new(chain.store())), chain.audit()).await.expect("audit");

    // No address anywhere the alerts reach: alert rows, outbox, audit chain.
    let dump = where_alerts_reach(&store);
    for text in ["elm", "springfield", "97000", "berg"] {
        assert!(!dump.contains(text), "{text:?} reached the alerts or the audit chain");
    }

    // The address cleared: the relation goes at the next build.
    wardbox::alerting::relations::set_postal_address(store.conn(), "dr.a", None).expect("clear");
    let relations = wardbox::alerting::relations::load(store.conn(), &AlertsConfig::default().related_records).expect("load");
    assert!(relations.is_empty(), "{relations:?}");
}

/// The next-of-kin rule in the agent: a FHIR record imported through the real ingest path
/// names a staff member as a contact; the contact is kept as pseudonyms only (store migration
/// 18), re-identified and compared in memory with the staff's names; the alert names the rule,
/// the user and the record, and no name reaches an alert, the outbox or the audit chain.
#[tokio::test]
async fn next_of_kin_records_from_the_stores_contacts() {
    use wardbox_rag::embed::HashEmbedder;
    use wardbox_rag::ingest::{self, ChunkConfig, Outcome, Owner};
    let chain = Chain::new();
    let mut store = chain.store();
    // No patient shares dr.a's surname (Vostrikov is another): only the contact relates her.
    for (user, display) in [("dr.a", "Dr Ann Vostrikova"), ("rn.b", "Bob Marr, RN")] {
        store
            .conn()
            .execute("INSERT INTO users (username, display_name, role, created_at) VALUES (?1, ?2, 'clinician', 'now')", [user, display])
            .expect("user");
    }
    let bundle = |mrn: &str, given: &str, family: &str, contacts: serde_json::Value| {
        json!({ "resourceType": "Bundle", "entry": [{ "resource": {
            "resourceType": "Patient", "id": mrn, "gender": "female",
            "identifier": [{ "type": { "text": "Medical record number" }, "value": mrn }],
            "name": [{ "given": [given], "family": family }], "contact": contacts } }] })
        .to_string()
    };
    let emb = HashEmbedder::new(wardbox_rag::index::DIMS);
    let mut owners = Vec::new();
    for (mrn, given, family, contacts) in [
        // Names dr.a as next of kin, in the record's own spelling.
        ("MRN-1", "Ivan", "Vostrikov", json!([{ "relationship": [{ "coding": [{ "code": "N" }] }], "name": { "text": "VOSTRIKOVA, Ann" } }])),
        // Names someone else.
        ("MRN-2", "Olga", "Petrova", json!([{ "name": { "given": ["Pavel"], "family": "Vostrikov" } }])),
        // No contact.
        ("MRN-3", "Nina", "Sokolova", json!([])),
    ] {
        let bytes = bundle(mrn, given, family, contacts);
        let out = ingest::ingest_bytes(store.conn_mut(), &emb, "record.json", bytes.as_bytes(), &Owner::FromDocument, ChunkConfig::default()).await;
        let Ok(Outcome::Ingested { owner, .. }) = out else { panic!("{out:?}") };
        owners.push(owner);
    }
    let mut feed = Feed::start(&store, &AlertsConfig::default(), &syslog_only()).expect("start");
    let view = |user: &'static str, patient: i64| {
        let who = json!({ "user": user, "role": "clinician", "client": "10.0.0.7", "session": "s1", "break_glass": false });
        AuditEvent::new(EventKind::Access, user, json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{patient}") }))
    };
    let mut seqs = Vec::new();
    for (user, patient) in [("dr.a", owners[1]), ("dr.a", owners[2]), ("dr.a", owners[0]), ("dr.a", owners[0]), ("rn.b", owners[0])] {
        seqs.push(chain.audit().append(view(user, patient)).await.expect("append"));
    }
    feed.step(&mut store).expect("step");
    let alerts: Vec<(String, String, String)> = {
        let mut stmt = store
            .conn()
            .prepare("SELECT rule, subject, alert FROM alerts WHERE rule IN ('own_record', 'coworker_record', 'same_surname', 'same_address', 'next_of_kin') ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    assert_eq!(
        alerts.iter().map(|(r, s, _)| (r.as_str(), s.as_str())).collect::<Vec<_>>(),
        [("next_of_kin", "user:dr.a")],
        "once a day per record; the records naming someone else or no one, and rn.b, raise nothing"
    );
    let alert: serde_json::Value = serde_json::from_str(&alerts[0].2).expect("alert JSON");
    assert_eq!(alert["seqs"], json!([seqs[2]]), "{alert}");
    wardbox::alerting::feed::audit_raised(&Arc::new(Mutex::new(chain.store())), chain.audit()).await.expect("audit");

    // The contacts are stored as pseudonyms only, and no name reaches the alerts.
    let stored: Vec<String> = {
        let mut stmt = store.conn().prepare("SELECT name FROM rag_contacts").expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().all(|n| n.starts_with("[NAME-") && !n.to_lowercase().contains("vostrik")), "{stored:?}");
    let dump = where_alerts_reach(&store);
    for text in ["vostrik", "pavel", "petrova"] {
        assert!(!dump.contains(text), "{text:?} reached the alerts or the audit chain");
    }

    // Switched off, the contacts relate no one.
    let mut off = AlertsConfig::default().related_records;
    off.next_of_kin = false;
    off.same_surname = false;
    let relations = wardbox::alerting::relations::load(store.conn(), &off).expect("load");
    assert!(relations.is_empty(), "{relations:?}");
}

/// An emergency sign-in nobody reviewed: its `break_glass_use` alert still unacknowledged
/// `review_within_days` after it was raised raises `break_glass_unreviewed`, once; a reviewed
/// one, or one still within the days, raises nothing.
#[test]
fn an_emergency_sign_in_not_reviewed_in_time_raises_an_alert_once() {
    use wardbox_alerts::{Alert, Rule};
    let chain_dir = tempfile::tempdir().expect("tempdir");
    let key = StoreKey::random();
    let (mut store, _) = Store::open_or_create(&chain_dir.path().join("wardbox.db"), &key).expect("store");
    store.migrate().expect("migrate");
    let use_at = |at: &str, user: &str, seq: u64| Alert {
        rule: Rule::BreakGlassUse,
        subject: format!("user:{user}"),
        at: at.into(),
        threshold: "every emergency sign-in".into(),
        observed: "emergency (break-glass) sign-in".into(),
        seqs: vec![seq],
    };
    let old = use_at("2027-01-01T10:00:00Z", "dr.a", 10);
    let reviewed = use_at("2027-01-01T11:00:00Z", "dr.b", 11);
    let recent = use_at("2027-01-07T09:00:00Z", "dr.c", 12);
    let ids = outbox::store_alerts(store.conn_mut(), &[old, reviewed, recent], &[], 12).expect("store");
    outbox::review(store.conn(), ids[1], "it.admin", "2027-01-02T08:00:00Z", "called dr.b: a real emergency").expect("review");

    let rules = AlertsConfig::default();
    let now: jiff::Timestamp = "2027-01-09T12:00:00Z".parse().expect("ts");
    let raised = wardbox::alerting::feed::check_break_glass_reviews(&mut store, &rules, &syslog_only(), now).expect("check");
    assert_eq!(raised.len(), 1);
    let a = outbox::get(store.conn(), raised[0]).expect("get").expect("stored");
    assert_eq!((a.alert.rule, a.alert.subject.as_str(), a.alert.seqs.as_slice()), (Rule::BreakGlassUnreviewed, "user:dr.a", &[10u64][..]));
    assert!(a.alert.observed.contains(&format!("(alert {}) not reviewed after 7 days", ids[0])), "{}", a.alert.observed);
    assert_eq!(a.deliveries.len(), 1, "delivered like any alert");
    // Checked again (every pass): nothing new.
    let again = wardbox::alerting::feed::check_break_glass_reviews(&mut store, &rules, &syslog_only(), now).expect("check");
    assert!(again.is_empty());
    // A week later dr.c's is overdue too.
    let later: jiff::Timestamp = "2027-01-15T12:00:00Z".parse().expect("ts");
    let raised = wardbox::alerting::feed::check_break_glass_reviews(&mut store, &rules, &syslog_only(), later).expect("check");
    assert_eq!(raised.len(), 1);
}
