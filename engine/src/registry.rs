//! Which models are loaded. A model is loaded on first use (or at start with `--preload`),
//! after the store has re-hashed every one of its blobs; at most `max_loaded` stay loaded, and
//! the least recently used idle one makes room for another. A loaded model whose manifest in
//! the store changed (a models bundle replaced it) is loaded again once it is idle.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wardbox_models_bundle::{ModelName, ResolvedModel, Store, StoreError};

use crate::worker::{EngineError, LoadSpec, Worker, WorkerConfig};

/// A model in memory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: ModelName,
    pub worker: Arc<Worker>,
    pub resolved: Arc<ResolvedModel>,
    pub loaded_at: SystemTime,
    last_used: Instant,
}

#[derive(Debug)]
pub struct Registry {
    store: Store,
    config: WorkerConfig,
    max_loaded: usize,
    /// Held across a load: loads are rare and slow, and serialising them keeps two requests
    /// from loading the same model twice.
    loaded: tokio::sync::Mutex<Vec<Loaded>>,
}

impl Registry {
    pub fn new(store: Store, config: WorkerConfig, max_loaded: usize) -> Self {
        Registry { store, config, max_loaded: max_loaded.max(1), loaded: tokio::sync::Mutex::new(Vec::new()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Parse a model name as a client sent it.
    pub fn parse_name(name: &str) -> Result<ModelName, EngineError> {
        name.parse().map_err(|e: StoreError| EngineError::BadRequest(e.to_string()))
    }

    /// The loaded model, loading it first if needed. Returns how long loading took (zero when
    /// it was already loaded), for Ollama's `load_duration`.
    pub async fn get(&self, name: &str) -> Result<(Loaded, Duration), EngineError> {
        let name = Self::parse_name(name)?;
        let mut loaded = self.loaded.lock().await;
        if let Some(i) = loaded.iter().position(|l| l.name == name) {
            // A models bundle may have replaced the model under the same name since it was
            // loaded: the store's manifest says so (a few hundred bytes read, no blob hashed).
            // An idle model is then loaded again from the store; one still answering keeps
            // answering with what it loaded until it is idle.
            let replaced = self.store.entry(&name).is_ok_and(|e| e.manifest_digest != loaded[i].resolved.entry.manifest_digest);
            if !replaced || loaded[i].worker.in_flight() > 0 {
                let l = &mut loaded[i];
                l.last_used = Instant::now();
                return Ok((l.clone(), Duration::ZERO));
            }
            let old = loaded.remove(i);
            tracing::info!(model = %old.name, "the store holds another version of this model: loading it again");
            // Dropping a worker joins its thread: not on the async runtime.
            tokio::task::spawn_blocking(move || drop(old));
        }
        if loaded.len() >= self.max_loaded {
            let victim = loaded
                .iter()
                .enumerate()
                .filter(|(_, l)| l.worker.in_flight() == 0)
                .min_by_key(|(_, l)| l.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    let old = loaded.remove(i);
                    tracing::info!(model = %old.name, "unloading to make room");
                    // Dropping a worker joins its thread: not on the async runtime.
                    tokio::task::spawn_blocking(move || drop(old));
                }
                None => {
                    return Err(EngineError::Busy { slots: self.config.slots, queue: self.config.queue });
                }
            }
        }
        let started = Instant::now();
        let store = self.store.clone();
        let config = self.config.clone();
        let n = name.clone();
        let (resolved, worker) = tokio::task::spawn_blocking(move || load(&store, &n, config))
            .await
            .map_err(|e| EngineError::Load { name: name.to_string(), why: format!("load task: {e}") })??;
        let entry = Loaded {
            name: name.clone(),
            worker: Arc::new(worker),
            resolved: Arc::new(resolved),
            loaded_at: SystemTime::now(),
            last_used: Instant::now(),
        };
        loaded.push(entry.clone());
        Ok((entry, started.elapsed()))
    }

    /// Unload a model if it is loaded and idle (Ollama's `keep_alive: 0`).
    pub async fn unload(&self, name: &str) -> Result<bool, EngineError> {
        let name = Self::parse_name(name)?;
        let mut loaded = self.loaded.lock().await;
        match loaded.iter().position(|l| l.name == name) {
            Some(i) if loaded[i].worker.in_flight() == 0 => {
                let old = loaded.remove(i);
                tokio::task::spawn_blocking(move || drop(old));
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Ok(false),
        }
    }

    pub async fn loaded(&self) -> Vec<Loaded> {
        self.loaded.lock().await.clone()
    }
}

/// Verify and load (blocking).
fn load(store: &Store, name: &ModelName, config: WorkerConfig) -> Result<(ResolvedModel, Worker), EngineError> {
    let resolved = store.resolve(name).map_err(|e| match e {
        StoreError::NotFound(n) => EngineError::ModelNotFound(n),
        other => EngineError::Refused { name: name.to_string(), why: other.to_string() },
    })?;
    let architecture = resolved.entry.config.as_ref().map(|c| c.model_family.clone()).unwrap_or_default();
    let spec = LoadSpec {
        name: name.to_string(),
        model_path: resolved.model_path.clone(),
        template_layer: resolved.template.clone(),
        architecture,
    };
    let worker = Worker::spawn(spec, config).map_err(|e| match e {
        EngineError::Load { why, .. } => EngineError::Load { name: name.to_string(), why },
        other => other,
    })?;
    Ok((resolved, worker))
}
