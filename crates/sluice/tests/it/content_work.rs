//! Content work never blocks the sessions (SPEC section 11): messages whose
//! attachments are expensive to extract are scanned off the threads that
//! serve SMTP, under the node's `[dlp] scan_budget`, and what the budget
//! leaves unscanned is `scan_truncated` (verdict found, never pass).
//! Net 154.

use crate::support::{wait_until, Net, Node, NodeOptions, RawSmtp};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const NODE: u8 = 1;
const SENDER: u8 = 70;

/// A PDF of `streams` tiny content streams without object headers: each
/// makes the extractor search kilobytes back for its dictionary, so a few
/// of them take seconds to extract without a bound.
fn crafted_pdf(streams: usize) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    for _ in 0..streams {
        pdf.extend_from_slice(b"<<>>\nstream\n(x) Tj\nendstream\n");
    }
    pdf.extend_from_slice(b"%%EOF\n");
    pdf
}

/// A message with `count` crafted PDF attachments, CRLF lines, no final CRLF.
fn heavy_message(subject: &str, count: usize) -> String {
    let pdf = crate::scanner::base64_lines(&crafted_pdf(10_000));
    let mut message = format!(
        "From: <load@fabrikam.test>\r\nTo: <bob@contoso.test>\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nreports attached\r\n"
    );
    for n in 0..count {
        message.push_str(&format!(
            "--b\r\nContent-Type: application/pdf; name=\"r{n}.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"r{n}.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{pdf}\r\n"
        ));
    }
    message.push_str("--b--");
    message
}

#[test]
fn a_fresh_client_is_greeted_while_heavy_attachments_are_scanned() {
    let net = Net(154);
    let mut options = NodeOptions::new(
        net.ip(NODE),
        r#"
[[accepted_domain]]
name = "contoso.test"

[[rule]]
name = "Scan everything"
[rule.actions]
stamp_scan = true
"#,
    );
    options.dlp = vec![r#"scan_budget = "1s""#.to_string()];
    let node = Node::start(options);

    let replied = Arc::new(AtomicUsize::new(0));
    let (sent_tx, sent_rx) = mpsc::channel();
    let senders: Vec<_> = (0..2)
        .map(|n| {
            let smtp = node.smtp;
            let source = net.ip(SENDER + n as u8);
            let replied = replied.clone();
            let sent = sent_tx.clone();
            std::thread::spawn(move || {
                let (mut client, greeting) = RawSmtp::connect_from(smtp, source).expect("connect");
                assert_eq!(greeting.code, 220);
                for command in [
                    "EHLO load.test",
                    "MAIL FROM:<load@fabrikam.test>",
                    "RCPT TO:<bob@contoso.test>",
                ] {
                    assert_eq!(client.command(command).expect(command).code / 100, 2, "{command}");
                }
                assert_eq!(client.command("DATA").expect("DATA").code, 354);
                client
                    .send_raw(heavy_message(&format!("heavy {n}"), 8).as_bytes())
                    .expect("content");
                client.send_raw(b"\r\n.\r\n").expect("end of data");
                sent.send(()).expect("report sent");
                let reply = client.read_reply().expect("reply to the end of data");
                replied.fetch_add(1, Ordering::SeqCst);
                reply
            })
        })
        .collect();
    for _ in 0..2 {
        sent_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("both heavy messages sent");
    }

    // Both heavy messages are being scanned (the node logs the start and
    // end of each message's content work); a new client must be greeted
    // before either scan ends.
    let count = |what: &str| node.log().matches(what).count();
    assert!(
        wait_until(Duration::from_secs(60), || count("content work started") == 2),
        "the content work of both messages never started"
    );
    let (mut fresh, greeting) = RawSmtp::connect_from(node.smtp, net.ip(SENDER + 10)).expect("connect");
    let finished_before_greeting = count("content work done");
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(
        finished_before_greeting, 0,
        "the greeting waited for the content work of the heavy messages"
    );
    assert_eq!(replied.load(Ordering::SeqCst), 0);
    let noop = fresh.command("NOOP").expect("NOOP");
    assert_eq!(noop.code, 250);

    for sender in senders {
        let reply = sender.join().expect("sender thread");
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    let mut delivered = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            delivered = node.mailbox("contoso.test", "bob");
            delivered.len() == 2
        }),
        "the heavy messages were not delivered: {}",
        delivered.len()
    );
    for message in &delivered {
        let text = String::from_utf8_lossy(message);
        let stamp = text
            .lines()
            .find(|line| line.starts_with("X-Sluice-Org-Scan:"))
            .unwrap_or_else(|| panic!("no scan stamp in {}", &text[..text.len().min(2000)]));
        assert!(stamp.contains("verdict=found"), "{stamp}");
        assert!(stamp.contains("scan_truncated"), "{stamp}");
    }
}
