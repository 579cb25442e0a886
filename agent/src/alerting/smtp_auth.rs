//! SMTP AUTH (RFC 4954) for the clinic's relay: the password file, the choice of mechanism
//! from the relay's EHLO answer, and the encodings of PLAIN (RFC 4616) and LOGIN.
//!
//! Pure apart from `read_password_file`. The dialogue itself is in `deliver::send_email`, which
//! runs it only on the TLS stream after STARTTLS: the password never crosses the LAN in clear.
//!
//! The password is read from its file at each session and held only in types that redact
//! themselves in `Debug` and zero their bytes when dropped; no error, log line or record
//! quotes it (errors name the file).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// The mechanisms the box speaks, in order of preference: PLAIN sends the credentials in one
/// round trip; LOGIN is what older Exchange relays offer. Both send the password itself, which
/// is why they run only inside TLS. Challenge-response mechanisms (CRAM-MD5) would need the
/// relay to keep the password in clear, and are not offered by the relays clinics run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// Why no mechanism could be chosen from the relay's EHLO answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoMechanism {
    /// The relay advertised no `AUTH` (or an empty one).
    NotOffered,
    /// The relay advertised only mechanisms the box does not speak (listed).
    Unsupported(Vec<String>),
}

/// The mechanisms an EHLO answer advertises: the words after `AUTH` (or the old `AUTH=` form
/// some Exchange versions still send), upper-cased, in the order given, each once. `ehlo` is
/// the answer's lines without their `250-`/`250 ` prefix (the first is the relay's name).
pub fn offered_mechanisms(ehlo: &[String]) -> Vec<String> {
    let mut offered: Vec<String> = Vec::new();
    for line in ehlo.iter().skip(1) {
        let upper = line.trim().to_ascii_uppercase();
        let rest = match upper.strip_prefix("AUTH") {
            Some(rest) if rest.is_empty() || rest.starts_with([' ', '=']) => rest.trim_start_matches('='),
            _ => continue,
        };
        for word in rest.split_ascii_whitespace() {
            if !offered.iter().any(|m| m == word) {
                offered.push(word.to_owned());
            }
        }
    }
    offered
}

/// PLAIN when offered, else LOGIN, else why neither.
pub fn choose_mechanism(ehlo: &[String]) -> Result<Mechanism, NoMechanism> {
    let offered = offered_mechanisms(ehlo);
    if offered.iter().any(|m| m == "PLAIN") {
        Ok(Mechanism::Plain)
    } else if offered.iter().any(|m| m == "LOGIN") {
        Ok(Mechanism::Login)
    } else if offered.is_empty() {
        Err(NoMechanism::NotOffered)
    } else {
        Err(NoMechanism::Unsupported(offered))
    }
}

/// The PLAIN initial response (RFC 4616): base64 of `authzid NUL authcid NUL passwd`, with an
/// empty authorization identity (act as the user who signs in).
pub fn plain_response(user: &str, password: &SecretString) -> Zeroizing<String> {
    let password = password.expose_secret();
    let mut raw = Zeroizing::new(Vec::with_capacity(user.len() + password.len() + 2));
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    Zeroizing::new(BASE64.encode(&*raw))
}

/// One LOGIN response: the text (user name, then password) in base64.
pub fn login_response(text: &str) -> Zeroizing<String> {
    Zeroizing::new(BASE64.encode(text.as_bytes()))
}

/// `text` (a relay's reply, quoted in an error) with the password and every encoding of it the
/// box sent replaced by `[redacted]`: a relay that echoes what it received must not put the
/// password into the outbox's error, the log or the console.
pub fn scrub(text: &str, user: &str, password: &SecretString) -> String {
    let secret = password.expose_secret();
    let mut out = text.to_owned();
    if secret.is_empty() {
        return out;
    }
    for needle in [Zeroizing::new(secret.to_owned()), login_response(secret), plain_response(user, password)] {
        if !needle.is_empty() {
            out = out.replace(needle.as_str(), "[redacted]");
        }
    }
    out
}

/// Bytes read from the password file at most (its first line is the password).
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// Why the password file cannot be used. Never carries the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PasswordFileError {
    pub reason: String,
}

/// Read the password: the first line of `path`, without its line ending. Refuses a file that
/// cannot be read, is not a regular file, holds no password on its first line, or that the
/// group or others may read (the password would be one `cat` away for any account on the box).
pub fn read_password_file(path: &Path) -> Result<SecretString, PasswordFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |reason: String| PasswordFileError { reason };
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("`{}` cannot be read: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(bad(format!("`{}` is not a regular file", path.display())));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "`{}` may be read by other accounts (mode {mode:03o}); make it readable by its owner only (chmod 600)",
            path.display()
        )));
    }
    // The first line is all that is used; a file that is not a password file is not read whole.
    let mut text = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_PASSWORD_FILE_BYTES), &mut text))
        .map_err(|e| bad(format!("`{}` cannot be read: {e}", path.display())))?;
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let Ok(line) = std::str::from_utf8(first) else {
        return Err(bad(format!("the first line of `{}` is not UTF-8 text", path.display())));
    };
    if line.is_empty() {
        return Err(bad(format!("`{}` holds no password (its first line is empty)", path.display())));
    }
    if line.chars().any(char::is_control) {
        return Err(bad(format!("the password in `{}` holds a control character", path.display())));
    }
    Ok(SecretString::from(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn plain_is_preferred_then_login_from_what_the_relay_advertises() {
        let cases: &[(&[&str], Result<Mechanism, NoMechanism>)] = &[
            (&["mail.clinic.local", "8BITMIME", "AUTH LOGIN PLAIN"], Ok(Mechanism::Plain)),
            (&["mail.clinic.local", "AUTH PLAIN LOGIN CRAM-MD5"], Ok(Mechanism::Plain)),
            (&["mail.clinic.local", "auth login"], Ok(Mechanism::Login)),
            // The pre-RFC form some Exchange versions send beside the standard one.
            (&["mail.clinic.local", "AUTH=LOGIN"], Ok(Mechanism::Login)),
            (&["mail.clinic.local", "AUTH GSSAPI NTLM", "AUTH=LOGIN"], Ok(Mechanism::Login)),
            (&["mail.clinic.local", "SIZE 10240000", "8BITMIME"], Err(NoMechanism::NotOffered)),
            // aiosmtpd with every mechanism excluded still says `AUTH` with nothing after it.
            (&["mail.clinic.local", "AUTH"], Err(NoMechanism::NotOffered)),
            (&["mail.clinic.local", "AUTH CRAM-MD5 GSSAPI"], Err(NoMechanism::Unsupported(vec!["CRAM-MD5".into(), "GSSAPI".into()]))),
            // Not an AUTH line, and the relay's own name is never read as one.
            (&["AUTH PLAIN", "AUTHX PLAIN"], Err(NoMechanism::NotOffered)),
        ];
        for (ehlo, expected) in cases {
            assert_eq!(&choose_mechanism(&lines(ehlo)), expected, "{ehlo:?}");
        }
    }

    #[test]
    fn plain_and_login_responses_are_rfc_encodings() {
        // RFC 4616 section 4's example: authcid "tim", password "tanstaaftanstaaf".
        let password = SecretString::from("tanstaaftanstaaf".to_owned());
        assert_eq!(plain_response("tim", &password).as_str(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        assert_eq!(login_response("tim").as_str(), "dGlt");
        // Any UTF-8 survives the encoding.
        let decoded = BASE64.decode(plain_response("dr.ä", &SecretString::from("pä ss:wörd".to_owned())).as_bytes()).expect("base64");
        assert_eq!(decoded, "\0dr.ä\0pä ss:wörd".as_bytes());
    }

    #[test]
    fn a_relay_echoing_the_credentials_has_them_scrubbed() {
        let password = SecretString::from("s3cret-Pw".to_owned());
        let echo = format!("535 5.7.8 bad {} {} {}", "s3cret-Pw", login_response("s3cret-Pw").as_str(), plain_response("alerts", &password).as_str());
        let clean = scrub(&echo, "alerts", &password);
        assert_eq!(clean, "535 5.7.8 bad [redacted] [redacted] [redacted]");
        assert!(!format!("{password:?}").contains("s3cret"), "the secret type prints its content");
    }

    #[test]
    fn the_password_file_is_its_first_line_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("smtp.pw");
        let write = |content: &[u8], mode: u32| {
            std::fs::write(&path, content).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        write(b"correct horse\r\nsecond line\n", 0o600);
        assert_eq!(read_password_file(&path).expect("readable").expose_secret(), "correct horse");
        write(b"no newline", 0o400);
        assert_eq!(read_password_file(&path).expect("readable").expose_secret(), "no newline");
        let refused: &[(&[u8], u32, &str)] = &[
            (b"pw\n", 0o640, "may be read by other accounts (mode 640)"),
            (b"pw\n", 0o604, "may be read by other accounts (mode 604)"),
            (b"\nsecond\n", 0o600, "holds no password"),
            (b"", 0o600, "holds no password"),
            (b"p\x00w\n", 0o600, "control character"),
            (b"\xff\xfe\n", 0o600, "not UTF-8"),
        ];
        for (content, mode, expected) in refused {
            write(content, *mode);
            let err = read_password_file(&path).expect_err(expected).to_string();
            assert!(err.contains(expected) && err.contains("smtp.pw"), "{err}\nwanted {expected}");
        }
        let missing = read_password_file(&dir.path().join("absent")).expect_err("missing").to_string();
        assert!(missing.contains("cannot be read"), "{missing}");
        let directory = read_password_file(dir.path()).expect_err("a directory").to_string();
        assert!(directory.contains("not a regular file"), "{directory}");
    }
}
