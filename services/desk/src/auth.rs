//! Bearer tokens, one per site (kept as digests by
//! [`guichet_core::grpc::Tokens`]).

use guichet_core::{
    Error,
    grpc::{Tokens, caller_of},
};
use tonic::{Request, Status, metadata::MetadataMap};

use crate::config::{DeskConfig, MIN_TOKEN_LEN};

/// The site a request's token belongs to (a request extension set by the
/// interceptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site(pub String);

/// The configured sites and their token digests.
#[derive(Clone, Debug)]
pub struct Sites {
    tokens: Tokens<Site>,
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
        let mut tokens = Tokens::builder("desk.sites", "site", "site");
        for (site, site_config) in &config.sites {
            tokens.add(site, &site_config.token, MIN_TOKEN_LEN, Site(site.clone()))?;
        }
        Ok(Self { tokens: tokens.build() })
    }

    /// The site of the bearer token in `metadata`, or UNAUTHENTICATED.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Site, Status> {
        self.tokens.authenticate(metadata).cloned()
    }

    /// The interceptor that puts the caller's [`Site`] in the request.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        self.tokens.interceptor(|| {
            metrics::counter!("guichet_desk_requests_total", "method" => "any", "site" => "unknown",
                "channel" => "unknown", "outcome" => "unauthenticated")
            .increment(1);
        })
    }
}

/// The caller's site, as the interceptor found it.
pub fn site_of<T>(request: &Request<T>) -> Result<Site, Status> {
    caller_of(request)
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

    /// Bearer parsing and the constant-time lookup are core's
    /// (`guichet_core::grpc`); here, each site's token gives its [`Site`].
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
        let status = sites.authenticate(&metadata("Bearer nope-nope-nope-nope")).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("any site"), "{}", status.message());
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
