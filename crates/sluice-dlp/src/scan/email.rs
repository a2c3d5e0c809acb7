//! Email addresses, found from their `@`.
//!
//! The local part is read backwards and the domain forwards from the `@`, so the
//! automaton needs only one byte. Not reported: URL credentials
//! (`https://token@host`, `user:pass@host`), scp-style `git@host:path`, and
//! domains without an alphabetic top-level label.

use super::keywords::Keyword;
use super::{Ctx, PROXIMITY};
use crate::finding::{Confidence, Detector};

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

pub(super) fn email(ctx: &mut Ctx<'_>, at: usize) {
    let b = ctx.b;
    let mut s = at;
    while s > 0 && is_local(b[s - 1]) && at - s < 64 {
        s -= 1;
    }
    if s > 0 && is_local(b[s - 1]) {
        return;
    }
    while s < at && b[s] == b'.' {
        s += 1;
    }
    if s == at || b[at - 1] == b'.' {
        return;
    }
    if s > 0 && matches!(b[s - 1], b':' | b'/') {
        let mailto =
            b[s - 1] == b':' && b[..s - 1].len() >= 6 && b[s - 7..s - 1].eq_ignore_ascii_case(b"mailto");
        if !mailto {
            return;
        }
    }
    let mut pos = at + 1;
    let mut end = None;
    let mut tld = (0, 0);
    let mut labels = 0;
    loop {
        let ls = pos;
        while pos < b.len() && is_label(b[pos]) {
            pos += 1;
        }
        if pos == ls || pos - ls > 63 || b[ls] == b'-' || b[pos - 1] == b'-' {
            break;
        }
        labels += 1;
        end = Some(pos);
        tld = (ls, pos);
        if b.get(pos) == Some(&b'.') && b.get(pos + 1).is_some_and(|&c| is_label(c)) {
            pos += 1;
        } else {
            break;
        }
    }
    let Some(end) = end else { return };
    let tld = &b[tld.0..tld.1];
    let tld_ok =
        (2..=24).contains(&tld.len()) && tld.iter().all(u8::is_ascii_alphabetic) || tld.starts_with(b"xn--");
    if labels < 2 || !tld_ok {
        return;
    }
    // `git@github.com:org/repo.git` and `user@host/path` are not addresses.
    if b.get(end) == Some(&b'/')
        || (b.get(end) == Some(&b':') && b.get(end + 1).is_some_and(|c| !c.is_ascii_whitespace()))
    {
        return;
    }
    let confidence = if ctx.near(Keyword::Email, s, end, PROXIMITY) {
        Confidence::High
    } else {
        Confidence::Medium
    };
    ctx.push(Detector::EmailAddress, s, end, confidence, false);
}
