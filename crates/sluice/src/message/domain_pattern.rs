//! `recipient_domains` / `sender_domains` patterns: `*`, `contoso.com`, `*.contoso.com`.

use super::Domain;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A domain pattern as Exchange's connectors write them. `*.d` matches the
/// subdomains of `d` at any depth, not `d` itself (Exchange's address spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DomainPattern {
    /// `*`: every domain.
    Any,
    /// `contoso.com`.
    Exact(Domain),
    /// `*.contoso.com`.
    Subdomains(Domain),
}

/// How specific a match is: larger wins (`contoso.com` > `*.contoso.com` > `*`).
pub type Specificity = (u8, usize);

impl DomainPattern {
    /// Parses a pattern.
    pub fn parse(raw: &str) -> Result<Self, super::AddressError> {
        let raw = raw.trim();
        if raw == "*" {
            Ok(DomainPattern::Any)
        } else if let Some(parent) = raw.strip_prefix("*.") {
            Domain::parse(parent).map(DomainPattern::Subdomains)
        } else {
            Domain::parse(raw).map(DomainPattern::Exact)
        }
    }

    /// Whether `domain` matches, and how specifically.
    pub fn matches(&self, domain: &Domain) -> Option<Specificity> {
        match self {
            DomainPattern::Any => Some((0, 0)),
            DomainPattern::Exact(d) => (d == domain).then_some((2, d.as_str().len())),
            DomainPattern::Subdomains(parent) => {
                (domain != parent && domain.is_within(parent)).then_some((1, parent.as_str().len()))
            }
        }
    }
}

impl TryFrom<String> for DomainPattern {
    type Error = super::AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        DomainPattern::parse(&value)
    }
}

impl From<DomainPattern> for String {
    fn from(value: DomainPattern) -> Self {
        value.to_string()
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Any => f.write_str("*"),
            DomainPattern::Exact(d) => write!(f, "{d}"),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn most_specific_ordering() {
        let exact = DomainPattern::parse("contoso.com").unwrap();
        let wild = DomainPattern::parse("*.contoso.com").unwrap();
        let any = DomainPattern::parse("*").unwrap();
        let target = d("contoso.com");
        assert!(wild.matches(&target).is_none());
        assert!(exact.matches(&target) > any.matches(&target));
        let sub = d("eu.mail.contoso.com");
        assert!(wild.matches(&sub) > any.matches(&sub));
        assert!(exact.matches(&sub).is_none());
        assert!(DomainPattern::parse("*.contoso.com")
            .unwrap()
            .matches(&d("xcontoso.com"))
            .is_none());
    }

    #[test]
    fn display_round_trips() {
        for p in ["*", "contoso.com", "*.contoso.com"] {
            assert_eq!(DomainPattern::parse(p).unwrap().to_string(), p);
        }
    }
}
