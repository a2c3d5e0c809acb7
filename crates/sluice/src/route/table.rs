//! The routing table: `[[accepted_domain]]` and `[[outbound_connector]]`
//! objects compiled into what [`super::decide`] reads. The checks here are
//! the only ones these objects get; each error names the object and key.

use super::{AddressSpace, HostPort, NextHop, OutboundConnector, Scope, TlsPolicy};
use crate::config::objects::{
    AcceptedDomain, AcceptedDomainType, ObjectError, OutboundConnectorObject, TlsLevel,
};
use crate::message::Domain;
use std::collections::BTreeMap;

/// What routing reads: the accepted domains and the outbound connectors in
/// force (disabled ones are never in it).
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// Accepted domains and their type.
    pub accepted: BTreeMap<Domain, AcceptedDomainType>,
    /// Enabled outbound connectors, in object order (ties keep the earlier).
    pub outbound: Vec<OutboundConnector>,
}

impl RoutingTable {
    /// The type of `domain` when it is accepted.
    pub fn accepted_domain(&self, domain: &Domain) -> Option<AcceptedDomainType> {
        self.accepted.get(domain).copied()
    }

    /// Whether `domain` is an accepted domain or below one (the organisation).
    pub fn is_inside(&self, domain: &Domain) -> bool {
        self.accepted.keys().any(|d| domain.is_within(d))
    }

    /// An outbound connector by name.
    pub fn outbound_connector(&self, name: &str) -> Option<&OutboundConnector> {
        self.outbound.iter().find(|c| c.name == name)
    }
}

/// Checks every `[[accepted_domain]]` (each named once).
pub fn compile_accepted_domains(
    objects: &[AcceptedDomain],
) -> Result<BTreeMap<Domain, AcceptedDomainType>, ObjectError> {
    let mut accepted = BTreeMap::new();
    for d in objects {
        let err = ObjectError::of("accepted_domain", &d.name);
        let domain = Domain::parse(&d.name).map_err(|e| err("name", e.to_string()))?;
        if accepted.insert(domain, d.kind).is_some() {
            return Err(err("name", "defined twice".into()));
        }
    }
    Ok(accepted)
}

/// Checks every `[[outbound_connector]]` (names unique, ignoring case) and
/// compiles them, in order, enabled or not: which are in force is the
/// caller's choice.
pub fn compile_outbound(objects: &[OutboundConnectorObject]) -> Result<Vec<OutboundConnector>, ObjectError> {
    crate::config::objects::compile_each(
        "outbound_connector",
        objects,
        |c| &c.name,
        OutboundConnector::from_object,
    )
}

impl OutboundConnector {
    /// Checks one `[[outbound_connector]]`; the error names the key.
    pub fn from_object(c: &OutboundConnectorObject) -> Result<OutboundConnector, ObjectError> {
        let err = ObjectError::of("outbound_connector", &c.name);
        if c.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let patterns = c
            .recipient_domains
            .iter()
            .map(|s| AddressSpace::parse(s).map_err(|m| err("recipient_domains", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = c
            .smart_hosts
            .iter()
            .map(|s| HostPort::parse_with_port(s, c.port.unwrap_or(25)).map_err(|m| err("smart_hosts", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let max_message_size = c
            .max_message_size
            .as_deref()
            .map(|s| {
                crate::config::parse_size(s)
                    .map(|n| n as u64)
                    .map_err(|m| err("max_message_size", m))
            })
            .transpose()?;
        let next_hop = match (hosts.is_empty(), c.use_mx_record) {
            (false, false) => NextHop::SmartHosts(hosts),
            (true, true) => NextHop::Mx,
            (false, true) => {
                return Err(err(
                    "use_mx_record",
                    "smart_hosts and use_mx_record exclude each other".into(),
                ))
            }
            (true, false) => {
                return Err(err(
                    "smart_hosts",
                    "give smart_hosts, or set use_mx_record = true".into(),
                ))
            }
        };
        let scope = if c.transport_rule_scoped {
            Scope::RuleScoped
        } else {
            if patterns.is_empty() {
                return Err(err(
                    "recipient_domains",
                    "a connector that is not transport_rule_scoped needs recipient_domains".into(),
                ));
            }
            Scope::Domains(patterns)
        };
        let tls_domain = Some(c.tls_domain.trim().to_ascii_lowercase()).filter(|d| !d.is_empty());
        let tls = match c.tls {
            TlsLevel::Opportunistic => TlsPolicy::Opportunistic,
            TlsLevel::EncryptionOnly => TlsPolicy::EncryptionOnly,
            TlsLevel::CertificateValidation => TlsPolicy::CertificateValidation,
            TlsLevel::DomainValidation => TlsPolicy::DomainValidation {
                domain: tls_domain.clone(),
            },
        };
        if tls_domain.is_some() && c.tls != TlsLevel::DomainValidation {
            return Err(err(
                "tls_domain",
                "only used with tls = \"domain_validation\"".into(),
            ));
        }
        for (key, value) in [
            ("max_connections", c.max_connections),
            ("max_messages_per_connection", c.max_messages_per_connection),
        ] {
            if value == Some(0) {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        Ok(OutboundConnector {
            name: c.name.clone(),
            kind: c.kind,
            scope,
            next_hop,
            tls,
            helo_name: Some(c.helo_name.trim().to_string()).filter(|h| !h.is_empty()),
            retain_internal_headers: c.retain_internal_headers,
            max_message_size,
            max_connections: c.max_connections,
            max_messages_per_connection: c.max_messages_per_connection,
        })
    }
}
