//! Stage 2: who is sending. Matches a session to an inbound connector by
//! TLS client certificate name or by source address (longest prefix wins),
//! or leaves it anonymous (the internet).
//!
//! Pure: takes the session facts and the node's policy, returns a
//! [`Classification`]. Never rejects by itself; relay control and the
//! connector restrictions use its answer.

pub mod header_firewall;

use crate::config::objects::{ConnectorType, Policy};
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
    /// Trust `X-Sluice-Org-*` headers from this source.
    pub retain_internal_headers: bool,
    /// Disabled connectors never match.
    pub enabled: bool,
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

/// Chooses the inbound connector for a session from `peer`.
pub fn classify(policy: &Policy, peer: IpAddr) -> Classification {
    let best = policy
        .inbound
        .iter()
        .filter(|c| c.enabled)
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
        );
    match best {
        None => Classification::Anonymous,
        Some((net, c)) => {
            let matched_by = MatchedBy::SourceIp(net);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::objects::ObjectSet;

    fn policy(toml: &str) -> Policy {
        toml::from_str::<ObjectSet>(toml).unwrap().validate().unwrap()
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
            classify(&p, "127.0.0.40".parse().unwrap()).connector(),
            Some("narrow")
        );
        assert!(matches!(
            classify(&p, "127.0.0.40".parse().unwrap()),
            Classification::Internal { .. }
        ));
        assert_eq!(
            classify(&p, "127.0.0.41".parse().unwrap()).connector(),
            Some("wide")
        );
        assert_eq!(
            classify(&p, "10.0.0.1".parse().unwrap()),
            Classification::Anonymous
        );
    }
}
