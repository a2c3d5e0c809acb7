//! SMTP smuggling (CVE-2023-51766 and kin): a bare-LF end-of-data lookalike
//! must neither end DATA nor let the bytes after it run as commands. The
//! whole message is refused with 5xx at the real CRLF.CRLF, and the
//! smuggled message never reaches the next hop. Nets 70-72.

use crate::support::{pause, Net, Node, NodeOptions, RawSmtp, Sink};
use std::time::Duration;

const NODE: u8 = 1;
const NEXT_HOP: u8 = 21;

fn smuggle(net: Net, fake_end: &str) {
    let sink = Sink::start(net.ip(NEXT_HOP));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

[[outbound_connector]]
name = "Hybrid"
recipient_domains = ["contoso.test"]
smart_hosts = ["{}"]
"#,
            sink.addr
        ),
    ));

    let (mut client, greeting) = RawSmtp::connect(node.smtp).expect("connect");
    assert_eq!(greeting.code, 220);
    assert_eq!(client.command("EHLO attacker.test").expect("ehlo").code, 250);
    assert_eq!(
        client
            .command("MAIL FROM:<alice@fabrikam.test>")
            .expect("mail")
            .code,
        250
    );
    assert_eq!(
        client.command("RCPT TO:<bob@contoso.test>").expect("rcpt").code,
        250
    );
    assert_eq!(client.command("DATA").expect("data").code, 354);
    let payload = format!(
        "From: <alice@fabrikam.test>\r\nTo: <bob@contoso.test>\r\nSubject: carrier\r\n\r\n\
         hello{fake_end}MAIL FROM:<admin@contoso.test>\r\nRCPT TO:<victim@contoso.test>\r\n\
         DATA\r\nFrom: <admin@contoso.test>\r\nTo: <victim@contoso.test>\r\nSubject: smuggled\r\n\r\n\
         smuggled body\r\n.\r\n"
    );
    client.send_raw(payload.as_bytes()).expect("send payload");
    let reply = client.read_reply().expect("reply to the message");
    assert!(
        (500..600).contains(&reply.code),
        "{fake_end:?} inside DATA: expected one 5xx for the whole message, got {reply:?}"
    );
    let rest = client.drain(Duration::from_secs(1));
    assert!(
        !rest.contains("354") && !rest.starts_with("250"),
        "the smuggled commands were answered: {rest:?}"
    );
    drop(client);

    // A clean message afterwards shows delivery works; once it is at the
    // sink, anything smuggled would have been delivered too.
    let (mut control, _) = RawSmtp::connect(node.smtp).expect("connect");
    let reply = control
        .send_message(
            "alice@fabrikam.test",
            &["bob@contoso.test"],
            "From: <alice@fabrikam.test>\r\nTo: <bob@contoso.test>\r\nSubject: control\r\n\r\nclean",
        )
        .expect("control message");
    assert_eq!(reply.code, 250, "{reply:?}");
    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert!(!arrived.is_empty(), "the control message never arrived");
    pause(Duration::from_secs(1));
    let arrived = sink.messages();
    let subjects: Vec<Option<String>> = arrived.iter().map(|m| m.header("subject")).collect();
    assert_eq!(
        subjects,
        vec![Some("control".to_string())],
        "{fake_end:?}: something besides the control message was delivered"
    );
    assert!(arrived
        .iter()
        .all(|m| m.rcpt_to.iter().all(|r| !r.contains("victim"))));
}

#[test]
fn bare_lf_dot_bare_lf_does_not_end_data() {
    smuggle(Net(70), "\n.\n");
}

#[test]
fn crlf_dot_bare_lf_does_not_end_data() {
    smuggle(Net(71), "\r\n.\n");
}

#[test]
fn bare_lf_dot_crlf_does_not_end_data() {
    smuggle(Net(72), "\n.\r\n");
}
