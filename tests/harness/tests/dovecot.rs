//! The harness's Dovecot: starts, takes messages, restarts, resets UIDVALIDITY.

use guichet_harness::{Dovecot, dovecot::IMAP_USER};

const MESSAGE: &[u8] =
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\nMessage-ID: <1@example.org>\r\n\r\nbody\r\n";

#[tokio::test]
async fn plain_dovecot_keeps_messages_across_restart_and_resets_uidvalidity() {
    let mut dovecot = Dovecot::start().await;
    dovecot.append(IMAP_USER, "INBOX", MESSAGE).await;
    dovecot.append(IMAP_USER, "Archive", MESSAGE).await;
    assert_eq!(dovecot.count(IMAP_USER, "INBOX").await, 1);
    assert_eq!(dovecot.count(IMAP_USER, "Archive").await, 1);
    let before = dovecot.uid_validity(IMAP_USER, "INBOX").await;
    dovecot.restart().await;
    assert_eq!(dovecot.uid_validity(IMAP_USER, "INBOX").await, before);
    let messages = dovecot.messages(IMAP_USER, "INBOX").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].raw, MESSAGE);
    dovecot.reset_uidvalidity(IMAP_USER, "INBOX").await;
    assert_eq!(dovecot.count(IMAP_USER, "INBOX").await, 1, "messages survive the reset");
}

#[tokio::test]
async fn tls_dovecot_has_a_certificate_and_both_ports() {
    let dovecot = Dovecot::start_tls().await;
    assert!(dovecot.ca_file().is_file());
    assert_ne!(dovecot.port(), dovecot.tls_port());
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", dovecot.tls_port())).await;
    assert!(stream.is_ok(), "implicit-TLS port listens: {}", dovecot.log());
}
