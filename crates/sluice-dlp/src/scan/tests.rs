//! Detector vectors: for each detector, values that must be found (with their
//! exact matched text and confidence) and near misses that must not.

use super::scan_text;
use crate::finding::{Confidence, Detector, Finding, Location};
use crate::validate::github_checksum_encode;

fn scan(text: &str) -> Vec<Finding> {
    scan_text(text, Location::Body)
}

fn found(text: &str, d: Detector) -> Vec<(String, Confidence)> {
    scan(text)
        .into_iter()
        .filter(|f| f.detector == d)
        .map(|f| (f.matched, f.confidence))
        .collect()
}

fn one(text: &str, d: Detector) -> (String, Confidence) {
    let mut v = found(text, d);
    assert_eq!(v.len(), 1, "{text:?} -> {v:?}");
    v.remove(0)
}

fn none(text: &str, d: Detector) {
    assert!(found(text, d).is_empty(), "{text:?} -> {:?}", found(text, d));
}

#[test]
fn credit_cards_formats_and_brands() {
    use Confidence::*;
    assert_eq!(
        one("pay with 4111 1111 1111 1111 today", Detector::CreditCard),
        ("4111 1111 1111 1111".into(), Medium)
    );
    assert_eq!(
        one("ref 4111-1111-1111-1111.", Detector::CreditCard).0,
        "4111-1111-1111-1111"
    );
    assert_eq!(
        one("x 4111111111111111 y", Detector::CreditCard),
        ("4111111111111111".into(), Low)
    );
    assert_eq!(one("Visa 4111111111111111", Detector::CreditCard).1, High);
    assert_eq!(one("4111111111111111 exp 12/27", Detector::CreditCard).1, High);
    assert_eq!(
        one("4111111111111111 valid until 09/2027", Detector::CreditCard).1,
        High
    );
    // Mastercard 2-series, Amex 4-6-5, Diners 4-6-4.
    assert_eq!(
        one("mc 2223 0031 2200 3222", Detector::CreditCard).0,
        "2223 0031 2200 3222"
    );
    assert_eq!(
        one("amex 3782 822463 10005", Detector::CreditCard).0,
        "3782 822463 10005"
    );
    assert_eq!(
        one("diners 3056 930902 5904", Detector::CreditCard).0,
        "3056 930902 5904"
    );
    // Next to CJK, with a no-break space, inside a longer run.
    assert_eq!(
        one("卡号4111111111111111谢谢", Detector::CreditCard),
        ("4111111111111111".into(), High)
    );
    assert_eq!(
        one("4111\u{a0}1111\u{a0}1111\u{a0}1111", Detector::CreditCard).0,
        "4111\u{a0}1111\u{a0}1111\u{a0}1111"
    );
    assert_eq!(
        one("order 2024 4111 1111 1111 1111", Detector::CreditCard).0,
        "4111 1111 1111 1111"
    );
    // Test numbers are reported, tagged.
    let f = scan("card 4242 4242 4242 4242");
    assert!(f[0].test_value);
    let real = scan("card 4556 7375 8689 9855");
    assert_eq!(real.len(), 1);
    assert!(!real[0].test_value);
}

#[test]
fn credit_card_near_misses() {
    none("4111 1111 1111 1112", Detector::CreditCard); // Luhn
    none("card 1234 5678 9012 3452", Detector::CreditCard); // no issuer
    none("3782 822463 1000 5", Detector::CreditCard); // Amex grouped wrongly
    none("41111 11111 11111 1", Detector::CreditCard); // grouping
    none("id a4111111111111111", Detector::CreditCard); // glued to a word
    none("hash 4111111111111111abc", Detector::CreditCard);
    none("41111111111111111111", Detector::CreditCard); // 20 digits
    none("pi 3.4111111111111111", Detector::CreditCard);
    none("4111 1111-1111 1111", Detector::CreditCard); // mixed separators
    none("4111  1111  1111  1111", Detector::CreditCard); // double spaces
}

#[test]
fn ssn_rules_and_keywords() {
    use Confidence::*;
    assert_eq!(
        one("SSN: 536-22-1234", Detector::UsSsn),
        ("536-22-1234".into(), High)
    );
    assert_eq!(
        one("social security number 536 22 1234.", Detector::UsSsn),
        ("536 22 1234".into(), High)
    );
    assert_eq!(
        one("see 536-22-1234", Detector::UsSsn),
        ("536-22-1234".into(), Low)
    );
    assert_eq!(
        one("ssn 536221234", Detector::UsSsn),
        ("536221234".into(), Medium)
    );
    none("536221234", Detector::UsSsn); // unformatted needs a keyword
    for bad in [
        "000-22-1234",
        "666-22-1234",
        "900-22-1234",
        "536-00-1234",
        "536-22-0000",
        "536-22 1234",
    ] {
        none(&format!("SSN {bad}"), Detector::UsSsn);
    }
    none("SSN 536-22-1234-5", Detector::UsSsn);
    let f = scan("ssn 123-45-6789");
    assert!(f.iter().any(|f| f.detector == Detector::UsSsn && f.test_value));
}

#[test]
fn iban_length_and_checksum() {
    assert_eq!(
        one("IBAN DE89 3704 0044 0532 0130 00, thanks", Detector::Iban).0,
        "DE89 3704 0044 0532 0130 00"
    );
    assert_eq!(
        one("to GB82WEST12345698765432.", Detector::Iban),
        ("GB82WEST12345698765432".into(), Confidence::High)
    );
    assert_eq!(
        one("FR76 3000 6000 0112 3456 7890 189", Detector::Iban).0,
        "FR76 3000 6000 0112 3456 7890 189"
    );
    assert!(scan("GB82WEST12345698765432")[0].test_value);
    assert!(!scan("NO9386011117947")[0].test_value);
    none("DE89 3704 0044 0532 0130 01", Detector::Iban); // mod 97
    none("DE89370400440532013000X", Detector::Iban); // too long
    none("DE8937040044053201300", Detector::Iban); // too short
    none("XDE89370400440532013000", Detector::Iban); // glued
    none("ZZ89370400440532013000", Detector::Iban); // no such country
}

#[test]
fn aba_routing_checksum_and_prefix() {
    assert_eq!(
        one("routing number 021000021", Detector::AbaRouting),
        ("021000021".into(), Confidence::High)
    );
    assert_eq!(one("ABA 0210-0002-1", Detector::AbaRouting).0, "0210-0002-1");
    assert_eq!(one("see 021000021", Detector::AbaRouting).1, Confidence::Low);
    none("routing 021000022", Detector::AbaRouting);
    none("routing 401000028", Detector::AbaRouting);
    none("routing 0210000210", Detector::AbaRouting);
}

#[test]
fn email_addresses_not_urls() {
    assert_eq!(
        one("write to jane.doe+x@example.co.uk.", Detector::EmailAddress).0,
        "jane.doe+x@example.co.uk"
    );
    assert_eq!(
        one("Email: a_b@corp.example", Detector::EmailAddress).1,
        Confidence::High
    );
    assert_eq!(
        one("<mailto:bob@example.org>", Detector::EmailAddress).0,
        "bob@example.org"
    );
    none(
        "clone https://ghp_token@github.com/org/repo",
        Detector::EmailAddress,
    );
    none("https://user:pass@example.com/", Detector::EmailAddress);
    none("git@github.com:org/repo.git", Detector::EmailAddress);
    none("a@b", Detector::EmailAddress);
    none("x@host.c0m", Detector::EmailAddress);
    none("@home", Detector::EmailAddress);
}

#[test]
fn phones_need_evidence() {
    use Confidence::*;
    assert_eq!(
        one("Tel: +44 20 7946 0958", Detector::PhoneNumber),
        ("+44 20 7946 0958".into(), High)
    );
    assert_eq!(
        one("reach me at +1 (212) 555-0123 later", Detector::PhoneNumber),
        ("+1 (212) 555-0123".into(), Medium)
    );
    assert_eq!(
        one("office (212) 555-0123", Detector::PhoneNumber).0,
        "(212) 555-0123"
    );
    assert_eq!(
        one("call me 212-555-0123", Detector::PhoneNumber),
        ("212-555-0123".into(), High)
    );
    assert_eq!(
        one("mobile: 0151 2345 6789", Detector::PhoneNumber).0,
        "0151 2345 6789"
    );
    none("invoice 212-555-0123", Detector::PhoneNumber);
    let far = "Tel: +44 20 7946 0958. The order reference for this invoice is 2125550123";
    assert_eq!(
        one(far, Detector::PhoneNumber).0,
        "+44 20 7946 0958",
        "a plain number needs its own label"
    );
    assert_eq!(
        one("Tel: +44 20 7946 0958 2024-01-15", Detector::PhoneNumber).0,
        "+44 20 7946 0958"
    );
    none("server 192.168.100.200 is down", Detector::PhoneNumber);
    none("phone 192.168.100.200", Detector::PhoneNumber);
    none("2 + 2 = 4", Detector::PhoneNumber);
    none("version +1.2", Detector::PhoneNumber);
}

#[test]
fn ssn_context_labels_and_identifiers() {
    use Confidence::*;
    // The nearest label names the number, whatever else the mail mentions.
    let mail = "Your SSN is on file. Order 536221234 ships today; tracking 536-22-1234.";
    none(mail, Detector::UsSsn);
    for ctx in [
        "Invoice #536-22-1234",
        "PO 536221234, SSN follows",
        "account: 536-22-1234 (ssn on file)",
        "ssn form, INV-536221234",
        "ssn 2024/536-22-1234",
        "ssn 536-22-1234/01",
        "ssn 536221234-A",
    ] {
        none(ctx, Detector::UsSsn);
    }
    assert_eq!(
        one("Order 123456789 placed. SSN: 536-22-1234", Detector::UsSsn),
        ("536-22-1234".into(), High)
    );
    assert_eq!(
        one("536-22-1234 (social security number)", Detector::UsSsn).1,
        High
    );
    assert_eq!(one("SSN#536221234", Detector::UsSsn).1, Medium);
}

#[test]
fn table_columns_name_their_values() {
    use Confidence::*;
    // A CSV far longer than 300 characters: the column header counts.
    let mut csv = String::from("name,ssn,account,routing\n");
    for i in 0..40 {
        csv.push_str(&format!(
            "Person {i},53622{:04},12345678{},021000021\n",
            1000 + i,
            i % 10
        ));
    }
    let ssns = found(&csv, Detector::UsSsn);
    assert_eq!(ssns.len(), 40, "{ssns:?}");
    assert!(ssns.iter().all(|(_, c)| *c == Medium));
    assert!(ssns.iter().all(|(m, _)| m.starts_with("53622")), "{ssns:?}");
    let abas = found(&csv, Detector::AbaRouting);
    assert!(
        abas.iter().all(|(m, c)| m == "021000021" && *c == High),
        "{abas:?}"
    );
    // An account column never yields SSNs, even with `ssn` in the header row.
    let accounts = "ssn,account,notes\n,536221234,x\n,536221235,y\n";
    none(accounts, Detector::UsSsn);
    // Tab-separated rows (HTML, docx and xlsx tables): the same.
    let tsv = "Staff list\n\tName\tSocial Security\t\n\tJane\t536 22 1234\t\n\tJo\t536221235\t\n";
    assert_eq!(
        found(tsv, Detector::UsSsn),
        [("536 22 1234".into(), High), ("536221235".into(), Medium)]
    );
    // A two-column form: the label is in the row.
    let form = "\tField\tValue\t\n\tSSN\t536221234\t\n\tOrder\t536221235\t\n";
    assert_eq!(found(form, Detector::UsSsn), [("536221234".into(), Medium)]);
}

#[test]
fn aba_context() {
    use Confidence::*;
    none("Invoice 021000021 due", Detector::AbaRouting);
    none("tracking: 021000021", Detector::AbaRouting);
    none("ref INV-021000021", Detector::AbaRouting);
    none("batch 021000021/7", Detector::AbaRouting);
    assert_eq!(
        one(
            "Wire to routing 021000021, account 123456789",
            Detector::AbaRouting
        ),
        ("021000021".into(), High)
    );
    assert_eq!(one("bank: 021000021", Detector::AbaRouting).1, Low);
}

#[test]
fn nanp_phones_without_labels() {
    use Confidence::*;
    assert_eq!(
        one("ring 212-555-0199 after 5", Detector::PhoneNumber),
        ("212-555-0199".into(), Medium)
    );
    assert!(scan("ring 212-555-0199")[0].test_value, "555-01xx is fictional");
    assert!(!scan("ring 415-867-5309")[0].test_value);
    assert_eq!(one("415.867.5309", Detector::PhoneNumber).0, "415.867.5309");
    assert_eq!(
        one("1-800-867-5309", Detector::PhoneNumber),
        ("1-800-867-5309".into(), Medium)
    );
    assert_eq!(one("Tel 415 867 5309", Detector::PhoneNumber).1, Medium);
    for bad in [
        "115-867-5309",         // area starts with 1
        "091-867-5309",         // area starts with 0
        "411-867-5309",         // N11 area
        "295-867-5309",         // middle digit 9
        "415-167-5309",         // exchange starts with 1
        "415-911-5309",         // N11 exchange
        "415-867.5309",         // mixed separators
        "415 867 5309",         // spaces need a label
        "4158675309",           // unbroken needs a label
        "invoice 415-867-5309", // labelled as something else
        "SKU-415-867-5309",     // part of an identifier
        "415-867-5309-22",      // longer run
        "2024-867-5309",
        "$415.867.53",
    ] {
        none(bad, Detector::PhoneNumber);
    }
    assert_eq!(
        one("office (415) 867-5309", Detector::PhoneNumber).0,
        "(415) 867-5309"
    );
    none("office (115) 867-5309", Detector::PhoneNumber);
}

#[test]
fn aws_keys() {
    let (m, c) = one("key AKIAQYLPMN5HFIQR7BXZ, secret", Detector::AwsAccessKey);
    assert_eq!((m.as_str(), c), ("AKIAQYLPMN5HFIQR7BXZ", Confidence::High));
    assert!(scan("id=AKIAIOSFODNN7EXAMPLE&x=1")[0].test_value);
    none("AKIAQYLPMN5HFIQR7BXZ1", Detector::AwsAccessKey); // 21 characters
    none("AKIAQYLPMN5HFIQR7BX", Detector::AwsAccessKey); // 19
    none("XAKIAQYLPMN5HFIQR7BXZ", Detector::AwsAccessKey);
    none("akiaqylpmn5hfiqr7bxz", Detector::AwsAccessKey);
    none("AKIAQYLPMN5HFIQR7B01", Detector::AwsAccessKey); // 0 and 1 are not base32

    let secret = "Zx9pQ2rT7vLm4KsW8nB3cF6hJ1dG5yU0aE2iO7tR";
    let (m, c) = one(
        &format!("aws_secret_access_key = {secret}\n"),
        Detector::AwsSecretKey,
    );
    assert_eq!((m.as_str(), c), (secret, Confidence::High));
    let pair = format!("AKIAQYLPMN5HFIQR7BXZ / {secret}.");
    assert_eq!(
        one(&pair, Detector::AwsSecretKey),
        (secret.to_owned(), Confidence::Medium)
    );
    none(&format!("some base64 {secret} alone"), Detector::AwsSecretKey);
    none(
        &format!("aws_secret_access_key = {secret}X"),
        Detector::AwsSecretKey,
    );
    none(
        "aws_secret_access_key = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Detector::AwsSecretKey,
    );
    // Wherever the secret starts after the key id, between words of any
    // length (the search steps over 40 bytes at a time where it can).
    for gap in 0..45 {
        let words = "ab cdefg ".repeat(gap / 9 + 1);
        let text = format!("AKIAQYLPMN5HFIQR7BXZ {} {secret} x", &words[..gap]);
        assert_eq!(
            one(&text, Detector::AwsSecretKey),
            (secret.to_owned(), Confidence::Medium),
            "{text}"
        );
        let glued = format!("AKIAQYLPMN5HFIQR7BXZ {} {secret}Q", &words[..gap]);
        none(&glued, Detector::AwsSecretKey);
    }
    let f = scan("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    assert!(f
        .iter()
        .any(|f| f.detector == Detector::AwsSecretKey && f.test_value));
}

#[test]
fn github_tokens() {
    let random = "Xq7Lm2Rt9Vb4Nc8Kp3Ws6Hd1Fg5Jz0Ae";
    let random = &random[..30];
    let valid = format!("ghp_{random}{}", github_checksum_encode(random.as_bytes()));
    assert_eq!(
        one(&format!("token {valid}&scope=repo"), Detector::GithubToken),
        (valid.clone(), Confidence::High)
    );
    let bad_sum = format!("ghp_{random}AAAAAA");
    assert_eq!(
        one(&format!("{bad_sum}, "), Detector::GithubToken).1,
        Confidence::Medium
    );
    none(&format!("{valid}Z"), Detector::GithubToken);
    none(&format!("xghp_{random}AAAAAA"), Detector::GithubToken);
    none("ghx_Xq7Lm2Rt9Vb4Nc8Kp3Ws6Hd1Fg5Jz0AeAAAA", Detector::GithubToken);
    let pat = format!(
        "github_pat_11ABCDEFG0{}_{}",
        "x7Kq2Lm9Np4R", "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY3zA5bC7dE9fG1hJ3kL5mN7pQ9rS"
    );
    assert_eq!(pat.len(), 93);
    assert_eq!(
        one(&format!("<{pat}>"), Detector::GithubToken),
        (pat.clone(), Confidence::High)
    );
    none(&format!("{pat}x"), Detector::GithubToken);
}

#[test]
fn slack_stripe_google() {
    let bot = "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
    assert_eq!(
        one(&format!("SLACK={bot}."), Detector::SlackToken),
        (bot.into(), Confidence::High)
    );
    assert_eq!(one("xoxs-abcdefghij-x", Detector::SlackToken).1, Confidence::Low);
    none("xoxz-1234567890123-1234567890123", Detector::SlackToken);
    none("xoxb-123", Detector::SlackToken);

    let sk = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    assert_eq!(
        one(&format!("key: {sk}<br>"), Detector::StripeKey),
        (sk.into(), Confidence::High)
    );
    assert_eq!(
        one("rk_live_aB3dE5fG7hJ9kL2m", Detector::StripeKey).0,
        "rk_live_aB3dE5fG7hJ9kL2m"
    );
    // Test-mode and restricted keys are credentials too, one step lower.
    assert_eq!(
        one(
            "STRIPE_KEY=sk_test_4eC39HqLyjWDarjtT1zdp7dc,",
            Detector::StripeKey
        ),
        ("sk_test_4eC39HqLyjWDarjtT1zdp7dc".into(), Confidence::Medium)
    );
    assert_eq!(
        one("rk_test_aaaaaaaaaaaa", Detector::StripeKey).1,
        Confidence::Low
    );
    let long = format!("sk_live_51H{}", "aB3dE5fG7h".repeat(10));
    assert_eq!(one(&long, Detector::StripeKey).0, long, "keys over 99 characters");
    none("pk_live_4eC39HqLyjWDarjtT1zdp7dc", Detector::StripeKey); // publishable
    none("sk_test_4eC39HqLyjWDarjtT1zdp7dc_x", Detector::StripeKey);
    none("sk_live_short", Detector::StripeKey);
    none("xsk_live_4eC39HqLyjWDarjtT1zdp7dc", Detector::StripeKey);

    let g = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW";
    assert_eq!(g.len(), 39);
    assert_eq!(
        one(&format!("maps?key={g}&v=3"), Detector::GoogleApiKey),
        (g.into(), Confidence::High)
    );
    none(&format!("{g}X"), Detector::GoogleApiKey);
    none("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv", Detector::GoogleApiKey);
}

#[test]
fn private_keys_need_matching_end() {
    let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n";
    let pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----");
    assert_eq!(
        one(&format!("here:\n{pem}\nbye"), Detector::PrivateKey),
        (pem.clone(), Confidence::High)
    );
    let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA";
    assert_eq!(
        one(cut, Detector::PrivateKey),
        ("-----BEGIN OPENSSH PRIVATE KEY-----".into(), Confidence::Low)
    );
    none(
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        Detector::PrivateKey,
    );
    none(
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        Detector::PrivateKey,
    );
    // The END label must be the BEGIN label.
    let mismatched = format!("-----BEGIN EC PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----");
    assert_eq!(one(&mismatched, Detector::PrivateKey).1, Confidence::Low);
}

#[test]
fn jwts_need_a_json_header_with_alg() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImFkbWluIjp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert_eq!(
        one(&format!("Authorization: Bearer {jwt}."), Detector::Jwt),
        (jwt.into(), Confidence::High)
    );
    let jwt_io = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    assert!(scan(jwt_io)[0].test_value);
    // {"typ":"JWT"} has no alg.
    none("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSJ9.c2ln", Detector::Jwt);
    none("eyJnotbase64!!.eyJx.y", Detector::Jwt);
    none("eyJhbGciOiJIUzI1NiJ9", Detector::Jwt);
}

#[test]
fn passwords_and_placeholders() {
    use Confidence::*;
    assert_eq!(
        one("password: Tr0ub4dor&3x", Detector::Password),
        ("Tr0ub4dor".into(), High)
    );
    assert_eq!(
        one("DB_PASSWORD=s3cr3tPa55, next", Detector::Password),
        ("s3cr3tPa55".into(), High)
    );
    assert_eq!(
        one(r#"{"password": "correct horse 9"}"#, Detector::Password).0,
        "correct horse 9"
    );
    assert_eq!(
        one("the password is Summer2024!", Detector::Password),
        ("Summer2024".into(), High)
    );
    assert_eq!(one("pwd=hunter2<br>", Detector::Password).0, "hunter2");
    assert_eq!(one("Kennwort： geheim99", Detector::Password).0, "geheim99");
    for placeholder in [
        "password: ********",
        "password: <password>",
        "password=${DB_PASS}",
        "password: {{ vault.pw }}",
        "password: $PASSWORD",
        "password: required",
        "password: your_password_here",
        "the password is stored in the vault",
        "password_reset: https://x",
        "passwordless login: yes",
        "password: ab",
        "cwd=/tmp/secretstuff",
    ] {
        none(placeholder, Detector::Password);
    }
}

#[test]
fn specific_detectors_win_over_password() {
    let f = scan("secret: sk_live_4eC39HqLyjWDarjtT1zdp7dc");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].detector, Detector::StripeKey);
}

#[test]
fn findings_come_in_text_order_with_location() {
    let f = scan_text(
        "a@example.com then 4111 1111 1111 1111",
        Location::Attachment("x.txt".into()),
    );
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].detector, Detector::EmailAddress);
    assert_eq!(f[1].detector, Detector::CreditCard);
    assert_eq!(f[1].location.to_string(), "attachment:x.txt");
}

#[test]
fn adversarial_inputs_do_not_panic() {
    let long_digits = "1 ".repeat(10_000);
    let cases = [
        "",
        "@",
        "@@@",
        "-----BEGIN",
        "-----BEGIN PRIVATE KEY-----",
        "eyJ",
        "eyJ.",
        "AKIA",
        "A3T",
        "ghp_",
        "xoxb-",
        "password",
        "password:",
        "password is",
        "+",
        "(",
        "+(",
        "(1",
        "DE",
        "DE8",
        "é4111111111111111é",
        "\u{a0}",
        "4111\u{a0}",
        "x@é.com",
        "aws_secret_access_key",
        &long_digits,
    ];
    for c in cases {
        let _ = scan(c);
    }
    // Multi-byte characters at every offset around triggers.
    let s = "ü@ü password：ü 4111 1111 1111 1111ü AKIAQYLPMN5HFIQR7BXZü";
    for i in 0..s.len() {
        if s.is_char_boundary(i) {
            let _ = scan(&s[i..]);
            let _ = scan(&s[..i]);
        }
    }
}

/// Inputs that would be quadratic with a naive search per trigger; each is
/// 1 MB, so a quadratic path would not finish in any reasonable test time.
#[test]
fn pathological_inputs_stay_linear() {
    let mb = 1 << 20;
    let inputs = [
        "-----BEGIN RSA PRIVATE KEY-----\n".repeat(mb / 32),
        "xoxb-".repeat(mb / 5),
        "AIza".repeat(mb / 4),
        "eyJ".repeat(mb / 3),
        "eyJhbGciOiJub25lIn0.".repeat(mb / 20),
        "a@".repeat(mb / 2),
        "a.b@c.".repeat(mb / 6),
        "password=".repeat(mb / 9),
        "aws_secret_access_key ".repeat(mb / 22),
        "+1 ".repeat(mb / 3),
        "(1".repeat(mb / 2),
        "DE89".repeat(mb / 4),
        "4".repeat(mb),
        // Numbers asking for their label and table, with and without lines.
        "ssn 536-22-1234, ".repeat(mb / 17),
        "0,536221234,021000021\n".repeat(mb / 22),
        "\t536221234\t".repeat(mb / 11),
        "\"private_key_id\": \"2aabfe228f219e9cb0eb53f16947ccf25ec84d8d\",".repeat(mb / 64),
        "AccountKey=".repeat(mb / 11),
        "storage key ".repeat(mb / 12),
        "sk-".repeat(mb / 3),
        "npm_".repeat(mb / 4),
        "dob ".repeat(mb / 4),
        "api_key=".repeat(mb / 8),
        "Bearer ".repeat(mb / 7),
    ];
    for input in &inputs {
        let _ = scan(input);
    }
    let html = "<style>".repeat(mb / 7);
    let _ = crate::extract::html_to_text(&html);
}

#[test]
fn national_ids_with_checksums() {
    use Confidence::*;
    // UK NINO: HMRC prefix rules, suffix A-D.
    assert_eq!(
        one("National Insurance number: AB 12 34 56 C.", Detector::UkNino),
        ("AB 12 34 56 C".into(), High)
    );
    assert_eq!(
        one("holder JG103759A here", Detector::UkNino),
        ("JG103759A".into(), Low)
    );
    for bad in [
        "DA123456C",
        "AO123456C",
        "GB123456C",
        "AB123456E",
        "AB1234567C",
        "XAB123456C",
        "AB123456CX",
    ] {
        none(&format!("NINO {bad}"), Detector::UkNino);
    }
    // Canadian SIN: Luhn, not 0 or 8 first.
    assert_eq!(
        one("SIN: 130 456 288", Detector::CaSin),
        ("130 456 288".into(), High)
    );
    assert_eq!(
        one("social insurance number 130456288", Detector::CaSin).1,
        Medium
    );
    assert_eq!(one("see 130-456-288", Detector::CaSin).1, Low);
    none("130456288", Detector::CaSin); // unformatted needs a label
    none("SIN 130 456 287", Detector::CaSin); // Luhn
    none("SIN 046 454 286", Detector::CaSin); // 0: unassigned (the sample number)
    none("SIN: 130456288", Detector::UsSsn); // labelled as a SIN, not an SSN
                                             // Spanish DNI / NIE: check letter mod 23.
    assert_eq!(one("DNI 12345678Z", Detector::EsDni), ("12345678Z".into(), High));
    assert_eq!(one("copy 12345678-Z ok", Detector::EsDni).1, Medium);
    assert_eq!(one("NIE: X1234567L", Detector::EsDni).0, "X1234567L");
    none("DNI 12345678A", Detector::EsDni);
    none("DNI 12345678ZZ", Detector::EsDni);
    none("DNI A12345678Z", Detector::EsDni);
    // Aadhaar: 12 digits, first 2-9, Verhoeff.
    assert_eq!(
        one("Aadhaar 2345 6789 0124", Detector::InAadhaar),
        ("2345 6789 0124".into(), High)
    );
    assert_eq!(one("uid 234567890124", Detector::InAadhaar).1, Medium);
    none("234567890124", Detector::InAadhaar);
    none("Aadhaar 2345 6789 0125", Detector::InAadhaar);
    none("Aadhaar 1345 6789 0124", Detector::InAadhaar);
}

#[test]
fn dates_of_birth_after_their_label() {
    for (text, date) in [
        ("DOB: 04/12/1985", "04/12/1985"),
        ("Date of birth 1985-03-12.", "1985-03-12"),
        ("born on 12 March 1985", "12 March 1985"),
        ("Birthdate: March 12, 1985", "March 12, 1985"),
        ("D.O.B. 12-Mar-1985", "12-Mar-1985"),
        ("Geburtsdatum: 12.03.1985", "12.03.1985"),
        ("dob 29/02/2000", "29/02/2000"),
        ("DOB: 13/12/85", "13/12/85"),
    ] {
        assert_eq!(
            one(text, Detector::DateOfBirth),
            (date.into(), Confidence::High),
            "{text}"
        );
    }
    for bad in [
        "meeting on 04/12/2025", // no label
        "DOB: 31/04/1985",       // no 31 April in either order... 31/04 is invalid both ways
        "DOB: 29/02/1999",       // not a leap year
        "dob: 1850-01-01",       // out of range
        "adobe 04/12/1985",      // label inside a word
        "Date of birth: unknown",
        "DOB: 04/12/1985/2",
        "date of birth ............................ 04/12/1985",
    ] {
        none(bad, Detector::DateOfBirth);
    }
}

#[test]
fn cloud_credentials() {
    use Confidence::*;
    let key = "pU3KGCUwux1tEyze1iN7LtkeP3IfyxlxF0SU1kk8nVw0YL4xIB5p/tqg7ui5mX9cfCmZ/a/lkyU81lSvTfrXFA==";
    let conn = format!(
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={key};EndpointSuffix=core.windows.net"
    );
    assert_eq!(one(&conn, Detector::AzureStorageKey), (key.into(), High));
    assert_eq!(
        one(&format!("AZURE_STORAGE_KEY=\"{key}\""), Detector::AzureStorageKey),
        (key.into(), Medium)
    );
    none(&format!("AccountKey={}", &key[1..]), Detector::AzureStorageKey); // 87
    none(&format!("AccountKey={key}A"), Detector::AzureStorageKey);
    none(&format!("some blob {key}"), Detector::AzureStorageKey); // no name

    let id = "2aabfe228f219e9cb0eb53f16947ccf25ec84d8d";
    let json = format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"acme\",\n  \"private_key_id\": \"{id}\",\n}}"
    );
    assert_eq!(one(&json, Detector::GcpServiceAccount), (id.into(), High));
    assert_eq!(
        one(
            &format!("{{\"private_key_id\":\"{id}\"}}"),
            Detector::GcpServiceAccount
        )
        .1,
        Medium
    );
    none(
        &format!("{{\"private_key_id\": \"{}\"}}", &id[1..]),
        Detector::GcpServiceAccount,
    );
    none(
        &format!("{{\"private_key_id\": \"{id}0\"}}"),
        Detector::GcpServiceAccount,
    );

    let marked = "sk-proj-Wr4Y9OJFLJOqOAf1lLQST3BlbkFJAJaiXnkU8Is2g8nprvDd";
    assert_eq!(
        one(&format!("OPENAI_API_KEY={marked}."), Detector::OpenaiKey),
        (marked.into(), High)
    );
    let project = "sk-proj-yyzyN9zHYIa4UOrGNATMuDJawTgsu8PO_799nKSNrh9UCauSDmLhuVtcqcYe";
    assert_eq!(one(project, Detector::OpenaiKey).1, Medium);
    none(
        "task-proj-Wr4Y9OJFLJOqOAf1lLQST3BlbkFJAJaiXnkU8Is2g8nprvDd",
        Detector::OpenaiKey,
    );
    none("sk-short-T3BlbkFJ", Detector::OpenaiKey);
    none(
        "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Detector::OpenaiKey,
    );

    let random = "AbCdEfGhIjKlMnOpQrStUvWxYz0123";
    let npm = format!("npm_{random}{}", github_checksum_encode(random.as_bytes()));
    assert_eq!(
        one(
            &format!("//registry.npmjs.org/:_authToken={npm}"),
            Detector::NpmToken
        ),
        (npm.clone(), High)
    );
    assert_eq!(
        one("npm_0ZvzOMhfWuBByReQMsm9Wcz7uW9XFOGO1234", Detector::NpmToken).1,
        Medium
    );
    none(&format!("{npm}X"), Detector::NpmToken);
    none("npm_install_packages_for_the_project_now", Detector::NpmToken);
}

#[test]
fn generic_secrets_after_key_names() {
    use Confidence::*;
    let v = "0ZvzOMhfWuBByReQMsm9Wcz7uW9XFOGO";
    for text in [
        format!("api_key = \"{v}\""),
        format!("MY_SERVICE_API_KEY={v}&x=1"),
        format!("{{\"access_token\": \"{v}\"}}"),
        format!("X-Api-Key: {v}"),
        format!("Authorization: Bearer {v}"),
        format!("client_secret: {v}."),
    ] {
        assert_eq!(one(&text, Detector::GenericSecret), (v.into(), High), "{text}");
    }
    assert_eq!(
        one(
            "token: 2aabfe228f219e9cb0eb53f16947ccf25ec84d8d",
            Detector::GenericSecret
        )
        .1,
        Medium
    );
    for bad in [
        "api_key = \"your-api-key-here\"",
        "api_key: ${API_KEY}",
        "api_key_id = 0ZvzOMhfWuBByReQMsm9Wcz7uW9XFOGO",
        "token_url: https://example.com/oauth/token",
        "access_token: short",
        "api_key = aaaaaaaaaaaaaaaaaaaaaaaa",
        "mytoken: 0ZvzOMhfWuBByReQMsm9Wcz7uW9XFOGO",
        "the token was refreshed yesterday",
        "api_key: <redacted>",
        "Authorization: Bearer {{token}}",
    ] {
        none(bad, Detector::GenericSecret);
    }
    // A vendor token after a key name is the vendor's.
    let random = "Xq7Lm2Rt9Vb4Nc8Kp3Ws6Hd1Fg5Jz0";
    let ghp = format!("ghp_{random}{}", github_checksum_encode(random.as_bytes()));
    let f = scan(&format!("api_key={ghp}"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].detector, Detector::GithubToken);
}

/// The one literal pass finds, for each list, exactly what a leftmost-longest
/// search of that list alone finds, overlaps between the lists included
/// (`client_secret` is a trigger, `client` a keyword), in one lane and in
/// several.
#[test]
fn one_literal_pass_reads_as_two_searches() {
    use aho_corasick::{AhoCorasick, MatchKind};

    use super::keywords::KEYWORDS;
    use super::{leftmost_longest, literals, LANE_MIN, TRIGGERS};

    let searcher = |patterns: Vec<&str>| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .expect("patterns")
    };
    let triggers_alone = searcher(TRIGGERS.iter().map(|t| t.0).collect());
    let keywords_alone = searcher(KEYWORDS.iter().map(|k| k.0).collect());
    let search = |ac: &AhoCorasick, text: &str| -> Vec<(usize, usize, usize)> {
        ac.find_iter(text)
            .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
            .collect()
    };
    let pieces = [
        "client_secret: ",
        "purchase order ",
        "xmaster card ",
        "AWS_SECRET_ACCESS_KEY=",
        "secret",
        "card number",
        "cardnumber ",
        "social security number",
        "ss#",
        "cc#",
        "provide ",
        "id ",
        "Téléphone ",
        "téléphone",
        "クレジットカード",
        "contraseña",
        "生年月日",
        "Née le ",
        "cartão",
        "MOT DE PASSE",
        "tokens ",
        "github_pat_",
        "ghp_",
        "sk-",
        "sk_live_",
        "@",
        "eyJ",
        "dob",
        "d.o.b.",
        "born",
        "a",
        " ",
        "routing transit number",
        "aba#",
        "AccountKey=",
        "storage account key",
        "\"private_key_id\"",
        "4111 1111 1111 1111",
        "\n",
        "\t",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    // Short texts (one lane), then texts long enough to be walked in lanes,
    // whose pieces fall across the lanes' edges at every offset.
    for round in 0..3300 {
        let mut text = String::new();
        let length = if round < 3000 {
            0
        } else {
            LANE_MIN + (seed % 4000) as usize
        };
        let mut pieces_left = seed % 24;
        while pieces_left > 0 || text.len() < length {
            pieces_left = pieces_left.saturating_sub(1);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        let (triggers, mut keywords) = literals(&text);
        leftmost_longest(&mut keywords);
        assert_eq!(triggers, search(&triggers_alone, &text), "{text:?}");
        assert_eq!(keywords, search(&keywords_alone, &text), "{text:?}");
    }
}

/// The digit searches that test eight bytes at once find what a
/// byte-by-byte search finds, whatever the bytes around the digits (0x80
/// and above too): the next digit, and the end of a run of digits.
#[test]
fn digit_search_eight_bytes_at_once() {
    use super::numbers::{digits_end, next_digit};

    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.extend(b"no digits here at all, none: /:/:/:\xb0\xb9\xff".repeat(3));
    bytes.extend(b"1234567890123456789/0:12345678\xb9".repeat(2));
    bytes.extend(b"x9");
    for from in 0..=bytes.len() {
        for end in from..=bytes.len().min(from + 40) {
            let b = &bytes[..end];
            let expected = b[from..].iter().position(u8::is_ascii_digit).map(|k| from + k);
            assert_eq!(next_digit(b, from), expected, "from {from} to {end}");
            let run = b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
            assert_eq!(digits_end(b, from), from + run, "from {from} to {end}");
        }
    }
}

/// The window of N characters around a match, in ASCII and in text with
/// multi-byte characters on either side.
#[test]
fn windows_count_characters_not_bytes() {
    use super::Ctx;

    let text = "ab\u{e9}cd 4111 xy\u{4e2d}z";
    let ctx = Ctx::new(text, Vec::new());
    let (start, end) = (text.find('4').unwrap(), text.find(" xy").unwrap());
    assert_eq!(ctx.window(start, end, 2), (start - 2, end + 2));
    assert_eq!(ctx.window(start, end, 5), (start - 6, text.len()));
    assert_eq!(ctx.window(start, end, 99), (0, text.len()));
    assert_eq!(ctx.window(0, 1, 3), (0, 5));
}
