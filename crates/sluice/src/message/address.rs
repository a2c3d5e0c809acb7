//! Domains and mailbox addresses as the SMTP envelope carries them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not an address or a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@`, or nothing before or after it.
    #[error("not a mailbox address (local@domain): {0:?}")]
    NotAMailbox(String),
    /// The domain part is empty, too long or has an empty label.
    #[error("invalid domain: {0:?}")]
    InvalidDomain(String),
}

/// A domain name, stored lower-case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    /// Parses and normalises a domain (or an address literal such as `[127.0.0.1]`).
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        let lower = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let literal = lower.starts_with('[')
            && lower.ends_with(']')
            && lower[1..lower.len() - 1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':') || c.is_ascii_alphanumeric());
        // Letters, digits, hyphen, underscore; non-ASCII letters for SMTPUTF8 names.
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        };
        let labels_ok = literal || lower.split('.').all(label_ok);
        if lower.is_empty() || lower.len() > 255 || !labels_ok {
            return Err(AddressError::InvalidDomain(raw.to_string()));
        }
        Ok(Domain(lower))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this domain equals `parent` or lies under it.
    pub fn is_within(&self, parent: &Domain) -> bool {
        self.0 == parent.0
            || (self.0.len() > parent.0.len()
                && self.0.ends_with(parent.0.as_str())
                && self.0.as_bytes()[self.0.len() - parent.0.len() - 1] == b'.')
    }
}

impl TryFrom<String> for Domain {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Domain::parse(&value)
    }
}

impl From<Domain> for String {
    fn from(value: Domain) -> Self {
        value.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox `local@domain`. The local part keeps its case (RFC 5321 2.4);
/// the domain is normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    local: String,
    domain: Domain,
}

impl Address {
    /// Parses `local@domain` (angle brackets allowed around it).
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        let raw_trimmed = raw.trim();
        let trimmed = raw_trimmed
            .strip_prefix('<')
            .and_then(|inner| inner.strip_suffix('>'))
            .unwrap_or(raw_trimmed);
        let (local, domain) = trimmed
            .rsplit_once('@')
            .filter(|(local, domain)| !local.is_empty() && !domain.is_empty())
            .ok_or_else(|| AddressError::NotAMailbox(raw.to_string()))?;
        // RFC 5322 dot-atom (with UTF-8 for SMTPUTF8), or a quoted string.
        let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
        let atom_ok = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii();
        if local.len() > 64 || local.chars().any(char::is_control) || (!quoted && !local.chars().all(atom_ok))
        {
            return Err(AddressError::NotAMailbox(raw.to_string()));
        }
        Ok(Address {
            local: local.to_string(),
            domain: Domain::parse(domain)?,
        })
    }

    /// The local part.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain part.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Address::parse(&value)
    }
}

impl From<Address> for String {
    fn from(value: Address) -> Self {
        value.to_string()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// MAIL FROM: a mailbox, or the null reverse path `<>` of bounces, which
/// never receives a bounce itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReversePath {
    /// `<>`.
    Null,
    /// A mailbox.
    Mailbox(Address),
}

impl ReversePath {
    /// The mailbox, unless this is the null path.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(address) => Some(address),
        }
    }

    /// The sender's domain, unless this is the null path.
    pub fn domain(&self) -> Option<&Domain> {
        self.address().map(Address::domain)
    }
}

impl TryFrom<String> for ReversePath {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bare = value.trim().trim_start_matches('<').trim_end_matches('>');
        if bare.is_empty() {
            Ok(ReversePath::Null)
        } else {
            Address::parse(bare).map(ReversePath::Mailbox)
        }
    }
}

impl From<ReversePath> for String {
    fn from(value: ReversePath) -> Self {
        value.to_string()
    }
}

impl fmt::Display for ReversePath {
    /// The bare address, or the empty string for `<>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(address) => address.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_normalise_and_nest() {
        let d = Domain::parse("Mail.Contoso.TEST.").unwrap();
        assert_eq!(d.as_str(), "mail.contoso.test");
        assert!(d.is_within(&Domain::parse("contoso.test").unwrap()));
        assert!(!Domain::parse("badcontoso.test")
            .unwrap()
            .is_within(&Domain::parse("contoso.test").unwrap()));
        assert!(Domain::parse("a..b").is_err());
        assert!(Domain::parse("").is_err());
    }

    #[test]
    fn addresses_round_trip() {
        let a = Address::parse("<Alice@Contoso.test>").unwrap();
        assert_eq!(a.to_string(), "Alice@contoso.test");
        assert!(Address::parse("nobody").is_err());
        assert!(Address::parse("@x.test").is_err());
        // Found by fuzzing: such a domain did not survive printing and parsing.
        assert!(Address::parse("o@=>.").is_err());
        assert!(Address::parse("a b@x.test").is_err());
        assert!(Address::parse("\"a b\"@x.test").is_ok());
        assert!(Domain::parse("[127.0.0.1]").is_ok());
        assert!(Domain::parse("bücher.test").is_ok());
        assert_eq!(
            ReversePath::try_from(String::from("<>")).unwrap(),
            ReversePath::Null
        );
    }
}
