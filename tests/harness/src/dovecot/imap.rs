//! IMAP as a test speaks it to a Dovecot: log in, APPEND (as a mail
//! server's delivery would), count, read back and UIDVALIDITY.

use std::time::Duration;

use async_imap::Session;
use futures::TryStreamExt;
use tokio::net::TcpStream;

use super::Dovecot;

/// A logged-in IMAP session on plain TCP, for tests.
pub type ImapSession = Session<TcpStream>;

/// One message as a test reads it back from the server.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

impl Dovecot {
    pub(super) async fn try_session(&self, user: &str) -> Result<ImapSession, String> {
        let stream = TcpStream::connect((self.host(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        let mut client = async_imap::Client::new(stream);
        client
            .read_response()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no greeting")?;
        client
            .login(user, self.password(user))
            .await
            .map_err(|(e, _)| e.to_string())
    }

    /// A logged-in session (plain TCP) for `user`.
    pub async fn session(&self, user: &str) -> ImapSession {
        let mut last = String::new();
        for _ in 0..50 {
            match self.try_session(user).await {
                Ok(s) => return s,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot log in to Dovecot as {user}: {last}\n{}", self.log());
    }

    /// Appends one message to `folder` (created if missing).
    pub async fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        self.append_all(user, folder, &[raw]).await;
    }

    /// Appends messages in order over one connection.
    pub async fn append_all(&self, user: &str, folder: &str, raws: &[&[u8]]) {
        let mut session = self.session(user).await;
        ensure_folder(&mut session, folder).await;
        for raw in raws {
            session.append(folder, None, None, raw).await.expect("IMAP APPEND");
        }
        let _ = session.logout().await;
    }

    /// The messages of `folder`, by UID, with their flags (empty if the
    /// folder does not exist). Reads with `BODY.PEEK[]`: changes nothing.
    pub async fn messages(&self, user: &str, folder: &str) -> Vec<StoredMessage> {
        let mut session = self.session(user).await;
        if session.examine(folder).await.is_err() {
            return Vec::new();
        }
        let fetched: Vec<_> = match session.uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])").await {
            Ok(stream) => stream.try_collect().await.expect("FETCH"),
            Err(_) => Vec::new(),
        };
        let mut out: Vec<StoredMessage> = fetched
            .iter()
            .filter_map(|f| {
                Some(StoredMessage {
                    uid: f.uid?,
                    flags: f.flags().map(|fl| format!("{fl:?}")).collect(),
                    raw: f.body()?.to_vec(),
                })
            })
            .collect();
        out.sort_by_key(|m| m.uid);
        let _ = session.logout().await;
        out
    }

    /// How many messages `folder` holds (0 if it does not exist).
    pub async fn count(&self, user: &str, folder: &str) -> usize {
        let mut session = self.session(user).await;
        let n = match session.examine(folder).await {
            Ok(mailbox) => mailbox.exists as usize,
            Err(_) => 0,
        };
        let _ = session.logout().await;
        n
    }

    /// The folder's UIDVALIDITY.
    pub async fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        let mut session = self.session(user).await;
        ensure_folder(&mut session, folder).await;
        let mailbox = session.examine(folder).await.expect("EXAMINE");
        let _ = session.logout().await;
        mailbox.uid_validity.expect("UIDVALIDITY")
    }
}

async fn ensure_folder(session: &mut ImapSession, folder: &str) {
    if !folder.eq_ignore_ascii_case("INBOX") && session.examine(folder).await.is_err() {
        session.create(folder).await.expect("IMAP CREATE");
    }
}
