//! USB control on the box: which USB devices the kernel may use, and the one time a USB stick
//! may come in (an administrator's window for an update, or for a backup to or a restore from
//! the clinic's backup disk). A stick is a way for patient data to leave the box, so outside a
//! window no mass storage is authorized at all, and inside one only what the window is for is
//! mounted (read-write only the backup disk, for a backup); keyboards (the console) and hubs
//! are; nothing else is. Every decision is an event for the audit trail.
//!
//! - [`descriptors`]: a device's descriptors from sysfs (pure parsing of device-supplied bytes);
//! - [`policy`]: the decision for one device, and where and how a stick's file system is
//!   mounted in the open window (pure);
//! - [`window`]: the stick window's file;
//! - [`control`]: the root side: sysfs `authorized` flags, the storage drivers, the mounts,
//!   the window's expiry;
//! - [`helper`]: the root helper that opens and closes the window for the admin Updates and
//!   Backups pages;
//! - [`events`]: the event files the root helpers leave and the daemon audits.
//!
//! See docs/update.md, "USB control".

pub mod control;
pub mod descriptors;
pub mod events;
pub mod helper;
pub mod policy;
pub mod window;
