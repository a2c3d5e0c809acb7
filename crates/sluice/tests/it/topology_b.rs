//! Seed 001 as deployed (issue 6): a real Postfix is the on-premises
//! server (its mailboxes are a sink behind it; everything else it relays to
//! sluice over verified TLS, presenting a client certificate), sluice is the
//! cloud side configured from Exchange cmdlets (.ps1): mail for contoso.test
//! arrives by MX and a rule sends it to on-prem over domain-validated TLS;
//! on-prem mail to the internet is relayed because the certificate
//! identifies the on-prem connector. Without its certificate Postfix is
//! anonymous and cannot relay; with a wrong TLS domain sluice defers and
//! never falls back to clear text. Nets 140-142.

use crate::support::{
    pause, swaks, wait_until, CertFiles, Dns, Net, Node, NodeOptions, OnPremOptions, Postfix, Record, Sink,
    SwaksRun, TestCa,
};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

const SLUICE: u8 = 1;
const INTERNET_MX: u8 = 25;
const ON_PREM: u8 = 40;
const ON_PREM_MAILBOXES: u8 = 41;
const INTERNET_CLIENT: u8 = 50;
const DNS: u8 = 53;

const ON_PREM_NAME: &str = "mail.onprem.contoso.test";

/// Seed 001's cloud side as Exchange Online cmdlets, the routing rule
/// (New-TransportRule) included.
fn seed_001_cloud_ps1(postfix_port: u16) -> String {
    format!(
        "# Seed 001: the cloud side of a hybrid contoso.test\r\n\
New-AcceptedDomain -Name contoso.test -DomainName contoso.test -DomainType Authoritative\r\n\
New-InboundConnector -Name \"From on-prem\" -ConnectorType OnPremises `\r\n\
  -TlsSenderCertificateName {ON_PREM_NAME} -RequireTls $true\r\n\
New-OutboundConnector -Name \"To on-prem\" -ConnectorType OnPremises `\r\n\
  -SmartHosts \"{ON_PREM_NAME}:{postfix_port}\" -TlsSettings DomainValidation `\r\n\
  -TlsDomain {ON_PREM_NAME} -IsTransportRuleScoped $true\r\n\
New-TransportRule -Name \"On-prem mailboxes\" -RecipientDomainIs contoso.test `\r\n\
  -RouteMessageOutboundConnector \"To on-prem\"\r\n"
    )
}

struct TopologyB {
    net: Net,
    internet: Sink,
    sluice: Node,
    on_prem: Postfix,
    _dns: Dns,
    _certs: tempfile::TempDir,
}

impl TopologyB {
    /// Everything up and configured; `client_cert` decides whether the
    /// on-prem Postfix presents its certificate to sluice.
    fn start(net: Net, client_cert: bool) -> TopologyB {
        let certs = tempfile::tempdir().expect("cert dir");
        std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod cert dir");
        let ca = TestCa::new("Contoso Test CA");
        let ca_file: PathBuf = ca.write_ca(certs.path(), "ca.pem");
        let sluice_cert = ca.leaf(certs.path(), "sluice", &["mx.contoso.test"]);
        let postfix_server: CertFiles = ca.leaf(certs.path(), "onprem-server", &[ON_PREM_NAME]);
        let postfix_client = ca.client_leaf(certs.path(), "onprem-client", &[ON_PREM_NAME]);

        let internet = Sink::start(net.ip(INTERNET_MX));
        let dns = Dns::start(
            net.ip(DNS),
            &[
                Record::Mx {
                    domain: "contoso.test",
                    host: "mx.contoso.test",
                    preference: 10,
                },
                Record::A {
                    name: "mx.contoso.test",
                    ip: net.ip(SLUICE),
                },
                Record::Mx {
                    domain: "fabrikam.test",
                    host: "mx.fabrikam.test",
                    preference: 10,
                },
                Record::A {
                    name: "mx.fabrikam.test",
                    ip: net.ip(INTERNET_MX),
                },
                Record::A {
                    name: ON_PREM_NAME,
                    ip: net.ip(ON_PREM),
                },
            ],
        );
        let mut options = NodeOptions::new(net.ip(SLUICE), "");
        options.hostname = "mx.contoso.test".into();
        options.tls = Some(sluice_cert);
        options.client_ca = Some(ca_file.clone());
        options.extra_ca = Some(ca_file.clone());
        options.dns = Some(dns.addr);
        options.mx_port = Some(internet.addr.port());
        options.bind_address = Some(net.ip(SLUICE));
        let sluice = Node::start(options);

        let on_prem = Postfix::start_on_prem(&OnPremOptions {
            ip: net.ip(ON_PREM),
            hostname: ON_PREM_NAME,
            domain: "contoso.test",
            mailbox_ip: net.ip(ON_PREM_MAILBOXES),
            server_tls: &postfix_server,
            relayhost: sluice.smtp,
            relayhost_name: "mx.contoso.test",
            ca: &ca_file,
            client_cert: client_cert.then_some(&postfix_client),
        });

        sluice.apply("seed-001.ps1", &seed_001_cloud_ps1(on_prem.addr.port()));
        TopologyB {
            net,
            internet,
            sluice,
            on_prem,
            _dns: dns,
            _certs: certs,
        }
    }

    /// An internet sender delivering to contoso.test's MX, found as sluice
    /// finds it (`sluice domain check`, through the test's dnsmasq).
    fn send_from_internet(&self, to: &str, subject: &str) -> SwaksRun {
        let output = self.sluice.cli(&["domain", "check", "contoso.test", "--json"]);
        let lines: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "domain check printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let line = |record: &str| -> Value {
            lines
                .as_array()
                .and_then(|all| all.iter().find(|l| l["record"] == record).cloned())
                .unwrap_or_else(|| panic!("no {record} line: {lines:#}"))
        };
        let mx = line("MX");
        assert_eq!(mx["ok"], true, "contoso.test's MX is not sluice: {lines:#}");
        assert_eq!(mx["found"], "10 mx.contoso.test", "{lines:#}");
        let address = line("A/AAAA");
        assert_eq!(address["ok"], true, "{lines:#}");
        let ip: std::net::IpAddr = address["found"]
            .as_str()
            .and_then(|s| s.split(", ").next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address for the MX host: {lines:#}"));
        let source = self.net.ip(INTERNET_CLIENT).to_string();
        let header = format!("Subject: {subject}");
        swaks(
            std::net::SocketAddr::new(ip, self.sluice.smtp.port()),
            &[
                "--local-interface",
                &source,
                "--from",
                "ann@fabrikam.test",
                "--to",
                to,
                "--header",
                &header,
            ],
        )
    }

    /// An on-prem user submitting to the on-prem Postfix.
    fn send_on_prem(&self, from: &str, to: &str, subject: &str, message_id: &str) -> SwaksRun {
        let subject = format!("Subject: {subject}");
        let message_id = format!("Message-Id: <{message_id}>");
        swaks(
            self.on_prem.addr,
            &[
                "--from",
                from,
                "--to",
                to,
                "--header",
                &subject,
                "--header",
                &message_id,
            ],
        )
    }

    fn events_of(&self, message_id: &str) -> Vec<Value> {
        self.sluice
            .trace(&[])
            .into_iter()
            .filter(|e| e["message_id"].as_str().unwrap_or("").contains(message_id))
            .collect()
    }

    /// Postfix's maillog lines about sessions from sluice's address.
    fn postfix_sessions_from_sluice(&self) -> Vec<String> {
        let ip = format!("[{}]", self.net.ip(SLUICE));
        self.on_prem
            .maillog_text()
            .lines()
            .filter(|l| l.contains("smtpd[") && l.contains(&ip))
            .map(str::to_string)
            .collect()
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

#[test]
fn mail_crosses_between_internet_cloud_and_on_prem_postfix_by_certificate() {
    let topo = TopologyB::start(Net(140), true);

    // Internet -> sluice (MX) -> rule -> Postfix (verified TLS) -> mailbox.
    let inbound = topo.send_from_internet("bob@contoso.test", "inbound to on-prem");
    assert!(inbound.delivered(), "{}", inbound.transcript);
    let mailboxes = topo.on_prem.sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        mailboxes.len(),
        1,
        "nothing reached the on-prem mailboxes; sluice queue {:?}",
        topo.sluice.queue_json()
    );
    assert_eq!(
        mailboxes[0].header("subject").as_deref(),
        Some("inbound to on-prem")
    );
    assert_eq!(
        mailboxes[0].rcpt_to[0].split(' ').next(),
        Some("<bob@contoso.test>")
    );
    let received = mailboxes[0].headers_named("received");
    let postfix_hop = received
        .iter()
        .find(|r| r.contains("(Postfix)"))
        .unwrap_or_else(|| panic!("no Received by Postfix: {received:#?}"));
    assert!(
        postfix_hop.starts_with("from mx.contoso.test") && postfix_hop.contains("with ESMTPS"),
        "sluice -> Postfix was not TLS from the cloud: {postfix_hop}"
    );
    let delivered = topo
        .sluice
        .trace(&[])
        .into_iter()
        .find(|e| e["event"] == "delivered")
        .unwrap_or_else(|| panic!("no delivery in the trace"));
    assert_eq!(str_of(&delivered, "connector"), "To on-prem", "{delivered:#}");
    assert!(
        topo.internet.messages().is_empty(),
        "inbound mail went to the internet"
    );

    // On-prem user -> Postfix -> sluice (identified by certificate) ->
    // internet MX.
    let outbound = topo.send_on_prem(
        "alice@contoso.test",
        "x@fabrikam.test",
        "from on-prem to the internet",
        "topo-b-out@contoso.test",
    );
    assert!(outbound.delivered(), "{}", outbound.transcript);
    let arrived = topo.internet.wait_for(1, Duration::from_secs(40));
    assert_eq!(
        arrived.len(),
        1,
        "nothing reached the internet; sluice trace {:#?}\nPostfix log:\n{}",
        topo.sluice.trace(&[]),
        topo.on_prem.maillog_text()
    );
    assert_eq!(
        arrived[0].header("subject").as_deref(),
        Some("from on-prem to the internet")
    );
    let events = topo.events_of("topo-b-out@contoso.test");
    let received = events
        .iter()
        .find(|e| e["event"] == "received")
        .unwrap_or_else(|| panic!("not received by sluice: {events:#?}"));
    assert_eq!(
        str_of(received, "connector"),
        "From on-prem",
        "not identified by its certificate: {events:#?}"
    );
    assert!(
        str_of(received, "remote_host").contains(&topo.net.ip(ON_PREM).to_string()),
        "{received:#}"
    );
    let sluice_hop = arrived[0]
        .headers_named("received")
        .into_iter()
        .find(|r| r.contains("by mx.contoso.test"))
        .unwrap_or_else(|| panic!("no Received by sluice: {:#?}", arrived[0].content));
    assert!(
        sluice_hop.contains(ON_PREM_NAME),
        "sluice's Received does not name the on-prem server: {sluice_hop}"
    );
    let maillog = topo.on_prem.maillog_text();
    assert!(
        maillog.contains(&format!(
            "Verified TLS connection established to {}",
            topo.sluice.smtp.ip()
        )),
        "Postfix did not verify sluice's certificate:\n{maillog}"
    );
    pause(Duration::from_secs(2));
    assert_eq!(topo.internet.count(), 1);
    assert_eq!(topo.on_prem.sink.count(), 1);
}

#[test]
fn postfix_without_its_client_certificate_is_anonymous_and_cannot_relay() {
    let topo = TopologyB::start(Net(141), false);
    let run = topo.send_on_prem(
        "alice@contoso.test",
        "x@fabrikam.test",
        "no certificate",
        "topo-b-anon@contoso.test",
    );
    // Postfix takes it; sluice refuses to relay for it.
    assert!(run.delivered(), "{}", run.transcript);
    let bounced = wait_until(Duration::from_secs(30), || {
        topo.on_prem.maillog_text().contains("status=bounced")
    });
    let maillog = topo.on_prem.maillog_text();
    assert!(bounced, "Postfix did not bounce the message:\n{maillog}");
    let bounce_line = maillog
        .lines()
        .find(|l| l.contains("status=bounced"))
        .unwrap_or_default();
    assert!(
        bounce_line.contains("to=<x@fabrikam.test>") && bounce_line.contains("5.7.1"),
        "not refused by sluice with 5.7.1: {bounce_line}"
    );
    assert!(
        maillog.contains(&format!(
            "Verified TLS connection established to {}",
            topo.sluice.smtp.ip()
        )),
        "the session was not even TLS:\n{maillog}"
    );
    // The bounce reaches the sender's on-prem mailbox.
    let mailboxes = topo.on_prem.sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(mailboxes.len(), 1, "no bounce for alice:\n{maillog}");
    assert_eq!(
        mailboxes[0].rcpt_to[0].split(' ').next(),
        Some("<alice@contoso.test>")
    );

    pause(Duration::from_secs(2));
    assert_eq!(topo.internet.count(), 0, "an anonymous Postfix relayed");
    let events = topo.sluice.trace(&[]);
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "received")
            .all(|e| !str_of(e, "message_id").contains("topo-b-anon")),
        "sluice accepted the message: {events:#?}"
    );
}

#[test]
fn wrong_tls_domain_defers_and_never_sends_in_clear() {
    let topo = TopologyB::start(Net(142), true);
    topo.sluice.cli_ok(&[
        "connector",
        "set",
        "To on-prem",
        "--tls-domain",
        "wrong.onprem.contoso.test",
    ]);
    let run = topo.send_from_internet("bob@contoso.test", "wrong name");
    assert!(run.delivered(), "{}", run.transcript);
    let (_, _, error) =
        topo.sluice
            .wait_for_recipient("bob@contoso.test", "deferred", Duration::from_secs(30));
    let lowered = error.to_ascii_lowercase();
    assert!(
        lowered.contains("certificate") || lowered.contains("tls"),
        "the deferral does not name TLS: {error}"
    );
    // Let the 1 s and 2 s retries fail too.
    pause(Duration::from_secs(4));
    assert_eq!(topo.on_prem.sink.count(), 0, "delivered despite the wrong name");
    let sessions = topo.postfix_sessions_from_sluice();
    assert!(
        sessions.iter().any(|l| l.contains("connect from")),
        "sluice never tried Postfix:\n{}",
        topo.on_prem.maillog_text()
    );
    let disconnects: Vec<&String> = sessions
        .iter()
        .filter(|l| l.contains("disconnect from"))
        .collect();
    assert!(!disconnects.is_empty(), "{sessions:#?}");
    for line in &disconnects {
        assert!(
            !line.contains(" mail=") && line.contains("starttls="),
            "sluice sent MAIL (or skipped STARTTLS) with a certificate that does not name the TLS domain: {line}"
        );
    }
    assert!(
        !topo.on_prem.maillog_text().contains("from=<ann@fabrikam.test>"),
        "Postfix queued the message"
    );

    // The right name again: queued mail uses the connector as it is now
    // (Exchange re-reads it), so the deferred message goes on retry, and new
    // mail goes too, both over TLS.
    topo.sluice
        .cli_ok(&["connector", "set", "To on-prem", "--tls-domain", ON_PREM_NAME]);
    topo.sluice.cli_ok(&["queue", "retry", "--all"]);
    let run = topo.send_from_internet("carol@contoso.test", "right name");
    assert!(run.delivered(), "{}", run.transcript);
    let arrived = topo.on_prem.sink.wait_for(2, Duration::from_secs(30));
    assert_eq!(
        arrived.len(),
        2,
        "not delivered after the fix: {:?}",
        topo.sluice.queue_json()
    );
    let mut subjects: Vec<String> = arrived.iter().filter_map(|m| m.header("subject")).collect();
    subjects.sort();
    assert_eq!(subjects, ["right name", "wrong name"]);
    for message in &arrived {
        let postfix_hop = message
            .headers_named("received")
            .into_iter()
            .find(|r| r.contains("(Postfix)"))
            .unwrap_or_default();
        assert!(postfix_hop.contains("with ESMTPS"), "{postfix_hop}");
    }
    assert!(
        topo.sluice.wait_for_empty_queue(Duration::from_secs(10)),
        "{:?}",
        topo.sluice.queue_json()
    );
}
