//! PDF text: the strings shown by `Tj`, `TJ`, `'` and `"` in content streams.
//!
//! Streams are found by their `stream`/`endstream` keywords (no xref walk, so
//! damaged files still yield text); a stream is read when it has no filter or
//! only `/FlateDecode`, and is not an image, font or object/xref stream.
//! Inflation is capped by the remaining expansion budget and by the ratio limit
//! (the compressed length times `max_ratio`, at least 1 MiB). Strings are
//! decoded as PDFDocEncoding/Latin-1, or UTF-16BE with a BOM; text in fonts with
//! custom encodings (CID fonts without ToUnicode) is not recovered.
//!
//! Work is bounded: at most [`MAX_STREAMS`] streams are looked at (a crafted
//! file of millions of empty streams would otherwise cost seconds of
//! dictionary checks each), and the caller's deadline is checked before each.

use std::fmt;
use std::time::Instant;

use miniz_oxide::inflate::{decompress_to_vec_zlib_with_limit, TINFLStatus};

/// Why part of a PDF was not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The message's expansion budget ran out.
    Budget,
    /// A stream inflated beyond `max_ratio` times its compressed size.
    Bomb(u64),
    /// More streams than [`MAX_STREAMS`]; the rest were not read.
    TooManyStreams,
    /// The message's time budget ran out.
    OutOfTime,
}

impl Refusal {
    /// Whether content was left unscanned because a budget ran out (the
    /// report is then `truncated`); a bomb is refused, not truncated.
    pub(crate) fn truncates(&self) -> bool {
        !matches!(self, Refusal::Bomb(_))
    }
}

/// Streams read per PDF at most. Real documents have one content stream per
/// page (plus forms); ten thousand is a very long document.
pub(crate) const MAX_STREAMS: usize = 10_000;

/// Bytes before a `stream` keyword searched for its dictionary.
const DICTIONARY_WINDOW: usize = 4096;

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Budget => f.write_str("expansion limit reached"),
            Refusal::Bomb(r) => write!(f, "flate bomb (ratio over {r}:1)"),
            Refusal::TooManyStreams => write!(f, "more than {MAX_STREAMS} streams"),
            Refusal::OutOfTime => f.write_str("scan time budget spent"),
        }
    }
}

/// The text of a PDF and what extracting it cost.
pub(crate) struct Extracted {
    pub text: String,
    pub expanded: u64,
    pub refused: Option<Refusal>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Extract the shown text of `data`, inflating at most `budget` bytes and
/// stopping at `deadline`.
pub(crate) fn text(data: &[u8], budget: u64, max_ratio: u64, deadline: Option<Instant>) -> Extracted {
    let mut out = Extracted {
        text: String::new(),
        expanded: 0,
        refused: None,
    };
    let mut pos = 0;
    let mut streams = 0;
    while let Some(kw) = find(data, b"stream", pos) {
        pos = kw + 6;
        // `endstream` contains `stream`: skip it.
        if kw >= 3 && &data[kw - 3..kw] == b"end" {
            continue;
        }
        let mut start = kw + 6;
        if data.get(start) == Some(&b'\r') {
            start += 1;
        }
        if data.get(start) != Some(&b'\n') {
            continue;
        }
        start += 1;
        let Some(end) = find(data, b"endstream", start) else {
            break;
        };
        pos = end + 9;
        if streams == MAX_STREAMS {
            out.refused = Some(Refusal::TooManyStreams);
            break;
        }
        streams += 1;
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            out.refused = Some(Refusal::OutOfTime);
            break;
        }
        // The stream's dictionary: from its object header to the keyword.
        let dict_from = kw.saturating_sub(DICTIONARY_WINDOW);
        let dict = &data[dict_from..kw];
        let dict = rfind(dict, b"obj").map_or(dict, |o| &dict[o..]);
        let skip = [
            &b"/Image"[..],
            b"/FontFile",
            b"/Length1",
            b"/XRef",
            b"/ObjStm",
            b"/EmbeddedFile",
            b"/Metadata",
        ];
        if skip.iter().any(|s| find(dict, s, 0).is_some()) {
            continue;
        }
        let flate = find(dict, b"/FlateDecode", 0).is_some();
        // Filter names end in `Decode` (`/DCTDecode`); `/DecodeParms` does not count.
        let filters = (1..dict.len().saturating_sub(5))
            .filter(|&p| dict[p..].starts_with(b"Decode") && dict[p - 1].is_ascii_alphabetic())
            .count();
        if filters > usize::from(flate) {
            continue;
        }
        let raw = &data[start..end];
        let content = if flate {
            let remaining = budget.saturating_sub(out.expanded);
            let ratio_cap = (raw.len() as u64).saturating_mul(max_ratio).max(1 << 20);
            let cap = remaining.min(ratio_cap);
            match decompress_to_vec_zlib_with_limit(raw, usize::try_from(cap).unwrap_or(usize::MAX)) {
                Ok(v) => v,
                Err(e) if e.status == TINFLStatus::HasMoreOutput => {
                    out.refused = Some(if cap == remaining {
                        Refusal::Budget
                    } else {
                        Refusal::Bomb(max_ratio)
                    });
                    break;
                }
                // A damaged stream still gives what inflated before the damage.
                Err(e) => e.output,
            }
        } else {
            raw.to_vec()
        };
        out.expanded += content.len() as u64;
        shown_text(&content, &mut out.text);
    }
    out
}

fn decode_string(s: &[u8], out: &mut String) {
    if s.starts_with(&[0xFE, 0xFF]) {
        let units = s[2..].chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        out.extend(char::decode_utf16(units).map(|c| c.unwrap_or('\u{FFFD}')));
    } else {
        out.extend(s.iter().map(|&b| char::from(b)));
    }
}

/// Read a literal string starting after its `(`; returns the bytes and the
/// position after the closing `)`.
fn literal(c: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut s = Vec::new();
    let mut depth = 1;
    while i < c.len() {
        let b = c[i];
        i += 1;
        match b {
            b'\\' => {
                let Some(&e) = c.get(i) else { break };
                i += 1;
                match e {
                    b'n' => s.push(b'\n'),
                    b'r' => s.push(b'\r'),
                    b't' => s.push(b'\t'),
                    b'b' => s.push(8),
                    b'f' => s.push(12),
                    b'\r' | b'\n' => {
                        if e == b'\r' && c.get(i) == Some(&b'\n') {
                            i += 1;
                        }
                    }
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match c.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        s.push((v & 0xFF) as u8);
                    }
                    other => s.push(other),
                }
            }
            b'(' => {
                depth += 1;
                s.push(b);
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                s.push(b);
            }
            _ => s.push(b),
        }
    }
    (s, i)
}

fn hex_string(c: &[u8], i: usize) -> (Vec<u8>, usize) {
    let end = c[i..].iter().position(|&b| b == b'>').map_or(c.len(), |p| i + p);
    let digits: Vec<u8> = c[i..end]
        .iter()
        .filter(|b| b.is_ascii_hexdigit())
        .copied()
        .collect();
    let nib = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
    let bytes = digits
        .chunks(2)
        .map(|p| (nib(p[0]) << 4) | p.get(1).map_or(0, |&d| nib(d)))
        .collect();
    (bytes, (end + 1).min(c.len()))
}

/// Append the text shown by the operators of content stream `c`.
fn shown_text(c: &[u8], out: &mut String) {
    // Operands since the last operator: strings, and numbers inside a TJ array.
    let mut operands: Vec<Vec<u8>> = Vec::new();
    let mut in_array = false;
    let mut i = 0;
    while i < c.len() {
        let b = c[i];
        match b {
            b'(' => {
                let (s, next) = literal(c, i + 1);
                operands.push(s);
                i = next;
            }
            b'<' if c.get(i + 1) == Some(&b'<') => i += 2,
            b'<' => {
                let (s, next) = hex_string(c, i + 1);
                operands.push(s);
                i = next;
            }
            b'[' => {
                in_array = true;
                operands.clear();
                i += 1;
            }
            b']' => {
                in_array = false;
                i += 1;
            }
            b'%' => {
                while i < c.len() && c[i] != b'\n' && c[i] != b'\r' {
                    i += 1;
                }
            }
            _ if b.is_ascii_whitespace() || matches!(b, b'>' | b'{' | b'}' | b'/') => i += 1,
            _ => {
                let s = i;
                while i < c.len() && !c[i].is_ascii_whitespace() && !b"()<>[]{}/%".contains(&c[i]) {
                    i += 1;
                }
                let token = &c[s..i];
                // A big negative kerning inside TJ is how PDF writers draw a space.
                if in_array {
                    if token.first() == Some(&b'-') && token.len() > 3 {
                        operands.push(b" ".to_vec());
                    }
                    continue;
                }
                if token
                    .first()
                    .is_some_and(|t| t.is_ascii_digit() || *t == b'-' || *t == b'.')
                {
                    continue;
                }
                match token {
                    b"Tj" | b"TJ" | b"'" | b"\"" => {
                        if token != b"Tj" && token != b"TJ" {
                            out.push('\n');
                        }
                        for o in &operands {
                            decode_string(o, out);
                        }
                    }
                    b"Td" | b"TD" | b"T*" | b"Tm" | b"ET" => out.push('\n'),
                    _ => {}
                }
                operands.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf_with(stream: &[u8], flate: bool) -> Vec<u8> {
        let body = if flate {
            miniz_oxide::deflate::compress_to_vec_zlib(stream, 6)
        } else {
            stream.to_vec()
        };
        let filter = if flate { "/Filter /FlateDecode " } else { "" };
        let mut pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n4 0 obj\n".to_vec();
        pdf.extend_from_slice(format!("<< {filter}/Length {} >>\nstream\n", body.len()).as_bytes());
        pdf.extend_from_slice(&body);
        pdf.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
        pdf
    }

    #[test]
    fn plain_and_flate_streams() {
        let content = b"BT /F1 12 Tf 72 712 Td (Card: 4111 1111 1111 1111) Tj ET";
        for flate in [false, true] {
            let t = text(&pdf_with(content, flate), 1 << 20, 100, None);
            assert!(
                t.text.contains("Card: 4111 1111 1111 1111"),
                "{flate}: {:?}",
                t.text
            );
            assert_eq!(t.refused, None);
        }
    }

    #[test]
    fn tj_arrays_escapes_and_hex() {
        let mut s = String::new();
        shown_text(
            b"[(41)-20(11)] TJ [(a)-300(b)] TJ (x\\(y\\)\\101) Tj <34313131> Tj",
            &mut s,
        );
        assert_eq!(s, "4111a bx(y)A4111");
        let mut u = String::new();
        shown_text(b"<FEFF00480069> Tj", &mut u);
        assert_eq!(u, "Hi");
    }

    #[test]
    fn flate_bomb_is_capped() {
        let zeros = vec![b' '; 8 << 20];
        let pdf = pdf_with(&zeros, true);
        let t = text(&pdf, 64 << 20, 100, None);
        assert_eq!(t.refused, Some(Refusal::Bomb(100)));
        let t = text(&pdf, 1000, 100_000, None);
        assert_eq!(t.refused, Some(Refusal::Budget));
        assert!(t.expanded <= 1000);
    }

    #[test]
    fn stream_count_and_deadline_bound_the_work() {
        // Millions of empty streams cost a dictionary check each: capped.
        let mut pdf = b"%PDF-1.4\n".to_vec();
        for _ in 0..MAX_STREAMS + 5 {
            pdf.extend_from_slice(b"1 0 obj\n<<>>\nstream\n(x) Tj\nendstream\n");
        }
        let t = text(&pdf, 1 << 20, 100, None);
        assert_eq!(t.refused, Some(Refusal::TooManyStreams));
        assert_eq!(t.text.matches('x').count(), MAX_STREAMS);
        assert!(Refusal::TooManyStreams.truncates());
        // A spent deadline stops before the first stream.
        let t = text(&pdf, 1 << 20, 100, Some(Instant::now()));
        assert_eq!(t.refused, Some(Refusal::OutOfTime));
        assert!(t.text.is_empty());
        assert!(!Refusal::Bomb(100).truncates());
    }

    #[test]
    fn garbage_does_not_panic() {
        for junk in [
            &b"%PDF-1.4 stream\n"[..],
            b"%PDF- stream\r\n(unclosed",
            b"%PDF stream\n<abc",
            b"stream",
        ] {
            let _ = text(junk, 1000, 10, None);
        }
        let mut s = String::new();
        shown_text(b"(\\", &mut s);
        shown_text(b"<4", &mut s);
    }
}
