//! The SMTP server session fed arbitrary bytes in arbitrary chunks: it must
//! never panic, never hand over a message with a bare CR or LF, and never
//! buffer more than its limits allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::classify::Classification;
use sluice::config::objects::ObjectSet;
use sluice::receive::session::{Event, Session};
use sluice::receive::SessionLimits;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let policy = toml::from_str::<ObjectSet>("[[accepted_domain]]\nname = \"contoso.test\"\n")
        .expect("fixed objects")
        .validate()
        .expect("fixed objects are valid");
    let limits = SessionLimits { max_message_size: 4096, max_recipients: 5, ..SessionLimits::default() };
    let mut session = Session::new(
        "mx.contoso.test".into(),
        limits,
        Arc::new(policy),
        Classification::Anonymous,
        "192.0.2.1:1234".parse().expect("addr"),
        "192.0.2.2:25".parse().expect("addr"),
        false,
    );
    // The first byte picks the chunk size, so framing across reads is exercised.
    let (chunk, rest) = match data.split_first() {
        Some((c, rest)) => ((*c as usize % 64) + 1, rest),
        None => return,
    };
    for piece in rest.chunks(chunk) {
        session.push(piece);
        while let Some(event) = session.poll() {
            if let Event::Submit(submission) = event {
                let content = &submission.content;
                for (i, b) in content.iter().enumerate() {
                    match b {
                        b'\n' => assert!(i > 0 && content[i - 1] == b'\r', "bare LF handed over"),
                        b'\r' => assert!(content.get(i + 1) == Some(&b'\n'), "bare CR handed over"),
                        _ => {}
                    }
                }
            }
        }
        assert!(session.buffered() <= 8192 + 4096, "input buffer grew past the limits");
    }
});
