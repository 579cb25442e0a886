//! The install helper: who writes the system slots and the ESP for the admin Updates page.
//!
//! The agent (`wardbox.service`) parses HTTP from the clinic LAN all day. It is not given write
//! access to the system slots or the ESP: with it, a compromised agent could put a system of
//! its own into the inactive slot, where a signed UKI already on the ESP would boot it (there is
//! no dm-verity yet) with the data volume unlocked by the signed PCR 11 policy, a compromise
//! that outlives every reboot. Instead, a full bundle chosen on the page is handed to a small
//! root helper, `wardbox update install-helper`, started by systemd for each connection to
//! `update.install_helper` (`wardbox-update-install.socket`, `Accept=yes`, mode 0600): it has
//! the slots and the ESP and nothing network-facing, and it trusts nothing the agent says
//! beyond *which* bundle on an inserted stick, *which* manifest digest was confirmed and *who*
//! confirmed it. It finds the bundle itself, verifies it itself (TUF, manifest, decision, TPM
//! floor), refuses when the digest differs, installs it, audits every step as that admin, and
//! reports progress. So the most a compromised agent can do is ask for a bundle the fleet's
//! keys signed to be installed.
//!
//! The protocol, one JSON object per line: the agent writes a [`Request`]; the helper answers
//! with [`Event`]s: `verified`, `progress` (at most one a second), then `done` or `refused`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wardbox_update::slot::Phase;

/// The longest request line the helper reads (a bundle id, a digest and a user name).
pub const MAX_REQUEST_BYTES: u64 = 4096;

/// What the agent asks for: a bundle found on an inserted stick, by the id the page showed, the
/// manifest digest the admin confirmed, and the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub bundle: String,
    pub sha256: String,
    pub actor: String,
}

/// What the helper reports, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// The bundle verified and is the one confirmed; the install starts.
    Verified { kind: String, version: String, total: u64 },
    Progress { phase: String, done: u64, total: u64 },
    /// The install finished (`outcome`: installed, pending-reboot).
    Done { outcome: String, lines: Vec<String> },
    /// Refused or failed, with the documented exit code (docs/update.md).
    Refused { message: String, exit_code: u8 },
}

/// Reads the request line (pure over any reader): at most [`MAX_REQUEST_BYTES`], one JSON
/// object, an actor that is a plain user name.
pub fn read_request(input: impl std::io::Read) -> Result<Request, String> {
    let request: Request = crate::helper_line::read_request(input, MAX_REQUEST_BYTES)?;
    if !crate::helper_line::is_user_name(&request.actor, 128) {
        return Err("the request's actor is not a user name".into());
    }
    if request.sha256.len() != 64 || !request.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the request's sha256 is not 64 hex digits".into());
    }
    Ok(request)
}

/// Writes events as JSON lines, progress at most once a second (and always the last).
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    out: W,
    last_progress: Option<Instant>,
}

impl<W: Write> EventWriter<W> {
    pub fn new(out: W) -> Self {
        EventWriter { out, last_progress: None }
    }

    pub fn send(&mut self, event: &Event) -> std::io::Result<()> {
        if let Event::Progress { done, total, .. } = event {
            let now = Instant::now();
            if done < total && self.last_progress.is_some_and(|t| now - t < Duration::from_secs(1)) {
                return Ok(());
            }
            self.last_progress = Some(now);
        }
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}

/// The phase's name on the page and in progress events.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Verifying => "verifying",
        Phase::Writing => "writing",
        Phase::ReadingBack => "reading back",
    }
}

/// The agent's side: sends `request` to the helper at `socket` and hands every event to
/// `on_event`, until `done` or `refused` (returned). A helper that goes away early is an error.
pub fn call(socket: &Path, request: &Request, on_event: &mut dyn FnMut(&Event)) -> Result<Event, String> {
    let stream = crate::helper_line::send(socket, "install helper", request)?;
    let reader = std::io::BufReader::new(stream);
    for line in reader.lines() {
        let line = line.map_err(|e| format!("the install helper's answer broke off: {e}"))?;
        let event: Event = serde_json::from_str(&line).map_err(|e| format!("the install helper answered something unreadable ({e})"))?;
        match event {
            Event::Done { .. } | Event::Refused { .. } => return Ok(event),
            ref other => on_event(other),
        }
    }
    Err("the install helper ended without saying how the install went; see `wardbox update status` and the journal".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_short_line_naming_a_plain_user_and_a_digest() {
        let good = format!("{{\"bundle\":\"sdb1/wardbox-1.2.0\",\"sha256\":\"{}\",\"actor\":\"it.admin\"}}\n", "ab".repeat(32));
        assert_eq!(read_request(good.as_bytes()).expect("good").actor, "it.admin");
        for bad in [
            good.trim_end().to_owned(),
            good.replace("it.admin", "it admin"),
            good.replace("it.admin", "cli:root"),
            good.replace(&"ab".repeat(32), "abc"),
            good.replace("\"actor\"", "\"extra\":1,\"actor\""),
            format!("{}{good}", " ".repeat(MAX_REQUEST_BYTES as usize)),
        ] {
            assert!(read_request(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_is_sent_at_most_once_a_second_but_always_the_end() {
        let mut out = Vec::new();
        {
            let mut w = EventWriter::new(&mut out);
            for done in [1, 2, 3, 10] {
                w.send(&Event::Progress { phase: "writing".into(), done, total: 10 }).expect("send");
            }
            w.send(&Event::Done { outcome: "pending-reboot".into(), lines: vec![] }).expect("send");
        }
        let events: Vec<Event> = String::from_utf8(out).expect("utf8").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[1], Event::Progress { phase: "writing".into(), done: 10, total: 10 });
    }
}
