//! The side effects: commit the ruleset with `nft`, read the live ruleset back, verify,
//! repair. The only module that runs a program.
//!
//! `nft` runs from an absolute path given by the caller (the agent checks it at startup) and
//! in the caller's network namespace: the traffic tests call these functions from a thread
//! that entered a test namespace, so they exercise exactly this code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nftables::helper::{self, NftablesError};
use serde::Serialize;

use crate::history::{CounterHistory, HistoryError};
use crate::ruleset::{Counters, Ruleset};
use crate::verify::{Drift, LiveRuleset, VerifyError, restored};

/// Why the firewall could not be applied, read or verified. Every variant means the egress
/// policy is not known to be enforced: callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The nft path must be absolute so that `PATH` cannot choose the program.
    #[error("nft path `{0}` is not absolute; give the full path, e.g. /usr/sbin/nft")]
    NftPathNotAbsolute(PathBuf),
    /// No nft at that path.
    #[error("nft not found at `{path}` ({reason}); install the Debian package `nftables`")]
    NftMissing { path: PathBuf, reason: String },
    /// nft ran and failed; its stderr says why (often: not root / no CAP_NET_ADMIN).
    #[error("`{path} {action}` failed: {stderr}")]
    NftFailed {
        path: PathBuf,
        action: &'static str,
        stderr: String,
    },
    /// nft could not be started or its output was not text.
    #[error("could not run `{path}`: {reason}")]
    NftExecution { path: PathBuf, reason: String },
    /// The live ruleset could not be parsed.
    #[error(transparent)]
    Unreadable(#[from] VerifyError),
    /// The last counter readings could not be read or kept: resets would go unnoticed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The ruleset was committed but the kernel still differs from the intent. Something is
    /// rewriting the ruleset concurrently, or this nft/kernel prints rules differently.
    #[error("after applying, the live ruleset still differs from the intended one: {}", join(.0))]
    StillDrifted(Vec<Drift>),
}

fn join(drift: &[Drift]) -> String {
    let parts: Vec<String> = drift.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// What [`Firewall::apply`] did. Applying an unchanged ruleset touches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// The kernel already enforced exactly the intended ruleset; nothing was written.
    Unchanged,
    /// The ruleset was (re)written; `repaired` is the drift found before writing (just
    /// `TableMissing` on first boot).
    Applied { repaired: Vec<Drift> },
}

/// The result of a read-only check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Empty when the kernel enforces exactly the intended ruleset.
    pub drift: Vec<Drift>,
    /// Packets and bytes dropped by each chain, for the admin page.
    pub counters: Counters,
}

impl Status {
    pub fn is_enforced(&self) -> bool {
        self.drift.is_empty()
    }
}

/// The `nft` program, by absolute path.
#[derive(Debug, Clone)]
pub struct Nft {
    path: PathBuf,
}

impl Nft {
    /// Check that `path` is absolute and is a file. Done once at startup, so that a missing
    /// package is reported before anything else happens.
    pub fn new(path: impl Into<PathBuf>) -> Result<Nft, FirewallError> {
        let path = path.into();
        if !path.is_absolute() {
            return Err(FirewallError::NftPathNotAbsolute(path));
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Nft { path }),
            Ok(_) => Err(FirewallError::NftMissing {
                path,
                reason: "not a file".into(),
            }),
            Err(e) => Err(FirewallError::NftMissing {
                reason: e.to_string(),
                path,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, action: &'static str, error: NftablesError) -> FirewallError {
        match error {
            NftablesError::NftFailed { stderr, .. } => FirewallError::NftFailed {
                path: self.path.clone(),
                action,
                stderr: stderr.trim().to_owned(),
            },
            other => FirewallError::NftExecution {
                path: self.path.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// `nft -j list ruleset`.
    pub fn list_ruleset(&self) -> Result<LiveRuleset, FirewallError> {
        let json =
            helper::get_current_ruleset_raw(Some(self.path.as_os_str()), ["list", "ruleset"])
                .map_err(|e| self.error("-j list ruleset", e))?;
        Ok(LiveRuleset::parse(&json)?)
    }

    /// `nft -j -f -` with one batch: one kernel transaction, all or nothing.
    ///
    /// Run here rather than through `nftables::helper::apply_ruleset_raw`, which lets nft's
    /// stderr go to ours: the reason nft gives (e.g. "Operation not permitted") must end up
    /// in the error, the stage report and the alert, not only in the journal.
    pub fn commit(&self, batch: &serde_json::Value) -> Result<(), FirewallError> {
        let execution = |e: std::io::Error| FirewallError::NftExecution {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut child = Command::new(&self.path)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(execution)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error (nft exited early) is reported through its exit status below.
            let _ = stdin.write_all(batch.to_string().as_bytes());
        }
        let output = child.wait_with_output().map_err(execution)?;
        if output.status.success() {
            return Ok(());
        }
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = format!("exited with {}", output.status);
        }
        Err(FirewallError::NftFailed {
            path: self.path.clone(),
            action: "-j -f -",
            stderr,
        })
    }
}

/// The egress firewall: an intended ruleset and the nft that enforces it.
#[derive(Debug, Clone)]
pub struct Firewall {
    nft: Nft,
    ruleset: Ruleset,
}

impl Firewall {
    pub fn new(nft: Nft, ruleset: Ruleset) -> Firewall {
        Firewall { nft, ruleset }
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    pub fn nft(&self) -> &Nft {
        &self.nft
    }

    /// Read the live ruleset and compare it with the intent. Changes nothing.
    pub fn status(&self) -> Result<Status, FirewallError> {
        self.status_since(None)
    }

    /// [`Firewall::status`], also reporting each drop counter that went down since `last`,
    /// the previous reading in this boot.
    pub fn status_since(&self, last: Option<&Counters>) -> Result<Status, FirewallError> {
        let live = self.nft.list_ruleset()?;
        Ok(Status {
            drift: live.drift_since(&self.ruleset, last),
            counters: live.counters(),
        })
    }

    /// [`Firewall::status_since`] the last reading in `history`, then keep this reading.
    pub fn status_recorded(&self, history: &CounterHistory) -> Result<Status, FirewallError> {
        let last = history.last()?;
        let status = self.status_since(last.as_ref())?;
        history.record(last.as_ref(), &status.counters)?;
        Ok(status)
    }

    /// Make the kernel enforce the intended ruleset: if it already does, do nothing
    /// ([`ApplyOutcome::Unchanged`]); otherwise replace our table (and delete every foreign
    /// table found to drift) in one transaction, carrying the drop counters over, then read
    /// back and verify. Errors mean the policy is not known to be enforced.
    pub fn apply(&self) -> Result<ApplyOutcome, FirewallError> {
        self.apply_since(None)
    }

    /// [`Firewall::apply`], also treating a drop counter that went down since `last` as
    /// drift: the repair writes back the last reading plus what was counted since, so the
    /// evidence of blocked attempts survives a reset, and a deleted table.
    pub fn apply_since(&self, last: Option<&Counters>) -> Result<ApplyOutcome, FirewallError> {
        let live = self.nft.list_ruleset()?;
        let drift = live.drift_since(&self.ruleset, last);
        if drift.is_empty() {
            return Ok(ApplyOutcome::Unchanged);
        }
        let counters = match last {
            Some(last) => restored(last, &live.counters()),
            None => live.counters(),
        };
        let batch = self.ruleset.commit_batch(&counters, &live.foreign_tables());
        self.nft.commit(&batch)?;
        let after = self.nft.list_ruleset()?.drift_since(&self.ruleset, last);
        if !after.is_empty() {
            return Err(FirewallError::StillDrifted(after));
        }
        Ok(ApplyOutcome::Applied { repaired: drift })
    }

    /// [`Firewall::apply_since`] the last reading in `history`, then keep the reading taken
    /// after it.
    pub fn apply_recorded(&self, history: &CounterHistory) -> Result<ApplyOutcome, FirewallError> {
        let last = history.last()?;
        let outcome = self.apply_since(last.as_ref())?;
        let now = self.nft.list_ruleset()?.counters();
        history.record(last.as_ref(), &now)?;
        Ok(outcome)
    }

    /// Remove our table (used by `wardbox firewall` in the dev profile and by tests). Fails
    /// if the table is absent.
    pub fn remove(&self) -> Result<(), FirewallError> {
        let batch = serde_json::json!({"nftables": [
            {"delete": {"table": {"family": "inet", "name": crate::ruleset::TABLE}}}
        ]});
        self.nft.commit(&batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_path_must_be_absolute_and_exist() {
        let err = Nft::new("nft").expect_err("relative refused");
        assert_eq!(
            err.to_string(),
            "nft path `nft` is not absolute; give the full path, e.g. /usr/sbin/nft"
        );
        let err = Nft::new("/nonexistent/nft").expect_err("missing refused");
        assert!(
            err.to_string()
                .starts_with("nft not found at `/nonexistent/nft` ("),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("install the Debian package `nftables`"),
            "{err}"
        );
        let err = Nft::new("/").expect_err("directory refused");
        assert!(err.to_string().contains("not a file"), "{err}");
    }

    #[test]
    fn a_refusing_nft_is_reported_with_its_stderr() {
        // A stand-in nft that refuses like nft does without CAP_NET_ADMIN.
        let dir = std::env::temp_dir().join(format!("wardbox-fw-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fake = dir.join("nft");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule: Operation not permitted' >&2\nexit 1\n",
        )
        .expect("write fake nft");
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&fake)
            .status()
            .expect("chmod");
        let nft = Nft::new(&fake).expect("exists");
        let err = nft
            .commit(&serde_json::json!({"nftables": []}))
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "`{} -j -f -` failed: Error: Could not process rule: Operation not permitted",
                fake.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_nft_is_reported_with_its_stderr() {
        // /bin/false stands in for an nft that refuses (e.g. no CAP_NET_ADMIN): the error
        // must say which command failed, and apply must fail closed.
        let nft = Nft::new("/bin/false").expect("exists");
        let err = nft.list_ruleset().expect_err("false fails");
        assert!(
            err.to_string()
                .starts_with("`/bin/false -j list ruleset` failed"),
            "{err}"
        );
    }
}
