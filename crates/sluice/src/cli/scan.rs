//! `sluice scan FILE.eml...`: SPEC section 7 JSON lines, no node needed.

use super::Failure;
use crate::admin::scan::scan_message;
use std::path::PathBuf;

/// Scans each file and prints one JSON object a line, matches masked unless
/// `show_matches`.
pub(crate) fn run(files: &[PathBuf], show_matches: bool) -> Result<(), Failure> {
    let mut unreadable = Vec::new();
    for file in files {
        let raw = match std::fs::read(file) {
            Ok(raw) => raw,
            Err(error) => {
                eprintln!("sluice scan: cannot read {}: {error}", file.display());
                unreadable.push(file.display().to_string());
                continue;
            }
        };
        let mut result = scan_message(&raw, show_matches, &crate::scan::Scanner::default());
        result.file = Some(file.display().to_string());
        let line = serde_json::to_string(&result).map_err(|e| Failure::runtime(e.to_string()))?;
        println!("{line}");
    }
    if unreadable.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{} file(s) could not be read",
            unreadable.len()
        )))
    }
}
