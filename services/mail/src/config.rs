//! `[mail]`: the shared mailboxes to watch.
//!
//! ```toml
//! [[mail.mailboxes]]
//! name = "contact"                 # letters, digits, '-', '_': keys, metrics, Nats-Msg-Id
//! source = "contact@"              # what rules match on (default: name)
//! host = "imap.ville.example"
//! tls = "implicit"                 # implicit (993) | starttls (143) | plain (needs allow_plaintext)
//! user = "contact@ville.example"
//! password = { file = "/run/secrets/imap-contact" }
//! after = "move"                   # move | flag_seen
//! move_to = "Guichet/Recu"
//! error_folder = "Guichet/Erreurs"
//! ```

use std::{path::PathBuf, time::Duration};

use guichet_core::{Error, bus::subjects::is_token, config::Validate, secret::Secret};
use serde::Deserialize;

/// The whole `[mail]` section. No mailbox: the service runs and idles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub mailboxes: Vec<MailboxConfig>,
}

/// How the connection to the IMAP server is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, port 993).
    #[default]
    Implicit,
    /// Plain connection upgraded with STARTTLS before login (port 143).
    Starttls,
    /// No TLS at all: the password crosses the network in clear. Only with
    /// `allow_plaintext = true` (a loopback server, a test).
    Plain,
}

/// What is done to a message once JetStream holds its contact.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum After {
    /// Move it to `move_to` (MOVE, or COPY + \Deleted + UID EXPUNGE).
    #[default]
    Move,
    /// Leave it in place, flagged `\Seen`.
    FlagSeen,
}

/// One shared mailbox (`[[mail.mailboxes]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailboxConfig {
    /// Short name: in checkpoint and lease keys, metrics, `Nats-Msg-Id`.
    pub name: String,
    /// `Contact.source.name`, what routing rules match; default `name`.
    pub source: Option<String>,
    pub host: String,
    /// Default: 993 with implicit TLS, 143 otherwise.
    pub port: Option<u16>,
    pub tls: TlsMode,
    /// Required to use `tls = "plain"`.
    pub allow_plaintext: bool,
    /// Extra CA certificate(s) (PEM) to trust, for a self-signed server.
    pub ca_file: Option<PathBuf>,
    pub user: String,
    pub password: Option<Secret>,
    /// The folder to watch.
    pub folder: String,
    pub after: After,
    /// Where ingested messages go with `after = "move"` (created if missing).
    pub move_to: String,
    /// Where messages that cannot be ingested at all go (created if missing).
    pub error_folder: String,
    /// IDLE is ended and re-issued this often: well below RFC 2177's 29
    /// minutes, because NAT gateways and firewalls drop quiet connections
    /// much sooner, and the exchange proves the connection alive.
    #[serde(with = "humantime_serde")]
    pub idle_refresh: Duration,
    /// How often to look for new messages when the server has no IDLE.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Messages larger than this (bytes) are not parsed: their raw original
    /// is stored and the contact is flagged TRUNCATED with the headers only.
    pub max_message_size: u64,
    /// Any single IMAP command taking longer than this means the connection
    /// is dead: reconnect.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            source: None,
            host: String::new(),
            port: None,
            tls: TlsMode::Implicit,
            allow_plaintext: false,
            ca_file: None,
            user: String::new(),
            password: None,
            folder: "INBOX".into(),
            after: After::Move,
            move_to: "Guichet-recu".into(),
            error_folder: "Guichet-erreurs".into(),
            idle_refresh: Duration::from_secs(4 * 60),
            poll_interval: Duration::from_secs(60),
            max_message_size: 25 * 1024 * 1024,
            command_timeout: Duration::from_secs(60),
        }
    }
}

impl MailboxConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::Plain => 143,
        })
    }

    pub fn source_name(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }
}

/// Folder names go on the IMAP command line as quoted strings; non-ASCII
/// names would need modified UTF-7, so they are refused with the fix.
fn check_folder(key: &str, folder: &str) -> Result<(), Error> {
    if folder.trim().is_empty() {
        return Err(Error::config(key, "must not be empty"));
    }
    if !folder.chars().all(|c| c.is_ascii_graphic() || c == ' ') || folder.contains(['"', '\\', '*', '%']) {
        return Err(Error::config(
            key,
            format!("`{folder}`: use printable ASCII without \" \\ * % (e.g. \"Guichet-recu\")"),
        ));
    }
    Ok(())
}

impl Validate for MailConfig {
    fn validate(&self) -> Result<(), Error> {
        for (i, m) in self.mailboxes.iter().enumerate() {
            let key = |k: &str| format!("mail.mailboxes[{i}].{k}");
            if !is_token(&m.name) {
                return Err(Error::config(
                    key("name"),
                    "required: letters, digits, '-' and '_' only (at most 64), e.g. \"contact\"",
                ));
            }
            if self.mailboxes[..i].iter().any(|o| o.name == m.name) {
                return Err(Error::config(key("name"), format!("`{}` is used twice", m.name)));
            }
            if m.source.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(Error::config(
                    key("source"),
                    "must not be empty (leave it out to use `name`)",
                ));
            }
            if m.host.trim().is_empty() {
                return Err(Error::config(key("host"), "required: the IMAP server's host name"));
            }
            if m.port == Some(0) {
                return Err(Error::config(key("port"), "must be a port number (1-65535)"));
            }
            if m.tls == TlsMode::Plain && !m.allow_plaintext {
                return Err(Error::config(
                    key("tls"),
                    "\"plain\" sends the password in clear: use \"implicit\" or \"starttls\", or set `allow_plaintext = true` for a loopback server",
                ));
            }
            if let Some(ca) = &m.ca_file
                && !ca.is_file()
            {
                return Err(Error::config(
                    key("ca_file"),
                    format!("{} is not a readable file", ca.display()),
                ));
            }
            if m.user.trim().is_empty() {
                return Err(Error::config(key("user"), "required: the IMAP login"));
            }
            match &m.password {
                None => {
                    return Err(Error::config(
                        key("password"),
                        "required (e.g. { file = \"/run/secrets/imap\" })",
                    ));
                }
                Some(p) => {
                    p.resolve(&key("password"))?;
                }
            }
            check_folder(&key("folder"), &m.folder)?;
            check_folder(&key("error_folder"), &m.error_folder)?;
            if m.error_folder == m.folder {
                return Err(Error::config(key("error_folder"), "must differ from `folder`"));
            }
            if m.after == After::Move {
                check_folder(&key("move_to"), &m.move_to)?;
                if m.move_to == m.folder {
                    return Err(Error::config(key("move_to"), "must differ from `folder`"));
                }
            }
            if m.idle_refresh.is_zero() || m.idle_refresh > Duration::from_secs(29 * 60) {
                return Err(Error::config(
                    key("idle_refresh"),
                    "must be between 1s and 29m (RFC 2177); a few minutes survives firewalls",
                ));
            }
            if m.poll_interval.is_zero() {
                return Err(Error::config(key("poll_interval"), "must be more than 0s"));
            }
            if m.command_timeout < Duration::from_secs(1) {
                return Err(Error::config(key("command_timeout"), "must be at least 1s"));
            }
            if m.max_message_size < 1024 {
                return Err(Error::config(key("max_message_size"), "must be at least 1024 bytes"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> MailConfig {
        #[derive(Deserialize)]
        struct Root {
            mail: MailConfig,
        }
        toml::from_str::<Root>(toml_text).unwrap().mail
    }

    const GOOD: &str = r#"
        [[mail.mailboxes]]
        name = "contact"
        host = "imap.example.org"
        user = "contact"
        password = "secret"
    "#;

    #[test]
    fn defaults_are_safe_and_an_empty_section_is_valid() {
        MailConfig::default().validate().unwrap();
        let c = parse(GOOD);
        c.validate().unwrap();
        let m = &c.mailboxes[0];
        assert_eq!((m.tls, m.port(), m.after), (TlsMode::Implicit, 993, After::Move));
        assert_eq!(m.source_name(), "contact");
        assert!(m.idle_refresh < Duration::from_secs(29 * 60));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("password = \"secret\"", ""), "mail.mailboxes[0].password"),
            (format!("{GOOD}\ntls = \"plain\""), "mail.mailboxes[0].tls"),
            (format!("{GOOD}\nmove_to = \"INBOX\""), "mail.mailboxes[0].move_to"),
            (
                GOOD.replace("\"contact\"\n        host", "\"con tact\"\n        host"),
                "mail.mailboxes[0].name",
            ),
            (
                format!("{GOOD}\nerror_folder = \"Erreurs reçues\""),
                "mail.mailboxes[0].error_folder",
            ),
            (
                format!("{GOOD}\nidle_refresh = \"30m\""),
                "mail.mailboxes[0].idle_refresh",
            ),
            (
                format!("{GOOD}\nca_file = \"/nonexistent/ca.pem\""),
                "mail.mailboxes[0].ca_file",
            ),
            (format!("{GOOD}{GOOD}"), "mail.mailboxes[1].name"),
        ];
        for (text, key) in cases {
            let err = parse(&text).validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let plain_allowed = format!("{GOOD}\ntls = \"plain\"\nallow_plaintext = true");
        parse(&plain_allowed).validate().unwrap();
        assert_eq!(parse(&plain_allowed).mailboxes[0].port(), 143);
    }

    #[test]
    fn unknown_keys_are_refused() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Root {
            mail: MailConfig,
        }
        let err = toml::from_str::<Root>(&format!("{GOOD}\npasword = \"x\"")).unwrap_err();
        assert!(err.to_string().contains("pasword"), "{err}");
    }
}
