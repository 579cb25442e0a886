//! `inspect`: what a bundle holds and who signed it, in words, and (on a box) whether this box
//! would take it. Reads the stick through the same verification as an install; writes nothing,
//! not even to the state directory.

use std::fmt::Write as _;
use std::path::Path;

use jiff::Timestamp;

use crate::decide::{BoxFacts, TrustedTime, check_expiry, decide};
use crate::error::UpdateError;
use crate::manifest::ContentRole;
use crate::state::State;
use crate::transport::StickTransport;
use crate::verify::{Bundle, load_bundle_via};

/// Release notes longer than this are cut in the report (the full text is on the stick).
const MAX_NOTES: u64 = 64 * 1024;

#[derive(Debug)]
pub struct Inspection {
    pub bundle: Bundle,
    pub release_notes: Option<String>,
    /// On a box: would it be applied, and if not, why.
    pub verdict: Option<Result<(), String>>,
}

/// Inspects a bundle against a root (a workstation checking what it built, or a box).
pub async fn inspect(dir: &Path, trusted_root: &[u8]) -> Result<Inspection, UpdateError> {
    let bundle = load_bundle_via(dir, trusted_root, None, StickTransport).await?;
    let release_notes = notes(&bundle).await?;
    Ok(Inspection { bundle, release_notes, verdict: None })
}

/// Inspects a bundle on a box: also says whether this box would apply it.
pub async fn inspect_for_box(
    dir: &Path,
    state: &State,
    facts: &BoxFacts,
    clock: Option<Timestamp>,
) -> Result<Inspection, UpdateError> {
    let mut inspection = inspect(dir, &state.trusted_root()?).await?;
    let floors = state.floors()?;
    let time = TrustedTime { build_time: facts.build_time, floor: floors.time, clock };
    let b = &inspection.bundle;
    let verdict = check_expiry(&b.expiries, b.manifest.created, &time).and_then(|()| decide(&b.manifest, facts, &floors));
    inspection.verdict = Some(verdict.map_err(|r| r.to_string()));
    Ok(inspection)
}

async fn notes(bundle: &Bundle) -> Result<Option<String>, UpdateError> {
    let Ok(target) = bundle.target_for(ContentRole::ReleaseNotes) else {
        return Ok(None);
    };
    if target.length > MAX_NOTES {
        return Ok(Some(format!("({} bytes of release notes; longer than this report shows)", target.length)));
    }
    let bytes = bundle.read_small(target, MAX_NOTES).await?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The report, as `inspect` prints it.
pub fn render(i: &Inspection) -> String {
    let b = &i.bundle;
    let m = &b.manifest;
    let mut s = String::new();
    let _ = writeln!(s, "bundle     {} {} {} (sha256 of manifest {})", m.product, m.kind, m.version, b.manifest_sha256);
    let _ = writeln!(s, "applies to {} {} and later, built {}", m.compatibility.architecture, m.min_starting_version, m.created);
    let _ = writeln!(s, "root       version {}", b.root_version);
    for r in &b.signers {
        let _ = writeln!(
            s,
            "signed     {:<9} v{:<12} expires {}  {} of {} needed: {}",
            r.role,
            r.version,
            r.expires,
            r.valid.len(),
            r.threshold,
            r.valid.iter().map(|k| &k[..16.min(k.len())]).collect::<Vec<_>>().join(", ")
        );
    }
    let total: u64 = b.targets.iter().map(|t| t.length).sum();
    let _ = writeln!(s, "contents   {} targets, {} bytes", b.targets.len(), total);
    for t in &b.targets {
        let role = t.role.map_or("manifest", |r| r.as_str());
        let _ = writeln!(
            s,
            "  {:<16} {:>14}  {}  {}{}",
            role,
            t.length,
            &t.sha256[..16.min(t.sha256.len())],
            t.name,
            t.path.as_ref().map(|p| format!(" -> {p}")).unwrap_or_default()
        );
    }
    if let Some(notes) = &i.release_notes {
        let _ = writeln!(s, "release notes:");
        for line in notes.lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    match &i.verdict {
        Some(Ok(())) => {
            let _ = writeln!(s, "this box:  would apply it");
        }
        Some(Err(why)) => {
            let _ = writeln!(s, "this box:  would refuse it: {why}");
        }
        None => {}
    }
    s
}
