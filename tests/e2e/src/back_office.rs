//! The back-office as the tests play it: a client of the requests
//! service's gRPC API with its bearer token, moving requests through
//! their lifecycle (take, answer, close) as an agent's software would.

use std::{net::SocketAddr, time::Duration};

use guichet_core::proto::v1::{
    GetRequestRequest, Outcome, RequestView, Transition, UpdateRequestRequest, UpdateRequestResponse,
    requests_client::RequestsClient,
};
use guichet_requests::{ClientConfig, RequestsConfig};
use tonic::{Code, Request, transport::Channel};

/// `[requests]` listening on `listen` with one client, `back-office`,
/// holding `token` for `services`.
pub fn requests_config(listen: SocketAddr, token: &str, services: Vec<String>) -> RequestsConfig {
    RequestsConfig {
        listen,
        clients: std::collections::BTreeMap::from([(
            "back-office".to_owned(),
            ClientConfig {
                token: guichet_core::secret::Secret::Inline(token.into()),
                services,
            },
        )]),
        ..RequestsConfig::default()
    }
}

/// A connected back-office client, acting as one agent.
pub struct BackOffice {
    client: RequestsClient<Channel>,
    token: String,
    agent: String,
}

impl BackOffice {
    /// Connects to the requests service listening on `addr`.
    pub async fn connect(addr: SocketAddr, token: &str) -> Self {
        let client = RequestsClient::connect(format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| panic!("connecting to the requests service on {addr}: {e}"));
        Self {
            client,
            token: token.to_owned(),
            agent: "agent-7".to_owned(),
        }
    }

    /// The same client acting as `agent`.
    pub fn as_agent(mut self, agent: &str) -> Self {
        agent.clone_into(&mut self.agent);
        self
    }

    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .unwrap_or_else(|e| panic!("the token is not a header value: {e}"));
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    /// Polls GetRequest until `reference` exists and `ready` holds
    /// (bounded: the router and the requests service work in the
    /// background); its view then.
    pub async fn wait_for(&mut self, reference: &str, ready: impl Fn(&RequestView) -> bool) -> RequestView {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let call = self.authed(GetRequestRequest {
                reference: reference.into(),
            });
            match self.client.get_request(call).await {
                Ok(answer) => {
                    if let Some(view) = answer.into_inner().request
                        && ready(&view)
                    {
                        return view;
                    }
                }
                Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request {reference} never got there"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until `reference` exists with at least `version`.
    pub async fn wait_version(&mut self, reference: &str, version: u64) {
        self.wait_for(reference, |r| r.version >= version).await;
    }

    /// Moves `reference`, at `version`, by `transition` (a close is
    /// granted); panics if the service refuses.
    pub async fn update(&mut self, reference: &str, transition: Transition, version: u64) -> UpdateRequestResponse {
        let call = self.authed(UpdateRequestRequest {
            reference: reference.into(),
            transition: transition.into(),
            agent_id: self.agent.clone(),
            note: format!("{transition:?} by {}", self.agent),
            expected_version: Some(version),
            client_request_id: format!("{reference}-{version}"),
            outcome: if transition == Transition::Close {
                Outcome::Granted.into()
            } else {
                Outcome::Unspecified.into()
            },
            ..Default::default()
        });
        match self.client.update_request(call).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => panic!("{transition:?} of {reference} at version {version} refused: {status}"),
        }
    }

    /// Takes, answers and closes a newly opened request (versions 1 to 4).
    pub async fn settle(&mut self, reference: &str) {
        self.wait_version(reference, 1).await;
        for (version, transition) in [(1, Transition::Take), (2, Transition::Answer), (3, Transition::Close)] {
            self.update(reference, transition, version).await;
        }
    }
}
