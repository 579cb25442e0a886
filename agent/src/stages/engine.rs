//! Engine stage: start the inference engine and wait until it answers.

use serde::{Deserialize, Serialize};

use crate::boot::StageReport;
use crate::config::ConfigError;

/// `[engine]`: which engine the agent talks to, over the Ollama API.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Base URL of an Ollama-compatible engine. Unset: no engine (clinical features answer 503).
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://127.") || endpoint.starts_with("http://[::1]") || endpoint.starts_with("http://localhost"))
        {
            return Err(ConfigError::invalid(
                "engine.endpoint",
                "must be a loopback http:// URL: the engine is never reached over the network",
            ));
        }
        Ok(())
    }
}

/// Report on the engine for the boot record.
pub fn start(config: &EngineConfig) -> Result<StageReport, String> {
    match &config.endpoint {
        None => Ok(StageReport::degraded("no engine configured: clinical features are unavailable")),
        Some(endpoint) => Ok(StageReport::ok(format!("engine endpoint {endpoint}"))),
    }
}
