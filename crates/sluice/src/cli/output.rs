//! How results are shown: aligned columns for people, pretty JSON for
//! scripts (`--json`).
//!
//! Much of what the node shows came from SMTP clients (EHLO names, headers,
//! addresses, remote replies), so every cell and free text is shown with its
//! control characters escaped (`\x1b`): a client cannot move the cursor,
//! retitle the terminal or fake a line of output.

use super::Failure;
use serde::Serialize;

/// Rows of text printed in aligned columns; the last column is not padded
/// so long error texts do not drag trailing spaces.
pub(crate) struct Table {
    indent: &'static str,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `headers`.
    pub(crate) fn new(headers: &[&str]) -> Table {
        Table {
            indent: "",
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// A table without a header row (key/value blocks, timelines).
    pub(crate) fn bare() -> Table {
        Table {
            indent: "",
            rows: Vec::new(),
        }
    }

    /// Prefixes every line.
    pub(crate) fn indented(mut self, indent: &'static str) -> Table {
        self.indent = indent;
        self
    }

    /// Adds a row; control characters in cells are escaped.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|cell| safe(&cell)).collect());
    }

    /// The lines, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::from(self.indent);
            for (column, cell) in row.iter().enumerate() {
                if column + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let padding = widths[column] - cell.chars().count();
                    line.push_str(cell);
                    line.push_str(&" ".repeat(padding + 2));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `text` with control characters escaped, for a terminal.
pub(crate) fn safe(text: &str) -> String {
    crate::message::escape_controls(text).into_owned()
}

/// Pretty JSON of an API view. JSON escapes C0 controls itself; DEL and
/// the C1 controls (which some terminals obey) are escaped here too.
pub(crate) fn json(value: &impl Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(value)
        .map(|text| {
            let mut text: String = text
                .chars()
                .map(|c| {
                    if c.is_control() && !c.is_ascii_whitespace() {
                        format!("\\u{:04x}", u32::from(c))
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            text.push('\n');
            text
        })
        .map_err(|error| Failure::runtime(format!("cannot render JSON: {error}")))
}

/// `-` for an absent value, so columns stay aligned.
pub(crate) fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(text) if !text.is_empty() => text.to_string(),
        _ => "-".to_string(),
    }
}

/// A size for people: 950 B, 12.3 kB, 4.0 MB (powers of 1000, as sizes are
/// written in the config).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Prints a paged listing as it arrives: a table per page (the header
/// once), or one JSON array written item by item, so a listing of any
/// length never sits whole in memory.
pub(crate) struct PagePrinter {
    json: bool,
    printed: usize,
}

impl PagePrinter {
    pub(crate) fn new(json: bool) -> PagePrinter {
        PagePrinter { json, printed: 0 }
    }

    /// Prints one page; `table` renders it for humans.
    pub(crate) fn page<T: Serialize>(
        &mut self,
        items: &[T],
        table: impl Fn(&[T]) -> String,
    ) -> Result<(), Failure> {
        use std::io::Write;
        if items.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let mut text = String::new();
        if self.json {
            for item in items {
                let item = json(item)?;
                text.push_str(if self.printed == 0 { "[\n" } else { ",\n" });
                for line in item.trim_end().lines() {
                    text.push_str("  ");
                    text.push_str(line);
                    text.push('\n');
                }
                text.pop();
                self.printed += 1;
            }
        } else {
            let rendered = table(items);
            // Later pages repeat no header: the first line of a table is its header.
            let body = if self.printed == 0 {
                rendered.as_str()
            } else {
                rendered.split_once('\n').map_or("", |(_, rest)| rest)
            };
            text.push_str(body);
            self.printed += items.len();
        }
        out.write_all(text.as_bytes())
            .map_err(|error| Failure::runtime(format!("cannot write output: {error}")))
    }

    /// Ends the listing; `empty` renders it when nothing came.
    pub(crate) fn finish(self, empty: impl Fn() -> String) -> Result<(), Failure> {
        if self.json {
            print!("{}", if self.printed == 0 { "[]\n" } else { "\n]\n" });
        } else if self.printed == 0 {
            print!("{}", empty());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut table = Table::new(&["NAME", "TYPE", "NOTE"]);
        table.row(vec!["contoso.test".into(), "authoritative".into(), "".into()]);
        table.row(vec!["a.test".into(), "internal_relay".into(), "x y".into()]);
        assert_eq!(
            table.render(),
            "NAME          TYPE            NOTE\n\
             contoso.test  authoritative\n\
             a.test        internal_relay  x y\n"
        );
    }

    #[test]
    fn bare_indented_table_has_no_header() {
        let mut table = Table::bare().indented("  ");
        table.row(vec!["id:".into(), "Q1".into()]);
        table.row(vec!["message id:".into(), "<m@x>".into()]);
        assert_eq!(table.render(), "  id:          Q1\n  message id:  <m@x>\n");
    }

    #[test]
    fn client_controls_never_reach_the_terminal() {
        let mut table = Table::new(&["HELO"]);
        table.row(vec!["evil\u{1b}]0;owned\u{7}\r\nfake line".into()]);
        assert_eq!(
            table.render(),
            "HELO\nevil\\x1b]0;owned\\x07\\x0d\\x0afake line\n"
        );
        let shown = json(&serde_json::json!({"helo": "a\u{1b}b\u{9b}c\u{7f}"})).unwrap();
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        assert!(shown.contains(r"a\u001bb\u009bc\u007f"), "{shown}");
    }

    #[test]
    fn sizes_read_like_the_config() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1234), "1.2 kB");
        assert_eq!(human_size(35_000_000), "35.0 MB");
    }
}
