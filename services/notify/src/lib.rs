//! notify: tells the usager. For every new request whose usager gave an
//! e-mail address, an *accusé de réception* (CRPA L112-3, R112-5) rendered
//! from the templates ops maintain, queued durably on OUTBOX, then sent by
//! SMTP.
//!
//! Three loops, each a durable consumer shared by every notify process:
//! [`queue`] reads ROUTED (acknowledgments, follow-up messages) and
//! [`status`] the request journal on EVENTS (status messages); both apply
//! the [`guards`] and the hourly [`rate`] limit, render the [`templates`]
//! in force ([`template_revisions`]: pushed, applied live) with the
//! service's details from the rules ([`services`]) and publish to
//! [`outbox`] exactly once per notification; [`sender`] reads OUTBOX and
//! delivers with `lettre`. [`events`] records suppressions, permanent
//! failures and sends.

pub mod config;
mod consume;
mod error;
pub mod events;
pub mod guards;
pub mod outbox;
pub mod queue;
pub mod rate;
pub mod sender;
pub mod services;
pub mod status;
pub mod template_revisions;
pub mod templates;

pub use config::NotifyConfig;
pub use error::NotifyError;
use guichet_core::{ServiceContext, bus::subjects};
use tokio_util::sync::CancellationToken;

/// Runs notify until `shutdown`: both loops stop fetching, finish what
/// they hold, and return. `watched` are the addresses of the mailboxes
/// `mail` watches: never written to.
pub async fn run(
    ctx: ServiceContext,
    config: NotifyConfig,
    watched: Vec<String>,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    // Unready until the consumers exist: notify's ROUTED consumer starts
    // at new messages, so what is routed before it exists is not acknowledged.
    ctx.health.set_ready("notify", false);
    let bus = ctx.bus.clone();
    let sources = match &config.templates_dir {
        Some(dir) => templates::read_dir(dir)?,
        None => templates::builtin(),
    };
    if let Err(problems) = templates::check(&sources) {
        return Err(NotifyError::Template(problems.join("; ")));
    }
    let files = templates::Templates::compile(sources)?;
    let (templates, templates_seen) = template_revisions::load(&bus, &config.templates_key, files).await?;
    let rate = outbox::ensure(&bus).await?;
    let transport = sender::transport(&config)?;
    let queue_consumer = consume::ensure(&bus, subjects::ROUTED_STREAM, queue::consumer_config(&config)).await?;
    let send_consumer = consume::ensure(&bus, subjects::OUTBOX_STREAM, sender::consumer_config(&config)).await?;
    let status_consumer = consume::ensure(&bus, subjects::EVENTS_STREAM, status::consumer_config(&config)).await?;

    let mut own = guards::OwnAddresses::new(config.never_send_to.iter().map(String::as_str));
    own.extend(watched.iter().map(String::as_str));
    own.extend([config.from_address()]);
    if !config.reply_to.is_empty() {
        own.extend([config.reply_to.as_str()]);
    }
    let queuer = queue::Queuer {
        bus: bus.clone(),
        config: config.clone(),
        own,
        rate,
        services: services::ServiceDirectory::default(),
        templates,
    };
    let sender = sender::Sender {
        bus: bus.clone(),
        config: config.clone(),
        transport,
    };
    ctx.health.set_ready("notify", true);
    tracing::info!("notify ready: acknowledging new requests from ROUTED, sending OUTBOX by SMTP");
    let concurrency = config.concurrency;
    // One loop failing stops the other: the supervisor restarts both.
    let stop = shutdown.child_token();
    let queueing = async {
        let outcome = consume::run(&queue_consumer, "ROUTED (notify)", concurrency, &stop, |m| {
            queuer.handle(m)
        })
        .await;
        stop.cancel();
        outcome
    };
    let statuses = async {
        let outcome = consume::run(&status_consumer, "EVENTS (notify)", concurrency, &stop, |m| {
            queuer.handle(m)
        })
        .await;
        stop.cancel();
        outcome
    };
    let sending = async {
        let outcome = consume::run(&send_consumer, "OUTBOX", concurrency, &stop, |m| sender.handle(m)).await;
        stop.cancel();
        outcome
    };
    let watcher = tokio::spawn(template_revisions::watch(
        bus.clone(),
        config.templates_key.clone(),
        queuer.templates.clone(),
        templates_seen,
        stop.clone(),
    ));
    let lag = tokio::spawn(consume::report_lag(
        send_consumer.clone(),
        "guichet_notify_outbox_pending",
        stop.clone(),
    ));
    let (queued, told, sent) = tokio::join!(queueing, statuses, sending);
    stop.cancel();
    let _ = lag.await;
    let _ = watcher.await;
    queued.and(told).and(sent)
}
