//! Exact data match: the scanner reports any token of a text that is one of
//! a listed set of values (account numbers, customer emails, IDs), knowing
//! only salted hashes of the values.
//!
//! A value is normalised (trimmed, ASCII lower case) and hashed as
//! HMAC-SHA256 keyed by the set's random salt, truncated to 128 bits. The set
//! keeps the digests in a hash set, plus the shortest and longest value
//! length and which character kinds values contain, so a text's tokens are
//! hashed only when they could be a value, and each costs one lookup however
//! many values are listed. Tokens are runs of letters, digits and `@._+-`
//! (trailing `.`, `_`, `-` dropped), so values are single tokens: IDs, account
//! numbers, email addresses.

use std::collections::HashSet;
use std::sync::Arc;

use ring::hmac;

use crate::finding::{Confidence, Detector, Finding, Location};

/// Bytes of HMAC-SHA256 kept per value.
pub const DIGEST_LEN: usize = 16;

/// One value's digest.
pub type Digest = [u8; DIGEST_LEN];

/// Character kinds of a value, as a bit set: digits, letters, `@`, other.
fn kinds(value: &[u8]) -> u8 {
    value.iter().fold(0, |k, &c| {
        k | match c {
            b'0'..=b'9' => 1,
            b'a'..=b'z' | b'A'..=b'Z' => 2,
            b'@' => 4,
            _ => 8,
        }
    })
}

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'@' | b'.' | b'_' | b'+' | b'-')
}

/// The normal form of a value or token: trimmed, ASCII lower case.
pub fn normalize(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

/// A random salt for a new set, from the operating system's generator.
pub fn random_salt() -> Result<[u8; 16], EdmError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| EdmError("no random numbers from the operating system".into()))?;
    Ok(salt)
}

/// Why a set cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EdmError(pub String);

/// What is stored about the listed values: never the values themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdmDigests {
    /// The salt (the HMAC key).
    pub salt: Vec<u8>,
    /// Digests, one per distinct value.
    pub digests: Vec<Digest>,
    /// Shortest and longest normalised value, in bytes.
    pub min_len: usize,
    /// See `min_len`.
    pub max_len: usize,
    /// Character-kind sets that occur among the values (bit `k` set: some
    /// value has kinds `k`).
    pub kinds: u16,
}

impl EdmDigests {
    /// Hashes `values` under `salt`. Values that are empty or not a single
    /// token after normalisation are skipped (and counted in the second
    /// return value).
    pub fn hash<'a>(salt: &[u8], values: impl IntoIterator<Item = &'a str>) -> (EdmDigests, usize) {
        let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
        let mut seen = HashSet::new();
        let (mut min_len, mut max_len, mut kinds_seen, mut skipped) = (usize::MAX, 0, 0u16, 0);
        for value in values {
            let v = normalize(value);
            if v.is_empty() || !v.bytes().all(token_char) {
                skipped += usize::from(!v.is_empty());
                continue;
            }
            if seen.insert(digest(&key, v.as_bytes())) {
                min_len = min_len.min(v.len());
                max_len = max_len.max(v.len());
                kinds_seen |= 1 << kinds(v.as_bytes());
            }
        }
        let digests = seen.into_iter().collect::<Vec<_>>();
        let min_len = if digests.is_empty() { 0 } else { min_len };
        (
            EdmDigests {
                salt: salt.to_vec(),
                digests,
                min_len,
                max_len,
                kinds: kinds_seen,
            },
            skipped,
        )
    }
}

fn digest(key: &hmac::Key, value: &[u8]) -> Digest {
    let tag = hmac::sign(key, value);
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&tag.as_ref()[..DIGEST_LEN]);
    d
}

/// A loaded set, ready to scan with.
#[derive(Clone)]
pub struct EdmSet {
    name: Arc<str>,
    key: hmac::Key,
    digests: HashSet<Digest>,
    min_len: usize,
    max_len: usize,
    kinds: u16,
}

impl std::fmt::Debug for EdmSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdmSet")
            .field("name", &self.name)
            .field("values", &self.digests.len())
            .finish()
    }
}

impl EdmSet {
    /// A set named `name` (checked as a custom detector name) from stored digests.
    pub fn new(name: &str, stored: &EdmDigests) -> Result<Self, EdmError> {
        crate::custom::check_name(name).map_err(|e| EdmError(e.to_string()))?;
        if stored.salt.len() < 16 {
            return Err(EdmError("salt: must be at least 16 bytes".into()));
        }
        Ok(EdmSet {
            name: name.into(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &stored.salt),
            digests: stored.digests.iter().copied().collect(),
            min_len: stored.min_len,
            max_len: stored.max_len,
            kinds: stored.kinds,
        })
    }

    /// The set's name (the detector name of its findings).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many distinct values the set lists.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// The set lists nothing.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Findings of listed values among the tokens of one text.
    pub(crate) fn scan(&self, text: &str, location: &Location, out: &mut Vec<Finding>) {
        if self.digests.is_empty() {
            return;
        }
        let b = text.as_bytes();
        let mut lower = Vec::with_capacity(self.max_len);
        let mut i = 0;
        while i < b.len() {
            if !token_char(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && token_char(b[i]) {
                i += 1;
            }
            let mut end = i;
            while end > start && matches!(b[end - 1], b'.' | b'_' | b'-') {
                end -= 1;
            }
            let mut s = start;
            while s < end && matches!(b[s], b'.' | b'_' | b'-' | b'+') {
                s += 1;
            }
            let token = &b[s..end];
            if token.len() < self.min_len
                || token.len() > self.max_len
                || self.kinds & (1 << kinds(token)) == 0
            {
                continue;
            }
            lower.clear();
            lower.extend(token.iter().map(u8::to_ascii_lowercase));
            if self.digests.contains(&digest(&self.key, &lower)) {
                out.push(Finding {
                    detector: Detector::Custom,
                    matched: text[s..end].to_owned(),
                    confidence: Confidence::High,
                    location: location.clone(),
                    test_value: false,
                    name: Some(self.name.clone()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(set: &EdmSet, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        set.scan(text, &Location::Body, &mut out);
        assert!(out
            .iter()
            .all(|f| f.name() == set.name() && f.confidence == Confidence::High));
        out.into_iter().map(|f| f.matched).collect()
    }

    #[test]
    fn listed_values_match_as_whole_tokens_only() {
        let salt = [7u8; 16];
        let (stored, skipped) = EdmDigests::hash(
            &salt,
            [
                "ACC-0042-7781",
                " jane.doe@example.com ",
                "998877665",
                "",
                "two words",
            ],
        );
        assert_eq!((stored.digests.len(), skipped), (3, 1));
        // Never the values: only digests of 16 bytes.
        assert!(stored.digests.iter().all(|d| d.len() == DIGEST_LEN));
        let set = EdmSet::new("customer_data", &stored).unwrap();
        assert_eq!(
            scan(
                &set,
                "Account acc-0042-7781, mail Jane.Doe@Example.com. Ref 998877665."
            ),
            ["acc-0042-7781", "Jane.Doe@Example.com", "998877665"]
        );
        assert!(scan(&set, "x998877665 9988776650 ACC-0042-778 jane.doe@example.org").is_empty());
        // Another salt, other digests: the same values do not match.
        let (other, _) = EdmDigests::hash(&[8u8; 16], ["998877665"]);
        assert!(!stored.digests.contains(&other.digests[0]));
        assert!(EdmSet::new("Bad Name", &stored).is_err());
        assert!(EdmSet::new(
            "short_salt",
            &EdmDigests {
                salt: vec![1; 4],
                ..stored
            }
        )
        .is_err());
    }

    #[test]
    fn many_values_load_and_match() {
        // A million rows are timed in the benchmark; here, a smaller set.
        let values: Vec<String> = (0..100_000u32)
            .map(|i| format!("{:09}", 100_000_000 + i * 7))
            .collect();
        let (stored, _) = EdmDigests::hash(&random_salt().unwrap(), values.iter().map(String::as_str));
        assert_eq!(stored.digests.len(), 100_000);
        let set = EdmSet::new("accounts", &stored).unwrap();
        assert_eq!(scan(&set, "pay 100000007 and 100000008"), ["100000007"]);
    }
}
