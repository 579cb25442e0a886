//! Alert delivery from the outbox to real receivers: Debian's `rsyslogd` with a TLS input
//! (RFC 5425, the `ossl` stream driver) and `aiosmtpd` (PyPI) requiring STARTTLS. Each test
//! starts its own receiver on a free loopback port with certificates from a test CA.
//!
//! Tiers: `rsyslog_` needs `/usr/sbin/rsyslogd` and the `rsyslog-openssl` driver (Debian
//! `rsyslog`, `rsyslog-openssl`); `smtp_` needs the `aiosmtpd` program (PyPI `aiosmtpd`, on the
//! PATH or named by `WARDBOX_AIOSMTPD`). A missing one fails the test, naming it. The relays
//! that require SMTP AUTH are aiosmtpd's own `SMTP` class with an authenticator, run by the
//! Python interpreter of that program's venv (`smtp_auth_relay`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use wardbox::alerting::deliver::deliver_due;
use wardbox::alerting::heartbeat;
use wardbox::alerting::{DeliveryConfig, EmailConfig, SyslogConfig, outbox};
use wardbox::store::{Store, StoreKey};
use wardbox_alerts::{Alert, Rule};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const OSSL_DRIVER: &str = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so";

/// A test CA and a server certificate for `name` signed by it, written as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A client certificate for the box (`wardbox.clinic.test`) from the same CA, for mutual TLS.
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path, label: &str, name: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("Test clinic CA {label}"));
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).expect("issuer");
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec![name.to_owned()]).expect("params");
    leaf.distinguished_name.push(DnType::CommonName, name);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
    let client_key = KeyPair::generate().expect("key");
    let mut client = CertificateParams::new(vec!["wardbox.clinic.test".to_owned()]).expect("params");
    client.distinguished_name.push(DnType::CommonName, "wardbox.clinic.test");
    let client_cert = client.signed_by(&client_key, &issuer).expect("client");
    let p = Pki {
        ca: dir.join(format!("{label}-ca.pem")),
        cert: dir.join(format!("{label}-cert.pem")),
        key: dir.join(format!("{label}-key.pem")),
        client_cert: dir.join(format!("{label}-client-cert.pem")),
        client_key: dir.join(format!("{label}-client-key.pem")),
    };
    std::fs::write(&p.ca, ca_cert.pem()).expect("write");
    std::fs::write(&p.cert, leaf_cert.pem()).expect("write");
    std::fs::write(&p.key, leaf_key.serialize_pem()).expect("write");
    std::fs::write(&p.client_cert, client_cert.pem()).expect("write");
    std::fs::write(&p.client_key, client_key.serialize_pem()).expect("write");
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} is not listening on port {port} after 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running receiver, killed when dropped.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// rsyslogd in the foreground with one TLS input on `port`, writing what it receives to
/// `out` (host, app, msgid, message per line).
fn rsyslog(dir: &Path, port: u16, server: &Pki, out: &Path) -> Receiver {
    rsyslog_with_auth(dir, port, server, out, "anon")
}

/// The same, with the input's authentication mode (`anon`, or `x509/certvalid`: a client
/// certificate signed by the server's CA is required).
fn rsyslog_with_auth(dir: &Path, port: u16, server: &Pki, out: &Path, auth_mode: &str) -> Receiver {
    for needed in [RSYSLOGD, OSSL_DRIVER] {
        assert!(
            Path::new(needed).exists(),
            "{needed} is missing: install Debian's rsyslog and rsyslog-openssl (tests/install-deps.sh) to run the rsyslog_ tier"
        );
    }
    let work = dir.join(format!("rsyslog-{port}"));
    std::fs::create_dir_all(&work).expect("dir");
    let conf = format!(
        r#"global(workDirectory="{work}" DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="{auth_mode}")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="plain" type="string" string="%HOSTNAME% %APP-NAME% %MSGID% %msg%\n")
*.* action(type="omfile" file="{out}" template="plain")
"#,
        work = work.display(),
        ca = server.ca.display(),
        cert = server.cert.display(),
        key = server.key.display(),
        out = out.display(),
        auth_mode = auth_mode,
    );
    let conf_path = work.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).expect("conf");
    let mut child = Command::new(RSYSLOGD)
        .args(["-n", "-f"])
        .arg(&conf_path)
        .arg("-i")
        .arg(work.join("pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rsyslogd");
    wait_for_port(port, &mut child, "rsyslogd");
    Receiver(child)
}

fn aiosmtpd_program() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDBOX_AIOSMTPD") {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("aiosmtpd");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("the aiosmtpd program is missing: install PyPI's aiosmtpd (tests/install-deps.sh) or name it in WARDBOX_AIOSMTPD to run the smtp_ tier");
}

/// aiosmtpd on `port`, requiring STARTTLS with `server`'s certificate (or offering no TLS at
/// all when `server` is `None`), storing messages in the Maildir `maildir`.
fn smtp_server(port: u16, server: Option<&Pki>, maildir: &Path) -> Receiver {
    let mut cmd = Command::new(aiosmtpd_program());
    cmd.args(["-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"]);
    if let Some(s) = server {
        cmd.arg("--tlscert").arg(&s.cert).arg("--tlskey").arg(&s.key);
    }
    cmd.arg(maildir);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start aiosmtpd");
    wait_for_port(port, &mut child, "aiosmtpd");
    Receiver(child)
}

/// A store holding one alert with an outbox row for each configured destination.
struct Outbox {
    dir: tempfile::TempDir,
    key: StoreKey,
    store: Arc<Mutex<Store>>,
}

impl Outbox {
    /// Close the store and open it again, as a restarted agent does.
    fn reopen(&mut self) {
        let path = self.dir.path().join("wardbox.db");
        self.store = Arc::new(Mutex::new(Store::open_existing(&path, &self.key).expect("reopen")));
    }
}

fn alert() -> Alert {
    Alert {
        rule: Rule::DeniedAccess,
        subject: "user:dr.a".into(),
        at: "2026-11-29T11:07:38.123456789Z".into(),
        threshold: "3 refused requests in 10 minutes".into(),
        observed: "3 refused requests in 2 minutes".into(),
        seqs: vec![41, 42, 43],
    }
}

fn outbox_with_alert(cfg: &DeliveryConfig) -> Outbox {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = StoreKey::random();
    let (mut store, _) = Store::open_or_create(&dir.path().join("wardbox.db"), &key).expect("store");
    store.migrate().expect("migrate");
    let ids = outbox::store_alerts(store.conn_mut(), &[alert()], &cfg.destinations(), 43).expect("store alert");
    assert_eq!(ids, [1]);
    Outbox { dir, key, store: Arc::new(Mutex::new(store)) }
}

fn delivery_state(o: &Outbox) -> Vec<(String, String, i64, Option<String>)> {
    let store = o.store.lock().expect("lock");
    outbox::get(store.conn(), 1).expect("get").expect("alert").deliveries
}

fn syslog_config(port: u16, ca: &Path) -> DeliveryConfig {
    DeliveryConfig {
        admin_url: "https://wardbox.clinic.test:8443".into(),
        syslog: Some(SyslogConfig {
            address: format!("127.0.0.1:{port}"),
            server_name: "syslog.test".into(),
            ca_file: ca.to_owned(),
            client_cert_file: None,
            client_key_file: None,
            timeout_secs: 5,
        }),
        ..DeliveryConfig::default()
    }
}

fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{} does not contain {needle:?} after 10 s; it holds {text:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

const NOW: i64 = 1_800_000_000;

#[tokio::test]
async fn rsyslog_receives_the_alert_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "syslog.test");
    let port = free_port();
    let received = dir.path().join("received.log");
    let _rsyslog = rsyslog(dir.path(), port, &server, &received);
    let cfg = syslog_config(port, &server.ca);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    let text = wait_for_text(&received, "denied_access user:dr.a");
    let line = text.lines().find(|l| l.contains("denied_access")).expect("line");
    assert!(line.contains(" wardbox alert alert 1: denied_access user:dr.a: 3 refused requests in 2 minutes"), "{line}");
    assert!(line.ends_with("review: https://wardbox.clinic.test:8443/admin/alerts/1"), "{line}");
    assert_eq!(delivery_state(&o)[0].1, "delivered");
    // Delivered once: the next pass sends nothing.
    let again = deliver_due(&o.store, &cfg, NOW + 3600).await.expect("pass");
    assert_eq!((again.delivered, again.failed), (0, 0));
}

#[tokio::test]
async fn rsyslog_down_leaves_the_alert_in_the_outbox_until_a_retry_delivers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "syslog.test");
    let port = free_port();
    let cfg = syslog_config(port, &server.ca);
    let mut o = outbox_with_alert(&cfg);

    // Nobody listens: failed, retried after the first backoff (30 s), not before.
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "{report:?}");
    let (_, state, attempts, error) = delivery_state(&o).remove(0);
    assert_eq!((state.as_str(), attempts), ("failed", 1));
    assert!(error.as_deref().is_some_and(|e| e.contains("cannot connect")), "{error:?}");
    let early = deliver_due(&o.store, &cfg, NOW + 29).await.expect("pass");
    assert_eq!((early.delivered, early.failed), (0, 0), "retried before its backoff");
    let report = deliver_due(&o.store, &cfg, NOW + 30).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert_eq!(delivery_state(&o)[0].2, 2);
    let early = deliver_due(&o.store, &cfg, NOW + 30 + 59).await.expect("pass");
    assert_eq!(early.failed, 0, "the second wait is doubled");

    // The agent restarts meanwhile: the outbox is in the store, with its attempts and backoff.
    o.reopen();
    assert_eq!(delivery_state(&o)[0].1, "failed");
    // The collector comes back: the next due retry delivers.
    let received = dir.path().join("received.log");
    let _rsyslog = rsyslog(dir.path(), port, &server, &received);
    let report = deliver_due(&o.store, &cfg, NOW + 30 + 60).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    wait_for_text(&received, "denied_access user:dr.a");
    assert_eq!(delivery_state(&o)[0].1, "delivered");
}

#[tokio::test]
async fn rsyslog_with_a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = pki(dir.path(), "clinic", "syslog.test");
    let impostor = pki(dir.path(), "impostor", "syslog.test");
    let port = free_port();
    let received = dir.path().join("received.log");
    let _rsyslog = rsyslog(dir.path(), port, &impostor, &received);
    let cfg = syslog_config(port, &trusted.ca);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "{report:?}");
    let (_, state, _, error) = delivery_state(&o).remove(0);
    assert_eq!(state, "failed");
    assert!(error.as_deref().is_some_and(|e| e.contains("TLS with syslog.test failed") && e.contains("certificate")), "{error:?}");
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(!text.contains("denied_access"), "the impostor received the alert: {text}");

    // The right collector name with the wrong name in the certificate is refused too.
    let misnamed = pki(dir.path(), "misnamed", "other.test");
    let port2 = free_port();
    let _other = rsyslog(dir.path(), port2, &misnamed, &dir.path().join("other.log"));
    let cfg2 = syslog_config(port2, &misnamed.ca);
    let o2 = outbox_with_alert(&cfg2);
    let report = deliver_due(&o2.store, &cfg2, NOW).await.expect("pass");
    assert_eq!(report.failed, 1, "a certificate for another name was accepted");
}

fn email_config(port: u16, ca: &Path) -> DeliveryConfig {
    DeliveryConfig {
        admin_url: "https://wardbox.clinic.test:8443".into(),
        email: Some(EmailConfig {
            relay: format!("127.0.0.1:{port}"),
            server_name: "mail.test".into(),
            ca_file: ca.to_owned(),
            from: "wardbox@clinic.test".into(),
            to: vec!["privacy@clinic.test".into(), "it@clinic.test".into()],
            user: None,
            password_file: None,
            timeout_secs: 10,
        }),
        ..DeliveryConfig::default()
    }
}

fn maildir_messages(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else { return Vec::new() };
    entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
}

#[tokio::test]
async fn smtp_relay_receives_the_alert_after_starttls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let port = free_port();
    let maildir = dir.path().join("maildir");
    let _smtp = smtp_server(port, Some(&server), &maildir);
    let cfg = email_config(port, &server.ca);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let messages = loop {
        let m = maildir_messages(&maildir);
        if !m.is_empty() || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(messages.len(), 1, "one digest");
    let m = &messages[0];
    assert!(m.contains("Subject: Wardbox: 1 alert to review"), "{m}");
    assert!(m.contains("denied_access user:dr.a") && m.contains("review: https://wardbox.clinic.test:8443/admin/alerts/1"), "{m}");
    assert!(m.contains("X-RcptTo: privacy@clinic.test, it@clinic.test") || m.contains("To: privacy@clinic.test, it@clinic.test"), "{m}");
    assert_eq!(delivery_state(&o)[0].1, "delivered");
}

#[tokio::test]
async fn smtp_relay_without_starttls_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let port = free_port();
    let maildir = dir.path().join("maildir");
    let _smtp = smtp_server(port, None, &maildir);
    let cfg = email_config(port, &server.ca);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "{report:?}");
    let error = delivery_state(&o).remove(0).3.unwrap_or_default();
    assert!(error.contains("does not offer STARTTLS"), "{error}");
    assert!(maildir_messages(&maildir).is_empty(), "a message went out in the clear");
}

fn heartbeat_state(o: &Outbox, d: wardbox::alerting::Destination) -> heartbeat::State {
    let store = o.store.lock().expect("lock");
    heartbeat::state(store.conn(), d).expect("state")
}

/// The daily heartbeat reaches the collector with counts only; not again within the day, again
/// after it; a collector that is down leaves the heartbeat failed with a backoff, kept across a
/// restart, and the retry after it comes back delivers it.
#[tokio::test]
async fn rsyslog_receives_the_daily_heartbeat_and_a_missed_one_is_retried() {
    use wardbox::alerting::Destination::Syslog;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "syslog.test");
    let port = free_port();
    let received = dir.path().join("received.log");
    let cfg = syslog_config(port, &server.ca);
    let mut o = outbox_with_alert(&cfg);
    {
        let rsyslog = rsyslog(dir.path(), port, &server, &received);
        let report = heartbeat::send_due(&o.store, &cfg, NOW).await.expect("pass");
        assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
        let text = wait_for_text(&received, "heartbeat");
        let line = text.lines().find(|l| l.contains("heartbeat")).expect("line");
        assert!(
            line.contains(" wardbox heartbeat heartbeat: the Wardbox is running; alerts not yet acknowledged 1, newest alert 1, deliveries pending 1,"),
            "{line}"
        );
        assert!(!line.contains("dr.a"), "a heartbeat names no one: {line}");
        assert_eq!(heartbeat_state(&o, Syslog).last_sent, Some(NOW));
        let same_day = heartbeat::send_due(&o.store, &cfg, NOW + 86_399).await.expect("pass");
        assert_eq!((same_day.delivered, same_day.failed), (0, 0), "two heartbeats in a day");
        drop(rsyslog);
    }
    // The next day the collector is down: the heartbeat fails, is retried after the backoff.
    let day = NOW + 86_400;
    let report = heartbeat::send_due(&o.store, &cfg, day).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "{report:?}");
    let st = heartbeat_state(&o, Syslog);
    assert_eq!((st.last_sent, st.attempts, st.next_attempt), (Some(NOW), 1, day + 30));
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("cannot connect")), "{st:?}");
    let early = heartbeat::send_due(&o.store, &cfg, day + 29).await.expect("pass");
    assert_eq!(early.failed, 0, "retried before its backoff");
    o.reopen();
    let received2 = dir.path().join("received2.log");
    let _rsyslog = rsyslog(dir.path(), port, &server, &received2);
    let report = heartbeat::send_due(&o.store, &cfg, day + 30).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    wait_for_text(&received2, "heartbeat");
    let st = heartbeat_state(&o, Syslog);
    assert_eq!((st.last_sent, st.attempts), (Some(day + 30), 0));
}

#[tokio::test]
async fn smtp_relay_receives_the_daily_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let port = free_port();
    let maildir = dir.path().join("maildir");
    let _smtp = smtp_server(port, Some(&server), &maildir);
    let cfg = email_config(port, &server.ca);
    let o = outbox_with_alert(&cfg);
    let report = heartbeat::send_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let messages = loop {
        let m = maildir_messages(&maildir);
        if !m.is_empty() || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("Subject: Wardbox: daily heartbeat") && messages[0].contains("alerts not yet acknowledged 1"), "{}", messages[0]);
    let again = heartbeat::send_due(&o.store, &cfg, NOW + 3600).await.expect("pass");
    assert_eq!(again.delivered, 0);
}

/// Mutual TLS (RFC 5425 section 5.1): a collector that requires the box's certificate receives
/// the alert when the box presents one signed by the clinic's CA; a box without one, or with a
/// certificate from another CA, is refused, the alert stays failed in the outbox, and the
/// collector receives nothing.
#[tokio::test]
async fn rsyslog_requiring_the_boxs_certificate_accepts_it_and_refuses_a_box_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clinic = pki(dir.path(), "clinic", "syslog.test");
    let other = pki(dir.path(), "other", "syslog.test");
    let port = free_port();
    let received = dir.path().join("received.log");
    let _rsyslog = rsyslog_with_auth(dir.path(), port, &clinic, &received, "x509/certvalid");

    let anonymous = syslog_config(port, &clinic.ca);
    let o = outbox_with_alert(&anonymous);
    let report = deliver_due(&o.store, &anonymous, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "accepted without a client certificate: {report:?}");
    let mut foreign = syslog_config(port, &clinic.ca);
    if let Some(s) = foreign.syslog.as_mut() {
        s.client_cert_file = Some(other.client_cert.clone());
        s.client_key_file = Some(other.client_key.clone());
    }
    let report = deliver_due(&o.store, &foreign, NOW + 30).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "accepted a certificate from another CA: {report:?}");
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(!text.contains("denied_access"), "the collector took the alert from an unauthenticated box: {text}");
    assert_eq!(delivery_state(&o)[0].1, "failed");

    let mut mutual = syslog_config(port, &clinic.ca);
    if let Some(s) = mutual.syslog.as_mut() {
        s.client_cert_file = Some(clinic.client_cert.clone());
        s.client_key_file = Some(clinic.client_key.clone());
    }
    mutual.validate(false).expect("valid");
    let report = deliver_due(&o.store, &mutual, NOW + 30 + 60).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    wait_for_text(&received, "denied_access user:dr.a");
    assert_eq!(delivery_state(&o)[0].1, "delivered");
}

/// A 24-hour collector outage on a simulated clock (a pass every 5 minutes, as the daemon's
/// poll would make many more): the alert stays in the outbox, retried with the backoff capped
/// at `retry_max_secs`, never given up; when the collector is back the next due retry delivers
/// it once.
#[tokio::test]
async fn rsyslog_down_for_a_day_gets_the_alert_after_it_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "syslog.test");
    let port = free_port();
    let cfg = syslog_config(port, &server.ca);
    let o = outbox_with_alert(&cfg);
    let mut failed = 0;
    let mut t = NOW;
    while t < NOW + 86_400 {
        let r = deliver_due(&o.store, &cfg, t).await.expect("pass");
        assert_eq!(r.delivered, 0);
        failed += r.failed;
        t += 300;
    }
    let (_, state, attempts, _) = delivery_state(&o).remove(0);
    assert_eq!(state, "failed");
    // 30 s doubling to the 3600 s ceiling, then hourly, seen through 5-minute passes.
    assert!((24..=40).contains(&attempts), "{attempts} attempts in a day");
    assert_eq!(failed as i64, attempts);
    let received = dir.path().join("received.log");
    let _rsyslog = rsyslog(dir.path(), port, &server, &received);
    let mut delivered = 0;
    while t < NOW + 86_400 + 3600 + 300 {
        delivered += deliver_due(&o.store, &cfg, t).await.expect("pass").delivered;
        t += 300;
    }
    assert_eq!(delivered, 1, "delivered once after the outage");
    let text = wait_for_text(&received, "denied_access user:dr.a");
    assert_eq!(text.matches("denied_access user:dr.a").count(), 1, "{text}");
}

/// An aiosmtpd relay for the SMTP AUTH tests: STARTTLS with the test CA's certificate, AUTH
/// only inside TLS (`auth_require_tls`), mail only after AUTH (`auth_required`), and an
/// authenticator that checks the user and the password in a file. It prints each attempt
/// (`auth PLAIN ok`, `auth LOGIN refused`) on stdout, never the password. Modes: `plain-login`
/// offers both, `login` only LOGIN, `cram` only CRAM-MD5 (a mechanism the box does not speak),
/// `none` no mechanism and takes mail without AUTH, `cleartext` offers no STARTTLS but AUTH
/// PLAIN LOGIN in clear and takes mail without AUTH (what the box must never use).
const SMTP_AUTH_RELAY: &str = r#"
import asyncio, ssl, sys
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

port, cert, key, maildir, mode, user, password_file = sys.argv[1:8]
password = open(password_file, "rb").read().split(b"\n")[0]

class Relay(Mailbox):
    async def auth_CRAM__MD5(self, server, args):
        print("auth CRAM-MD5 refused", flush=True)
        return AuthResult(success=False, handled=False)

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password
    print(f"auth {mechanism} {'ok' if ok else 'refused'}", flush=True)
    # handled=False: the server answers 535 itself (True would leave the client waiting).
    return AuthResult(success=ok, handled=False)

excluded = {"plain-login": ["CRAM-MD5"], "login": ["CRAM-MD5", "PLAIN"], "cram": ["PLAIN", "LOGIN"],
            "none": ["CRAM-MD5", "PLAIN", "LOGIN"], "cleartext": ["CRAM-MD5"]}[mode]
tls = None
if mode != "cleartext":
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
handler = Relay(maildir)

def relay():
    return SMTP(handler, require_starttls=tls is not None, tls_context=tls, auth_require_tls=tls is not None,
                auth_required=mode not in ("none", "cleartext"), authenticator=authenticator,
                auth_exclude_mechanism=excluded)

async def main():
    server = await asyncio.get_running_loop().create_server(relay, "127.0.0.1", int(port))
    print("listening", flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// The Python of the aiosmtpd program's venv, from its `#!` line.
fn aiosmtpd_python() -> PathBuf {
    let program = aiosmtpd_program();
    let text = std::fs::read_to_string(&program).unwrap_or_else(|e| panic!("{} cannot be read: {e}", program.display()));
    let shebang = text.lines().next().and_then(|l| l.strip_prefix("#!")).map(str::trim).unwrap_or_default();
    let python = PathBuf::from(shebang.split_whitespace().next().unwrap_or_default());
    assert!(python.is_file(), "{} does not name its Python on its #! line (found {shebang:?}); the smtp_ tier needs aiosmtpd's venv", program.display());
    python
}

/// An aiosmtpd relay that knows `RELAY_USER` with the password in `password_file`, on a free
/// port: its mail goes to `maildir`, what it prints (each AUTH attempt) to `log`.
struct AuthRelay {
    port: u16,
    maildir: PathBuf,
    log: PathBuf,
    _process: Receiver,
}

/// A relay of `mode`, its maildir and log named after `name` in `dir`.
fn smtp_auth_relay(dir: &Path, server: &Pki, mode: &str, name: &str, password_file: &Path) -> AuthRelay {
    let port = free_port();
    let (maildir, log) = (dir.join(format!("maildir-{name}")), dir.join(format!("relay-{name}.log")));
    let script = dir.join("smtp_auth_relay.py");
    std::fs::write(&script, SMTP_AUTH_RELAY).expect("script");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(aiosmtpd_python())
        .arg(&script)
        .arg(port.to_string())
        .arg(&server.cert)
        .arg(&server.key)
        .arg(&maildir)
        .args([mode, RELAY_USER])
        .arg(password_file)
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the aiosmtpd relay");
    wait_for_port(port, &mut child, "the aiosmtpd relay");
    AuthRelay { port, maildir, log, _process: Receiver(child) }
}

/// A password file (mode 0600) holding `password`.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn email_config_with_user(port: u16, ca: &Path, user: &str, password_file: &Path) -> DeliveryConfig {
    let mut cfg = email_config(port, ca);
    if let Some(e) = cfg.email.as_mut() {
        e.user = Some(user.to_owned());
        e.password_file = Some(password_file.to_owned());
    }
    cfg.validate(false).expect("valid");
    cfg
}

/// `text` holds neither the password nor any encoding of it the box could have sent.
fn assert_no_password(text: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    for needle in [password.to_owned(), b64.encode(password), b64.encode(format!("\0{user}\0{password}"))] {
        assert!(!text.contains(&needle), "the password (or its encoding {needle}) is in: {text}");
    }
}

fn wait_for_messages(maildir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = maildir_messages(maildir);
        if !m.is_empty() || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const RELAY_USER: &str = "wardbox-alerts";
const RELAY_PASSWORD: &str = "Kl1nik-Relay:pw 7";

/// A relay that requires AUTH (as Exchange or Postfix submission on 587 do) takes the digest
/// from the box with the right user and password, with PLAIN when it offers PLAIN and LOGIN.
#[tokio::test]
async fn smtp_relay_requiring_auth_receives_the_alert_with_plain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let pw = password_file(dir.path(), "relay.pw", RELAY_PASSWORD);
    let relay = smtp_auth_relay(dir.path(), &server, "plain-login", "plain-login", &pw);
    let cfg = email_config_with_user(relay.port, &server.ca, RELAY_USER, &pw);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    let messages = wait_for_messages(&relay.maildir);
    assert_eq!(messages.len(), 1, "one digest");
    assert!(messages[0].contains("denied_access user:dr.a"), "{}", messages[0]);
    assert_eq!(delivery_state(&o)[0].1, "delivered");
    let attempts = std::fs::read_to_string(&relay.log).expect("log");
    assert_eq!(attempts.lines().filter(|l| l.starts_with("auth ")).collect::<Vec<_>>(), ["auth PLAIN ok"], "{attempts}");
}

/// A relay that offers only LOGIN (older Exchange) gets LOGIN, and the digest arrives.
#[tokio::test]
async fn smtp_relay_offering_only_login_receives_the_alert_with_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let pw = password_file(dir.path(), "relay.pw", RELAY_PASSWORD);
    let relay = smtp_auth_relay(dir.path(), &server, "login", "login", &pw);
    let cfg = email_config_with_user(relay.port, &server.ca, RELAY_USER, &pw);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    assert_eq!(wait_for_messages(&relay.maildir).len(), 1, "one digest");
    let attempts = std::fs::read_to_string(&relay.log).expect("log");
    assert_eq!(attempts.lines().filter(|l| l.starts_with("auth ")).collect::<Vec<_>>(), ["auth LOGIN ok"], "{attempts}");
}

/// A wrong password: the relay answers 535, the delivery fails with an error that says so and
/// quotes no password (not in the pass's errors the daemon logs, the outbox's error the pages
/// show, nor the console's test output), nothing arrives, and the alert stays in the outbox.
/// Once the file holds the right password the retry after the backoff delivers it: the file is
/// read at each session.
#[tokio::test]
async fn smtp_relay_refusing_the_password_leaves_the_alert_in_the_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let right = password_file(dir.path(), "relay.pw", RELAY_PASSWORD);
    let wrong_password = "Wrong-Relay:pw 8";
    let box_file = password_file(dir.path(), "box.pw", wrong_password);
    let relay = smtp_auth_relay(dir.path(), &server, "plain-login", "plain-login", &right);
    let cfg = email_config_with_user(relay.port, &server.ca, RELAY_USER, &box_file);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "{report:?}");
    let (_, state, attempts, error) = delivery_state(&o).remove(0);
    let error = error.unwrap_or_default();
    assert_eq!((state.as_str(), attempts), ("failed", 1));
    assert!(error.contains("the relay refused the user name and password (PLAIN): 535"), "{error}");
    assert!(error.contains("alert_delivery.email.user") && error.contains("nothing was sent"), "{error}");
    let test = wardbox::alerting::deliver::send_test(&cfg, &jiff::Timestamp::from_second(NOW).expect("ts")).await;
    let test_error = test[0].1.as_ref().expect_err("the test message was accepted with a wrong password");
    let shown = format!("{:?}\n{}\n{test_error}\n{test_error:?}\n{error}", report.errors, cfg.email.as_ref().map(|e| format!("{e:?}")).unwrap_or_default());
    for password in [wrong_password, RELAY_PASSWORD] {
        assert_no_password(&shown, RELAY_USER, password);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(maildir_messages(&relay.maildir).is_empty(), "a message went through without authentication");
    let attempts = std::fs::read_to_string(&relay.log).expect("log");
    assert_eq!(attempts.lines().filter(|l| l.starts_with("auth ")).collect::<Vec<_>>(), ["auth PLAIN refused", "auth PLAIN refused"], "{attempts}");

    // Not before the backoff; after it, with the password corrected in the file, delivered.
    assert_eq!(deliver_due(&o.store, &cfg, NOW + 29).await.expect("pass").failed, 0, "retried before its backoff");
    std::fs::write(&box_file, format!("{RELAY_PASSWORD}\n")).expect("write");
    let report = deliver_due(&o.store, &cfg, NOW + 30).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    assert_eq!(wait_for_messages(&relay.maildir).len(), 1, "one digest");
    assert_eq!(delivery_state(&o)[0].1, "delivered");
}

/// Credentials are configured but the relay offers no mechanism the box speaks after STARTTLS
/// (none at all, or only CRAM-MD5): the box refuses, sends nothing (the first relay would have
/// taken the mail without AUTH), and the alert stays failed in the outbox.
#[tokio::test]
async fn smtp_relay_without_a_usable_auth_gets_nothing_when_a_user_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let pw = password_file(dir.path(), "relay.pw", RELAY_PASSWORD);
    for (mode, expected) in [("none", "the relay offers no AUTH after STARTTLS"), ("cram", "the relay offers AUTH CRAM-MD5 only after STARTTLS")] {
        let relay = smtp_auth_relay(dir.path(), &server, mode, mode, &pw);
        let cfg = email_config_with_user(relay.port, &server.ca, RELAY_USER, &pw);
        let o = outbox_with_alert(&cfg);
        let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
        assert_eq!((report.delivered, report.failed), (0, 1), "{mode}: {report:?}");
        let (_, state, _, error) = delivery_state(&o).remove(0);
        let error = error.unwrap_or_default();
        assert_eq!(state, "failed", "{mode}");
        assert!(error.contains(expected) && error.contains("nothing was sent"), "{mode}: {error}");
        assert_no_password(&format!("{:?} {error}", report.errors), RELAY_USER, RELAY_PASSWORD);
        std::thread::sleep(Duration::from_millis(300));
        assert!(maildir_messages(&relay.maildir).is_empty(), "{mode}: a message was sent without authentication");
        let attempts = std::fs::read_to_string(&relay.log).expect("log");
        assert!(!attempts.contains("auth "), "{mode}: the box tried a mechanism: {attempts}");
    }
}

/// A relay that offers AUTH in clear and no STARTTLS: the box neither authenticates nor sends;
/// the credentials never cross the LAN unencrypted.
#[tokio::test]
async fn smtp_relay_offering_auth_only_in_clear_gets_no_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let pw = password_file(dir.path(), "relay.pw", RELAY_PASSWORD);
    let relay = smtp_auth_relay(dir.path(), &server, "cleartext", "cleartext", &pw);
    let cfg = email_config_with_user(relay.port, &server.ca, RELAY_USER, &pw);
    let o = outbox_with_alert(&cfg);
    let report = deliver_due(&o.store, &cfg, NOW).await.expect("pass");
    assert_eq!((report.delivered, report.failed), (0, 1), "{report:?}");
    let error = delivery_state(&o).remove(0).3.unwrap_or_default();
    assert!(error.contains("does not offer STARTTLS"), "{error}");
    std::thread::sleep(Duration::from_millis(300));
    let attempts = std::fs::read_to_string(&relay.log).expect("log");
    assert!(!attempts.contains("auth "), "credentials were sent in clear: {attempts}");
    assert!(maildir_messages(&relay.maildir).is_empty(), "a message went out in the clear");
}

/// `request` to `addr` over plain HTTP (the dev box), the whole answer.
fn http(addr: std::net::SocketAddr, request: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// One failed sign-in through the dev box's real login form (its CSRF cookie and field).
fn failed_signin(addr: std::net::SocketAddr, user: &str) {
    let page = http(addr, &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).expect("login page");
    let cookie = page
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("login cookie")
        .to_string();
    let token = cookie.split_once('=').expect("cookie value").1;
    let body = format!("csrf={token}&username={user}&password=wrong-password");
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = http(addr, &request).expect("post");
    assert!(!resp.starts_with("HTTP/1.1 5"), "{resp}");
}

fn wardbox_cli(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(args)
        .args(["-c", config.to_str().expect("utf8")])
        .stdin(Stdio::null())
        .output()
        .expect("run wardbox");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The agent's log: its stderr, or the journal when journald's socket exists (the agent logs
/// there then, `logging.rs`).
fn agent_log(stderr: &Path, pid: u32) -> String {
    if Path::new("/run/systemd/journal/socket").exists() {
        let out = Command::new("journalctl").args(["--no-pager", "-o", "cat", &format!("_PID={pid}")]).output().expect("journalctl (the agent logs to journald here)");
        return String::from_utf8_lossy(&out.stdout).into_owned();
    }
    std::fs::read_to_string(stderr).unwrap_or_default()
}

/// The whole box with a relay that refuses its password: a real `wardbox dev` raises an alert
/// from failed sign-ins at its login form, its delivery fails and is logged with a clear
/// reason, `wardbox alerts show` shows the failure, `wardbox alerts test` reports it and exits
/// 3, nothing arrives, and neither the password nor its encodings is in the agent's log or the
/// console's output.
#[test]
fn smtp_relay_refusing_the_password_is_reported_by_the_box_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = pki(dir.path(), "clinic", "mail.test");
    let right = password_file(dir.path(), "relay.pw", RELAY_PASSWORD);
    let wrong_password = "Wrong-Relay:pw 8";
    let box_file = password_file(dir.path(), "box.pw", wrong_password);
    let relay = smtp_auth_relay(dir.path(), &server, "plain-login", "plain-login", &right);
    let port = relay.port;

    let base = dir.path().join("box");
    let defaults = Command::new(env!("CARGO_BIN_EXE_wardbox")).args(["config", "defaults", "--base", base.to_str().expect("utf8")]).output().expect("defaults");
    assert!(defaults.status.success(), "{}", String::from_utf8_lossy(&defaults.stderr));
    let toml = String::from_utf8(defaults.stdout).expect("utf8");
    let section = format!(
        "[alert_delivery]\nadmin_url = \"https://wardbox.clinic.test:8443\"\n[alert_delivery.email]\nrelay = \"127.0.0.1:{port}\"\nserver_name = \"mail.test\"\nca_file = \"{}\"\nfrom = \"wardbox@clinic.test\"\nto = [\"privacy@clinic.test\"]\nuser = \"{RELAY_USER}\"\npassword_file = \"{}\"\n",
        server.ca.display(),
        box_file.display()
    );
    let configured = toml
        .replace("account_failures = 5\naddress_failures = 10", "account_failures = 2\naddress_failures = 2")
        .replace("[alert_delivery]\nadmin_url = \"\"\n", &section);
    assert!(configured.contains("account_failures = 2") && configured.contains("password_file"), "the defaults changed shape:\n{toml}");
    std::fs::create_dir_all(&base).expect("base");
    let config = base.join("wardbox.toml");
    std::fs::write(&config, configured).expect("config");

    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let stderr = dir.path().join("agent.log");
    let agent = Receiver(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
            .env("WARDBOX_ENGINE_BIN", base.join("no-engine-here"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("log"))
            .spawn()
            .expect("start wardbox dev"),
    );
    let pid = agent.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http(addr, &format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "the dev agent did not serve within 60 s: {}", agent_log(&stderr, pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..2 {
        failed_signin(addr, "ghost");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = agent_log(&stderr, pid);
        if log.contains("alert delivery failed") {
            break log;
        }
        assert!(Instant::now() < deadline, "no failed delivery logged within 30 s: {log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let line = log.lines().find(|l| l.contains("alert delivery failed")).expect("line");
    assert!(line.contains("email: the relay refused the user name and password (PLAIN): 535"), "{line}");
    let (code, shown) = wardbox_cli(&["alerts", "show", "1"], &config);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("email: failed after 1 attempts (the relay refused the user name and password (PLAIN): 535"), "{shown}");
    let (code, tested) = wardbox_cli(&["alerts", "test"], &config);
    assert_eq!(code, Some(3), "{tested}");
    assert!(tested.contains("email: FAILED: the relay refused the user name and password (PLAIN): 535"), "{tested}");
    drop(agent);
    let everything = format!("{}\n{shown}\n{tested}", agent_log(&stderr, pid));
    for password in [wrong_password, RELAY_PASSWORD] {
        assert_no_password(&everything, RELAY_USER, password);
    }
    assert!(maildir_messages(&relay.maildir).is_empty(), "a message went through with a refused password");
    let attempts = std::fs::read_to_string(&relay.log).expect("log");
    assert!(attempts.lines().filter(|l| *l == "auth PLAIN refused").count() >= 2, "{attempts}");
}
