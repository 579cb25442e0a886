//! Real TLS handshakes against the UI's listener: TLS 1.3 is accepted with the local CA's
//! certificate, TLS 1.2 is refused, plain HTTP on the redirect port only redirects, and the
//! local CA cannot vouch for any other name.

mod web_support;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wardbox::web::tls::{self, LocalCaFiles, Provisioned};
use wardbox::web::{TlsMode, WebConfig, app};
use web_support::*;

fn client(versions: &[&'static rustls::SupportedProtocolVersion], ca_pem: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_file(ca_pem).expect("ca pem");
    let ca: CertificateDer<'static> = ca;
    roots.add(ca).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

struct Server {
    addr: SocketAddr,
    redirect: Option<SocketAddr>,
    files: LocalCaFiles,
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
    _h: Harness,
}

impl Server {
    /// Stop serving and wait until the server task has let go of the agent's state, so the
    /// harness can then join its audit writer (a writer still running when the test binary
    /// exits closes its SQLCipher connection during the process's exit and can crash it).
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.serving).await;
    }
}

async fn start() -> Server {
    let h = Harness::new();
    let web = WebConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls: TlsMode::LocalCa,
        hostnames: vec!["localhost".into(), "127.0.0.1".into()],
        redirect_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..WebConfig::default()
    };
    let (bound, report) = tls::bind(&web, h.dir.path()).await.expect("bind");
    assert!(report.missing.is_empty(), "TLS mode reported a missing protection");
    assert!(report.detail.contains("TLS 1.3") && report.detail.contains("new local CA"), "{}", report.detail);
    let addr = bound.local_addr().expect("addr");
    let redirect = bound.redirect_addr();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let router = app(h.state.clone());
    let serving = tokio::spawn(async move {
        let _ = bound
            .serve(router, move || {
                let mut rx = rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            })
            .await;
    });
    Server { addr, redirect, files: LocalCaFiles::new(h.dir.path().join("tls")), stop, serving, _h: h }
}

#[tokio::test]
async fn tls13_is_accepted_and_serves_the_ui_with_hsts() {
    let s = start().await;
    let tcp = TcpStream::connect(s.addr).await.expect("connect");
    let mut tls = client(&[&rustls::version::TLS13], &s.files.ca_cert())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS 1.3 handshake with the local CA's certificate");
    assert_eq!(tls.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.ok();
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("strict-transport-security: max-age=31536000"), "{text}");
    assert!(text.contains("id=\"login-form\""));
    drop(tls);
    s.shutdown().await;
}

#[tokio::test]
async fn tls12_is_refused() {
    let s = start().await;
    let tcp = TcpStream::connect(s.addr).await.expect("connect");
    let err = client(&[&rustls::version::TLS12], &s.files.ca_cert())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect_err("a TLS 1.2-only client must not get a connection");
    let msg = format!("{err:?}");
    assert!(msg.contains("ProtocolVersion"), "refused, but not for the protocol version: {msg}");
    s.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_redirect_port_only_redirects() {
    let s = start().await;
    let mut tcp = TcpStream::connect(s.redirect.expect("redirect listener")).await.expect("connect");
    tcp.write_all(b"GET /admin?x=1 HTTP/1.1\r\nHost: wardbox.clinic.local\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.ok();
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 308"), "{text}");
    assert!(text.contains(&format!("location: https://wardbox.clinic.local:{}/admin?x=1", s.addr.port())), "{text}");
    assert!(!text.contains("set-cookie") && !text.contains("<form"), "{text}");
    // Plain HTTP on the TLS port gets no page either.
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    tcp.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("login-form"));
    drop(tcp);
    s.shutdown().await;
}

#[tokio::test]
async fn provisioning_is_idempotent_and_the_ca_is_constrained_to_the_box_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = LocalCaFiles::new(dir.path().join("tls"));
    let names = vec!["wardbox.clinic.local".to_string(), "10.0.0.5".to_string()];
    let now = jiff::Timestamp::now();
    let first = tls::provision_local_ca(&files, &names, now).expect("provision");
    let Provisioned::CreatedCa { ca_sha256 } = first else { panic!("{first:?}") };
    assert_eq!(tls::provision_local_ca(&files, &names, now).expect("again"), Provisioned::Existing { ca_sha256: ca_sha256.clone() });
    use std::os::unix::fs::PermissionsExt;
    for key in [files.ca_key(), files.server_key()] {
        assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600, "{}", key.display());
    }
    // New names: the same CA issues a new server certificate (workstations keep their root).
    let more = vec!["wardbox.clinic.local".to_string(), "wardbox".to_string()];
    assert_eq!(tls::provision_local_ca(&files, &more, now).expect("reissue"), Provisioned::Reissued { ca_sha256 });

    // A certificate for another site, signed with the CA's own key, is refused by a client
    // that trusts the CA: the name constraints hold even if the CA key leaks.
    let ca_pem = std::fs::read_to_string(files.ca_cert()).expect("ca");
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(files.ca_key()).expect("key")).expect("key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).expect("issuer");
    let rogue_key = rcgen::KeyPair::generate().expect("key");
    let rogue = rcgen::CertificateParams::new(vec!["bank.example".to_string()]).expect("params").signed_by(&rogue_key, &issuer).expect("sign");
    let chain = vec![rogue.der().clone(), CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca der")];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(rogue_key.serialize_pem().as_bytes()).expect("key der");
    let server = tls::server_config(chain, key).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await;
        }
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let err = client(&[&rustls::version::TLS13], &files.ca_cert())
        .connect(ServerName::try_from("bank.example").expect("name"), tcp)
        .await
        .expect_err("the CA vouched for a name outside its constraints");
    assert!(format!("{err:?}").contains("NameConstraintViolation"), "{err:?}");
}
