//! The adapter's state, built once at start from a validated `[web]`:
//! each form with its resolved key and its rate limiter.

use std::{collections::BTreeMap, sync::Arc};

use guichet_core::{Bus, Error, config::Validate};
use tokio::sync::Semaphore;

use crate::{
    config::{FormConfig, WebConfig},
    ratelimit::TokenBucket,
    receive::Gate,
};

/// One configured form, ready to take submissions. Its `Debug` never
/// shows the key (App's `Debug` prints the forms).
pub struct Form {
    pub id: String,
    pub config: FormConfig,
    /// The HMAC key; `None` only with `insecure_no_signature = true`.
    pub key: Option<Vec<u8>>,
    pub limiter: TokenBucket,
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Form")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// Shared by every request.
#[derive(Debug)]
pub struct App {
    pub bus: Bus,
    pub instance: String,
    pub config: WebConfig,
    pub forms: BTreeMap<String, Arc<Form>>,
    /// Authentic submissions storing files and publishing
    /// (`web.max_concurrent`): taken only after the signature is verified.
    pub in_flight: Semaphore,
    /// The bounds of body reading, before anyone is known.
    pub gate: Gate,
}

impl App {
    /// Validates `config` and resolves every form's secret.
    pub fn new(bus: Bus, instance: String, config: WebConfig) -> Result<Self, Error> {
        config.validate()?;
        let gate = Gate::new(&config);
        // A spool directory that cannot take files would turn every large
        // body into a 503: say so at start, naming the key.
        tempfile::tempfile_in(gate.spool_dir()).map_err(|e| {
            Error::config(
                "web.spool_dir",
                format!("cannot create a file in {}: {e}", gate.spool_dir().display()),
            )
        })?;
        let mut forms = BTreeMap::new();
        for (id, form) in &config.forms {
            let key = match &form.secret {
                Some(secret) => Some(secret.resolve(&format!("web.forms.{id}.secret"))?.into_bytes()),
                None => {
                    tracing::warn!(
                        form = %id,
                        "web form accepts UNSIGNED submissions (insecure_no_signature = true): \
                         anyone who can reach the endpoint can file contacts under it"
                    );
                    None
                }
            };
            let limit = form.rate_limit.unwrap_or(config.rate_limit);
            forms.insert(
                id.clone(),
                Arc::new(Form {
                    id: id.clone(),
                    config: form.clone(),
                    key,
                    limiter: TokenBucket::new(limit),
                }),
            );
        }
        if forms.is_empty() {
            tracing::info!("no web form configured: every submission will be answered 404");
        }
        Ok(Self {
            in_flight: Semaphore::new(config.max_concurrent),
            gate,
            bus,
            instance,
            config,
            forms,
        })
    }

    /// The configuration entry that takes submissions for `form_id`: its
    /// own, or the catch-all form for a well-formed id that is not configured.
    pub fn form(&self, form_id: &str) -> Option<Arc<Form>> {
        if let Some(form) = self.forms.get(form_id) {
            return Some(form.clone());
        }
        let catch_all = self.config.catch_all.as_ref()?;
        guichet_core::bus::subjects::is_token(form_id)
            .then(|| self.forms.get(catch_all).cloned())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_never_shows_its_key() {
        let form = Form {
            id: "voirie".into(),
            config: FormConfig::default(),
            key: Some(b"the-hmac-key-of-the-platform".to_vec()),
            limiter: TokenBucket::new(crate::config::RateLimit::default()),
        };
        let shown = format!("{form:?}");
        assert!(shown.contains("voirie") && shown.contains("<redacted>"), "{shown}");
        assert!(
            !shown.contains("the-hmac-key") && !shown.contains("116, 104, 101"),
            "{shown}"
        );
    }
}
