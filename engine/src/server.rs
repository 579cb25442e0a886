//! The Ollama HTTP API subset, over axum. Only this module knows about HTTP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::listen;
use crate::options;
use crate::template;
use crate::registry::{Loaded, Registry};
use crate::worker::{EngineError, Event, Prompt, Stats};

/// The version `/api/version` reports: ours, so a client can tell it is not stock Ollama.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug)]
pub struct AppState {
    pub registry: Registry,
}

/// The largest request body accepted (axum's default, made explicit so the 413 can name it).
pub const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// Ollama's model-management endpoints. Models reach this box only in signed update bundles
/// (`models-only` or `full`, see docs/update.md) that the operator installs into the store, so
/// these are refused with a clear error rather than a bare 404 an Ollama client would show as
/// an empty message.
const MODEL_MANAGEMENT: &[&str] = &["/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/{digest}"];

/// The router for the Unix socket. Every error, including unknown paths, wrong methods and
/// oversized bodies, is Ollama's `{"error": "..."}`.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/", get(|| async { "Ollama is running" }).head(|| async { StatusCode::OK }))
        .route("/api/version", get(|| async { axum::Json(json!({ "version": VERSION })) }))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings_legacy));
    for path in MODEL_MANAGEMENT {
        router = router.route(path, any(model_management));
    }
    router
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(middleware::map_response(error_body_as_json))
        .with_state(state)
}

/// The router for the loopback TCP listener: [`app`] behind the `Host` check that defeats DNS
/// rebinding (see `listen`).
pub fn tcp_app(state: Arc<AppState>) -> Router {
    app(state).layer(middleware::from_fn(loopback_host_only))
}

async fn unknown_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{method} {}: no such endpoint on this engine", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}

async fn model_management(uri: Uri) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "{}: this engine does not pull, push, create, copy or delete models; models arrive on this box \
             only in signed update bundles, which the operator installs into the model store",
            uri.path()
        ),
    )
}

/// Refuse a request whose `Host` (or absolute-form authority) is not a loopback name. Both are
/// checked when both are present; a request with neither is refused (every HTTP/1.1 client
/// sends `Host`).
async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).map(HeaderValue::to_str);
    let authority = req.uri().authority().map(|a| a.as_str());
    let allowed = match (host, authority) {
        (None, None) => false,
        (Some(Err(_)), _) => false,
        (Some(Ok(h)), a) => listen::is_loopback_host(h) && a.is_none_or(listen::is_loopback_host),
        (None, Some(a)) => listen::is_loopback_host(a),
    };
    if allowed {
        next.run(req).await
    } else {
        // The host name is not logged: it is the caller's input, and says nothing we act on.
        tracing::warn!("refused a TCP request whose Host is not a loopback name");
        ApiError(
            StatusCode::FORBIDDEN,
            "the Host header must name this machine's loopback (localhost, 127.0.0.1 or [::1]); other host names are refused"
                .into(),
        )
        .into_response()
    }
}

/// The longest error body rewritten into JSON; axum's own error texts are one line.
const MAX_ERROR_TEXT: usize = 64 * 1024;

/// Rewrite an error response that is not JSON (axum's plain-text extractor rejections, such as
/// a body over the limit) into Ollama's `{"error": "..."}`, keeping its status. Ollama clients
/// show the `error` field; without it they show an empty message.
async fn error_body_as_json(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), MAX_ERROR_TEXT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("request body too large: the limit is {} MiB", MAX_REQUEST_BODY / (1024 * 1024))
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    ApiError(status, message).into_response()
}

/// An error as Ollama sends it: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Busy { .. } | EngineError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            EngineError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EngineError::Refused { .. } | EngineError::Load { .. } | EngineError::Decode(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

impl From<options::OptionsError> for ApiError {
    fn from(e: options::OptionsError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!(status = %self.0, "{}", self.1);
        }
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Parse a JSON body ourselves so every mistake comes back as Ollama's `{"error": ...}`.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map(|t| t.to_string()).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    images: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    context: Option<Vec<i32>>,
    #[serde(default)]
    images: Option<Vec<Value>>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

/// Features this engine does not provide are refused, not silently ignored: a caller asking
/// for JSON output must not get free text it then parses as if it were JSON.
fn refuse_unsupported(format: &Option<Value>, images: bool, tools: bool) -> Result<(), ApiError> {
    match format {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(_) => return Err(bad("format (structured output) is not supported by this engine")),
    }
    if images {
        return Err(bad("images are not supported by this engine build (no vision projector)"));
    }
    if tools {
        return Err(bad("tools are not supported by this engine"));
    }
    Ok(())
}

/// `keep_alive` of 0 ("0", 0, "0s") asks to unload the model.
fn is_unload(keep_alive: &Option<Value>) -> bool {
    match keep_alive {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => matches!(s.trim(), "0" | "0s" | "0m" | "0h"),
        _ => false,
    }
}

/// What a streamed line or the single reply looks like for each endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Generate,
}

fn chunk(kind: Kind, model: &str, text: &str) -> Value {
    match kind {
        Kind::Chat => json!({
            "model": model, "created_at": now(),
            "message": { "role": "assistant", "content": text },
            "done": false,
        }),
        Kind::Generate => json!({ "model": model, "created_at": now(), "response": text, "done": false }),
    }
}

fn final_object(kind: Kind, model: &str, text: &str, stats: &Stats, total: Duration, load: Duration) -> Value {
    let mut v = chunk(kind, model, text);
    let m = v.as_object_mut().expect("chunk is an object");
    m.insert("done".into(), json!(true));
    m.insert("done_reason".into(), json!(stats.done_reason));
    m.insert("total_duration".into(), json!(ns(total)));
    m.insert("load_duration".into(), json!(ns(load)));
    m.insert("prompt_eval_count".into(), json!(stats.prompt_eval_count));
    m.insert("prompt_eval_duration".into(), json!(ns(stats.prompt_eval_duration)));
    m.insert("eval_count".into(), json!(stats.eval_count));
    m.insert("eval_duration".into(), json!(ns(stats.eval_duration)));
    if kind == Kind::Generate {
        m.insert("context".into(), json!(stats.context));
    }
    v
}

fn ndjson_line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Run a generation and answer it, streamed or whole.
async fn respond(
    kind: Kind,
    model: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    stream: bool,
    started: Instant,
    load: Duration,
) -> Result<Response, ApiError> {
    // Wait for the worker to accept the prompt, so errors in it (too long, bad template) get a
    // proper status instead of a 200 with an error line.
    match rx.recv().await {
        Some(Event::Started { .. }) => {}
        Some(Event::Failed(e)) => return Err(e.into()),
        Some(_) | None => return Err(EngineError::Stopped.into()),
    }
    if !stream {
        let mut text = String::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(t) => text.push_str(&t),
                Event::Done(stats) => {
                    let v = final_object(kind, &model, &text, &stats, started.elapsed(), load);
                    return Ok(axum::Json(v).into_response());
                }
                Event::Failed(e) => return Err(e.into()),
                Event::Started { .. } => {}
            }
        }
        return Err(EngineError::Stopped.into());
    }
    let (tx, out) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let line = match ev {
                Event::Text(t) => ndjson_line(&chunk(kind, &model, &t)),
                Event::Done(stats) => {
                    let _ = tx.send(Ok(ndjson_line(&final_object(kind, &model, "", &stats, started.elapsed(), load)))).await;
                    return;
                }
                // Ollama reports a failure after the stream started as an error line.
                Event::Failed(e) => {
                    let _ = tx.send(Ok(ndjson_line(&json!({ "error": e.to_string() })))).await;
                    return;
                }
                Event::Started { .. } => continue,
            };
            // The client went away: dropping `rx` tells the worker to free the slot.
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(ndjson_line(&json!({ "error": EngineError::Stopped.to_string() })))).await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|item| (item, out))
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

async fn load_only(state: &AppState, kind: Kind, model: &str, keep_alive: &Option<Value>) -> Result<Response, ApiError> {
    let (reason, load) = if is_unload(keep_alive) {
        state.registry.unload(model).await?;
        ("unload", Duration::ZERO)
    } else {
        let (_, load) = state.registry.get(model).await?;
        ("load", load)
    };
    let mut v = chunk(kind, model, "");
    let m = v.as_object_mut().expect("chunk is an object");
    m.insert("done".into(), json!(true));
    m.insert("done_reason".into(), json!(reason));
    m.insert("load_duration".into(), json!(ns(load)));
    Ok(axum::Json(v).into_response())
}

async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: ChatRequest = parse(&body)?;
    let messages = req.messages.unwrap_or_default();
    let has_images = messages.iter().any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()));
    refuse_unsupported(&req.format, has_images, req.tools.as_ref().is_some_and(|t| !t.is_empty()))?;
    if messages.is_empty() {
        return load_only(&state, Kind::Chat, &req.model, &req.keep_alive).await;
    }
    let (loaded, load) = state.registry.get(&req.model).await?;
    let options = options::resolve(&loaded.resolved.params, req.options.as_ref())?;
    let mut conv: Vec<(String, String)> = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = &loaded.resolved.system
        && !messages.iter().any(|m| m.role == "system")
    {
        conv.push(("system".into(), system.clone()));
    }
    for m in messages {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(bad(format!("invalid message role {:?}: expected system, user, assistant or tool", m.role)));
        }
        conv.push((m.role, m.content.unwrap_or_default()));
    }
    let rx = loaded.worker.generate(Prompt::Chat(conv), Vec::new(), options)?;
    respond(Kind::Chat, req.model, rx, req.stream.unwrap_or(true), started, load).await
}

async fn generate(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: GenerateRequest = parse(&body)?;
    refuse_unsupported(&req.format, req.images.as_ref().is_some_and(|i| !i.is_empty()), false)?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(bad("suffix (fill-in-the-middle) is not supported by this engine"));
    }
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        return load_only(&state, Kind::Generate, &req.model, &req.keep_alive).await;
    }
    let (loaded, load) = state.registry.get(&req.model).await?;
    let options = options::resolve(&loaded.resolved.params, req.options.as_ref())?;
    let context = req.context.unwrap_or_default();
    let prompt = if req.raw.unwrap_or(false) {
        Prompt::Raw(prompt)
    } else {
        let mut conv = Vec::new();
        if let Some(system) = req.system.or_else(|| loaded.resolved.system.clone()) {
            conv.push(("system".to_owned(), system));
        }
        conv.push(("user".to_owned(), prompt));
        Prompt::Chat(conv)
    };
    let rx = loaded.worker.generate(prompt, context, options)?;
    respond(Kind::Generate, req.model, rx, req.stream.unwrap_or(true), started, load).await
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct EmbedRequest {
    model: String,
    input: EmbedInput,
    #[serde(default)]
    truncate: Option<bool>,
}

async fn embed(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: EmbedRequest = parse(&body)?;
    let inputs = match req.input {
        EmbedInput::One(s) => vec![s],
        EmbedInput::Many(v) => v,
    };
    if inputs.is_empty() {
        return Err(bad("input is empty"));
    }
    let (loaded, load) = state.registry.get(&req.model).await?;
    let e = loaded.worker.embed(inputs, req.truncate.unwrap_or(true)).await?;
    Ok(axum::Json(json!({
        "model": req.model,
        "embeddings": e.vectors,
        "total_duration": ns(started.elapsed()),
        "load_duration": ns(load),
        "prompt_eval_count": e.prompt_tokens,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct LegacyEmbedRequest {
    model: String,
    prompt: String,
}

/// The older `/api/embeddings` (one prompt, not normalised in Ollama; we return ours normalised
/// too, which only changes the length, not the direction).
async fn embeddings_legacy(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: LegacyEmbedRequest = parse(&body)?;
    let (loaded, _) = state.registry.get(&req.model).await?;
    let mut e = loaded.worker.embed(vec![req.prompt], true).await?;
    Ok(axum::Json(json!({ "embedding": e.vectors.pop().unwrap_or_default() })).into_response())
}

fn details(config: Option<&wardbox_models_bundle::ModelConfig>) -> Value {
    match config {
        Some(c) => json!({
            "parent_model": "",
            "format": c.model_format,
            "family": c.model_family,
            "families": c.model_families,
            "parameter_size": c.model_type,
            "quantization_level": c.file_type,
        }),
        None => json!({}),
    }
}

async fn tags(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let store = state.registry.store().clone();
    let list = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let models: Vec<Value> = list
        .iter()
        .map(|e| {
            json!({
                "name": e.name.to_string(),
                "model": e.name.to_string(),
                "modified_at": rfc3339(e.modified),
                "size": e.manifest.total_size(),
                "digest": e.manifest_digest.hex(),
                "details": details(e.config.as_ref()),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "models": models })).into_response())
}

async fn ps(State(state): State<Arc<AppState>>) -> Response {
    let models: Vec<Value> = state
        .registry
        .loaded()
        .await
        .iter()
        .map(|l: &Loaded| {
            json!({
                "name": l.name.to_string(),
                "model": l.name.to_string(),
                "size": l.worker.info.size_bytes,
                "digest": l.resolved.entry.manifest_digest.hex(),
                "details": details(l.resolved.entry.config.as_ref()),
                // Models stay loaded until evicted; report a far expiry as Ollama does for -1.
                "expires_at": "2318-01-01T00:00:00Z",
                "size_vram": 0,
                "loaded_at": rfc3339(l.loaded_at),
                "slots": l.worker.config().slots,
                "in_flight": l.worker.in_flight(),
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

#[derive(Debug, Deserialize)]
struct ShowRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Render params the way `ollama show` does: one `key value` per line.
fn parameters_text(params: &serde_json::Map<String, Value>) -> String {
    let mut lines = Vec::new();
    for (k, v) in params {
        match v {
            Value::Array(items) => {
                for i in items {
                    lines.push(format!("{k:<30} {i}"));
                }
            }
            other => lines.push(format!("{k:<30} {other}")),
        }
    }
    lines.join("\n")
}

async fn show(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ShowRequest = parse(&body)?;
    let name = req.model.or(req.name).ok_or_else(|| bad("model is required"))?;
    let parsed = Registry::parse_name(&name)?;
    let store = state.registry.store().clone();
    let resolved = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
        // `show` reads the manifest and GGUF header; it does not hash gigabytes (loading does).
        let entry = store.entry(&parsed).map_err(|e| match e {
            wardbox_models_bundle::StoreError::NotFound(n) => EngineError::ModelNotFound(n),
            other => EngineError::Refused { name: parsed.to_string(), why: other.to_string() },
        })?;
        let read_text = |media: &str| -> Vec<String> {
            entry
                .manifest
                .layers_of(media)
                .filter_map(|l| std::fs::read_to_string(store.blob_path(&l.digest)).ok())
                .collect()
        };
        let template_layer = read_text(wardbox_models_bundle::media::TEMPLATE).pop();
        let license = read_text(wardbox_models_bundle::media::LICENSE).join("\n");
        let params = read_text(wardbox_models_bundle::media::PARAMS)
            .pop()
            .and_then(|t| serde_json::from_str::<serde_json::Map<String, Value>>(&t).ok())
            .unwrap_or_default();
        let mut info = serde_json::Map::new();
        let mut gguf_template = None;
        let mut architecture = String::new();
        if let Some(layer) = entry.manifest.layers_of(wardbox_models_bundle::media::MODEL).next()
            && let Ok(f) = std::fs::File::open(store.blob_path(&layer.digest))
            && let Ok(md) = wardbox_models_bundle::gguf::Metadata::read(&mut std::io::BufReader::new(f))
        {
            use wardbox_models_bundle::gguf::Value as G;
            gguf_template = md.chat_template().map(str::to_owned);
            architecture = md.architecture().unwrap_or_default().to_owned();
            for (k, v) in md.kv {
                let v = match v {
                    G::Int(i) => json!(i),
                    G::Uint(u) => json!(u),
                    G::Float(f) => json!(f),
                    G::Bool(b) => json!(b),
                    G::Str(s) if s.len() <= 4096 => json!(s),
                    // Ollama leaves long values and arrays out of model_info unless verbose.
                    G::Str(_) | G::Array { .. } => Value::Null,
                };
                info.insert(k, v);
            }
        }
        let template = template::shown(template_layer.as_deref(), gguf_template.as_deref(), &architecture);
        Ok((entry, template, license, params, info))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let (entry, template, license, params, info) = resolved;
    let modelfile = format!(
        "# Modelfile generated by wardbox-engine\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{}",
        name,
        template,
        params_modelfile(&params)
    );
    Ok(axum::Json(json!({
        "license": license,
        "modelfile": modelfile,
        "parameters": parameters_text(&params),
        "template": template,
        "details": details(entry.config.as_ref()),
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": rfc3339(entry.modified),
    }))
    .into_response())
}

fn params_modelfile(params: &serde_json::Map<String, Value>) -> String {
    parameters_text(params)
        .lines()
        .map(|l| format!("PARAMETER {}\n", l.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unload_values() {
        for v in [json!(0), json!("0"), json!("0s")] {
            assert!(is_unload(&Some(v.clone())), "{v}");
        }
        for v in [json!(-1), json!("5m"), json!(300)] {
            assert!(!is_unload(&Some(v.clone())), "{v}");
        }
        assert!(!is_unload(&None));
    }

    #[test]
    fn unsupported_features_are_refused() {
        assert!(refuse_unsupported(&None, false, false).is_ok());
        assert!(refuse_unsupported(&Some(json!("")), false, false).is_ok());
        assert!(refuse_unsupported(&Some(json!("json")), false, false).is_err());
        assert!(refuse_unsupported(&None, true, false).is_err());
        assert!(refuse_unsupported(&None, false, true).is_err());
    }

    #[test]
    fn final_line_has_ollamas_fields() {
        let stats = Stats { prompt_eval_count: 3, eval_count: 2, done_reason: "stop", context: vec![1, 2], ..Default::default() };
        let v = final_object(Kind::Generate, "m", "", &stats, Duration::from_millis(5), Duration::ZERO);
        for k in ["model", "created_at", "response", "done", "done_reason", "total_duration", "load_duration",
            "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration", "context"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["done"], json!(true));
        assert_eq!(v["total_duration"], json!(5_000_000));
    }
}
