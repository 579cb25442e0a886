//! The admin Updates page's service: bundles on the inserted USB sticks, inspected; an apply
//! through the same steps as `wardbox update apply` (`super::flow`), verified before it starts
//! and installed on a thread of its own while the page polls its progress; the status; the
//! install receipt. Every step is audited as the signed-in admin.
//!
//! Sticks: on the appliance, udev and `wardbox-usb-mount` mount each inserted stick's filesystem
//! read-only, nosuid, nodev, noexec under `update.usb_dir` (`/run/wardbox/usb/<device>`); a dev
//! box names any directory. A bundle is the stick's root or one directory below it that holds
//! `metadata/`. Names the page sends back are matched against what is found, never joined to a
//! path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;

use serde_json::json;
use wardbox_update::inspect;
use wardbox_update::slot::Phase;

use super::flow::{self, Refused};
use super::helper::phase_name;
use super::{UpdatePaths, box_facts, tpm_floor};
use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::config::Config;
use crate::usb::helper::{Action as UsbAction, Request as UsbRequest};
use crate::usb::window::Purpose as UsbPurpose;
use crate::web::updates::{ApplyRefused, ApplyView, BundleView, ReceiptFile, SignerView, TargetView, UpdateService, UpdatesOverview, UsbWindowView};

/// At most this many bundles are listed (a stick full of directories is not walked further).
const MAX_BUNDLES: usize = 32;

/// The Updates page's service on a box.
#[derive(Debug)]
pub struct BoxUpdates {
    config: Config,
    data_dir: PathBuf,
    audit: AuditLog,
    apply: Arc<Mutex<Option<ApplyState>>>,
}

/// The apply running now or the last one.
#[derive(Debug, Clone)]
struct ApplyState {
    view: ApplyView,
    phase_started: Instant,
}

impl BoxUpdates {
    pub fn new(config: Config, data_dir: PathBuf, audit: AuditLog) -> Self {
        BoxUpdates { config, data_dir, audit, apply: Arc::new(Mutex::new(None)) }
    }

    fn paths(&self) -> UpdatePaths {
        UpdatePaths::new(&self.data_dir)
    }

    fn record(audit: &AuditLog, actor: &str, detail: serde_json::Value) -> Result<(), String> {
        audit.append_blocking(AuditEvent::new(EventKind::AdminAction, actor, detail)).map(drop).map_err(|e| e.to_string())
    }

    fn runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start a runtime: {e}"))
    }
}

/// A stick or bundle directory name the page may show and send back.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A real directory (not a link) at `path`.
fn is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Every bundle under the sticks' directory: (id, path), sorted by id.
pub fn find_bundles(usb_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = match std::fs::read_dir(usb_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", usb_dir.display())),
    };
    let mut found = Vec::new();
    for stick in entries.filter_map(Result::ok) {
        let Some(stick_name) = stick.file_name().to_str().map(str::to_owned).filter(|n| plain_name(n)) else { continue };
        let stick_path = stick.path();
        if !is_dir(&stick_path) {
            continue;
        }
        if is_dir(&stick_path.join("metadata")) {
            found.push((stick_name.clone(), stick_path.clone()));
            continue;
        }
        let Ok(inner) = std::fs::read_dir(&stick_path) else { continue };
        for dir in inner.filter_map(Result::ok) {
            let Some(name) = dir.file_name().to_str().map(str::to_owned).filter(|n| plain_name(n)) else { continue };
            let path = dir.path();
            if is_dir(&path) && is_dir(&path.join("metadata")) {
                found.push((format!("{stick_name}/{name}"), path));
            }
        }
    }
    found.sort();
    found.truncate(MAX_BUNDLES);
    Ok(found)
}

/// A byte count for people: bytes, KiB, MiB or GiB (the console's progress line uses it too).
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f >= K * K * K {
        format!("{:.2} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{n} B")
    }
}

impl BoxUpdates {
    /// What inspect shows about one bundle, for this box.
    fn inspect_one(&self, rt: &tokio::runtime::Runtime, id: &str, dir: &Path) -> BundleView {
        let mut view = BundleView {
            id: id.to_owned(),
            sha256: None,
            kind: String::new(),
            version: String::new(),
            installed: String::new(),
            root_version: String::new(),
            signers: Vec::new(),
            targets: Vec::new(),
            total: String::new(),
            notes: None,
            refused: None,
        };
        let paths = self.paths();
        let inspected = paths.state_for_reading(&self.config.update).and_then(|(state, throwaway)| {
            let facts = box_facts()?;
            let i = rt.block_on(inspect::inspect_for_box(dir, &state, &facts, Some(jiff::Timestamp::now())))?;
            Ok((i, state, throwaway))
        });
        let (i, state, _throwaway) = match inspected {
            Ok(x) => x,
            Err(e) => {
                view.refused = Some(format!("{e} (exit code {})", e.exit_code()));
                return view;
            }
        };
        let b = &i.bundle;
        let m = &b.manifest;
        view.sha256 = Some(b.manifest_sha256.clone());
        view.kind = m.kind.to_string();
        view.version = m.version.to_string();
        view.installed = flow::installed(&state, m.kind).ok().flatten().map_or_else(|| "none".to_owned(), |v| v.to_string());
        view.root_version = b.root_version.to_string();
        view.signers = b
            .signers
            .iter()
            .map(|r| SignerView {
                role: r.role.to_string(),
                version: r.version,
                expires: r.expires.to_string(),
                keys: format!(
                    "{} of {} needed: {}",
                    r.valid.len(),
                    r.threshold,
                    r.valid.iter().map(|k| &k[..16.min(k.len())]).collect::<Vec<_>>().join(", ")
                ),
            })
            .collect();
        view.targets = b
            .targets
            .iter()
            .map(|t| TargetView {
                role: t.role.map_or("manifest", |r| r.as_str()).to_owned(),
                name: t.name.clone(),
                size: bytes(t.length),
            })
            .collect();
        view.total = bytes(b.targets.iter().map(|t| t.length).sum());
        view.notes = i.release_notes.clone();
        view.refused = match &i.verdict {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        };
        if view.refused.is_none() && m.kind == wardbox_update::BundleKind::Full {
            let tpm = tpm_floor::read(tpm_floor::tcti(&self.config).as_deref(), &paths.state_dir());
            let state_floor = state.floors().ok().and_then(|f| f.system);
            view.refused = tpm_floor::check_system_bundle(&tpm, m.version, state_floor).err().map(|r| r.message);
        }
        // Its UKI must unlock this box's data; a check this process cannot make is left to the
        // install (the root helper makes it before the slot is touched).
        if view.refused.is_none() && m.kind == wardbox_update::BundleKind::Full {
            view.refused = rt.block_on(super::uki::inspect(&self.config, b)).err();
        }
        view
    }
}

/// How long the page's USB window stays open: time to plug in a stick, read the bundle and
/// confirm it; the install itself closes it.
const USB_WINDOW_MINUTES: u32 = 15;

impl BoxUpdates {
    fn usb_window_view(&self) -> UsbWindowView {
        let controls = self.config.update.usb_window_helper.is_some();
        if !controls {
            return UsbWindowView { controls, open: false, words: format!("none on this box: bundles are read from {}", self.config.update.usb_dir.display()) };
        }
        let now = Timestamp::now().as_second();
        match crate::usb::window::read(&self.config.update.usb_window_file) {
            Ok(Some(w)) if w.is_open_at(now) => UsbWindowView {
                controls,
                open: true,
                words: format!(
                    "open for {} {} by {} until {}",
                    if w.purpose == UsbPurpose::Update { "an" } else { "a" },
                    w.purpose,
                    w.opened_by,
                    Timestamp::from_second(w.until).map(|t| t.strftime("%H:%M:%S UTC").to_string()).unwrap_or_default()
                ),
            },
            Ok(Some(_)) => UsbWindowView { controls, open: false, words: "closing: its time is up".into() },
            Ok(None) => UsbWindowView { controls, open: false, words: "closed: no USB stick is let in".into() },
            Err(e) => UsbWindowView { controls, open: false, words: format!("closed ({e})") },
        }
    }

    /// After an install from the page, the window it came through closes (as the helper's
    /// own rules would at its time anyway): the stick is taken out and the drivers unloaded.
    fn close_window_after_install(config: &Config, outcome: &str) {
        let Some(socket) = &config.update.usb_window_helper else { return };
        let request = UsbRequest { action: UsbAction::Close, purpose: UsbPurpose::Update, minutes: USB_WINDOW_MINUTES, actor: "update-finished".into() };
        match crate::usb::helper::call(socket, &request) {
            Ok(a) if a.ok => tracing::info!("USB window after the install ({outcome}): {}", a.message),
            Ok(a) => tracing::warn!("the USB window did not close after the install ({outcome}): {}", a.message),
            Err(e) => tracing::warn!("the USB window did not close after the install ({outcome}): {e}"),
        }
    }
}

impl UpdateService for BoxUpdates {
    fn overview(&self) -> Result<UpdatesOverview, String> {
        let status = super::status::read(&self.config, &self.data_dir)?;
        let usb_dir = &self.config.update.usb_dir;
        let (found, sticks_error) = match find_bundles(usb_dir) {
            Ok(f) => (f, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let rt = Self::runtime()?;
        let bundles = found.iter().map(|(id, dir)| self.inspect_one(&rt, id, dir)).collect();
        Ok(UpdatesOverview {
            usb_dir: usb_dir.display().to_string(),
            sticks_error,
            bundles,
            status: status.lines,
            any_install: status.any_install,
            apply: self.progress(),
            usb_window: self.usb_window_view(),
        })
    }

    fn start_apply(&self, id: &str, sha256: &str, actor: &str) -> Result<(), ApplyRefused> {
        if self.progress().is_some_and(|p| p.running) {
            return Err(ApplyRefused::Busy("another update is being applied; wait for it to finish".into()));
        }
        let found = find_bundles(&self.config.update.usb_dir).map_err(ApplyRefused::NotFound)?;
        let Some((_, dir)) = found.into_iter().find(|(found_id, _)| found_id == id) else {
            return Err(ApplyRefused::NotFound(format!("no bundle {id:?} on an inserted stick (was it removed?); nothing was changed")));
        };
        let rt = Self::runtime().map_err(|e| ApplyRefused::Refused { message: e, exit_code: 1 })?;
        let paths = self.paths();
        let audit = self.audit.clone();
        let mut record = |detail: serde_json::Value| Self::record(&audit, actor, detail);
        let refused = |r: Refused| ApplyRefused::Refused { message: r.message, exit_code: r.exit_code };
        let checked = flow::verify(&rt, &self.config, &paths, &dir, &mut record).map_err(refused)?;
        if !checked.bundle.manifest_sha256.eq_ignore_ascii_case(sha256) {
            let message = format!(
                "the bundle {id} on the stick is not the one shown (manifest sha256 {} now, {sha256} confirmed); look at it again before applying; nothing was changed",
                checked.bundle.manifest_sha256
            );
            record(json!({ "action": "update_refused", "bundle_sha256": checked.bundle.manifest_sha256, "reason": message, "exit_code": 1 }))
                .map_err(|e| ApplyRefused::Refused { message: e, exit_code: 1 })?;
            return Err(ApplyRefused::NotFound(message));
        }
        let m = &checked.bundle.manifest;
        let view = ApplyView {
            bundle: id.to_owned(),
            sha256: checked.bundle.manifest_sha256.clone(),
            kind: m.kind.to_string(),
            version: m.version.to_string(),
            by: actor.to_owned(),
            running: true,
            phase: "starting".into(),
            done: 0,
            total: checked.total,
            percent: 0,
            words: format!("0 B of {}", bytes(checked.total)),
            ..ApplyView::default()
        };
        *self.apply.lock().map_err(|_| ApplyRefused::Busy("the progress lock is poisoned".into()))? =
            Some(ApplyState { view, phase_started: Instant::now() });

        let (config, shared, actor) = (self.config.clone(), self.apply.clone(), actor.to_owned());
        let helper = config.update.install_helper.clone().filter(|_| checked.bundle.manifest.kind == wardbox_update::BundleKind::Full);
        let spawned = if let Some(socket) = helper {
            // The slots and the ESP are the install helper's (super::helper): it takes the apply
            // lock, finds and verifies the bundle again and installs it as this admin.
            drop(checked);
            let request = super::helper::Request { bundle: id.to_owned(), sha256: sha256.to_owned(), actor };
            std::thread::Builder::new().name("update-helper".into()).spawn(move || {
                use super::helper::Event;
                let mut on_event = |event: &Event| {
                    if let Event::Progress { phase, done, total } = event {
                        show_progress(&shared, phase, *done, *total);
                    }
                };
                let result = match super::helper::call(&socket, &request, &mut on_event) {
                    Ok(Event::Done { outcome, lines }) => Ok((outcome, lines)),
                    Ok(Event::Refused { message, exit_code }) => Err(Refused { message, exit_code }),
                    Ok(other) => Err(Refused::operational(format!("the install helper ended with {other:?}"))),
                    Err(message) => Err(Refused::operational(message)),
                };
                if let Ok((outcome, _)) = &result {
                    Self::close_window_after_install(&config, outcome);
                }
                finish(&shared, result);
            })
        } else {
            std::thread::Builder::new().name("update-apply".into()).spawn(move || {
                let mut record = |detail: serde_json::Value| Self::record(&audit, &actor, detail);
                let progress_state = shared.clone();
                let mut progress = move |phase: Phase, done: u64, total: u64| show_progress(&progress_state, phase_name(phase), done, total);
                let result = flow::install(&rt, &config, &paths, &checked, &actor, &mut record, &mut progress);
                drop(checked);
                if let Ok(done) = &result {
                    Self::close_window_after_install(&config, done.outcome.as_str());
                }
                finish(&shared, result.map(|done| (done.outcome.as_str().to_owned(), done.lines)));
            })
        };
        if let Err(e) = spawned {
            if let Ok(mut guard) = self.apply.lock() {
                *guard = None;
            }
            return Err(ApplyRefused::Refused { message: format!("cannot start the install: {e}; nothing was changed"), exit_code: 1 });
        }
        Ok(())
    }

    fn progress(&self) -> Option<ApplyView> {
        self.apply.lock().ok().and_then(|g| g.as_ref().map(|s| s.view.clone()))
    }

    fn usb_window(&self, open: bool, actor: &str) -> Result<String, String> {
        let Some(socket) = &self.config.update.usb_window_helper else {
            return Err(format!("this box has no USB window (update.usb_window_helper is not set); it reads bundles from {}", self.config.update.usb_dir.display()));
        };
        let action = if open { UsbAction::Open } else { UsbAction::Close };
        let answer = crate::usb::helper::call(socket, &UsbRequest { action, purpose: UsbPurpose::Update, minutes: USB_WINDOW_MINUTES, actor: actor.to_owned() });
        let (ok, message) = match &answer {
            Ok(a) => (a.ok, a.message.clone()),
            Err(e) => (false, e.clone()),
        };
        let what = if open { "usb_window_open" } else { "usb_window_close" };
        Self::record(&self.audit, actor, json!({ "action": what, "ok": ok, "message": message }))?;
        if ok { Ok(message) } else { Err(message) }
    }

    fn receipt(&self, actor: &str) -> Result<ReceiptFile, String> {
        let tcti = super::receipt::tcti(&self.config);
        let receipt = super::receipt::make(&self.data_dir, actor, tcti.as_deref())?;
        Self::record(&self.audit, actor, json!({ "action": "update_receipt", "bundle_sha256": receipt.install.bundle_sha256, "signed": receipt.signed }))?;
        let short = receipt.install.bundle_sha256.get(..12).unwrap_or("bundle").to_owned();
        Ok(ReceiptFile { file_name: format!("wardbox-update-receipt-{}-{short}.json", receipt.install.to), bytes: receipt.document })
    }
}

/// Shows an install's progress on the page: phase, bytes, rate and time left.
fn show_progress(shared: &Mutex<Option<ApplyState>>, phase: &str, done: u64, total: u64) {
    let Ok(mut guard) = shared.lock() else { return };
    let Some(s) = guard.as_mut() else { return };
    if s.view.phase != phase {
        s.view.phase = phase.to_owned();
        s.phase_started = Instant::now();
    }
    let secs = s.phase_started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let left = if done >= total {
        "done".to_owned()
    } else if rate > 0.0 {
        format!("{:.0} s left", total.saturating_sub(done) as f64 / rate)
    } else {
        "time left not known yet".to_owned()
    };
    s.view.done = done;
    s.view.total = total;
    s.view.percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
    s.view.words = format!("{} of {}, {}/s, {left}", bytes(done), bytes(total), bytes(rate as u64));
}

/// Ends an install on the page: its outcome and lines, or why it failed.
fn finish(shared: &Mutex<Option<ApplyState>>, result: Result<(String, Vec<String>), Refused>) {
    let Ok(mut guard) = shared.lock() else { return };
    let Some(s) = guard.as_mut() else { return };
    s.view.running = false;
    match result {
        Ok((outcome, lines)) => {
            s.view.outcome = outcome;
            s.view.lines = lines;
            s.view.percent = 100;
        }
        Err(r) => {
            s.view.outcome = if r.exit_code == super::apply::EXIT_HEALTH_FAILED { "rolled-back" } else { "failed" }.to_owned();
            s.view.message = format!("{} (exit code {})", r.message, r.exit_code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_listed() {
        for ok in ["sdb1", "wardbox-1.4.0", "a_b.c"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "ü", &"x".repeat(101)] {
            assert!(!plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn bundles_are_the_stick_root_or_one_level_down_and_links_are_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let usb = dir.path();
        std::fs::create_dir_all(usb.join("sdb1/metadata")).expect("mkdir");
        std::fs::create_dir_all(usb.join("sdc1/wardbox-1.2.0/metadata")).expect("mkdir");
        std::fs::create_dir_all(usb.join("sdc1/photos")).expect("mkdir");
        std::fs::create_dir_all(usb.join("sdc1/.hidden/metadata")).expect("mkdir");
        std::os::unix::fs::symlink(usb.join("sdc1/wardbox-1.2.0"), usb.join("sdc1/link")).expect("link");
        let found: Vec<String> = find_bundles(usb).expect("find").into_iter().map(|(id, _)| id).collect();
        assert_eq!(found, ["sdb1", "sdc1/wardbox-1.2.0"]);
        assert_eq!(find_bundles(&usb.join("nothing")).expect("absent"), []);
    }
}
