//! The load of a mail server delivering to a shared mailbox: distinct
//! messages APPENDed to the INBOX at a steady rate over IMAP, through
//! Dovecot's deaths.
//!
//! A failed APPEND is never sent again: the server may have stored it
//! before dying, and a second copy would be a second e-mail (two contacts,
//! rightly). It is "uncertain": whatever the server holds in the end must
//! be ingested exactly once, whether or not its APPEND was confirmed.

use std::time::Duration;

use guichet_harness::dovecot::ImapSession;
use tokio::{net::TcpStream, time::Instant};

/// What the load does.
#[derive(Debug, Clone)]
pub struct MailLoad {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Messages per second.
    pub rate: f64,
    pub duration: Duration,
    /// Message-IDs are `<prefix>-<n>@faults.example`.
    pub prefix: String,
}

/// One message the load tried to deliver.
#[derive(Debug, Clone)]
pub struct Appended {
    pub message_id: String,
    /// The server answered OK to the APPEND.
    pub confirmed: bool,
}

impl MailLoad {
    pub async fn run(self) -> Vec<Appended> {
        let end = Instant::now() + self.duration;
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate.max(1.0)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let most = (self.rate * self.duration.as_secs_f64()).ceil() as usize + 1;
        let mut out = Vec::with_capacity(most);
        let mut session: Option<ImapSession> = None;
        for n in 0..most {
            ticks.tick().await;
            if Instant::now() >= end {
                break;
            }
            if session.is_none() {
                // Dovecot may be down: try again at the next tick.
                session = tokio::time::timeout(Duration::from_secs(3), self.login())
                    .await
                    .ok()
                    .flatten();
                if session.is_none() {
                    continue;
                }
            }
            let message_id = format!("{}-{n}@faults.example", self.prefix);
            let raw = message(&message_id, n);
            let confirmed = match session.as_mut() {
                Some(s) => matches!(
                    tokio::time::timeout(Duration::from_secs(5), s.append("INBOX", None, None, &raw)).await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            if !confirmed {
                session = None;
            }
            out.push(Appended { message_id, confirmed });
        }
        if let Some(mut s) = session {
            let _ = s.logout().await;
        }
        out
    }

    async fn login(&self) -> Option<ImapSession> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let mut client = async_imap::Client::new(stream);
        client.read_response().await.ok()??;
        client.login(&self.user, &self.password).await.ok()
    }
}

fn message(message_id: &str, n: usize) -> Vec<u8> {
    format!(
        "From: Usager {u} <usager{u}@example.fr>\r\nTo: contact@ville.example\r\nSubject: Demande {n}\r\n\
         Message-ID: <{message_id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Bonjour, voici ma demande num\u{e9}ro {n}.\r\n",
        u = n % 300,
    )
    .into_bytes()
}
