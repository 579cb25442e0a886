//! `wardbox usb open|close|status|authorize|mount-plan|window-helper`: USB control on the
//! appliance, as root (`crate::usb`). The stick window is what an administrator opens for an
//! update from a stick, or for a backup to (or a restore from) the backup disk; `authorize` is
//! what udev runs for every USB device plugged in, `mount-plan` what the mount helper asks
//! before it mounts a stick's file system. Paths are the
//! appliance's (`usb::control::Paths::appliance`): these commands work without a readable
//! configuration, so a broken one never costs the console its keyboard.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{CliError, CliResult, cli_actor};
use crate::usb::control::{self, Paths, SystemHost};
use crate::usb::policy::Decision;
use crate::usb::window::{MAX_MINUTES, Purpose};

#[derive(Debug, Subcommand)]
pub enum UsbCommand {
    /// Open the USB window: one USB stick is let in until the window closes (`wardbox usb
    /// close`, or its time is up). For an update any stick, read-only; for a backup only the
    /// backup disk (ext4 labelled WARDBOX-BACKUP), read-write; for a restore the backup disk,
    /// read-only. `wardbox backup` opens and closes it by itself. Root only; audited.
    Open {
        /// What the window is for: update, backup or restore.
        #[arg(long = "for", default_value = "update")]
        purpose: Purpose,
        /// How long the window stays open, in minutes (1 to 120).
        #[arg(long, default_value_t = 15)]
        minutes: u32,
        /// Whom the audit trail names as opening it (default: this OS user).
        #[arg(long)]
        by: Option<String>,
    },
    /// Close the USB window: unmount the stick, take it out (de-authorize it), unload the USB
    /// storage drivers. Audited.
    Close {
        /// Why, for the audit trail.
        #[arg(long, default_value = "closed at the console")]
        reason: String,
    },
    /// The window (open or not, for what, by whom, until when), the storage drivers, and every
    /// USB device with what the policy makes of it.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Decide for one USB device and let it in or not (udev runs this for every device plugged
    /// in; the image boots with usbcore.authorized_default=0). Exit 0 let in, 3 refused.
    #[command(hide = true)]
    Authorize {
        /// The kernel's device name (`1-1`, `2-1.3`).
        device: String,
    },
    /// The mount helper's question for a stick's file system (`usb-mount`, run by udev): prints
    /// `ro|rw DIRECTORY OPTIONS` when it is mounted in the open window, or refuses (exit 3,
    /// audited as mount-refused) with the reason.
    #[command(hide = true)]
    MountPlan {
        /// The block device (`sdb1`).
        device: String,
        /// Its file system type, as blkid reports it.
        #[arg(long)]
        fs_type: String,
        /// Its file system label, as blkid reports it (empty when it has none).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// The root helper that opens and closes the window for the admin Updates page: one JSON
    /// request on standard input, one JSON answer on standard output (systemd starts it for each
    /// connection to `wardbox-usb-window.socket`). Not for people: docs/update.md.
    #[command(hide = true)]
    WindowHelper,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub fn run(cmd: UsbCommand) -> CliResult {
    let paths = Paths::appliance();
    match cmd {
        UsbCommand::Open { purpose, minutes, by } => {
            if !(1..=MAX_MINUTES).contains(&minutes) {
                return Err(CliError::new(format!("--minutes: 1 to {MAX_MINUTES}")));
            }
            let by = by.unwrap_or_else(cli_actor);
            let w = control::open_window(&paths, &mut SystemHost, purpose, &by, minutes, now()).map_err(CliError::new)?;
            let until = jiff::Timestamp::from_second(w.until).map(|t| t.to_string()).unwrap_or_default();
            match purpose {
                Purpose::Update => println!(
                    "USB window open for an update until {until} ({minutes} min): plug in the stick; it is mounted read-only under {}",
                    paths.mounts.display()
                ),
                Purpose::Backup | Purpose::Restore => println!(
                    "USB window open for a {purpose} until {until} ({minutes} min): plug in the backup disk (ext4, labelled {}); it is mounted {} at {}",
                    crate::usb::policy::BACKUP_DISK_LABEL,
                    if purpose.read_only() { "read-only" } else { "read-write" },
                    paths.backup_disk.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        UsbCommand::Close { reason } => {
            let closed = control::close_window(&paths, &mut SystemHost, &reason).map_err(CliError::new)?;
            if !closed.was_open {
                println!("no USB window was open");
            }
            println!(
                "USB window closed: {} stick(s) taken out, {} unmounted{}",
                closed.sticks_out.len(),
                closed.unmounted.len(),
                closed.drivers_left.map(|e| format!("; the storage drivers are still loaded: {e}")).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        UsbCommand::Status { json } => {
            let s = control::status(&paths, Path::new("/sys/module"), now()).map_err(CliError::new)?;
            if json {
                println!("{}", serde_json::to_string(&s).map_err(|e| CliError::new(e.to_string()))?);
                return Ok(ExitCode::SUCCESS);
            }
            match (&s.window, s.window_open) {
                (Some(w), true) => println!("window: open for {} by {} until {}", w.purpose, w.opened_by, jiff::Timestamp::from_second(w.until).map(|t| t.to_string()).unwrap_or_default()),
                (Some(_), false) => println!("window: its time is up (closing)"),
                (None, _) => println!("window: closed{}", s.window_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()),
            }
            println!("storage drivers: {}", if s.storage_drivers_loaded { "loaded" } else { "not loaded" });
            for d in &s.devices {
                println!("{:<10} {:<10} {:<10} {}", d.name, d.id, d.kind, if d.authorized { "authorized" } else { "refused" });
            }
            Ok(ExitCode::SUCCESS)
        }
        UsbCommand::MountPlan { device, fs_type, label } => match control::mount_plan(&paths, &device, &fs_type, &label, now()) {
            Ok((plan, at)) => {
                println!("{}", control::mount_plan_line(&plan, &at));
                Ok(ExitCode::SUCCESS)
            }
            Err(why) => {
                eprintln!("{device}: not mounted: {why}");
                Ok(ExitCode::from(3))
            }
        },
        UsbCommand::WindowHelper => {
            let answer = crate::usb::helper::serve(std::io::stdin().lock(), std::io::stdout().lock(), &paths, &mut SystemHost, now())
                .map_err(CliError::new)?;
            Ok(if answer.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        UsbCommand::Authorize { device } => match control::authorize(&paths, &device, now()).map_err(CliError::new)? {
            Decision::Authorize(kind) => {
                println!("{device}: let in ({})", kind.name());
                Ok(ExitCode::SUCCESS)
            }
            Decision::Refuse(why) => {
                println!("{device}: refused: {why}");
                Ok(ExitCode::from(3))
            }
        },
    }
}
