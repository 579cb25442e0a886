//! Embeddings: one trait, the real implementation over an Ollama-compatible `/api/embed`
//! (Wardbox's own engine, or a stock Ollama), and a feature-hashing embedder for the dev
//! profile and for tests of store logic that must not depend on a model.

use std::future::Future;
use std::pin::Pin;

use ollama_rs::Ollama;
use ollama_rs::generation::embeddings::request::{EmbeddingsInput, GenerateEmbeddingsRequest};
use sha2::{Digest, Sha256};

/// An embedding problem, worded for whoever runs the box.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the engine at {url} did not answer the embedding request: {detail} (is wardbox-engine running, and is {model} installed?)")]
    Engine { url: String, model: String, detail: String },
    #[error("the embedding model {model} returned {got} vectors for {sent} texts")]
    Count { model: String, sent: usize, got: usize },
    #[error("the embedding model {model} returns {got}-dimensional vectors; the index holds {expected}-dimensional ones (re-index after changing the embedding model)")]
    Dimensions { model: String, expected: usize, got: usize },
    #[error("the engine URL {0:?} is not a valid URL")]
    BadUrl(String),
}

/// Texts per embedding request: bounds the request size. The engine packs a request's texts
/// into shared decodes of up to 512 tokens, which pays for short texts only (docs/engine.md),
/// so a larger request would not be faster.
pub const BATCH: usize = 32;

/// Check an embedding model's answer for `sent` texts: one vector each, of `dims` dimensions.
pub fn check_vectors(model: &str, dims: usize, sent: usize, vectors: &[Vec<f32>]) -> Result<(), EmbedError> {
    if vectors.len() != sent {
        return Err(EmbedError::Count { model: model.to_owned(), sent, got: vectors.len() });
    }
    match vectors.iter().find(|v| v.len() != dims) {
        Some(v) => Err(EmbedError::Dimensions { model: model.to_owned(), expected: dims, got: v.len() }),
        None => Ok(()),
    }
}

pub type EmbedFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Vec<f32>>, EmbedError>> + Send + 'a>>;

/// Turns texts into unit-length vectors of a fixed dimension.
pub trait Embedder: Send + Sync {
    /// The model's name, recorded with the index so a model change is noticed.
    fn model(&self) -> &str;
    fn dims(&self) -> usize;
    /// One vector per text, in order.
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a>;
}

/// The real embedder: `POST /api/embed` through `ollama-rs`.
#[derive(Debug, Clone)]
pub struct OllamaEmbedder {
    client: Ollama,
    url: String,
    model: String,
    dims: usize,
}

impl OllamaEmbedder {
    /// `url` like `http://127.0.0.1:11434/`; `dims` is what the index was built for (384 for
    /// all-MiniLM-L6-v2 and bge-small).
    pub fn new(url: &str, model: &str, dims: usize) -> Result<Self, EmbedError> {
        // ollama-rs joins "api/embed" onto the URL: a base with a path must end in '/'.
        let mut base = url.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = Ollama::try_new(base.as_str()).map_err(|_| EmbedError::BadUrl(url.to_owned()))?;
        Ok(Self { client, url: base, model: model.to_owned(), dims })
    }
}

impl Embedder for OllamaEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(BATCH) {
                let req = GenerateEmbeddingsRequest::new(self.model.clone(), EmbeddingsInput::Multiple(batch.to_vec())).truncate(true);
                let res = self.client.generate_embeddings(req).await.map_err(|e| EmbedError::Engine {
                    url: self.url.clone(),
                    model: self.model.clone(),
                    // The error text comes from the engine, never from our input: no PHI here.
                    detail: format!("{e:?}"),
                })?;
                check_vectors(&self.model, self.dims, batch.len(), &res.embeddings)?;
                out.extend(res.embeddings);
            }
            Ok(out)
        })
    }
}

/// Feature hashing of word unigrams and bigrams into a unit vector: no model, no meaning beyond
/// shared words. For the dev profile (stated loudly there) and for tests of index logic
/// (filtering, de-identification of stored rows, idempotence) that must not depend on a
/// model. Retrieval quality is tested with the real model (`model_` tests).
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dims: usize,
}

impl HashEmbedder {
    pub fn new(dims: usize) -> Self {
        Self { dims }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let words: Vec<String> = text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        let mut add = |feature: &str| {
            let h = Sha256::digest(feature.as_bytes());
            let i = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize % self.dims;
            v[i] += if h[4] & 1 == 0 { 1.0 } else { -1.0 };
        };
        for w in &words {
            add(w);
        }
        for pair in words.windows(2) {
            add(&format!("{} {}", pair[0], pair[1]));
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        "wardbox-hash-dev"
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move { Ok(texts.iter().map(|t| self.embed_one(t)).collect()) })
    }
}
