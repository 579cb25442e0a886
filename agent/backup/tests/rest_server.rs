//! The LAN destination against a real restic REST server: `rclone serve restic` (Debian
//! package `rclone`), which speaks the protocol of restic's `rest-server`. Our code writes,
//! checks, restores and prunes through it; the stock `restic` checks what it wrote over the
//! same server; a wrong key is refused by name, and a server that is down is a clear error. The
//! key is rotated over it, and a server that refuses deletion (`--append-only`) leaves both keys.
//! A server that asks for a password (HTTP basic authentication over https) takes the right one
//! from its file and refuses a wrong one by name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use wardbox_backup::{BackupError, BackupRepository, Destination, RETENTION, RepositoryKey, RestCredentials, rotate};

/// A running `rclone serve restic` over a directory; stopped when dropped.
struct RestServer {
    child: Child,
    addr: SocketAddr,
    root: PathBuf,
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rclone() -> PathBuf {
    let path = PathBuf::from("/usr/bin/rclone");
    assert!(path.is_file(), "rclone not found at {} (Debian package `rclone`: its `serve restic` is the REST server of these tests; tests/install-deps.sh installs it)", path.display());
    path
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn start_server(root: &Path) -> RestServer {
    start_server_with(root, &[])
}

/// With extra arguments (`--cert`, `--key` for https).
fn start_server_with(root: &Path, extra: &[&str]) -> RestServer {
    std::fs::create_dir_all(root).unwrap();
    let addr = free_port();
    let child = Command::new(rclone())
        .args(["serve", "restic", "--addr", &addr.to_string(), "--config", "/dev/null"])
        .args(extra)
        .arg(root)
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
    RestServer { child, addr, root: root.to_owned() }
}

fn url(server: &RestServer) -> String {
    format!("http://{}/wardbox/", server.addr)
}

fn destination(server: &RestServer) -> Destination {
    Destination::RestServer { url: url(server), ca_file: None, credentials: None }
}

#[test]
fn backups_go_to_a_rest_server_and_the_stock_restic_checks_them_there() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("server"));
    let source = dir.path().join("source");
    make_source(&source, 3 << 20);
    let key = RepositoryKey::generate().unwrap();
    let dest = destination(&server);

    let (mut repo, created) = BackupRepository::open_or_init(&dest, &key).unwrap();
    assert!(created);
    let first = repo.backup(&source, &["wardbox"]).unwrap();
    std::fs::write(source.join("config.toml"), "profile = \"appliance\"\n").unwrap();
    let (mut repo, created) = BackupRepository::open_or_init(&dest, &key).unwrap();
    assert!(!created, "the second run finds the repository on the server");
    let second = repo.backup(&source, &["wardbox"]).unwrap();
    assert!(second.bytes_added < first.bytes_added / 10, "the unchanged store deduplicates over the server too");
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    assert!(repo.check(true).unwrap().is_ok());
    repo.apply_retention_now(&RETENTION).unwrap();

    // The repository lives on the server's disk, under the URL's path.
    assert!(server.root.join("wardbox/config").is_file(), "repository files on the server");

    let target = dir.path().join("restored");
    let restored = repo.restore_latest(&target).unwrap();
    assert_eq!(restored.snapshot.id, second.id);
    assert_eq!(tree(&target), tree(&source));

    // The stock restic, over the same server with the same key.
    let rest = format!("rest:{}", url(&server));
    let out = run_restic(Path::new(&rest), &key, &["check", "--read-data"]);
    assert!(out.status.success(), "restic check --read-data over REST:\n{}", text(&out));
    let out = run_restic(Path::new(&rest), &key, &["snapshots", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert!(ids.contains(&second.id.as_str()), "{ids:?}");

    // A wrong key is refused by name over REST as on a disk.
    let wrong = RepositoryKey::generate().unwrap();
    let err = BackupRepository::open(&dest, &wrong).unwrap_err();
    assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");
}

#[test]
fn a_server_that_is_down_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    make_source(&source, 1 << 16);
    let key = RepositoryKey::generate().unwrap();
    // Nothing listens on this port.
    let addr = free_port();
    let dest = Destination::RestServer { url: format!("http://{addr}/wardbox/"), ca_file: None, credentials: None };
    let started = Instant::now();
    let err = BackupRepository::open_or_init(&dest, &key).unwrap_err();
    assert!(matches!(err, BackupError::ServerUnreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("the backup server http://{addr}/wardbox/ cannot be reached")), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60), "gave up after {:?}", started.elapsed());
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

/// Over https with a clinic CA: the configured CA file makes the server's certificate
/// trusted; without it (the system's roots only) the server is refused, nothing written.
#[test]
fn an_https_server_signed_by_the_clinic_ca_is_trusted_only_with_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = clinic_ca_and_server_cert();
    let (ca_file, cert_file, key_file) = (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&cert_file, format!("{cert_pem}{ca_pem}")).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let server = start_server_with(
        &dir.path().join("server"),
        &["--cert", cert_file.to_str().unwrap(), "--key", key_file.to_str().unwrap()],
    );
    let url = format!("https://{}/wardbox/", server.addr);
    let source = dir.path().join("source");
    make_source(&source, 1 << 16);
    let key = RepositoryKey::generate().unwrap();

    let untrusted = Destination::RestServer { url: url.clone(), ca_file: None, credentials: None };
    let err = BackupRepository::open_or_init(&untrusted, &key).unwrap_err();
    assert!(matches!(err, BackupError::ServerUnreachable { .. }), "{err:?}");
    assert!(!server.root.join("wardbox/config").exists(), "nothing written to an untrusted server");

    let trusted = Destination::RestServer { url, ca_file: Some(ca_file), credentials: None };
    let (mut repo, created) = BackupRepository::open_or_init(&trusted, &key).unwrap();
    assert!(created);
    let snap = repo.backup(&source, &["wardbox"]).unwrap();
    assert!(repo.check(true).unwrap().is_ok());
    assert_eq!(repo.snapshots().unwrap().last().map(|s| s.id.clone()), Some(snap.id));
    assert!(server.root.join("wardbox/config").is_file());
}

#[test]
fn the_key_is_rotated_on_a_rest_server_and_a_server_that_refuses_deletion_leaves_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let source = dir.path().join("source");
    make_source(&source, 256 << 10);
    let old = RepositoryKey::generate().unwrap();
    {
        let server = start_server(&root);
        let (mut repo, _) = BackupRepository::open_or_init(&destination(&server), &old).unwrap();
        repo.backup(&source, &["wardbox"]).unwrap();
    }

    // An append-only server takes the new key, then refuses to delete the old one: both open
    // the repository, and the error names the step.
    let new = RepositoryKey::generate().unwrap();
    let added = {
        let server = start_server_with(&root, &["--append-only"]);
        let dest = destination(&server);
        let added = rotate::add_verified_key(&dest, &old, &new).unwrap();
        let err = rotate::retire_other_keys(&dest, &new, &old).unwrap_err();
        assert!(err.to_string().contains("remove a key"), "{err}");
        for key in [&old, &new] {
            assert_eq!(BackupRepository::open(&dest, key).unwrap().key_ids().unwrap().len(), 2);
        }
        added
    };

    // The server lets it delete: the rotation finishes; only the new key opens the repository,
    // for rustic and for the stock restic over the same server.
    let server = start_server(&root);
    let dest = destination(&server);
    let retired = rotate::retire_other_keys(&dest, &new, &old).unwrap();
    assert_eq!(retired.removed_key_ids, std::slice::from_ref(&added.previous_key_id));
    assert!(matches!(BackupRepository::open(&dest, &old), Err(BackupError::WrongKey { .. })));
    let rest = format!("rest:{}", url(&server));
    let out = run_restic(Path::new(&rest), &old, &["snapshots"]);
    assert!(!out.status.success(), "the stock restic still opens the repository with the old key:\n{}", text(&out));
    let out = run_restic(Path::new(&rest), &new, &["key", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = keys.as_array().unwrap().iter().filter_map(|k| k["id"].as_str()).collect();
    // restic 0.14 lists keys by the first eight digits of their id.
    assert!(listed.len() == 1 && added.new_key_id.starts_with(listed[0]), "restic key list: {listed:?}, new key {}", added.new_key_id);
    let mut repo = BackupRepository::open(&dest, &new).unwrap();
    repo.backup(&source, &["wardbox"]).unwrap();
    assert!(repo.check(true).unwrap().is_ok());

    // The server down: a further rotation fails before anything is written.
    drop(server);
    let newer = RepositoryKey::generate().unwrap();
    let err = rotate::add_verified_key(&dest, &new, &newer).unwrap_err();
    assert!(matches!(err, BackupError::ServerUnreachable { .. }), "{err}");
    let server = start_server(&root);
    assert_eq!(BackupRepository::open(&destination(&server), &new).unwrap().key_ids().unwrap(), [added.new_key_id]);
}

/// Basic authentication over https (`rclone serve restic --user --pass`, a clinic CA): the
/// password from its file backs up; a wrong one, or none, is refused by name (HTTP 401) with
/// nothing written and the password in no error; an unreadable file and a plain http URL are
/// refused before the server is asked.
#[test]
fn a_server_that_asks_for_a_password_takes_the_right_one_and_refuses_a_wrong_one_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = clinic_ca_and_server_cert();
    let (ca_file, cert_file, key_file) = (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    std::fs::write(&cert_file, format!("{cert_pem}{ca_pem}")).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    // Characters that must be percent-encoded in a URL's user information.
    let password = "c0rrect h0rse/b@ttery:staple%";
    let server = start_server_with(
        &dir.path().join("server"),
        &["--cert", cert_file.to_str().unwrap(), "--key", key_file.to_str().unwrap(), "--user", "wardbox", "--pass", password],
    );
    let url = format!("https://{}/wardbox/", server.addr);
    let with = |user: &str, password_file: &Path| Destination::RestServer {
        url: url.clone(),
        ca_file: Some(ca_file.clone()),
        credentials: Some(RestCredentials { user: user.into(), password_file: password_file.to_owned() }),
    };
    let source = dir.path().join("source");
    make_source(&source, 1 << 16);
    let key = RepositoryKey::generate().unwrap();

    // A wrong password, and no password at all, are refused by name; nothing is written.
    let wrong_file = dir.path().join("wrong.pw");
    std::fs::write(&wrong_file, "n0t the passw0rd\n").unwrap();
    let no_credentials = Destination::RestServer { url: url.clone(), ca_file: Some(ca_file.clone()), credentials: None };
    for dest in [with("wardbox", &wrong_file), with("someone", &wrong_file), no_credentials] {
        let err = BackupRepository::open_or_init(&dest, &key).unwrap_err();
        assert!(matches!(err, BackupError::CredentialsRefused { .. }), "{err:?}");
        let said = format!("{err} {err:?}");
        assert!(said.contains("refused the user name and password (HTTP 401 Unauthorized)") && said.contains(&url), "{said}");
        assert!(!said.contains("n0t the passw0rd") && !said.contains("passw0rd"), "a password in the error: {said}");
    }
    assert!(!server.root.join("wardbox/config").exists(), "a refused client wrote to the server");

    // The right password, read from its file (first line, without its line ending).
    let password_file = dir.path().join("rest.pw");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let (mut repo, created) = BackupRepository::open_or_init(&with("wardbox", &password_file), &key).unwrap();
    assert!(created);
    let snap = repo.backup(&source, &["wardbox"]).unwrap();
    assert!(repo.check(true).unwrap().is_ok());
    assert_eq!(repo.snapshots().unwrap().last().map(|s| s.id.clone()), Some(snap.id));
    assert!(server.root.join("wardbox/config").is_file());

    // Refused before the server is asked: an unreadable or empty password file, plain http.
    let missing = dir.path().join("missing.pw");
    let err = BackupRepository::open(&with("wardbox", &missing), &key).unwrap_err();
    assert!(matches!(err, BackupError::CredentialsUnreadable { .. }) && err.to_string().contains(missing.to_str().unwrap()), "{err}");
    let empty = dir.path().join("empty.pw");
    std::fs::write(&empty, "\n").unwrap();
    let err = BackupRepository::open(&with("wardbox", &empty), &key).unwrap_err();
    assert!(err.to_string().contains("holds no password"), "{err}");
    let plain = Destination::RestServer {
        url: url.replace("https://", "http://"),
        ca_file: None,
        credentials: Some(RestCredentials { user: "wardbox".into(), password_file: password_file.clone() }),
    };
    let err = BackupRepository::open(&plain, &key).unwrap_err();
    assert!(matches!(err, BackupError::CredentialsOverHttp { .. }), "{err:?}");
    assert!(!err.to_string().contains(password), "{err}");
}
