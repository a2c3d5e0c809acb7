//! Partner onboarding (SPEC section 12): a scanner node's tenants.
//!
//! A tenant is not a new kind of object: it is the set of ordinary objects
//! that `tenant add` writes in one atomic change (an internal_relay accepted
//! domain, an inbound connector for the tenant's addresses, an outbound
//! connector back to the tenant, and two scanning rules), each named after
//! the tenant and, where the object has a comment, marked with
//! [`mark`]. `tenant remove` takes away exactly the objects that carry the
//! tenant's names and mark, so objects an administrator made by hand are
//! never touched.
//!
//! [`kit`] prints the tenant's own side (seed 000's steps); [`validation`]
//! accepts and records connector validation messages; [`health`] reads the
//! trace for each tenant's mail.

pub mod health;
pub mod kit;
pub mod validation;

use crate::config::objects::{
    AcceptedDomain, AcceptedDomainType, ConnectorType, InboundConnectorObject, ObjectSet,
    OutboundConnectorObject, TlsLevel,
};
use crate::config::rule_object::{RuleActions, RuleMode, RuleObject, RulePredicates, SensitiveInfo};
use crate::message::{Address, Domain};

/// What a scanner node keeps for its tenants: its settings and the
/// validation records.
#[derive(Debug, Clone)]
pub struct PartnerNode {
    /// `[partner]`.
    pub settings: PartnerSettings,
    /// Validation messages received.
    pub log: std::sync::Arc<validation::ValidationLog>,
}

impl PartnerNode {
    /// The address tenants' connector validation messages go to.
    pub fn validation_address(node: Option<&PartnerNode>) -> Option<Address> {
        node.map(|n| n.settings.validation_address.clone())
    }
}

pub use crate::config::partner::{check_cidr, check_host_port, PartnerSection, PartnerSettings};

/// The comment every tenant object carries: what `tenant remove` looks for.
pub fn mark(domain: &str) -> String {
    format!("sluice tenant {domain}")
}

/// The tenant's inbound connector.
pub fn inbound_name(domain: &str) -> String {
    format!("From tenant {domain}")
}

/// The tenant's outbound connector (the relay back).
pub fn outbound_name(domain: &str) -> String {
    format!("Back to tenant {domain}")
}

/// The tenant's rule that holds sensitive mail.
pub fn hold_rule_name(domain: &str) -> String {
    format!("Tenant {domain}: hold sensitive mail")
}

/// The tenant's rule that stamps and returns the rest.
pub fn return_rule_name(domain: &str) -> String {
    format!("Tenant {domain}: stamp and return")
}

/// The tenant whose inbound connector is `connector`, if it is one.
pub fn tenant_of_connector(connector: &str) -> Option<&str> {
    connector.strip_prefix("From tenant ")
}

/// Detectors of the scanning rules: what the policy holds.
pub const DETECTORS: [&str; 3] = ["credit_card", "us_ssn", "iban"];

/// The notice a sender of held mail gets.
pub const NOTICE: &str =
    "Your message contained sensitive information and was held for review by the scanning service.";

/// Priorities of the tenants' rules: after any rule an administrator put
/// first (0..99), and the same for every tenant, since each tenant's rules
/// match only its own sending addresses.
const HOLD_PRIORITY: u32 = 100;
const RETURN_PRIORITY: u32 = 101;

/// What `tenant add` asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    /// The tenant's domain (e.g. `contoso.com`).
    pub domain: String,
    /// Addresses (CIDR) the tenant's mail comes from.
    pub ips: Vec<String>,
    /// Where scanned mail goes back: `host[:port]` (e.g. `contoso-com.mail.protection.outlook.com`).
    pub return_host: String,
}

/// Why a tenant request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TenantError(pub String);

impl TenantRequest {
    /// The normalised domain, after checking every field.
    pub fn check(&self) -> Result<String, TenantError> {
        let domain = Domain::parse(&self.domain)
            .ok()
            // A tenant is an organisation's registered domain, never a bare label.
            .filter(|d| d.as_str().contains('.'))
            .ok_or_else(|| TenantError(format!("{:?} is not a domain", self.domain)))?;
        if self.ips.is_empty() {
            return Err(TenantError(
                "at least one --ip is needed: the scanner accepts a tenant's mail only from its addresses"
                    .into(),
            ));
        }
        for ip in &self.ips {
            check_cidr(ip).map_err(TenantError)?;
        }
        check_host_port(&self.return_host).map_err(|m| TenantError(format!("return host {m}")))?;
        Ok(domain.as_str().to_string())
    }
}

/// The scanner's objects for one tenant.
pub fn scanner_objects(request: &TenantRequest) -> Result<ObjectSet, TenantError> {
    let domain = request.check()?;
    let comment = mark(&domain);
    let from_tenant = RulePredicates {
        sender_ip_ranges: request.ips.clone(),
        ..RulePredicates::default()
    };
    Ok(ObjectSet {
        detectors: Vec::new(),
        edm: Vec::new(),
        accepted_domains: vec![AcceptedDomain {
            name: domain.clone(),
            kind: AcceptedDomainType::InternalRelay,
        }],
        inbound_connectors: vec![InboundConnectorObject {
            name: inbound_name(&domain),
            comment: comment.clone(),
            // "Your organization's email server": mail from these addresses
            // with the tenant's sender domain may go on to the internet,
            // which the relay back then carries.
            kind: ConnectorType::OnPremises,
            sender_ip_addresses: request.ips.clone(),
            tls_sender_certificate_name: String::new(),
            // The tenant's domain is claimed for these addresses: mail in
            // its name from anywhere else is refused at MAIL FROM (and
            // counted in the tenant's health).
            sender_domains: vec![domain.clone(), format!("*.{domain}")],
            require_tls: false,
            restrict_domains_to_ip_addresses: true,
            restrict_domains_to_certificate: false,
            // A tenant's X-Sluice-Org-* headers are not trusted: a verdict
            // it wrote itself must not survive into the scan.
            retain_internal_headers: false,
            enhanced_filtering: false,
            enabled: true,
        }],
        outbound_connectors: vec![OutboundConnectorObject {
            name: outbound_name(&domain),
            comment: comment.clone(),
            kind: ConnectorType::Partner,
            recipient_domains: Vec::new(),
            smart_hosts: vec![request.return_host.clone()],
            use_mx_record: false,
            tls: TlsLevel::EncryptionOnly,
            tls_domain: String::new(),
            transport_rule_scoped: true,
            // The stamp is what lets the tenant's rule skip scanned mail.
            retain_internal_headers: true,
            helo_name: String::new(),
            validation_recipients: Vec::new(),
            port: None,
            max_message_size: None,
            max_connections: None,
            max_messages_per_connection: None,
            last_validation: None,
            enabled: true,
        }],
        rules: vec![
            RuleObject {
                name: hold_rule_name(&domain),
                comment: comment.clone(),
                priority: HOLD_PRIORITY,
                mode: RuleMode::Enforce,
                stop_processing: true,
                enabled: true,
                conditions: RulePredicates {
                    contains_sensitive_info: Some(SensitiveInfo {
                        detectors: DETECTORS.map(String::from).to_vec(),
                        min_confidence: "medium".into(),
                        min_count: 1,
                    }),
                    ..from_tenant.clone()
                },
                exceptions: RulePredicates::default(),
                actions: RuleActions {
                    quarantine: true,
                    notify_sender: Some(NOTICE.into()),
                    stamp_scan: true,
                    ..RuleActions::default()
                },
            },
            RuleObject {
                name: return_rule_name(&domain),
                comment,
                priority: RETURN_PRIORITY,
                mode: RuleMode::Enforce,
                stop_processing: false,
                enabled: true,
                conditions: from_tenant,
                exceptions: RulePredicates::default(),
                actions: RuleActions {
                    stamp_scan: true,
                    route_via_connector: Some(outbound_name(&domain)),
                    ..RuleActions::default()
                },
            },
        ],
    })
}

/// A tenant as its stored objects say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTenant {
    /// The domain.
    pub domain: String,
    /// The inbound connector's addresses.
    pub ips: Vec<String>,
    /// The outbound connector's smart host.
    pub return_host: String,
    /// The tenant's objects as `kind "name"`.
    pub objects: Vec<String>,
}

/// Every tenant of `set`, by domain.
pub fn tenants(set: &ObjectSet) -> Vec<StoredTenant> {
    let mut found: Vec<StoredTenant> = set
        .inbound_connectors
        .iter()
        .filter_map(|c| {
            let domain = tenant_of_connector(&c.name)?;
            (c.comment == mark(domain)).then(|| tenant(set, domain))?
        })
        .collect();
    found.sort_by(|a, b| a.domain.cmp(&b.domain));
    found
}

/// One tenant, `None` when `domain` has no marked inbound connector.
pub fn tenant(set: &ObjectSet, domain: &str) -> Option<StoredTenant> {
    let owned = owned_objects(set, domain);
    let inbound = owned.inbound_connectors.first()?;
    let mut objects = Vec::new();
    objects.extend(
        owned
            .accepted_domains
            .iter()
            .map(|o| format!("accepted_domain {:?}", o.name)),
    );
    objects.extend(
        owned
            .inbound_connectors
            .iter()
            .map(|o| format!("inbound_connector {:?}", o.name)),
    );
    objects.extend(
        owned
            .outbound_connectors
            .iter()
            .map(|o| format!("outbound_connector {:?}", o.name)),
    );
    objects.extend(owned.rules.iter().map(|o| format!("rule {:?}", o.name)));
    Some(StoredTenant {
        domain: domain.to_string(),
        ips: inbound.sender_ip_addresses.clone(),
        return_host: owned
            .outbound_connectors
            .first()
            .and_then(|c| c.smart_hosts.first().cloned())
            .unwrap_or_default(),
        objects,
    })
}

/// The objects of `set` that `tenant add` made for `domain`: those with the
/// tenant's names and mark. The accepted domain has no comment: it belongs
/// to the tenant while the tenant's marked inbound connector exists (add
/// refuses a domain that is accepted already, so it never claims one it did
/// not create).
pub fn owned_objects(set: &ObjectSet, domain: &str) -> ObjectSet {
    let marked = mark(domain);
    let inbound: Vec<_> = set
        .inbound_connectors
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case(&inbound_name(domain)) && c.comment == marked)
        .cloned()
        .collect();
    if inbound.is_empty() {
        return ObjectSet::default();
    }
    let rule_names = [hold_rule_name(domain), return_rule_name(domain)];
    ObjectSet {
        detectors: Vec::new(),
        edm: Vec::new(),
        accepted_domains: set
            .accepted_domains
            .iter()
            .filter(|d| d.name.eq_ignore_ascii_case(domain) && d.kind == AcceptedDomainType::InternalRelay)
            .cloned()
            .collect(),
        inbound_connectors: inbound,
        outbound_connectors: set
            .outbound_connectors
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(&outbound_name(domain)) && c.comment == marked)
            .cloned()
            .collect(),
        rules: set
            .rules
            .iter()
            .filter(|r| rule_names.iter().any(|n| r.name.eq_ignore_ascii_case(n)) && r.comment == marked)
            .cloned()
            .collect(),
    }
}

/// `set` without the tenant's objects.
pub fn without_tenant(set: &ObjectSet, domain: &str) -> ObjectSet {
    let owned = owned_objects(set, domain);
    let mut rest = set.clone();
    rest.accepted_domains
        .retain(|o| !owned.accepted_domains.contains(o));
    rest.inbound_connectors
        .retain(|o| !owned.inbound_connectors.contains(o));
    rest.outbound_connectors
        .retain(|o| !owned.outbound_connectors.contains(o));
    rest.rules.retain(|o| !owned.rules.contains(o));
    rest
}

/// Whether adding `request` would take over an object that exists: add
/// never replaces what it did not create.
pub fn conflicts(set: &ObjectSet, new: &ObjectSet) -> Option<String> {
    let clash = |kind: &str, name: &str| {
        Some(format!(
            "{kind} {name:?} exists; tenant add never replaces objects it did not create"
        ))
    };
    for d in &new.accepted_domains {
        if set
            .accepted_domains
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&d.name))
        {
            return clash("accepted domain", &d.name);
        }
    }
    for c in &new.inbound_connectors {
        if set
            .inbound_connectors
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&c.name))
        {
            return clash("inbound connector", &c.name);
        }
    }
    for c in &new.outbound_connectors {
        if set
            .outbound_connectors
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&c.name))
        {
            return clash("outbound connector", &c.name);
        }
    }
    for r in &new.rules {
        if set.rules.iter().any(|o| o.name.eq_ignore_ascii_case(&r.name)) {
            return clash("rule", &r.name);
        }
    }
    // Each tenant's rules match its own addresses: shared addresses would
    // send one tenant's mail back to another.
    let ranges = |ips: &[String]| -> Vec<ipnet::IpNet> {
        ips.iter()
            .filter_map(|ip| {
                ip.parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| ip.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect()
    };
    for c in &new.inbound_connectors {
        for other in tenants(set) {
            for a in ranges(&c.sender_ip_addresses) {
                for b in ranges(&other.ips) {
                    if a.contains(&b.network()) || b.contains(&a.network()) {
                        return Some(format!("{a} overlaps {b} of tenant {}", other.domain));
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
