//! `wardbox-bundle`: the offline workstation tool for update bundles (keys, root metadata with
//! rotation, building and inspecting bundles). Exit codes: `wardbox_update::error::exit`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::Timestamp;
use wardbox_update::build::{self, BuildSpec, RootSpec};
use wardbox_update::error::exit;
use wardbox_update::manifest::{BundleKind, BundleManifest, Compatibility, MANIFEST_SCHEMA, Version};
use wardbox_update::{BoxFacts, State, inspect};

#[derive(Debug, Parser)]
#[command(name = "wardbox-bundle", about = "Build and inspect Wardbox update bundles (offline workstation)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key (PKCS#8, mode 0600) and write its public half to OUT.pub.json.
    Keygen { out: PathBuf },
    /// Root metadata: create a version, or add one holder's signature.
    #[command(subcommand)]
    Root(RootCommand),
    /// Build a bundle directory from a root history, the role keys and the inputs.
    Build(BuildArgs),
    /// Show what a bundle holds and who signed it; with --state and the box's facts, whether
    /// that box would apply it. Changes nothing.
    Inspect(InspectArgs),
}

#[derive(Debug, Subcommand)]
enum RootCommand {
    /// Write an unsigned root (sign it with `root sign`, once per key holder).
    New {
        #[arg(long)]
        version: u64,
        /// RFC 3339 time or a date (YYYY-MM-DD, midnight UTC).
        #[arg(long, value_parser = parse_time)]
        expires: Timestamp,
        /// Public (.pub.json) or private key files of the root key holders.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 2)]
        root_threshold: u64,
        #[arg(long = "targets-key", required = true)]
        targets_keys: Vec<PathBuf>,
        #[arg(long = "snapshot-key", required = true)]
        snapshot_keys: Vec<PathBuf>,
        #[arg(long = "timestamp-key", required = true)]
        timestamp_keys: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a signature to a root file in place (for a rotation: old holders sign the new root too).
    Sign {
        root: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Directory with 1.root.json .. N.root.json.
    #[arg(long)]
    roots: PathBuf,
    #[arg(long)]
    targets_key: PathBuf,
    #[arg(long)]
    snapshot_key: PathBuf,
    #[arg(long)]
    timestamp_key: PathBuf,
    #[arg(long, default_value = "wardbox")]
    product: String,
    #[arg(long)]
    kind: BundleKind,
    #[arg(long)]
    version: Version,
    #[arg(long)]
    min_starting_version: Version,
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// When the targets, snapshot and timestamp metadata expire.
    #[arg(long, value_parser = parse_time)]
    expires: Timestamp,
    #[arg(long)]
    system_image: Option<PathBuf>,
    /// The signed UKI that boots slot A (command line `root=PARTUUID=<wardbox-root-a>`).
    #[arg(long)]
    uki_a: Option<PathBuf>,
    /// The signed UKI that boots slot B (command line `root=PARTUUID=<wardbox-root-b>`).
    #[arg(long)]
    uki_b: Option<PathBuf>,
    /// An Ollama models directory (manifests/ and blobs/).
    #[arg(long)]
    models: Option<PathBuf>,
    #[arg(long)]
    firmware_policy: Option<PathBuf>,
    #[arg(long)]
    release_notes: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    dir: PathBuf,
    /// Verify against this root file (a workstation).
    #[arg(long, conflicts_with = "state", required_unless_present = "state")]
    root: Option<PathBuf>,
    /// Verify against a box's state directory and say whether that box would apply it.
    #[arg(long, requires_all = ["system_version", "build_time"])]
    state: Option<PathBuf>,
    #[arg(long, default_value = "wardbox")]
    product: String,
    #[arg(long, default_value = "x86_64")]
    arch: String,
    #[arg(long)]
    system_version: Option<Version>,
    #[arg(long, value_parser = parse_time)]
    build_time: Option<Timestamp>,
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let date: jiff::civil::Date = s.parse().map_err(|e| format!("{s:?} is neither an RFC 3339 time nor a date: {e}"))?;
    date.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

fn read_key(path: &Path) -> Result<tough::schema::key::Key, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(key) = serde_json::from_slice(&bytes) {
        return Ok(key);
    }
    build::public_key(path).map_err(|e| e.to_string())
}

fn read_keys(paths: &[PathBuf]) -> Result<Vec<tough::schema::key::Key>, String> {
    paths.iter().map(|p| read_key(p)).collect()
}

async fn run(cli: Cli) -> Result<(), (u8, String)> {
    let op = |e: String| (exit::OPERATIONAL, e);
    match cli.command {
        Command::Keygen { out } => {
            let key = build::generate_key(&out).map_err(|e| op(e.to_string()))?;
            let pub_path = PathBuf::from(format!("{}.pub.json", out.display()));
            let json = serde_json::to_vec_pretty(&key).map_err(|e| op(e.to_string()))?;
            std::fs::write(&pub_path, json).map_err(|e| op(format!("{}: {e}", pub_path.display())))?;
            println!("key id {}  private {}  public {}", build::key_id(&key).map_err(|e| op(e.to_string()))?, out.display(), pub_path.display());
        }
        Command::Root(RootCommand::New { version, expires, root_keys, root_threshold, targets_keys, snapshot_keys, timestamp_keys, out }) => {
            let spec = RootSpec {
                version,
                expires,
                root_keys: read_keys(&root_keys).map_err(op)?,
                root_threshold,
                targets_keys: read_keys(&targets_keys).map_err(op)?,
                snapshot_keys: read_keys(&snapshot_keys).map_err(op)?,
                timestamp_keys: read_keys(&timestamp_keys).map_err(op)?,
            };
            let root = build::new_root(&spec).map_err(|e| op(e.to_string()))?;
            build::write_root(&root, &out).map_err(|e| op(e.to_string()))?;
            println!("wrote unsigned root version {version} to {}", out.display());
        }
        Command::Root(RootCommand::Sign { root, key }) => {
            let mut signed = build::read_root(&root).map_err(|e| op(e.to_string()))?;
            let id = build::sign_root(&mut signed, &key).await.map_err(|e| op(e.to_string()))?;
            build::write_root(&signed, &root).map_err(|e| op(e.to_string()))?;
            println!("signed {} with key {id} ({} signatures)", root.display(), signed.signatures.len());
        }
        Command::Build(a) => {
            let spec = BuildSpec {
                roots_dir: a.roots,
                targets_key: a.targets_key,
                snapshot_key: a.snapshot_key,
                timestamp_key: a.timestamp_key,
                manifest: BundleManifest {
                    schema: MANIFEST_SCHEMA,
                    product: a.product,
                    kind: a.kind,
                    version: a.version,
                    min_starting_version: a.min_starting_version,
                    compatibility: Compatibility { architecture: a.arch },
                    created: Timestamp::now(),
                    contents: Vec::new(),
                },
                expires: a.expires,
                system_image: a.system_image,
                uki_a: a.uki_a,
                uki_b: a.uki_b,
                models_dir: a.models,
                firmware_policy: a.firmware_policy,
                release_notes: a.release_notes,
                out: a.out,
            };
            let report = build::build_bundle(&spec).await.map_err(|e| op(e.to_string()))?;
            println!("built {} (root version {}, {} targets)", spec.out.display(), report.root_version, report.targets.len());
        }
        Command::Inspect(a) => {
            let result = if let Some(state) = a.state {
                let state = State::open(state).map_err(|e| (e.exit_code(), e.to_string()))?;
                let facts = BoxFacts {
                    product: a.product,
                    architecture: a.arch,
                    system_version: a.system_version.ok_or_else(|| (exit::USAGE, "--system-version is needed with --state".into()))?,
                    build_time: a.build_time.ok_or_else(|| (exit::USAGE, "--build-time is needed with --state".into()))?,
                };
                inspect::inspect_for_box(&a.dir, &state, &facts, Some(Timestamp::now())).await
            } else {
                let root = a.root.ok_or_else(|| (exit::USAGE, "--root or --state is needed".into()))?;
                let bytes = std::fs::read(&root).map_err(|e| op(format!("{}: {e}", root.display())))?;
                inspect::inspect(&a.dir, &bytes).await
            };
            let inspection = result.map_err(|e| (e.exit_code(), e.to_string()))?;
            print!("{}", inspect::render(&inspection));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardbox-bundle: cannot start: {e}");
            return ExitCode::from(exit::OPERATIONAL);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("wardbox-bundle: {message}");
            ExitCode::from(code)
        }
    }
}
