//! What every settings section shares: the error type, the lookup that
//! names a setting by its file key and environment variable, and URL
//! checks.
//!
//! A section is one struct owned by its subsystem (`cache::CacheSettings`,
//! `plugin::PluginSettings`, ...): it is the TOML table, the environment
//! variables and the command-line flags at once, and its `validate` sits
//! next to its fields. [`crate::settings::Config`] puts the sections
//! together. This module is core: it imports no subsystem.

use std::path::PathBuf;

/// A configuration error; each message names the offending setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {setting}: {message}")]
    Invalid { setting: String, message: String },
}

impl ConfigError {
    /// The setting whose clap id is `id` (its file key, e.g.
    /// `cache.l1_ttl_secs`), declared in section `S`, is invalid. The
    /// message names the key and the environment variable, both taken
    /// from the section's own definition.
    pub fn invalid<S: clap::Args>(id: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting: setting_name::<S>(id),
            message: message.into(),
        }
    }
}

/// `key (ENV_VAR)` for the setting `id` of section `S`.
pub fn setting_name<S: clap::Args>(id: &str) -> String {
    let cmd = S::augment_args(clap::Command::new("settings"));
    let env = cmd
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{id} ({env})"),
        None => id.to_owned(),
    }
}

/// Checks that `raw` is a URL with one of `schemes`.
pub fn check_url<S: clap::Args>(id: &str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw)
        .map_err(|e| ConfigError::invalid::<S>(id, format!("not a valid URL ({e})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::invalid::<S>(
            id,
            format!(
                "scheme must be one of {}, not `{}`",
                schemes.join(", "),
                url.scheme()
            ),
        ));
    }
    Ok(())
}

/// The URL with any password replaced, for logs and error messages.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which
                // this one evidently can.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted() {
        let r = redact_url("postgres://u:secret@h/db");
        assert!(!r.contains("secret"), "{r}");
    }
}
