//! Checkpoints of the chain head, kept outside the database.
//!
//! The chain alone cannot tell a log whose newest records were cut off from a log that simply
//! ended there. A checkpoint (seq, hash) written elsewhere — the journal, and a checkpoint log
//! on the state partition — vouches that the log reached that record; verification then
//! refuses a log that ends before it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The chain head at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub taken_at: String,
}

/// An append-only JSON-lines file of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointLog {
    path: PathBuf,
}

impl CheckpointLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a checkpoint durably and announce it in the journal.
    pub fn record(&self, seq: u64, hash: &str) -> std::io::Result<Checkpoint> {
        let checkpoint =
            Checkpoint { seq, hash: hash.to_string(), taken_at: jiff::Timestamp::now().to_string() };
        let mut line = serde_json::to_string(&checkpoint).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_all()?;
        tracing::info!(audit_checkpoint_seq = seq, audit_checkpoint_hash = %hash, "audit chain checkpoint");
        Ok(checkpoint)
    }

    /// Every checkpoint in the log; an absent log has none. A malformed line is an error:
    /// a checkpoint log that cannot be read must not be taken as "no checkpoints".
    pub fn read_all(&self) -> std::io::Result<Vec<Checkpoint>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let c: Checkpoint = serde_json::from_str(&line).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} line {}: {e}", self.path.display(), n + 1),
                )
            })?;
            out.push(c);
        }
        Ok(out)
    }
}
