//! Relay control at RCPT (SPEC section 4, "Acceptance comes before
//! routing"): a `*` outbound connector never makes an open relay; an
//! on_premises connector's IP may relay for accepted sender domains; relay
//! rights follow the objects in force at each MAIL FROM.
//! Nets 30, 165 and 221.

use crate::support::{on_prem_relay, swaks, Net, Node, NodeOptions, RawSmtp, Sink};
use std::time::Duration;

const NODE: u8 = 1;
const SMART_HOST: u8 = 21;
const ON_PREM: u8 = 40;
const STRANGER: u8 = 50;

#[test]
fn anonymous_relay_is_refused_and_on_prem_relay_is_delivered() {
    let net = Net(30);
    let sink = Sink::start(net.ip(SMART_HOST));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &on_prem_relay(net.ip(ON_PREM), "Everything", "*", sink.addr),
    ));
    let send = |source: u8, from: &str| {
        let source = net.ip(source).to_string();
        swaks(
            node.smtp,
            &[
                "--local-interface",
                &source,
                "--from",
                from,
                "--to",
                "victim@fabrikam.test",
                "--header",
                &format!("Subject: relay attempt from {source} as {from}"),
            ],
        )
    };

    for from in ["alice@contoso.test", "spammer@evil.test"] {
        let run = send(STRANGER, from);
        assert_eq!(
            run.code,
            Some(24),
            "anonymous relay as {from} was not refused at RCPT:\n{}",
            run.transcript
        );
        assert!(
            run.transcript.contains("550 5.7.1"),
            "refusal is not 550 5.7.1:\n{}",
            run.transcript
        );
    }

    // On-prem may relay only for senders in an accepted domain.
    let run = send(ON_PREM, "spammer@evil.test");
    assert_eq!(run.code, Some(24), "{}", run.transcript);
    assert!(run.transcript.contains("550 5.7.1"), "{}", run.transcript);

    let run = send(ON_PREM, "alice@contoso.test");
    assert!(run.delivered(), "on-prem relay refused:\n{}", run.transcript);

    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1, "on-prem relay never reached the smart host");
    assert_eq!(
        arrived[0].mail_from.split(' ').next(),
        Some("<alice@contoso.test>")
    );
    assert_eq!(
        arrived[0].rcpt_to[0].split(' ').next(),
        Some("<victim@fabrikam.test>")
    );
    // Give any wrongly accepted relay attempt time to show up too.
    crate::support::pause(Duration::from_secs(2));
    assert_eq!(sink.count(), 1, "a refused relay attempt was delivered");
}

/// SPEC section 4, routing step 2: mail for an authoritative accepted
/// domain lands in this node's mailboxes; the `*` connector carries only
/// mail that leaves the organisation. Net 221.
#[test]
fn star_connector_never_takes_mail_for_an_authoritative_domain() {
    let net = Net(221);
    let sink = Sink::start(net.ip(SMART_HOST));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &on_prem_relay(net.ip(ON_PREM), "Smart host", "*", sink.addr),
    ));
    let send = |source: u8, from: &str, to: &str| {
        let source = net.ip(source).to_string();
        let run = swaks(
            node.smtp,
            &[
                "--local-interface",
                &source,
                "--from",
                from,
                "--to",
                to,
                "--header",
                &format!("Subject: for {to}"),
            ],
        );
        assert!(run.delivered(), "{to}: refused\n{}", run.transcript);
    };
    send(STRANGER, "ann@fabrikam.test", "bob@contoso.test");
    send(ON_PREM, "alice@contoso.test", "bob@contoso.test");
    send(ON_PREM, "alice@contoso.test", "victim@fabrikam.test");

    assert!(
        crate::support::wait_until(Duration::from_secs(20), || node
            .mailbox("contoso.test", "bob")
            .len()
            == 2),
        "bob's mail did not reach his mailbox on this node: queue {:?}",
        node.queue_json()
    );
    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(
        arrived.len(),
        1,
        "the relayed message never reached the smart host"
    );
    crate::support::pause(Duration::from_secs(1));
    let rcpts: Vec<String> = sink.messages().iter().flat_map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(rcpts.len(), 1, "{rcpts:?}");
    assert!(rcpts[0].starts_with("<victim@fabrikam.test>"), "{rcpts:?}");

    // route explain shows the order that decided.
    let explained = node.cli_json(&[
        "route",
        "explain",
        "--json",
        "--from",
        "alice@contoso.test",
        "--to",
        "bob@contoso.test",
        "--to",
        "victim@fabrikam.test",
        "--ip",
        &net.ip(ON_PREM).to_string(),
    ]);
    let recipient = |address: &str| {
        explained["recipients"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["address"] == address))
            .cloned()
            .unwrap_or_else(|| panic!("{address} not explained: {explained:#}"))
    };
    let bob = recipient("bob@contoso.test");
    assert_eq!(bob["next_hop"], "local mailbox", "{explained:#}");
    assert!(
        bob["route_step"]
            .as_str()
            .unwrap_or_default()
            .starts_with("step 2:"),
        "{explained:#}"
    );
    let victim = recipient("victim@fabrikam.test");
    assert_eq!(victim["connector"], "Smart host", "{explained:#}");
    assert!(
        victim["route_step"]
            .as_str()
            .unwrap_or_default()
            .starts_with("step 3:"),
        "{explained:#}"
    );
}

#[test]
fn removing_the_on_prem_connector_ends_relay_in_an_open_session() {
    let net = Net(165);
    let sink = Sink::start(net.ip(SMART_HOST));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &on_prem_relay(net.ip(ON_PREM), "Everything", "*", sink.addr),
    ));
    let (mut client, greeting) = RawSmtp::connect_from(node.smtp, net.ip(ON_PREM)).expect("connect");
    assert_eq!(greeting.code, 220, "{greeting:?}");
    let first = client
        .send_message(
            "alice@contoso.test",
            &["victim@fabrikam.test"],
            "Subject: first transaction\r\n\r\nrelayed while the connector exists",
        )
        .expect("first transaction");
    assert_eq!(first.code, 250, "on-prem relay refused: {first:?}");

    node.cli_ok(&["connector", "remove", "On-prem"]);

    // Same connection, next transaction: judged with the objects as they are now.
    let mail = client.command("MAIL FROM:<alice@contoso.test>").expect("MAIL");
    assert_eq!(mail.code, 250, "{mail:?}");
    let rcpt = client.command("RCPT TO:<victim@fabrikam.test>").expect("RCPT");
    assert_eq!(
        rcpt.code, 550,
        "relay still granted after the connector was removed: {rcpt:?}"
    );
    assert!(rcpt.text.starts_with("550 5.7.1"), "{rcpt:?}");
    // Accepted domains stay open to the same session.
    let local = client.command("RCPT TO:<bob@contoso.test>").expect("RCPT");
    assert_eq!(local.code, 250, "{local:?}");
    let _ = client.command("QUIT");

    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(
        arrived.len(),
        1,
        "the first transaction never reached the smart host"
    );
    crate::support::pause(Duration::from_secs(1));
    assert_eq!(sink.count(), 1, "mail relayed after the connector was removed");
}
