//! Display safety (issue 12 point 8): an SMTP client writes terminal escape
//! sequences into its EHLO name, Message-ID and Subject; `sluice trace`,
//! `sluice queue` and `sluice quarantine` show them escaped (`\x1b`), never
//! raw, and the node's log carries none. Net 216.

use crate::support::{free_port, wait_until, Net, Node, NodeOptions, RawSmtp};
use std::time::Duration;

const NODE: u8 = 1;

/// Raw control bytes a terminal would obey (ESC, BEL, CSI as UTF-8 C1).
fn has_raw_controls(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

fn send(node: &Node, rcpts: &[&str], content: &str) {
    let (mut client, _) = RawSmtp::connect(node.smtp).expect("connect");
    let ehlo = client
        .command("EHLO evil\u{1b}]0;pwned\u{7}\u{1b}[2J.test")
        .expect("ehlo");
    assert_eq!(ehlo.code, 250, "{}", ehlo.text);
    assert_eq!(
        client
            .command("MAIL FROM:<mallory@fabrikam.test>")
            .expect("mail")
            .code,
        250
    );
    for rcpt in rcpts {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).expect("rcpt");
        assert_eq!(reply.code, 250, "{}", reply.text);
    }
    assert_eq!(client.command("DATA").expect("data").code, 354);
    client.send_raw(content.as_bytes()).expect("content");
    client.send_raw(b"\r\n.\r\n").expect("end");
    let reply = client.read_reply().expect("end of data");
    assert_eq!(reply.code, 250, "{}", reply.text);
    let _ = client.command("QUIT");
}

#[test]
fn client_escape_sequences_are_shown_escaped() {
    let net = Net(216);
    let dead = format!("{}:{}", net.ip(26), free_port(net.ip(26)));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"
type = "authoritative"

[[accepted_domain]]
name = "legacy.test"
type = "internal_relay"

[[outbound_connector]]
name = "Legacy"
recipient_domains = ["legacy.test"]
smart_hosts = ["{dead}"]

[[rule]]
name = "Hold flagged"
[rule.conditions]
header_contains = {{ header = "X-Hold", words = ["yes"] }}
[rule.actions]
quarantine = true
"#
        ),
    ));
    send(
        &node,
        &["carol@legacy.test"],
        "Message-ID: <\u{1b}[31mred@fabrikam.test>\r\nSubject: \u{1b}[2Jqueued\r\n\r\nbody",
    );
    send(
        &node,
        &["bob@contoso.test"],
        "Message-ID: <held\u{9b}1m@fabrikam.test>\r\nSubject: \u{1b}]0;title\u{7}held\r\nX-Hold: yes\r\n\r\nbody",
    );
    let (_, status, _) = node.wait_for_recipient("carol@legacy.test", "deferred", Duration::from_secs(30));
    assert_eq!(status, "deferred");
    assert!(
        wait_until(Duration::from_secs(10), || node
            .cli_ok(&["quarantine", "list"])
            .contains("Hold flagged")),
        "nothing quarantined"
    );

    let queue_id = node.queue_json()[0]["id"].as_str().expect("queue id").to_string();
    let held = node.cli_json(&["quarantine", "list", "--json"]);
    let held_id = held[0]["id"].as_str().expect("held id").to_string();
    let shown = [
        ("trace", node.cli_ok(&["trace"])),
        ("queue list", node.cli_ok(&["queue", "list"])),
        ("queue show", node.cli_ok(&["queue", "show", &queue_id])),
        ("quarantine list", node.cli_ok(&["quarantine", "list"])),
        ("quarantine show", node.cli_ok(&["quarantine", "show", &held_id])),
        ("trace --json", node.cli_ok(&["trace", "--json"])),
        (
            "quarantine show --json",
            node.cli_ok(&["quarantine", "show", &held_id, "--json"]),
        ),
    ];
    for (what, text) in &shown {
        assert!(!has_raw_controls(text), "{what} shows raw controls: {text:?}");
    }
    let text_of = |what: &str| &shown.iter().find(|(w, _)| *w == what).expect("shown").1;
    // Escaped, not dropped: the administrator sees what was sent.
    assert!(
        text_of("trace").contains(r"helo=evil\x1b]0;pwned\x07\x1b[2J.test"),
        "{}",
        text_of("trace")
    );
    assert!(
        text_of("trace").contains(r"\x1b[31mred@fabrikam.test"),
        "{}",
        text_of("trace")
    );
    assert!(
        text_of("queue show").contains(r"\x1b[31mred@fabrikam.test"),
        "{}",
        text_of("queue show")
    );
    let quarantined = text_of("quarantine show");
    assert!(
        quarantined.contains(r"Subject: \x1b]0;title\x07held"),
        "{quarantined}"
    );
    assert!(quarantined.contains(r"held\x9b1m@fabrikam.test"), "{quarantined}");
    assert!(
        text_of("quarantine show --json").contains(r"\u009b"),
        "{}",
        text_of("quarantine show --json")
    );
    let log = node.log();
    assert!(!has_raw_controls(&log), "raw controls in the node log");
}
