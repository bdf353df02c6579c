//! The gRPC server: the `Desk` service behind the token interceptor, the
//! standard health service (following the broker connection), server
//! reflection, TLS, size limits, graceful shutdown.
//!
//! What callers can make the server hold is bounded three ways: HTTP/2
//! streams per connection ([`guichet_core::grpc::MAX_STREAMS_PER_CONNECTION`]), the size of one
//! request (`desk.max_message_size`, refused by tonic while decoding), and
//! the request bytes being processed by all callers together
//! (`desk.max_buffered_bytes`: a request that does not fit is UNAVAILABLE
//! at once, before any work or any wait on the broker).

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use guichet_core::{
    ServiceContext, grpc,
    proto::v1::{
        Channel, GetUsagerHistoryRequest, GetUsagerHistoryResponse, RecordContactRequest, RecordContactResponse,
        desk_server::{Desk, DeskServer},
    },
};
use prost::Message;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, service::interceptor::InterceptedService, transport::ServerTlsConfig};

use crate::{
    DeskError,
    auth::{Site, Sites, site_of},
    config::DeskConfig,
    history, record,
    state::State,
};

/// The health-service name of the desk service.
pub const SERVICE_NAME: &str = "guichet.v1.Desk";

/// The `Desk` gRPC service.
#[derive(Clone)]
pub struct DeskService {
    state: Arc<State>,
}

impl DeskService {
    pub fn new(state: State) -> Self {
        Self { state: Arc::new(state) }
    }
}

type HistoryStream = Pin<Box<dyn Stream<Item = Result<GetUsagerHistoryResponse, Status>> + Send>>;

/// Labels a request's outcome in the metrics.
fn observe(method: &'static str, site: &Site, channel: &'static str, started: Instant, result: Result<(), &Status>) {
    let outcome = match result {
        Ok(()) => "ok".to_owned(),
        Err(status) => format!("{:?}", status.code()).to_lowercase(),
    };
    metrics::counter!("guichet_desk_requests_total", "method" => method, "site" => site.0.clone(),
        "channel" => channel, "outcome" => outcome)
    .increment(1);
    metrics::histogram!("guichet_desk_request_seconds", "method" => method).record(started.elapsed().as_secs_f64());
}

fn deadline_of<T>(request: &Request<T>, started: Instant) -> Option<Instant> {
    crate::status::deadline(request.metadata()).map(|d| started + d)
}

#[tonic::async_trait]
impl Desk for DeskService {
    async fn record_contact(
        &self,
        request: Request<RecordContactRequest>,
    ) -> Result<Response<RecordContactResponse>, Status> {
        let started = Instant::now();
        let site = site_of(&request)?;
        // Held until the answer: what this request's attachments and
        // contact keep in memory while they are stored and published.
        let _held = self
            .state
            .reserve(request.get_ref().encoded_len())
            .inspect_err(|status| {
                observe("record_contact", &site, "any", started, Err(status));
            })?;
        let deadline = deadline_of(&request, started);
        let request = request.into_inner();
        let channel = Channel::try_from(request.channel)
            .map(|c| match c {
                Channel::Counter | Channel::Phone | Channel::Postal => c.token(),
                _ => "other",
            })
            .unwrap_or("other");
        let result = record::record(&self.state, &site, request, deadline).await;
        observe("record_contact", &site, channel, started, result.as_ref().map(|_| ()));
        result.map(Response::new)
    }

    type GetUsagerHistoryStream = HistoryStream;

    async fn get_usager_history(
        &self,
        request: Request<GetUsagerHistoryRequest>,
    ) -> Result<Response<Self::GetUsagerHistoryStream>, Status> {
        let started = Instant::now();
        let site = site_of(&request)?;
        let deadline = deadline_of(&request, started);
        let result = history::history(&self.state, &site, request.into_inner(), deadline).await;
        observe("get_usager_history", &site, "any", started, result.as_ref().map(|_| ()));
        let items = result?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            items.into_iter().map(Ok),
        ))))
    }
}

/// What [`crate::check`] prepared from the configuration.
pub struct Prepared {
    pub sites: Sites,
    pub tls: Option<ServerTlsConfig>,
}

/// Resolves the tokens and reads the TLS files; errors name the key.
pub fn prepare(config: &DeskConfig) -> Result<Prepared, DeskError> {
    use guichet_core::config::Validate;
    config.validate()?;
    let sites = Sites::from_config(config)?;
    let tls = match &config.tls {
        None => None,
        Some(tls) => Some(grpc::server_tls(
            "desk.tls",
            &tls.cert_file,
            &tls.key_file,
            tls.client_ca_file.as_deref(),
        )?),
    };
    Ok(Prepared { sites, tls })
}

/// Serves until `shutdown`, then lets in-flight calls finish.
pub async fn serve(
    ctx: ServiceContext,
    config: DeskConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DeskError> {
    let prepared = prepare(&config)?;
    let local = listener.local_addr().ok();
    // The address actually bound counts too (a listener handed over by
    // the caller need not be `desk.listen`).
    if let Some(local) = local {
        config.check_plaintext(local)?;
    }
    let exposed = config.plaintext_exposed(config.listen) || local.is_some_and(|a| config.plaintext_exposed(a));
    metrics::gauge!("guichet_desk_insecure_plaintext").set(if exposed { 1.0 } else { 0.0 });
    if exposed {
        tracing::warn!(
            listen = %config.listen,
            "desk serves plaintext gRPC on a non-loopback address (`desk.insecure_plaintext = true`): \
             bearer tokens and usagers' personal data cross the network unencrypted, and anyone on the \
             path can read them and reuse a token to read histories; configure `[desk.tls]`"
        );
    }
    let addr = local.map_or_else(|| config.listen.to_string(), |a| a.to_string());
    let serve_error = |reason: String| DeskError::Serve {
        addr: addr.clone(),
        reason,
    };

    let max_message_size = config.max_message_size;
    let tls = prepared.tls.is_some();
    let state = State::new(ctx.bus.clone(), ctx.instance.clone(), ctx.privacy.clone(), config);
    let desk = InterceptedService::new(
        DeskServer::new(DeskService::new(state)).max_decoding_message_size(max_message_size),
        prepared.sites.interceptor(),
    );
    let (router, health) = grpc::server(prepared.tls, "desk.tls")?;
    let router = router.add_service(desk);
    ctx.health.set_ready("desk", true);
    tracing::info!(%addr, tls, "desk gRPC service listening");
    grpc::serve(router, listener, ctx.bus.clone(), health, SERVICE_NAME, shutdown)
        .await
        .map_err(|e| serve_error(e.to_string()))
}
