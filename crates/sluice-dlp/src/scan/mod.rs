//! One pass over one decoded text: every detector at once.
//!
//! Input: a `&str` that is already decoded (transfer encoding, charset,
//! HTML-to-text) and the [`Location`] it came from. Output: findings whose
//! `matched` is a slice of that text, in text order.
//!
//! How: one pass of a case-insensitive aho-corasick automaton finds the literal
//! triggers (vendor prefixes, `-----BEGIN`, `eyJ`, `@`, password and AWS secret
//! keywords) and the supporting keywords together, and a digit-run scanner
//! walks the digits (cards, SSNs, IBANs, ABA, phones). Only candidates are
//! validated, so text without candidates costs two linear scans and nothing
//! more.
//!
//! Never: logs, allocates per byte, or rescans the text per detector.

mod dob;
mod email;
mod keywords;
mod literal_table;
mod numbers;
mod password;
mod secrets;
mod tables;

use std::cell::{Cell, OnceCell};
use std::cmp::Reverse;
use std::sync::LazyLock;

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{AhoCorasick, MatchKind};

use crate::finding::{Confidence, Detector, Finding, Location};
use keywords::{Keyword, KeywordIndex, KEYWORDS, LABELS};
use literal_table::{Table, LANES};
use tables::TableIndex;

/// Characters either side of a match in which a keyword counts (Purview's
/// `patternsProximity="300"`).
const PROXIMITY: usize = 300;

/// A label this close before a number names it (`Order #`, `SSN:`, `Tel.`).
const LABEL_REACH: usize = 40;

/// What the surroundings say a number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// A label of the detector's own kind names it.
    For,
    /// Another label names it (`invoice 536-22-1234`, an `account` column).
    Against,
    /// Nothing either way.
    Silent,
}

/// What a literal trigger asks the scanner to check.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    AwsKeyId,
    GithubToken,
    GithubPat,
    Slack,
    Stripe,
    Google,
    PemBegin,
    Jwt,
    At,
    PasswordKeyword,
    AwsSecretKeyword,
    DobLabel,
    AzureAccountKey,
    AzureKeyKeyword,
    GcpKeyId,
    OpenAi,
    Npm,
    GenericKeyName,
}

const TRIGGERS: &[(&str, Trigger)] = &[
    ("AKIA", Trigger::AwsKeyId),
    ("ASIA", Trigger::AwsKeyId),
    ("ABIA", Trigger::AwsKeyId),
    ("ACCA", Trigger::AwsKeyId),
    ("A3T", Trigger::AwsKeyId),
    ("ghp_", Trigger::GithubToken),
    ("gho_", Trigger::GithubToken),
    ("ghu_", Trigger::GithubToken),
    ("ghs_", Trigger::GithubToken),
    ("ghr_", Trigger::GithubToken),
    ("github_pat_", Trigger::GithubPat),
    ("xoxa-", Trigger::Slack),
    ("xoxb-", Trigger::Slack),
    ("xoxp-", Trigger::Slack),
    ("xoxo-", Trigger::Slack),
    ("xoxr-", Trigger::Slack),
    ("xoxs-", Trigger::Slack),
    ("sk_live_", Trigger::Stripe),
    ("rk_live_", Trigger::Stripe),
    ("sk_test_", Trigger::Stripe),
    ("rk_test_", Trigger::Stripe),
    ("AIza", Trigger::Google),
    ("-----BEGIN", Trigger::PemBegin),
    ("eyJ", Trigger::Jwt),
    ("@", Trigger::At),
    ("password", Trigger::PasswordKeyword),
    ("passwd", Trigger::PasswordKeyword),
    ("pwd", Trigger::PasswordKeyword),
    ("passphrase", Trigger::PasswordKeyword),
    ("secret", Trigger::PasswordKeyword),
    ("passwort", Trigger::PasswordKeyword),
    ("kennwort", Trigger::PasswordKeyword),
    ("contraseña", Trigger::PasswordKeyword),
    ("mot de passe", Trigger::PasswordKeyword),
    ("senha", Trigger::PasswordKeyword),
    ("aws_secret_access_key", Trigger::AwsSecretKeyword),
    ("secret_access_key", Trigger::AwsSecretKeyword),
    ("secretaccesskey", Trigger::AwsSecretKeyword),
    ("secret access key", Trigger::AwsSecretKeyword),
    ("aws_secret_key", Trigger::AwsSecretKeyword),
    ("aws_secret", Trigger::AwsSecretKeyword),
    ("aws secret", Trigger::AwsSecretKeyword),
    ("date of birth", Trigger::DobLabel),
    ("birth date", Trigger::DobLabel),
    ("birthdate", Trigger::DobLabel),
    ("birthday", Trigger::DobLabel),
    ("dob", Trigger::DobLabel),
    ("d.o.b.", Trigger::DobLabel),
    ("born", Trigger::DobLabel),
    ("geburtsdatum", Trigger::DobLabel),
    ("geboren am", Trigger::DobLabel),
    ("fecha de nacimiento", Trigger::DobLabel),
    ("date de naissance", Trigger::DobLabel),
    ("né le", Trigger::DobLabel),
    ("née le", Trigger::DobLabel),
    ("data di nascita", Trigger::DobLabel),
    ("data de nascimento", Trigger::DobLabel),
    ("geboortedatum", Trigger::DobLabel),
    ("生年月日", Trigger::DobLabel),
    ("出生日期", Trigger::DobLabel),
    ("accountkey=", Trigger::AzureAccountKey),
    ("azure_storage_key", Trigger::AzureKeyKeyword),
    ("azure_storage_account_key", Trigger::AzureKeyKeyword),
    ("azure_storage_access_key", Trigger::AzureKeyKeyword),
    ("storage account key", Trigger::AzureKeyKeyword),
    ("storage key", Trigger::AzureKeyKeyword),
    ("\"private_key_id\"", Trigger::GcpKeyId),
    ("sk-", Trigger::OpenAi),
    ("npm_", Trigger::Npm),
    ("api_key", Trigger::GenericKeyName),
    ("apikey", Trigger::GenericKeyName),
    ("api-key", Trigger::GenericKeyName),
    ("api key", Trigger::GenericKeyName),
    ("api_token", Trigger::GenericKeyName),
    ("access_token", Trigger::GenericKeyName),
    ("accesstoken", Trigger::GenericKeyName),
    ("auth_token", Trigger::GenericKeyName),
    ("authtoken", Trigger::GenericKeyName),
    ("access_key", Trigger::GenericKeyName),
    ("secret_key", Trigger::GenericKeyName),
    ("secretkey", Trigger::GenericKeyName),
    ("client_secret", Trigger::GenericKeyName),
    ("app_secret", Trigger::GenericKeyName),
    ("private_token", Trigger::GenericKeyName),
    ("refresh_token", Trigger::GenericKeyName),
    ("token", Trigger::GenericKeyName),
    ("bearer", Trigger::GenericKeyName),
];

/// Every literal: the triggers, then the keywords. A literal's index in this
/// list is its index in [`TRIGGERS`], or [`TRIGGERS`]' length plus its index
/// in [`KEYWORDS`].
fn all_literals() -> impl Iterator<Item = &'static str> {
    TRIGGERS
        .iter()
        .map(|(p, _)| *p)
        .chain(KEYWORDS.iter().map(|(k, _)| *k))
}

/// The literals' automatons, built once.
struct Literals {
    /// The literals written in ASCII, in one automaton. Case-insensitive so
    /// one pass also finds `PASSWORD=`; the vendor prefixes are re-checked
    /// case-sensitively by their validators. A DFA that reports every
    /// occurrence ([`literals`] picks among them), without a prefilter: the
    /// patterns start with most letters, so a prefilter would stop at
    /// nearly every byte.
    table: Table,
    /// The index in [`all_literals`] of each of the table's patterns.
    table_ids: Vec<usize>,
    /// The literals with a character beyond ASCII (`contraseña`, `生年月日`),
    /// searched apart, in texts that hold a byte from 0x80 only. Their bytes
    /// would more than double the table's columns (every byte of their
    /// characters is a column of its own) and so its size, and the walk
    /// over every byte of every text waits on that table.
    others: AhoCorasick,
    /// The index in [`all_literals`] of each of `others`' patterns.
    other_ids: Vec<usize>,
}

static LITERALS: LazyLock<Literals> = LazyLock::new(|| {
    type Numbered = Vec<(usize, &'static str)>;
    let (ascii, others): (Numbered, Numbered) = all_literals().enumerate().partition(|(_, p)| p.is_ascii());
    let patterns = || ascii.iter().map(|&(_, p)| p);
    Literals {
        table: Table::new(
            DFA::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .prefilter(false)
                .build(patterns())
                // A panic here is a broken invariant: the patterns are constants.
                .expect("literal patterns are valid"),
            patterns(),
        ),
        table_ids: ascii.iter().map(|&(i, _)| i).collect(),
        others: AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(others.iter().map(|&(_, p)| p))
            // A panic here is a broken invariant: the patterns are constants.
            .expect("literal patterns are valid"),
        other_ids: others.iter().map(|&(i, _)| i).collect(),
    }
});

/// An occurrence of a literal: start, end, and its index in [`TRIGGERS`] or
/// [`KEYWORDS`].
type Literal = (usize, usize, usize);

/// The triggers of `text` and every occurrence of a keyword, in text order,
/// from one pass over the bytes. The triggers are what a leftmost-longest
/// search of their list finds (`aws_secret_access_key`, not the `secret`
/// inside it); the keywords become so with [`leftmost_longest`], when a
/// candidate first asks for them (`purchase order`, not the `order`).
///
/// The pass drives the automaton by hand, a table lookup per byte: the
/// crate's iterators would take two passes (one per list) and cost a call per
/// occurrence, and the keyword list has one in every few words (`id` in
/// `provide`). Each lookup needs the state the previous one gave, so one walk
/// waits on memory at every byte; [`Table::match_ends`] walks [`LANES`]
/// stretches of the text side by side instead, whose lookups overlap.
///
/// Each lane starts in the start state the longest pattern's length before
/// its stretch, without reporting: the automaton's state is the longest
/// suffix of what it read that begins a pattern, never longer than a pattern,
/// so by the stretch's first byte it is the state one walk from the text's
/// start has there. The lanes' matches, read one lane after the other, are
/// then exactly what one walk over the whole text meets.
///
/// The literals beyond ASCII come from their own search, in order of their
/// end too, and are taken in turn with the table's: each list receives the
/// occurrences of both nearly in order, as [`insert_ordered`] expects.
fn literals(text: &str) -> (Vec<Literal>, Vec<Literal>) {
    let lits = &*LITERALS;
    let (table, dfa) = (&lits.table, &lits.table.dfa);
    let (mut triggers, mut keywords) = (Vec::new(), Vec::new());
    let b = text.as_bytes();
    let lanes = if b.len() >= LANE_MIN { LANES } else { 1 };
    let ends = table.match_ends(b, lanes, dfa.max_pattern_len());
    // Nearly every match end is a keyword's: room for all of them at once.
    keywords.reserve(ends.iter().map(Vec::len).sum());
    let others: Vec<Literal> = if b.is_ascii() {
        Vec::new()
    } else {
        lits.others
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end(), lits.other_ids[m.pattern().as_usize()]))
            .collect()
    };
    let mut next_other = 0;
    let mut note = |(start, end, literal): Literal| match literal.checked_sub(TRIGGERS.len()) {
        None => insert_ordered(&mut triggers, (start, end, literal)),
        Some(keyword) => insert_ordered(&mut keywords, (start, end, keyword)),
    };
    for (i, state) in ends.into_iter().flatten() {
        while let Some(&other) = others.get(next_other).filter(|&&(_, end, _)| end <= i + 1) {
            note(other);
            next_other += 1;
        }
        for &(pattern, length) in table.ending(state) {
            note((i + 1 - length as usize, i + 1, lits.table_ids[pattern as usize]));
        }
    }
    others[next_other..].iter().for_each(|&other| note(other));
    leftmost_longest(&mut triggers);
    (triggers, keywords)
}

/// Texts shorter than this are walked in one lane: each further lane first
/// reads up to the longest pattern's length before its stretch.
const LANE_MIN: usize = 2048;

/// Insert `found` in order of start, the longest first at one start.
/// Occurrences come in order of their end, so nearly in order: one starting
/// before the last ones (a longer pattern) moves back a few places at most.
fn insert_ordered(list: &mut Vec<Literal>, found: Literal) {
    let key = |&(start, end, _): &Literal| (start, Reverse(end));
    let at = list.len()
        - list
            .iter()
            .rev()
            .take_while(|other| key(other) > key(&found))
            .count();
    list.insert(at, found);
}

/// Keep, of occurrences in the order of [`insert_ordered`], what a
/// leftmost-longest search reports: the longest of those starting first, then
/// the same from its end on.
fn leftmost_longest(found: &mut Vec<Literal>) {
    let mut free = 0;
    found.retain(|&(start, end, _)| {
        let keep = start >= free;
        if keep {
            free = end;
        }
        keep
    });
}

/// A validated candidate, as byte offsets into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hit {
    start: usize,
    end: usize,
    detector: Detector,
    confidence: Confidence,
    test_value: bool,
}

/// Per-text scanning state shared by the detectors.
struct Ctx<'t> {
    text: &'t str,
    b: &'t [u8],
    /// Every keyword occurrence, until the first candidate asks for the index.
    keyword_occurrences: Cell<Vec<Literal>>,
    keywords: OnceCell<KeywordIndex>,
    tables: TableIndex,
    hits: Vec<Hit>,
    /// AWS access key ids found so far: a 40-character secret near one counts.
    aws_key_ids: Vec<(usize, usize)>,
    /// Where `"service_account"` occurs, found once on first use.
    service_accounts: OnceCell<Vec<usize>>,
    /// Where the last search for `-----END ` started and what it found.
    pem_end: Option<(usize, Option<usize>)>,
}

impl<'t> Ctx<'t> {
    fn new(text: &'t str, keyword_occurrences: Vec<Literal>) -> Self {
        Ctx {
            text,
            b: text.as_bytes(),
            keyword_occurrences: Cell::new(keyword_occurrences),
            keywords: OnceCell::new(),
            tables: TableIndex::new(),
            hits: Vec::new(),
            aws_key_ids: Vec::new(),
            service_accounts: OnceCell::new(),
            pem_end: None,
        }
    }

    fn push(
        &mut self,
        detector: Detector,
        start: usize,
        end: usize,
        confidence: Confidence,
        test_value: bool,
    ) {
        self.hits.push(Hit {
            start,
            end,
            detector,
            confidence,
            test_value,
        });
    }

    /// Byte range reaching `chars` characters before `start` and after `end`.
    fn window(&self, start: usize, end: usize, chars: usize) -> (usize, usize) {
        // Mostly ASCII, where a character is a byte: one fast check instead
        // of a step per character, hundreds per candidate.
        let (lo, hi) = (start.saturating_sub(chars), self.b.len().min(end + chars));
        if self.b[lo..start].is_ascii() && self.b[end..hi].is_ascii() {
            return (lo, hi);
        }
        let mut lo = start;
        for _ in 0..chars {
            if lo == 0 {
                break;
            }
            lo -= 1;
            while !self.text.is_char_boundary(lo) {
                lo -= 1;
            }
        }
        let mut hi = end;
        for _ in 0..chars {
            if hi >= self.b.len() {
                break;
            }
            hi += 1;
            while !self.text.is_char_boundary(hi) {
                hi += 1;
            }
        }
        (lo, hi)
    }

    /// `"service_account"` occurs within `bytes` of `pos`.
    fn service_account_near(&self, pos: usize, bytes: usize) -> bool {
        let at = self
            .service_accounts
            .get_or_init(|| memchr::memmem::find_iter(self.b, b"\"service_account\"").collect());
        let i = at.partition_point(|&a| a + bytes < pos);
        at.get(i).is_some_and(|&a| a <= pos + bytes)
    }

    fn keywords(&self) -> &KeywordIndex {
        self.keywords.get_or_init(|| {
            let mut found = self.keyword_occurrences.take();
            leftmost_longest(&mut found);
            KeywordIndex::build(self.text, &found)
        })
    }

    /// A keyword of `kind` lies within `chars` characters of `start..end`.
    fn near(&self, kind: Keyword, start: usize, end: usize, chars: usize) -> bool {
        let (lo, hi) = self.window(start, end, chars);
        self.keywords().any_in(kind, lo, hi)
    }

    /// What names the number at `start..end`, for a detector whose keywords
    /// are `kind`, in this order:
    /// 1. in a table, the header cell of its column: its own keyword is
    ///    evidence, any other label (`account`, `phone`) is evidence against;
    ///    a silent header leaves it to the labels in the row;
    /// 2. the nearest label within [`LABEL_REACH`] characters before it (in a
    ///    table, within its row): `Order # 536221234` is an order number
    ///    whatever the rest of the mail says;
    /// 3. outside tables, a keyword of `kind` within `reach` characters either
    ///    side.
    fn evidence(&self, kind: Keyword, start: usize, end: usize, reach: usize) -> Evidence {
        let kw = self.keywords();
        let header = self.tables.header_cell(self.b, start, end);
        if let Some((lo, hi)) = header {
            if kw.any_in(kind, lo, hi) {
                return Evidence::For;
            }
            if LABELS.iter().any(|&k| k != kind && kw.any_in(k, lo, hi)) {
                return Evidence::Against;
            }
        }
        let (mut lo, _) = self.window(start, start, LABEL_REACH);
        if header.is_some() {
            lo = memchr::memrchr(b'\n', &self.b[lo..start]).map_or(lo, |k| lo + k + 1);
        }
        match kw.last_label_in(lo, start) {
            Some((k, _)) if k == kind => Evidence::For,
            Some(_) => Evidence::Against,
            None if header.is_none() && self.near(kind, start, end, reach) => Evidence::For,
            None => Evidence::Silent,
        }
    }

    fn into_findings(mut self, location: &Location) -> Vec<Finding> {
        self.hits.sort_by_key(|h| (h.start, h.end, h.detector));
        self.hits.dedup_by_key(|h| (h.start, h.end, h.detector));
        // Weak detectors yield to a specific one over the same text: `password=ghp_...`
        // is a GitHub token, and a `+` number that is a card is a card. Hits are
        // sorted by start: a strong hit starting before a weak one overlaps it
        // when the furthest end among them passes its start; those starting at
        // or after it are the next few.
        let hits = &self.hits;
        let mut strong_end = 0;
        let keep: Vec<bool> = (0..hits.len())
            .map(|i| {
                let h = hits[i];
                let overlapped = weak(h.detector)
                    && (strong_end > h.start
                        || hits[i + 1..]
                            .iter()
                            .take_while(|o| o.start < h.end)
                            .any(|o| !weak(o.detector))
                        || hits[..i]
                            .iter()
                            .rev()
                            .take_while(|o| o.start == h.start)
                            .any(|o| !weak(o.detector)));
                if !weak(h.detector) {
                    strong_end = strong_end.max(h.end);
                }
                !overlapped
            })
            .collect();
        hits.iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(h, _)| Finding {
                detector: h.detector,
                matched: self.text[h.start..h.end].to_owned(),
                confidence: h.confidence,
                location: location.clone(),
                test_value: h.test_value,
                name: None,
            })
            .collect()
    }
}

/// Scan one decoded text for every detector in a single pass.
///
/// `matched` in each finding is the exact text as it stands in `text`. Findings
/// come in text order. The function is pure and never logs.
pub fn scan_text(text: &str, location: Location) -> Vec<Finding> {
    let (triggers, keywords) = literals(text);
    let mut ctx = Ctx::new(text, keywords);
    for (p, e, trigger) in triggers {
        match TRIGGERS[trigger].1 {
            Trigger::AwsKeyId => secrets::aws_key_id(&mut ctx, p),
            Trigger::GithubToken => secrets::github_token(&mut ctx, p),
            Trigger::GithubPat => secrets::github_pat(&mut ctx, p),
            Trigger::Slack => secrets::slack(&mut ctx, p),
            Trigger::Stripe => secrets::stripe(&mut ctx, p),
            Trigger::Google => secrets::google(&mut ctx, p),
            Trigger::PemBegin => secrets::private_key(&mut ctx, p),
            Trigger::Jwt => secrets::jwt(&mut ctx, p),
            Trigger::At => email::email(&mut ctx, p),
            Trigger::PasswordKeyword => password::password(&mut ctx, p, e),
            Trigger::AwsSecretKeyword => secrets::aws_secret_after_keyword(&mut ctx, e),
            Trigger::DobLabel => dob::date_of_birth(&mut ctx, p, e),
            Trigger::AzureAccountKey => secrets::azure_account_key(&mut ctx, p, e),
            Trigger::AzureKeyKeyword => secrets::azure_key_after_keyword(&mut ctx, e),
            Trigger::GcpKeyId => secrets::gcp_private_key_id(&mut ctx, p, e),
            Trigger::OpenAi => secrets::openai(&mut ctx, p),
            Trigger::Npm => secrets::npm(&mut ctx, p),
            Trigger::GenericKeyName => password::generic_secret(&mut ctx, p, e),
        }
    }
    secrets::aws_secret_near_key_ids(&mut ctx);
    numbers::scan(&mut ctx);
    ctx.into_findings(&location)
}

/// Detectors that give way to a specific one over the same text. A generic
/// secret and a password over the same value: the generic secret (its key
/// name says more) is kept, so the password yields to it too.
fn weak(d: Detector) -> bool {
    matches!(
        d,
        Detector::Password | Detector::PhoneNumber | Detector::GenericSecret
    )
}

/// ASCII letter, digit or underscore: the characters that glue a token to its
/// neighbours. Anything else (punctuation, space, CJK) is a boundary.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[cfg(test)]
mod tests;
