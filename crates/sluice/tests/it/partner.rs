//! Partner onboarding (issue 19, SPEC section 12), two sluice nodes on
//! loopback: a scanner with `[partner]` onboards contoso.test with `tenant
//! add`; the gateway gets the partner configuration only by applying the
//! scanner's ps1 kit (it starts with the organisation's own domain and
//! on-premises server, as any tenant has before onboarding). Validation is
//! recorded at the scanner; clean mail goes through the scanner once and
//! back, stamped; a card number stays in the scanner's quarantine; a sender
//! from an unlisted address is refused and counted; `tenant remove` ends the
//! flow with a clear refusal. Net 166.

use crate::support::seed000::{self, events_of, field};
use crate::support::{swaks, wait_until, Net, Node, NodeOptions, Sink};
use serde_json::Value;
use std::time::Duration;

const GATEWAY: u8 = 10;
const INTERNET_MX: u8 = 25;
const SCANNER: u8 = 30;
const ON_PREM: u8 = 40;
const STRANGER: u8 = 60;

const CARD_BODY: &str = "Please charge my visa card 4556 7375 8689 9855 exp 12/29 for the order.";

#[test]
fn kit_onboarded_gateway_validates_loops_once_quarantines_cards_and_stops_after_remove() {
    let net = Net(166);
    let internet = Sink::start(net.ip(INTERNET_MX));
    let dns = seed000::dns(net);
    // The organisation before onboarding: its domain and its own server.
    let organisation = seed000::organisation_objects(net);
    let mut gateway_options = NodeOptions::new(net.ip(GATEWAY), &organisation);
    gateway_options.dns = Some(dns.addr);
    gateway_options.mx_port = Some(internet.addr.port());
    gateway_options.bind_address = Some(net.ip(GATEWAY));
    let gateway = Node::start(gateway_options);

    let mut scanner_options = NodeOptions::new(net.ip(SCANNER), "");
    scanner_options.hostname = "scan.partner.test".into();
    scanner_options.dns = Some(dns.addr);
    scanner_options.mx_port = Some(gateway.smtp.port());
    scanner_options.bind_address = Some(net.ip(SCANNER));
    let mut scanner = Node::start(scanner_options);
    // [partner] names the scanner's own SMTP port, known once it listens.
    let mut config = std::fs::read_to_string(scanner.config_path()).unwrap();
    config.push_str(&format!(
        "\n[partner]\nsmtp_host = \"{}\"\negress_ips = [\"{}/32\"]\nvalidation_address = \"check@scan.partner.test\"\n",
        scanner.smtp,
        net.ip(SCANNER)
    ));
    std::fs::write(scanner.config_path(), config).unwrap();
    scanner.restart();

    let tenant_ip = format!("{}/32", net.ip(GATEWAY));
    let return_host = gateway.smtp.to_string();
    let added = scanner.cli_ok(&[
        "tenant",
        "add",
        "contoso.test",
        "--ip",
        &tenant_ip,
        "--return-host",
        &return_host,
    ]);
    assert!(added.contains("tenant contoso.test added"), "{added}");
    // Adding again changes nothing and says why.
    let again = scanner.cli(&[
        "tenant",
        "add",
        "contoso.test",
        "--ip",
        &tenant_ip,
        "--return-host",
        &return_host,
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    // A bad request is a usage error naming the value; a node without
    // [partner] says what is missing.
    let bad = scanner.cli(&[
        "tenant",
        "add",
        "localhost",
        "--ip",
        &tenant_ip,
        "--return-host",
        &return_host,
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"localhost\" is not a domain"));
    let not_partner = gateway.cli(&["tenant", "list"]);
    assert_eq!(not_partner.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_partner.stderr).contains("set [partner]"));

    let kit = scanner.cli_ok(&["tenant", "kit", "contoso.test", "--format", "ps1"]);
    assert!(kit.contains("New-OutboundConnector"), "{kit}");
    assert!(!kit.contains(&std::fs::read_to_string(scanner.data_dir().join("admin.token")).unwrap()));
    gateway.apply("kit.ps1", &kit);

    // Validation: the gateway's own verb; the scanner records it.
    let report = gateway.cli_json(&["connector", "validate", "To scanner", "--json"]);
    assert_eq!(report["passed"], true, "{report:#}");
    let show = scanner.cli_json(&["tenant", "show", "contoso.test", "--json"]);
    assert_eq!(show["validated"], true, "{show:#}");
    let validation = &show["validations"][0];
    assert_eq!(validation["client"], net.ip(GATEWAY).to_string(), "{show:#}");
    assert_eq!(validation["tls"], true, "{show:#}");
    assert!(
        scanner.queue_json().is_empty(),
        "the validation message was queued: {:?}",
        scanner.queue_json()
    );
    let human = scanner.cli_ok(&["tenant", "show", "contoso.test"]);
    assert!(human.contains("Validated:       yes"), "{human}");

    // Clean mail: gateway -> scanner -> gateway -> internet, once.
    let send = |from_host: u8, to: &str, extra: &[&str]| {
        let source = net.ip(from_host).to_string();
        let mut args = vec![
            "--local-interface",
            source.as_str(),
            "--from",
            "alice@contoso.test",
            "--to",
            to,
        ];
        args.extend_from_slice(extra);
        swaks(gateway.smtp, &args)
    };
    let run = send(
        ON_PREM,
        "x@fabrikam.test",
        &[
            "--header",
            "Subject: clean",
            "--header",
            "Message-Id: <partner-clean@contoso.test>",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let arrived = internet.wait_for(1, Duration::from_secs(40));
    assert_eq!(
        arrived.len(),
        1,
        "gateway queue {:?}, scanner queue {:?}",
        gateway.queue_json(),
        scanner.queue_json()
    );
    let received = arrived[0].headers_named("received");
    let hops: Vec<&str> = received
        .iter()
        .map(|r| {
            if r.contains("by gw.contoso.test") {
                "gateway"
            } else if r.contains("by scan.partner.test") {
                "scanner"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(hops, ["gateway", "scanner", "gateway"], "{received:#?}");
    assert_eq!(
        arrived[0].header("X-Sluice-Org-Scan"),
        None,
        "internal header left the organisation"
    );
    // Once through the scanner: the verdict that came back let it out.
    let at_gateway = events_of(&gateway, "partner-clean@contoso.test");
    let to_scanner = at_gateway
        .iter()
        .filter(|e| field(e, "event") == "routed" && field(e, "connector") == "To scanner")
        .count();
    assert_eq!(to_scanner, 1, "{at_gateway:#?}");
    assert!(
        at_gateway
            .iter()
            .any(|e| field(e, "event") == "received" && field(e, "connector") == "From scanner"),
        "{at_gateway:#?}"
    );
    let scanned = events_of(&scanner, "partner-clean@contoso.test");
    assert!(
        scanned
            .iter()
            .any(|e| field(e, "event") == "delivered"
                && field(e, "connector") == "Back to tenant contoso.test"),
        "{scanned:#?}"
    );

    // A card number stays in the scanner's quarantine.
    let run = send(
        ON_PREM,
        "y@fabrikam.test",
        &[
            "--header",
            "Message-Id: <partner-card@contoso.test>",
            "--body",
            CARD_BODY,
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(
        wait_until(Duration::from_secs(30), || scanner
            .cli_json(&["quarantine", "list", "--json"])
            .as_array()
            .is_some_and(|q| q.len() == 1)),
        "nothing quarantined; scanner queue {:?}",
        scanner.queue_json()
    );
    // Held means held: nothing of it is queued at the scanner, and the
    // gateway has nothing more to send.
    assert!(
        scanner.wait_for_empty_queue(Duration::from_secs(20)),
        "{:?}",
        scanner.queue_json()
    );
    assert!(
        gateway.wait_for_empty_queue(Duration::from_secs(20)),
        "{:?}",
        gateway.queue_json()
    );
    assert_eq!(internet.count(), 1, "the card message reached the internet");

    // Someone else sending in the tenant's name from an unlisted address.
    let stranger = net.ip(STRANGER).to_string();
    let refused = swaks(
        scanner.smtp,
        &[
            "--local-interface",
            &stranger,
            "--from",
            "alice@contoso.test",
            "--to",
            "z@fabrikam.test",
        ],
    );
    assert!(!refused.delivered());
    assert!(
        refused.transcript.contains("550 5.7.1") && refused.transcript.contains("registered IP addresses"),
        "{}",
        refused.transcript
    );

    // A refusal's trace event is stored with the next group commit, not
    // before the 550: wait for it rather than read once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let show: Value = loop {
        let show: Value = scanner.cli_json(&["tenant", "show", "contoso.test", "--json"]);
        if show["refused_unlisted"] == 1 || std::time::Instant::now() > deadline {
            break show;
        }
        crate::support::pause(Duration::from_millis(100));
    };
    assert_eq!(show["arrived_last_day"], 2, "{show:#}");
    assert_eq!(show["quarantined"], 1, "{show:#}");
    assert_eq!(show["refused_unlisted"], 1, "{show:#}");
    assert!(show["last_arrival"].is_string(), "{show:#}");
    let listed = scanner.cli_ok(&["tenant", "list"]);
    assert!(
        listed.contains("contoso.test") && listed.contains("yes"),
        "{listed}"
    );

    // Remove: exactly the tenant's objects go, and its mail is refused.
    let before = scanner.cli_ok(&["export"]);
    scanner.cli_ok(&["tenant", "remove", "contoso.test"]);
    let after = scanner.cli_ok(&["export"]);
    assert!(
        before.contains("contoso.test") && !after.contains("contoso.test"),
        "{after}"
    );
    let gone = scanner.cli(&["tenant", "show", "contoso.test"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no tenant contoso.test"));

    let run = send(
        ON_PREM,
        "w@fabrikam.test",
        &["--header", "Message-Id: <partner-after@contoso.test>"],
    );
    assert!(run.delivered(), "{}", run.transcript);
    let bounced = wait_until(Duration::from_secs(30), || {
        events_of(&gateway, "partner-after@contoso.test").iter().any(|e| {
            field(e, "event") == "bounced" && field(e, "detail").contains("not listed for any tenant")
        })
    });
    assert!(
        bounced,
        "{:#?}",
        events_of(&gateway, "partner-after@contoso.test")
    );
    assert_eq!(internet.count(), 1);
}
