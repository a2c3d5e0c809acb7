//! Stage 2: who is sending. Matches a session to an inbound connector by
//! TLS client certificate name or by source address (longest prefix wins),
//! or leaves it anonymous (the internet).
//!
//! Pure: takes the session facts and the enabled inbound connectors (the
//! table [`compile`] builds from `[[inbound_connector]]`), returns a
//! [`Classification`]. Never rejects by itself; relay control and the
//! connector restrictions use its answer.

pub mod header_firewall;
pub mod restrictions;

use crate::config::objects::{ConnectorType, InboundConnectorObject, ObjectError};
use crate::message::DomainPattern;
use ipnet::IpNet;
use serde::Serialize;
use std::net::IpAddr;

/// How an inbound connector recognises its sender.
#[derive(Debug, Clone)]
pub struct InboundConnector {
    /// Unique name.
    pub name: String,
    /// Partner or on-premises (on-premises may relay for accepted domains).
    pub kind: ConnectorType,
    /// Source ranges.
    pub sender_ips: Vec<IpNet>,
    /// Certificate subject/SAN this connector trusts.
    pub certificate_name: Option<DomainPattern>,
    /// Partner: sender domains covered.
    pub sender_domains: Vec<DomainPattern>,
    /// Refuse mail without TLS.
    pub require_tls: bool,
    /// Mail from `sender_domains` must come from `sender_ips`.
    pub restrict_domains_to_ip_addresses: bool,
    /// Mail from `sender_domains` must present the certificate.
    pub restrict_domains_to_certificate: bool,
    /// Trust `X-Sluice-Org-*` headers from this source.
    pub retain_internal_headers: bool,
    /// Judge SPF/DMARC on the hop before this connector's (SPEC section 9).
    pub enhanced_filtering: bool,
}

impl InboundConnector {
    /// Checks one `[[inbound_connector]]`; the error names the key.
    pub fn from_object(c: &InboundConnectorObject) -> Result<InboundConnector, ObjectError> {
        let err = ObjectError::of("inbound_connector", &c.name);
        if c.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let sender_ips = c
            .sender_ip_addresses
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        err(
                            "sender_ip_addresses",
                            format!("{s:?} is not an IP address or CIDR range"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let certificate_name = match c.tls_sender_certificate_name.trim() {
            "" => None,
            n => {
                Some(DomainPattern::parse(n).map_err(|e| err("tls_sender_certificate_name", e.to_string()))?)
            }
        };
        if sender_ips.is_empty() && certificate_name.is_none() {
            return Err(err(
                "sender_ip_addresses",
                "a connector needs sender_ip_addresses or tls_sender_certificate_name".into(),
            ));
        }
        let sender_domains = c
            .sender_domains
            .iter()
            .map(|s| DomainPattern::parse(s).map_err(|e| err("sender_domains", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InboundConnector {
            name: c.name.clone(),
            kind: c.kind,
            sender_ips,
            certificate_name,
            sender_domains,
            require_tls: c.require_tls,
            restrict_domains_to_ip_addresses: c.restrict_domains_to_ip_addresses,
            restrict_domains_to_certificate: c.restrict_domains_to_certificate,
            retain_internal_headers: c.retain_internal_headers,
            enhanced_filtering: c.enhanced_filtering,
        })
    }
}

/// Checks every `[[inbound_connector]]` (names unique, ignoring case) and
/// compiles them, in order. Which of them are in force (enabled) is the
/// caller's choice: the stage only ever sees the ones that are.
pub fn compile(objects: &[InboundConnectorObject]) -> Result<Vec<InboundConnector>, ObjectError> {
    crate::config::objects::compile_each(
        "inbound_connector",
        objects,
        |c| &c.name,
        InboundConnector::from_object,
    )
}

/// Where a session's mail comes from, as far as policy is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "origin")]
pub enum Classification {
    /// Matched an on-premises connector: the organisation's own server.
    Internal {
        /// Connector name.
        connector: String,
        /// How it matched.
        matched_by: MatchedBy,
    },
    /// Matched a partner connector.
    Partner {
        /// Connector name.
        connector: String,
        /// How it matched.
        matched_by: MatchedBy,
    },
    /// No connector: the internet.
    Anonymous,
}

/// What identified the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum MatchedBy {
    /// A certificate name (the matched name).
    Certificate(String),
    /// A source range.
    SourceIp(IpNet),
}

impl Classification {
    /// The connector name, unless anonymous.
    pub fn connector(&self) -> Option<&str> {
        match self {
            Classification::Internal { connector, .. } | Classification::Partner { connector, .. } => {
                Some(connector)
            }
            Classification::Anonymous => None,
        }
    }
}

/// Chooses the inbound connector for a session: a connector whose
/// `tls_sender_certificate_name` matches a name of the verified client
/// certificate wins; else the longest source-prefix match; else anonymous.
pub fn classify(inbound: &[InboundConnector], peer: IpAddr, certificate_names: &[String]) -> Classification {
    let by_certificate = inbound.iter().find_map(|c| {
        let pattern = c.certificate_name.as_ref()?;
        certificate_names
            .iter()
            .find(|name| certificate_name_matches(pattern, name))
            .map(|name| (MatchedBy::Certificate(name.to_ascii_lowercase()), c))
    });
    let by_ip = || {
        inbound
            .iter()
            .filter_map(|c| {
                c.sender_ips
                    .iter()
                    .filter(|net| net.contains(&peer))
                    .max_by_key(|net| net.prefix_len())
                    .map(|net| (*net, c))
            })
            .fold(
                None,
                |best: Option<(IpNet, &InboundConnector)>, (net, c)| match best {
                    Some((b, _)) if b.prefix_len() >= net.prefix_len() => best,
                    _ => Some((net, c)),
                },
            )
            .map(|(net, c)| (MatchedBy::SourceIp(net), c))
    };
    match by_certificate.or_else(by_ip) {
        None => Classification::Anonymous,
        Some((matched_by, c)) => {
            let connector = c.name.clone();
            match c.kind {
                ConnectorType::OnPremises => Classification::Internal {
                    connector,
                    matched_by,
                },
                ConnectorType::Partner => Classification::Partner {
                    connector,
                    matched_by,
                },
            }
        }
    }
}

/// SPEC section 4: equal names (case-insensitive); a `*.d` connector name
/// and a certificate name one label under `d`; or a `*.d` certificate name
/// and a connector name one label under `d`.
pub fn certificate_name_matches(pattern: &DomainPattern, certificate_name: &str) -> bool {
    let name = certificate_name.trim().trim_end_matches('.').to_ascii_lowercase();
    let one_label_under = |candidate: &str, parent: &str| {
        candidate
            .strip_suffix(parent)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.'))
    };
    match pattern {
        DomainPattern::Any => false,
        DomainPattern::Exact(d) => {
            name == d.as_str()
                || name
                    .strip_prefix("*.")
                    .is_some_and(|parent| one_label_under(d.as_str(), parent))
        }
        DomainPattern::Subdomains(parent) => {
            name == format!("*.{parent}") || one_label_under(&name, parent.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::objects::ObjectSet;

    /// The enabled inbound connectors, as the node's policy holds them.
    fn policy(toml: &str) -> Vec<InboundConnector> {
        crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(toml).unwrap())
            .unwrap()
            .inbound
    }

    #[test]
    fn longest_prefix_wins_and_disabled_is_ignored() {
        let p = policy(
            r#"
            [[inbound_connector]]
            name = "wide"
            type = "partner"
            sender_ip_addresses = ["127.0.0.0/8"]
            [[inbound_connector]]
            name = "narrow"
            type = "on_premises"
            sender_ip_addresses = ["127.0.0.40/32"]
            [[inbound_connector]]
            name = "off"
            type = "on_premises"
            sender_ip_addresses = ["127.0.0.41/32"]
            enabled = false
            "#,
        );
        assert_eq!(
            classify(&p, "127.0.0.40".parse().unwrap(), &[]).connector(),
            Some("narrow")
        );
        assert!(matches!(
            classify(&p, "127.0.0.40".parse().unwrap(), &[]),
            Classification::Internal { .. }
        ));
        assert_eq!(
            classify(&p, "127.0.0.41".parse().unwrap(), &[]).connector(),
            Some("wide")
        );
        assert_eq!(
            classify(&p, "10.0.0.1".parse().unwrap(), &[]),
            Classification::Anonymous
        );
    }

    #[test]
    fn certificate_match_wins_over_ip() {
        let p = policy(
            r#"
            [[inbound_connector]]
            name = "by ip"
            type = "partner"
            sender_ip_addresses = ["127.0.0.40/32"]
            [[inbound_connector]]
            name = "by cert"
            type = "on_premises"
            tls_sender_certificate_name = "*.contoso.test"
            "#,
        );
        let names = vec!["mail.contoso.test".to_string()];
        let c = classify(&p, "127.0.0.40".parse().unwrap(), &names);
        assert_eq!(c.connector(), Some("by cert"));
        assert!(
            matches!(c, Classification::Internal { matched_by: MatchedBy::Certificate(ref n), .. } if n == "mail.contoso.test")
        );
        let deep = vec!["a.mail.contoso.test".to_string()];
        assert_eq!(
            classify(&p, "127.0.0.40".parse().unwrap(), &deep).connector(),
            Some("by ip")
        );
    }

    #[test]
    fn certificate_name_rules() {
        let exact = DomainPattern::parse("mail.contoso.test").unwrap();
        let wild = DomainPattern::parse("*.contoso.test").unwrap();
        assert!(certificate_name_matches(&exact, "MAIL.contoso.test"));
        assert!(certificate_name_matches(&exact, "*.contoso.test"));
        assert!(!certificate_name_matches(&exact, "*.test"));
        assert!(certificate_name_matches(&wild, "relay.contoso.test"));
        assert!(certificate_name_matches(&wild, "*.contoso.test"));
        assert!(!certificate_name_matches(&wild, "contoso.test"));
        assert!(!certificate_name_matches(&wild, "a.b.contoso.test"));
        assert!(!certificate_name_matches(&wild, "evilcontoso.test"));
    }
}
