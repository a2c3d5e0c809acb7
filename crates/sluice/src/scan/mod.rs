//! Stage 3 (beside rules): the adapter between a message and the DLP
//! engine (`sluice-dlp`). The scan runs at most once per message, when a
//! rule needs it (`contains_sensitive_info`, `stamp_scan`); its results
//! leave this module only as detector names and counts (stamps, traces,
//! quarantine reasons), never as matched text.

mod objects;

pub use objects::compile;
pub use sluice_dlp::{Confidence, Detector, Finding, Location, ScanLimits, ScanReport, Scanner};

use std::collections::BTreeMap;

/// The header the `stamp_scan` action writes (SPEC section 5).
pub const SCAN_HEADER: &str = "X-Sluice-Org-Scan";

/// Findings at or above this confidence make the verdict `found`.
const VERDICT_CONFIDENCE: Confidence = Confidence::Medium;

/// Scans a whole message within `limits` (the time budget included: what
/// is not scanned in time makes the report `truncated`), with the node's
/// custom detectors beside the built-in ones.
pub fn scan_with(content: &[u8], limits: &ScanLimits, scanner: &Scanner) -> ScanReport {
    sluice_dlp::scan_message_with(content, limits, scanner)
}

/// Detector counts for the verdict, plus what could not be scanned.
fn verdict_counts(report: &ScanReport) -> BTreeMap<String, usize> {
    let mut counts = report.counts_by_name(VERDICT_CONFIDENCE);
    if report.truncated {
        counts.insert("scan_truncated".into(), 1);
    }
    if !report.refused.is_empty() {
        counts.insert("content_refused".into(), report.refused.len());
    }
    counts
}

/// `verdict=pass|found; findings=credit_card:2,us_ssn:1; scanner=HOST`.
/// A scan that could not look at everything is never a pass.
pub fn stamp(report: &ScanReport, scanner: &str) -> String {
    let counts = verdict_counts(report);
    if counts.is_empty() {
        return format!("verdict=pass; scanner={scanner}");
    }
    format!("verdict=found; findings={}; scanner={scanner}", list(&counts))
}

/// Names and counts of every finding (all confidences), for traces and
/// the quarantine: `credit_card:2 (high), us_ssn:1 (medium)`.
pub fn summary(report: &ScanReport) -> String {
    let mut parts: BTreeMap<(&str, Confidence), usize> = BTreeMap::new();
    for f in &report.findings {
        *parts.entry((f.name(), f.confidence)).or_insert(0) += 1;
    }
    let mut text: Vec<String> = parts
        .iter()
        .map(|((d, c), n)| format!("{d}:{n} ({})", c.as_str()))
        .collect();
    if report.truncated {
        text.push("scan_truncated".into());
    }
    text.extend(report.refused.iter().cloned());
    if text.is_empty() {
        "no sensitive information found".into()
    } else {
        text.join(", ")
    }
}

/// The `contains_sensitive_info` test: at least `min_count` findings of the
/// named detectors (any when empty) at or above `min_confidence`.
pub fn meets(
    report: &ScanReport,
    detectors: &[String],
    min_confidence: Confidence,
    min_count: usize,
) -> bool {
    let count = report
        .findings
        .iter()
        .filter(|f| f.confidence >= min_confidence)
        .filter(|f| detectors.is_empty() || detectors.iter().any(|d| d == f.name()))
        .count();
    count >= min_count.max(1)
}

fn list(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(d, n)| format!("{d}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "Subject: order\r\n\r\nPlease charge my visa card 4111 1111 1111 1111 exp 12/29.\r\n";

    #[test]
    fn stamp_and_summary_never_carry_the_match() {
        let report = scan_with(CARD.as_bytes(), &ScanLimits::default(), &Scanner::default());
        let stamp = stamp(&report, "scanner.test");
        assert!(
            stamp.starts_with("verdict=found; findings=credit_card:1"),
            "{stamp}"
        );
        assert!(!stamp.contains("1111") && !summary(&report).contains("1111"));
        assert!(meets(&report, &["credit_card".into()], Confidence::Medium, 1));
        assert!(!meets(&report, &["us_ssn".into()], Confidence::Low, 1));
        let clean = scan_with(
            b"Subject: hi\r\n\r\nlunch at noon?\r\n",
            &ScanLimits::default(),
            &Scanner::default(),
        );
        assert_eq!(super::stamp(&clean, "s"), "verdict=pass; scanner=s");
    }
}
