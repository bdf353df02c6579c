//! A service's contact details, which the accusé de réception must give
//! (CRPA R112-5): designation, postal address, e-mail and phone.
//!
//! They are optional in a rules file (a service that never writes to
//! usagers needs none), but all four or none: a partial set would make an
//! acknowledgment that misses a mandatory mention.

/// What `rules check` says a service's contact fields should look like.
pub const EXPECTED: &str = "designation = \"Service urbanisme\", postal_address = \"1 place de la Mairie, 00000 Ville\", \
     email = \"urbanisme@ville.example\", phone = \"+33 1 23 45 67 89\"";

/// The contact details of one service, each empty when not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceContact {
    pub designation: String,
    pub postal_address: String,
    pub email: String,
    pub phone: String,
}

impl ServiceContact {
    /// Whether all four details are given.
    pub fn is_complete(&self) -> bool {
        self.missing().is_none() && !self.designation.is_empty()
    }

    /// The first detail missing when some but not all are given.
    pub fn missing(&self) -> Option<&'static str> {
        let fields = [
            ("designation", &self.designation),
            ("postal_address", &self.postal_address),
            ("email", &self.email),
            ("phone", &self.phone),
        ];
        if fields.iter().all(|(_, v)| v.is_empty()) {
            return None;
        }
        fields.iter().find(|(_, v)| v.is_empty()).map(|(k, _)| *k)
    }

    pub(crate) fn set(&mut self, field: &str, value: String) {
        match field {
            "designation" => self.designation = value,
            "postal_address" => self.postal_address = value,
            "email" => self.email = value,
            "phone" => self.phone = value,
            _ => {}
        }
    }

    /// Checks one field's text; the error names the field and the fix.
    pub fn check_field(field: &str, text: &str) -> Result<(), String> {
        if text.is_empty() {
            return Err(format!("`{field}` is empty: give it or remove the key"));
        }
        if text.len() > 300 || text.chars().any(char::is_control) {
            return Err(format!("`{field}` must be one line of at most 300 bytes"));
        }
        match field {
            "email" if !is_address(text) => Err(format!(
                "`email` \"{text}\" is not an e-mail address (local@domain, no spaces)"
            )),
            "phone"
                if !text
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '.' | '-' | '(' | ')'))
                    || text.chars().filter(char::is_ascii_digit).count() < 4 =>
            {
                Err(format!(
                    "`phone` \"{text}\" is not a phone number (digits, spaces, + . - ( ) only)"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A plain `local@domain` address: one `@`, both sides non-empty, no
/// spaces or angle brackets, a dot in the domain.
pub fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"'))
        && !domain.contains('@')
}

#[cfg(test)]
mod tests {
    use crate::RuleSet;

    fn refused(text: &str) -> crate::RulesError {
        match RuleSet::parse(text, "r.toml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        }
    }

    const HEAD: &str = "manual_service = \"accueil\"\n";

    #[test]
    fn contact_details_are_checked_all_or_none() {
        let good = format!(
            "{HEAD}[[services]]\nname = \"accueil\"\ndeadline = \"5 business days\"\ndesignation = \"Accueil\"\npostal_address = \"1 place de la Mairie\"\nemail = \"accueil@ville.example\"\nphone = \"+33 1 23 45 67 89\"\n"
        );
        let rules = RuleSet::parse(&good, "r.toml").expect("valid");
        assert!(rules.services()[0].contact.is_complete());
        assert_eq!(rules.services()[0].contact.email, "accueil@ville.example");

        let partial = format!(
            "{HEAD}[[services]]\nname = \"accueil\"\ndeadline = \"5 business days\"\ndesignation = \"Accueil\"\n"
        );
        let err = refused(&partial).to_string();
        assert!(err.contains("not `postal_address`") && err.contains("R112-5"), "{err}");

        let bad = good.replace("accueil@ville.example", "accueil at ville");
        let err = refused(&bad).to_string();
        assert!(
            err.contains("`email`") && err.contains("not an e-mail address"),
            "{err}"
        );

        let bad = good.replace("+33 1 23 45 67 89", "call us");
        let err = refused(&bad).to_string();
        assert!(err.contains("`phone`"), "{err}");

        let none = format!("{HEAD}[[services]]\nname = \"accueil\"\ndeadline = \"5 business days\"\n");
        let rules = RuleSet::parse(&none, "r.toml").expect("details are optional");
        assert!(!rules.services()[0].contact.is_complete());
    }
}
