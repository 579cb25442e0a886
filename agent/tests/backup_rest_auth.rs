//! The LAN destination behind HTTP basic authentication, through `wardbox backup`: a restic REST
//! server (`rclone serve restic --user --pass`) over https signed by a clinic CA, the box
//! configured with `rest_user` and `rest_password_file`. The right password backs up (and the
//! key rotates over it); a wrong one fails the run with a clear error, recorded as a failed run;
//! the password is in no configuration, output, run record or audit record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wardbox::config::Config;
use wardbox::store::Store;

const PASSWORD: &str = "cl1nic b@ckup:pass/word";

/// Run a command; its output (console and errors) never holds a password.
fn wardbox(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox");
    for secret in [PASSWORD, "passw0rd"] {
        assert!(!text(&out).contains(secret), "a password in the output of {args:?}");
    }
    out
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A running `rclone serve restic` over https with one user; stopped when dropped.
struct RestServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clinic CA (PEM) and a server certificate for 127.0.0.1 it signed, with its key.
fn clinic_ca_and_server_cert() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "Clinic test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::default();
    server.distinguished_name.push(DnType::CommonName, "backup.clinic.local");
    server.subject_alt_names = vec![SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    (ca_cert.pem(), server_cert.pem(), server_key.serialize_pem())
}

/// Serve `root` over https with the clinic CA's certificate and the user `wardbox`; returns the
/// server and the CA file.
fn start_server(dir: &Path) -> (RestServer, PathBuf) {
    let rclone = PathBuf::from("/usr/bin/rclone");
    assert!(rclone.is_file(), "rclone not found at {} (Debian package `rclone`: its `serve restic` is the REST server of this test)", rclone.display());
    let (ca_pem, cert_pem, key_pem) = clinic_ca_and_server_cert();
    let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&cert_file, format!("{cert_pem}{ca_pem}")).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let root = dir.join("server");
    std::fs::create_dir_all(&root).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let child = Command::new(rclone)
        .args(["serve", "restic", "--addr", &addr.to_string(), "--config", "/dev/null"])
        .args(["--cert", cert_file.to_str().unwrap(), "--key", key_file.to_str().unwrap(), "--user", "wardbox", "--pass", PASSWORD])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rclone serve restic");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "rclone serve restic did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (RestServer { child, addr }, ca_file)
}

#[test]
fn a_password_protected_lan_server_takes_the_right_password_and_refuses_a_wrong_one_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca_file) = start_server(dir.path());
    let base = dir.path().join("box");
    let mut config = Config::dev_defaults(&base);
    let password_file = base.join("rest.pw");
    config.backup.rest_url = Some(format!("https://{}/wardbox/", server.addr));
    config.backup.rest_ca_file = Some(ca_file);
    config.backup.rest_user = Some("wardbox".into());
    config.backup.rest_password_file = Some(password_file.clone());
    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let config_path = base.join("wardbox.toml");
    let config_text = toml::to_string_pretty(&config).unwrap();
    assert!(!config_text.contains(PASSWORD), "the password is in the configuration");
    std::fs::write(&config_path, &config_text).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let store_path = data_dir.join(&config.store.file_name);
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    drop(store);
    let c = config_path.to_str().unwrap();

    // The right password: the backup goes to the server, and the key rotates over it.
    let out = wardbox(&["backup", "now", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));
    let out = wardbox(&["backup", "rotate-key", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));

    // A wrong password (the server's was changed, or the file mistyped): the run fails saying
    // so, recorded as a failed run; the next run with the right one succeeds.
    std::fs::write(&password_file, "an 0ld passw0rd\n").unwrap();
    let out = wardbox(&["backup", "now", "-c", c]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refused the user name and password (HTTP 401 Unauthorized)"), "{}", text(&out));
    let store = Store::open_existing(&store_path, &key).unwrap();
    let (ok, detail): (i64, String) =
        store.conn().query_row("SELECT ok, detail FROM backup_runs ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(ok, 0);
    assert!(detail.contains("HTTP 401"), "{detail}");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let out = wardbox(&["backup", "now", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));

    // No password anywhere the box writes: run records, audit records.
    let mut written: Vec<String> = Vec::new();
    for sql in ["SELECT detail FROM backup_runs", "SELECT detail FROM audit"] {
        let mut stmt = store.conn().prepare(sql).unwrap();
        written.extend(stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|d| d.unwrap()));
    }
    for secret in [PASSWORD, "an 0ld passw0rd", "passw0rd", "cl1nic"] {
        assert!(written.iter().all(|d| !d.contains(secret)), "a password reached the records");
    }
    drop(server);
}
