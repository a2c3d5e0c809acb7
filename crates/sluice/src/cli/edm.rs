//! `sluice edm load NAME FILE.csv`: exact data match. The values are hashed
//! here, under a fresh random salt, and only the salted hashes go to the node
//! (and its store); `sluice edm list` shows the sets, `remove` drops one.

use super::client::{segment, ApiClient, ApiError};
use super::output::{json, Table};
use super::{Failure, GlobalArgs, JsonFlag};
use crate::config::objects::EdmObject;
use clap::Subcommand;
use std::path::PathBuf;

/// `sluice edm ...`.
#[derive(Debug, Subcommand)]
pub enum EdmCommand {
    /// Hash every cell of a CSV file (after its header row) into the set
    /// NAME, replacing the set if it exists. Values are single tokens: IDs,
    /// account numbers, email addresses.
    Load {
        /// The set's name: the detector name in findings and rules.
        name: String,
        /// The CSV file.
        file: PathBuf,
        /// The first row is data, not a header.
        #[arg(long)]
        no_header: bool,
    },
    /// The loaded sets (names and sizes, never values).
    List(JsonFlag),
    /// Drop a set.
    Remove {
        /// The set's name.
        name: String,
    },
}

/// The cells of one CSV line: comma-separated, `"..."` quoting with `""`.
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    out.push(cell);
    out
}

pub(crate) fn run(global: &GlobalArgs, command: &EdmCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        EdmCommand::Load {
            name,
            file,
            no_header,
        } => {
            sluice_dlp::check_name(name).map_err(|e| Failure::usage(format!("edm set {e}")))?;
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", file.display())))?;
            let rows = text.lines().skip(usize::from(!no_header));
            let values: Vec<String> = rows.flat_map(|line| cells(line.trim_end_matches('\r'))).collect();
            let salt = sluice_dlp::random_salt().map_err(|e| Failure::runtime(e.to_string()))?;
            let (digests, skipped) = sluice_dlp::EdmDigests::hash(&salt, values.iter().map(String::as_str));
            drop(values);
            let object = EdmObject::from_digests(name, format!("loaded from {}", file.display()), &digests);
            let path = format!("edm/{}", segment(name));
            match client.put(&path, &object) {
                Err(e) if e.is_not_found() => {
                    client
                        .post("edm", &object)
                        .map_err(|e| e.refused_as_invalid("edm set"))?;
                }
                other => {
                    other.map_err(|e| e.refused_as_invalid("edm set"))?;
                }
            }
            println!(
                "{name}: {} distinct values loaded as salted hashes{}",
                object.values,
                if skipped > 0 {
                    format!(" ({skipped} cells with spaces or symbols skipped)")
                } else {
                    String::new()
                }
            );
        }
        EdmCommand::List(flag) => {
            let sets: Vec<EdmObject> = client.get("edm")?;
            if flag.json {
                let summary: Vec<serde_json::Value> = sets
                    .iter()
                    .map(|s| serde_json::json!({"name": s.name, "values": s.values, "loaded": s.loaded, "comment": s.comment}))
                    .collect();
                print!("{}", json(&summary)?);
            } else {
                let mut table = Table::new(&["NAME", "VALUES", "LOADED", "COMMENT"]);
                for s in &sets {
                    table.row(vec![
                        s.name.clone(),
                        s.values.to_string(),
                        s.loaded.clone(),
                        s.comment.clone(),
                    ]);
                }
                print!("{}", table.render());
            }
        }
        EdmCommand::Remove { name } => {
            client
                .delete(&format!("edm/{}", segment(name)))
                .map_err(|e| match e {
                    e @ ApiError::Status { status: 404, .. } => {
                        Failure::runtime(format!("no edm set {name:?}")).with_detail(format!("{e:?}"))
                    }
                    e => Failure::from(e),
                })?;
            println!("{name}: removed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cells;

    #[test]
    fn csv_cells_with_quotes() {
        assert_eq!(cells("a,b,,c"), ["a", "b", "", "c"]);
        assert_eq!(
            cells(r#""x, y",z,"he said ""hi""""#),
            ["x, y", "z", r#"he said "hi""#]
        );
    }
}
