//! `[[detector]]` and `[[edm]]` objects compiled into the node's
//! [`Scanner`]; each error names the object and key.

use super::Scanner;
use crate::config::objects::{DetectorObject, EdmObject, ObjectError};
use std::collections::HashSet;

/// Checks every custom detector and EDM set (one namespace: a finding
/// names one of them) and builds the scanner the rules and `POST /scan` use.
pub fn compile(detectors: &[DetectorObject], edm: &[EdmObject]) -> Result<Scanner, ObjectError> {
    let mut names = HashSet::new();
    let mut custom = Vec::new();
    for d in detectors {
        let err = ObjectError::of("detector", &d.name);
        if !names.insert(d.name.clone()) {
            return Err(err("name", "defined twice".into()));
        }
        custom.push(compile_detector(d).map_err(|(key, m)| err(key, m))?);
    }
    let mut sets = Vec::new();
    for e in edm {
        let err = ObjectError::of("edm", &e.name);
        if !names.insert(e.name.clone()) {
            return Err(err("name", "defined twice (as a detector or an edm set)".into()));
        }
        sets.push(compile_edm(e).map_err(|(key, m)| err(key, m))?);
    }
    Ok(Scanner::new(custom, sets))
}

/// Compiles the detector for the scanner.
fn compile_detector(d: &DetectorObject) -> Result<sluice_dlp::CustomDetector, (&'static str, String)> {
    let validator = match d.validator.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(sluice_dlp::Validator::parse(v).ok_or_else(|| {
            (
                "validator",
                format!(
                    "unknown validator {v:?} (expected one of {})",
                    sluice_dlp::Validator::NAMES.join(", ")
                ),
            )
        })?),
    };
    let confidence = d
        .confidence
        .parse::<sluice_dlp::Confidence>()
        .map_err(|e| ("confidence", e.to_string()))?;
    sluice_dlp::CustomDetector::new(
        &d.name,
        &d.pattern,
        &d.keywords,
        d.proximity as usize,
        validator,
        confidence,
    )
    .map_err(|e| match e {
        sluice_dlp::CustomError::Name(m) => ("name", m),
        sluice_dlp::CustomError::Pattern(m) => ("pattern", m),
        sluice_dlp::CustomError::Keywords(m) => ("keywords", m),
    })
}

/// Loads the set for the scanner.
fn compile_edm(e: &EdmObject) -> Result<sluice_dlp::EdmSet, (&'static str, String)> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let salt = engine
        .decode(&e.salt)
        .map_err(|error| ("salt", format!("not base64: {error}")))?;
    let raw = engine
        .decode(&e.digests)
        .map_err(|error| ("digests", format!("not base64: {error}")))?;
    if raw.len() % sluice_dlp::DIGEST_LEN != 0 || (raw.len() / sluice_dlp::DIGEST_LEN) as u64 != e.values {
        return Err((
            "digests",
            format!("must be {} digests of {} bytes", e.values, sluice_dlp::DIGEST_LEN),
        ));
    }
    let digests = raw
        .chunks_exact(sluice_dlp::DIGEST_LEN)
        .map(|c| {
            let mut d = [0u8; sluice_dlp::DIGEST_LEN];
            d.copy_from_slice(c);
            d
        })
        .collect();
    let stored = sluice_dlp::EdmDigests {
        salt,
        digests,
        min_len: e.min_len as usize,
        max_len: e.max_len as usize,
        kinds: e.kinds,
    };
    sluice_dlp::EdmSet::new(&e.name, &stored).map_err(|error| ("name", error.to_string()))
}
