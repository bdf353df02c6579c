//! Bearer tokens, one per back-office client, each allowed some services.
//!
//! Tokens are resolved once at start and kept only as SHA-256 digests; a
//! presented token is compared with every client's digest in constant
//! time. The interceptor runs before the request body is decoded.

use std::{collections::BTreeSet, sync::Arc};

use guichet_core::Error;
use sha2::{Digest, Sha256};
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
    digests: Arc<Vec<([u8; 32], Client)>>,
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
        let mut digests: Vec<([u8; 32], Client)> = Vec::with_capacity(config.clients.len());
        for (name, client) in &config.clients {
            let key = format!("requests.clients.{name}.token");
            let token = client.token.resolve(&key)?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(Error::config(
                    key,
                    format!("at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"),
                ));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::config(key, "a token has no spaces or control characters"));
            }
            let digest = digest(&token);
            if let Some((_, other)) = digests.iter().find(|(d, _)| *d == digest) {
                return Err(Error::config(
                    key,
                    format!(
                        "the same token as `requests.clients.{}.token`: each client needs its own",
                        other.name
                    ),
                ));
            }
            digests.push((
                digest,
                Client {
                    name: name.clone(),
                    services: Arc::new(client.services.iter().cloned().collect()),
                },
            ));
        }
        Ok(Self {
            digests: Arc::new(digests),
        })
    }

    /// Every service some client handles: where a request may be transferred.
    pub fn services(&self) -> BTreeSet<String> {
        self.digests
            .iter()
            .flat_map(|(_, c)| c.services.iter().cloned())
            .collect()
    }

    /// The client of the bearer token in `metadata`, or UNAUTHENTICATED.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Client, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(unauthenticated("no `authorization: Bearer <token>` metadata"));
        };
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("the authorization metadata is not readable text"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthenticated("expected `authorization: Bearer <token>`")),
        };
        let presented = digest(token);
        // Compare with every digest, whatever matches, in constant time.
        let mut found: Option<&Client> = None;
        for (d, client) in self.digests.iter() {
            let diff = d.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(client);
            }
        }
        found
            .cloned()
            .ok_or_else(|| unauthenticated("the token is not valid for any back-office client"))
    }

    /// The interceptor that puts the caller's [`Client`] in the request.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let clients = self.clone();
        move |mut request: Request<()>| match clients.authenticate(request.metadata()) {
            Ok(client) => {
                request.extensions_mut().insert(client);
                Ok(request)
            }
            Err(status) => {
                metrics::counter!("guichet_requests_calls_total", "method" => "any", "client" => "unknown",
                    "outcome" => "unauthenticated")
                .increment(1);
                Err(status)
            }
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(format!(
        "{why}: use the bearer token configured for your back-office client"
    ))
}

/// The caller, as the interceptor found it.
pub fn client_of<T>(request: &Request<T>) -> Result<Client, Status> {
    request
        .extensions()
        .get::<Client>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no valid bearer token"))
}
