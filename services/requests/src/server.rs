//! The gRPC server: the `Requests` service behind the client-token
//! interceptor, the standard health service (following the broker
//! connection), server reflection, TLS, graceful shutdown.

use std::{collections::BTreeSet, pin::Pin, sync::Arc};

use async_nats::jetstream::stream::Stream as JsStream;
use futures::Stream;
use guichet_core::{
    Bus, ServiceContext, grpc,
    proto::v1::{
        GetRequestRequest, GetRequestResponse, ListRequestsEnd, ListRequestsRequest, ListRequestsResponse, Outcome,
        Transition, UpdateRequestRequest, UpdateRequestResponse, list_requests_response,
        requests_server::{Requests, RequestsServer},
    },
    request::GATEWAY_AGENT,
};
use guichet_desk::status::{Violations, printable};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, service::interceptor::InterceptedService, transport::ServerTlsConfig};

use crate::{
    RequestsError,
    auth::{Client, Clients, client_of},
    config::RequestsConfig,
    events, lifecycle, list,
    store::{self, Change},
    view,
};

/// The health-service name of the requests service.
pub const SERVICE_NAME: &str = "guichet.v1.Requests";

/// Longest agent id and client request id.
const MAX_ID_LEN: usize = 128;

/// What every call shares.
pub struct State {
    pub bus: Bus,
    pub events: JsStream,
    pub config: RequestsConfig,
    /// Where a TRANSFER may go: the services some client handles.
    pub services: BTreeSet<String>,
    /// The rules in force (`requests.rules_key`): the calendar of the clocks.
    pub rules: guichet_rules::InForce,
}

/// The `Requests` gRPC service.
#[derive(Clone)]
pub struct RequestsService {
    state: Arc<State>,
}

impl RequestsService {
    pub fn new(state: State) -> Self {
        Self { state: Arc::new(state) }
    }
}

fn observe(method: &'static str, client: &Client, started: Instant, result: Result<(), &Status>) {
    let outcome = match result {
        Ok(()) => "ok".to_owned(),
        Err(status) => format!("{:?}", status.code()).to_lowercase(),
    };
    metrics::counter!("guichet_requests_calls_total", "method" => method, "client" => client.name.clone(),
        "outcome" => outcome)
    .increment(1);
    metrics::histogram!("guichet_requests_call_seconds", "method" => method).record(started.elapsed().as_secs_f64());
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The change a call asks for, checked field by field.
fn change_of(state: &State, client: &Client, request: &UpdateRequestRequest) -> Result<Change, Status> {
    let mut v = Violations::default();
    let transition = Transition::try_from(request.transition)
        .ok()
        .filter(|t| lifecycle::TRANSITIONS.contains(t));
    if transition.is_none() {
        v.add(
            "transition",
            "required: TAKE, REQUEST_DOCUMENTS, RESUME, ANSWER, CLOSE, REOPEN or TRANSFER",
        );
    }
    let agent = request.agent_id.trim();
    if agent.is_empty() {
        v.add("agent_id", "required: the agent's id in your software (not a name)");
    } else if agent.chars().count() > MAX_ID_LEN || agent.chars().any(char::is_control) {
        v.add(
            "agent_id",
            format!("at most {MAX_ID_LEN} characters, no control characters"),
        );
    } else if agent == GATEWAY_AGENT {
        v.add(
            "agent_id",
            format!("`{GATEWAY_AGENT}` is reserved for the gateway's own transitions"),
        );
    }
    let note_len = request.note.chars().count();
    if note_len > state.config.max_note_length {
        v.add(
            "note",
            format!(
                "{note_len} characters, over the limit of {} (`requests.max_note_length`): shorten it",
                state.config.max_note_length
            ),
        );
    }
    if !is_id(&request.client_request_id) {
        v.add(
            "client_request_id",
            format!("required: 1 to {MAX_ID_LEN} letters, digits, '-', '_', '.', ':' (reuse it for retries)"),
        );
    }
    let outcome = Outcome::try_from(request.outcome).ok();
    match (transition, outcome) {
        (_, None) => v.add(
            "outcome",
            format!(
                "{} is not an outcome (GRANTED, REFUSED, INFORMED, REDIRECTED, WITHDRAWN, NO_ACTION)",
                request.outcome
            ),
        ),
        (Some(Transition::Close), Some(Outcome::Unspecified)) => v.add(
            "outcome",
            "required to CLOSE: GRANTED, REFUSED, INFORMED, REDIRECTED, WITHDRAWN or NO_ACTION",
        ),
        (Some(t), Some(o)) if t != Transition::Close && o != Outcome::Unspecified => {
            v.add("outcome", "only CLOSE takes an outcome")
        }
        _ => {}
    }
    let to_service = request.to_service.trim();
    if transition == Some(Transition::Transfer) {
        if to_service.is_empty() {
            v.add(
                "to_service",
                "required to TRANSFER: the service that takes the request over",
            );
        } else if !state.services.contains(to_service) {
            v.add(
                "to_service",
                format!(
                    "unknown service `{}`: a transfer goes to a service some back-office client handles ({})",
                    printable(to_service, 64),
                    state.services.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    } else if !to_service.is_empty() {
        v.add("to_service", "only TRANSFER takes a service");
    }
    if let Some(t) = transition {
        for (field, reason) in store::check_notice(t, request.notify_usager, &request.documents) {
            v.add(field, reason);
        }
    }
    v.into_result()?;
    Ok(Change {
        transition: transition.unwrap_or_default(),
        agent_id: agent.to_owned(),
        client: client.name.clone(),
        client_request_id: request.client_request_id.clone(),
        note: request.note.clone(),
        expected_version: request.expected_version,
        outcome: outcome.unwrap_or_default(),
        to_service: to_service.to_owned(),
        notify_usager: request.notify_usager,
        documents: request.documents.iter().map(|d| d.trim().to_owned()).collect(),
    })
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListRequestsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Requests for RequestsService {
    async fn get_request(&self, request: Request<GetRequestRequest>) -> Result<Response<GetRequestResponse>, Status> {
        let started = Instant::now();
        let client = client_of(&request)?;
        let result = async {
            let reference = store::canonical_reference(&request.get_ref().reference).map_err(|e| e.status())?;
            let (record, _) = store::read(&self.state.bus.stores().requests, &reference)
                .await
                .map_err(|e| e.status())?
                .ok_or_else(|| RequestsError::NotFound(reference.clone()).status())?;
            client.check_service(&record.service)?;
            Ok(GetRequestResponse {
                request: Some(view::view(&record, true, chrono::Utc::now())),
            })
        }
        .await;
        observe("get_request", &client, started, result.as_ref().map(|_| ()));
        result.map(Response::new)
    }

    type ListRequestsStream = ListStream;

    async fn list_requests(
        &self,
        request: Request<ListRequestsRequest>,
    ) -> Result<Response<Self::ListRequestsStream>, Status> {
        let started = Instant::now();
        let client = client_of(&request)?;
        let result = async {
            let request = request.get_ref();
            if request.service.trim().is_empty() {
                return Err(Violations::single(
                    "service",
                    "required: the service whose requests to list",
                ));
            }
            client.check_service(&request.service)?;
            let filter = list::Filter::from_request(request).map_err(|e| e.status())?;
            let offset = list::parse_page_token(&request.page_token).map_err(|e| e.status())?;
            let config = &self.state.config;
            let page_size = match request.page_size {
                0 => config.page_size,
                n if n > config.max_page_size => {
                    return Err(Violations::single(
                        "page_size",
                        &format!("at most {} (`requests.max_page_size`)", config.max_page_size),
                    ));
                }
                n => n,
            } as usize;
            let now = chrono::Utc::now();
            let records = list::all_records(&self.state.bus).await.map_err(|e| e.status())?;
            let matching = filter.apply(records, now);
            let page: Vec<_> = matching.iter().skip(offset).take(page_size).collect();
            let next = offset + page.len();
            let end = ListRequestsEnd {
                entries: u32::try_from(page.len()).unwrap_or(u32::MAX),
                next_page_token: if next < matching.len() {
                    list::page_token(next)
                } else {
                    String::new()
                },
            };
            let mut items: Vec<Result<ListRequestsResponse, Status>> = page
                .into_iter()
                .map(|r| {
                    Ok(ListRequestsResponse {
                        item: Some(list_requests_response::Item::Request(view::view(r, false, now))),
                    })
                })
                .collect();
            items.push(Ok(ListRequestsResponse {
                item: Some(list_requests_response::Item::End(end)),
            }));
            Ok(items)
        }
        .await;
        observe("list_requests", &client, started, result.as_ref().map(|_| ()));
        let items = result?;
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn update_request(
        &self,
        request: Request<UpdateRequestRequest>,
    ) -> Result<Response<UpdateRequestResponse>, Status> {
        let started = Instant::now();
        let client = client_of(&request)?;
        let result = async {
            let request = request.get_ref();
            let reference = store::canonical_reference(&request.reference).map_err(|e| e.status())?;
            let change = change_of(&self.state, &client, request)?;
            let allowed = |service: &str| client.check_service(service);
            let applied = store::update(
                &self.state.bus,
                &self.state.events,
                &reference,
                &change,
                &allowed,
                crate::clock::Rules::InForce {
                    rules: &self.state.rules,
                    key: &self.state.config.rules_key,
                },
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| e.status())??;
            Ok(UpdateRequestResponse {
                request: Some(view::view(&applied.record, true, chrono::Utc::now())),
                version: applied.version,
                duplicate: applied.duplicate,
            })
        }
        .await;
        observe("update_request", &client, started, result.as_ref().map(|_| ()));
        result.map(Response::new)
    }
}

/// What [`crate::check`] prepared from the configuration.
pub struct Prepared {
    pub clients: Clients,
    pub tls: Option<ServerTlsConfig>,
}

/// Resolves the tokens and reads the TLS files; errors name the key.
pub fn prepare(config: &RequestsConfig) -> Result<Prepared, RequestsError> {
    use guichet_core::config::Validate;
    config.validate()?;
    let clients = Clients::from_config(config)?;
    let tls = match &config.tls {
        None => None,
        Some(tls) => Some(grpc::server_tls(
            "requests.tls",
            &tls.cert_file,
            &tls.key_file,
            tls.client_ca_file.as_deref(),
        )?),
    };
    Ok(Prepared { clients, tls })
}

/// Serves until `shutdown`, then lets in-flight calls finish.
pub async fn serve(
    ctx: ServiceContext,
    config: RequestsConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RequestsError> {
    let prepared = prepare(&config)?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.to_string());
    let serve_error = |reason: String| RequestsError::Serve {
        addr: addr.clone(),
        reason,
    };
    let events_stream = events::events_stream(&ctx.bus).await?;
    // The last version's event of every request, if a crash lost it.
    repair_all(&ctx.bus, &events_stream, &shutdown).await?;

    let tls = prepared.tls.is_some();
    let (sweep_interval, due_soon) = (config.sweep_interval, config.due_soon);
    let rules = guichet_rules::InForce::default();
    let rules_key = config.rules_key.clone();
    let state = State {
        bus: ctx.bus.clone(),
        events: events_stream,
        services: prepared.clients.services(),
        config,
        rules: rules.clone(),
    };
    let requests = InterceptedService::new(
        RequestsServer::new(RequestsService::new(state)),
        prepared.clients.interceptor(),
    );
    let (router, health) = grpc::server(prepared.tls, "requests.tls")?;
    let router = router.add_service(requests);
    let sweep_stop = shutdown.child_token();
    let sweep_task = tokio::spawn(crate::sweep::run(
        ctx.bus.clone(),
        sweep_interval,
        due_soon,
        (rules, rules_key),
        sweep_stop.clone(),
    ));
    let acknowledgments_task = tokio::spawn(crate::acknowledgments::run(ctx.bus.clone(), sweep_stop.clone()));
    ctx.health.set_ready("requests", true);
    tracing::info!(%addr, tls, "requests gRPC service listening");
    let result = grpc::serve(router, listener, ctx.bus.clone(), health, SERVICE_NAME, shutdown).await;
    sweep_stop.cancel();
    let _ = sweep_task.await;
    let _ = acknowledgments_task.await;
    result.map_err(|e| serve_error(e.to_string()))
}

/// Publishes the missing last event of any request (see [`crate::events`]).
pub async fn repair_all(
    bus: &Bus,
    events_stream: &JsStream,
    shutdown: &CancellationToken,
) -> Result<u64, RequestsError> {
    let mut repaired = 0;
    for record in list::all_records(bus).await? {
        if shutdown.is_cancelled() {
            break;
        }
        if events::ensure_published(bus, events_stream, &record).await? {
            repaired += 1;
        }
    }
    if repaired > 0 {
        tracing::warn!(repaired, "published request events a previous run had not");
    }
    Ok(repaired)
}
