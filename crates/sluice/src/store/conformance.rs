//! What every backend must do, written once over `&dyn Store` and run
//! against the embedded store and a real PostgreSQL server.

use super::{EmbeddedStore, PostgresStore, Store, Write};
use crate::auth::keys::{KeyAlgorithm, StoredKey};
use crate::config::objects::{AcceptedDomain, AcceptedDomainType, ObjectSet};
use crate::message::{MessageContent, QueueId, ReversePath};
use crate::queue::SpoolWrite;
use crate::queue::{Hold, QuarantineEntry, QueueEntry, RecipientStatus, Source};
use crate::trace::{TraceEvent, TraceKind};
use std::sync::Arc;

pub(crate) fn entry(id: &str) -> QueueEntry {
    QueueEntry {
        id: QueueId(id.into()),
        message_id: None,
        from: ReversePath::Null,
        body: Default::default(),
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: vec![],
        size: 3,
        received_at_ms: 0,
        expires_at_ms: 0,
        hold: Hold::Active,
        source: Source {
            peer: "local".into(),
            helo: String::new(),
            connector: None,
        },
    }
}

fn event(at_ms: u64, id: &str) -> TraceEvent {
    TraceEvent {
        at_ms,
        queue_id: QueueId(id.into()),
        message_id: None,
        kind: TraceKind::Received,
        from: String::new(),
        to: None,
        connector: None,
        remote_host: None,
        detail: None,
        node: None,
    }
}

fn domains(names: &[&str]) -> ObjectSet {
    ObjectSet {
        accepted_domains: names
            .iter()
            .map(|name| AcceptedDomain {
                name: name.to_string(),
                kind: AcceptedDomainType::Authoritative,
            })
            .collect(),
        ..ObjectSet::default()
    }
}

async fn objects_are_replaced_whole(store: &dyn Store) {
    assert_eq!(store.objects().unwrap(), ObjectSet::default());
    store
        .commit(vec![Write::Objects(domains(&["a.test", "b.test"]))])
        .await
        .unwrap();
    assert_eq!(store.objects().unwrap(), domains(&["a.test", "b.test"]));
    store
        .commit(vec![Write::Objects(domains(&["c.test"]))])
        .await
        .unwrap();
    assert_eq!(store.objects().unwrap(), domains(&["c.test"]));
}

async fn trace_pages_see_every_event_once_in_order(store: &dyn Store) {
    let first: Vec<TraceEvent> = (0..10).map(|i| event(1000 + i, &format!("e{i}"))).collect();
    store.commit(vec![Write::Trace(first)]).await.unwrap();
    // Two events in one millisecond: the cursor must still tell them apart.
    store
        .commit(vec![Write::Trace(vec![event(1005, "e5b")])])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.trace_page(1003, cursor.as_deref(), 3).unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|e| e.queue_id.0.clone()));
        pages += 1;
        if pages == 1 {
            store
                .commit(vec![Write::Trace(vec![event(2000, "late")])])
                .await
                .unwrap();
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(seen, ["e3", "e4", "e5", "e5b", "e6", "e7", "e8", "e9", "late"]);
    assert!(store.trace_page(0, Some("not hex"), 3).is_err());
    let all: Vec<String> = store
        .trace_events(1008)
        .unwrap()
        .into_iter()
        .map(|e| e.queue_id.0)
        .collect();
    assert_eq!(all, ["e8", "e9", "late"]);
}

async fn trace_prune_drops_only_older_events(store: &dyn Store) {
    let events = (0..6).map(|i| event(100 * i, &format!("p{i}"))).collect();
    store.commit(vec![Write::Trace(events)]).await.unwrap();
    store.commit(vec![Write::PruneTrace(300)]).await.unwrap();
    let left: Vec<u64> = store.trace_events(0).unwrap().iter().map(|e| e.at_ms).collect();
    assert_eq!(left, [300, 400, 500]);
    // Writes apply in order within one batch too.
    store
        .commit(vec![
            Write::Trace(vec![event(350, "old"), event(900, "new")]),
            Write::PruneTrace(450),
            Write::Trace(vec![event(10, "after the prune")]),
        ])
        .await
        .unwrap();
    let left: Vec<u64> = store.trace_events(0).unwrap().iter().map(|e| e.at_ms).collect();
    assert_eq!(left, [10, 500, 900]);
}

async fn quarantine_pages_and_content(store: &dyn Store) {
    for i in 0..7 {
        let held = QuarantineEntry {
            entry: entry(&format!("q{i}")),
            rule: "hold".into(),
            quarantined_at_ms: i,
            reason: "credit_card x1".into(),
        };
        store
            .commit(vec![Write::Spool(SpoolWrite::Quarantine(
                held,
                format!("body {i}").into_bytes(),
            ))])
            .await
            .unwrap();
    }
    store
        .commit(vec![Write::Spool(SpoolWrite::Unquarantine(QueueId("q3".into())))])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.quarantine_page(cursor.as_deref(), 2).unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|q| q.entry.id.0.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["q0", "q1", "q2", "q4", "q5", "q6"]);
    assert_eq!(store.quarantine().unwrap().len(), 6);
    assert_eq!(
        store
            .quarantined_content(&QueueId("q5".into()))
            .unwrap()
            .as_deref(),
        Some(&b"body 5"[..])
    );
    assert_eq!(store.quarantined_content(&QueueId("q3".into())).unwrap(), None);
    let held = &store.quarantine().unwrap()[0];
    assert_eq!(
        (held.rule.as_str(), held.reason.as_str()),
        ("hold", "credit_card x1")
    );
}

async fn tls_state_by_prefix(store: &dyn Store) {
    let put = |key: &str, value: &str| Write::TlsState {
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
    };
    store
        .commit(vec![
            put("mta-sts/b.test", "B"),
            put("mta-sts/a.test", "A"),
            put("tls-rpt/2026-01-01/a.test", "R"),
            // A key that sorts after the prefix in some collations.
            put("mta-sts0", "not under the prefix"),
        ])
        .await
        .unwrap();
    let found = store.tls_state("mta-sts/").unwrap();
    assert_eq!(
        found,
        [
            ("mta-sts/a.test".to_string(), b"A".to_vec()),
            ("mta-sts/b.test".to_string(), b"B".to_vec())
        ]
    );
    store
        .commit(vec![
            Write::TlsState {
                key: "mta-sts/a.test".into(),
                value: None,
            },
            put("mta-sts/b.test", "B2"),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.tls_state("mta-sts/").unwrap(),
        [("mta-sts/b.test".to_string(), b"B2".to_vec())]
    );
}

async fn dkim_keys_round_trip(store: &dyn Store) {
    assert!(store.dkim_keys().unwrap().is_empty());
    let key = StoredKey::generate("a.test", "s1", KeyAlgorithm::Ed25519).unwrap();
    store
        .commit(vec![Write::DkimKeys(vec![key.clone()])])
        .await
        .unwrap();
    let keys = store.dkim_keys().unwrap();
    assert!(keys == [key.clone()], "the stored key comes back as it went in");
    assert!(keys[0].signing_key().is_ok(), "the private half survives");
    store.commit(vec![Write::DkimKeys(vec![])]).await.unwrap();
    assert!(store.dkim_keys().unwrap().is_empty());
}

async fn queue_minimal_path(store: &dyn Store) {
    let commits: Vec<_> = (0..20)
        .map(|i| {
            store.commit(vec![Write::Spool(SpoolWrite::Enqueue(
                entry(&format!("m{i:02}")),
                b"abc".to_vec(),
            ))])
        })
        .collect();
    for commit in commits {
        commit.await.unwrap();
    }
    store
        .commit(vec![Write::Spool(SpoolWrite::Remove(QueueId("m00".into())))])
        .await
        .unwrap();
    // An update racing a delete must not resurrect the message.
    store
        .commit(vec![Write::Spool(SpoolWrite::Update(entry("m00")))])
        .await
        .unwrap();
    assert_eq!(store.queue_page(None, 100).unwrap().items.len(), 19);
    assert_eq!(store.depth().unwrap().total, 19);
    assert_eq!(store.content(&QueueId("m00".into())).unwrap(), None);
    assert_eq!(
        store.content(&QueueId("m07".into())).unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    // In one batch, each write sees the ones before it.
    let mut grown = entry("z2");
    grown.size = 99;
    store
        .commit(vec![
            Write::Spool(SpoolWrite::Enqueue(entry("z1"), b"1".to_vec())),
            Write::Spool(SpoolWrite::Remove(QueueId("z1".into()))),
            Write::Spool(SpoolWrite::Enqueue(entry("z2"), b"2".to_vec())),
            Write::Spool(SpoolWrite::Update(grown)),
        ])
        .await
        .unwrap();
    let entries = store.queue_page(None, 100).unwrap().items;
    assert_eq!(store.depth().unwrap().total as usize, entries.len());
    assert!(!entries.iter().any(|e| e.id.0 == "z1"));
    assert_eq!(entries.iter().find(|e| e.id.0 == "z2").map(|e| e.size), Some(99));
    assert_eq!(
        store.content(&QueueId("z2".into())).unwrap().as_deref(),
        Some(&b"2"[..])
    );
    let page = store.queue_page(Some("m05"), 3).unwrap();
    let ids: Vec<&str> = page.items.iter().map(|e| e.id.0.as_str()).collect();
    assert_eq!(ids, ["m06", "m07", "m08"]);
    assert_eq!(page.next.as_deref(), Some("m08"));
}

/// An entry with one recipient per address, each parked or due at 5 s.
fn parked_entry(id: &str, recipients: &[(&str, bool)]) -> QueueEntry {
    let mut e = entry(id);
    e.recipients = recipients
        .iter()
        .map(|(address, parked)| crate::queue::QueuedRecipient {
            address: crate::message::Address::parse(address).unwrap(),
            notify: crate::message::Notify::Default,
            orcpt: None,
            route: crate::route::Route::Mx,
            status: RecipientStatus::Deferred {
                due_ms: 5_000,
                last_error: "451 4.4.1 refused".into(),
                delay_notified: false,
                scheduled_ms: None,
                early_attempts: 0,
                parked: *parked,
            },
            attempts: 0,
        })
        .collect();
    e
}

fn parked_ids(store: &dyn Store, destination: &str, after: Option<&str>, limit: usize) -> Vec<String> {
    store
        .parked(destination, after, limit)
        .unwrap()
        .into_iter()
        .map(|id| id.0)
        .collect()
}

/// The parked index follows every write of an entry in the same commit:
/// by destination, paged by id, without held entries; its counters say
/// which destinations have parked mail.
async fn the_parked_index_follows_every_write(store: &dyn Store) {
    let dead = "mx:dead.test";
    let mut writes: Vec<Write> = (0..5)
        .map(|i| {
            let e = parked_entry(&format!("p{i}"), &[("a@dead.test", true)]);
            Write::Spool(SpoolWrite::Enqueue(e, b"x".to_vec()))
        })
        .collect();
    let both = parked_entry("q0", &[("a@dead.test", true), ("b@other.test", true)]);
    writes.push(Write::Spool(SpoolWrite::Enqueue(both, b"x".to_vec())));
    let due = parked_entry("q1", &[("a@dead.test", false)]);
    writes.push(Write::Spool(SpoolWrite::Enqueue(due, b"x".to_vec())));
    store.commit(writes).await.unwrap();
    assert_eq!(parked_ids(store, dead, None, 3), ["p0", "p1", "p2"]);
    assert_eq!(parked_ids(store, dead, Some("p2"), 10), ["p3", "p4", "q0"]);
    assert_eq!(parked_ids(store, "mx:other.test", None, 10), ["q0"]);
    assert!(parked_ids(store, "mx:dead.tes", None, 10).is_empty());
    let mut counts = store.parked_destinations().unwrap();
    counts.sort();
    assert_eq!(counts, [(dead.to_string(), 6), ("mx:other.test".to_string(), 1)]);
    // Resumed, held, delivered or removed: out of the index.
    let mut held = parked_entry("p1", &[("a@dead.test", true)]);
    held.hold = Hold::Held;
    let mut delivered = parked_entry("q0", &[("a@dead.test", true), ("b@other.test", true)]);
    delivered.recipients[1].status = RecipientStatus::Delivered {
        reply: "250 ok".into(),
        host: None,
    };
    store
        .commit(vec![
            Write::Spool(SpoolWrite::Update(parked_entry("p0", &[("a@dead.test", false)]))),
            Write::Spool(SpoolWrite::Update(held)),
            Write::Spool(SpoolWrite::Remove(QueueId("p2".into()))),
            Write::Spool(SpoolWrite::Update(delivered)),
            // Parked now.
            Write::Spool(SpoolWrite::Update(parked_entry("q1", &[("a@dead.test", true)]))),
            // Gone before: an update does not bring it (or its rows) back.
            Write::Spool(SpoolWrite::Update(parked_entry("p9", &[("a@dead.test", true)]))),
        ])
        .await
        .unwrap();
    assert_eq!(parked_ids(store, dead, None, 10), ["p3", "p4", "q0", "q1"]);
    assert!(parked_ids(store, "mx:other.test", None, 10).is_empty());
    assert_eq!(store.parked_destinations().unwrap(), [(dead.to_string(), 4)]);
}

/// Copies of one message naming a shared body read back whole, each with
/// its own header section, until the last one leaves: the body goes with
/// it (a later copy under the same body id gets its own body, not a
/// leftover).
async fn copies_share_a_body_until_the_last_leaves(store: &dyn Store) {
    let original = MessageContent::new(b"Subject: a\r\n\r\nthe shared body\r\n".to_vec());
    let copies = [
        ("c1", original.with_header(b"Subject: one\r\n\r\n".to_vec())),
        ("c2", original.clone()),
        (
            "c3",
            original.with_header(b"X-Copy: 3\r\nSubject: a\r\n\r\n".to_vec()),
        ),
    ];
    let body = Some(QueueId("c1".into()));
    let mut writes: Vec<Write> = copies
        .iter()
        .map(|(id, content)| {
            Write::Spool(SpoolWrite::EnqueueCopy {
                entry: entry(id),
                content: content.clone(),
                body: body.clone(),
            })
        })
        .collect();
    writes.push(Write::Spool(SpoolWrite::EnqueueCopy {
        entry: entry("c4"),
        content: original.with_header(b"Subject: alone\r\n\r\n".to_vec()),
        body: None,
    }));
    store.commit(writes).await.unwrap();
    let read = |id: &str| store.content(&QueueId(id.into())).unwrap();
    for (id, content) in &copies {
        assert_eq!(read(id), Some(content.to_vec()), "{id}");
    }
    assert_eq!(
        read("c4").as_deref(),
        Some(&b"Subject: alone\r\n\r\nthe shared body\r\n"[..])
    );
    for (gone, (id, _)) in copies.iter().enumerate() {
        store
            .commit(vec![Write::Spool(SpoolWrite::Remove(QueueId(id.to_string())))])
            .await
            .unwrap();
        assert_eq!(read(id), None);
        for (left, content) in &copies[gone + 1..] {
            assert_eq!(read(left), Some(content.to_vec()), "{left} after {id} left");
        }
    }
    let next = MessageContent::new(b"Subject: b\r\n\r\nanother body\r\n".to_vec());
    store
        .commit(vec![Write::Spool(SpoolWrite::EnqueueCopy {
            entry: entry("c5"),
            content: next.clone(),
            body,
        })])
        .await
        .unwrap();
    assert_eq!(read("c5"), Some(next.to_vec()));
    assert_eq!(
        read("c4").as_deref(),
        Some(&b"Subject: alone\r\n\r\nthe shared body\r\n"[..]),
        "a copy stored whole does not depend on the shared body"
    );
}

/// Every check, each on a fresh store from `fresh`.
async fn run_all<F: FnMut() -> Arc<dyn Store>>(mut fresh: F) {
    objects_are_replaced_whole(fresh().as_ref()).await;
    trace_pages_see_every_event_once_in_order(fresh().as_ref()).await;
    trace_prune_drops_only_older_events(fresh().as_ref()).await;
    quarantine_pages_and_content(fresh().as_ref()).await;
    tls_state_by_prefix(fresh().as_ref()).await;
    dkim_keys_round_trip(fresh().as_ref()).await;
    queue_minimal_path(fresh().as_ref()).await;
    copies_share_a_body_until_the_last_leaves(fresh().as_ref()).await;
    the_parked_index_follows_every_write(fresh().as_ref()).await;
}

#[tokio::test]
async fn embedded_store_meets_the_store_contract() {
    let dirs = tempfile::tempdir().unwrap();
    let mut n = 0;
    run_all(|| {
        n += 1;
        let store: Arc<dyn Store> = EmbeddedStore::open(&dirs.path().join(n.to_string())).unwrap();
        store
    })
    .await;
}

#[tokio::test]
async fn postgres_store_meets_the_store_contract() {
    let server = super::postgres::scratch::ScratchPostgres::start().unwrap();
    let mut n = 0;
    run_all(|| {
        n += 1;
        let database = format!("contract{n}");
        server.create_database(&database).unwrap();
        let store: Arc<dyn Store> = PostgresStore::connect(&server.url(&database), "node-a").unwrap();
        store
    })
    .await;
}
