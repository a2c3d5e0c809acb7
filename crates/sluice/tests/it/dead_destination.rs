//! A dead smart host is a destination, not a list of messages: after a
//! few refused connections it is marked down, its mail waits for a probe
//! without a connection per message, and it all goes when the host
//! answers. Net 180.

use crate::support::{on_prem_relay, pause, wait_until, Net, Node, NodeOptions, RawSmtp, Sink};
use std::net::SocketAddr;
use std::time::Duration;

const NODE: u8 = 1;
const SMART_HOST: u8 = 21;
const ON_PREM: u8 = 40;
pub const MESSAGES: usize = 40;

/// A node whose one route is a smart host with nothing listening (every
/// connection refused until a sink starts at the address returned),
/// marked down after 3 failures and probed every 2 s, backing off to
/// `probe_max`; `MESSAGES` messages from on-premises are queued for it.
pub fn mail_for_a_dead_smart_host(net: Net, probe_max: &str) -> (Node, SocketAddr) {
    let smart_host = net.addr(SMART_HOST);
    let objects = on_prem_relay(net.ip(ON_PREM), "Smart host", "*", smart_host);
    let mut options = NodeOptions::new(net.ip(NODE), &objects);
    options.delivery_extra = vec![
        "destination_down_after = 3".into(),
        "destination_probe = \"2s\"".into(),
        format!("destination_probe_max = \"{probe_max}\""),
    ];
    let node = Node::start(options);
    let (mut client, greeting) =
        RawSmtp::connect_from(node.smtp, net.ip(ON_PREM)).expect("connecting from on-premises");
    assert_eq!(greeting.code, 220);
    for i in 0..MESSAGES {
        let reply = client
            .send_message(
                "alice@contoso.test",
                &["bob@fabrikam.test"],
                &format!("Subject: backlog {i}\r\n\r\nbody {i}"),
            )
            .expect("sending a message");
        assert_eq!(reply.code, 250, "message {i}: {reply:?}");
    }
    (node, smart_host)
}

fn connection_failures(node: &Node) -> usize {
    node.log().matches("next hop failed").count()
}

#[test]
fn a_dead_smart_host_gets_probes_not_a_connection_per_message_and_its_mail_goes_when_it_answers() {
    let (node, smart_host) = mail_for_a_dead_smart_host(Net(180), "2s");
    let all_deferred = wait_until(Duration::from_secs(30), || {
        let recipients = node.queued_recipients();
        recipients.len() == MESSAGES && recipients.iter().all(|(_, status, _)| status == "deferred")
    });
    assert!(all_deferred, "not all deferred: {:?}", node.queued_recipients());
    // Five seconds down: the first failures, then one probe every 2 s.
    pause(Duration::from_secs(5));
    let attempts = connection_failures(&node);
    assert!(
        (3..=12).contains(&attempts),
        "{attempts} connection attempts for {MESSAGES} messages:\n{}",
        node.log()
    );
    let waiting = node.queued_recipients();
    assert!(
        waiting
            .iter()
            .any(|(_, _, error)| error.contains("destination not answering")),
        "{waiting:?}"
    );
    // It answers: the next probe goes through and the rest follows.
    let sink = Sink::start_on(smart_host);
    let arrived = sink.wait_for(MESSAGES, Duration::from_secs(30));
    assert_eq!(arrived.len(), MESSAGES);
    assert!(
        node.wait_for_empty_queue(Duration::from_secs(15)),
        "{:?}",
        node.queue_json()
    );
}
