//! Outbound DANE (RFC 7672) against BIND 9 serving a zone signed at test
//! time, with sluice validating DNSSEC itself from the zone's key: a TLSA
//! match (DANE-EE and DANE-TA) delivers over TLS, a mismatch, a bogus
//! signature and a missing STARTTLS defer with 4.7.5 and never send in
//! clear, and an unsigned zone falls back to opportunistic TLS even with
//! a TLSA record that would not match. Net 200.

use crate::support::{
    contoso_with_on_prem, swaks, Bind, Net, Node, NodeOptions, Postfix, Sink, TestCa, Zones,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const NODE: u8 = 1;
const MX: u8 = 25;
const SINK: u8 = 26;
const CLEAR_MX: u8 = 27;
const ON_PREM: u8 = 40;
const DNS: u8 = 53;

/// SHA-256 of the certificate's SubjectPublicKeyInfo (TLSA `3 1 1`).
fn spki_sha256(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    hex(ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw).as_ref())
}

/// SHA-256 of the whole certificate (TLSA `2 0 1`).
fn cert_sha256(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem)
        .expect("PEM certificate")
        .to_vec()
}

fn event_detail(node: &Node, event: &str, to: &str) -> Option<String> {
    node.trace(&[])
        .iter()
        .rev()
        .find(|e| e["event"] == event && e["to"].as_str().is_some_and(|t| t.contains(to)))
        .and_then(|e| e["detail"].as_str().map(str::to_string))
}

#[test]
fn dane_match_delivers_mismatch_bogus_and_missing_starttls_defer_unsigned_falls_back() {
    let net = Net(200);
    let certs = tempfile::tempdir().expect("cert dir");
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ca = TestCa::new("DANE Test CA");
    let names = [
        "mx.good.test",
        "mx.ta.test",
        "mx.wrong.test",
        "mx.bogus.test",
        "mx.plain.test",
    ];
    let leaf = ca.leaf(certs.path(), "mx", &names);
    let leaf_der = der_of(&std::fs::read(&leaf.cert).expect("read leaf"));
    // DANE-TA needs the issuer in the presented chain.
    let mut chain = std::fs::read_to_string(&leaf.cert).expect("read leaf");
    chain.push_str(&ca.cert_pem);
    std::fs::write(&leaf.cert, chain).expect("write chain");
    let other_key = TestCa::self_signed(certs.path(), "other", &["mx.wrong.test"]);
    let other_der = der_of(&std::fs::read(&other_key.cert).expect("read other"));

    let postfix = Postfix::start(net.ip(MX), net.ip(SINK), Some(&leaf));
    let mx_port = postfix.addr.port();
    // A receiving MX without STARTTLS on the same port, another address.
    let clear = Sink::start_on(SocketAddr::new(net.ip(CLEAR_MX).into(), mx_port));

    let good = spki_sha256(&leaf_der);
    let ta = cert_sha256(&der_of(ca.cert_pem.as_bytes()));
    let wrong = spki_sha256(&other_der);
    let mx = net.ip(MX);
    let clear_ip = net.ip(CLEAR_MX);
    let signed = format!(
        "good IN MX 10 mx.good.test.
mx.good IN A {mx}
_25._tcp.mx.good IN TLSA 3 1 1 {good}
ta IN MX 10 mx.ta.test.
mx.ta IN A {mx}
_25._tcp.mx.ta IN TLSA 2 0 1 {ta}
wrong IN MX 10 mx.wrong.test.
mx.wrong IN A {mx}
_25._tcp.mx.wrong IN TLSA 3 1 1 {wrong}
bogus IN MX 10 mx.bogus.test.
mx.bogus IN A {mx}
_25._tcp.mx.bogus IN TLSA 3 1 1 {good}
clear IN MX 10 mx.clear.test.
mx.clear IN A {clear_ip}
_25._tcp.mx.clear IN TLSA 3 1 1 {good}
"
    );
    // An unsigned zone's TLSA would not match: it must be ignored.
    let plain = format!("@ IN MX 10 mx.plain.test.\nmx IN A {mx}\n_25._tcp.mx IN TLSA 3 1 1 {wrong}\n");
    let bind = Bind::start(
        net.ip(DNS),
        &Zones {
            signed: &signed,
            unsigned: &[("plain", &plain)],
            bogus_tlsa: &["_25._tcp.mx.bogus"],
        },
    );

    let mut options = NodeOptions::new(net.ip(NODE), &contoso_with_on_prem(net.ip(ON_PREM)));
    options.dns = Some(bind.addr);
    options.mx_port = Some(mx_port);
    options.dnssec_trust_anchor = Some(bind.trust_anchor.clone());
    options.retry = vec!["30s".to_string()];
    let node = Node::start(options);

    let on_prem = net.ip(ON_PREM).to_string();
    let run = swaks(
        node.smtp,
        &[
            "--local-interface",
            &on_prem,
            "--from",
            "alice@contoso.test",
            "--to",
            "bob@good.test,tina@ta.test,walt@wrong.test,bea@bogus.test,carl@clear.test,paul@plain.test",
            "--header",
            "Subject: DANE",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);

    // Matching TLSA records (DANE-EE by key, DANE-TA by issuer): delivered.
    for (address, domain) in [("bob@good.test", "good"), ("tina@ta.test", "ta")] {
        node.wait_for_recipient(address, "delivered", Duration::from_secs(30));
        let detail = event_detail(&node, "delivered", address).expect("delivered event");
        assert!(detail.starts_with("tls=dane "), "{domain}: {detail}");
    }
    // The unsigned zone: opportunistic TLS, its mismatching TLSA ignored.
    node.wait_for_recipient("paul@plain.test", "delivered", Duration::from_secs(30));
    let detail = event_detail(&node, "delivered", "paul@plain.test").expect("delivered event");
    assert!(
        detail.starts_with("tls=opportunistic "),
        "{detail}\n{}",
        bind.log()
    );

    // Mismatch, bogus signature, no STARTTLS: deferred with 4.7.5.
    let (_, _, error) = node.wait_for_recipient("walt@wrong.test", "deferred", Duration::from_secs(30));
    assert!(error.contains("4.7.5") && error.contains("TLSA"), "{error}");
    let (_, _, error) = node.wait_for_recipient("bea@bogus.test", "deferred", Duration::from_secs(30));
    assert!(error.contains("4.7.5") && error.contains("bogus"), "{error}");
    let detail = event_detail(&node, "deferred", "bea@bogus.test").expect("deferred event");
    assert!(detail.starts_with("tls=dane "), "{detail}");
    let (_, _, error) = node.wait_for_recipient("carl@clear.test", "deferred", Duration::from_secs(30));
    assert!(error.contains("4.7.5") && error.contains("STARTTLS"), "{error}");
    let detail = event_detail(&node, "deferred", "walt@wrong.test").expect("deferred event");
    assert!(detail.starts_with("tls=dane "), "{detail}");

    // route explain names the policy: DANE for the signed domain, the
    // connector's level for the unsigned one.
    let ip = net.ip(ON_PREM).to_string();
    let explain = |to: &str| -> String {
        let explained = node.cli_json(&[
            "route",
            "explain",
            "--from",
            "alice@contoso.test",
            "--to",
            to,
            "--ip",
            &ip,
            "--json",
        ]);
        explained["recipients"][0]["tls"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        explain("bob@good.test"),
        "dane (mx.good.test: 1 TLSA) [connector level: opportunistic]"
    );
    assert_eq!(explain("paul@plain.test"), "opportunistic");

    // domain check: a signed TLSA record is fine, an unsigned one is not.
    let check = |domain: &str| -> serde_json::Value {
        let output = node.cli(&["domain", "check", domain, "--json"]);
        let lines: serde_json::Value = serde_json::from_slice(&output.stdout).expect("domain check JSON");
        lines
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|l| l["record"].as_str().is_some_and(|r| r.starts_with("TLSA")))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no TLSA line: {lines:#}"))
    };
    let good_line = check("good.test");
    assert_eq!(good_line["record"], "TLSA _25._tcp.mx.good.test", "{good_line:#}");
    assert_eq!(good_line["ok"], true, "{good_line:#}");
    let plain_line = check("plain.test");
    assert_eq!(plain_line["ok"], false, "{plain_line:#}");
    assert!(
        plain_line["found"]
            .as_str()
            .is_some_and(|f| f.contains("not DNSSEC-secure")),
        "{plain_line:#}"
    );

    // Nothing went in clear: the sink without STARTTLS saw no message,
    // and the MX received exactly the three good deliveries.
    assert_eq!(clear.count(), 0, "a message went to the MX without STARTTLS");
    let received = postfix.sink.wait_for(3, Duration::from_secs(30));
    let mut recipients: Vec<String> = received
        .iter()
        .flat_map(|m| m.rcpt_to.iter())
        .map(|r| r.split(' ').next().unwrap_or("").to_string())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        vec!["<bob@good.test>", "<paul@plain.test>", "<tina@ta.test>"]
    );
}
