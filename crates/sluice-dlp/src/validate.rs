//! Validators: the checks that turn a candidate shape into a finding.
//!
//! Pure functions over ASCII digits or bytes; no allocation on the hot path.
//! Each one is strict on purpose: a detector reports only what passes here, so
//! precision comes from these functions and recall from the scanners that feed them.

/// Luhn (mod 10) over ASCII digits; `false` for an empty input or a non-digit.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// The leading `n` digits as a number (n <= 6 so it never overflows).
fn prefix(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// Payment card brands, for the grouping rules that depend on the issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Diners,
    Jcb,
    UnionPay,
    Maestro,
    RuPay,
    Mir,
}

/// The brand whose issuer prefixes and lengths fit `digits` (ASCII), if any.
///
/// Ranges from the issuers' published tables (ISO/IEC 7812 IINs as listed by the
/// brands). Order matters where ranges overlap: the more specific prefix first.
pub(crate) fn card_brand(digits: &[u8]) -> Option<Brand> {
    let len = digits.len();
    if !(12..=19).contains(&len) {
        return None;
    }
    let p1 = prefix(digits, 1);
    let p2 = prefix(digits, 2);
    let p3 = prefix(digits, 3);
    let p4 = prefix(digits, 4);
    let p6 = prefix(digits, 6);
    if p2 == 34 || p2 == 37 {
        (len == 15).then_some(Brand::Amex)
    } else if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 || p3 == 309 {
        (14..=19).contains(&len).then_some(Brand::Diners)
    } else if (3528..=3589).contains(&p4) {
        (16..=19).contains(&len).then_some(Brand::Jcb)
    } else if p1 == 4 {
        matches!(len, 13 | 16 | 19).then_some(Brand::Visa)
    } else if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        (len == 16).then_some(Brand::Mastercard)
    } else if (2200..=2204).contains(&p4) {
        (16..=19).contains(&len).then_some(Brand::Mir)
    } else if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6) {
        (16..=19).contains(&len).then_some(Brand::Discover)
    } else if p2 == 62 || p2 == 81 {
        (16..=19).contains(&len).then_some(Brand::UnionPay)
    } else if p2 == 60 || p3 == 508 || p2 == 82 {
        (len == 16).then_some(Brand::RuPay)
    } else if matches!(p4, 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763) {
        (13..=19).contains(&len).then_some(Brand::Maestro)
    } else {
        None
    }
}

/// Issuers' and payment processors' published test card numbers.
const TEST_CARDS: &[&str] = &[
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4222222222222",
    "4000056655665556",
    "4000000000000002",
    "4000000000000077",
    "4000000000003220",
    "4917610000000000",
    "5555555555554444",
    "5105105105105100",
    "5200828282828210",
    "5454545454545454",
    "2223003122003222",
    "2223000048400011",
    "378282246310005",
    "371449635398431",
    "378734493671000",
    "6011111111111117",
    "6011000990139424",
    "6011000000000004",
    "30569309025904",
    "38520000023237",
    "36227206271667",
    "3530111333300000",
    "3566002020360505",
    "3566111111111113",
    "6200000000000005",
    "6205500000000000004",
];

/// `digits` is a published test card number.
pub(crate) fn is_test_card(digits: &[u8]) -> bool {
    TEST_CARDS.iter().any(|t| t.as_bytes() == digits)
}

/// US SSN rules (SSA): area not 000, 666 or 900-999; group not 00; serial not 0000.
pub(crate) fn ssn_valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    if area.len() != 3 || group.len() != 2 || serial.len() != 4 {
        return false;
    }
    let a = prefix(area, 3);
    let g = prefix(group, 2);
    let s = prefix(serial, 4);
    a != 0 && a != 666 && a < 900 && g != 0 && s != 0
}

/// Published sample SSNs (the Woolworth card, SSA pamphlets, 123-45-6789) and
/// one-digit repeats, tagged rather than dropped.
pub(crate) fn is_test_ssn(digits: &[u8]) -> bool {
    const SAMPLES: &[&[u8]] = &[b"123456789", b"078051120", b"219099999", b"457555462"];
    SAMPLES.contains(&digits) || digits.iter().all(|&d| d == digits[0])
}

/// IBAN length by country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// The IBAN length of a country code, if the country issues IBANs.
pub(crate) fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == country)
        .map(|&(_, n)| n)
}

/// ISO 13616 check: compact IBAN (no spaces, upper case) of the country's
/// length whose rearranged numeric form is 1 mod 97.
pub(crate) fn iban_valid(compact: &[u8]) -> bool {
    if compact.len() < 5 || iban_length(&compact[..2]) != Some(compact.len()) {
        return false;
    }
    if !compact[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        match c {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// Example IBANs from the IBAN registry and bank documentation.
pub(crate) fn is_test_iban(compact: &[u8]) -> bool {
    const SAMPLES: &[&[u8]] = &[
        b"DE89370400440532013000",
        b"GB82WEST12345698765432",
        b"GB29NWBK60161331926819",
        b"GB33BUKB20201555555555",
        b"FR1420041010050500013M02606",
        b"FR7630006000011234567890189",
        b"NL91ABNA0417164300",
        b"CH9300762011623852957",
        b"ES9121000418450200051332",
        b"IT60X0542811101000000123456",
        b"BE68539007547034",
    ];
    SAMPLES.contains(&compact)
}

/// ABA routing number: Federal Reserve prefix ranges (00-12, 21-32, 61-72, 80)
/// and the 3-7-1 checksum over nine ASCII digits; all zeros is rejected.
pub(crate) fn aba_valid(digits: &[u8]) -> bool {
    if digits.len() != 9 || !digits.iter().all(u8::is_ascii_digit) || digits.iter().all(|&d| d == b'0') {
        return false;
    }
    let p = prefix(digits, 2);
    if !(p <= 12 || (21..=32).contains(&p) || (61..=72).contains(&p) || p == 80) {
        return false;
    }
    let d = |i: usize| u32::from(digits[i] - b'0');
    let sum = 3 * (d(0) + d(3) + d(6)) + 7 * (d(1) + d(4) + d(7)) + (d(2) + d(5) + d(8));
    sum.is_multiple_of(10)
}

/// North American Numbering Plan: area code `[2-9][0-8][0-9]` and not
/// `N11` (service codes); exchange `[2-9][0-9][0-9]` and not `N11`.
pub(crate) fn nanp_valid(area: &[u8], exchange: &[u8]) -> bool {
    let n11 = |d: &[u8]| d[1] == b'1' && d[2] == b'1';
    area.len() == 3
        && exchange.len() == 3
        && area.iter().chain(exchange).all(u8::is_ascii_digit)
        && area[0] >= b'2'
        && area[1] != b'9'
        && !n11(area)
        && exchange[0] >= b'2'
        && !n11(exchange)
}

/// UK National Insurance number prefix (HMRC): first letter not D, F, I, Q,
/// U, V; second not D, F, I, O, Q, U, V; not BG, GB, KN, NK, NT, TN, ZZ.
pub(crate) fn nino_prefix_valid(a: u8, b: u8) -> bool {
    a.is_ascii_uppercase()
        && b.is_ascii_uppercase()
        && !b"DFIQUV".contains(&a)
        && !b"DFIOQUV".contains(&b)
        && !matches!(&[a, b], b"BG" | b"GB" | b"KN" | b"NK" | b"NT" | b"TN" | b"ZZ")
}

/// Canadian SIN: nine digits, Luhn, first digit not 0 or 8 (unassigned).
pub(crate) fn sin_valid(digits: &[u8]) -> bool {
    digits.len() == 9 && !matches!(digits[0], b'0' | b'8') && luhn(digits)
}

/// The check letter of a Spanish DNI number (mod 23, Ministerio del Interior).
pub(crate) fn dni_letter(number: u32) -> u8 {
    b"TRWAGMYFPDXBNJZSQVHLCKE"[(number % 23) as usize]
}

/// Verhoeff check (Aadhaar): the dihedral group D5 tables.
pub(crate) fn verhoeff(digits: &[u8]) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut c = 0u8;
    for (i, &d) in digits.iter().rev().enumerate() {
        c = D[usize::from(c)][usize::from(P[i % 8][usize::from(d - b'0')])];
    }
    c == 0
}

/// A calendar date (Gregorian leap years), year 1900-2099.
pub(crate) fn date_valid(year: u32, month: u32, day: u32) -> bool {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1900..=2099).contains(&year) && (1..=days).contains(&day)
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// How many of lower case, upper case, digit and other characters `s` uses.
pub(crate) fn char_classes(s: &[u8]) -> usize {
    let (mut lo, mut up, mut di, mut ot) = (false, false, false, false);
    for &b in s {
        match b {
            b'a'..=b'z' => lo = true,
            b'A'..=b'Z' => up = true,
            b'0'..=b'9' => di = true,
            _ => ot = true,
        }
    }
    [lo, up, di, ot].iter().filter(|&&x| x).count()
}

/// GitHub's classic token checksum: the last 6 characters are the base62
/// (0-9A-Za-z) CRC-32 of the 30 random characters before them.
pub(crate) fn github_checksum_ok(body: &[u8]) -> bool {
    if body.len() != 36 {
        return false;
    }
    let (random, check) = body.split_at(30);
    let mut value = 0u64;
    for &c in check {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            b'a'..=b'z' => c - b'a' + 36,
            _ => return false,
        };
        value = value * 62 + u64::from(v);
    }
    value == u64::from(crc32fast::hash(random))
}

#[cfg(test)]
pub(crate) fn github_checksum_encode(random: &[u8]) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut v = u64::from(crc32fast::hash(random));
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_valid_and_invalid() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b""));
        assert!(!luhn(b"41x1"));
    }

    #[test]
    fn brands_prefixes_and_lengths() {
        assert_eq!(card_brand(b"4111111111111111"), Some(Brand::Visa));
        assert_eq!(card_brand(b"4222222222222"), Some(Brand::Visa));
        assert_eq!(card_brand(b"411111111111111"), None, "15-digit Visa");
        assert_eq!(card_brand(b"2223003122003222"), Some(Brand::Mastercard));
        assert_eq!(card_brand(b"2720990000000007"), Some(Brand::Mastercard));
        assert_eq!(card_brand(b"2721000000000000"), None, "past the 2-series");
        assert_eq!(card_brand(b"5555555555554444"), Some(Brand::Mastercard));
        assert_eq!(card_brand(b"378282246310005"), Some(Brand::Amex));
        assert_eq!(card_brand(b"3782822463100050"), None, "16-digit Amex");
        assert_eq!(card_brand(b"30569309025904"), Some(Brand::Diners));
        assert_eq!(card_brand(b"3530111333300000"), Some(Brand::Jcb));
        assert_eq!(card_brand(b"6011111111111117"), Some(Brand::Discover));
        assert_eq!(card_brand(b"6200000000000005"), Some(Brand::UnionPay));
        assert_eq!(card_brand(b"1234567812345670"), None);
        assert_eq!(card_brand(b"99999999999999999999"), None);
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(b"536", b"22", b"1234"));
        assert!(!ssn_valid(b"000", b"22", b"1234"));
        assert!(!ssn_valid(b"666", b"22", b"1234"));
        assert!(!ssn_valid(b"900", b"22", b"1234"));
        assert!(!ssn_valid(b"999", b"22", b"1234"));
        assert!(!ssn_valid(b"536", b"00", b"1234"));
        assert!(!ssn_valid(b"536", b"22", b"0000"));
        assert!(ssn_valid(b"899", b"01", b"0001"));
        assert!(is_test_ssn(b"123456789"));
        assert!(is_test_ssn(b"888888888"));
        assert!(!is_test_ssn(b"536221234"));
    }

    #[test]
    fn iban_checksum_and_length() {
        assert!(iban_valid(b"DE89370400440532013000"));
        assert!(iban_valid(b"GB82WEST12345698765432"));
        assert!(iban_valid(b"NO9386011117947"));
        assert!(!iban_valid(b"DE89370400440532013001"), "bad check");
        assert!(!iban_valid(b"DE8937040044053201300"), "short for DE");
        assert!(!iban_valid(b"XX89370400440532013000"), "no such country");
        assert!(!iban_valid(b"de89370400440532013000"));
    }

    #[test]
    fn aba_checksum_and_prefix() {
        assert!(aba_valid(b"011000015"));
        assert!(aba_valid(b"021000021"));
        assert!(aba_valid(b"322271627"));
        assert!(!aba_valid(b"021000022"), "checksum");
        assert!(!aba_valid(b"000000000"));
        assert!(!aba_valid(b"400000009"), "prefix 40 unassigned");
        assert!(!aba_valid(b"02100002"));
    }

    #[test]
    fn national_id_checksums() {
        assert!(nino_prefix_valid(b'A', b'B'));
        assert!(!nino_prefix_valid(b'D', b'A'));
        assert!(!nino_prefix_valid(b'A', b'O'));
        assert!(!nino_prefix_valid(b'G', b'B'));
        assert!(!nino_prefix_valid(b'Z', b'Z'));
        assert!(sin_valid(b"130456288"));
        assert!(!sin_valid(b"130456287"));
        assert!(
            !sin_valid(b"046454286"),
            "0 is unassigned (the government's sample)"
        );
        assert!(!sin_valid(b"846454281"), "8 is unassigned");
        assert_eq!(dni_letter(12_345_678), b'Z');
        assert!(verhoeff(b"2363"));
        assert!(verhoeff(b"499118665246"));
        assert!(!verhoeff(b"499118665247"));
        assert!(date_valid(2000, 2, 29));
        assert!(!date_valid(1900, 2, 29));
        assert!(!date_valid(1985, 4, 31));
        assert!(!date_valid(1899, 1, 1));
    }

    #[test]
    fn entropy_and_classes() {
        assert_eq!(entropy(b"aaaa"), 0.0);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
        assert_eq!(char_classes(b"aB3$"), 4);
        assert_eq!(char_classes(b"hunter"), 1);
    }

    #[test]
    fn github_checksum() {
        let random = b"AbCdEfGhIjKlMnOpQrStUvWxYz0123";
        let token = format!(
            "{}{}",
            std::str::from_utf8(random).unwrap(),
            github_checksum_encode(random)
        );
        assert!(github_checksum_ok(token.as_bytes()));
        let mut bad = token.into_bytes();
        bad[0] = b'Z';
        assert!(!github_checksum_ok(&bad));
    }
}
