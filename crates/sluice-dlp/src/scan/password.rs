//! Passwords and secrets given after a keyword: `password: X`, `PWD=X`,
//! `"secret": "X"`, `the password is X`.
//!
//! The keyword may be the tail of a key name (`db_password`, `MYSQL_PWD`) but
//! not the head of a longer one (`password_reset`, `passwordHash`). An unquoted
//! value ends at whitespace, a quote, `<` or `&` (prose, HTML, URL queries), and
//! trailing sentence punctuation is dropped. Placeholders (`********`,
//! `<password>`, `${VAR}`, `{{ var }}`, `changeme`-style words) are not reported.

use super::{is_word, Ctx};
use crate::finding::{Confidence, Detector};
use crate::validate::{char_classes, entropy};

const MAX_VALUE: usize = 128;

/// Values that say "there is a password" rather than being one.
const STOPWORDS: &[&str] = &[
    "null",
    "none",
    "nil",
    "true",
    "false",
    "undefined",
    "required",
    "optional",
    "redacted",
    "hidden",
    "empty",
    "masked",
    "removed",
    "omitted",
    "unknown",
    "string",
    "value",
    "example",
    "sample",
    "placeholder",
    "incorrect",
    "invalid",
    "expired",
    "changeme",
    "reset",
];

fn placeholder(v: &[u8]) -> bool {
    let lower = v.to_ascii_lowercase();
    let text = String::from_utf8_lossy(&lower);
    v.iter().all(|&c| c == v[0])
        || v.iter()
            .all(|&c| matches!(c, b'*' | b'x' | b'X' | b'.' | b'#' | b'-' | b'_'))
        || v.starts_with(b"${")
        || v.starts_with(b"{{")
        || v.starts_with(b"%(")
        || v.starts_with(b"%s")
        || v.starts_with(b"{0")
        || (v[0] == b'$' && v.get(1).is_some_and(|c| c.is_ascii_alphabetic()))
        || (v[0] == b'{' && v.ends_with(b"}"))
        || (v[0] == b'[' && v.ends_with(b"]"))
        || text.contains("password")
        || text.contains("passwd")
        || text.contains("your_")
        || text.contains("your-")
        || text.starts_with("your")
        || STOPWORDS.contains(&text.as_ref())
}

/// `p..e` is the keyword as matched (any case).
pub(super) fn password(ctx: &mut Ctx<'_>, p: usize, e: usize) {
    let b = ctx.b;
    // The keyword must end the key name: `password_reset` or `passwordless` is
    // another word.
    if b.get(e).is_some_and(|&c| is_word(c) || c == b'-') {
        return;
    }
    // ... and not be the tail of an ordinary word (`cwd`, `topsecret` is fine).
    if p > 0 && b[p - 1].is_ascii_alphabetic() && e - p <= 3 {
        return;
    }
    let mut pos = e;
    let skip = |pos: &mut usize, set: &[u8]| {
        let mut n = 0;
        while n < 8 && b.get(*pos).is_some_and(|c| set.contains(c)) {
            *pos += 1;
            n += 1;
        }
    };
    skip(&mut pos, b"\"'");
    skip(&mut pos, b" \t");
    let prose = match b.get(pos) {
        Some(b':') => {
            pos += 1;
            if b.get(pos) == Some(&b'=') {
                pos += 1;
            }
            false
        }
        Some(b'=') => {
            pos += 1;
            if b.get(pos) == Some(&b'>') {
                pos += 1;
            }
            false
        }
        Some(b'i' | b'I') if b.get(pos + 1).is_some_and(|c| c.eq_ignore_ascii_case(&b's')) => {
            pos += 2;
            if b.get(pos) == Some(&b':') {
                pos += 1;
            }
            if !b.get(pos).is_some_and(|&c| c == b' ' || c == b'\t') {
                return;
            }
            true
        }
        _ => match b.get(pos..pos + 3) {
            // U+FF1A fullwidth colon, as typed with CJK input methods.
            Some([0xEF, 0xBC, 0x9A]) => {
                pos += 3;
                false
            }
            _ => return,
        },
    };
    skip(&mut pos, b" \t");
    let quote = b.get(pos).copied().filter(|c| matches!(c, b'"' | b'\'' | b'`'));
    let (vs, mut ve) = match quote {
        Some(q) => {
            let vs = pos + 1;
            let n = b[vs..]
                .iter()
                .take(MAX_VALUE + 1)
                .take_while(|&&c| c != q && c != b'\n')
                .count();
            if b.get(vs + n) != Some(&q) {
                return;
            }
            (vs, vs + n)
        }
        None => {
            let n = b[pos..]
                .iter()
                .take(MAX_VALUE + 1)
                .take_while(|&&c| !c.is_ascii_whitespace() && !matches!(c, b'"' | b'\'' | b'<' | b'&' | b'`'))
                .count();
            let mut ve = pos + n;
            while ve > pos && matches!(b[ve - 1], b'.' | b',' | b';' | b'!' | b'?' | b')' | b':') {
                ve -= 1;
            }
            (pos, ve)
        }
    };
    if ve - vs > MAX_VALUE {
        return;
    }
    // Never split a UTF-8 character: the value ends on a char boundary.
    while ve > vs && !ctx.text.is_char_boundary(ve) {
        ve -= 1;
    }
    let v = &b[vs..ve];
    let min_len = if prose { 6 } else { 4 };
    if v.len() < min_len || placeholder(v) {
        return;
    }
    let classes = char_classes(v);
    // In prose (`the password is stored in the vault`) a plain word is English,
    // not a password.
    if prose && classes < 2 {
        return;
    }
    let confidence = if (v.len() >= 8 && classes >= 3) || (v.len() >= 12 && entropy(v) >= 3.5) {
        Confidence::High
    } else if classes >= 2 && v.len() >= 6 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    ctx.push(Detector::Password, vs, ve, confidence, false);
}

/// Shortest and longest generic secret value.
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 256;

fn secret_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-' | b'.' | b'~')
}

/// A high-entropy value after a key name: `api_key = "..."`, `"access_token":
/// "..."`, `X-Api-Key: ...`, `Authorization: Bearer ...`. `p..e` is the key
/// name as matched (any case). The name may end an identifier (`STRIPE_API_KEY`)
/// but not start one (`api_key_id`, `token_url`).
pub(super) fn generic_secret(ctx: &mut Ctx<'_>, p: usize, e: usize) {
    let b = ctx.b;
    if b.get(e).is_some_and(|&c| is_word(c) || c == b'-') {
        return;
    }
    if p > 0 && b[p - 1].is_ascii_alphanumeric() && e - p <= 6 {
        // `mytoken` is a word; `MY_TOKEN` is a key name.
        return;
    }
    let bearer = b[p..e].eq_ignore_ascii_case(b"bearer");
    let mut pos = e;
    let skip = |pos: &mut usize, set: &[u8]| {
        let mut n = 0;
        while n < 8 && b.get(*pos).is_some_and(|c| set.contains(c)) {
            *pos += 1;
            n += 1;
        }
    };
    if bearer {
        if b.get(pos) != Some(&b' ') {
            return;
        }
        skip(&mut pos, b" ");
    } else {
        skip(&mut pos, b"\"'");
        skip(&mut pos, b" \t");
        match b.get(pos) {
            Some(b':') => {
                pos += 1;
                if b.get(pos) == Some(&b'=') {
                    pos += 1;
                }
            }
            Some(b'=') => {
                pos += 1;
                if b.get(pos) == Some(&b'>') {
                    pos += 1;
                }
            }
            _ => return,
        }
        skip(&mut pos, b" \t");
        // `Authorization: Bearer x` is handled from `bearer`.
        if b.get(pos..pos + 7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer "))
        {
            return;
        }
    }
    let quote = b.get(pos).copied().filter(|c| matches!(c, b'"' | b'\'' | b'`'));
    let vs = pos + usize::from(quote.is_some());
    let n = b[vs..]
        .iter()
        .take(MAX_SECRET + 1)
        .take_while(|&&c| secret_char(c))
        .count();
    let mut ve = vs + n;
    // Sentence punctuation after an unquoted value is not part of it.
    while ve > vs && matches!(b[ve - 1], b'.' | b'-' | b'~') {
        ve -= 1;
    }
    let v = &b[vs..ve];
    if !(MIN_SECRET..=MAX_SECRET).contains(&v.len()) {
        return;
    }
    if let Some(q) = quote {
        if b.get(ve) != Some(&q) {
            return;
        }
    }
    let classes = char_classes(v);
    let hex = v.iter().all(u8::is_ascii_hexdigit);
    let random = if hex {
        v.len() >= 32 && entropy(v) >= 3.0
    } else {
        classes >= 2 && entropy(v) >= 3.5
    };
    if !random || placeholder(v) || looks_like_words(v) {
        return;
    }
    let confidence = if entropy(v) >= 4.0 && (classes >= 3 || hex) {
        Confidence::High
    } else {
        Confidence::Medium
    };
    ctx.push(Detector::GenericSecret, vs, ve, confidence, false);
}

/// `my-secret-api-key-here`, `path/to/file.txt`: words joined by separators.
fn looks_like_words(v: &[u8]) -> bool {
    let parts = v
        .split(|&c| matches!(c, b'_' | b'-' | b'.' | b'/'))
        .filter(|p| !p.is_empty());
    let (mut n, mut wordy) = (0, 0);
    for part in parts {
        n += 1;
        if part.iter().all(u8::is_ascii_lowercase) || part.iter().all(u8::is_ascii_uppercase) {
            wordy += 1;
        }
    }
    n >= 2 && wordy == n
}
