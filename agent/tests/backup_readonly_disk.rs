//! Reading the backup disk needs no write to it: on the appliance a restore window mounts the
//! disk read-only (docs/backup.md, "The USB disk on the appliance"), and `list`, `check
//! --read-data`, `drill`, `restore` and `restore-box` onto a second box must work from it.
//!
//! The disk is a directory the backup was written to, bind-mounted read-only on another
//! directory (`mount --bind`, then a read-only remount), as the mount helper mounts the disk in a
//! restore window. Needs mount rights (root); fails saying so without them. One test in this
//! file, as it changes the mount table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::mount::{MntFlags, MsFlags};
use wardbox::config::Config;
use wardbox::store::Store;

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A dev box as `wardbox dev` leaves it: its configuration file, the dev store key file, a
/// migrated store.
fn dev_box(base: &Path) -> PathBuf {
    let config = Config::dev_defaults(base);
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let (mut store, _) = Store::open_or_create(&data_dir.join(&config.store.file_name), &key).unwrap();
    store.migrate().unwrap();
    config_path
}

/// Unmounts the read-only view when the test ends, however it ends.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn mount_read_only(disk: &Path, at: &Path) -> Mounted {
    nix::mount::mount(Some(disk), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap_or_else(|e| {
        panic!("this test needs mount rights (root) to mount a stand-in backup disk read-only on {}: {e}", at.display())
    });
    let mounted = Mounted(at.to_owned());
    nix::mount::mount(None::<&str>, at, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .unwrap_or_else(|e| panic!("cannot make the stand-in backup disk at {} read-only: {e}", at.display()));
    mounted
}

#[test]
fn every_command_that_reads_the_backup_disk_works_from_a_read_only_mount() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, view) = (dir.path().join("disk"), dir.path().join("restore-window"));
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    let a = dev_box(&dir.path().join("a"));
    let a = a.to_str().unwrap();
    let out = wardbox(&["backup", "now", "-c", a, "--repo", disk.to_str().unwrap()]);
    assert!(out.status.success(), "{}", said(&out));
    let out = wardbox(&["backup", "key", "-c", a]);
    assert!(out.status.success(), "{}", said(&out));
    let key_file = dir.path().join("escrow.key");
    std::fs::write(&key_file, &out.stdout).unwrap();

    let _mounted = mount_read_only(&disk, &view);
    assert!(std::fs::write(view.join("probe"), b"x").is_err(), "the stand-in disk is not read-only");
    let r = view.to_str().unwrap();
    let before = listing(&disk);
    for args in [
        vec!["backup", "list", "-c", a, "--repo", r],
        vec!["backup", "check", "-c", a, "--repo", r, "--read-data"],
        vec!["backup", "drill", "-c", a, "--repo", r],
    ] {
        let out = wardbox(&args);
        assert!(out.status.success(), "{args:?} from a read-only disk: {}", said(&out));
    }
    let target = dir.path().join("restored");
    let out = wardbox(&["backup", "restore", "--repo", r, "--target", target.to_str().unwrap(), "--key-file", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "restore from a read-only disk: {}", said(&out));
    // A replacement box restores from it too.
    let b = dev_box(&dir.path().join("b"));
    let out = wardbox(&["backup", "restore-box", "-c", b.to_str().unwrap(), "--repo", r, "--key-file", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "restore-box from a read-only disk: {}", said(&out));
    assert!(said(&out).contains("audit chain continues"), "{}", said(&out));
    assert_eq!(listing(&disk), before, "reading the disk changed it");
}

/// Every file under `dir` with its size, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(dir).unwrap().to_owned(), m.len()));
            }
        }
    }
    out.sort();
    out
}
