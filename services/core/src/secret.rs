//! Secrets in configuration: passwords, tokens, HMAC keys.
//!
//! A secret may be written inline (development only), or — better — read
//! from a file (`{ file = "/run/secrets/x" }`, e.g. a systemd credential
//! or a Kubernetes secret volume) or an environment variable
//! (`{ env = "X" }`), so it never sits in the config file. Its `Debug`
//! output never shows the value.

use std::{fmt, path::PathBuf};

use serde::Deserialize;

use crate::Error;

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Secret {
    /// `password = { file = "/run/secrets/imap-contact" }`
    File { file: PathBuf },
    /// `password = { env = "IMAP_CONTACT_PASSWORD" }`
    Env { env: String },
    /// `password = "…"` (avoid outside development).
    Inline(String),
}

impl Secret {
    /// Reads the secret's value. `key` names the config key in errors.
    /// A trailing newline in a file is not part of the secret.
    pub fn resolve(&self, key: &str) -> Result<String, Error> {
        let value = match self {
            Secret::Inline(v) => v.clone(),
            Secret::File { file } => std::fs::read_to_string(file)
                .map_err(|e| Error::config(key, format!("cannot read secret file {}: {e}", file.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            Secret::Env { env } => std::env::var(env)
                .map_err(|_| Error::config(key, format!("environment variable {env} is not set (or not UTF-8)")))?,
        };
        if value.is_empty() {
            return Err(Error::config(key, "the secret is empty"));
        }
        Ok(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::Inline(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_drops_trailing_newline_and_debug_hides_inline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        assert_eq!(Secret::File { file: path }.resolve("k").unwrap(), "hunter2");
        let inline = Secret::Inline("hunter2".into());
        assert!(!format!("{inline:?}").contains("hunter2"));
    }

    #[test]
    fn missing_sources_name_the_key() {
        let err = Secret::File {
            file: "/nonexistent/x".into(),
        }
        .resolve("nats.password")
        .unwrap_err();
        assert!(err.to_string().contains("nats.password"), "{err}");
        let err = Secret::Env {
            env: "GUICHET_TEST_SURELY_UNSET".into(),
        }
        .resolve("web.forms.a.secret")
        .unwrap_err();
        assert!(err.to_string().contains("web.forms.a.secret"), "{err}");
    }
}
