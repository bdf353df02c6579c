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

use std::{future::Future, pin::Pin, sync::Arc};

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
    for mailbox in &config.mailboxes {
        spawn(&mut tasks, &ctx, &holder, mailbox.clone(), &hooks, &shutdown);
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
                // started again without touching the other mailboxes.
                if let Some(Err(e)) = joined && e.is_panic() {
                    tracing::error!(task = %e.id(), "a mailbox watcher panicked; restarting the mail service");
                    return Err(MailError::imap("*", "watcher", "a mailbox watcher panicked"));
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn spawn(
    tasks: &mut JoinSet<()>,
    ctx: &ServiceContext,
    holder: &lease::Holder,
    config: MailboxConfig,
    hooks: &Hooks,
    shutdown: &CancellationToken,
) {
    let w = watcher::Watcher {
        config,
        bus: ctx.bus.clone(),
        instance: ctx.instance.clone(),
        holder: holder.clone(),
        health: ctx.health.clone(),
        hooks: hooks.clone(),
    };
    tasks.spawn(w.watch(shutdown.clone()));
}
