//! Large messages go to disk as they arrive (memory grows with sessions,
//! not message sizes); what a crash leaves in the spool is cleared at the
//! next start; the message delivered is the one received, byte for byte.
//! Net 155.

use crate::support::{wait_until, Net, Node, NodeOptions, RawSmtp};
use std::time::Duration;

const NODE: u8 = 1;
const CLIENT: u8 = 80;

/// Files of sessions spooling right now.
fn incoming(node: &Node) -> Vec<(String, u64)> {
    std::fs::read_dir(node.data_dir().join("incoming"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let size = e.metadata().map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), size)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `lines` lines of 78 octets each, numbered so a lost or repeated chunk shows.
fn body(lines: usize) -> String {
    (0..lines)
        .map(|n| format!("{n:08} {}\r\n", "y".repeat(67)))
        .collect()
}

#[test]
fn large_messages_are_spooled_as_they_arrive_and_partial_ones_cleared() {
    let net = Net(155);
    let mut node = Node::start(NodeOptions::new(
        net.ip(NODE),
        "[[accepted_domain]]\nname = \"contoso.test\"\n",
    ));
    let start = |client: &mut RawSmtp| {
        for command in [
            "EHLO big.test",
            "MAIL FROM:<big@fabrikam.test>",
            "RCPT TO:<bob@contoso.test>",
        ] {
            assert_eq!(client.command(command).expect(command).code / 100, 2, "{command}");
        }
        assert_eq!(client.command("DATA").expect("DATA").code, 354);
    };

    // Half a message sent: it is on disk, not waiting in memory.
    let text = body(60_000); // 4.7 MB
    let (first_half, second_half) = text.split_at(text.len() / 2);
    let (mut client, _) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
    start(&mut client);
    client
        .send_raw(format!("Subject: big\r\n\r\n{first_half}").as_bytes())
        .expect("first half");
    let mut spooled = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            spooled = incoming(&node);
            spooled
                .iter()
                .any(|(_, size)| *size as usize >= first_half.len() / 2)
        }),
        "the first half of the message never reached the spool: {spooled:?}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let incoming_dir = node.data_dir().join("incoming");
        let dir_mode = std::fs::metadata(&incoming_dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700, "incoming/ is not private");
        let file_mode = std::fs::metadata(incoming_dir.join(&spooled[0].0))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600, "a spool file is not private");
    }
    client.send_raw(second_half.as_bytes()).expect("second half");
    client.send_raw(b".\r\n").expect("end of data");
    let reply = client.read_reply().expect("reply");
    assert_eq!(reply.code, 250, "{reply:?}");
    let _ = client.command("QUIT");
    assert!(
        incoming(&node).is_empty(),
        "spool file left after the 250: {:?}",
        incoming(&node)
    );

    let mut delivered = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            delivered = node.mailbox("contoso.test", "bob");
            !delivered.is_empty()
        }),
        "the large message was not delivered"
    );
    let message = String::from_utf8_lossy(&delivered[0]).into_owned();
    let delivered_body = message.split_once("\r\n\r\n").expect("header and body").1;
    assert_eq!(delivered_body.len(), text.len(), "body length changed on the way");
    assert!(delivered_body == text, "body content changed on the way");

    // A crash mid-transfer leaves a partial file; the next start clears it
    // and nothing of it is queued.
    let (mut client, _) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
    start(&mut client);
    client
        .send_raw(format!("Subject: cut\r\n\r\n{first_half}").as_bytes())
        .expect("partial");
    assert!(
        wait_until(Duration::from_secs(20), || !incoming(&node).is_empty()),
        "the partial message never reached the spool"
    );
    node.restart();
    drop(client);
    assert!(
        incoming(&node).is_empty(),
        "partial files survived a restart: {:?}",
        incoming(&node)
    );
    assert!(node.log().contains("removed partial messages"), "{}", node.log());
    assert!(node.queue_json().is_empty(), "a partial message was queued");
}
