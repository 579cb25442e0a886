//! Engine stage: start the inference engine as a supervised child, wait until it answers, keep
//! it answering, and give the rest of the agent a client that fails clearly while it is down.
//!
//! The agent talks to the engine only over the Ollama HTTP API, through `ollama-rs`, so the
//! endpoint is configuration: `[engine] endpoint` alone points at any Ollama-compatible server
//! (a stock Ollama on loopback works); adding `[engine.supervise]` makes the agent start
//! `wardbox-engine` itself, restart it with backoff when it dies or stops answering, and hold
//! the boot's engine stage until it answers. llama.cpp is never linked into the agent.
//!
//! The decisions (restart delay, when a run of failed probes means "down") are pure functions
//! below; the side effects are the child process and the HTTP calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use ollama_rs::Ollama;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage, ChatMessageFinalResponseData};
use ollama_rs::generation::embeddings::request::GenerateEmbeddingsRequest;
use ollama_rs::models::ModelOptions;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::boot::StageReport;
use crate::settings::ConfigError;

/// `[engine]`: which engine the agent talks to, over the Ollama API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Base URL of an Ollama-compatible engine. Unset: no engine (clinical features answer 503).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Start and supervise `wardbox-engine` at `endpoint`. Unset: the engine at `endpoint` is
    /// run by someone else (a stock Ollama, say) and is only probed.
    #[serde(default)]
    pub supervise: Option<SupervisedEngine>,
    /// Seconds the boot waits for the engine to answer before the stage fails.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_secs: u64,
    /// Seconds between liveness probes once it is up.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            endpoint: None,
            supervise: None,
            ready_timeout_secs: default_ready_timeout(),
            probe_interval_secs: default_probe_interval(),
        }
    }
}

fn default_ready_timeout() -> u64 {
    120
}
fn default_probe_interval() -> u64 {
    5
}

/// `[engine.supervise]`: how to run `wardbox-engine`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisedEngine {
    /// Absolute path of the `wardbox-engine` binary.
    pub binary: PathBuf,
    /// Model store (Ollama layout) on the unlocked volume.
    pub store: PathBuf,
    /// Unix socket the engine also listens on (for local tools; the agent uses `endpoint`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Models loaded (and verified) before the engine reports ready.
    #[serde(default)]
    pub preload: Vec<String>,
    /// Parallel sequences per model.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Context per sequence, in tokens.
    #[serde(default = "default_ctx")]
    pub ctx_per_slot: u32,
    /// CPU threads (default: all cores).
    #[serde(default)]
    pub threads: Option<u32>,
    /// Layers offloaded to the GPU, as the GPU stage decided (0 = CPU).
    #[serde(default)]
    pub gpu_layers: u32,
}

fn default_slots() -> u32 {
    4
}
fn default_ctx() -> u32 {
    2048
}

fn is_loopback_url(endpoint: &str) -> bool {
    endpoint.starts_with("http://127.") || endpoint.starts_with("http://[::1]") || endpoint.starts_with("http://localhost")
}

/// `host:port` of a loopback `http://` URL with an explicit port.
fn host_port(endpoint: &str) -> Option<String> {
    let rest = endpoint.strip_prefix("http://")?;
    let hp = rest.split('/').next()?;
    let (_, port) = hp.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some(hp.to_owned())
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.endpoint
            && !is_loopback_url(endpoint)
        {
            return Err(ConfigError::invalid(
                "engine.endpoint",
                "must be a loopback http:// URL: the engine is never reached over the network",
            ));
        }
        if let Some(s) = &self.supervise {
            let Some(endpoint) = &self.endpoint else {
                return Err(ConfigError::invalid("engine.endpoint", "is required with [engine.supervise]: it is where the engine listens"));
            };
            if host_port(endpoint).is_none() {
                return Err(ConfigError::invalid("engine.endpoint", "needs an explicit port (http://127.0.0.1:11435) when the agent starts the engine"));
            }
            if !s.binary.is_absolute() {
                return Err(ConfigError::invalid("engine.supervise.binary", "must be an absolute path"));
            }
            if !s.store.is_absolute() {
                return Err(ConfigError::invalid("engine.supervise.store", "must be an absolute path"));
            }
            if s.slots == 0 || s.ctx_per_slot < 64 {
                return Err(ConfigError::invalid("engine.supervise", "slots must be >= 1 and ctx_per_slot >= 64"));
            }
        }
        if self.probe_interval_secs == 0 {
            return Err(ConfigError::invalid("engine.probe_interval_secs", "must be at least 1"));
        }
        Ok(())
    }
}

/// Delay before restart number `failures` (0-based count of consecutive failed runs):
/// 0.5 s, 1 s, 2 s, ... capped at 30 s, so a crash loop neither spins nor waits long once fixed.
pub fn restart_delay(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.min(16));
    Duration::from_millis(ms.min(30_000))
}

/// A run that stayed up this long counts as healthy: the next crash starts the backoff over.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Consecutive failed probes after which a running engine is declared hung and restarted.
pub const PROBE_FAILURES_TO_RESTART: u32 = 3;

/// Whether the engine can take requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EngineState {
    /// Starting (first start or a restart); not answering yet. `last_error`: why the previous
    /// run ended, so a crash loop is visible while it loops.
    Starting { restarts: u32, last_error: Option<String> },
    /// Answering probes.
    Ready { restarts: u32 },
    /// Not running or not answering, and why.
    Down { reason: String, restarts: u32 },
}

/// Errors callers of the engine see. `Unavailable` and `Interrupted` mean "try again later"
/// (HTTP 503 to a clinician); `Refused` is the engine saying the request itself is wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineCallError {
    /// No engine is configured, or it is down or restarting.
    #[error("the inference engine is unavailable ({0}); AI features are paused until it is back")]
    Unavailable(String),
    /// The engine went away in the middle of an answer.
    #[error("the inference engine stopped in the middle of the answer; the answer is incomplete, please retry")]
    Interrupted,
    /// The engine answered with an error about this request (unknown model, bad option, ...).
    #[error("the inference engine refused the request: {0}")]
    Refused(String),
}

impl EngineCallError {
    /// The HTTP status the web layer should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            EngineCallError::Unavailable(_) | EngineCallError::Interrupted => 503,
            EngineCallError::Refused(_) => 502,
        }
    }
}

/// One piece of a streamed chat answer.
#[derive(Debug, Clone)]
pub enum ChatChunk {
    Text(String),
    Done(ChatMessageFinalResponseData),
}

/// A handle on the engine: clone it freely. Every call checks the supervisor's view first, so
/// a caller gets `Unavailable` at once instead of waiting on a connection that will fail.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    client: Ollama,
    state: watch::Receiver<EngineState>,
    /// Process id of the supervised child (0 when none): for diagnostics and tests.
    pid: Arc<AtomicU32>,
    /// Dropping the last handle's stop sender stops the supervisor and the child.
    stop: Arc<watch::Sender<bool>>,
}

impl EngineHandle {
    pub fn state(&self) -> EngineState {
        self.state.borrow().clone()
    }

    /// Every change of state, for alerting.
    pub fn state_changes(&self) -> watch::Receiver<EngineState> {
        self.state.clone()
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// Wait until the engine is ready, or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), EngineCallError> {
        let mut rx = self.state.clone();
        let wait = async {
            loop {
                if matches!(*rx.borrow_and_update(), EngineState::Ready { .. }) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(EngineCallError::Unavailable("the supervisor stopped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(EngineCallError::Unavailable(format!("not ready after {}s: {}", timeout.as_secs(), describe(&self.state())))),
        }
    }

    /// Stop the supervisor: SIGTERM the engine (SIGKILL after 5 s) and wait for it.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let mut rx = self.state.clone();
        let _ = tokio::time::timeout(Duration::from_secs(7), async {
            while !matches!(*rx.borrow_and_update(), EngineState::Down { .. }) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    fn check_ready(&self) -> Result<(), EngineCallError> {
        match self.state() {
            EngineState::Ready { .. } => Ok(()),
            other => Err(EngineCallError::Unavailable(describe(&other))),
        }
    }

    /// Stream a chat answer. The stream ends with `ChatChunk::Done`, or with an error if the
    /// engine fails; it never just stops.
    pub async fn chat_stream(
        &self,
        model: &str,
        messages: Vec<ChatMessage>,
        options: Option<ModelOptions>,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<ChatChunk, EngineCallError>>, EngineCallError> {
        self.check_ready()?;
        let mut req = ChatMessageRequest::new(model.to_owned(), messages);
        if let Some(o) = options {
            req = req.options(o);
        }
        let inner = self.client.send_chat_messages_stream(req).await.map_err(|e| self.classify(e))?;
        Ok(futures_util::stream::unfold((inner, false), |(mut inner, finished)| async move {
            if finished {
                return None;
            }
            match inner.next().await {
                Some(Ok(r)) if r.done => {
                    let item = match r.final_data {
                        Some(f) => Ok(ChatChunk::Done(f)),
                        None => Err(EngineCallError::Interrupted),
                    };
                    Some((item, (inner, true)))
                }
                Some(Ok(r)) => Some((Ok(ChatChunk::Text(r.message.content)), (inner, false))),
                // ollama-rs yields `Err(())` for a broken connection or an error line.
                Some(Err(())) => Some((Err(EngineCallError::Interrupted), (inner, true))),
                // The connection closed before the final line: the engine died mid-answer.
                None => Some((Err(EngineCallError::Interrupted), (inner, true))),
            }
        })
        .boxed())
    }

    /// A whole chat answer.
    pub async fn chat(&self, model: &str, messages: Vec<ChatMessage>, options: Option<ModelOptions>) -> Result<String, EngineCallError> {
        self.check_ready()?;
        let mut req = ChatMessageRequest::new(model.to_owned(), messages);
        if let Some(o) = options {
            req = req.options(o);
        }
        let r = self.client.send_chat_messages(req).await.map_err(|e| self.classify(e))?;
        Ok(r.message.content)
    }

    /// Embeddings of `inputs` (unit length).
    pub async fn embed(&self, model: &str, inputs: Vec<String>) -> Result<Vec<Vec<f32>>, EngineCallError> {
        self.check_ready()?;
        let r = self
            .client
            // Truncate to the model's context rather than fail on a long question.
            .generate_embeddings(GenerateEmbeddingsRequest::new(model.to_owned(), inputs.into()).truncate(true))
            .await
            .map_err(|e| self.classify(e))?;
        Ok(r.embeddings)
    }

    /// The models installed in the engine's store.
    pub async fn models(&self) -> Result<Vec<ollama_rs::models::LocalModel>, EngineCallError> {
        self.check_ready()?;
        self.client.list_local_models().await.map_err(|e| self.classify(e))
    }

    /// What the engine says about an installed model: its licence and GGUF metadata
    /// (`/api/show`).
    pub async fn show(&self, model: &str) -> Result<ollama_rs::models::ModelInfo, EngineCallError> {
        self.check_ready()?;
        self.client.show_model_info(model.to_owned()).await.map_err(|e| self.classify(e))
    }

    /// A transport failure is "unavailable"; an answer with an error is "refused".
    fn classify(&self, e: ollama_rs::error::OllamaError) -> EngineCallError {
        match e {
            ollama_rs::error::OllamaError::ReqwestError(e) => {
                EngineCallError::Unavailable(format!("cannot reach the engine: {}", e.without_url()))
            }
            ollama_rs::error::OllamaError::Other(body) => {
                let msg = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                    .unwrap_or(body);
                if msg.contains("engine busy") {
                    EngineCallError::Unavailable(msg)
                } else {
                    EngineCallError::Refused(msg)
                }
            }
            other => EngineCallError::Refused(other.to_string()),
        }
    }
}

fn describe(s: &EngineState) -> String {
    match s {
        EngineState::Starting { restarts: 0, .. } => "starting".into(),
        EngineState::Starting { restarts, last_error: Some(e) } => format!("restarting (restart {restarts}) after: {e}"),
        EngineState::Starting { restarts, last_error: None } => format!("restarting (restart {restarts})"),
        EngineState::Ready { .. } => "ready".into(),
        EngineState::Down { reason, .. } => format!("down: {reason}"),
    }
}

/// Build the client for an endpoint. ollama-rs joins paths onto the base URL, so it must end in `/`.
fn client_for(endpoint: &str) -> Result<Ollama, String> {
    let url = if endpoint.ends_with('/') { endpoint.to_owned() } else { format!("{endpoint}/") };
    Ollama::try_new(url.as_str()).map_err(|e| format!("engine.endpoint {endpoint:?}: {e}"))
}

/// One liveness probe: the model list answers within 5 s.
async fn probe(client: &Ollama) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), client.list_local_models()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("probe failed: {e}")),
        Err(_) => Err("probe timed out after 5s".into()),
    }
}

/// Start the engine (or attach to an external one) and supervise it. Returns at once; use
/// [`EngineHandle::wait_ready`] for the readiness gate.
pub fn spawn(config: &EngineConfig) -> Result<EngineHandle, String> {
    let endpoint = config.endpoint.clone().ok_or("no engine endpoint configured")?;
    let client = client_for(&endpoint)?;
    let (state_tx, state_rx) = watch::channel(EngineState::Starting { restarts: 0, last_error: None });
    let (stop_tx, stop_rx) = watch::channel(false);
    let pid = Arc::new(AtomicU32::new(0));
    let interval = Duration::from_secs(config.probe_interval_secs.max(1));
    match &config.supervise {
        Some(sup) => {
            let listen = host_port(&endpoint).ok_or("engine.endpoint needs an explicit port")?;
            tokio::spawn(supervise(sup.clone(), listen, client.clone(), state_tx, stop_rx, pid.clone(), interval));
        }
        None => {
            tokio::spawn(watch_external(client.clone(), state_tx, stop_rx, interval));
        }
    }
    Ok(EngineHandle { client, state: state_rx, pid, stop: Arc::new(stop_tx) })
}

fn engine_command(sup: &SupervisedEngine, listen: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&sup.binary);
    cmd.arg("serve").arg("--store").arg(&sup.store).arg("--tcp").arg(listen);
    if let Some(sock) = &sup.socket {
        cmd.arg("--socket").arg(sock);
    }
    for m in &sup.preload {
        cmd.arg("--preload").arg(m);
    }
    // Every preloaded model stays resident: retrieval embeds a question and then chats, and
    // swapping the two models on every question would cost a load each time.
    cmd.arg("--max-loaded").arg(sup.preload.len().max(1).to_string());
    cmd.arg("--slots").arg(sup.slots.to_string());
    cmd.arg("--ctx-per-slot").arg(sup.ctx_per_slot.to_string());
    cmd.arg("--gpu-layers").arg(sup.gpu_layers.to_string());
    if let Some(t) = sup.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    // The engine logs to stderr, which the agent's unit hands to the journal; it never logs
    // prompts. Its stdout (the "listening on" line) is not needed: readiness is probed.
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::inherit());
    // llama.cpp's OpenMP threads spin at every barrier by default; on a box that also runs the
    // agent, the RAG indexer and the web server, a descheduled spinner stalls every token
    // (measured here: 1-2 tok/s spinning vs 9-25 tok/s passive, Gemma 3 270M, 2 threads, busy
    // CPU). Passive waiting costs a few percent on an idle machine. An explicit setting in the
    // agent's own environment wins.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    }
    // If the agent dies, the engine must not linger holding the model and the port.
    cmd.kill_on_drop(true);
    cmd
}

async fn supervise(
    sup: SupervisedEngine,
    listen: String,
    client: Ollama,
    state: watch::Sender<EngineState>,
    mut stop: watch::Receiver<bool>,
    pid: Arc<AtomicU32>,
    interval: Duration,
) {
    let mut restarts = 0u32;
    let mut failures = 0u32;
    let mut last_error = None;
    loop {
        if *stop.borrow() {
            return;
        }
        state.send_replace(EngineState::Starting { restarts, last_error: last_error.take() });
        let started = tokio::time::Instant::now();
        let reason = match engine_command(&sup, &listen).spawn() {
            Err(e) => format!("cannot start {}: {e}", sup.binary.display()),
            Ok(mut child) => {
                pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
                tracing::info!(pid = child.id(), restarts, "engine started");
                let exit = run_child(&mut child, &client, &state, &mut stop, restarts, interval).await;
                pid.store(0, Ordering::SeqCst);
                let Some(reason) = exit else {
                    terminate(&mut child).await;
                    state.send_replace(EngineState::Down { reason: "agent stopping".into(), restarts });
                    return;
                };
                // Hung or exited: make sure it is gone before starting another.
                let _ = child.start_kill();
                let _ = child.wait().await;
                reason
            }
        };
        failures = if started.elapsed() >= HEALTHY_RUN { 0 } else { failures + 1 };
        let delay = restart_delay(failures.saturating_sub(1));
        tracing::error!(restarts, "ALERT: engine down: {reason}; restarting in {delay:?}");
        state.send_replace(EngineState::Down { reason: reason.clone(), restarts });
        last_error = Some(reason);
        restarts += 1;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Watch one child until it exits, hangs, or the agent stops. Returns why it is considered
/// down, or `None` when the agent is stopping (a stop request or the last handle dropped).
async fn run_child(
    child: &mut tokio::process::Child,
    client: &Ollama,
    state: &watch::Sender<EngineState>,
    stop: &mut watch::Receiver<bool>,
    restarts: u32,
    interval: Duration,
) -> Option<String> {
    let mut ready = false;
    let mut failed_probes = 0u32;
    // Probe fast while starting, then at the configured interval.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            status = child.wait() => {
                return Some(match status {
                    Ok(s) => format!("engine exited ({s})"),
                    Err(e) => format!("waiting for the engine failed: {e}"),
                });
            }
            _ = stop.changed() => return None,
            _ = tick.tick() => {
                match probe(client).await {
                    Ok(()) => {
                        failed_probes = 0;
                        if !ready {
                            ready = true;
                            tracing::info!(restarts, "engine ready");
                            state.send_replace(EngineState::Ready { restarts });
                            tick = tokio::time::interval(interval);
                            tick.tick().await;
                        }
                    }
                    Err(e) if ready => {
                        failed_probes += 1;
                        if failed_probes >= PROBE_FAILURES_TO_RESTART {
                            return Some(format!("engine stopped answering ({e}, {failed_probes} probes in a row)"));
                        }
                    }
                    // Still loading models: keep waiting (the boot's readiness timeout bounds this).
                    Err(_) => {}
                }
            }
        }
    }
}

/// SIGTERM, then SIGKILL after 5 s.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(id) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(id as i32), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// An engine someone else runs: only probe it.
async fn watch_external(client: Ollama, state: watch::Sender<EngineState>, mut stop: watch::Receiver<bool>, interval: Duration) {
    let mut failed = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut was_ready = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        match probe(&client).await {
            Ok(()) => {
                failed = 0;
                if !was_ready {
                    was_ready = true;
                    state.send_replace(EngineState::Ready { restarts: 0 });
                    tick = tokio::time::interval(interval);
                    tick.tick().await;
                }
            }
            Err(e) => {
                failed += 1;
                if was_ready && failed >= PROBE_FAILURES_TO_RESTART {
                    was_ready = false;
                    tracing::error!("ALERT: external engine not answering: {e}");
                    state.send_replace(EngineState::Down { reason: e, restarts: 0 });
                    tick = tokio::time::interval(Duration::from_millis(500));
                }
            }
        }
    }
}

/// The boot's engine stage: start (or attach to) the engine and wait until it answers. No
/// engine configured is a loud degraded state, not a failure: the box still serves the rest.
pub async fn start(config: &EngineConfig) -> Result<(Option<EngineHandle>, StageReport), String> {
    let Some(endpoint) = &config.endpoint else {
        return Ok((None, StageReport::degraded("no engine configured: clinical features are unavailable")));
    };
    let handle = spawn(config)?;
    let what = if config.supervise.is_some() { "wardbox-engine (supervised)" } else { "external engine" };
    handle
        .wait_ready(Duration::from_secs(config.ready_timeout_secs))
        .await
        .map_err(|e| format!("{what} at {endpoint}: {e}"))?;
    Ok((Some(handle), StageReport::ok(format!("{what} answering at {endpoint}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let d: Vec<u64> = (0..8).map(|f| restart_delay(f).as_millis() as u64).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(restart_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn endpoints() {
        assert_eq!(host_port("http://127.0.0.1:11435").as_deref(), Some("127.0.0.1:11435"));
        assert_eq!(host_port("http://[::1]:80/").as_deref(), Some("[::1]:80"));
        assert_eq!(host_port("http://127.0.0.1"), None);
        assert_eq!(host_port("http://127.0.0.1:0"), None);
        let sup = SupervisedEngine {
            binary: "/usr/lib/wardbox/wardbox-engine".into(),
            store: "/var/lib/wardbox/models".into(),
            socket: None,
            preload: vec![],
            slots: 4,
            ctx_per_slot: 2048,
            threads: None,
            gpu_layers: 0,
        };
        let ok = EngineConfig { endpoint: Some("http://127.0.0.1:11435".into()), supervise: Some(sup.clone()), ready_timeout_secs: 1, probe_interval_secs: 1 };
        assert!(ok.validate().is_ok());
        let cases = [
            EngineConfig { endpoint: Some("http://10.0.0.2:11434".into()), ..ok.clone() },
            EngineConfig { endpoint: None, ..ok.clone() },
            EngineConfig { endpoint: Some("http://127.0.0.1".into()), ..ok.clone() },
            EngineConfig { supervise: Some(SupervisedEngine { binary: "wardbox-engine".into(), ..sup.clone() }), ..ok.clone() },
            EngineConfig { supervise: Some(SupervisedEngine { slots: 0, ..sup }), ..ok.clone() },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?} must be refused");
        }
    }

    #[test]
    fn errors_map_to_503_when_transient() {
        assert_eq!(EngineCallError::Unavailable("x".into()).http_status(), 503);
        assert_eq!(EngineCallError::Interrupted.http_status(), 503);
        assert_eq!(EngineCallError::Refused("x".into()).http_status(), 502);
    }

    #[tokio::test]
    async fn unconfigured_engine_is_degraded_not_failed() {
        let (h, report) = start(&EngineConfig::default()).await.expect("no engine is not an error");
        assert!(h.is_none());
        assert!(report.degraded);
    }

    #[tokio::test]
    async fn calls_fail_fast_while_the_engine_is_down() {
        // Nothing listens on this port: the handle is never ready and says so at once.
        let config = EngineConfig { endpoint: Some("http://127.0.0.1:9".into()), ..EngineConfig::default() };
        let h = spawn(&EngineConfig { probe_interval_secs: 1, ..config }).expect("spawn");
        let err = h.chat("m", vec![ChatMessage::user("hi".into())], None).await.expect_err("not ready");
        assert!(matches!(err, EngineCallError::Unavailable(_)), "{err}");
        assert!(h.wait_ready(Duration::from_millis(300)).await.is_err());
    }
}
