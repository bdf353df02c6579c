//! Bearer tokens, one per site.
//!
//! Tokens are resolved once at start and kept only as SHA-256 digests; a
//! presented token is hashed and compared with every site's digest in
//! constant time, so neither timing nor a memory dump gives a token away.
//! The interceptor runs before the request body is decoded: a caller
//! without a valid token costs no decoding.

use std::sync::Arc;

use guichet_core::Error;
use sha2::{Digest, Sha256};
use tonic::{Request, Status, metadata::MetadataMap};

use crate::config::{DeskConfig, MIN_TOKEN_LEN};

/// The site a request's token belongs to (a request extension set by the
/// interceptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site(pub String);

/// The configured sites and their token digests.
#[derive(Clone, Debug)]
pub struct Sites {
    digests: Arc<Vec<([u8; 32], String)>>,
}

impl Sites {
    /// Resolves every `desk.sites.<site>.token`; errors name the key.
    pub fn from_config(config: &DeskConfig) -> Result<Self, Error> {
        if config.sites.is_empty() {
            return Err(Error::config(
                "desk.sites",
                "no site is configured, so no caller could authenticate: add `[desk.sites.<site>]` with a `token`",
            ));
        }
        let mut digests: Vec<([u8; 32], String)> = Vec::with_capacity(config.sites.len());
        for (site, site_config) in &config.sites {
            let key = format!("desk.sites.{site}.token");
            let token = site_config.token.resolve(&key)?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(Error::config(
                    key,
                    format!("at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"),
                ));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::config(key, "a token has no spaces or control characters"));
            }
            let digest = digest(&token);
            if let Some((_, other)) = digests.iter().find(|(d, _)| *d == digest) {
                return Err(Error::config(
                    key,
                    format!("the same token as `desk.sites.{other}.token`: each site needs its own"),
                ));
            }
            digests.push((digest, site.clone()));
        }
        Ok(Self {
            digests: Arc::new(digests),
        })
    }

    /// The site of the bearer token in `metadata`, or UNAUTHENTICATED.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Site, Status> {
        let Some(value) = metadata.get("authorization") else {
            return Err(unauthenticated("no `authorization: Bearer <token>` metadata"));
        };
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("the authorization metadata is not readable text"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthenticated("expected `authorization: Bearer <token>`")),
        };
        let presented = digest(token);
        // Compare with every digest, whatever matches, in constant time.
        let mut found: Option<&str> = None;
        for (d, site) in self.digests.iter() {
            let diff = d.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(site);
            }
        }
        match found {
            Some(site) => Ok(Site(site.to_owned())),
            None => Err(unauthenticated("the token is not valid for any site")),
        }
    }

    /// The interceptor that puts the caller's [`Site`] in the request.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let sites = self.clone();
        move |mut request: Request<()>| match sites.authenticate(request.metadata()) {
            Ok(site) => {
                request.extensions_mut().insert(site);
                Ok(request)
            }
            Err(status) => {
                metrics::counter!("guichet_desk_requests_total", "method" => "any", "site" => "unknown",
                    "channel" => "unknown", "outcome" => "unauthenticated")
                .increment(1);
                Err(status)
            }
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(format!("{why}: use the bearer token configured for your site"))
}

/// The caller's site, as the interceptor found it.
pub fn site_of<T>(request: &Request<T>) -> Result<Site, Status> {
    request
        .extensions()
        .get::<Site>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no valid bearer token"))
}

/// The request's `site` must be the token's.
pub fn check_site(token_site: &Site, requested: &str) -> Result<(), Status> {
    if requested.trim().is_empty() {
        return Err(crate::status::Violations::single(
            "site",
            "required: the site the contact was taken at (the site of your token)",
        ));
    }
    if requested != token_site.0 {
        return Err(Status::permission_denied(format!(
            "this token is for site `{}`, not for `{}`",
            token_site.0,
            crate::status::printable(requested, 64)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use guichet_core::secret::Secret;

    use super::*;
    use crate::config::SiteConfig;

    fn config(tokens: &[(&str, &str)]) -> DeskConfig {
        DeskConfig {
            sites: tokens
                .iter()
                .map(|(s, t)| ((*s).to_owned(), SiteConfig::new(Secret::Inline((*t).to_owned()))))
                .collect::<BTreeMap<_, _>>(),
            ..DeskConfig::default()
        }
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn tokens_map_to_their_site() {
        let sites = Sites::from_config(&config(&[
            ("nord", "nord-token-0123456789"),
            ("sud", "sud-token-0123456789"),
        ]))
        .unwrap();
        assert_eq!(
            sites.authenticate(&metadata("Bearer sud-token-0123456789")).unwrap(),
            Site("sud".into())
        );
        assert_eq!(
            sites.authenticate(&metadata("bearer nord-token-0123456789")).unwrap(),
            Site("nord".into())
        );
        for bad in [
            "Bearer nope-nope-nope-nope",
            "Basic sud-token-0123456789",
            "sud-token-0123456789",
        ] {
            let status = sites.authenticate(&metadata(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
            assert!(
                !status.message().contains("0123456789"),
                "token echoed: {}",
                status.message()
            );
        }
        assert_eq!(
            sites.authenticate(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bad_token_configs_name_the_key() {
        let err = Sites::from_config(&config(&[])).unwrap_err().to_string();
        assert!(err.contains("`desk.sites`"), "{err}");
        let err = Sites::from_config(&config(&[("nord", "short")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`desk.sites.nord.token`"), "{err}");
        let err = Sites::from_config(&config(&[
            ("a", "same-token-0123456789"),
            ("b", "same-token-0123456789"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`desk.sites.b.token`") && err.contains("desk.sites.a.token"),
            "{err}"
        );
    }
}
