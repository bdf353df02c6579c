//! GetUsagerHistory against a real nats-server: the test plays the router
//! (it publishes `Routed` envelopes on ROUTED and writes the identity
//! bucket as `guichet_core::bus::usagers` documents), then reads a
//! usager's history seen through three channels, paged, newest first.
// Test helpers outside #[test] functions unwrap too: a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use guichet_core::{
    Bus,
    bus::usagers::{alias_key, merged_key},
    identity::{normalize_email, normalize_phone},
    proto::{
        self,
        v1::{
            Channel as ContactChannel, Contact, GetUsagerHistoryRequest, HistoryEnd, HistoryEntry, Qualification,
            Routed, desk_client::DeskClient, get_usager_history_request::Usager, get_usager_history_response::Item,
        },
    },
};
use guichet_harness::Nats;
use tonic::{Code, transport::Channel};

fn routed(usager: &str, channel: ContactChannel, service: &str, subject: &str) -> Routed {
    let now = chrono::Utc::now();
    let id = guichet_core::ids::contact_id();
    let reference = guichet_core::ids::reference(now);
    Routed {
        contact: Some(Contact {
            id,
            channel: channel as i32,
            subject: subject.into(),
            reference: reference.clone(),
            received_at: Some(proto::timestamp(now)),
            ..Default::default()
        }),
        usager_id: usager.into(),
        reference,
        qualification: Some(Qualification {
            service: service.into(),
            typology: "t".into(),
            ..Default::default()
        }),
        routed_at: Some(proto::timestamp(now)),
        ..Default::default()
    }
}

async fn identity_put(bus: &Bus, key: &str, value: &str) {
    bus.stores().identity.put(key, value.to_owned().into()).await.unwrap();
}

async fn page(
    client: &mut DeskClient<Channel>,
    usager: Usager,
    page_size: u32,
    token: &str,
) -> Result<(Vec<HistoryEntry>, HistoryEnd), tonic::Status> {
    page_as(client, (NORD, NORD_TOKEN), usager, page_size, token).await
}

/// A page read by `site` with its token, by agent "agent-7".
async fn page_as(
    client: &mut DeskClient<Channel>,
    (site, site_token): (&str, &str),
    usager: Usager,
    page_size: u32,
    token: &str,
) -> Result<(Vec<HistoryEntry>, HistoryEnd), tonic::Status> {
    let request = GetUsagerHistoryRequest {
        site: site.into(),
        usager: Some(usager),
        page_size,
        page_token: token.into(),
        agent_id: "agent-7".into(),
    };
    let mut stream = client
        .get_usager_history(authed(request, site_token))
        .await?
        .into_inner();
    let mut entries = Vec::new();
    let mut end = None;
    while let Some(item) = stream.message().await? {
        match item.item.unwrap() {
            Item::Entry(e) => {
                assert!(end.is_none(), "entries after the end");
                entries.push(e);
            }
            Item::End(e) => end = Some(e),
        }
    }
    Ok((entries, end.expect("a page ends with `end`")))
}

fn subjects_of(entries: &[HistoryEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.routed.as_ref().unwrap().contact.as_ref().unwrap().subject.clone())
        .collect()
}

#[tokio::test]
async fn a_usager_seen_through_three_channels_has_one_history_newest_first() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let bus = &desk.bus;

    // U1: a mail, a web form, a counter visit; U0 was merged into U1 with a
    // phone call; U9 is someone else.
    publish_routed(
        bus,
        &routed("U0", ContactChannel::Phone, "voirie", "appel (U0, fusionné)"),
    )
    .await;
    publish_routed(bus, &routed("U1", ContactChannel::Email, "urbanisme", "mail")).await;
    publish_routed(bus, &routed("U9", ContactChannel::Web, "urbanisme", "autre usager")).await;
    publish_routed(bus, &routed("U1", ContactChannel::Web, "dechets", "formulaire")).await;
    publish_routed(bus, &routed("U1", ContactChannel::Counter, "etat-civil", "guichet")).await;
    identity_put(
        bus,
        &guichet_harness::pseudonymizer().identity_key(&normalize_email("jeanne@example.fr").unwrap()),
        "U1",
    )
    .await;
    identity_put(
        bus,
        &guichet_harness::pseudonymizer().identity_key(&normalize_phone("+33612345678").unwrap()),
        "U0",
    )
    .await;
    identity_put(bus, &alias_key("U0"), "U1").await;
    identity_put(bus, &merged_key("U1"), r#"["U0"]"#).await;

    let want = ["guichet", "formulaire", "mail", "appel (U0, fusionné)"];
    // By id, by e-mail as typed by an agent, by a phone in national form
    // (which points at the merged id): the same history.
    for usager in [
        Usager::UsagerId("U1".into()),
        Usager::Email("  Jeanne@Example.FR ".into()),
        Usager::Phone("06 12 34 56 78".into()),
        Usager::UsagerId("U0".into()),
    ] {
        let (entries, end) = page(&mut client, usager.clone(), 0, "").await.unwrap();
        assert_eq!(subjects_of(&entries), want, "{usager:?}");
        assert_eq!(end.usager_id, "U1");
        assert_eq!(end.merged_usager_ids, ["U0"]);
        assert_eq!(end.entries, 4);
        assert!(end.next_page_token.is_empty());
        let channels: Vec<i32> = entries
            .iter()
            .map(|e| e.routed.as_ref().unwrap().contact.as_ref().unwrap().channel)
            .collect();
        assert_eq!(
            channels,
            [
                ContactChannel::Counter as i32,
                ContactChannel::Web as i32,
                ContactChannel::Email as i32,
                ContactChannel::Phone as i32
            ]
        );
        assert!(entries.windows(2).all(|w| w[0].sequence > w[1].sequence));
        assert_eq!(
            entries[0]
                .routed
                .as_ref()
                .unwrap()
                .qualification
                .as_ref()
                .unwrap()
                .service,
            "etat-civil"
        );
    }

    // Paged by two, then the rest.
    let (first, end) = page(&mut client, Usager::UsagerId("U1".into()), 2, "").await.unwrap();
    assert_eq!(subjects_of(&first), ["guichet", "formulaire"]);
    assert!(!end.next_page_token.is_empty());
    let (second, end2) = page(&mut client, Usager::UsagerId("U1".into()), 2, &end.next_page_token)
        .await
        .unwrap();
    assert_eq!(subjects_of(&second), ["mail", "appel (U0, fusionné)"]);
    assert!(end2.next_page_token.is_empty(), "{end2:?}");

    // A contact routed meanwhile does not disturb the next page.
    publish_routed(bus, &routed("U1", ContactChannel::Counter, "etat-civil", "nouveau")).await;
    let (second_again, _) = page(&mut client, Usager::UsagerId("U1".into()), 2, &end.next_page_token)
        .await
        .unwrap();
    assert_eq!(subjects_of(&second_again), ["mail", "appel (U0, fusionné)"]);
    let (newest, _) = page(&mut client, Usager::UsagerId("U1".into()), 1, "").await.unwrap();
    assert_eq!(subjects_of(&newest), ["nouveau"]);

    // Someone with no history: an empty page, not an error.
    let (none, end) = page(&mut client, Usager::UsagerId("U5".into()), 0, "").await.unwrap();
    assert!(none.is_empty());
    assert_eq!((end.usager_id.as_str(), end.entries), ("U5", 0));
    desk.stop().await;
}

#[tokio::test]
async fn history_lookups_say_what_is_wrong() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;

    let status = page(&mut client, Usager::Email("nobody@example.fr".into()), 0, "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(!status.message().contains("nobody"), "the address is not echoed");

    for (usager, field, page_size, token) in [
        (Usager::Email("not an address".into()), "email", 0, ""),
        (Usager::Phone("12".into()), "phone", 0, ""),
        (Usager::UsagerId("U1.>".into()), "usager_id", 0, ""),
        (Usager::UsagerId("*".into()), "usager_id", 0, ""),
        (Usager::UsagerId("U1".into()), "page_size", 501, ""),
        (Usager::UsagerId("U1".into()), "page_token", 0, "garbage"),
    ] {
        let status = page(&mut client, usager, page_size, token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violated_fields(&status), [field]);
    }
    let request = GetUsagerHistoryRequest {
        site: NORD.into(),
        ..Default::default()
    };
    let status = client
        .get_usager_history(authed(request, NORD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["usager"]);
    let request = GetUsagerHistoryRequest {
        site: NORD.into(),
        usager: Some(Usager::UsagerId("U1".into())),
        agent_id: "a".repeat(129),
        ..Default::default()
    };
    let status = client
        .get_usager_history(authed(request, NORD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["agent_id"]);
}

#[tokio::test]
async fn a_contact_recorded_at_the_desk_shows_in_the_history_once_routed() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let js = nats.jetstream().await;

    let receipt = client
        .record_contact(authed(counter_visit("h-1"), NORD_TOKEN))
        .await
        .unwrap()
        .into_inner();
    // The router's part: route what INTAKE holds, remember the e-mail.
    let (_, _, contact) = intake(&js).await.remove(0);
    identity_put(
        &desk.bus,
        &guichet_harness::pseudonymizer()
            .identity_key(&normalize_email(&contact.claims.as_ref().unwrap().email).unwrap()),
        "U7",
    )
    .await;
    let mut envelope = routed("U7", ContactChannel::Counter, "etat-civil", "");
    envelope.reference = contact.reference.clone();
    envelope.contact = Some(contact);
    publish_routed(&desk.bus, &envelope).await;

    let (entries, _) = page(&mut client, Usager::Email("jeanne.martin@example.fr".into()), 0, "")
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let shown = entries[0].routed.as_ref().unwrap();
    assert_eq!(shown.reference, receipt.reference);
    assert_eq!(shown.contact.as_ref().unwrap().id, receipt.contact_id);
}

/// A contact of `usager` taken through `channel` whose source is `source`
/// (a desk site, a form id, a mailbox).
fn routed_from(usager: &str, channel: ContactChannel, source: &str, subject: &str) -> Routed {
    let mut r = routed(usager, channel, "etat-civil", subject);
    if let Some(contact) = r.contact.as_mut() {
        contact.source = Some(proto::v1::Source {
            name: source.into(),
            agent_id: "agent-1".into(),
            ..Default::default()
        });
    }
    r
}

/// The `history_read` events the access journal holds, oldest first.
async fn history_reads(nats: &Nats) -> Vec<serde_json::Value> {
    guichet_harness::streams::read_all(&nats.jetstream().await, "EVENTS", std::time::Duration::from_secs(20))
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.subject == "guichet.events.history_read")
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn each_site_reads_within_its_history_scope() {
    let nats = Nats::start().await;
    let mut config = config();
    config.sites.insert(
        "accueil-rdv".into(),
        guichet_desk::SiteConfig {
            history: guichet_desk::HistoryScope::None,
            ..guichet_desk::SiteConfig::new(guichet_core::secret::Secret::Inline(
                "rdv-0123456789abcdef0123456789".into(),
            ))
        },
    );
    let desk = TestDesk::start(&nats, config).await;
    let mut client = desk.client().await;
    let bus = &desk.bus;
    let sud = (SUD, SUD_TOKEN);

    // U1 came to SUD three times (counter, phone, a letter), to NORD once,
    // and wrote through a web form that happens to be named like SUD.
    for r in [
        routed_from("U1", ContactChannel::Counter, SUD, "sud 1"),
        routed_from("U1", ContactChannel::Counter, NORD, "nord"),
        routed_from("U1", ContactChannel::Web, SUD, "formulaire nommé mairie-sud"),
        routed_from("U1", ContactChannel::Phone, SUD, "sud 2"),
        routed_from("U1", ContactChannel::Postal, SUD, "sud 3"),
        routed_from("U2", ContactChannel::Counter, NORD, "U2 à nord seulement"),
    ] {
        publish_routed(bus, &r).await;
    }
    identity_put(
        bus,
        &guichet_harness::pseudonymizer().identity_key(&normalize_email("u2@example.fr").unwrap()),
        "U2",
    )
    .await;

    // `all` (NORD): everything, every channel and site.
    let (all, _) = page(&mut client, Usager::UsagerId("U1".into()), 0, "").await.unwrap();
    assert_eq!(all.len(), 5);

    // `own_site` (SUD, the default): only what SUD recorded, paged within it.
    let (first, end) = page_as(&mut client, sud, Usager::UsagerId("U1".into()), 2, "")
        .await
        .unwrap();
    assert_eq!(subjects_of(&first), ["sud 3", "sud 2"]);
    assert_eq!(end.entries, 2);
    let (rest, end) = page_as(&mut client, sud, Usager::UsagerId("U1".into()), 2, &end.next_page_token)
        .await
        .unwrap();
    assert_eq!(subjects_of(&rest), ["sud 1"]);
    assert!(end.next_page_token.is_empty(), "{end:?}");

    // A usager with nothing at SUD, by id or by e-mail, and an e-mail no
    // one has: the same refusal, which tells nothing about who is known.
    let mut refusals = Vec::new();
    for usager in [
        Usager::UsagerId("U2".into()),
        Usager::Email("u2@example.fr".into()),
        Usager::Email("personne@example.fr".into()),
        Usager::UsagerId("U404".into()),
    ] {
        let status = page_as(&mut client, sud, usager.clone(), 0, "").await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{usager:?}: {status:?}");
        assert!(status.message().contains("own_site"), "{}", status.message());
        assert!(!status.message().contains("U2") && !status.message().contains("example.fr"));
        refusals.push(status.message().to_owned());
    }
    refusals.dedup();
    assert_eq!(refusals.len(), 1, "{refusals:?}");

    // `none`: no history at all.
    let status = page_as(
        &mut client,
        ("accueil-rdv", "rdv-0123456789abcdef0123456789"),
        Usager::UsagerId("U1".into()),
        0,
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("\"none\""), "{}", status.message());

    // Only the three pages returned were journaled, none of the refusals.
    let reads = history_reads(&nats).await;
    let summary: Vec<(&str, &str, u64)> = reads
        .iter()
        .map(|e| {
            (
                e["site"].as_str().unwrap(),
                e["scope"].as_str().unwrap(),
                e["contacts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(NORD, "all", 5), (SUD, "own_site", 2), (SUD, "own_site", 1)]);
    desk.stop().await;
}

#[tokio::test]
async fn every_history_page_is_journaled_before_it_is_returned_and_without_personal_data() {
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let bus = &desk.bus;

    publish_routed(bus, &routed("U0", ContactChannel::Phone, "voirie", "appel")).await;
    publish_routed(bus, &routed("U1", ContactChannel::Email, "urbanisme", "mail")).await;
    identity_put(
        bus,
        &guichet_harness::pseudonymizer().identity_key(&normalize_email("jeanne@example.fr").unwrap()),
        "U1",
    )
    .await;
    identity_put(bus, &merged_key("U1"), r#"["U0"]"#).await;

    let before = chrono::Utc::now();
    let (entries, _) = page(&mut client, Usager::Email("Jeanne@Example.FR".into()), 0, "")
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    let reads = history_reads(&nats).await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    let event = &reads[0];
    assert_eq!(event["kind"], "history_read");
    assert_eq!(event["site"], NORD);
    assert_eq!(event["agent_id"], "agent-7");
    assert_eq!(event["usager_id"], "U1");
    assert_eq!(event["merged_usager_ids"], serde_json::json!(["U0"]));
    assert_eq!(event["looked_up_by"], "email");
    assert_eq!(event["contacts"], 2);
    assert_eq!(event["first_page"], true);
    let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
    assert!(at >= before - chrono::Duration::seconds(1), "{at}");
    // No identifier that was looked up, no content.
    let text = event.to_string().to_lowercase();
    for personal in ["jeanne", "example.fr", "appel", "urbanisme", "voirie"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }

    // The journal cannot record (its stream is gone): the history, still
    // readable in ROUTED, is refused rather than read untraced.
    nats.jetstream()
        .await
        .delete_stream(guichet_core::bus::subjects::EVENTS_STREAM)
        .await
        .unwrap();
    let status = page(&mut client, Usager::UsagerId("U1".into()), 0, "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("access journal"), "{}", status.message());
    desk.stop().await;
}

/// Each entry shows where its request stands now, from the requests
/// bucket: a follow-up and its first contact show the same request; a
/// request no longer in the bucket leaves `request` unset.
#[tokio::test]
async fn each_entry_shows_its_request_status() {
    use guichet_core::{
        proto::v1::{Outcome, RequestStatus},
        request::{RequestRecord, request_key},
    };
    let nats = Nats::start().await;
    let desk = TestDesk::start(&nats, config()).await;
    let mut client = desk.client().await;
    let bus = &desk.bus;
    let first = routed("U1", ContactChannel::Email, "voirie", "nid de poule");
    let mut follow_up = routed("U1", ContactChannel::Web, "voirie", "photo du nid de poule");
    follow_up.reference.clone_from(&first.reference);
    follow_up.follow_up_of.clone_from(&first.reference);
    let closed = routed("U1", ContactChannel::Counter, "etat-civil", "acte de naissance");
    let gone = routed("U1", ContactChannel::Phone, "voirie", "effacée");
    for r in [&first, &closed, &follow_up, &gone] {
        publish_routed(bus, r).await;
    }
    let put = |record: RequestRecord| async move {
        bus.stores()
            .requests
            .put(
                request_key(&record.reference),
                serde_json::to_vec(&record).unwrap().into(),
            )
            .await
            .unwrap();
    };
    // Taken, transferred to propreté, due in the past: overdue.
    put(RequestRecord {
        reference: first.reference.clone(),
        service: "proprete".into(),
        usager_id: "U1".into(),
        status: "taken".into(),
        due_at: "2026-01-23T16:00:00Z".into(),
        due_date: "2026-01-23".into(),
        version: 4,
        ..Default::default()
    })
    .await;
    put(RequestRecord {
        reference: closed.reference.clone(),
        service: "etat-civil".into(),
        usager_id: "U1".into(),
        status: "closed".into(),
        outcome: "granted".into(),
        due_at: "2026-01-23T16:00:00Z".into(),
        due_date: "2026-01-23".into(),
        version: 3,
        ..Default::default()
    })
    .await;

    let (entries, _) = page(&mut client, Usager::UsagerId("U1".into()), 10, "").await.unwrap();
    // (subject, (reference, service, status, due date, overdue, outcome)).
    type Shown = (String, Option<(String, String, i32, String, bool, i32)>);
    let shown: Vec<Shown> = entries
        .iter()
        .map(|e| {
            let subject = e.routed.as_ref().unwrap().contact.as_ref().unwrap().subject.clone();
            let request = e.request.as_ref().map(|r| {
                (
                    r.reference.clone(),
                    r.service.clone(),
                    r.status,
                    r.deadlines.as_ref().unwrap().engagement_due_date.clone(),
                    r.overdue,
                    r.outcome,
                )
            });
            (subject, request)
        })
        .collect();
    let taken = Some((
        first.reference.clone(),
        "proprete".to_owned(),
        RequestStatus::Taken as i32,
        "2026-01-23".to_owned(),
        true,
        Outcome::Unspecified as i32,
    ));
    assert_eq!(
        shown,
        [
            ("effacée".to_owned(), None),
            ("photo du nid de poule".to_owned(), taken.clone()),
            (
                "acte de naissance".to_owned(),
                Some((
                    closed.reference.clone(),
                    "etat-civil".to_owned(),
                    RequestStatus::Closed as i32,
                    "2026-01-23".to_owned(),
                    false,
                    Outcome::Granted as i32,
                ))
            ),
            ("nid de poule".to_owned(), taken),
        ]
    );
    let deadlines = entries[1].request.as_ref().unwrap().deadlines.as_ref().unwrap();
    assert_eq!(
        deadlines.engagement_due_at.as_ref().unwrap().seconds,
        chrono::DateTime::parse_from_rfc3339("2026-01-23T16:00:00Z")
            .unwrap()
            .timestamp()
    );
    desk.stop().await;
}
