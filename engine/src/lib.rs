//! Wardbox's inference engine: llama.cpp behind the Ollama HTTP API.
//!
//! `worker` owns llama.cpp (one thread per loaded model, continuous batching over parallel
//! sequence slots); `registry` loads models from the store after verifying every blob;
//! `server` is the HTTP API; `text`, `template`, `options` and `listen` are the pure decisions
//! (stop sequences, chat template choice, option merging, which addresses may be bound).

pub mod bench;
pub mod listen;
pub mod options;
pub mod registry;
pub mod server;
pub mod template;
pub mod text;
pub mod worker;
