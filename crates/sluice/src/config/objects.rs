//! Objects of SPEC section 4 (accepted domains, inbound and outbound
//! connectors): their serde shape, shared by `apply -f`, `export`, the
//! store and the admin API, and their validation into a [`Policy`] that the
//! stages read. Every write goes through [`ObjectSet::validate`] first.

use super::rule_object::RuleObject;
use crate::classify::InboundConnector;
use crate::message::{Domain, DomainPattern};
use crate::route::{AddressSpace, HostPort, NextHop, OutboundConnector, Scope, TlsPolicy};
use crate::rules::Rule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

/// `type` of an accepted domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedDomainType {
    /// Mailboxes live here (Maildir under data_dir).
    #[default]
    Authoritative,
    /// Some mailboxes live elsewhere: relay by MX.
    #[serde(alias = "internal-relay")]
    InternalRelay,
}

/// `type` of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorType {
    /// A partner organisation or service.
    #[default]
    Partner,
    /// The organisation's own server (grants relay for accepted domains).
    #[serde(alias = "on-premises", alias = "onpremises")]
    OnPremises,
}

/// Outbound `tls` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsLevel {
    /// STARTTLS when offered.
    #[default]
    Opportunistic,
    /// TLS required, any certificate.
    EncryptionOnly,
    /// TLS required, trusted chain.
    CertificateValidation,
    /// TLS required, trusted chain naming the domain.
    DomainValidation,
}

/// `[[accepted_domain]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptedDomain {
    /// The domain.
    pub name: String,
    /// Authoritative or internal relay.
    #[serde(default, rename = "type")]
    pub kind: AcceptedDomainType,
}

/// `[[detector]]`: a custom DLP detector (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectorObject {
    /// snake_case name, used in `contains_sensitive_info` like a built-in's.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// A regular expression of the linear-time `regex` crate.
    pub pattern: String,
    /// Words of which one must lie within `proximity` characters of a match
    /// (case-insensitive, whole words); empty: none needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Characters either side of a match in which a keyword counts.
    #[serde(default = "default_proximity")]
    pub proximity: u32,
    /// Checksum a match must pass: `luhn`, `mod97`, `aba`, `verhoeff`, `us_ssn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<String>,
    /// Confidence of a match: `low | medium | high`.
    #[serde(default = "default_detector_confidence")]
    pub confidence: String,
}

fn default_proximity() -> u32 {
    300
}

fn default_detector_confidence() -> String {
    "high".into()
}

impl DetectorObject {
    /// Compiles the detector for the scanner.
    pub fn compile(&self) -> Result<sluice_dlp::CustomDetector, (&'static str, String)> {
        let validator = match self.validator.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(sluice_dlp::Validator::parse(v).ok_or_else(|| {
                (
                    "validator",
                    format!(
                        "unknown validator {v:?} (expected one of {})",
                        sluice_dlp::Validator::NAMES.join(", ")
                    ),
                )
            })?),
        };
        let confidence = self
            .confidence
            .parse::<sluice_dlp::Confidence>()
            .map_err(|e| ("confidence", e.to_string()))?;
        sluice_dlp::CustomDetector::new(
            &self.name,
            &self.pattern,
            &self.keywords,
            self.proximity as usize,
            validator,
            confidence,
        )
        .map_err(|e| match e {
            sluice_dlp::CustomError::Name(m) => ("name", m),
            sluice_dlp::CustomError::Pattern(m) => ("pattern", m),
            sluice_dlp::CustomError::Keywords(m) => ("keywords", m),
        })
    }
}

/// `[[edm]]`: an exact-data-match set, as `sluice edm load` stores it:
/// salted hashes of the listed values, never the values (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdmObject {
    /// snake_case name: the detector name of its findings.
    pub name: String,
    /// Free text (the source file, by default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Distinct values listed.
    pub values: u64,
    /// When `sluice edm load` hashed the values (RFC 3339, UTC); empty in
    /// sets stored before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub loaded: String,
    /// The HMAC-SHA256 key, base64.
    pub salt: String,
    /// Shortest normalised value, in bytes.
    pub min_len: u32,
    /// Longest normalised value, in bytes.
    pub max_len: u32,
    /// Character-kind sets among the values (see `sluice_dlp::EdmDigests`).
    pub kinds: u16,
    /// The digests (16 bytes each, concatenated), base64.
    pub digests: String,
}

impl EdmObject {
    /// The stored form of hashed values.
    pub fn from_digests(name: &str, comment: String, d: &sluice_dlp::EdmDigests) -> Self {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        EdmObject {
            name: name.to_string(),
            comment,
            values: d.digests.len() as u64,
            loaded: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            salt: engine.encode(&d.salt),
            min_len: d.min_len as u32,
            max_len: d.max_len as u32,
            kinds: d.kinds,
            digests: engine.encode(d.digests.concat()),
        }
    }

    /// Loads the set for the scanner.
    pub fn compile(&self) -> Result<sluice_dlp::EdmSet, (&'static str, String)> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        let salt = engine
            .decode(&self.salt)
            .map_err(|e| ("salt", format!("not base64: {e}")))?;
        let raw = engine
            .decode(&self.digests)
            .map_err(|e| ("digests", format!("not base64: {e}")))?;
        if raw.len() % sluice_dlp::DIGEST_LEN != 0
            || (raw.len() / sluice_dlp::DIGEST_LEN) as u64 != self.values
        {
            return Err((
                "digests",
                format!(
                    "must be {} digests of {} bytes",
                    self.values,
                    sluice_dlp::DIGEST_LEN
                ),
            ));
        }
        let digests = raw
            .chunks_exact(sluice_dlp::DIGEST_LEN)
            .map(|c| {
                let mut d = [0u8; sluice_dlp::DIGEST_LEN];
                d.copy_from_slice(c);
                d
            })
            .collect();
        let stored = sluice_dlp::EdmDigests {
            salt,
            digests,
            min_len: self.min_len as usize,
            max_len: self.max_len as usize,
            kinds: self.kinds,
        };
        sluice_dlp::EdmSet::new(&self.name, &stored).map_err(|e| ("name", e.to_string()))
    }
}

/// `[[inbound_connector]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundConnectorObject {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Partner or on-premises.
    #[serde(default, rename = "type")]
    pub kind: ConnectorType,
    /// CIDR ranges.
    #[serde(default)]
    pub sender_ip_addresses: Vec<String>,
    /// Certificate subject/SAN.
    #[serde(default)]
    pub tls_sender_certificate_name: String,
    /// Sender domains covered.
    #[serde(default = "any_domain")]
    pub sender_domains: Vec<String>,
    /// Refuse mail without TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Reject covered sender domains from other IPs.
    #[serde(default)]
    pub restrict_domains_to_ip_addresses: bool,
    /// Reject covered sender domains without the certificate.
    #[serde(default)]
    pub restrict_domains_to_certificate: bool,
    /// Trust internal headers.
    #[serde(default)]
    pub retain_internal_headers: bool,
    /// Enhanced Filtering for Connectors (Exchange's "skip listing"):
    /// SPF and DMARC are judged on the first address before this
    /// connector's hop, found in the Received headers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enhanced_filtering: bool,
    /// On or off.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn any_domain() -> Vec<String> {
    vec!["*".to_string()]
}

/// `[[outbound_connector]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundConnectorObject {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Partner or on-premises.
    #[serde(default, rename = "type")]
    pub kind: ConnectorType,
    /// Patterns served.
    #[serde(default)]
    pub recipient_domains: Vec<String>,
    /// Smart hosts in order.
    #[serde(default)]
    pub smart_hosts: Vec<String>,
    /// MX delivery.
    #[serde(default)]
    pub use_mx_record: bool,
    /// TLS level.
    #[serde(default)]
    pub tls: TlsLevel,
    /// Name the certificate must carry (domain_validation).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_domain: String,
    /// Only used when a rule routes to it.
    #[serde(default)]
    pub transport_rule_scoped: bool,
    /// Keep internal headers when sending.
    #[serde(default)]
    pub retain_internal_headers: bool,
    /// EHLO name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helo_name: String,
    /// Recipients for connector validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_recipients: Vec<String>,
    /// Port for smart hosts given without one (New-SendConnector -Port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Larger messages are refused for this connector (`25MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<String>,
    /// Concurrent connections to each of its hosts (default:
    /// `delivery.max_per_destination`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Messages sent over one connection before it is closed (default: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_connection: Option<usize>,
    /// The last `connector validate` result, recorded by the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation: Option<LastValidation>,
    /// On or off.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

/// When a connector was last validated and how it went (Exchange's
/// IsValidated / LastValidationTimestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LastValidation {
    /// RFC 3339 time.
    pub at: String,
    /// Every step passed.
    pub passed: bool,
    /// The first failing step, `host: step: detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
}

/// A set of objects: a TOML file for `apply`, `export`'s output, the store's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectSet {
    /// `[[accepted_domain]]`.
    #[serde(default, rename = "accepted_domain", skip_serializing_if = "Vec::is_empty")]
    pub accepted_domains: Vec<AcceptedDomain>,
    /// `[[inbound_connector]]`.
    #[serde(default, rename = "inbound_connector", skip_serializing_if = "Vec::is_empty")]
    pub inbound_connectors: Vec<InboundConnectorObject>,
    /// `[[outbound_connector]]`.
    #[serde(default, rename = "outbound_connector", skip_serializing_if = "Vec::is_empty")]
    pub outbound_connectors: Vec<OutboundConnectorObject>,
    /// `[[rule]]`.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleObject>,
    /// `[[detector]]`.
    #[serde(default, rename = "detector", skip_serializing_if = "Vec::is_empty")]
    pub detectors: Vec<DetectorObject>,
    /// `[[edm]]`.
    #[serde(default, rename = "edm", skip_serializing_if = "Vec::is_empty")]
    pub edm: Vec<EdmObject>,
}

/// A kind of object (API path segment, CLI noun, store key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// accepted_domain.
    AcceptedDomain,
    /// inbound_connector.
    InboundConnector,
    /// outbound_connector.
    OutboundConnector,
    /// rule.
    Rule,
    /// detector (custom DLP detector).
    Detector,
    /// edm (exact-data-match set).
    Edm,
}

impl ObjectKind {
    /// The TOML table name.
    pub fn table(self) -> &'static str {
        match self {
            ObjectKind::AcceptedDomain => "accepted_domain",
            ObjectKind::InboundConnector => "inbound_connector",
            ObjectKind::OutboundConnector => "outbound_connector",
            ObjectKind::Rule => "rule",
            ObjectKind::Detector => "detector",
            ObjectKind::Edm => "edm",
        }
    }
}

/// Why an object set cannot be applied. Names the object and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: {key}: {message}")]
pub struct ObjectError {
    /// Table name.
    pub kind: &'static str,
    /// Object name.
    pub name: String,
    /// Offending key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The validated objects the stages read. Rebuilt on every change and
/// swapped atomically; a session keeps the one it started with.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Accepted domains.
    pub accepted: BTreeMap<Domain, AcceptedDomainType>,
    /// Inbound connectors.
    pub inbound: Vec<InboundConnector>,
    /// Outbound connectors.
    pub outbound: Vec<OutboundConnector>,
    /// Enabled mail flow rules in evaluation order (priority, then name).
    pub rules: Vec<Rule>,
    /// The DLP scanner with the custom detectors.
    pub scanner: std::sync::Arc<sluice_dlp::Scanner>,
    /// A scanner node's `[partner] validation_address`: accepted from
    /// anyone, recorded, never relayed (set by the node, not by objects).
    pub validation_address: Option<crate::message::Address>,
}

impl Policy {
    /// The type of `domain` when it is accepted.
    pub fn accepted_domain(&self, domain: &Domain) -> Option<AcceptedDomainType> {
        self.accepted.get(domain).copied()
    }

    /// An outbound connector by name.
    pub fn outbound_connector(&self, name: &str) -> Option<&OutboundConnector> {
        self.outbound.iter().find(|c| c.name == name)
    }

    /// An outbound connector by name, ignoring case (as the admin API names objects).
    pub fn outbound_connector_named(&self, name: &str) -> Option<&OutboundConnector> {
        self.outbound.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

impl ObjectSet {
    /// Upserts every object of `other` (whole-object replacement by kind and
    /// name); with `prune`, objects absent from `other` are dropped.
    /// The configuration alone, for `export`: runtime state the node
    /// records on objects (a connector's `last_validation`) is left out, so
    /// an exported file describes what an administrator decides.
    pub fn configuration(mut self) -> ObjectSet {
        for connector in &mut self.outbound_connectors {
            connector.last_validation = None;
        }
        self
    }

    /// Upserts `other` (a file, an API body) into these stored objects.
    /// Runtime state is the node's, never the file's: a connector's
    /// `last_validation` stays as recorded, whatever the file says.
    pub fn merge(&mut self, mut other: ObjectSet, prune: bool) {
        for connector in &mut other.outbound_connectors {
            connector.last_validation = self
                .outbound_connectors
                .iter()
                .find(|stored| stored.name == connector.name)
                .and_then(|stored| stored.last_validation.clone());
        }
        fn upsert<T: Clone>(into: &mut Vec<T>, from: Vec<T>, name: fn(&T) -> &str, prune: bool) {
            if prune {
                into.retain(|o| from.iter().any(|n| name(n) == name(o)));
            }
            for object in from {
                match into.iter_mut().find(|o| name(o) == name(&object)) {
                    Some(slot) => *slot = object,
                    None => into.push(object),
                }
            }
        }
        upsert(
            &mut self.accepted_domains,
            other.accepted_domains,
            |o| &o.name,
            prune,
        );
        upsert(
            &mut self.inbound_connectors,
            other.inbound_connectors,
            |o| &o.name,
            prune,
        );
        upsert(
            &mut self.outbound_connectors,
            other.outbound_connectors,
            |o| &o.name,
            prune,
        );
        upsert(&mut self.rules, other.rules, |o| &o.name, prune);
        upsert(&mut self.detectors, other.detectors, |o| &o.name, prune);
        upsert(&mut self.edm, other.edm, |o| &o.name, prune);
    }

    /// Removes an object; `false` when there was none.
    pub fn remove(&mut self, kind: ObjectKind, name: &str) -> bool {
        fn drop_named<T>(v: &mut Vec<T>, name: &str, get: fn(&T) -> &str) -> bool {
            let before = v.len();
            v.retain(|o| !get(o).eq_ignore_ascii_case(name));
            v.len() != before
        }
        match kind {
            ObjectKind::AcceptedDomain => drop_named(&mut self.accepted_domains, name, |o| &o.name),
            ObjectKind::InboundConnector => drop_named(&mut self.inbound_connectors, name, |o| &o.name),
            ObjectKind::OutboundConnector => drop_named(&mut self.outbound_connectors, name, |o| &o.name),
            ObjectKind::Rule => drop_named(&mut self.rules, name, |o| &o.name),
            ObjectKind::Detector => drop_named(&mut self.detectors, name, |o| &o.name),
            ObjectKind::Edm => drop_named(&mut self.edm, name, |o| &o.name),
        }
    }

    /// Checks every object and resolves it for the stages.
    pub fn validate(&self) -> Result<Policy, ObjectError> {
        let mut policy = Policy::default();
        for d in &self.accepted_domains {
            let err = |message: String| ObjectError {
                kind: "accepted_domain",
                name: d.name.clone(),
                key: "name",
                message,
            };
            let domain = Domain::parse(&d.name).map_err(|e| err(e.to_string()))?;
            if policy.accepted.insert(domain, d.kind).is_some() {
                return Err(err("defined twice".into()));
            }
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.inbound_connectors {
            let err = |key: &'static str, message: String| ObjectError {
                kind: "inbound_connector",
                name: c.name.clone(),
                key,
                message,
            };
            if c.name.trim().is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if !names.insert(c.name.to_ascii_lowercase()) {
                return Err(err("name", "defined twice".into()));
            }
            let sender_ips = c
                .sender_ip_addresses
                .iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
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
                n => Some(
                    DomainPattern::parse(n).map_err(|e| err("tls_sender_certificate_name", e.to_string()))?,
                ),
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
            policy.inbound.push(InboundConnector {
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
                enabled: c.enabled,
            });
        }
        names.clear();
        for c in &self.outbound_connectors {
            let err = |key: &'static str, message: String| ObjectError {
                kind: "outbound_connector",
                name: c.name.clone(),
                key,
                message,
            };
            if c.name.trim().is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if !names.insert(c.name.to_ascii_lowercase()) {
                return Err(err("name", "defined twice".into()));
            }
            let patterns = c
                .recipient_domains
                .iter()
                .map(|s| AddressSpace::parse(s).map_err(|m| err("recipient_domains", m)))
                .collect::<Result<Vec<_>, _>>()?;
            let hosts = c
                .smart_hosts
                .iter()
                .map(|s| {
                    HostPort::parse_with_port(s, c.port.unwrap_or(25)).map_err(|m| err("smart_hosts", m))
                })
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
            policy.outbound.push(OutboundConnector {
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
                enabled: c.enabled,
            });
        }
        names.clear();
        let mut custom = Vec::new();
        for d in &self.detectors {
            let err = |key: &'static str, message: String| ObjectError {
                kind: "detector",
                name: d.name.clone(),
                key,
                message,
            };
            if !names.insert(d.name.clone()) {
                return Err(err("name", "defined twice".into()));
            }
            custom.push(d.compile().map_err(|(key, m)| err(key, m))?);
        }
        let mut sets = Vec::new();
        for e in &self.edm {
            let err = |key: &'static str, message: String| ObjectError {
                kind: "edm",
                name: e.name.clone(),
                key,
                message,
            };
            // One namespace with the custom detectors: a finding names one.
            if !names.insert(e.name.clone()) {
                return Err(err("name", "defined twice (as a detector or an edm set)".into()));
            }
            sets.push(e.compile().map_err(|(key, m)| err(key, m))?);
        }
        policy.scanner = std::sync::Arc::new(sluice_dlp::Scanner::new(custom, sets));
        names.clear();
        let mut rules = Vec::new();
        for r in &self.rules {
            // Detector names: a built-in's or a `[[detector]]`'s.
            let named = [&r.conditions, &r.exceptions]
                .into_iter()
                .filter_map(|p| p.contains_sensitive_info.as_ref())
                .flat_map(|info| &info.detectors);
            for d in named {
                if d.parse::<sluice_dlp::Detector>().is_err() && !policy.scanner.names().any(|n| n == d) {
                    return Err(ObjectError {
                        kind: "rule",
                        name: r.name.clone(),
                        key: "contains_sensitive_info",
                        message: format!(
                            "detectors: unknown detector `{d}` (neither built in nor a [[detector]])"
                        ),
                    });
                }
            }
            if !names.insert(r.name.to_ascii_lowercase()) {
                return Err(ObjectError {
                    kind: "rule",
                    name: r.name.clone(),
                    key: "name",
                    message: "defined twice".into(),
                });
            }
            let rule = Rule::from_object(r, &policy)?;
            if r.enabled {
                rules.push(rule);
            }
        }
        rules.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        policy.rules = rules;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_detectors_validate_and_rules_name_them() {
        let set: ObjectSet = toml::from_str(
            r#"
            [[detector]]
            name = "employee_id"
            pattern = '\bEMP-\d{6}\b'
            keywords = ["employee"]
            proximity = 50
            validator = "luhn"
            confidence = "medium"

            [[rule]]
            name = "staff"
            [rule.conditions]
            contains_sensitive_info = { detectors = ["employee_id", "credit_card"] }
            [rule.actions]
            quarantine = true
            "#,
        )
        .unwrap();
        let policy = set.validate().unwrap();
        assert_eq!(policy.scanner.names().collect::<Vec<_>>(), ["employee_id"]);
        let back: ObjectSet = toml::from_str(&toml::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);

        let mut unknown = set.clone();
        unknown.detectors.clear();
        let e = unknown.validate().unwrap_err();
        assert_eq!((e.kind, e.key), ("rule", "contains_sensitive_info"), "{e}");
        for (field, value, key) in [
            ("pattern", "EMP-(", "pattern"),
            ("name", "Employee", "name"),
            ("name", "us_ssn", "name"),
            ("validator", "crc32", "validator"),
            ("confidence", "sure", "confidence"),
        ] {
            let mut bad = set.clone();
            bad.rules.clear();
            match field {
                "pattern" => bad.detectors[0].pattern = value.into(),
                "name" => bad.detectors[0].name = value.into(),
                "validator" => bad.detectors[0].validator = Some(value.into()),
                _ => bad.detectors[0].confidence = value.into(),
            }
            let e = bad.validate().unwrap_err();
            assert_eq!((e.kind, e.key), ("detector", key), "{e}");
        }
    }

    #[test]
    fn spec_example_validates_and_round_trips() {
        let text = r#"
            [[accepted_domain]]
            name = "contoso.test"
            type = "authoritative"

            [[inbound_connector]]
            name = "From scanner"
            type = "on_premises"
            sender_ip_addresses = ["127.0.0.30/32", "::1"]
            retain_internal_headers = true

            [[outbound_connector]]
            name = "To scanner"
            smart_hosts = ["127.0.0.30:2525"]
            transport_rule_scoped = true
            retain_internal_headers = true
            tls = "domain_validation"
            tls_domain = "scanner.test"
        "#;
        let set: ObjectSet = toml::from_str(text).unwrap();
        let policy = set.validate().unwrap();
        assert_eq!(policy.outbound[0].scope, Scope::RuleScoped);
        assert_eq!(
            policy.outbound[0].tls,
            TlsPolicy::DomainValidation {
                domain: Some("scanner.test".into())
            }
        );
        let exported = toml::to_string(&set).unwrap();
        assert_eq!(toml::from_str::<ObjectSet>(&exported).unwrap(), set);
    }

    #[test]
    fn bad_objects_name_the_key() {
        let set: ObjectSet = toml::from_str(
            "[[outbound_connector]]\nname = \"x\"\nrecipient_domains = [\"*\"]\nsmart_hosts = [\"h:99999\"]\n",
        )
        .unwrap();
        let e = set.validate().unwrap_err();
        assert_eq!((e.name.as_str(), e.key), ("x", "smart_hosts"));
        let unknown =
            toml::from_str::<ObjectSet>("[[outbound_connector]]\nname = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(unknown.to_string().contains("bogus"));
    }

    #[test]
    fn merge_upserts_and_prunes() {
        let mut a: ObjectSet = toml::from_str(
            "[[accepted_domain]]\nname = \"a.test\"\n[[accepted_domain]]\nname = \"b.test\"\n",
        )
        .unwrap();
        let b: ObjectSet =
            toml::from_str("[[accepted_domain]]\nname = \"b.test\"\ntype = \"internal_relay\"\n").unwrap();
        a.merge(b.clone(), false);
        assert_eq!(a.accepted_domains.len(), 2);
        assert_eq!(a.accepted_domains[1].kind, AcceptedDomainType::InternalRelay);
        a.merge(b, true);
        assert_eq!(a.accepted_domains.len(), 1);
    }

    #[test]
    fn stored_objects_round_trip_through_toml() {
        let text = r#"
            [[accepted_domain]]
            name = "contoso.test"
            [[outbound_connector]]
            name = "To scanner"
            smart_hosts = ["127.0.0.30:2525"]
            transport_rule_scoped = true
            max_message_size = "25MB"
            port = 2525
            [outbound_connector.last_validation]
            at = "2026-11-24T10:00:00.000Z"
            passed = false
            failed_step = "127.0.0.30:2525: certificate: 454 4.7.5 ..."
            [[rule]]
            name = "External mail through the scanner"
            priority = 3
            mode = "audit"
            enabled = false
            [rule.conditions]
            sent_to_scope = "not_in_organization"
            contains_sensitive_info = { detectors = ["credit_card"], min_confidence = "high", min_count = 2 }
            [rule.exceptions]
            header_contains = { header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }
            [rule.actions]
            route_via_connector = "To scanner"
            reject = { code = "5.7.1", text = "no" }
            stamp_scan = true
        "#;
        let set: ObjectSet = toml::from_str(text).unwrap();
        set.validate().unwrap();
        let exported = toml::to_string(&set).unwrap();
        assert_eq!(toml::from_str::<ObjectSet>(&exported).unwrap(), set, "{exported}");
    }

    #[test]
    fn export_is_configuration_only_and_apply_keeps_runtime_state() {
        let connector = |validated: bool| {
            format!(
                "[[outbound_connector]]\nname = \"To scanner\"\nsmart_hosts = [\"127.0.0.30:2525\"]\n{}",
                if validated {
                    "[outbound_connector.last_validation]\nat = \"2026-11-24T10:00:00.000Z\"\npassed = true\n"
                } else {
                    ""
                }
            )
        };
        let mut stored: ObjectSet = toml::from_str(&connector(true)).unwrap();
        let recorded = stored.outbound_connectors[0].last_validation.clone();
        assert!(recorded.is_some());

        let exported = toml::to_string(&stored.clone().configuration()).unwrap();
        assert!(!exported.contains("last_validation"), "{exported}");
        assert!(exported.contains("127.0.0.30:2525"), "{exported}");

        // Applying the exported file (or any file) keeps the node's record.
        stored.merge(toml::from_str(&exported).unwrap(), false);
        assert_eq!(stored.outbound_connectors[0].last_validation, recorded);
        stored.merge(toml::from_str(&connector(false)).unwrap(), true);
        assert_eq!(stored.outbound_connectors[0].last_validation, recorded);
        // A file cannot write runtime state either.
        let mut fresh = ObjectSet::default();
        fresh.merge(toml::from_str(&connector(true)).unwrap(), false);
        assert_eq!(fresh.outbound_connectors[0].last_validation, None);
    }
}
