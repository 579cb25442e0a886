//! The line protocol of the box's root helpers (the install helper, `update::helper`; the USB
//! window helper, `usb::helper`): systemd starts a helper for each connection to its socket,
//! the agent writes one JSON request line, the helper answers with JSON lines. What both sides
//! share is here; each helper keeps its own request, answers and limits.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads the request: one line of at most `max_bytes`, one JSON object of type `T`.
pub fn read_request<T: DeserializeOwned>(input: impl Read, max_bytes: u64) -> Result<T, String> {
    let mut line = String::new();
    std::io::BufReader::new(input.take(max_bytes)).read_line(&mut line).map_err(|e| format!("cannot read the request: {e}"))?;
    if !line.ends_with('\n') {
        return Err(format!("the request is not one line of at most {max_bytes} bytes"));
    }
    serde_json::from_str(&line).map_err(|e| format!("the request is not valid: {e}"))
}

/// A user name as the agent may name one: letters, digits, `-`, `_`, `.`, `@`, 1 to `max_len`
/// bytes.
pub fn is_user_name(s: &str, max_len: usize) -> bool {
    !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// The agent's side: connects to the helper `what` at `socket` and sends `request` as one line;
/// the stream is for reading the answers.
pub fn send(socket: &Path, what: &str, request: &impl Serialize) -> Result<UnixStream, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("cannot reach the {what} at {}: {e}; nothing was changed", socket.display()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(|e| format!("cannot send the request to the {what}: {e}"))?;
    Ok(stream)
}
