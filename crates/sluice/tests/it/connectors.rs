//! Connectors over the wire (issue 3): how a connection finds its inbound
//! connector (certificate before IP), what inbound connectors demand
//! (TLS, restrictions) and trust (internal headers), how outbound
//! connectors are chosen (rule scope, address-space cost), the seed's
//! PowerShell send connector against a real Postfix, connector validation
//! step by step, and `route explain` for the seeds. Nets 100-108.

use crate::support::{
    pause, swaks, Dns, Net, Node, NodeOptions, Postfix, Record, Sink, SinkMessage, SwaksRun, TestCa,
};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Host numbers inside each test's net.
const NODE: u8 = 1;
const SINK: u8 = 21;
const SINK_B: u8 = 22;
const SCANNER: u8 = 30;
const ON_PREM: u8 = 40;
const ELSEWHERE: u8 = 50;
const DNS: u8 = 53;

/// A directory Postfix's unprivileged daemons can read certificates from.
fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("cert dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod cert dir");
    dir
}

/// swaks from `source` with `args` appended.
fn send_from(node: &Node, source: Ipv4Addr, from: &str, to: &str, extra: &[&str]) -> SwaksRun {
    let source = source.to_string();
    let mut args = vec!["--local-interface", source.as_str(), "--from", from, "--to", to];
    args.extend_from_slice(extra);
    swaks(node.smtp, &args)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `route explain ... --json` on the node (or offline with `--objects`).
fn explain(node: &Node, args: &[&str]) -> Value {
    let mut all = vec!["route", "explain", "--json"];
    all.extend_from_slice(args);
    node.cli_json(&all)
}

/// The explanation of one recipient.
fn recipient<'a>(explanation: &'a Value, address: &str) -> &'a Value {
    explanation["recipients"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("no recipient {address} in {explanation:#}"))
}

fn mailbox_subjects(node: &Node, domain: &str, local: &str) -> Vec<String> {
    node.mailbox(domain, local)
        .iter()
        .map(|m| SinkMessage::from_bytes(m).header("subject").unwrap_or_default())
        .collect()
}

#[test]
fn client_certificate_selects_its_connector_over_an_ip_range() {
    let net = Net(100);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let client = ca.client_leaf(certs.path(), "client", &["mail.onprem.test"]);
    let sink = Sink::start(net.ip(SINK));
    let mut options = NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"

# Covers the client's address, but is a partner: no relay.
[[inbound_connector]]
name = "Partner range"
type = "partner"
sender_ip_addresses = ["127.0.100.0/24"]

# Only this one grants relay, and only to a certificate it names.
[[inbound_connector]]
name = "On-prem by certificate"
type = "on_premises"
tls_sender_certificate_name = "*.onprem.test"

[[outbound_connector]]
name = "Internet via smart host"
recipient_domains = ["*"]
smart_hosts = ["{sink}"]
"#,
            sink = sink.addr
        ),
    );
    options.client_ca = Some(ca_file);
    let node = Node::start(options);
    let cert = client.cert.display().to_string();
    let key = client.key.display().to_string();

    let with_cert = send_from(
        &node,
        net.ip(ON_PREM),
        "alice@contoso.test",
        "bob@fabrikam.test",
        &[
            "--tls",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--header",
            "Subject: identified by certificate",
        ],
    );
    assert!(
        with_cert.delivered(),
        "relay with the on-prem certificate refused:\n{}",
        with_cert.transcript
    );
    let without_cert = send_from(
        &node,
        net.ip(ON_PREM),
        "alice@contoso.test",
        "bob@fabrikam.test",
        &["--tls", "--header", "Subject: no certificate"],
    );
    assert_eq!(
        without_cert.code,
        Some(24),
        "relay without the certificate was not refused at RCPT:\n{}",
        without_cert.transcript
    );
    assert!(
        without_cert.transcript.contains("550 5.7.1"),
        "{}",
        without_cert.transcript
    );

    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1, "the certificate-identified relay never arrived");
    assert_eq!(
        arrived[0].header("subject").as_deref(),
        Some("identified by certificate")
    );
    pause(Duration::from_secs(1));
    assert_eq!(sink.count(), 1, "the refused message arrived too");

    // The trace names the connector the certificate selected.
    let events = node.trace(&[]);
    let received: Vec<&Value> = events.iter().filter(|e| e["event"] == "received").collect();
    assert_eq!(received.len(), 1, "expected one received message: {events:#?}");
    assert_eq!(
        received[0]["connector"], "On-prem by certificate",
        "trace: {events:#?}"
    );

    // route explain agrees, with and without the certificate name.
    let ip = net.ip(ON_PREM).to_string();
    let common = [
        "--from",
        "alice@contoso.test",
        "--to",
        "bob@fabrikam.test",
        "--ip",
        ip.as_str(),
    ];
    let mut args = common.to_vec();
    args.extend_from_slice(&["--tls-cert-name", "mail.onprem.test"]);
    let by_cert = explain(&node, &args);
    assert_eq!(
        by_cert["inbound"]["connector"], "On-prem by certificate",
        "{by_cert:#}"
    );
    assert_eq!(by_cert["relay_allowed"], true, "{by_cert:#}");
    let bob = recipient(&by_cert, "bob@fabrikam.test");
    assert_eq!(bob["outcome"], "deliver", "{by_cert:#}");
    assert_eq!(bob["connector"], "Internet via smart host", "{by_cert:#}");

    let by_ip = explain(&node, &common);
    assert_eq!(by_ip["inbound"]["connector"], "Partner range", "{by_ip:#}");
    assert_eq!(by_ip["relay_allowed"], false, "{by_ip:#}");
    let bob = recipient(&by_ip, "bob@fabrikam.test");
    assert_eq!(bob["accepted"], false, "{by_ip:#}");
    assert!(text(bob, "/reply").contains("5.7.1"), "{by_ip:#}");
}

#[test]
fn require_tls_refuses_clear_text_at_mail_from_its_sources_only() {
    let net = Net(101);
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "Fabrikam"
type = "partner"
sender_ip_addresses = ["127.0.101.40/32"]
sender_domains = ["fabrikam.test"]
require_tls = true
"#,
    ));

    let clear = send_from(
        &node,
        net.ip(ON_PREM),
        "ann@fabrikam.test",
        "bob@contoso.test",
        &["--header", "Subject: in clear"],
    );
    assert_eq!(
        clear.code,
        Some(23),
        "clear text from a require_tls source was not refused at MAIL:\n{}",
        clear.transcript
    );
    let refusal = clear
        .transcript
        .lines()
        .find(|line| line.contains("530"))
        .unwrap_or_else(|| panic!("no 530 reply:\n{}", clear.transcript));
    assert!(refusal.contains("530 5.7.0"), "{refusal}");
    assert!(
        refusal.contains("TLS"),
        "the refusal does not say TLS is required: {refusal}"
    );

    let encrypted = send_from(
        &node,
        net.ip(ON_PREM),
        "ann@fabrikam.test",
        "bob@contoso.test",
        &["--tls", "--header", "Subject: over TLS"],
    );
    assert!(
        encrypted.delivered(),
        "refused over TLS:\n{}",
        encrypted.transcript
    );

    // Another address is not this connector's: clear text is fine there.
    let other = send_from(
        &node,
        net.ip(ELSEWHERE),
        "someone@example.test",
        "bob@contoso.test",
        &["--header", "Subject: anonymous in clear"],
    );
    assert!(other.delivered(), "{}", other.transcript);

    let ok = crate::support::wait_until(Duration::from_secs(20), || {
        node.mailbox("contoso.test", "bob").len() >= 2
    });
    let mut subjects = mailbox_subjects(&node, "contoso.test", "bob");
    subjects.sort();
    assert!(ok, "mailbox: {subjects:?}");
    assert_eq!(subjects, vec!["anonymous in clear", "over TLS"]);
}

#[test]
fn domain_restrictions_to_ip_addresses_and_to_certificate() {
    let net = Net(102);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let northwind = ca.client_leaf(certs.path(), "northwind", &["mail.northwind.test"]);
    let mut options = NodeOptions::new(
        net.ip(NODE),
        r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "Fabrikam by IP"
type = "partner"
sender_ip_addresses = ["127.0.102.40/32"]
sender_domains = ["fabrikam.test"]
restrict_domains_to_ip_addresses = true

[[inbound_connector]]
name = "Northwind by certificate"
type = "partner"
tls_sender_certificate_name = "mail.northwind.test"
sender_domains = ["northwind.test"]
restrict_domains_to_certificate = true
"#,
    );
    options.client_ca = Some(ca_file);
    let node = Node::start(options);
    let cert = northwind.cert.display().to_string();
    let key = northwind.key.display().to_string();
    let with_cert = ["--tls", "--tls-cert", cert.as_str(), "--tls-key", key.as_str()];

    let refused = |run: SwaksRun, what: &str| {
        assert!(
            matches!(run.code, Some(23) | Some(24)),
            "{what} was not refused at MAIL/RCPT:\n{}",
            run.transcript
        );
        assert!(
            run.transcript.contains("550 5.7.1"),
            "{what}:\n{}",
            run.transcript
        );
    };
    refused(
        send_from(
            &node,
            net.ip(ELSEWHERE),
            "ann@fabrikam.test",
            "bob@contoso.test",
            &[],
        ),
        "fabrikam.test from an unregistered address",
    );
    refused(
        send_from(
            &node,
            net.ip(ELSEWHERE),
            "ned@northwind.test",
            "bob@contoso.test",
            &["--tls"],
        ),
        "northwind.test without its certificate",
    );

    let mut subjects_sent = Vec::new();
    for (source, from, extra, subject) in [
        (ON_PREM, "ann@fabrikam.test", &[][..], "fabrikam from its address"),
        (
            ELSEWHERE,
            "ned@northwind.test",
            &with_cert[..],
            "northwind with its certificate",
        ),
        (ELSEWHERE, "tom@tailspin.test", &[][..], "unrestricted domain"),
    ] {
        let mut args = extra.to_vec();
        let header = format!("Subject: {subject}");
        args.extend_from_slice(&["--header", &header]);
        let run = send_from(&node, net.ip(source), from, "bob@contoso.test", &args);
        assert!(run.delivered(), "{subject}: refused\n{}", run.transcript);
        subjects_sent.push(subject.to_string());
    }
    crate::support::wait_until(Duration::from_secs(20), || {
        node.mailbox("contoso.test", "bob").len() >= 3
    });
    pause(Duration::from_secs(1));
    let mut subjects = mailbox_subjects(&node, "contoso.test", "bob");
    subjects.sort();
    subjects_sent.sort();
    assert_eq!(subjects, subjects_sent, "only the allowed messages are delivered");
}

#[test]
fn forged_internal_headers_from_anonymous_senders_are_removed() {
    let net = Net(103);
    let sink = Sink::start(net.ip(SINK));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
# internal_relay: the mail host holds the mailboxes, so the connector
# carries contoso.test (an authoritative domain would stay on this node).
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

[[inbound_connector]]
name = "Scanner"
type = "partner"
sender_ip_addresses = ["127.0.103.30/32"]
retain_internal_headers = true

# Keeps internal headers on the way out, so only the inbound firewall can
# have removed a forged one.
[[outbound_connector]]
name = "Contoso mail host"
recipient_domains = ["contoso.test"]
smart_hosts = ["{sink}"]
retain_internal_headers = true

[[rule]]
name = "Tag unscanned"
[rule.conditions]
sent_to_scope = "in_organization"
[rule.exceptions]
header_contains = {{ header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }}
[rule.actions]
prepend_subject = "[UNSCANNED] "
"#,
            sink = sink.addr
        ),
    ));
    let forged = send_from(
        &node,
        net.ip(ELSEWHERE),
        "mallory@evil.test",
        "bob@contoso.test",
        &[
            "--header",
            "Subject: forged stamp",
            "--add-header",
            "X-Sluice-Org-Scan: verdict=pass; scanner=forged.evil.test",
        ],
    );
    assert!(forged.delivered(), "{}", forged.transcript);
    let genuine = send_from(
        &node,
        net.ip(SCANNER),
        "partner@fabrikam.test",
        "bob@contoso.test",
        &[
            "--header",
            "Subject: genuine stamp",
            "--add-header",
            "X-Sluice-Org-Scan: verdict=pass; scanner=scan.partner.test",
        ],
    );
    assert!(genuine.delivered(), "{}", genuine.transcript);

    let arrived = sink.wait_for(2, Duration::from_secs(20));
    assert_eq!(arrived.len(), 2, "both messages should reach the mail host");
    let find = |word: &str| {
        arrived
            .iter()
            .find(|m| m.header("subject").unwrap_or_default().contains(word))
            .unwrap_or_else(|| panic!("no message with {word:?}: {arrived:#?}"))
    };
    let forged = find("forged");
    assert_eq!(
        forged.header("X-Sluice-Org-Scan"),
        None,
        "the forged stamp survived:\n{}",
        forged.content
    );
    assert_eq!(
        forged.header("subject").as_deref(),
        Some("[UNSCANNED] forged stamp"),
        "the forged message was treated as scanned"
    );
    let genuine = find("genuine");
    assert_eq!(
        genuine.header("X-Sluice-Org-Scan").as_deref(),
        Some("verdict=pass; scanner=scan.partner.test"),
        "the trusted scanner's stamp was removed:\n{}",
        genuine.content
    );
    assert_eq!(genuine.header("subject").as_deref(), Some("genuine stamp"));
    // SPEC section 5: the routing decision is stamped for destinations that
    // keep internal headers.
    assert_eq!(
        genuine.header("X-Sluice-Org-Route").as_deref(),
        Some("connector=Contoso mail host")
    );
}

#[test]
fn rule_scoped_connector_is_used_only_by_rules() {
    let net = Net(104);
    let sink = Sink::start(net.ip(SINK));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "contoso.test"

[[outbound_connector]]
name = "Rule only"
recipient_domains = ["*"]
smart_hosts = ["{sink}"]
transport_rule_scoped = true

[[rule]]
name = "Carol through the rule-only connector"
[rule.conditions]
sent_to = ["carol@contoso.test"]
[rule.actions]
route_via_connector = "Rule only"
"#,
            sink = sink.addr
        ),
    ));
    for to in ["bob@contoso.test", "carol@contoso.test"] {
        let header = format!("Subject: for {to}");
        let run = send_from(
            &node,
            net.ip(ELSEWHERE),
            "ann@fabrikam.test",
            to,
            &["--header", &header],
        );
        assert!(run.delivered(), "{}", run.transcript);
    }
    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1, "the rule did not route carol's copy");
    assert_eq!(
        arrived[0].rcpt_to[0].split(' ').next(),
        Some("<carol@contoso.test>")
    );
    assert!(
        crate::support::wait_until(Duration::from_secs(20), || !node
            .mailbox("contoso.test", "bob")
            .is_empty()),
        "bob's message did not reach his mailbox: queue {:?}",
        node.queue_json()
    );
    pause(Duration::from_secs(1));
    assert_eq!(sink.count(), 1, "domain routing used the rule-scoped connector");
    assert_eq!(
        mailbox_subjects(&node, "contoso.test", "bob"),
        vec!["for bob@contoso.test"]
    );
    assert!(node.mailbox("contoso.test", "carol").is_empty());
}

#[test]
fn lowest_address_space_cost_wins() {
    let net = Net(105);
    let expensive = Sink::start(net.ip(SINK));
    let cheap = Sink::start(net.ip(SINK_B));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"
[[accepted_domain]]
name = "tailspin.test"

[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["127.0.105.40/32"]

[[outbound_connector]]
name = "Cost 10"
recipient_domains = ["*.contoso.test;10"]
smart_hosts = ["{expensive}"]

[[outbound_connector]]
name = "Cost 5"
recipient_domains = ["*.contoso.test;5"]
smart_hosts = ["{cheap}"]
"#,
            expensive = expensive.addr,
            cheap = cheap.addr
        ),
    ));
    let run = send_from(
        &node,
        net.ip(ON_PREM),
        "alice@tailspin.test",
        "x@eu.contoso.test",
        &["--header", "Subject: cheapest route"],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let arrived = cheap.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1, "the cost-5 connector got nothing");
    pause(Duration::from_secs(1));
    assert_eq!(expensive.count(), 0, "the cost-10 connector was used");

    let ip = net.ip(ON_PREM).to_string();
    let explained = explain(
        &node,
        &[
            "--from",
            "alice@tailspin.test",
            "--to",
            "x@eu.contoso.test",
            "--ip",
            &ip,
        ],
    );
    assert_eq!(
        recipient(&explained, "x@eu.contoso.test")["connector"],
        "Cost 5",
        "{explained:#}"
    );
}

/// Seed 001 as an administrator would paste it: an accepted domain, the
/// on-prem inbound connector, and the send connector laid out as
/// Microsoft's page prints it: one parameter per line, no backticks,
/// trailing spaces (the last line's too).
fn seed_001_ps1(on_prem: Ipv4Addr, port: u16) -> String {
    format!(
        "# seed 001: on-premises relay through a partner's Postfix\r\n\
New-AcceptedDomain -Name \"Contoso\" -DomainName contoso.test -DomainType Authoritative\r\n\
New-InboundConnector -Name \"From on-prem\" -ConnectorType OnPremises -SenderIPAddresses {on_prem}\r\n\
New-SendConnector -Name \"Outbound to Postfix\" \r\n\
-AddressSpaces * \r\n\
-CloudServicesMailEnabled $true \r\n\
-Fqdn gw.contoso.test \r\n\
-RequireTLS $true \r\n\
-SmartHosts relay.partner.test \r\n\
-Port {port} \r\n\
-TlsAuthLevel DomainValidation \r\n\
-TlsDomain relay.partner.test \r\n"
    )
}

#[test]
fn seed_001_send_connector_delivers_through_postfix_requiring_tls() {
    let net = Net(106);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let relay_cert = ca.leaf(certs.path(), "relay", &["relay.partner.test"]);
    let postfix = Postfix::start_requiring_tls(net.ip(SINK), net.ip(SINK_B), &relay_cert);
    let dns = Dns::start(
        net.ip(DNS),
        &[Record::A {
            name: "relay.partner.test",
            ip: net.ip(SINK),
        }],
    );
    let mut options = NodeOptions::new(net.ip(NODE), "");
    options.dns = Some(dns.addr);
    options.extra_ca = Some(ca_file);
    let node = Node::start(options);

    let script = certs.path().join("seed-001.ps1");
    std::fs::write(&script, seed_001_ps1(net.ip(ON_PREM), postfix.addr.port())).expect("write ps1");
    let applied = node.cli(&["apply", "-f", &script.display().to_string()]);
    assert_eq!(
        applied.status.code(),
        Some(0),
        "apply of the seed .ps1 failed: {}{}",
        String::from_utf8_lossy(&applied.stdout),
        String::from_utf8_lossy(&applied.stderr)
    );
    // The display name differs from the domain: said, not silently dropped.
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(
        stderr.contains("seed-001.ps1: line 2: New-AcceptedDomain -Name is accepted but ignored"),
        "{stderr}"
    );

    let run = send_from(
        &node,
        net.ip(ON_PREM),
        "alice@contoso.test",
        "bob@fabrikam.test",
        &["--header", "Subject: through the send connector"],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let arrived = postfix.sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        arrived.len(),
        1,
        "nothing arrived behind Postfix; queue: {:?}",
        node.queue_json()
    );
    assert_eq!(
        arrived[0].header("subject").as_deref(),
        Some("through the send connector")
    );
    let received = arrived[0].headers_named("received");
    let postfix_hop = received
        .iter()
        .find(|r| r.contains("(Postfix)"))
        .unwrap_or_else(|| panic!("no Received by Postfix: {received:#?}"));
    assert!(
        postfix_hop.contains("with ESMTPS"),
        "sluice -> Postfix not encrypted: {postfix_hop}"
    );
    assert!(
        postfix_hop.starts_with("from gw.contoso.test"),
        "EHLO is not the -Fqdn: {postfix_hop}"
    );
    let maillog = std::fs::read_to_string(postfix.maillog()).unwrap_or_default();
    assert!(
        maillog.contains("TLS connection established from"),
        "Postfix logged no inbound TLS:\n{maillog}"
    );
}

#[test]
fn connector_validation_names_the_failing_step() {
    let net = Net(107);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let relay_cert = ca.leaf(certs.path(), "relay", &["relay.partner.test"]);
    let postfix = Postfix::start(net.ip(SINK), net.ip(SINK_B), Some(&relay_cert));
    let refusing = Sink::refusing_rcpt(net.ip(23), "550 5.1.1 no such user");
    let nobody: SocketAddr = net.addr(24);
    let connector = |name: &str, host: SocketAddr, tls: &str, tls_domain: &str| {
        let domain = if tls_domain.is_empty() {
            String::new()
        } else {
            format!("tls_domain = \"{tls_domain}\"\n")
        };
        format!(
            "[[outbound_connector]]\nname = \"{name}\"\ntransport_rule_scoped = true\nsmart_hosts = [\"{host}\"]\ntls = \"{tls}\"\n{domain}\n"
        )
    };
    let objects = [
        connector("Good", postfix.addr, "domain_validation", "relay.partner.test"),
        connector("Wrong name", postfix.addr, "domain_validation", "other.test"),
        connector("Nobody home", nobody, "opportunistic", ""),
        connector("Refuses recipient", refusing.addr, "opportunistic", ""),
    ]
    .concat();
    let mut options = NodeOptions::new(net.ip(NODE), &objects);
    options.extra_ca = Some(ca_file);
    let node = Node::start(options);

    let validate = |name: &str| -> (Option<i32>, Value) {
        let output = node.cli(&[
            "connector",
            "validate",
            name,
            "--recipient",
            "check@partner.test",
            "--json",
        ]);
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "validate {name} printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), report)
    };
    let steps = |report: &Value| -> Vec<(String, bool)> {
        report["steps"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| (text(s, "/step").to_string(), s["passed"] == true))
                    .collect()
            })
            .unwrap_or_default()
    };

    let (code, report) = validate("Good");
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["passed"], true, "{report:#}");
    let good = steps(&report);
    for step in [
        "connect",
        "greeting",
        "ehlo",
        "starttls",
        "certificate",
        "test message",
    ] {
        assert!(
            good.iter().any(|(s, _)| s == step),
            "no step {step:?}: {report:#}"
        );
    }
    assert!(good.iter().all(|(_, passed)| *passed), "{report:#}");
    let test_message = postfix.sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        test_message.len(),
        1,
        "the test message never arrived behind Postfix"
    );
    assert_eq!(
        test_message[0].rcpt_to[0].split(' ').next(),
        Some("<check@partner.test>")
    );

    for (name, failing) in [
        ("Wrong name", "certificate"),
        ("Nobody home", "connect"),
        ("Refuses recipient", "test message"),
    ] {
        let (code, report) = validate(name);
        assert_eq!(code, Some(1), "{name}: {report:#}");
        assert_eq!(report["passed"], false, "{name}: {report:#}");
        let found = steps(&report);
        assert!(
            found.iter().any(|(s, passed)| s == failing && !passed),
            "{name}: step {failing:?} did not fail: {report:#}"
        );
        assert!(
            found
                .iter()
                .filter(|(_, passed)| !passed)
                .all(|(s, _)| s == failing),
            "{name}: another step failed too: {report:#}"
        );
    }
    let refused_detail = validate("Refuses recipient").1["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == "test message").cloned())
        .unwrap_or_default();
    assert!(
        text(&refused_detail, "/detail").contains("550"),
        "{refused_detail:#}"
    );
    pause(Duration::from_secs(1));
    assert_eq!(postfix.sink.count(), 1, "a failed validation sent a test message");

    let list = node.cli_ok(&["connector", "list"]);
    let line = |name: &str| {
        list.lines()
            .find(|l| l.contains(&format!(" {name} ")) || l.contains(&format!("{name}  ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
            .to_string()
    };
    assert!(
        line("Good").contains("validated") && !line("Good").contains("FAILED"),
        "{list}"
    );
    for name in ["Wrong name", "Nobody home", "Refuses recipient"] {
        assert!(line(name).contains("validation FAILED"), "{list}");
    }
}

#[test]
fn route_explain_for_the_seed_configurations() {
    let net = Net(108);
    let scanner = net.addr(SCANNER);
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &crate::support::seed000::gateway_objects(net, scanner, ""),
    ));
    let on_prem = net.ip(ON_PREM).to_string();
    let scanner_ip = net.ip(SCANNER).to_string();
    let stamp = "X-Sluice-Org-Scan: verdict=pass; scanner=scan.partner.test";

    let external = explain(
        &node,
        &[
            "--from",
            "alice@contoso.test",
            "--to",
            "x@fabrikam.test",
            "--ip",
            &on_prem,
        ],
    );
    assert_eq!(external["inbound"]["connector"], "From on-prem", "{external:#}");
    let x = recipient(&external, "x@fabrikam.test");
    assert_eq!(x["outcome"], "deliver", "{external:#}");
    assert_eq!(x["connector"], "To scanner", "{external:#}");
    assert_eq!(x["next_hop"], scanner.to_string(), "{external:#}");
    let rule = &external["rules"][0];
    assert_eq!(rule["rule"], "External mail through the scanner", "{external:#}");
    assert_eq!(
        rule["matched"],
        serde_json::json!(["x@fabrikam.test"]),
        "{external:#}"
    );

    let internal = explain(
        &node,
        &[
            "--from",
            "alice@contoso.test",
            "--to",
            "bob@contoso.test",
            "--ip",
            &on_prem,
        ],
    );
    let bob = recipient(&internal, "bob@contoso.test");
    assert_eq!(bob["next_hop"], "local mailbox", "{internal:#}");
    assert_eq!(bob["connector"], Value::Null, "{internal:#}");
    assert_eq!(
        internal["rules"][0]["matched"],
        serde_json::json!([]),
        "{internal:#}"
    );

    let returned = explain(
        &node,
        &[
            "--from",
            "alice@contoso.test",
            "--to",
            "x@fabrikam.test",
            "--ip",
            &scanner_ip,
            "--header",
            stamp,
        ],
    );
    assert_eq!(returned["inbound"]["connector"], "From scanner", "{returned:#}");
    assert_eq!(returned["internal_headers_retained"], true, "{returned:#}");
    let x = recipient(&returned, "x@fabrikam.test");
    assert_eq!(x["next_hop"], "MX of fabrikam.test", "{returned:#}");
    assert_eq!(x["connector"], Value::Null, "{returned:#}");
    assert_eq!(
        returned["rules"][0]["matched"],
        serde_json::json!([]),
        "{returned:#}"
    );

    // The same stamp from on-prem is forged: removed, and the rule applies.
    let forged = explain(
        &node,
        &[
            "--from",
            "alice@contoso.test",
            "--to",
            "x@fabrikam.test",
            "--ip",
            &on_prem,
            "--header",
            stamp,
        ],
    );
    assert_eq!(
        forged["headers_removed"],
        serde_json::json!(["X-Sluice-Org-Scan"]),
        "{forged:#}"
    );
    assert_eq!(
        recipient(&forged, "x@fabrikam.test")["connector"],
        "To scanner",
        "{forged:#}"
    );

    // From the internet, the gateway is no relay.
    let anonymous = explain(
        &node,
        &["--from", "alice@contoso.test", "--to", "x@fabrikam.test"],
    );
    let x = recipient(&anonymous, "x@fabrikam.test");
    assert_eq!(x["accepted"], false, "{anonymous:#}");
    assert!(text(x, "/reply").starts_with("550 5.7.1"), "{anonymous:#}");

    // Seed 001, explained offline from the .ps1 itself.
    let script = node.dir().join("seed-001.ps1");
    std::fs::write(&script, seed_001_ps1(net.ip(ON_PREM), 2525)).expect("write ps1");
    let seed_001 = explain(
        &node,
        &[
            "--objects",
            &script.display().to_string(),
            "--from",
            "alice@contoso.test",
            "--to",
            "bob@fabrikam.test",
            "--ip",
            &on_prem,
        ],
    );
    assert_eq!(seed_001["relay_allowed"], true, "{seed_001:#}");
    let bob = recipient(&seed_001, "bob@fabrikam.test");
    assert_eq!(bob["connector"], "Outbound to Postfix", "{seed_001:#}");
    assert_eq!(
        bob["tls"], "domain_validation (relay.partner.test)",
        "{seed_001:#}"
    );
    assert_eq!(bob["next_hop"], "relay.partner.test:2525", "{seed_001:#}");
}
