//! Rule evaluation: priority, stop_processing, audit, exceptions, bifurcation.

use super::*;
use crate::classify::Classification;
use crate::config::objects::ObjectSet;
use crate::message::ReversePath;
use crate::policy::Policy;

const BASE: &str = r#"
[[accepted_domain]]
name = "contoso.test"
[[outbound_connector]]
name = "To scanner"
smart_hosts = ["127.0.0.30:2525"]
transport_rule_scoped = true
"#;

fn run(rules: &str, from: &str, to: &[&str], content: &str) -> (Policy, Evaluation) {
    let set: ObjectSet = toml::from_str(&format!("{BASE}{rules}")).unwrap();
    let policy = crate::policy::Policy::compile(&set).unwrap();
    let recipients: Vec<Address> = to.iter().map(|a| Address::parse(a).unwrap()).collect();
    let from = ReversePath::try_from(from.to_string()).unwrap();
    let classification = Classification::Anonymous;
    let facts = MessageFacts::new(
        &policy,
        &classification,
        false,
        "192.0.2.7".parse().unwrap(),
        &from,
        &recipients,
        content.as_bytes(),
    );
    let evaluation = evaluate(&policy.rules, &facts);
    (policy, evaluation)
}

const SCANNER_RULE: &str = r#"
[[rule]]
name = "External mail through the scanner"
[rule.conditions]
sent_to_scope = "not_in_organization"
[rule.exceptions]
header_contains = { header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }
[rule.actions]
route_via_connector = "To scanner"
"#;

#[test]
fn seed_pattern_routes_unstamped_external_recipients_only() {
    let (_, e) = run(
        SCANNER_RULE,
        "a@contoso.test",
        &["x@fabrikam.test", "y@contoso.test"],
        "Subject: s\r\n\r\nb\r\n",
    );
    assert_eq!(e.effects[0].route_via.as_deref(), Some("To scanner"));
    assert_eq!(e.effects[1].route_via, None, "internal recipient bifurcated away");
    assert_eq!(e.matches[0].recipients, vec![0]);

    let stamped = "X-Sluice-Org-Scan: verdict=pass; scanner=s\r\nSubject: s\r\n\r\nb\r\n";
    let (_, e) = run(SCANNER_RULE, "a@contoso.test", &["x@fabrikam.test"], stamped);
    assert!(e.matches.is_empty());
    assert_eq!(e.effects[0], Effects::default());
}

#[test]
fn priority_stop_processing_and_audit() {
    let rules = r#"
[[rule]]
name = "second"
priority = 2
[rule.actions]
prepend_subject = "[2] "
[[rule]]
name = "audit only"
priority = 0
mode = "audit"
stop_processing = true
[rule.actions]
reject = { code = "5.7.1", text = "no" }
[[rule]]
name = "first"
priority = 1
stop_processing = true
[rule.conditions]
subject_or_body_contains = ["URGENT"]
[rule.actions]
prepend_subject = "[1] "
"#;
    let (policy, e) = run(
        rules,
        "a@x.test",
        &["b@contoso.test"],
        "Subject: urgent thing\r\n\r\nb\r\n",
    );
    assert_eq!(
        policy.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["audit only", "first", "second"]
    );
    // The audit rule matched but neither rejected nor stopped evaluation.
    assert!(e.matches[0].audit);
    assert_eq!(e.effects[0].disposition, Disposition::Deliver);
    // "first" stopped processing: "second" never ran.
    assert_eq!(
        e.effects[0].edits,
        vec![HeaderEdit::PrependSubject("[1] ".into())]
    );
    assert_eq!(e.matches.len(), 2);
    // Without the word, "first" does not match and "second" runs.
    let (_, e) = run(
        rules,
        "a@x.test",
        &["b@contoso.test"],
        "Subject: calm\r\n\r\nb\r\n",
    );
    assert_eq!(
        e.effects[0].edits,
        vec![HeaderEdit::PrependSubject("[2] ".into())]
    );
}

#[test]
fn conditions_over_headers_attachments_size_and_ip() {
    let rules = r#"
[[rule]]
name = "exe"
[rule.conditions]
attachment_extension_is = ["EXE"]
header_matches = { header = "X-Mailer", patterns = ["^bulk-\\d+$"] }
sender_ip_ranges = ["192.0.2.0/24"]
message_size_over = "10"
[rule.actions]
reject = { code = "5.7.1", text = "Executable attachments are not accepted" }
"#;
    let message = "X-Mailer: bulk-42\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"run.exe\"\r\n\r\nMZ\r\n--b--\r\n";
    let (_, e) = run(rules, "a@x.test", &["b@contoso.test"], message);
    match &e.effects[0].disposition {
        Disposition::Reject { reply, .. } => assert_eq!(
            reply.to_string(),
            "550 5.7.1 Executable attachments are not accepted"
        ),
        other => panic!("{other:?}"),
    }
    let (_, e) = run(
        rules,
        "a@x.test",
        &["b@contoso.test"],
        &message.replace("bulk-42", "bulk-x"),
    );
    assert!(e.matches.is_empty());
}

#[test]
fn invalid_rules_name_the_rule_and_key() {
    for (text, key) in [
        ("[[rule]]\nname = \"r\"\n[rule.conditions]\nheader_matches = { header = \"Subject\", patterns = [\"(\"] }\n[rule.actions]\ndelete = true\n", "header_matches"),
        ("[[rule]]\nname = \"r\"\n[rule.actions]\nroute_via_connector = \"Nowhere\"\n", "actions.route_via_connector"),
        ("[[rule]]\nname = \"r\"\n[rule.conditions]\ncontains_sensitive_info = { detectors = [\"credit_cards\"] }\n[rule.actions]\ndelete = true\n", "contains_sensitive_info"),
    ] {
        let set: ObjectSet = toml::from_str(&format!("{BASE}{text}")).unwrap();
        let error = crate::policy::Policy::compile(&set).unwrap_err();
        assert_eq!((error.kind, error.name.as_str(), error.key), ("rule", "r", key), "{error}");
    }
    let unknown =
        toml::from_str::<ObjectSet>("[[rule]]\nname = \"r\"\n[rule.actions]\nexplode = true\n").unwrap_err();
    assert!(unknown.to_string().contains("explode"), "{unknown}");
}

const SCANNER: &str = r#"
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"
[[outbound_connector]]
name = "Back to gateway"
smart_hosts = ["127.0.0.10:2525"]
transport_rule_scoped = true
retain_internal_headers = true
[[rule]]
name = "Block cards"
priority = 1
stop_processing = true
[rule.conditions]
contains_sensitive_info = { detectors = ["credit_card"], min_confidence = "medium", min_count = 1 }
[rule.actions]
quarantine = true
stamp_scan = true
notify_sender = "Your message contained a payment card number and was held."
[[rule]]
name = "Stamp and return"
priority = 2
[rule.actions]
stamp_scan = true
route_via_connector = "Back to gateway"
"#;

fn scanner_plan(body: &str) -> plan::Plan {
    let policy = crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(SCANNER).unwrap()).unwrap();
    let classification = Classification::Anonymous;
    let from = ReversePath::try_from("a@contoso.test".to_string()).unwrap();
    let base = crate::queue::QueueEntry {
        id: crate::message::QueueId("t".into()),
        message_id: None,
        from,
        body: crate::message::BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: vec![crate::queue::QueuedRecipient {
            address: Address::parse("x@fabrikam.test").unwrap(),
            notify: crate::message::Notify::Default,
            orcpt: None,
            route: crate::route::Route::Mx,
            status: crate::queue::RecipientStatus::Queued { due_ms: 0 },
            attempts: 0,
        }],
        size: 0,
        received_at_ms: 0,
        expires_at_ms: 0,
        hold: crate::queue::Hold::Active,
        source: crate::queue::Source {
            peer: "127.0.0.10".into(),
            helo: "gw".into(),
            connector: None,
        },
    };
    let content =
        crate::message::MessageContent::new(format!("Subject: order\r\n\r\n{body}\r\n").into_bytes());
    plan::plan(
        &policy,
        &plan::PlanInput {
            classification: &classification,
            sender_in_organization: false,
            peer: "127.0.0.10".parse().unwrap(),
            base: &base,
            content: &content,
            scanner: "scanner.test",
            scan_limits: &crate::scan::ScanLimits::default(),
            auth: None,
        },
    )
}

#[test]
fn scanner_policy_quarantines_cards_and_stamps_clean_mail() {
    let found = scanner_plan("my visa card is 4111 1111 1111 1111, exp 12/29");
    assert_eq!(found.copies.len(), 1);
    assert_eq!(found.copies[0].quarantined_by.as_deref(), Some("Block cards"));
    let text = String::from_utf8_lossy(&found.copies[0].content.to_vec()).to_string();
    assert!(
        text.contains("X-Sluice-Org-Scan: verdict=found; findings=credit_card:1; scanner=scanner.test"),
        "{text}"
    );
    assert_eq!(found.notices.len(), 1);
    let summary = found.scan_summary.unwrap();
    assert!(summary.starts_with("credit_card:1"), "{summary}");
    assert!(!summary.contains("1111"));

    let clean = scanner_plan("lunch at noon?");
    assert_eq!(clean.copies[0].quarantined_by, None);
    let text = String::from_utf8_lossy(&clean.copies[0].content.to_vec()).to_string();
    assert!(
        text.contains("X-Sluice-Org-Scan: verdict=pass; scanner=scanner.test"),
        "{text}"
    );
    assert_eq!(
        clean.copies[0].recipients[0].route.connector(),
        Some("Back to gateway")
    );
    assert!(clean.notices.is_empty());
}

#[test]
fn message_conditions_are_tested_once_per_message_not_per_recipient() {
    let rules = r#"
[[rule]]
name = "Confidential"
[rule.conditions]
subject_or_body_contains = ["confidential"]
from_scope = "not_in_organization"
[rule.exceptions]
header_contains = { header = "X-Exempt", words = ["yes"] }
[rule.actions]
prepend_subject = "[external] "
"#;
    let set: ObjectSet = toml::from_str(&format!("{BASE}{rules}")).unwrap();
    let policy = crate::policy::Policy::compile(&set).unwrap();
    let recipients: Vec<Address> = (0..200)
        .map(|n| Address::parse(&format!("r{n}@fabrikam.test")).unwrap())
        .collect();
    let from = ReversePath::try_from("a@example.org".to_string()).unwrap();
    let classification = Classification::Anonymous;
    let facts = MessageFacts::new(
        &policy,
        &classification,
        false,
        "192.0.2.7".parse().unwrap(),
        &from,
        &recipients,
        b"Subject: q3\r\n\r\nconfidential figures\r\n",
    );
    let evaluation = evaluate(&policy.rules, &facts);
    assert_eq!(evaluation.matches[0].recipients.len(), 200);
    // Two conditions and one exception, each tested once for 200 recipients.
    assert_eq!(facts.message_checks.load(std::sync::atomic::Ordering::Relaxed), 3);
}
