//! Tables in a decoded text: which column header sits above a number.
//!
//! Extraction writes table rows as lines and cells separated by a tab (HTML
//! `<td>`, docx `<w:tc>`, xlsx cells); CSV keeps its commas or semicolons. A
//! table is two or more consecutive lines of the same shape: tab-separated, or
//! with the same number (at least two) of commas or semicolons outside
//! quotes. Its first line is the header. A value deep in a spreadsheet is far
//! more than 300 characters from the `SSN` at the top of its column; the
//! header cell of its own column is the label that counts, and the labels of
//! the other columns do not.
//!
//! Built lazily, once per text, the first time a candidate asks.

/// Header cells longer than this, or of more words, are prose, not column
/// names.
const MAX_HEADER_CELL: usize = 40;
const MAX_HEADER_WORDS: usize = 3;

/// A cell longer than this holds prose, not one value under a header.
const MAX_VALUE_CELL: usize = 96;

#[derive(Debug, Clone, Copy)]
struct Block {
    start: usize,
    /// End of the header line (its `\n` or the end of the text).
    header_end: usize,
    end: usize,
    sep: u8,
}

pub(super) struct TableIndex {
    blocks: Vec<Block>,
}

/// Separator positions of one line outside double quotes.
fn separators(line: &[u8], sep: u8) -> impl Iterator<Item = usize> + '_ {
    let mut quoted = false;
    line.iter().enumerate().filter_map(move |(i, &c)| {
        if c == b'"' {
            quoted = !quoted;
        }
        (c == sep && !quoted).then_some(i)
    })
}

/// `(separator, count)` of a table-like line.
fn shape(line: &[u8]) -> Option<(u8, usize)> {
    if line.contains(&b'\t') {
        return Some((b'\t', 0));
    }
    for sep in [b',', b';'] {
        let n = separators(line, sep).count();
        if n >= 2 {
            return Some((sep, n));
        }
    }
    None
}

/// A header line names its columns: short cells of a few words, and for CSV
/// no digits (a line of data is not a header).
fn header_ok(line: &[u8], sep: u8) -> bool {
    let mut from = 0;
    let cells = separators(line, sep).chain(std::iter::once(line.len()));
    for to in cells {
        let cell = &line[from..to];
        let words = cell
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
            .count();
        if cell.len() > MAX_HEADER_CELL || words > MAX_HEADER_WORDS {
            return false;
        }
        from = to + 1;
    }
    sep == b'\t' || !line.iter().any(u8::is_ascii_digit)
}

impl TableIndex {
    pub(super) fn build(b: &[u8]) -> Self {
        let mut blocks = Vec::new();
        // The block being read: (block, shape count, lines).
        let mut cur: Option<(Block, usize, usize)> = None;
        let mut pos = 0;
        while pos <= b.len() {
            let end = memchr::memchr(b'\n', &b[pos..]).map_or(b.len(), |k| pos + k);
            let line = &b[pos..end];
            let this = shape(line);
            let extends = match (&cur, this) {
                (Some((blk, n, _)), Some((sep, m))) => blk.sep == sep && *n == m,
                _ => false,
            };
            if extends {
                if let Some((blk, _, lines)) = &mut cur {
                    blk.end = end;
                    *lines += 1;
                }
            } else {
                if let Some((blk, _, lines)) = cur.take() {
                    if lines >= 2 {
                        blocks.push(blk);
                    }
                }
                cur = this.filter(|&(sep, _)| header_ok(line, sep)).map(|(sep, n)| {
                    let blk = Block {
                        start: pos,
                        header_end: end,
                        end,
                        sep,
                    };
                    (blk, n, 1)
                });
            }
            pos = end + 1;
        }
        if let Some((blk, _, lines)) = cur {
            if lines >= 2 {
                blocks.push(blk);
            }
        }
        TableIndex { blocks }
    }

    /// The header cell (byte range) above a value at `start..end`, when the
    /// value is a cell of a table's body row. `None` outside tables, in the
    /// header row, and for long cells (prose that happens to sit in a table).
    pub(super) fn header_cell(&self, b: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
        let i = self.blocks.partition_point(|blk| blk.end < start);
        let blk = self.blocks.get(i)?;
        if start <= blk.header_end || start < blk.start {
            return None;
        }
        let line_start =
            memchr::memrchr(b'\n', &b[blk.start..start]).map_or(blk.start, |k| blk.start + k + 1);
        let line_end = memchr::memchr(b'\n', &b[end..]).map_or(b.len(), |k| end + k);
        let line = &b[line_start..line_end];
        let at = start - line_start;
        let col = separators(line, blk.sep).take_while(|&p| p < at).count();
        let cell_lo = separators(line, blk.sep)
            .take_while(|&p| p < at)
            .last()
            .map_or(0, |p| p + 1);
        let cell_hi = separators(line, blk.sep).find(|&p| p >= at).unwrap_or(line.len());
        if cell_hi - cell_lo > MAX_VALUE_CELL {
            return None;
        }
        let header = &b[blk.start..blk.header_end];
        let lo = if col == 0 {
            0
        } else {
            separators(header, blk.sep).nth(col - 1)? + 1
        };
        let hi = separators(header, blk.sep).nth(col).unwrap_or(header.len());
        Some((blk.start + lo, blk.start + hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of<'a>(text: &'a str, value: &str) -> Option<&'a str> {
        let s = text.find(value).unwrap();
        let idx = TableIndex::build(text.as_bytes());
        idx.header_cell(text.as_bytes(), s, s + value.len())
            .map(|(lo, hi)| &text[lo..hi])
    }

    #[test]
    fn columns_of_csv_and_tab_tables() {
        let csv = "name,ssn,account\nJane,536221234,123456789\nJo,536221235,\"1,2\"\n";
        assert_eq!(header_of(csv, "536221234"), Some("ssn"));
        assert_eq!(header_of(csv, "123456789"), Some("account"));
        assert_eq!(header_of(csv, "536221235"), Some("ssn"));
        let tsv = "intro line\n\tName\tSSN\t\n\tJane\t536-22-1234\t\n";
        assert_eq!(header_of(tsv, "536-22-1234"), Some("SSN"));
        assert_eq!(header_of(tsv, "Name"), None, "the header row has no header");
    }

    #[test]
    fn prose_is_not_a_table() {
        let prose = "Please find the invoice, attached, today.\nMy SSN is 536-22-1234, thanks, bye.\n";
        assert_eq!(header_of(prose, "536-22-1234"), None);
        let one_line = "a,b,c 536221234";
        assert_eq!(header_of(one_line, "536221234"), None);
    }
}
