//! Connecting and logging in to an IMAP server: implicit TLS, STARTTLS,
//! or plain when explicitly allowed; rustls with ring, the system's roots
//! plus the mailbox's `ca_file`.

use std::{
    fmt, io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use async_imap::{Client, Session};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

use crate::{
    config::{MailboxConfig, TlsMode},
    error::MailError,
};

/// The byte stream under an IMAP session.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Plain(_) => "Conn::Plain",
            Conn::Tls(_) => "Conn::Tls",
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub type ImapSession = Session<Conn>;

/// The TLS client configuration of a mailbox (built once per watcher:
/// loading the system roots is not free).
pub fn tls_config(mailbox: &MailboxConfig) -> Result<Option<Arc<ClientConfig>>, MailError> {
    if mailbox.tls == TlsMode::Plain {
        return Ok(None);
    }
    let tls_err = |reason: String| MailError::Tls {
        mailbox: mailbox.name.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &mailbox.ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| tls_err(format!("cannot read ca_file {}: {e}", ca.display())))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| tls_err(format!("ca_file {}: {e}", ca.display())))?;
            roots
                .add(cert)
                .map_err(|e| tls_err(format!("ca_file {}: {e}", ca.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(tls_err(format!("ca_file {} holds no PEM certificate", ca.display())));
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

async fn handshake(mailbox: &MailboxConfig, tls: &Arc<ClientConfig>, tcp: TcpStream) -> Result<Conn, MailError> {
    let name = ServerName::try_from(mailbox.host.clone()).map_err(|e| MailError::Tls {
        mailbox: mailbox.name.clone(),
        reason: format!("`{}` is not a valid server name: {e}", mailbox.host),
    })?;
    let stream = TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| MailError::Tls {
            mailbox: mailbox.name.clone(),
            reason: e.to_string(),
        })?;
    Ok(Conn::Tls(Box::new(stream)))
}

async fn greeting(mailbox: &MailboxConfig, client: &mut Client<Conn>) -> Result<(), MailError> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(MailError::imap(&mailbox.name, "greeting", "connection closed")),
        Err(e) => Err(MailError::imap(&mailbox.name, "greeting", e)),
    }
}

/// Connects and logs in, within `mailbox.command_timeout` for each step.
pub async fn connect(
    mailbox: &MailboxConfig,
    tls: Option<&Arc<ClientConfig>>,
    password: &str,
) -> Result<ImapSession, MailError> {
    let limit = mailbox.command_timeout;
    let name = &mailbox.name;
    let timed = |what: &'static str| move |_| MailError::imap(name, what, format!("no answer within {limit:?}"));
    let tcp = tokio::time::timeout(limit, TcpStream::connect((mailbox.host.as_str(), mailbox.port())))
        .await
        .map_err(timed("connect"))?
        .map_err(|e| MailError::imap(name, "connect", format!("{}:{}: {e}", mailbox.host, mailbox.port())))?;
    let _ = tcp.set_nodelay(true);
    let client = async {
        match (mailbox.tls, tls) {
            (TlsMode::Implicit, Some(tls)) => {
                let mut client = Client::new(handshake(mailbox, tls, tcp).await?);
                greeting(mailbox, &mut client).await?;
                Ok(client)
            }
            (TlsMode::Starttls, Some(tls)) => {
                let mut client = Client::new(Conn::Plain(tcp));
                greeting(mailbox, &mut client).await?;
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|e| MailError::imap(name, "STARTTLS", e))?;
                let Conn::Plain(tcp) = client.into_inner() else {
                    return Err(MailError::imap(name, "STARTTLS", "unexpected stream"));
                };
                Ok(Client::new(handshake(mailbox, tls, tcp).await?))
            }
            _ => {
                let mut client = Client::new(Conn::Plain(tcp));
                greeting(mailbox, &mut client).await?;
                Ok(client)
            }
        }
    };
    let client = tokio::time::timeout(limit, client).await.map_err(timed("connect"))??;
    // The password never appears in errors: async-imap's error is the
    // server's answer, not the command.
    tokio::time::timeout(limit, client.login(&mailbox.user, password))
        .await
        .map_err(timed("LOGIN"))?
        .map_err(|(e, _)| MailError::imap(name, "LOGIN", e))
}

/// Bounds an IMAP command by `limit`.
pub async fn with_command_timeout<T, E: fmt::Display>(
    mailbox: &str,
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, MailError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(MailError::imap(mailbox, what, e)),
        Err(_) => Err(MailError::imap(mailbox, what, format!("no answer within {limit:?}"))),
    }
}
