//! The USB window helper: opens and closes the stick window for the admin Updates page (an
//! update) and the admin Backups page (a backup to the backup disk, or a drill reading it).
//!
//! The agent does not load kernel modules, write sysfs or start timers (its unit cannot, on
//! purpose), so the page hands the request to a small root helper, `wardbox usb window-helper`,
//! which systemd starts for each connection to `update.usb_window_helper`
//! (`wardbox-usb-window.socket`, `Accept=yes`, mode 0600). The helper trusts nothing the agent
//! says beyond *open or close*, *for what* (update, backup or restore), *for how long*
//! (bounded) and *who* asked: the window's rules (one stick; read-only for an update or a
//! restore; read-write only for the backup disk, which its label names; closed when its time is
//! up) are its own ([`super::control`], [`super::policy::mount_plan`]). So the most a
//! compromised agent can do is open a window for one read-only stick or for the clinic's backup
//! disk, which an administrator's click could do anyway, and which is audited.
//!
//! The protocol: one JSON [`Request`] line from the agent, one JSON [`Answer`] line back.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::control::{self, Host, Paths};
use super::window::{MAX_MINUTES, Purpose};
use crate::helper_line;

/// The longest request line the helper reads.
pub const MAX_REQUEST_BYTES: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Open,
    Close,
}

/// What the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub action: Action,
    /// What an opened window is for; absent (an agent from before backup windows) is an update.
    #[serde(default = "default_purpose")]
    pub purpose: Purpose,
    /// How long an opened window stays open (the window's own bounds apply).
    #[serde(default = "default_minutes")]
    pub minutes: u32,
    /// The signed-in administrator (a plain user name), or why the agent closes it.
    pub actor: String,
}

fn default_minutes() -> u32 {
    15
}

fn default_purpose() -> Purpose {
    Purpose::Update
}

/// How long the backup commands and the Backups page hold a backup or restore window: the
/// longest a window may be open, since a large store takes long to back up; the run closes it
/// when it ends.
pub const BACKUP_WINDOW_MINUTES: u32 = MAX_MINUTES;

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub ok: bool,
    pub message: String,
}

/// Reads the request line: at most [`MAX_REQUEST_BYTES`], one JSON object, a plain user name.
pub fn read_request(input: impl std::io::Read) -> Result<Request, String> {
    let request: Request = helper_line::read_request(input, MAX_REQUEST_BYTES)?;
    if !helper_line::is_user_name(&request.actor, 64) {
        return Err("the request's actor is not a user name".into());
    }
    Ok(request)
}

/// Carries out one request.
pub fn handle(paths: &Paths, host: &mut dyn Host, request: &Request, now: i64) -> Answer {
    let by = format!("admin:{}", request.actor);
    let result = match request.action {
        Action::Open => control::open_window(paths, host, request.purpose, &by, request.minutes, now).map(|w| {
            let minutes = (w.until - w.opened_at) / 60;
            match w.purpose {
                Purpose::Update => format!("The USB window is open for {minutes} minutes: plug in the stick with the update. It closes when the update is applied, when you close it, or when its time is up."),
                Purpose::Backup | Purpose::Restore => format!(
                    "The USB window is open for {minutes} minutes for a {}: only the backup disk (ext4, labelled {}) is let in. It closes when the {} ends.",
                    w.purpose,
                    super::policy::BACKUP_DISK_LABEL,
                    w.purpose
                ),
            }
        }),
        Action::Close => control::close_window(paths, host, &match request.purpose {
            Purpose::Update => format!("closed on the Updates page by {by}"),
            other => format!("the {other} by {by} ended"),
        })
        .map(|c| {
            if c.was_open { format!("The USB window is closed; {} stick(s) taken out.", c.sticks_out.len()) } else { "No USB window was open.".to_owned() }
        }),
    };
    match result {
        Ok(message) => Answer { ok: true, message },
        Err(message) => Answer { ok: false, message },
    }
}

/// The helper's side: one request from `input`, its answer to `output`.
pub fn serve(input: impl std::io::Read, mut output: impl Write, paths: &Paths, host: &mut dyn Host, now: i64) -> Result<Answer, String> {
    let answer = match read_request(input) {
        Ok(request) => handle(paths, host, &request, now),
        Err(message) => Answer { ok: false, message },
    };
    let mut line = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
    line.push(b'\n');
    output.write_all(&line).and_then(|()| output.flush()).map_err(|e| format!("cannot answer the agent: {e}"))?;
    Ok(answer)
}

/// The agent's side: sends `request` to the helper at `socket` and returns its answer.
pub fn call(socket: &Path, request: &Request) -> Result<Answer, String> {
    let stream = helper_line::send(socket, "USB window helper", request)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream.take(4096))
        .read_line(&mut answer)
        .map_err(|e| format!("the USB window helper's answer broke off: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("the USB window helper answered something unreadable ({e}); see `wardbox usb status`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_short_line_with_a_plain_user() {
        let update = read_request(&b"{\"action\":\"open\",\"actor\":\"it.admin\"}\n"[..]).expect("good");
        assert_eq!((update.minutes, update.purpose), (15, Purpose::Update), "a request without a purpose is an update's");
        let backup = read_request(&b"{\"action\":\"open\",\"purpose\":\"backup\",\"minutes\":120,\"actor\":\"it.admin\"}\n"[..]).expect("good");
        assert_eq!((backup.minutes, backup.purpose), (120, Purpose::Backup));
        assert_eq!(read_request(&b"{\"action\":\"open\",\"purpose\":\"restore\",\"actor\":\"x\"}\n"[..]).expect("good").purpose, Purpose::Restore);
        for bad in [
            "{\"action\":\"open\",\"actor\":\"it.admin\"}",
            "{\"action\":\"format\",\"actor\":\"it.admin\"}\n",
            "{\"action\":\"open\",\"actor\":\"it admin\"}\n",
            "{\"action\":\"open\",\"actor\":\"x\",\"purpose\":\"exfiltrate\"}\n",
            "{\"action\":\"open\",\"actor\":\"x\",\"purpose\":\"Backup\"}\n",
            "{\"action\":\"open\",\"actor\":\"x\",\"purpose\":\"backup\",\"mount\":\"rw\"}\n",
            "{\"action\":\"open\",\"actor\":\"x\",\"minutes\":-1}\n",
        ] {
            assert!(read_request(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
