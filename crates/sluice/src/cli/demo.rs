//! `sluice demo`: the reference topology of SPEC section 1 (seed 000) on
//! loopback, the five-minute tour. Three nodes in this process: the gateway
//! (contoso.test, 127.0.0.10), the scanning partner (127.0.0.30) and a node
//! standing in for the internet (fabrikam.test, 127.0.0.50), and a small DNS
//! server of the demo's own (127.0.0.53) that every node's `delivery.dns`
//! names: MX records, SPF, DMARC and the DKIM and ARC keys the nodes make,
//! so no lookup leaves the machine. The gateway starts from
//! examples/seed000/gateway.toml; the scanner onboards its organisation as a
//! tenant (`tenant add`) and the gateway applies the tenant's kit: no
//! partner connector is written by hand. It validates the scanner
//! connector, sends a clean and a sensitive message from an on-premises
//! server (127.0.0.20) and a DKIM-signed message from the internet through
//! the scanner, which seals it with ARC; it prints each message's trace and
//! the authentication headers the inbound message arrived with, and keeps
//! running until Ctrl-C.

use super::Failure;
use crate::admin::{AdminBackend, TraceEventView, TraceQuery};
use crate::auth::keys::{KeyAlgorithm, NewKeyRequest};
use crate::config::objects::ObjectSet;
use crate::config::DnsSource;
use crate::config::{Config, NodeFile};
use crate::deliver::{Deliverer, DeliveryJob, DeliverySettings, JobRecipient, Outcome};
use crate::message::{Address, BodyType, Notify, ReversePath};
use crate::route::{HostPort, NextHop, Route, TlsPolicy};
use crate::server::Node;
use crate::tenant::TenantRequest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The organisation before onboarding: its domain and its own server. The
/// scanning partner's connectors and rule come from the scanner's kit.
const GATEWAY: &str = include_str!("../../../../examples/seed000/gateway.toml");

/// Applied after the kit: mail from the internet goes through the scanner
/// too, so the inbound message comes back sealed.
const GATEWAY_INBOUND: &str = include_str!("../../../../examples/seed000/gateway-inbound.toml");

/// The scanner's `[partner]` settings (what its tenants' kits point at)
/// and its ARC seal (SPEC section 9).
const SCANNER_SETTINGS: &str = "[partner]\nsmtp_host = \"127.0.0.30:2525\"\negress_ips = [\"127.0.0.30/32\"]\n\
                                validation_address = \"check@scanner.partner.test\"\n\
                                [auth]\narc_seal = { domain = \"scanner.partner.test\", selector = \"arc\" }\n";

/// fabrikam.test's own mail server, which sends through the internet node.
const FABRIKAM_SERVER: &str = "127.0.0.51";

const INTERNET: &str = r#"
[[accepted_domain]]
name = "fabrikam.test"

[[inbound_connector]]
name = "From fabrikam's server"
type = "on_premises"
sender_ip_addresses = ["127.0.0.51/32"]
"#;

/// Where the demo's DNS server listens (an ephemeral port).
const DNS_IP: &str = "127.0.0.53";

struct DemoNode {
    label: &'static str,
    node: Node,
    data_dir: PathBuf,
}

fn config(
    root: &Path,
    name: &str,
    hostname: &str,
    ip: &str,
    dns: SocketAddr,
    extra: &str,
) -> Result<Config, Failure> {
    let text = format!(
        "[node]\nhostname = \"{hostname}\"\ndata_dir = \"{name}\"\n\
         [smtp]\nlisten = [\"{ip}:2525\"]\n\
         [delivery]\nretry = [\"5s\", \"30s\"]\nbind_address = \"{ip}\"\nmx_port = 2525\ndns = \"{dns}\"\n\
         [admin]\nlisten = \"{ip}:8025\"\n{extra}"
    );
    let file: NodeFile = toml::from_str(&text).map_err(|e| Failure::runtime(e.to_string()))?;
    file.validate(root).map_err(|e| Failure::runtime(e.to_string()))
}

/// The topology's records: MX and addresses of the three domains, SPF and
/// DMARC of the two organisations. The DKIM and ARC keys are added once
/// the nodes have made them.
fn zone() -> Result<Arc<zone::Zone>, Failure> {
    let zone = zone::Zone::default();
    let add = |name: &str, record: zone::Data| zone.add(name, record).map_err(Failure::runtime);
    for (domain, host, address) in [
        ("contoso.test", "gw.contoso.test", "127.0.0.10"),
        ("scanner.partner.test", "scanner.partner.test", "127.0.0.30"),
        ("fabrikam.test", "mx.fabrikam.test", "127.0.0.50"),
    ] {
        add(domain, zone::Data::Mx(10, host.to_string()))?;
        let ip = address
            .parse()
            .map_err(|_| Failure::runtime("a constant address"))?;
        add(host, zone::Data::A(ip))?;
    }
    add(
        "contoso.test",
        zone::Data::Txt("v=spf1 ip4:127.0.0.10 -all".into()),
    )?;
    add(
        "_dmarc.contoso.test",
        zone::Data::Txt("v=DMARC1; p=reject".into()),
    )?;
    add(
        "fabrikam.test",
        zone::Data::Txt("v=spf1 ip4:127.0.0.50 -all".into()),
    )?;
    add(
        "_dmarc.fabrikam.test",
        zone::Data::Txt("v=DMARC1; p=reject".into()),
    )?;
    Ok(Arc::new(zone))
}

/// Runs the demo until Ctrl-C.
pub(crate) fn run() -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    runtime.block_on(demo())
}

struct NodeSpec<'a> {
    label: &'static str,
    hostname: &'a str,
    ip: &'a str,
    objects: &'a str,
    extra_config: &'a str,
}

async fn start(root: &Path, dns: SocketAddr, spec: NodeSpec<'_>) -> Result<DemoNode, Failure> {
    let NodeSpec {
        label,
        hostname,
        ip,
        objects,
        extra_config,
    } = spec;
    let config = config(root, label, hostname, ip, dns, extra_config)?;
    let data_dir = config.data_dir.clone();
    let node = Node::start(config)
        .await
        .map_err(|e| Failure::runtime(format!("cannot start the {label} node on {ip}: {e:#}")))?;
    let set: ObjectSet = toml::from_str(objects).map_err(|e| Failure::runtime(e.to_string()))?;
    node.management
        .apply(set, true)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    println!(
        "  {label:<9} {hostname:<22} SMTP {ip}:2525   admin http://{}/",
        node.admin
    );
    Ok(DemoNode {
        label,
        node,
        data_dir,
    })
}

async fn demo() -> Result<(), Failure> {
    let root = std::env::current_dir()
        .map_err(|e| Failure::runtime(e.to_string()))?
        .join("sluice-demo");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)
        .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", root.display())))?;
    println!(
        "sluice demo: the seed 000 topology on loopback (data in {})\n",
        root.display()
    );
    let zone = zone()?;
    let dns = zone::serve(zone.clone(), DNS_IP)
        .await
        .map_err(|e| Failure::runtime(format!("cannot start the demo's DNS server on {DNS_IP}: {e}")))?;
    println!("Nodes (each resolves names with the demo's DNS server at {dns}):");
    let gateway = start(
        &root,
        dns,
        NodeSpec {
            label: "gateway",
            hostname: "gw.contoso.test",
            ip: "127.0.0.10",
            objects: GATEWAY,
            extra_config: "",
        },
    )
    .await?;
    let scanner = start(
        &root,
        dns,
        NodeSpec {
            label: "scanner",
            hostname: "scanner.partner.test",
            ip: "127.0.0.30",
            objects: "",
            extra_config: SCANNER_SETTINGS,
        },
    )
    .await?;
    let internet = start(
        &root,
        dns,
        NodeSpec {
            label: "internet",
            hostname: "mx.fabrikam.test",
            ip: "127.0.0.50",
            objects: INTERNET,
            extra_config: "",
        },
    )
    .await?;
    let nodes = [&gateway, &scanner, &internet];

    println!("\nKeys, published in the demo's DNS:");
    publish_key(&zone, &internet, "fabrikam.test", None, KeyAlgorithm::Ed25519).await?;
    // RFC 8617 defines only rsa-sha256 for ARC.
    publish_key(
        &zone,
        &scanner,
        "scanner.partner.test",
        Some("arc"),
        KeyAlgorithm::Rsa,
    )
    .await?;

    onboard(&gateway, &scanner).await?;
    let inbound: ObjectSet = toml::from_str(GATEWAY_INBOUND).map_err(|e| Failure::runtime(e.to_string()))?;
    gateway
        .node
        .management
        .apply(inbound, false)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    println!("            sluice apply -f examples/seed000/gateway-inbound.toml (on the gateway: mail from the internet through the scanner too)");

    println!("\nValidating the gateway's \"To scanner\" connector (seed step 16):");
    let report = gateway
        .node
        .management
        .validate_connector("To scanner".into(), Vec::new())
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    print!("{}", super::objects::validation_table(&report));

    println!("\nSending from the on-premises server (127.0.0.20) through the gateway:");
    let sender = mail_server(&root, "onprem", "127.0.0.20", dns)?;
    let clean = "Subject: Lunch on Friday\r\nMessage-ID: <demo-clean@contoso.test>\r\nFrom: Alice <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\n\r\nShall we meet at noon?\r\n";
    let sensitive = "Subject: Payment details\r\nMessage-ID: <demo-sensitive@contoso.test>\r\nFrom: Alice <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\n\r\nHere is the visa card for the order: 4556 7375 8689 9855, exp 12/29, cvv 123.\r\n";
    for (what, content) in [("clean", clean), ("sensitive", sensitive)] {
        let reply = submit(
            &sender,
            "127.0.0.10",
            "alice@contoso.test",
            "bob@fabrikam.test",
            content,
        )
        .await;
        println!("  {what:<9} message: {reply}");
    }
    println!("\nSending from fabrikam.test's server ({FABRIKAM_SERVER}) through the internet node, which signs it (DKIM):");
    let fabrikam = mail_server(&root, "fabrikam", FABRIKAM_SERVER, dns)?;
    let inbound = "Subject: Quarterly figures\r\nMessage-ID: <demo-inbound@fabrikam.test>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\nFrom: Carol <carol@fabrikam.test>\r\nTo: <bob@contoso.test>\r\n\r\nThe figures are attached to the shared folder.\r\n";
    let reply = submit(
        &fabrikam,
        "127.0.0.50",
        "carol@fabrikam.test",
        "bob@contoso.test",
        inbound,
    )
    .await;
    println!("  {:<9} message: {reply}", "inbound");

    let inbox = gateway.data_dir.join("mailboxes/contoso.test/bob/new");
    let done = wait_until(Duration::from_secs(20), || async {
        let delivered = count_files(&internet.data_dir.join("mailboxes/fabrikam.test/bob/new"));
        let held = scanner
            .node
            .management
            .quarantine()
            .await
            .map(|q| q.len())
            .unwrap_or(0);
        delivered >= 1 && held >= 1 && count_files(&inbox) >= 1
    })
    .await;
    if !done {
        println!("\n(still in flight after 20 s; the traces below show how far each message got)");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (title, id) in [
        ("Clean message", "demo-clean@contoso.test"),
        ("Sensitive message", "demo-sensitive@contoso.test"),
        ("Inbound message", "demo-inbound@fabrikam.test"),
    ] {
        println!("\n{title} <{id}>:");
        let mut events: Vec<(&str, TraceEventView)> = Vec::new();
        for n in &nodes {
            let query = TraceQuery {
                message_id: Some(id.to_string()),
                ..TraceQuery::default()
            };
            if let Ok(found) = n.node.management.trace(query).await {
                events.extend(found.into_iter().map(|e| (n.label, e)));
            }
        }
        events.sort_by(|a, b| a.1.at.cmp(&b.1.at));
        for (label, e) in events {
            let time = e.at.get(11..23).unwrap_or(&e.at).to_string();
            let mut line = format!("  {time}  {label:<8}  {:<15}", e.event);
            if let Some(to) = &e.to {
                line.push_str(&format!(" {to}"));
            }
            if let Some(c) = &e.connector {
                line.push_str(&format!("  [{c}]"));
            }
            if let Some(d) = &e.detail {
                line.push_str(&format!("  {d}"));
            }
            println!("{line}");
        }
    }
    println!(
        "\nThe inbound message in bob@contoso.test's mailbox: the gateway's results, the scanner's seal:"
    );
    match std::fs::read_dir(&inbox)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .and_then(|e| std::fs::read(e.path()).ok())
    {
        Some(message) => {
            for line in authentication_headers(&message) {
                println!("  {line}");
            }
        }
        None => println!("  (not delivered yet)"),
    }
    println!(
        "\nInternet mailbox: {}\nQuarantine:       sluice quarantine list --api http://127.0.0.30:8025 --token $(cat {})",
        internet.data_dir.join("mailboxes/fabrikam.test/bob/new").display(),
        scanner.data_dir.join("admin.token").display()
    );
    println!("Admin centers:    http://127.0.0.10:8025/  http://127.0.0.30:8025/  http://127.0.0.50:8025/");
    println!("                  (tokens: sluice-demo/<node>/admin.token)");
    println!("\nThe nodes keep running for exploration; Ctrl-C stops them.");
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping");
    for n in [gateway, scanner, internet] {
        n.node.stop().await;
    }
    Ok(())
}

/// Seed 000 as the partner runs it: `tenant add` on the scanner, then the
/// tenant's kit applied on the gateway, as `sluice apply -f kit.ps1` does.
async fn onboard(gateway: &DemoNode, scanner: &DemoNode) -> Result<(), Failure> {
    let request = TenantRequest {
        domain: "contoso.test".into(),
        ips: vec!["127.0.0.10/32".into()],
        return_host: "127.0.0.10:2525".into(),
    };
    println!("\nOnboarding: sluice tenant add contoso.test --ip 127.0.0.10/32 --return-host 127.0.0.10:2525 (on the scanner)");
    crate::admin::tenants::add_tenant(&*scanner.node.management, &request)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let partner = scanner
        .node
        .management
        .partner()
        .ok_or_else(|| Failure::runtime("the scanner has no [partner] settings"))?;
    let script = crate::tenant::kit::ps1(&partner, "contoso.test");
    let imported = crate::config::powershell::import(&script).map_err(|e| Failure::runtime(e.to_string()))?;
    gateway
        .node
        .management
        .apply(imported.objects, false)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    println!("            sluice tenant kit contoso.test --format ps1 > kit.ps1; sluice apply -f kit.ps1 (on the gateway):");
    for line in script
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        println!("              {line}");
    }
    Ok(())
}

/// A mail server outside the nodes (the organisations' own), sending from
/// `ip` straight to a node.
fn mail_server(root: &Path, name: &str, ip: &str, dns: SocketAddr) -> Result<Deliverer, Failure> {
    let mut settings = DeliverySettings::new(format!("{name}.demo.test"), root.join(name));
    settings.bind_address = ip.parse().ok();
    let resolver =
        crate::dns::resolver(&DnsSource::Server(dns)).map_err(|e| Failure::runtime(e.to_string()))?;
    Deliverer::new(settings, resolver).map_err(|e| Failure::runtime(e.to_string()))
}

async fn submit(sender: &Deliverer, node: &str, from: &str, to: &str, content: &str) -> String {
    let Ok(recipient) = Address::parse(to) else {
        return format!("{to} is not an address");
    };
    let job = DeliveryJob {
        route: Route::Connector {
            connector: "send connector".into(),
            next_hop: NextHop::SmartHosts(vec![HostPort {
                host: node.into(),
                port: 2525,
            }]),
            tls: TlsPolicy::EncryptionOnly,
            helo_name: None,
            retain_internal_headers: false,
            max_message_size: None,
        },
        domain: recipient.domain().clone(),
        mail_from: Address::parse(from).map_or(ReversePath::Null, ReversePath::Mailbox),
        recipients: vec![JobRecipient {
            address: recipient,
            notify: Notify::Default,
            orcpt: None,
        }],
        content: Arc::new(content.as_bytes().to_vec()),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
    };
    let attempt = sender.attempt(&job).await;
    match attempt.outcomes.first() {
        Some((_, Outcome::Delivered(reply) | Outcome::TempFail(reply) | Outcome::PermFail(reply))) => {
            reply.to_string()
        }
        None => "no answer".into(),
    }
}

/// `sluice dkim new` on `node`, and the record it prints published in the
/// demo's DNS (as the domain's administrator would).
async fn publish_key(
    zone: &zone::Zone,
    node: &DemoNode,
    domain: &str,
    selector: Option<&str>,
    algorithm: KeyAlgorithm,
) -> Result<(), Failure> {
    let keyring = node
        .node
        .management
        .dkim()
        .ok_or_else(|| Failure::runtime("the node keeps no DKIM keys"))?;
    let request = NewKeyRequest {
        domain: domain.into(),
        selector: selector.map(str::to_string),
        algorithm,
    };
    let key = keyring
        .create(&request)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    zone.add(&key.record_name, zone::Data::Txt(key.record.clone()))
        .map_err(Failure::runtime)?;
    println!(
        "  {:<9} {}. IN TXT \"{}...\"",
        node.label,
        key.record_name,
        key.record.get(..40).unwrap_or(&key.record)
    );
    Ok(())
}

/// The message's Authentication-Results and ARC headers, unfolded, with
/// signature values shortened (they are long and mean nothing to a reader).
fn authentication_headers(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        match (line.starts_with([' ', '\t']), fields.last_mut()) {
            (true, Some(field)) => {
                field.push(' ');
                field.push_str(line.trim());
            }
            _ => fields.push(line.to_string()),
        }
    }
    let wanted = [
        "authentication-results:",
        "arc-authentication-results:",
        "arc-seal:",
    ];
    fields
        .into_iter()
        .filter(|f| {
            let lower = f.to_ascii_lowercase();
            wanted.iter().any(|w| lower.starts_with(w))
        })
        .map(|f| shorten_signatures(&f))
        .collect()
}

fn shorten_signatures(field: &str) -> String {
    field
        .split("; ")
        .map(|tag| match tag.strip_prefix("b=") {
            Some(value) if value.len() > 12 => format!("b={}...", value.get(..12).unwrap_or(value)),
            _ => tag.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The demo's DNS server: authoritative for the records it is given, over
/// UDP and TCP on one loopback port, NXDOMAIN for every other name. The
/// wire format is hickory's; this only looks records up.
mod zone {
    use hickory_resolver::proto::op::{Edns, Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, MX, TXT};
    use hickory_resolver::proto::rr::{Name, RData, Record};
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, RwLock};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    /// A UDP answer larger than this (or than the client's EDNS size) is
    /// sent truncated, and the client asks again over TCP.
    const PLAIN_UDP: usize = 512;
    /// TCP connections answered at once; more wait.
    const TCP_CONNECTIONS: usize = 16;

    /// One record's data.
    pub(super) enum Data {
        A(Ipv4Addr),
        Mx(u16, String),
        Txt(String),
    }

    #[derive(Default)]
    pub(super) struct Zone {
        records: RwLock<HashMap<String, Vec<RData>>>,
    }

    fn key(name: &str) -> String {
        name.trim_end_matches('.').to_ascii_lowercase()
    }

    impl Zone {
        pub(super) fn add(&self, name: &str, data: Data) -> Result<(), String> {
            let data = match data {
                Data::A(ip) => RData::A(A(ip)),
                Data::Mx(preference, host) => {
                    let host = Name::from_ascii(format!("{host}.")).map_err(|e| format!("{host}: {e}"))?;
                    RData::MX(MX::new(preference, host))
                }
                // A TXT record carries strings of at most 255 bytes; a
                // verifier joins them.
                Data::Txt(text) => RData::TXT(TXT::new(
                    text.as_bytes()
                        .chunks(255)
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect(),
                )),
            };
            let mut records = self
                .records
                .write()
                .map_err(|_| "the zone's lock is poisoned".to_string())?;
            records.entry(key(name)).or_default().push(data);
            Ok(())
        }

        /// The reply to one query message, `limit` bytes at most.
        pub(super) fn answer(&self, query: &[u8], limit: usize) -> Option<Vec<u8>> {
            let request = Message::from_vec(query).ok()?;
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            let mut limit = limit;
            if let Some(edns) = &request.edns {
                limit = limit.max(usize::from(edns.max_payload()));
                let mut ours = Edns::new();
                ours.set_max_payload(edns.max_payload().max(PLAIN_UDP as u16));
                response.set_edns(ours);
            }
            match request.queries.first() {
                None => response.metadata.response_code = ResponseCode::FormErr,
                Some(question) => {
                    response.add_query(question.clone());
                    let records = self.records.read().ok()?;
                    match records.get(&key(&question.name().to_ascii())) {
                        None => response.metadata.response_code = ResponseCode::NXDomain,
                        Some(list) => {
                            for data in list.iter().filter(|d| d.record_type() == question.query_type()) {
                                response.add_answer(Record::from_rdata(
                                    question.name().clone(),
                                    60,
                                    data.clone(),
                                ));
                            }
                        }
                    }
                }
            }
            let bytes = response.to_vec().ok()?;
            if bytes.len() <= limit {
                return Some(bytes);
            }
            response.truncate().to_vec().ok()
        }
    }

    /// Starts answering on an ephemeral port of `ip`, UDP and TCP alike;
    /// the tasks end with the runtime.
    pub(super) async fn serve(zone: Arc<Zone>, ip: &str) -> std::io::Result<SocketAddr> {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| std::io::Error::other(format!("{ip} is not an address")))?;
        // The TCP port first, then the same number for UDP: a free TCP port
        // is almost always a free UDP one too on an address of our own.
        let mut bound = None;
        for _ in 0..10 {
            let tcp = TcpListener::bind((ip, 0)).await?;
            let addr = tcp.local_addr()?;
            if let Ok(udp) = UdpSocket::bind(addr).await {
                bound = Some((tcp, udp, addr));
                break;
            }
        }
        let (tcp, udp, addr) =
            bound.ok_or_else(|| std::io::Error::other("no port free for both UDP and TCP"))?;
        let udp_zone = zone.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buffer).await else {
                    continue;
                };
                if let Some(reply) = udp_zone.answer(&buffer[..n], PLAIN_UDP) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    // Out of descriptors, most likely: give them time back.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let zone = zone.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(10), answer_tcp(&zone, stream))
                            .await;
                    drop(slot);
                });
            }
        });
        Ok(addr)
    }

    /// Length-prefixed queries on one connection (RFC 7766), until the
    /// client closes it.
    async fn answer_tcp(zone: &Zone, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let length = usize::from(stream.read_u16().await?);
            let mut query = vec![0u8; length];
            stream.read_exact(&mut query).await?;
            let Some(reply) = zone.answer(&query, usize::from(u16::MAX)) else {
                return Ok(());
            };
            let length = u16::try_from(reply.len()).map_err(std::io::Error::other)?;
            stream.write_u16(length).await?;
            stream.write_all(&reply).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::zone::{Data, Zone};
    use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
    use hickory_resolver::proto::rr::{Name, RData, RecordType};

    /// The zone's reply to one question, `limit` bytes at most (512: plain
    /// UDP; 65535: TCP); `edns` says the client takes 1232 bytes over UDP.
    fn ask(zone: &Zone, name: &str, kind: RecordType, edns: bool, limit: usize) -> Message {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        if edns {
            let mut ours = Edns::new();
            ours.set_max_payload(1232);
            message.set_edns(ours);
        }
        let reply = zone.answer(&message.to_vec().unwrap(), limit).expect("a reply");
        Message::from_vec(&reply).unwrap()
    }

    #[test]
    fn the_zone_answers_its_records_and_nxdomain_for_the_rest() {
        let zone = Zone::default();
        zone.add("Fabrikam.test", Data::Txt("v=spf1 ip4:127.0.0.50 -all".into()))
            .unwrap();
        zone.add("fabrikam.test", Data::Mx(10, "mx.fabrikam.test".into()))
            .unwrap();
        let txt = ask(&zone, "fabrikam.test.", RecordType::TXT, false, 512);
        assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
        assert_eq!(txt.answers.len(), 1, "only the TXT record: {txt:?}");
        let aaaa = ask(&zone, "fabrikam.test.", RecordType::AAAA, false, 512);
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty(), "{aaaa:?}");
        let unknown = ask(&zone, "nowhere.test.", RecordType::A, false, 512);
        assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn a_record_too_large_for_plain_udp_is_truncated_unless_the_client_says_edns() {
        let zone = Zone::default();
        // An RSA 4096 key's record: more than plain UDP's 512 bytes.
        let record = format!("v=DKIM1; k=rsa; p={}", "A".repeat(736));
        let name = "arc._domainkey.scanner.partner.test.";
        zone.add(name, Data::Txt(record.clone())).unwrap();
        let plain = ask(&zone, name, RecordType::TXT, false, 512);
        assert!(plain.metadata.truncation && plain.answers.is_empty(), "{plain:?}");
        let edns = ask(&zone, name, RecordType::TXT, true, 512);
        assert!(!edns.metadata.truncation, "{edns:?}");
        let RData::TXT(txt) = &edns.answers[0].data else {
            panic!("not a TXT answer: {edns:?}");
        };
        assert_eq!(txt.txt_data.len(), 3, "split in 255-byte strings");
        let joined: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, record.as_bytes());
        let tcp = ask(&zone, name, RecordType::TXT, false, usize::from(u16::MAX));
        assert_eq!(tcp.answers.len(), 1, "{tcp:?}");
    }

    #[tokio::test]
    async fn the_nodes_resolver_reads_a_large_record_from_the_demo_server() {
        let zone = std::sync::Arc::new(Zone::default());
        let record = format!("v=DKIM1; k=rsa; p={}", "A".repeat(736));
        zone.add("big._domainkey.fabrikam.test", Data::Txt(record.clone()))
            .unwrap();
        let addr = super::zone::serve(zone, "127.0.0.1").await.unwrap();
        let resolver = crate::dns::resolver(&crate::config::DnsSource::Server(addr)).unwrap();
        assert_eq!(
            resolver.txt("big._domainkey.fabrikam.test").await.unwrap(),
            vec![record]
        );
        assert!(matches!(
            resolver.txt("small._domainkey.fabrikam.test").await,
            Err(crate::dns::DnsError::NotFound { .. })
        ));
    }
}
