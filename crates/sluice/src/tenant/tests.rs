use super::kit::{self, KitFormat};
use super::*;
use crate::config::objects::TlsLevel;
use crate::config::rule_object::OrganizationScope;

fn partner() -> PartnerSettings {
    PartnerSection {
        smtp_host: Some("scan.partner.test".into()),
        egress_ips: Some(vec!["192.0.2.30/32".into(), "2001:db8::30".into()]),
        validation_address: Some("check@scan.partner.test".into()),
    }
    .validate()
    .unwrap()
}

fn request() -> TenantRequest {
    TenantRequest {
        domain: "Contoso.com".into(),
        ips: vec!["40.92.0.0/15".into()],
        return_host: "contoso-com.mail.protection.outlook.com".into(),
    }
}

#[test]
fn partner_settings_name_the_bad_key() {
    let bad = PartnerSection {
        smtp_host: Some("scan.partner.test".into()),
        egress_ips: Some(vec!["300.1.1.1".into()]),
        validation_address: Some("check@scan.partner.test".into()),
    };
    assert_eq!(bad.validate().unwrap_err().0, "partner.egress_ips");
    let bad = PartnerSection {
        smtp_host: Some("scan partner".into()),
        ..PartnerSection::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "partner.smtp_host");
}

#[test]
fn ps1_kit_is_seed_000_and_imports_with_the_powershell_importer() {
    let script = kit::ps1(&partner(), "contoso.com");
    let imported = crate::config::powershell::import(&script).unwrap();
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let set = imported.objects;
    crate::policy::Policy::compile(&set).unwrap();
    let out = &set.outbound_connectors[0];
    assert_eq!(out.name, "To scanner");
    assert_eq!(out.kind, ConnectorType::Partner);
    assert_eq!(out.smart_hosts, vec!["scan.partner.test"]);
    assert!(out.transport_rule_scoped && !out.use_mx_record);
    assert_eq!(out.tls, TlsLevel::EncryptionOnly);
    assert_eq!(out.validation_recipients, vec!["check@scan.partner.test"]);
    let inbound = &set.inbound_connectors[0];
    assert_eq!(inbound.kind, ConnectorType::OnPremises);
    assert_eq!(inbound.sender_ip_addresses, vec!["192.0.2.30/32", "2001:db8::30"]);
    assert!(inbound.retain_internal_headers && inbound.require_tls);
    let rule = &set.rules[0];
    assert_eq!(
        rule.conditions.sent_to_scope,
        Some(OrganizationScope::NotInOrganization)
    );
    let stamp = rule.exceptions.header_contains.as_ref().unwrap();
    assert_eq!(
        (stamp.header.as_str(), stamp.words.clone()),
        ("X-Sluice-Org-Scan", vec!["verdict=pass".to_string()])
    );
    assert_eq!(rule.actions.route_via_connector.as_deref(), Some("To scanner"));
    // Exchange Online's own parameter names, one cmdlet each.
    for cmdlet in [
        "New-OutboundConnector",
        "New-InboundConnector",
        "New-TransportRule",
    ] {
        assert_eq!(script.matches(cmdlet).count(), 1, "{script}");
    }
    assert!(!script.contains("New-SendConnector"), "{script}");
}

#[test]
fn a_scanner_on_another_port_is_named_with_it_and_port_25_is_left_out() {
    let mut p = partner();
    p.smtp_host = "127.0.0.30:2525".into();
    assert_eq!(
        kit::objects(&p, "contoso.com").outbound_connectors[0].smart_hosts,
        vec!["127.0.0.30:2525"]
    );
    p.smtp_host = "scan.partner.test:25".into();
    assert!(kit::ps1(&p, "contoso.com").contains("-SmartHosts 'scan.partner.test' "));
}

#[test]
fn toml_kit_is_the_same_objects_and_html_has_steps_values_and_a_check_list() {
    let p = partner();
    let toml_kit = kit::render(&p, "contoso.com", KitFormat::Toml);
    let parsed: ObjectSet = toml::from_str(&toml_kit).unwrap();
    assert_eq!(parsed, kit::objects(&p, "contoso.com"));
    let html = kit::render(&p, "contoso.com", KitFormat::Html);
    for needle in [
        "Check list",
        "scan.partner.test",
        "192.0.2.30/32",
        "check@scan.partner.test",
        "verdict=pass",
        "<ol>",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    // A value with markup is escaped, not interpreted.
    assert!(!kit::render(&p, "a<b>.com", KitFormat::Html).contains("a<b>"));
}

#[test]
fn kits_carry_no_secrets() {
    let p = partner();
    for format in [KitFormat::Ps1, KitFormat::Toml, KitFormat::Html] {
        let text = kit::render(&p, "contoso.com", format).to_ascii_lowercase();
        for secret in ["token", "password", "private key", "bearer", "begin "] {
            let said = text.matches(secret).count();
            // The only mention is the statement that there is none.
            let denied = text.matches(&format!("no password, key or {secret}")).count()
                + text.matches(&format!("no {secret}")).count();
            assert!(
                said <= denied.max(usize::from(secret == "password")),
                "{format:?} mentions {secret}"
            );
        }
    }
}

#[test]
fn add_makes_five_marked_objects_that_validate_and_remove_takes_exactly_them() {
    let existing: ObjectSet = toml::from_str(
        r#"
[[accepted_domain]]
name = "scan.partner.test"
[[inbound_connector]]
name = "From tenant hand-made.test"
sender_ip_addresses = ["10.9.9.9/32"]
[[rule]]
name = "Tenant contoso.com: stamp and return"
comment = "made by hand"
priority = 5
[rule.actions]
stamp_scan = true
"#,
    )
    .unwrap();
    let new = scanner_objects(&request()).unwrap();
    assert_eq!(new.accepted_domains[0].name, "contoso.com");
    assert_eq!(new.accepted_domains[0].kind, AcceptedDomainType::InternalRelay);
    assert!(new.outbound_connectors[0].retain_internal_headers);
    assert_eq!(
        new.rules[1].actions.route_via_connector.as_deref(),
        Some("Back to tenant contoso.com")
    );
    // A hand-made rule of the same name blocks add instead of being replaced.
    assert!(conflicts(&existing, &new).unwrap().contains("stamp and return"));
    let mut existing = existing;
    existing.rules.clear();
    assert_eq!(conflicts(&existing, &new), None);
    let mut merged = existing.clone();
    merged.merge(new.clone(), false);
    crate::policy::Policy::compile(&merged).unwrap();
    let mut fabrikam = request();
    fabrikam.domain = "fabrikam.com".into();
    fabrikam.ips = vec!["40.93.1.0/24".into()];
    let overlap = conflicts(&merged, &scanner_objects(&fabrikam).unwrap()).unwrap();
    assert!(
        overlap.contains("overlaps 40.92.0.0/15 of tenant contoso.com"),
        "{overlap}"
    );
    fabrikam.ips = vec!["40.94.0.0/24".into()];
    assert_eq!(conflicts(&merged, &scanner_objects(&fabrikam).unwrap()), None);
    let listed = tenants(&merged);
    assert_eq!(listed.len(), 1, "an unmarked connector is no tenant: {listed:?}");
    assert_eq!(listed[0].objects.len(), 5);
    assert_eq!(owned_objects(&merged, "contoso.com"), new);
    assert_eq!(without_tenant(&merged, "contoso.com"), existing);
    crate::policy::Policy::compile(&without_tenant(&merged, "contoso.com")).unwrap();
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let mut r = request();
    r.domain = "localhost".into();
    assert!(r.check().unwrap_err().0.contains("not a domain"));
    let mut r = request();
    r.ips.clear();
    assert!(r.check().unwrap_err().0.contains("--ip"));
    let mut r = request();
    r.ips = vec!["40.92.0.0/99".into()];
    assert!(r.check().is_err());
    let mut r = request();
    r.return_host = "host:0".into();
    assert!(r.check().unwrap_err().0.contains("return host"));
}

#[test]
fn health_counts_arrivals_quarantine_and_refusals_of_the_tenant_only() {
    let stored = tenant(
        &{
            let mut s = ObjectSet::default();
            s.merge(scanner_objects(&request()).unwrap(), false);
            s
        },
        "contoso.com",
    )
    .unwrap();
    let event = |at: &str, id: &str, kind: &str, from: &str, connector: Option<&str>| {
        TraceEventViewFixture {
            at: at.into(),
            id: id.into(),
            kind: kind.into(),
            from: from.into(),
            connector: connector.map(String::from),
        }
        .into()
    };
    let events = vec![
        event(
            "2026-01-01T00:00:00.000Z",
            "a",
            "received",
            "x@contoso.com",
            Some("From tenant contoso.com"),
        ),
        event(
            "2026-01-02T10:00:00.000Z",
            "b",
            "received",
            "x@contoso.com",
            Some("From tenant contoso.com"),
        ),
        event(
            "2026-01-02T10:00:01.000Z",
            "b",
            "quarantined",
            "x@contoso.com",
            None,
        ),
        event(
            "2026-01-02T11:00:00.000Z",
            "c",
            "received",
            "x@other.test",
            Some("From tenant other.test"),
        ),
        event(
            "2026-01-02T11:00:01.000Z",
            "c",
            "quarantined",
            "x@other.test",
            None,
        ),
        event(
            "2026-01-02T12:00:00.000Z",
            "d",
            "rejected",
            "x@eu.contoso.com",
            None,
        ),
        event("2026-01-02T12:00:00.000Z", "e", "rejected", "x@other.test", None),
    ];
    let validations = vec![
        ValidationRecordFixture::for_tenant(Some("other.test")),
        ValidationRecordFixture::for_tenant(None),
    ];
    let view = health::view(&stored, &events, &validations, "2026-01-02T00:00:00.000Z");
    assert_eq!(view.last_arrival.as_deref(), Some("2026-01-02T10:00:00.000Z"));
    assert_eq!(
        (view.arrived_last_day, view.quarantined, view.refused_unlisted),
        (1, 1, 1)
    );
    assert!(!view.validated);
    let validations = vec![ValidationRecordFixture::for_tenant(Some("contoso.com"))];
    assert!(health::view(&stored, &events, &validations, "2026-01-02T00:00:00.000Z").validated);
}

struct TraceEventViewFixture {
    at: String,
    id: String,
    kind: String,
    from: String,
    connector: Option<String>,
}

impl From<TraceEventViewFixture> for crate::admin::TraceEventView {
    fn from(f: TraceEventViewFixture) -> Self {
        crate::admin::TraceEventView {
            at: f.at,
            queue_id: f.id,
            message_id: String::new(),
            event: f.kind,
            from: f.from,
            to: None,
            connector: f.connector,
            remote_host: Some("192.0.2.99".into()),
            detail: Some("550 5.7.1 denied".into()),
            node: None,
        }
    }
}

struct ValidationRecordFixture;

impl ValidationRecordFixture {
    fn for_tenant(tenant: Option<&str>) -> validation::ValidationRecord {
        validation::ValidationRecord {
            at: "2026-01-02T09:00:00.000Z".into(),
            tenant: tenant.map(String::from),
            client: "40.92.0.1".into(),
            tls: true,
            tls_version: Some("TLSv1_3".into()),
            from: "postmaster@contoso.com".into(),
            message_id: "x.validation@contoso.com".into(),
        }
    }
}
