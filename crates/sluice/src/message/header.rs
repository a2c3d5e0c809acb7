//! The one reading of a header section (RFC 5322 section 2.2) that every
//! stage shares: the header firewall, the rule conditions, the header edits
//! and the rule-loop counter all see the same fields.
//!
//! Readers disagree only on malformed lines (a line without a colon, a colon
//! first, whitespace before the colon, a folded line with no field above it,
//! a blank folded line, bare CR or LF, bytes outside printable ASCII in a
//! name): one reader takes such a line as a field, another as the start of
//! the body or as part of the field above. So the node refuses them at the
//! end of DATA ([`check`], `550 5.6.0`) instead of guessing, and what is
//! left reads the same in [`fields`], in mail-parser and in any RFC 5322
//! reader downstream.

/// One header field as written: its name (whitespace around it trimmed)
/// and the raw bytes of the whole field, folded lines and CRLFs included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, as written (case kept).
    pub name: &'a [u8],
    /// The field from the first byte of its name to the end of its last line.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// Whether the field's name is `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// Whether the field's name starts with `prefix` (case-insensitive).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.name.len() >= prefix.len() && self.name[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }

    /// The unfolded value after the colon, trimmed.
    pub fn value(&self) -> String {
        let colon = self
            .raw
            .iter()
            .position(|&b| b == b':')
            .map_or(self.raw.len(), |p| p + 1);
        String::from_utf8_lossy(&self.raw[colon..])
            .replace("\r\n", "")
            .trim()
            .to_string()
    }
}

/// Why a header section is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedHeader {
    /// A CR not followed by LF, or an LF not preceded by CR.
    #[error("bare CR or LF in header line {0}")]
    BareLineEnding(usize),
    /// A line that is neither a field nor the folded part of one.
    #[error("header line {0} has no colon")]
    NoColon(usize),
    /// `: value` with no name.
    #[error("header line {0} has no field name")]
    EmptyName(usize),
    /// `Name : value` (RFC 822's obsolete form; readers differ on it).
    #[error("whitespace before the colon in header line {0}")]
    SpaceBeforeColon(usize),
    /// Bytes outside printable US-ASCII in a field name.
    #[error("invalid character in the field name of header line {0}")]
    BadName(usize),
    /// A folded (indented) line with no field above it.
    #[error("header line {0} is folded but continues no field")]
    OrphanContinuation(usize),
    /// A folded line of whitespace only: some readers end the header there.
    #[error("header line {0} is blank but folded")]
    BlankContinuation(usize),
    /// A folded line that starts with an internal field name: part of the
    /// field above for RFC 5322 readers, a forged field for careless ones.
    #[error("header line {0} folds an internal field name")]
    FoldedInternalName(usize),
}

/// Prefix of internal header names (`X-Sluice-Org-*`, compared
/// case-insensitively): the header firewall's (classify/) to strip.
pub const INTERNAL_PREFIX: &str = "x-sluice-org-";

/// Length of the header section, including the blank line that ends it.
pub fn section_len(content: &[u8]) -> usize {
    if content.starts_with(b"\r\n") {
        return 2;
    }
    memchr::memmem::find(content, b"\r\n\r\n").map_or(content.len(), |p| p + 4)
}

/// The lines of a header section as (start, end including CRLF), stopping
/// at the blank line.
fn lines(headers: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= headers.len() {
            return None;
        }
        let end = memchr::memmem::find(&headers[pos..], b"\r\n").map_or(headers.len(), |p| pos + p + 2);
        if &headers[pos..end] == b"\r\n" {
            return None;
        }
        let line = (pos, end);
        pos = end;
        Some(line)
    })
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_wsp(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_wsp(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_wsp(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// The fields of `content`'s header section, in order. Never fails: on a
/// malformed section (one [`check`] refuses, such as mail queued before the
/// check existed) it errs towards seeing a field, so the header firewall
/// removes anything that any reader could take for an internal field: a
/// line without a field above it counts as a field of its own, and names are
/// read with surrounding whitespace trimmed.
pub fn fields(content: &[u8]) -> Vec<Field<'_>> {
    let headers = &content[..section_len(content)];
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start_of_field: Option<usize> = None;
    for (start, end) in lines(headers) {
        let line = &headers[start..end];
        let folded = is_wsp(line[0]);
        match (folded, start_of_field) {
            (true, Some(field_start)) => {
                if let Some(last) = out.last_mut() {
                    last.raw = &headers[field_start..end];
                }
            }
            _ => {
                let colon = line.iter().position(|&b| b == b':');
                let name = colon.map_or(&line[..0], |colon| trim_wsp(&line[..colon]));
                out.push(Field { name, raw: line });
                start_of_field = Some(start);
            }
        }
    }
    out
}

/// The field named `name` that mail-parser's accessors read (the last
/// one), parsed alone: a reader of one field need not parse the whole
/// section, and for a section [`check`] passed this is the field and the
/// value mail-parser gives for the whole.
pub fn read_field<T>(
    content: &[u8],
    name: &str,
    read: impl FnOnce(&mail_parser::Message<'_>) -> Option<T>,
) -> Option<T> {
    let all = fields(content);
    let field = all.iter().rev().find(|f| f.is(name))?;
    let mut alone = Vec::with_capacity(field.raw.len() + 4);
    alone.extend_from_slice(field.raw);
    if !alone.ends_with(b"\r\n") {
        alone.extend_from_slice(b"\r\n");
    }
    alone.extend_from_slice(b"\r\n");
    let parsed = mail_parser::MessageParser::new().parse_headers(&alone)?;
    read(&parsed)
}

/// How many fields named `name` the section holds.
pub fn count_fields(content: &[u8], name: &str) -> usize {
    fields(content).iter().filter(|f| f.is(name)).count()
}

/// Refuses a header section that RFC 5322 readers could read differently.
pub fn check(content: &[u8]) -> Result<(), MalformedHeader> {
    let headers = &content[..section_len(content)];
    if let Some(line) = bare_line_ending(headers) {
        return Err(MalformedHeader::BareLineEnding(line));
    }
    let mut in_field = false;
    for (index, (start, end)) in lines(headers).enumerate() {
        let number = index + 1;
        let line = headers[start..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&headers[start..end]);
        if is_wsp(line[0]) {
            if !in_field {
                return Err(MalformedHeader::OrphanContinuation(number));
            }
            if line.iter().all(|&b| is_wsp(b)) {
                return Err(MalformedHeader::BlankContinuation(number));
            }
            let folded = Field {
                name: trim_wsp(line),
                raw: line,
            };
            if folded.has_prefix(INTERNAL_PREFIX) {
                return Err(MalformedHeader::FoldedInternalName(number));
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(MalformedHeader::NoColon(number));
        };
        let name = &line[..colon];
        if name.is_empty() {
            return Err(MalformedHeader::EmptyName(number));
        }
        if name.last().copied().is_some_and(is_wsp) {
            return Err(MalformedHeader::SpaceBeforeColon(number));
        }
        if !name.iter().all(|b| (33..=126).contains(b)) {
            return Err(MalformedHeader::BadName(number));
        }
        in_field = true;
    }
    Ok(())
}

/// The 1-based line holding the first bare CR or LF, if any.
fn bare_line_ending(headers: &[u8]) -> Option<usize> {
    let mut line = 1;
    let mut i = 0;
    while i < headers.len() {
        match headers[i] {
            b'\r' if headers.get(i + 1) == Some(&b'\n') => {
                line += 1;
                i += 2;
                continue;
            }
            b'\r' | b'\n' => return Some(line),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether this reading and mail-parser's (the one the rule conditions use,
/// and what an RFC 5322 reader downstream sees) name the same fields of
/// `content` in the same order, and neither finds an internal field. Holds
/// for every message that passed [`check`] and the header firewall; the
/// differential fuzz target and the property test assert it.
pub fn agreement(content: &[u8]) -> Result<(), String> {
    let ours: Vec<String> = fields(content)
        .iter()
        .map(|f| String::from_utf8_lossy(f.name).to_ascii_lowercase())
        .collect();
    let theirs: Vec<String> = mail_parser::MessageParser::new()
        .parse(content)
        .map(|message| {
            message
                .headers()
                .iter()
                .map(|h| h.name().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    if ours != theirs {
        return Err(format!(
            "fields differ: ours {ours:?}, mail-parser {theirs:?} in {:?}",
            String::from_utf8_lossy(content)
        ));
    }
    let prefix = INTERNAL_PREFIX;
    if let Some(internal) = ours.iter().find(|name| name.starts_with(prefix)) {
        return Err(format!(
            "internal field {internal:?} left in {:?}",
            String::from_utf8_lossy(content)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(content: &[u8]) -> Vec<String> {
        fields(content)
            .iter()
            .map(|f| String::from_utf8_lossy(f.name).into_owned())
            .collect()
    }

    #[test]
    fn fields_keep_folds_with_their_field() {
        let msg = b"Subject: a\r\n b\r\nTo: x\r\n\r\nNot: a header\r\n";
        let read = fields(msg);
        assert_eq!(names(msg), vec!["Subject", "To"]);
        assert_eq!(read[0].raw, b"Subject: a\r\n b\r\n");
        assert_eq!(read[0].value(), "a b");
        assert!(read[1].is("to"));
    }

    #[test]
    fn a_leading_fold_is_read_as_a_field_so_the_firewall_sees_it() {
        let msg = b" X-Sluice-Org-Scan : pass\r\nTo: x\r\n\r\n";
        assert_eq!(names(msg), vec!["X-Sluice-Org-Scan", "To"]);
    }

    #[test]
    fn check_refuses_each_malformed_form() {
        let cases: [(&[u8], MalformedHeader); 10] = [
            (b"To: x\r\nnocolon\r\n\r\n", MalformedHeader::NoColon(2)),
            (b": value\r\n\r\n", MalformedHeader::EmptyName(1)),
            (b"X-A : v\r\n\r\n", MalformedHeader::SpaceBeforeColon(1)),
            (b"X-A\t: v\r\n\r\n", MalformedHeader::SpaceBeforeColon(1)),
            (b"X A: v\r\n\r\n", MalformedHeader::BadName(1)),
            (b" X-A: v\r\n\r\n", MalformedHeader::OrphanContinuation(1)),
            (
                b"X-A: v\r\n \t\r\nX-B: w\r\n\r\n",
                MalformedHeader::BlankContinuation(2),
            ),
            (
                b"X-A: v\r\n\tx-sluice-org-scan: pass\r\n\r\n",
                MalformedHeader::FoldedInternalName(2),
            ),
            (b"X-A: v\rX-B: w\r\n\r\n", MalformedHeader::BareLineEnding(1)),
            (
                b"X-A: v\r\nX-B: w\nX-C: y\r\n\r\n",
                MalformedHeader::BareLineEnding(2),
            ),
        ];
        for (msg, expected) in cases {
            assert_eq!(check(msg), Err(expected), "{}", String::from_utf8_lossy(msg));
        }
        let eight_bit_name = "Sübject: x\r\n\r\n";
        assert_eq!(check(eight_bit_name.as_bytes()), Err(MalformedHeader::BadName(1)));
    }

    #[test]
    fn check_accepts_well_formed_sections_and_ignores_the_body() {
        for msg in [
            &b"Subject: a\r\n\tb\r\nX-Empty:\r\n\r\nno colon in the body\r\n"[..],
            b"\r\nbody only",
            b"Subject: no blank line at the end",
            b"",
        ] {
            assert_eq!(check(msg), Ok(()), "{}", String::from_utf8_lossy(msg));
        }
    }

    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        "Subject",
        "To",
        "X-Sluice-Org-Scan",
        "x-sluice-org-route",
        "X-SLUICE-ORG-RULE-LOOP",
        "X-Sluice-Org-",
        "X-Sluice-Orgx",
        "Content-Type",
        "Received",
        "From",
        "Message-ID",
        "=?utf-8?q?X-Sluice-Org-Scan?=",
        "X-Sluice-Org-Scan ",
        " X-Sluice-Org-Scan",
        "X\u{e9}",
        "",
    ];
    const VALUES: &[&str] = &[
        "",
        " ",
        "\t",
        "verdict=pass",
        "=?utf-8?q?verdict=3Dpass?=",
        ":",
        "\r",
        "\n",
        "\r\n",
        "\r\n ",
        "\r\n\t",
        "\r\n X-Sluice-Org-Scan: pass",
        "\r\nX-Sluice-Org-Scan: pass",
        "(comment",
        "\"quoted",
        "message/rfc822",
        "multipart/mixed; boundary=b",
        "\u{0}",
        "\u{e9}",
        "<a@b>",
        "Alice <alice@example.test>",
        "bob@example.test, carol@example.test",
    ];
    const BODIES: &[&str] = &[
        "",
        "body\r\n",
        "X-Sluice-Org-Scan: verdict=pass\r\n",
        "--b\r\nContent-Type: message/rfc822\r\n\r\nX-Sluice-Org-Scan: verdict=pass\r\n\r\nx\r\n--b--\r\n",
    ];

    fn line() -> impl Strategy<Value = String> {
        (
            prop::sample::select(NAMES),
            prop::sample::select(&[":", ": ", " :", "\t:", "", "::"][..]),
            prop::collection::vec(prop::sample::select(VALUES), 0..4),
        )
            .prop_map(|(name, colon, values)| format!("{name}{colon}{}\r\n", values.concat()))
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(line(), 0..8),
            prop::sample::select(&["\r\n", "", " \r\n"][..]),
            prop::sample::select(BODIES),
        )
            .prop_map(|(lines, blank, body)| format!("{}{blank}{body}", lines.concat()).into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The property of the `header_agreement` fuzz target, in the
        /// normal suite: whatever passes the end-of-DATA check reads the
        /// same in our reader and mail-parser once the firewall has run.
        #[test]
        fn checked_and_stripped_sections_read_the_same_everywhere(content in message()) {
            if check(&content).is_ok() {
                let (stripped, _) = crate::classify::header_firewall::strip_internal_headers(&content);
                prop_assert_eq!(agreement(&stripped), Ok(()));
            }
        }

        /// One field read alone gives what mail-parser gives from the
        /// whole section, for every section the end-of-DATA check passes.
        #[test]
        fn a_field_read_alone_reads_as_in_the_whole_section(content in message()) {
            if check(&content).is_ok() {
                let whole = mail_parser::MessageParser::new()
                    .parse_headers(&content[..section_len(&content)]);
                let message_id = whole.as_ref().and_then(|m| m.message_id().map(str::to_string));
                let from = whole.as_ref().and_then(|m| m.from()?.first()?.address().map(str::to_string));
                let received = whole.as_ref().map_or(0, |m| {
                    m.headers().iter().filter(|h| h.name == mail_parser::HeaderName::Received).count()
                });
                prop_assert_eq!(
                    read_field(&content, "Message-ID", |m| m.message_id().map(str::to_string)),
                    message_id
                );
                prop_assert_eq!(
                    read_field(&content, "From", |m| m.from()?.first()?.address().map(str::to_string)),
                    from
                );
                prop_assert_eq!(count_fields(&content, "Received"), received);
            }
        }

        /// Arbitrary bytes: never a panic, and the same property.
        #[test]
        fn arbitrary_bytes_never_break_the_property(content in prop::collection::vec(any::<u8>(), 0..256)) {
            if check(&content).is_ok() {
                let (stripped, _) = crate::classify::header_firewall::strip_internal_headers(&content);
                prop_assert_eq!(agreement(&stripped), Ok(()));
            }
        }
    }
}
