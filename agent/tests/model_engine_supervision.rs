//! The agent supervising the real `wardbox-engine` with the real Gemma 3 270M (tier `model_`).
//!
//! Needs the engine binary (`cargo build -p wardbox-engine`; found in the workspace target
//! directory or at `WARDBOX_ENGINE_BIN`) and the test store (`models-bundle/fetch-test-model.sh`).
//! Fails, saying which, when either is missing.

#![allow(clippy::unwrap_used)]

mod model_support;

use std::time::Duration;

use futures_util::StreamExt;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::models::ModelOptions;
use model_support::{GEMMA, engine_config, free_port};
use wardbox::stages::engine::{self, ChatChunk, EngineCallError, EngineConfig, EngineState};

fn config(port: u16) -> EngineConfig {
    let mut c = engine_config(&[GEMMA], 1);
    c.endpoint = Some(format!("http://127.0.0.1:{port}"));
    if let Some(s) = c.supervise.as_mut() {
        s.ctx_per_slot = 1024;
    }
    c
}

fn greedy(n: i32) -> ModelOptions {
    ModelOptions::default().temperature(0.0).num_predict(n).repeat_penalty(1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn model_engine_killed_mid_stream_fails_the_request_restarts_and_serves_again() {
    let cfg = config(free_port());
    let (handle, report) = engine::start(&cfg).await.expect("the boot's readiness gate passes");
    let handle = handle.expect("an engine is configured");
    assert!(report.detail.contains("supervised"), "{}", report.detail);
    assert_eq!(handle.state(), EngineState::Ready { restarts: 0 });
    let first_pid = handle.pid().expect("a child is running");

    // A long answer, killed with SIGKILL after its first tokens.
    let mut stream = handle
        .chat_stream(GEMMA, vec![ChatMessage::user("Write a very long story about the sea.".into())], Some(greedy(2000)))
        .await
        .expect("stream starts");
    let first = stream.next().await.expect("an item").expect("first chunk");
    assert!(matches!(first, ChatChunk::Text(_)), "{first:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first_pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut outcome = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("the stream must not hang") {
        match item {
            Ok(ChatChunk::Text(_)) => continue,
            Ok(ChatChunk::Done(_)) => panic!("the answer cannot complete: the engine was killed"),
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    assert_eq!(outcome, Some(EngineCallError::Interrupted), "the waiting request gets a clear failure");
    assert_eq!(EngineCallError::Interrupted.http_status(), 503);

    // While it is down, calls fail at once with "unavailable" (or it is already back).
    match handle.chat(GEMMA, vec![ChatMessage::user("hi".into())], Some(greedy(2))).await {
        Err(EngineCallError::Unavailable(msg)) => assert!(msg.contains("down") || msg.contains("restart") || msg.contains("reach"), "{msg}"),
        Ok(_) => {}
        Err(other) => panic!("unexpected {other:?}"),
    }

    // The supervisor restarts it; the next request succeeds on the new process. The stream can
    // see the dead connection before the supervisor has reaped the child, so the state may still
    // read `Ready { restarts: 0 }` here: wait for the restart itself, not for "ready".
    let mut changes = handle.state_changes();
    tokio::time::timeout(
        Duration::from_secs(120),
        changes.wait_for(|s| matches!(s, EngineState::Ready { restarts } if *restarts >= 1)),
    )
    .await
    .expect("the engine is restarted within 120 s")
    .expect("the supervisor is running");
    assert!(matches!(handle.state(), EngineState::Ready { restarts } if restarts >= 1), "{:?}", handle.state());
    let second_pid = handle.pid().expect("a new child");
    assert_ne!(first_pid, second_pid);
    let answer = handle.chat(GEMMA, vec![ChatMessage::user("Say something.".into())], Some(greedy(8))).await.expect("served again");
    assert!(!answer.is_empty());
    let embeddings = handle.embed(GEMMA, vec!["a note".into()]).await.expect("embeddings too");
    assert_eq!(embeddings.len(), 1);

    // Stopping the agent stops the engine.
    handle.shutdown().await;
    assert!(matches!(handle.state(), EngineState::Down { .. }));
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(second_pid as i32), None).is_ok();
    assert!(!alive, "the engine process must be gone after shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_engine_that_cannot_start_fails_the_boot_stage_clearly() {
    let mut cfg = config(free_port());
    if let Some(s) = cfg.supervise.as_mut() {
        s.preload = vec!["no-such-model:1".into()];
    }
    cfg.ready_timeout_secs = 5;
    let err = engine::start(&cfg).await.expect_err("a model that is not in the store cannot be preloaded");
    assert!(err.contains("not ready") && err.contains("engine exited"), "{err}");
}
