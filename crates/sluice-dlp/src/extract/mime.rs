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

/// Parse `raw`: undecoded with fast base64 where that reads the same,
/// otherwise with mail-parser's default decoding. `None` where mail-parser
/// finds no message.
pub(super) fn parse(raw: &[u8]) -> Option<Parsed<'_>> {
    if let Some(message) = UNDECODED.parse(raw) {
        let mut decoded = HashMap::new();
        if decode_parts(raw, &message, &mut decoded) {
            return Some(Parsed { message, decoded });
        }
    }
    MessageParser::default().parse(raw).map(|message| Parsed {
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
/// with it) into `decoded`; false where some part needs mail-parser's own
/// decoding.
fn decode_parts(raw: &[u8], message: &Message<'_>, decoded: &mut HashMap<u32, Decoded>) -> bool {
    for part in &message.parts {
        if part.is_encoding_problem {
            return false;
        }
        match (transfer(raw, part), &part.body) {
            (Transfer::Identity, PartType::Message(nested)) => {
                if !decode_parts(raw, nested, decoded) {
                    return false;
                }
            }
            (Transfer::Identity, _) => {}
            (Transfer::Base64, PartType::Binary(data) | PartType::InlineBinary(data)) => {
                let Some(bytes) = canonical_base64(data) else {
                    return false;
                };
                decoded.insert(part.offset_body, Decoded::Bytes(bytes));
            }
            (Transfer::Base64, PartType::Text(_) | PartType::Html(_)) => {
                // The text mail-parser made of the encoded bytes is no use:
                // decode the raw body, then convert its charset as
                // mail-parser does after decoding.
                let body = raw.get(part.offset_body as usize..part.offset_end as usize);
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
            let parsed = parse(raw.as_bytes()).expect("a message");
            let via_fast = UNDECODED
                .parse(raw.as_bytes())
                .is_some_and(|m| decode_parts(raw.as_bytes(), &m, &mut HashMap::new()));
            assert_eq!(via_fast, *fast, "{raw}");
            assert_eq!(reading(&parsed), reading(&standard(raw.as_bytes())), "{raw}");
        }
    }
}
