//! Whole-message vectors: the hard encodings, attachments, containers, limits.

use super::zip_writer;
use super::{scan_message, ScanLimits, ScanReport};
use crate::finding::{Confidence, Detector, Location};

const CARD: &str = "4556 7375 8689 9855";

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    // MIME lines of 76 characters.
    out.as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn with_attachment(name: &str, ctype: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
         --XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --XX\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--XX--\r\n",
        b64(data)
    )
    .into_bytes()
}

fn cards(report: &ScanReport) -> Vec<(String, String)> {
    report
        .findings
        .iter()
        .filter(|f| f.detector == Detector::CreditCard)
        .map(|f| (f.matched.clone(), f.location.to_string()))
        .collect()
}

fn scan(raw: &[u8]) -> ScanReport {
    scan_message(raw, &ScanLimits::default())
}

#[test]
fn subject_and_plain_body() {
    let raw = format!("Subject: card {CARD}\r\nFrom: a@b.example\r\n\r\nSSN: 536-22-1234\r\n");
    let r = scan(raw.as_bytes());
    assert_eq!(cards(&r), vec![(CARD.to_owned(), "subject".to_owned())]);
    let ssn = r.findings.iter().find(|f| f.detector == Detector::UsSsn).unwrap();
    assert_eq!(
        (ssn.matched.as_str(), &ssn.location, ssn.confidence),
        ("536-22-1234", &Location::Body, Confidence::High)
    );
    assert!(!r.truncated && r.refused.is_empty());
}

#[test]
fn quoted_printable_soft_break_inside_a_card() {
    let raw = "Subject: qp\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
               Card: 4556 7375 86=\r\n89 9855 and caf=C3=A9\r\n";
    assert_eq!(
        cards(&scan(raw.as_bytes())),
        vec![(CARD.to_owned(), "body".to_owned())]
    );
}

#[test]
fn base64_body_and_charset() {
    let text = format!("Kreditkarte {CARD}");
    let latin1: Vec<u8> = text.bytes().collect();
    let raw = format!(
        "Subject: b64\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64(&latin1)
    );
    let r = scan(raw.as_bytes());
    assert_eq!(cards(&r), vec![(CARD.to_owned(), "body".to_owned())]);
    assert_eq!(r.findings[0].confidence, Confidence::High);
}

#[test]
fn html_tags_split_a_number_and_alternatives_count_once() {
    let raw = "Subject: html\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"B\"\r\n\r\n\
               --B\r\nContent-Type: text/plain\r\n\r\ncard 4556 7375 8689 9855\r\n\
               --B\r\nContent-Type: text/html\r\n\r\n<p>card 4556 <b>7375</b> <span style=\"x\">8689</span> 9855</p>\r\n--B--\r\n";
    let r = scan(raw.as_bytes());
    assert_eq!(cards(&r), vec![(CARD.to_owned(), "body".to_owned())]);
    let html_only =
        "Subject: h\r\nContent-Type: text/html\r\n\r\n<div>4556&nbsp;7375&nbsp;<i>8689</i>&nbsp;9855</div>";
    assert_eq!(
        cards(&scan(html_only.as_bytes()))[0].0,
        "4556\u{a0}7375\u{a0}8689\u{a0}9855"
    );
}

#[test]
fn csv_attachment() {
    let csv = format!("name,card\nalice,{CARD}\n");
    let r = scan(&with_attachment("cards.csv", "text/csv", csv.as_bytes()));
    assert_eq!(
        cards(&r),
        vec![(CARD.to_owned(), "attachment:cards.csv".to_owned())]
    );
    let r = scan(&with_attachment(
        "data.bin",
        "application/octet-stream",
        csv.as_bytes(),
    ));
    assert_eq!(
        cards(&r),
        vec![(CARD.to_owned(), "attachment:data.bin".to_owned())]
    );
}

#[test]
fn docx_numbers_split_across_runs() {
    let doc = r#"<?xml version="1.0"?><w:document xmlns:w="x"><w:body><w:p><w:r><w:t>Card number</w:t></w:r></w:p><w:p><w:r><w:t>4556 7375 </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>8689 9855</w:t></w:r></w:p></w:body></w:document>"#;
    let docx = zip_writer::build(&[
        ("[Content_Types].xml", b"<Types/>", true),
        ("word/document.xml", doc.as_bytes(), true),
        (
            "word/media/image1.png",
            &[0x89, b'P', b'N', b'G', 0, 0, 0, 0],
            false,
        ),
    ]);
    let r = scan(&with_attachment(
        "q3.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        &docx,
    ));
    assert_eq!(
        cards(&r),
        vec![(CARD.to_owned(), "attachment:q3.docx".to_owned())]
    );
    assert_eq!(
        r.findings[0].confidence,
        Confidence::High,
        "keyword in the previous paragraph"
    );
}

#[test]
fn xlsx_shared_strings_and_inline_values() {
    let shared = r#"<sst><si><t>SSN</t></si><si><r><t>536-22</t></r><r><t>-1234</t></r></si></sst>"#;
    let sheet = r#"<worksheet><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><t>4556737586899855</t></is></c></row></sheetData></worksheet>"#;
    let xlsx = zip_writer::build(&[
        ("[Content_Types].xml", b"<Types/>", true),
        ("xl/sharedStrings.xml", shared.as_bytes(), true),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes(), true),
        ("xl/styles.xml", b"<styleSheet>536-22-1235</styleSheet>", true),
    ]);
    let r = scan(&with_attachment("people.xlsx", "application/octet-stream", &xlsx));
    let got: Vec<(Detector, &str)> = r
        .findings
        .iter()
        .map(|f| (f.detector, f.matched.as_str()))
        .collect();
    assert!(got.contains(&(Detector::UsSsn, "536-22-1234")), "{got:?}");
    assert!(
        got.contains(&(Detector::CreditCard, "4556737586899855")),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|(_, m)| *m == "536-22-1235"),
        "styles are not content"
    );
    assert!(r
        .findings
        .iter()
        .all(|f| f.location.to_string() == "attachment:people.xlsx"));
}

#[test]
fn zip_archive_members_and_nested_zip() {
    let inner = zip_writer::build(&[("deep.txt", format!("card {CARD}").as_bytes(), true)]);
    let outer = zip_writer::build(&[
        ("notes.txt", b"AKIAQYLPMN5HFIQR7BXZ", false),
        ("inner.zip", &inner, false),
        ("dir/", b"", false),
    ]);
    let r = scan(&with_attachment("bundle.zip", "application/zip", &outer));
    assert_eq!(
        cards(&r),
        vec![(
            CARD.to_owned(),
            "attachment:bundle.zip/inner.zip/deep.txt".to_owned()
        )]
    );
    let key = r
        .findings
        .iter()
        .find(|f| f.detector == Detector::AwsAccessKey)
        .unwrap();
    assert_eq!(key.location.to_string(), "attachment:bundle.zip/notes.txt");
    assert!(r.refused.is_empty(), "{:?}", r.refused);

    let shallow = ScanLimits {
        max_depth: 1,
        ..ScanLimits::default()
    };
    let r = scan_message(
        &with_attachment("bundle.zip", "application/zip", &outer),
        &shallow,
    );
    assert!(cards(&r).is_empty());
    assert_eq!(
        r.refused,
        vec!["attachment:bundle.zip/inner.zip: nested deeper than 1".to_owned()]
    );
}

#[test]
fn zip_bomb_is_refused_before_inflating() {
    let zeros = vec![0u8; 20 << 20];
    let bomb = zip_writer::build(&[("zeros.bin", &zeros, true), ("card.txt", CARD.as_bytes(), false)]);
    assert!(bomb.len() < 100 << 10);
    let r = scan(&with_attachment("bomb.zip", "application/zip", &bomb));
    assert_eq!(r.refused.len(), 1);
    assert!(
        r.refused[0].starts_with("attachment:bomb.zip: zip bomb (ratio "),
        "{:?}",
        r.refused
    );
    assert!(r.refused[0].ends_with(":1)"));
    assert!(cards(&r).is_empty(), "a bomb is refused whole");

    // Within the ratio but over the expansion budget.
    let tight = ScanLimits {
        max_expanded_bytes: 1 << 20,
        max_ratio: 10_000,
        ..ScanLimits::default()
    };
    let r = scan_message(&with_attachment("big.zip", "application/zip", &bomb), &tight);
    assert!(r.truncated);
    assert!(
        r.refused[0].contains("over the 1048576 byte limit"),
        "{:?}",
        r.refused
    );
}

#[test]
fn nested_rfc822_plain_and_base64() {
    let inner = format!("From: x@example.com\r\nSubject: fwd SSN 536-22-1234\r\n\r\nCard {CARD}\r\n");
    let raw = format!(
        "Subject: outer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"O\"\r\n\r\n\
         --O\r\nContent-Type: text/plain\r\n\r\nFYI\r\n\
         --O\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--O--\r\n"
    );
    let r = scan(raw.as_bytes());
    assert_eq!(
        cards(&r),
        vec![(CARD.to_owned(), "attachment:part2.eml".to_owned())]
    );
    assert!(r
        .findings
        .iter()
        .any(|f| f.detector == Detector::UsSsn && f.location.to_string() == "attachment:part2.eml"));

    let r = scan(&with_attachment("fwd.eml", "message/rfc822", inner.as_bytes()));
    assert_eq!(
        cards(&r),
        vec![(CARD.to_owned(), "attachment:fwd.eml".to_owned())]
    );

    let flat = ScanLimits {
        max_depth: 0,
        ..ScanLimits::default()
    };
    let r = scan_message(raw.as_bytes(), &flat);
    assert!(cards(&r).is_empty());
    assert_eq!(
        r.refused,
        vec!["attachment:part2.eml: nested deeper than 0".to_owned()]
    );
}

#[test]
fn pdf_attachment_flate_stream() {
    let content = "BT /F1 12 Tf 72 712 Td (Card number) Tj T* [(4556 73)-10(75 8689 9855)] TJ ET";
    let stream = miniz_oxide::deflate::compress_to_vec_zlib(content.as_bytes(), 6);
    let mut pdf = b"%PDF-1.7\n3 0 obj\n<< /Length ".to_vec();
    pdf.extend_from_slice(format!("{} /Filter /FlateDecode >>\nstream\n", stream.len()).as_bytes());
    pdf.extend_from_slice(&stream);
    pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
    let r = scan(&with_attachment("statement.pdf", "application/pdf", &pdf));
    assert_eq!(
        cards(&r),
        vec![(CARD.to_owned(), "attachment:statement.pdf".to_owned())]
    );
    assert_eq!(r.findings[0].confidence, Confidence::High);
}

#[test]
fn scan_budget_truncates() {
    let body = format!("{}\r\ncard {CARD}\r\n", "x".repeat(10_000));
    let raw = format!("Subject: big\r\n\r\n{body}");
    let small = ScanLimits {
        max_scanned_bytes: 5_000,
        ..ScanLimits::default()
    };
    let r = scan_message(raw.as_bytes(), &small);
    assert!(r.truncated);
    assert!(cards(&r).is_empty());
    let r = scan(raw.as_bytes());
    assert!(!r.truncated);
    assert_eq!(cards(&r).len(), 1);
}

#[test]
fn archives_past_the_scan_budget_are_not_expanded() {
    let mut zip = zip_writer::build(&[("a.txt", format!("card {CARD}").as_bytes(), true)]);
    // An encrypted member is refused by name once the archive is opened.
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    zip[cd + 8] |= 1;
    let raw = with_attachment("cards.zip", "application/zip", &zip);
    let r = scan(&raw);
    assert!(!r.truncated);
    assert!(
        r.refused.iter().any(|x| x.contains("encrypted")),
        "{:?}",
        r.refused
    );
    let spent = ScanLimits {
        max_scanned_bytes: 1,
        ..ScanLimits::default()
    };
    let r = scan_message(&raw, &spent);
    assert!(r.truncated);
    assert!(r.refused.is_empty(), "opened after the budget: {:?}", r.refused);
}

#[test]
fn spent_time_budget_truncates_and_never_passes() {
    let raw = with_attachment("statement.csv", "text/csv", format!("card {CARD}\r\n").as_bytes());
    let spent = ScanLimits {
        time_budget: Some(std::time::Duration::ZERO),
        ..ScanLimits::default()
    };
    let r = scan_message(&raw, &spent);
    assert!(r.truncated, "a scan past its time budget must say so");
    assert!(cards(&r).is_empty());
    let unlimited = ScanLimits {
        time_budget: None,
        ..ScanLimits::default()
    };
    let r = scan_message(&raw, &unlimited);
    assert!(!r.truncated);
    assert_eq!(cards(&r).len(), 1);
}

#[test]
fn binary_attachments_are_skipped_and_garbage_survives() {
    let png = [0x89, b'P', b'N', b'G', 0, 0, 0, 0, b'4', b'1'];
    let r = scan(&with_attachment("x.png", "image/png", &png));
    assert!(r.findings.iter().all(|f| f.detector == Detector::EmailAddress));
    let r = scan(&with_attachment(
        "broken.zip",
        "application/zip",
        b"PK\x03\x04garbage",
    ));
    assert_eq!(
        r.refused,
        vec!["attachment:broken.zip: unreadable zip archive".to_owned()]
    );
    for junk in [
        &b""[..],
        b"\r\n\r\n",
        b"Subject: \xff\xfe\r\n\r\n\x00\x01",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x",
    ] {
        let _ = scan(junk);
    }
}

#[test]
fn counts_by_confidence() {
    let raw = format!("Subject: x\r\n\r\nvisa {CARD}\r\n4111111111111111\r\nsee 536-22-1234\r\n");
    let r = scan(raw.as_bytes());
    let all = r.counts(Confidence::Low);
    assert_eq!(all.get(&Detector::CreditCard), Some(&2));
    assert_eq!(all.get(&Detector::UsSsn), Some(&1));
    let high = r.counts(Confidence::High);
    assert_eq!(
        high.get(&Detector::CreditCard),
        Some(&2),
        "both cards are near `visa`"
    );
    assert_eq!(high.get(&Detector::UsSsn), None);
}

#[test]
fn encoded_parts_decoded_once_whatever_the_spelling() {
    // Upper-case encoding names, LF-only line ends, unwrapped base64, a QP
    // attachment: each part is decoded once and its findings kept.
    let csv = "name,ssn\nJane,536221234\n";
    let raw = format!(
        "Subject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n\
         --B\nContent-Type: text/plain\nContent-Transfer-Encoding: QUOTED-PRINTABLE\n\n\
         card 4556 7375 86=\n89 9855 exp 12/29\n\
         --B\nContent-Type: text/csv; name=a.csv\nContent-Transfer-Encoding: BASE64\n\
         Content-Disposition: attachment; filename=a.csv\n\n{}\n\
         --B\nContent-Type: application/octet-stream; name=b.csv\nContent-Transfer-Encoding: quoted-printable\n\
         Content-Disposition: attachment; filename=b.csv\n\nname,ssn=2Cnote\nJo,536221235,=\nok\n--B--\n",
        b64(csv.as_bytes()).replace("\r\n", "")
    );
    let r = scan(raw.as_bytes());
    let got: Vec<(Detector, &str, String)> = r
        .findings
        .iter()
        .map(|f| (f.detector, f.matched.as_str(), f.location.to_string()))
        .collect();
    assert!(
        got.contains(&(Detector::CreditCard, CARD, "body".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Detector::UsSsn, "536221234", "attachment:a.csv".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(Detector::UsSsn, "536221235", "attachment:b.csv".into())),
        "{got:?}"
    );
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn xlsx_cells_read_under_their_column_header() {
    // 200 rows: the header is thousands of characters above the last value.
    let shared = r#"<sst><si><t>Employee</t></si><si><t>SSN</t></si><si><t>Account</t></si></sst>"#;
    let mut rows = String::from(
        r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row>"#,
    );
    for i in 2..202 {
        rows.push_str(&format!(
            r#"<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>Person {i}</t></is></c><c r="B{i}"><v>536{:06}</v></c><c r="C{i}"><v>621{:06}</v></c></row>"#,
            220000 + i,
            100000 + i
        ));
    }
    let sheet = format!("<worksheet><sheetData>{rows}</sheetData></worksheet>");
    let xlsx = zip_writer::build(&[
        ("[Content_Types].xml", b"<Types/>", true),
        ("xl/sharedStrings.xml", shared.as_bytes(), true),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes(), true),
    ]);
    let r = scan(&with_attachment("staff.xlsx", "application/octet-stream", &xlsx));
    let ssns: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.detector == Detector::UsSsn)
        .map(|f| f.matched.as_str())
        .collect();
    assert_eq!(ssns.len(), 200, "{ssns:?}");
    assert!(
        ssns.iter().all(|m| m.starts_with("536")),
        "the account column is not SSNs"
    );
    assert!(r
        .findings
        .iter()
        .all(|f| f.location == Location::Attachment("staff.xlsx".into())));
}

#[test]
fn docx_table_cells_read_under_their_column_header() {
    let cell = |t: &str| format!("<w:tc><w:p><w:r><w:t>{t}</w:t></w:r></w:p></w:tc>");
    let mut body = format!(
        "<w:p><w:r><w:t>Quarterly staff list</w:t></w:r></w:p><w:tbl><w:tr>{}{}</w:tr>",
        cell("Name"),
        cell("Social Security No")
    );
    for i in 0..60 {
        body.push_str(&format!(
            "<w:tr>{}{}</w:tr>",
            cell(&format!("Person {i}")),
            cell(&format!("536-22-{:04}", 1000 + i))
        ));
    }
    body.push_str("</w:tbl>");
    let xml = format!("<w:document><w:body>{body}</w:body></w:document>");
    let docx = zip_writer::build(&[
        ("[Content_Types].xml", b"<Types/>", true),
        ("word/document.xml", xml.as_bytes(), true),
    ]);
    let r = scan(&with_attachment("staff.docx", "application/octet-stream", &docx));
    let high = r
        .findings
        .iter()
        .filter(|f| f.detector == Detector::UsSsn && f.confidence == Confidence::High)
        .count();
    assert_eq!(high, 60);
}
