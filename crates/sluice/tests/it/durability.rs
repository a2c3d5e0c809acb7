//! "Accepted" means durable: kill -9 the node while several clients are
//! sending, restart it on the same data_dir, and every message that got a
//! 250 after DATA is delivered. Net 60.

use crate::support::{wait_until, Net, Node, NodeOptions, RawSmtp, Sink};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: u8 = 1;
const SMART_HOST: u8 = 21;
const CLIENTS: usize = 6;
const MAX_PER_CLIENT: usize = 400;

#[test]
fn every_acknowledged_message_survives_kill_9() {
    let net = Net(60);
    // The smart host waits a second before answering DATA, so deliveries
    // lag behind acceptance and the kill finds mail still queued.
    let sink = Sink::start_with(net.ip(SMART_HOST), &["-w", "1"]);
    // internal_relay + a connector for the domain: anonymous clients may
    // send to it and everything goes to the sink, no relay rights needed.
    let mut node = Node::start(NodeOptions::new(
        net.ip(NODE),
        &format!(
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
        ),
    ));

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let smtp = node.smtp;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let acknowledged = Arc::clone(&acknowledged);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for n in 0..MAX_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let subject = format!("durability {client}-{n}");
                    let content = format!(
                        "From: <load@fabrikam.test>\r\nTo: <bob@contoso.test>\r\n\
                         Subject: {subject}\r\nMessage-ID: <{client}.{n}@durability.test>\r\n\r\n\
                         payload {}",
                        "x".repeat(2000)
                    );
                    let Ok((mut session, _)) = RawSmtp::connect(smtp) else {
                        return;
                    };
                    match session.send_message("load@fabrikam.test", &["bob@contoso.test"], &content) {
                        Ok(reply) if reply.code == 250 => {
                            acknowledged.lock().expect("lock").push(subject);
                            let _ = session.command("QUIT");
                        }
                        // A refusal is fine (not acknowledged); a broken
                        // connection means the node died: stop this client.
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    // Kill once enough mail is in flight, both queued and being delivered.
    let started = Instant::now();
    let busy = wait_until(Duration::from_secs(60), || {
        acknowledged.lock().expect("lock").len() >= 80
    });
    assert!(busy, "clients got too few 250s to make the test meaningful");
    node.kill9();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let acknowledged: BTreeSet<String> = acknowledged.lock().expect("lock").iter().cloned().collect();
    let before_restart = sink.count();
    assert!(
        before_restart < acknowledged.len(),
        "everything was delivered before the kill ({before_restart}); the test proved nothing"
    );

    node.restart();
    let all_there = wait_until(Duration::from_secs(90), || {
        sink.count() >= acknowledged.len() && subjects(&sink).is_superset(&acknowledged)
    });
    let delivered = subjects(&sink);
    let missing: Vec<&String> = acknowledged.difference(&delivered).collect();
    assert!(
        all_there && missing.is_empty(),
        "{} of {} acknowledged messages lost after kill -9 at {killed_after:?} \
         ({before_restart} delivered before the kill): {:?}",
        missing.len(),
        acknowledged.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!(
        "durability: {} acknowledged, {} at the sink ({} before restart), killed after {killed_after:?}",
        acknowledged.len(),
        sink.count(),
        before_restart
    );
}

fn subjects(sink: &Sink) -> BTreeSet<String> {
    sink.messages()
        .iter()
        .filter_map(|m| m.header("subject"))
        .collect()
}
