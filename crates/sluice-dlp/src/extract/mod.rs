//! Message extraction: raw RFC 5322 bytes to decoded texts, each scanned once.
//!
//! Input: the raw message and [`ScanLimits`]. Output: a [`ScanReport`] with the
//! findings of every decoded text: the subject, every MIME part (transfer
//! encodings and charsets decoded by mail-parser, HTML turned into text), and
//! the attachments: text and CSV, Office Open XML and OpenDocument (text of the
//! XML parts), PDF (text operators of plain and FlateDecode content streams),
//! nested `message/rfc822`, and zip archives.
//!
//! Never: expands a container past the limits. Depth (nested messages and
//! archives), total decompressed bytes and per-entry compression ratio are
//! checked from the declared sizes *before* inflating, and actual output is
//! capped while inflating; what is not expanded is listed in `refused`. Text
//! beyond the per-message budget is not scanned and the report says
//! `truncated`. Malformed input never panics and never fails the scan: what
//! cannot be read is refused, the rest is still scanned.
//!
//! Time: each message has a time budget ([`ScanLimits::time_budget`]),
//! checked between parts, archive members, PDF streams and decoded texts;
//! once it is spent the rest is not looked at and the report says
//! `truncated`. Each extractor also caps its own work (PDF streams, archive
//! entries, depth), so no single step runs long past the budget.

mod markup;
mod mime;
mod pdf;
mod xlsx;
mod zip;
#[cfg(test)]
mod zip_writer;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use mail_parser::{MimeHeaders, PartType};

use crate::custom::CustomDetector;
use crate::edm::EdmSet;
use crate::finding::{Confidence, Detector, Finding, Location};
use crate::scan::scan_text;

pub(crate) use markup::html_to_text;
use markup::{into_string, xml_to_text_into};

/// Bounds on the work one message may cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanLimits {
    /// How deep nested messages and archives are followed (an attachment of the
    /// message is depth 0; a file inside a zip attachment is depth 1).
    pub max_depth: usize,
    /// Total bytes that decompression (zip entries, PDF streams) may produce for
    /// one message.
    pub max_expanded_bytes: u64,
    /// Total decoded text scanned for one message; the rest is skipped and the
    /// report marked `truncated`.
    pub max_scanned_bytes: u64,
    /// Largest uncompressed:compressed ratio accepted for an entry over 1 MiB;
    /// above it the archive is refused as a zip bomb.
    pub max_ratio: u64,
    /// Wall-clock time one message's scan may take (`None`: no limit). Past
    /// it, nothing more is decoded or scanned and the report is `truncated`.
    /// Measured as wall time on the scanning thread, so a busy machine
    /// truncates earlier, never later.
    pub time_budget: Option<Duration>,
}

impl Default for ScanLimits {
    /// Depth 4, 64 MiB expanded, 32 MiB scanned, ratio 100:1, 2 seconds.
    /// Office XML compresses 10-30:1 and logs rarely beyond 60:1; a deflate
    /// bomb is ~1000:1.
    fn default() -> Self {
        ScanLimits {
            max_depth: 4,
            max_expanded_bytes: 64 << 20,
            max_scanned_bytes: 32 << 20,
            max_ratio: 100,
            time_budget: Some(Duration::from_secs(2)),
        }
    }
}

/// The result of scanning one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Every finding, deduplicated per (detector, text, location): the same card
    /// in the text and HTML alternatives of a body counts once.
    pub findings: Vec<Finding>,
    /// A budget was hit and some content was not scanned (`scan_truncated`).
    pub truncated: bool,
    /// Content that was not expanded, with the reason, e.g.
    /// `attachment:bomb.zip: zip bomb (ratio 1000:1)`. Never contains matched text.
    pub refused: Vec<String>,
}

impl ScanReport {
    /// Findings per detector name (built-in and custom) at or above `min`
    /// confidence, test values included.
    pub fn counts_by_name(&self, min: Confidence) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for f in self.findings.iter().filter(|f| f.confidence >= min) {
            *counts.entry(f.name().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// Findings per detector at or above `min` confidence (test values
    /// included: filter `findings` on `test_value` to exclude them).
    pub fn counts(&self, min: Confidence) -> BTreeMap<Detector, usize> {
        let mut counts = BTreeMap::new();
        for f in self.findings.iter().filter(|f| f.confidence >= min) {
            *counts.entry(f.detector).or_insert(0) += 1;
        }
        counts
    }
}

/// What a node adds to the built-in detectors: its custom detectors (and
/// exact-data-match sets). Built once per policy change, shared by scans.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    custom: Vec<CustomDetector>,
    edm: Vec<EdmSet>,
}

impl Scanner {
    /// A scanner with these custom detectors and exact-data-match sets.
    pub fn new(custom: Vec<CustomDetector>, edm: Vec<EdmSet>) -> Self {
        Scanner { custom, edm }
    }

    /// The custom detectors' and EDM sets' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.custom
            .iter()
            .map(CustomDetector::name)
            .chain(self.edm.iter().map(EdmSet::name))
    }

    fn scan_text(&self, text: &str, location: Location) -> Vec<Finding> {
        let mut findings = scan_text(text, location.clone());
        for d in &self.custom {
            d.scan(text, &location, &mut findings);
        }
        for set in &self.edm {
            set.scan(text, &location, &mut findings);
        }
        findings
    }
}

/// Decode every part of `raw` (subject, bodies, attachments, nested messages,
/// archives) and scan each decoded text once.
///
/// Never fails: unparseable content is refused or scanned as plain text.
pub fn scan_message(raw: &[u8], limits: &ScanLimits) -> ScanReport {
    scan_message_with(raw, limits, &Scanner::default())
}

/// [`scan_message`] with a node's custom detectors as well.
pub fn scan_message_with(raw: &[u8], limits: &ScanLimits, scanner: &Scanner) -> ScanReport {
    let mut walker = Walker {
        scanner,
        limits,
        deadline: limits.time_budget.map(|budget| Instant::now() + budget),
        scanned: 0,
        expanded: 0,
        report: ScanReport::default(),
        seen: HashSet::new(),
    };
    walker.message(raw, None, 0);
    walker.report
}

/// Office packages are zips whose XML parts hold the text; these are the parts
/// with user content (not styles, themes, relationships or media).
const OFFICE_PARTS: &[&str] = &[
    "word/document.xml",
    "word/header",
    "word/footer",
    "word/footnotes.xml",
    "word/endnotes.xml",
    "word/comments.xml",
    "xl/sharedStrings.xml",
    "xl/worksheets/sheet",
    "xl/comments",
    "ppt/slides/slide",
    "ppt/notesSlides/notesSlide",
    "ppt/comments/",
    "content.xml",
    "docProps/core.xml",
];

const OFFICE_EXTENSIONS: &[&str] = &[
    ".docx", ".docm", ".xlsx", ".xlsm", ".pptx", ".pptm", ".odt", ".ods", ".odp",
];

struct Walker<'l> {
    scanner: &'l Scanner,
    limits: &'l ScanLimits,
    deadline: Option<Instant>,
    scanned: u64,
    expanded: u64,
    report: ScanReport,
    seen: HashSet<(String, String, Location)>,
}

/// Two texts read the same to every detector: equal but for line breaks and
/// the whitespace around them (`<p>` versus `\n`). Runs of spaces and tabs
/// must match exactly, since a digit run is joined by one space only.
fn same_text(a: &str, b: &str) -> bool {
    // One walk over both, byte by byte: this runs on every HTML body.
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let a = a.trim_matches(['\n', '\r', ' ', '\t']).as_bytes();
    let b = b.trim_matches(['\n', '\r', ' ', '\t']).as_bytes();
    let (mut i, mut j) = (0, 0);
    loop {
        // Eight equal bytes at a time, when no whitespace run goes on past
        // them (the eighth is not whitespace, or the byte after them is not
        // on either side): a run inside them is the same run on both sides.
        while let (Some(x), Some(y)) = (a.get(i..i + 8), b.get(j..j + 8)) {
            let run_goes_on =
                ws(x[7]) && (a.get(i + 8).is_none_or(|&c| ws(c)) || b.get(j + 8).is_none_or(|&c| ws(c)));
            if x != y || run_goes_on {
                break;
            }
            i += 8;
            j += 8;
        }
        while i < a.len() && j < b.len() && a[i] == b[j] && !ws(a[i]) {
            i += 1;
            j += 1;
        }
        match (a.get(i), b.get(j)) {
            (None, None) => return true,
            (Some(&x), Some(&y)) if ws(x) && ws(y) => {
                let (si, sj) = (i, j);
                while i < a.len() && ws(a[i]) {
                    i += 1;
                }
                while j < b.len() && ws(b[j]) {
                    j += 1;
                }
                let (ra, rb) = (&a[si..i], &b[sj..j]);
                let breaks = |r: &[u8]| r.iter().any(|&c| c == b'\n' || c == b'\r');
                match (breaks(ra), breaks(rb)) {
                    (true, true) => {}
                    (false, false) if ra == rb => {}
                    _ => return false,
                }
            }
            _ => return false,
        }
    }
}

/// `bytes` as text, invalid UTF-8 replaced. Checked first with the fast
/// validator: decoded attachments are nearly always valid, and the lossy
/// decoder is several times slower on the same bytes.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn join(parent: Option<&str>, name: &str) -> String {
    match parent {
        Some(p) => format!("{p}/{name}"),
        None => name.to_owned(),
    }
}

impl Walker<'_> {
    fn refuse(&mut self, name: &str, reason: impl std::fmt::Display) {
        self.report.refused.push(format!("attachment:{name}: {reason}"));
    }

    /// Whether the time budget is spent; marks the report truncated if so.
    fn out_of_time(&mut self) -> bool {
        let spent = self.deadline.is_some_and(|deadline| Instant::now() >= deadline);
        if spent {
            self.report.truncated = true;
        }
        spent
    }

    /// Whether the scanned-text budget is spent; marks the report truncated if
    /// so. Checked before inflating: what could not be scanned need not be
    /// expanded.
    fn out_of_text_budget(&mut self) -> bool {
        let spent = self.scanned >= self.limits.max_scanned_bytes;
        if spent {
            self.report.truncated = true;
        }
        spent
    }

    /// Scan `text` within the per-message budgets.
    fn scan(&mut self, text: &str, location: Location) {
        if self.out_of_time() {
            return;
        }
        let remaining = self.limits.max_scanned_bytes.saturating_sub(self.scanned);
        let mut text = text;
        if text.len() as u64 > remaining {
            self.report.truncated = true;
            let mut cut = usize::try_from(remaining).unwrap_or(usize::MAX).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = &text[..cut];
        }
        if text.is_empty() {
            return;
        }
        self.scanned += text.len() as u64;
        for f in self.scanner.scan_text(text, location) {
            if self
                .seen
                .insert((f.name().to_owned(), f.matched.clone(), f.location.clone()))
            {
                self.report.findings.push(f);
            }
        }
    }

    /// A message: the top-level one (`name` None) or a nested one.
    fn message(&mut self, raw: &[u8], name: Option<&str>, depth: usize) {
        let skeleton = mime::Skeleton::of(raw);
        let again;
        let parsed = match mime::parse(&skeleton) {
            mime::Reading::Parsed(parsed) => Some(parsed),
            mime::Reading::Again(fewer) => {
                again = fewer;
                match mime::parse(&again) {
                    mime::Reading::Parsed(parsed) => Some(parsed),
                    // A skeleton read again is read whole if need be.
                    mime::Reading::Again(_) | mime::Reading::Unreadable => None,
                }
            }
            mime::Reading::Unreadable => None,
        };
        match parsed {
            Some(parsed) => self.parsed(&parsed, &parsed.message, name, depth),
            None => {
                let loc = name.map_or(Location::Body, |n| Location::Attachment(n.to_owned()));
                self.scan(&lossy(raw), loc);
            }
        }
    }

    /// `message` is `parsed`'s message or one nested in it; `parsed` holds
    /// their base64 parts decoded.
    fn parsed(
        &mut self,
        parsed: &mime::Parsed<'_>,
        message: &mail_parser::Message<'_>,
        name: Option<&str>,
        depth: usize,
    ) {
        let here = |n: Option<&str>| n.map_or(Location::Body, |n| Location::Attachment(n.to_owned()));
        if let Some(subject) = message.subject() {
            let loc = name.map_or(Location::Subject, |n| Location::Attachment(n.to_owned()));
            self.scan(subject, loc);
        }
        // Plain bodies scanned so far, by location: the HTML alternative of a
        // body usually reads exactly the same and need not be scanned twice.
        let mut plain: Vec<(Location, &str)> = Vec::new();
        for (i, part) in message.parts.iter().enumerate() {
            if self.out_of_time() {
                return;
            }
            let file_name = part.attachment_name();
            let mut full = file_name.map(|f| join(name, f));
            match &part.body {
                PartType::Text(text) => {
                    let text = parsed.text(part, text);
                    let loc = here(full.as_deref().or(name));
                    if file_name.is_some_and(|f| f.to_ascii_lowercase().ends_with(".html")) {
                        self.scan(&html_to_text(text), loc);
                    } else {
                        self.scan(text, loc.clone());
                        plain.push((loc, text));
                    }
                }
                PartType::Html(html) => {
                    let html = parsed.text(part, html);
                    let loc = here(full.as_deref().or(name));
                    let text = html_to_text(html);
                    if !plain.iter().any(|(l, p)| *l == loc && same_text(p, &text)) {
                        self.scan(&text, loc);
                    }
                }
                PartType::Binary(data) | PartType::InlineBinary(data) => {
                    let data = parsed.bytes(part, data);
                    let full = full.take().unwrap_or_else(|| join(name, &format!("part{i}")));
                    let is_message = part
                        .content_type()
                        .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("message"));
                    if is_message {
                        self.nested(data, &full, depth);
                    } else {
                        self.file(data, &full, depth);
                    }
                }
                PartType::Message(nested) => {
                    let full = full.take().unwrap_or_else(|| join(name, &format!("part{i}.eml")));
                    if depth + 1 > self.limits.max_depth {
                        self.refuse(
                            &full,
                            format_args!("nested deeper than {}", self.limits.max_depth),
                        );
                    } else {
                        self.parsed(parsed, nested, Some(&full), depth + 1);
                    }
                }
                PartType::Multipart(_) => {}
            }
        }
    }

    fn nested(&mut self, raw: &[u8], name: &str, depth: usize) {
        if depth + 1 > self.limits.max_depth {
            self.refuse(name, format_args!("nested deeper than {}", self.limits.max_depth));
        } else {
            self.message(raw, Some(name), depth + 1);
        }
    }

    /// An attachment or archive member, dispatched on its content (magic bytes)
    /// first and its name second.
    fn file(&mut self, data: &[u8], name: &str, depth: usize) {
        let lower = name.to_ascii_lowercase();
        if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
            if depth + 1 > self.limits.max_depth {
                self.refuse(name, format_args!("nested deeper than {}", self.limits.max_depth));
            } else {
                self.archive(
                    data,
                    name,
                    depth + 1,
                    OFFICE_EXTENSIONS.iter().any(|e| lower.ends_with(e)),
                );
            }
        } else if data.starts_with(b"%PDF-") {
            self.pdf(data, name);
        } else if lower.ends_with(".eml") {
            self.nested(data, name, depth);
        } else if data.iter().take(4096).any(|&c| c == 0) {
            // Images, executables and other binaries carry no scannable text.
        } else {
            let text = lossy(data);
            let head = text.get(..512).unwrap_or(&text).trim_start().to_ascii_lowercase();
            let loc = Location::Attachment(name.to_owned());
            if lower.ends_with(".html")
                || lower.ends_with(".htm")
                || head.starts_with("<!doctype html")
                || head.starts_with("<html")
            {
                self.scan(&html_to_text(&text), loc);
            } else {
                self.scan(&text, loc);
            }
        }
    }

    /// A zip archive or an Office package (`office`): bombs are refused from
    /// the declared sizes before anything is inflated.
    fn archive(&mut self, data: &[u8], name: &str, depth: usize, office: bool) {
        if self.out_of_text_budget() {
            return;
        }
        let entries = match zip::entries(data) {
            Ok(entries) => entries,
            Err(e) => return self.refuse(name, e),
        };
        let office = office
            || entries
                .iter()
                .any(|e| e.name == "[Content_Types].xml" || e.name == "mimetype");
        let wanted: Vec<&zip::Entry<'_>> = entries
            .iter()
            .filter(|e| !e.name.ends_with('/'))
            .filter(|e| !office || OFFICE_PARTS.iter().any(|p| e.name.starts_with(p)))
            .collect();
        let declared: u64 = wanted.iter().map(|e| e.size).sum();
        for e in &wanted {
            if e.size > 1 << 20 && e.size / e.compressed_size().max(1) > self.limits.max_ratio {
                let ratio = e.size / e.compressed_size().max(1);
                return self.refuse(name, format_args!("zip bomb (ratio {ratio}:1)"));
            }
        }
        if self.expanded + declared > self.limits.max_expanded_bytes {
            self.report.truncated = true;
            return self.refuse(
                name,
                format_args!(
                    "expands to {declared} bytes, over the {} byte limit",
                    self.limits.max_expanded_bytes
                ),
            );
        }
        let mut office_text = Vec::new();
        let mut parts = Vec::with_capacity(wanted.len());
        for e in wanted {
            if self.out_of_time() || self.out_of_text_budget() {
                break;
            }
            let member = join(Some(name), &e.name);
            let out = match e.inflate() {
                Ok(out) => out,
                Err(err) => {
                    self.refuse(&member, err);
                    continue;
                }
            };
            self.expanded += out.len() as u64;
            if office {
                parts.push((e.name.as_str(), out));
            } else {
                self.file(&out, &member, depth);
            }
        }
        if !office {
            return;
        }
        // Worksheets hold indexes into the shared strings: read them together,
        // a row a line, so a header stays above its column. The shared strings
        // are then scanned through the sheets, not a second time on their own.
        let is_sheet = |n: &str| n.starts_with("xl/worksheets/sheet");
        let shared = parts.iter().any(|(n, _)| is_sheet(n)).then(|| {
            parts
                .iter()
                .find(|(n, _)| *n == "xl/sharedStrings.xml")
                .map(|(_, x)| xlsx::shared_strings(&lossy(x)))
                .unwrap_or_default()
        });
        let mut used = vec![false; shared.as_ref().map_or(0, Vec::len)];
        for (part, xml) in &parts {
            let xml = lossy(xml);
            match &shared {
                Some(shared) if is_sheet(part) => {
                    office_text.extend_from_slice(xlsx::sheet_text(&xml, shared, &mut used).as_bytes());
                }
                Some(_) if *part == "xl/sharedStrings.xml" => continue,
                _ => xml_to_text_into(&xml, &mut office_text),
            }
            office_text.push(b'\n');
        }
        // Strings no cell points to are still content (a hiding place otherwise).
        for (s, _) in shared.iter().flatten().zip(&used).filter(|(_, u)| !**u) {
            office_text.extend_from_slice(s.as_bytes());
            office_text.push(b'\n');
        }
        self.scan(&into_string(office_text), Location::Attachment(name.to_owned()));
    }

    fn pdf(&mut self, data: &[u8], name: &str) {
        if self.out_of_text_budget() {
            return;
        }
        let budget = self.limits.max_expanded_bytes.saturating_sub(self.expanded);
        let extracted = pdf::text(data, budget, self.limits.max_ratio, self.deadline);
        self.expanded += extracted.expanded;
        if let Some(reason) = extracted.refused {
            self.report.truncated |= reason.truncates();
            self.refuse(name, reason);
        }
        self.scan(&extracted.text, Location::Attachment(name.to_owned()));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod same_text_tests {
    use super::same_text;

    #[test]
    fn alternatives_that_read_the_same() {
        assert!(same_text("a b.\n c\n", "\na b.\nc\n"));
        assert!(!same_text("4111  1111", "4111 1111"), "double space breaks a run");
        assert!(!same_text("4111\n1111", "4111 1111"));
        assert!(!same_text("a b", "a b c"));
        assert!(!same_text("a b c", "a b"));
        assert!(!same_text("ab", "a b"));
        assert!(!same_text("a\tb", "a b"));
        assert!(same_text("a \r\n\t b", "a\nb"));
        assert!(same_text("", " \n "));
        assert!(!same_text("a", ""));
        assert!(!same_text("4111 1111", "4111 1112"));
        // Runs that straddle an eight-byte step.
        assert!(same_text("abcdefg \n hijklmno", "abcdefg \n\thijklmno"));
        assert!(!same_text("abcdefg  hijklmno", "abcdefg \thijklmno"));
        assert!(!same_text("abcdefg  hijklmno", "abcdefg \nhijklmno"));
        assert!(!same_text(
            "abcdefgh ijklmnop qrstuvw",
            "abcdefgh ijklmnop\nqrstuvw"
        ));
        assert!(same_text(
            "abcdefgh ijklmnop\r\nqrstuvw",
            "abcdefgh ijklmnop\nqrstuvw"
        ));
        // A run ending on an eight-byte step, going on past it on one side.
        assert!(same_text("abcdefg xyz", "abcdefg xyz"));
        assert!(!same_text("abcdefg  xyz", "abcdefg xyz"));
        assert!(!same_text("abcdefg xyz", "abcdefg  xyz"));
        assert!(same_text("abcdefg \nxyz", "abcdefg\nxyz"));
        assert!(!same_text("abcdefg \txyz", "abcdefg xyz"));
        assert!(same_text("abcdefg ", "abcdefg"));
    }
}
