//! Delivery status notifications over the wire: a permanent refusal from
//! the destination turns into a DSN (RFC 3464) in the sender's mailbox on
//! this node, its Status the server's own enhanced code (nets 50 and 222);
//! success reports and client values that cannot add fields (net 214).

use crate::support::{on_prem_relay, swaks, wait_until, Net, Node, NodeOptions, RawSmtp, Sink};
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
        &on_prem_relay(net.ip(ON_PREM), "Fabrikam", "fabrikam.test", destination.addr),
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

/// Issue 12 point 7 over the wire: ENVID and ORCPT carrying CR LF are
/// refused at MAIL/RCPT; NOTIFY=SUCCESS gives a `delivered` report for the
/// node's mailbox and a `relayed` one for a next hop without DSN (one with
/// DSN gets the parameters and reports itself); RET=HDRS returns headers
/// only; the returned original has no `X-Sluice-Org-*` field. Net 214.
#[test]
fn success_reports_and_client_values_that_cannot_add_fields() {
    let net = Net(214);
    let internet = Sink::start(net.ip(25));
    let legacy = Sink::start_with(net.ip(26), &["-N"]);
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

[[accepted_domain]]
name = "passon.test"
type = "internal_relay"

[[outbound_connector]]
name = "Legacy"
recipient_domains = ["legacy.test"]
smart_hosts = ["{legacy}"]

[[outbound_connector]]
name = "Internet"
recipient_domains = ["fabrikam.test", "passon.test"]
smart_hosts = ["{internet}"]

[[rule]]
name = "Stamp everything"
[rule.conditions]
sent_to_scope = "in_organization"
[rule.actions]
stamp_scan = true
"#,
            legacy = legacy.addr,
            internet = internet.addr
        ),
    ));

    let (mut client, greeting) = RawSmtp::connect(node.smtp).expect("connect");
    assert_eq!(greeting.code, 220);
    assert_eq!(
        client.command("EHLO evil.test\u{1b}[31m").expect("ehlo").code,
        250
    );
    let injected = client
        .command("MAIL FROM:<mallory@fabrikam.test> ENVID=abc+0D+0ABcc:+20victim@x.test")
        .expect("mail");
    assert_eq!(
        (injected.code, injected.text.contains("5.5.4")),
        (501, true),
        "{}",
        injected.text
    );
    let mail = client
        .command("MAIL FROM:<mallory@fabrikam.test> RET=HDRS ENVID=env+2Bid")
        .expect("mail");
    assert_eq!(mail.code, 250, "{}", mail.text);
    let injected = client
        .command("RCPT TO:<bob@contoso.test> NOTIFY=SUCCESS ORCPT=rfc822;bob+0D+0AX-Evil:+20y@contoso.test")
        .expect("rcpt");
    assert_eq!(
        (injected.code, injected.text.contains("5.5.4")),
        (501, true),
        "{}",
        injected.text
    );
    for rcpt in [
        "RCPT TO:<bob@contoso.test> NOTIFY=SUCCESS ORCPT=rfc822;bob@contoso.test",
        "RCPT TO:<carol@legacy.test> NOTIFY=SUCCESS",
        "RCPT TO:<dave@passon.test> NOTIFY=SUCCESS",
    ] {
        let reply = client.command(rcpt).expect("rcpt");
        assert_eq!(reply.code, 250, "{rcpt}: {}", reply.text);
    }
    assert_eq!(client.command("DATA").expect("data").code, 354);
    client
        .send_raw(
            b"Subject: report me\r\nMessage-ID: <success-1@fabrikam.test>\r\n\r\nsecret body line\r\n.\r\n",
        )
        .expect("content");
    let queued = client.read_reply().expect("end of data");
    assert_eq!(queued.code, 250, "{}", queued.text);
    let _ = client.command("QUIT");

    // dave's message and two reports (delivered, relayed) reach the internet.
    let arrived = internet.wait_for(3, Duration::from_secs(60));
    assert_eq!(
        arrived.len(),
        3,
        "internet sink got {arrived:#?}; queue {:?}",
        node.queue_json()
    );
    let dave = arrived
        .iter()
        .find(|m| m.rcpt_to.iter().any(|r| r.contains("dave@passon.test")))
        .expect("dave's message");
    assert!(
        dave.rcpt_to.iter().any(|r| r.contains("NOTIFY=SUCCESS")),
        "NOTIFY passed on: {:?}",
        dave.rcpt_to
    );
    assert!(dave.mail_from.contains("ENVID=env+2Bid"), "{}", dave.mail_from);

    let reports: Vec<&crate::support::SinkMessage> = arrived
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r.contains("mallory@fabrikam.test")))
        .collect();
    assert_eq!(reports.len(), 2, "{arrived:#?}");
    let mut actions = Vec::new();
    for report in reports {
        let raw = report.content.replace('\n', "\r\n");
        let status = delivery_status(raw.as_bytes());
        let field = |name: &str| -> Vec<String> {
            status
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_string())
                .collect()
        };
        assert_eq!(field("Original-Envelope-Id"), ["env+id"], "{status}");
        for line in status.lines() {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            assert!(
                !["bcc", "x-evil"].contains(&name.as_str()),
                "a client value added a field: {status}"
            );
        }
        let action = field("Action").join(",");
        let recipient = field("Final-Recipient").join(",");
        match action.as_str() {
            "delivered" => {
                assert!(recipient.contains("bob@contoso.test"), "{status}");
                assert_eq!(
                    field("Original-Recipient"),
                    ["rfc822;bob@contoso.test"],
                    "{status}"
                );
            }
            "relayed" => assert!(recipient.contains("carol@legacy.test"), "{status}"),
            other => panic!("unexpected action {other:?}: {status}"),
        }
        assert_eq!(field("Status"), ["2.0.0"], "{status}");
        actions.push(action);
        // RET=HDRS: the header section comes back, the body does not.
        assert!(
            report.content.contains("text/rfc822-headers"),
            "{}",
            report.content
        );
        assert!(
            report.content.contains("Subject: report me"),
            "{}",
            report.content
        );
        assert!(!report.content.contains("secret body line"), "{}", report.content);
        // The returned original carries no internal stamp...
        assert!(
            !report.content.to_ascii_lowercase().contains("x-sluice-org-"),
            "{}",
            report.content
        );
    }
    actions.sort();
    assert_eq!(actions, ["delivered", "relayed"]);
    // ...although the stored message had one (bob's mailbox keeps it), and
    // the EHLO name's escape sequence reached no field.
    let delivered = node.mailbox("contoso.test", "bob");
    let copy = String::from_utf8_lossy(&delivered[0]);
    assert!(copy.contains("X-Sluice-Org-Scan:"), "{copy}");
    assert!(!copy.contains('\u{1b}'), "{copy}");
    assert_eq!(legacy.count(), 1);
}
