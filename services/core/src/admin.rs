//! The admin HTTP port: `/healthz` (the process is alive), `/readyz`
//! (a contact sent now would be stored: NATS connected, INTAKE led and
//! taking publishes, see [`crate::bus::NotReady`]; every started service
//! ready) and `/metrics` (Prometheus text format).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Bus, Error};

/// Readiness of the process, shared by everything that can be unready.
#[derive(Clone, Default, Debug)]
pub struct Health {
    inner: Arc<Mutex<HealthState>>,
}

#[derive(Default, Debug)]
struct HealthState {
    bus: Option<Bus>,
    components: BTreeMap<String, bool>,
    /// What an operator should know without it being unready (a mailbox
    /// standing by while another process watches it).
    notes: BTreeMap<String, String>,
}

impl Health {
    /// The bus is up and its topology in place.
    pub fn set_bus(&self, bus: Bus) {
        if let Ok(mut s) = self.inner.lock() {
            s.bus = Some(bus);
        }
    }

    /// Declares a component (a service) and whether it is ready.
    pub fn set_ready(&self, component: &str, ready: bool) {
        if let Ok(mut s) = self.inner.lock() {
            s.components.insert(component.to_owned(), ready);
        }
    }

    /// Sets (or with `None` clears) a note about `component` that
    /// `/readyz` shows without turning unready.
    pub fn set_note(&self, component: &str, note: Option<String>) {
        if let Ok(mut s) = self.inner.lock() {
            match note {
                Some(note) => s.notes.insert(component.to_owned(), note),
                None => s.notes.remove(component),
            };
        }
    }

    /// The notes set, as `component: note`.
    pub fn notes(&self) -> Vec<String> {
        self.inner.lock().map_or_else(
            |_| Vec::new(),
            |s| s.notes.iter().map(|(c, n)| format!("{c}: {n}")).collect(),
        )
    }

    /// Ready, and if not, what is not.
    pub fn check(&self) -> (bool, Vec<String>) {
        let Ok(s) = self.inner.lock() else {
            return (false, vec!["health state poisoned".into()]);
        };
        let mut waiting = Vec::new();
        match &s.bus {
            None => waiting.push("nats (connecting or creating the topology)".to_owned()),
            Some(bus) => {
                if let Err(cause) = bus.ready() {
                    waiting.push(format!("nats ({cause})"));
                }
            }
        }
        waiting.extend(
            s.components
                .iter()
                .filter(|(_, ok)| !**ok)
                .map(|(name, _)| name.clone()),
        );
        (waiting.is_empty(), waiting)
    }
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) -> Result<(), Error> {
    let metrics = crate::telemetry::metrics();
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move || {
                let body = metrics.as_ref().map(|h| h.render()).unwrap_or_default();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        )
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::Io {
            what: "admin HTTP server".into(),
            source: e,
        })
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let (ready, waiting) = health.check();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "waiting_for": waiting, "notes": health.notes() })),
    )
}
