//! Directory sign-in against a real OpenLDAP `slapd` that each test starts on a free loopback
//! port with its own database (Debian packages `slapd` and `ldap-utils`).
//!
//! Tier `ldap_`: without slapd these tests fail, naming the package to install.

mod web_support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use wardbox::web::ldap::{LdapError, authenticate};
use wardbox::web::{LdapConfig, Role, WebConfig};
use web_support::*;

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const SUFFIX: &str = "dc=clinic,dc=test";
const USER_PW: &str = "directory password 1";

struct Slapd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn person(uid: &str, name: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\nsn: {}\ndisplayName: {name}\nuserPassword: {USER_PW}\n\n",
        name.split(' ').next_back().unwrap_or(name)
    )
}

fn group(cn: &str, members: &[&str]) -> String {
    let mut s = format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for m in members {
        s.push_str(&format!("member: uid={m},ou=people,{SUFFIX}\n"));
    }
    s + "\n"
}

/// Start slapd with a fresh database: four people, three groups.
fn start_slapd() -> Slapd {
    for bin in [SLAPD, SLAPADD] {
        assert!(
            Path::new(bin).exists(),
            "the ldap_ tests need OpenLDAP: {bin} is missing (apt-get install slapd ldap-utils)"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    std::fs::create_dir(&db).expect("db dir");
    let conf = dir.path().join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\ninclude /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {pid}\n\
             database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"cn=admin,{SUFFIX}\"\nrootpw adminsecret\ndirectory {db}\n\
             access to attrs=userPassword by self write by anonymous auth by * none\naccess to * by users read by * none\n",
            pid = dir.path().join("slapd.pid").display(),
            db = db.display()
        ),
    )
    .expect("conf");
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: clinic\no: Test Clinic\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    ldif += &person("dr.house", "Gregory House");
    ldif += &person("nurse.joy", "Joy Nurse");
    ldif += &person("it.bob", "Bob Admin");
    ldif += &person("dr.both", "Both Roles");
    ldif += &person("visitor", "No Group");
    // A doctor whose entry gives her postal address in LDAP's `$`-separated form, and a home
    // address apart (for directories that keep it in homePostalAddress).
    ldif += &person("dr.home", "Hana Home").replace(
        "userPassword:",
        "postalAddress: 27 Alder Street$Riverton, OR 97123\nhomePostalAddress: 40 Birch Lane$Riverton\nuserPassword:",
    );
    ldif += &group("doctors", &["dr.house", "dr.both", "dr.home"]);
    ldif += &group("nurses", &["nurse.joy"]);
    ldif += &group("it", &["it.bob", "dr.both"]);
    let ldif_path = dir.path().join("data.ldif");
    std::fs::write(&ldif_path, ldif).expect("ldif");
    let out = Command::new(SLAPADD).arg("-f").arg(&conf).arg("-l").arg(&ldif_path).output().expect("slapadd");
    assert!(out.status.success(), "slapadd failed: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let url = format!("ldap://127.0.0.1:{port}/");
    // `-d 0` keeps slapd in the foreground, so the test owns the process and kills it.
    let child = Command::new(SLAPD)
        .arg("-f")
        .arg(&conf)
        .arg("-h")
        .arg(&url)
        .args(["-d", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start slapd");
    let mut slapd = Slapd { child, url: url.trim_end_matches('/').to_string(), _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
        if let Ok(Some(status)) = slapd.child.try_wait() {
            panic!("slapd exited with {status} before listening");
        }
        assert!(Instant::now() < deadline, "slapd did not listen within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    slapd
}

fn config(url: &str) -> LdapConfig {
    LdapConfig {
        url: url.to_string(),
        starttls: false,
        bind_dn: format!("uid={{user}},ou=people,{SUFFIX}"),
        user_base: format!("ou=people,{SUFFIX}"),
        user_filter: "(uid={user})".into(),
        group_base: format!("ou=groups,{SUFFIX}"),
        groups: BTreeMap::from([
            (format!("cn=doctors,ou=groups,{SUFFIX}"), Role::Clinician),
            (format!("cn=nurses,ou=groups,{SUFFIX}"), Role::Nurse),
            (format!("cn=it,ou=groups,{SUFFIX}"), Role::Admin),
        ]),
        ca_file: None,
        timeout_secs: 5,
        address_attribute: "postalAddress".into(),
    }
}

#[tokio::test]
async fn ldap_bind_and_groups_give_the_role() {
    let slapd = start_slapd();
    let cfg = config(&slapd.url);
    let p = authenticate(&cfg, "dr.house", USER_PW).await.expect("dr.house signs in");
    assert_eq!(p.role, Role::Clinician);
    assert_eq!(p.display_name, "Gregory House");
    assert_eq!(p.dn, format!("uid=dr.house,ou=people,{SUFFIX}"));
    assert_eq!(authenticate(&cfg, "nurse.joy", USER_PW).await.expect("nurse").role, Role::Nurse);
    assert_eq!(authenticate(&cfg, "it.bob", USER_PW).await.expect("it").role, Role::Admin);
}

#[tokio::test]
async fn ldap_wrong_password_unknown_user_and_empty_password_are_refused() {
    let slapd = start_slapd();
    let cfg = config(&slapd.url);
    assert!(matches!(authenticate(&cfg, "dr.house", "wrong").await, Err(LdapError::InvalidCredentials)));
    assert!(matches!(authenticate(&cfg, "dr.nobody", USER_PW).await, Err(LdapError::InvalidCredentials)));
    // An empty password would be an anonymous bind, which this slapd accepts: refused before
    // it is sent.
    assert!(matches!(authenticate(&cfg, "dr.house", "").await, Err(LdapError::InvalidCredentials)));
}

#[tokio::test]
async fn ldap_people_in_no_group_or_in_groups_of_two_roles_are_refused() {
    let slapd = start_slapd();
    let cfg = config(&slapd.url);
    assert!(matches!(authenticate(&cfg, "visitor", USER_PW).await, Err(LdapError::NoRole)));
    match authenticate(&cfg, "dr.both", USER_PW).await {
        Err(LdapError::ConflictingRoles(roles)) => assert_eq!(roles, vec![Role::Clinician, Role::Admin]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn ldap_sign_in_through_the_ui_follows_the_directory() {
    let slapd = start_slapd();
    let web = WebConfig { ldap: Some(config(&slapd.url)), ..WebConfig::default() };
    let h = Harness::with(web, None);
    let resp = sign_in(&h, "/login", "dr.house", USER_PW, None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{}", body_text(resp).await);
    assert_eq!(location(&resp), "/patients");
    {
        let store = h.ui.store.lock().expect("lock");
        let u = wardbox::web::accounts::find_by_username(store.conn(), "dr.house").expect("q").expect("row");
        assert_eq!(u.role, Role::Clinician);
        assert!(u.password_hash.is_none(), "a directory password was stored");
    }
    assert_eq!(sign_in(&h, "/login", "dr.house", "wrong", None).await.status(), StatusCode::UNAUTHORIZED);
    let resp = sign_in(&h, "/login", "visitor", USER_PW, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(resp).await.contains("not in any Wardbox group"));

    // The directory moves dr.house from the doctors to the nurses: the next sign-in follows.
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url).await.expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind(&format!("cn=admin,{SUFFIX}"), "adminsecret").await.expect("bind").success().expect("admin");
    let dn = format!("uid=dr.house,ou=people,{SUFFIX}");
    let member = std::collections::HashSet::from([dn.as_str()]);
    ldap.modify(&format!("cn=doctors,ou=groups,{SUFFIX}"), vec![ldap3::Mod::Delete("member", member.clone())])
        .await
        .expect("modify")
        .success()
        .expect("delete member");
    ldap.modify(&format!("cn=nurses,ou=groups,{SUFFIX}"), vec![ldap3::Mod::Add("member", member)])
        .await
        .expect("modify")
        .success()
        .expect("add member");
    let _ = ldap.unbind().await;
    assert_eq!(sign_in(&h, "/login", "dr.house", USER_PW, None).await.status(), StatusCode::SEE_OTHER);
    let store = h.ui.store.lock().expect("lock");
    let u = wardbox::web::accounts::find_by_username(store.conn(), "dr.house").expect("q").expect("row");
    assert_eq!(u.role, Role::Nurse);
}

#[tokio::test]
async fn ldap_down_means_directory_sign_in_fails_plainly_and_break_glass_still_works() {
    let slapd = start_slapd();
    let url = slapd.url.clone();
    drop(slapd);
    let web = WebConfig { ldap: Some(config(&url)), ..WebConfig::default() };
    let h = Harness::with(web.clone(), None);
    assert!(matches!(authenticate(web.ldap.as_ref().expect("ldap"), "dr.house", USER_PW).await, Err(LdapError::Unreachable(_))));
    let resp = sign_in(&h, "/login", "dr.house", USER_PW, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(resp).await.contains("directory server cannot be reached"));
    h.add_user("er.emergency", Role::Clinician, true);
    let resp = sign_in(&h, "/login/emergency", "er.emergency", PASSWORD, Some("directory is down, patient in resus")).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

/// Everything the agent logs in this test process, from any thread, at every level (`log`
/// records included), so a test can show that a text never reached the log.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The account's stored postal address and who set it.
fn stored_address(h: &Harness, user: &str) -> (Option<String>, Option<String>) {
    let store = h.ui.store.lock().expect("lock");
    store
        .conn()
        .query_row("SELECT postal_address, postal_address_source FROM users WHERE username = ?1", [user], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("account row")
}

/// Change (or with `None` remove) a person's postal address in the directory, as its
/// administrator would.
async fn set_directory_address(url: &str, uid: &str, value: Option<&str>) {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(url).await.expect("connect");
    ldap3::drive!(conn);
    ldap.simple_bind(&format!("cn=admin,{SUFFIX}"), "adminsecret").await.expect("bind").success().expect("admin");
    let change = match value {
        Some(v) => ldap3::Mod::Replace("postalAddress", HashSet::from([v])),
        None => ldap3::Mod::Delete("postalAddress", HashSet::new()),
    };
    ldap.modify(&format!("uid={uid},ou=people,{SUFFIX}"), vec![change]).await.expect("modify").success().expect("change the address");
    let _ = ldap.unbind().await;
}

/// A directory doctor's `postalAddress` (`$`-separated) is kept in the store at sign-in; she
/// opens the record of a patient whose record gives the same address (written another way)
/// and the `same_address` alert is raised, naming her and the page view's audit record. The
/// address text reaches no alert, no outbox row, no audit record and no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_directory_address_raises_same_address_and_stays_out_of_logs_and_audit() {
    let logs = captured_logs();
    let slapd = start_slapd();
    let web = WebConfig { ldap: Some(config(&slapd.url)), ..WebConfig::default() };
    let h = Harness::with(web, None);
    {
        // Patient 21 lives at the doctor's address (another surname), 22 down the road.
        let store = h.ui.store.lock().expect("lock");
        for (id, label, line) in [(21, "Carl Berg, born 2001-01-01", "27 Alder St."), (22, "Dana Holm", "29 Alder Street")] {
            store
                .conn()
                .execute(
                    "INSERT INTO rag_patients (id, key_hash, shift_days, label, created_at) VALUES (?1, ?2, 0, ?3, 'now')",
                    rusqlite::params![id, format!("k{id}"), label],
                )
                .expect("patient");
            store
                .conn()
                .execute(
                    "INSERT INTO rag_pseudonyms (owner, category, idx, norm, original) VALUES (?1, 'ADDRESS', 0, ?2, ?2)",
                    rusqlite::params![id, line],
                )
                .expect("address");
        }
    }
    // The alert feed runs from before her first sign-in, as in the daemon: the account and
    // its address appear while it runs.
    let rules = wardbox_alerts::AlertsConfig::default();
    let delivery = wardbox::alerting::DeliveryConfig { admin_url: "https://wardbox.test".into(), ..Default::default() };
    let mut feed = {
        let store = h.ui.store.lock().expect("lock");
        wardbox::alerting::Feed::start(&store, &rules, &delivery).expect("the alert feed")
    };
    let resp = sign_in(&h, "/login", "dr.home", USER_PW, None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{}", body_text(resp).await);
    let token = set_cookie(&resp, "wb_session").expect("a session");
    assert_eq!(
        stored_address(&h, "dr.home"),
        (Some("27 Alder Street\nRiverton, OR 97123".into()), Some("directory".into())),
        "the directory's lines are kept as lines"
    );
    for patient in ["22", "21", "21"] {
        h.send(get_with(&format!("/patients/{patient}"), &token)).await;
    }
    let opened_21 = h
        .audit_records()
        .into_iter()
        .find(|r| r.kind == "access" && r.detail.contains("\"path\":\"/patients/21\""))
        .expect("the page view of patient 21 is audited")
        .seq;

    let alerts: Vec<(String, String, String)> = {
        let mut store = h.ui.store.lock().expect("lock");
        feed.step(&mut store).expect("step");
        let mut stmt = store
            .conn()
            .prepare("SELECT rule, subject, alert FROM alerts WHERE rule IN ('own_record', 'coworker_record', 'same_surname', 'same_address') ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    assert_eq!(
        alerts.iter().map(|(r, s, _)| (r.as_str(), s.as_str())).collect::<Vec<_>>(),
        [("same_address", "user:dr.home")],
        "once a day per record; the neighbour raises nothing"
    );
    let alert: serde_json::Value = serde_json::from_str(&alerts[0].2).expect("alert JSON");
    assert_eq!(alert["seqs"], serde_json::json!([opened_21]), "{alert}");
    wardbox::alerting::feed::audit_raised(&h.ui.store, &h.ui.audit).await.expect("audit the alert");
    let raised = h.audit_records().into_iter().filter(|r| r.detail.contains("alert_raised") && r.detail.contains("same_address")).count();
    assert_eq!(raised, 1, "the alert is in the audit chain");

    // No address text where alerts and audit records go, nor in the log.
    let mut dump = String::new();
    {
        let store = h.ui.store.lock().expect("lock");
        for q in ["SELECT alert FROM alerts", "SELECT destination || state || coalesce(last_error, '') FROM alert_outbox", "SELECT detail FROM audit"] {
            let mut stmt = store.conn().prepare(q).expect("prepare");
            let rows: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
            dump.push_str(&rows.join("\n"));
        }
    }
    let log = String::from_utf8_lossy(&logs.lock().expect("lock")).to_lowercase();
    assert!(log.contains("postal address taken from the directory"), "the log capture saw the sign-in: {log}");
    for text in ["alder", "riverton", "97123", "berg", "birch"] {
        assert!(!dump.to_lowercase().contains(text), "{text:?} reached the alerts or the audit chain");
        let leaked: Vec<&str> = log.lines().filter(|l| l.contains(text)).collect();
        assert!(leaked.is_empty(), "{text:?} reached the log: {leaked:?}");
    }
}

async fn sign_in_ok(h: &Harness) {
    let resp = sign_in(h, "/login", "dr.home", USER_PW, None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{}", body_text(resp).await);
}

/// The directory's address follows the directory at every sign-in (changed, or cleared when
/// it is removed or cannot be read as a street address), while an address an administrator
/// set with `wardbox users address` is kept whatever the directory says, until it is cleared.
#[tokio::test]
async fn ldap_directory_address_follows_the_directory_and_keeps_an_administrators() {
    let slapd = start_slapd();
    let cfg = config(&slapd.url);
    let p = authenticate(&cfg, "dr.home", USER_PW).await.expect("dr.home");
    assert_eq!(p.postal_address.as_ref().map(|a| a.as_str()), Some("27 Alder Street\nRiverton, OR 97123"));
    assert!(!format!("{p:?}").contains("Alder"), "a logged person shows no address: {p:?}");
    let home = LdapConfig { address_attribute: "homePostalAddress".into(), ..cfg.clone() };
    let p = authenticate(&home, "dr.home", USER_PW).await.expect("dr.home");
    assert_eq!(p.postal_address.as_ref().map(|a| a.as_str()), Some("40 Birch Lane\nRiverton"));
    let none = LdapConfig { address_attribute: String::new(), ..cfg.clone() };
    assert_eq!(authenticate(&none, "dr.home", USER_PW).await.expect("dr.home").postal_address, None);

    let h = Harness::with(WebConfig { ldap: Some(cfg), ..WebConfig::default() }, None);
    let (dir, admin) = (Some("directory".to_string()), Some("admin".to_string()));
    sign_in_ok(&h).await;
    assert_eq!(stored_address(&h, "dr.home"), (Some("27 Alder Street\nRiverton, OR 97123".into()), dir.clone()));
    // She moves; the directory is updated: the next sign-in follows.
    set_directory_address(&slapd.url, "dr.home", Some("3 Oak Road$Shelbyville")).await;
    sign_in_ok(&h).await;
    assert_eq!(stored_address(&h, "dr.home"), (Some("3 Oak Road\nShelbyville".into()), dir.clone()));
    // An address the rule cannot read (no house number and street on its first line) is no
    // address: the old one goes.
    set_directory_address(&slapd.url, "dr.home", Some("Shelbyville$OR 97001")).await;
    sign_in_ok(&h).await;
    assert_eq!(stored_address(&h, "dr.home"), (None, None));
    // An administrator's address wins over the directory's, and survives its removal there.
    set_directory_address(&slapd.url, "dr.home", Some("3 Oak Road$Shelbyville")).await;
    {
        let store = h.ui.store.lock().expect("lock");
        wardbox::alerting::relations::set_postal_address(store.conn(), "dr.home", Some("7 Pine Lane, Ogdenville")).expect("admin sets");
    }
    sign_in_ok(&h).await;
    assert_eq!(stored_address(&h, "dr.home"), (Some("7 Pine Lane, Ogdenville".into()), admin.clone()));
    set_directory_address(&slapd.url, "dr.home", None).await;
    sign_in_ok(&h).await;
    assert_eq!(stored_address(&h, "dr.home"), (Some("7 Pine Lane, Ogdenville".into()), admin));
    // Cleared by the administrator: the directory's address (back there) is taken again.
    set_directory_address(&slapd.url, "dr.home", Some("3 Oak Road$Shelbyville")).await;
    {
        let store = h.ui.store.lock().expect("lock");
        wardbox::alerting::relations::set_postal_address(store.conn(), "dr.home", None).expect("admin clears");
    }
    sign_in_ok(&h).await;
    assert_eq!(stored_address(&h, "dr.home"), (Some("3 Oak Road\nShelbyville".into()), dir));
    // A move to an address just as long is still a change the alert feed notices.
    let fingerprint = || wardbox::alerting::relations::fingerprint(h.ui.store.lock().expect("lock").conn()).expect("fingerprint");
    let before = fingerprint();
    set_directory_address(&slapd.url, "dr.home", Some("4 Oak Road$Shelbyville")).await;
    sign_in_ok(&h).await;
    assert_ne!(fingerprint(), before);
}
