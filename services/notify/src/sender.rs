//! From OUTBOX to SMTP, with `lettre`.
//!
//! Each notification is sent, then its OUTBOX message acked (a
//! confirmed ack). A `4xx` or a connection error is retried with backoff;
//! a `5xx` or an address the server or `lettre` refuses is a permanent
//! failure, recorded as a `notify_unreachable` event and never retried;
//! after `notify.max_deliveries` attempts the notification is
//! dead-lettered. A crash between the server's `250` and the ack sends
//! the message again on redelivery: the window is the ack itself, and the
//! copy has the same Message-ID.

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    AckKind, Message,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use chrono::Utc;
use guichet_core::bus::subjects;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::authentication::Credentials,
};

use crate::{NotifyConfig, NotifyError, config::SmtpSecurity, consume, events, outbox::Notification};

/// The OUTBOX consumer every notify process shares.
pub fn consumer_config(config: &NotifyConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.sender_consumer.clone()),
        description: Some("guichet: notify, sending by SMTP".into()),
        filter_subject: subjects::OUTBOX_ALL.to_owned(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: config.ack_wait,
        max_deliver: i64::from(config.max_deliveries) + 1,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// The SMTP transport of `config.smtp` (a pool of connections).
pub fn transport(config: &NotifyConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
    let smtp = &config.smtp;
    let builder = match smtp.security {
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        SmtpSecurity::Plain => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)),
    }
    .map_err(|e| NotifyError::Smtp(format!("notify.smtp.host `{}`: {e}", smtp.host)))?;
    let mut builder = builder.port(smtp.port()).timeout(Some(smtp.timeout));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        let password = password
            .resolve("notify.smtp.password")
            .map_err(|e| NotifyError::Smtp(e.to_string()))?;
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// Builds the RFC 5322 message; an error is permanent (bad address).
pub fn message(config: &NotifyConfig, n: &Notification) -> Result<lettre::Message, String> {
    let to: Mailbox = n.to.parse().map_err(|e| format!("recipient address refused: {e}"))?;
    let from: Mailbox = config.from.parse().map_err(|e| format!("notify.from: {e}"))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(n.subject.clone())
        .message_id(Some(format!("<{}>", n.message_id)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-replied".to_owned(),
        ));
    if !n.reply_to.is_empty() {
        let reply_to: Mailbox = n
            .reply_to
            .parse()
            .map_err(|e| format!("reply-to address refused: {e}"))?;
        builder = builder.reply_to(reply_to);
    }
    if !n.in_reply_to.is_empty() {
        builder = builder.in_reply_to(format!("<{}>", n.in_reply_to));
        let references: Vec<String> = n.references.iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(references.join(" "));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(n.text.clone(), n.html.clone()))
        .map_err(|e| format!("message refused: {e}"))
}

/// What one notification needs to be sent.
pub struct Sender {
    pub bus: guichet_core::Bus,
    pub config: NotifyConfig,
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Sender {
    pub async fn handle(&self, message: Message) {
        let started = Instant::now();
        let delivered = message
            .info()
            .map_or(1, |i| u32::try_from(i.delivered).unwrap_or(u32::MAX));
        let n: Notification = match serde_json::from_slice(&message.payload) {
            Ok(n) => n,
            Err(e) => {
                consume::dead_letter(&self.bus, &message, format!("not a notification: {e}"), true).await;
                return;
            }
        };
        if delivered > self.config.max_deliveries {
            self.count(&n, "dead_letter");
            let reason = format!(
                "{} of {}: gave up after {} deliveries (the last one did not finish)",
                n.kind, n.reference, self.config.max_deliveries
            );
            consume::dead_letter(&self.bus, &message, reason, false).await;
            return;
        }
        let email = match message_of(&self.config, &n) {
            Ok(m) => m,
            Err(reason) => return self.unreachable(&message, &n, None, reason).await,
        };
        match self.transport.send(email).await {
            Ok(_) => {
                let seconds = chrono::DateTime::parse_from_rfc3339(&n.received_at)
                    .map(|r| (Utc::now() - r.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
                    .unwrap_or(0.0);
                metrics::histogram!("guichet_notify_receipt_to_sent_seconds").record(seconds);
                metrics::histogram!("guichet_notify_send_seconds").record(started.elapsed().as_secs_f64());
                self.count(&n, "sent");
                // The indicator "receipt → 250", on the request's journal.
                let recorded = events::record(
                    &self.bus,
                    "notify_sent",
                    &format!("notify-sent-{}", n.msg_id()),
                    serde_json::json!({
                        "notification": n.kind, "reference": n.reference, "event": n.event,
                        "usager_id": n.usager_id, "message_id": n.message_id,
                        "receipt_to_sent_seconds": seconds, "attempts": delivered,
                    }),
                )
                .await;
                if let Err(e) = recorded {
                    tracing::warn!(reference = %n.reference, error = %e, "sent, but the notify_sent event was not recorded");
                }
                if let Err(e) = message.double_ack().await {
                    tracing::warn!(reference = %n.reference, error = %e, "sent, but the ack failed: it may be sent once more");
                }
            }
            Err(e) if e.is_permanent() => {
                let code = e.status().map(|c| c.to_string());
                self.unreachable(&message, &n, code, format!("the SMTP server refused it: {e}"))
                    .await;
            }
            Err(e) if delivered >= self.config.max_deliveries => {
                self.count(&n, "dead_letter");
                let reason = format!(
                    "{} of {}: SMTP failed {delivered} times; last error: {e}",
                    n.kind, n.reference
                );
                consume::dead_letter(&self.bus, &message, reason, false).await;
            }
            Err(e) => {
                let delay = self.config.backoff_after(delivered);
                self.count(&n, "retried");
                tracing::warn!(reference = %n.reference, delivered, retry_in = ?delay, error = %e, "SMTP send failed; will retry");
                if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(error = %e, "NAK failed; the server redelivers after ack_wait");
                }
            }
        }
    }

    fn count(&self, n: &Notification, outcome: &'static str) {
        metrics::counter!("guichet_notify_messages_total", "kind" => n.kind.clone(), "outcome" => outcome).increment(1);
    }

    /// A permanent failure: recorded on the request's journal, never retried.
    async fn unreachable(&self, message: &Message, n: &Notification, code: Option<String>, reason: String) {
        self.count(n, "unreachable");
        tracing::warn!(reference = %n.reference, usager = %n.usager_id, reason = %reason, "usager unreachable by e-mail");
        let recorded = events::record(
            &self.bus,
            "notify_unreachable",
            &format!("notify-unreachable-{}", n.msg_id()),
            serde_json::json!({
                "notification": n.kind, "reference": n.reference, "event": n.event,
                "usager_id": n.usager_id, "smtp_code": code, "reason": reason,
            }),
        )
        .await;
        match recorded {
            Ok(()) => {
                let _ = message.ack_with(AckKind::Term).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "the unreachable event was not recorded; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
        }
    }
}

fn message_of(config: &NotifyConfig, n: &Notification) -> Result<lettre::Message, String> {
    message(config, n)
}
