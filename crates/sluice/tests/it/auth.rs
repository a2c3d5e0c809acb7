//! Mail authentication over the wire (issue 15, SPEC section 9), with an
//! independent implementation on the other side: dkimpy verifies what
//! sluice signs and signs what sluice verifies; dnsmasq serves the SPF,
//! DKIM and DMARC records. Nets 162-164.

use crate::support::{
    on_prem_relay, swaks, wait_until, Dns, Net, Node, NodeOptions, Record, Sink, SinkMessage, SwaksRun,
};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NODE: u8 = 1;
const SINK: u8 = 21;
const ON_PREM: u8 = 40;
/// The only address fabrikam.test's SPF record allows.
const FABRIKAM_MTA: u8 = 5;
/// An address no SPF record allows.
const STRANGER: u8 = 6;
/// A partner's relay in front of the node (enhanced filtering).
const PARTNER_RELAY: u8 = 7;
const DNS: u8 = 53;

/// dkimpy (and PyNaCl, openssl) as the independent DKIM implementation.
const DKIMPY: &str = r#"
import base64, json, subprocess, sys
import dkim, nacl.signing
command = sys.argv[1]
if command == "keys":
    ed = nacl.signing.SigningKey.generate()
    pem = subprocess.run(["openssl", "genrsa", "-traditional", "2048"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True, check=True).stdout
    print(json.dumps({
        "ed_private": base64.b64encode(bytes(ed)).decode(),
        "ed_public": base64.b64encode(bytes(ed.verify_key)).decode(),
        "rsa_private": pem.decode(),
        "rsa_public": base64.b64encode(der).decode(),
    }))
elif command == "sign":
    algorithm, selector, domain, key = sys.argv[2:6]
    message = sys.stdin.buffer.read()
    signature = dkim.sign(message, selector.encode(), domain.encode(), key.encode(),
        signature_algorithm=b"ed25519-sha256" if algorithm == "ed25519" else b"rsa-sha256",
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        canonicalize=(b"relaxed", b"relaxed"))
    sys.stdout.buffer.write(signature + message)
elif command == "many":
    count, key = int(sys.argv[2]), sys.argv[3]
    message = sys.stdin.buffer.read()
    for n in range(count):
        message = dkim.sign(message, b"s%d" % n, b"fabrikam.test", key.encode(),
            signature_algorithm=b"ed25519-sha256", include_headers=[b"from", b"subject"]) + message
    sys.stdout.buffer.write(message)
elif command == "verify":
    record = sys.argv[2].encode()
    message = sys.stdin.buffer.read()
    sys.exit(0 if dkim.verify(message, dnsfunc=lambda name, timeout=5: record) else 1)
"#;

fn dkimpy(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new("timeout")
        .args(["60", "python3", "-c", DKIMPY])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/test.sh installs dkimpy)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed dkimpy");
    child.wait_with_output().expect("dkimpy output")
}

/// Whether dkimpy finds `message` validly signed, the key being `record`.
fn dkimpy_verifies(message: &str, record: &str) -> bool {
    let out = dkimpy(&["verify", record], message.replace('\n', "\r\n").as_bytes());
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "dkimpy verify crashed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

fn send(node: &Node, source: Ipv4Addr, from: &str, to: &str, extra: &[&str]) -> SwaksRun {
    let source = source.to_string();
    let mut args = vec!["--local-interface", source.as_str(), "--from", from, "--to", to];
    args.extend_from_slice(extra);
    swaks(node.smtp, &args)
}

fn key_record(node: &Node, domain: &str, selector: &str) -> String {
    let keys = node.cli_json(&["dkim", "show", domain, "--json"]);
    keys.as_array()
        .expect("list of keys")
        .iter()
        .find(|k| k["selector"] == selector)
        .and_then(|k| k["record"].as_str())
        .unwrap_or_else(|| panic!("no key {selector} for {domain}: {keys}"))
        .to_string()
}

fn by_subject(messages: &[SinkMessage], subject: &str) -> SinkMessage {
    messages
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message {subject:?} among {}", messages.len()))
        .clone()
}

#[test]
fn signatures_sluice_makes_verify_in_dkimpy_through_a_key_rotation() {
    let net = Net(162);
    let sink = Sink::start(net.ip(SINK));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &(on_prem_relay(net.ip(ON_PREM), "Internet", "*", sink.addr)
            + "\n[[accepted_domain]]\nname = \"northwind.test\"\n"),
    ));
    let printed = node.cli_ok(&["dkim", "new", "contoso.test"]);
    assert!(
        printed.contains("selector1._domainkey.contoso.test. IN TXT \"v=DKIM1; k=ed25519; p="),
        "dkim new prints the record to publish: {printed}"
    );
    node.cli_ok(&["dkim", "new", "northwind.test", "--algorithm", "rsa"]);
    let listed = node.cli_ok(&["dkim", "list", "--json"]);
    assert!(
        !listed.contains("private"),
        "no private key is ever shown: {listed}"
    );
    let contoso = key_record(&node, "contoso.test", "selector1");
    let northwind = key_record(&node, "northwind.test", "selector1");
    assert!(northwind.starts_with("v=DKIM1; k=rsa; p="), "{northwind}");

    let on_prem = net.ip(ON_PREM);
    for (from, subject) in [("alice@contoso.test", "ed25519"), ("alice@northwind.test", "rsa")] {
        let run = send(
            &node,
            on_prem,
            from,
            "bob@fabrikam.test",
            &["--header", &format!("Subject: {subject}")],
        );
        assert!(run.delivered(), "{subject}: {}", run.transcript);
    }
    let internal = send(
        &node,
        on_prem,
        "alice@contoso.test",
        "carol@contoso.test",
        &["--header", "Subject: internal"],
    );
    assert!(internal.delivered(), "{}", internal.transcript);
    // SPEC section 4: carol's mail stays in this node's mailboxes.
    let messages = sink.wait_for(2, Duration::from_secs(30));
    let ed = by_subject(&messages, "ed25519");
    let rsa = by_subject(&messages, "rsa");
    assert!(ed
        .header("DKIM-Signature")
        .is_some_and(|s| s.contains("a=ed25519-sha256")));
    assert!(rsa
        .header("DKIM-Signature")
        .is_some_and(|s| s.contains("a=rsa-sha256")));
    assert!(
        dkimpy_verifies(&ed.content, &contoso),
        "dkimpy rejects the Ed25519 signature:\n{}",
        ed.content
    );
    assert!(
        dkimpy_verifies(&rsa.content, &northwind),
        "dkimpy rejects the RSA signature:\n{}",
        rsa.content
    );
    let tampered = ed.content.replace("Subject: ed25519", "Subject: changed");
    assert!(
        !dkimpy_verifies(&tampered, &contoso),
        "a changed message must not verify"
    );
    assert!(
        !dkimpy_verifies(&ed.content, &northwind),
        "another domain's key must not verify"
    );
    assert!(
        crate::support::wait_until(Duration::from_secs(30), || !node
            .mailbox("contoso.test", "carol")
            .is_empty()),
        "carol's mail did not reach her mailbox: queue {:?}",
        node.queue_json()
    );
    let kept = node.mailbox("contoso.test", "carol");
    let kept = String::from_utf8_lossy(&kept[0]);
    assert!(
        kept.contains("Subject: internal") && !kept.contains("DKIM-Signature"),
        "mail staying inside the organisation is not signed:\n{kept}"
    );

    // Rotation: a second selector is published while the first signs,
    // then switched to; the first is retired only once it no longer signs.
    let second = node.cli_ok(&["dkim", "new", "contoso.test"]);
    assert!(
        second.contains("selector2._domainkey.contoso.test") && second.contains("inactive"),
        "{second}"
    );
    let early = node.cli(&["dkim", "remove", "contoso.test", "selector1"]);
    assert_eq!(
        early.status.code(),
        Some(1),
        "the active key is not removed while another exists"
    );
    assert!(String::from_utf8_lossy(&early.stderr).contains("activate another selector first"));
    node.cli_ok(&["dkim", "activate", "contoso.test", "selector2"]);
    node.cli_ok(&["dkim", "remove", "contoso.test", "selector1"]);
    let run = send(
        &node,
        on_prem,
        "alice@contoso.test",
        "bob@fabrikam.test",
        &["--header", "Subject: rotated"],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let messages = sink.wait_for(4, Duration::from_secs(30));
    let rotated = by_subject(&messages, "rotated");
    assert!(rotated
        .header("DKIM-Signature")
        .is_some_and(|s| s.contains("s=selector2")));
    let selector2 = key_record(&node, "contoso.test", "selector2");
    assert!(dkimpy_verifies(&rotated.content, &selector2));
    assert!(
        !dkimpy_verifies(&rotated.content, &contoso),
        "the retired key no longer verifies new mail"
    );
}

/// Keys made by dkimpy's side: Ed25519 seed, RSA PEM, and their records.
struct SenderKeys {
    ed_private: String,
    ed_public: String,
    rsa_private: String,
    rsa_public: String,
}

fn sender_keys() -> SenderKeys {
    let out = dkimpy(&["keys"], b"");
    assert!(
        out.status.success(),
        "dkimpy keys: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Value = serde_json::from_slice(&out.stdout).expect("keys JSON");
    let text = |k: &str| keys[k].as_str().expect("key").to_string();
    SenderKeys {
        ed_private: text("ed_private"),
        ed_public: text("ed_public"),
        rsa_private: text("rsa_private"),
        rsa_public: text("rsa_public"),
    }
}

/// A message from `from`, signed by dkimpy when `key` is given, written to
/// a file for swaks.
fn message_file(
    dir: &Path,
    name: &str,
    from: &str,
    subject: &str,
    extra_headers: &str,
    key: Option<(&str, &str, &str)>,
) -> String {
    let plain = format!(
        "{extra_headers}From: {from}\r\nTo: bob@contoso.test\r\nSubject: {subject}\r\nDate: Mon, 30 Nov 2026 04:00:00 +0000\r\nMessage-ID: <{name}@fabrikam.test>\r\n\r\nHello from {from}.\r\n"
    );
    let content = match key {
        None => plain.into_bytes(),
        Some((algorithm, selector, private)) => {
            let out = dkimpy(
                &["sign", algorithm, selector, "fabrikam.test", private],
                plain.as_bytes(),
            );
            assert!(
                out.status.success(),
                "dkimpy sign: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    };
    let path = dir.join(format!("{name}.eml"));
    std::fs::write(&path, content).expect("write message");
    format!("@{}", path.display())
}

fn received_detail(node: &Node, message_id: &str) -> String {
    node.trace(&["--message-id", message_id])
        .iter()
        .filter(|e| e["event"] == "received")
        .filter_map(|e| e["detail"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn dkimpy_signatures_verify_in_sluice_and_dmarc_policies_are_enforced() {
    let net = Net(163);
    let keys = sender_keys();
    let spf = format!("v=spf1 ip4:{} -all", net.ip(FABRIKAM_MTA));
    let ed_record = format!("v=DKIM1; k=ed25519; p={}", keys.ed_public);
    let rsa_record = format!("v=DKIM1; k=rsa; p={}", keys.rsa_public);
    let dns = Dns::start(
        net.ip(DNS),
        &[
            Record::Txt {
                name: "fabrikam.test",
                text: &spf,
            },
            Record::Txt {
                name: "_dmarc.fabrikam.test",
                text: "v=DMARC1; p=reject",
            },
            Record::Txt {
                name: "ed._domainkey.fabrikam.test",
                text: &ed_record,
            },
            Record::Txt {
                name: "rsa._domainkey.fabrikam.test",
                text: &rsa_record,
            },
            Record::Txt {
                name: "tailspin.test",
                text: "v=spf1 -all",
            },
            Record::Txt {
                name: "_dmarc.tailspin.test",
                text: "v=DMARC1; p=quarantine",
            },
            Record::Txt {
                name: "litware.test",
                text: "v=spf1 -all",
            },
            Record::Txt {
                name: "_dmarc.litware.test",
                text: "v=DMARC1; p=none",
            },
        ],
    );
    let mut options = NodeOptions::new(
        net.ip(NODE),
        r#"
[[accepted_domain]]
name = "contoso.test"

[[rule]]
name = "Mark DMARC failures"
[rule.conditions]
dmarc_result = ["fail"]
[rule.actions]
prepend_subject = "[DMARC FAIL] "
"#,
    );
    options.dns = Some(dns.addr);
    let node = Node::start(options);
    let dir = tempfile::tempdir().expect("temp dir");
    let hostname = node.options.hostname.clone();
    let forged_results = format!("Authentication-Results: {hostname}; spf=pass smtp.mailfrom=forged\r\n");
    let (good_ip, stranger) = (net.ip(FABRIKAM_MTA), net.ip(STRANGER));

    // Signed by dkimpy, sent from an address SPF does not allow: DKIM
    // alone (aligned) passes DMARC. A results header claiming this node's
    // name that came with it is gone; the node's own is there.
    let ed = message_file(
        dir.path(),
        "ed",
        "alice@fabrikam.test",
        "ed25519",
        &forged_results,
        Some(("ed25519", "ed", &keys.ed_private)),
    );
    let run = send(
        &node,
        stranger,
        "alice@fabrikam.test",
        "bob@contoso.test",
        &["--data", &ed],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let rsa = message_file(
        dir.path(),
        "rsa",
        "alice@fabrikam.test",
        "rsa",
        "",
        Some(("rsa", "rsa", &keys.rsa_private)),
    );
    let run = send(
        &node,
        good_ip,
        "alice@fabrikam.test",
        "bob@contoso.test",
        &["--data", &rsa],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(wait_until(Duration::from_secs(20), || node
        .mailbox("contoso.test", "bob")
        .len()
        >= 2));
    let inbox: Vec<SinkMessage> = node
        .mailbox("contoso.test", "bob")
        .iter()
        .map(|m| SinkMessage::from_bytes(m))
        .collect();
    let ed = by_subject(&inbox, "ed25519");
    let results = ed.headers_named("Authentication-Results");
    assert_eq!(
        results.len(),
        1,
        "exactly one results header, this node's: {results:?}"
    );
    assert!(results[0].starts_with(&format!("{hostname};")), "{results:?}");
    for expected in [
        "dkim=pass",
        "header.i=@fabrikam.test",
        "spf=fail",
        "dmarc=pass",
        "arc=none",
    ] {
        assert!(
            results[0].contains(expected),
            "{expected} missing: {}",
            results[0]
        );
    }
    let rsa = by_subject(&inbox, "rsa");
    let results = rsa.headers_named("Authentication-Results").join(" ");
    assert!(
        results.contains("dkim=pass") && results.contains("spf=pass") && results.contains("dmarc=pass"),
        "{results}"
    );
    let traced = received_detail(&node, "ed@fabrikam.test");
    assert!(
        traced.contains("spf=fail dkim=pass dmarc=pass arc=none"),
        "trace: {traced}"
    );

    // The same From without a signature, from an address SPF refuses:
    // p=reject is a 550 5.7.1 at end of data, recorded in the trace.
    let forged = message_file(dir.path(), "forged", "ceo@fabrikam.test", "pay this", "", None);
    let run = send(
        &node,
        stranger,
        "ceo@fabrikam.test",
        "bob@contoso.test",
        &["--data", &forged],
    );
    assert!(
        !run.delivered(),
        "a forged p=reject sender is refused:\n{}",
        run.transcript
    );
    assert!(
        run.transcript.contains("550 5.7.1") && run.transcript.contains("DMARC policy of fabrikam.test"),
        "{}",
        run.transcript
    );
    assert!(
        wait_until(Duration::from_secs(10), || node
            .trace(&["--message-id", "forged@fabrikam.test"])
            .iter()
            .any(|e| e["event"] == "rejected")),
        "the refusal is in the trace"
    );

    // A message cannot make the node look up more than ten signing keys.
    let plain = b"From: alice@fabrikam.test\r\nTo: bob@contoso.test\r\nSubject: many\r\nMessage-ID: <many@fabrikam.test>\r\n\r\nMany signatures.\r\n";
    let out = dkimpy(&["many", "25", &keys.ed_private], plain);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let many = dir.path().join("many.eml");
    std::fs::write(&many, &out.stdout).expect("write");
    let many = format!("@{}", many.display());
    let run = send(
        &node,
        good_ip,
        "alice@fabrikam.test",
        "bob@contoso.test",
        &["--data", &many],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(wait_until(Duration::from_secs(20), || node
        .mailbox("contoso.test", "bob")
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("Subject: many"))));
    let inbox: Vec<SinkMessage> = node
        .mailbox("contoso.test", "bob")
        .iter()
        .map(|m| SinkMessage::from_bytes(m))
        .collect();
    let results = by_subject(&inbox, "many")
        .headers_named("Authentication-Results")
        .join(" ");
    assert_eq!(results.matches("dkim=").count(), 10, "{results}");

    // p=quarantine holds the message; p=none delivers it, and the rule
    // condition sees the failure.
    let held = message_file(dir.path(), "held", "ceo@tailspin.test", "held", "", None);
    let run = send(
        &node,
        stranger,
        "ceo@tailspin.test",
        "bob@contoso.test",
        &["--data", &held],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let quarantine = node.cli_json(&["quarantine", "list", "--json"]);
    let listed = quarantine.to_string();
    assert!(
        listed.contains("held@fabrikam.test") && listed.contains("DMARC policy of tailspin.test"),
        "{listed}"
    );
    let marked = message_file(dir.path(), "marked", "ceo@litware.test", "marked", "", None);
    let run = send(
        &node,
        stranger,
        "ceo@litware.test",
        "bob@contoso.test",
        &["--data", &marked],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(wait_until(Duration::from_secs(20), || node
        .mailbox("contoso.test", "bob")
        .iter()
        .any(
            |m| String::from_utf8_lossy(m).contains("Subject: [DMARC FAIL] marked")
        )));
    let inbox: Vec<SinkMessage> = node
        .mailbox("contoso.test", "bob")
        .iter()
        .map(|m| SinkMessage::from_bytes(m))
        .collect();
    by_subject(&inbox, "[DMARC FAIL] marked");
    assert!(inbox
        .iter()
        .all(|m| m.header("Subject").as_deref() != Some("[DMARC FAIL] ed25519")));
    // Enhanced filtering: behind a partner's relay, SPF (and so DMARC) is
    // judged on the address the relay received the message from, not on
    // the relay's own. The same message straight from the relay's address
    // without the connector setting fails.
    let partner = |enhanced: bool| {
        format!(
            "[[inbound_connector]]\nname = \"Partner relay\"\ntype = \"partner\"\n\
             sender_ip_addresses = [\"{}/32\"]\nenhanced_filtering = {enhanced}\n",
            net.ip(PARTNER_RELAY)
        )
    };
    node.apply("partner.toml", &partner(true));
    let hop = format!(
        "Received: from mail.fabrikam.test (mail.fabrikam.test [{}])\r\n\tby relay.partner.test with ESMTP; Mon, 30 Nov 2026 04:00:01 +0000\r\n",
        net.ip(FABRIKAM_MTA)
    );
    let relayed = message_file(
        dir.path(),
        "relayed",
        "alice@fabrikam.test",
        "relayed",
        &hop,
        None,
    );
    let run = send(
        &node,
        net.ip(PARTNER_RELAY),
        "alice@fabrikam.test",
        "bob@contoso.test",
        &["--data", &relayed],
    );
    assert!(
        run.delivered(),
        "judged on the hop before the relay:\n{}",
        run.transcript
    );
    let traced = received_detail(&node, "relayed@fabrikam.test");
    assert!(
        traced.contains("spf=pass dkim=none dmarc=pass"),
        "trace: {traced}"
    );
    node.apply("partner.toml", &partner(false));
    let direct = message_file(dir.path(), "direct", "alice@fabrikam.test", "direct", &hop, None);
    let run = send(
        &node,
        net.ip(PARTNER_RELAY),
        "alice@fabrikam.test",
        "bob@contoso.test",
        &["--data", &direct],
    );
    assert!(
        run.transcript.contains("550 5.7.1"),
        "without enhanced filtering the relay's address is judged:\n{}",
        run.transcript
    );
}

const GATEWAY: u8 = 10;
const SCANNER: u8 = 30;

/// Seed 000's loop for inbound mail: the gateway sends what comes from
/// outside through the scanner, which stamps it (changing the Subject, so
/// the sender's DKIM signature breaks) and seals it with ARC; back at the
/// gateway, DMARC fails on the message as it now stands, but the chain
/// validates and the sealer is trusted, so the gateway accepts it.
#[test]
fn a_trusted_scanners_arc_seal_keeps_stamped_mail_authenticated() {
    let net = Net(164);
    let keys = sender_keys();
    // Both nodes name the DNS server before the scanner's sealing key
    // (and so its record) exists.
    let dns_addr = std::net::SocketAddr::new(net.ip(DNS).into(), crate::support::free_port(net.ip(DNS)));

    let mut gateway_options = NodeOptions::new(net.ip(GATEWAY), "");
    gateway_options.dns = Some(dns_addr);
    gateway_options.bind_address = Some(net.ip(GATEWAY));
    gateway_options.extra_toml = "\n[auth]\ntrusted_arc_sealers = [\"scan.partner.test\"]\n".into();
    let gateway = Node::start(gateway_options);

    // Seed 000's scanner, which also marks the Subject it scanned: a
    // change the sender's DKIM signature covers.
    let scanner_objects = format!(
        "{}\n{}",
        crate::support::seed000::scanner_objects(net, gateway.smtp),
        r#"
[[rule]]
name = "Mark the subject"
priority = 2
[rule.actions]
prepend_subject = "[scanned] "
"#
    );
    let mut scanner_options = NodeOptions::new(net.ip(SCANNER), &scanner_objects);
    scanner_options.hostname = "scan.partner.test".into();
    scanner_options.dns = Some(dns_addr);
    scanner_options.bind_address = Some(net.ip(SCANNER));
    scanner_options.extra_toml =
        "\n[auth]\narc_seal = { domain = \"scan.partner.test\", selector = \"arc\" }\n".into();
    let scanner = Node::start(scanner_options);
    scanner.cli_ok(&[
        "dkim",
        "new",
        "scan.partner.test",
        "--selector",
        "arc",
        "--algorithm",
        "rsa",
    ]);
    let seal_record = key_record(&scanner, "scan.partner.test", "arc");

    // Seed 000's organisation, whose connector for the scanner's return is
    // a partner connector: the gateway judges what comes back.
    gateway.apply(
        "gateway.toml",
        &format!(
            r#"{organisation}
[[inbound_connector]]
name = "From scanner"
type = "partner"
sender_ip_addresses = ["{scanner_ip}/32"]
retain_internal_headers = true

[[outbound_connector]]
name = "To scanner"
type = "partner"
smart_hosts = ["{scanner}"]
transport_rule_scoped = true
retain_internal_headers = true

[[rule]]
name = "Inbound through the scanner"
[rule.conditions]
from_scope = "not_in_organization"
[rule.exceptions]
header_contains = {{ header = "X-Sluice-Org-Scan", words = ["scanner=scan.partner.test"] }}
[rule.actions]
route_via_connector = "To scanner"
"#,
            organisation = crate::support::seed000::organisation_objects(net),
            scanner_ip = net.ip(SCANNER),
            scanner = scanner.smtp
        ),
    );

    let spf = format!("v=spf1 ip4:{} -all", net.ip(FABRIKAM_MTA));
    let ed_record = format!("v=DKIM1; k=ed25519; p={}", keys.ed_public);
    let _dns = Dns::start_at(
        dns_addr,
        &[
            Record::Txt {
                name: "fabrikam.test",
                text: &spf,
            },
            Record::Txt {
                name: "_dmarc.fabrikam.test",
                text: "v=DMARC1; p=reject",
            },
            Record::Txt {
                name: "ed._domainkey.fabrikam.test",
                text: &ed_record,
            },
            Record::Txt {
                name: "arc._domainkey.scan.partner.test",
                text: &seal_record,
            },
        ],
    );

    let shown = scanner.cli_json(&["dkim", "show", "scan.partner.test", "--json"]);
    assert_eq!(shown[0]["published"], true, "the record is in DNS: {shown}");

    let dir = tempfile::tempdir().expect("temp dir");
    let signed = message_file(
        dir.path(),
        "looped",
        "alice@fabrikam.test",
        "quarterly",
        "",
        Some(("ed25519", "ed", &keys.ed_private)),
    );
    let run = send(
        &gateway,
        net.ip(FABRIKAM_MTA),
        "alice@fabrikam.test",
        "bob@contoso.test",
        &["--data", &signed],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(
        wait_until(Duration::from_secs(30), || !gateway
            .mailbox("contoso.test", "bob")
            .is_empty()),
        "the message never came back from the scanner: gateway trace {:?}\nscanner trace {:?}",
        gateway.trace(&["--message-id", "looped@fabrikam.test"]),
        scanner.trace(&["--message-id", "looped@fabrikam.test"])
    );
    let delivered = SinkMessage::from_bytes(&gateway.mailbox("contoso.test", "bob")[0]);
    assert_eq!(
        delivered.header("Subject").as_deref(),
        Some("[scanned] quarterly")
    );
    let seal = delivered.headers_named("ARC-Seal").join(" ");
    assert!(
        seal.contains("i=1") && seal.contains("d=scan.partner.test") && seal.contains("cv=none"),
        "{seal}"
    );
    let sealed_results = delivered.headers_named("ARC-Authentication-Results").join(" ");
    assert!(
        sealed_results.contains("scan.partner.test") && sealed_results.contains("dkim=pass"),
        "what the scanner saw: {sealed_results}"
    );
    let results = delivered.headers_named("Authentication-Results");
    let own: Vec<&String> = results
        .iter()
        .filter(|r| r.starts_with("gw.contoso.test;"))
        .collect();
    assert_eq!(own.len(), 1, "one results header of the gateway's: {results:?}");
    for expected in ["dkim=fail", "dmarc=fail", "arc=pass"] {
        assert!(own[0].contains(expected), "{expected} missing: {}", own[0]);
    }
    let traced = received_detail(&gateway, "looped@fabrikam.test");
    assert!(
        traced.contains("arc=pass (trusted ARC sealer scan.partner.test)"),
        "gateway trace: {traced}"
    );
}
