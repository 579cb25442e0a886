//! What every configuration section shares: the profile and the error that names a key.
//!
//! A leaf module: it imports nothing of this crate. Each section is owned by its subsystem
//! (`stages::*`, `web`, `clinical`), which depends on this module; `config` puts the sections
//! together and depends on them. Keeping these two types here is what keeps that one-way (when
//! they lived in `config`, the stages and `config` imported each other).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `dev` runs on a laptop with every missing protection stated loudly; `appliance` refuses
/// to start with any of them missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Appliance,
    Dev,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Appliance => "appliance",
            Profile::Dev => "dev",
        })
    }
}

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// the configuration file {path} cannot be read: {source}
    #[error("the configuration file {path} cannot be read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// the configuration file is not valid TOML for Wardbox
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    /// a key has a value that parses but is not acceptable
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), problem: problem.into() }
    }
}

/// Whether a destination the configuration names is inside the clinic: the private ranges and
/// the never-routed documentation ranges, as the firewall accepts them. With the egress
/// firewall on, the box sends alerts and backups only to such addresses.
pub fn is_clinic_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 192 && o[1] == 0 && o[2] == 2) || (o[0] == 198 && o[1] == 51 && o[2] == 100) || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xfe00) == 0xfc00 || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}
