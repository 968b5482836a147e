//! Configuration: TOML deserialized into raw structs, then validated into
//! domain types. (Being written.)
use std::path::Path;

/// A validated configuration.
#[derive(Debug)]
pub struct Config;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("config error")]
pub struct ConfigError;

/// Reads and validates a config file.
pub fn load(_path: &Path) -> Result<Config, ConfigError> {
    Err(ConfigError)
}
