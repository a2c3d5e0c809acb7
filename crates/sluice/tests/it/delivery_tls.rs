//! Outbound TLS to smart hosts, with real Postfix peers: the relay path
//! keeps the message intact, and each required TLS level defers instead of
//! sending in clear when the peer's certificate does not qualify.
//! Nets 10-13.

use crate::support::{pause, swaks, CertFiles, Net, Node, NodeOptions, Postfix, Sink, TestCa};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Host numbers inside each test's net.
const NODE: u8 = 1;
const SMART_HOST: u8 = 21;
const BEHIND_SMART_HOST: u8 = 22;
const ON_PREM: u8 = 40;

/// A node that accepts contoso.test, lets its on-prem server relay, and
/// sends everything through one smart host at `tls`.
fn objects(net: Net, smart_host: SocketAddr, tls: &str, tls_domain: &str) -> String {
    format!(
        r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["{on_prem}/32"]

[[outbound_connector]]
name = "Smart host"
recipient_domains = ["*"]
smart_hosts = ["{smart_host}"]
tls = "{tls}"
{tls_domain_line}"#,
        on_prem = net.ip(ON_PREM),
        // sluice refuses tls_domain with any level but domain_validation.
        tls_domain_line = if tls_domain.is_empty() {
            String::new()
        } else {
            format!("tls_domain = \"{tls_domain}\"\n")
        },
    )
}

/// A directory Postfix's unprivileged daemons can read certificates from.
fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("cert dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod cert dir");
    dir
}

/// Sends one message from the on-prem address; asserts sluice took it.
fn send_from_on_prem(net: Net, node: &Node, extra: &[&str]) -> String {
    let on_prem = net.ip(ON_PREM).to_string();
    let mut args = vec![
        "--local-interface",
        on_prem.as_str(),
        "--from",
        "alice@contoso.test",
        "--to",
        "bob@fabrikam.test",
    ];
    args.extend_from_slice(extra);
    let run = swaks(node.smtp, &args);
    assert!(run.delivered(), "sluice refused the message:\n{}", run.transcript);
    run.transcript
}

const MESSAGE: &str = "Date: Tue, 24 Nov 2026 10:00:00 +0000\r
From: Alice <alice@contoso.test>\r
To: Bob <bob@fabrikam.test>\r
Subject: Quarterly figures\r
Message-ID: <delivery-tls-1@contoso.test>\r
MIME-Version: 1.0\r
Content-Type: text/plain; charset=utf-8\r
X-Folded: first part\r
 continued on a second line\r
\r
Dear Bob,\r
.a line that starts with a dot\r
  indented, with trailing spaces   \r
a\ttab\r
\r
-- \r
Alice";

/// The header block minus every Received field (with its folded lines),
/// then the body, exactly as they stood.
fn without_received(message: &str) -> String {
    let (headers, body) = message.split_once("\n\n").unwrap_or((message, ""));
    let mut kept = Vec::new();
    let mut dropping = false;
    for line in headers.lines() {
        if line.starts_with([' ', '\t']) {
            if !dropping {
                kept.push(line);
            }
            continue;
        }
        dropping = line.to_ascii_lowercase().starts_with("received:");
        if !dropping {
            kept.push(line);
        }
    }
    format!("{}\n\n{body}", kept.join("\n"))
}

/// The Received fields of a message, unfolded.
fn received_fields(message: &str) -> Vec<String> {
    let headers = message.split("\n\n").next().unwrap_or("");
    let mut fields: Vec<String> = Vec::new();
    for line in headers.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields.retain(|f| f.to_ascii_lowercase().starts_with("received:"));
    fields
}

#[test]
fn relays_through_postfix_over_starttls_unchanged() {
    let net = Net(10);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let relay_cert = ca.leaf(certs.path(), "relay", &["relay.partner.test"]);
    let node_ip = net.ip(NODE).to_string();
    let node_cert = ca.leaf(certs.path(), "gw", &["gw.contoso.test", node_ip.as_str()]);
    let postfix = Postfix::start(net.ip(SMART_HOST), net.ip(BEHIND_SMART_HOST), Some(&relay_cert));

    let mut options = NodeOptions::new(
        net.ip(NODE),
        &objects(net, postfix.addr, "domain_validation", "relay.partner.test"),
    );
    options.extra_ca = Some(ca_file.clone());
    options.tls = Some(node_cert);
    let node = Node::start(options);

    let message_file = certs.path().join("message.eml");
    std::fs::write(&message_file, MESSAGE).expect("write message");
    let message_arg = format!("@{}", message_file.display());
    let ca_arg = ca_file.display().to_string();
    let transcript = send_from_on_prem(
        net,
        &node,
        &[
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &ca_arg,
            "--data",
            &message_arg,
        ],
    );
    assert!(
        transcript.contains("TLS started"),
        "first leg without TLS:\n{transcript}"
    );

    let arrived = postfix.sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(arrived.len(), 1, "nothing arrived behind Postfix");
    let content = &arrived[0].content;
    let sent = MESSAGE.replace("\r\n", "\n") + "\n";
    assert_eq!(
        without_received(content),
        sent,
        "the message changed on the way (besides Received)"
    );
    let received = received_fields(content);
    assert!(
        received.iter().any(|r| r.contains("gw.contoso.test")),
        "sluice added no Received header: {received:?}"
    );
    assert!(
        received
            .iter()
            .any(|r| r.contains("(Postfix)") && r.contains("with ESMTPS")),
        "sluice -> Postfix was not encrypted: {received:?}"
    );
    assert_eq!(
        arrived[0].rcpt_to[0].split(' ').next(),
        Some("<bob@fabrikam.test>")
    );
}

/// Sends through a node whose only smart host fails `tls`'s check and
/// asserts the message waits in the queue with a TLS error while nothing
/// reaches the smart host's side.
fn assert_deferred_not_sent(net: Net, postfix: &Postfix, ca_file: Option<&std::path::Path>, tls: &str) {
    let mut options = NodeOptions::new(
        net.ip(NODE),
        &objects(
            net,
            postfix.addr,
            tls,
            if tls == "domain_validation" {
                "relay.partner.test"
            } else {
                ""
            },
        ),
    );
    options.extra_ca = ca_file.map(|p| p.to_path_buf());
    let node = Node::start(options);
    send_from_on_prem(net, &node, &["--header", "Subject: must not leave in clear"]);

    let (_, _, error) = node.wait_for_recipient("bob@fabrikam.test", "deferred", Duration::from_secs(30));
    let error = error.to_ascii_lowercase();
    assert!(
        ["tls", "certificate", "cert", "x509", "name"]
            .iter()
            .any(|word| error.contains(word)),
        "last_error does not name the TLS failure: {error:?}"
    );
    // Let at least two more retries (1s, 2s) happen before looking.
    pause(Duration::from_secs(4));
    assert_eq!(
        postfix.sink.count(),
        0,
        "the message went through a smart host that failed {tls}"
    );
    let maillog = std::fs::read_to_string(postfix.maillog()).unwrap_or_default();
    assert!(
        !maillog.contains("from=<alice@contoso.test>"),
        "Postfix queued the message (sent in clear?):\n{maillog}"
    );
}

#[test]
fn domain_validation_defers_when_certificate_names_another_host() {
    let net = Net(11);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let wrong_name = ca.leaf(certs.path(), "other", &["other.partner.test"]);
    let postfix = Postfix::start(net.ip(SMART_HOST), net.ip(BEHIND_SMART_HOST), Some(&wrong_name));
    assert_deferred_not_sent(net, &postfix, Some(&ca_file), "domain_validation");
}

#[test]
fn certificate_validation_defers_on_self_signed_certificate() {
    let net = Net(12);
    let certs = cert_dir();
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let self_signed: CertFiles = TestCa::self_signed(certs.path(), "self", &["relay.partner.test"]);
    let postfix = Postfix::start(net.ip(SMART_HOST), net.ip(BEHIND_SMART_HOST), Some(&self_signed));
    assert_deferred_not_sent(net, &postfix, Some(&ca_file), "certificate_validation");
}

#[test]
fn opportunistic_delivers_to_host_without_starttls() {
    let net = Net(13);
    // smtp-sink never offers STARTTLS.
    let sink = Sink::start(net.ip(SMART_HOST));
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &objects(net, sink.addr, "opportunistic", ""),
    ));
    send_from_on_prem(net, &node, &["--header", "Subject: plain is fine"]);
    let arrived = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(arrived.len(), 1, "opportunistic delivery did not happen");
    assert_eq!(arrived[0].header("subject").as_deref(), Some("plain is fine"));
}
