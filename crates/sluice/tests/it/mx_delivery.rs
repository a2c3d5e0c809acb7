//! Delivery by MX through a test resolver (dnsmasq): each domain's mail
//! goes to the host its MX names, on `delivery.mx_port`, falling back to
//! the next preference when the best MX refuses connections. Net 20.

use crate::support::{contoso_with_on_prem, free_port, swaks, Dns, Net, Node, NodeOptions, Record, Sink};
use std::net::SocketAddr;
use std::time::Duration;

const NODE: u8 = 1;
const FABRIKAM_MX: u8 = 25;
const NORTHWIND_MX_BACKUP: u8 = 26;
const NORTHWIND_MX_DOWN: u8 = 27;
const ON_PREM: u8 = 40;
const DNS: u8 = 53;

#[test]
fn relays_by_mx_records_from_test_resolver() {
    let net = Net(20);
    let mx_port = free_port(net.ip(FABRIKAM_MX));
    let fabrikam = Sink::start_on(SocketAddr::new(net.ip(FABRIKAM_MX).into(), mx_port));
    let northwind = Sink::start_on(SocketAddr::new(net.ip(NORTHWIND_MX_BACKUP).into(), mx_port));
    let dns = Dns::start(
        net.ip(DNS),
        &[
            Record::Mx {
                domain: "fabrikam.test",
                host: "mx1.fabrikam.test",
                preference: 10,
            },
            Record::A {
                name: "mx1.fabrikam.test",
                ip: net.ip(FABRIKAM_MX),
            },
            Record::Mx {
                domain: "northwind.test",
                host: "mx-down.northwind.test",
                preference: 10,
            },
            Record::A {
                name: "mx-down.northwind.test",
                ip: net.ip(NORTHWIND_MX_DOWN),
            },
            Record::Mx {
                domain: "northwind.test",
                host: "mx2.northwind.test",
                preference: 20,
            },
            Record::A {
                name: "mx2.northwind.test",
                ip: net.ip(NORTHWIND_MX_BACKUP),
            },
        ],
    );
    let mut options = NodeOptions::new(net.ip(NODE), &contoso_with_on_prem(net.ip(ON_PREM)));
    options.dns = Some(dns.addr);
    options.mx_port = Some(mx_port);
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
            "bob@fabrikam.test,carol@northwind.test",
            "--header",
            "Subject: by MX",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);

    let at_fabrikam = fabrikam.wait_for(1, Duration::from_secs(30));
    let at_northwind = northwind.wait_for(1, Duration::from_secs(30));
    let recipients = |messages: &[crate::support::SinkMessage]| -> Vec<String> {
        messages
            .iter()
            .flat_map(|m| m.rcpt_to.iter())
            .map(|r| r.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(recipients(&at_fabrikam), vec!["<bob@fabrikam.test>"]);
    assert_eq!(recipients(&at_northwind), vec!["<carol@northwind.test>"]);
    assert_eq!(at_fabrikam[0].header("subject").as_deref(), Some("by MX"));
}
