//! Fault: the data volume runs low on space under a running agent (`wardbox dev`, the real
//! binary), before it is full.
//!
//! The whole box lives on a small tmpfs this test mounts (it needs root, and fails naming that
//! where it cannot mount), with `[disk]` thresholds this volume crosses and a check every
//! second. A file fills it below the warning threshold: the health shows the figure and a
//! `disk` alert whose reason says what to do, and one `disk_space` alert is stored with an
//! outbox row for the configured syslog collector (the rsyslog tier tests delivery itself).
//! More checks at the same level raise nothing more; below the critical threshold a second
//! alert. The file deleted: the health clears, the open alerts are acknowledged by `system`,
//! the recovery is audited, and the chain verifies.
//!
//! The dev profile is degraded from the start (it runs without the appliance's protections),
//! so the health's change here is the `disk` alert, not the overall state.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

mod fault_support;

use fault_support::{SmallVolume, fill_bytes, http, open_store, start_dev_agent, text, wardbox};
use serde_json::Value;
use wardbox::alerting::{DeliveryConfig, SyslogConfig};
use wardbox::config::Config;
use wardbox::disk::DiskConfig;

fn health(addr: SocketAddr) -> Value {
    let (head, body) = http(addr, &format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).expect("GET /health");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(&body).expect("health JSON")
}

/// The `disk` alerts on the health page.
fn disk_alerts(h: &Value) -> Vec<String> {
    h["alerts"].as_array().expect("alerts").iter().filter(|a| a["source"] == "disk").map(|a| a["message"].as_str().expect("message").to_owned()).collect()
}

/// Poll the health until `ok` holds for it, up to 20 s.
fn wait_health(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = health(addr);
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 20 s; the health says {h:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stored `disk_space` alerts: (id, observed, reviewed_by, outbox destinations).
fn stored_alerts(config: &Path) -> Vec<(i64, String, Option<String>, Vec<String>)> {
    let store = open_store(config);
    let mut stmt = store.conn().prepare("SELECT id, alert, reviewed_by FROM alerts WHERE rule = 'disk_space' ORDER BY id").expect("prepare");
    let rows: Vec<(i64, String, Option<String>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows");
    rows.into_iter()
        .map(|(id, json, reviewed_by)| {
            let alert: Value = serde_json::from_str(&json).expect("alert JSON");
            let mut outbox = store.conn().prepare("SELECT destination FROM alert_outbox WHERE alert_id = ?1").expect("prepare");
            let destinations = outbox.query_map([id], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
            (id, alert["observed"].as_str().expect("observed").to_owned(), reviewed_by, destinations)
        })
        .collect()
}

fn wait_stored(config: &Path, what: &str, ok: impl Fn(&[(i64, String, Option<String>, Vec<String>)]) -> bool) -> Vec<(i64, String, Option<String>, Vec<String>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = stored_alerts(config);
        if ok(&stored) {
            return stored;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 20 s; stored: {stored:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Audit records of `source: "disk"`: (kind, detail).
fn disk_records(config: &Path) -> Vec<(String, Value)> {
    let store = open_store(config);
    let mut stmt = store.conn().prepare("SELECT kind, detail FROM audit ORDER BY seq").expect("prepare");
    let rows: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows");
    rows.into_iter()
        .filter_map(|(kind, detail)| serde_json::from_str::<Value>(&detail).ok().filter(|d| d["source"] == "disk").map(|d| (kind, d)))
        .collect()
}

/// Bytes to write so that `free_percent` of the volume is left free.
fn to_leave(volume: &Path, free_percent: u64) -> u64 {
    let st = nix::sys::statvfs::statvfs(volume).expect("statvfs");
    let block = st.fragment_size() as u64;
    let (total, free) = (st.blocks() as u64 * block, st.blocks_available() as u64 * block);
    free.checked_sub(total * free_percent / 100).expect("the volume already has less free space than the test wants to leave")
}

#[test]
fn low_space_degrades_the_health_raises_one_alert_per_crossing_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("volume");
    let _volume = SmallVolume::mount(&mnt, 64);
    let base = mnt.join("box");

    // The dev box's configuration, with thresholds this volume crosses, checked every second,
    // and a syslog collector (down: the alert waits in the outbox).
    let mut config = Config::dev_defaults(&base);
    config.disk = DiskConfig { check_interval_secs: 1, warn_free_percent: 40, critical_free_percent: 20, ..DiskConfig::default() };
    let ca = dir.path().join("collector-ca.pem");
    std::fs::write(&ca, "").expect("ca file");
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    config.alert_delivery = DeliveryConfig {
        admin_url: "https://wardbox.test".into(),
        syslog: Some(SyslogConfig {
            address: closed.to_string(),
            server_name: "syslog.test".into(),
            ca_file: ca,
            client_cert_file: None,
            client_key_file: None,
            timeout_secs: 5,
        }),
        ..DeliveryConfig::default()
    };
    std::fs::create_dir_all(&base).expect("base");
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).expect("toml")).expect("config");
    Config::load(&config_path).expect("the test's configuration is valid");

    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut agent = start_dev_agent(&base, addr, &dir.path().join("no-engine-here"), "the dev agent");

    // With space: the figure shows, no disk alert.
    let h = wait_health(addr, "the first reading of the data volume", |h| h["data_volume"]["level"] == "ok");
    assert!(disk_alerts(&h).is_empty(), "{h:#}");
    let volume = &h["data_volume"];
    assert_eq!(volume["path"], base.join("data").display().to_string(), "the watched directory is the store's");
    assert!((60.0..=100.0).contains(&volume["free_percent"].as_f64().expect("percent")), "{volume}");
    assert!(volume["summary"].as_str().expect("summary").contains(" MiB free of 64.0 MiB ("), "{volume}");

    // Below the warning threshold (40 %): the health names the figure and what to do.
    fill_bytes(&mnt.join("filler-1"), to_leave(&mnt, 30));
    let h = wait_health(addr, "the low-space warning", |h| !disk_alerts(h).is_empty());
    let reason = &disk_alerts(&h)[0];
    assert!(reason.starts_with(&format!("data volume {}: ", base.join("data").display())), "{reason}");
    assert!(reason.contains("below the warning threshold of 40 % free. Free space soon"), "{reason}");
    assert!(reason.contains("wardbox backup restore-box") && reason.contains("sign-ins, record changes and imports are refused"), "{reason}");
    assert_eq!(h["data_volume"]["level"], "low");
    assert_eq!(h["state"], "degraded");
    // One alert stored, on its way to the collector.
    let stored = wait_stored(&config_path, "the stored low-space alert", |s| !s.is_empty());
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].1.starts_with("space_low: ") && stored[0].1.contains(" MiB free of 64.0 MiB (") && stored[0].1.contains(", below 25.6 MiB free"), "{stored:?}");
    assert_eq!(stored[0].3, ["syslog"], "the alert is not in the outbox for the collector");
    // More checks at the same level: still one alert, one alert record.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(stored_alerts(&config_path).len(), 1, "an alert per check, not per crossing");
    let raised = disk_records(&config_path);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!((raised[0].0.as_str(), raised[0].1["event"].as_str()), ("security_alert", Some("space_low")));

    // Below the critical threshold (20 %): a second crossing, a second alert.
    fill_bytes(&mnt.join("filler-2"), to_leave(&mnt, 10));
    let h = wait_health(addr, "the critical low-space alert", |h| disk_alerts(h).iter().any(|m| m.contains("critical threshold")));
    assert_eq!(disk_alerts(&h).len(), 1, "the warning is replaced, not kept beside: {h:#}");
    assert!(disk_alerts(&h)[0].contains("below the critical threshold of 20 % free. Free space now"), "{h:#}");
    assert_eq!(h["data_volume"]["level"], "critical");
    let stored = wait_stored(&config_path, "the stored critical alert", |s| s.len() == 2);
    assert!(stored[1].1.starts_with("space_critical: "), "{stored:?}");
    let status = wardbox(&["status"], &config_path, "");
    assert!(text(&status).contains("critical, checked"), "`wardbox status` does not show the data volume: {}", text(&status));

    // Space returns: the health clears, both alerts are acknowledged by the system.
    std::fs::remove_file(mnt.join("filler-1")).expect("free");
    std::fs::remove_file(mnt.join("filler-2")).expect("free");
    let h = wait_health(addr, "the recovery", |h| disk_alerts(h).is_empty());
    assert_eq!(h["data_volume"]["level"], "ok");
    let stored = wait_stored(&config_path, "the acknowledgement of the alerts", |s| s.iter().all(|a| a.2.is_some()));
    assert!(stored.iter().all(|a| a.2.as_deref() == Some("system")), "{stored:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        let records = disk_records(&config_path);
        if let Some((kind, detail)) = records.iter().find(|(_, d)| d["event"] == "space_recovered") {
            break (kind.clone(), detail.clone());
        }
        assert!(Instant::now() < deadline, "the recovery is not audited: {records:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(recovered.0, "lifecycle");
    assert_eq!(recovered.1["alerts_acknowledged"], 2, "{}", recovered.1);
    assert!(agent.0.try_wait().expect("wait").is_none(), "the agent died");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.0.id() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(agent.0.wait().expect("wait").success(), "unclean shutdown");
    let verify = wardbox(&["audit", "verify", "--json"], &config_path, "");
    assert!(verify.status.success(), "the chain does not verify: {}", text(&verify));
}
