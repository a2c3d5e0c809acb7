//! Limits against hostile clients (SPEC section 11), configured in
//! `sluice.toml` and checked over the wire against the real binary.
//! Nets 152 and 153.

use crate::support::{wait_until, Net, Node, NodeOptions, RawSmtp};
use std::time::Duration;

const NODE: u8 = 1;
const CLIENT: u8 = 60;
const OTHER_CLIENT: u8 = 61;

const OBJECTS: &str = r#"
[[accepted_domain]]
name = "contoso.test"
"#;

#[test]
fn per_address_connections_and_errors_follow_the_config() {
    let net = Net(152);
    let mut options = NodeOptions::new(net.ip(NODE), OBJECTS);
    options.smtp_extra = vec![
        "max_connections_per_ip = 3".to_string(),
        "max_errors = 2".to_string(),
    ];
    let node = Node::start(options);

    let mut open = Vec::new();
    for n in 0..3 {
        let (client, greeting) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
        assert_eq!(greeting.code, 220, "session {n}: {greeting:?}");
        open.push(client);
    }
    let (_, refused) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
    assert_eq!(refused.code, 421, "{refused:?}");
    assert!(refused.text.starts_with("421 4.7.0"), "{refused:?}");

    // Another address is not affected by the first one's sessions.
    let (mut prober, greeting) = RawSmtp::connect_from(node.smtp, net.ip(OTHER_CLIENT)).expect("connect");
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(prober.command("EHLO prober.test").expect("EHLO").code, 250);
    assert_eq!(prober.command("MAIL FROM:<p@evil.test>").expect("MAIL").code, 250);
    for n in 0..2 {
        let reply = prober
            .command(&format!("RCPT TO:<guess{n}@fabrikam.test>"))
            .expect("RCPT");
        assert!(reply.text.starts_with("550 5.7.1"), "{reply:?}");
    }
    let last = prober.command("RCPT TO:<guess2@fabrikam.test>").expect("RCPT");
    assert!(
        last.text.starts_with("421 4.7.0"),
        "third refusal was not the end: {last:?}"
    );
    assert!(
        prober.drain(Duration::from_secs(2)).is_empty(),
        "the node kept talking after 421"
    );

    // Places come back when sessions end.
    for mut client in open.drain(..) {
        let _ = client.command("QUIT");
    }
    let mut greeted = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            greeted = RawSmtp::connect_from(node.smtp, net.ip(CLIENT))
                .ok()
                .map(|(_, greeting)| greeting.code);
            greeted == Some(220)
        }),
        "no place freed after QUIT: {greeted:?}"
    );
}

#[test]
fn out_of_file_descriptors_is_a_clear_421() {
    let net = Net(153);
    let mut options = NodeOptions::new(net.ip(NODE), OBJECTS);
    options.open_files = Some(64);
    options.smtp_extra = vec!["max_connections_per_ip = 1000".to_string()];
    let node = Node::start(options);
    assert!(
        node.log().contains("open files limit"),
        "the open files limit is not logged:\n{}",
        node.log()
    );

    let mut open = Vec::new();
    let mut refusal = None;
    for _ in 0..80 {
        let (client, greeting) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
        if greeting.code != 220 {
            refusal = Some(greeting);
            break;
        }
        open.push(client);
    }
    let refusal = refusal.expect("64 descriptors never ran out in 80 sessions");
    assert!(
        refusal.text.starts_with("421 4.3.2") && refusal.text.contains("Out of resources"),
        "{refusal:?} after {} sessions",
        open.len()
    );
    assert!(
        open.len() > 10,
        "only {} sessions fitted in 64 descriptors",
        open.len()
    );

    // Sessions still open keep working, and the node recovers once they end.
    let reply = open[0].command("NOOP").expect("NOOP");
    assert_eq!(reply.code, 250, "{reply:?}");
    for mut client in open.drain(..) {
        let _ = client.command("QUIT");
    }
    let mut greeted = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            greeted = RawSmtp::connect_from(node.smtp, net.ip(CLIENT))
                .ok()
                .map(|(_, greeting)| greeting.code);
            greeted == Some(220)
        }),
        "no session possible after descriptors were freed: {greeted:?}"
    );
}
