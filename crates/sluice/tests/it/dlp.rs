//! Custom DLP detectors (issue 18) on a real node: created over the admin
//! API (`/api/v1/detectors`), refused when invalid, used by name in a rule's
//! `contains_sensitive_info` on mail sent with swaks, reported by `POST
//! /api/v1/scan` (masked by default), and exported with the other objects;
//! exact-data-match sets loaded from CSV with `sluice edm load` and matched
//! by a rule. Nets 160-161.

use crate::support::{on_prem_relay, swaks, Net, Node, NodeOptions, Sink};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const NODE: u8 = 1;
const SINK: u8 = 21;
const ON_PREM: u8 = 40;

/// `curl` against the node's admin API with its token: (status, body).
fn api(node: &Node, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).expect("admin token");
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(["--data-binary", body])
        .arg(format!("http://{}/api/v1{path}", node.admin))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A node accepting contoso.test, on-prem (127.0.N.40) relaying, everything
/// else to `sink`.
fn relay_node(net: Net, sink: &Sink) -> Node {
    Node::start(NodeOptions::new(
        net.ip(NODE),
        &on_prem_relay(net.ip(ON_PREM), "Internet", "*", sink.addr),
    ))
}

/// One message from on-prem with `subject` and `body`.
fn send(net: Net, node: &Node, subject: &str, body: &str) -> crate::support::SwaksRun {
    let source = net.ip(ON_PREM).to_string();
    let header = format!("Subject: {subject}");
    swaks(
        node.smtp,
        &[
            "--local-interface",
            &source,
            "--from",
            "alice@contoso.test",
            "--to",
            "x@fabrikam.test",
            "--header",
            &header,
            "--body",
            body,
        ],
    )
}

/// `[[rule]]` rejecting mail with findings of `detector`.
fn reject_rule(detector: &str) -> String {
    format!(
        r#"
[[rule]]
name = "No listed data out"
[rule.conditions]
contains_sensitive_info = {{ detectors = ["{detector}"], min_confidence = "high" }}
[rule.actions]
reject = {{ code = "5.7.1", text = "Listed data may not leave" }}
"#
    )
}

#[test]
fn custom_detectors_over_the_api_and_in_a_rule() {
    let net = Net(160);
    let sink = Sink::start(net.ip(SINK));
    let node = relay_node(net, &sink);

    // Created over the API; an invalid one is refused with the field named.
    let detector = json!({
        "name": "employee_id",
        "pattern": r"\bEMP-\d{6}\b",
        "keywords": ["employee", "staff"],
        "proximity": 60,
        "confidence": "high"
    });
    let (status, body) = api(
        &node,
        "POST",
        "/detectors",
        "application/json",
        &detector.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    for (bad, key) in [
        (json!({"name": "bad_regex", "pattern": "EMP-(\\d"}), "pattern"),
        (json!({"name": "credit_card", "pattern": "x"}), "name"),
        (
            json!({"name": "luhny", "pattern": "\\d+", "validator": "crc"}),
            "validator",
        ),
    ] {
        let (status, body) = api(&node, "POST", "/detectors", "application/json", &bad.to_string());
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(&format!(": {key}:")), "{bad}: {body}");
    }
    let (status, body) = api(&node, "GET", "/detectors/employee_id", "application/json", "");
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).expect("detector JSON");
    assert_eq!(shown["pattern"], detector["pattern"], "{body}");

    // A rule naming an unknown detector is refused; naming ours, it applies.
    let unknown = node.dir().join("unknown.toml");
    std::fs::write(&unknown, reject_rule("payroll_id")).expect("write rule");
    let refused = node.cli(&["apply", "-f", &unknown.display().to_string()]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown detector `payroll_id`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    node.apply("rule.toml", &reject_rule("employee_id"));

    let staff = send(net, &node, "staff list", "Employee EMP-123456 starts Monday.");
    assert_eq!(staff.code, Some(26), "{}", staff.transcript);
    assert!(staff.transcript.contains("5.7.1"), "{}", staff.transcript);
    // No keyword within 60 characters: not the detector's.
    let other = send(net, &node, "part list", "Order part EMP-654321 today.");
    assert!(other.delivered(), "{}", other.transcript);
    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1);

    // The scan API names the custom detector and masks its match.
    let raw = "Subject: x\r\n\r\nstaff number EMP-123456\r\n";
    let (status, body) = api(&node, "POST", "/scan", "message/rfc822", raw);
    assert_eq!(status, 200, "{body}");
    let result: Value = serde_json::from_str(&body).expect("scan JSON");
    let finding = result["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["detector"] == "employee_id"))
        .unwrap_or_else(|| panic!("no employee_id finding: {body}"));
    assert_eq!(finding["match"], "***-**3456", "{body}");
    let (_, clear) = api(&node, "POST", "/scan?show_matches=true", "message/rfc822", raw);
    assert!(clear.contains("EMP-123456"), "{clear}");

    // Exported with the other objects, so it round-trips through apply.
    let exported = node.cli_ok(&["export"]);
    assert!(exported.contains("[[detector]]"), "{exported}");
    assert!(exported.contains("name = \"employee_id\""), "{exported}");
}

#[test]
fn edm_sets_hold_hashes_and_match_listed_values_in_a_rule() {
    let net = Net(161);
    let sink = Sink::start(net.ip(SINK));
    let node = relay_node(net, &sink);

    // 20 000 customers: an account number and an email each, a header row.
    let mut csv = String::from("account,email\n");
    for i in 0..20_000u32 {
        csv.push_str(&format!("ACC-{:07},customer{i}@example.org\n", 3_000_000 + i));
    }
    let file = node.dir().join("customers.csv");
    std::fs::write(&file, &csv).expect("write csv");
    let loaded = node.cli_ok(&["edm", "load", "customer_data", &file.display().to_string()]);
    assert!(loaded.contains("40000 distinct values"), "{loaded}");
    let listed = node.cli_json(&["edm", "list", "--json"]);
    assert_eq!(listed[0]["name"], "customer_data", "{listed}");
    assert_eq!(listed[0]["values"], 40_000, "{listed}");
    let loaded_at = listed[0]["loaded"].as_str().unwrap_or_default();
    assert!(humantime::parse_rfc3339(loaded_at).is_ok(), "{listed}");

    // The store and the export hold hashes only.
    let exported = node.cli_ok(&["export"]);
    assert!(exported.contains("[[edm]]"), "{exported:.200}");
    for value in ["ACC-3000042", "acc-3000042", "customer42@example.org", "account"] {
        assert!(!exported.contains(value), "{value} in the export");
    }

    node.apply("rule.toml", &reject_rule("customer_data"));
    let listed_value = send(net, &node, "update", "Please close acc-3012345 today.");
    assert_eq!(listed_value.code, Some(26), "{}", listed_value.transcript);
    assert!(
        listed_value.transcript.contains("5.7.1"),
        "{}",
        listed_value.transcript
    );
    let listed_email = send(net, &node, "hello", "Write to Customer19999@example.org.");
    assert_eq!(listed_email.code, Some(26), "{}", listed_email.transcript);
    let unlisted = send(
        net,
        &node,
        "other",
        "Close ACC-3020000 and write to customer20000@example.org or account.",
    );
    assert!(unlisted.delivered(), "{}", unlisted.transcript);
    assert_eq!(sink.wait_for(1, Duration::from_secs(20)).len(), 1);

    // Reloading replaces the set: the old values no longer match.
    std::fs::write(&file, "account\nACC-9999999\n").expect("write csv");
    node.cli_ok(&["edm", "load", "customer_data", &file.display().to_string()]);
    let now_listed = send(net, &node, "new", "ACC-9999999 please");
    assert_eq!(now_listed.code, Some(26), "{}", now_listed.transcript);
    let formerly = send(net, &node, "old", "acc-3012345 please");
    assert!(formerly.delivered(), "{}", formerly.transcript);
}
