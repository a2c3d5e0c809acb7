//! Copies a message becomes under the rules (one per recipient group)
//! share its content: the body is held and stored once, each copy keeps
//! only its own header section. Measured on the node's peak memory, and
//! on the store's file and on what every copy delivers. Nets 156, 157.

use crate::support::{wait_until, Net, Node, NodeOptions, RawSmtp};
use std::time::Duration;

const NODE: u8 = 1;
const CLIENT: u8 = 80;

/// Recipients whose rule gives their copy its own header edits.
const FORKED: [&str; 8] = ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal"];

/// One rule per recipient in [`FORKED`]: `X-Copy` names it; `ben`'s copy
/// also gets a subject prefix and `cat`'s loses `X-Remove-Me`, so no two
/// copies have the same header section.
fn objects() -> String {
    let mut objects = String::from("[[accepted_domain]]\nname = \"contoso.test\"\n");
    for local in FORKED {
        objects += &format!(
            "\n[[rule]]\nname = \"Copy for {local}\"\n[rule.conditions]\nsent_to = [\"{local}@contoso.test\"]\n\
             [rule.actions]\nset_header = {{ header = \"X-Copy\", value = \"{local}\" }}\n"
        );
        match local {
            "ben" => objects += "prepend_subject = \"[BEN] \"\n",
            "cat" => objects += "remove_header = \"X-Remove-Me\"\n",
            _ => {}
        }
    }
    objects
}

/// `octets` of body in numbered 78-octet lines, so a lost, repeated or
/// swapped chunk shows.
fn body(octets: usize) -> String {
    (0..octets / 78)
        .map(|n| format!("{n:010} {}\r\n", "q".repeat(65)))
        .collect()
}

/// Sends one message to `recipients` and expects 250.
fn send(node: &Node, net: Net, recipients: &[String], message: &str) {
    let (mut client, _) = RawSmtp::connect_from(node.smtp, net.ip(CLIENT)).expect("connect");
    let mut commands = vec![
        "EHLO big.test".to_string(),
        "MAIL FROM:<big@fabrikam.test>".to_string(),
    ];
    commands.extend(recipients.iter().map(|r| format!("RCPT TO:<{r}>")));
    for command in &commands {
        let reply = client.command(command).expect(command);
        assert_eq!(reply.code / 100, 2, "{command}: {reply:?}");
    }
    assert_eq!(client.command("DATA").expect("DATA").code, 354);
    client.send_raw(message.as_bytes()).expect("message");
    client.send_raw(b".\r\n").expect("end of data");
    client
        .set_reply_timeout(Duration::from_secs(120))
        .expect("timeout");
    let reply = client.read_reply().expect("reply");
    assert_eq!(reply.code, 250, "{reply:?}");
    let _ = client.command("QUIT");
}

/// Waits for one message in each local part's mailbox and returns them.
fn delivered(node: &Node, locals: &[&str]) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    assert!(
        wait_until(Duration::from_secs(120), || {
            all = locals
                .iter()
                .filter_map(|local| node.mailbox("contoso.test", local).pop())
                .collect();
            all.len() == locals.len()
        }),
        "not every copy was delivered: {} of {}",
        all.len(),
        locals.len()
    );
    all
}

fn split(message: &[u8]) -> (String, &[u8]) {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section")
        + 4;
    (
        String::from_utf8_lossy(&message[..at]).into_owned(),
        &message[at..],
    )
}

#[test]
fn rule_copies_of_a_large_message_share_one_body_in_memory() {
    const SIZE: usize = 24_000_000;
    let net = Net(156);
    let node = Node::start(NodeOptions::new(net.ip(NODE), &objects()));
    let store = node.data_dir().join("sluice.redb");
    let stored_before = std::fs::metadata(&store).expect("store file").len();
    let before = node.peak_rss();
    let recipients: Vec<String> = FORKED.iter().map(|l| format!("{l}@contoso.test")).collect();
    let text = body(SIZE);
    send(
        &node,
        net,
        &recipients,
        &format!("Subject: large\r\nX-Remove-Me: yes\r\n\r\n{text}"),
    );
    let stored = std::fs::metadata(&store).expect("store file").len() - stored_before;
    let copies = delivered(&node, &FORKED);
    let growth = node.peak_rss().saturating_sub(before);
    for copy in &copies {
        assert!(split(copy).1 == text.as_bytes(), "a copy's body changed");
    }
    eprintln!(
        "{} copies of {} MB: store +{} MB, peak memory +{} MB",
        FORKED.len(),
        SIZE / 1_000_000,
        stored / 1_000_000,
        growth / 1_000_000
    );
    // Eight copies each with its own content would be eight bodies in the
    // store, and eight in memory at once between the rules and the commit
    // (and in the store's transaction): more than 8 x 24 MB either way.
    // Shared, the store holds the body once, and the node holds it a few
    // times at most (loaded, written, one delivery at a time).
    assert!(
        stored < 4 * SIZE as u64,
        "the store grew by {} MB for one {} MB message in {} rule copies",
        stored / 1_000_000,
        SIZE / 1_000_000,
        FORKED.len()
    );
    assert!(
        growth < 5 * SIZE as u64,
        "peak memory grew by {} MB for one {} MB message in {} rule copies",
        growth / 1_000_000,
        SIZE / 1_000_000,
        FORKED.len()
    );
}

#[test]
fn every_rule_copy_delivers_its_own_header_edits_over_the_same_body() {
    let net = Net(157);
    let node = Node::start(NodeOptions::new(net.ip(NODE), &objects()));
    // Past the spooling threshold, and one recipient no rule forks.
    let text = body(2_000_000);
    let mut locals: Vec<&str> = FORKED.to_vec();
    locals.push("zed");
    let recipients: Vec<String> = locals.iter().map(|l| format!("{l}@contoso.test")).collect();
    let sent_header =
        "Subject: quarterly figures\r\nX-Remove-Me: yes\r\nMessage-ID: <copies@fabrikam.test>\r\n\r\n";
    send(&node, net, &recipients, &format!("{sent_header}{text}"));
    let copies = delivered(&node, &locals);

    let fields = |header: &str| -> Vec<String> {
        header
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut received = None;
    for (local, copy) in locals.iter().zip(&copies) {
        let (header, copy_body) = split(copy);
        assert!(copy_body == text.as_bytes(), "{local}: the body changed");
        let fields = fields(&header);
        let has = |field: &str| fields.iter().any(|f| f == field);
        let x_copy: Vec<&String> = fields.iter().filter(|f| f.starts_with("X-Copy:")).collect();
        if *local == "zed" {
            assert!(x_copy.is_empty(), "zed: {header}");
        } else {
            assert_eq!(x_copy, vec![&format!("X-Copy: {local}")], "{local}: {header}");
        }
        let subject = if *local == "ben" {
            "Subject: [BEN] quarterly figures"
        } else {
            "Subject: quarterly figures"
        };
        assert!(has(subject), "{local}: {header}");
        assert_eq!(has("X-Remove-Me: yes"), *local != "cat", "{local}: {header}");
        assert!(has("Message-ID: <copies@fabrikam.test>"), "{local}: {header}");
        // The node's own fields are the same in every copy.
        let ours: Vec<&String> = fields
            .iter()
            .filter(|f| f.starts_with("Received:") || f.starts_with(' ') || f.starts_with('\t'))
            .collect();
        match &received {
            None => received = Some(ours.iter().map(|f| f.to_string()).collect::<Vec<_>>()),
            Some(first) => assert_eq!(
                &ours.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                first,
                "{local}: the trace fields differ between copies"
            ),
        }
    }
    // Seven recipients, seven stored copies: one per rule and one untouched.
    let queued: Vec<String> = node
        .trace(&[])
        .iter()
        .filter(|e| e["event"] == "routed")
        .filter_map(|e| e["queue_id"].as_str().map(str::to_string))
        .collect();
    let mut ids = queued.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), locals.len(), "copies: {queued:?}");
}
