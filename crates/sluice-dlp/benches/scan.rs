//! Throughput of the scanner, single-threaded (so MB/s is per core).
//!
//! Run: `cargo bench -p sluice-dlp --bench scan [plain|prose|mixed|edm]`. MB/s
//! is per second of this thread's CPU time, so other work on the machine
//! does not count against the scanner. Generated corpora:
//! - plain text: business prose with numbers (dates, amounts, invoice and
//!   order numbers, times, IPs) and a sensitive value every ~2 KB, through
//!   `scan_text`;
//! - mixed mail: MIME messages with text and HTML alternatives and base64
//!   attachments (CSV, .docx, .xlsx, .zip made in memory), through
//!   `scan_message`; MB/s counts raw message bytes;
//! - edm: hashing a million exact-data-match values, then the mixed mail with
//!   a set of a thousand and of a million values.
//!
//! `scan mixed xlsx` (or `csv`, `docx`, `zip`) measures one attachment kind
//! alone. `SCAN_ROUNDS=N` runs each measurement exactly N rounds instead of for a
//! few seconds, so that `perf stat` over two values of N gives the work of
//! the rounds alone (instructions, cycles), free of the corpus generation.

#[path = "../src/extract/zip_writer.rs"]
#[allow(dead_code)]
mod zip_writer;

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine;
use sluice_dlp::{
    scan_message, scan_message_with, scan_text, EdmDigests, EdmSet, Finding, Location, ScanLimits, Scanner,
};

/// Deterministic generator (xorshift) so figures are comparable between runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they",
    "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when",
    "will", "would", "who", "so", "no", "meeting", "quarter", "invoice", "customer", "shipment", "please",
    "attached", "report", "regards", "team", "schedule", "budget", "review", "account", "update", "project",
    "Monday", "Tuesday", "contract", "delivery", "payment", "order", "support", "ticket", "release",
    "server",
];

const SENSITIVE: &[&str] = &[
    "card 4556 7375 8689 9855 exp 12/27",
    "SSN 536-22-1234",
    "IBAN DE89 3704 0044 0532 0130 00",
    "routing number 021000021",
    "mail jane.doe@example.com",
    "Tel: +44 20 7946 0958",
    "AKIAQYLPMN5HFIQR7BXZ",
    "password: Tr0ub4dor&3",
    "token ghp_Xq7Lm2Rt9Vb4Nc8Kp3Ws6Hd1Fg5Jz0AeAAAAAA",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
];

fn number_noise(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => format!("2024-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
        1 => format!("${}.{:02}", rng.below(100_000), rng.below(100)),
        2 => format!("INV-{}", 100_000 + rng.below(900_000)),
        3 => format!("{:02}:{:02}", rng.below(24), rng.below(60)),
        4 => format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.below(256)),
        5 => format!("order {}", rng.next() % 10_000_000_000),
        6 => format!("{}%", rng.below(100)),
        _ => format!("#{}", rng.below(1000)),
    }
}

fn plain_corpus(bytes: usize, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(bytes + 256);
    let mut since = 0;
    while s.len() < bytes {
        let before = s.len();
        match rng.below(20) {
            0 => s.push_str(&number_noise(rng)),
            1 => s.push_str(".\n"),
            _ => s.push_str(rng.pick(WORDS)),
        }
        s.push(' ');
        since += s.len() - before;
        if since > 2048 {
            s.push_str(rng.pick(SENSITIVE));
            s.push(' ');
            since = 0;
        }
    }
    s
}

/// Base64 in lines of 76 characters, as mail agents write attachments.
fn base64(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    lines.join("\r\n")
}

fn docx(text: &str) -> Vec<u8> {
    let paras: String = text
        .split('\n')
        .map(|p| format!("<w:p><w:r><w:t>{p}</w:t></w:r></w:p>"))
        .collect();
    let xml = format!("<w:document><w:body>{paras}</w:body></w:document>");
    zip_writer::build(&[
        ("[Content_Types].xml", b"<Types/>", true),
        ("word/document.xml", xml.as_bytes(), true),
    ])
}

fn xlsx(text: &str) -> Vec<u8> {
    let strings: String = text.split(' ').map(|w| format!("<si><t>{w}</t></si>")).collect();
    let xml = format!("<sst>{strings}</sst>");
    zip_writer::build(&[
        ("[Content_Types].xml", b"<Types/>", true),
        ("xl/sharedStrings.xml", xml.as_bytes(), true),
    ])
}

fn message(rng: &mut Rng, i: usize) -> Vec<u8> {
    let body = plain_corpus(4_000 + rng.below(8_000), rng);
    let html = format!(
        "<html><body><p>{}</p></body></html>",
        body.replace('\n', "</p><p>")
    );
    let attachment = plain_corpus(20_000 + rng.below(40_000), rng);
    let (name, ctype, data) = match i % 4 {
        0 => ("data.csv", "text/csv", attachment.replace(' ', ",").into_bytes()),
        1 => (
            "report.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            docx(&attachment),
        ),
        2 => (
            "sheet.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            xlsx(&attachment),
        ),
        _ => (
            "bundle.zip",
            "application/zip",
            zip_writer::build(&[("notes.txt", attachment.as_bytes(), true)]),
        ),
    };
    format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: report {i}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\n--M\r\n\
         Content-Type: multipart/alternative; boundary=\"A\"\r\n\r\n\
         --A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
         --A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--A--\r\n\
         --M\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n--M--\r\n",
        base64(&data)
    )
    .into_bytes()
}

/// Exact data match: hashing a million values, and scanning the mixed mail
/// with a set of a thousand values and of a million (the same cost expected).
fn edm(messages: &[Vec<u8>]) {
    let values: Vec<String> = (0..1_000_000u32).map(|i| format!("ACC-{:07}", i * 3)).collect();
    let salt = [42u8; 16];
    let start = Instant::now();
    let (million, _) = EdmDigests::hash(&salt, values.iter().map(String::as_str));
    let big = EdmSet::new("accounts", &million).expect("set");
    println!(
        "edm load   : {:>6.2} s for {} values (hash and index)",
        start.elapsed().as_secs_f64(),
        big.len()
    );
    let (thousand, _) = EdmDigests::hash(&salt, values[..1000].iter().map(String::as_str));
    let small = EdmSet::new("accounts", &thousand).expect("set");
    let total: usize = messages.iter().map(Vec::len).sum();
    let limits = ScanLimits::default();
    for (label, set) in [("1k values", small), ("1M values", big)] {
        let scanner = Scanner::new(Vec::new(), vec![set]);
        let (mbps, n) = measure(total, Duration::from_secs(3), || {
            messages
                .iter()
                .map(|m| scan_message_with(m, &limits, &scanner).findings.len())
                .sum()
        });
        println!("mixed + edm: {mbps} ({label}, {n} findings)");
    }
}

/// CPU time this thread has run, from the scheduler (`/proc/thread-self/schedstat`,
/// nanoseconds on CPU). On a machine shared with other builds, wall time
/// measures the load; CPU time measures the scanner. `None` off Linux.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Run `f` over `bytes` total for at least `min` time; return MB/s per CPU
/// second (wall second where CPU time is unknown), over all rounds and in the
/// fastest round, and the findings. On a loaded machine the fastest round is
/// the steadier figure for comparing two builds: interference only slows a
/// round down.
fn measure(bytes: usize, min: Duration, mut f: impl FnMut() -> usize) -> (Rate, usize) {
    let mut findings = f(); // warm-up (builds the automatons)
    let clock = || thread_cpu().unwrap_or_else(|| START.with(Instant::elapsed));
    // A fixed number of rounds (`SCAN_ROUNDS=N`) for counting instructions
    // or cycles with a profiler: two runs with different N differ by exactly
    // N rounds of work.
    let fixed: Option<u32> = std::env::var("SCAN_ROUNDS").ok().and_then(|n| n.parse().ok());
    let start = Instant::now();
    let mut rounds = 0u32;
    let mut total = Duration::ZERO;
    let mut fastest = Duration::MAX;
    while fixed.map_or(start.elapsed() < min || rounds == 0, |n| rounds < n.max(1)) {
        let before = clock();
        findings = black_box(f());
        let took = clock() - before;
        total += took;
        fastest = fastest.min(took);
        rounds += 1;
    }
    let rate = |secs: f64| bytes as f64 / secs.max(1e-9) / 1e6;
    let mean = rate(total.as_secs_f64() / f64::from(rounds));
    (
        Rate {
            mean,
            best: rate(fastest.as_secs_f64()),
        },
        findings,
    )
}

thread_local! {
    static START: Instant = Instant::now();
}

/// MB/s per CPU second: over all rounds and in the fastest one.
#[derive(Clone, Copy)]
struct Rate {
    mean: f64,
    best: f64,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6.1} MB/s per core (best round {:>6.1})",
            self.mean, self.best
        )
    }
}

fn main() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let min = Duration::from_secs(3);
    // `cargo bench -p sluice-dlp --bench scan -- mixed` runs one corpus (for a
    // profiler); by default all three.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);

    let text = plain_corpus(16 << 20, &mut rng);
    if wanted("plain") {
        let (mbps, n) = measure(text.len(), min, || scan_text(&text, Location::Body).len());
        println!(
            "plain text : {} ({} MB, {n} findings, digest {:08x})",
            mbps,
            text.len() >> 20,
            digest(scan_text(&text, Location::Body))
        );
    }

    if wanted("prose") {
        let prose: String = (0..(16 << 20) / 6)
            .map(|i| WORDS[i % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ");
        let (mbps, n) = measure(prose.len(), min, || scan_text(&prose, Location::Body).len());
        println!("clean prose: {} ({} MB, {n} findings)", mbps, prose.len() >> 20);
    }

    let messages: Vec<Vec<u8>> = (0..200).map(|i| message(&mut rng, i)).collect();
    if wanted("edm") {
        edm(&messages);
    }
    if !wanted("mixed") {
        return;
    }
    let limits = ScanLimits::default();
    let all: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    // `mixed xlsx` (or another kind) measures that kind alone, for a profiler.
    let kinds = ["csv", "docx", "xlsx", "zip"];
    let one_kind = kinds.iter().any(|k| only.iter().any(|o| o == k));
    if !one_kind {
        mixed("mixed mail", &all, &limits, min);
    }
    // The attachment kinds in turn (message i carries kind i % 4).
    for (k, kind) in kinds.into_iter().enumerate() {
        if one_kind && !wanted(kind) {
            continue;
        }
        let some: Vec<&[u8]> = all.iter().skip(k).step_by(4).copied().collect();
        mixed(
            &format!("  + {kind}"),
            &some,
            &limits,
            if one_kind { min } else { min / 3 },
        );
    }
    let findings = all.iter().flat_map(|m| scan_message(m, &limits).findings);
    println!("mixed mail findings digest: {:08x}", digest(findings));
}

/// Scan `messages` and print MB/s (raw bytes) and messages per CPU second.
fn mixed(label: &str, messages: &[&[u8]], limits: &ScanLimits, min: Duration) {
    let total: usize = messages.iter().map(|m| m.len()).sum();
    let (mbps, n) = measure(total, min, || {
        messages
            .iter()
            .map(|m| scan_message(m, limits).findings.len())
            .sum()
    });
    let per_message = total as f64 / messages.len() as f64;
    println!(
        "{label:<11}: {mbps}, {:>5.0} msgs/s ({} messages, {:.1} MB raw, {n} findings)",
        mbps.mean * 1e6 / per_message,
        messages.len(),
        total as f64 / 1e6
    );
}

/// A CRC-32 of the findings as JSON, in order: two builds that print the same
/// digest found exactly the same things (a speed change must not move it).
fn digest(findings: impl IntoIterator<Item = Finding>) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for f in findings {
        crc.update(&serde_json::to_vec(&f).expect("a finding serialises"));
    }
    crc.finalize()
}
