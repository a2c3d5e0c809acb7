//! Header firewall and rule header edits over arbitrary messages: no
//! panics, and the body after the header section is never changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::classify::header_firewall::strip_internal_headers;
use sluice::message::header_section_len;
use sluice::rules::{apply_edits, HeaderEdit};

fuzz_target!(|data: &[u8]| {
    let body = &data[header_section_len(data)..];
    let (stripped, _) = strip_internal_headers(data);
    assert!(stripped.ends_with(body));
    let edited = apply_edits(
        data,
        &[
            HeaderEdit::Remove("X-Tag".into()),
            HeaderEdit::Set { name: "X-Route".into(), value: "scanner".into() },
            HeaderEdit::PrependSubject("[EXT] ".into()),
        ],
    );
    assert!(edited.ends_with(body));
});
