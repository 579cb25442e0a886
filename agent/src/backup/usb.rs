//! The backup disk on a box with USB control (docs/backup.md, "The USB disk on the appliance").
//!
//! Outside an update or a backup an administrator started, the appliance lets in no USB storage
//! at all (`crate::usb`). So a run that uses the configured USB disk (`[backup] usb_path`)
//! opens a USB window for itself: for a backup (the disk mounted read-write) or a restore (read
//! only: a drill, `restore`, `restore-box`, `list`, `check`), waits a bounded time for the
//! mount helper to mount the backup disk at the window's mount point, runs, and closes the
//! window whatever the outcome ([`DiskSession`] closes it when dropped, so an early return
//! closes it too). Which stick is the backup disk is the root side's decision
//! (`usb::policy::mount_plan`: an ext4 file system labelled `WARDBOX-BACKUP`); any other stick
//! plugged in during the window is refused and audited there, and the run fails saying so.
//!
//! The agent opens the window through the root window helper ([`HelperWindow`]; its unit may
//! not), the console as root directly ([`ConsoleWindow`]). Every step is audited as every
//! window's is: the root side leaves `window-opened`, `device-authorized`, `mounted` or
//! `mount-refused`, `window-closed` events, which the daemon audits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wardbox_backup::{BackupError, Destination};

use super::RunError;
use crate::usb::control::{self, Paths, SystemHost};
use crate::usb::helper::{self, Action, BACKUP_WINDOW_MINUTES, Request};
use crate::usb::window::Purpose;

/// How long a run waits for the backup disk once the window is open: a disk already plugged in
/// is let in and mounted within a few seconds; this leaves time to plug it in.
pub const DISK_WAIT: Duration = Duration::from_secs(60);

/// Opens and closes the USB window around a run, and waits for the backup disk in it.
pub trait DiskWindow: Send + Sync {
    /// Opens a window for `purpose`, as `actor` (a plain user name); the answer in words.
    fn open(&self, purpose: Purpose, actor: &str) -> Result<String, String>;
    /// Waits at most `wait` for the backup disk to be mounted in the open window; its device.
    fn wait_for_disk(&self, wait: Duration) -> Result<String, String>;
    /// Closes the window (`purpose` and `actor` say whose run ended, for the audit trail).
    fn close(&self, purpose: Purpose, actor: &str) -> Result<String, String>;
    /// Where the window mounts the backup disk: `[backup] usb_path` must name it.
    fn mount_point(&self) -> &Path;
}

/// The agent's window: the root window helper behind `update.usb_window_helper`, which trusts
/// nothing but *open or close*, *for what*, *how long* and *who*. The agent reads the window,
/// the refusal note and its own mount table at `paths`.
#[derive(Debug, Clone)]
pub struct HelperWindow {
    pub socket: PathBuf,
    pub paths: Paths,
}

impl HelperWindow {
    fn call(&self, action: Action, purpose: Purpose, actor: &str) -> Result<String, String> {
        let answer = helper::call(&self.socket, &Request { action, purpose, minutes: BACKUP_WINDOW_MINUTES, actor: actor.to_owned() })?;
        if answer.ok { Ok(answer.message) } else { Err(answer.message) }
    }
}

impl DiskWindow for HelperWindow {
    fn open(&self, purpose: Purpose, actor: &str) -> Result<String, String> {
        self.call(Action::Open, purpose, actor)
    }
    fn wait_for_disk(&self, wait: Duration) -> Result<String, String> {
        control::wait_for_backup_disk(&self.paths, wait)
    }
    fn close(&self, purpose: Purpose, actor: &str) -> Result<String, String> {
        self.call(Action::Close, purpose, actor)
    }
    fn mount_point(&self) -> &Path {
        &self.paths.backup_disk
    }
}

/// Root's window at the console (`wardbox backup …`): opened and closed directly, as
/// `wardbox usb open|close` do.
#[derive(Debug, Clone)]
pub struct ConsoleWindow {
    pub paths: Paths,
}

impl DiskWindow for ConsoleWindow {
    fn open(&self, purpose: Purpose, actor: &str) -> Result<String, String> {
        let now = jiff::Timestamp::now().as_second();
        control::open_window(&self.paths, &mut SystemHost, purpose, actor, BACKUP_WINDOW_MINUTES, now).map(|w| format!("USB window open for a {} by {}", w.purpose, w.opened_by))
    }
    fn wait_for_disk(&self, wait: Duration) -> Result<String, String> {
        control::wait_for_backup_disk(&self.paths, wait)
    }
    fn close(&self, purpose: Purpose, actor: &str) -> Result<String, String> {
        control::close_window(&self.paths, &mut SystemHost, &format!("the {purpose} by {actor} ended"))
            .map(|c| format!("USB window closed: {} stick(s) taken out", c.sticks_out.len()))
    }
    fn mount_point(&self) -> &Path {
        &self.paths.backup_disk
    }
}

/// The backup disk, mounted in an open window for one run. Closing it (or dropping it) closes
/// the window: the disk is unmounted and taken out.
pub struct DiskSession {
    window: Arc<dyn DiskWindow>,
    purpose: Purpose,
    actor: String,
    /// The block device the disk was mounted from (`sdb1`).
    pub device: String,
    closed: Option<Result<String, String>>,
}

impl std::fmt::Debug for DiskSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskSession").field("purpose", &self.purpose).field("device", &self.device).finish_non_exhaustive()
    }
}

impl DiskSession {
    /// Closes the window (once; later calls repeat the first answer).
    pub fn close(&mut self) -> &Result<String, String> {
        let (window, purpose, actor) = (&self.window, self.purpose, &self.actor);
        self.closed.get_or_insert_with(|| window.close(purpose, actor))
    }

    /// Closes the window and says what happened, for the run's audit record.
    pub fn close_for_audit(&mut self) -> serde_json::Value {
        let (purpose, device) = (self.purpose.to_string(), self.device.clone());
        match self.close() {
            Ok(message) => json!({ "purpose": purpose, "device": device, "closed": true, "message": message }),
            Err(error) => json!({ "purpose": purpose, "device": device, "closed": false, "error": error }),
        }
    }
}

impl Drop for DiskSession {
    fn drop(&mut self) {
        let purpose = self.purpose;
        if let Err(e) = self.close() {
            tracing::error!("the USB window around the {purpose} did not close: {e}");
            eprintln!("wardbox: the USB window around the {purpose} did not close: {e}; close it with `wardbox usb close`");
        }
    }
}

fn unavailable(path: &Path, reason: String) -> RunError {
    RunError::Repository(BackupError::DestinationUnavailable { path: path.to_owned(), reason })
}

/// Opens a window for `purpose` as `actor` and waits (at most `wait`) for the backup disk at
/// `destination`. The destination must be the window's mount point (checked before anything is
/// opened). A window that cannot be opened (another one is open, the helper refuses) is not
/// closed (it is not this run's); once opened, a failure closes it again. Errors are
/// [`BackupError::DestinationUnavailable`], recorded and alerted as a disk that is not there.
pub fn open_disk(window: Arc<dyn DiskWindow>, purpose: Purpose, actor: &str, destination: &Path, wait: Duration) -> Result<DiskSession, RunError> {
    if destination != window.mount_point() {
        return Err(unavailable(
            destination,
            format!(
                "on this box the USB window mounts the backup disk at {}; set [backup] usb_path to it",
                window.mount_point().display()
            ),
        ));
    }
    window.open(purpose, actor).map_err(|e| unavailable(destination, format!("the USB window for the {purpose} could not be opened: {e}")))?;
    let mut session = DiskSession { window, purpose, actor: actor.to_owned(), device: String::new(), closed: None };
    match session.window.wait_for_disk(wait) {
        Ok(device) => {
            session.device = device;
            Ok(session)
        }
        Err(e) => {
            let closed = match session.close() {
                Ok(_) => String::new(),
                Err(c) => format!(" (and the window did not close: {c})"),
            };
            Err(unavailable(destination, format!("{e}{closed}")))
        }
    }
}

/// The window a box's configuration gives a run on `destination`: with USB control
/// (`update.usb_window_helper` set) and a USB disk configured, the helper's window on the
/// appliance's paths (the window file as `update.usb_window_file` names it); otherwise none (a
/// dev box, a LAN server).
pub fn helper_window(config: &crate::config::Config, destination: Option<&Destination>) -> Option<Arc<dyn DiskWindow>> {
    let socket = config.update.usb_window_helper.clone()?;
    matches!(destination, Some(Destination::LocalDirectory(_))).then(|| {
        let paths = Paths { window: config.update.usb_window_file.clone(), ..Paths::appliance() };
        Arc::new(HelperWindow { socket, paths }) as Arc<dyn DiskWindow>
    })
}
