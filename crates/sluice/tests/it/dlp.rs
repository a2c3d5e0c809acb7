//! Custom DLP detectors (issue 18) on a real node: created over the admin
//! API (`/api/v1/detectors`), refused when invalid, used by name in a rule's
//! `contains_sensitive_info` on mail sent with swaks, reported by `POST
//! /api/v1/scan` (masked by default), and exported with the other objects.
//! Net 150.

use crate::support::{swaks, Net, Node, NodeOptions, Sink};
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

#[test]
fn custom_detectors_over_the_api_and_in_a_rule() {
    let net = Net(150);
    let sink = Sink::start(net.ip(SINK));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["{on_prem}/32"]

[[outbound_connector]]
name = "Internet"
recipient_domains = ["*"]
smart_hosts = ["{sink}"]
"#,
            on_prem = net.ip(ON_PREM),
            sink = sink.addr
        ),
    ));

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
    let rule = |detector: &str| {
        format!(
            r#"
[[rule]]
name = "No staff data out"
[rule.conditions]
contains_sensitive_info = {{ detectors = ["{detector}"], min_confidence = "high" }}
[rule.actions]
reject = {{ code = "5.7.1", text = "Staff data may not leave" }}
"#
        )
    };
    let unknown = node.dir().join("unknown.toml");
    std::fs::write(&unknown, rule("payroll_id")).expect("write rule");
    let refused = node.cli(&["apply", "-f", &unknown.display().to_string()]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown detector `payroll_id`"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    node.apply("rule.toml", &rule("employee_id"));

    let send = |subject: &str, body: &str| {
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
    };
    let staff = send("staff list", "Employee EMP-123456 starts Monday.");
    assert_eq!(staff.code, Some(26), "{}", staff.transcript);
    assert!(staff.transcript.contains("5.7.1"), "{}", staff.transcript);
    // No keyword within 60 characters: not the detector's.
    let other = send("part list", "Order part EMP-654321 today.");
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
