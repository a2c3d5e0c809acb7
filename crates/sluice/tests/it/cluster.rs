//! Several nodes on one PostgreSQL store (SPEC section 8): objects changed
//! through one node are in force on the others within 2 s, every node
//! lists the whole cluster, any node delivers what any node accepted, a
//! node killed under load loses nothing (its work is taken over when its
//! leases lapse), and a database restart under load loses nothing
//! acknowledged.

use crate::support::postgres::{store_toml, store_toml_with_lease, ScratchPostgres};
use crate::support::{pause, wait_until, Net, Node, NodeOptions, RawSmtp, Sink};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NET: Net = Net(231);

fn cluster_node(server: &ScratchPostgres, host: u8, name: &str, objects: &str) -> Node {
    let mut options = NodeOptions::new(NET.ip(host), objects);
    options.hostname = name.to_string();
    options.extra_toml = store_toml(server, "sluice");
    Node::start(options)
}

/// The reply to RCPT TO:<rcpt> in a fresh session.
fn rcpt_reply(node: &Node, rcpt: &str) -> u16 {
    let (mut client, greeting) = RawSmtp::connect(node.smtp).expect("connect");
    assert_eq!(greeting.code, 220);
    assert_eq!(client.command("EHLO client.test").expect("EHLO").code, 250);
    assert_eq!(
        client
            .command("MAIL FROM:<someone@outside.test>")
            .expect("MAIL")
            .code,
        250
    );
    let code = client.command(&format!("RCPT TO:<{rcpt}>")).expect("RCPT").code;
    let _ = client.command("QUIT");
    code
}

#[test]
fn an_object_applied_on_one_node_is_in_force_on_the_other_within_two_seconds() {
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    let a = cluster_node(
        &server,
        1,
        "gw1.cluster.test",
        "[[accepted_domain]]\nname = \"contoso.test\"\ntype = \"authoritative\"\n",
    );
    let b = cluster_node(&server, 2, "gw2.cluster.test", "");

    // B never had the objects applied to it: it uses what A stored.
    assert_eq!(rcpt_reply(&b, "alice@contoso.test"), 250);
    assert_eq!(rcpt_reply(&b, "bob@fabrikam.test"), 550, "not yet accepted");

    a.cli_ok(&["domain", "add", "fabrikam.test"]);
    let applied = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || rcpt_reply(&b, "bob@fabrikam.test")
            == 250),
        "B still refuses the new domain {:?} after A applied it\n{}",
        applied.elapsed(),
        b.log()
    );

    // A DKIM key made on A is in B's keyring (which signs B's mail)
    // without a restart.
    a.cli_ok(&["dkim", "new", "contoso.test"]);
    let made = Instant::now();
    assert!(
        wait_until(Duration::from_secs(2), || b
            .cli_ok(&["dkim", "list", "--json"])
            .contains("selector1._domainkey.contoso.test")),
        "B does not list A's new key {:?} after it was made",
        made.elapsed()
    );

    // A message accepted by A is in the trace B reads.
    let (mut client, _) = RawSmtp::connect(a.smtp).expect("connect");
    let reply = client
        .send_message(
            "someone@outside.test",
            &["alice@contoso.test"],
            "From: someone@outside.test\r\nTo: alice@contoso.test\r\nMessage-ID: <shared@outside.test>\r\nSubject: hi\r\n\r\nbody",
        )
        .expect("transaction");
    assert_eq!(reply.code, 250, "{}", reply.text);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let events = b.trace(&["--message-id", "shared@outside.test"]);
            let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
            kinds.contains(&"received") && kinds.contains(&"delivered")
        }),
        "B's trace lacks A's message: {:?}",
        b.trace(&["--message-id", "shared@outside.test"])
    );

    // Both list both, each marking itself.
    for (node, me) in [(&a, "gw1.cluster.test"), (&b, "gw2.cluster.test")] {
        let nodes = node.cli_json(&["node", "list", "--json"]);
        let nodes = nodes.as_array().expect("a list");
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["gw1.cluster.test", "gw2.cluster.test"]);
        for n in nodes {
            assert_eq!(n["this_node"].as_bool(), Some(n["name"] == me));
            assert!(n["heartbeat_age_ms"].as_u64().unwrap() < 30_000);
            assert_eq!(n["leased"].as_u64(), Some(0));
            assert!(!n["smtp"].as_array().unwrap().is_empty());
        }
        assert_eq!(nodes[1]["smtp"][0].as_str(), Some(b.smtp.to_string().as_str()));
        assert_eq!(nodes[0]["admin"].as_str(), Some(a.admin.to_string().as_str()));
        let table = node.cli_ok(&["node", "list"]);
        assert!(table.contains(&format!("{me} *")), "{table}");
    }
}

#[test]
fn node_list_on_the_embedded_store_shows_this_node_alone() {
    let net = Net(232);
    let mut options = NodeOptions::new(net.ip(1), "");
    options.hostname = "solo.contoso.test".to_string();
    let node = Node::start(options);
    let nodes = node.cli_json(&["node", "list", "--json"]);
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["name"].as_str(), Some("solo.contoso.test"));
    assert_eq!(nodes[0]["this_node"].as_bool(), Some(true));
    assert_eq!(nodes[0]["smtp"][0].as_str(), Some(node.smtp.to_string().as_str()));
    assert_eq!(nodes[0]["admin"].as_str(), Some(node.admin.to_string().as_str()));
}

/// A whole transaction to alice@contoso.test; the reply to the final dot.
fn send(node: &Node, subject: &str) -> (u16, String) {
    let (mut client, _) = RawSmtp::connect(node.smtp).expect("connect");
    let reply = client
        .send_message(
            "someone@outside.test",
            &["alice@contoso.test"],
            &format!(
                "From: someone@outside.test\r\nTo: alice@contoso.test\r\nSubject: {subject}\r\n\r\nbody"
            ),
        )
        .expect("transaction");
    let _ = client.command("QUIT");
    (reply.code, reply.text)
}

fn subjects(node: &Node) -> Vec<String> {
    node.mailbox("contoso.test", "alice")
        .iter()
        .filter_map(|message| {
            String::from_utf8_lossy(message)
                .lines()
                .find_map(|line| line.strip_prefix("Subject: ").map(String::from))
        })
        .collect()
}

#[test]
fn a_node_whose_database_is_away_never_says_250_and_resumes_when_it_returns() {
    let net = Net(233);
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    let mut options = NodeOptions::new(
        net.ip(1),
        "[[accepted_domain]]\nname = \"contoso.test\"\ntype = \"authoritative\"\n",
    );
    options.extra_toml = store_toml(&server, "sluice");
    let node = Node::start(options);

    assert_eq!(send(&node, "before").0, 250);
    assert!(wait_until(Duration::from_secs(20), || subjects(&node) == ["before"]));

    server.stop().expect("stop PostgreSQL");
    let (code, text) = send(&node, "while away");
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.3.0"), "{text}");

    server.start_again().expect("start PostgreSQL again");
    assert!(
        wait_until(Duration::from_secs(30), || send(&node, "after").0 == 250),
        "the node does not accept again\n{}",
        node.log()
    );
    assert!(wait_until(Duration::from_secs(20), || subjects(&node).len() >= 2));
    let got = subjects(&node);
    assert!(got.contains(&"after".to_string()), "{got:?}");
    assert!(!got.contains(&"while away".to_string()), "{got:?}");
}

/// Objects that send everything for contoso.test to `sink`.
fn relay_objects(sink: &Sink) -> String {
    format!(
        r#"
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

[[outbound_connector]]
name = "Hybrid"
recipient_domains = ["contoso.test"]
smart_hosts = ["{}"]
"#,
        sink.addr
    )
}

/// A node of a cluster whose leases lapse after 10 s (long enough that a
/// busy test machine still renews them in time), delivering from its own address.
fn leased_node(server: &ScratchPostgres, net: Net, host: u8, objects: &str) -> Node {
    let mut options = NodeOptions::new(net.ip(host), objects);
    options.hostname = format!("gw{host}.cluster.test");
    options.bind_address = Some(net.ip(host));
    options.extra_toml = store_toml_with_lease(server, "sluice", "10s");
    Node::start(options)
}

/// Clients sending to nodes until stopped, each message with its own
/// Message-ID; what got 250 is acknowledged, and each reply that was
/// neither 250 nor a broken connection is refused.
struct Load {
    acknowledged: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` clients to each node, their Message-IDs tagged per node.
    fn start(nodes: &[(SocketAddr, &'static str)], clients: usize) -> Load {
        let mut load = Load {
            acknowledged: Arc::default(),
            refused: Arc::default(),
            stop: Arc::default(),
            clients: Vec::new(),
        };
        for &(smtp, tag) in nodes {
            for client in 0..clients {
                let thread = load.client(smtp, format!("{tag}.{client}"));
                load.clients.push(thread);
            }
        }
        load
    }

    fn client(&self, smtp: SocketAddr, tag: String) -> std::thread::JoinHandle<()> {
        let acknowledged = self.acknowledged.clone();
        let refused = self.refused.clone();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            for n in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let id = format!("{tag}.{n}@cluster.test");
                let content = format!(
                    "From: <load@fabrikam.test>\r\nTo: <bob@contoso.test>\r\n\
                     Subject: {id}\r\nMessage-ID: <{id}>\r\n\r\npayload {}",
                    "x".repeat(2000)
                );
                let Ok((mut session, _)) = RawSmtp::connect(smtp) else {
                    pause(Duration::from_millis(100));
                    continue;
                };
                match session.send_message("load@fabrikam.test", &["bob@contoso.test"], &content) {
                    Ok(reply) if reply.code == 250 => {
                        acknowledged.lock().expect("lock").push(id);
                        let _ = session.command("QUIT");
                    }
                    Ok(reply) => {
                        refused
                            .lock()
                            .expect("lock")
                            .push(format!("{} {}", reply.code, reply.text));
                        pause(Duration::from_millis(50));
                    }
                    // The node died: this client stops.
                    Err(_) => return,
                }
            }
        })
    }

    /// How many acknowledged Message-IDs start with `prefix`.
    fn acknowledged_with(&self, prefix: &str) -> usize {
        let acknowledged = self.acknowledged.lock().expect("lock");
        acknowledged.iter().filter(|id| id.starts_with(prefix)).count()
    }

    /// Stops the clients; returns what was acknowledged and refused.
    fn finish(self) -> (BTreeSet<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.join().expect("client thread");
        }
        let acknowledged = self.acknowledged.lock().expect("lock").iter().cloned().collect();
        let refused = self.refused.lock().expect("lock").clone();
        (acknowledged, refused)
    }
}

/// Per Message-ID, how often the sink got it and from which addresses.
/// Waits up to `timeout` for every acknowledged Message-ID to reach the
/// sink: what the sink holds then, and the acknowledged ids it lacks.
fn wait_for_deliveries(
    sink: &Sink,
    acknowledged: &BTreeSet<String>,
    timeout: Duration,
) -> (BTreeMap<String, Vec<Ipv4Addr>>, Vec<String>) {
    wait_until(timeout, || {
        let seen = sink_deliveries(sink);
        acknowledged.iter().all(|id| seen.contains_key(id))
    });
    let seen = sink_deliveries(sink);
    let missing = acknowledged
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .cloned()
        .collect();
    (seen, missing)
}

fn sink_deliveries(sink: &Sink) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut seen: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for entry in std::fs::read_dir(sink.dump_dir()).expect("sink dumps").flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        // A dump is complete once smtp-sink appended the empty line after ".".
        if !text.ends_with("\n\n") {
            continue;
        }
        let Some(id) = text
            .lines()
            .find_map(|line| line.strip_prefix("Message-ID: <"))
            .and_then(|rest| rest.strip_suffix('>'))
        else {
            continue;
        };
        let client = text
            .lines()
            .find(|line| line.starts_with("Received: ") && line.contains("(["))
            .and_then(|line| line.split("([").nth(1))
            .and_then(|rest| rest.split(']').next())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        seen.entry(id.to_string()).or_default().push(client);
    }
    seen
}

#[test]
fn three_nodes_share_one_queue_and_a_node_killed_under_load_loses_nothing() {
    let net = Net(241);
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    // The smart host waits a second before answering DATA, so deliveries
    // are in flight when a node dies.
    let sink = Sink::start_with(net.ip(21), &["-w", "1"]);
    // Only A is told the objects; B and C use what A stored.
    let a = leased_node(&server, net, 1, &relay_objects(&sink));
    let mut b = leased_node(&server, net, 2, "");
    let c = leased_node(&server, net, 3, "");

    let load = Load::start(&[(a.smtp, "a"), (b.smtp, "b")], 4);

    let busy = wait_until(Duration::from_secs(60), || load.acknowledged_with("b.") >= 100);
    assert!(
        busy,
        "B got too few 250s to make the test meaningful\n{}",
        b.log()
    );
    // Deliveries take a second at the sink: the nodes hold work under leases.
    let leased_before_kill = c.cli_json(&["node", "list", "--json"]);
    let leased_by = |name: &str| {
        leased_before_kill
            .as_array()
            .expect("a list")
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["leased"].as_u64())
            .unwrap_or(0)
    };
    // B dies holding work: its deliveries take a second at the sink.
    assert!(
        leased_by("gw2.cluster.test") > 0,
        "B holds no leased work at the kill: the test would prove nothing: {leased_before_kill}"
    );
    b.kill9();
    let killed = Instant::now();
    // A goes on taking mail while B's work waits for its leases to lapse.
    pause(Duration::from_secs(2));
    let (acknowledged, _) = load.finish();
    let from_b = acknowledged.iter().filter(|id| id.starts_with("b.")).count();
    let (seen, missing) = wait_for_deliveries(&sink, &acknowledged, Duration::from_secs(90));
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never delivered (B killed {:?} ago): {:?}\nA: {}\nC: {}",
        missing.len(),
        acknowledged.len(),
        killed.elapsed(),
        missing.iter().take(5).collect::<Vec<_>>(),
        a.log(),
        c.log()
    );
    // At least once, at most twice (SPEC section 8: at-least-once). The
    // second delivery is expected for work B was delivering when it died
    // (the sink had it, B's outcome never reached the database); the
    // others are counted and printed (docs/cluster.md, "Not done yet").
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, by)| by.len() == 2)
        .map(|(id, _)| id)
        .collect();
    let more: Vec<(&String, &Vec<Ipv4Addr>)> = seen.iter().filter(|(_, by)| by.len() > 2).collect();
    assert!(more.is_empty(), "delivered more than twice: {more:?}");
    let not_b: Vec<(&String, &Vec<Ipv4Addr>)> = twice
        .iter()
        .map(|id| (*id, &seen[*id]))
        .filter(|(_, by)| !by.contains(&net.ip(2)))
        .collect();
    if !not_b.is_empty() {
        eprintln!("cluster: delivered twice without the killed node: {not_b:?}");
    }
    // Renewals and every node's writer lock rows in one order: a deadlock
    // aborts one of them, and when it was a writer's, every outcome of its
    // batch was lost and attempted again (duplicates from a live node).
    let deadlocks = server.log().matches("deadlock detected").count();
    assert_eq!(deadlocks, 0, "{}", server.log());
    let by_node = |host: u8| seen.values().flatten().filter(|ip| **ip == net.ip(host)).count();
    // C took none of the SMTP load, yet delivered: new mail of A and B,
    // and B's work once its leases lapsed.
    assert!(by_node(3) > 0, "C delivered nothing: {leased_before_kill}");
    eprintln!(
        "cluster: {} acknowledged ({from_b} by B), {} duplicates; delivered by A {}, B {}, C {}",
        acknowledged.len(),
        twice.len(),
        by_node(1),
        by_node(2),
        by_node(3)
    );

    // One view: C shows an empty queue, B's mail in its trace with one
    // timeline, and every node of the cluster.
    assert!(
        c.wait_for_empty_queue(Duration::from_secs(30)),
        "{:?}",
        c.queue_json()
    );
    let of_b = acknowledged.iter().find(|id| id.starts_with("b.")).unwrap();
    let events = c.trace(&["--message-id", of_b]);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(
        kinds.contains(&"received") && kinds.contains(&"delivered"),
        "{events:?}"
    );
    // The timeline names who did what: a message only C delivered was
    // accepted by A or B (C took no SMTP load).
    let (by_c, _) = seen
        .iter()
        .find(|(_, by)| by.as_slice() == [net.ip(3)])
        .expect("C delivered");
    let events = a.trace(&["--message-id", by_c]);
    let nodes_of = |kind: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .filter_map(|e| e["node"].as_str())
            .collect()
    };
    let accepted_by = match by_c.starts_with("a.") {
        true => "gw1.cluster.test",
        false => "gw2.cluster.test",
    };
    assert_eq!(nodes_of("received"), [accepted_by], "{events:?}");
    assert_eq!(nodes_of("delivered"), ["gw3.cluster.test"], "{events:?}");
    let text = a.cli_ok(&["trace", "--message-id", by_c]);
    assert!(
        text.contains(&format!("node={accepted_by}")) && text.contains("node=gw3.cluster.test"),
        "{text}"
    );
    let nodes = c.cli_json(&["node", "list", "--json"]);
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["gw1.cluster.test", "gw2.cluster.test", "gw3.cluster.test"]
    );
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["leased"].as_u64() == Some(0)));
}

#[test]
fn a_database_restart_under_load_loses_nothing_acknowledged() {
    let net = Net(242);
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    let sink = Sink::start(net.ip(21));
    let a = leased_node(&server, net, 1, &relay_objects(&sink));
    let b = leased_node(&server, net, 2, "");

    let load = Load::start(&[(a.smtp, "a"), (b.smtp, "b")], 3);
    assert!(wait_until(Duration::from_secs(60), || load.acknowledged_with("") >= 100));
    server.stop().expect("stop PostgreSQL");
    pause(Duration::from_secs(3));
    server.start_again().expect("start PostgreSQL again");
    let restarted = load.acknowledged_with("");
    assert!(
        wait_until(Duration::from_secs(30), || load.acknowledged_with("")
            >= restarted + 100),
        "the nodes do not accept again\nA: {}\nB: {}",
        a.log(),
        b.log()
    );
    let (acknowledged, refused) = load.finish();
    assert!(!refused.is_empty(), "no client saw the database away");
    assert!(
        refused
            .iter()
            .all(|reply| reply.starts_with("451") && reply.contains("4.3.0")),
        "{refused:?}"
    );
    let (_, missing) = wait_for_deliveries(&sink, &acknowledged, Duration::from_secs(60));
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost across the database restart: {:?}\nA: {}",
        missing.len(),
        acknowledged.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        a.log()
    );
    eprintln!(
        "database restart: {} acknowledged, {} refused while away",
        acknowledged.len(),
        refused.len()
    );
}

#[test]
fn any_node_shows_and_acts_on_the_whole_clusters_queue_and_quarantine() {
    let net = Net(243);
    let server = ScratchPostgres::start().expect("scratch PostgreSQL");
    server.create_database("sluice").unwrap();
    let sink = Sink::start(net.ip(21));
    let dead = format!("{}:{}", net.ip(26), crate::support::free_port(net.ip(26)));
    let objects = format!(
        r#"{}
[[accepted_domain]]
name = "legacy.test"
type = "internal_relay"

[[outbound_connector]]
name = "Legacy"
recipient_domains = ["legacy.test"]
smart_hosts = ["{dead}"]

[[rule]]
name = "Hold invoices"
[rule.conditions]
subject_or_body_contains = ["invoice"]
[rule.actions]
quarantine = true
"#,
        relay_objects(&sink)
    );
    let a = leased_node(&server, net, 1, &objects);
    let b = leased_node(&server, net, 2, "");
    let send_to = |node: &Node, to: &str, subject: &str| {
        let (mut client, _) = RawSmtp::connect(node.smtp).expect("connect");
        let reply = client
            .send_message(
                "someone@fabrikam.test",
                &[to],
                &format!("From: someone@fabrikam.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody"),
            )
            .expect("transaction");
        assert_eq!(reply.code, 250, "{}", reply.text);
    };

    // Accepted by A for a host that does not answer: B lists it, deferred.
    send_to(&a, "old@legacy.test", "stuck");
    assert!(
        wait_until(Duration::from_secs(20), || b
            .queue_json()
            .iter()
            .any(|e| e["status"] == "deferred")),
        "B does not list A's deferred message: {:?}\n{}",
        b.queue_json(),
        a.log()
    );
    let id = b.queue_json()[0]["id"].as_str().expect("queue id").to_string();
    let shown = b.cli_json(&["queue", "show", &id, "--json"]);
    assert_eq!(shown["id"].as_str(), Some(id.as_str()));
    let summary = b.cli_ok(&["queue", "summary"]);
    assert!(summary.contains("legacy.test"), "{summary}");
    // Held through B: A sees it held, and retry --all leaves it so; once
    // released, retry --all through A retries it.
    b.cli_ok(&["queue", "hold", &id]);
    assert_eq!(a.queue_json()[0]["status"], "held", "{:?}", a.queue_json());
    let all = a.cli_ok(&["queue", "retry", "--all"]);
    assert!(
        all.contains("0 entries due for retry now; 1 held left held"),
        "{all}"
    );
    b.cli_ok(&["queue", "release", &id]);
    let all = a.cli_ok(&["queue", "retry", "--all"]);
    assert!(all.contains("1 entries due for retry now"), "{all}");
    // Deleted through B: gone from A's view too.
    b.cli_ok(&["queue", "delete", &id]);
    assert!(a.queue_json().is_empty(), "{:?}", a.queue_json());

    // Quarantined by A's rule on B's intake, released through A, delivered.
    send_to(&b, "bob@contoso.test", "invoice 42");
    let held = a.cli_json(&["quarantine", "list", "--json"]);
    let held = held.as_array().expect("a list");
    assert_eq!(held.len(), 1, "{held:?}");
    let held_id = held[0]["id"].as_str().expect("held id").to_string();
    a.cli_ok(&["quarantine", "release", &held_id]);
    assert!(
        wait_until(Duration::from_secs(20), || sink_deliveries_by_subject(
            &sink,
            "invoice 42"
        )),
        "the released message never reached the sink\nA: {}\nB: {}",
        a.log(),
        b.log()
    );
    assert!(b
        .cli_json(&["quarantine", "list", "--json"])
        .as_array()
        .is_some_and(|list| list.is_empty()));
}

fn sink_deliveries_by_subject(sink: &Sink, subject: &str) -> bool {
    sink.messages()
        .iter()
        .any(|m| m.header("subject").as_deref() == Some(subject))
}
