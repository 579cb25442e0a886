//! The report as data: what [`crate::evaluate`] returns and every output renders.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::facts::{Inventory, StageFact, Waiver};

/// The version of the report's data shape (the JSON schema `schema/report-v1.schema.json`).
/// Raised whenever a field is removed or changes meaning; adding an optional field keeps it.
pub const FORMAT_VERSION: u32 = 1;

/// An item's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured live and found in order.
    Pass,
    /// Measured live and found wrong, or the measurement could not be made.
    Fail,
    /// Not a measured failure, but something a person must do (a missing or expired
    /// attestation, a certificate about to expire).
    NeedsAttention,
    /// An administrative or physical control vouched for by a named person, still valid.
    Attested,
    /// Does not apply to this box (with the reason), or an accepted exception (a waiver).
    NotApplicable,
}

impl Status {
    /// Whether the item is in order for an auditor (nothing to do).
    pub fn in_order(self) -> bool {
        matches!(self, Status::Pass | Status::Attested | Status::NotApplicable)
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NeedsAttention => "needs attention",
            Status::Attested => "attested",
            Status::NotApplicable => "not applicable",
        }
    }
}

/// How an item is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The box measures it live at generation time; attestations are never accepted for it.
    Measured,
    /// A person vouches for it on the Reports page (the box cannot observe it).
    Attestation,
}

/// One observed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub name: String,
    pub value: String,
}

/// What was checked, how, when, and the values seen. Never PHI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub check: String,
    pub how: String,
    pub at: Timestamp,
    pub values: Vec<Observed>,
}

/// One checklist item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stable identifier (also the OSCAL control id), e.g. "access-automatic-logoff".
    pub id: String,
    pub title: String,
    /// The section (safeguard) it is shown under; one of [`Report::sections`].
    pub section: String,
    /// Control references: HIPAA citations and go-live checklist lines.
    pub references: Vec<String>,
    pub method: Method,
    pub status: Status,
    /// Why the status is what it is, in one sentence.
    pub reason: String,
    pub evidence: Vec<Evidence>,
    /// What to do, when the item is not in order.
    pub remediation: Option<String>,
    /// The accepted exception applied to this item, if any.
    pub waiver: Option<Waiver>,
}

/// A group of items: one safeguard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub reference: String,
}

/// Counts per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: u32,
    pub fail: u32,
    pub needs_attention: u32,
    pub attested: u32,
    pub not_applicable: u32,
}

/// An item whose status differs from the previous report's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub item: String,
    pub title: String,
    /// Absent for an item the previous report did not have.
    pub from: Option<Status>,
    /// Absent for an item this report no longer has.
    pub to: Option<Status>,
}

impl Change {
    /// Regressions first: an item that went from passing to failing, then any other change for
    /// the worse, then new or removed items, then improvements.
    fn rank(&self) -> u8 {
        match (self.from, self.to) {
            (Some(Status::Pass), Some(Status::Fail)) => 0,
            (Some(f), Some(t)) if f.in_order() && !t.in_order() => 1,
            (Some(_), Some(t)) if !t.in_order() => 2,
            (None, _) | (_, None) => 3,
            _ => 4,
        }
    }
}

/// Which report the changes are counted from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousReport {
    pub generated_at: Timestamp,
    /// The previous report's quoted digest ("sha256:…"), when it was a signed report.
    pub digest: Option<String>,
}

/// Who reaches what, over which channel, under which control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFlow {
    pub from: String,
    pub to: String,
    pub channel: String,
    pub purpose: String,
    /// The control and the live evidence for it.
    pub control: String,
}

/// The whole report. Pure data: the same facts at the same time give the same report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub format_version: u32,
    pub box_name: String,
    pub profile: String,
    pub generated_at: Timestamp,
    pub summary: Summary,
    pub previous: Option<PreviousReport>,
    /// Changes since [`Report::previous`], regressions first.
    pub changes: Vec<Change>,
    pub sections: Vec<Section>,
    pub items: Vec<Item>,
    pub inventory: Inventory,
    pub boot: Vec<StageFact>,
    pub data_flows: Vec<DataFlow>,
}

impl Report {
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }

    /// Fill [`Report::previous`] and [`Report::changes`] from the report generated before this
    /// one. `previous_digest` is that report's quoted digest, when it had one.
    pub fn compare_with(&mut self, previous: &Report, previous_digest: Option<String>) {
        let mut changes = Vec::new();
        for item in &self.items {
            let before = previous.item(&item.id).map(|p| p.status);
            if before != Some(item.status) {
                changes.push(Change { item: item.id.clone(), title: item.title.clone(), from: before, to: Some(item.status) });
            }
        }
        for old in &previous.items {
            if self.item(&old.id).is_none() {
                changes.push(Change { item: old.id.clone(), title: old.title.clone(), from: Some(old.status), to: None });
            }
        }
        // Stable sort keeps checklist order within a rank, so the list is deterministic.
        changes.sort_by_key(Change::rank);
        self.changes = changes;
        self.previous = Some(PreviousReport { generated_at: previous.generated_at, digest: previous_digest });
    }
}

impl Summary {
    pub fn count(items: &[Item]) -> Self {
        let mut s = Summary::default();
        for item in items {
            match item.status {
                Status::Pass => s.pass += 1,
                Status::Fail => s.fail += 1,
                Status::NeedsAttention => s.needs_attention += 1,
                Status::Attested => s.attested += 1,
                Status::NotApplicable => s.not_applicable += 1,
            }
        }
        s
    }
}
