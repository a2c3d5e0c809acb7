//! `sluice demo`: the reference topology of SPEC section 1 (seed 000) on
//! loopback, the five-minute tour. Three nodes in this process: the gateway
//! (contoso.test, 127.0.0.10), the scanning partner (127.0.0.30) and a node
//! standing in for the internet (fabrikam.test, 127.0.0.50), with built-in
//! DNS answers for their MX records. The scanner onboards the gateway's
//! organisation as a tenant (`tenant add`) and the gateway applies the
//! tenant's kit: no partner connector is written by hand. It validates the scanner connector,
//! sends a clean and a sensitive message from an on-premises server
//! (127.0.0.20), prints each message's trace, and keeps running until Ctrl-C.

use super::Failure;
use crate::admin::{AdminBackend, TraceEventView, TraceQuery};
use crate::config::objects::ObjectSet;
use crate::config::{Config, NodeFile};
use crate::deliver::{Deliverer, DeliveryJob, DeliverySettings, JobRecipient, Outcome};
use crate::dns::{MxAnswer, StaticResolver};
use crate::message::{Address, BodyType, Domain, Notify, ReversePath};
use crate::route::{HostPort, NextHop, Route, TlsPolicy};
use crate::server::Node;
use crate::tenant::TenantRequest;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The organisation before onboarding: its domain and its own server. The
/// scanning partner's connectors and rule come from the scanner's kit.
const GATEWAY: &str = r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "From on-premises"
type = "on_premises"
comment = "The organisation's own mail server"
sender_ip_addresses = ["127.0.0.20/32"]
"#;

/// The scanner's `[partner]` settings: what its tenants' kits point at.
const PARTNER: &str = "[partner]\nsmtp_host = \"127.0.0.30:2525\"\negress_ips = [\"127.0.0.30/32\"]\n\
                       validation_address = \"check@scanner.partner.test\"\n";

const INTERNET: &str = r#"
[[accepted_domain]]
name = "fabrikam.test"
"#;

struct DemoNode {
    label: &'static str,
    node: Node,
    data_dir: PathBuf,
}

fn config(root: &Path, name: &str, hostname: &str, ip: &str, extra: &str) -> Result<Config, Failure> {
    let text = format!(
        "[node]\nhostname = \"{hostname}\"\ndata_dir = \"{name}\"\n\
         [smtp]\nlisten = [\"{ip}:2525\"]\n\
         [delivery]\nretry = [\"5s\", \"30s\"]\nbind_address = \"{ip}\"\nmx_port = 2525\n\
         [admin]\nlisten = \"{ip}:8025\"\n{extra}"
    );
    let file: NodeFile = toml::from_str(&text).map_err(|e| Failure::runtime(e.to_string()))?;
    file.validate(root).map_err(|e| Failure::runtime(e.to_string()))
}

fn resolver() -> Arc<StaticResolver> {
    let ip = |s: &str| -> Vec<IpAddr> { s.parse().map(|ip| vec![ip]).unwrap_or_default() };
    let mut table = StaticResolver::default();
    for (domain, host, address) in [
        ("contoso.test", "gw.contoso.test", "127.0.0.10"),
        ("scanner.partner.test", "scanner.partner.test", "127.0.0.30"),
        ("fabrikam.test", "mx.fabrikam.test", "127.0.0.50"),
    ] {
        table
            .mx
            .insert(domain.to_string(), MxAnswer::Hosts(vec![(10, host.to_string())]));
        table.hosts.insert(host.to_string(), ip(address));
    }
    Arc::new(table)
}

/// Runs the demo until Ctrl-C.
pub(crate) fn run() -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    runtime.block_on(demo())
}

async fn start(
    root: &Path,
    label: &'static str,
    hostname: &str,
    ip: &str,
    objects: &str,
    extra_config: &str,
) -> Result<DemoNode, Failure> {
    let config = config(root, label, hostname, ip, extra_config)?;
    let data_dir = config.data_dir.clone();
    let node = Node::start_with_resolver(config, resolver())
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
    println!("Nodes:");
    let gateway = start(&root, "gateway", "gw.contoso.test", "127.0.0.10", GATEWAY, "").await?;
    let scanner = start(
        &root,
        "scanner",
        "scanner.partner.test",
        "127.0.0.30",
        "",
        PARTNER,
    )
    .await?;
    let internet = start(&root, "internet", "mx.fabrikam.test", "127.0.0.50", INTERNET, "").await?;
    let nodes = [&gateway, &scanner, &internet];

    onboard(&gateway, &scanner).await?;

    println!("\nValidating the gateway's \"To scanner\" connector (seed step 16):");
    let report = gateway
        .node
        .management
        .validate_connector("To scanner".into(), Vec::new())
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    print!("{}", super::objects::validation_table(&report));

    println!("\nSending from the on-premises server (127.0.0.20) through the gateway:");
    let sender = on_premises_server(&root)?;
    let clean = "Subject: Lunch on Friday\r\nMessage-ID: <demo-clean@contoso.test>\r\nFrom: Alice <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\n\r\nShall we meet at noon?\r\n";
    let sensitive = "Subject: Payment details\r\nMessage-ID: <demo-sensitive@contoso.test>\r\nFrom: Alice <alice@contoso.test>\r\nTo: <bob@fabrikam.test>\r\n\r\nHere is the visa card for the order: 4556 7375 8689 9855, exp 12/29, cvv 123.\r\n";
    for (what, content) in [("clean", clean), ("sensitive", sensitive)] {
        let reply = submit(&sender, content).await;
        println!("  {what:<9} message: {reply}");
    }

    let done = wait_until(Duration::from_secs(20), || async {
        let delivered = count_files(&internet.data_dir.join("mailboxes/fabrikam.test/bob/new"));
        let held = scanner
            .node
            .management
            .quarantine()
            .await
            .map(|q| q.len())
            .unwrap_or(0);
        delivered >= 1 && held >= 1
    })
    .await;
    if !done {
        println!("\n(still in flight after 20 s; the traces below show how far each message got)");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (title, id) in [
        ("Clean message", "demo-clean@contoso.test"),
        ("Sensitive message", "demo-sensitive@contoso.test"),
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

fn on_premises_server(root: &Path) -> Result<Deliverer, Failure> {
    let mut settings = DeliverySettings::new("onprem.contoso.test", root.join("onprem"));
    settings.bind_address = "127.0.0.20".parse().ok();
    Deliverer::new(settings, resolver()).map_err(|e| Failure::runtime(e.to_string()))
}

async fn submit(sender: &Deliverer, content: &str) -> String {
    let job = DeliveryJob {
        route: Route::Connector {
            connector: "on-premises send connector".into(),
            next_hop: NextHop::SmartHosts(vec![HostPort {
                host: "127.0.0.10".into(),
                port: 2525,
            }]),
            tls: TlsPolicy::EncryptionOnly,
            helo_name: None,
            retain_internal_headers: false,
            max_message_size: None,
        },
        domain: Domain::parse("fabrikam.test").expect("a valid constant domain"),
        mail_from: Address::parse("alice@contoso.test").map_or(ReversePath::Null, ReversePath::Mailbox),
        recipients: vec![JobRecipient {
            address: Address::parse("bob@fabrikam.test").expect("a valid constant address"),
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
