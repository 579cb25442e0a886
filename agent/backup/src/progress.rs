//! How far a running backup or restore is, for the admin page: rustic reports the bytes of its
//! long steps (backing up, restoring, reading packs) through its progress bars; [`RunProgress`]
//! keeps the current step's title, bytes done and bytes to do, readable from another thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustic_core::{Progress, ProgressBars, ProgressType, RusticProgress};

/// The current step of a run: what it does, bytes done, bytes to do (0: not known yet).
#[derive(Debug, Default)]
pub struct RunProgress {
    title: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
}

/// A reading of [`RunProgress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressReading {
    pub step: String,
    pub done: u64,
    pub total: u64,
}

impl ProgressReading {
    /// Whole percent done, when the total is known.
    pub fn percent(&self) -> Option<u64> {
        (self.total > 0).then(|| (self.done.min(self.total) * 100) / self.total)
    }
}

impl RunProgress {
    pub fn read(&self) -> ProgressReading {
        ProgressReading {
            step: self.title.lock().map(|t| t.clone()).unwrap_or_default(),
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }

    fn start(&self, title: &str) {
        if let Ok(mut t) = self.title.lock() {
            title.trim_end_matches('.').clone_into(&mut t);
        }
        self.done.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
    }
}

/// rustic's progress bars, feeding one [`RunProgress`]: only byte counts (the long steps);
/// spinners and counters stay hidden.
#[derive(Debug, Clone)]
pub(crate) struct Bars(pub(crate) Arc<RunProgress>);

#[derive(Debug)]
struct Bytes(Arc<RunProgress>);

impl RusticProgress for Bytes {
    fn is_hidden(&self) -> bool {
        // Not hidden: rustic then measures the source first, so the total is known.
        false
    }
    fn set_length(&self, len: u64) {
        self.0.total.store(len, Ordering::Relaxed);
    }
    fn set_title(&self, title: &str) {
        self.0.start(title);
    }
    fn inc(&self, inc: u64) {
        self.0.done.fetch_add(inc, Ordering::Relaxed);
    }
    fn finish(&self) {
        let total = self.0.total.load(Ordering::Relaxed);
        if total > 0 {
            self.0.done.store(total, Ordering::Relaxed);
        }
    }
}

impl ProgressBars for Bars {
    fn progress(&self, progress_type: ProgressType, prefix: &str) -> Progress {
        match progress_type {
            ProgressType::Bytes => {
                self.0.start(prefix);
                Progress::new(Bytes(self.0.clone()))
            }
            ProgressType::Spinner | ProgressType::Counter => Progress::hidden(),
        }
    }
}
