//! Delivery from the outbox: RFC 5424 messages over TLS (RFC 5425) to the clinic's collector,
//! and an e-mail digest through the clinic's relay with STARTTLS required.
//!
//! Messages carry no PHI: the rule, whom it is about (a user name or client address), counts,
//! the time, the audit record numbers and a link to the alert's page on the box, where the
//! rest is one sign-in away.
//!
//! Delivery is at least once. A syslog batch counts as delivered when every frame is written
//! and the TLS session is closed cleanly; RFC 5425 has no acknowledgement above TCP, so a
//! collector that dies after reading may lose what it read (RELP would close that gap). An
//! e-mail counts when the relay accepted the message (`250` after `DATA`). A relay that needs
//! authentication gets SMTP AUTH inside the TLS session (`smtp_auth`); a relay that does not
//! offer it then, or refuses the credentials, is a failed delivery like any other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wardbox_alerts::Alert;
use zeroize::Zeroizing;

use super::outbox::{self, Destination};
use super::smtp_auth;
use super::{DeliveryConfig, EmailConfig, SyslogConfig};
use crate::store::Store;

/// Most alerts sent in one pass to one destination (one syslog session, one e-mail).
const BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the CA file {path} cannot be used: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    /// The certificate was not signed by the configured CA, names another host, or the
    /// handshake failed otherwise: nothing was sent.
    #[error("TLS with {server_name} failed (nothing was sent): {source}")]
    Tls { server_name: String, source: std::io::Error },
    /// The box's own certificate or key for mutual TLS cannot be used.
    #[error("the client certificate or key {path} cannot be used: {reason}")]
    ClientCertificate { path: String, reason: String },
    #[error("the relay does not offer STARTTLS; refusing to send in the clear")]
    NoStartTls,
    #[error("the relay answered {code} to {command}: {text}")]
    Refused { command: String, code: u16, text: String },
    /// A user is configured but the relay offers no mechanism the box speaks after STARTTLS:
    /// the box sends nothing rather than mail the relay might take without authentication.
    #[error("the relay offers {offered} after STARTTLS, but alert_delivery.email.user is set and the box authenticates with PLAIN or LOGIN; it does not send unauthenticated, so nothing was sent")]
    NoAuthMechanism { offered: String },
    /// The relay refused the user name and password (535 and the like). `text` is the relay's
    /// reply with anything the box sent in the exchange removed.
    #[error("the relay refused the user name and password ({mechanism}): {code} {text}; check alert_delivery.email.user and the password in its password_file; nothing was sent")]
    AuthRefused { mechanism: &'static str, code: u16, text: String },
    /// The password file could not be read at this session (it was readable at start).
    #[error("the password file for alert_delivery.email cannot be used: {0}; nothing was sent")]
    PasswordFile(String),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("connection failed while sending: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0} seconds")]
    Timeout(u64),
    #[error("the store failed: {0}")]
    Store(String),
}

/// What one pass over the outbox did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub delivered: usize,
    pub failed: usize,
    /// One line per destination that failed, for the log.
    pub errors: Vec<String>,
}

/// Deliver every outbox row that is due at `now` (unix seconds), per destination: the
/// successes become `delivered`, the failures `failed` with their next attempt after the
/// backoff. The store is locked only to read and to mark, never across the network.
pub async fn deliver_due(store: &Arc<Mutex<Store>>, cfg: &DeliveryConfig, now: i64) -> Result<PassReport, DeliveryError> {
    let mut report = PassReport::default();
    for destination in cfg.destinations() {
        let due = with_store(store, move |s| outbox::due(s.conn(), destination, now, BATCH)).await?;
        if due.is_empty() {
            continue;
        }
        let alerts: Vec<(i64, &Alert)> = due.iter().map(|(id, a, _)| (*id, a)).collect();
        let result = match destination {
            Destination::Syslog => {
                let s = cfg.syslog.as_ref().ok_or_else(|| DeliveryError::Protocol("syslog is not configured".into()))?;
                let host = hostname();
                let messages: Vec<String> = alerts.iter().map(|(id, a)| syslog_message(*id, a, &host, &cfg.admin_url)).collect();
                send_syslog(s, &messages).await
            }
            Destination::Email => {
                let e = cfg.email.as_ref().ok_or_else(|| DeliveryError::Protocol("e-mail is not configured".into()))?;
                let message = email_digest(e, &alerts, &cfg.admin_url, &jiff::Timestamp::from_second(now).unwrap_or_default());
                send_email(e, &message).await
            }
        };
        let at = jiff::Timestamp::from_second(now).unwrap_or_default().to_string();
        let (initial, max) = (cfg.retry_initial_secs(), cfg.retry_max_secs());
        let error = result.as_ref().err().map(ToString::to_string);
        let ids: Vec<(i64, i64)> = due.iter().map(|(id, _, attempts)| (*id, *attempts)).collect();
        let count = ids.len();
        let err2 = error.clone();
        with_store(store, move |s| {
            for (id, attempts) in &ids {
                match &err2 {
                    None => outbox::mark_delivered(s.conn(), *id, destination, &at)?,
                    Some(e) => {
                        let wait = outbox::backoff(attempts + 1, initial, max);
                        outbox::mark_failed(s.conn(), *id, destination, e, now + wait as i64)?;
                    }
                }
            }
            Ok(())
        })
        .await?;
        match error {
            None => report.delivered += count,
            Some(e) => {
                report.failed += count;
                report.errors.push(format!("{}: {e}", destination.as_str()));
            }
        }
    }
    Ok(report)
}

/// Send one test message to each configured destination now (`wardbox alerts test`): a
/// syslog message with msgid `test`, and an e-mail; the outbox is not involved.
pub async fn send_test(cfg: &DeliveryConfig, now: &jiff::Timestamp) -> Vec<(Destination, Result<(), DeliveryError>)> {
    let mut out = Vec::new();
    let text = format!("test message from the Wardbox at {now}: alerts reach this destination; review: {}", cfg.admin_url.trim_end_matches('/'));
    if let Some(s) = &cfg.syslog {
        let at = now.round(jiff::Unit::Microsecond).map(|t| t.to_string()).unwrap_or_else(|_| "-".into());
        let message = format!("<{}>1 {at} {} wardbox - test - {text}", 10 * 8 + 5, hostname());
        out.push((Destination::Syslog, send_syslog(s, &[message]).await));
    }
    if let Some(e) = &cfg.email {
        let date = jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default();
        let message = format!(
            "From: {}\r\nTo: {}\r\nSubject: Wardbox: test message\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
            e.from,
            e.to.join(", ")
        );
        out.push((Destination::Email, send_email(e, &message).await));
    }
    out
}

pub(super) async fn with_store<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&Store) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, DeliveryError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let guard = store.lock().map_err(|_| DeliveryError::Store("the store lock is poisoned".into()))?;
        f(&guard).map_err(|e| DeliveryError::Store(e.to_string()))
    })
    .await
    .map_err(|e| DeliveryError::Store(e.to_string()))?
}

/// The box's host name for the syslog header.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_graphic()).take(255).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wardbox".into())
}

/// The page of alert `id` on the box.
pub fn alert_link(admin_url: &str, id: i64) -> String {
    format!("{}/admin/alerts/{id}", admin_url.trim_end_matches('/'))
}

/// One RFC 5424 message: facility authpriv, severity warning; the alert's time (to the
/// microsecond, as RFC 5424 allows); app `wardbox`, msgid `alert`; no structured data; the
/// alert's one-line summary and its link.
pub fn syslog_message(id: i64, alert: &Alert, hostname: &str, admin_url: &str) -> String {
    const PRI: u8 = 10 * 8 + 4;
    let at = alert
        .at
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| t.round(jiff::Unit::Microsecond).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into());
    let text: String = format!("alert {id}: {}; review: {}", alert.summary(), alert_link(admin_url, id))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("<{PRI}>1 {at} {hostname} wardbox - alert - {text}")
}

/// One e-mail for every alert due in this pass: a digest, so a burst of alerts is one message
/// per retry interval rather than a flood.
pub fn email_digest(cfg: &EmailConfig, alerts: &[(i64, &Alert)], admin_url: &str, now: &jiff::Timestamp) -> String {
    let date = jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default();
    let subject = match alerts.len() {
        1 => "Wardbox: 1 alert to review".to_owned(),
        n => format!("Wardbox: {n} alerts to review"),
    };
    let mut body = String::new();
    body.push_str("The Wardbox found access that deserves a look. Details and the audit records are on the box;\n");
    body.push_str("this message carries no patient data.\n\n");
    for (id, a) in alerts {
        body.push_str(&format!("Alert {id} at {}: {} {}\n", a.at, a.rule.as_str(), a.subject));
        body.push_str(&format!("  observed: {}\n  threshold: {}\n", a.observed, a.threshold));
        let seqs: Vec<String> = a.seqs.iter().map(u64::to_string).collect();
        body.push_str(&format!("  audit records: {}\n  review: {}\n\n", seqs.join(", "), alert_link(admin_url, *id)));
    }
    let mut msg = String::new();
    msg.push_str(&format!("From: {}\r\nTo: {}\r\nSubject: {subject}\r\nDate: {date}\r\n", cfg.from, cfg.to.join(", ")));
    msg.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    for line in body.lines() {
        let clean: String = line.chars().filter(|c| !c.is_control()).take(900).collect();
        // Dot-stuffing (RFC 5321 4.5.2): a line starting with '.' gets another.
        if clean.starts_with('.') {
            msg.push('.');
        }
        msg.push_str(&clean);
        msg.push_str("\r\n");
    }
    msg
}

fn connector(ca_file: &std::path::Path, client: Option<(&std::path::Path, &std::path::Path)>) -> Result<TlsConnector, DeliveryError> {
    let ca_err = |reason: String| DeliveryError::CaFile { path: ca_file.display().to_string(), reason };
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ca_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_err("it holds no certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| ca_err(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_err(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let bad = |path: &std::path::Path, reason: String| DeliveryError::ClientCertificate { path: path.display().to_string(), reason };
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(cert_file, e.to_string()))?;
            if chain.is_empty() {
                return Err(bad(cert_file, "it holds no certificate".into()));
            }
            // The key type zeroes its bytes when dropped; its errors never quote it.
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|_| bad(key_file, "it holds no readable private key (PEM)".into()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad(cert_file, e.to_string()))?
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn server_name(name: &str) -> Result<ServerName<'static>, DeliveryError> {
    ServerName::try_from(name.to_owned()).map_err(|e| DeliveryError::Protocol(format!("server name {name}: {e}")))
}

async fn within<T>(secs: u64, f: impl std::future::Future<Output = Result<T, DeliveryError>>) -> Result<T, DeliveryError> {
    tokio::time::timeout(Duration::from_secs(secs), f).await.map_err(|_| DeliveryError::Timeout(secs))?
}

/// Send the messages in one TLS session with RFC 5425 octet-counting framing.
pub async fn send_syslog(cfg: &SyslogConfig, messages: &[String]) -> Result<(), DeliveryError> {
    let client = cfg.client_cert_file.as_deref().zip(cfg.client_key_file.as_deref());
    let connector = connector(&cfg.ca_file, client)?;
    let name = server_name(&cfg.server_name)?;
    within(cfg.timeout_secs, async {
        let tcp = TcpStream::connect(&cfg.address)
            .await
            .map_err(|source| DeliveryError::Connect { address: cfg.address.clone(), source })?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| DeliveryError::Tls { server_name: cfg.server_name.clone(), source })?;
        for m in messages {
            tls.write_all(format!("{} {m}", m.len()).as_bytes()).await?;
        }
        tls.flush().await?;
        // close_notify: the collector knows the session ended cleanly, not cut.
        tls.shutdown().await?;
        // Wait for the collector to close its side too (or a short while), so the process
        // does not race ahead of a collector still reading. With TLS 1.3 a collector that
        // refuses the box's certificate (or its absence) says so only after the client's side
        // of the handshake, with an alert that arrives here: then nothing was accepted.
        let mut sink = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match tls.read(&mut sink).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(e),
                    Err(_) => return Ok(()),
                }
            }
        })
        .await;
        if let Ok(Err(source)) = closed {
            return Err(DeliveryError::Tls { server_name: cfg.server_name.clone(), source });
        }
        Ok(())
    })
    .await
}

/// Send one message through the relay: EHLO, STARTTLS (required), EHLO again, AUTH when a
/// user is configured (inside TLS only), then the envelope and the message.
pub async fn send_email(cfg: &EmailConfig, message: &str) -> Result<(), DeliveryError> {
    let connector = connector(&cfg.ca_file, None)?;
    let name = server_name(&cfg.server_name)?;
    let helo = hostname();
    within(cfg.timeout_secs, async {
        let tcp = TcpStream::connect(&cfg.relay)
            .await
            .map_err(|source| DeliveryError::Connect { address: cfg.relay.clone(), source })?;
        let mut plain = BufReader::new(tcp);
        expect(&mut plain, "greeting", &[220]).await?;
        let features = command(&mut plain, &format!("EHLO {helo}"), &[250]).await?;
        if !features.iter().any(|f| f.eq_ignore_ascii_case("STARTTLS")) {
            return Err(DeliveryError::NoStartTls);
        }
        command(&mut plain, "STARTTLS", &[220]).await?;
        // Anything the relay sent before the handshake would be read as if it came over TLS
        // (a known STARTTLS injection): refuse it.
        if !plain.buffer().is_empty() {
            return Err(DeliveryError::Protocol("data before the TLS handshake".into()));
        }
        let tls = connector
            .connect(name, plain.into_inner())
            .await
            .map_err(|source| DeliveryError::Tls { server_name: cfg.server_name.clone(), source })?;
        let mut s = BufReader::new(tls);
        let features = command(&mut s, &format!("EHLO {helo}"), &[250]).await?;
        if let Some((user, password_file)) = cfg.credentials() {
            authenticate(&mut s, &features, user, password_file).await?;
        }
        command(&mut s, &format!("MAIL FROM:<{}>", cfg.from), &[250]).await?;
        for to in &cfg.to {
            command(&mut s, &format!("RCPT TO:<{to}>"), &[250, 251]).await?;
        }
        command(&mut s, "DATA", &[354]).await?;
        s.write_all(message.as_bytes()).await?;
        command(&mut s, ".", &[250]).await?;
        let _ = command(&mut s, "QUIT", &[221]).await;
        let _ = s.shutdown().await;
        Ok(())
    })
    .await
}

/// SMTP AUTH (RFC 4954) with the mechanism the relay advertised after STARTTLS: PLAIN, else
/// LOGIN. Takes the TLS stream only, so the credentials cannot be sent before the handshake.
/// Every line that carries them is written without being named in errors, and the relay's
/// reply is scrubbed of them before it is quoted.
async fn authenticate(
    s: &mut BufReader<tokio_rustls::client::TlsStream<TcpStream>>,
    features: &[String],
    user: &str,
    password_file: &std::path::Path,
) -> Result<(), DeliveryError> {
    let mechanism = smtp_auth::choose_mechanism(features).map_err(|why| DeliveryError::NoAuthMechanism {
        offered: match why {
            smtp_auth::NoMechanism::NotOffered => "no AUTH".to_owned(),
            smtp_auth::NoMechanism::Unsupported(m) => format!("AUTH {} only", m.join(" ")),
        },
    })?;
    let password = smtp_auth::read_password_file(password_file).map_err(|e| DeliveryError::PasswordFile(e.reason))?;
    let refused = |e: DeliveryError| match e {
        DeliveryError::Refused { code, text, .. } => {
            DeliveryError::AuthRefused { mechanism: mechanism.as_str(), code, text: smtp_auth::scrub(&text, user, &password) }
        }
        other => other,
    };
    match mechanism {
        smtp_auth::Mechanism::Plain => {
            let line = Zeroizing::new(format!("AUTH PLAIN {}", smtp_auth::plain_response(user, &password).as_str()));
            secret_line(s, &line, "AUTH PLAIN", &[235]).await.map_err(refused)?;
        }
        smtp_auth::Mechanism::Login => {
            command(s, "AUTH LOGIN", &[334]).await.map_err(refused)?;
            secret_line(s, &smtp_auth::login_response(user), "AUTH LOGIN user name", &[334]).await.map_err(refused)?;
            let encoded = smtp_auth::login_response(password.expose_secret());
            secret_line(s, &encoded, "AUTH LOGIN password", &[235]).await.map_err(refused)?;
        }
    }
    Ok(())
}

/// Write a line that carries credentials and read the reply; errors name it as `what`.
async fn secret_line<S: AsyncBufRead + AsyncWrite + Unpin>(s: &mut S, line: &Zeroizing<String>, what: &str, ok: &[u16]) -> Result<Vec<String>, DeliveryError> {
    let framed = Zeroizing::new(format!("{}\r\n", line.as_str()));
    s.write_all(framed.as_bytes()).await?;
    s.flush().await?;
    expect(s, what, ok).await
}

async fn command<S: AsyncBufRead + AsyncWrite + Unpin>(s: &mut S, line: &str, ok: &[u16]) -> Result<Vec<String>, DeliveryError> {
    s.write_all(format!("{line}\r\n").as_bytes()).await?;
    s.flush().await?;
    // The envelope names addresses; say only the verb in errors.
    let verb = line.split([' ', ':']).next().unwrap_or(line);
    expect(s, verb, ok).await
}

/// Read one (possibly multi-line) reply; its code must be one of `ok`.
async fn expect<S: AsyncBufRead + Unpin>(s: &mut S, after: &str, ok: &[u16]) -> Result<Vec<String>, DeliveryError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = (&mut *s).take(1024).read_line(&mut line).await?;
        if n == 0 {
            return Err(DeliveryError::Protocol(format!("the connection closed after {after}")));
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| DeliveryError::Protocol(format!("not an SMTP reply after {after}")))?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").trim_end().to_owned());
        if !more {
            if !ok.contains(&code) {
                let text: String = lines.join(" ").chars().filter(|c| !c.is_control()).take(200).collect();
                return Err(DeliveryError::Refused { command: after.to_owned(), code, text });
            }
            return Ok(lines);
        }
        if lines.len() > 100 {
            return Err(DeliveryError::Protocol(format!("endless reply after {after}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardbox_alerts::Rule;

    fn alert() -> Alert {
        Alert {
            rule: Rule::BulkAccess,
            subject: "user:dr01".into(),
            at: "2026-11-29T11:07:38.123456789Z".into(),
            threshold: "more than 30 patients in 60 minutes".into(),
            observed: "42 patients in 38 minutes".into(),
            seqs: vec![10, 12, 15],
        }
    }

    #[test]
    fn syslog_message_is_rfc5424_with_a_link_and_no_more() {
        let m = syslog_message(7, &alert(), "wardbox1", "https://wardbox.clinic.local:8443/");
        assert_eq!(
            m,
            "<84>1 2026-11-29T11:07:38.123457Z wardbox1 wardbox - alert - alert 7: bulk_access user:dr01: 42 patients in 38 minutes (threshold: more than 30 patients in 60 minutes); audit records 10, 12, 15; review: https://wardbox.clinic.local:8443/admin/alerts/7"
        );
    }

    #[test]
    fn the_digest_lists_each_alert_with_its_link() {
        let cfg = EmailConfig {
            relay: "10.0.0.25:25".into(),
            server_name: "mail.clinic.local".into(),
            ca_file: "/ca.pem".into(),
            from: "wardbox@clinic.local".into(),
            to: vec!["privacy@clinic.local".into(), "it@clinic.local".into()],
            user: None,
            password_file: None,
            timeout_secs: 10,
        };
        let a = alert();
        let now: jiff::Timestamp = "2026-11-29T12:00:00Z".parse().expect("ts");
        let m = email_digest(&cfg, &[(7, &a), (8, &a)], "https://box", &now);
        assert!(m.starts_with("From: wardbox@clinic.local\r\nTo: privacy@clinic.local, it@clinic.local\r\nSubject: Wardbox: 2 alerts to review\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n"), "{m}");
        assert!(m.contains("review: https://box/admin/alerts/7\r\n") && m.contains("review: https://box/admin/alerts/8\r\n"), "{m}");
        assert!(m.lines().all(|l| l.len() < 998));
    }
}
