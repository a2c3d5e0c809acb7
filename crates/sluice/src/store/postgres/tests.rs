//! The PostgreSQL backend against a real server of its own (see
//! [`scratch`](super::scratch)). What every backend shares is tested in
//! `store::conformance`.

use super::scratch::ScratchPostgres;
use super::spool::{self, Claim, Next};
use super::*;
use crate::config::objects::{AcceptedDomain, AcceptedDomainType};
use std::collections::BTreeSet;

async fn connect(url: &str) -> tokio_postgres::Client {
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
    assert_eq!(store.queue_entries().unwrap().len(), 200);
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
    };
    let result = store
        .commit(vec![
            Write::Spool(crate::queue::SpoolWrite::Enqueue(bad, b"abc".to_vec())),
            Write::Trace(vec![event]),
        ])
        .await;
    assert!(result.is_err());
    assert!(store.queue_entries().unwrap().is_empty(), "no half batch");
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

/// A message with `recipients` rows, all due at `due_ms`.
async fn spool_message(client: &tokio_postgres::Client, id: &str, recipients: i32, due_ms: i64) {
    client
        .execute(
            "INSERT INTO spool_message (id, accepted_by, envelope, received_at_ms, expires_at_ms) \
             VALUES ($1, 'a', '{}', 0, 999999999)",
            &[&id],
        )
        .await
        .unwrap();
    for idx in 0..recipients {
        client
            .execute(
                "INSERT INTO spool_recipient (message_id, idx, address, state, due_at_ms, route) \
                 VALUES ($1, $2, 'r@x.test', 'queued', $3, '{}')",
                &[&id, &idx, &due_ms],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_connections_never_claim_the_same_recipient() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    drop(PostgresStore::connect(&url, "a").unwrap());
    let setup = connect(&url).await;
    for m in 0..20 {
        spool_message(&setup, &format!("m{m:02}"), 5, 100).await;
    }
    // Not yet due: never claimed.
    spool_message(&setup, "later", 3, 10_000).await;

    // A claim still open (its transaction holds the row locks) hides its
    // rows from the other connection: SKIP LOCKED, no waiting.
    let mut a = connect(&url).await;
    let b = connect(&url).await;
    let txn = a.transaction().await.unwrap();
    let held = spool::claim(&txn, "a", 1000, 60_000, 30).await.unwrap();
    let other = spool::claim(&b, "b", 1000, 60_000, 100).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(held.len(), 30);
    assert_eq!(other.len(), 70);
    let held: BTreeSet<_> = held.iter().map(|c| (c.message_id.clone(), c.idx)).collect();
    assert!(other
        .iter()
        .all(|c| !held.contains(&(c.message_id.clone(), c.idx))));
    // Leased rows stay taken until their lease expires.
    assert!(spool::claim(&b, "b", 2000, 60_000, 100).await.unwrap().is_empty());
    let leased = spool::leased(&b, 2000).await.unwrap();
    assert_eq!(leased, [("a".to_string(), 30), ("b".to_string(), 70)]);

    // Many claimers racing over fresh rows: every row once, none twice.
    for m in 0..40 {
        spool_message(&setup, &format!("n{m:02}"), 5, 100).await;
    }
    let mut racers = Vec::new();
    for n in 0..8 {
        let url = url.clone();
        racers.push(tokio::spawn(async move {
            let client = connect(&url).await;
            let owner = format!("racer{n}");
            let mut mine = Vec::new();
            loop {
                let got = spool::claim(&client, &owner, 3000, 60_000, 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut all: Vec<Claim> = Vec::new();
    for racer in racers {
        all.extend(racer.await.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().map(|c| (c.message_id.clone(), c.idx)).collect();
    assert_eq!(all.len(), 200, "every fresh row claimed");
    assert_eq!(unique.len(), 200, "no row claimed twice");
}

#[tokio::test]
async fn a_stale_fence_cannot_overwrite_the_new_owner() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    drop(PostgresStore::connect(&url, "a").unwrap());
    let client = connect(&url).await;
    spool_message(&client, "m1", 1, 0).await;

    let first = spool::claim(&client, "a", 1000, 60_000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(spool::renew(&client, "a", &first[0], 30_000, 60_000)
        .await
        .unwrap());
    // Node a stalls past its lease (renewed to 90 s); node b takes the row.
    assert!(spool::claim(&client, "b", 89_999, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let second = spool::claim(&client, "b", 90_000, 60_000, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(second[0].fence > first[0].fence);

    // Node a wakes up: its renewal and its result are refused.
    assert!(!spool::renew(&client, "a", &first[0], 90_001, 60_000)
        .await
        .unwrap());
    assert!(!spool::report(&client, "a", &first[0], Next::Failed, "550 stale")
        .await
        .unwrap());
    // Even under b's name, the old fence is refused.
    assert!(!spool::report(&client, "b", &first[0], Next::Failed, "550 stale")
        .await
        .unwrap());
    assert!(spool::report(&client, "b", &second[0], Next::Delivered, "250 ok")
        .await
        .unwrap());
    let row = client
        .query_one(
            "SELECT state, last_reply, attempts, lease_owner FROM spool_recipient WHERE message_id = 'm1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delivered");
    assert_eq!(row.get::<_, String>(1), "250 ok");
    assert_eq!(row.get::<_, i32>(2), 1);
    assert_eq!(row.get::<_, Option<String>>(3), None);
    // Final rows are never claimed again.
    assert!(spool::claim(&client, "c", u64::MAX / 4, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_deferred_recipient_comes_back_when_due_and_release_frees_leases() {
    let server = ScratchPostgres::start().unwrap();
    let url = server.url("postgres");
    drop(PostgresStore::connect(&url, "a").unwrap());
    let client = connect(&url).await;
    spool_message(&client, "m1", 2, 0).await;
    let claims = spool::claim(&client, "a", 1000, 60_000, 10).await.unwrap();
    assert_eq!(claims.len(), 2);
    assert!(
        spool::report(&client, "a", &claims[0], Next::Deferred(5000), "451 later")
            .await
            .unwrap()
    );
    assert!(spool::claim(&client, "b", 4999, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let again = spool::claim(&client, "b", 5000, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].idx, claims[0].idx);
    // Node a stops cleanly: its other row is free at once, not in 60 s.
    assert_eq!(spool::release_all(&client, "a").await.unwrap(), 1);
    let freed = spool::claim(&client, "b", 5000, 60_000, 10).await.unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].idx, claims[1].idx);
    assert!(!spool::report(&client, "a", &claims[1], Next::Delivered, "250")
        .await
        .unwrap());
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
