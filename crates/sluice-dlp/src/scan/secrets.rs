//! Vendor credentials found from a literal prefix: AWS, GitHub, Slack, Stripe,
//! Google, PEM private keys, JWTs.
//!
//! Each validator gets the trigger position and re-checks the prefix with its
//! exact case, then anchors the length at both ends: a token is bounded by
//! characters outside its alphabet, whatever they are (space, quote, `&`, `,`,
//! `.`, `<`, CJK), so secrets in prose and in URLs are found, and a string of
//! the wrong length is not.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use super::{is_word, Ctx, PROXIMITY};
use crate::finding::{Confidence, Detector};
use crate::validate::{entropy, github_checksum_ok};

/// Length of the run of bytes from `pos` satisfying `f`.
fn run_len(b: &[u8], pos: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(pos..)
        .map_or(0, |rest| rest.iter().take_while(|&&c| f(c)).count())
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn prev_is(b: &[u8], p: usize, f: impl Fn(u8) -> bool) -> bool {
    p > 0 && f(b[p - 1])
}

pub(super) fn aws_key_id(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    if prev_is(b, p, alnum) {
        return;
    }
    let body = match b.get(p..p + 4) {
        Some(b"AKIA" | b"ASIA" | b"ABIA" | b"ACCA") => p + 4,
        Some(x) if x.starts_with(b"A3T") && (x[3].is_ascii_uppercase() || x[3].is_ascii_digit()) => p + 4,
        _ => return,
    };
    let end = body + 16;
    if run_len(b, body, |c| matches!(c, b'A'..=b'Z' | b'2'..=b'7')) < 16
        || b.get(end).is_some_and(|&c| alnum(c))
    {
        return;
    }
    let confidence = if entropy(&b[body..end]) >= 3.0 {
        Confidence::High
    } else {
        Confidence::Low
    };
    ctx.push(
        Detector::AwsAccessKey,
        p,
        end,
        confidence,
        b[p..end].ends_with(b"EXAMPLE"),
    );
    ctx.aws_key_ids.push((p, end));
}

/// A 40-character AWS secret access key inside `lo..hi`, bounded by characters
/// outside its alphabet, mixing cases and digits, with high entropy.
fn find_secret40(b: &[u8], lo: usize, hi: usize) -> Option<(usize, usize)> {
    let in_alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'/' || c == b'+';
    let mut i = lo;
    while i < hi {
        // A run of exactly 40 starting anywhere in `i..i + 40` holds the
        // byte at `i + 39`: where that byte is out of the alphabet (in
        // prose, nearly always) none does, and the next starts after it.
        if b.get(i + 39).is_some_and(|&c| !in_alphabet(c)) {
            i += 40;
            continue;
        }
        if !in_alphabet(b[i]) {
            i += 1;
            continue;
        }
        let n = run_len(b, i, in_alphabet);
        let glued = prev_is(b, i, in_alphabet) || b.get(i + n) == Some(&b'=');
        if n == 40 && !glued {
            let t = &b[i..i + 40];
            let lower = t.iter().any(u8::is_ascii_lowercase);
            let upper = t.iter().any(u8::is_ascii_uppercase);
            let other = t.iter().any(|c| !c.is_ascii_alphabetic());
            if lower && upper && other && entropy(t) >= 4.0 {
                return Some((i, i + 40));
            }
        }
        i += n;
    }
    None
}

pub(super) fn aws_secret_after_keyword(ctx: &mut Ctx<'_>, kw_end: usize) {
    let (_, hi) = ctx.window(kw_end, kw_end, PROXIMITY);
    if let Some((s, e)) = find_secret40(ctx.b, kw_end, hi) {
        let test = ctx.b[s..e].ends_with(b"EXAMPLEKEY");
        ctx.push(Detector::AwsSecretKey, s, e, Confidence::High, test);
    }
}

/// Secrets next to an access key id without a keyword: the usual paste of a
/// credentials pair.
pub(super) fn aws_secret_near_key_ids(ctx: &mut Ctx<'_>) {
    for (s, e) in std::mem::take(&mut ctx.aws_key_ids) {
        let (lo, hi) = ctx.window(s, e, PROXIMITY);
        for (from, to) in [(lo, s), (e, hi)] {
            if let Some((a, z)) = find_secret40(ctx.b, from, to) {
                let already = ctx
                    .hits
                    .iter()
                    .any(|h| h.detector == Detector::AwsSecretKey && h.start == a);
                if !already {
                    let test = ctx.b[a..z].ends_with(b"EXAMPLEKEY");
                    ctx.push(Detector::AwsSecretKey, a, z, Confidence::Medium, test);
                }
            }
        }
    }
}

pub(super) fn github_token(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    if !matches!(
        b.get(p..p + 4),
        Some(b"ghp_" | b"gho_" | b"ghu_" | b"ghs_" | b"ghr_")
    ) || prev_is(b, p, is_word)
    {
        return;
    }
    let body = &b[p + 4..];
    if run_len(body, 0, alnum) != 36 || body.get(36).is_some_and(|&c| is_word(c)) {
        return;
    }
    let body = &body[..36];
    let confidence = if github_checksum_ok(body) {
        Confidence::High
    } else if entropy(body) >= 3.0 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    ctx.push(Detector::GithubToken, p, p + 40, confidence, false);
}

pub(super) fn github_pat(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    if b.get(p..p + 11) != Some(b"github_pat_") || prev_is(b, p, is_word) {
        return;
    }
    let body_start = p + 11;
    if run_len(b, body_start, is_word) != 82 {
        return;
    }
    let body = &b[body_start..body_start + 82];
    // Fine-grained PATs are 22 characters, `_`, 59 characters.
    let confidence = if body[22] == b'_' && entropy(body) >= 3.5 {
        Confidence::High
    } else {
        Confidence::Medium
    };
    ctx.push(Detector::GithubToken, p, body_start + 82, confidence, false);
}

pub(super) fn slack(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    let Some(prefix) = b.get(p..p + 5) else { return };
    // `-` before counts as glued too, so `xoxb-xoxb-xoxb-...` is read once, not
    // once per prefix.
    if !(prefix.starts_with(b"xox") && matches!(prefix[3], b'a' | b'b' | b'p' | b'o' | b'r' | b's'))
        || prev_is(b, p, |c| is_word(c) || c == b'-')
    {
        return;
    }
    let mut n = run_len(b, p + 5, |c| alnum(c) || c == b'-');
    while n > 0 && b[p + 5 + n - 1] == b'-' {
        n -= 1;
    }
    if n < 10 {
        return;
    }
    let body = &b[p + 5..p + 5 + n];
    let parts: Vec<&[u8]> = body.split(|&c| c == b'-').collect();
    let digits =
        |s: &[u8], lo: usize, hi: usize| (lo..=hi).contains(&s.len()) && s.iter().all(u8::is_ascii_digit);
    let strict = match (prefix[3], parts.as_slice()) {
        (b'b', [a, c, t]) => digits(a, 10, 13) && digits(c, 10, 13) && t.len() >= 24,
        (b'p', [a, c, d, t]) => {
            digits(a, 8, 13)
                && digits(c, 8, 13)
                && digits(d, 8, 13)
                && t.len() == 32
                && t.iter().all(u8::is_ascii_hexdigit)
        }
        _ => false,
    };
    let confidence = if strict {
        Confidence::High
    } else if n >= 20 && parts.len() >= 2 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    ctx.push(Detector::SlackToken, p, p + 5 + n, confidence, false);
}

/// Longest Stripe key body: Stripe documents keys of up to 255 characters.
const MAX_STRIPE_BODY: usize = 247;

pub(super) fn stripe(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    let live = match b.get(p..p + 8) {
        Some(b"sk_live_" | b"rk_live_") => true,
        Some(b"sk_test_" | b"rk_test_") => false,
        _ => return,
    };
    if prev_is(b, p, is_word) {
        return;
    }
    let n = run_len(b, p + 8, alnum);
    if !(10..=MAX_STRIPE_BODY).contains(&n) || b.get(p + 8 + n) == Some(&b'_') {
        return;
    }
    let body = &b[p + 8..p + 8 + n];
    let strong = n >= 20 && entropy(body) >= 3.0;
    // Test-mode keys move no money but still open the account's API (its
    // customers, its test data, its webhooks): reported one step lower.
    let confidence = match (live, strong) {
        (true, true) => Confidence::High,
        (true, false) | (false, true) => Confidence::Medium,
        (false, false) => Confidence::Low,
    };
    ctx.push(Detector::StripeKey, p, p + 8 + n, confidence, false);
}

pub(super) fn google(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    let key_char = |c: u8| is_word(c) || c == b'-';
    if b.get(p..p + 4) != Some(b"AIza") || prev_is(b, p, key_char) || run_len(b, p + 4, key_char) != 35 {
        return;
    }
    let confidence = if entropy(&b[p + 4..p + 39]) >= 3.5 {
        Confidence::High
    } else {
        Confidence::Low
    };
    ctx.push(Detector::GoogleApiKey, p, p + 39, confidence, false);
}

/// Longest key block considered; real keys are under 4 KiB (RSA-8192 ~6.5 KiB).
const MAX_PEM: usize = 16 * 1024;

pub(super) fn private_key(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    if b.get(p..p + 11) != Some(b"-----BEGIN ") {
        return;
    }
    let label_start = p + 11;
    let label_len = run_len(b, label_start, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    });
    let label = &b[label_start..label_start + label_len];
    if label_len > 100 || !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) {
        return;
    }
    let header_end = label_start + label_len + 5;
    if b.get(label_start + label_len..header_end) != Some(b"-----") {
        return;
    }
    // The next END line, whatever its label: a key block cannot contain one.
    // Found through a cursor that only moves forward, so a text of many BEGIN
    // lines without END costs one pass, not one search per header.
    let next_end = match ctx.pem_end {
        Some((from, found)) if from <= header_end && found.is_none_or(|f| f >= header_end) => found,
        _ => {
            let found = ctx.text[header_end..].find("-----END ").map(|o| header_end + o);
            ctx.pem_end = Some((header_end, found));
            found
        }
    };
    let mut end_marker = Vec::with_capacity(label_len + 14);
    end_marker.extend_from_slice(b"-----END ");
    end_marker.extend_from_slice(label);
    end_marker.extend_from_slice(b"-----");
    let found = next_end
        .filter(|&e| e - header_end <= MAX_PEM && b[e..].starts_with(&end_marker))
        .map(|e| e - header_end);
    match found {
        Some(off) => {
            let body = &b[header_end..header_end + off];
            let payload = body.iter().filter(|c| !c.is_ascii_whitespace()).count();
            let confidence = if payload >= 64 {
                Confidence::High
            } else {
                Confidence::Low
            };
            ctx.push(
                Detector::PrivateKey,
                p,
                header_end + off + end_marker.len(),
                confidence,
                false,
            );
        }
        // A header without its END line is a truncated paste: still a key.
        None => ctx.push(Detector::PrivateKey, p, header_end, Confidence::Low, false),
    }
}

/// The JWT of jwt.io's debugger, copied into countless documents.
const JWT_IO_SIGNATURE: &[u8] = b"SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

/// JWT parts are base64url, unpadded as RFC 7519 asks or padded as some
/// encoders write them; a few leave stray bits in the last character.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn json_object(part: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(&BASE64URL.decode(part).ok()?).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

pub(super) fn jwt(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    let b64 = |c: u8| is_word(c) || c == b'-';
    if b.get(p..p + 3) != Some(b"eyJ") || prev_is(b, p, b64) {
        return;
    }
    let h = run_len(b, p, b64);
    if h < 10 || b.get(p + h) != Some(&b'.') {
        return;
    }
    let ps = p + h + 1;
    let pl = run_len(b, ps, b64);
    if pl < 2 || b.get(ps + pl) != Some(&b'.') {
        return;
    }
    let ss = ps + pl + 1;
    let sl = run_len(b, ss, b64);
    let end = ss + sl;
    // A fourth part means JWE or something else dotted; a sentence's full stop is fine.
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(|&c| b64(c)) {
        return;
    }
    let Some(header) = json_object(&b[p..p + h]) else {
        return;
    };
    if !header.get("alg").is_some_and(serde_json::Value::is_string) {
        return;
    }
    let payload = json_object(&b[ps..ps + pl]).is_some();
    let confidence = match (payload, sl > 0) {
        (true, true) => Confidence::High,
        (true, false) => Confidence::Medium,
        _ => Confidence::Low,
    };
    ctx.push(Detector::Jwt, p, end, confidence, &b[ss..end] == JWT_IO_SIGNATURE);
}

fn base64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

/// An Azure storage account key: 86 base64 characters and `==` (64 bytes).
fn azure_key_at(b: &[u8], pos: usize) -> Option<usize> {
    let n = run_len(b, pos, base64_char);
    let end = pos + 88;
    (n == 86
        && b.get(pos + 86..end) == Some(b"==")
        && !b.get(end).is_some_and(|&c| base64_char(c) || c == b'='))
    .then_some(end)
}

/// `AccountKey=` of a connection string
/// (`DefaultEndpointsProtocol=https;AccountName=x;AccountKey=...;`).
pub(super) fn azure_account_key(ctx: &mut Ctx<'_>, p: usize, e: usize) {
    let b = ctx.b;
    if !b[p..e].eq_ignore_ascii_case(b"accountkey=") || prev_is(b, p, alnum) {
        return;
    }
    if let Some(end) = azure_key_at(b, e) {
        // In a connection string (an `AccountName=` on the same line before
        // it) the key is certain; alone, the name `AccountKey=` still says so.
        let lo = b[..p]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1)
            .max(p.saturating_sub(512));
        let in_connection_string = memchr::memmem::find(&b[lo..p], b"AccountName=").is_some();
        let confidence = if in_connection_string || entropy(&b[e..end]) >= 4.5 {
            Confidence::High
        } else {
            Confidence::Medium
        };
        ctx.push(Detector::AzureStorageKey, e, end, confidence, false);
    }
}

/// A bare storage key after `AZURE_STORAGE_KEY`, `storage account key`, ...
pub(super) fn azure_key_after_keyword(ctx: &mut Ctx<'_>, e: usize) {
    let (_, hi) = ctx.window(e, e, 100);
    let b = ctx.b;
    let mut i = e;
    while i < hi {
        if base64_char(b[i]) && !prev_is(b, i, base64_char) {
            if let Some(end) = azure_key_at(b, i) {
                if entropy(&b[i..end]) >= 4.5 {
                    ctx.push(Detector::AzureStorageKey, i, end, Confidence::Medium, false);
                }
                return;
            }
        }
        i += 1;
    }
}

/// `"private_key_id": "<40 hex>"` of a GCP service-account key file.
pub(super) fn gcp_private_key_id(ctx: &mut Ctx<'_>, p: usize, e: usize) {
    let b = ctx.b;
    if &b[p..e] != b"\"private_key_id\"" {
        return;
    }
    let mut pos = e;
    while b.get(pos).is_some_and(|&c| c == b' ' || c == b'\t') {
        pos += 1;
    }
    if b.get(pos) != Some(&b':') {
        return;
    }
    pos += 1;
    while b.get(pos).is_some_and(|&c| c.is_ascii_whitespace()) {
        pos += 1;
    }
    if b.get(pos) != Some(&b'"') {
        return;
    }
    let vs = pos + 1;
    if run_len(b, vs, |c| c.is_ascii_hexdigit()) != 40 || b.get(vs + 40) != Some(&b'"') {
        return;
    }
    // The key file says what it is: `"type": "service_account"`, within 4 KiB.
    let service_account = ctx.service_account_near(p, 4096);
    let confidence = if service_account {
        Confidence::High
    } else {
        Confidence::Medium
    };
    ctx.push(Detector::GcpServiceAccount, vs, vs + 40, confidence, false);
}

/// The base64 of "OpenAI" that OpenAI embeds in its API keys.
const OPENAI_MARKER: &[u8] = b"T3BlbkFJ";

/// `sk-` + `proj-`/`svcacct-`/`admin-` or nothing + the key body.
pub(super) fn openai(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    let key_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    if b.get(p..p + 3) != Some(b"sk-") || prev_is(b, p, key_char) {
        return;
    }
    let n = run_len(b, p + 3, key_char);
    let body = &b[p + 3..p + 3 + n];
    if !(32..=256).contains(&n) {
        return;
    }
    let project = [&b"proj-"[..], b"svcacct-", b"admin-"]
        .iter()
        .any(|k| body.starts_with(k));
    let marked = memchr::memmem::find(body, OPENAI_MARKER).is_some();
    let confidence = if marked {
        Confidence::High
    } else if project && entropy(body) >= 4.0 {
        Confidence::Medium
    } else if n == 48 && body.iter().all(u8::is_ascii_alphanumeric) && entropy(body) >= 4.0 {
        Confidence::Low
    } else {
        return;
    };
    ctx.push(Detector::OpenaiKey, p, p + 3 + n, confidence, false);
}

/// `npm_` + 36 base62 characters; the last six are the CRC-32 of the rest,
/// as in GitHub's tokens.
pub(super) fn npm(ctx: &mut Ctx<'_>, p: usize) {
    let b = ctx.b;
    if b.get(p..p + 4) != Some(b"npm_") || prev_is(b, p, is_word) {
        return;
    }
    if run_len(b, p + 4, alnum) != 36 || b.get(p + 40).is_some_and(|&c| is_word(c)) {
        return;
    }
    let body = &b[p + 4..p + 40];
    let confidence = if github_checksum_ok(body) {
        Confidence::High
    } else if entropy(body) >= 3.0 {
        Confidence::Medium
    } else {
        Confidence::Low
    };
    ctx.push(Detector::NpmToken, p, p + 40, confidence, false);
}
