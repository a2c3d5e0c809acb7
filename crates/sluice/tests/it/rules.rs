//! Mail flow rules over the wire (issue 4): seed 000's scanner loop with
//! two real sluice nodes (delivered once, each hop in the trace), priority
//! and stop_processing, audit mode, bifurcation of one message into
//! differently treated copies, an in-session reject, and quarantine
//! release/delete. Nets 110-115.

use crate::support::{
    contoso_with_on_prem, on_prem_relay, pause, swaks, wait_until, Net, Node, NodeOptions, Sink, SinkMessage,
    SwaksRun,
};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

const NODE: u8 = 1;
const GATEWAY: u8 = 10;
const SINK: u8 = 21;
const INTERNET_MX: u8 = 25;
const SCANNER: u8 = 30;
const ON_PREM: u8 = 40;
const ELSEWHERE: u8 = 50;

fn send_from(node: &Node, source: Ipv4Addr, from: &str, to: &str, extra: &[&str]) -> SwaksRun {
    let source = source.to_string();
    let mut args = vec!["--local-interface", source.as_str(), "--from", from, "--to", to];
    args.extend_from_slice(extra);
    swaks(node.smtp, &args)
}

fn field<'a>(event: &'a Value, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

/// (event, connector) pairs, for messages.
fn timeline(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (field(e, "event").to_string(), field(e, "connector").to_string()))
        .collect()
}

/// A node that accepts contoso.test, lets on-prem (127.0.N.40) relay, sends
/// every other domain to `sink`, and has `rules` (TOML `[[rule]]` tables).
fn relay_node(net: Net, sink: &Sink, rules: &str) -> Node {
    Node::start(NodeOptions::new(
        net.ip(NODE),
        &(on_prem_relay(net.ip(ON_PREM), "Internet", "*", sink.addr) + rules),
    ))
}

/// One message from on-prem to `to` with `subject` (and `extra` swaks
/// arguments); asserts the node took it.
fn relay(net: Net, node: &Node, to: &str, subject: &str, extra: &[&str]) {
    let header = format!("Subject: {subject}");
    let mut args = vec!["--header", header.as_str()];
    args.extend_from_slice(extra);
    let run = send_from(node, net.ip(ON_PREM), "alice@contoso.test", to, &args);
    assert!(run.delivered(), "{subject}: refused\n{}", run.transcript);
}

fn subjects(messages: &[SinkMessage]) -> Vec<String> {
    let mut all: Vec<String> = messages
        .iter()
        .map(|m| m.header("subject").unwrap_or_default())
        .collect();
    all.sort();
    all
}

#[test]
fn scanner_loop_delivers_once_and_traces_every_hop() {
    // Seed 000 as examples/seed000/ has it.
    let seed = crate::support::seed000::Seed000::start(Net(110), "");
    let (net, internet, gateway, scanner) = (seed.net, &seed.internet, &seed.gateway, &seed.scanner);

    let run = send_from(
        gateway,
        net.ip(ON_PREM),
        "alice@contoso.test",
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: round trip through the scanner",
            "--header",
            "Message-Id: <scanner-loop-1@contoso.test>",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);

    let arrived = internet.wait_for(1, Duration::from_secs(40));
    assert_eq!(
        arrived.len(),
        1,
        "nothing reached the internet MX; gateway queue {:?}, scanner queue {:?}",
        gateway.queue_json(),
        scanner.queue_json()
    );
    // A loop would deliver again (or keep bouncing between the nodes).
    pause(Duration::from_secs(5));
    assert_eq!(internet.count(), 1, "delivered more than once");
    let message = &internet.messages()[0];
    assert_eq!(message.rcpt_to[0].split(' ').next(), Some("<x@fabrikam.test>"));
    assert_eq!(
        message.header("subject").as_deref(),
        Some("round trip through the scanner")
    );
    assert_eq!(
        message.header("X-Sluice-Org-Scan"),
        None,
        "the internal verdict leaked to the internet:\n{}",
        message.content
    );

    // Newest first: gateway (from the scanner), scanner (from the
    // gateway), gateway (from on-prem).
    let received = message.headers_named("received");
    let hops: Vec<(bool, bool)> = received
        .iter()
        .map(|r| {
            (
                r.contains("by gw.contoso.test"),
                r.contains("by scan.partner.test"),
            )
        })
        .collect();
    assert_eq!(
        hops,
        vec![(true, false), (false, true), (true, false)],
        "Received headers are not gateway <- scanner <- gateway: {received:#?}"
    );
    for (hop, from_ip) in received.iter().zip([SCANNER, GATEWAY, ON_PREM]) {
        let ip = format!("[{}]", net.ip(from_ip));
        assert!(hop.contains(&ip), "{hop:?} does not name {ip}");
    }

    // The gateway's trace: the message's whole path, in order.
    let events = gateway.trace(&[]);
    let timeline = timeline(&events);
    let expected: Vec<(&str, Option<&str>)> = vec![
        ("received", Some("From on-prem")),
        ("rule_matched", None),
        ("routed", Some("To scanner")),
        ("delivered", Some("To scanner")),
        ("received", Some("From scanner")),
        ("routed", None),
        ("delivered", None),
    ];
    let mut at = 0;
    for (event, connector) in &expected {
        let found = timeline[at..]
            .iter()
            .position(|(e, c)| e == event && connector.is_none_or(|want| c == want));
        match found {
            Some(offset) => at += offset + 1,
            None => panic!(
                "gateway trace lacks {event} {connector:?} after position {at}: {timeline:#?}\n{events:#?}"
            ),
        }
    }
    let count = |kind: &str| timeline.iter().filter(|(e, _)| e == kind).count();
    assert_eq!(count("received"), 2, "{timeline:#?}");
    assert_eq!(count("delivered"), 2, "{timeline:#?}");
    assert_eq!(
        count("rule_matched"),
        1,
        "the stamped return matched the rule: {timeline:#?}"
    );
    let last_delivery = events
        .iter()
        .rfind(|e| field(e, "event") == "delivered")
        .expect("a delivery");
    assert!(
        field(last_delivery, "remote_host").contains(&net.ip(INTERNET_MX).to_string()),
        "the final delivery did not go to the MX: {last_delivery:#}"
    );
    assert!(
        events
            .iter()
            .all(|e| field(e, "message_id").contains("scanner-loop-1@contoso.test")),
        "the hops are not traced under the message's Message-ID: {events:#?}"
    );

    // The scanner's own trace: in from the gateway, rule, back out.
    let scanner_timeline = timeline_of(scanner);
    for (event, connector) in [
        ("received", "From gateway"),
        ("routed", "Back to gateway"),
        ("delivered", "Back to gateway"),
    ] {
        assert!(
            scanner_timeline.iter().any(|(e, c)| e == event && c == connector),
            "scanner trace lacks {event} via {connector}: {scanner_timeline:#?}"
        );
    }
}

fn timeline_of(node: &Node) -> Vec<(String, String)> {
    timeline(&node.trace(&[]))
}

#[test]
fn priority_order_and_stop_processing() {
    let net = Net(111);
    let sink = Sink::start(net.ip(SINK));
    // Listed in the opposite order of their priorities on purpose.
    let node = relay_node(
        net,
        &sink,
        r#"
[[rule]]
name = "Second"
priority = 1
[rule.conditions]
subject_or_body_contains = ["report"]
[rule.actions]
prepend_subject = "[SECOND] "

[[rule]]
name = "First"
priority = 0
stop_processing = true
[rule.conditions]
subject_or_body_contains = ["urgent"]
[rule.actions]
prepend_subject = "[FIRST] "
"#,
    );
    relay(net, &node, "x@fabrikam.test", "urgent report", &[]);
    relay(net, &node, "x@fabrikam.test", "weekly report", &[]);
    let arrived = sink.wait_for(2, Duration::from_secs(20));
    assert_eq!(
        subjects(&arrived),
        vec!["[FIRST] urgent report", "[SECOND] weekly report"],
        "stop_processing must keep the second rule from acting"
    );
}

#[test]
fn audit_mode_changes_only_the_trace() {
    let net = Net(112);
    let sink = Sink::start(net.ip(SINK));
    let node = relay_node(
        net,
        &sink,
        r#"
[[rule]]
name = "Would block"
mode = "audit"
[rule.conditions]
subject_or_body_contains = ["forbidden"]
[rule.actions]
reject = { code = "5.7.1", text = "Blocked by policy" }
prepend_subject = "[AUDITED] "
"#,
    );
    relay(net, &node, "x@fabrikam.test", "a forbidden word", &[]);
    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(
        subjects(&arrived),
        vec!["a forbidden word"],
        "the audit rule acted"
    );
    let events = node.trace(&[]);
    let matched = events
        .iter()
        .find(|e| field(e, "event") == "rule_matched")
        .unwrap_or_else(|| panic!("no rule_matched event: {events:#?}"));
    let detail = field(matched, "detail");
    assert!(
        detail.contains("Would block") && detail.contains("(audit"),
        "{detail}"
    );
    assert!(
        !events
            .iter()
            .any(|e| ["rejected", "bounced"].contains(&field(e, "event"))),
        "{events:#?}"
    );
}

#[test]
fn one_message_forks_into_internal_and_external_copies() {
    let net = Net(113);
    let sink = Sink::start(net.ip(SINK));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"{contoso}
[[outbound_connector]]
name = "To partner"
smart_hosts = ["{sink}"]
transport_rule_scoped = true

[[rule]]
name = "External"
[rule.conditions]
sent_to_scope = "not_in_organization"
[rule.actions]
route_via_connector = "To partner"
prepend_subject = "[EXT] "
"#,
            contoso = contoso_with_on_prem(net.ip(ON_PREM)),
            sink = sink.addr
        ),
    ));
    relay(
        net,
        &node,
        "bob@contoso.test,x@fabrikam.test",
        "quarterly plan",
        &[],
    );

    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1, "the external copy did not arrive");
    assert_eq!(
        arrived[0].header("subject").as_deref(),
        Some("[EXT] quarterly plan")
    );
    let rcpts: Vec<&str> = arrived[0]
        .rcpt_to
        .iter()
        .filter_map(|r| r.split(' ').next())
        .collect();
    assert_eq!(
        rcpts,
        vec!["<x@fabrikam.test>"],
        "the internal recipient went out too"
    );

    assert!(
        wait_until(Duration::from_secs(20), || !node
            .mailbox("contoso.test", "bob")
            .is_empty()),
        "the internal copy never reached the mailbox: {:?}",
        node.queue_json()
    );
    let mailbox = node.mailbox("contoso.test", "bob");
    assert_eq!(mailbox.len(), 1);
    assert_eq!(
        SinkMessage::from_bytes(&mailbox[0]).header("subject").as_deref(),
        Some("quarterly plan"),
        "the internal copy got the external prefix"
    );
}

#[test]
fn rule_reject_is_the_clients_reply_to_data() {
    let net = Net(114);
    let sink = Sink::start(net.ip(SINK));
    let node = relay_node(
        net,
        &sink,
        r#"
[[rule]]
name = "No forbidden words"
[rule.conditions]
subject_or_body_contains = ["forbidden"]
[rule.actions]
reject = { code = "5.7.1", text = "Blocked by policy" }
"#,
    );
    let run = send_from(
        &node,
        net.ip(ELSEWHERE),
        "eve@example.test",
        "bob@contoso.test",
        &["--header", "Subject: hello", "--body", "this is forbidden"],
    );
    assert_eq!(
        run.code,
        Some(26),
        "not refused after the message (end of DATA):\n{}",
        run.transcript
    );
    assert!(
        run.transcript.contains("550 5.7.1 Blocked by policy"),
        "{}",
        run.transcript
    );
    let fine = send_from(
        &node,
        net.ip(ELSEWHERE),
        "eve@example.test",
        "bob@contoso.test",
        &["--header", "Subject: hello", "--body", "nothing to see"],
    );
    assert!(fine.delivered(), "{}", fine.transcript);
    // contoso.test is authoritative: the clean message lands in bob's
    // mailbox (no connector, not even `*`, takes it), alone.
    assert!(
        wait_until(Duration::from_secs(20), || !node
            .mailbox("contoso.test", "bob")
            .is_empty()),
        "the clean message was not delivered: {:?}",
        node.queue_json()
    );
    pause(Duration::from_secs(1));
    let mailbox = node.mailbox("contoso.test", "bob");
    assert_eq!(mailbox.len(), 1, "the rejected message was delivered");
    assert!(
        String::from_utf8_lossy(&mailbox[0]).contains("nothing to see"),
        "{}",
        String::from_utf8_lossy(&mailbox[0])
    );
    assert_eq!(
        sink.count(),
        0,
        "mail for an authoritative domain left through the connector"
    );
    assert!(
        node.wait_for_empty_queue(Duration::from_secs(10)),
        "{:?}",
        node.queue_json()
    );
    let events = node.trace(&[]);
    let rejected = events
        .iter()
        .find(|e| field(e, "event") == "rejected")
        .unwrap_or_else(|| panic!("no rejected event: {events:#?}"));
    assert!(field(rejected, "detail").contains("5.7.1"), "{rejected:#}");
}

#[test]
fn quarantined_messages_are_released_or_deleted() {
    let net = Net(115);
    let sink = Sink::start(net.ip(SINK));
    let node = relay_node(
        net,
        &sink,
        r#"
[[rule]]
name = "Hold flagged"
[rule.conditions]
header_contains = { header = "X-Hold", words = ["yes"] }
[rule.actions]
quarantine = true
"#,
    );
    relay(
        net,
        &node,
        "x@fabrikam.test",
        "to release",
        &["--add-header", "X-Hold: yes"],
    );
    relay(
        net,
        &node,
        "x@fabrikam.test",
        "to delete",
        &["--add-header", "X-Hold: yes"],
    );
    relay(net, &node, "x@fabrikam.test", "not flagged", &[]);

    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(subjects(&arrived), vec!["not flagged"]);
    pause(Duration::from_secs(2));
    assert_eq!(sink.count(), 1, "a quarantined message was delivered");

    let held = node.cli_json(&["quarantine", "list", "--json"]);
    let held = held.as_array().cloned().unwrap_or_default();
    assert_eq!(held.len(), 2, "{held:#?}");
    assert!(
        held.iter().all(|h| field(h, "rule") == "Hold flagged"),
        "{held:#?}"
    );
    let id_of = |subject: &str| -> String {
        held.iter()
            .map(|h| field(h, "id").to_string())
            .find(|id| {
                let shown = node.cli_json(&["quarantine", "show", id, "--json"]);
                shown["headers"]
                    .as_array()
                    .is_some_and(|headers| headers.iter().any(|h| h.to_string().contains(subject)))
            })
            .unwrap_or_else(|| panic!("no quarantined message with {subject:?}: {held:#?}"))
    };
    let release = id_of("to release");
    let delete = id_of("to delete");
    assert_ne!(release, delete);

    node.cli_ok(&["quarantine", "release", &release]);
    let arrived = sink.wait_for(2, Duration::from_secs(20));
    assert_eq!(subjects(&arrived), vec!["not flagged", "to release"]);

    node.cli_ok(&["quarantine", "delete", &delete]);
    let left = node.cli_json(&["quarantine", "list", "--json"]);
    assert_eq!(left, serde_json::json!([]), "quarantine not empty");
    pause(Duration::from_secs(2));
    assert_eq!(sink.count(), 2, "the deleted message was delivered");
    let unknown = node.cli(&["quarantine", "release", &delete]);
    assert_eq!(
        unknown.status.code(),
        Some(1),
        "releasing a deleted message succeeded"
    );

    let kinds: Vec<String> = node
        .trace(&[])
        .iter()
        .map(|e| field(e, "event").to_string())
        .collect();
    for kind in ["quarantined", "released", "deleted"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} in the trace: {kinds:?}"
        );
    }
}
