//! The back-office as the tests play it: a client of the requests
//! service's gRPC API with its bearer token, moving requests through
//! their lifecycle (take, answer, close) as an agent's software would.

use std::{net::SocketAddr, time::Duration};

use guichet_core::proto::v1::{
    GetRequestRequest, Outcome, Transition, UpdateRequestRequest, requests_client::RequestsClient,
};
use tonic::{Request, transport::Channel};

/// A connected back-office client.
pub struct BackOffice {
    client: RequestsClient<Channel>,
    token: String,
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
        }
    }

    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .unwrap_or_else(|e| panic!("the token is not a header value: {e}"));
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    /// Polls until `reference` exists with at least `version` (bounded:
    /// the router and the requests service work in the background).
    pub async fn wait_version(&mut self, reference: &str, version: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let call = self.authed(GetRequestRequest {
                reference: reference.into(),
            });
            if let Ok(answer) = self.client.get_request(call).await
                && answer.into_inner().request.is_some_and(|r| r.version >= version)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{reference} never reached version {version}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves `reference`, at `version`, by `transition` (a close is
    /// granted); panics if the service refuses.
    pub async fn update(&mut self, reference: &str, transition: Transition, version: u64) {
        let call = self.authed(UpdateRequestRequest {
            reference: reference.into(),
            transition: transition.into(),
            agent_id: "agent-7".into(),
            expected_version: Some(version),
            client_request_id: format!("{reference}-{version}"),
            outcome: if transition == Transition::Close {
                Outcome::Granted.into()
            } else {
                Outcome::Unspecified.into()
            },
            ..Default::default()
        });
        if let Err(status) = self.client.update_request(call).await {
            panic!("{transition:?} of {reference} at version {version} refused: {status}");
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
