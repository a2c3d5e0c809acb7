//! A permanent refusal from the destination turns into a delivery status
//! notification (RFC 3464) in the sender's mailbox on this node; its
//! Status is the server's own enhanced code. Nets 50 and 222.

use crate::support::{swaks, wait_until, Net, Node, NodeOptions, Sink};
use mail_parser::{MessageParser, MimeHeaders};
use std::time::Duration;

const NODE: u8 = 1;
const DESTINATION: u8 = 21;
const ON_PREM: u8 = 40;

/// Sends alice -> bob through a destination that refuses bob with
/// `refusal`; returns the node, the destination and the DSN alice got.
fn bounce(net: Net, refusal: &str) -> (Node, Sink, Vec<u8>) {
    let destination = Sink::refusing_rcpt(net.ip(DESTINATION), refusal);
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"
type = "authoritative"

[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["{on_prem}/32"]

[[outbound_connector]]
name = "Fabrikam"
recipient_domains = ["fabrikam.test"]
smart_hosts = ["{destination}"]
"#,
            on_prem = net.ip(ON_PREM),
            destination = destination.addr
        ),
    ));
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
            "Subject: will bounce",
            "--header",
            "Message-ID: <dsn-test-1@contoso.test>",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);

    let arrived = wait_until(Duration::from_secs(30), || {
        !node.mailbox("contoso.test", "alice").is_empty()
    });
    assert!(
        arrived,
        "no DSN in {:?}; queue: {:?}",
        node.data_dir().join("mailboxes/contoso.test/alice/new"),
        node.queue_json()
    );
    let mut mailbox = node.mailbox("contoso.test", "alice");
    assert_eq!(mailbox.len(), 1, "exactly one DSN expected");
    let raw = mailbox.remove(0);
    (node, destination, raw)
}

/// The fields of the DSN's message/delivery-status part, unfolded to lines.
fn delivery_status(raw: &[u8]) -> String {
    let dsn = MessageParser::default()
        .parse(raw)
        .expect("DSN parses as a message");
    let status_part = dsn
        .parts
        .iter()
        .find(|part| {
            part.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("message")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("delivery-status"))
            })
        })
        .expect("DSN has a message/delivery-status part");
    String::from_utf8_lossy(
        &raw[status_part.raw_body_offset() as usize..status_part.raw_end_offset() as usize],
    )
    .replace("\r\n", "\n")
}

fn field(fields: &str, name: &str) -> Option<String> {
    fields.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

#[test]
fn permanent_failure_sends_dsn_to_sender_mailbox() {
    let net = Net(50);
    let refusal = "550 5.1.1 <bob@fabrikam.test>: Recipient address rejected: no such user";
    let (node, destination, raw) = bounce(net, refusal);
    let raw = &raw;
    let dsn = MessageParser::default()
        .parse(raw)
        .expect("DSN parses as a message");

    let content_type = dsn.content_type().expect("DSN has a Content-Type");
    assert!(
        content_type.ctype().eq_ignore_ascii_case("multipart")
            && content_type
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report")),
        "DSN is not multipart/report: {content_type:?}"
    );
    assert_eq!(
        content_type
            .attribute("report-type")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("delivery-status")
    );

    let fields = delivery_status(raw);
    let field = |name: &str| self::field(&fields, name);
    assert_eq!(field("Status").as_deref(), Some("5.1.1"), "fields:\n{fields}");
    assert_eq!(
        field("Action").map(|a| a.to_ascii_lowercase()).as_deref(),
        Some("failed")
    );
    let final_recipient = field("Final-Recipient").unwrap_or_default();
    assert!(
        final_recipient.to_ascii_lowercase().starts_with("rfc822;")
            && final_recipient.contains("bob@fabrikam.test"),
        "Final-Recipient: {final_recipient:?}"
    );
    let diagnostic = field("Diagnostic-Code").unwrap_or_default();
    assert!(
        diagnostic.to_ascii_lowercase().starts_with("smtp;")
            && diagnostic.contains("550")
            && diagnostic.contains("5.1.1"),
        "Diagnostic-Code: {diagnostic:?}"
    );

    // The notice goes to the sender, and the refused message went nowhere.
    assert!(String::from_utf8_lossy(raw).contains("alice@contoso.test"));
    assert_eq!(destination.count(), 0);
    assert!(
        node.wait_for_empty_queue(Duration::from_secs(15)),
        "bounced message still queued: {:?}",
        node.queue_json()
    );
}

/// RFC 3464's Status is the server's enhanced code: subject and detail are
/// never rewritten (a 550 5.4.4 is not a 5.5.4).
#[test]
fn dsn_status_is_the_servers_enhanced_code() {
    let net = Net(222);
    let (_node, _destination, raw) = bounce(net, "550 5.4.4 <bob@fabrikam.test>: unable to route");
    let fields = delivery_status(&raw);
    assert_eq!(
        field(&fields, "Status").as_deref(),
        Some("5.4.4"),
        "fields:\n{fields}"
    );
    assert!(
        field(&fields, "Diagnostic-Code").is_some_and(|d| d.contains("550 5.4.4")),
        "fields:\n{fields}"
    );
}
