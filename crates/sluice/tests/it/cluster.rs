//! Several nodes on one PostgreSQL store (SPEC section 8): objects changed
//! through one node are in force on the others within 2 s, and every node
//! lists the whole cluster.

use crate::support::postgres::{store_toml, ScratchPostgres};
use crate::support::{wait_until, Net, Node, NodeOptions, RawSmtp};
use std::time::{Duration, Instant};

const NET: Net = Net(231);

fn cluster_node(server: &ScratchPostgres, host: u8, name: &str, objects: &str) -> Node {
    let mut options = NodeOptions::new(NET.ip(host), objects);
    options.hostname = name.to_string();
    options.extra_toml = store_toml(server, "sluice");
    Node::start(options)
}

/// The reply to RCPT TO:<rcpt> in a fresh session.
fn rcpt_reply(node: &Node, rcpt: &str) -> u16 {
    let (mut client, greeting) = RawSmtp::connect(node.smtp).expect("connect");
    assert_eq!(greeting.code, 220);
    assert_eq!(client.command("EHLO client.test").expect("EHLO").code, 250);
    assert_eq!(
        client
            .command("MAIL FROM:<someone@outside.test>")
            .expect("MAIL")
            .code,
        250
    );
    let code = client.command(&format!("RCPT TO:<{rcpt}>")).expect("RCPT").code;
    let _ = client.command("QUIT");
    code
}

#[test]
fn an_object_applied_on_one_node_is_in_force_on_the_other_within_two_seconds() {
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    let a = cluster_node(
        &server,
        1,
        "gw1.cluster.test",
        "[[accepted_domain]]\nname = \"contoso.test\"\ntype = \"authoritative\"\n",
    );
    let b = cluster_node(&server, 2, "gw2.cluster.test", "");

    // B never had the objects applied to it: it uses what A stored.
    assert_eq!(rcpt_reply(&b, "alice@contoso.test"), 250);
    assert_eq!(rcpt_reply(&b, "bob@fabrikam.test"), 550, "not yet accepted");

    a.cli_ok(&["domain", "add", "fabrikam.test"]);
    let applied = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || rcpt_reply(&b, "bob@fabrikam.test")
            == 250),
        "B still refuses the new domain {:?} after A applied it\n{}",
        applied.elapsed(),
        b.log()
    );

    // A message accepted by A is in the trace B reads.
    let (mut client, _) = RawSmtp::connect(a.smtp).expect("connect");
    let reply = client
        .send_message(
            "someone@outside.test",
            &["alice@contoso.test"],
            "From: someone@outside.test\r\nTo: alice@contoso.test\r\nMessage-ID: <shared@outside.test>\r\nSubject: hi\r\n\r\nbody",
        )
        .expect("transaction");
    assert_eq!(reply.code, 250, "{}", reply.text);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let events = b.trace(&["--message-id", "shared@outside.test"]);
            let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
            kinds.contains(&"received") && kinds.contains(&"delivered")
        }),
        "B's trace lacks A's message: {:?}",
        b.trace(&["--message-id", "shared@outside.test"])
    );

    // Both list both, each marking itself.
    for (node, me) in [(&a, "gw1.cluster.test"), (&b, "gw2.cluster.test")] {
        let nodes = node.cli_json(&["node", "list", "--json"]);
        let nodes = nodes.as_array().expect("a list");
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["gw1.cluster.test", "gw2.cluster.test"]);
        for n in nodes {
            assert_eq!(n["this_node"].as_bool(), Some(n["name"] == me));
            assert!(n["heartbeat_age_ms"].as_u64().unwrap() < 30_000);
            assert_eq!(n["leased"].as_u64(), Some(0));
            assert!(!n["smtp"].as_array().unwrap().is_empty());
        }
        assert_eq!(nodes[1]["smtp"][0].as_str(), Some(b.smtp.to_string().as_str()));
        assert_eq!(nodes[0]["admin"].as_str(), Some(a.admin.to_string().as_str()));
        let table = node.cli_ok(&["node", "list"]);
        assert!(table.contains(&format!("{me} *")), "{table}");
    }
}

#[test]
fn node_list_on_the_embedded_store_shows_this_node_alone() {
    let net = Net(232);
    let mut options = NodeOptions::new(net.ip(1), "");
    options.hostname = "solo.contoso.test".to_string();
    let node = Node::start(options);
    let nodes = node.cli_json(&["node", "list", "--json"]);
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["name"].as_str(), Some("solo.contoso.test"));
    assert_eq!(nodes[0]["this_node"].as_bool(), Some(true));
    assert_eq!(nodes[0]["smtp"][0].as_str(), Some(node.smtp.to_string().as_str()));
    assert_eq!(nodes[0]["admin"].as_str(), Some(node.admin.to_string().as_str()));
}

/// A whole transaction to alice@contoso.test; the reply to the final dot.
fn send(node: &Node, subject: &str) -> (u16, String) {
    let (mut client, _) = RawSmtp::connect(node.smtp).expect("connect");
    let reply = client
        .send_message(
            "someone@outside.test",
            &["alice@contoso.test"],
            &format!(
                "From: someone@outside.test\r\nTo: alice@contoso.test\r\nSubject: {subject}\r\n\r\nbody"
            ),
        )
        .expect("transaction");
    let _ = client.command("QUIT");
    (reply.code, reply.text)
}

fn subjects(node: &Node) -> Vec<String> {
    node.mailbox("contoso.test", "alice")
        .iter()
        .filter_map(|message| {
            String::from_utf8_lossy(message)
                .lines()
                .find_map(|line| line.strip_prefix("Subject: ").map(String::from))
        })
        .collect()
}

#[test]
fn a_node_whose_database_is_away_never_says_250_and_resumes_when_it_returns() {
    let net = Net(233);
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    let mut options = NodeOptions::new(
        net.ip(1),
        "[[accepted_domain]]\nname = \"contoso.test\"\ntype = \"authoritative\"\n",
    );
    options.extra_toml = store_toml(&server, "sluice");
    let node = Node::start(options);

    assert_eq!(send(&node, "before").0, 250);
    assert!(wait_until(Duration::from_secs(20), || subjects(&node) == ["before"]));

    server.stop().expect("stop PostgreSQL");
    let (code, text) = send(&node, "while away");
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.3.0"), "{text}");

    server.start_again().expect("start PostgreSQL again");
    assert!(
        wait_until(Duration::from_secs(30), || send(&node, "after").0 == 250),
        "the node does not accept again\n{}",
        node.log()
    );
    assert!(wait_until(Duration::from_secs(20), || subjects(&node).len() >= 2));
    let got = subjects(&node);
    assert!(got.contains(&"after".to_string()), "{got:?}");
    assert!(!got.contains(&"while away".to_string()), "{got:?}");
}
