//! The policy snapshot: every stage's table, compiled from the node's
//! objects and published to sessions as one value (ARCHITECTURE.md,
//! "Policy snapshot").
//!
//! Each stage compiles the objects it owns and its errors name the object
//! and key: classify the inbound connectors, route the accepted domains and
//! outbound connectors, scan the detectors and EDM sets, rules the rules.
//! Here the tables are put together, and objects that are disabled are left
//! out, so no stage ever sees, or filters, a disabled one. A change that
//! fails here is refused whole (`admin::AdminBackend::change_objects`).

use crate::classify::InboundConnector;
use crate::config::objects::{AcceptedDomainType, ObjectError, ObjectSet};
use crate::message::{Address, Domain};
use crate::route::{OutboundConnector, RoutingTable};
use crate::rules::Rule;
use std::sync::Arc;

/// The compiled objects in force. Rebuilt on every change and swapped
/// atomically; a session keeps the one it started with.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Accepted domains and enabled outbound connectors.
    pub routing: RoutingTable,
    /// Enabled inbound connectors.
    pub inbound: Vec<InboundConnector>,
    /// Enabled mail flow rules in evaluation order (priority, then name).
    pub rules: Vec<Rule>,
    /// The DLP scanner with the custom detectors.
    pub scanner: Arc<sluice_dlp::Scanner>,
    /// A scanner node's `[partner] validation_address`: accepted from
    /// anyone, recorded, never relayed (set by the node, not by objects).
    pub validation_address: Option<Address>,
}

impl Policy {
    /// Checks every object, enabled or not, and keeps the enabled ones.
    pub fn compile(objects: &ObjectSet) -> Result<Policy, ObjectError> {
        let accepted = crate::route::compile_accepted_domains(&objects.accepted_domains)?;
        let inbound = crate::classify::compile(&objects.inbound_connectors)?;
        let outbound = crate::route::compile_outbound(&objects.outbound_connectors)?;
        let scanner = crate::scan::compile(&objects.detectors, &objects.edm)?;
        let rules = crate::rules::compile(&objects.rules, &objects.outbound_connectors, &scanner)?;

        let inbound = in_force(objects.inbound_connectors.iter().map(|c| c.enabled), inbound);
        let outbound = in_force(objects.outbound_connectors.iter().map(|c| c.enabled), outbound);
        let mut rules = in_force(objects.rules.iter().map(|r| r.enabled), rules);
        crate::rules::evaluation_order(&mut rules);
        Ok(Policy {
            routing: RoutingTable { accepted, outbound },
            inbound,
            rules,
            scanner: Arc::new(scanner),
            validation_address: None,
        })
    }

    /// The policy as a scanner node publishes it: with its `[partner]
    /// validation_address`, which relay control accepts from anyone.
    pub fn with_validation_address(mut self, address: Option<Address>) -> Policy {
        self.validation_address = address;
        self
    }

    /// The type of `domain` when it is accepted.
    pub fn accepted_domain(&self, domain: &Domain) -> Option<AcceptedDomainType> {
        self.routing.accepted_domain(domain)
    }

    /// An enabled outbound connector by name.
    pub fn outbound_connector(&self, name: &str) -> Option<&OutboundConnector> {
        self.routing.outbound_connector(name)
    }
}

/// The compiled objects whose `enabled` flag (same order) is set.
fn in_force<T>(enabled: impl Iterator<Item = bool>, compiled: Vec<T>) -> Vec<T> {
    enabled
        .zip(compiled)
        .filter_map(|(on, object)| on.then_some(object))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Scope, TlsPolicy};

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
        let policy = Policy::compile(&set).unwrap();
        assert_eq!(policy.scanner.names().collect::<Vec<_>>(), ["employee_id"]);
        let back: ObjectSet = toml::from_str(&toml::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);

        let mut unknown = set.clone();
        unknown.detectors.clear();
        let e = Policy::compile(&unknown).unwrap_err();
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
            let e = Policy::compile(&bad).unwrap_err();
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
        let policy = Policy::compile(&set).unwrap();
        assert_eq!(policy.routing.outbound[0].scope, Scope::RuleScoped);
        assert_eq!(
            policy.routing.outbound[0].tls,
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
        let e = Policy::compile(&set).unwrap_err();
        assert_eq!((e.name.as_str(), e.key), ("x", "smart_hosts"));
        let unknown =
            toml::from_str::<ObjectSet>("[[outbound_connector]]\nname = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(unknown.to_string().contains("bogus"));
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
        Policy::compile(&set).unwrap();
        let exported = toml::to_string(&set).unwrap();
        assert_eq!(toml::from_str::<ObjectSet>(&exported).unwrap(), set, "{exported}");
    }

    #[test]
    fn disabled_objects_are_checked_but_left_out_of_every_table() {
        let text = r#"
            [[inbound_connector]]
            name = "On"
            sender_ip_addresses = ["127.0.0.40/32"]
            [[inbound_connector]]
            name = "Off"
            sender_ip_addresses = ["127.0.0.41/32"]
            enabled = false
            [[outbound_connector]]
            name = "To partner"
            recipient_domains = ["fabrikam.test"]
            smart_hosts = ["127.0.0.50"]
            enabled = false
            [[rule]]
            name = "Through the partner"
            enabled = false
            [rule.actions]
            route_via_connector = "To partner"
            [[rule]]
            name = "Tag"
            [rule.actions]
            prepend_subject = "[ext] "
        "#;
        let set: ObjectSet = toml::from_str(text).unwrap();
        let policy = Policy::compile(&set).unwrap();
        let names = |v: Vec<&str>| v.join(",");
        assert_eq!(
            names(policy.inbound.iter().map(|c| c.name.as_str()).collect()),
            "On"
        );
        assert!(policy.routing.outbound.is_empty());
        assert!(policy.outbound_connector("To partner").is_none());
        assert_eq!(
            names(policy.rules.iter().map(|r| r.name.as_str()).collect()),
            "Tag"
        );

        // Disabled is not unchecked: a bad disabled object refuses the set.
        let mut bad = set.clone();
        bad.outbound_connectors[0].smart_hosts = vec!["h:99999".into()];
        let e = Policy::compile(&bad).unwrap_err();
        assert_eq!(
            (e.kind, e.name.as_str(), e.key),
            ("outbound_connector", "To partner", "smart_hosts")
        );
        let mut bad = set;
        bad.rules[0].conditions.sender_domain_is = vec!["not a domain".into()];
        let e = Policy::compile(&bad).unwrap_err();
        assert_eq!((e.kind, e.name.as_str()), ("rule", "Through the partner"), "{e}");
        assert!(e.to_string().starts_with("rule \"Through the partner\": "), "{e}");
        assert!(e.to_string().contains("sender_domain_is"), "{e}");
    }
}
