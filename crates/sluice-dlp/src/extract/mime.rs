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
//! decoding would: every encoded part is a base64 attachment or text part (not a
//! nested message), its encoding is written plainly (`base64`, `7bit`,
//! `8bit`, `binary`, in any case) in a single header, and its base64 is
//! canonical (the alphabet, line breaks and padding, nothing else). Any other
//! message (quoted-printable or base64 text, an encoded nested message, a
//! stray character in the base64) is read again by mail-parser's own
//! decoding, which also decides what malformed input means.
//!
//! mail-parser also walks every byte of every body to find its end (a
//! boundary can start anywhere a `--` is), and turns every text body into a
//! `String`, even base64 that the scan decodes from the raw bytes again. A
//! stretch without a `-` cannot hold a boundary, so the parser is given a
//! [`Skeleton`] of the message: past the top-level header section, each long
//! stretch without a `-` is cut short (whole lines of it, keeping the line
//! after them, or the middle of one line), always keeping more than a
//! boundary's length before the cut. The parser meets the same bytes up to
//! each cut, nothing in it, and the same bytes after it, so parts, names and
//! types come out as from the raw message, with the offsets after each cut
//! short by its length. That reading is used only where every cut lies
//! inside a body read from the raw bytes: base64 parts, and text or binary
//! parts as they stand, converted from the raw bytes as mail-parser does.
//! Where some cuts fall elsewhere (a nested message's header section, a
//! preamble), the message is cut again with the others only; where any
//! still do, or a boundary is longer than the margin, the raw message is
//! read as before.

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

/// A message with its long stretches without a `-` cut short, for the
/// parser to walk; see the module's documentation.
pub(super) struct Skeleton<'r> {
    raw: &'r [u8],
    /// What the parser reads: `raw` with the cuts taken out.
    bytes: Cow<'r, [u8]>,
    cuts: Vec<Cut>,
    /// Made of the cuts of an earlier skeleton that fell where they may:
    /// if some do not now, the raw message is read.
    again: bool,
}

/// Bytes taken out of the raw message, and where.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// In the raw message: the bytes `from..to` are taken out, and the
    /// parser must meet `end` (the end of the line kept after them, before
    /// its line break, or the byte kept after them) inside the same body.
    from: usize,
    to: usize,
    end: usize,
    /// In the skeleton: where the bytes taken out were, and how far the
    /// skeleton's offsets from there on are short of the raw message's
    /// (this cut's bytes and those of the cuts before it).
    at: usize,
    shift: usize,
}

/// Bytes without a `-` kept before a cut: a boundary (at most 70
/// characters, RFC 2046) and its `--` read from before the cut never
/// reach into it. A message with a longer boundary is read whole.
const MARGIN: usize = 128;

/// Smaller cuts are not worth their bookkeeping.
const CUT_MIN: usize = 64;

/// Bytes kept after a cut within a line (before the `-` that ends its
/// stretch): the parser meets the first of them, neither a line break nor
/// a `-`, as it would after the bytes taken out, and a body that ends
/// before a boundary's `\r\n--` still holds it.
const TAIL: usize = 3;

/// A body cut this close to its start is not read through the skeleton (the
/// header section's end is read as it stands).
const BODY_LEAD: usize = 16;

/// What [`parse`] made of a skeleton.
pub(super) enum Reading<'x, 'r> {
    Parsed(Parsed<'x>),
    /// Some cuts fell outside the bodies that can be read from the raw
    /// bytes (a nested message's header section, a preamble): read this
    /// skeleton, made of the others, instead.
    Again(Skeleton<'r>),
    /// mail-parser finds no message.
    Unreadable,
}

impl<'r> Skeleton<'r> {
    /// Cut the raw message's body: of each stretch without a `-`, all but
    /// [`MARGIN`] bytes at its start and what follows its last line break
    /// but one (a whole line kept after whole lines taken out), or, in a
    /// stretch within one line, all but [`MARGIN`] and [`TAIL`] bytes. The
    /// top-level header section is never cut: its fields (a DKIM
    /// signature's folded lines) often run long without a `-`. Each
    /// stretch costs one vector search for its `-`: in base64 that is the
    /// body's end, in prose a sentence or a few.
    pub(super) fn of(raw: &'r [u8]) -> Self {
        // The first blank line, CRLF or bare LF: the second search only
        // up to where the first found one (a CRLF message has no `\n\n`).
        let crlf = memchr::memmem::find(raw, b"\n\r\n").map(|k| k + 3);
        let lf = memchr::memmem::find(&raw[..crlf.unwrap_or(raw.len())], b"\n\n").map(|k| k + 2);
        let header_end = lf.or(crlf);
        let mut taken = Vec::new();
        let mut from = header_end.unwrap_or(raw.len());
        while from < raw.len() {
            let to = memchr::memchr(b'-', &raw[from..]).map_or(raw.len(), |k| from + k);
            if to - from >= MARGIN + CUT_MIN + TAIL {
                taken.extend(cut_in(raw, from, to));
            }
            from = to + 1;
        }
        Self::build(raw, &taken, false)
    }

    /// `raw` with the bytes `from..to` of each `(from, to, end)` taken out.
    fn build(raw: &'r [u8], taken: &[(usize, usize, usize)], again: bool) -> Self {
        if taken.is_empty() {
            return Skeleton {
                raw,
                bytes: Cow::Borrowed(raw),
                cuts: Vec::new(),
                again,
            };
        }
        let removed: usize = taken.iter().map(|(from, to, _)| to - from).sum();
        let mut bytes = Vec::with_capacity(raw.len() - removed);
        let mut cuts = Vec::with_capacity(taken.len());
        let (mut copied, mut shift) = (0, 0);
        for &(from, to, end) in taken {
            bytes.extend_from_slice(&raw[copied..from]);
            copied = to;
            shift += to - from;
            cuts.push(Cut {
                from,
                to,
                end,
                at: bytes.len(),
                shift,
            });
        }
        bytes.extend_from_slice(&raw[copied..]);
        Skeleton {
            raw,
            bytes: Cow::Owned(bytes),
            cuts,
            again,
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

    /// The cuts that lie inside the body at the skeleton's `start..end`
    /// (past its first [`BODY_LEAD`] bytes, with what the parser must meet
    /// after them inside it), by index.
    fn cuts_within(&self, start: u32, end: u32) -> std::ops::Range<usize> {
        let (start, end) = (start as usize, end as usize);
        let from = self.cuts.partition_point(|c| c.at < start + BODY_LEAD);
        let inside = self.cuts[from..]
            .iter()
            .take_while(|c| c.end - c.shift <= end)
            .count();
        from..from + inside
    }
}

/// The bytes to take out of the stretch `from..to` (no `-` in it, a `-` or
/// the message's end at `to`) as `(from, to, end)`, if it is long enough.
fn cut_in(raw: &[u8], from: usize, to: usize) -> Option<(usize, usize, usize)> {
    let (start, stop) = (from + MARGIN, to - TAIL);
    let Some(k) = memchr::memchr(b'\n', &raw[start..=stop]) else {
        // Within a line: the byte kept after the cut is neither a line break
        // nor a `-`.
        return (stop - start >= CUT_MIN).then_some((start, stop, stop + 1));
    };
    // Whole lines, up to the last line break before `to` but one: the line
    // after them is kept whole, and its line break sets where a body that
    // ends after it ends.
    let first = start + k + 1;
    let last = first + memchr::memrchr(b'\n', &raw[first..to])?;
    let cut_end = first + memchr::memrchr(b'\n', &raw[first..last])? + 1;
    let end = if raw[..last].ends_with(b"\r") {
        last - 1
    } else {
        last
    };
    (cut_end - first >= CUT_MIN).then_some((first, cut_end, end))
}

/// Parse the message of `skeleton`: undecoded with fast base64 where that
/// reads the same, otherwise with mail-parser's default decoding.
pub(super) fn parse<'x, 'r>(skeleton: &'x Skeleton<'r>) -> Reading<'x, 'r> {
    let whole = skeleton.raw;
    let undecoded_whole = || {
        let message = UNDECODED.parse(whole)?;
        let mut decoded = HashMap::new();
        let uncut = Skeleton::build(whole, &[], true);
        decode_parts(&uncut, &message, &mut decoded, &mut []).then_some(Parsed { message, decoded })
    };
    if skeleton.cuts.is_empty() {
        if let Some(parsed) = undecoded_whole() {
            return Reading::Parsed(parsed);
        }
    } else if let Some(message) = UNDECODED.parse(&skeleton.bytes[..]) {
        let mut decoded = HashMap::new();
        let mut inside = vec![false; skeleton.cuts.len()];
        // A part that needs mail-parser's own decoding (quoted-printable,
        // odd base64) needs it in the raw message too: straight to it.
        if decode_parts(skeleton, &message, &mut decoded, &mut inside) {
            if inside.iter().all(|&i| i) {
                return Reading::Parsed(Parsed { message, decoded });
            }
            if !skeleton.again && inside.iter().any(|&i| i) {
                let kept: Vec<(usize, usize, usize)> = skeleton
                    .cuts
                    .iter()
                    .zip(&inside)
                    .filter(|(_, &i)| i)
                    .map(|(c, _)| (c.from, c.to, c.end))
                    .collect();
                return Reading::Again(Skeleton::build(whole, &kept, true));
            }
            if let Some(parsed) = undecoded_whole() {
                return Reading::Parsed(parsed);
            }
        }
    }
    match MessageParser::default().parse(whole) {
        Some(message) => Reading::Parsed(Parsed {
            message,
            decoded: HashMap::new(),
        }),
        None => Reading::Unreadable,
    }
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
/// with it) into `decoded`, from the raw bytes of `skeleton`, and mark in
/// `inside` the skeleton's cuts that lie inside a body read from the raw
/// bytes (base64 parts, and parts as they stand with a cut inside); false
/// where some part needs mail-parser's own decoding.
fn decode_parts(
    skeleton: &Skeleton<'_>,
    message: &Message<'_>,
    decoded: &mut HashMap<u32, Decoded>,
    inside: &mut [bool],
) -> bool {
    for part in &message.parts {
        if part.is_encoding_problem {
            return false;
        }
        // A boundary read from before a cut must not reach into it.
        let boundary = part.content_type().and_then(|ct| ct.attribute("boundary"));
        if !skeleton.cuts.is_empty() && boundary.is_some_and(|b| b.len() + 2 > MARGIN) {
            return false;
        }
        let (from, to) = (part.offset_body, part.offset_end);
        let charset = || {
            part.content_type()
                .and_then(|ct| ct.attribute("charset"))
                .and_then(|c| charset_decoder(c.as_bytes()))
        };
        match (transfer(&skeleton.bytes, part), &part.body) {
            (Transfer::Identity, PartType::Message(nested)) => {
                if !decode_parts(skeleton, nested, decoded, inside) {
                    return false;
                }
            }
            (Transfer::Identity, PartType::Text(_) | PartType::Html(_)) => {
                // Cut: the text mail-parser made is short of the bytes taken
                // out; convert the raw body as it does.
                let cuts = skeleton.cuts_within(from, to);
                if !cuts.is_empty() {
                    inside[cuts].fill(true);
                    let Some(body) = skeleton.raw_range(from, to) else {
                        return false;
                    };
                    let text = match charset() {
                        Some(convert) => convert(body),
                        None => std::str::from_utf8(body)
                            .map_or_else(|_| String::from_utf8_lossy(body).into_owned(), str::to_owned),
                    };
                    decoded.insert(from, Decoded::Text(text));
                }
            }
            (Transfer::Identity, PartType::Binary(_) | PartType::InlineBinary(_)) => {
                let cuts = skeleton.cuts_within(from, to);
                if !cuts.is_empty() {
                    inside[cuts].fill(true);
                    let Some(body) = skeleton.raw_range(from, to) else {
                        return false;
                    };
                    decoded.insert(from, Decoded::Bytes(body.to_vec()));
                }
            }
            (Transfer::Identity, _) => {}
            (Transfer::Base64, PartType::Binary(_) | PartType::InlineBinary(_)) => {
                inside[skeleton.cuts_within(from, to)].fill(true);
                let body = skeleton.raw_range(from, to);
                let Some(bytes) = body.and_then(canonical_base64) else {
                    return false;
                };
                decoded.insert(from, Decoded::Bytes(bytes));
            }
            (Transfer::Base64, PartType::Text(_) | PartType::Html(_)) => {
                // The text mail-parser made of the encoded bytes is no use:
                // decode the raw body, then convert its charset as
                // mail-parser does after decoding.
                inside[skeleton.cuts_within(from, to)].fill(true);
                let body = skeleton.raw_range(from, to);
                let Some(bytes) = body.and_then(canonical_base64) else {
                    return false;
                };
                let text = match charset() {
                    Some(convert) => convert(&bytes),
                    None => String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                };
                decoded.insert(from, Decoded::Text(text));
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

    /// Per part: its name, kind and decoded body.
    type PartsRead = Vec<(Option<String>, String, Vec<u8>)>;

    /// What the scan reads of a message: per part, its name, kind and
    /// decoded body, nested messages included.
    fn reading(parsed: &Parsed<'_>) -> PartsRead {
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
            let uncut = Skeleton::build(raw.as_bytes(), &[], true);
            let Reading::Parsed(parsed) = parse(&uncut) else {
                panic!("a message: {raw}");
            };
            let via_fast = UNDECODED
                .parse(raw.as_bytes())
                .is_some_and(|m| decode_parts(&uncut, &m, &mut HashMap::new(), &mut []));
            assert_eq!(via_fast, *fast, "{raw}");
            assert_eq!(reading(&parsed), reading(&standard(raw.as_bytes())), "{raw}");
        }
    }

    /// The message read as the scan reads it, and how many cuts the
    /// reading went through (none: the raw message was read).
    fn read(raw: &[u8]) -> (PartsRead, usize) {
        let first = Skeleton::of(raw);
        let again;
        let (parsed, skeleton) = match parse(&first) {
            Reading::Parsed(parsed) => (parsed, &first),
            Reading::Again(fewer) => {
                again = fewer;
                match parse(&again) {
                    Reading::Parsed(parsed) => (parsed, &again),
                    _ => panic!("a skeleton read again is read"),
                }
            }
            Reading::Unreadable => panic!("a message"),
        };
        let through_skeleton = parsed.message.raw_message.as_ptr() == skeleton.bytes.as_ptr()
            && skeleton.bytes.len() < raw.len();
        let cuts = if through_skeleton { skeleton.cuts.len() } else { 0 };
        (reading(&parsed), cuts)
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
        let html = "Content-Type: text/html; charset=iso-8859-1";
        // Lines of prose without a `-`, some of them long.
        let prose: String = (0..60)
            .map(|k| {
                format!(
                    "line {k} of the report, caf\u{e9} and numbers 4111 1111 {}\r\n",
                    "x".repeat(k % 7 * 20)
                )
            })
            .collect();
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
            // A body as it stands is converted from the raw bytes.
            (mixed(plain, &long), true),
            (mixed(plain, &prose), true),
            (mixed(html, &prose.replace('\n', " ")), true),
            (format!("Subject: x\r\n\r\n{prose}"), true),
            (mixed("Content-Type: application/octet-stream", &prose), true),
            // Cuts in a preamble, an epilogue, a nested header section: the
            // message is read again with the others only.
            (
                mixed(zip, &long).replace("\r\n\r\n--M", &format!("\r\n\r\n{long}\r\n--M")),
                true,
            ),
            (
                mixed(
                    "Content-Type: message/rfc822",
                    &format!(
                        "Subject: {}\r\n{}",
                        prose.replace('\n', " "),
                        mixed(zip, &long).replace('M', "N")
                    ),
                ),
                true,
            ),
            // Read whole: a boundary longer than the margin kept before a
            // cut, base64 the fast reading leaves to mail-parser, a cut in
            // the top-level header section (never made).
            (
                mixed(zip, &long)
                    .replace("\"M\"", &format!("\"{}\"", "M".repeat(130)))
                    .replace("--M", &format!("--{}", "M".repeat(130))),
                false,
            ),
            (mixed(zip, &format!("{long}!\r\n{long}")), false),
            (
                format!(
                    "{}--M\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--M--\r\n",
                    mixed(zip, &long).trim_end_matches("--M--\r\n")
                ),
                false,
            ),
            (
                format!("Subject: {}\r\n\r\nshort", prose.replace('\n', " ")),
                false,
            ),
            (
                mixed(zip, &long).replace("--M--", &format!("--M--\r\n{long}")),
                true,
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
            let (parsed, cuts) = read(raw.as_bytes());
            assert_eq!(cuts > 0, *cut, "case {k}: {raw}");
            assert_eq!(parsed, reading(&standard(raw.as_bytes())), "case {k}: {raw}");
        }
    }

    /// Messages built at random from parts that cuts love and hate (long
    /// lines, base64, hyphens, `--` runs, blank lines, bare LF, nested
    /// messages, preambles and epilogues) read as mail-parser reads the raw
    /// message.
    #[test]
    fn random_messages_read_as_the_whole_message() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        fn body(next: &mut impl FnMut(usize) -> usize, eol: &str) -> String {
            let mut out = String::new();
            for _ in 0..next(40) {
                let line = match next(9) {
                    0 => base64_lines(1),
                    1 => "word ".repeat(next(80)),
                    2 => format!("{} - {}", "a".repeat(next(300)), "b".repeat(next(300))),
                    3 => String::new(),
                    4 => "--".to_owned(),
                    5 => format!("--{}", "M".repeat(next(3))),
                    6 => "x".repeat(next(700)),
                    7 => "caf\u{e9} ".repeat(next(50)),
                    _ => format!("Tel: {}", next(1_000_000)),
                };
                out.push_str(&line);
                out.push_str(eol);
            }
            out
        }
        let mut cut = 0;
        for case in 0..400 {
            let eol = if next(4) == 0 { "\n" } else { "\r\n" };
            let part = |next: &mut dyn FnMut(usize) -> usize, boundary: &str| -> String {
                let mut n = |k| next(k);
                let (headers, content) = match n(6) {
                    0 => ("Content-Type: text/plain; charset=utf-8".to_owned(), body(&mut n, eol)),
                    1 => ("Content-Type: text/html; charset=iso-8859-1".to_owned(), body(&mut n, eol)),
                    2 => (
                        "Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64".to_owned(),
                        base64_lines(n(60)),
                    ),
                    3 => (
                        "Content-Type: text/csv; name=a.csv\r\nContent-Transfer-Encoding: base64".to_owned(),
                        base64_lines(n(60)),
                    ),
                    4 => ("Content-Type: application/octet-stream".to_owned(), body(&mut n, eol)),
                    _ => (
                        "Content-Type: message/rfc822".to_owned(),
                        format!(
                            "Subject: {}{eol}Content-Type: multipart/mixed; boundary=\"{boundary}N\"{eol}{eol}--{boundary}N{eol}\
                             Content-Type: text/plain{eol}{eol}{}{eol}--{boundary}N--{eol}",
                            "long subject ".repeat(n(40)),
                            body(&mut n, eol)
                        ),
                    ),
                };
                format!("{headers}{eol}{eol}{content}")
            };
            let boundary = ["M", "MM", "=_b"][next(3)];
            let mut raw =
                format!(
                "Subject: case {case}{eol}Content-Type: multipart/mixed; boundary=\"{boundary}\"{eol}{eol}{}",
                if next(3) == 0 { body(&mut next, eol) } else { String::new() }
            );
            for _ in 0..1 + next(4) {
                let p = part(&mut next, boundary);
                raw.push_str(&format!("--{boundary}{eol}{p}{eol}"));
            }
            if next(5) > 0 {
                raw.push_str(&format!("--{boundary}--{eol}"));
                if next(3) == 0 {
                    raw.push_str(&body(&mut next, eol));
                }
            }
            let (reading_cut, cuts) = read(raw.as_bytes());
            cut += usize::from(cuts > 0);
            assert_eq!(
                reading_cut,
                reading(&standard(raw.as_bytes())),
                "case {case}: {raw}"
            );
        }
        assert!(cut > 100, "{cut} of 400 messages read through cuts");
    }
}
