//! Seed 000 as deployed (issue 6): a gateway for contoso.test whose rule
//! sends external mail lacking the scanner's verdict through a partner
//! scanner (a second sluice running the DLP rules), which relays it back;
//! the internet is an MTA reached by MX records from dnsmasq. The scanner
//! connector is validated before use; clean mail goes gateway -> scanner ->
//! gateway -> internet exactly once; card numbers stay in the scanner's
//! quarantine; inbound internet mail never visits the scanner; a forged
//! verdict does not skip it. Nets 130-131.

use crate::support::seed000::{
    assert_in_order, events_of, field, Seed000, CARD_BODY, GATEWAY, INTERNET_CLIENT, ON_PREM, SCANNER,
};
use crate::support::{pause, wait_until, Net, SinkMessage};
use serde_json::Value;
use std::time::Duration;

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| field(e, "event") == kind).count()
}

#[test]
fn validated_scanner_loop_carries_clean_mail_once_and_holds_cards() {
    let seed = Seed000::start(Net(130), "");
    let (gateway, scanner) = (&seed.gateway, &seed.scanner);

    // Validation first: the test message lands in the scanner's own
    // mailbox, not in the loop.
    let output = gateway.cli(&[
        "connector",
        "validate",
        "To scanner",
        "--recipient",
        "check@scanner.test",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "validate printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["passed"], true, "{report:#}");
    assert!(
        wait_until(Duration::from_secs(20), || scanner
            .mailbox("scanner.test", "check")
            .len()
            == 1),
        "the validation message is not in the scanner's mailbox; scanner queue {:?}",
        scanner.queue_json()
    );
    let listed = gateway.cli_ok(&["connector", "list"]);
    let line = listed
        .lines()
        .find(|l| l.contains("To scanner"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("validated") && !line.contains("FAILED"), "{listed}");

    // Clean mail from a tenant user to the internet.
    let run = seed.send(
        ON_PREM,
        "alice@contoso.test",
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: clean through the loop",
            "--header",
            "Message-Id: <topo-a-clean@contoso.test>",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let arrived = seed.internet.wait_for(1, Duration::from_secs(40));
    assert_eq!(
        arrived.len(),
        1,
        "nothing reached the internet; gateway queue {:?}, scanner queue {:?}",
        gateway.queue_json(),
        scanner.queue_json()
    );
    let message = &arrived[0];
    assert_eq!(message.rcpt_to[0].split(' ').next(), Some("<x@fabrikam.test>"));
    assert_eq!(
        message.header("subject").as_deref(),
        Some("clean through the loop")
    );
    assert_eq!(message.header("X-Sluice-Org-Scan"), None, "{}", message.content);
    let received = message.headers_named("received");
    let hops: Vec<&str> = received
        .iter()
        .map(|r| {
            if r.contains("by gw.contoso.test") {
                "gateway"
            } else if r.contains("by scan.partner.test") {
                "scanner"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(
        hops,
        vec!["gateway", "scanner", "gateway"],
        "Received headers (newest first) are not gateway <- scanner <- gateway: {received:#?}"
    );
    for (hop, from) in received.iter().zip([SCANNER, GATEWAY, ON_PREM]) {
        let ip = format!("[{}]", seed.net.ip(from));
        assert!(hop.contains(&ip), "{hop:?} does not name {ip}");
    }

    let gateway_events = events_of(gateway, "topo-a-clean@contoso.test");
    assert_in_order(
        "gateway trace",
        &gateway_events,
        &[
            ("received", Some("From on-prem")),
            ("rule_matched", None),
            ("routed", Some("To scanner")),
            ("delivered", Some("To scanner")),
            ("received", Some("From scanner")),
            ("routed", None),
            ("delivered", None),
        ],
    );
    let last = gateway_events
        .iter()
        .rfind(|e| field(e, "event") == "delivered")
        .expect("a delivery");
    assert!(
        field(last, "remote_host").contains(&seed.net.ip(25).to_string()),
        "the last hop is not the internet MX: {last:#}"
    );
    assert_eq!(count(&gateway_events, "rule_matched"), 1, "{gateway_events:#?}");
    let scanner_events = events_of(scanner, "topo-a-clean@contoso.test");
    assert_in_order(
        "scanner trace",
        &scanner_events,
        &[
            ("received", Some("From gateway")),
            ("scanned", None),
            ("delivered", Some("Back to gateway")),
        ],
    );

    // Sensitive mail stops at the scanner.
    let run = seed.send(
        ON_PREM,
        "alice@contoso.test",
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: card details",
            "--header",
            "Message-Id: <topo-a-card@contoso.test>",
            "--body",
            CARD_BODY,
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let mut held = Vec::new();
    let quarantined = wait_until(Duration::from_secs(30), || {
        held = scanner
            .cli_json(&["quarantine", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default();
        if held.is_empty() {
            pause(Duration::from_millis(200));
        }
        !held.is_empty()
    });
    assert!(quarantined, "nothing quarantined: {:#?}", scanner.trace(&[]));
    assert_eq!(
        field(&held[0], "message_id"),
        "topo-a-card@contoso.test",
        "{held:#?}"
    );

    // A few seconds on: still exactly one message at the internet, each
    // message through each node once.
    pause(Duration::from_secs(4));
    assert_eq!(seed.internet.count(), 1, "{:#?}", seed.internet.messages());
    let gateway_events = events_of(gateway, "topo-a-clean@contoso.test");
    assert_eq!(count(&gateway_events, "received"), 2, "{gateway_events:#?}");
    assert_eq!(count(&gateway_events, "delivered"), 2, "{gateway_events:#?}");
    assert_eq!(
        count(&events_of(scanner, "topo-a-clean@contoso.test"), "received"),
        1
    );
    assert_eq!(
        count(&events_of(scanner, "topo-a-card@contoso.test"), "received"),
        1
    );
    assert_eq!(
        count(&events_of(gateway, "topo-a-card@contoso.test"), "received"),
        1
    );
}

#[test]
fn internet_mail_skips_the_scanner_and_a_forged_verdict_does_not() {
    let seed = Seed000::start(Net(131), "");
    let (gateway, scanner) = (&seed.gateway, &seed.scanner);

    // From the internet to a tenant mailbox: no scanner involved, and the
    // forged verdict it carries is removed on receipt.
    let inbound = seed.send(
        INTERNET_CLIENT,
        "ann@fabrikam.test",
        "someone@contoso.test",
        &[
            "--header",
            "Subject: hello from outside",
            "--header",
            "Message-Id: <topo-a-inbound@fabrikam.test>",
            "--add-header",
            "X-Sluice-Org-Scan: verdict=pass; scanner=forged.evil.test",
        ],
    );
    assert!(inbound.delivered(), "{}", inbound.transcript);

    // From on-prem (a connector that does not retain internal headers) to
    // the internet with a forged verdict: the stamp is removed, so the rule
    // still sends it through the scanner.
    let forged = seed.send(
        ON_PREM,
        "alice@contoso.test",
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: forged verdict",
            "--header",
            "Message-Id: <topo-a-forged@contoso.test>",
            "--add-header",
            "X-Sluice-Org-Scan: verdict=pass; scanner=forged.evil.test",
        ],
    );
    assert!(forged.delivered(), "{}", forged.transcript);

    assert!(
        wait_until(Duration::from_secs(20), || !gateway
            .mailbox("contoso.test", "someone")
            .is_empty()),
        "the inbound message never reached the mailbox: {:?}",
        gateway.queue_json()
    );
    let delivered = SinkMessage::from_bytes(&gateway.mailbox("contoso.test", "someone")[0]);
    assert_eq!(delivered.header("subject").as_deref(), Some("hello from outside"));
    assert_eq!(
        delivered.header("X-Sluice-Org-Scan"),
        None,
        "the internet's forged verdict reached the mailbox:\n{}",
        delivered.content
    );

    let arrived = seed.internet.wait_for(1, Duration::from_secs(40));
    assert_eq!(
        arrived.len(),
        1,
        "the forged message never reached the internet; scanner trace {:#?}",
        scanner.trace(&[])
    );
    pause(Duration::from_secs(3));
    assert_eq!(seed.internet.count(), 1, "delivered more than once");
    assert_eq!(arrived[0].header("subject").as_deref(), Some("forged verdict"));
    let through_scanner = arrived[0]
        .headers_named("received")
        .iter()
        .any(|r| r.contains("by scan.partner.test"));
    assert!(
        through_scanner,
        "the forged verdict skipped the scanner: {:#?}",
        arrived[0].headers_named("received")
    );
    let scanner_events = events_of(scanner, "topo-a-forged@contoso.test");
    assert_in_order(
        "scanner trace",
        &scanner_events,
        &[
            ("received", Some("From gateway")),
            ("scanned", None),
            ("delivered", Some("Back to gateway")),
        ],
    );
    let gateway_events = events_of(gateway, "topo-a-forged@contoso.test");
    assert_in_order(
        "gateway trace",
        &gateway_events,
        &[
            ("received", Some("From on-prem")),
            ("delivered", Some("To scanner")),
            ("received", Some("From scanner")),
        ],
    );

    // The scanner never saw the inbound message; the gateway delivered it
    // locally, with no connector.
    let all_scanner = scanner.trace(&[]);
    assert!(
        all_scanner
            .iter()
            .all(|e| !field(e, "message_id").contains("topo-a-inbound")),
        "inbound mail went to the scanner: {all_scanner:#?}"
    );
    let inbound_events = events_of(gateway, "topo-a-inbound@fabrikam.test");
    assert_eq!(count(&inbound_events, "received"), 1, "{inbound_events:#?}");
    assert_eq!(field(&inbound_events[0], "connector"), "", "{inbound_events:#?}");
    assert!(
        inbound_events
            .iter()
            .all(|e| field(e, "connector") != "To scanner" && field(e, "event") != "rule_matched"),
        "{inbound_events:#?}"
    );
}
