//! Reading a message's MIME structure, with base64 attachments decoded by the
//! `base64` crate rather than by mail-parser.
//!
//! mail-parser decodes every base64 part byte by byte as it finds the part's
//! end: on mail with attachments that was a fifth of the scan. So a message is
//! first read by a parser configured to leave `Content-Transfer-Encoding`
//! alone (the parts' structure, names and types come out the same; only the
//! bodies stay encoded), and each base64 attachment is decoded from its raw
//! bytes with the `base64` crate's engine, several bytes per step.
//!
//! That reading is used only where it yields exactly what mail-parser's
//! decoding would: every encoded part is a binary attachment (not text, not a
//! nested message), its encoding is written plainly (`base64`, `7bit`,
//! `8bit`, `binary`, in any case) in a single header, and its base64 is
//! canonical (the alphabet, line breaks and padding, nothing else). Any other
//! message (quoted-printable or base64 text, an encoded nested message, a
//! stray character in the base64) is read again by mail-parser's own
//! decoding, which also decides what malformed input means.
//!
//! mail-parser also walks every byte of every body to find its end (a
//! boundary can start anywhere), and turns every text body into a `String`
//! even where it is base64 that the scan decodes from the raw bytes again.
//! Most of a message with attachments is base64, which holds no `-`: lines
//! without one cannot hold a boundary, so the parser is given a
//! [`Skeleton`] of the message in which each long stretch without a `-` or
//! a space keeps a few of its lines only. Its reading is used only where
//! every cut falls inside the body of a base64 part (decoded from the raw
//! bytes, whose offsets are the skeleton's shifted back); the parser then
//! meets the same bytes up to each cut, no boundary inside it, and the same
//! line after it, so parts, names and types come out as from the raw
//! message. Any other cut (a text body, a preamble, headers) and the raw
//! message is read as before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// A parser that reads what the scan needs (subject, content types and
/// dispositions) as mail-parser's default does, skips the other headers, and
/// ignores `Content-Transfer-Encoding` so no body is decoded.
static UNDECODED: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_text(HeaderName::Subject)
        .header_content_type(HeaderName::ContentType)
        .header_content_type(HeaderName::ContentDisposition)
        .ignore_header(HeaderName::ContentTransferEncoding)
        .default_header_ignore()
});

/// A parsed message and the decoded bodies of its base64 parts, keyed by the
/// part's body offset in the raw message (nested messages that are not
/// encoded share the raw message, so the offsets are unique).
pub(super) struct Parsed<'x> {
    pub message: Message<'x>,
    decoded: HashMap<u32, Decoded>,
}

/// A base64 part decoded here: a binary one's bytes, a text one's text (in
/// its charset, as mail-parser converts it).
enum Decoded {
    Bytes(Vec<u8>),
    Text(String),
}

impl Parsed<'_> {
    /// The decoded body of a binary part: the `base64` crate's output where
    /// this reading decoded it, else mail-parser's.
    pub fn bytes<'a>(&'a self, part: &MessagePart<'_>, data: &'a [u8]) -> &'a [u8] {
        match self.decoded.get(&part.offset_body) {
            Some(Decoded::Bytes(bytes)) => bytes,
            _ => data,
        }
    }

    /// The decoded text of a text or HTML part, as [`Parsed::bytes`].
    pub fn text<'a>(&'a self, part: &MessagePart<'_>, text: &'a str) -> &'a str {
        match self.decoded.get(&part.offset_body) {
            Some(Decoded::Text(decoded)) => decoded,
            _ => text,
        }
    }
}

/// A message with its long stretches of base64-like lines cut short, for
/// the parser to walk; see the module's documentation.
pub(super) struct Skeleton<'r> {
    raw: &'r [u8],
    /// What the parser reads: `raw` with the cuts taken out.
    bytes: Cow<'r, [u8]>,
    cuts: Vec<Cut>,
}

/// One run of lines cut short, in the skeleton's offsets: where the bytes
/// taken out were (`at`) and the end of the line kept after them, before
/// its line break (where a body can end).
#[derive(Debug, Clone, Copy)]
struct Cut {
    at: usize,
    end: usize,
    /// The skeleton's offsets from `at` on are this much short of the raw
    /// message's (the bytes taken out by this cut and those before it).
    shift: usize,
}

/// Stretches without a `-` or a space shorter than this are left alone
/// (words, header lines, URLs).
const STRETCH_MIN: usize = 1024;

impl<'r> Skeleton<'r> {
    /// Find the stretches of at least [`STRETCH_MIN`] bytes without a `-`
    /// or a space, and take out the whole lines inside each but its first
    /// three line breaks and its last two (kept: the lines around a
    /// header section's end, and a whole line after the cut, whose line
    /// break a body walk meets before any boundary). A stretch is found
    /// by vector searches: backwards over the next [`STRETCH_MIN`] bytes
    /// for the last `-` or space (in prose, a step of nearly that length),
    /// then forwards to the stretch's end (in base64, the body's end).
    pub(super) fn of(raw: &'r [u8]) -> Self {
        // Bytes taken out: (from, to) in the raw message, whole lines.
        let mut taken: Vec<(usize, usize)> = Vec::new();
        let mut from = 0;
        while from + STRETCH_MIN <= raw.len() {
            if let Some(k) = memchr::memrchr2(b'-', b' ', &raw[from..from + STRETCH_MIN]) {
                from += k + 1;
                continue;
            }
            let to = memchr::memchr2(b'-', b' ', &raw[from + STRETCH_MIN..])
                .map_or(raw.len(), |k| from + STRETCH_MIN + k);
            let stretch = &raw[from..to];
            let mut breaks = memchr::memchr_iter(b'\n', stretch);
            let mut last = memchr::memrchr_iter(b'\n', stretch);
            if let (Some(first), Some(end)) = (breaks.nth(2), last.nth(1)) {
                if first < end {
                    taken.push((from + first + 1, from + end + 1));
                }
            }
            from = to;
        }
        if taken.is_empty() {
            return Skeleton {
                raw,
                bytes: Cow::Borrowed(raw),
                cuts: Vec::new(),
            };
        }
        let removed: usize = taken.iter().map(|(a, b)| b - a).sum();
        let mut bytes = Vec::with_capacity(raw.len() - removed);
        let mut cuts = Vec::with_capacity(taken.len());
        let (mut copied, mut shift) = (0, 0);
        for (a, b) in taken {
            bytes.extend_from_slice(&raw[copied..a]);
            copied = b;
            let at = bytes.len();
            shift += b - a;
            // The kept line after the cut ends with a line break.
            let line_end = memchr::memchr(b'\n', &raw[b..]).map_or(raw.len(), |k| b + k);
            let line_end = if raw[..line_end].ends_with(b"\r") {
                line_end - 1
            } else {
                line_end
            };
            cuts.push(Cut {
                at,
                end: line_end - shift,
                shift,
            });
        }
        bytes.extend_from_slice(&raw[copied..]);
        Skeleton {
            raw,
            bytes: Cow::Owned(bytes),
            cuts,
        }
    }

    /// The raw message's offset of the skeleton's `offset`.
    fn raw_offset(&self, offset: usize) -> usize {
        let i = self.cuts.partition_point(|c| c.at <= offset);
        offset + i.checked_sub(1).map_or(0, |i| self.cuts[i].shift)
    }

    /// The raw bytes of the skeleton's `range`.
    fn raw_range(&self, start: u32, end: u32) -> Option<&'r [u8]> {
        self.raw
            .get(self.raw_offset(start as usize)..self.raw_offset(end as usize))
    }

    /// How many cuts lie inside the body at the skeleton's `start..end`:
    /// after its first byte, with the line after them inside it.
    fn cuts_within(&self, start: u32, end: u32) -> usize {
        let (start, end) = (start as usize, end as usize);
        let from = self.cuts.partition_point(|c| c.at <= start);
        self.cuts[from..].iter().take_while(|c| c.end <= end).count()
    }
}

/// Parse the message of `skeleton`: undecoded with fast base64 where that
/// reads the same, otherwise with mail-parser's default decoding. `None`
/// where mail-parser finds no message.
pub(super) fn parse<'x>(skeleton: &'x Skeleton<'_>) -> Option<Parsed<'x>> {
    if !skeleton.cuts.is_empty() {
        if let Some(message) = UNDECODED.parse(&skeleton.bytes[..]) {
            let mut decoded = HashMap::new();
            let mut within = 0;
            if decode_parts(skeleton, &message, &mut decoded, &mut within) && within == skeleton.cuts.len() {
                return Some(Parsed { message, decoded });
            }
        }
    }
    let whole = skeleton.raw;
    let uncut = Skeleton {
        raw: whole,
        bytes: Cow::Borrowed(whole),
        cuts: Vec::new(),
    };
    if let Some(message) = UNDECODED.parse(whole) {
        let mut decoded = HashMap::new();
        if decode_parts(&uncut, &message, &mut decoded, &mut 0) {
            return Some(Parsed { message, decoded });
        }
    }
    MessageParser::default().parse(whole).map(|message| Parsed {
        message,
        decoded: HashMap::new(),
    })
}

/// A part's transfer encoding, as far as this reading needs it.
enum Transfer {
    /// None, `7bit`, `8bit` or `binary`: the body is as it stands.
    Identity,
    Base64,
    /// Anything else (quoted-printable, several headers, an unusual
    /// spelling): left to mail-parser.
    Other,
}

fn transfer(raw: &[u8], part: &MessagePart<'_>) -> Transfer {
    let mut headers = part
        .headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentTransferEncoding);
    let Some(header) = headers.next() else {
        return Transfer::Identity;
    };
    if headers.next().is_some() {
        return Transfer::Other;
    }
    let value = raw
        .get(header.offset_start as usize..header.offset_end as usize)
        .unwrap_or_default()
        .trim_ascii();
    if value.eq_ignore_ascii_case(b"base64") {
        Transfer::Base64
    } else if [&b"7bit"[..], b"8bit", b"binary"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
    {
        Transfer::Identity
    } else {
        Transfer::Other
    }
}

/// Decode every base64 part of `message` (and of the nested messages read
/// with it) into `decoded`, from the raw bytes of `skeleton`, and count in
/// `within` the skeleton's cuts that lie inside those parts' bodies; false
/// where some part needs mail-parser's own decoding.
fn decode_parts(
    skeleton: &Skeleton<'_>,
    message: &Message<'_>,
    decoded: &mut HashMap<u32, Decoded>,
    within: &mut usize,
) -> bool {
    for part in &message.parts {
        if part.is_encoding_problem {
            return false;
        }
        match (transfer(&skeleton.bytes, part), &part.body) {
            (Transfer::Identity, PartType::Message(nested)) => {
                if !decode_parts(skeleton, nested, decoded, within) {
                    return false;
                }
            }
            (Transfer::Identity, _) => {}
            (Transfer::Base64, PartType::Binary(_) | PartType::InlineBinary(_)) => {
                *within += skeleton.cuts_within(part.offset_body, part.offset_end);
                let body = skeleton.raw_range(part.offset_body, part.offset_end);
                let Some(bytes) = body.and_then(canonical_base64) else {
                    return false;
                };
                decoded.insert(part.offset_body, Decoded::Bytes(bytes));
            }
            (Transfer::Base64, PartType::Text(_) | PartType::Html(_)) => {
                // The text mail-parser made of the encoded bytes is no use:
                // decode the raw body, then convert its charset as
                // mail-parser does after decoding.
                *within += skeleton.cuts_within(part.offset_body, part.offset_end);
                let body = skeleton.raw_range(part.offset_body, part.offset_end);
                let Some(bytes) = body.and_then(canonical_base64) else {
                    return false;
                };
                let charset = part
                    .content_type()
                    .and_then(|ct| ct.attribute("charset"))
                    .and_then(|c| charset_decoder(c.as_bytes()));
                let text = match charset {
                    Some(convert) => convert(&bytes),
                    None => String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                };
                decoded.insert(part.offset_body, Decoded::Text(text));
            }
            _ => return false,
        }
    }
    true
}

/// The bytes of canonical base64 split into lines (each line's trailing
/// spaces, tabs and CR dropped, as mail-parser skips them); `None` for
/// anything else, which mail-parser's decoder then reads its own way.
fn canonical_base64(data: &[u8]) -> Option<Vec<u8>> {
    let mut compact = Vec::with_capacity(data.len());
    let mut from = 0;
    for end in memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len())) {
        let line = &data[from..end];
        let kept = line
            .iter()
            .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r'))
            .map_or(0, |k| k + 1);
        compact.extend_from_slice(&line[..kept]);
        from = end + 1;
    }
    base64::engine::general_purpose::STANDARD.decode(&compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the scan reads of a message: per part, its name, kind and
    /// decoded body, nested messages included.
    fn reading(parsed: &Parsed<'_>) -> Vec<(Option<String>, String, Vec<u8>)> {
        fn walk(
            parsed: &Parsed<'_>,
            message: &Message<'_>,
            out: &mut Vec<(Option<String>, String, Vec<u8>)>,
        ) {
            if let Some(s) = message.subject() {
                out.push((None, "subject".into(), s.as_bytes().to_vec()));
            }
            for part in &message.parts {
                let name = part.attachment_name().map(str::to_owned);
                match &part.body {
                    PartType::Text(t) => out.push((name, "text".into(), parsed.text(part, t).into())),
                    PartType::Html(t) => out.push((name, "html".into(), parsed.text(part, t).into())),
                    PartType::Binary(d) => out.push((name, "binary".into(), parsed.bytes(part, d).to_vec())),
                    PartType::InlineBinary(d) => {
                        out.push((name, "inline".into(), parsed.bytes(part, d).to_vec()))
                    }
                    PartType::Message(m) => walk(parsed, m, out),
                    PartType::Multipart(_) => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(parsed, &parsed.message, &mut out);
        out
    }

    fn standard(raw: &[u8]) -> Parsed<'_> {
        Parsed {
            message: MessageParser::default().parse(raw).expect("a message"),
            decoded: HashMap::new(),
        }
    }

    fn mixed(attachment_headers: &str, body: &str) -> String {
        format!(
            "From: a@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?= report\r\n\
             Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\n--M\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nhello 4111 1111\r\n--M\r\n\
             {attachment_headers}\r\n\r\n{body}\r\n--M--\r\n"
        )
    }

    /// Every message reads the same through either parser; the fast one is
    /// taken exactly where stated.
    #[test]
    fn the_fast_reading_reads_as_mail_parser_decodes() {
        let zip = "Content-Type: application/zip; name=\"a.zip\"\r\nContent-Transfer-Encoding: base64";
        let pdf = "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\
                   Content-Transfer-Encoding:  BASE64 ";
        let folded = "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding:\r\n base64";
        let nested_inner = mixed(zip, "UEsDBAo=")
            .replace("\"M\"", "\"N\"")
            .replace("--M", "--N");
        let cases: Vec<(String, bool)> = vec![
            (mixed(zip, "UEsDBBQAAAAI\r\nAAAA\r\nQUJD"), true),
            (mixed(zip, "UEsDBBQAAAAIAA==\r\nAAAA\r\nQUJD"), false),
            (mixed(pdf, "JVBERi0xLjQK\r\nJSVFT0YK"), true),
            (mixed(folded, "QUJD  \r\nREVG\t\r\n"), true),
            (mixed(zip, ""), true),
            (mixed("Content-Type: image/png\r\nContent-Transfer-Encoding: base64", "iVBORw0KGgo="), true),
            (mixed("Content-Type: application/zip\r\nContent-Transfer-Encoding: 7bit", "PK plain"), true),
            (
                mixed("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit", &nested_inner),
                true,
            ),
            // Left to mail-parser: its decoder reads these its own way.
            (mixed(zip, "QUJD\r\nRE="), false),
            (mixed(zip, "QUJ=\r\nREVG"), false),
            (mixed(zip, "QU JD"), false),
            (mixed(zip, "QUJD\r\n--not the boundary"), false),
            (mixed(zip, "QUJD!"), false),
            (mixed(zip, "QUJD").replace("--M--", ""), false),
            (mixed("Content-Type: text/plain\r\nContent-Transfer-Encoding: base64", "QUJD").replace("--M--", ""), false),
            (mixed(zip, "QUI"), false),
            (mixed(zip, "QUJ"), false),
            (mixed("Content-Type: text/plain\r\nContent-Transfer-Encoding: base64", "NDExMSAxMTEx"), true),
            (mixed("Content-Type: text/csv; name=a.csv\r\nContent-Transfer-Encoding: base64", "YSxiLGMK"), true),
            (mixed("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64", "PHA+w6k8L3A+"), true),
            (mixed("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64", "Y2Fm6Q=="), true),
            (mixed("Content-Type: text/plain; charset=utf-16le\r\nContent-Transfer-Encoding: base64", "NAAxAA=="), true),
            (mixed("Content-Type: text/plain\r\nContent-Transfer-Encoding: base64", "Y2Fm/w=="), true),
            (mixed("Content-Type: text/plain\r\nContent-Transfer-Encoding: base64", "NDExMSAx\r\nMTEx="), false),
            (
                mixed("Content-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: quoted-printable", "caf=E9"),
                false,
            ),
            (
                mixed(
                    "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64",
                    "U3ViamVjdDogeAoKNDExMSAxMTExIDExMTEgMTExMQo=",
                ),
                false,
            ),
            (
                mixed(
                    "Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit",
                    "QUJD",
                ),
                false,
            ),
            (mixed("Content-Type: application/zip\r\nContent-Transfer-Encoding: x-uuencode", "begin"), false),
            ("Subject: x\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n".into(), true),
        ];
        for (raw, fast) in &cases {
            let uncut = Skeleton {
                raw: raw.as_bytes(),
                bytes: Cow::Borrowed(raw.as_bytes()),
                cuts: Vec::new(),
            };
            let parsed = parse(&uncut).expect("a message");
            let via_fast = UNDECODED
                .parse(raw.as_bytes())
                .is_some_and(|m| decode_parts(&uncut, &m, &mut HashMap::new(), &mut 0));
            assert_eq!(via_fast, *fast, "{raw}");
            assert_eq!(reading(&parsed), reading(&standard(raw.as_bytes())), "{raw}");
        }
    }

    /// Base64 lines of 76 characters, `lines` of them.
    fn base64_lines(lines: usize) -> String {
        let line: String = (0..76).map(|k| (b'A' + (k % 26) as u8) as char).collect();
        vec![line; lines].join("\r\n")
    }

    /// Long runs of base64-like lines are cut before the parser walks the
    /// message; it reads the same as the raw message wherever the cuts fall
    /// (a base64 body: the cut reading; anywhere else: the raw message read
    /// again), and the cut reading is taken exactly where stated.
    #[test]
    fn a_message_with_its_base64_runs_cut_reads_as_the_whole_message() {
        let long = base64_lines(40);
        let zip = "Content-Type: application/zip; name=\"a.zip\"\r\nContent-Transfer-Encoding: base64";
        let csv = "Content-Type: text/csv; name=a.csv\r\nContent-Transfer-Encoding: base64";
        let plain = "Content-Type: text/plain; charset=utf-8";
        let two = format!(
            "{}\r\n--M\r\n{zip}\r\n\r\n{long}\r\nQUJD",
            mixed(zip, &long).trim_end_matches("\r\n--M--\r\n")
        );
        let cases: Vec<(String, bool)> = vec![
            (mixed(zip, &long), true),
            (mixed(csv, &long), true),
            (mixed(zip, &format!("{long}\r\nQUJD")), true),
            (mixed(zip, &format!("{long}\r\nQQ==")), true),
            (format!("{two}\r\n--M--\r\n"), true),
            (mixed(zip, &format!("{long}\r\n")), true),
            (mixed(zip, &format!("{long}\n{long}")), true),
            (
                format!("Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n{long}\r\n"),
                true,
            ),
            (
                format!("Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n{long}"),
                true,
            ),
            // Cuts elsewhere: the raw message is read.
            (mixed(plain, &long), false),
            (
                mixed(zip, &long).replace("\r\n\r\n--M", &format!("\r\n\r\n{long}\r\n--M")),
                false,
            ),
            (mixed(zip, &format!("{long}!\r\n{long}")), false),
            (
                mixed(zip, &long).replace("--M--", &format!("--M--\r\n{long}")),
                false,
            ),
            (mixed(zip, &long).replace("--M--", "--M"), true),
            (mixed(zip, &long).replace("\r\n--M--\r\n", ""), false),
            (
                mixed(
                    "Content-Type: message/rfc822",
                    &mixed(zip, &long).replace('M', "N"),
                ),
                true,
            ),
        ];
        for (k, (raw, cut)) in cases.iter().enumerate() {
            let skeleton = Skeleton::of(raw.as_bytes());
            assert!(!skeleton.cuts.is_empty(), "{raw}");
            assert!(skeleton.bytes.len() < raw.len(), "{raw}");
            let parsed = parse(&skeleton).expect("a message");
            let via_cut = UNDECODED.parse(&skeleton.bytes[..]).is_some_and(|m| {
                let mut within = 0;
                decode_parts(&skeleton, &m, &mut HashMap::new(), &mut within) && within == skeleton.cuts.len()
            });
            assert_eq!(via_cut, *cut, "case {k}: {raw}");
            assert_eq!(reading(&parsed), reading(&standard(raw.as_bytes())), "{raw}");
        }
    }
}
