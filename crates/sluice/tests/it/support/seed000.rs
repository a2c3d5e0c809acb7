//! Seed 000 on loopback: a gateway (tenant contoso.test) that sends
//! external mail lacking the scanner's verdict through a partner scanner,
//! the scanner (a real sluice with DLP rules) relaying it back, and the
//! internet as an smtp-sink reached by MX records served by dnsmasq.
//!
//! Hosts inside the test's net: gateway .10, internet MX .25, scanner .30,
//! on-prem client .40, anonymous internet client .50, dnsmasq .53.
//!
//! The nodes' objects are examples/seed000/, the files `sluice demo` reads,
//! with the demo's addresses mapped into the test's net: one seed 000.

use super::{swaks, Dns, Net, Node, NodeOptions, Record, Sink, SwaksRun};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};

pub const GATEWAY: u8 = 10;
pub const INTERNET_MX: u8 = 25;
pub const SCANNER: u8 = 30;
pub const ON_PREM: u8 = 40;
pub const INTERNET_CLIENT: u8 = 50;
pub const DNS: u8 = 53;

/// The text of the scanner's notice to senders of blocked mail (as
/// examples/seed000/scanner.toml has it).
pub const NOTICE: &str = "Your message contained a payment card number and was held for review.";

/// A Visa number that passes Luhn and is not a published test number,
/// with the keywords that make the finding high confidence.
pub const CARD_BODY: &str = "Please charge my visa card 4556 7375 8689 9855 exp 12/29 for the order.";

/// The card's digits, in the groupings they could leak in.
pub const CARD_DIGITS: [&str; 3] = ["4556 7375 8689 9855", "4556737586899855", "8689"];

pub struct Seed000 {
    pub net: Net,
    pub internet: Sink,
    pub gateway: Node,
    pub scanner: Node,
    _dns: Dns,
}

/// The seed 000 files `sluice demo` runs too (examples/seed000/).
const EXAMPLE_GATEWAY: &str = include_str!("../../../../../examples/seed000/gateway.toml");
const EXAMPLE_GATEWAY_LOOP: &str = include_str!("../../../../../examples/seed000/gateway-loop.toml");
const EXAMPLE_SCANNER: &str = include_str!("../../../../../examples/seed000/scanner.toml");

/// An example file with the demo's addresses (127.0.0.0/24, SMTP on 2525)
/// moved into `net`: each host to this fixture's host number, the two
/// SMTP listeners to the nodes' real ports.
fn localise(text: &str, net: Net, gateway: Option<SocketAddr>, scanner: Option<SocketAddr>) -> String {
    let mut text = text.to_string();
    for (demo, addr) in [("127.0.0.10:2525", gateway), ("127.0.0.30:2525", scanner)] {
        if let Some(addr) = addr {
            text = text.replace(demo, &addr.to_string());
        }
    }
    for (demo, host) in [
        ("127.0.0.10", GATEWAY),
        ("127.0.0.20", ON_PREM),
        ("127.0.0.30", SCANNER),
        ("127.0.0.50", INTERNET_MX),
    ] {
        text = text.replace(demo, &net.ip(host).to_string());
    }
    assert!(
        !text.contains("127.0.0."),
        "an address of the example is not mapped into the test's net:\n{text}"
    );
    text
}

/// dnsmasq at the net's DNS host with seed 000's MX records: fabrikam.test
/// at the internet's MX, contoso.test at the gateway.
pub fn dns(net: Net) -> Dns {
    Dns::start(
        net.ip(DNS),
        &[
            Record::Mx {
                domain: "fabrikam.test",
                host: "mx.fabrikam.test",
                preference: 10,
            },
            Record::A {
                name: "mx.fabrikam.test",
                ip: net.ip(INTERNET_MX),
            },
            Record::Mx {
                domain: "contoso.test",
                host: "gw.contoso.test",
                preference: 10,
            },
            Record::A {
                name: "gw.contoso.test",
                ip: net.ip(GATEWAY),
            },
        ],
    )
}

/// The organisation before onboarding (examples/seed000/gateway.toml): its
/// domain and its own server.
pub fn organisation_objects(net: Net) -> String {
    localise(EXAMPLE_GATEWAY, net, None, None)
}

/// The gateway's objects: on-prem by IP, the scanner's return path
/// (on_premises, trusted headers), the rule-scoped "To scanner" connector and
/// the rule that uses it; `extra` is appended (more `[[rule]]` tables).
pub fn gateway_objects(net: Net, scanner: SocketAddr, extra: &str) -> String {
    let example = format!("{EXAMPLE_GATEWAY}\n{EXAMPLE_GATEWAY_LOOP}");
    format!("{}\n{extra}", localise(&example, net, None, Some(scanner)))
}

/// The scanner's objects: seed 000's partner service, with DLP as rules.
pub fn scanner_objects(net: Net, gateway: SocketAddr) -> String {
    localise(EXAMPLE_SCANNER, net, Some(gateway), None)
}

impl Seed000 {
    /// Starts everything; `gateway_extra` is appended to the gateway's
    /// objects.
    pub fn start(net: Net, gateway_extra: &str) -> Seed000 {
        let internet = Sink::start(net.ip(INTERNET_MX));
        let dns = dns(net);
        // The gateway first and empty: its objects name the scanner's port,
        // the scanner's name the gateway's.
        let mut gateway_options = NodeOptions::new(net.ip(GATEWAY), "");
        gateway_options.dns = Some(dns.addr);
        gateway_options.mx_port = Some(internet.addr.port());
        gateway_options.bind_address = Some(net.ip(GATEWAY));
        let gateway = Node::start(gateway_options);

        let mut scanner_options = NodeOptions::new(net.ip(SCANNER), &scanner_objects(net, gateway.smtp));
        scanner_options.hostname = "scan.partner.test".into();
        scanner_options.dns = Some(dns.addr);
        // The scanner's MX deliveries (its notices to contoso.test
        // senders) reach the gateway's listener.
        scanner_options.mx_port = Some(gateway.smtp.port());
        scanner_options.bind_address = Some(net.ip(SCANNER));
        let scanner = Node::start(scanner_options);

        gateway.apply("gateway.toml", &gateway_objects(net, scanner.smtp, gateway_extra));
        Seed000 {
            net,
            internet,
            gateway,
            scanner,
            _dns: dns,
        }
    }

    /// swaks to the gateway from `source` (a host number of the net).
    pub fn send(&self, source: u8, from: &str, to: &str, extra: &[&str]) -> SwaksRun {
        let source: Ipv4Addr = self.net.ip(source);
        let source = source.to_string();
        let mut args = vec!["--local-interface", source.as_str(), "--from", from, "--to", to];
        args.extend_from_slice(extra);
        swaks(self.gateway.smtp, &args)
    }
}

/// A trace event's string field ("" when absent).
pub fn field<'a>(event: &'a Value, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The events of `node`'s trace for one Message-ID (without brackets).
pub fn events_of(node: &Node, message_id: &str) -> Vec<Value> {
    node.trace(&[])
        .into_iter()
        .filter(|e| field(e, "message_id").contains(message_id))
        .collect()
}

/// (event, connector) pairs.
pub fn timeline(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (field(e, "event").to_string(), field(e, "connector").to_string()))
        .collect()
}

/// Asserts `expected` (event, connector or None for any) appear in order
/// in `events` (others may come between).
pub fn assert_in_order(what: &str, events: &[Value], expected: &[(&str, Option<&str>)]) {
    let timeline = timeline(events);
    let mut at = 0;
    for (event, connector) in expected {
        let found = timeline[at..]
            .iter()
            .position(|(e, c)| e == event && connector.is_none_or(|want| c == want));
        match found {
            Some(offset) => at += offset + 1,
            None => {
                panic!("{what}: no {event} {connector:?} after position {at}: {timeline:#?}\n{events:#?}")
            }
        }
    }
}
