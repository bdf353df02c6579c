//! Logs and metrics, and the rule that personal data never reaches them.
//!
//! Log an e-mail address, phone number or name only through
//! [`pseudonym`]: a short keyed hash (see [`crate::privacy`]) that lets an
//! operator correlate log lines about the same person without reading who
//! it is, and that a dictionary of addresses cannot reverse without the
//! key.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    config::{LogConfig, LogFormat},
    privacy::Pseudonymizer,
};

/// Installs the global tracing subscriber. A second call (tests) is a no-op.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Human => registry.with(fmt::layer().with_target(true)).try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its
/// handle; `None` if another recorder was installed first.
pub fn metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
                ])
                .ok()?
                .install_recorder()
                .ok()?;
            Some(handle)
        })
        .clone()
}

static PSEUDONYMS: OnceLock<Pseudonymizer> = OnceLock::new();

/// Makes [`pseudonym`] use the configured key; called once at start, before
/// services log. A later call with another key is refused (`false`): log
/// pseudonyms must not change meaning within one process.
pub fn install_pseudonym_key(pseudonymizer: &Pseudonymizer) -> bool {
    PSEUDONYMS.get_or_init(|| pseudonymizer.clone()) == pseudonymizer
}

/// A stable, non-reversible short form of a personal datum for logs:
/// `~` and 10 hex digits of its keyed hash. Before a key is installed
/// (tools, tests) a key drawn at random is used: stable within the
/// process, meaningless outside it, never the plain hash.
pub fn pseudonym(value: &str) -> String {
    PSEUDONYMS.get_or_init(Pseudonymizer::random).pseudonym(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_stable_and_hides_the_value() {
        let a = pseudonym("Jeanne.Martin@example.fr");
        assert_eq!(a, pseudonym(" jeanne.martin@example.fr "));
        assert!(!a.contains("jeanne"));
        assert_eq!(a.len(), 11);
        assert_ne!(a, pseudonym("paul@example.fr"));
    }
}
