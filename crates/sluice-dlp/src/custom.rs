//! Detectors defined by an administrator (`[[detector]]` objects): a
//! linear-time regular expression, optional keywords that must lie within a
//! number of characters, an optional checksum, and the confidence to report.
//!
//! The `regex` crate guarantees matching in time linear in the text, whatever
//! the pattern; compiled size is bounded so a hostile pattern cannot take the
//! node's memory. A custom detector makes one pass of its own over each
//! decoded text; its findings carry its name.

use std::sync::Arc;

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder};

use crate::finding::{Confidence, Detector, Finding, Location};
use crate::validate;

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 1024;

/// Compiled-program budget per pattern (the regex crate's size limit).
const COMPILED_LIMIT: usize = 1 << 20;

/// Widest keyword window accepted, in characters.
pub const MAX_PROXIMITY: usize = 10_000;

/// Longest match reported; longer matches are not values but text.
const MAX_MATCH: usize = 256;

/// A checksum a custom detector's matches must pass. Letters and digits of the
/// match are checked; separators are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// Luhn (cards, IMEI, Canadian SIN).
    Luhn,
    /// ISO 7064 MOD 97-10: letters count 10-35, the value mod 97 is 1; a value
    /// starting with two letters and two digits is read as an IBAN (first four
    /// characters moved to the end).
    Mod97,
    /// ABA routing number 3-7-1 checksum and prefix ranges.
    Aba,
    /// Verhoeff (Aadhaar and others).
    Verhoeff,
    /// US SSN area, group and serial rules.
    UsSsn,
}

impl Validator {
    /// The names used in `[[detector]] validator = "..."`.
    pub const NAMES: [&'static str; 5] = ["luhn", "mod97", "aba", "verhoeff", "us_ssn"];

    /// Parses a validator name.
    pub fn parse(name: &str) -> Option<Validator> {
        match name {
            "luhn" => Some(Validator::Luhn),
            "mod97" => Some(Validator::Mod97),
            "aba" => Some(Validator::Aba),
            "verhoeff" => Some(Validator::Verhoeff),
            "us_ssn" => Some(Validator::UsSsn),
            _ => None,
        }
    }

    fn check(self, matched: &str) -> bool {
        let chars: Vec<u8> = matched
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let digits_only = chars.iter().all(u8::is_ascii_digit);
        match self {
            Validator::Luhn => digits_only && validate::luhn(&chars),
            Validator::Aba => digits_only && validate::aba_valid(&chars),
            Validator::Verhoeff => digits_only && validate::verhoeff(&chars),
            Validator::UsSsn => {
                digits_only && chars.len() == 9 && validate::ssn_valid(&chars[..3], &chars[3..5], &chars[5..])
            }
            Validator::Mod97 => mod97(&chars),
        }
    }
}

fn mod97(chars: &[u8]) -> bool {
    if chars.len() < 2 {
        return false;
    }
    let iban = chars.len() > 4
        && chars[..2].iter().all(u8::is_ascii_uppercase)
        && chars[2..4].iter().all(u8::is_ascii_digit);
    let (head, tail) = if iban {
        chars.split_at(4)
    } else {
        chars.split_at(0)
    };
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// Why a custom detector cannot be built. The text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomError {
    /// The name is empty, not snake_case, or a built-in detector's.
    #[error("name: {0}")]
    Name(String),
    /// The pattern does not compile or is too large.
    #[error("pattern: {0}")]
    Pattern(String),
    /// Keywords or proximity out of bounds.
    #[error("keywords: {0}")]
    Keywords(String),
}

/// Checks a detector name: snake_case (`[a-z][a-z0-9_]*`, at most 64
/// characters), not a built-in detector's.
pub fn check_name(name: &str) -> Result<(), CustomError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if !ok {
        return Err(CustomError::Name(format!(
            "{name:?} must be snake_case ([a-z][a-z0-9_]*, at most 64 characters)"
        )));
    }
    if name.parse::<Detector>().is_ok() || name == "custom" {
        return Err(CustomError::Name(format!("{name:?} is a built-in detector")));
    }
    Ok(())
}

/// A compiled custom detector.
#[derive(Debug, Clone)]
pub struct CustomDetector {
    name: Arc<str>,
    pattern: Regex,
    keywords: Option<AhoCorasick>,
    proximity: usize,
    validator: Option<Validator>,
    confidence: Confidence,
}

impl CustomDetector {
    /// Compiles a detector. With keywords, a match counts only when one of
    /// them (case-insensitive, whole word) lies within `proximity` characters.
    pub fn new(
        name: &str,
        pattern: &str,
        keywords: &[String],
        proximity: usize,
        validator: Option<Validator>,
        confidence: Confidence,
    ) -> Result<Self, CustomError> {
        check_name(name)?;
        if pattern.is_empty() || pattern.len() > MAX_PATTERN {
            return Err(CustomError::Pattern(format!("must be 1 to {MAX_PATTERN} bytes")));
        }
        let pattern = RegexBuilder::new(pattern)
            .size_limit(COMPILED_LIMIT)
            .dfa_size_limit(COMPILED_LIMIT)
            .build()
            .map_err(|e| {
                CustomError::Pattern(e.to_string().lines().last().unwrap_or("").trim().to_string())
            })?;
        if pattern.is_match("") {
            return Err(CustomError::Pattern("matches the empty string".into()));
        }
        if proximity > MAX_PROXIMITY {
            return Err(CustomError::Keywords(format!(
                "proximity must be at most {MAX_PROXIMITY}"
            )));
        }
        let keywords = keywords
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .collect::<Vec<_>>();
        let keywords = if keywords.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&keywords)
                    .map_err(|e| CustomError::Keywords(e.to_string()))?,
            )
        };
        Ok(CustomDetector {
            name: name.into(),
            pattern,
            keywords,
            proximity,
            validator,
            confidence,
        })
    }

    /// The detector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Findings of this detector in one decoded text.
    pub(crate) fn scan(&self, text: &str, location: &Location, out: &mut Vec<Finding>) {
        // Keyword positions are found once per text, only when a match needs them.
        let mut keyword_at: Option<Vec<usize>> = None;
        for m in self.pattern.find_iter(text) {
            let matched = m.as_str();
            if matched.len() > MAX_MATCH || self.validator.is_some_and(|v| !v.check(matched)) {
                continue;
            }
            if let Some(ac) = &self.keywords {
                let at = keyword_at.get_or_insert_with(|| {
                    let b = text.as_bytes();
                    ac.find_overlapping_iter(text)
                        .filter(|k| {
                            let before = k.start().checked_sub(1).map(|i| b[i]);
                            let after = b.get(k.end()).copied();
                            !before.is_some_and(|c| c.is_ascii_alphanumeric())
                                && !after.is_some_and(|c| c.is_ascii_alphanumeric())
                        })
                        .map(|k| k.start())
                        .collect()
                });
                let (lo, hi) = char_window(text, m.start(), m.end(), self.proximity);
                let i = at.partition_point(|&s| s < lo);
                if at.get(i).is_none_or(|&s| s >= hi) {
                    continue;
                }
            }
            out.push(Finding {
                detector: Detector::Custom,
                matched: matched.to_owned(),
                confidence: self.confidence,
                location: location.clone(),
                test_value: false,
                name: Some(self.name.clone()),
            });
        }
    }
}

/// Byte range reaching `chars` characters before `start` and after `end`.
pub(crate) fn char_window(text: &str, start: usize, end: usize, chars: usize) -> (usize, usize) {
    let lo = text[..start]
        .char_indices()
        .rev()
        .take(chars)
        .last()
        .map_or(start, |(i, _)| i);
    let hi = text[end..]
        .char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| end + i);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(d: &CustomDetector, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        d.scan(text, &Location::Body, &mut out);
        assert!(out
            .iter()
            .all(|f| f.name() == d.name() && f.detector == Detector::Custom));
        out.into_iter().map(|f| f.matched).collect()
    }

    #[test]
    fn pattern_keywords_and_validator() {
        let employee =
            CustomDetector::new("employee_id", r"\bEMP-\d{6}\b", &[], 0, None, Confidence::High).unwrap();
        assert_eq!(
            scan(&employee, "ids EMP-123456, EMP-12345 and XEMP-123456"),
            ["EMP-123456"]
        );

        let card = CustomDetector::new(
            "loyalty_card",
            r"\b\d{4} \d{4} \d{4} \d{4}\b",
            &["loyalty".into(), "member card".into()],
            50,
            Some(Validator::Luhn),
            Confidence::Medium,
        )
        .unwrap();
        assert_eq!(
            scan(&card, "Loyalty number: 4111 1111 1111 1111"),
            ["4111 1111 1111 1111"]
        );
        assert!(
            scan(&card, "Loyalty number: 4111 1111 1111 1112").is_empty(),
            "Luhn"
        );
        let far = format!("loyalty {} 4111 1111 1111 1111", "x".repeat(60));
        assert!(scan(&card, &far).is_empty(), "keyword too far");
        assert!(
            scan(&card, "disloyalty 4111 1111 1111 1111").is_empty(),
            "whole words"
        );

        let iban = CustomDetector::new(
            "acct",
            r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}",
            &[],
            0,
            Some(Validator::Mod97),
            Confidence::High,
        )
        .unwrap();
        assert_eq!(
            scan(&iban, "GB82WEST12345698765432 GB82WEST12345698765431"),
            ["GB82WEST12345698765432"]
        );
    }

    #[test]
    fn bad_definitions_are_refused() {
        let new =
            |name: &str, pattern: &str| CustomDetector::new(name, pattern, &[], 0, None, Confidence::Low);
        assert!(matches!(new("Employee", "x"), Err(CustomError::Name(_))));
        assert!(matches!(new("credit_card", "x"), Err(CustomError::Name(_))));
        assert!(matches!(new("e", "("), Err(CustomError::Pattern(_))));
        assert!(
            matches!(new("e", "a*"), Err(CustomError::Pattern(_))),
            "empty match"
        );
        assert!(
            matches!(new("e", r"\w{1000}{1000}"), Err(CustomError::Pattern(_))),
            "too big"
        );
        assert!(matches!(
            new("e", &"a".repeat(2000)),
            Err(CustomError::Pattern(_))
        ));
        assert!(matches!(
            CustomDetector::new("e", "x", &[], MAX_PROXIMITY + 1, None, Confidence::Low),
            Err(CustomError::Keywords(_))
        ));
        assert_eq!(Validator::parse("luhn"), Some(Validator::Luhn));
        assert_eq!(Validator::parse("crc"), None);
    }
}
