//! Updates on the box: the agent's side of `wardbox-update`. The library verifies a bundle from a
//! USB stick (TUF, manifest, decisions) and writes a verified target; this module knows where
//! things live on the box and what each kind of bundle changes:
//!
//! - [`apply`]: install a verified bundle: models into the engine's store, the firmware policy
//!   file, or a system image into the inactive slot with its UKI on the ESP. Models and policy
//!   keep the previous version and return to it when the health check fails.
//! - [`installs`]: the install log on the data volume (what `wardbox update status` and the
//!   install receipt show), and the pending system update.
//! - [`boot`]: after a healthy boot, settle a pending system update (raise the system floor, or
//!   report that the box fell back).
//! - [`flow`]: one apply from the stick to the install log, shared by the console and the
//!   admin page; [`receipt`]: the install receipt, quoted by the TPM; [`status`]: what status
//!   shows; [`service`]: the admin Updates page's service (sticks, inspect, apply, progress).
//!   Which USB devices the box authorizes, and the stick window, are [`crate::usb`]'s.
//! - [`tpm_floor`]: the system-version floor in a TPM NV counter, which a restored old state
//!   directory cannot lower.
//! - [`esp`]: which slot an entry on the ESP boots (its UKI's signed `root=PARTUUID=`), so an
//!   install removes the older entries of the slot it rewrites.
//! - [`uki`]: would a full bundle's UKI unlock this box's data? Its PCR 11 signature (`.pcrsig`)
//!   by the key the volume's TPM seal trusts, for the PCR 11 value the UKI will measure;
//!   checked before the slot is touched.
//! - [`helper`]: the root helper that installs a full bundle the admin page confirmed (the
//!   agent's own unit cannot write the slots or the ESP, on purpose).
//!
//! Everything the box keeps for updates is on the data volume (encrypted on the appliance):
//!
//! ```text
//! <data_dir>/update/state/      wardbox_update::State: the trusted TUF root and the floors
//! <data_dir>/update/staging/    verified copies of targets on their way in
//! <data_dir>/update/previous/   what the last models or policy install replaced
//! <data_dir>/update/installs.json   the install log
//! ```
//!
//! See `docs/update.md`.

pub mod apply;
pub mod boot;
pub mod esp;
pub mod flow;
pub mod helper;
pub mod installs;
pub mod receipt;
pub mod service;
pub mod status;
pub mod tpm_floor;
pub mod uki;
pub mod verity;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use wardbox_update::manifest::Version;
use wardbox_update::{BoxFacts, State, UpdateError};

use crate::settings::{ConfigError, Profile};

/// The product id every bundle must name.
pub const PRODUCT: &str = "wardbox";

/// `[update]`: where the box's update inputs and outputs are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// The first trusted TUF root, shipped in the image (`1.root.json` of the key ceremony).
    /// Copied into the update state on the data volume the first time an update is applied;
    /// from then on only verified root rotations move the trust.
    #[serde(default = "default_image_root")]
    pub image_root: PathBuf,
    /// The model store models bundles install into: the engine's store. Default: the
    /// supervised engine's `store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_store: Option<PathBuf>,
    /// The firmware policy file policy bundles replace. Default: `volume.firmware_policy` (the
    /// file the unlock stage reads). It must be on writable storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_policy: Option<PathBuf>,
    /// The A/B system slots and the ESP.
    #[serde(default)]
    pub slots: SlotsConfig,
    /// The TPM holding the system-version anti-rollback counter (a TCTI string). Default: the
    /// volume's TPM (`volume.tcti`); a plain-directory volume has none unless one is named here
    /// (a software TPM on a dev box).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_tpm: Option<String>,
    /// Where inserted USB sticks are mounted (read-only, nosuid, nodev, noexec), one directory
    /// per stick; the admin Updates page lists the bundles found there.
    #[serde(default = "default_usb_dir")]
    pub usb_dir: PathBuf,
    /// Where the image's USB helpers leave one file per USB storage event (plugged, mounted,
    /// refused, removed); the daemon audits and removes them.
    #[serde(default = "default_usb_events_dir")]
    pub usb_events_dir: PathBuf,
    /// The install helper's socket (`wardbox-update-install.socket` on the appliance): the admin
    /// page hands a confirmed full bundle to it instead of writing the slots itself. Unset: the
    /// agent installs in its own process (a dev box).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_helper: Option<PathBuf>,
    /// The USB window helper's socket (`wardbox-usb-window.socket` on the appliance): the admin
    /// page opens and closes the stick window through it (`crate::usb::helper`). Unset: the box
    /// has no USB window (a dev box reads "sticks" from `usb_dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb_window_helper: Option<PathBuf>,
    /// The USB window's file, which the page reads to show whether the window is open.
    #[serde(default = "default_usb_window_file")]
    pub usb_window_file: PathBuf,
}

fn default_usb_window_file() -> PathBuf {
    PathBuf::from("/run/wardbox-usb/window.json")
}

fn default_usb_events_dir() -> PathBuf {
    PathBuf::from("/run/wardbox/usb-events")
}

fn default_usb_dir() -> PathBuf {
    PathBuf::from("/run/wardbox/usb")
}

fn default_image_root() -> PathBuf {
    PathBuf::from("/usr/share/wardbox/update/1.root.json")
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            image_root: default_image_root(),
            models_store: None,
            firmware_policy: None,
            slots: SlotsConfig::default(),
            rollback_tpm: None,
            usb_dir: default_usb_dir(),
            usb_events_dir: default_usb_events_dir(),
            install_helper: None,
            usb_window_helper: None,
            usb_window_file: default_usb_window_file(),
        }
    }
}

/// One of the two system slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    A,
    B,
}

impl SlotName {
    pub fn other(self) -> SlotName {
        match self {
            SlotName::A => SlotName::B,
            SlotName::B => SlotName::A,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "a",
            SlotName::B => "b",
        }
    }
}

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[update.slots]`: the partitions (files in the dev profile) of the two system slots, and the
/// directory on the ESP where systemd-boot finds unified kernel images.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    #[serde(default = "default_slot_a")]
    pub a: PathBuf,
    #[serde(default = "default_slot_b")]
    pub b: PathBuf,
    /// `EFI/Linux` on the mounted ESP.
    #[serde(default = "default_esp_dir")]
    pub esp_dir: PathBuf,
    /// Dev profile only: which slot "runs". On the appliance the running slot is read from the
    /// kernel command line (`root=PARTUUID=…`), never from configuration: a wrong value here
    /// would point the install at the running system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<SlotName>,
}

fn default_slot_a() -> PathBuf {
    PathBuf::from("/dev/disk/by-partlabel/wardbox-root-a")
}
fn default_slot_b() -> PathBuf {
    PathBuf::from("/dev/disk/by-partlabel/wardbox-root-b")
}
fn default_esp_dir() -> PathBuf {
    PathBuf::from("/efi/EFI/Linux")
}

impl Default for SlotsConfig {
    fn default() -> Self {
        SlotsConfig { a: default_slot_a(), b: default_slot_b(), esp_dir: default_esp_dir(), running: None }
    }
}

impl SlotsConfig {
    pub fn path(&self, slot: SlotName) -> &Path {
        match slot {
            SlotName::A => &self.a,
            SlotName::B => &self.b,
        }
    }
}

impl UpdateConfig {
    pub fn validate(&self, profile: Profile) -> Result<(), ConfigError> {
        let paths = [
            ("update.image_root", Some(&self.image_root)),
            ("update.models_store", self.models_store.as_ref()),
            ("update.firmware_policy", self.firmware_policy.as_ref()),
            ("update.slots.a", Some(&self.slots.a)),
            ("update.slots.b", Some(&self.slots.b)),
            ("update.slots.esp_dir", Some(&self.slots.esp_dir)),
            ("update.usb_dir", Some(&self.usb_dir)),
            ("update.usb_events_dir", Some(&self.usb_events_dir)),
            ("update.install_helper", self.install_helper.as_ref()),
        ];
        for (key, path) in paths {
            if path.is_some_and(|p| !p.is_absolute()) {
                return Err(ConfigError::invalid(key, "must be an absolute path"));
            }
        }
        if self.slots.a == self.slots.b {
            return Err(ConfigError::invalid("update.slots.b", "must differ from update.slots.a"));
        }
        if let Some(tcti) = &self.rollback_tpm {
            let spec = wardbox_volume::tpm::parse_tcti(tcti).map_err(|e| ConfigError::invalid("update.rollback_tpm", e.to_string()))?;
            if profile == Profile::Appliance && !matches!(spec, wardbox_volume::tpm::TctiSpec::Device(_)) {
                return Err(ConfigError::invalid("update.rollback_tpm", "the appliance keeps its anti-rollback counter in the hardware TPM (device:…)"));
            }
        }
        if profile == Profile::Appliance && self.slots.running.is_some() {
            return Err(ConfigError::invalid(
                "update.slots.running",
                "the appliance reads its running slot from the kernel command line; naming it here could point an install at the running system",
            ));
        }
        Ok(())
    }
}

/// Where the box keeps its update state, under the unlocked data directory.
#[derive(Debug, Clone)]
pub struct UpdatePaths {
    pub dir: PathBuf,
}

impl UpdatePaths {
    pub fn new(data_dir: &Path) -> Self {
        UpdatePaths { dir: data_dir.join("update") }
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }
    pub fn previous(&self) -> PathBuf {
        self.dir.join("previous")
    }
    pub fn installs(&self) -> PathBuf {
        self.dir.join("installs.json")
    }

    /// The update state, provisioned from the image's root on first use.
    pub fn open_or_provision_state(&self, config: &UpdateConfig) -> Result<State, UpdateError> {
        match State::open(self.state_dir()) {
            Ok(state) => Ok(state),
            Err(UpdateError::NoTrustedRoot(_)) => {
                let root = std::fs::read(&config.image_root).map_err(UpdateError::io("reading the image's trusted root", &config.image_root))?;
                State::provision(self.state_dir(), &root)
            }
            Err(e) => Err(e),
        }
    }

    /// The update state if provisioned; otherwise a throw-away copy provisioned from the image's
    /// root (for `inspect` and `status`, which change nothing on the box).
    pub fn state_for_reading(&self, config: &UpdateConfig) -> Result<(State, Option<tempdir::TempDir>), UpdateError> {
        match State::open(self.state_dir()) {
            Ok(state) => Ok((state, None)),
            Err(UpdateError::NoTrustedRoot(_)) => {
                let root = std::fs::read(&config.image_root).map_err(UpdateError::io("reading the image's trusted root", &config.image_root))?;
                let tmp = tempdir::TempDir::new().map_err(UpdateError::io("creating a temporary directory", std::env::temp_dir()))?;
                let state = State::provision(tmp.path().join("state"), &root)?;
                Ok((state, Some(tmp)))
            }
            Err(e) => Err(e),
        }
    }
}

/// A temporary directory removed on drop (the agent has no `tempfile` dependency outside tests).
pub mod tempdir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<TempDir> {
            let name = format!("wardbox-update-{}-{}", std::process::id(), rand::random::<u64>());
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir(&path)?;
            Ok(TempDir(path))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Where the image build records what the image is (`image/build.sh`), among it the system
/// version (`version: MAJOR.MINOR.PATCH`). On the read-only root of the appliance.
pub const IMAGE_INFO: &str = "/usr/lib/wardbox-image-info";

/// The running system's version: the image's (`version:` in [`IMAGE_INFO`]), the version a
/// full bundle installs and the system floor counts. A box without that file (a dev box) runs
/// the agent's own version. An image file without a valid version is an error: the box must
/// not guess which version it runs before it compares bundles against it.
pub fn running_version() -> Result<Version, UpdateError> {
    running_version_from(Path::new(IMAGE_INFO))
}

fn running_version_from(info: &Path) -> Result<Version, UpdateError> {
    match std::fs::read_to_string(info) {
        Ok(text) => image_version(&text).map_err(|why| UpdateError::Tuf(format!("{}: {why}", info.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => env!("CARGO_PKG_VERSION")
            .parse()
            .map_err(|e| UpdateError::Tuf(format!("the agent's version {:?} is not MAJOR.MINOR.PATCH: {e}", env!("CARGO_PKG_VERSION")))),
        Err(e) => Err(UpdateError::io("reading the image's version", info)(e)),
    }
}

/// The `version:` line of the image information (pure).
pub fn image_version(info: &str) -> Result<Version, String> {
    let mut versions = info.lines().filter_map(|l| l.strip_prefix("version:")).map(str::trim);
    match (versions.next(), versions.next()) {
        (Some(v), None) => v.parse().map_err(|e| format!("the image's version: {e}")),
        (None, _) => Err("no `version:` line: the image does not say which system version it is".into()),
        (Some(_), Some(_)) => Err("more than one `version:` line".into()),
    }
}

/// What the box knows about itself, from its running image.
pub fn box_facts() -> Result<BoxFacts, UpdateError> {
    Ok(BoxFacts {
        product: PRODUCT.into(),
        architecture: std::env::consts::ARCH.into(),
        system_version: running_version()?,
        build_time: image_build_time(),
    })
}

/// When the running image was built, as far as the box can tell: the modification time of the
/// agent binary (set when the image is made, on a read-only root). A lower bound only; the
/// trusted time is the newest of this, the stored time floor and the clock.
fn image_build_time() -> Timestamp {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| Timestamp::try_from(t).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Which slot runs: `update.slots.running` in the dev profile, else the slot whose partition
/// the kernel command line's `root=PARTUUID=` names. Refuses when neither slot matches: an
/// install that cannot tell which slot runs writes neither.
pub fn running_slot(slots: &SlotsConfig) -> Result<SlotName, String> {
    if let Some(r) = slots.running {
        return Ok(r);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    let uuid = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root=PARTUUID="))
        .ok_or("the kernel command line names no root=PARTUUID=: cannot tell which slot runs, so no slot is written")?;
    let by_uuid = Path::new("/dev/disk/by-partuuid").join(uuid.to_ascii_lowercase());
    let root = std::fs::canonicalize(&by_uuid).map_err(|e| format!("{}: {e}", by_uuid.display()))?;
    for slot in [SlotName::A, SlotName::B] {
        if std::fs::canonicalize(slots.path(slot)).is_ok_and(|p| p == root) {
            return Ok(slot);
        }
    }
    Err(format!(
        "the running root {} is neither update.slots.a ({}) nor update.slots.b ({}): no slot is written",
        root.display(),
        slots.a.display(),
        slots.b.display()
    ))
}

/// This boot's identity (32 lowercase hex digits): systemd's `%b` when the unit hands it over
/// (`WARDBOX_BOOT_ID`), else the kernel's.
pub fn boot_id() -> Option<String> {
    let text = std::env::var("WARDBOX_BOOT_ID")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// Writes a file so that a crash leaves the old content or the new one (temporary file in the
/// same directory, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appliance_never_takes_its_running_slot_from_configuration() {
        let mut c = UpdateConfig::default();
        assert!(c.validate(Profile::Appliance).is_ok());
        c.slots.running = Some(SlotName::A);
        assert!(c.validate(Profile::Dev).is_ok());
        let err = c.validate(Profile::Appliance).expect_err("appliance").to_string();
        assert!(err.contains("update.slots.running"), "{err}");
        c.slots.running = None;
        c.slots.b = c.slots.a.clone();
        assert!(c.validate(Profile::Dev).expect_err("same slot").to_string().contains("update.slots.b"));
        let c = UpdateConfig { models_store: Some(PathBuf::from("relative")), ..UpdateConfig::default() };
        assert!(c.validate(Profile::Dev).expect_err("relative").to_string().contains("update.models_store"));
    }

    #[test]
    fn the_running_version_is_a_release_version() {
        assert!(running_version().is_ok());
    }

    #[test]
    fn the_running_version_is_the_images_when_the_image_says_it() {
        assert_eq!(image_version("image: wardbox\nversion: 0.2.0\nsource: abc\n"), Ok(Version::new(0, 2, 0)));
        for bad in ["image: wardbox\n", "version: 0.2\n", "version: 0.2.0\nversion: 0.3.0\n"] {
            assert!(image_version(bad).is_err(), "{bad:?}");
        }
        let dir = tempdir::TempDir::new().expect("dir");
        let info = dir.path().join("wardbox-image-info");
        // No file (a dev box): the agent's own version.
        assert_eq!(running_version_from(&info).expect("agent version").to_string(), env!("CARGO_PKG_VERSION"));
        std::fs::write(&info, "image: wardbox\nversion: 7.1.3\n").expect("write");
        assert_eq!(running_version_from(&info).expect("image version"), Version::new(7, 1, 3));
        std::fs::write(&info, "image: wardbox\n").expect("write");
        assert!(running_version_from(&info).is_err(), "an image that does not say its version");
    }
}
