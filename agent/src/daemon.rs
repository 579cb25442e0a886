//! `wardbox serve`: run the boot spine, then serve until SIGTERM/SIGINT.
//!
//! Wiring only: each stage's work is in `crate::stages` and the decisions in `crate::boot`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::audit::{AuditEvent, AuditLog, CheckpointLog, EventKind, WriterThread};
use crate::clinical::pool::StorePool;
use crate::clinical::{self, RagClinical};
use crate::boot::{BootLog, StageName, StageReport};
use crate::config::Config;
use crate::stages;
use crate::store::{Opened, Store};
use crate::web::{self, AppState, Health};
use crate::{audit, notify};

/// How often GPU health is re-read after boot.
const GPU_RECHECK: Duration = Duration::from_secs(10);
/// How often the daemon looks whether this month's compliance report is still to be made, and
/// how long after start it first looks (a box just started is busy, and a short-lived dev or
/// test box never makes one).
const MONTHLY_REPORT_CHECK: Duration = Duration::from_secs(3600);
const MONTHLY_REPORT_FIRST: Duration = Duration::from_secs(600);

/// How long in-flight requests get to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a stopping agent waits for the alert feed to save the detector's position.
const ALERT_FEED_STOP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("boot halted at the {stage} stage: {reason}")]
    Halted { stage: StageName, reason: String },
    #[error("cannot write the status file {path}: {source}")]
    StatusFile { path: PathBuf, source: std::io::Error },
    #[error("the HTTP server failed: {0}")]
    Server(std::io::Error),
}

/// What the boot left open for serving.
#[derive(Debug)]
pub struct Booted {
    pub audit: AuditLog,
    pub writer: WriterThread,
    pub store: Store,
    pub checkpoints: CheckpointLog,
    /// The GPU probe, re-run periodically; it keeps the health state machines between runs.
    pub gpu: Arc<dyn stages::gpu::GpuProbe>,
    /// The engine client (and its supervisor); `None` when no engine is configured.
    pub engine: Option<stages::engine::EngineHandle>,
    /// Store connections for retrieval and answers.
    pub clinical_store: Arc<StorePool>,
    /// The store key: backups open connections of their own and copy it into the snapshot.
    pub store_key: crate::store::StoreKey,
}

/// Where the agent keeps the last health snapshot for `wardbox status`.
pub fn status_file(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Where the running agent says which engine it uses, so operator commands reach the same one
/// on a box whose endpoint is chosen at run time (`wardbox dev` picks a free port).
pub fn engine_file(state_dir: &Path) -> PathBuf {
    state_dir.join("engine.json")
}

/// The contents of [`engine_file`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedEngine {
    /// The agent that wrote it: a file left by an agent that is gone is not used.
    pub pid: u32,
    pub endpoint: String,
}

/// Publish the engine endpoint in use (temporary file + rename, so a reader never sees half).
fn publish_engine(path: &Path, endpoint: &str) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(&PublishedEngine { pid: std::process::id(), endpoint: endpoint.to_owned() })
        .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

pub fn checkpoint_log(state_dir: &Path) -> CheckpointLog {
    CheckpointLog::new(state_dir.join("audit-checkpoints.jsonl"))
}

/// Run the security stages and those that need no network: config, unlock, firewall, store,
/// GPU, engine. Returns the log in every case, and the open resources when nothing failed.
pub async fn boot(config: &Config) -> (BootLog, Option<Booted>) {
    let mut log = BootLog::new(config.profile);
    notify::status("booting");
    log.run(StageName::Config, || {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| format!("cannot create state_dir {}: {e}", config.state_dir.display()))?;
        let keys = stages::unlock::check_secure_boot_keys(&config.volume)?;
        Ok(((), StageReport::ok(format!("profile {}; {keys}", config.profile))))
    });
    let unlocker = stages::unlock::unlocker(&config.volume, &config.state_dir);
    let unlocked = log.run(StageName::Unlock, || unlocker.unlock());
    let firewall = stages::firewall::firewall(&config.firewall, &config.state_dir);
    log.run(StageName::Firewall, || firewall.apply().map(|r| ((), r)));
    let opened = log.run(StageName::Store, || {
        let volume = unlocked.as_ref().ok_or("the volume is not unlocked")?;
        open_store(config, volume)
    });
    let audit_writer = opened.map(|(store, path)| {
        let volume = unlocked.as_ref().map(|v| &v.store_key);
        let started = volume.ok_or_else(|| "no store key".to_string()).and_then(|key| {
            let audit = AuditLog::start(&path, key).map_err(|e| e.to_string())?;
            let pool = StorePool::open(&path, key, config.clinical.connections)
                .map_err(|e| format!("cannot open the retrieval index's connections: {e}"))?;
            Ok((audit, pool))
        });
        (store, started)
    });
    // The probe keeps each GPU's health history, so the periodic re-check reuses it.
    let gpu: Arc<dyn stages::gpu::GpuProbe> = Arc::from(stages::gpu::probe(&config.gpu));
    log.run(StageName::Gpu, || gpu.probe());
    // The readiness gate: the stage waits until the engine answers (or its timeout).
    let engine = log.run_async(StageName::Engine, stages::engine::start(&config.engine)).await.flatten();

    let Some((store, Ok(((audit, writer), clinical_store)))) = audit_writer else {
        return (log, None);
    };
    // The stages ran before the audit log could be opened: record them now, in order.
    for record in log.records() {
        let event = AuditEvent::new(
            EventKind::BootStage,
            "system",
            json!({ "stage": record.stage, "outcome": record.outcome, "reason": record.reason, "duration_ms": record.duration_ms }),
        );
        if let Err(e) = audit.append(event).await {
            tracing::error!("cannot audit the boot: {e}");
            return (log, None);
        }
    }
    if log.halted().is_some() {
        return (log, None);
    }
    let Some(store_key) = unlocked.as_ref().map(|v| crate::store::StoreKey::from_bytes(*v.store_key.expose())) else {
        return (log, None);
    };
    let checkpoints = checkpoint_log(&config.state_dir);
    (log, Some(Booted { audit, writer, store, checkpoints, gpu, engine, clinical_store, store_key }))
}

fn open_store(
    config: &Config,
    volume: &stages::unlock::UnlockedVolume,
) -> Result<((Store, PathBuf), StageReport), String> {
    let path = volume.data_dir.join(&config.store.file_name);
    let (mut store, opened) = Store::open_or_create(&path, &volume.store_key).map_err(|e| e.to_string())?;
    let applied = store.migrate().map_err(|e| e.to_string())?;
    let version = store.schema_version().map_err(|e| e.to_string())?;
    let what = match opened {
        Opened::Created => "created",
        Opened::Existing => "opened",
    };
    let detail = if applied.is_empty() {
        format!("store {what} at schema version {version}")
    } else {
        format!("store {what}, migrated to schema version {version} (applied {applied:?})")
    };
    Ok(((store, path), StageReport::ok(detail)))
}

/// Boot, then serve the HTTP surface until a stop signal.
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    let started_at = jiff::Timestamp::now().to_string();
    let (mut log, booted) = boot(&config).await;
    let status_path = status_file(&config.state_dir);

    let Some(booted) = booted else {
        let health = Health::from_boot(config.profile, &log, started_at);
        write_status(&status_path, &health)?;
        let (stage, reason) = halt_reason(&log);
        notify::status(&format!("FAILED at {stage}: {reason}"));
        return Err(DaemonError::Halted { stage, reason });
    };

    // The UI's certificate (the local CA is provisioned here on first start) and listeners.
    let listener = log.run_async(StageName::Serve, web::tls::bind(&config.web, &config.state_dir)).await;
    let health = Health::from_boot(config.profile, &log, started_at);
    write_status(&status_path, &health)?;
    let Some(listener) = listener else {
        let (stage, reason) = halt_reason(&log);
        return Err(DaemonError::Halted { stage, reason });
    };

    let Booted { audit, writer, store, checkpoints, gpu, engine, clinical_store, store_key } = booted;
    // The store lives in the data directory, and so does the update state.
    let data_dir = store.path().parent().map(Path::to_path_buf);
    // Backups: the nightly schedule and the admin page's buttons (docs/backup.md).
    let backups = data_dir.as_ref().map(|data_dir| {
        let paths = crate::backup::service::BoxPaths {
            store_path: store.path().to_path_buf(),
            data_dir: data_dir.clone(),
            state_dir: config.state_dir.clone(),
            config_file: config.source_file.clone(),
        };
        Arc::new(crate::backup::service::BoxBackups::new(&config, paths, &store_key, audit.clone()))
    });
    drop(store_key);
    let store = Arc::new(std::sync::Mutex::new(store));
    let reports = Arc::new(crate::cli::ConfiguredReports::new(config.clone()));
    let mut ui = web::Ui::new(store.clone(), audit.clone(), &config.web)
        .with_checkpoints(checkpoints.clone())
        .with_egress(web::egress::for_firewall(&config.firewall))
        // The Reports page generates with the same code as `wardbox report generate`.
        .with_reports(reports.clone())
        // The weekly activity review reads the clinic's hours and limits from `[alerts]`.
        .with_alert_rules(config.alerts.clone());
    if let Some(backups) = &backups {
        ui = ui.with_backups(backups.clone());
    }
    // Updates from a USB stick: the admin Updates page (docs/update.md).
    if let Some(data_dir) = &data_dir {
        ui = ui.with_updates(Arc::new(crate::update::service::BoxUpdates::new(config.clone(), data_dir.clone(), audit.clone())));
    }
    // Retrieval answers only with an engine; without one every clinical page says so (503).
    if let Some(engine) = &engine {
        let rag = RagClinical::new(clinical_store.clone(), engine.clone(), config.clinical.clone(), tokio::runtime::Handle::current());
        ui = ui.with_clinical(Arc::new(rag));
        if config.clinical.demo_records {
            tokio::spawn(clinical::demo::seed(clinical_store.clone(), engine.clone(), config.clinical.clone()));
        }
    }
    // Operator commands (`wardbox records import`) embed through the same engine.
    let engine_path = engine_file(&config.state_dir);
    match (&engine, &config.engine.endpoint) {
        (Some(_), Some(endpoint)) => {
            if let Err(e) = publish_engine(&engine_path, endpoint) {
                tracing::error!("cannot write {}: {e}; operator commands will not find the engine", engine_path.display());
            }
        }
        _ => {
            let _ = std::fs::remove_file(&engine_path);
        }
    }
    let state = AppState::with_ui(health, ui).with_metrics(Arc::new(web::metrics::GpuMetrics(gpu.clone())));
    let (stop_tx, stop_rx) = watch::channel(false);
    let _ = audit
        .append(AuditEvent::new(EventKind::Lifecycle, "system", json!({ "event": "serving", "listen": config.web.listen })))
        .await;
    // Every stage passed: a pending system update has now booted healthy, or the box fell back.
    if let Some(data_dir) = &data_dir {
        settle_update(&config, data_dir, &audit, &state, &status_path).await;
        // In the background: a major release takes thousands of increments on a slow TPM.
        tokio::spawn(raise_tpm_floor(config.clone(), data_dir.clone(), audit.clone(), state.clone(), status_path.clone()));
    }
    // USB storage events from the image's udev rule and mount helper: each one audited.
    tokio::spawn(audit_usb_events(config.update.usb_events_dir.clone(), audit.clone(), stop_rx.clone()));

    let background = tokio::spawn(background_checks(
        store.clone(),
        ChainWatch { log: audit.clone(), checkpoints, verified: audit::VerifiedHeadFile::in_state_dir(&config.state_dir) },
        state.clone(),
        status_path.clone(),
        Duration::from_secs(config.audit.checkpoint_interval_secs),
        stop_rx.clone(),
    ));
    tokio::spawn(monthly_reports(reports, state.clone(), status_path.clone(), stop_rx.clone()));
    // Firewall drift: re-verify on schedule, repair, alert and audit each finding.
    let (fw_state, fw_status) = (state.clone(), status_path.clone());
    let _firewall_watch = stages::firewall::spawn_watch(
        &config.firewall,
        &config.state_dir,
        audit.clone(),
        move |message| raise(&fw_state, &fw_status, "firewall", message),
        stop_rx.clone(),
    );
    // GPU health: every change of state is an alert and an audit record, never silent.
    let (gpu_state, gpu_status, gpu_audit) = (state.clone(), status_path.clone(), audit.clone());
    tokio::spawn(stages::gpu::recheck(gpu.clone(), GPU_RECHECK, stop_rx.clone(), move |t| {
        if t.to == wardbox_gpu::health::HealthState::Healthy {
            tracing::info!("{t}");
        } else {
            raise(&gpu_state, &gpu_status, "gpu", t.to_string());
        }
        let event = AuditEvent::new(EventKind::SecurityAlert, "system", json!({ "source": "gpu", "transition": t }));
        let audit = gpu_audit.clone();
        tokio::spawn(async move {
            if let Err(e) = audit.append(event).await {
                tracing::error!("cannot audit a GPU health change: {e}");
            }
        });
    }));
    // Backups: nightly; a failed or missed run is an alert (through the audit chain to the
    // detector and the outbox, and in the health), cleared by the next good one.
    if let Some(backups) = backups {
        // The health only, not the UI: the UI holds the backups, so a callback holding the UI
        // would keep the audit writer alive forever and the agent would never finish stopping.
        let (b_state, b_status) = (AppState { ui: None, ..state.clone() }, status_path.clone());
        backups.set_health(Arc::new(move |change| match change {
            crate::backup::service::AlertChange::Raise { reason, .. } => raise(&b_state, &b_status, "backup", reason.clone()),
            crate::backup::service::AlertChange::Clear => clear(&b_state, &b_status, "backup"),
        }));
        tokio::spawn(crate::backup::service::run_schedule(backups, stop_rx.clone()));
    }
    // Free space on the data volume: low space degrades the health and raises one alert per
    // crossing, before the volume is full (docs/web.md, "Low space on the data volume").
    if let Some(data_dir) = &data_dir {
        let watch = crate::disk::watch::Watch { data_dir: data_dir.clone(), config: config.disk.clone(), store: store.clone(), audit: audit.clone() };
        // The health only, not the UI (which holds an audit handle), as for the backups.
        let (d_state, d_status) = (AppState { ui: None, ..state.clone() }, status_path.clone());
        tokio::spawn(crate::disk::watch::run(watch, move |report| disk_report(&d_state, &d_status, report), stop_rx.clone()));
    }
    // Conversations past the clinic's retention period: deleted on schedule (docs/rag.md).
    tokio::spawn(clinical::purge_conversations_hourly(clinical_store.clone(), config.clinical.conversation_retention_days, stop_rx.clone()));
    // Alerts: the detector follows the audit chain (after replaying it), stores and audits each
    // alert, and delivers the outbox to the clinic's collector and relay.
    let (alert_state, alert_status) = (state.clone(), status_path.clone());
    let alert_feed = tokio::spawn(crate::alerting::feed::run(
        store.clone(),
        audit.clone(),
        config.alerts.clone(),
        config.alert_delivery.clone(),
        move |message| raise(&alert_state, &alert_status, "alerts", message),
        stop_rx.clone(),
    ));
    if let Some(engine) = &engine {
        tokio::spawn(watch_engine(engine.clone(), state.clone(), status_path.clone(), stop_rx.clone()));
    }
    if let Some(interval) = notify::watchdog_interval() {
        tokio::spawn(notify::feed_watchdog(interval, stopped(stop_rx.clone())));
    }

    let summary = {
        let h = state.health.read().map(|h| h.clone()).unwrap_or_else(|p| p.into_inner().clone());
        format!("serving ({:?}) on {}", h.state, config.web.listen)
    };
    tracing::info!("{summary}");
    for missing in &state.health.read().map(|h| h.running_without.clone()).unwrap_or_default() {
        tracing::warn!("DEV PROFILE: running without {missing}");
    }
    notify::ready(&summary);

    let server_stop = stop_rx.clone();
    let server = listener.serve(web::app(state.clone()), move || stopped(server_stop.clone()));
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => result.map_err(DaemonError::Server)?,
        () = shutdown_signal() => {
            tracing::info!("stop signal received, shutting down");
            notify::stopping();
            let _ = stop_tx.send(true);
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!("requests still open after {SHUTDOWN_GRACE:?}; closing them");
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = background.await;
    // The feed saves the detector's position at stop (it is otherwise saved only every few
    // seconds); waiting lets that save finish. A stale position is safe, only slower to replay.
    if tokio::time::timeout(ALERT_FEED_STOP, alert_feed).await.is_err() {
        tracing::warn!("the alert feed did not stop within {ALERT_FEED_STOP:?}; its position is saved at the next start");
    }
    if let Some(engine) = engine {
        engine.shutdown().await;
        let _ = std::fs::remove_file(&engine_path);
    }
    let _ = audit.append(AuditEvent::new(EventKind::Lifecycle, "system", json!({ "event": "stopped" }))).await;
    // The UI holds an audit handle too; the writer finishes only when every handle is gone.
    drop(state);
    drop(audit);
    tokio::task::spawn_blocking(move || writer.join()).await.ok();
    Ok(())
}

/// After a healthy boot: raise the system floor for a pending update that now runs (and bless
/// the boot), or alert that the box fell back to the previous system (docs/update.md).
async fn settle_update(config: &Config, data_dir: &Path, audit: &AuditLog, state: &AppState, status_path: &Path) {
    use crate::update::boot::{Settled, after_healthy_boot};
    let settled = crate::update::running_version()
        .map_err(|e| e.to_string())
        .and_then(|running| after_healthy_boot(data_dir, config.profile, running, crate::update::boot_id().as_deref()));
    let event = match settled {
        Ok(Settled::NothingPending | Settled::NotRebooted { .. }) => return,
        Ok(Settled::Installed { record, blessed }) => {
            tracing::info!("update to {} booted healthy; system floor raised; {blessed}", record.to);
            AuditEvent::new(
                EventKind::Lifecycle,
                "system",
                json!({ "event": "update_booted", "bundle_sha256": record.bundle_sha256, "from": record.from, "to": record.to, "blessed": blessed }),
            )
        }
        Ok(Settled::FellBack { record, reason }) => {
            raise(state, status_path, "update", reason.clone());
            AuditEvent::new(
                EventKind::SecurityAlert,
                "system",
                json!({ "source": "update", "bundle_sha256": record.bundle_sha256, "from": record.from, "to": record.to, "outcome": "fell-back", "reason": reason }),
            )
        }
        Err(e) => {
            let message = format!("cannot settle the pending update: {e}");
            raise(state, status_path, "update", message.clone());
            AuditEvent::new(EventKind::SecurityAlert, "system", json!({ "source": "update", "reason": message }))
        }
    };
    if let Err(e) = audit.append(event).await {
        tracing::error!("cannot audit the update's boot: {e}");
    }
}

/// USB storage events the image's helpers left in `dir` (a stick plugged in and refused while
/// the storage drivers are off, mounted read-only, refused by the mount helper, removed): each
/// audited as a `usb_storage` lifecycle record and removed, every few seconds.
async fn audit_usb_events(dir: PathBuf, audit: AuditLog, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let d = dir.clone();
        let drained = tokio::task::spawn_blocking(move || crate::usb::events::drain(&d))
            .await
            .unwrap_or_else(|e| Err(format!("the USB event task failed: {e}")));
        match drained {
            Ok(entries) => {
                for entry in &entries {
                    let detail = crate::usb::events::audit_detail(entry);
                    if let Err(e) = audit.append(AuditEvent::new(EventKind::Lifecycle, "system", detail)).await {
                        tracing::error!("cannot audit a USB storage event: {e}");
                    }
                    // A stick plugged in outside a window, or refused by the mount helper: also
                    // an alert (the detector's usb_refused rule; no PHI: device, ids, reason).
                    if let Ok(e) = entry
                        && let Some(event) = crate::usb::events::alert_event(e)
                    {
                        let alert = json!({ "source": "usb", "event": event, "device": e.device, "detail": e.detail });
                        if let Err(err) = audit.append(AuditEvent::new(EventKind::SecurityAlert, "system", alert)).await {
                            tracing::error!("cannot record the USB alert: {err}");
                        }
                    }
                }
            }
            Err(e) => tracing::error!("USB storage events: {e}"),
        }
    }
}

/// After a healthy boot: raise the system-version floor in the TPM's NV counter to the running
/// version (or the state directory's floor, if higher); defines the counter on the first boot.
/// A failure is a health alert: the box still runs, but its anti-rollback floor did not move.
async fn raise_tpm_floor(config: Config, data_dir: PathBuf, audit: AuditLog, state: AppState, status_path: PathBuf) {
    use crate::update::{UpdatePaths, tpm_floor};
    let Some(tcti) = tpm_floor::tcti(&config) else {
        tracing::warn!("no TPM for the system-version anti-rollback counter (dev profile): the floor is kept in the state directory only");
        return;
    };
    let state_dir = UpdatePaths::new(&data_dir).state_dir();
    let raised = tokio::task::spawn_blocking(move || {
        let running = crate::update::running_version().map_err(|e| e.to_string())?;
        let floor = wardbox_update::State::open(&state_dir).ok().and_then(|s| s.floors().ok()).and_then(|f| f.system);
        let target = floor.map_or(running, |f| f.max(running));
        tpm_floor::raise(&tcti, &state_dir, target)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the TPM floor task failed: {e}")));
    let event = match raised {
        Ok(r) if r.increments == 0 && !r.defined => return,
        Ok(r) => {
            tracing::info!("TPM anti-rollback floor raised to {} ({} increments)", r.to, r.increments);
            AuditEvent::new(
                EventKind::Lifecycle,
                "system",
                json!({ "event": "update_tpm_floor", "from": r.from, "to": r.to, "defined": r.defined }),
            )
        }
        Err(e) => {
            let message = format!("cannot raise the TPM anti-rollback floor: {e}");
            raise(&state, &status_path, "update", message.clone());
            AuditEvent::new(EventKind::SecurityAlert, "system", json!({ "source": "update", "reason": message }))
        }
    };
    if let Err(e) = audit.append(event).await {
        tracing::error!("cannot audit the TPM floor: {e}");
    }
}

fn halt_reason(log: &BootLog) -> (StageName, String) {
    let stage = log.halted().unwrap_or(StageName::Serve);
    let reason = log
        .records()
        .iter()
        .find(|r| r.stage == stage)
        .map(|r| r.reason.clone())
        .unwrap_or_default();
    (stage, reason)
}

/// Re-checks after boot: the audit chain at start and checkpoints of its head on schedule.
/// Later subsystems add theirs here (firewall drift, GPU health, engine liveness, disk).
/// What the background checks need of the audit chain: the log (to record a failed walk in the
/// chain itself), the checkpoints and the verified-head file.
struct ChainWatch {
    log: AuditLog,
    checkpoints: CheckpointLog,
    verified: audit::VerifiedHeadFile,
}

async fn background_checks(
    store: Arc<std::sync::Mutex<Store>>,
    chain: ChainWatch,
    state: AppState,
    status_path: PathBuf,
    checkpoint_every: Duration,
    stop: watch::Receiver<bool>,
) {
    let ChainWatch { log: audit_log, checkpoints, verified } = chain;
    let verify_store = store.clone();
    let verify_log = checkpoints.clone();
    // A full walk at every start, recorded as the verified head (and the last full walk), so
    // the next report checks incrementally from here.
    let report = tokio::task::spawn_blocking(move || {
        let store = verify_store.lock().map_err(|_| "store lock poisoned".to_string())?;
        let cps = verify_log.read_all().map_err(|e| e.to_string())?;
        audit::check_chain(&store, &cps, &verified, true, jiff::Timestamp::now()).map(|c| c.report)
    })
    .await;
    // A failure is raised on the status page and also written into the chain itself, where
    // the alert detector reads it (`audit_chain`) and the outbox delivers it off the box.
    let failure = match report {
        Ok(Ok(r)) if r.intact() => {
            tracing::info!(records = r.records, "audit chain verified at start");
            None
        }
        Ok(Ok(r)) => Some(("chain_broken", format!("audit chain broken: {}", r.first_break.map(|b| b.to_string()).unwrap_or_default()))),
        Ok(Err(e)) => Some(("verify_failed", format!("audit chain could not be verified: {e}"))),
        Err(e) => Some(("verify_failed", format!("audit verification task failed: {e}"))),
    };
    if let Some((event, reason)) = failure {
        raise(&state, &status_path, "audit", reason.clone());
        let record = AuditEvent::new(EventKind::SecurityAlert, "system", json!({ "source": "audit", "event": event, "reason": reason }));
        if let Err(e) = audit_log.append(record).await {
            raise(&state, &status_path, "audit", format!("the audit chain's failure could not be recorded in it: {e}"));
        }
    }

    let mut tick = tokio::time::interval(checkpoint_every);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let store = store.clone();
                let log = checkpoints.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let store = store.lock().map_err(|_| "store lock poisoned".to_string())?;
                    let (seq, hash) = audit::read_head(&store).map_err(|e| e.to_string())?;
                    log.record(seq, &hash).map_err(|e| e.to_string())
                }).await;
                let failure = match result {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(e) = failure {
                    raise(&state, &status_path, "audit", format!("audit checkpoint failed: {e}"));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The monthly compliance report: when none of this month is in `state_dir/reports`, make one
/// with a full walk of the audit chain (what lets the other reports check it incrementally).
/// On a thread of its own: its probes run a small runtime of their own. A failure is an alert.
async fn monthly_reports(reports: Arc<crate::cli::ConfiguredReports>, state: AppState, status_path: PathBuf, stop: watch::Receiver<bool>) {
    use crate::web::reports::ReportService as _;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + MONTHLY_REPORT_FIRST, MONTHLY_REPORT_CHECK);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !reports.monthly_due(jiff::Timestamp::now()) {
                    continue;
                }
                let service = reports.clone();
                let (tx, rx) = tokio::sync::oneshot::channel();
                let spawned = std::thread::Builder::new().name("monthly-report".into()).spawn(move || {
                    let _ = tx.send(service.generate("system", true));
                });
                let result = match spawned {
                    Ok(_) => rx.await.unwrap_or_else(|_| Err("the report thread ended without an answer".into())),
                    Err(e) => Err(format!("cannot start the report thread: {e}")),
                };
                match result {
                    Ok(g) => tracing::info!(file = %g.file, digest = %g.digest, "monthly compliance report written: {}", g.counts),
                    Err(e) => raise(&state, &status_path, "report", format!("the monthly compliance report failed: {e}")),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Raise an alert whenever the engine goes down (the supervisor restarts it by itself).
async fn watch_engine(engine: stages::engine::EngineHandle, state: AppState, status_path: PathBuf, stop: watch::Receiver<bool>) {
    let mut rx = engine.state_changes();
    let mut stop = stop;
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = rx.borrow_and_update().clone();
                if let stages::engine::EngineState::Down { reason, restarts } = now {
                    raise(&state, &status_path, "engine", format!("inference engine down (restart {restarts}): {reason}"));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn raise(state: &AppState, status_path: &Path, source: &str, message: String) {
    tracing::error!(source, "ALERT: {message}");
    if let Ok(mut health) = state.health.write() {
        health.raise(source, message);
        if let Err(e) = write_status(status_path, &health) {
            tracing::error!("{e}");
        }
    }
}

/// The data volume's free space in the health; its `disk` alert replaced when the level
/// changed (cleared when space is back).
fn disk_report(state: &AppState, status_path: &Path, report: crate::disk::watch::Report) {
    use crate::disk::watch::Report;
    let Ok(mut health) = state.health.write() else { return };
    match report {
        Report::Reading { path, space, level, reason, changed } => {
            // The status file follows the figure, not every check (a full volume reads the same).
            let moved = health.data_volume.as_ref().is_none_or(|v| v.free_percent != space.free_percent());
            health.set_data_volume(&path, space.total_bytes, space.free_bytes, space.free_percent(), space.describe(), level.as_str());
            if !changed && !moved {
                return;
            }
            if changed {
                health.clear("disk");
                match reason {
                    Some(reason) => {
                        tracing::error!(source = "disk", "ALERT: {reason}");
                        health.raise("disk", reason);
                    }
                    None => tracing::info!(source = "disk", "data volume {path}: {}", space.describe()),
                }
            }
        }
        Report::Unreadable { path, error } => {
            let message = format!("cannot read the free space of the data volume {path}: {error}");
            tracing::error!(source = "disk", "ALERT: {message}");
            health.clear("disk");
            health.raise("disk", message);
        }
    }
    if let Err(e) = write_status(status_path, &health) {
        tracing::error!("{e}");
    }
}

/// Clear the alerts `source` raised, its problem being over.
fn clear(state: &AppState, status_path: &Path, source: &str) {
    tracing::info!(source, "alert cleared");
    if let Ok(mut health) = state.health.write() {
        health.clear(source);
        if let Err(e) = write_status(status_path, &health) {
            tracing::error!("{e}");
        }
    }
}

/// Write the health snapshot atomically (temporary file + rename).
pub fn write_status(path: &Path, health: &Health) -> Result<(), DaemonError> {
    let err = |source| DaemonError::StatusFile { path: path.to_owned(), source };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(health).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
