//! The digit-run scanner: credit cards, SSNs, ABA routing numbers, IBANs, phones.
//!
//! A run is a maximal sequence of digit groups joined by exactly one separator
//! (space, dash, or a no-break / thin / figure space). Runs are found by walking
//! bytes, not by `\b`, so a number written against CJK text is still a run; a
//! run glued to an ASCII letter, digit or `_` (an identifier, a hash) is not a
//! candidate. Each candidate window starts and ends on group boundaries, so the
//! matched text is exactly the digits and separators as written.

use super::keywords::Keyword;
use super::{is_word, Ctx, Evidence, PROXIMITY};
use crate::finding::{Confidence, Detector};
use crate::validate;

/// Keywords for a phone number must sit close: signatures put `Tel:` right
/// before the number, and a wide window turns invoice numbers into phones.
const PHONE_PROXIMITY: usize = 80;

/// Plain numbers (no `+`, no bracket) need the keyword within a few words.
const PLAIN_PHONE_PROXIMITY: usize = 30;

/// Longest run considered as one unit; longer tables of numbers are split.
const MAX_GROUPS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    Space,
    Dash,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    /// The separator between this group and the previous one.
    sep: Option<Sep>,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Separator at `pos`: its byte length and kind.
fn sep_at(b: &[u8], pos: usize) -> Option<(usize, Sep)> {
    match *b.get(pos)? {
        b' ' => Some((1, Sep::Space)),
        b'-' => Some((1, Sep::Dash)),
        // U+00A0 no-break space (what `&nbsp;` decodes to).
        0xC2 if b.get(pos + 1) == Some(&0xA0) => Some((2, Sep::Space)),
        // U+2007 figure space, U+2009 thin space, U+202F narrow no-break space.
        0xE2 if b.get(pos + 1) == Some(&0x80) && matches!(b.get(pos + 2), Some(0x87 | 0x89 | 0xAF)) => {
            Some((3, Sep::Space))
        }
        _ => None,
    }
}

fn is_digit_at(b: &[u8], pos: usize) -> bool {
    b.get(pos).is_some_and(u8::is_ascii_digit)
}

/// Nothing glued after a candidate ending at `end`: no letter, digit or `_`,
/// and no decimal tail (`4111111111111111.50`).
fn tail_ok(b: &[u8], end: usize) -> bool {
    match b.get(end) {
        None => true,
        Some(&c) if is_word(c) => false,
        Some(b'.') => !is_digit_at(b, end + 1),
        // `4111,50` or `1,234`; `536221234,123456789` is two CSV fields.
        Some(b',') => !matches!(
            b[end + 1..].iter().take_while(|c| c.is_ascii_digit()).count(),
            1..=3
        ),
        Some(_) => true,
    }
}

/// Something glued before a run starting at `start`.
fn attached(b: &[u8], start: usize) -> bool {
    match start.checked_sub(1).map(|i| b[i]) {
        None => false,
        Some(c) if is_word(c) => true,
        Some(b'.') => start >= 2 && b[start - 2].is_ascii_digit(),
        // `1,234`: a thousands group has three digits; `0,536221234` is two
        // CSV fields.
        Some(b',') => {
            start >= 2
                && b[start - 2].is_ascii_digit()
                && b[start..]
                    .iter()
                    .take(4)
                    .take_while(|c| c.is_ascii_digit())
                    .count()
                    == 3
        }
        Some(_) => false,
    }
}

/// The run is one part of a compound identifier: `INV-536221234`,
/// `2024/021000021`, `536221234/01`, `536-22-1234-A`. Digits inside a longer
/// identifier never count as an SSN, routing number or phone.
fn in_identifier(b: &[u8], start: usize, end: usize) -> bool {
    let before = start >= 2 && matches!(b[start - 1], b'-' | b'/' | b'.' | b'_') && is_word(b[start - 2]);
    let after = matches!(b.get(end), Some(b'-' | b'/' | b'_')) && b.get(end + 1).is_some_and(|&c| is_word(c));
    before || after
}

pub(super) fn scan(ctx: &mut Ctx<'_>) {
    let b = ctx.b;
    let mut groups: Vec<Group> = Vec::with_capacity(MAX_GROUPS);
    let mut phone_until = 0;
    let mut i = 0;
    while i < b.len() {
        match next_digit(b, i) {
            Some(at) => i = at,
            None => break,
        }
        groups.clear();
        let end = read_run(b, i, &mut groups);
        on_run(ctx, &groups, &mut phone_until);
        i = end;
    }
}

/// The high bit of each byte of `chunk` (eight bytes, the first lowest)
/// that is an ASCII digit, and no other bit. Per byte c < 0x80 there is no
/// carry between bytes: the high bit of 0x7F + below - c is set when c <
/// below, of c + 0x7F - above when c > above; `!x` clears bytes from 0x80.
/// Exact for every byte, so the lowest bit set is the first digit.
fn digit_bits(chunk: &[u8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const LOW7: u64 = ONES * 0x7F;
    let (above, below) = (u64::from(b'0' - 1), u64::from(b'9' + 1));
    // A panic here is a broken invariant: callers pass eight bytes.
    let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
    let t = x & LOW7;
    (ONES * (0x7F + below) - t) & !x & (t + ONES * (0x7F - above)) & (ONES * 0x80)
}

/// Offset of the first ASCII digit at or after `from`. This walk covers the
/// whole text, which is mostly letters: eight bytes are tested at once,
/// and the first digit among them is read from the same test. Not inlined:
/// inside the large [`scan`] its loop kept its position on the stack.
#[inline(never)]
pub(super) fn next_digit(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let digits = digit_bits(chunk);
        if digits != 0 {
            return Some(i + (digits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(u8::is_ascii_digit).map(|k| i + k)
}

/// The end of the digits starting at `pos`: eight bytes at a time, so a
/// group's end costs no branch per digit (and no mispredicted one at a
/// length that varies from group to group).
pub(super) fn digits_end(b: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = b.get(pos..pos + 8) {
        let others = !digit_bits(chunk) & u64::from_ne_bytes([0x80; 8]);
        if others != 0 {
            return pos + (others.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while is_digit_at(b, pos) {
        pos += 1;
    }
    pos
}

fn read_run(b: &[u8], start: usize, groups: &mut Vec<Group>) -> usize {
    let mut pos = start;
    let mut sep = None;
    loop {
        let gs = pos;
        pos = digits_end(b, pos);
        groups.push(Group {
            start: gs,
            end: pos,
            sep,
        });
        if groups.len() >= MAX_GROUPS {
            return pos;
        }
        match sep_at(b, pos) {
            Some((len, kind)) if is_digit_at(b, pos + len) => {
                sep = Some(kind);
                pos += len;
            }
            _ => return pos,
        }
    }
}

fn on_run(ctx: &mut Ctx<'_>, groups: &[Group], phone_until: &mut usize) {
    let b = ctx.b;
    let first = groups[0].start;
    if first >= 2
        && b[first - 2].is_ascii_uppercase()
        && b[first - 1].is_ascii_uppercase()
        && (first == 2 || !b[first - 3].is_ascii_alphanumeric())
    {
        iban(ctx, first - 2);
    }
    let prev = first.checked_sub(1).map(|i| b[i]);
    let marked = matches!(prev, Some(b'+' | b'('));
    if first >= *phone_until {
        if marked {
            let s = first - 1;
            if s == 0 || !is_word(b[s - 1]) {
                if let Some(end) = phone(ctx, s, false) {
                    *phone_until = end;
                }
            }
        } else if plain_phone_shape(b, groups)
            && !attached(b, first)
            && !in_identifier(b, first, groups[groups.len() - 1].end)
        {
            if let Some(end) = phone(ctx, first, true) {
                *phone_until = end;
            }
        }
    }
    // Every other detector needs six digits or more (a NINO's six; cards,
    // SSNs, routing numbers and the other IDs more), and most runs of prose
    // have fewer: amounts, times, parts of dates and addresses.
    if groups.iter().map(Group::len).sum::<usize>() < 6 {
        return;
    }
    nino(ctx, groups);
    dni(ctx, groups);
    if attached(b, first) {
        return;
    }
    cards(ctx, groups);
    ssn(ctx, groups);
    aba(ctx, groups);
    sin(ctx, groups);
    aadhaar(ctx, groups);
}

/// Confidence from evidence: `(with a label, without any)`; `None` when the
/// number is labelled as something else or, for `alone == None`, unlabelled.
fn graded(ev: Evidence, labelled: Confidence, alone: Option<Confidence>) -> Option<Confidence> {
    match ev {
        Evidence::For => Some(labelled),
        Evidence::Silent => alone,
        Evidence::Against => None,
    }
}

/// UK National Insurance number: `AB123456C` or `AB 12 34 56 C`.
fn nino(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let first = groups[0].start;
    let spaced = match groups {
        [g] if g.len() == 6 => false,
        [x, y, z]
            if x.len() == 2
                && y.len() == 2
                && z.len() == 2
                && y.sep == Some(Sep::Space)
                && z.sep == y.sep =>
        {
            true
        }
        _ => return,
    };
    let ps = match first.checked_sub(if spaced { 3 } else { 2 }) {
        Some(ps) if !spaced || b[first - 1] == b' ' => ps,
        _ => return,
    };
    if !validate::nino_prefix_valid(b[ps], b[ps + 1]) || (ps > 0 && is_word(b[ps - 1])) {
        return;
    }
    let e = groups[groups.len() - 1].end;
    let suffix_at = if spaced && b.get(e) == Some(&b' ') {
        e + 1
    } else {
        e
    };
    if !matches!(b.get(suffix_at), Some(b'A'..=b'D')) || b.get(suffix_at + 1).is_some_and(|&c| is_word(c)) {
        return;
    }
    let end = suffix_at + 1;
    if let Some(c) = graded(
        ctx.evidence(Keyword::Nino, ps, end, PROXIMITY),
        Confidence::High,
        Some(Confidence::Low),
    ) {
        ctx.push(Detector::UkNino, ps, end, c, false);
    }
}

/// Spanish DNI (`12345678Z`, `12345678-Z`) or NIE (`X1234567L`): the letter
/// is the number mod 23.
fn dni(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let [g] = groups else { return };
    let first = g.start;
    let (start, number) = match (g.len(), first.checked_sub(1).map(|i| b[i])) {
        (7, Some(c @ (b'X' | b'Y' | b'Z'))) => {
            let lead = u32::from(c - b'X');
            (first - 1, lead * 10_000_000 + digits_value(&b[g.start..g.end]))
        }
        (8, prev) if !prev.is_some_and(is_word) => (first, digits_value(&b[g.start..g.end])),
        _ => return,
    };
    if start > 0 && is_word(b[start - 1]) {
        return;
    }
    let letter_at = if b.get(g.end) == Some(&b'-') {
        g.end + 1
    } else {
        g.end
    };
    let Some(&letter) = b.get(letter_at) else { return };
    if letter != validate::dni_letter(number) || b.get(letter_at + 1).is_some_and(|&c| is_word(c)) {
        return;
    }
    let end = letter_at + 1;
    if let Some(c) = graded(
        ctx.evidence(Keyword::EsDni, start, end, PROXIMITY),
        Confidence::High,
        Some(Confidence::Medium),
    ) {
        ctx.push(Detector::EsDni, start, end, c, false);
    }
}

fn digits_value(d: &[u8]) -> u32 {
    d.iter().fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
}

/// Canadian SIN: `ddd-ddd-ddd`, `ddd ddd ddd` or nine digits with a label.
fn sin(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let (s, e) = (groups[0].start, groups[groups.len() - 1].end);
    if !tail_ok(b, e) || in_identifier(b, s, e) {
        return;
    }
    let mut digits = [0u8; 9];
    let formatted = match groups {
        [one] if one.len() == 9 => {
            digits.copy_from_slice(&b[s..e]);
            false
        }
        [x, y, z] if [x.len(), y.len(), z.len()] == [3, 3, 3] && y.sep == z.sep => {
            for (k, g) in groups.iter().enumerate() {
                digits[k * 3..k * 3 + 3].copy_from_slice(&b[g.start..g.end]);
            }
            true
        }
        _ => return,
    };
    if !validate::sin_valid(&digits) {
        return;
    }
    let alone = formatted.then_some(Confidence::Low);
    let labelled = if formatted {
        Confidence::High
    } else {
        Confidence::Medium
    };
    if let Some(c) = graded(ctx.evidence(Keyword::Sin, s, e, PROXIMITY), labelled, alone) {
        ctx.push(Detector::CaSin, s, e, c, false);
    }
}

/// Aadhaar: 12 digits (`dddd dddd dddd` or unbroken), first 2-9, Verhoeff.
fn aadhaar(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let (s, e) = (groups[0].start, groups[groups.len() - 1].end);
    if !tail_ok(b, e) || in_identifier(b, s, e) {
        return;
    }
    let mut digits = [0u8; 12];
    let formatted = match groups {
        [one] if one.len() == 12 => {
            digits.copy_from_slice(&b[s..e]);
            false
        }
        [x, y, z] if [x.len(), y.len(), z.len()] == [4, 4, 4] && y.sep == z.sep => {
            for (k, g) in groups.iter().enumerate() {
                digits[k * 4..k * 4 + 4].copy_from_slice(&b[g.start..g.end]);
            }
            true
        }
        _ => return,
    };
    if digits[0] < b'2' || !validate::verhoeff(&digits) {
        return;
    }
    let alone = formatted.then_some(Confidence::Low);
    let labelled = if formatted {
        Confidence::High
    } else {
        Confidence::Medium
    };
    if let Some(c) = graded(ctx.evidence(Keyword::Aadhaar, s, e, PROXIMITY), labelled, alone) {
        ctx.push(Detector::InAadhaar, s, e, c, false);
    }
}

/// Cheap test before the phone parser runs on an unmarked run.
fn plain_phone_shape(b: &[u8], groups: &[Group]) -> bool {
    let g0 = groups[0];
    match groups.len() {
        1 => {
            g0.len() == 10
                || (b[g0.start] == b'0' && (9..=12).contains(&g0.len()))
                || (g0.len() == 3 && b.get(g0.end) == Some(&b'.') && is_digit_at(b, g0.end + 1))
        }
        _ => g0.len() == 3 || g0.len() == 1 || b[g0.start] == b'0',
    }
}

fn cards(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let mut gi = 0;
    while gi < groups.len() {
        let mut digits = [0u8; 19];
        let mut lens = [0usize; 19];
        let mut nd = 0;
        let mut kind = None;
        let mut best = None;
        for (k, g) in groups[gi..].iter().enumerate() {
            if k > 0 {
                if kind.is_none() {
                    kind = g.sep;
                } else if kind != g.sep {
                    break;
                }
            }
            if nd + g.len() > 19 {
                break;
            }
            digits[nd..nd + g.len()].copy_from_slice(&b[g.start..g.end]);
            nd += g.len();
            lens[k] = g.len();
            if nd < 12 || !tail_ok(b, g.end) {
                continue;
            }
            let d = &digits[..nd];
            let Some(brand) = validate::card_brand(d) else {
                continue;
            };
            if grouping_ok(&lens[..=k], brand) && validate::luhn(d) {
                best = Some((gi + k, k > 0, validate::is_test_card(d)));
            }
        }
        match best {
            Some((gj, formatted, test)) => {
                let (s, e) = (groups[gi].start, groups[gj].end);
                let confidence = if ctx.near(Keyword::Card, s, e, PROXIMITY) || expiry_near(ctx, s, e) {
                    Confidence::High
                } else if formatted {
                    Confidence::Medium
                } else {
                    Confidence::Low
                };
                ctx.push(Detector::CreditCard, s, e, confidence, test);
                gi = gj + 1;
            }
            None => gi += 1,
        }
    }
}

/// How card numbers are written: unbroken, in fours (the last group shorter
/// for 13-19 digit numbers), Amex 4-6-5, Diners 4-6-4.
fn grouping_ok(lens: &[usize], brand: validate::Brand) -> bool {
    match lens {
        [_] => true,
        [4, 6, 5] => brand == validate::Brand::Amex,
        [4, 6, 4] => brand == validate::Brand::Diners,
        [init @ .., last] => init.len() >= 2 && init.iter().all(|&l| l == 4) && (1..=4).contains(last),
        [] => false,
    }
}

/// An expiry date (`MM/YY` or `MM/YYYY`) within the proximity window.
fn expiry_near(ctx: &Ctx<'_>, s: usize, e: usize) -> bool {
    let (lo, hi) = ctx.window(s, e, PROXIMITY);
    let w = &ctx.b[lo..hi];
    w.iter().enumerate().any(|(i, &c)| {
        if c != b'/' || i < 2 || !w[i - 2].is_ascii_digit() || !w[i - 1].is_ascii_digit() {
            return false;
        }
        if i >= 3 && w[i - 3].is_ascii_digit() {
            return false;
        }
        let month = (w[i - 2] - b'0') * 10 + (w[i - 1] - b'0');
        let year_len = w[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        (1..=12).contains(&month) && (year_len == 2 || year_len == 4)
    })
}

fn ssn(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let (s, e) = (groups[0].start, groups[groups.len() - 1].end);
    if !tail_ok(b, e) || in_identifier(b, s, e) {
        return;
    }
    match groups {
        [a, g, n] if a.len() == 3 && g.len() == 2 && n.len() == 4 && g.sep == n.sep => {
            let (area, group, serial) = (&b[a.start..a.end], &b[g.start..g.end], &b[n.start..n.end]);
            if !validate::ssn_valid(area, group, serial) {
                return;
            }
            let mut digits = [0u8; 9];
            digits[..3].copy_from_slice(area);
            digits[3..5].copy_from_slice(group);
            digits[5..].copy_from_slice(serial);
            let confidence = match ctx.evidence(Keyword::Ssn, s, e, PROXIMITY) {
                Evidence::For => Confidence::High,
                Evidence::Silent => Confidence::Low,
                Evidence::Against => return,
            };
            ctx.push(Detector::UsSsn, s, e, confidence, validate::is_test_ssn(&digits));
        }
        [one] if one.len() == 9 => {
            let d = &b[one.start..one.end];
            if validate::ssn_valid(&d[..3], &d[3..5], &d[5..])
                && ctx.evidence(Keyword::Ssn, s, e, PROXIMITY) == Evidence::For
            {
                ctx.push(
                    Detector::UsSsn,
                    s,
                    e,
                    Confidence::Medium,
                    validate::is_test_ssn(d),
                );
            }
        }
        _ => {}
    }
}

fn aba(ctx: &mut Ctx<'_>, groups: &[Group]) {
    let b = ctx.b;
    let (s, e) = (groups[0].start, groups[groups.len() - 1].end);
    let mut digits = [0u8; 9];
    match groups {
        [one] if one.len() == 9 => digits.copy_from_slice(&b[one.start..one.end]),
        [x, y, z]
            if x.len() == 4 && y.len() == 4 && z.len() == 1 && y.sep == Some(Sep::Dash) && z.sep == y.sep =>
        {
            digits[..4].copy_from_slice(&b[x.start..x.end]);
            digits[4..8].copy_from_slice(&b[y.start..y.end]);
            digits[8] = b[z.start];
        }
        _ => return,
    }
    if !tail_ok(b, e) || in_identifier(b, s, e) || !validate::aba_valid(&digits) {
        return;
    }
    let confidence = match ctx.evidence(Keyword::Aba, s, e, PROXIMITY) {
        Evidence::For => Confidence::High,
        Evidence::Silent => Confidence::Low,
        Evidence::Against => return,
    };
    ctx.push(Detector::AbaRouting, s, e, confidence, false);
}

/// IBAN starting at `s` (the country code), compact or in groups of four.
fn iban(ctx: &mut Ctx<'_>, s: usize) {
    let b = ctx.b;
    let Some(len) = validate::iban_length(&b[s..s + 2]) else {
        return;
    };
    if !is_digit_at(b, s + 3) {
        return;
    }
    let alnum = |pos: usize| {
        b.get(pos)
            .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    let mut compact = [0u8; 34];
    compact[..4].copy_from_slice(&b[s..s + 4]);
    let mut n = 4;
    let mut pos = s + 4;
    if b.get(pos) == Some(&b' ') && alnum(pos + 1) {
        while n < len {
            if b.get(pos) != Some(&b' ') {
                return;
            }
            pos += 1;
            let mut k = 0;
            while k < 4 && n < len && alnum(pos) {
                compact[n] = b[pos];
                n += 1;
                pos += 1;
                k += 1;
            }
            if k == 0 || (k < 4 && n < len) {
                return;
            }
        }
    } else {
        while alnum(pos) {
            if n == compact.len() {
                return;
            }
            compact[n] = b[pos];
            n += 1;
            pos += 1;
        }
    }
    if n != len || b.get(pos).is_some_and(u8::is_ascii_alphanumeric) {
        return;
    }
    let c = &compact[..n];
    if validate::iban_valid(c) {
        ctx.push(
            Detector::Iban,
            s,
            pos,
            Confidence::High,
            validate::is_test_iban(c),
        );
    }
}

/// Phone number at `s` (a `+`, a `(` or, when `plain`, a digit). Returns the
/// end of the number when one was reported.
fn phone(ctx: &mut Ctx<'_>, s: usize, plain: bool) -> Option<usize> {
    let b = ctx.b;
    let plus = b[s] == b'+';
    let mut pos = if plus { s + 1 } else { s };
    let mut lens = [0usize; 8];
    let mut ends = [0usize; 8];
    let mut starts = [0usize; 8];
    let mut ng = 0;
    let mut digits = 0;
    let mut end = pos;
    let mut bracket_first = false;
    let mut seps: Option<u8> = None;
    let mut uniform = true;
    while ng < lens.len() {
        if b.get(pos) == Some(&b'(') {
            let q0 = pos + 1;
            let mut q = q0;
            while is_digit_at(b, q) {
                q += 1;
            }
            if q == q0 || q - q0 > 5 || b.get(q) != Some(&b')') {
                break;
            }
            bracket_first |= ng == 0;
            lens[ng] = q - q0;
            starts[ng] = q0;
            pos = q + 1;
        } else if is_digit_at(b, pos) {
            let q0 = pos;
            while is_digit_at(b, pos) {
                pos += 1;
            }
            lens[ng] = pos - q0;
            starts[ng] = q0;
        } else {
            break;
        }
        digits += lens[ng];
        ng += 1;
        end = pos;
        ends[ng - 1] = pos;
        match b.get(pos) {
            Some(&c @ (b' ' | b'-' | b'.')) if is_digit_at(b, pos + 1) || b.get(pos + 1) == Some(&b'(') => {
                if seps.is_some_and(|x| x != c) {
                    uniform = false;
                }
                seps = Some(c);
                pos += 1;
            }
            _ => break,
        }
    }
    if ng == 0 || !tail_ok(b, end) {
        return None;
    }
    // A number written right after the phone (`+44 20 7946 0958 2024-01-15`)
    // is read into the run: give back trailing groups past E.164's 15 digits.
    while digits > 15 && ng > 1 {
        ng -= 1;
        digits -= lens[ng];
        end = ends[ng - 1];
    }
    if ng == 0 {
        return None;
    }
    let lens = &lens[..ng];
    let group = |k: usize| &b[starts[k]..starts[k] + lens[k]];
    let first_digit = b[if plus || bracket_first { s + 1 } else { s }];
    // NANP numbers end in area (3), exchange (3), line (4).
    let nanp_tail = |k: usize| lens.len() == k + 3 && lens[k..] == [3, 3, 4];
    // 555-0100 to 555-0199 are reserved for fiction: reported, tagged.
    let test =
        ng >= 2 && lens[ng - 2..] == [3, 4] && group(ng - 2) == b"555" && group(ng - 1).starts_with(b"01");
    // (confidence without a label, with one, how far the label may be)
    let (alone, labelled, reach) = if plus {
        if !(8..=15).contains(&digits) || first_digit == b'0' {
            return None;
        }
        (Some(Confidence::Medium), Confidence::High, PHONE_PROXIMITY)
    } else if bracket_first {
        if !(2..=5).contains(&lens[0]) || !(7..=15).contains(&digits) || ng < 2 {
            return None;
        }
        if nanp_tail(0) && !validate::nanp_valid(group(0), group(1)) {
            return None;
        }
        (Some(Confidence::Medium), Confidence::High, PHONE_PROXIMITY)
    } else if plain {
        // `212-555-0123`, `212.555.0123`, `1-800-555-0199`: the shape and the
        // numbering plan's area and exchange rules are evidence enough. Space-
        // separated and unbroken forms are too close to other numbers.
        let punctuated = uniform && matches!(seps, Some(b'-' | b'.'));
        let nanp_at = match lens {
            [3, 3, 4] | [10] if first_digit >= b'2' => Some(0),
            [1, 3, 3, 4] if first_digit == b'1' => Some(1),
            _ => None,
        }
        .filter(|_| uniform);
        let nanp_ok = nanp_at.is_some_and(|k| {
            let (area, exchange) = if lens == [10] {
                let d = group(0);
                (&d[..3], &d[3..6])
            } else {
                (group(k), group(k + 1))
            };
            validate::nanp_valid(area, exchange)
        });
        let national = first_digit == b'0' && (9..=12).contains(&digits) && ng <= 4;
        if nanp_ok && punctuated && ng >= 3 {
            (Some(Confidence::Medium), Confidence::High, PLAIN_PHONE_PROXIMITY)
        } else if nanp_ok || national {
            (None, Confidence::Medium, PLAIN_PHONE_PROXIMITY)
        } else {
            return None;
        }
    } else {
        return None;
    };
    // A plain number needs its label right beside it; a `+` or bracket form is
    // itself evidence, so its keyword may sit a little further away. A plain
    // number labelled as something else (`invoice 212-555-0123`) is not a phone.
    let confidence = match ctx.evidence(Keyword::Phone, s, end, reach) {
        Evidence::For => labelled,
        Evidence::Against if plain => return None,
        _ => alone?,
    };
    ctx.push(Detector::PhoneNumber, s, end, confidence, test);
    Some(end)
}
