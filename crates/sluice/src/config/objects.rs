//! Objects of SPEC section 4 (accepted domains, inbound and outbound
//! connectors, rules, detectors, EDM sets): their serde shape, shared by
//! `apply -f`, `export`, the store and the admin API, and the edits of a set
//! (merge, remove). Data only: each stage compiles the objects it owns into
//! its own table (`classify::compile`, `route::compile_*`, `rules::compile`,
//! `scan::compile`), and `crate::policy` assembles those tables; an
//! [`ObjectError`] names the object and the key.

use super::rule_object::RuleObject;
use serde::{Deserialize, Serialize};

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

impl ObjectError {
    /// The errors of one object, `err(key, message)`: what each stage's
    /// compile step reports, so every error names the object the same way.
    pub fn of<'a>(kind: &'static str, name: &'a str) -> impl Fn(&'static str, String) -> ObjectError + 'a {
        move |key, message| ObjectError {
            kind,
            name: name.to_string(),
            key,
            message,
        }
    }
}

/// Compiles `objects` in order with `compile`, refusing a name given twice
/// (ignoring case) as `kind`'s; an empty name is left to `compile`, which
/// reports it.
pub fn compile_each<O, T>(
    kind: &'static str,
    objects: &[O],
    name: impl Fn(&O) -> &str,
    compile: impl Fn(&O) -> Result<T, ObjectError>,
) -> Result<Vec<T>, ObjectError> {
    let mut names = std::collections::HashSet::new();
    objects
        .iter()
        .map(|object| {
            let name = name(object);
            if !name.trim().is_empty() && !names.insert(name.to_ascii_lowercase()) {
                return Err(ObjectError::of(kind, name)("name", "defined twice".into()));
            }
            compile(object)
        })
        .collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
