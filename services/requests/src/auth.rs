//! Bearer tokens, one per back-office client, each allowed some services
//! (kept as digests by [`guichet_core::grpc::Tokens`]).

use std::{collections::BTreeSet, sync::Arc};

use guichet_core::{
    Error,
    grpc::{Tokens, caller_of},
};
use tonic::{Request, Status, metadata::MetadataMap};

use crate::config::{MIN_TOKEN_LEN, RequestsConfig};

/// The caller, as its token says (a request extension set by the interceptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub services: Arc<BTreeSet<String>>,
}

impl Client {
    /// PERMISSION_DENIED unless the client handles `service`.
    pub fn check_service(&self, service: &str) -> Result<(), Status> {
        if self.services.contains(service) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "client `{}` handles {}, not service `{}`",
            self.name,
            self.services
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
            guichet_desk::status::printable(service, 64)
        )))
    }
}

/// The configured clients and their token digests.
#[derive(Clone, Debug)]
pub struct Clients {
    tokens: Tokens<Client>,
}

impl Clients {
    /// Resolves every `requests.clients.<name>.token`; errors name the key.
    pub fn from_config(config: &RequestsConfig) -> Result<Self, Error> {
        if config.clients.is_empty() {
            return Err(Error::config(
                "requests.clients",
                "no back-office client is configured, so no caller could authenticate: add \
                 `[requests.clients.<name>]` with a `token` and its `services`",
            ));
        }
        let mut tokens = Tokens::builder("requests.clients", "client", "back-office client");
        for (name, client) in &config.clients {
            let value = Client {
                name: name.clone(),
                services: Arc::new(client.services.iter().cloned().collect()),
            };
            tokens.add(name, &client.token, MIN_TOKEN_LEN, value)?;
        }
        Ok(Self { tokens: tokens.build() })
    }

    /// Every service some client handles: where a request may be transferred.
    pub fn services(&self) -> BTreeSet<String> {
        self.tokens.values().flat_map(|c| c.services.iter().cloned()).collect()
    }

    /// The client of the bearer token in `metadata`, or UNAUTHENTICATED.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Client, Status> {
        self.tokens.authenticate(metadata).cloned()
    }

    /// The interceptor that puts the caller's [`Client`] in the request.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        self.tokens.interceptor(|| {
            metrics::counter!("guichet_requests_calls_total", "method" => "any", "client" => "unknown",
                "outcome" => "unauthenticated")
            .increment(1);
        })
    }
}

/// The caller, as the interceptor found it.
pub fn client_of<T>(request: &Request<T>) -> Result<Client, Status> {
    caller_of(request)
}
