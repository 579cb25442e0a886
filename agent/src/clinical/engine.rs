//! Retrieval's embedder and generator over the supervised engine's handle, so that every call
//! fails at once, clearly, while the engine is down or restarting.

use futures_util::StreamExt;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::models::ModelOptions;
use wardbox_rag::answer::{AnswerError, GenerateFuture, Generator, Prompt};
use wardbox_rag::embed::{self, EmbedError, EmbedFuture, Embedder};

use crate::stages::engine::{ChatChunk, EngineHandle};

#[derive(Debug, Clone)]
pub struct EngineEmbedder {
    pub engine: EngineHandle,
    pub model: String,
}

impl Embedder for EngineEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dims(&self) -> usize {
        wardbox_rag::index::DIMS
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(embed::BATCH) {
                let vectors = self.engine.embed(&self.model, batch.to_vec()).await.map_err(|e| EmbedError::Engine {
                    url: "wardbox-engine".into(),
                    model: self.model.clone(),
                    // The engine's words about the request, never the texts themselves.
                    detail: e.to_string(),
                })?;
                embed::check_vectors(&self.model, self.dims(), batch.len(), &vectors)?;
                out.extend(vectors);
            }
            Ok(out)
        })
    }
}

/// Chat generation, deterministic (temperature 0, fixed seed) so an answer can be reproduced
/// from its audit record's inputs.
#[derive(Debug, Clone)]
pub struct EngineGenerator {
    pub engine: EngineHandle,
    pub model: String,
    pub max_tokens: i32,
}

impl EngineGenerator {
    fn messages(prompt: &Prompt) -> Vec<ChatMessage> {
        vec![ChatMessage::system(prompt.system.clone()), ChatMessage::user(prompt.user.clone())]
    }

    fn options(&self) -> ModelOptions {
        ModelOptions::default().temperature(0.0).seed(7).num_predict(self.max_tokens)
    }
}

impl Generator for EngineGenerator {
    fn model(&self) -> &str {
        &self.model
    }

    fn generate<'a>(&'a self, prompt: &'a Prompt) -> GenerateFuture<'a> {
        Box::pin(async move {
            self.engine
                .chat(&self.model, Self::messages(prompt), Some(self.options()))
                .await
                .map_err(|e| AnswerError::Engine(e.to_string()))
        })
    }

    fn stream<'a>(&'a self, prompt: &'a Prompt, tokens: tokio::sync::mpsc::UnboundedSender<String>) -> GenerateFuture<'a> {
        Box::pin(async move {
            let mut stream = self
                .engine
                .chat_stream(&self.model, Self::messages(prompt), Some(self.options()))
                .await
                .map_err(|e| AnswerError::Engine(e.to_string()))?;
            let mut text = String::new();
            while let Some(item) = stream.next().await {
                match item.map_err(|e| AnswerError::Engine(e.to_string()))? {
                    ChatChunk::Text(piece) => {
                        text.push_str(&piece);
                        let _ = tokens.send(piece);
                    }
                    ChatChunk::Done(_) => break,
                }
            }
            Ok(text)
        })
    }
}
