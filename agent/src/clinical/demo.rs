//! The dev profile's demo records: the synthetic corpus of `wardbox-rag` (invented patients,
//! notes, FHIR Bundles and a PDF; no real data anywhere), indexed once into an empty index so
//! that a developer has something to ask about.

use std::sync::Arc;

use wardbox_rag::index;
use wardbox_rag::ingest::{self, ChunkConfig};
use wardbox_rag::synth;

use super::pool::StorePool;
use super::{ClinicalConfig, EngineEmbedder};
use crate::stages::engine::EngineHandle;

/// How long to wait for the engine before giving up on the demo records.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn seed(pool: Arc<StorePool>, engine: EngineHandle, config: ClinicalConfig) {
    if let Err(e) = engine.wait_ready(READY_WAIT).await {
        tracing::warn!("DEV PROFILE: demo records not indexed: {e}");
        return;
    }
    let runtime = tokio::runtime::Handle::current();
    let embedder = EngineEmbedder { engine, model: config.embed_model };
    let done = tokio::task::spawn_blocking(move || {
        let mut store = pool.get();
        let stats = index::stats(store.conn()).map_err(|e| e.to_string())?;
        if stats.documents > 0 {
            return Ok(None);
        }
        let mut indexed = 0;
        for doc in synth::corpus().docs {
            runtime
                .block_on(ingest::ingest_bytes(store.conn_mut(), &embedder, &doc.name, &doc.bytes, &doc.owner(), ChunkConfig::default()))
                .map_err(|e| e.to_string())?;
            indexed += 1;
        }
        Ok::<_, String>(Some(indexed))
    })
    .await;
    match done {
        Ok(Ok(Some(n))) => tracing::info!("DEV PROFILE: indexed {n} synthetic demo records (invented patients)"),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!("DEV PROFILE: demo records not indexed: {e}"),
        Err(e) => tracing::warn!("DEV PROFILE: demo records task failed: {e}"),
    }
}
