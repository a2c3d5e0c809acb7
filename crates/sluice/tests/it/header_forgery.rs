//! One reading of headers (issue 12 point 1), over the wire: an internet
//! sender writes the scanner's stamp (`X-Sluice-Org-Scan: verdict=pass`) in
//! every form readers could disagree on. A rule sends mail without the stamp
//! to the scanner; a forged stamp must never let a message skip it. Each
//! malformed form is refused at the end of DATA (`550 5.6.0`, or `5.6.11`
//! for bare line ends); each well-formed one reaches the scanner with the
//! forged field gone for every reader. Net 212.

use crate::support::{swaks, wait_until, Net, Node, NodeOptions, RawSmtp, Sink, SinkMessage};
use mail_parser::MessageParser;
use std::time::Duration;

const NODE: u8 = 1;
const SCANNER: u8 = 30;
const SCANNER_RETURN: u8 = 31;

/// Forms some reader could take for a field, and that the node refuses.
const MALFORMED: &[(&str, &str)] = &[
    ("space before colon", "X-Sluice-Org-Scan : verdict=pass\r\n"),
    ("tab before colon", "X-Sluice-Org-Scan\t: verdict=pass\r\n"),
    ("no colon", "X-Sluice-Org-Scan verdict=pass\r\n"),
    ("colon first", ": X-Sluice-Org-Scan: verdict=pass\r\n"),
    ("fold as the first line", " X-Sluice-Org-Scan: verdict=pass\r\n"),
    (
        "stamp folded into the field above",
        "X-Note: a\r\n\tX-Sluice-Org-Scan: verdict=pass\r\n",
    ),
    (
        "fold after a line that is no field",
        "not a field\r\n X-Sluice-Org-Scan: verdict=pass\r\n",
    ),
    (
        "blank folded line",
        "X-Sluice-Org-Scan: verdict=found\r\n \r\nX-Sluice-Org-Scan: verdict=pass\r\n",
    ),
    ("bare LF", "X-Note: a\nX-Sluice-Org-Scan: verdict=pass\r\n"),
    ("bare CR", "X-Note: a\rX-Sluice-Org-Scan: verdict=pass\r\n"),
    ("8-bit name", "X-Sluice-Org-Sc\u{e4}n: verdict=pass\r\n"),
];

/// Well-formed sections hiding a stamp: accepted, stamp removed, scanned.
const WELL_FORMED: &[(&str, &str)] = &[
    ("lower case", "x-sluice-org-scan: verdict=pass\r\n"),
    ("upper case", "X-SLUICE-ORG-SCAN: verdict=pass\r\n"),
    ("no space after colon", "X-Sluice-Org-Scan:verdict=pass\r\n"),
    ("folded value", "X-Sluice-Org-Scan:\r\n verdict=pass\r\n"),
    (
        "encoded word value",
        "X-Sluice-Org-Scan: =?utf-8?q?verdict=3Dpass?=\r\n",
    ),
    (
        "encoded word name",
        "=?utf-8?q?X-Sluice-Org-Scan?=: verdict=pass\r\n",
    ),
    (
        "duplicates",
        "X-Sluice-Org-Scan: verdict=found\r\nX-Sluice-Org-Scan: verdict=pass\r\n",
    ),
    ("internal prefix only", "X-Sluice-Org-: verdict=pass\r\n"),
];

/// A stamp inside the body or a nested message is content, not a field of
/// the message: no reader of the message's header takes it.
const NESTED_HEADER: &str = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n";
const NESTED_BODY: &str = "X-Sluice-Org-Scan: verdict=pass\r\n\
--b\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
X-Sluice-Org-Scan: verdict=pass\r\n\
Subject: inner\r\n\
\r\n\
inner body\r\n\
--b--";

fn gateway(net: Net, scanner: &Sink) -> Node {
    Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"
type = "authoritative"

[[inbound_connector]]
name = "From scanner"
type = "on_premises"
sender_ip_addresses = ["{scanner_return}/32"]
retain_internal_headers = true

[[outbound_connector]]
name = "To scanner"
type = "partner"
smart_hosts = ["{scanner}"]
transport_rule_scoped = true
retain_internal_headers = true

[[rule]]
name = "Unscanned mail through the scanner"
priority = 0
[rule.conditions]
sent_to_scope = "in_organization"
[rule.exceptions]
header_contains = {{ header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }}
[rule.actions]
route_via_connector = "To scanner"
"#,
            scanner_return = net.ip(SCANNER_RETURN),
            scanner = scanner.addr
        ),
    ))
}

/// Sends one message from the internet, `header` first (right under the
/// node's Received field); returns the reply to its end.
fn send(node: &Node, subject: &str, header: &str, body: &str) -> (u16, String) {
    let (mut client, greeting) = RawSmtp::connect(node.smtp).expect("connect");
    assert_eq!(greeting.code, 220);
    let content = format!("{header}Subject: {subject}\r\nFrom: <mallory@fabrikam.test>\r\n\r\n{body}");
    let reply = client
        .send_message("mallory@fabrikam.test", &["bob@contoso.test"], &content)
        .expect("transaction");
    let _ = client.command("QUIT");
    (reply.code, reply.text)
}

/// Every field name of the top-level header section, as mail-parser reads it.
fn parsed_names(message: &SinkMessage) -> Vec<String> {
    let crlf = message.content.replace('\n', "\r\n");
    MessageParser::new()
        .parse(crlf.as_bytes())
        .map(|m| {
            m.headers()
                .iter()
                .map(|h| h.name().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn forged_scan_stamps_never_skip_the_scanner() {
    let net = Net(212);
    let scanner = Sink::start(net.ip(SCANNER));
    let node = gateway(net, &scanner);

    // The control: the same stamp from the scanner's return connector is
    // trusted, and the message skips the scanner. So a forged stamp that
    // survived would be read.
    let source = net.ip(SCANNER_RETURN).to_string();
    let run = swaks(
        node.smtp,
        &[
            "--local-interface",
            &source,
            "--from",
            "scanner@contoso.test",
            "--to",
            "bob@contoso.test",
            "--header",
            "Subject: control",
            "--header",
            "X-Sluice-Org-Scan: verdict=pass; findings=; scanner=scan.test",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(
        wait_until(Duration::from_secs(20), || !node
            .mailbox("contoso.test", "bob")
            .is_empty()),
        "the trusted stamp did not deliver to the mailbox; queue {:?}",
        node.queue_json()
    );

    for (name, header) in MALFORMED {
        let (code, text) = send(&node, name, header, "body\r\n");
        assert_eq!(code, 550, "{name}: {text}");
        assert!(
            text.contains("5.6.0") || text.contains("5.6.11"),
            "{name}: {text}"
        );
    }

    let mut accepted: Vec<&str> = Vec::new();
    for (name, header) in WELL_FORMED {
        let (code, text) = send(&node, name, header, "body\r\n");
        assert_eq!(code, 250, "{name}: {text}");
        accepted.push(name);
    }
    let (code, text) = send(&node, "nested message", NESTED_HEADER, NESTED_BODY);
    assert_eq!(code, 250, "nested: {text}");
    accepted.push("nested message");

    let arrived = scanner.wait_for(accepted.len(), Duration::from_secs(60));
    assert_eq!(
        arrived.len(),
        accepted.len(),
        "not every message reached the scanner; queue {:?}",
        node.queue_json()
    );
    // Only the control skipped the scanner.
    assert_eq!(node.mailbox("contoso.test", "bob").len(), 1);

    for name in accepted {
        let message = arrived
            .iter()
            .find(|m| m.header("subject").is_some_and(|s| s.starts_with(name)))
            .unwrap_or_else(|| panic!("{name}: not at the scanner"));
        let names = parsed_names(message);
        assert!(!names.is_empty(), "{name}: mail-parser read no header");
        // The only internal fields left are the node's own stamps.
        let internal: Vec<&String> = names.iter().filter(|n| n.starts_with("x-sluice-org-")).collect();
        assert_eq!(
            internal,
            ["x-sluice-org-rule-loop", "x-sluice-org-route"],
            "{name}: {}",
            message.content
        );
        // Nor does a lenient reader (whitespace trimmed) find a stamp line.
        let header_section = message.content.split("\n\n").next().unwrap_or_default();
        for line in header_section.lines() {
            assert!(
                !line
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("x-sluice-org-scan"),
                "{name}: stamp line {line:?} left in\n{}",
                message.content
            );
        }
    }
    // The nested message keeps its own header: it is content, not a field.
    let nested = arrived
        .iter()
        .find(|m| m.header("subject").as_deref() == Some("nested message"))
        .expect("nested message at the scanner");
    assert!(nested
        .content
        .contains("\nX-Sluice-Org-Scan: verdict=pass\nSubject: inner"));
}
