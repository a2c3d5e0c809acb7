//! Outbound MTA-STS (RFC 8461): `_mta-sts` TXT records from dnsmasq,
//! policies from an HTTPS server with a test-CA certificate, Postfix as
//! every receiving MX. `enforce` with an MX the policy does not list, or a
//! certificate without the MX name, defers (4.7.5); `enforce` with a match
//! delivers over validated TLS; `testing` delivers. Policies are cached in
//! the store: after a restart with the policy server gone, they are still
//! enforced. TLS-RPT counts every session under those policies and
//! `sluice tlsrpt send` mails the RFC 8460 report to the `rua` of each
//! domain's `_smtp._tls` record. Net 201.

use crate::support::{
    contoso_with_on_prem, swaks, Dns, Net, Node, NodeOptions, PolicyServer, Postfix, Record, Sink, TestCa,
};
use mail_parser::MimeHeaders;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const NODE: u8 = 1;
const MX: u8 = 25;
const SINK: u8 = 26;
const REPORTS_MX: u8 = 27;
const POLICY_HOST: u8 = 30;
const ON_PREM: u8 = 40;
const DNS: u8 = 53;

fn last_event_detail(node: &Node, event: &str, to: &str) -> String {
    node.trace(&[])
        .iter()
        .rev()
        .find(|e| e["event"] == event && e["to"].as_str().is_some_and(|t| t.contains(to)))
        .and_then(|e| e["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no {event} event for {to}"))
}

fn send(net: Net, node: &Node, to: &str) {
    let on_prem = net.ip(ON_PREM).to_string();
    let run = swaks(
        node.smtp,
        &[
            "--local-interface",
            &on_prem,
            "--from",
            "alice@contoso.test",
            "--to",
            to,
            "--header",
            "Subject: MTA-STS",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
}

#[test]
fn enforce_mismatch_defers_testing_delivers_and_policies_survive_restart() {
    let net = Net(201);
    let certs = tempfile::tempdir().expect("cert dir");
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ca = TestCa::new("MTA-STS Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    // The MX certificate names every MX host but litware's.
    let mx_cert = ca.leaf(
        certs.path(),
        "mx",
        &["mx.fabrikam.test", "mx.northwind.test", "mx.woodgrove.test"],
    );
    let postfix = Postfix::start(net.ip(MX), net.ip(SINK), Some(&mx_cert));
    let mx_port = postfix.addr.port();

    let policy_cert = ca.leaf(
        certs.path(),
        "mta-sts",
        &[
            "mta-sts.fabrikam.test",
            "mta-sts.northwind.test",
            "mta-sts.woodgrove.test",
            "mta-sts.litware.test",
            "mta-sts.adatum.test",
            "mta-sts.tailspin.test",
            "mta-sts.proseware.test",
        ],
    );
    let enforce = |mx: &str| format!("version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n");
    let fabrikam_policy = enforce("mail.fabrikam.test");
    let woodgrove_policy = enforce("*.woodgrove.test");
    let litware_policy = enforce("mx.litware.test");
    let northwind_policy = "version: STSv1\nmode: testing\nmx: other.northwind.test\nmax_age: 86400\n";
    // testing, MX listed, but the MX certificate does not name it.
    let proseware_policy = "version: STSv1\nmode: testing\nmx: mx.proseware.test\nmax_age: 86400\n";
    // Hostile policy hosts: a redirect, and a body over the 64 KiB bound.
    let redirect = "HTTP/1.1 301 Moved Permanently\r\nLocation: https://mta-sts.woodgrove.test/.well-known/mta-sts.txt\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let oversized = format!("{}{}", enforce("mx.tailspin.test"), "mx: x.test\r\n".repeat(7000));
    let policies = PolicyServer::start(
        SocketAddr::new(net.ip(POLICY_HOST).into(), 0),
        &policy_cert,
        &[
            ("mta-sts.fabrikam.test", fabrikam_policy.as_str()),
            ("mta-sts.northwind.test", northwind_policy),
            ("mta-sts.woodgrove.test", woodgrove_policy.as_str()),
            ("mta-sts.litware.test", litware_policy.as_str()),
            ("mta-sts.adatum.test", redirect),
            ("mta-sts.tailspin.test", oversized.as_str()),
            ("mta-sts.proseware.test", proseware_policy),
        ],
    );

    let domains = [
        "fabrikam",
        "northwind",
        "woodgrove",
        "litware",
        "adatum",
        "tailspin",
        "proseware",
    ];
    let names: Vec<(String, String, String, String)> = domains
        .iter()
        .map(|d| {
            (
                format!("{d}.test"),
                format!("mx.{d}.test"),
                format!("_mta-sts.{d}.test"),
                format!("mta-sts.{d}.test"),
            )
        })
        .collect();
    let mut records = Vec::new();
    for (domain, mx, txt, policy_host) in &names {
        records.push(Record::Mx {
            domain,
            host: mx,
            preference: 10,
        });
        records.push(Record::A {
            name: mx,
            ip: net.ip(MX),
        });
        records.push(Record::Txt {
            name: txt,
            text: "v=STSv1; id=20261130",
        });
        records.push(Record::A {
            name: policy_host,
            ip: net.ip(POLICY_HOST),
        });
    }
    for name in [
        "_smtp._tls.northwind.test",
        "_smtp._tls.woodgrove.test",
        "_smtp._tls.fabrikam.test",
        "_smtp._tls.proseware.test",
    ] {
        records.push(Record::Txt {
            name,
            text: "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test",
        });
    }
    records.push(Record::Mx {
        domain: "reports.test",
        host: "mx.reports.test",
        preference: 10,
    });
    records.push(Record::A {
        name: "mx.reports.test",
        ip: net.ip(REPORTS_MX),
    });
    let reports = Sink::start_on(SocketAddr::new(net.ip(REPORTS_MX).into(), mx_port));
    let dns = Dns::start(net.ip(DNS), &records);

    let mut options = NodeOptions::new(net.ip(NODE), &contoso_with_on_prem(net.ip(ON_PREM)));
    options.dns = Some(dns.addr);
    options.mx_port = Some(mx_port);
    options.extra_ca = Some(ca_file);
    options.mta_sts_port = Some(policies.addr.port());
    options.retry = vec!["1s".to_string()];
    let mut node = Node::start(options);

    send(
        net,
        &node,
        "fay@fabrikam.test,nina@northwind.test,will@woodgrove.test,lou@litware.test,pat@proseware.test",
    );
    // enforce, MX listed, certificate names it: delivered over validated TLS.
    node.wait_for_recipient("will@woodgrove.test", "delivered", Duration::from_secs(30));
    let detail = last_event_detail(&node, "delivered", "will@woodgrove.test");
    assert!(detail.starts_with("tls=mta-sts "), "{detail}");
    // testing, MX not listed: delivered anyway.
    node.wait_for_recipient("nina@northwind.test", "delivered", Duration::from_secs(30));
    let detail = last_event_detail(&node, "delivered", "nina@northwind.test");
    assert!(detail.starts_with("tls=mta-sts-testing "), "{detail}");
    node.wait_for_recipient("pat@proseware.test", "delivered", Duration::from_secs(30));
    // enforce, MX not listed: deferred, never delivered.
    let (_, _, error) = node.wait_for_recipient("fay@fabrikam.test", "deferred", Duration::from_secs(30));
    assert!(
        error.contains("4.7.5") && error.contains("not an MX host the policy allows"),
        "{error}"
    );
    let detail = last_event_detail(&node, "deferred", "fay@fabrikam.test");
    assert!(detail.starts_with("tls=mta-sts "), "{detail}");
    // enforce, MX listed, certificate without its name: deferred.
    let (_, _, error) = node.wait_for_recipient("lou@litware.test", "deferred", Duration::from_secs(30));
    assert!(error.contains("4.7.5") && error.contains("MTA-STS"), "{error}");
    let detail = last_event_detail(&node, "deferred", "lou@litware.test");
    assert!(detail.starts_with("tls=mta-sts "), "{detail}");

    // Retries use the cached policy: one fetch per domain so far.
    crate::support::pause(Duration::from_secs(3));
    let mut fetched = policies.requests();
    fetched.sort();
    assert_eq!(
        fetched,
        vec![
            "mta-sts.fabrikam.test",
            "mta-sts.litware.test",
            "mta-sts.northwind.test",
            "mta-sts.proseware.test",
            "mta-sts.woodgrove.test"
        ]
    );

    // TLS-RPT: one report per policy domain with a rua, as RFC 8460 JSON.
    let sent = node.cli_json(&["tlsrpt", "send", "--json"]);
    assert_eq!(sent.as_array().map(Vec::len), Some(4), "{sent:#}");
    let arrived = reports.wait_for(4, Duration::from_secs(30));
    let mut by_domain = std::collections::HashMap::new();
    for message in &arrived {
        assert_eq!(message.rcpt_to.len(), 1);
        assert!(
            message.rcpt_to[0].starts_with("<tlsrpt@reports.test>"),
            "{:?}",
            message.rcpt_to
        );
        let json = report_json(&message.content);
        let domain = json["policies"][0]["policy"]["policy-domain"]
            .as_str()
            .expect("policy-domain")
            .to_string();
        by_domain.insert(domain, json);
    }
    let northwind = &by_domain["northwind.test"];
    for key in [
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    ] {
        assert!(northwind.get(key).is_some(), "no {key}: {northwind:#}");
    }
    assert!(northwind["date-range"]["start-datetime"]
        .as_str()
        .is_some_and(|d| d.ends_with('Z')));
    let policy = &northwind["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "sts", "{policy:#}");
    assert_eq!(
        policy["policy"]["mx-host"][0], "other.northwind.test",
        "{policy:#}"
    );
    assert_eq!(
        policy["policy"]["policy-string"][1], "mode: testing",
        "{policy:#}"
    );
    // testing mode: delivered, and its MX mismatch reported.
    assert_eq!(policy["summary"]["total-failure-session-count"], 1, "{policy:#}");
    let failure = &policy["failure-details"][0];
    assert_eq!(failure["result-type"], "validation-failure", "{failure:#}");
    assert_eq!(
        failure["receiving-mx-hostname"], "mx.northwind.test",
        "{failure:#}"
    );
    // enforce with a valid session: a success, no failure.
    let woodgrove = &by_domain["woodgrove.test"]["policies"][0];
    assert_eq!(
        woodgrove["summary"]["total-successful-session-count"], 1,
        "{woodgrove:#}"
    );
    assert_eq!(
        woodgrove["summary"]["total-failure-session-count"], 0,
        "{woodgrove:#}"
    );
    // testing with a certificate enforce would refuse: delivered, reported.
    let proseware = &by_domain["proseware.test"]["policies"][0];
    assert_eq!(
        proseware["summary"]["total-failure-session-count"], 1,
        "{proseware:#}"
    );
    assert_eq!(
        proseware["failure-details"][0]["result-type"], "certificate-host-mismatch",
        "{proseware:#}"
    );
    // enforce with a refused MX: every attempt counted as a failure.
    let fabrikam = &by_domain["fabrikam.test"]["policies"][0];
    assert!(
        fabrikam["summary"]["total-failure-session-count"].as_u64() >= Some(1),
        "{fabrikam:#}"
    );

    // route explain names the policy each domain would get.
    let ip = net.ip(ON_PREM).to_string();
    for (to, expected) in [
        (
            "will@woodgrove.test",
            "mta-sts enforce (mx *.woodgrove.test) [connector level: opportunistic]",
        ),
        (
            "nina@northwind.test",
            "mta-sts testing (mx other.northwind.test) [connector level: opportunistic]",
        ),
    ] {
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
        assert_eq!(explained["recipients"][0]["tls"], expected, "{explained:#}");
    }

    // domain check shows the published records and what is wrong.
    let woodgrove = domain_check(&node, "woodgrove.test");
    assert_eq!(woodgrove["MTA-STS"]["ok"], true, "{woodgrove:#?}");
    assert_eq!(woodgrove["MTA-STS policy"]["ok"], true, "{woodgrove:#?}");
    assert!(
        woodgrove["MTA-STS policy"]["found"]
            .as_str()
            .is_some_and(|f| f.starts_with("mode enforce")),
        "{woodgrove:#?}"
    );
    assert_eq!(woodgrove["TLS-RPT"]["ok"], true, "{woodgrove:#?}");
    let fabrikam = domain_check(&node, "fabrikam.test");
    assert_eq!(fabrikam["MTA-STS policy"]["ok"], false, "{fabrikam:#?}");
    assert!(
        fabrikam["MTA-STS policy"]["found"]
            .as_str()
            .is_some_and(|f| f.contains("MX not covered: mx.fabrikam.test")),
        "{fabrikam:#?}"
    );
    // A redirect is refused, an oversized policy is cut off: no policy.
    let adatum = domain_check(&node, "adatum.test");
    assert_eq!(adatum["MTA-STS policy"]["ok"], false, "{adatum:#?}");
    assert!(
        adatum["MTA-STS policy"]["found"]
            .as_str()
            .is_some_and(|f| f.contains("redirect refused")),
        "{adatum:#?}"
    );
    let tailspin = domain_check(&node, "tailspin.test");
    assert!(
        tailspin["MTA-STS policy"]["found"]
            .as_str()
            .is_some_and(|f| f.contains("larger than 65536 bytes")),
        "{tailspin:#?}"
    );
    let litware = domain_check(&node, "litware.test");
    assert_eq!(
        litware["TLS-RPT"]["found"], "none (no TLS reports requested)",
        "{litware:#?}"
    );

    // The policy host goes away; the node restarts; the cached policies
    // still apply.
    drop(policies);
    node.restart();
    send(net, &node, "gus@woodgrove.test,fred@fabrikam.test");
    node.wait_for_recipient("gus@woodgrove.test", "delivered", Duration::from_secs(30));
    let detail = last_event_detail(&node, "delivered", "gus@woodgrove.test");
    assert!(detail.starts_with("tls=mta-sts "), "{detail}");
    let (_, _, error) = node.wait_for_recipient("fred@fabrikam.test", "deferred", Duration::from_secs(30));
    assert!(error.contains("not an MX host the policy allows"), "{error}");

    let received = postfix.sink.wait_for(4, Duration::from_secs(30));
    let mut recipients: Vec<String> = received
        .iter()
        .flat_map(|m| m.rcpt_to.iter())
        .map(|r| r.split(' ').next().unwrap_or("").to_string())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        vec![
            "<gus@woodgrove.test>",
            "<nina@northwind.test>",
            "<pat@proseware.test>",
            "<will@woodgrove.test>"
        ]
    );
}

/// The JSON of a TLS-RPT mail: the `application/tlsrpt+gzip` part,
/// gunzipped. Also checks the report headers RFC 8460 section 5.3 asks for.
fn report_json(content: &str) -> serde_json::Value {
    let message = mail_parser::MessageParser::default()
        .parse(content.as_bytes())
        .expect("report parses as mail");
    let content_type = message.content_type().expect("content type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("report"));
    assert_eq!(content_type.attribute("report-type"), Some("tlsrpt"));
    assert!(message.header("TLS-Report-Domain").is_some());
    assert!(message.header("TLS-Report-Submitter").is_some());
    let gzip = message
        .attachments()
        .find(|part| {
            part.content_type()
                .is_some_and(|t| t.ctype() == "application" && t.subtype() == Some("tlsrpt+gzip"))
        })
        .expect("an application/tlsrpt+gzip part")
        .contents()
        .to_vec();
    let mut json = String::new();
    flate2::read::GzDecoder::new(gzip.as_slice())
        .read_to_string(&mut json)
        .expect("gzip");
    serde_json::from_str(&json).expect("report JSON")
}

/// `sluice domain check DOMAIN --json`, lines by record name.
fn domain_check(node: &Node, domain: &str) -> std::collections::HashMap<String, serde_json::Value> {
    let output = node.cli(&["domain", "check", domain, "--json"]);
    let lines: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "domain check printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    lines
        .as_array()
        .expect("a list of lines")
        .iter()
        .map(|l| (l["record"].as_str().unwrap_or("").to_string(), l.clone()))
        .collect()
}
