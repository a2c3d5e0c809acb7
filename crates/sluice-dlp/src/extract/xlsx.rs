//! Spreadsheet worksheets (SpreadsheetML) to tab-separated rows.
//!
//! A worksheet stores strings as indexes into `xl/sharedStrings.xml` and skips
//! empty cells, so its raw text is a stream of small numbers with the words far
//! away. Here each row becomes one line and each cell one tab-separated field
//! in its own column (gaps filled from the `r="C7"` reference), with shared
//! strings resolved: the header row sits above its column, as the scanner's
//! table context expects. Not a parser: malformed XML degrades to fewer cells.

use super::markup::xml_to_text;

/// Widest sheet laid out by column reference; cells past it are appended
/// without padding (a hostile `r="XFD1"` must not produce 16k tabs per row).
const MAX_COLUMN: usize = 256;

/// The shared strings of `xl/sharedStrings.xml`, in index order.
pub(crate) fn shared_strings(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = find_tag(rest, "si") {
        let body_start = match rest[i..].find('>') {
            Some(k) => i + k + 1,
            None => break,
        };
        if rest[..body_start].ends_with("/>") {
            out.push(String::new());
            rest = &rest[body_start..];
            continue;
        }
        let body_end = rest[body_start..]
            .find("</si>")
            .map_or(rest.len(), |k| body_start + k);
        out.push(xml_to_text(&rest[body_start..body_end]).trim_end().to_owned());
        rest = &rest[body_end..];
    }
    out
}

/// Offset of the next `<name` start tag (not `<namespace...`).
fn find_tag(s: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find('<') {
        let i = from + k;
        let tail = &s.as_bytes()[i + 1..];
        if tail.starts_with(name.as_bytes())
            && tail
                .get(name.len())
                .is_some_and(|&c| c == b'>' || c == b' ' || c == b'/')
        {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let len = tag[i..].find('"')?;
    Some(&tag[i..i + len])
}

/// Zero-based column of a cell reference (`C7` is 2).
fn column(reference: &str) -> Option<usize> {
    let letters = reference.bytes().take_while(u8::is_ascii_uppercase);
    let mut col = 0usize;
    let mut n = 0;
    for c in letters {
        col = col * 26 + usize::from(c - b'A' + 1);
        n += 1;
        if n > 3 {
            return None;
        }
    }
    col.checked_sub(1)
}

/// One worksheet as text: a line per row, a tab between cells. Marks the
/// shared strings it used in `used` (same length as `shared`).
pub(crate) fn sheet_text(xml: &str, shared: &[String], used: &mut [bool]) -> String {
    let mut out = String::with_capacity(xml.len() / 4);
    let mut pos = 0;
    // Cells and tabs written on the current row.
    let mut col = 0usize;
    let mut tabs = 0usize;
    // The next cell start and row end at or after `pos`, found once each and
    // kept until passed, so every byte is searched a bounded number of times.
    let mut next_cell: Option<Option<usize>> = None;
    let mut next_row: Option<Option<usize>> = None;
    loop {
        let cell = *next_cell.get_or_insert_with(|| find_tag(&xml[pos..], "c").map(|k| pos + k));
        let row = *next_row.get_or_insert_with(|| xml[pos..].find("</row>").map(|k| pos + k));
        match (cell, row) {
            (Some(c), r) if r.is_none_or(|r| c < r) => {
                next_cell = None;
                let Some(tag_end) = xml[c..].find('>').map(|k| c + k + 1) else {
                    break;
                };
                let tag = &xml[c..tag_end];
                // A cell in column N has N tabs before it on its line.
                let target = attr(tag, "r")
                    .and_then(column)
                    .filter(|&t| t <= MAX_COLUMN)
                    .map_or(col, |t| t.max(col));
                while tabs < target {
                    out.push('\t');
                    tabs += 1;
                }
                col = target + 1;
                if tag.ends_with("/>") {
                    pos = tag_end;
                    continue;
                }
                let body_end = xml[tag_end..].find("</c>").map_or(xml.len(), |k| tag_end + k);
                let body = &xml[tag_end..body_end];
                match attr(tag, "t") {
                    Some("s") => {
                        let index = inner(body, "v").and_then(|v| v.trim().parse::<usize>().ok());
                        if let Some(i) = index.filter(|&i| i < shared.len()) {
                            out.push_str(&shared[i]);
                            used[i] = true;
                        }
                    }
                    Some("inlineStr") => out.push_str(xml_to_text(body).trim_end()),
                    _ => {
                        if let Some(v) = inner(body, "v") {
                            out.push_str(&xml_to_text(v));
                        }
                    }
                }
                pos = body_end;
                if row.is_some_and(|r| r < pos) {
                    next_row = None;
                }
            }
            (_, Some(r)) => {
                next_row = None;
                out.push('\n');
                col = 0;
                tabs = 0;
                pos = r + 6;
                if cell.is_some_and(|c| c < pos) {
                    next_cell = None;
                }
            }
            _ => break,
        }
    }
    out
}

/// The text between `<name ...>` and `</name>` in `body`.
fn inner<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let i = find_tag(body, name)?;
    let s = i + body[i..].find('>')? + 1;
    let e = body[s..].find(&format!("</{name}>"))?;
    Some(&body[s..s + e])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_columns_with_shared_strings() {
        let shared = shared_strings(
            r#"<sst><si><t>Name</t></si><si><t>SSN</t></si><si><r><t>Ja</t></r><r><t>ne</t></r></si></sst>"#,
        );
        assert_eq!(shared, ["Name", "SSN", "Jane"]);
        let sheet = r#"<worksheet><sheetData>
<row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c></row>
<row r="2"><c r="A2" t="s"><v>2</v></c><c r="C2"><v>536221234</v></c></row>
<row r="3"><c r="C3" t="inlineStr"><is><t>536-22-1235</t></is></c></row>
</sheetData></worksheet>"#;
        let mut used = vec![false; 3];
        assert_eq!(
            sheet_text(sheet, &shared, &mut used),
            "Name\t\tSSN\nJane\t\t536221234\n\t\t536-22-1235\n"
        );
    }

    #[test]
    fn hostile_references_stay_bounded() {
        let sheet = r#"<row><c r="XFD1"><v>1</v></c><c r="ZZZZZ1"><v>2</v></c><c><v>3</v></c></row><c t="s"><v>99</v></c"#;
        let text = sheet_text(sheet, &[], &mut []);
        assert!(text.len() < 300, "{}", text.len());
        assert!(text.contains('1') && text.contains('2') && text.contains('3'));
        assert_eq!(column("A1"), Some(0));
        assert_eq!(column("AA1"), Some(26));
        assert_eq!(column("7"), None);
    }
}
