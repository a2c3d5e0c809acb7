//! HTML and XML to text, simply: tags removed, entities decoded.
//!
//! The point is that what a reader sees is what the detectors scan: inline
//! tags (`<b>`, `<span>`, `<w:r>`) vanish without a trace, so a number split by
//! them is whole again (`4111 <b>1111</b>` reads `4111 1111`); block tags
//! (paragraphs, rows, line breaks) become a newline and table cells a tab, so
//! neighbouring values do not fuse into one number. HTML whitespace collapses
//! as a browser renders it. Not a parser: malformed markup degrades to text.

/// HTML elements whose contents are dropped. Only CSS: script text and
/// comments are kept, because data hidden there still leaves the organisation.
const HIDDEN: &[&str] = &["style"];

/// HTML elements that start a new line when rendered.
const HTML_BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "tr",
    "li",
    "ul",
    "ol",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "dt",
    "dd",
    "address",
];

fn entity(s: &str) -> Option<(char, usize)> {
    let end = s.bytes().take(12).position(|c| c == b';')?;
    let name = &s[1..end];
    let c = if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        char::from_u32(code)?
    } else {
        match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{a0}',
            "ndash" => '\u{2013}',
            "mdash" => '\u{2014}',
            "thinsp" => '\u{2009}',
            "euro" => '\u{20ac}',
            "copy" => '\u{a9}',
            _ => return None,
        }
    };
    Some((c, end + 1))
}

/// Offset of `</name` in `s`, ignoring ASCII case.
fn find_end_tag(s: &str, name: &str) -> Option<usize> {
    s.match_indices("</").map(|(i, _)| i).find(|&i| {
        s.as_bytes()
            .get(i + 2..i + 2 + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// The local name of a tag (`w:p` is `p`): up to the first whitespace or `/`,
/// after the last `:`. Byte by byte, since Office XML has a tag every few
/// bytes and the general string searches cost a call each.
fn local_name(name_part: &str) -> &str {
    let bytes = name_part.as_bytes();
    let mut colon = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' | b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' => {
                return colon.map_or(&name_part[..i], |c| &name_part[c + 1..i]);
            }
            b':' => colon = Some(i),
            // Non-ASCII whitespace also ends a name: rare, so the slow way.
            0x80.. => {
                let end = i + name_part[i..]
                    .find(|c: char| c.is_whitespace() || c == '/')
                    .unwrap_or(name_part.len() - i);
                let full = &name_part[..end];
                return full.rfind(':').map_or(full, |c| &full[c + 1..]);
            }
            _ => {}
        }
    }
    colon.map_or(name_part, |c| &name_part[c + 1..])
}

/// The HTML tag walker. `breaks(name, closing_or_selfclosing)` says what a
/// tag inserts; whitespace collapses as a browser renders it.
fn strip(src: &str, hidden: &[&str], mut breaks: impl FnMut(&str, bool) -> Option<char>) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    // Once an end tag is known to be missing, stop looking for it (else many
    // unclosed `<style>` tags would rescan the rest of the text each).
    let mut unclosed = false;
    let push_space = |out: &mut String, c: char| {
        if out.ends_with([' ', '\n', '\t']) {
            if c != ' ' && out.ends_with(' ') {
                out.pop();
                out.push(c);
            }
            return;
        }
        out.push(c);
    };
    // Byte by byte: prose has a space every few bytes, and a search call
    // per word costs more than the test of each byte. A single space after
    // a character copied with it is copied as it is (what `push_space`
    // would do), so a run of words is one copy.
    while let Some(i) = next_special(rest.as_bytes()) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.as_bytes()[0] {
            b'&' => match entity(tail) {
                Some((c, n)) => {
                    out.push(c);
                    rest = &tail[n..];
                }
                None => {
                    out.push('&');
                    rest = &tail[1..];
                }
            },
            b'<' => {
                if let Some(after) = tail.strip_prefix("<!--") {
                    push_space(&mut out, '\n');
                    rest = after;
                    continue;
                }
                let Some(close) = memchr::memchr(b'>', tail.as_bytes()) else {
                    out.push_str(tail);
                    rest = "";
                    continue;
                };
                let tag = &tail[1..close];
                rest = &tail[close + 1..];
                let closing = tag.starts_with('/');
                let name_part = tag.trim_start_matches('/');
                let local = local_name(name_part);
                // Tag names are matched without regard to case and without
                // allocating: a spreadsheet has a tag every few bytes.
                let mut lower = [0u8; 16];
                let local = if local.len() > lower.len() {
                    // No element of interest has a long name.
                    ""
                } else if !local.bytes().any(|b| b.is_ascii_uppercase()) {
                    local
                } else {
                    lower[..local.len()].copy_from_slice(local.as_bytes());
                    lower[..local.len()].make_ascii_lowercase();
                    std::str::from_utf8(&lower[..local.len()]).unwrap_or("")
                };
                if !closing && !unclosed && hidden.contains(&local) {
                    // Unclosed, the element hides nothing: malformed markup must
                    // not become a way to hide text from the scanner.
                    match find_end_tag(rest, local) {
                        Some(e) => {
                            rest = &rest[e..];
                            continue;
                        }
                        None => unclosed = true,
                    }
                }
                let ends = closing || tag.ends_with('/');
                if let Some(c) = breaks(local, ends) {
                    push_space(&mut out, c);
                }
            }
            b'-' => {
                if let Some(after) = tail.strip_prefix("-->") {
                    push_space(&mut out, '\n');
                    rest = after;
                } else {
                    out.push('-');
                    rest = &tail[1..];
                }
            }
            _ => {
                push_space(&mut out, ' ');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Offset of the next byte [`strip`] must look at: markup, a line break or
/// tab, or a space that is not the first after a copied character. Eight
/// bytes at a time: prose has a space every few bytes, and a branch per
/// byte on letter or space is mispredicted at most words.
fn next_special(b: &[u8]) -> Option<usize> {
    // The byte before the eight is a space (or there is none): a space
    // first among them is special.
    let mut after_space = true;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let spaces = bytes_equal(v, b' ');
        let marks = bytes_equal(v, b'<')
            | bytes_equal(v, b'&')
            | bytes_equal(v, b'\n')
            | bytes_equal(v, b'\r')
            | bytes_equal(v, b'\t')
            | bytes_equal(v, b'-');
        let second_spaces = spaces & (spaces << 8 | u64::from(after_space) << 7);
        let special = marks | second_spaces;
        if special != 0 {
            return Some(i + (special.trailing_zeros() / 8) as usize);
        }
        after_space = chunk[7] == b' ';
        i += 8;
    }
    next_special_bytewise(&b[i..], !after_space).map(|k| i + k)
}

/// [`next_special`] a byte at a time, `after_copied` saying whether the
/// byte before `b` was copied text (not a space).
fn next_special_bytewise(b: &[u8], mut after_copied: bool) -> Option<usize> {
    for (k, &c) in b.iter().enumerate() {
        match c {
            b'<' | b'&' | b'\n' | b'\r' | b'\t' | b'-' => return Some(k),
            b' ' if !after_copied => return Some(k),
            b' ' => after_copied = false,
            _ => after_copied = true,
        }
    }
    None
}

/// The high bit of each byte of `v` equal to `c`, exactly (no borrow from
/// one byte to the next).
fn bytes_equal(v: u64, c: u8) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7F; 8]);
    let x = v ^ u64::from_ne_bytes([c; 8]);
    !(((x & LOW7) + LOW7) | x) & !LOW7
}

/// Render HTML to the text a reader sees (simply: no CSS, no layout).
pub(crate) fn html_to_text(html: &str) -> String {
    strip(html, HIDDEN, |name, _| {
        if name == "td" || name == "th" {
            Some('\t')
        } else if HTML_BLOCKS.contains(&name) {
            Some('\n')
        } else {
            None
        }
    })
}

/// The text content of an Office/OpenDocument XML part: runs joined, one line
/// per paragraph or shared string; a table row a line with its cells separated
/// by tabs (paragraphs inside a cell joined by a space), so a header row sits
/// above its columns as in a spreadsheet.
pub(crate) fn xml_to_text(xml: &str) -> String {
    let mut out = Vec::new();
    xml_to_text_into(xml, &mut out);
    into_string(out)
}

/// Bytes that [`xml_to_text_into`] wrote as a `String`. They are UTF-8 by
/// construction (whole characters of a `str` and whole encoded ones); the
/// check is still made, and a failure would only cost replacement characters.
pub(crate) fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`xml_to_text`] appending UTF-8 to `out`.
///
/// Its own loop rather than [`strip`]'s, since a spreadsheet's shared strings
/// carry a tag every few bytes: the text never grows (a tag, an entity or a
/// comment mark is longer than what it becomes), so it is written by index
/// into room as long as the XML, eight bytes at a time where no `<`, `&` or
/// `-` is among them, and a tag's `>` is looked for by hand over a few bytes
/// before memchr is called. XML whitespace is kept as it is; only comments'
/// `<!--` and `-->` become line breaks, as in HTML.
pub(crate) fn xml_to_text_into(xml: &str, out: &mut Vec<u8>) {
    let b = xml.as_bytes();
    let base = out.len();
    out.resize(base + b.len(), 0);
    let dst = &mut out[base..];
    let (mut r, mut w) = (0, 0);
    let mut cell_depth = 0usize;
    while r < b.len() {
        let c = match b.get(r..r + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(chunk) => {
                // Copied whole, kept up to the first markup byte.
                dst[w..w + 8].copy_from_slice(&chunk);
                let k = markup_in(u64::from_le_bytes(chunk));
                w += k;
                r += k;
                if k == 8 {
                    continue;
                }
                b[r]
            }
            None => match b[r] {
                c @ (b'<' | b'&' | b'-') => c,
                c => {
                    dst[w] = c;
                    w += 1;
                    r += 1;
                    continue;
                }
            },
        };
        let (put, next) = match c {
            b'&' => match entity(&xml[r..]) {
                Some((ch, n)) => {
                    w += ch.encode_utf8(&mut dst[w..]).len();
                    r += n;
                    continue;
                }
                None => (b'&', r + 1),
            },
            b'-' if b[r..].starts_with(b"-->") => (b'\n', r + 3),
            b'-' => (b'-', r + 1),
            // The commonest tags, whole within the eight bytes after `<`,
            // read as one number: no search for `>`, no name read.
            _ if let Some(mut found) = short_tag(b, r) => {
                // They come in runs (`</t></si><si><t>`): read on while the
                // next byte starts another.
                loop {
                    // Between two shared strings, the commonest run of
                    // all: a line break (as `</si>` puts) in one step.
                    if b.get(r..r + STRING_TO_STRING.len()) == Some(STRING_TO_STRING) {
                        dst[w] = if cell_depth > 0 { b' ' } else { b'\n' };
                        w += 1;
                        r += STRING_TO_STRING.len();
                        match b.get(r) {
                            Some(b'<') => match short_tag(b, r) {
                                Some(next) => found = next,
                                None => break,
                            },
                            _ => break,
                        }
                        continue;
                    }
                    let (len, tag) = found;
                    if tag == Common::Break {
                        dst[w] = if cell_depth > 0 { b' ' } else { b'\n' };
                        w += 1;
                    }
                    r += len + 2;
                    match b.get(r) {
                        Some(b'<') => match short_tag(b, r) {
                            Some(next) => found = next,
                            None => break,
                        },
                        _ => break,
                    }
                }
                continue;
            }
            _ if b[r..].starts_with(b"<!--") => (b'\n', r + 4),
            _ => match tag_end(b, r + 1) {
                Some(close) => {
                    if silent(&b[r + 1..close]) {
                        r = close + 1;
                        continue;
                    }
                    if let Some(ch) = xml_break(&xml[r + 1..close], &mut cell_depth) {
                        dst[w] = ch;
                        w += 1;
                    }
                    r = close + 1;
                    continue;
                }
                // An unterminated tag is text, and so is the rest.
                None => {
                    let rest = b.len() - r;
                    dst[w..w + rest].copy_from_slice(&b[r..]);
                    w += rest;
                    break;
                }
            },
        };
        dst[w] = put;
        w += 1;
        r = next;
    }
    out.truncate(base + w);
}

/// The tags between two strings of a spreadsheet's shared strings, which
/// put exactly what `</si>` puts (the others are silent).
const STRING_TO_STRING: &[u8] = b"</t></si><si><t>";

/// What one of the commonest tags puts in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Common {
    /// Nothing (runs, text elements, the start of a paragraph or string).
    Silent,
    /// The end of a paragraph or shared string: a line break, or a space
    /// inside a table cell (as [`xml_break`] says of them).
    Break,
}

/// A tag name of up to seven bytes as a little-endian number, the rest zero.
const fn tag_key(name: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < name.len() {
        v |= (name[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// The commonest tags of Word, Excel and PowerPoint text, by name.
const COMMON_TAGS: [(&[u8], Common); 22] = [
    (b"t", Common::Silent),
    (b"/t", Common::Silent),
    (b"si", Common::Silent),
    (b"r", Common::Silent),
    (b"/r", Common::Silent),
    (b"p", Common::Silent),
    (b"w:t", Common::Silent),
    (b"/w:t", Common::Silent),
    (b"w:r", Common::Silent),
    (b"/w:r", Common::Silent),
    (b"w:p", Common::Silent),
    (b"a:t", Common::Silent),
    (b"/a:t", Common::Silent),
    (b"a:r", Common::Silent),
    (b"/a:r", Common::Silent),
    (b"a:p", Common::Silent),
    (b"w:rPr", Common::Silent),
    (b"/w:rPr", Common::Silent),
    (b"/si", Common::Break),
    (b"/p", Common::Break),
    (b"/w:p", Common::Break),
    (b"/a:p", Common::Break),
];

/// A multiplier that sends each of [`COMMON_TAGS`] to its own slot of 64
/// (checked when the table is built, at compile time).
const TAG_HASH: u64 = 0xbbc5_8e50_a948_b2cd;

const fn tag_slot(key: u64) -> usize {
    (key.wrapping_mul(TAG_HASH) >> 58) as usize
}

/// [`COMMON_TAGS`] by slot; an empty slot holds a key no name has (a name
/// of at most seven bytes leaves the top byte zero).
static TAG_TABLE: [(u64, Common); 64] = {
    let mut table = [(u64::MAX, Common::Silent); 64];
    let mut i = 0;
    while i < COMMON_TAGS.len() {
        let (name, tag) = COMMON_TAGS[i];
        let key = tag_key(name);
        let slot = tag_slot(key);
        assert!(table[slot].0 == u64::MAX, "two common tags share a slot");
        table[slot] = (key, tag);
        i += 1;
    }
    table
};

/// The tag at `b[r]` (a `<`) if it is one of the commonest of Word and Excel
/// text and its `>` lies within the next eight bytes: the length of its name
/// and what it does, from one lookup. Equal to what [`silent`] and
/// [`xml_break`] say of it.
fn short_tag(b: &[u8], r: usize) -> Option<(usize, Common)> {
    let after: [u8; 8] = b.get(r + 1..r + 9)?.try_into().ok()?;
    let v = u64::from_le_bytes(after);
    let len = first_byte(v, b'>');
    if len > 7 {
        return None;
    }
    let name = v & ((1u64 << (8 * len)) - 1);
    let (key, tag) = TAG_TABLE[tag_slot(name)];
    (key == name).then_some((len, tag))
}

/// The commonest tags of Word and Excel text, which put nothing in the
/// text (runs, text elements, the start of a shared string): matched whole
/// before the tag's name is read.
fn silent(tag: &[u8]) -> bool {
    matches!(
        tag,
        b"t" | b"/t" | b"si" | b"r" | b"/r" | b"w:t" | b"/w:t" | b"w:r" | b"/w:r" | b"w:rPr" | b"/w:rPr"
    )
}

/// How many of the eight bytes in `v` (little-endian: the first byte lowest)
/// come before the first `<`, `&` or `-`: 8 if none is there.
fn markup_in(v: u64) -> usize {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each zero byte of x, and perhaps of bytes above the
    // first zero byte (a borrow): the lowest one set is exact.
    let zero = |x: u64| x.wrapping_sub(LOW) & !x & HIGH;
    let splat = |c: u8| u64::from_ne_bytes([c; 8]);
    let found = zero(v ^ splat(b'<')) | zero(v ^ splat(b'&')) | zero(v ^ splat(b'-'));
    (found.trailing_zeros() / 8) as usize
}

/// How many of the eight bytes in `v` (little-endian) come before the first
/// `c`: 8 if none is there.
fn first_byte(v: u64, c: u8) -> usize {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let x = v ^ u64::from_ne_bytes([c; 8]);
    ((x.wrapping_sub(LOW) & !x & HIGH).trailing_zeros() / 8) as usize
}

/// Offset of the `>` that closes a tag whose name starts at `from`: by hand
/// over the first bytes (Office tags are short), then with memchr.
fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let near = b.len().min(from + 16);
    match b[from..near].iter().position(|&c| c == b'>') {
        Some(k) => Some(from + k),
        None => memchr::memchr(b'>', &b[near..]).map(|k| near + k),
    }
}

/// What an XML tag (the text between `<` and `>`) puts in the text: a tab
/// between cells, a line break after a row, paragraph, shared string or
/// line break, a space between paragraphs inside a cell (`cell_depth` counts
/// the open cells).
fn xml_break(tag: &str, cell_depth: &mut usize) -> Option<u8> {
    let slashes = tag.bytes().take_while(|&c| c == b'/').count();
    let ends = slashes > 0 || tag.ends_with('/');
    // The local name (as `local_name` reads it), lower-cased as it is read:
    // element names are matched without regard to case, without allocating,
    // and none of interest is longer than `table-cell`.
    let mut lower = [0u8; 10];
    let mut len = 0;
    for &c in &tag.as_bytes()[slashes..] {
        match c {
            b'/' | b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' => break,
            b':' => len = 0,
            // Non-ASCII (and so possibly Unicode whitespace): rare.
            0x80.. => {
                let local = local_name(&tag[slashes..]).as_bytes();
                len = local.len();
                lower.get_mut(..len)?.copy_from_slice(local);
                lower.make_ascii_lowercase();
                break;
            }
            _ => {
                // Past ten bytes no name of interest is left, unless a `:`
                // starts the local name again.
                if let Some(slot) = lower.get_mut(len) {
                    *slot = c.to_ascii_lowercase();
                }
                len += 1;
            }
        }
    }
    match lower.get(..len)? {
        b"tc" | b"table-cell" if !ends => {
            *cell_depth += 1;
            None
        }
        b"tc" | b"table-cell" => {
            *cell_depth = cell_depth.saturating_sub(1);
            Some(b'\t')
        }
        b"tab" => Some(b'\t'),
        _ if !ends => None,
        b"tr" | b"table-row" => Some(b'\n'),
        b"p" | b"br" | b"cr" | b"si" | b"c" | b"row" | b"h" | b"line-break" if *cell_depth > 0 => Some(b' '),
        b"p" | b"br" | b"cr" | b"si" | b"c" | b"row" | b"h" | b"line-break" => Some(b'\n'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_tags_vanish_blocks_break() {
        assert_eq!(
            html_to_text("4111 <b>1111</b> 1111 <span class=x>1111</span>"),
            "4111 1111 1111 1111"
        );
        assert_eq!(html_to_text("<p>a</p><p>b</p>"), "\na\nb\n");
        assert_eq!(
            html_to_text("<td>123-45-6789</td><td>555</td>"),
            "\t123-45-6789\t555\t"
        );
        assert_eq!(html_to_text("a\n   b\r\n\tc"), "a b c");
        assert_eq!(html_to_text("one two  three <b> four</b>"), "one two three four");
        assert_eq!(html_to_text(" lead <p> x y</p>  tail "), " lead\nx y\ntail ");
        assert_eq!(html_to_text("x<br/>y"), "x\ny");
    }

    #[test]
    fn entities_and_hidden_content() {
        assert_eq!(
            html_to_text("4111&nbsp;1111 &amp; &#65;&#x42; &bogus; &"),
            "4111\u{a0}1111 & AB &bogus; &"
        );
        assert_eq!(
            html_to_text("<style>p{}</STYLE>a<!-- 4111 -->b<SCRIPT>x</SCRIPT>c"),
            "a\n4111\nbxc"
        );
        assert_eq!(html_to_text("<style>4111 never closed"), "4111 never closed");
        assert_eq!(html_to_text("a-b -- c"), "a-b -- c");
        assert_eq!(html_to_text("unterminated <b"), "unterminated <b");
    }

    #[test]
    fn local_names_as_the_string_searches_read_them() {
        let reference = |name_part: &str| {
            let end = name_part
                .find(|c: char| c.is_whitespace() || c == '/')
                .unwrap_or(name_part.len());
            let full = &name_part[..end];
            full.rfind(':').map_or(full, |i| &full[i + 1..]).to_owned()
        };
        for tag in [
            "",
            "p",
            "w:p",
            "w:t xml:space=\"preserve\"",
            "br/",
            "a:b:c",
            "x:\u{a0}y",
            "\u{e9}:t",
            "w:p\u{2003}x",
            "w:tab\x0bq",
            "c r=\"A1\"",
            ":",
            "a:",
            "a\r\nb",
            "\u{e9}t/",
        ] {
            assert_eq!(local_name(tag), reference(tag), "{tag:?}");
        }
    }

    /// The eight-byte search stops where the byte-by-byte one does, at
    /// every offset of text with marks, single and double spaces.
    #[test]
    fn special_bytes_found_eight_at_once() {
        let text = b"ab  c d-e\tf<g&h\ni\rj  k l m n o p q  r s t  uvwxyzabcdefgh  ij\xc3\xa9 \xff  z";
        for from in 0..text.len() {
            for to in from..=text.len() {
                let b = &text[from..to];
                assert_eq!(
                    next_special(b),
                    next_special_bytewise(b, false),
                    "{:?}",
                    String::from_utf8_lossy(b)
                );
            }
        }
        for c in 0..=255u8 {
            for at in 0..8 {
                for filler in [c ^ 1, c ^ 0x80, c.wrapping_add(1), c.wrapping_sub(1)] {
                    let mut v = [filler; 8];
                    v[at] = c;
                    let found = bytes_equal(u64::from_le_bytes(v), c);
                    assert_eq!(found, 0x80 << (8 * at), "{c} at {at} among {filler}");
                }
            }
        }
    }

    /// The eight-byte test finds the first `<`, `&` or `-` exactly, whatever
    /// the bytes before and after it (0x80 and above, bytes one off the
    /// markup bytes, several markup bytes).
    #[test]
    fn markup_found_eight_bytes_at_once() {
        let mut bytes: Vec<u8> = (0..=255u8).collect();
        bytes.extend(b"plain text;=,.%'\xff\xbc\xa6\xad no markup<&-<<&&--");
        for from in 0..bytes.len().saturating_sub(8) {
            let chunk: [u8; 8] = bytes[from..from + 8].try_into().unwrap();
            let expected = chunk
                .iter()
                .position(|c| matches!(c, b'<' | b'&' | b'-'))
                .unwrap_or(8);
            assert_eq!(markup_in(u64::from_le_bytes(chunk)), expected, "{chunk:?}");
        }
    }

    /// Long text between tags (read eight bytes at a time) and markup at
    /// every offset of an eight-byte step read the same as short pieces.
    #[test]
    fn long_runs_read_as_short_ones() {
        for pad in 0..9 {
            let lead = "x".repeat(pad);
            let xml = format!(
                "{lead}<w:p><w:r><w:t>Card number 4111 1111</w:t></w:r><w:r><w:t> 1111 1111 \
                 &amp; &#x42;&bogus; a-b --&gt; c</w:t></w:r></w:p>{lead}<!--note-->tail<w:p unterminated"
            );
            assert_eq!(
                xml_to_text(&xml),
                format!(
                    "{lead}Card number 4111 1111 1111 1111 & B&bogus; a-b --> c\n{lead}\nnote\ntail<w:p unterminated"
                ),
                "pad {pad}"
            );
        }
        assert_eq!(
            xml_to_text("caf\u{e9} &euro;5 \u{4e2d}\u{6587}<p/>"),
            "caf\u{e9} \u{20ac}5 \u{4e2d}\u{6587}\n"
        );
    }

    #[test]
    fn silent_tags_put_nothing_in_the_text() {
        let tags = [
            "t", "/t", "si", "r", "/r", "w:t", "/w:t", "w:r", "/w:r", "w:rPr", "/w:rPr",
        ];
        for name in tags {
            let mut depth = 0;
            assert!(silent(name.as_bytes()), "{name}");
            assert_eq!(xml_break(name, &mut depth), None, "{name}");
            assert_eq!(depth, 0, "{name}");
        }
        for name in ["/si", "w:p", "/w:p", "p", "tc", "/tc", "tab", "t x", "T"] {
            assert!(!silent(name.as_bytes()), "{name}");
        }
    }

    /// The short tags read as one number do what the general reading does
    /// with them, at every length and with every byte after them.
    #[test]
    fn short_tags_read_as_the_general_reading() {
        for (name, _) in COMMON_TAGS {
            let name = std::str::from_utf8(name).unwrap();
            for depth in [0, 1] {
                let mut d = depth;
                let general = if silent(name.as_bytes()) {
                    None
                } else {
                    xml_break(name, &mut d)
                };
                assert_eq!(d, depth, "{name}");
                let tag = format!("<{name}>xxxxxxxx");
                let (len, common) = short_tag(tag.as_bytes(), 0).expect(name);
                assert_eq!(len, name.len(), "{name}");
                let fast = match common {
                    Common::Silent => None,
                    Common::Break => Some(if depth > 0 { b' ' } else { b'\n' }),
                };
                assert_eq!(fast, general, "{name} at depth {depth}");
            }
        }
        // Not common, or not whole within eight bytes: the general reading.
        for tag in [
            "<w:tc>",
            "<tab/>",
            "<w:t xml:space=\"preserve\">",
            "<T>",
            "<w:pPr>",
            "<!---->",
            "<sit>",
            "<s>",
            "<w:rPr/>",
            "<",
            "<t",
            "<si\u{e9}>",
            "</w:tbl>",
        ] {
            let padded = format!("{tag}zzzzzzzzz");
            assert_eq!(short_tag(padded.as_bytes(), 0), None, "{tag}");
        }
        assert_eq!(short_tag(b"<t>", 0), None, "fewer than eight bytes after it");
    }

    #[test]
    fn office_xml_runs_join() {
        let docx = r#"<w:body><w:p><w:r><w:t>Card 4111 </w:t></w:r><w:r><w:rPr/><w:t>1111 1111 1111</w:t></w:r></w:p><w:p><w:r><w:t>next</w:t></w:r></w:p></w:body>"#;
        assert_eq!(xml_to_text(docx), "Card 4111 1111 1111 1111\nnext\n");
        let sheet = r#"<sst><si><t>a</t></si><si><r><t>41</t></r><r><t>11</t></r></si></sst>"#;
        assert_eq!(xml_to_text(sheet), "a\n4111\n");
        let strings = "<sst><si><t>a</t></si><si><t>b</t></si><si><t></t></si><si><t>c</t></si></sst>";
        assert_eq!(xml_to_text(strings), "a\nb\n\nc\n");
        let in_cell = "<w:tc><si><t>a</t></si><si><t>b</t></si></w:tc>";
        assert_eq!(xml_to_text(in_cell), "a b \t");
        assert_eq!(
            xml_to_text("<c><v>1</v></c><c><is><t>x &amp; y</t></is></c>"),
            "1\nx & y\n"
        );
        assert_eq!(
            xml_to_text("a-b --> c<!--x-->d &amp;&bogus; <W:P/>e<w:p unterminated"),
            "a-b \n c\nx\nd &&bogus; \ne<w:p unterminated"
        );
        let table = "<w:p><w:r><w:t>Staff</w:t></w:r></w:p><w:tbl>\
            <w:tr><w:tc><w:p><w:r><w:t>Name</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>SSN</w:t></w:r></w:p></w:tc></w:tr>\
            <w:tr><w:tc><w:p><w:r><w:t>Jane</w:t></w:r></w:p><w:p><w:r><w:t>Doe</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>536221234</w:t></w:r></w:p></w:tc></w:tr></w:tbl>";
        assert_eq!(
            xml_to_text(table),
            "Staff\nName \tSSN \t\nJane Doe \t536221234 \t\n"
        );
    }
}
