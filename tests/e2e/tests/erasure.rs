//! Erasure leaves nothing: an installation filled through all three
//! channels (a web form with files, a desk contact with a scanned letter,
//! an e-mail with an attachment, whose raw message is kept), then
//! `usager forget` of one person, then every stream, every key-value
//! bucket and every object (names and content) searched for their ids,
//! identifier hashes and what they wrote or sent: nothing is found, while
//! another usager who sent an identical file keeps it, still readable.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, time::Duration};

use futures::StreamExt;
use guichet::{Config, Listeners, ServiceName};
use guichet_core::{
    Bus,
    bus::subjects,
    identity::{normalize_email, normalize_phone},
    proto::v1::{
        Channel, DeskAttachment, IdentityClaims, RecordContactRequest, Routed, contact::Details,
        desk_client::DeskClient,
    },
};
use guichet_e2e::{Gateway, loopback};
use guichet_harness::{
    Dovecot, Nats,
    dovecot::{IMAP_PASSWORD, IMAP_USER},
    streams::read_all,
};
use prost::Message;

const TOKEN: &str = "e2e-erasure-token-0123456789";
const RULES: &str = r#"
manual_service = "accueil"

[[services]]
name = "accueil"
deadline = "5 business days"
"#;

/// The person erased, and what only they wrote or sent.
const ANNE: &str = "anne.quelinec@example.fr";
const ANNE_PHONE: &str = "0698765432";
const ANNE_NAME: &str = "Anne Quelinec";
const ANNE_WEB: &str = "Ma demande Zorglub-web";
const ANNE_DESK: &str = "Passage Zorglub-desk";
const ANNE_MAIL: &str = "Courriel Zorglub-mail";
const ANNE_PHOTO: &[u8] = b"JPEG privee d'Anne Zorglub-photo";
const ANNE_SCAN: &[u8] = b"%PDF-1.4 lettre scannee Zorglub-scan";
const ANNE_MAIL_FILE: &[u8] = b"releve Zorglub-piece-jointe";
/// What both sent: one object in the store.
const SHARED: &[u8] = b"%PDF-1.4 formulaire cerfa 13406 vierge";
const BRUNO: &str = "bruno.tessier@example.fr";

fn mail() -> Vec<u8> {
    format!(
        "From: {ANNE_NAME} <{ANNE}>\r\nTo: contact@ville.example\r\nSubject: {ANNE_MAIL}\r\n\
         Message-ID: <zorglub-1@example.fr>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{ANNE_MAIL}, merci.\r\n\
         --b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"releve.txt\"\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n--b1--\r\n",
        String::from_utf8_lossy(ANNE_MAIL_FILE)
    )
    .into_bytes()
}

async fn web_submission(web: &str, email: &str, description: &str, files: &[(&str, &[u8])]) {
    let name = if email == ANNE { ANNE_NAME } else { "Bruno" };
    let mut body = Vec::new();
    for (field, value) in [("email", email), ("nom", name), ("description", description)] {
        body.extend_from_slice(
            format!("--b\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (field, content) in files {
        body.extend_from_slice(
            format!(
                "--b\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{field}.bin\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--b--\r\n");
    let response = reqwest::Client::new()
        .post(format!("http://{web}/v1/forms/demarches/submissions"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 202, "{}", response.text().await.unwrap());
}

/// Waits until ROUTED holds `count` messages and returns them.
async fn routed(js: &async_nats::jetstream::Context, count: usize) -> Vec<Routed> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let messages = read_all(js, subjects::ROUTED_STREAM, Duration::from_secs(20))
            .await
            .unwrap();
        if messages.len() >= count {
            return messages
                .iter()
                .map(|m| Routed::decode(m.payload.as_slice()).unwrap())
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} contacts routed after 60 s",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every place something can be kept: each stream's messages (subjects
/// and payloads, key-value buckets' and the object store's included), the
/// live keys and values of every bucket, the names and content of every
/// object. Returns (where, text) pairs.
async fn everything(js: &async_nats::jetstream::Context) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
    assert!(names.iter().any(|n| n == "KV_guichet_identity"), "{names:?}");
    assert!(names.iter().any(|n| n == "OBJ_guichet_attachments"), "{names:?}");
    for name in &names {
        for m in read_all(js, name, Duration::from_secs(30)).await.unwrap() {
            // Subjects too: a key-value purge leaves a marker under the
            // key's name, which is an id or an identifier hash.
            out.push((
                format!("{name} #{} subject", m.sequence),
                m.subject.clone().into_bytes(),
            ));
            out.push((format!("{name} #{} {}", m.sequence, m.subject), m.payload));
        }
        if let Some(bucket) = name.strip_prefix("KV_") {
            let kv = js.get_key_value(bucket).await.unwrap();
            let mut keys = kv.keys().await.unwrap();
            while let Some(key) = keys.next().await {
                let key = key.unwrap();
                let value = kv.get(&key).await.unwrap().unwrap_or_default();
                out.push((format!("bucket {bucket} key"), key.clone().into_bytes()));
                out.push((format!("bucket {bucket} key {key}"), value.to_vec()));
            }
        }
        if let Some(bucket) = name.strip_prefix("OBJ_") {
            let store = js.get_object_store(bucket).await.unwrap();
            let mut list = store.list().await.unwrap();
            while let Some(info) = list.next().await {
                let info = info.unwrap();
                let mut content = Vec::new();
                let mut object = store.get(&info.name).await.unwrap();
                tokio::io::AsyncReadExt::read_to_end(&mut object, &mut content)
                    .await
                    .unwrap();
                out.push((format!("object {bucket} name"), info.name.clone().into_bytes()));
                out.push((format!("object {bucket} {}", info.name), content));
            }
        }
    }
    out
}

fn find(haystack: &[(String, Vec<u8>)], needle: &[u8]) -> Vec<String> {
    haystack
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle)))
        .map(|(place, _)| place.clone())
        .collect()
}

#[tokio::test]
async fn forget_leaves_nothing_of_the_person_and_the_other_keeps_the_shared_file() {
    let nats = Nats::start().await;
    let dovecot = Dovecot::start().await;
    let bus = nats.bus().await;
    guichet_router::live::push(&bus, "rules", RULES, "rules.toml", "e2e")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("imap-password");
    std::fs::write(&secret, format!("{IMAP_PASSWORD}\n")).unwrap();
    let toml = format!(
        "[nats]\nurl = \"{}\"\n{}{}\n\
         [web.forms.demarches]\ninsecure_no_signature = true\nemail = \"email\"\nname = \"nom\"\ndescription = \"description\"\n\
         [desk.sites.accueil]\ntoken = \"{TOKEN}\"\n",
        nats.url(),
        dovecot.mailbox_toml(&secret),
        guichet_harness::privacy_toml()
    );
    let path = dir.path().join("guichet.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();
    let (web, grpc) = (loopback(), loopback());
    let (web_addr, grpc_addr) = (web.local_addr().unwrap(), grpc.local_addr().unwrap());
    let listeners = Listeners {
        web: Some(web),
        grpc: Some(grpc),
        ..Listeners::default()
    };
    let services = vec![
        ServiceName::Web,
        ServiceName::Desk,
        ServiceName::Mail,
        ServiceName::Router,
    ];
    let gateway = Gateway::start(config, services, listeners).await;
    let js = nats.jetstream().await;

    // Web: Anne with her photo and the blank form, Bruno with the same form.
    web_submission(
        &web_addr.to_string(),
        ANNE,
        ANNE_WEB,
        &[("photo", ANNE_PHOTO), ("cerfa", SHARED)],
    )
    .await;
    web_submission(&web_addr.to_string(), BRUNO, "Ma demande", &[("cerfa", SHARED)]).await;
    // Desk: Anne's letter scanned at the mail room, her phone noted.
    let mut desk = DeskClient::connect(format!("http://{grpc_addr}")).await.unwrap();
    let mut request = tonic::Request::new(RecordContactRequest {
        client_request_id: "scan-1".into(),
        channel: Channel::Postal as i32,
        site: "accueil".into(),
        agent_id: "agent-3".into(),
        usager: Some(IdentityClaims {
            name: ANNE_NAME.into(),
            email: ANNE.into(),
            phone: ANNE_PHONE.into(),
            ..Default::default()
        }),
        subject: ANNE_DESK.into(),
        attachments: vec![DeskAttachment {
            file_name: "lettre.pdf".into(),
            media_type: "application/pdf".into(),
            content: ANNE_SCAN.to_vec(),
        }],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    desk.record_contact(request).await.unwrap();
    // Mail: Anne writes, with a file.
    dovecot.append(IMAP_USER, "INBOX", &mail()).await;

    let all = routed(&js, 4).await;
    let anne: BTreeSet<String> = all
        .iter()
        .filter(|r| {
            let c = r.contact.as_ref().unwrap();
            c.claims
                .as_ref()
                .is_some_and(|claims| claims.email.eq_ignore_ascii_case(ANNE))
        })
        .map(|r| r.usager_id.clone())
        .collect();
    assert_eq!(anne.len(), 1, "her three contacts are one usager: {anne:?}");
    let u = anne.into_iter().next().unwrap();
    let bruno = all.iter().find(|r| r.usager_id != u).unwrap();
    let shared_key = bruno.contact.as_ref().unwrap().attachments[0].key.clone();
    // What she sent is stored: the photo, the scan, the raw e-mail and its file.
    let mail_contact = all
        .iter()
        .filter_map(|r| r.contact.as_ref())
        .find(|c| c.channel == Channel::Email as i32)
        .unwrap();
    let Some(Details::Email(email)) = &mail_contact.details else {
        panic!("not an e-mail")
    };
    let raw_key = email.raw_message.as_ref().unwrap().key.clone();
    assert!(bus.get_attachment(&raw_key).await.is_ok());
    assert_eq!(mail_contact.attachments.len(), 1);
    let before = everything(&js).await;
    let keys = guichet_harness::pseudonymizer();
    let hashes: Vec<String> = [normalize_email(ANNE).unwrap(), normalize_phone(ANNE_PHONE).unwrap()]
        .iter()
        .map(|id| keys.identity_key(id).rsplit('.').next().unwrap().to_owned())
        .collect();
    // The search sees them before the erasure (so it can see them after).
    for needle in [ANNE_PHOTO, ANNE_SCAN, ANNE_MAIL_FILE, u.as_bytes(), ANNE.as_bytes()]
        .into_iter()
        .chain(hashes.iter().map(|h| h.as_bytes()))
    {
        assert!(
            !find(&before, needle).is_empty(),
            "{} was stored",
            String::from_utf8_lossy(needle)
        );
    }

    let report = guichet_router::admin::forget(&bus, guichet_harness::pseudonymizer(), &u)
        .await
        .unwrap();
    assert_eq!(report.routed_messages_purged, 3);
    // Her photo, her scan, her raw e-mail and its file; the form stays.
    assert_eq!((report.files.deleted, report.files.kept_shared), (4, 1));

    let after = everything(&js).await;
    let mut needles: Vec<Vec<u8>> = [
        ANNE, ANNE_NAME, ANNE_WEB, ANNE_DESK, ANNE_MAIL, "zorglub", "Quelinec", &u,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    needles.extend([ANNE_PHOTO, ANNE_SCAN, ANNE_MAIL_FILE].map(|b| b.to_vec()));
    needles.push(b"98765432".to_vec());
    // The keyed hashes of her e-mail and phone, wherever they would be.
    needles.extend(hashes.iter().map(|h| h.as_bytes().to_vec()));
    for needle in &needles {
        let found = find(&after, needle);
        assert!(
            found.is_empty(),
            "`{}` is still in {found:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // Bruno keeps his contact and the form they both sent, readable.
    assert_eq!(bus.get_attachment(&shared_key).await.unwrap(), SHARED);
    let left = read_all(&js, subjects::ROUTED_STREAM, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    let kept = Routed::decode(left[0].payload.as_slice()).unwrap();
    assert_eq!(kept.usager_id, bruno.usager_id);
    assert_eq!(kept.contact.unwrap().attachments[0].key, shared_key);

    // Forgetting again: nothing more to find, nothing changed.
    let again = guichet_router::admin::forget(&bus, guichet_harness::pseudonymizer(), &u).await;
    assert!(
        matches!(again, Err(guichet_router::RouterError::NotFound(_))),
        "{again:?}"
    );
    assert_eq!(bus.get_attachment(&shared_key).await.unwrap(), SHARED);
    gateway.stop().await;
    drop::<Bus>(bus);
}
