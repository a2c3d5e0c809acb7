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
//! Found on demand from the value's line, not by indexing the whole text.

use std::cell::Cell;

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
    /// End of the last line known to belong to the table.
    end: usize,
    shape: Shape,
    /// The first line names columns. A block without a header is remembered
    /// too, so a headerless CSV is walked up once, not once per value.
    named: bool,
}

/// A line's separator and how many it has outside quotes (tabs: any number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    sep: u8,
    count: usize,
}

/// Finds the table around a value on demand, from the value's line upwards,
/// and remembers the last table found: values come in text order, so a long
/// CSV is walked once, and prose (no separators on the value's line) costs one
/// look at one line.
pub(super) struct TableIndex {
    last: Cell<Option<Block>>,
    /// The last value's line, `(start, end)`, with `None` for a line longer
    /// than [`MAX_LINE`]: values on one line (or one endless line) are
    /// looked up without searching for its ends again.
    line: Cell<Option<KnownLine>>,
    /// The last line asked about (its start) and its table, if it is a body
    /// row of one with a header: several values on a line, and several rules
    /// for each value, ask about one line in turn.
    row: Cell<Option<(usize, Option<Row>)>>,
}

/// A body row's separator shape and its table.
type Row = (Shape, Block);

/// A stretch `lo..hi` without a newline and the line it lies on (`None`: a
/// line longer than [`MAX_LINE`]).
type KnownLine = (usize, usize, Option<(usize, usize)>);

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

/// The shape of a table-like line, in one pass over it.
fn shape(line: &[u8]) -> Option<Shape> {
    // Most lines of prose hold none of the separators: one vector search
    // says so, where the count below takes a branch per byte.
    memchr::memchr3(b'\t', b',', b';', line)?;
    let (mut tabs, mut commas, mut semis, mut quoted) = (0, 0, 0, false);
    for &c in line {
        match c {
            b'\t' => tabs += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semis += 1,
            _ => {}
        }
    }
    if tabs > 0 {
        Some(Shape { sep: b'\t', count: 0 })
    } else if commas >= 2 {
        Some(Shape {
            sep: b',',
            count: commas,
        })
    } else if semis >= 2 {
        Some(Shape {
            sep: b';',
            count: semis,
        })
    } else {
        None
    }
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

/// Longest line read as a table row: a longer one is prose or data without
/// rows, and searching further for its ends would cost a pass per value.
const MAX_LINE: usize = 4096;

/// Start of the line holding `pos`, if within [`MAX_LINE`].
fn line_start(b: &[u8], pos: usize) -> Option<usize> {
    let lo = pos.saturating_sub(MAX_LINE);
    match memchr::memrchr(b'\n', &b[lo..pos]) {
        Some(k) => Some(lo + k + 1),
        None => (lo == 0).then_some(0),
    }
}

/// End (the `\n` or the end of the text) of the line holding `pos`, if within
/// [`MAX_LINE`].
fn line_end(b: &[u8], pos: usize) -> Option<usize> {
    let hi = (pos + MAX_LINE).min(b.len());
    match memchr::memchr(b'\n', &b[pos..hi]) {
        Some(k) => Some(pos + k),
        None => (hi == b.len()).then_some(b.len()),
    }
}

impl TableIndex {
    pub(super) fn new() -> Self {
        TableIndex {
            last: Cell::new(None),
            line: Cell::new(None),
            row: Cell::new(None),
        }
    }

    /// The line holding `start..end`, reusing the last answer when the value
    /// lies between the newlines (or the no-newline stretch) found last time.
    fn line_of(&self, b: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
        if let Some((lo, hi, line)) = self.line.get() {
            if lo <= start && end <= hi {
                return line;
            }
        }
        let ls = line_start(b, start);
        let le = line_end(b, end);
        // The stretch known to hold no newline: from the one before (or the
        // search's reach) to the one after.
        let lo = ls.unwrap_or(start.saturating_sub(MAX_LINE));
        let hi = le.unwrap_or((end + MAX_LINE).min(b.len()));
        let line = ls.zip(le);
        self.line.set(Some((lo, hi, line)));
        line
    }

    /// The table whose body holds the line `ls..le` of shape `want`.
    fn block(&self, b: &[u8], ls: usize, le: usize, want: Shape) -> Option<Block> {
        if let Some(mut blk) = self.last.get().filter(|blk| blk.shape == want && blk.start <= ls) {
            if ls <= blk.end {
                return Some(blk);
            }
            // Extend the known table down to this line if every line between
            // has its shape.
            let mut pos = blk.end + 1;
            while pos < ls {
                match line_end(b, pos) {
                    Some(e) if shape(&b[pos..e]) == Some(want) => pos = e + 1,
                    _ => break,
                }
            }
            if pos == ls {
                blk.end = le;
                self.last.set(Some(blk));
                return Some(blk);
            }
        }
        // Walk up to the first line of this shape: the header.
        let mut top = ls;
        while top > 0 {
            match line_start(b, top - 1) {
                Some(prev) if shape(&b[prev..top - 1]) == Some(want) => top = prev,
                _ => break,
            }
        }
        let header_end = line_end(b, top)?;
        if top == ls {
            return None;
        }
        let blk = Block {
            start: top,
            header_end,
            end: le,
            shape: want,
            named: header_ok(&b[top..header_end], want.sep),
        };
        self.last.set(Some(blk));
        Some(blk)
    }

    /// The header cell (byte range) above a value at `start..end`, when the
    /// value is a cell of a table's body row. `None` outside tables, in the
    /// header row, and for long cells (prose that happens to sit in a table).
    pub(super) fn header_cell(&self, b: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
        let (ls, le) = self.line_of(b, start, end)?;
        let line = &b[ls..le];
        let (want, blk) = match self.row.get() {
            Some((at, row)) if at == ls => row?,
            _ => {
                let row = shape(line).and_then(|want| {
                    self.block(b, ls, le, want)
                        .filter(|blk| blk.named && blk.start < ls)
                        .map(|blk| (want, blk))
                });
                self.row.set(Some((ls, row)));
                row?
            }
        };
        let sep = want.sep;
        let at = start - ls;
        let col = separators(line, sep).take_while(|&p| p < at).count();
        let cell_lo = separators(line, sep)
            .take_while(|&p| p < at)
            .last()
            .map_or(0, |p| p + 1);
        let cell_hi = separators(line, sep).find(|&p| p >= at).unwrap_or(line.len());
        if cell_hi - cell_lo > MAX_VALUE_CELL {
            return None;
        }
        let header = &b[blk.start..blk.header_end];
        let lo = if col == 0 {
            0
        } else {
            separators(header, sep).nth(col - 1)? + 1
        };
        let hi = separators(header, sep).nth(col).unwrap_or(header.len());
        Some((blk.start + lo, blk.start + hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of<'a>(text: &'a str, value: &str) -> Option<&'a str> {
        let s = text.find(value).unwrap();
        let idx = TableIndex::new();
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
