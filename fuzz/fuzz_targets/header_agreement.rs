//! Differential: after the end-of-DATA header check and the header firewall,
//! the node's reading of the header section and mail-parser's (the MIME
//! parser the rule conditions use, and what an RFC 5322 reader downstream
//! sees) name the same fields in the same order, and neither finds an
//! internal (`X-Sluice-Org-*`) field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::classify::header_firewall::strip_internal_headers;
use sluice::message::header::{agreement, check};

fuzz_target!(|data: &[u8]| {
    if check(data).is_err() {
        return;
    }
    let (stripped, _) = strip_internal_headers(data);
    if let Err(disagreement) = agreement(&stripped) {
        panic!("{disagreement}");
    }
});
