//! `[console.auth]`: who may open the console, and how.
//!
//! Two ways in, which may be combined: a trusted reverse proxy (the usual
//! setup behind an SSO) that puts the authenticated user's name in
//! `proxy_header`, believed only when the TCP peer is one of
//! `trusted_proxies`; and local accounts with argon2 password hashes, for
//! small installations. Everything is checked once at start, with errors
//! naming the key at fault.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr, time::Duration};

use guichet_core::{Error, config::Validate, secret::Secret};
use serde::{Deserialize, Serialize};

/// What a signed-in user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Indicators, the overdue list, rules revisions, explain.
    Viewer,
    /// Everything a viewer sees, plus dead letters and identity conflicts.
    Ops,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Ops => "ops",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "ops" => Some(Role::Ops),
            _ => None,
        }
    }
}

/// `[[console.auth.accounts]]`: one local account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The login name (letters, digits, `.`, `-`, `_`, `@`).
    pub user: String,
    /// A PHC argon2 hash (`$argon2id$…`), as `guichet console hash-password` prints it.
    pub password_hash: String,
    pub role: Role,
}

/// `[console.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The header a trusted reverse proxy sets to the authenticated user's
    /// name (e.g. `X-Remote-User`); absent: no proxy authentication.
    pub proxy_header: Option<String>,
    /// The peers whose `proxy_header` is believed: IP addresses or CIDR
    /// blocks (`10.0.0.5`, `10.1.0.0/16`, `::1`). The header from any other
    /// peer is ignored.
    pub trusted_proxies: Vec<String>,
    /// The role of a proxy-authenticated user not listed in `proxy_roles`.
    pub proxy_default_role: Role,
    /// Roles of proxy-authenticated users, by user name.
    pub proxy_roles: BTreeMap<String, Role>,
    /// Local accounts.
    pub accounts: Vec<Account>,
    /// The key signing session cookies and CSRF tokens (32 bytes or more).
    /// Absent: a random key at each start (sessions end with the process,
    /// and processes of one console do not share them).
    pub session_key: Option<Secret>,
    /// How long a session lasts after login.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Mark cookies `Secure` (set it when the console is reached over
    /// HTTPS, which is the case behind any proxy worth the name).
    pub secure_cookies: bool,
    /// Failed logins allowed per client address in `login_window`, after
    /// which logins from it are refused (429) until the window passes.
    pub login_failures: u32,
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
    /// Client addresses whose failures are remembered at most: the memory
    /// an attacker spraying addresses can make the console use is bounded;
    /// past it, logins from addresses not yet seen are refused (429) until
    /// entries expire.
    pub login_tracked_clients: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            proxy_header: None,
            trusted_proxies: Vec::new(),
            proxy_default_role: Role::Viewer,
            proxy_roles: BTreeMap::new(),
            accounts: Vec::new(),
            session_key: None,
            session_ttl: Duration::from_secs(8 * 3600),
            secure_cookies: false,
            login_failures: 5,
            login_window: Duration::from_secs(15 * 60),
            login_tracked_clients: 4096,
        }
    }
}

/// An IP address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            // A v4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR block (e.g. 10.0.0.5, 10.1.0.0/16)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// A user name: what may appear in a session cookie and a page.
pub fn valid_user_name(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 128
        && user
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

/// Why the web console cannot start with an [`AuthConfig`] that lets
/// nobody in.
pub const NOBODY_CAN_SIGN_IN: &str = "nobody can sign in: set `proxy_header` and `trusted_proxies`, or add \
     `[[console.auth.accounts]]` (hash a password with `guichet console hash-password`)";

impl AuthConfig {
    /// Whether anyone can sign in: without it the web console is off
    /// (the indicators are still projected, for `guichet stats`).
    pub fn enabled(&self) -> bool {
        self.proxy_header.is_some() || !self.accounts.is_empty()
    }

    /// The session key's bytes (read when the console starts, like every
    /// secret), or `None` for a random key per process.
    pub fn session_key_bytes(&self) -> Result<Option<Vec<u8>>, Error> {
        let Some(key) = &self.session_key else {
            return Ok(None);
        };
        let key = key.resolve("console.auth.session_key")?;
        if key.len() < 32 {
            return Err(Error::config(
                "console.auth.session_key",
                "at least 32 bytes (e.g. `openssl rand -base64 48`)",
            ));
        }
        Ok(Some(key.into_bytes()))
    }

    /// The trusted proxies, parsed (validation has checked them).
    pub fn trusted_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies.iter().filter_map(|s| s.parse().ok()).collect()
    }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Result<(), Error> {
        for (i, net) in self.trusted_proxies.iter().enumerate() {
            net.parse::<IpNet>()
                .map_err(|e| Error::config(format!("console.auth.trusted_proxies[{i}]"), e))?;
        }
        match &self.proxy_header {
            Some(h) if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
                return Err(Error::config(
                    "console.auth.proxy_header",
                    format!("`{h}` is not a valid HTTP header name"),
                ));
            }
            Some(_) if self.trusted_proxies.is_empty() => {
                return Err(Error::config(
                    "console.auth.trusted_proxies",
                    "`proxy_header` is set but no proxy is trusted: list the reverse proxy's address",
                ));
            }
            _ => {}
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let key = format!("console.auth.accounts[{i}]");
            if !valid_user_name(&account.user) {
                return Err(Error::config(
                    format!("{key}.user"),
                    "a user name is 1 to 128 letters, digits, `.`, `-`, `_` or `@`",
                ));
            }
            if !seen.insert(account.user.as_str()) {
                return Err(Error::config(
                    format!("{key}.user"),
                    format!("`{}` is listed twice", account.user),
                ));
            }
            if argon2::PasswordHash::new(&account.password_hash).is_err()
                || !account.password_hash.starts_with("$argon2")
            {
                return Err(Error::config(
                    format!("{key}.password_hash"),
                    "not an argon2 PHC hash (`$argon2id$…`): make one with `guichet console hash-password`",
                ));
            }
        }
        if self.session_ttl < Duration::from_secs(60) {
            return Err(Error::config("console.auth.session_ttl", "at least 1 minute"));
        }
        if self.login_failures == 0 {
            return Err(Error::config("console.auth.login_failures", "at least 1"));
        }
        if self.login_tracked_clients == 0 {
            return Err(Error::config("console.auth.login_tracked_clients", "at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy.local".parse::<IpNet>().is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut c = AuthConfig::default();
        c.validate().unwrap();
        assert!(!c.enabled(), "the default lets nobody in: the web console is off");
        c.proxy_header = Some("X-Remote-User".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("trusted_proxies"), "{e}");
        c.trusted_proxies = vec!["10.0.0.0/40".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("trusted_proxies[0]"), "{e}");
        c.trusted_proxies = vec!["10.0.0.0/8".into()];
        c.validate().unwrap();
        c.accounts.push(Account {
            user: "marie".into(),
            password_hash: "secret".into(),
            role: Role::Ops,
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("accounts[0].password_hash"), "{e}");
        c.accounts.clear();
        c.session_key = Some(Secret::Inline("too short".into()));
        let e = c.session_key_bytes().unwrap_err().to_string();
        assert!(e.contains("console.auth.session_key") && e.contains("32 bytes"), "{e}");
        c.session_key = Some(Secret::Inline("k".repeat(32)));
        assert_eq!(c.session_key_bytes().unwrap().unwrap().len(), 32);
    }
}
