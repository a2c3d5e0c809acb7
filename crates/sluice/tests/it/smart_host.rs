//! Smart-host availability: a message waits (deferred) while its smart
//! host is down and goes out on a later retry; with two smart hosts, the
//! second takes the mail when the first refuses connections. Nets 40-41.

use crate::support::{swaks, Net, Node, NodeOptions, Sink};
use std::net::SocketAddr;
use std::time::Duration;

const NODE: u8 = 1;
const FIRST: u8 = 21;
const SECOND: u8 = 22;
const ON_PREM: u8 = 40;

fn objects(net: Net, smart_hosts: &[SocketAddr]) -> String {
    let hosts: Vec<String> = smart_hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["{}/32"]

[[outbound_connector]]
name = "Smart hosts"
recipient_domains = ["*"]
smart_hosts = [{}]
"#,
        net.ip(ON_PREM),
        hosts.join(", ")
    )
}

fn send(net: Net, node: &Node, subject: &str) {
    let on_prem = net.ip(ON_PREM).to_string();
    let run = swaks(
        node.smtp,
        &[
            "--local-interface",
            &on_prem,
            "--from",
            "alice@contoso.test",
            "--to",
            "bob@fabrikam.test",
            "--header",
            &format!("Subject: {subject}"),
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
}

#[test]
fn deferred_while_smart_host_is_down_then_delivered_on_retry() {
    let net = Net(40);
    // Reserved but unused: connections to it are refused until the sink
    // starts there.
    let smart_host = net.addr(FIRST);
    let node = Node::start(NodeOptions::new(net.ip(NODE), &objects(net, &[smart_host])));
    send(net, &node, "waits for the smart host");

    let (_, _, error) = node.wait_for_recipient("bob@fabrikam.test", "deferred", Duration::from_secs(30));
    assert!(!error.is_empty(), "a deferred recipient must carry last_error");

    let sink = Sink::start_on(smart_host);
    let arrived = sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(arrived.len(), 1, "not delivered once the smart host came up");
    assert_eq!(
        arrived[0].header("subject").as_deref(),
        Some("waits for the smart host")
    );
    assert!(
        node.wait_for_empty_queue(Duration::from_secs(15)),
        "delivered message still queued: {:?}",
        node.queue_json()
    );
}

#[test]
fn second_smart_host_takes_mail_when_first_refuses_connections() {
    let net = Net(41);
    let down = net.addr(FIRST);
    let sink = Sink::start(net.ip(SECOND));
    let node = Node::start(NodeOptions::new(net.ip(NODE), &objects(net, &[down, sink.addr])));
    send(net, &node, "fail over");
    // The first attempt already tries both hosts, so this is well within
    // the first retry interval plus slack.
    let arrived = sink.wait_for(1, Duration::from_secs(15));
    assert_eq!(arrived.len(), 1, "the second smart host was not used");
    assert!(
        node.wait_for_empty_queue(Duration::from_secs(15)),
        "delivered message still queued: {:?}",
        node.queue_json()
    );
}
