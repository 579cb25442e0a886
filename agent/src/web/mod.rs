//! The HTTP surface. Architecture invariant: only this module knows about HTTP.
//!
//! `app(state)` builds the whole router so tests drive it with `oneshot`, without a socket.

mod health;
pub mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use health::{Alert, Health, HealthState, SharedHealth};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: SharedHealth,
}

impl AppState {
    pub fn new(health: Health) -> Self {
        Self { health: Arc::new(std::sync::RwLock::new(health)) }
    }
}

pub fn app(state: AppState) -> Router {
    Router::new().route("/health", get(health::get_health)).with_state(state)
}
