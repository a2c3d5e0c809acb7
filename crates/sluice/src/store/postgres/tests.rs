//! The PostgreSQL backend against a real server of its own (see
//! [`scratch`](super::scratch)). What every backend shares is tested in
//! `store::conformance`.

use super::scratch::ScratchPostgres;
use super::spool::{self, Claim};
use super::*;
use crate::config::objects::{AcceptedDomain, AcceptedDomainType};
use std::collections::BTreeSet;

pub(super) async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn migrations_apply_once_and_a_second_start_changes_nothing() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let first = PostgresStore::connect(&url, "a").unwrap();
    assert_eq!(first.schema_version().unwrap(), MIGRATIONS.len() as i32);
    first
        .commit(vec![Write::Trace(vec![crate::trace::TraceEvent {
            at_ms: 7,
            queue_id: QueueId("x".into()),
            message_id: None,
            kind: crate::trace::TraceKind::Received,
            from: String::new(),
            to: None,
            connector: None,
            remote_host: None,
            detail: None,
            node: None,
        }])])
        .await
        .unwrap();
    // Two more nodes start at once on the same database.
    let (b, c) = std::thread::scope(|scope| {
        let b = scope.spawn(|| PostgresStore::connect(&url, "b"));
        let c = scope.spawn(|| PostgresStore::connect(&url, "c"));
        (b.join().unwrap(), c.join().unwrap())
    });
    let (b, _c) = (b.unwrap(), c.unwrap());
    assert_eq!(b.schema_version().unwrap(), MIGRATIONS.len() as i32);
    assert_eq!(
        b.trace_events(0).unwrap().len(),
        1,
        "data survives a second start"
    );
    let client = connect(&url).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, (1..=MIGRATIONS.len() as i32).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_database_newer_than_the_build_is_refused() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    drop(PostgresStore::connect(&url, "a").unwrap());
    connect(&url)
        .await
        .execute("INSERT INTO schema_version (version) VALUES (999)", &[])
        .await
        .unwrap();
    let error = PostgresStore::connect(&url, "a").err().expect("refused");
    assert!(error.0.contains("newer than this build"), "{error}");
}

#[tokio::test]
async fn concurrent_commits_share_transactions() {
    let server = ScratchPostgres::start().unwrap();
    let store = PostgresStore::connect(&server.url("postgres"), "a").unwrap();
    let before = store.transactions();
    let commits: Vec<_> = (0..200)
        .map(|i| {
            store.commit(vec![Write::Spool(crate::queue::SpoolWrite::Enqueue(
                crate::store::conformance::entry(&format!("m{i:03}")),
                vec![b'x'; 1000],
            ))])
        })
        .collect();
    for commit in commits {
        commit.await.unwrap();
    }
    let used = store.transactions() - before;
    assert_eq!(store.queue_page(None, 1000).unwrap().items.len(), 200);
    assert!(used < 200 / 4, "200 concurrent commits took {used} transactions");
}

#[tokio::test]
async fn a_failed_batch_is_reported_to_every_waiter_and_leaves_nothing() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let store = PostgresStore::connect(&url, "a").unwrap();
    // A trace event the database refuses (a constraint added for the
    // test) in the same transaction as a message: neither may be stored.
    let client = connect(&url).await;
    client
        .batch_execute("ALTER TABLE trace_event ADD CONSTRAINT small CHECK (at_ms < 1000)")
        .await
        .unwrap();
    let bad = crate::store::conformance::entry("m1");
    let event = crate::trace::TraceEvent {
        at_ms: 5000,
        queue_id: QueueId("m1".into()),
        message_id: None,
        kind: crate::trace::TraceKind::Received,
        from: String::new(),
        to: None,
        connector: None,
        remote_host: None,
        detail: None,
        node: None,
    };
    let result = store
        .commit(vec![
            Write::Spool(crate::queue::SpoolWrite::Enqueue(bad, b"abc".to_vec())),
            Write::Trace(vec![event]),
        ])
        .await;
    assert!(result.is_err());
    assert!(
        store.queue_page(None, 10).unwrap().items.is_empty(),
        "no half batch"
    );
    assert_eq!(store.content(&QueueId("m1".into())).unwrap(), None);
}

#[tokio::test]
async fn an_object_change_is_announced_to_every_node() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let a = PostgresStore::connect(&url, "a").unwrap();
    let b = PostgresStore::connect(&url, "b").unwrap();
    // A poll far slower than the test's wait: only the notification can
    // deliver the change in time.
    let mut changes = b.watch_objects(Duration::from_secs(3600));
    let version = *changes.borrow_and_update();
    let objects = ObjectSet {
        accepted_domains: vec![AcceptedDomain {
            name: "new.test".into(),
            kind: AcceptedDomainType::Authoritative,
        }],
        ..ObjectSet::default()
    };
    // The listener may still be connecting: it reads the counter once it
    // listens, so a change made before is not lost either.
    a.commit(vec![Write::Objects(objects.clone())]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("notified within 2 s")
        .unwrap();
    assert!(*changes.borrow() > version);
    assert_eq!(b.objects().unwrap(), objects);
}

#[tokio::test]
async fn a_configuration_hold_keeps_the_other_nodes_out_until_dropped() {
    let (_server, _url, a, b) = two_nodes();
    let held = a.hold_configuration().unwrap();
    let (got, wait) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let hold = b.hold_configuration();
        got.send(hold.is_ok()).unwrap();
    });
    assert!(
        wait.recv_timeout(Duration::from_millis(500)).is_err(),
        "the second node waits while the first holds"
    );
    drop(held);
    assert_eq!(wait.recv_timeout(Duration::from_secs(5)), Ok(true));
    waiter.join().unwrap();
}

#[tokio::test]
async fn keys_made_on_two_nodes_from_old_copies_are_both_kept_and_announced() {
    use crate::auth::keys::{KeyAlgorithm, Keyring, NewKeyRequest};
    let (_server, _url, a, b) = two_nodes();
    let mut changes = b.watch_objects(Duration::from_secs(3600));
    changes.borrow_and_update();
    // Both loaded before either key exists.
    let on_a = Keyring::load(a.clone(), None).unwrap();
    let on_b = Keyring::load(b.clone(), None).unwrap();
    let request = |domain: &str| NewKeyRequest {
        domain: domain.into(),
        selector: None,
        algorithm: KeyAlgorithm::Ed25519,
    };
    on_a.create(&request("a.test")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("a key change is announced like an object change")
        .unwrap();
    on_b.create(&request("b.test")).await.unwrap();
    let stored: BTreeSet<String> = a.dkim_keys().unwrap().into_iter().map(|k| k.domain).collect();
    assert_eq!(
        stored,
        BTreeSet::from(["a.test".to_string(), "b.test".to_string()])
    );
    on_a.reload().await.unwrap();
    let listed: Vec<String> = on_a.list().into_iter().map(|k| k.domain).collect();
    assert_eq!(listed, ["a.test", "b.test"]);
}

#[tokio::test]
async fn polling_finds_a_change_whose_notification_was_missed() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let b = PostgresStore::connect(&url, "b").unwrap();
    let mut changes = b.watch_objects(Duration::from_millis(200));
    let version = *changes.borrow_and_update();
    // Written behind the store's back, with no NOTIFY.
    connect(&url)
        .await
        .execute(
            "INSERT INTO objects (singleton, doc, version) VALUES (true, '{}', 41)",
            &[],
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|v| *v == 41))
        .await
        .expect("found by polling")
        .unwrap();
    assert!(version < 41);
}

#[tokio::test]
async fn nodes_register_and_heartbeat() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let a = PostgresStore::connect(&url, "gw1.test").unwrap();
    let b = PostgresStore::connect(&url, "gw2.test").unwrap();
    a.register_node("127.0.0.1:25", "127.0.0.1:8025", "1.2.3")
        .unwrap();
    b.register_node("127.0.0.2:25", "127.0.0.2:8025", "1.2.3")
        .unwrap();
    let nodes = a.nodes().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["gw1.test", "gw2.test"]);
    assert_eq!(nodes[1].smtp, "127.0.0.2:25");
    assert_eq!(nodes[1].admin, "127.0.0.2:8025");
    // Age the first node's heartbeat, then beat: it is fresh again.
    connect(&url)
        .await
        .execute(
            "UPDATE node SET heartbeat_at = now() - interval '1 hour' WHERE name = 'gw1.test'",
            &[],
        )
        .await
        .unwrap();
    assert!(b.nodes().unwrap()[0].heartbeat_age_ms >= 3_600_000);
    a.heartbeat().unwrap();
    assert!(b.nodes().unwrap()[0].heartbeat_age_ms < 60_000);
}

/// A waiting message, due at `due_ms`.
async fn spool_message(client: &tokio_postgres::Client, id: &str, due_ms: i64) {
    client
        .execute(
            "INSERT INTO spool_message (id, accepted_by, envelope, received_at_ms, expires_at_ms, due_at_ms) \
             VALUES ($1, 'a', '{}', 0, 999999999, $2)",
            &[&id, &due_ms],
        )
        .await
        .unwrap();
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|m| format!("{prefix}{m:03}")).collect()
}

/// A server of the test's own with the schema applied, its URL, and a
/// connection to it; `waiting` are spooled, due at `due_ms`. The server
/// stops when the first value is dropped.
async fn spool_with(waiting: &[String], due_ms: i64) -> (ScratchPostgres, String, tokio_postgres::Client) {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    drop(PostgresStore::connect(&url, "a").unwrap());
    let client = connect(&url).await;
    for id in waiting {
        spool_message(&client, id, due_ms).await;
    }
    (server, url, client)
}

/// A server of the test's own and the stores of two nodes on it, `a` and `b`.
pub(super) fn two_nodes() -> (ScratchPostgres, String, Arc<PostgresStore>, Arc<PostgresStore>) {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let a = PostgresStore::connect(&url, "a").unwrap();
    let b = PostgresStore::connect(&url, "b").unwrap();
    (server, url, a, b)
}

#[tokio::test]
async fn two_connections_never_claim_the_same_message() {
    let first = ids("m", 100);
    let (_server, url, setup) = spool_with(&first, 100).await;

    // A claim still open (its transaction holds the row locks) hides its
    // rows from the other connection: SKIP LOCKED, no waiting.
    let mut a = connect(&url).await;
    let b = connect(&url).await;
    let txn = a.transaction().await.unwrap();
    let held = spool::claim(&txn, "a", &first[..30], 60_000, Some(1000))
        .await
        .unwrap();
    let other = spool::claim(&b, "b", &first, 60_000, Some(1000)).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(held.len(), 30);
    assert_eq!(other.len(), 70);
    let held: BTreeSet<_> = held.iter().map(|c| c.message_id.clone()).collect();
    assert!(other.iter().all(|c| !held.contains(&c.message_id)));
    // Leased rows stay taken until their lease expires.
    assert!(spool::claim(&b, "b", &first[..30], 60_000, Some(2000))
        .await
        .unwrap()
        .is_empty());
    let leased = spool::leased(&b, Some(2000)).await.unwrap();
    assert_eq!(leased, [("a".to_string(), 30), ("b".to_string(), 70)]);

    // Many claimers racing over the same fresh rows: every row once, none twice.
    let fresh = ids("n", 200);
    for id in &fresh {
        spool_message(&setup, id, 100).await;
    }
    let mut racers = Vec::new();
    for n in 0..8 {
        let url = url.clone();
        let fresh = fresh.clone();
        racers.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let owner = format!("racer{n}");
            let mut mine = Vec::new();
            for chunk in fresh.chunks(7) {
                mine.extend(
                    spool::claim(&client, &owner, chunk, 60_000, Some(3000))
                        .await
                        .unwrap(),
                );
            }
            mine
        }));
    }
    let mut all: Vec<Claim> = Vec::new();
    for racer in racers {
        all.extend(racer.await.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().map(|c| c.message_id.clone()).collect();
    assert_eq!(unique.len(), 200, "every fresh row claimed");
    assert_eq!(all.len(), 200, "no row claimed twice");
}

#[tokio::test]
async fn a_stale_fence_cannot_overwrite_the_new_owner() {
    let m1 = ["m1".to_string()];
    let (_server, _, client) = spool_with(&m1, 0).await;

    let first = spool::claim(&client, "a", &m1, 60_000, Some(1000)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        spool::renew(&client, "a", &first, 60_000, Some(30_000))
            .await
            .unwrap(),
        m1
    );
    // Node a stalls past its lease (renewed to 90 s); node b takes the row.
    assert!(spool::claim(&client, "b", &m1, 60_000, Some(89_999))
        .await
        .unwrap()
        .is_empty());
    let second = spool::claim(&client, "b", &m1, 60_000, Some(90_000))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0].fence > first[0].fence);

    // Node a wakes up: its renewal and its outcome are refused.
    assert!(spool::renew(&client, "a", &first, 60_000, Some(90_001))
        .await
        .unwrap()
        .is_empty());
    assert!(!spool::settle(&client, &first[0]).await.unwrap());
    assert!(spool::settle(&client, &second[0]).await.unwrap());
    let row = client
        .query_one(
            "SELECT lease_owner, fence FROM spool_message WHERE id = 'm1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, i64>(1), second[0].fence);
    // A message no longer waiting is never claimed.
    client
        .execute("UPDATE spool_message SET due_at_ms = NULL", &[])
        .await
        .unwrap();
    assert!(spool::claim(&client, "c", &m1, 60_000, Some(100_000))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn release_frees_leases_and_a_restarted_node_reclaims_its_own() {
    let both = ids("m", 2);
    let (_server, _, client) = spool_with(&both, 0).await;
    let claims = spool::claim(&client, "a", &both, 60_000, Some(1000))
        .await
        .unwrap();
    assert_eq!(claims.len(), 2);
    // Node a restarted under its name: it takes its own work back at once.
    let again = spool::claim(&client, "a", &both[..1], 60_000, Some(2000))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].fence > claims[0].fence);
    // Giving one claim back frees that row for another node, not the other.
    assert_eq!(spool::release(&client, &again).await.unwrap(), 1);
    assert_eq!(
        spool::claim(&client, "b", &both, 60_000, Some(3000))
            .await
            .unwrap()
            .len(),
        1
    );
    // Node a stops cleanly: its other row is free at once, not in 60 s.
    assert_eq!(spool::release_all(&client, "a").await.unwrap(), 1);
    let freed = spool::claim(&client, "c", &both, 60_000, Some(3000))
        .await
        .unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].message_id, both[1]);
    assert!(!spool::settle(&client, &claims[1]).await.unwrap());
}

/// A queued message with one recipient due at `due_ms`.
fn waiting(id: &str, due_ms: u64) -> QueueEntry {
    let mut entry = crate::store::conformance::entry(id);
    let recipient = crate::message::EnvelopeRecipient {
        address: crate::message::Address::parse("r@x.test").unwrap(),
        notify: crate::message::Notify::Never,
        orcpt: None,
    };
    entry.recipients.push(crate::queue::QueuedRecipient::new(
        &recipient,
        crate::route::Route::Mx,
        due_ms,
    ));
    entry.expires_at_ms = u64::MAX / 4;
    entry
}

#[tokio::test(flavor = "multi_thread")]
async fn another_node_hears_of_new_mail_and_only_the_lease_holder_writes_the_outcome() {
    let (_server, url, a, b) = two_nodes();
    let mut news = b.news().expect("a shared spool has news");
    let lease = |owner: &str| Lease {
        owner: owner.into(),
        for_ms: 60_000,
    };
    let id = QueueId("w1".into());
    // The listener may still be connecting: its first word is a rescan.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.commit_spool(vec![SpoolWrite::Enqueue(waiting("w1", 1000), b"x".to_vec())])
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match news.recv().await.unwrap() {
                SpoolNews::Arrived(rows) => return rows,
                SpoolNews::Rescan => continue,
            }
        }
    })
    .await
    .expect("b hears of a's new mail within 2 s");
    assert_eq!(heard.len(), 1);
    assert_eq!((heard[0].due_ms, &heard[0].id), (1000, &id));
    assert_eq!(heard[0].destinations, ["mx:x.test"]);

    // b claims it; a cannot, and no longer sees it in its due index.
    let from = (0, QueueId(String::new()));
    let claimed = b.claim(std::slice::from_ref(&id), &lease("b")).unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(a
        .claim(std::slice::from_ref(&id), &lease("a"))
        .unwrap()
        .is_empty());
    assert!(a.due_before(u64::MAX / 2, &from, 10).unwrap().is_empty());
    assert_eq!(b.due_before(u64::MAX / 2, &from, 10).unwrap().len(), 1);
    assert_eq!(a.leased().unwrap(), [("b".to_string(), 1)]);
    assert_eq!(b.renew(&claimed, &lease("b")).unwrap(), std::slice::from_ref(&id));

    // b stalls past its lease; a takes the message over.
    let client = connect(&url).await;
    client
        .execute("UPDATE spool_message SET lease_expires_at_ms = 0", &[])
        .await
        .unwrap();
    let taken = a.claim(std::slice::from_ref(&id), &lease("a")).unwrap();
    assert_eq!(taken.len(), 1);
    assert!(taken[0].fence > claimed[0].fence);
    assert!(b.renew(&claimed, &lease("b")).unwrap().is_empty());
    // b's late outcome is refused whole; a's is written and ends the lease.
    let under = |claim: &crate::queue::Claim| Guard {
        id: id.clone(),
        revision: Revision(0),
        claim: Some(claim.clone()),
    };
    let late = b
        .commit_guarded(
            &under(&claimed[0]),
            vec![
                SpoolWrite::Remove(id.clone()),
                SpoolWrite::Trace(vec![crate::queue::event(
                    &waiting("w1", 0),
                    crate::trace::TraceKind::Delivered,
                    None,
                    None,
                    None,
                )]),
            ],
        )
        .await;
    assert_eq!(late.unwrap_err(), SpoolError::LeaseLost);
    assert!(a.entry(&id).unwrap().is_some());
    assert!(a.trace_events(0).unwrap().is_empty());
    let mut deferred = waiting("w1", 5000);
    deferred.recipients[0].attempts = 1;
    a.commit_guarded(&under(&taken[0]), vec![SpoolWrite::Update(deferred.clone())])
        .await
        .unwrap();
    assert_eq!(b.entry(&id).unwrap(), Some(deferred));
    assert!(a.leased().unwrap().is_empty());
    assert_eq!(b.due_before(u64::MAX / 2, &from, 10).unwrap()[0].due_ms, 5000);
    assert_eq!(b.depth().unwrap().total, 1);
    assert_eq!(b.shape().unwrap()[0].domain, "x.test");
}

#[tokio::test]
async fn writes_submitted_before_the_store_is_dropped_are_committed() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    let store = PostgresStore::connect(&url, "a").unwrap();
    for i in 0..50 {
        store.submit(vec![Write::Trace(vec![crate::trace::TraceEvent {
            at_ms: i,
            queue_id: QueueId(format!("s{i}")),
            message_id: None,
            kind: crate::trace::TraceKind::Received,
            from: String::new(),
            to: None,
            connector: None,
            remote_host: None,
            detail: None,
            node: None,
        }])]);
    }
    drop(store);
    // The old store's thread finishes its writer before its runtime ends.
    let mut count = 0;
    for _ in 0..100 {
        let again = PostgresStore::connect(&url, "a").unwrap();
        count = again.trace_events(0).unwrap().len();
        if count == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_computed_from_a_stale_read_is_refused_and_the_claim_still_holds() {
    let (_server, _, a, b) = two_nodes();
    let id = QueueId("r1".into());
    a.commit_spool(vec![SpoolWrite::Enqueue(waiting("r1", 1000), b"x".to_vec())])
        .await
        .unwrap();
    let lease = Lease {
        owner: "b".into(),
        for_ms: 60_000,
    };
    let claim = b.claim(std::slice::from_ref(&id), &lease).unwrap().remove(0);
    // b's attempt and a's administrator read the same revision.
    let (attempted, read) = b.entry_revised(&id).unwrap().unwrap();
    let (mut held, admin_read) = a.entry_revised(&id).unwrap().unwrap();
    assert_eq!(read, admin_read);
    held.hold = crate::queue::Hold::Held;
    let admin = Guard {
        id: id.clone(),
        revision: admin_read,
        claim: None,
    };
    a.commit_guarded(&admin, vec![SpoolWrite::Update(held.clone())])
        .await
        .unwrap();
    // A second write from the same stale read is refused: it would undo the first.
    assert_eq!(
        a.commit_guarded(&admin, vec![SpoolWrite::Update(attempted.clone())])
            .await
            .unwrap_err(),
        SpoolError::Changed
    );
    // b's outcome, computed from the entry before the hold, is refused
    // whole (its trace event too) and b keeps its claim.
    let mut delivered = attempted.clone();
    delivered.recipients[0].status = crate::queue::RecipientStatus::Delivered {
        reply: "250 ok".into(),
        host: None,
    };
    let outcome = |revision: Revision| Guard {
        id: id.clone(),
        revision,
        claim: Some(claim.clone()),
    };
    let event = crate::queue::event(&attempted, crate::trace::TraceKind::Delivered, None, None, None);
    let refused = b
        .commit_guarded(
            &outcome(read),
            vec![
                SpoolWrite::Trace(vec![event.clone()]),
                SpoolWrite::Update(delivered.clone()),
            ],
        )
        .await;
    assert_eq!(refused.unwrap_err(), SpoolError::Changed);
    assert!(b.trace_events(0).unwrap().is_empty());
    assert_eq!(b.leased().unwrap(), [("b".to_string(), 1)]);
    // Made again on the entry as it is now: the hold and the delivery both stand.
    let (now_stored, now_at) = b.entry_revised(&id).unwrap().unwrap();
    assert!(now_at > read);
    assert_eq!(now_stored.hold, crate::queue::Hold::Held);
    let mut merged = now_stored;
    merged.recipients[0].status = delivered.recipients[0].status.clone();
    b.commit_guarded(
        &outcome(now_at),
        vec![SpoolWrite::Trace(vec![event]), SpoolWrite::Update(merged.clone())],
    )
    .await
    .unwrap();
    assert_eq!(a.entry(&id).unwrap(), Some(merged));
    assert!(a.leased().unwrap().is_empty(), "the outcome ended the lease");
    assert_eq!(a.trace_events(0).unwrap().len(), 1);
    // A deletion wins: an outcome written after it is refused, never resurrects it.
    let (_, last) = a.entry_revised(&id).unwrap().unwrap();
    let deletion = Guard {
        id: id.clone(),
        revision: last,
        claim: None,
    };
    a.commit_guarded(&deletion, vec![SpoolWrite::Remove(id.clone())])
        .await
        .unwrap();
    assert_eq!(
        b.commit_guarded(&outcome(last), vec![SpoolWrite::Update(delivered)])
            .await
            .unwrap_err(),
        SpoolError::Changed
    );
    assert_eq!(a.entry(&id).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn renewals_and_outcome_batches_over_the_same_rows_never_deadlock() {
    let (_server, _, a, _b) = two_nodes();
    let ids: Vec<QueueId> = ids("d", 40).into_iter().map(QueueId).collect();
    a.commit_spool(
        ids.iter()
            .map(|id| SpoolWrite::Enqueue(waiting(&id.0, 1000), b"x".to_vec()))
            .collect(),
    )
    .await
    .unwrap();
    let lease = Lease {
        owner: "a".into(),
        for_ms: 60_000,
    };
    let claims = a.claim(&ids, &lease).unwrap();
    assert_eq!(claims.len(), ids.len());
    for round in 0..40 {
        // The writer gets the rows in an order that changes every round,
        // while renewals of all of them run.
        let mut order = ids.clone();
        order.rotate_left(round * 7 % ids.len());
        if round % 2 == 1 {
            order.reverse();
        }
        let renewals: Vec<_> = (0..2)
            .map(|_| {
                let (store, claims, lease) = (a.clone(), claims.clone(), lease.clone());
                tokio::task::spawn_blocking(move || store.renew(&claims, &lease))
            })
            .collect();
        let commits: Vec<_> = order
            .iter()
            .map(|id| {
                let mut entry = waiting(&id.0, 2000 + round as u64);
                entry.recipients[0].attempts = round as u32;
                a.commit_spool(vec![SpoolWrite::Update(entry)])
            })
            .collect();
        for commit in commits {
            commit.await.expect("an outcome batch failed");
        }
        for renewal in renewals {
            assert_eq!(renewal.await.unwrap().expect("a renewal failed").len(), ids.len());
        }
    }
}
