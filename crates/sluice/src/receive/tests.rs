//! Sans-IO tests of the session state machine: bytes in, replies out.

use super::session::{Event, Session};
use super::{Refusal, SessionLimits, Submission, TlsInfo};
use crate::config::objects::ObjectSet;
use crate::message::{DsnReturn, Notify, Reply, ReversePath};
use std::sync::Arc;

const OBJECTS: &str = r#"
    [[accepted_domain]]
    name = "contoso.test"
"#;

const HELLO: &str = "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\n";

fn limits() -> SessionLimits {
    SessionLimits {
        max_message_size: 10_000,
        max_recipients: 3,
        ..SessionLimits::default()
    }
}

fn new_session(limits: SessionLimits, tls_offered: bool) -> Session {
    let policy = crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(OBJECTS).unwrap()).unwrap();
    let peer = "192.0.2.1:40000".parse().unwrap();
    let (_publisher, objects) = tokio::sync::watch::channel(Arc::new(policy));
    Session::new(
        "mx.contoso.test".to_string(),
        limits,
        objects,
        peer,
        "127.0.0.1:25".parse().unwrap(),
        tls_offered,
    )
}

/// What a session said and took.
#[derive(Default)]
struct Transcript {
    replies: Vec<Reply>,
    submissions: Vec<Submission>,
    refusals: Vec<Refusal>,
    starttls: usize,
    closed: bool,
}

impl Transcript {
    /// `code enhanced` of each reply, e.g. `"550 5.7.1"` (or `"250"`).
    fn codes(&self) -> Vec<String> {
        self.replies
            .iter()
            .map(|reply| match reply.status {
                Some(_) => format!("{} {}", reply.code, reply.status_text()),
                None => reply.code.to_string(),
            })
            .collect()
    }
}

/// Feeds `input` and drains events, acting as the driver would (the
/// intake answers 250, TLS handshakes succeed).
fn drive(session: &mut Session, input: &[u8], transcript: &mut Transcript) {
    session.push(input);
    while let Some(event) = session.poll() {
        match event {
            Event::Reply(reply) => transcript.replies.push(reply),
            Event::Refused(refusal) => {
                transcript.replies.push(refusal.reply.clone());
                transcript.refusals.push(*refusal);
            }
            Event::ReplyAndClose(reply) => {
                transcript.replies.push(reply);
                transcript.closed = true;
                return;
            }
            Event::StartTls(reply) => {
                transcript.replies.push(reply);
                transcript.starttls += 1;
                session.tls_established(TlsInfo {
                    version: "TLSv1_3".to_string(),
                    cipher: "TLS13_AES_128_GCM_SHA256".to_string(),
                    client_cert_names: Vec::new(),
                });
            }
            Event::Submit(submission) => {
                transcript.submissions.push(*submission);
                transcript.replies.push(Reply::new(250, [2, 0, 0], "Queued"));
            }
        }
    }
}

fn run(input: &[u8]) -> Transcript {
    run_with(limits(), input)
}

fn run_with(limits: SessionLimits, input: &[u8]) -> Transcript {
    let mut session = new_session(limits, true);
    let mut transcript = Transcript::default();
    drive(&mut session, input, &mut transcript);
    transcript
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn command_table() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "pipelined transaction in one write",
            b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
            &["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"],
        ),
        ("null sender", b"HELO c\r\nMAIL FROM:<>\r\n", &["250", "250 2.1.0"]),
        ("mail before helo", b"MAIL FROM:<a@x.test>\r\n", &["503 5.5.1"]),
        ("rcpt before mail", b"EHLO c\r\nRCPT TO:<b@contoso.test>\r\n", &["250", "503 5.5.1"]),
        (
            "data without recipient",
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n",
            &["250", "250 2.1.0", "554 5.5.1"],
        ),
        ("data without mail", b"EHLO c\r\nDATA\r\n", &["250", "503 5.5.1"]),
        (
            "nested mail",
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\n",
            &["250", "250 2.1.0", "503 5.5.1"],
        ),
        (
            "relay denied",
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\n",
            &["250", "250 2.1.0", "550 5.7.1"],
        ),
        ("unknown command", b"FOO bar\r\n", &["500 5.5.1"]),
        ("bad sender", b"EHLO c\r\nMAIL FROM:<nobody>\r\n", &["250", "501 5.1.7"]),
        (
            "bad recipient",
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<nobody>\r\n",
            &["250", "250 2.1.0", "501 5.1.3"],
        ),
        ("mail syntax", b"EHLO c\r\nMAIL TO:<a@x.test>\r\n", &["250", "501 5.5.4"]),
        ("bare LF ends no command", b"NOOP\nNOOP\r\n", &["500 5.5.2", "250 2.0.0"]),
        ("bare CR in command", b"NO\rOP\r\n", &["500 5.5.2"]),
        (
            "misc verbs",
            b"NOOP\r\nVRFY bob\r\nRSET\r\nHELP\r\nEXPN list\r\nQUIT\r\nNOOP\r\n",
            &["250 2.0.0", "252 2.5.2", "250 2.0.0", "214 2.0.0", "502 5.5.1", "221 2.0.0"],
        ),
        (
            "declared size too large",
            b"EHLO c\r\nMAIL FROM:<a@x.test> SIZE=10001\r\nMAIL FROM:<a@x.test> SIZE=10000\r\n",
            &["250", "552 5.3.4", "250 2.1.0"],
        ),
        (
            "parameters need EHLO",
            b"HELO c\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\n",
            &["250", "555 5.5.4"],
        ),
        (
            "binarymime not offered",
            b"EHLO c\r\nMAIL FROM:<a@x.test> BODY=BINARYMIME\r\n",
            &["250", "555 5.5.4"],
        ),
        (
            "utf8 address needs SMTPUTF8",
            "EHLO c\r\nMAIL FROM:<jos\u{e9}@x.test>\r\nMAIL FROM:<jos\u{e9}@x.test> SMTPUTF8\r\n".as_bytes(),
            &["250", "553 5.6.7", "250 2.1.0"],
        ),
        (
            "too many recipients",
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nRCPT TO:<c@contoso.test>\r\nRCPT TO:<d@contoso.test>\r\n",
            &["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.1.5", "452 4.5.3"],
        ),
        // What follows STARTTLS in the same read is discarded, not answered.
        ("starttls swallows the pipeline", b"STARTTLS\r\nSTARTTLS\r\n", &["220 2.0.0"]),
        (
            "starttls inside a transaction",
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nSTARTTLS\r\n",
            &["250", "250 2.1.0", "503 5.5.1"],
        ),
    ];
    for (name, input, expected) in cases {
        let transcript = run(input);
        assert_eq!(transcript.codes(), *expected, "{name}");
    }
}

#[test]
fn ehlo_advertises_extensions_and_drops_starttls_once_active() {
    let mut session = new_session(limits(), true);
    let mut transcript = Transcript::default();
    drive(&mut session, b"EHLO c\r\n", &mut transcript);
    let ehlo = transcript.replies[0].to_wire();
    for extension in [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "STARTTLS",
    ] {
        assert!(
            ehlo.contains(&format!("250-{extension}\r\n")) || ehlo.contains(&format!("250 {extension}\r\n")),
            "{extension} in {ehlo}"
        );
    }
    assert!(ehlo.starts_with("250-mx.contoso.test\r\n"));
    drive(&mut session, b"STARTTLS\r\n", &mut transcript);
    drive(&mut session, b"EHLO c\r\nSTARTTLS\r\n", &mut transcript);
    assert!(!transcript.replies[2].to_wire().contains("STARTTLS"));
    assert_eq!(transcript.codes()[3], "503 5.5.1", "STARTTLS twice");

    let without_tls = {
        let mut session = new_session(limits(), false);
        let mut transcript = Transcript::default();
        drive(&mut session, b"EHLO c\r\nSTARTTLS\r\n", &mut transcript);
        transcript
    };
    assert!(!without_tls.replies[0].to_wire().contains("STARTTLS"));
    assert_eq!(without_tls.codes()[1], "502 5.5.1");
}

#[test]
fn starttls_discards_pipelined_commands_and_resets_the_session() {
    let mut session = new_session(limits(), true);
    let mut transcript = Transcript::default();
    // CVE-2011-0411: a MITM appends plaintext commands after STARTTLS.
    drive(
        &mut session,
        b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<b@contoso.test>\r\n",
        &mut transcript,
    );
    assert_eq!(transcript.codes(), ["250", "220 2.0.0"]);
    assert_eq!(transcript.starttls, 1);
    assert_eq!(session.buffered(), 0);
    // The session was reset: EHLO is needed again.
    drive(&mut session, b"MAIL FROM:<a@x.test>\r\n", &mut transcript);
    assert_eq!(transcript.codes()[2], "503 5.5.1");
    drive(&mut session, HELLO.as_bytes(), &mut transcript);
    drive(
        &mut session,
        b"DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n",
        &mut transcript,
    );
    let submission = &transcript.submissions[0];
    assert!(submission.session.tls.is_some());
    let content = String::from_utf8_lossy(&submission.content.to_bytes()).into_owned();
    assert!(content.contains("with ESMTPS id"), "{content}");
    assert!(content.contains("(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)"));
}

#[test]
fn submission_carries_envelope_routes_and_received_header() {
    let transcript = run(&concat(&[
        b"EHLO client.test\r\n",
        b"MAIL FROM:<a@x.test> RET=HDRS ENVID=env42 BODY=8BITMIME\r\n",
        b"RCPT TO:<b@contoso.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2B@contoso.test\r\n",
        b"RCPT TO:<c@contoso.test> NOTIFY=NEVER\r\n",
        b"DATA\r\nSubject: hi\r\n\r\n..dotted\r\nline\r\n.\r\n",
    ]));
    assert_eq!(transcript.submissions.len(), 1, "{:?}", transcript.codes());
    let submission = &transcript.submissions[0];
    let envelope = &submission.envelope;
    assert_eq!(envelope.mail_from.to_string(), "a@x.test");
    assert_eq!(envelope.ret, Some(DsnReturn::Headers));
    assert_eq!(envelope.envid.as_deref(), Some("env42"));
    assert_eq!(envelope.body, crate::message::BodyType::EightBitMime);
    assert_eq!(
        envelope.recipients[0].notify,
        Notify::On {
            success: true,
            failure: false,
            delay: true
        }
    );
    assert_eq!(
        envelope.recipients[0].orcpt.as_deref(),
        Some("rfc822;b+@contoso.test")
    );
    assert_eq!(envelope.recipients[1].notify, Notify::Never);
    assert_eq!(submission.routes.len(), 2);
    assert_eq!(submission.session.helo, "client.test");
    let content = String::from_utf8(submission.content.to_bytes()).unwrap();
    assert!(
        content
            .starts_with("Received: from client.test ([192.0.2.1])\r\n\tby mx.contoso.test with ESMTP id "),
        "{content}"
    );
    assert!(!content.contains("for <"), "two recipients: no for clause");
    assert!(
        content.ends_with("\r\nSubject: hi\r\n\r\n.dotted\r\nline\r\n"),
        "{content}"
    );
}

#[test]
fn smuggled_end_of_data_never_splits_the_message() {
    let smuggles: &[&[u8]] = &[
        b"\n.\n",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r\r\n",
        b"\r\n.\r",
    ];
    for smuggle in smuggles {
        let input = concat(&[
            HELLO.as_bytes(),
            b"DATA\r\nSubject: first\r\n\r\nbody",
            smuggle,
            b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n",
        ]);
        // Byte by byte too: the outcome must not depend on read boundaries.
        for whole in [true, false] {
            let mut session = new_session(limits(), true);
            let mut transcript = Transcript::default();
            if whole {
                drive(&mut session, &input, &mut transcript);
            } else {
                for byte in &input {
                    drive(&mut session, std::slice::from_ref(byte), &mut transcript);
                }
            }
            assert!(transcript.submissions.is_empty(), "{smuggle:?}");
            assert_eq!(
                transcript.codes(),
                ["250", "250 2.1.0", "250 2.1.5", "354", "550 5.6.11", "250 2.0.0"],
                "{smuggle:?}"
            );
        }
    }
}

#[test]
fn oversize_data_is_read_to_the_end_then_refused() {
    let mut input = concat(&[HELLO.as_bytes(), b"DATA\r\n"]);
    for _ in 0..200 {
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let transcript = run(&input);
    assert_eq!(
        transcript.codes(),
        ["250", "250 2.1.0", "250 2.1.5", "354", "552 5.3.4", "250 2.0.0"]
    );
    assert!(transcript.submissions.is_empty());
}

#[test]
fn long_lines_are_refused_and_never_buffered() {
    let mut session = new_session(limits(), true);
    let mut transcript = Transcript::default();
    let piece = vec![b'A'; 16 * 1024];
    for _ in 0..64 {
        drive(&mut session, &piece, &mut transcript);
        assert!(session.buffered() <= 4096 + piece.len());
    }
    drive(&mut session, b"\r\nNOOP\r\n", &mut transcript);
    assert_eq!(transcript.codes(), ["500 5.5.6", "250 2.0.0"]);

    // A long line that arrives whole is refused the same way.
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 5000));
    line.extend_from_slice(b"\r\nNOOP\r\n");
    assert_eq!(run(&line).codes(), ["500 5.5.6", "250 2.0.0"]);
}

#[test]
fn too_many_errors_close_the_session() {
    let input = "FOO\r\n".repeat(20);
    let transcript = run(input.as_bytes());
    assert_eq!(transcript.replies.len(), 11);
    assert_eq!(transcript.codes()[10], "421 4.7.0");
    assert!(transcript.closed);
}

#[test]
fn malformed_header_sections_are_refused_at_end_of_data() {
    for (header, expected) in [
        ("Subject: ok\r\n", "250 2.0.0"),
        ("X-Sluice-Org-Scan : verdict=pass\r\n", "550 5.6.0"),
        ("garbage\r\n X-Sluice-Org-Scan: verdict=pass\r\n", "550 5.6.0"),
    ] {
        let input = concat(&[
            HELLO.as_bytes(),
            b"DATA\r\n",
            header.as_bytes(),
            b"\r\nbody\r\n.\r\nNOOP\r\n",
        ]);
        let transcript = run(&input);
        assert_eq!(transcript.codes()[4], expected, "{header:?}");
        assert_eq!(transcript.codes()[5], "250 2.0.0", "session goes on");
        assert_eq!(
            transcript.submissions.len(),
            usize::from(expected.starts_with("250"))
        );
    }
}

#[test]
fn received_headers_beyond_thirty_are_a_loop() {
    for (hops, expected) in [(30, "250 2.0.0"), (31, "554 5.4.6")] {
        let mut input = concat(&[HELLO.as_bytes(), b"DATA\r\n"]);
        for hop in 0..hops {
            input.extend_from_slice(
                format!("Received: from h{hop} by h; Thu, 1 Jan 1970 00:00:00 +0000\r\n").as_bytes(),
            );
        }
        input.extend_from_slice(b"Subject: loop\r\n\r\nbody\r\n.\r\n");
        let transcript = run(&input);
        assert_eq!(transcript.codes().last().unwrap(), expected, "{hops} hops");
        assert_eq!(transcript.submissions.len(), usize::from(hops == 30));
    }
}

#[test]
fn bdat_table() {
    let message = b"Subject: chunked\r\n\r\nhello\r\n";
    let first = &message[..10];
    let rest = &message[10..];
    /// Name, input, reply codes, content the submission ends with (if any).
    type Case<'a> = (&'a str, Vec<u8>, Vec<&'a str>, Option<&'a [u8]>);
    let cases: Vec<Case> = vec![
        (
            "two chunks, last one marked",
            concat(&[
                HELLO.as_bytes(),
                format!("BDAT {}\r\n", first.len()).as_bytes(),
                first,
                format!("BDAT {} LAST\r\n", rest.len()).as_bytes(),
                rest,
                b"QUIT\r\n",
            ]),
            vec![
                "250",
                "250 2.1.0",
                "250 2.1.5",
                "250 2.0.0",
                "250 2.0.0",
                "221 2.0.0",
            ],
            Some(message),
        ),
        (
            "BDAT 0 LAST ends the message",
            concat(&[
                HELLO.as_bytes(),
                format!("BDAT {}\r\n", message.len()).as_bytes(),
                message,
                b"BDAT 0 LAST\r\n",
            ]),
            vec!["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"],
            Some(message),
        ),
        (
            "chunk octets are data, never commands, even when refused",
            concat(&[b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n"]),
            vec!["250", "503 5.5.1", "250 2.0.0"],
            None,
        ),
        (
            "oversize chunk is discarded and voids the transaction",
            concat(&[
                HELLO.as_bytes(),
                b"BDAT 20000\r\n",
                &vec![b'x'; 20000],
                b"BDAT 5 LAST\r\nabcde",
            ]),
            vec!["250", "250 2.1.0", "250 2.1.5", "552 5.3.4", "503 5.5.1"],
            None,
        ),
        (
            "bare LF in a chunk",
            concat(&[HELLO.as_bytes(), b"BDAT 4 LAST\r\na\nb\n"]),
            vec!["250", "250 2.1.0", "250 2.1.5", "550 5.6.11"],
            None,
        ),
        (
            "DATA after BDAT",
            concat(&[HELLO.as_bytes(), b"BDAT 2\r\nab", b"DATA\r\n"]),
            vec!["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "503 5.5.1"],
            None,
        ),
    ];
    for (name, input, expected, content) in cases {
        for whole in [true, false] {
            let mut session = new_session(limits(), true);
            let mut transcript = Transcript::default();
            if whole {
                drive(&mut session, &input, &mut transcript);
            } else {
                for piece in input.chunks(3) {
                    drive(&mut session, piece, &mut transcript);
                }
            }
            assert_eq!(transcript.codes(), expected, "{name}");
            match content {
                Some(content) => {
                    assert_eq!(transcript.submissions.len(), 1, "{name}");
                    assert!(
                        transcript.submissions[0].content.to_bytes().ends_with(content),
                        "{name}"
                    );
                    assert!(transcript.submissions[0]
                        .content
                        .to_bytes()
                        .starts_with(b"Received: "));
                }
                None => assert!(transcript.submissions.is_empty(), "{name}"),
            }
        }
    }
}

#[test]
fn null_sender_reaches_the_submission() {
    let transcript =
        run(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n\r\nbounce\r\n.\r\n");
    assert_eq!(transcript.submissions.len(), 1);
    assert_eq!(transcript.submissions[0].envelope.mail_from, ReversePath::Null);
}

/// A refused recipient is handed to the driver as a refusal (for the trace
/// and the log) carrying the transaction's id, which the message accepted
/// later in the same transaction keeps.
#[test]
fn a_refused_recipient_is_reported_with_the_transaction_id() {
    let transcript = run(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.org>\r\n\
        RCPT TO:<b@contoso.test>\r\nDATA\r\nSubject: t\r\n\r\nhi\r\n.\r\n");
    assert_eq!(
        transcript.codes(),
        ["250", "250 2.1.0", "550 5.7.1", "250 2.1.5", "354", "250 2.0.0"]
    );
    let [refusal] = transcript.refusals.as_slice() else {
        panic!("one refusal expected: {:?}", transcript.refusals);
    };
    assert_eq!(
        refusal.to.as_ref().map(ToString::to_string).as_deref(),
        Some("b@example.org")
    );
    assert_eq!(refusal.from.to_string(), "a@x.test");
    assert_eq!(refusal.peer.to_string(), "192.0.2.1:40000");
    assert_eq!(refusal.reply.code, 550);
    assert_eq!(refusal.id, transcript.submissions[0].id);
}

/// A client repeating refused RCPTs gets every refusal, but only the first
/// MAX_RECORDED_REFUSALS reach the trace.
#[test]
fn refusals_recorded_per_connection_are_bounded() {
    use super::session::MAX_RECORDED_REFUSALS;
    let mut input = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\n".to_vec();
    for n in 0..MAX_RECORDED_REFUSALS + 5 {
        input.extend_from_slice(format!("RCPT TO:<b{n}@example.org>\r\n").as_bytes());
    }
    // An administrator may allow more errors than are recorded.
    let generous = SessionLimits {
        max_errors: MAX_RECORDED_REFUSALS + 10,
        ..limits()
    };
    let transcript = run_with(generous, &input);
    let refused = transcript.replies.iter().filter(|r| r.code == 550).count();
    assert_eq!(refused, MAX_RECORDED_REFUSALS + 5);
    assert_eq!(transcript.refusals.len(), MAX_RECORDED_REFUSALS);
}

#[test]
fn each_transaction_is_judged_with_the_objects_at_its_mail_from() {
    let with_connector = r#"
        [[accepted_domain]]
        name = "contoso.test"
        [[inbound_connector]]
        name = "On-prem"
        type = "on_premises"
        sender_ip_addresses = ["192.0.2.1/32"]
    "#;
    let policy = |text: &str| {
        Arc::new(crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(text).unwrap()).unwrap())
    };
    let (publisher, objects) = tokio::sync::watch::channel(policy(with_connector));
    let mut session = Session::new(
        "mx.contoso.test".to_string(),
        limits(),
        objects,
        "192.0.2.1:40000".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
        false,
    );
    let mut transcript = Transcript::default();
    drive(
        &mut session,
        b"EHLO c\r\nMAIL FROM:<a@contoso.test>\r\nRCPT TO:<x@example.org>\r\n",
        &mut transcript,
    );
    // Changed mid-transaction: the open transaction keeps its snapshot.
    publisher.send_replace(policy(OBJECTS));
    drive(
        &mut session,
        b"RCPT TO:<y@example.org>\r\nRSET\r\n",
        &mut transcript,
    );
    drive(
        &mut session,
        b"MAIL FROM:<a@contoso.test>\r\nRCPT TO:<z@example.org>\r\nRCPT TO:<b@contoso.test>\r\n",
        &mut transcript,
    );
    assert_eq!(
        transcript.codes(),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.1.0",
            "550 5.7.1",
            "250 2.1.5"
        ]
    );
}

#[test]
fn short_of_space_new_mail_gets_452_4_3_1_and_the_session_goes_on() {
    use crate::store::space::{FreeSpace, MinFree};
    let dir = tempfile::tempdir().unwrap();
    // No filesystem has all of itself free.
    let short = SessionLimits {
        free_space: Some(FreeSpace::new(dir.path(), MinFree::Percent(100.0))),
        ..limits()
    };
    let transcript = run_with(
        short,
        b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nNOOP\r\n",
    );
    assert_eq!(transcript.codes(), ["250", "452 4.3.1", "503 5.5.1", "250 2.0.0"]);
    assert!(transcript.submissions.is_empty() && !transcript.closed);

    let roomy = SessionLimits {
        free_space: Some(FreeSpace::new(dir.path(), MinFree::Bytes(0))),
        ..limits()
    };
    let transcript = run_with(
        roomy,
        &concat(&[HELLO.as_bytes(), b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"]),
    );
    assert_eq!(transcript.submissions.len(), 1, "{:?}", transcript.codes());
}
