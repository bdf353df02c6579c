//! A counter application logging one visit, the way counter software
//! should: one `client_request_id` per contact, kept across retries;
//! retry on UNAVAILABLE / DEADLINE_EXCEEDED; show the field errors of an
//! INVALID_ARGUMENT to the agent; never retry anything else.
//!
//! ```sh
//! GUICHET_DESK_TOKEN=… GUICHET_DESK_SITE=mairie-centre \
//!   cargo run -p guichet-desk --example record_contact
//! ```
//! `GUICHET_DESK_URL` defaults to `http://127.0.0.1:50051`; with an
//! `https://` URL, `GUICHET_DESK_CA` names the CA certificate (PEM) to trust.
//! In another language, generate a client from `proto/guichet/v1/desk.proto`
//! (or use server reflection) and follow the same steps.

use std::time::Duration;

use guichet_core::proto::v1::{
    Channel as ContactChannel, CounterDetails, IdentityClaims, RecordContactRequest, RoutingStatus,
    desk_client::DeskClient, record_contact_request::Details,
};
use tonic::{
    Code, Request,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("GUICHET_DESK_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("GUICHET_DESK_TOKEN")?;
    let site = std::env::var("GUICHET_DESK_SITE")?;

    let mut endpoint = Endpoint::from_shared(url)?.connect_timeout(Duration::from_secs(5));
    if let Ok(ca) = std::env::var("GUICHET_DESK_CA") {
        endpoint =
            endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?)))?;
    }
    let mut client = DeskClient::new(endpoint.connect_lazy());

    // Minted once when the agent saves, stored with the visit, reused on
    // every retry: the gateway records the contact once.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let visit = RecordContactRequest {
        client_request_id: format!("visit-{nanos}"),
        channel: ContactChannel::Counter as i32,
        site,
        agent_id: "agent-0042".into(),
        usager: Some(IdentityClaims {
            name: "Mme Jeanne Martin".into(),
            email: "jeanne.martin@example.fr".into(),
            phone: "06 12 34 56 78".into(),
            ..Default::default()
        }),
        subject: "Renouvellement de carte d'identité".into(),
        notes: "Pièces fournies : ancienne carte, justificatif de domicile.".into(),
        details: Some(Details::Counter(CounterDetails {
            wait_seconds: 240,
            service_seconds: 600,
        })),
        // Tell the usager at once which service handles it and by when.
        wait_for_routing: true,
        ..Default::default()
    };

    let mut delay = Duration::from_millis(500);
    for attempt in 1..=5 {
        let mut request = Request::new(visit.clone());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        request.set_timeout(Duration::from_secs(5));
        match client.record_contact(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                println!("reference {} (contact {})", answer.reference, answer.contact_id);
                match (RoutingStatus::try_from(answer.routing_status), answer.decision) {
                    (Ok(RoutingStatus::Decided), Some(d)) => {
                        println!(
                            "handled by {} ({}), answer due by {}",
                            d.service, d.typology, d.due_date
                        )
                    }
                    _ => println!("routing pending: the request is recorded and will be routed"),
                }
                return Ok(());
            }
            Err(status) if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                eprintln!("attempt {attempt}: {} — retrying in {delay:?}", status.message());
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                for v in status
                    .get_error_details()
                    .bad_request()
                    .map(|b| b.field_violations.clone())
                    .unwrap_or_default()
                {
                    eprintln!("{}: {}", v.field, v.description);
                }
                return Err("the form needs correcting".into());
            }
            Err(status) => return Err(format!("{:?}: {}", status.code(), status.message()).into()),
        }
    }
    Err("the gateway stayed unavailable; keep the visit and retry later with the same id".into())
}
