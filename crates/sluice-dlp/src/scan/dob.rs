//! Dates of birth: a date right after its label (`DOB: 04/12/1985`,
//! `date of birth 12 March 1985`, `Geburtsdatum: 12.03.1985`).
//!
//! A date alone is everywhere in mail (invoices, meetings); only the label makes
//! it personal data, so the label is the trigger and the date must follow it
//! within a few characters. The date must exist in the calendar (no 31 April)
//! with a year from 1900 to 2099; `MM/DD` and `DD/MM` orders are both accepted.

use super::{is_word, Ctx};
use crate::finding::{Confidence, Detector};
use crate::validate::date_valid;

/// Characters between the label and the date (`: `, ` is `, ` - `).
const MAX_GAP: usize = 12;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `p..e` is the label as matched (any case).
pub(super) fn date_of_birth(ctx: &mut Ctx<'_>, p: usize, e: usize) {
    let b = ctx.b;
    // Whole words only: `dob` inside `adobe` is not a label.
    let ascii_label = b[p].is_ascii_alphabetic();
    if ascii_label
        && (p > 0 && b[p - 1].is_ascii_alphanumeric() || b.get(e).is_some_and(|c| c.is_ascii_alphanumeric()))
    {
        return;
    }
    let mut pos = e;
    let limit = (e + MAX_GAP).min(b.len());
    while pos < limit && !b[pos].is_ascii_alphanumeric() && b[pos] != b'\n' {
        pos += 1;
    }
    // `DOB is 1985-03-12`, `born on 12 March 1985`.
    for word in [&b"is "[..], b"on ", b"was "] {
        if b.get(pos..pos + word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            pos += word.len();
        }
    }
    if pos >= b.len() {
        return;
    }
    if let Some(end) = numeric_date(b, pos).or_else(|| text_date(b, pos)) {
        // `04/12/1985/2` is a path or an identifier, not a date.
        let glued = b.get(end).is_some_and(|&c| is_word(c))
            || (matches!(b.get(end), Some(b'/' | b'.' | b'-'))
                && b.get(end + 1).is_some_and(u8::is_ascii_digit));
        if !glued {
            ctx.push(Detector::DateOfBirth, pos, end, Confidence::High, false);
        }
    }
}

fn number(b: &[u8], pos: usize, max: usize) -> Option<(u32, usize)> {
    let n = b[pos..]
        .iter()
        .take(max + 1)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 || n > max {
        return None;
    }
    let v = b[pos..pos + n]
        .iter()
        .fold(0, |a, &c| a * 10 + u32::from(c - b'0'));
    Some((v, n))
}

/// `YYYY-MM-DD`, `DD/MM/YYYY`, `MM/DD/YYYY`, `DD.MM.YYYY`, `DD-MM-YY`.
fn numeric_date(b: &[u8], pos: usize) -> Option<usize> {
    let (a, la) = number(b, pos, 4)?;
    let sep = *b.get(pos + la)?;
    if !matches!(sep, b'/' | b'.' | b'-') {
        return None;
    }
    let (m, lm) = number(b, pos + la + 1, 2)?;
    if b.get(pos + la + 1 + lm) != Some(&sep) {
        return None;
    }
    let third = pos + la + 1 + lm + 1;
    let (c, lc) = number(b, third, 4)?;
    let end = third + lc;
    let ok = if la == 4 {
        date_valid(a, m, c) && lc <= 2
    } else {
        let year = match lc {
            4 => c,
            2 => 1900 + c + if c < 30 { 100 } else { 0 },
            _ => return None,
        };
        la <= 2 && (date_valid(year, m, a) || date_valid(year, a, m))
    };
    ok.then_some(end)
}

fn month_at(b: &[u8], pos: usize) -> Option<(u32, usize)> {
    let n = b[pos..]
        .iter()
        .take(10)
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    if n < 3 {
        return None;
    }
    let word = b[pos..pos + n].to_ascii_lowercase();
    let i = MONTHS
        .iter()
        .position(|m| m.as_bytes() == word.as_slice() || (n == 3 && m.as_bytes().starts_with(&word)))?;
    let mut end = pos + n;
    if b.get(end) == Some(&b'.') {
        end += 1;
    }
    Some((i as u32 + 1, end))
}

fn skip_sep(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos).is_some_and(|&c| matches!(c, b' ' | b',' | b'-')) && pos < b.len() {
        pos += 1;
    }
    pos
}

/// `12 March 1985`, `12-Mar-1985`, `March 12, 1985`, `12th March 1985`.
fn text_date(b: &[u8], pos: usize) -> Option<usize> {
    if let Some((d, ld)) = number(b, pos, 2) {
        let mut q = pos + ld;
        if b.get(q..q + 2)
            .is_some_and(|s| matches!(s, b"st" | b"nd" | b"rd" | b"th"))
        {
            q += 2;
        }
        let (m, q) = month_at(b, skip_sep(b, q))?;
        let ys = skip_sep(b, q);
        let (y, ly) = number(b, ys, 4)?;
        return (ly == 4 && date_valid(y, m, d)).then_some(ys + 4);
    }
    let (m, q) = month_at(b, pos)?;
    let ds = skip_sep(b, q);
    let (d, ld) = number(b, ds, 2)?;
    let mut q = ds + ld;
    if b.get(q..q + 2)
        .is_some_and(|s| matches!(s, b"st" | b"nd" | b"rd" | b"th"))
    {
        q += 2;
    }
    let ys = skip_sep(b, q);
    let (y, ly) = number(b, ys, 4)?;
    (ly == 4 && date_valid(y, m, d)).then_some(ys + 4)
}
