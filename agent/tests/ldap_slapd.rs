//! Directory sign-in against a real OpenLDAP `slapd` that each test starts on a free loopback
//! port with its own database (Debian packages `slapd` and `ldap-utils`).
//!
//! Tier `ldap_`: without slapd these tests fail, naming the package to install.

mod web_support;

use std::collections::BTreeMap;
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
    ldif += &group("doctors", &["dr.house", "dr.both"]);
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
