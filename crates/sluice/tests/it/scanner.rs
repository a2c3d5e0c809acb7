//! The scanner role end to end (issue 5): seed 000's gateway -> scanner ->
//! gateway -> internet loop with the real DLP scanner. A clean message comes
//! back stamped `verdict=pass` (a gateway rule turns the stamp into a subject
//! tag the internet sink can see) and arrives once; a message with a card
//! number is quarantined at the scanner with a reason that names the
//! detector and never the digits, the sender gets the notice in their
//! gateway mailbox, and nothing loops. Also `sluice scan` on encodings a
//! naive scanner misses. Nets 120-121.

use crate::support::seed000::{
    assert_in_order, events_of, field, Seed000, CARD_BODY, CARD_DIGITS, NOTICE, ON_PREM,
};
use crate::support::{pause, wait_until, Net, SinkMessage};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// A gateway rule that makes the scanner's verdict visible at the sink: the
/// gateway strips internal headers on the way to the internet, so the
/// subject carries the proof that the stamp came back.
const MARK_PASSED: &str = r#"
[[rule]]
name = "Mark scanned"
priority = 1
[rule.conditions]
header_contains = { header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }
[rule.actions]
prepend_subject = "[scanned-pass] "
"#;

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| field(e, "event") == kind).count()
}

/// Fails if any of the card's digit groupings appears in `text`.
fn assert_no_digits(what: &str, text: &str) {
    for digits in CARD_DIGITS {
        assert!(
            !text.contains(digits),
            "{what} shows the card number ({digits}):\n{text}"
        );
    }
}

#[test]
fn clean_message_comes_back_stamped_pass_and_reaches_the_internet_once() {
    let seed = Seed000::start(Net(120), MARK_PASSED);
    let run = seed.send(
        ON_PREM,
        "alice@contoso.test",
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: quarterly figures",
            "--header",
            "Message-Id: <scan-clean-1@contoso.test>",
            "--body",
            "Nothing sensitive in here, just the totals.",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);

    let arrived = seed.internet.wait_for(1, Duration::from_secs(40));
    assert_eq!(
        arrived.len(),
        1,
        "nothing reached the internet; gateway queue {:?}, scanner queue {:?}",
        seed.gateway.queue_json(),
        seed.scanner.queue_json()
    );
    pause(Duration::from_secs(3));
    assert_eq!(seed.internet.count(), 1, "delivered more than once");
    let message = &seed.internet.messages()[0];
    assert_eq!(
        message.header("subject").as_deref(),
        Some("[scanned-pass] quarterly figures"),
        "the gateway did not see the scanner's verdict=pass:\n{}",
        message.content
    );
    assert_eq!(
        message.header("X-Sluice-Org-Scan"),
        None,
        "the internal verdict leaked to the internet"
    );

    // The scanner scanned it once, found nothing, stamped and returned it.
    let scanner = events_of(&seed.scanner, "scan-clean-1@contoso.test");
    assert_in_order(
        "scanner trace",
        &scanner,
        &[
            ("received", Some("From gateway")),
            ("scanned", None),
            ("routed", Some("Back to gateway")),
            ("delivered", Some("Back to gateway")),
        ],
    );
    assert_eq!(count(&scanner, "scanned"), 1, "{scanner:#?}");
    let scanned = scanner
        .iter()
        .find(|e| field(e, "event") == "scanned")
        .expect("scanned");
    assert!(
        !field(scanned, "detail").contains("credit_card"),
        "a clean message has findings: {scanned:#}"
    );
    assert_eq!(count(&scanner, "quarantined"), 0, "{scanner:#?}");

    // At the gateway: out to the scanner once, back once, out to the MX.
    let gateway = events_of(&seed.gateway, "scan-clean-1@contoso.test");
    assert_in_order(
        "gateway trace",
        &gateway,
        &[
            ("received", Some("From on-prem")),
            ("delivered", Some("To scanner")),
            ("received", Some("From scanner")),
            ("delivered", None),
        ],
    );
    assert_eq!(count(&gateway, "received"), 2, "{gateway:#?}");
    assert_eq!(count(&gateway, "delivered"), 2, "{gateway:#?}");
}

#[test]
fn card_number_is_quarantined_at_the_scanner_and_the_sender_notified() {
    let seed = Seed000::start(Net(121), MARK_PASSED);
    let run = seed.send(
        ON_PREM,
        "alice@contoso.test",
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: order payment",
            "--header",
            "Message-Id: <scan-card-1@contoso.test>",
            "--body",
            CARD_BODY,
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);

    let mut held = Vec::new();
    let found = wait_until(Duration::from_secs(30), || {
        held = seed
            .scanner
            .cli_json(&["quarantine", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default();
        if held.is_empty() {
            pause(Duration::from_millis(200));
        }
        !held.is_empty()
    });
    assert!(
        found,
        "nothing quarantined at the scanner; scanner trace {:#?}",
        seed.scanner.trace(&[])
    );
    assert_eq!(held.len(), 1, "{held:#?}");
    let entry = &held[0];
    assert_eq!(field(entry, "rule"), "Block card numbers", "{entry:#}");
    assert_eq!(field(entry, "from"), "alice@contoso.test", "{entry:#}");
    assert_eq!(
        entry["recipients"],
        serde_json::json!(["x@fabrikam.test"]),
        "{entry:#}"
    );
    assert!(
        field(entry, "reason").contains("credit_card"),
        "the quarantine reason does not name the detector: {entry:#}"
    );
    assert_no_digits(
        "quarantine list",
        &serde_json::to_string(&held).unwrap_or_default(),
    );

    // The held copy carries the scanner's verdict, counts only.
    let id = field(entry, "id").to_string();
    let shown = seed.scanner.cli_json(&["quarantine", "show", &id, "--json"]);
    let stamp = shown["headers"]
        .as_array()
        .and_then(|headers| {
            headers
                .iter()
                .find(|h| field(h, "name").eq_ignore_ascii_case("X-Sluice-Org-Scan"))
        })
        .map(|h| field(h, "value").to_string())
        .unwrap_or_else(|| panic!("the quarantined copy has no stamp: {shown:#}"));
    assert_eq!(
        stamp, "verdict=found; findings=credit_card:1; scanner=scan.partner.test",
        "{shown:#}"
    );
    assert_no_digits("quarantine show", &shown.to_string());

    // The notice goes from the scanner to the sender's domain by MX: the
    // gateway, which delivers it to alice's mailbox.
    assert!(
        wait_until(Duration::from_secs(30), || !seed
            .gateway
            .mailbox("contoso.test", "alice")
            .is_empty()),
        "no notice in alice's mailbox; scanner queue {:?}, scanner trace {:#?}",
        seed.scanner.queue_json(),
        seed.scanner.trace(&[])
    );
    let notice = SinkMessage::from_bytes(&seed.gateway.mailbox("contoso.test", "alice")[0]);
    assert_eq!(
        notice.header("subject").as_deref(),
        Some("Notice about your message: order payment"),
        "{}",
        notice.content
    );
    assert!(notice.content.contains(NOTICE), "{}", notice.content);
    assert!(
        notice
            .header("from")
            .unwrap_or_default()
            .contains("@scan.partner.test"),
        "{}",
        notice.content
    );
    assert_no_digits("the notice", &notice.content);

    // Nothing loops and nothing leaks: a few seconds later, still no
    // internet delivery, one notice, one pass through each node.
    pause(Duration::from_secs(4));
    assert_eq!(seed.internet.count(), 0, "the card message reached the internet");
    assert_eq!(
        seed.gateway.mailbox("contoso.test", "alice").len(),
        1,
        "more than one notice"
    );
    let scanner = events_of(&seed.scanner, "scan-card-1@contoso.test");
    assert_in_order(
        "scanner trace",
        &scanner,
        &[
            ("received", Some("From gateway")),
            ("scanned", None),
            ("quarantined", None),
        ],
    );
    assert_eq!(count(&scanner, "received"), 1, "{scanner:#?}");
    assert_eq!(count(&scanner, "delivered"), 0, "{scanner:#?}");
    let scanned = scanner
        .iter()
        .find(|e| field(e, "event") == "scanned")
        .expect("scanned");
    assert!(
        field(scanned, "detail").contains("credit_card"),
        "the scanned event has no detector count: {scanned:#}"
    );
    let all_scanner_events = seed.scanner.trace(&[]);
    assert!(
        all_scanner_events
            .iter()
            .any(|e| field(e, "event") == "sender_notified"),
        "no sender_notified event: {all_scanner_events:#?}"
    );
    let gateway = events_of(&seed.gateway, "scan-card-1@contoso.test");
    assert_eq!(count(&gateway, "received"), 1, "it came back: {gateway:#?}");
    assert_eq!(count(&gateway, "delivered"), 1, "{gateway:#?}");
    assert!(
        seed.scanner.wait_for_empty_queue(Duration::from_secs(10)),
        "{:?}",
        seed.scanner.queue_json()
    );
    assert_no_digits(
        "the scanner's trace",
        &serde_json::to_string(&all_scanner_events).unwrap_or_default(),
    );
    assert_no_digits(
        "the gateway's trace",
        &serde_json::to_string(&seed.gateway.trace(&[])).unwrap_or_default(),
    );
    assert_no_digits("the scanner's log", &seed.scanner.log());
}

/// `sluice scan` on messages whose card number only appears after
/// decoding: a quoted-printable soft line break inside the number, and a
/// Word document attached in base64.
#[test]
fn scan_cli_finds_cards_behind_transfer_encodings_and_in_attachments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let qp = dir.path().join("soft-break.eml");
    std::fs::write(
        &qp,
        "From: alice@contoso.test\r\nTo: x@fabrikam.test\r\nSubject: qp\r\nMessage-Id: <qp-1@contoso.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         Charge my visa card 4556 7375 86=\r\n89 9855 exp 12/29, thanks.\r\n",
    )
    .expect("write eml");

    let docx = word_document(
        dir.path(),
        "Card on file: visa card 4556 7375 8689 9855 exp 12/29",
    );
    let attached = dir.path().join("attachment.eml");
    std::fs::write(
        &attached,
        format!(
            "From: alice@contoso.test\r\nTo: x@fabrikam.test\r\nSubject: the form\r\nMessage-Id: <docx-1@contoso.test>\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nThe form is attached.\r\n\
             --b1\r\nContent-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document; name=\"form.docx\"\r\n\
             Content-Disposition: attachment; filename=\"form.docx\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--b1--\r\n",
            base64_lines(&docx)
        ),
    )
    .expect("write eml");

    let run = |extra: &[&str]| {
        let output = Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .arg("scan")
            .args(extra)
            .arg(&qp)
            .arg(&attached)
            .output()
            .expect("run sluice scan");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let cards = |line: &Value| -> Vec<(String, String, String)> {
        line["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|f| field(f, "detector") == "credit_card")
            .map(|f| {
                (
                    field(f, "match").to_string(),
                    field(f, "confidence").to_string(),
                    field(f, "location").to_string(),
                )
            })
            .collect()
    };
    let expect = |stdout: &str, shown: &str| {
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "one JSON line per file: {stdout}");
        assert_eq!(field(&lines[0], "message_id"), "qp-1@contoso.test", "{stdout}");
        for (line, location) in lines.iter().zip(["body", "attachment:form.docx"]) {
            assert_eq!(
                cards(line),
                vec![(shown.to_string(), "high".to_string(), location.to_string())],
                "{stdout}"
            );
        }
    };
    // Masked by default: what an administrator pastes into a ticket leaks nothing.
    let masked = run(&[]);
    expect(&masked, "4556 **** **** 9855");
    assert!(!masked.contains("7375"), "{masked}");
    expect(&run(&["--show-matches"]), "4556 7375 8689 9855");
}

/// A minimal .docx (zip with `word/document.xml`) holding `text`, made with
/// the `zip` tool.
fn word_document(dir: &std::path::Path, text: &str) -> Vec<u8> {
    let root = dir.join("docx");
    std::fs::create_dir_all(root.join("word")).expect("docx dirs");
    std::fs::write(
        root.join("[Content_Types].xml"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
         <Override PartName=\"/word/document.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>",
    )
    .expect("content types");
    std::fs::write(
        root.join("word/document.xml"),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\">\
             <w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"
        ),
    )
    .expect("document.xml");
    let status = Command::new("zip")
        .args(["-q", "-r", "../form.docx", "[Content_Types].xml", "word"])
        .current_dir(&root)
        .status()
        .expect("run zip");
    assert!(status.success(), "zip failed");
    std::fs::read(dir.join("form.docx")).expect("read docx")
}

/// Base64 in 76-character lines, CRLF-separated.
pub(crate) fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(76)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}
