//! The operator CLI. One file per command group; each exposes a clap `Subcommand` and `run`.
//!
//! Exit codes: 0 success, 1 an operational error (message on stderr), 2 usage error (clap),
//! 3 a verification found a problem (broken audit chain, firewall drift, refused unseal),
//! 4 the firmware does not meet the firmware policy (`volume unlock`: Secure Boot off, keys
//! not the pinned ones; a recovery key does not help).

mod alerts;
mod audit;
mod backup;
mod firewall;
mod gpu;
mod records;
mod report;
mod store;
mod update;
mod usb;
mod users;
mod volume;

pub use report::ConfiguredReports;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

pub const DEFAULT_CONFIG: &str = "/etc/wardbox/wardbox.toml";

#[derive(Debug, Parser)]
#[command(name = "wardbox", version, about = "Wardbox clinic AI appliance: supervisor daemon and operator tools")]
pub struct Cli {
    /// More detail in the log.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor daemon (boot sequence, then serve).
    Serve {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the whole product on this machine in the dev profile, with built-in defaults.
    Dev {
        /// Where the dev box keeps its state and data.
        #[arg(long, default_value = ".wardbox-dev")]
        base: PathBuf,
        /// Address of the web server.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Open the web UI in the desktop's browser once it answers.
        #[arg(long)]
        open: bool,
    },
    /// Show the running agent's boot stages, alerts and missing protections.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and report the first problem.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Alerts on anomalous access: list, show, acknowledge with a reason, send a test message.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// The audit trail: verify the chain, export a month, checkpoint the head.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The encrypted store: rotate its key.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// The data volume: provision, unlock, status, reseal, recover.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// The egress-deny firewall: render, apply, verify, status.
    #[command(subcommand)]
    Firewall(firewall::FirewallCommand),
    /// GPU health and placement.
    #[command(subcommand)]
    Gpu(gpu::GpuCommand),
    /// Web UI accounts: add the first administrator, list, unlock, set a password.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Clinic records for retrieval: import documents, grant who sees which patient.
    #[command(subcommand)]
    Records(records::RecordsCommand),
    /// The compliance checklist report: generate (quoted by the TPM), verify, export the AK.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Encrypted backups (restic format): now, list, check, restore, drill, key.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Updates from a USB stick: inspect a bundle, apply it, status, install receipt.
    #[command(subcommand)]
    Update(update::UpdateCommand),
    /// USB control: the stick window for an update (open, close), what is plugged in (status).
    #[command(subcommand)]
    Usb(usb::UsbCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a configuration file.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the built-in dev configuration, a starting point for a real one.
    Defaults {
        #[arg(long, default_value = ".wardbox-dev")]
        base: PathBuf,
    },
}

/// An error for the person at the console, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 1 }
    }

    /// A check ran and found a problem (exit 3).
    pub fn check_failed(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 3 }
    }

    /// The firmware does not meet the firmware policy (exit 4): the boot itself must change
    /// (Secure Boot back on, the pinned keys), not the key that opens the volume.
    pub fn firmware_refused(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 4 }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::new(e.to_string())
    }
}

pub type CliResult = Result<ExitCode, CliError>;

pub fn load_config(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError::new(e.to_string()))
}

/// The actor recorded in audit records for operator commands.
pub fn cli_actor() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string());
    format!("cli:{user}")
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

pub fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Serve { config } => {
            let config = load_config(&config)?;
            runtime()?.block_on(crate::daemon::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { base, listen, open } => {
            let base = std::path::absolute(&base)?;
            let mut config = dev_config(&base)?;
            if let Some(listen) = listen {
                config.web.listen = listen;
            }
            if config.engine.endpoint.is_none() {
                config.engine = dev_engine()?;
            }
            config.validate()?;
            eprintln!(
                "wardbox: DEV PROFILE under {}: no TPM, no encrypted volume, no firewall. Not for patient data.",
                base.display()
            );
            eprintln!(
                "wardbox: web UI at {}://{}/ (health at /health)",
                if config.web.tls == crate::web::TlsMode::PlainHttpDev { "http" } else { "https" },
                config.web.listen
            );
            eprintln!("wardbox: operator commands take -c {}", base.join("wardbox.toml").display());
            if open {
                let scheme = if config.web.tls == crate::web::TlsMode::PlainHttpDev { "http" } else { "https" };
                open_when_up(config.web.listen, format!("{scheme}://{}/", config.web.listen));
            }
            runtime()?.block_on(crate::daemon::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => status(&load_config(&config)?, json),
        Command::Config(ConfigCommand::Check { config }) => {
            let loaded = load_config(&config)?;
            println!("{}: valid ({} profile)", config.display(), loaded.profile);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Defaults { base }) => {
            let config = Config::dev_defaults(&std::path::absolute(&base)?);
            print!("{}", toml::to_string_pretty(&config).map_err(|e| CliError::new(e.to_string()))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts(cmd) => alerts::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Volume(cmd) => volume::run(cmd),
        Command::Firewall(cmd) => firewall::run(cmd),
        Command::Gpu(cmd) => gpu::run(cmd),
        Command::Users(cmd) => users::run(cmd),
        Command::Records(cmd) => records::run(cmd),
        Command::Report(cmd) => report::run(cmd),
        Command::Backup(cmd) => backup::run(cmd),
        Command::Update(cmd) => update::run(cmd),
        Command::Usb(cmd) => usb::run(cmd),
    }
}

/// The dev box's configuration: `<base>/wardbox.toml`, written from the built-in defaults on
/// first use so that the operator commands (`-c <base>/wardbox.toml`) work on it too, and so
/// that a developer can edit it.
fn dev_config(base: &Path) -> Result<Config, CliError> {
    let path = base.join("wardbox.toml");
    if !path.exists() {
        std::fs::create_dir_all(base)?;
        let text = toml::to_string_pretty(&Config::dev_defaults(base)).map_err(|e| CliError::new(e.to_string()))?;
        std::fs::write(&path, format!("# Wardbox dev profile: NOT for patient data.\n{text}"))?;
        eprintln!("wardbox: wrote the dev configuration {}", path.display());
    }
    let config = load_config(&path)?;
    if config.profile != crate::config::Profile::Dev {
        return Err(CliError::new(format!("{} is not a dev profile configuration", path.display())));
    }
    Ok(config)
}

/// The dev box's engine: `wardbox-engine` beside this binary (or `WARDBOX_ENGINE_BIN`) serving
/// the bundled small model from the test-model store, on a free loopback port. When either is
/// missing the box runs without an engine and says how to get one.
fn dev_engine() -> Result<crate::stages::engine::EngineConfig, CliError> {
    use crate::stages::engine::{EngineConfig, SupervisedEngine};
    let binary = std::env::var_os("WARDBOX_ENGINE_BIN")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("wardbox-engine"))));
    let store = std::env::var_os("WARDBOX_MODEL_STORE").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("WARDBOX_MODEL_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wardbox/models")))?;
        Some(cache.join("store"))
    });
    let (Some(binary), Some(store)) = (binary.filter(|b| b.exists()), store.filter(|s| s.join("manifests").is_dir())) else {
        eprintln!(
            "wardbox: DEV PROFILE without an engine: build it (cargo build --release -p wardbox-engine) and fetch the model (models-bundle/fetch-test-model.sh)"
        );
        return Ok(EngineConfig::default());
    };
    // A free port now; the engine binds it a moment later. Only loopback is ever used.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // Retrieval needs the embedding model; without it the box still chats, and says why
    // questions over records fail.
    let defaults = crate::clinical::ClinicalConfig::dev();
    let mut preload = vec![defaults.chat_model.clone()];
    if store.join("manifests/registry.ollama.ai/library/all-minilm/l6-v2").exists() {
        preload.push(defaults.embed_model.clone());
    } else {
        eprintln!("wardbox: DEV PROFILE without the embedding model: questions over records will fail (run models-bundle/fetch-embedding-model.sh)");
    }
    eprintln!("wardbox: dev engine {} serving {} from {}", binary.display(), preload.join(" and "), store.display());
    Ok(EngineConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}/")),
        supervise: Some(SupervisedEngine {
            binary,
            store,
            socket: None,
            preload,
            slots: 4,
            ctx_per_slot: 2048,
            threads: None,
            gpu_layers: 0,
        }),
        ..EngineConfig::default()
    })
}

/// Open `url` in the desktop's browser (xdg-open) once `addr` accepts connections.
fn open_when_up(addr: std::net::SocketAddr, url: String) {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let opened = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !opened {
            eprintln!("wardbox: open {url} in your browser (no desktop browser found)");
        }
    });
}

/// Whether an agent process with this pid is alive.
pub fn agent_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map(|c| c.contains("wardbox"))
            .unwrap_or(false)
}

fn status(config: &Config, json: bool) -> CliResult {
    let path = crate::daemon::status_file(&config.state_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::new(format!("no status at {}: {e} (has the agent run with this configuration?)", path.display()))
    })?;
    let health: crate::web::Health = serde_json::from_str(&text)
        .map_err(|e| CliError::new(format!("the status file {} is unreadable: {e}", path.display())))?;
    let alive = agent_alive(health.pid);
    // The measured boot as the kernel shows it (efivars, the TPM's PCR files): no TPM session,
    // so it also works in the sandboxed units that call `wardbox status`.
    let efivars = match &config.volume {
        crate::stages::unlock::VolumeConfig::Luks2Tpm(c) => c.efivars_dir.clone(),
        crate::stages::unlock::VolumeConfig::PlainDirectory { .. } => PathBuf::from(wardbox_firmware_policy::DEFAULT_EFIVARS_DIR),
    };
    let boot = wardbox_firmware_policy::MeasuredBoot::read(&efivars, Path::new(wardbox_firmware_policy::DEFAULT_TPM_PCR_DIR));
    if json {
        println!("{}", serde_json::json!({ "agent_running": alive, "health": health, "boot": boot }));
    } else {
        println!("agent:   {}", if alive { format!("running (pid {})", health.pid) } else { "NOT RUNNING (last known state below)".into() });
        println!("boot:    {boot}");
        println!("profile: {}", health.profile);
        println!("state:   {:?}", health.state);
        println!("since:   {}", health.started_at);
        if let Some(v) = &health.data_volume {
            println!("data:    {} {} ({}, checked {})", v.path, v.summary, v.level, v.checked_at);
        }
        println!();
        println!("{:<10} {:<9} {:>8}  reason", "stage", "outcome", "ms");
        for s in &health.stages {
            println!("{:<10} {:<9} {:>8}  {}", s.stage, s.outcome, s.duration_ms, s.reason);
        }
        for w in &health.running_without {
            println!("RUNNING WITHOUT: {w}");
        }
        for a in &health.alerts {
            println!("ALERT [{}] {}: {}", a.source, a.raised_at, a.message);
        }
    }
    let failed = health.state == crate::web::HealthState::Failed;
    Ok(if failed || !alive { ExitCode::from(3) } else { ExitCode::SUCCESS })
}
