//! The `[web]` section: where to listen, the limits, and one mapping per form.
//!
//! A form mapping says where, in a submission, the usager's identifiers,
//! the subject and the description are. Each place is a [`Locator`]: a
//! JSON pointer (`/usager/email`) for JSON bodies, a field name (`email`)
//! for form bodies. Everything is checked once at start, with errors that
//! name the key at fault (`web.forms.voirie.email`).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use guichet_core::{Error, bus::subjects::is_token, config::Validate, proto::v1::IdentityLevel, secret::Secret};
use serde::Deserialize;

/// `[web]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address the HTTP endpoint listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, files included, in bytes.
    pub max_request_bytes: usize,
    /// Largest single uploaded file (or multipart part), in bytes.
    pub max_file_bytes: usize,
    /// Most fields a submission may have (form fields, multipart parts,
    /// JSON object members and array items, all counted).
    pub max_fields: usize,
    /// Deepest nesting of objects and arrays accepted in a JSON body.
    pub max_json_depth: usize,
    /// How far the signature's timestamp may be from this server's clock.
    #[serde(with = "humantime_serde")]
    pub signature_window: Duration,
    /// How long a request may wait for JetStream (attachments and the
    /// publish, PubAck included) before the answer is 503.
    #[serde(with = "humantime_serde")]
    pub publish_wait: Duration,
    /// How long a client may take to send its body before the answer is 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a client may leave its body without a new chunk before the
    /// answer is 408: a connection that trickles bytes does not hold the
    /// gateway's resources for the whole `body_timeout` (which still bounds
    /// the whole body).
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Authentic submissions processed at once (files, publish and PubAck),
    /// at most; past it the answer is 503. A slot is taken only once the
    /// body has arrived and its signature is verified.
    pub max_concurrent: usize,
    /// Requests whose body is being read at once, at most (before their
    /// signature can be checked); past it the answer is 503 at once. Far
    /// above `max_concurrent`: a waiting socket costs little.
    pub max_reading_bodies: usize,
    /// Body bytes held in memory by all requests together; a body that
    /// would go past it is answered 503 (`Retry-After`) at once.
    pub max_buffered_bytes: usize,
    /// A body larger than this is spooled to a temporary file in
    /// `spool_dir` instead of memory (its signature is computed as it
    /// arrives), and its files are streamed from there to the object store.
    pub spool_threshold_bytes: usize,
    /// Body bytes spooled to disk by all requests together; past it 503
    /// (`Retry-After`) at once.
    pub max_spooled_bytes: usize,
    /// How fast bodies past `spool_threshold_bytes` are read, all together
    /// (bytes per second; a second's worth may go at once): large bodies
    /// cannot take the CPU from small ones. Small bodies are not paced.
    pub spool_bytes_per_second: usize,
    /// Where spooled bodies go (default: the system's temporary directory).
    /// Files there have no name (`O_TMPFILE`): nothing is left behind, even
    /// after a crash.
    pub spool_dir: Option<PathBuf>,
    /// Default per-form rate limit (a form may set its own).
    pub rate_limit: RateLimit,
    /// A configured form that takes submissions for form ids that are not
    /// configured (absent: those get 404).
    pub catch_all: Option<String>,
    /// The forms, by id (the `{form}` of the URL, `Source.name`).
    pub forms: BTreeMap<String, FormConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_request_bytes: 20 * 1024 * 1024,
            max_file_bytes: 10 * 1024 * 1024,
            max_fields: 1000,
            max_json_depth: 32,
            signature_window: Duration::from_secs(300),
            publish_wait: Duration::from_secs(3),
            body_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(5),
            max_concurrent: 256,
            max_reading_bodies: 4096,
            max_buffered_bytes: 64 * 1024 * 1024,
            spool_threshold_bytes: 256 * 1024,
            max_spooled_bytes: 1024 * 1024 * 1024,
            spool_bytes_per_second: 32 * 1024 * 1024,
            spool_dir: None,
            rate_limit: RateLimit::default(),
            catch_all: None,
            forms: BTreeMap::new(),
        }
    }
}

/// A token bucket: `burst` submissions at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50.0,
            burst: 200,
        }
    }
}

/// The mapping targets that are identifiers, which a form can say it
/// verified or had certified.
const IDENTIFIER_TARGETS: [&str; 3] = ["email", "phone", "account_id"];

/// `[web.forms.<id>]`: one form's authenticity settings and mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormConfig {
    /// The HMAC-SHA256 key shared with the platform.
    pub secret: Option<Secret>,
    /// Accept unsigned submissions (never in production; logged at start).
    pub insecure_no_signature: bool,
    /// `v1` (the default: `v1` or `v2` accepted) or `v2` (only signatures
    /// that also cover the `Idempotency-Key` header).
    pub signature_scheme: crate::signature::Scheme,
    /// The typology this form suggests (`WebDetails.typology_hint`).
    pub typology_hint: Option<String>,
    pub email: Option<Locator>,
    pub phone: Option<Locator>,
    /// Full name as given.
    pub name: Option<Locator>,
    /// A verified account id (FranceConnect `sub`...): only map it if the
    /// platform verified it.
    pub account_id: Option<Locator>,
    /// Who verified `account_id` (e.g. "franceconnect").
    pub account_issuer: Option<String>,
    /// Identifiers the platform verified before sending (`email`,
    /// `phone`, `account_id`: a confirmed address, an SMS code): claimed
    /// at the `verified` level. Unlisted ones are `declared`.
    pub verified: Vec<String>,
    /// Identifiers an identity provider vouches for (FranceConnect):
    /// claimed at the `certified` level.
    pub certified: Vec<String>,
    pub address: Option<AddressMapping>,
    pub subject: Option<Locator>,
    /// The text of the request (`Contact.body`).
    pub description: Option<Locator>,
    /// The platform's own id of the submission.
    pub submission_id: Option<Locator>,
    /// Fields kept as `WebDetails.fields`, by the name they get there.
    pub keep: BTreeMap<String, Locator>,
    /// Targets that must be present: `email`, `phone`, `name`,
    /// `account_id`, `subject`, `description`, `submission_id`,
    /// `address.lines`, `address.postal_code`, `address.city`,
    /// `address.country`, or a name from `keep`.
    pub required: Vec<String>,
    /// This form's rate limit (default: `web.rate_limit`).
    pub rate_limit: Option<RateLimit>,
}

/// `address = { lines = [...], postal_code = "...", city = "...", country = "..." }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressMapping {
    pub lines: Vec<Locator>,
    pub postal_code: Option<Locator>,
    pub city: Option<Locator>,
    pub country: Option<Locator>,
}

/// Where a value is in a submission.
///
/// - `"/usager/email"`: a JSON pointer for JSON bodies; in form bodies the
///   field named without the leading `/` (`usager/email`);
/// - `"email"`: a field name in form bodies; the top-level member `email`
///   in JSON bodies;
/// - `{ json = "/usager/email", field = "courriel" }`: each body kind its own.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Locator {
    One(String),
    Split {
        json: Option<String>,
        field: Option<String>,
    },
}

impl Locator {
    /// The JSON pointer to read in a JSON body, if any.
    pub fn json_pointer(&self) -> Option<String> {
        match self {
            Locator::One(s) if s.starts_with('/') => Some(s.clone()),
            Locator::One(s) => Some(format!("/{}", s.replace('~', "~0").replace('/', "~1"))),
            Locator::Split { json, .. } => json.clone(),
        }
    }

    /// The field name to read in a form body, if any.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Locator::One(s) => Some(s.strip_prefix('/').unwrap_or(s)),
            Locator::Split { field, .. } => field.as_deref(),
        }
    }

    fn validate(&self, key: &str) -> Result<(), Error> {
        let check_pointer = |p: &str| -> Result<(), Error> {
            if !p.starts_with('/') {
                return Err(Error::config(
                    key,
                    format!("`{p}` is not a JSON pointer (it must start with `/`)"),
                ));
            }
            let mut chars = p.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                    return Err(Error::config(
                        key,
                        format!("`{p}`: in a JSON pointer `~` must be followed by 0 or 1 (write `~0` for `~`)"),
                    ));
                }
            }
            Ok(())
        };
        let check_field = |f: &str| -> Result<(), Error> {
            if f.is_empty() || f.len() > 200 || f.chars().any(char::is_control) {
                return Err(Error::config(
                    key,
                    format!("`{f}` is not a usable field name (1-200 printable characters)"),
                ));
            }
            Ok(())
        };
        match self {
            Locator::One(s) if s.starts_with('/') => {
                check_pointer(s)?;
                check_field(&s[1..])
            }
            Locator::One(s) => check_field(s),
            Locator::Split {
                json: None,
                field: None,
            } => Err(Error::config(key, "give `json`, `field` or both")),
            Locator::Split { json, field } => {
                if let Some(p) = json {
                    check_pointer(p)?;
                }
                if let Some(f) = field {
                    check_field(f)?;
                }
                Ok(())
            }
        }
    }
}

impl FormConfig {
    /// Every mapped target with its locator, by the name `required` uses.
    pub fn targets(&self) -> Vec<(String, &Locator)> {
        let mut out: Vec<(String, &Locator)> = Vec::new();
        for (name, loc) in [
            ("email", &self.email),
            ("phone", &self.phone),
            ("name", &self.name),
            ("account_id", &self.account_id),
            ("subject", &self.subject),
            ("description", &self.description),
            ("submission_id", &self.submission_id),
        ] {
            if let Some(l) = loc {
                out.push((name.to_owned(), l));
            }
        }
        if let Some(a) = &self.address {
            for (i, l) in a.lines.iter().enumerate() {
                out.push((format!("address.lines[{i}]"), l));
            }
            for (name, loc) in [
                ("address.postal_code", &a.postal_code),
                ("address.city", &a.city),
                ("address.country", &a.country),
            ] {
                if let Some(l) = loc {
                    out.push((name.to_owned(), l));
                }
            }
        }
        for (name, l) in &self.keep {
            out.push((format!("keep.{name}"), l));
        }
        out
    }

    /// The level this form claims the identifier `target` at.
    pub fn level_of(&self, target: &str) -> IdentityLevel {
        if self.certified.iter().any(|t| t == target) {
            IdentityLevel::Certified
        } else if self.verified.iter().any(|t| t == target) {
            IdentityLevel::Verified
        } else {
            IdentityLevel::Declared
        }
    }

    fn is_mapped(&self, target: &str) -> bool {
        match target {
            "address.lines" => self.address.as_ref().is_some_and(|a| !a.lines.is_empty()),
            t if self.keep.contains_key(t) => true,
            t => self.targets().iter().any(|(name, _)| name == t),
        }
    }

    fn validate(&self, id: &str) -> Result<(), Error> {
        let key = |k: &str| format!("web.forms.{id}.{k}");
        if self.insecure_no_signature && self.signature_scheme == crate::signature::Scheme::V2 {
            return Err(Error::config(
                key("signature_scheme"),
                "an unsigned form has no signature to check: remove `signature_scheme` or set a `secret`",
            ));
        }
        match (&self.secret, self.insecure_no_signature) {
            (Some(_), true) => {
                return Err(Error::config(
                    key("insecure_no_signature"),
                    "a form with a `secret` is signed: remove `insecure_no_signature`",
                ));
            }
            (None, false) => {
                return Err(Error::config(
                    key("secret"),
                    "every form needs the HMAC secret shared with its platform \
                     (`secret = { env = \"...\" }` or `{ file = \"...\" }`); to accept unsigned \
                     submissions set `insecure_no_signature = true` (never in production)",
                ));
            }
            (Some(secret), false) => {
                let value = secret.resolve(&key("secret"))?;
                if value.len() < 16 {
                    return Err(Error::config(
                        key("secret"),
                        "too short to be a safe HMAC key: use at least 16 characters (32 random bytes, hex)",
                    ));
                }
            }
            (None, true) => {}
        }
        for (target, locator) in self.targets() {
            locator.validate(&key(&target))?;
        }
        if let Some(hint) = &self.typology_hint
            && (hint.trim().is_empty() || hint.len() > 200)
        {
            return Err(Error::config(key("typology_hint"), "1-200 characters"));
        }
        if self.account_issuer.is_some() && self.account_id.is_none() {
            return Err(Error::config(
                key("account_issuer"),
                "set only with `account_id` (the issuer of that id)",
            ));
        }
        for (list, targets) in [("verified", &self.verified), ("certified", &self.certified)] {
            for target in targets {
                if !IDENTIFIER_TARGETS.contains(&target.as_str()) {
                    return Err(Error::config(
                        key(list),
                        format!("`{target}` is not an identifier: list `email`, `phone` or `account_id`"),
                    ));
                }
                if !self.is_mapped(target) {
                    return Err(Error::config(
                        key(list),
                        format!("`{target}` is listed but not mapped (map it, or remove it from `{list}`)"),
                    ));
                }
            }
        }
        if let Some(both) = self.verified.iter().find(|t| self.certified.contains(t)) {
            return Err(Error::config(
                key("verified"),
                format!("`{both}` is listed in both `verified` and `certified`: keep it in one"),
            ));
        }
        for name in self.keep.keys() {
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err(Error::config(
                    key(&format!("keep.{name}")),
                    "a kept field needs a printable name",
                ));
            }
        }
        for target in &self.required {
            if !self.is_mapped(target) {
                return Err(Error::config(
                    key("required"),
                    format!(
                        "`{target}` is required but not mapped (map it, e.g. `{target} = \"/{target}\"`, or remove it)"
                    ),
                ));
            }
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate(&key("rate_limit"))?;
        }
        Ok(())
    }
}

impl RateLimit {
    fn validate(&self, key: &str) -> Result<(), Error> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(Error::config(format!("{key}.per_second"), "must be more than 0"));
        }
        if self.burst == 0 {
            return Err(Error::config(format!("{key}.burst"), "must be at least 1"));
        }
        Ok(())
    }
}

impl Validate for WebConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.max_request_bytes < 1024 {
            return Err(Error::config("web.max_request_bytes", "must be at least 1024"));
        }
        if self.max_file_bytes == 0 || self.max_file_bytes > self.max_request_bytes {
            return Err(Error::config(
                "web.max_file_bytes",
                "must be more than 0 and at most `web.max_request_bytes`",
            ));
        }
        if self.max_fields == 0 {
            return Err(Error::config("web.max_fields", "must be at least 1"));
        }
        if !(1..=128).contains(&self.max_json_depth) {
            return Err(Error::config("web.max_json_depth", "must be between 1 and 128"));
        }
        if self.signature_window < Duration::from_secs(1) || self.signature_window > Duration::from_secs(3600) {
            return Err(Error::config("web.signature_window", "must be between 1s and 1h"));
        }
        if self.publish_wait.is_zero() {
            return Err(Error::config("web.publish_wait", "must be more than 0s"));
        }
        if self.body_timeout.is_zero() {
            return Err(Error::config("web.body_timeout", "must be more than 0s"));
        }
        if self.body_idle_timeout.is_zero() {
            return Err(Error::config("web.body_idle_timeout", "must be more than 0s"));
        }
        if self.max_concurrent == 0 {
            return Err(Error::config("web.max_concurrent", "must be at least 1"));
        }
        if self.max_reading_bodies == 0 {
            return Err(Error::config("web.max_reading_bodies", "must be at least 1"));
        }
        if self.spool_threshold_bytes < 1024 || u32::try_from(self.spool_threshold_bytes).is_err() {
            return Err(Error::config(
                "web.spool_threshold_bytes",
                "must be between 1024 and 4294967295",
            ));
        }
        if self.max_buffered_bytes < self.spool_threshold_bytes {
            return Err(Error::config(
                "web.max_buffered_bytes",
                "must be at least `web.spool_threshold_bytes` (one body below the threshold must fit)",
            ));
        }
        if self.spool_threshold_bytes < self.max_request_bytes && self.max_spooled_bytes < self.max_request_bytes {
            return Err(Error::config(
                "web.max_spooled_bytes",
                "must be at least `web.max_request_bytes` (else a large body could never be accepted)",
            ));
        }
        if self.spool_bytes_per_second < 65536 {
            return Err(Error::config("web.spool_bytes_per_second", "must be at least 65536"));
        }
        if let Some(dir) = &self.spool_dir
            && !dir.is_dir()
        {
            return Err(Error::config(
                "web.spool_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        self.rate_limit.validate("web.rate_limit")?;
        for (id, form) in &self.forms {
            if !is_token(id) {
                return Err(Error::config(
                    format!("web.forms.{id}"),
                    "a form id is 1-64 letters, digits, '-' or '_'",
                ));
            }
            form.validate(id)?;
        }
        if let Some(all) = &self.catch_all
            && !self.forms.contains_key(all)
        {
            return Err(Error::config(
                "web.catch_all",
                format!("`{all}` is not a configured form (add [web.forms.{all}])"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> WebConfig {
        #[derive(Deserialize)]
        struct Root {
            web: WebConfig,
        }
        toml::from_str::<Root>(toml_text).unwrap().web
    }

    fn error_of(toml_text: &str) -> String {
        parse(toml_text).validate().unwrap_err().to_string()
    }

    #[test]
    fn a_complete_form_validates_and_defaults_apply() {
        let web = parse(
            r#"
            [web]
            catch_all = "autre"
            [web.forms.voirie]
            secret = "0123456789abcdef0123"
            typology_hint = "voirie.signalement"
            email = "/usager/email"
            phone = { json = "/usager/tel", field = "telephone" }
            name = "nom"
            description = "/description"
            address = { lines = ["/adresse/rue"], postal_code = "/adresse/cp" }
            keep = { categorie = "/categorie" }
            required = ["email", "description", "address.postal_code", "categorie"]
            [web.forms.autre]
            insecure_no_signature = true
            "#,
        );
        web.validate().unwrap();
        assert_eq!(web.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(web.signature_window, Duration::from_secs(300));
        let phone = web.forms["voirie"].phone.clone().unwrap();
        assert_eq!(phone.json_pointer().as_deref(), Some("/usager/tel"));
        assert_eq!(phone.field_name(), Some("telephone"));
        let name = web.forms["voirie"].name.clone().unwrap();
        assert_eq!(name.json_pointer().as_deref(), Some("/nom"));
        assert_eq!(Locator::One("/a/b".into()).field_name(), Some("a/b"));
        assert_eq!(Locator::One("a/b".into()).json_pointer().as_deref(), Some("/a~1b"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[web.forms.voirie]\nemail = \"/e\"", "web.forms.voirie.secret"),
            (
                "[web.forms.voirie]\nsecret = \"0123456789abcdef\"\ninsecure_no_signature = true",
                "web.forms.voirie.insecure_no_signature",
            ),
            ("[web.forms.voirie]\nsecret = \"short\"", "web.forms.voirie.secret"),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nsignature_scheme = \"v2\"",
                "web.forms.voirie.signature_scheme",
            ),
            (
                "[web.forms.voirie]\nsecret = { env = \"GUICHET_TEST_SURELY_UNSET_WEB\" }",
                "web.forms.voirie.secret",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nemail = \"/a~2\"",
                "web.forms.voirie.email",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nphone = {}",
                "web.forms.voirie.phone",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nrequired = [\"email\"]",
                "web.forms.voirie.required",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nrate_limit = { per_second = 0, burst = 1 }",
                "web.forms.voirie.rate_limit.per_second",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nverified = [\"name\"]",
                "web.forms.voirie.verified",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\ncertified = [\"account_id\"]",
                "web.forms.voirie.certified",
            ),
            (
                "[web.forms.voirie]\ninsecure_no_signature = true\nemail = \"/e\"\nverified = [\"email\"]\ncertified = [\"email\"]",
                "web.forms.voirie.verified",
            ),
            ("[web.forms.\"a.b\"]\ninsecure_no_signature = true", "web.forms.a.b"),
            ("[web]\ncatch_all = \"nope\"", "web.catch_all"),
            ("[web]\nmax_file_bytes = 999999999", "web.max_file_bytes"),
            ("[web]\nmax_json_depth = 0", "web.max_json_depth"),
            ("[web]\nbody_idle_timeout = \"0s\"", "web.body_idle_timeout"),
            ("[web]\nmax_reading_bodies = 0", "web.max_reading_bodies"),
            ("[web]\nspool_threshold_bytes = 10", "web.spool_threshold_bytes"),
            ("[web]\nmax_buffered_bytes = 4096", "web.max_buffered_bytes"),
            ("[web]\nmax_spooled_bytes = 4096", "web.max_spooled_bytes"),
            ("[web]\nspool_bytes_per_second = 1000", "web.spool_bytes_per_second"),
            ("[web]\nspool_dir = \"/surely/not/a/dir\"", "web.spool_dir"),
        ];
        for (text, key) in cases {
            let err = error_of(text);
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Root {
            web: WebConfig,
        }
        let err = toml::from_str::<Root>("[web.forms.a]\nemial = \"/e\"").unwrap_err();
        assert!(err.to_string().contains("emial"), "{err}");
    }
}
