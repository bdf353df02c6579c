//! Shared-mailbox intake: the `mail` service.
//!
//! Each configured mailbox (`[[mail.mailboxes]]`) is watched by one task,
//! over IMAP IDLE (or polling), in exactly one guichet process at a time
//! (a lease in KV). Every new message becomes one `Contact` with channel
//! EMAIL on `guichet.intake.email`, its raw original and attachments in
//! the object store; only after JetStream's PubAck is it moved (or flagged
//! `\Seen`) on the server. See [`watcher`] for the exactly-once argument
//! and [`normalize`] for what a contact holds.

pub mod config;
mod error;
pub mod imap;
pub mod lease;
mod noise;
pub mod normalize;
mod quote;
pub mod repair;
pub mod state;
mod watcher;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use guichet_core::{ServiceContext, config::Validate};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{After, MailConfig, MailboxConfig, TlsMode};
pub use error::MailError;
pub use quote::split_reply;

/// Test hooks: points where a test can stop the watcher, as a crash would.
#[derive(Clone, Default)]
#[doc(hidden)]
pub struct Hooks {
    /// Called with (mailbox, UID) right after the PubAck of a message's
    /// contact, before anything is written to the guard or the server.
    #[allow(clippy::type_complexity)]
    pub after_puback: Option<Arc<dyn Fn(String, u32) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>>,
    /// Called with (mailbox, UID) each time a message's publish fails
    /// (before the watcher decides between retrying and the error folder).
    #[allow(clippy::type_complexity)]
    pub publish_failed: Option<Arc<dyn Fn(String, u32) + Send + Sync>>,
    /// Called with the mailbox each time its watcher is in IDLE (the
    /// server accepted the command and nothing was pending).
    #[allow(clippy::type_complexity)]
    pub idling: Option<Arc<dyn Fn(String) + Send + Sync>>,
}

/// Runs the mail service until `shutdown`: one watcher per mailbox.
pub async fn run(ctx: ServiceContext, config: MailConfig, shutdown: CancellationToken) -> Result<(), MailError> {
    run_with_hooks(ctx, config, shutdown, Hooks::default()).await
}

#[doc(hidden)]
pub async fn run_with_hooks(
    ctx: ServiceContext,
    config: MailConfig,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> Result<(), MailError> {
    config.validate().map_err(MailError::Config)?;
    // One holder per run: a restarted process takes its instance's
    // leases back at once; another instance waits for their expiry.
    let holder = lease::Holder::new(&ctx.instance);
    let mut tasks = JoinSet::new();
    // Which mailbox each task watches, and how often it panicked in a row.
    let mut watched: HashMap<tokio::task::Id, (MailboxConfig, u32)> = HashMap::new();
    for mailbox in &config.mailboxes {
        let id = spawn(
            &mut tasks,
            &ctx,
            &holder,
            mailbox.clone(),
            &hooks,
            &shutdown,
            Duration::ZERO,
        );
        watched.insert(id, (mailbox.clone(), 0u32));
    }
    if config.mailboxes.is_empty() {
        tracing::info!("no mailbox configured (`[[mail.mailboxes]]`); the mail service idles");
    }
    ctx.health.set_ready("mail", true);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            joined = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // A watcher only ends on shutdown; one that panicked is
                // started again, after a growing delay, without touching
                // the other mailboxes. Its lease names this run, so the
                // new watcher takes it over at once.
                if let Some(Err(e)) = joined
                    && e.is_panic()
                    && let Some((mailbox, panics)) = watched.remove(&e.id())
                {
                    let panics = panics.saturating_add(1);
                    let delay = PANIC_BACKOFF_FIRST
                        .saturating_mul(1 << panics.saturating_sub(1).min(6))
                        .min(PANIC_BACKOFF_MAX);
                    tracing::error!(
                        mailbox = %mailbox.name, panics, retry_in = ?delay,
                        "the mailbox watcher panicked; restarting it (the other mailboxes go on)"
                    );
                    metrics::counter!("guichet_mail_errors_total", "mailbox" => mailbox.name.clone(), "kind" => "panic")
                        .increment(1);
                    let id = spawn(&mut tasks, &ctx, &holder, mailbox.clone(), &hooks, &shutdown, delay);
                    watched.insert(id, (mailbox, panics));
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The delay before a panicked watcher is started again, doubling with
/// each panic in a row up to [`PANIC_BACKOFF_MAX`].
const PANIC_BACKOFF_FIRST: Duration = Duration::from_secs(1);
const PANIC_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Starts a watcher of `config` after `delay`; returns its task's id.
fn spawn(
    tasks: &mut JoinSet<()>,
    ctx: &ServiceContext,
    holder: &lease::Holder,
    config: MailboxConfig,
    hooks: &Hooks,
    shutdown: &CancellationToken,
    delay: Duration,
) -> tokio::task::Id {
    let w = watcher::Watcher {
        config,
        bus: ctx.bus.clone(),
        instance: ctx.instance.clone(),
        holder: holder.clone(),
        health: ctx.health.clone(),
        hooks: hooks.clone(),
    };
    let shutdown = shutdown.clone();
    tasks
        .spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            w.watch(shutdown).await;
        })
        .id()
}
