//! Refusals are visible (issue: "why didn't my mail arrive?"): a sender or
//! recipient refused in session is a `rejected` trace event with the client,
//! connector, sender, recipient and reply, and a log line; `trace --status`
//! knows its words; the text trace keeps two messages with one Message-ID
//! apart. Net 170.

use crate::support::{swaks, wait_until, Net, Node, NodeOptions};
use serde_json::Value;
use std::time::Duration;

const NODE: u8 = 1;
const PARTNER: u8 = 60;
const STRANGER: u8 = 50;

#[test]
fn refusals_are_rejected_trace_events_and_log_lines() {
    let net = Net(170);
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "Fabrikam partner"
type = "partner"
sender_ip_addresses = ["{partner}/32"]
sender_domains = ["fabrikam.test"]
require_tls = true
"#,
            partner = net.ip(PARTNER)
        ),
    ));
    let send = |source: u8, from: &str, to: &str, extra: &[&str]| {
        let source = net.ip(source).to_string();
        let mut args = vec!["--local-interface", &source, "--from", from, "--to", to];
        args.extend_from_slice(extra);
        swaks(node.smtp, &args)
    };

    // Relay denied at RCPT.
    let relay = send(STRANGER, "mallory@evil.test", "victim@example.org", &[]);
    assert_eq!(relay.code, Some(24), "{}", relay.transcript);
    // require_tls refuses clear text at MAIL FROM.
    let clear = send(PARTNER, "bob@fabrikam.test", "alice@contoso.test", &[]);
    assert_eq!(clear.code, Some(23), "{}", clear.transcript);
    // Two accepted messages carrying the same Message-ID.
    for n in 1..=2 {
        let subject = format!("Subject: resend {n}");
        let run = send(
            STRANGER,
            "carol@example.org",
            "alice@contoso.test",
            &["--header", "Message-ID: <same@example.org>", "--header", &subject],
        );
        assert!(run.delivered(), "{}", run.transcript);
    }

    let rejected: Vec<Value> = {
        let mut events = Vec::new();
        wait_until(Duration::from_secs(10), || {
            events = node.trace(&["--status", "rejected"]);
            events.len() >= 2
        });
        events
    };
    let relay_event = rejected
        .iter()
        .find(|e| e["to"] == "victim@example.org")
        .unwrap_or_else(|| panic!("no rejected event for the relay attempt: {rejected:#?}"));
    assert_eq!(relay_event["event"], "rejected");
    assert_eq!(relay_event["from"], "mallory@evil.test");
    let client = relay_event["remote_host"].as_str().unwrap_or_default();
    assert!(
        client.starts_with(&format!("{}:", net.ip(STRANGER))),
        "{relay_event}"
    );
    let reply = relay_event["detail"].as_str().unwrap_or_default();
    assert!(reply.starts_with("550 5.7.1"), "{relay_event}");

    let tls_event = rejected
        .iter()
        .find(|e| e["from"] == "bob@fabrikam.test")
        .unwrap_or_else(|| panic!("no rejected event for the clear-text partner: {rejected:#?}"));
    assert_eq!(tls_event["connector"], "Fabrikam partner");
    assert_eq!(tls_event["to"], Value::Null, "refused at MAIL: no recipient yet");
    assert!(
        tls_event["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("530 5.7.0"),
        "{tls_event}"
    );
    // Accepted messages have no rejected event, so the filter leaves them out.
    assert!(
        rejected.iter().all(|e| e["from"] != "carol@example.org"),
        "{rejected:#?}"
    );

    let text = node.cli_ok(&["trace", "--status", "rejected"]);
    assert!(
        text.contains("victim@example.org") && text.contains("550 5.7.1"),
        "{text}"
    );

    let log = node.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused") && l.contains("victim@example.org"))
        .unwrap_or_else(|| panic!("no log line for the refusal:\n{log}"));
    assert!(
        line.contains("mallory@evil.test") && line.contains("550 5.7.1"),
        "{line}"
    );
    assert!(line.contains(&net.ip(STRANGER).to_string()), "{line}");

    // An unknown status word is a usage error, not an empty answer.
    let bogus = node.cli(&["trace", "--status", "refused"]);
    assert_eq!(bogus.status.code(), Some(2), "{bogus:?}");

    // Two messages with one Message-ID are two timelines.
    let text = node.cli_ok(&["trace", "--message-id", "<same@example.org>"]);
    let headings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("message-id") && l.contains("same@example.org"))
        .collect();
    assert_eq!(headings.len(), 2, "{text}");
    assert_ne!(headings[0], headings[1], "{text}");
}
