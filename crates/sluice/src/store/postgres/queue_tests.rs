//! The queue of two nodes on one real PostgreSQL: what an attempt on one
//! node and an administrator (or the scheduler) on another do to the same
//! message at the same moment.

use super::scratch::ScratchPostgres;
use super::PostgresStore;
use crate::deliver::{DeliveryAttempt, DeliveryJob, Outcome};
use crate::message::{Address, EnvelopeRecipient, Notify, QueueId, Reply};
use crate::policy::Policy;
use crate::queue::{
    ActResult, DestinationSettings, Hold, Queue, QueueAction, QueueEntry, QueueSettings, QueuedRecipient,
    RecipientStatus, Spool, SpoolWrite, Transport,
};
use crate::store::Store;
use crate::trace::{now_ms, TraceEvent, TraceKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// The next hops: `ok.test` accepts, `later.test` answers 451, nobody
/// answers for `down.test` until `up` (its connections are counted).
/// While `gated`, every attempt waits at the gate after saying it started.
struct Peer {
    gated: AtomicBool,
    started: Semaphore,
    gate: Semaphore,
    delivered: Mutex<Vec<String>>,
    up: AtomicBool,
    down_connections: std::sync::atomic::AtomicUsize,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            gated: AtomicBool::new(false),
            started: Semaphore::new(0),
            gate: Semaphore::new(0),
            delivered: Mutex::new(Vec::new()),
            up: AtomicBool::new(false),
            down_connections: Default::default(),
        }
    }
}

impl Transport for Peer {
    fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
        Box::pin(async move {
            if self.gated.load(Ordering::SeqCst) {
                self.started.add_permits(1);
                self.gate.acquire().await.expect("gate open").forget();
            }
            let domain = job.domain.to_string();
            if domain == "down.test" {
                self.down_connections.fetch_add(1, Ordering::SeqCst);
            }
            let down = domain == "down.test" && !self.up.load(Ordering::SeqCst);
            let (host, outcome) = match domain.as_str() {
                _ if down => (
                    None,
                    Outcome::TempFail(Reply::new(451, [4, 4, 1], "connect: refused")),
                ),
                "later.test" => (
                    Some("127.0.0.9:25".to_string()),
                    Outcome::TempFail(Reply::new(451, [4, 3, 0], "try later")),
                ),
                _ => (
                    Some("127.0.0.9:25".to_string()),
                    Outcome::Delivered(Reply::new(250, [2, 0, 0], "ok")),
                ),
            };
            if matches!(outcome, Outcome::Delivered(_)) {
                let mut delivered = self.delivered.lock().unwrap();
                delivered.extend(job.recipients.iter().map(|r| r.address.to_string()));
            }
            DeliveryAttempt {
                host,
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes: job
                    .recipients
                    .iter()
                    .map(|r| (r.address.clone(), outcome.clone()))
                    .collect(),
            }
        })
    }
}

fn start(store: Arc<PostgresStore>, node: &str, peer: Arc<Peer>) -> Queue {
    start_with(store, node, peer, |_| {})
}

fn start_with(
    store: Arc<PostgresStore>,
    node: &str,
    peer: Arc<Peer>,
    tune: impl FnOnce(&mut QueueSettings),
) -> Queue {
    let (_keep, policy) = watch::channel(Arc::new(Policy::default()));
    std::mem::forget(_keep);
    let mut settings = QueueSettings {
        destinations: DestinationSettings {
            down_after: 1,
            probe_first: Duration::from_secs(3600),
            probe_max: Duration::from_secs(3600),
        },
        ..QueueSettings::new(
            node.into(),
            vec![Duration::from_secs(3600)],
            Duration::from_secs(86_400),
            4,
        )
    };
    tune(&mut settings);
    Queue::start(store, peer, settings, policy).unwrap()
}

/// A message to `to`, due now.
fn message(id: &str, to: &[&str]) -> QueueEntry {
    let now = now_ms();
    let mut entry = crate::store::conformance::entry(id);
    entry.received_at_ms = now;
    entry.expires_at_ms = now + 86_400_000;
    for address in to {
        let recipient = EnvelopeRecipient {
            address: Address::parse(address).unwrap(),
            notify: Notify::Never,
            orcpt: None,
        };
        entry
            .recipients
            .push(QueuedRecipient::new(&recipient, crate::route::Route::Mx, now));
    }
    entry
}

/// Waits up to 15 s for `done` to hold.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..150 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 15 s: {what}");
}

async fn started(peer: &Peer, attempts: u32) {
    tokio::time::timeout(Duration::from_secs(15), peer.started.acquire_many(attempts))
        .await
        .expect("the attempt started")
        .unwrap()
        .forget();
}

fn events_of(store: &PostgresStore, id: &str) -> Vec<TraceEvent> {
    store
        .trace_events(0)
        .unwrap()
        .into_iter()
        .filter(|event| event.queue_id.0 == id)
        .collect()
}

/// (kind, node) of each event, in order.
fn who_did_what(events: &[TraceEvent]) -> Vec<(&'static str, &str)> {
    events
        .iter()
        .map(|event| (event.kind.as_str(), event.node.as_deref().unwrap_or("?")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_or_delete_on_one_node_while_another_delivers_keeps_both_the_action_and_the_delivery() {
    let (_server, _, a, b) = super::tests::two_nodes();
    let peer = Arc::new(Peer::new());
    peer.gated.store(true, Ordering::SeqCst);
    let node_b = start(b.clone(), "b", peer.clone());

    // Held on a while b delivers one recipient and defers the other.
    let held = QueueId("m-held".into());
    node_b
        .enqueue(
            message(&held.0, &["r@ok.test", "s@later.test"]),
            b"Subject: x\r\n\r\nx\r\n".to_vec(),
            Vec::new(),
        )
        .await
        .unwrap();
    started(&peer, 2).await;
    // a starts once b holds the message: it would otherwise race b for it.
    let peer_a = Arc::new(Peer::new());
    peer_a.gated.store(true, Ordering::SeqCst);
    let node_a = start(a.clone(), "a", peer_a.clone());
    assert_eq!(
        node_a.act(&held, QueueAction::Hold).await.unwrap(),
        ActResult::Done
    );
    peer.gate.add_permits(2);
    until("b's outcome is recorded", || {
        a.entry(&held)
            .unwrap()
            .is_some_and(|entry| entry.recipients[0].attempts == 1)
    })
    .await;
    let entry = a.entry(&held).unwrap().unwrap();
    assert_eq!(entry.hold, Hold::Held, "the administrator's hold was overwritten");
    assert!(matches!(
        entry.recipients[0].status,
        RecipientStatus::Delivered { .. }
    ));
    assert!(matches!(
        entry.recipients[1].status,
        RecipientStatus::Deferred { .. }
    ));
    assert!(a.leased().unwrap().is_empty(), "the outcome ended b's lease");
    let events = events_of(&a, &held.0);
    let mut seen = who_did_what(&events);
    seen.sort();
    assert_eq!(seen, [("deferred", "b"), ("delivered", "b"), ("held", "a")]);

    // Deleted on one node while the other delivers (whichever claimed it
    // first): the deletion stands, the delivery is in the trace.
    let deleted = QueueId("m-deleted".into());
    node_b
        .enqueue(
            message(&deleted.0, &["t@ok.test"]),
            b"Subject: y\r\n\r\ny\r\n".to_vec(),
            Vec::new(),
        )
        .await
        .unwrap();
    let attempting = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::select! {
            permit = peer.started.acquire() => { permit.unwrap().forget(); "b" }
            permit = peer_a.started.acquire() => { permit.unwrap().forget(); "a" }
        }
    })
    .await
    .expect("an attempt started");
    let (acting, other) = match attempting {
        "b" => (&node_a, "a"),
        _ => (&node_b, "b"),
    };
    assert_eq!(
        acting.act(&deleted, QueueAction::Delete).await.unwrap(),
        ActResult::Done
    );
    peer.gate.add_permits(1);
    peer_a.gate.add_permits(1);
    until("the delivery is traced", || {
        events_of(&a, &deleted.0)
            .iter()
            .any(|e| e.kind == TraceKind::Delivered)
    })
    .await;
    assert_eq!(
        a.entry(&deleted).unwrap(),
        None,
        "the outcome brought a deleted message back"
    );
    assert_eq!(
        who_did_what(&events_of(&a, &deleted.0)),
        [("deleted", other), ("delivered", attempting)]
    );
    // Nothing is delivered twice: the held message waits, the deleted one is gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delivered = peer.delivered.lock().unwrap().clone();
    delivered.extend(peer_a.delivered.lock().unwrap().iter().cloned());
    delivered.sort();
    assert_eq!(delivered, ["r@ok.test", "t@ok.test"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_message_of_a_down_destination_is_bounced_only_under_a_claim() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let b = PostgresStore::connect(&url, "b").unwrap();
    let other = PostgresStore::connect(&url, "other").unwrap();
    let peer = Arc::new(Peer::new());
    let node_b = start(b.clone(), "b", peer.clone());
    // down.test stops answering: b's first attempt marks it down.
    let first = QueueId("m-first".into());
    node_b
        .enqueue(message(&first.0, &["r@down.test"]), b"x".to_vec(), Vec::new())
        .await
        .unwrap();
    until("down.test is found down", || {
        events_of(&b, &first.0)
            .iter()
            .any(|e| e.kind == TraceKind::Deferred)
    })
    .await;

    // Another node holds an expired message for down.test.
    let expired = QueueId("m-expired".into());
    let mut entry = message(&expired.0, &["s@down.test"]);
    entry.hold = Hold::Held;
    other
        .commit_spool(vec![SpoolWrite::Enqueue(entry.clone(), b"x".to_vec())])
        .await
        .unwrap();
    let client = super::tests::connect(&url).await;
    client
        .execute(
            "UPDATE spool_message SET lease_owner = 'other', lease_expires_at_ms = 9000000000000 WHERE id = $1",
            &[&expired.0],
        )
        .await
        .unwrap();
    entry.hold = Hold::Active;
    entry.expires_at_ms = now_ms() - 1000;
    other
        .commit_spool(vec![SpoolWrite::Update(entry.clone())])
        .await
        .unwrap();
    // b hears of it, finds its destination down and parks it: expired, it
    // would be bounced, but the claim is the other node's.
    let note = serde_json::json!({
        "node": "other",
        "due": [[now_ms() - 1000, expired.0, ["mx:down.test"]]],
    });
    client
        .execute("SELECT pg_notify('queue', $1)", &[&note.to_string()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.entry(&expired).unwrap().is_some(),
        "b bounced a message it did not hold"
    );
    assert!(events_of(&b, &expired.0).is_empty());

    // The other node gives it up: b's next rescan claims it and bounces it.
    client
        .execute(
            "UPDATE spool_message SET lease_owner = NULL, lease_expires_at_ms = NULL WHERE id = $1",
            &[&expired.0],
        )
        .await
        .unwrap();
    until("b bounces the expired message", || {
        b.entry(&expired).unwrap().is_none()
    })
    .await;
    assert_eq!(who_did_what(&events_of(&b, &expired.0)), [("expired", "b")]);
    assert!(peer.delivered.lock().unwrap().is_empty());
    drop(node_b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_lost_its_claim_while_waiting_never_starts_the_delivery() {
    let (_server, url, a, b) = super::tests::two_nodes();
    let peer = Arc::new(Peer::new());
    peer.gated.store(true, Ordering::SeqCst);
    // One message in memory at a time, and claims renewed every third of a second.
    let node_b = start_with(b.clone(), "b", peer.clone(), |settings| {
        settings.delivery_memory = crate::queue::ContentMemory::new(1);
        settings.lease = Duration::from_secs(1);
    });
    let first = QueueId("m-first".into());
    node_b
        .enqueue(message(&first.0, &["r@ok.test"]), b"x".to_vec(), Vec::new())
        .await
        .unwrap();
    started(&peer, 1).await;
    // The second waits for memory under b's claim...
    let second = QueueId("m-second".into());
    node_b
        .enqueue(message(&second.0, &["s@ok.test"]), b"y".to_vec(), Vec::new())
        .await
        .unwrap();
    until("b claims the second message", || {
        a.leased().unwrap() == [("b".to_string(), 2)]
    })
    .await;
    // ...until b stalls past its lease there and a takes the message over.
    let client = super::tests::connect(&url).await;
    client
        .execute(
            "UPDATE spool_message SET lease_expires_at_ms = 0 WHERE id = $1",
            &[&second.0],
        )
        .await
        .unwrap();
    let lease = crate::queue::Lease {
        owner: "a".into(),
        for_ms: 600_000,
    };
    assert_eq!(a.claim(std::slice::from_ref(&second), &lease).unwrap().len(), 1);
    // b's next renewal finds the claim gone; the memory is freed after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    peer.gate.add_permits(2);
    until("the first message is delivered", || {
        a.entry(&first).unwrap().is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        *peer.delivered.lock().unwrap(),
        ["r@ok.test"],
        "b delivered a message a holds"
    );
    assert!(a.entry(&second).unwrap().is_some());
    assert_eq!(a.leased().unwrap(), [("a".to_string(), 1)]);
}

/// Sum of the revisions of every queued message: moves with each write.
async fn revisions(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum(revision), 0)::bigint FROM spool_message",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_destinations_mail_is_parked_once_failed_probes_write_no_parked_message_and_a_new_node_resumes_it(
) {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let a = PostgresStore::connect(&url, "a").unwrap();
    let peer = Arc::new(Peer::new());
    let probing = |s: &mut QueueSettings| {
        s.destinations = DestinationSettings {
            down_after: 1,
            probe_first: Duration::from_secs(1),
            probe_max: Duration::from_secs(2),
        };
        s.park_recheck = (Duration::from_secs(3600), Duration::from_secs(3600));
    };
    let node_a = start_with(a.clone(), "a", peer.clone(), probing);
    let ids: Vec<QueueId> = (0..30).map(|n| QueueId(format!("m-{n:02}"))).collect();
    for id in &ids {
        node_a
            .enqueue(message(&id.0, &["r@down.test"]), b"x".to_vec(), Vec::new())
            .await
            .unwrap();
    }
    let parked = |store: &PostgresStore| {
        ids.iter().all(|id| {
            store
                .entry(id)
                .unwrap()
                .is_some_and(|e| e.recipients[0].status.is_parked())
        })
    };
    until("every message is parked", || parked(&a)).await;
    assert_eq!(
        a.parked_destinations().unwrap(),
        [("mx:down.test".to_string(), 30)]
    );
    // Probes every 2 s for 7 s: each failed one writes its own message, no other.
    let client = super::tests::connect(&url).await;
    let (written, connections) = (
        revisions(&client).await,
        peer.down_connections.load(Ordering::SeqCst),
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    let probes = peer.down_connections.load(Ordering::SeqCst) - connections;
    let writes = revisions(&client).await - written;
    assert!((2..=6).contains(&probes), "{probes} probes in 7 s");
    assert!(
        writes <= probes as i64,
        "{writes} message writes for {probes} failed probes"
    );
    assert!(parked(&a));
    // A node that starts finds the destination down in the spool: it
    // probes, it does not attempt the messages one by one.
    let b = PostgresStore::connect(&url, "b").unwrap();
    let connections = peer.down_connections.load(Ordering::SeqCst);
    let node_b = start_with(b.clone(), "b", peer.clone(), probing);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = peer.down_connections.load(Ordering::SeqCst) - connections;
    assert!(probes <= 6, "{probes} connections in 3 s with a new node");
    assert!(parked(&b));
    // It answers: the next probe (of either node) delivers, and the rest
    // follows within seconds.
    peer.up.store(true, Ordering::SeqCst);
    until("every parked message is delivered", || {
        ids.iter().all(|id| b.entry(id).unwrap().is_none())
    })
    .await;
    let delivered = peer.delivered.lock().unwrap().len();
    assert!(delivered >= 30, "{delivered} delivered");
    assert!(b.parked_destinations().unwrap().is_empty());
    drop((node_a, node_b));
}
