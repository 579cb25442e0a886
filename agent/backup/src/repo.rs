//! One backup repository in restic's format, written and read with rustic_core: open or
//! initialise, back up a directory, list, check, restore, and apply the retention policy.
//!
//! Every operation opens the repository with the [`RepositoryKey`] as its password, so a
//! wrong key is refused before anything is read or written. No local cache is kept: the box
//! has one repository per destination and nothing of it should linger outside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustic_backend::BackendOptions;
use rustic_core::jiff;
use rustic_core::repofile::{KeyId, SnapshotFile};
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, KeyOptions, LocalDestination, LsOptions, OpenStatus,
    PathList, PruneOptions, Repository, RepositoryOptions, RestoreOptions, SnapshotOptions,
};

use zeroize::Zeroizing;

use crate::error::{BackupError, classify, io_error, is_io_error, refused_credentials};
use crate::progress::{Bars, RunProgress};
use crate::key::RepositoryKey;
use crate::retention::Retention;

/// Every snapshot stores its files under this path, whatever the staging directory was, so
/// that snapshots of one box form one group (rustic and restic pick the parent snapshot and
/// apply retention per group of host and paths) and a restore finds the files in one place.
pub const SNAPSHOT_ROOT: &str = "/wardbox";

/// The label every snapshot of the box carries.
pub const SNAPSHOT_LABEL: &str = "wardbox";

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A directory: a mounted USB disk on the box, any directory in tests.
    LocalDirectory(PathBuf),
    /// A restic REST server on the clinic LAN (`rest-server`, `rclone serve restic`): its URL
    /// (`http://10.1.5.30:8000/wardbox/` or `https://…`; no credentials in it), for https the
    /// CA that signed the server's certificate, if not a public one, and the HTTP basic
    /// authentication it asks for, if any (https only).
    RestServer { url: String, ca_file: Option<PathBuf>, credentials: Option<RestCredentials> },
}

/// HTTP basic authentication to a REST server (restic's `rest-server --htpasswd-file`,
/// `rclone serve restic --user/--pass` or `--htpasswd`): the user, and the file that holds the
/// password. The password is read from the file each time the repository is opened; it is in
/// no configuration, record, log line or error (errors name the file). Sent over https only,
/// since basic authentication sends it with every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredentials {
    pub user: String,
    /// A file (mode 0600, root's) holding the password on its first line.
    pub password_file: PathBuf,
}

impl RestCredentials {
    /// The password, read from its file: the first line, without its line ending.
    fn password(&self) -> Result<Zeroizing<String>, BackupError> {
        let unreadable = |reason: String| BackupError::CredentialsUnreadable { path: self.password_file.clone(), reason };
        let text = Zeroizing::new(std::fs::read_to_string(&self.password_file).map_err(|e| unreadable(e.to_string()))?);
        let password = Zeroizing::new(text.lines().next().unwrap_or_default().to_owned());
        if password.is_empty() {
            return Err(unreadable("it holds no password (the first line is empty)".into()));
        }
        Ok(password)
    }
}

/// `url` (`https://…`) with `user:password@` in its authority, each percent-encoded, for
/// rustic's REST backend (reqwest moves them into an `Authorization` header and out of the URL
/// it reports in errors). Refuses a plain http URL: the password would cross the LAN in clear.
fn url_with_credentials(url: &str, credentials: &RestCredentials) -> Result<Zeroizing<String>, BackupError> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(BackupError::CredentialsOverHttp { location: url.to_owned() });
    };
    let password = credentials.password()?;
    let mut with = Zeroizing::new(String::with_capacity(url.len() + credentials.user.len() + password.len() * 3 + 2));
    with.push_str("https://");
    percent_encode_into(&credentials.user, &mut with);
    with.push(':');
    percent_encode_into(&password, &mut with);
    with.push('@');
    with.push_str(rest);
    Ok(with)
}

/// Percent-encode every byte that is not unreserved in a URL (RFC 3986), so a password may
/// hold any character.
fn percent_encode_into(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// The directories rustic makes in a local repository (besides its `config` file).
const REPOSITORY_DIRECTORIES: [&str; 5] = ["data", "index", "snapshots", "keys", "locks"];

/// Attempts per request to a REST server (rustic waits 1 s, 2 s, … between them), so an
/// unreachable server fails a run in seconds, not minutes.
const REST_RETRIES: &str = "3";

impl Destination {
    /// How errors and records name the destination (a path or a URL; never a secret).
    pub fn location(&self) -> String {
        match self {
            Destination::LocalDirectory(path) => path.display().to_string(),
            Destination::RestServer { url, .. } => url.clone(),
        }
    }

    /// A readable directory, or a clear error (a stick that is not mounted or was pulled). A
    /// server is reached by [`Self::holds_repository`].
    fn ensure_reachable(&self) -> Result<(), BackupError> {
        match self {
            Destination::LocalDirectory(path) => match std::fs::read_dir(path) {
                Ok(_) => Ok(()),
                Err(e) if is_io_error(&e) => Err(io_error(&self.location(), "open the destination", &e)),
                Err(e) => Err(BackupError::DestinationUnavailable { path: path.clone(), reason: e.to_string() }),
            },
            Destination::RestServer { .. } => Ok(()),
        }
    }

    /// Whether the destination holds a repository (its `config` file); for a server, asking
    /// it, so an unreachable server is [`BackupError::ServerUnreachable`].
    fn holds_repository(&self) -> Result<bool, BackupError> {
        match self {
            // A disk that answers with an I/O error has not shown that it holds no repository.
            Destination::LocalDirectory(path) => match std::fs::metadata(path.join("config")) {
                Ok(meta) => Ok(meta.is_file()),
                Err(e) if is_io_error(&e) => Err(io_error(&self.location(), "open the destination", &e)),
                Err(_) => Ok(false),
            },
            Destination::RestServer { .. } => {
                let unreachable = |e: Box<rustic_core::RusticError>| {
                    if refused_credentials(e.as_ref()) {
                        return BackupError::CredentialsRefused { location: self.location() };
                    }
                    BackupError::ServerUnreachable {
                        location: self.location(),
                        reason: e.display_log().lines().next().unwrap_or_default().to_owned(),
                    }
                };
                Ok(unopened(self).map_err(|e| match e {
                    BackupError::Repository { message, .. } => BackupError::ServerUnreachable { location: self.location(), reason: message },
                    other => other,
                })?
                .config_id()
                .map_err(unreachable)?
                .is_some())
            }
        }
    }
}

/// What a finished backup reports (counts and sizes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot's id (hex), as `restic snapshots` shows it.
    pub id: String,
    pub time: jiff::Timestamp,
    pub tags: Vec<String>,
    /// Files and bytes the snapshot holds.
    pub files: u64,
    pub bytes: u64,
    /// Bytes this backup added to the repository after deduplication, before compression.
    pub bytes_added: u64,
    /// The same after compression: what the destination had to take.
    pub bytes_added_packed: u64,
}

impl SnapshotInfo {
    fn of(snap: &SnapshotFile) -> Self {
        let summary = snap.summary.clone().unwrap_or_default();
        SnapshotInfo {
            id: snap.id.to_hex().to_string(),
            time: snap.time.timestamp(),
            tags: snap.tags.iter().cloned().collect(),
            files: summary.total_files_processed,
            bytes: summary.total_bytes_processed,
            bytes_added: summary.data_added,
            bytes_added_packed: summary.data_added_packed,
        }
    }
}

/// The outcome of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Whether pack contents were read and verified, not only the index and trees.
    pub read_data: bool,
    /// Problems that damage the repository.
    pub errors: Vec<String>,
    /// Things worth fixing that do not damage it (e.g. a pack no index names, left by an
    /// interrupted backup; the next prune removes it).
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What forget + prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub kept: usize,
    pub forgotten: usize,
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub snapshot: SnapshotInfo,
    pub target: PathBuf,
}

/// An open repository.
#[derive(Debug)]
pub struct BackupRepository {
    destination: Destination,
    /// Taken while an operation holds the repository indexed and put back after it; `None`
    /// after an operation failed part way (open the repository again).
    repo: Option<Repository<OpenStatus>>,
}

fn repository_options() -> RepositoryOptions {
    RepositoryOptions::default().no_cache(true)
}

fn credentials(key: &RepositoryKey) -> Credentials {
    // rustic keeps the password in a plain `String` for as long as the `Credentials` live;
    // they are dropped as soon as the repository is open.
    Credentials::password(key.to_hex().as_str())
}

fn unopened(destination: &Destination) -> Result<Repository<()>, BackupError> {
    unopened_reporting(destination, None)
}

fn unopened_reporting(destination: &Destination, progress: Option<&Arc<RunProgress>>) -> Result<Repository<()>, BackupError> {
    let location = destination.location();
    let options = match destination {
        Destination::LocalDirectory(path) => BackendOptions::default().repository(path.to_string_lossy().into_owned()),
        Destination::RestServer { url, ca_file, credentials } => {
            let mut options = std::collections::BTreeMap::from([("retry".to_owned(), REST_RETRIES.to_owned())]);
            if let Some(ca) = ca_file {
                options.insert("cacert".to_owned(), ca.to_string_lossy().into_owned());
            }
            let url = match credentials {
                Some(credentials) => url_with_credentials(url, credentials)?,
                None => Zeroizing::new(url.clone()),
            };
            BackendOptions::default().repository(format!("rest:{}", url.as_str())).options(options)
        }
    };
    let backends = options.to_backends().map_err(|e| classify(&location, "open the destination", &e))?;
    match progress {
        Some(p) => Repository::new_with_progress(&repository_options(), &backends, Bars(p.clone())),
        None => Repository::new(&repository_options(), &backends),
    }
    .map_err(|e| classify(&location, "open the destination", &e))
}

impl BackupRepository {
    /// Create a new repository at an empty destination, encrypted under `key`.
    pub fn init(destination: &Destination, key: &RepositoryKey) -> Result<Self, BackupError> {
        Self::init_reporting(destination, key, None)
    }

    fn init_reporting(destination: &Destination, key: &RepositoryKey, progress: Option<&Arc<RunProgress>>) -> Result<Self, BackupError> {
        destination.ensure_reachable()?;
        let location = destination.location();
        if destination.holds_repository()? {
            return Err(BackupError::AlreadyARepository { location });
        }
        let repo = unopened_reporting(destination, progress)?
            .init(&credentials(key), &KeyOptions::default(), &ConfigOptions::default())
            .map_err(|e| classify(&location, "initialise", &e))?;
        Ok(Self { destination: destination.clone(), repo: Some(repo) })
    }

    /// Open an existing repository; a wrong key is [`BackupError::WrongKey`].
    pub fn open(destination: &Destination, key: &RepositoryKey) -> Result<Self, BackupError> {
        Self::open_reporting(destination, key, None)
    }

    /// [`Self::open`], reporting the bytes of long steps (restore, reading packs) to `progress`.
    pub fn open_reporting(destination: &Destination, key: &RepositoryKey, progress: Option<&Arc<RunProgress>>) -> Result<Self, BackupError> {
        destination.ensure_reachable()?;
        let location = destination.location();
        if !destination.holds_repository()? {
            return Err(BackupError::NotARepository { location });
        }
        let repo = unopened_reporting(destination, progress)?.open(&credentials(key)).map_err(|e| classify(&location, "open", &e))?;
        Ok(Self { destination: destination.clone(), repo: Some(repo) })
    }

    /// Open the repository, creating it first when the destination holds none.
    pub fn open_or_init(destination: &Destination, key: &RepositoryKey) -> Result<(Self, bool), BackupError> {
        Self::open_or_init_reporting(destination, key, None)
    }

    /// [`Self::open_or_init`], reporting the bytes of long steps (backing up) to `progress`.
    pub fn open_or_init_reporting(
        destination: &Destination,
        key: &RepositoryKey,
        progress: Option<&Arc<RunProgress>>,
    ) -> Result<(Self, bool), BackupError> {
        destination.ensure_reachable()?;
        if destination.holds_repository()? {
            Ok((Self::open_reporting(destination, key, progress)?, false))
        } else {
            Ok((Self::init_reporting(destination, key, progress)?, true))
        }
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    fn open_repo(&self) -> Result<&Repository<OpenStatus>, BackupError> {
        self.repo.as_ref().ok_or_else(|| self.closed())
    }

    fn take_repo(&mut self) -> Result<Repository<OpenStatus>, BackupError> {
        self.repo.take().ok_or_else(|| self.closed())
    }

    fn closed(&self) -> BackupError {
        BackupError::Repository {
            location: self.destination.location(),
            operation: "use the repository",
            message: "an earlier operation failed part way; open the repository again".into(),
        }
    }

    fn fail(&self, operation: &'static str) -> impl Fn(Box<rustic_core::RusticError>) -> BackupError + '_ {
        move |e| {
            self.lost_destination(Some(&e.display_log()))
                .unwrap_or_else(|| classify(&self.destination.location(), operation, &e))
        }
    }

    /// A local destination whose repository is no longer there after an operation on it (its
    /// `config` file is gone): the disk was pulled or unmounted, or the directory removed, while
    /// the run was writing. rustic's error (a missing directory, an I/O error) would not say so,
    /// and worse, rustic makes missing directories as it writes: after the disk went away it
    /// goes on writing packs, indexes and the snapshot into the empty mount point, on the
    /// system disk, and reports success. What it wrote there (only its own directories, under
    /// a path that holds no repository) is removed again.
    fn lost_destination(&self, rustic_error: Option<&str>) -> Option<BackupError> {
        let Destination::LocalDirectory(path) = &self.destination else { return None };
        // Only a `config` that is not there means the repository went away. A disk that answers
        // with an I/O error (failing, still mounted) still holds the repository: its
        // directories must not be removed, and rustic's error says what failed.
        match std::fs::symlink_metadata(path.join("config")) {
            Ok(_) => return None,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return None,
            Err(_) => {}
        }
        let mut reason = "the repository went away while it was being written (disk pulled or unmounted, or the directory \
                          removed); no snapshot was recorded"
            .to_owned();
        if let Some(first) = rustic_error.and_then(|e| e.lines().next()) {
            reason.push_str(": ");
            reason.push_str(first);
        }
        let strays: Vec<_> = REPOSITORY_DIRECTORIES.iter().map(|d| path.join(d)).filter(|d| d.is_dir()).collect();
        for stray in strays {
            match std::fs::remove_dir_all(&stray) {
                Ok(()) => reason.push_str(&format!("; removed {} written there after it went away", stray.display())),
                Err(e) => reason.push_str(&format!("; {} was written there after it went away and could not be removed: {e}", stray.display())),
            }
        }
        Some(BackupError::DestinationUnavailable { path: path.clone(), reason })
    }

    /// Back up the contents of `source` (a directory) as one snapshot under [`SNAPSHOT_ROOT`].
    ///
    /// A snapshot file is written only after every pack and index it needs is written, so a
    /// backup that fails part way (full destination, pulled stick) records no snapshot; the
    /// packs it did write are named by no index and the next prune removes them.
    pub fn backup(&mut self, source: &Path, tags: &[&str]) -> Result<SnapshotInfo, BackupError> {
        if !source.is_dir() {
            return Err(BackupError::SourceNotADirectory { path: source.to_owned() });
        }
        let repo = self.take_repo()?.to_indexed_ids().map_err(self.fail("read the index"))?;
        let mut options = SnapshotOptions::default().label(SNAPSHOT_LABEL.to_owned());
        for tag in tags {
            options = options.add_tags(tag).map_err(self.fail("tag the snapshot"))?;
        }
        let snap = options.to_snapshot().map_err(self.fail("prepare the snapshot"))?;
        let paths = PathList::from_iter([source.to_path_buf()]).sanitize().map_err(|e| BackupError::Repository {
            location: self.destination.location(),
            operation: "read the source path",
            message: e.to_string(),
        })?;
        let options = BackupOptions::default().as_path(PathBuf::from(SNAPSHOT_ROOT));
        let backed_up = repo.backup(&options, &paths, snap);
        // Checked on success too: a destination that went away mid-run may "succeed" (above).
        if let Some(lost) = self.lost_destination(backed_up.as_ref().err().map(|e| e.display_log()).as_deref()) {
            return Err(lost);
        }
        let snap = backed_up.map_err(self.fail("back up"))?;
        self.repo = Some(repo.drop_index());
        Ok(SnapshotInfo::of(&snap))
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>, BackupError> {
        let mut snaps = self.open_repo()?.get_all_snapshots().map_err(self.fail("list snapshots"))?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps.iter().map(SnapshotInfo::of).collect())
    }

    /// Check the repository's structure (index, trees, snapshots) and, with `read_data`,
    /// read every pack and verify every blob's authentication tag and hash.
    pub fn check(&self, read_data: bool) -> Result<CheckReport, BackupError> {
        let results = self.open_repo()?.check(CheckOptions::default().read_data(read_data)).map_err(self.fail("check"))?;
        let mut report = CheckReport { read_data, errors: Vec::new(), warnings: Vec::new() };
        for (level, problem) in &results.0 {
            // CheckErrorLevel is not nameable outside rustic_core; its Debug form is its name.
            if format!("{level:?}") == "Warn" {
                report.warnings.push(problem.to_string());
            } else {
                report.errors.push(problem.to_string());
            }
        }
        Ok(report)
    }

    /// Restore the latest snapshot into `target` (absent or empty). The repository is checked
    /// first, packs included: a damaged repository is refused before anything is written, so a
    /// restore never produces a silently partial store.
    pub fn restore_latest(&mut self, target: &Path) -> Result<RestoreOutcome, BackupError> {
        let location = self.destination.location();
        if target.exists() && std::fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(BackupError::TargetNotEmpty { path: target.to_owned() });
        }
        let latest = self.latest()?;
        let report = self.check(true)?;
        if let Some(first) = report.errors.first() {
            return Err(BackupError::Damaged { location, count: report.errors.len(), first: first.clone() });
        }
        let repo = self.take_repo()?.to_indexed().map_err(self.fail("read the index"))?;
        let node = repo
            .node_from_snapshot_and_path(&latest, SNAPSHOT_ROOT)
            .map_err(self.fail("find the files in the snapshot"))?;
        let listing = repo.ls(&node, &LsOptions::default()).map_err(self.fail("list the snapshot"))?;
        let mut target_text = target.to_string_lossy().into_owned();
        if !target_text.ends_with('/') {
            target_text.push('/');
        }
        let dest = LocalDestination::new(&target_text, true, false).map_err(self.fail("prepare the restore target"))?;
        let options = RestoreOptions::default().no_ownership(true);
        let plan = repo.prepare_restore(&options, listing.clone(), &dest, false).map_err(self.fail("plan the restore"))?;
        repo.restore(plan, &options, listing, &dest).map_err(self.fail("restore"))?;
        self.repo = Some(repo.drop_index());
        Ok(RestoreOutcome { snapshot: SnapshotInfo::of(&latest), target: target.to_owned() })
    }

    fn latest(&self) -> Result<SnapshotFile, BackupError> {
        let snaps = self.open_repo()?.get_all_snapshots().map_err(self.fail("list snapshots"))?;
        snaps
            .into_iter()
            .max_by(|a, b| a.time.cmp(&b.time))
            .ok_or_else(|| BackupError::NoSnapshot { location: self.destination.location() })
    }

    /// The repository's id (its `config` file's), the same whichever key opened it.
    pub fn repository_id(&self) -> Result<String, BackupError> {
        Ok(self.open_repo()?.config().id.to_hex().to_string())
    }

    /// The id of the key file the repository was opened with (`restic key list` shows ids).
    pub fn opened_with_key_id(&self) -> Result<String, BackupError> {
        self.open_repo()?.key_id().as_ref().map(|id| id.to_hex().to_string()).ok_or_else(|| BackupError::Repository {
            location: self.destination.location(),
            operation: "name the key in use",
            message: "rustic did not say which key file opened the repository".into(),
        })
    }

    /// The ids of every key file in the repository, sorted. Each wraps the same master key
    /// under another password.
    pub fn key_ids(&self) -> Result<Vec<String>, BackupError> {
        let mut ids: Vec<String> = self.open_repo()?.list::<KeyId>().map_err(self.fail("list the keys"))?.map(|id| id.to_hex().to_string()).collect();
        ids.sort();
        Ok(ids)
    }

    /// Add `key` as another password of the repository (a new key file wrapping the same master
    /// key, as `restic key add` does); returns the new key file's id. The data is not
    /// re-encrypted: whoever kept a copy of an old key file and its password can still unwrap
    /// the master key from that copy.
    pub fn add_key(&self, key: &RepositoryKey) -> Result<String, BackupError> {
        let id = self.open_repo()?.add_key(key.to_hex().as_str(), &KeyOptions::default()).map_err(self.fail("add a key"))?;
        if let Some(lost) = self.lost_destination(None) {
            return Err(lost);
        }
        Ok(id.to_hex().to_string())
    }

    /// Remove the key file `id`. The key the repository was opened with cannot be removed.
    pub fn remove_key(&self, id: &str) -> Result<(), BackupError> {
        let key_id: KeyId = id.parse().map_err(|_| BackupError::Repository {
            location: self.destination.location(),
            operation: "remove a key",
            message: format!("{id:?} is not a key file id"),
        })?;
        self.open_repo()?.delete_key(&key_id).map_err(self.fail("remove a key"))?;
        if let Some(lost) = self.lost_destination(None) {
            return Err(lost);
        }
        Ok(())
    }

    /// [`Self::apply_retention`] as of the current time.
    pub fn apply_retention_now(&self, policy: &Retention) -> Result<RetentionOutcome, BackupError> {
        self.apply_retention(policy, &jiff::Zoned::now())
    }

    /// Forget the snapshots the policy no longer keeps, as of `now`, then prune the data only
    /// they used. Pruning also removes packs an interrupted backup left behind.
    pub fn apply_retention(&self, policy: &Retention, now: &jiff::Zoned) -> Result<RetentionOutcome, BackupError> {
        let snaps = self.open_repo()?.get_all_snapshots().map_err(self.fail("list snapshots"))?;
        let decided = policy.decide(snaps, now).map_err(self.fail("apply the retention policy"))?;
        let kept = decided.iter().filter(|s| s.keep).count();
        let forget: Vec<_> = decided.iter().filter(|s| !s.keep).map(|s| s.snapshot.id).collect();
        if !forget.is_empty() {
            self.open_repo()?.delete_snapshots(&forget).map_err(self.fail("forget snapshots"))?;
        }
        // The box is the repository's only writer, so deleting at once is safe; without it a
        // pack marked for deletion would wait 23 hours.
        let options = PruneOptions::default().instant_delete(true);
        let plan = self.open_repo()?.prune_plan(&options).map_err(self.fail("plan the prune"))?;
        self.open_repo()?.prune(&options, plan).map_err(self.fail("prune"))?;
        Ok(RetentionOutcome { kept, forgotten: forget.len() })
    }
}
