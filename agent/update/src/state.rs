//! What the box keeps between updates, in a directory given as a parameter (on the box: a
//! directory on the encrypted data volume, so a stolen disk cannot be edited offline without the
//! TPM, and a restored old state partition is caught by the TPM NV counter the agent will add).
//!
//! ```text
//! <state>/root.json    the newest TUF root the box trusts (starts as the image's root)
//! <state>/floors.json  version floors per track and the time floor
//! ```
//!
//! Every write is atomic (temporary file, fsync, rename, fsync of the directory), so a power
//! cut leaves the old file or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::decide::Floors;
use crate::error::UpdateError;

const ROOT_FILE: &str = "root.json";
const FLOORS_FILE: &str = "floors.json";

/// The state directory.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

impl State {
    /// Opens a provisioned state directory; refuses one without a trusted root.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, UpdateError> {
        let dir = dir.into();
        if !dir.join(ROOT_FILE).is_file() {
            return Err(UpdateError::NoTrustedRoot(dir));
        }
        Ok(State { dir })
    }

    /// Provisions a new state directory with the image's root (first boot). Refuses to replace a
    /// root that is already there: the trusted root only moves forward through verified rotation.
    pub fn provision(dir: impl Into<PathBuf>, image_root: &[u8]) -> Result<Self, UpdateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(UpdateError::io("creating state directory", &dir))?;
        let root = dir.join(ROOT_FILE);
        if root.exists() {
            return Err(UpdateError::Io {
                what: "provisioning",
                path: root,
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a trusted root is already there"),
            });
        }
        serde_json::from_slice::<tough::schema::Signed<tough::schema::Root>>(image_root)
            .map_err(|e| UpdateError::Corrupt(format!("the image's root.json does not parse: {e}")))?;
        write_atomic(&root, image_root)?;
        Ok(State { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of the trusted root.
    pub fn trusted_root(&self) -> Result<Vec<u8>, UpdateError> {
        let path = self.dir.join(ROOT_FILE);
        fs::read(&path).map_err(UpdateError::io("reading trusted root", path))
    }

    /// The floors; a box that never accepted a bundle has none.
    pub fn floors(&self) -> Result<Floors, UpdateError> {
        let path = self.dir.join(FLOORS_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UpdateError::Io {
                what: "reading floors",
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Floors::default()),
            Err(e) => Err(UpdateError::io("reading floors", path)(e)),
        }
    }

    pub fn save_floors(&self, floors: &Floors) -> Result<(), UpdateError> {
        let mut bytes = serde_json::to_vec_pretty(floors).map_err(|e| UpdateError::Tuf(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(&self.dir.join(FLOORS_FILE), &bytes)
    }

    pub(crate) fn save_root(&self, root_json: &[u8]) -> Result<(), UpdateError> {
        write_atomic(&self.dir.join(ROOT_FILE), root_json)
    }
}

/// Writes a file so that a crash leaves either the old content or the new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), UpdateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(UpdateError::io("creating temporary file", dir))?;
    tmp.write_all(bytes).map_err(UpdateError::io("writing", tmp.path().to_owned()))?;
    tmp.as_file().sync_all().map_err(UpdateError::io("syncing", tmp.path().to_owned()))?;
    tmp.persist(path).map_err(|e| UpdateError::io("renaming into place", path)(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(UpdateError::io("syncing directory", dir))?;
    Ok(())
}
