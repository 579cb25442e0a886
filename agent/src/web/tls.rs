//! HTTPS: TLS 1.3 only (rustls on ring), the local CA made at provisioning, the serving loop,
//! and the plain-HTTP listener that only redirects.
//!
//! TLS 1.2 is refused at the protocol-version level of the server configuration, not by cipher
//! choice: a client that offers only 1.2 gets a `protocol_version` alert and no connection.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A TLS problem, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate file {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read the private key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the certificate and key cannot be used together: {0}")]
    Config(String),
    #[error("cannot create the local CA in {dir}: {message}")]
    Provision { dir: PathBuf, message: String },
}

/// How long open connections get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/2 connection is pinged after this long without traffic, and closed when the ping is
/// not answered within `H2_PING_TIMEOUT` (a workstation that went away frees its place).
const H2_PING_INTERVAL: Duration = Duration::from_secs(60);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What a client may take of the box before its connection is closed (slow or abusive clients:
/// stalled handshakes, trickled headers, many connections from one workstation).
#[derive(Debug, Clone)]
pub struct ConnectionPolicy {
    /// From `accept` to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// From the end of the handshake to a complete first request head, and for HTTP/1.1 from
    /// the end of each response to the next complete request head (hyper's header timeout).
    pub header_timeout: Duration,
    /// Open connections per client address.
    pub limiter: super::connlimit::ConnectionLimiter,
}

impl ConnectionPolicy {
    pub fn from_config(web: &super::WebConfig) -> Self {
        Self {
            handshake_timeout: Duration::from_secs(web.handshake_timeout_secs),
            header_timeout: Duration::from_secs(web.header_timeout_secs),
            limiter: super::connlimit::ConnectionLimiter::new(web.max_connections_per_address),
        }
    }
}

/// The rustls configuration: TLS 1.3 only, ALPN h2 and http/1.1, no client certificates.
pub fn server_config(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Load a PEM certificate chain and key (the clinic's own, or the local CA's leaf).
pub fn load_pem(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { path: cert.to_owned(), message: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Cert { path: cert.to_owned(), message: "no CERTIFICATE block in the file".into() });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: key.to_owned(), message: e.to_string() })?;
    Ok((chain, key_der))
}

/// The files of the box's own CA, under `<state_dir>/tls`.
#[derive(Debug, Clone)]
pub struct LocalCaFiles {
    pub dir: PathBuf,
}

impl LocalCaFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The root certificate IT installs on the workstations (public).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    /// The server's chain: leaf, then the root.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// What the leaf was issued for and until when, to know when to reissue it.
    fn server_meta(&self) -> PathBuf {
        self.dir.join("server.json")
    }
}

/// What provisioning did, for the boot record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// A new CA and server certificate were made.
    CreatedCa { ca_sha256: String },
    /// The existing CA issued a new server certificate (names changed or expiry near).
    Reissued { ca_sha256: String },
    /// Everything was in place.
    Existing { ca_sha256: String },
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct LeafMeta {
    hostnames: Vec<String>,
    not_after: i64,
}

/// Leaf lifetime: under the 398 days browsers accept, reissued 30 days before the end.
const LEAF_DAYS: i64 = 397;
const RENEW_BEFORE_DAYS: i64 = 30;
const CA_YEARS: i16 = 10;

/// Make sure the local CA and a current server certificate for `hostnames` exist in `files`.
///
/// The CA is name-constrained to exactly these names and addresses, so its key, if stolen
/// from the box, cannot mint a certificate workstations would trust for any other site.
pub fn provision_local_ca(files: &LocalCaFiles, hostnames: &[String], now: jiff::Timestamp) -> Result<Provisioned, TlsError> {
    let err = |message: String| TlsError::Provision { dir: files.dir.clone(), message };
    std::fs::create_dir_all(&files.dir).map_err(|e| err(e.to_string()))?;
    let _ = std::fs::set_permissions(&files.dir, std::fs::Permissions::from_mode(0o700));
    let have_ca = files.ca_cert().exists() && files.ca_key().exists();
    let (ca_pem, ca_key, created) = if have_ca {
        let pem = std::fs::read_to_string(files.ca_cert()).map_err(|e| err(format!("ca.pem: {e}")))?;
        let key_pem = std::fs::read_to_string(files.ca_key()).map_err(|e| err(format!("ca-key.pem: {e}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| err(format!("ca-key.pem: {e}")))?;
        (pem, key, false)
    } else {
        if files.ca_cert().exists() || files.ca_key().exists() {
            return Err(err("only one of ca.pem and ca-key.pem exists; restore the other or remove both to make a new CA (workstations must then install the new root)".into()));
        }
        let (pem, key) = make_ca(hostnames, now).map_err(|e| err(e.to_string()))?;
        write_file(&files.ca_key(), key.serialize_pem().as_bytes(), 0o600).map_err(|e| err(e.to_string()))?;
        write_file(&files.ca_cert(), pem.as_bytes(), 0o644).map_err(|e| err(e.to_string()))?;
        (pem, key, true)
    };
    let ca_sha256 = pem_sha256(&ca_pem).map_err(err)?;

    let meta: Option<LeafMeta> =
        std::fs::read(files.server_meta()).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let current = !created
        && files.server_cert().exists()
        && files.server_key().exists()
        && meta.as_ref().is_some_and(|m| {
            m.hostnames == hostnames && m.not_after - now.as_second() > RENEW_BEFORE_DAYS * 86400
        });
    if current {
        return Ok(Provisioned::Existing { ca_sha256 });
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(|e| err(format!("ca.pem: {e}")))?;
    let mut leaf = CertificateParams::new(hostnames.to_vec()).map_err(|e| err(format!("web.hostnames: {e}")))?;
    leaf.distinguished_name.push(DnType::CommonName, hostnames.first().cloned().unwrap_or_default());
    leaf.distinguished_name.push(DnType::OrganizationName, "Wardbox");
    leaf.is_ca = IsCa::NoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let not_before = now - jiff::SignedDuration::from_hours(24);
    let not_after = now + jiff::SignedDuration::from_hours(24 * LEAF_DAYS);
    let (y, m, d) = ymd(not_before);
    leaf.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(not_after);
    leaf.not_after = rcgen::date_time_ymd(y, m, d);
    let leaf_key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(|e| err(e.to_string()))?;
    write_file(&files.server_key(), leaf_key.serialize_pem().as_bytes(), 0o600).map_err(|e| err(e.to_string()))?;
    let chain = format!("{}{}", leaf_cert.pem(), ca_pem);
    write_file(&files.server_cert(), chain.as_bytes(), 0o644).map_err(|e| err(e.to_string()))?;
    let meta = LeafMeta { hostnames: hostnames.to_vec(), not_after: not_after.as_second() };
    write_file(&files.server_meta(), &serde_json::to_vec(&meta).unwrap_or_default(), 0o644).map_err(|e| err(e.to_string()))?;
    Ok(if created { Provisioned::CreatedCa { ca_sha256 } } else { Provisioned::Reissued { ca_sha256 } })
}

fn make_ca(hostnames: &[String], now: jiff::Timestamp) -> Result<(String, KeyPair), rcgen::Error> {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "Wardbox local CA");
    ca.distinguished_name.push(DnType::OrganizationName, "Wardbox");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let mut permitted = Vec::new();
    let mut has_ip = false;
    for name in hostnames {
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                has_ip = true;
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, prefix)));
            }
            Err(_) => permitted.push(GeneralSubtree::DnsName(name.clone())),
        }
    }
    // Without an IP subtree in the permitted list, verifiers leave IP names unconstrained:
    // exclude every address explicitly in that case.
    let excluded = if has_ip {
        Vec::new()
    } else {
        vec![
            GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([0; 4], 0)),
            GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix([0; 16], 0)),
        ]
    };
    ca.name_constraints = Some(NameConstraints { permitted_subtrees: permitted, excluded_subtrees: excluded });
    // Day precision: start yesterday so a workstation clock a little behind still accepts it.
    let (y, m, d) = ymd(now - jiff::SignedDuration::from_hours(24));
    ca.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now);
    ca.not_after = rcgen::date_time_ymd(y + i32::from(CA_YEARS), m, d.min(28));
    let key = KeyPair::generate()?;
    let cert = ca.self_signed(&key)?;
    Ok((cert.pem(), key))
}

/// rcgen takes `time::OffsetDateTime`; build it with rcgen's own helper from the UTC calendar
/// date, so the agent needs no second time crate (day precision is plenty for validity).
fn ymd(t: jiff::Timestamp) -> (i32, u8, u8) {
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    (d.year().into(), d.month() as u8, d.day() as u8)
}

/// sha256 of the first certificate's DER in a PEM text: what IT compares when installing the
/// root on a workstation.
pub fn pem_sha256(pem: &str) -> Result<String, String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("not a PEM certificate: {e}"))?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Serve `app` over TLS until `shutdown` resolves, then drain open connections.
///
/// Each request carries the client's address as `ConnectInfo<SocketAddr>` for the audit log.
/// `policy` bounds what one client can hold: a connection over its address's limit is closed
/// before any TLS work, a handshake or a first request head that takes too long ends the
/// connection.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    policy: ConnectionPolicy,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(policy.header_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_PING_INTERVAL).keep_alive_timeout(H2_PING_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let permit = match policy.limiter.admit(peer.ip()) {
                    Ok(permit) => permit,
                    Err(over) => {
                        if over.first {
                            tracing::warn!(
                                "client {} holds {} connections, the most one address may (web.max_connections_per_address); refusing more until one closes",
                                over.key, over.limit
                            );
                        }
                        // Closed before any TLS work: the refusal costs the box nothing.
                        drop(tcp);
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let (handshake_timeout, header_timeout) = (policy.handshake_timeout, policy.header_timeout);
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // Set when the first request head is complete: hyper's header timeout
                    // covers HTTP/1.1, this covers an HTTP/2 client that never sends a request.
                    let (first_request, mut first_request_seen) = tokio::sync::watch::channel(false);
                    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        first_request.send_replace(true);
                        req.extensions_mut().insert(ConnectInfo(peer));
                        app.clone().oneshot(req.map(Body::new))
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    let mut conn = std::pin::pin!(watcher.watch(conn));
                    let ended = tokio::select! {
                        ended = &mut conn => ended,
                        seen = tokio::time::timeout(header_timeout, async { first_request_seen.wait_for(|seen| *seen).await.map(drop) }) => {
                            if seen.is_err() {
                                tracing::debug!(%peer, "no complete request within {header_timeout:?}; closing");
                                return;
                            }
                            conn.await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// Serve `app` over plain HTTP (dev profile, loopback only: the config refuses anything else).
pub async fn serve_plain(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The answer of the plain-HTTP listener: a permanent redirect to the same path over HTTPS,
/// and nothing else (no page, no cookie, no login form over plain HTTP).
pub fn redirect_response(host_header: Option<&str>, path_and_query: &str, https_port: u16) -> Response<Body> {
    // The host part only, without any port the browser used for port 80.
    let host = host_header
        .and_then(|h| if h.starts_with('[') { h.split_inclusive(']').next() } else { h.split(':').next() })
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':')))
        .unwrap_or("localhost");
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = if path_and_query.starts_with('/') { path_and_query } else { "/" };
    let location = format!("https://{host}{port}{path}");
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The port-80 listener: every request is answered with a redirect to HTTPS.
pub async fn serve_redirect(listener: TcpListener, https_port: u16, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let app = Router::new().fallback(move |req: Request<Body>| async move {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        redirect_response(host, pq, https_port)
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_host_and_path_and_drops_the_http_port() {
        let r = redirect_response(Some("wardbox.clinic.local:80"), "/login?x=1", 443);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "https://wardbox.clinic.local/login?x=1");
        let r = redirect_response(Some("10.0.0.5"), "/", 8443);
        assert_eq!(r.headers()[header::LOCATION], "https://10.0.0.5:8443/");
        let r = redirect_response(Some("evil.example/\r\nSet-Cookie: x"), "/", 443);
        assert_eq!(r.headers()[header::LOCATION], "https://localhost/");
    }
}

/// The UI's listeners, bound and with their TLS configuration loaded, ready to serve.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    /// `None` only in the dev profile's plain-HTTP loopback mode.
    tls: Option<Arc<ServerConfig>>,
    redirect: Option<TcpListener>,
    /// Timeouts and the per-address connection limit of the TLS listener.
    policy: ConnectionPolicy,
}

/// Prepare the certificate (provisioning the local CA if needed) and bind the listeners.
/// Returns the boot record's report: plain HTTP is reported as running without TLS.
pub async fn bind(web: &super::WebConfig, state_dir: &Path) -> Result<(Bound, crate::boot::StageReport), String> {
    use super::TlsMode;
    use crate::boot::{Protection, StageReport};
    let (tls, what) = match web.tls {
        TlsMode::PlainHttpDev => (None, "plain HTTP (dev profile, loopback only)".to_string()),
        TlsMode::Files => {
            let (cert, key) = web.cert_file.as_deref().zip(web.key_file.as_deref()).ok_or("web.cert_file and web.key_file are required")?;
            let (chain, key) = load_pem(cert, key).map_err(|e| e.to_string())?;
            (Some(server_config(chain, key).map_err(|e| e.to_string())?), format!("TLS 1.3 with {}", cert.display()))
        }
        TlsMode::LocalCa => {
            let files = LocalCaFiles::new(state_dir.join("tls"));
            let provisioned = provision_local_ca(&files, &web.hostnames, jiff::Timestamp::now()).map_err(|e| e.to_string())?;
            let (chain, key) = load_pem(&files.server_cert(), &files.server_key()).map_err(|e| e.to_string())?;
            let note = match provisioned {
                Provisioned::CreatedCa { ca_sha256 } => format!("new local CA {} (sha256 {ca_sha256}): install it on the workstations", files.ca_cert().display()),
                Provisioned::Reissued { ca_sha256 } => format!("server certificate reissued by local CA sha256 {ca_sha256}"),
                Provisioned::Existing { ca_sha256 } => format!("local CA sha256 {ca_sha256}"),
            };
            (Some(server_config(chain, key).map_err(|e| e.to_string())?), format!("TLS 1.3, {note}"))
        }
    };
    let listener = TcpListener::bind(web.listen).await.map_err(|e| format!("cannot listen on {}: {e}", web.listen))?;
    let redirect = match web.redirect_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (web.redirect_listen): {e}"))?),
        None => None,
    };
    let detail = format!(
        "listening on {} ({what}){}",
        web.listen,
        web.redirect_listen.map(|a| format!("; {a} redirects to HTTPS")).unwrap_or_default()
    );
    let report = if tls.is_some() { StageReport::ok(detail) } else { StageReport::without(detail, vec![Protection::Tls]) };
    Ok((Bound { listener, tls, redirect, policy: ConnectionPolicy::from_config(web) }, report))
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The plain-HTTP redirect listener's address, when there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until the futures `shutdown` makes resolve (one per listener), then drain.
    pub async fn serve<F>(self, app: Router, shutdown: impl Fn() -> F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let https_port = self.listener.local_addr()?.port();
        if let Some(redirect) = self.redirect {
            let stop = shutdown();
            tokio::spawn(async move {
                if let Err(e) = serve_redirect(redirect, https_port, stop).await {
                    tracing::error!("the HTTP redirect listener failed: {e}");
                }
            });
        }
        match self.tls {
            Some(tls) => serve_tls(self.listener, tls, app, self.policy, shutdown()).await,
            None => serve_plain(self.listener, app, shutdown()).await,
        }
    }
}
