//! `wardbox-engine`: serve the Ollama API over a Unix socket (and optionally loopback TCP), or
//! benchmark a model.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use wardbox_engine::registry::Registry;
use wardbox_engine::server::{AppState, app, tcp_app};
use wardbox_engine::worker::WorkerConfig;
use wardbox_engine::{bench, listen};
use wardbox_models_bundle::Store;

#[derive(Debug, Parser)]
#[command(name = "wardbox-engine", version, about = "Wardbox inference engine (llama.cpp, Ollama API)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Ollama API.
    Serve(ServeArgs),
    /// Measure prompt-eval and generation speed for 1 and N concurrent streams.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct Sizing {
    /// Parallel sequences per model (requests decoded together).
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Context per sequence, in tokens.
    #[arg(long, default_value_t = 2048)]
    ctx_per_slot: u32,
    /// Tokens per decode call.
    #[arg(long, default_value_t = 512)]
    batch: u32,
    /// Requests allowed to wait for a slot; beyond that, requests get 503 busy.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Layers to offload to the GPU (needs a CUDA build or a loaded CUDA backend).
    #[arg(long, default_value_t = 0)]
    gpu_layers: u32,
    /// The inputs of an /api/embed request share a decode up to this many tokens together.
    #[arg(long, default_value_t = wardbox_engine::worker::EMBED_BATCH_TOKENS)]
    embed_batch: u32,
    /// Directory of ggml backend modules (libggml-cuda.so, CPU variants) to load at start.
    #[cfg(feature = "dynamic-backends")]
    #[arg(long)]
    backend_dir: Option<PathBuf>,
}

impl Sizing {
    /// Load backend modules before llama.cpp is initialised (first model load).
    fn load_backends(&self) {
        #[cfg(feature = "dynamic-backends")]
        if let Some(dir) = &self.backend_dir {
            tracing::info!(dir = %dir.display(), "loading ggml backend modules");
            llama_cpp_2::llama_backend::load_backends_from_path(dir);
        }
    }

    fn config(&self) -> WorkerConfig {
        let mut c = WorkerConfig {
            slots: self.slots.max(1),
            ctx_per_slot: self.ctx_per_slot.max(64),
            batch: self.batch.max(32),
            queue: self.queue,
            gpu_layers: self.gpu_layers,
            embed_batch: self.embed_batch.max(32),
            ..WorkerConfig::default()
        };
        if let Some(t) = self.threads {
            c.threads = t.max(1);
        }
        c
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Model store (Ollama layout: manifests/ and blobs/).
    #[arg(long)]
    store: PathBuf,
    /// Unix socket to listen on (created 0660; a stale socket is replaced).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Loopback TCP address to listen on as well (127.0.0.1:PORT or [::1]:PORT); anything else is refused.
    #[arg(long)]
    tcp: Option<String>,
    /// Models kept loaded at once.
    #[arg(long, default_value_t = 1)]
    max_loaded: usize,
    /// Load these models before listening (the engine exits if one fails to verify or load).
    #[arg(long)]
    preload: Vec<String>,
    #[command(flatten)]
    sizing: Sizing,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[arg(long)]
    store: PathBuf,
    #[arg(long, default_value = "gemma3:270m")]
    model: String,
    /// Concurrent stream counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    streams: Vec<usize>,
    /// Tokens to generate per stream.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    #[command(flatten)]
    sizing: Sizing,
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("nothing to listen on: give --socket and/or --tcp")]
    NoListener,
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: String, source: std::io::Error },
    #[error("preloading {0}: {1}")]
    Preload(String, wardbox_engine::worker::EngineError),
    #[error(transparent)]
    Engine(#[from] wardbox_engine::worker::EngineError),
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn serve(args: ServeArgs) -> Result<(), MainError> {
    if args.socket.is_none() && args.tcp.is_none() {
        return Err(MainError::NoListener);
    }
    // Validate the TCP address before anything is loaded.
    let tcp_addr = args.tcp.as_deref().map(listen::tcp_addr).transpose()?;
    args.sizing.load_backends();
    let registry = Registry::new(Store::new(&args.store), args.sizing.config(), args.max_loaded);
    for name in &args.preload {
        registry.get(name).await.map_err(|e| MainError::Preload(name.clone(), e))?;
    }
    let state = Arc::new(AppState { registry });
    // The Unix socket needs no Host check (no browser reaches it); TCP gets the rebinding guard.
    let router = app(state.clone());
    let tcp_router = tcp_app(state);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(path) = &args.socket {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|source| MainError::Io { action: "removing stale socket", path: path.display().to_string(), source })?;
            }
            Ok(_) => return Err(MainError::NotASocket(path.clone())),
            Err(_) => {}
        }
        let listener = tokio::net::UnixListener::bind(path)
            .map_err(|source| MainError::Io { action: "binding", path: path.display().to_string(), source })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|source| MainError::Io { action: "setting mode of", path: path.display().to_string(), source })?;
        tracing::info!(socket = %path.display(), "listening");
        let r = router.clone();
        tasks.spawn(async move { axum::serve(listener, r).with_graceful_shutdown(shutdown_signal()).await });
    }
    if let Some(addr) = tcp_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MainError::Io { action: "binding", path: addr.to_string(), source })?;
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(tcp = %bound, "listening");
        // The agent reads this line to learn the port when it asked for port 0.
        println!("listening on http://{bound}");
        let r = tcp_router;
        tasks.spawn(async move { axum::serve(listener, r).with_graceful_shutdown(shutdown_signal()).await });
    }
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            tracing::error!("server stopped: {e}");
        }
    }
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama-cpp-2=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(serve(args)),
            Err(e) => Err(MainError::Io { action: "starting", path: "tokio runtime".into(), source: e }),
        },
        Command::Bench(args) => {
            let store = Store::new(&args.store);
            args.sizing.load_backends();
            match bench::run(&store, &args.model, &args.streams, args.tokens, args.sizing.config()) {
                Ok(rows) => {
                    println!("model {}, {} tokens per stream, {} threads", args.model, args.tokens, args.sizing.config().threads);
                    print!("{}", bench::table(&rows));
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardbox-engine: {e}");
            ExitCode::FAILURE
        }
    }
}
