//! The DLP engine over arbitrary messages (MIME, archives, PDFs, HTML): no
//! panics, and every match is text that the scanned content can contain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::scan::ScanLimits;

fuzz_target!(|data: &[u8]| {
    let limits = ScanLimits { max_scanned_bytes: 1 << 20, max_expanded_bytes: 4 << 20, ..ScanLimits::default() };
    let report = sluice_dlp::scan_message(data, &limits);
    for finding in &report.findings {
        assert!(!finding.matched.is_empty());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sluice_dlp::scan_text(text, sluice_dlp::Location::Body);
    }
});
