//! What the gRPC services (desk, requests) share: bearer tokens kept as
//! digests, the TLS files, the server's limits, and a health service that
//! follows the broker.
//!
//! Each service keeps what is its own: who a token stands for (a site, a
//! back-office client), its metrics and its calls.

use std::{path::Path, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    metadata::MetadataMap,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::Router, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{Bus, Error, proto::FILE_DESCRIPTOR_SET, secret::Secret};

/// HTTP/2 streams (calls in progress) per client connection: bounds the
/// memory one connection can pin (requests carry files).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// A ceiling for any call, whatever the caller's deadline.
pub const CALL_CEILING: Duration = Duration::from_secs(60);

/// How often the health service looks at the broker connection.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// Bearer tokens and who each stands for (`T`: a site, a client).
///
/// Tokens are resolved once at start and kept only as SHA-256 digests; a
/// presented token is hashed and compared with every digest in constant
/// time, so neither timing nor a memory dump gives a token away.
#[derive(Clone, Debug)]
pub struct Tokens<T> {
    digests: Arc<Vec<([u8; 32], String, T)>>,
    /// Who holds a token, in messages to callers ("site").
    holder: &'static str,
}

/// Builds [`Tokens`] from a configuration section, one entry at a time.
pub struct TokensBuilder<T> {
    digests: Vec<([u8; 32], String, T)>,
    /// The configuration section of the entries (`desk.sites`).
    section: &'static str,
    /// What one entry is, in configuration errors ("site", "client").
    entry: &'static str,
    holder: &'static str,
}

impl<T: Clone> Tokens<T> {
    /// Starts a table for the entries of `section` (each `<section>.<name>.token`);
    /// `entry` names one entry in configuration errors and `holder` names
    /// the caller in UNAUTHENTICATED messages.
    pub fn builder(section: &'static str, entry: &'static str, holder: &'static str) -> TokensBuilder<T> {
        TokensBuilder {
            digests: Vec::new(),
            section,
            entry,
            holder,
        }
    }

    /// Every entry's value, in configuration order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.digests.iter().map(|(_, _, value)| value)
    }

    /// What the bearer token in `metadata` stands for, or UNAUTHENTICATED.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<&T, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(self.unauthenticated("no `authorization: Bearer <token>` metadata"));
        };
        let value = value
            .to_str()
            .map_err(|_| self.unauthenticated("the authorization metadata is not readable text"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(self.unauthenticated("expected `authorization: Bearer <token>`")),
        };
        let presented = digest(token);
        // Compare with every digest, whatever matches, in constant time.
        let mut found: Option<&T> = None;
        for (d, _, value) in self.digests.iter() {
            let diff = d.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(value);
            }
        }
        found.ok_or_else(|| self.unauthenticated(&format!("the token is not valid for any {}", self.holder)))
    }

    /// The interceptor that puts what the caller's token stands for in the
    /// request (read it back with [`caller_of`]); `refused` counts a call
    /// turned away. It runs before the request body is decoded: a caller
    /// without a valid token costs no decoding.
    pub fn interceptor(&self, refused: fn()) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<T>
    where
        T: Send + Sync + 'static,
    {
        let tokens = self.clone();
        move |mut request: Request<()>| match tokens.authenticate(request.metadata()) {
            Ok(value) => {
                let value = value.clone();
                request.extensions_mut().insert(value);
                Ok(request)
            }
            Err(status) => {
                refused();
                Err(status)
            }
        }
    }

    fn unauthenticated(&self, why: &str) -> Status {
        Status::unauthenticated(format!(
            "{why}: use the bearer token configured for your {}",
            self.holder
        ))
    }
}

impl<T: Clone> TokensBuilder<T> {
    /// Adds `<section>.<name>.token`, standing for `value`; errors name the
    /// key: a token shorter than `min_len`, with spaces, or another entry's.
    pub fn add(&mut self, name: &str, token: &Secret, min_len: usize, value: T) -> Result<(), Error> {
        let key = format!("{}.{name}.token", self.section);
        let token = token.resolve(&key)?;
        if token.len() < min_len {
            return Err(Error::config(
                key,
                format!("at least {min_len} characters (e.g. `openssl rand -hex 32`)"),
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config(key, "a token has no spaces or control characters"));
        }
        let digest = digest(&token);
        if let Some((_, other, _)) = self.digests.iter().find(|(d, _, _)| *d == digest) {
            return Err(Error::config(
                key,
                format!(
                    "the same token as `{}.{other}.token`: each {} needs its own",
                    self.section, self.entry
                ),
            ));
        }
        self.digests.push((digest, name.to_owned(), value));
        Ok(())
    }

    pub fn build(self) -> Tokens<T> {
        Tokens {
            digests: Arc::new(self.digests),
            holder: self.holder,
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What the interceptor of [`Tokens::interceptor`] put in the request.
pub fn caller_of<T: Clone + Send + Sync + 'static, R>(request: &Request<R>) -> Result<T, Status> {
    request
        .extensions()
        .get::<T>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no valid bearer token"))
}

/// The server's TLS from the PEM files of `[<section>]`; errors name the
/// key (`<section>.cert_file` …).
pub fn server_tls(
    section: &str,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<ServerTlsConfig, Error> {
    let read = |name: &str, path: &Path, marker: &str, what: &str| {
        let key = format!("{section}.{name}");
        let bytes = std::fs::read(path)
            .map_err(|e| Error::config(key.clone(), format!("cannot read {}: {e}", path.display())))?;
        if !String::from_utf8_lossy(&bytes).contains(marker) {
            return Err(Error::config(key, format!("{} holds no PEM {what}", path.display())));
        }
        Ok(bytes)
    };
    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
    let cert = read("cert_file", cert_file, CERTIFICATE, "certificate")?;
    let key = read("key_file", key_file, "PRIVATE KEY-----", "private key")?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = client_ca_file {
        let ca = read("client_ca_file", ca, CERTIFICATE, "certificate")?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(tls)
}

/// A server with the limits every guichet gRPC service has, TLS when
/// given (`tls_key` names its configuration key in errors), the standard
/// health service and server reflection; add the service's own with
/// `add_service`, then [`serve`].
pub fn server(tls: Option<ServerTlsConfig>, tls_key: &str) -> Result<(Router, HealthReporter), Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Io {
            what: "gRPC server reflection".into(),
            source: std::io::Error::other(e),
        })?;
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .timeout(CALL_CEILING);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::config(tls_key, e.to_string()))?;
    }
    let router = builder.add_service(health_service).add_service(reflection);
    Ok((router, reporter))
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight
/// calls finish. Meanwhile the health of `service` (and of the server,
/// "") follows the bus's readiness: NOT_SERVING while NATS is away or
/// INTAKE cannot take contacts, so load balancers send callers elsewhere.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    bus: Bus,
    health: HealthReporter,
    service: &'static str,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let health_stop = shutdown.child_token();
    let health_task = tokio::spawn(follow_broker(bus, health, service, health_stop.clone()));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = router
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    health_stop.cancel();
    let _ = health_task.await;
    result
}

async fn follow_broker(bus: Bus, reporter: HealthReporter, service: &'static str, stop: CancellationToken) {
    let mut last: Option<bool> = None;
    loop {
        let up = bus.ready().is_ok();
        if last != Some(up) {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(service, status).await;
            reporter.set_service_status("", status).await;
            last = Some(up);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEALTH_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> Result<Tokens<String>, Error> {
        let mut builder = Tokens::builder("desk.sites", "site", "site");
        for (name, token) in entries {
            builder.add(
                name,
                &Secret::Inline((*token).to_owned()),
                16,
                format!("value of {name}"),
            )?;
        }
        Ok(builder.build())
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn tokens_map_to_their_value() {
        let tokens = table(&[("nord", "nord-token-0123456789"), ("sud", "sud-token-0123456789")]).unwrap();
        assert_eq!(
            tokens.authenticate(&metadata("Bearer sud-token-0123456789")).unwrap(),
            "value of sud"
        );
        assert_eq!(
            tokens.authenticate(&metadata("bearer nord-token-0123456789")).unwrap(),
            "value of nord"
        );
        for bad in [
            "Bearer nope-nope-nope-nope",
            "Basic sud-token-0123456789",
            "sud-token-0123456789",
        ] {
            let status = tokens.authenticate(&metadata(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
            assert!(
                !status.message().contains("0123456789"),
                "token echoed: {}",
                status.message()
            );
            assert!(status.message().contains("for your site"), "{}", status.message());
        }
        assert_eq!(
            tokens.authenticate(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bad_tokens_name_the_key() {
        let err = table(&[("nord", "short")]).unwrap_err().to_string();
        assert!(err.contains("`desk.sites.nord.token`"), "{err}");
        let err = table(&[("nord", "with space 0123456789")]).unwrap_err().to_string();
        assert!(
            err.contains("`desk.sites.nord.token`") && err.contains("no spaces"),
            "{err}"
        );
        let err = table(&[("a", "same-token-0123456789"), ("b", "same-token-0123456789")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`desk.sites.b.token`") && err.contains("`desk.sites.a.token`"),
            "{err}"
        );
        assert!(err.contains("each site needs its own"), "{err}");
    }

    #[test]
    fn tls_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = server_tls("desk.tls", &missing, &missing, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`desk.tls.cert_file`") && err.contains("cannot read"),
            "{err}"
        );
        let err = server_tls("desk.tls", &not_pem, &not_pem, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`desk.tls.cert_file`") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
