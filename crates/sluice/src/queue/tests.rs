//! Queue behaviour with a scripted transport: retry, bounce, DSN, hold.
use mail_parser::MimeHeaders;

use super::*;
use crate::deliver::DeliveryAttempt;
use crate::message::{Address, BodyType, Notify};
use crate::store::EmbeddedStore;
use std::sync::Mutex as StdMutex;

/// Answers each attempt from a script, per recipient address.
struct Scripted {
    answers: StdMutex<Vec<(String, Outcome)>>,
    seen: StdMutex<Vec<String>>,
}

impl Transport for Scripted {
    fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
        Box::pin(async move {
            let mut outcomes = Vec::new();
            for r in &job.recipients {
                let address = r.address.to_string();
                self.seen.lock().unwrap().push(address.clone());
                let mut answers = self.answers.lock().unwrap();
                let outcome = match answers.iter().position(|(a, _)| *a == address) {
                    Some(i) => answers.remove(i).1,
                    None => Outcome::Delivered(Reply::new(250, [2, 0, 0], "ok")),
                };
                outcomes.push((r.address.clone(), outcome));
            }
            DeliveryAttempt {
                host: Some("127.0.0.9:25".into()),
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes,
            }
        })
    }
}

fn entry(from: &str, to: &[&str]) -> QueueEntry {
    let now = now_ms();
    QueueEntry {
        id: QueueId::generate(),
        message_id: Some("m@test".into()),
        from: ReversePath::try_from(from.to_string()).unwrap(),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: Some("ENV1".into()),
        recipients: to
            .iter()
            .map(|a| QueuedRecipient {
                address: Address::parse(a).unwrap(),
                notify: Notify::Default,
                orcpt: None,
                route: Route::Mx,
                status: RecipientStatus::Queued { due_ms: now },
                attempts: 0,
            })
            .collect(),
        size: 10,
        received_at_ms: now,
        expires_at_ms: now + 60_000,
        hold: Hold::Active,
        source: Source {
            peer: "127.0.0.1".into(),
            helo: "client".into(),
            connector: None,
        },
    }
}

async fn wait_for(queue: &Queue, what: impl Fn(&[QueueEntry]) -> bool) -> Vec<QueueEntry> {
    for _ in 0..200 {
        let list = queue.list();
        if what(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue never reached the expected state: {:#?}", queue.list());
}

fn start(dir: &std::path::Path, answers: Vec<(&str, Outcome)>) -> (Queue, Arc<Scripted>) {
    let store = EmbeddedStore::open(dir).unwrap();
    let transport = Arc::new(Scripted {
        answers: StdMutex::new(answers.into_iter().map(|(a, o)| (a.to_string(), o)).collect()),
        seen: StdMutex::new(Vec::new()),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    let settings = QueueSettings {
        hostname: "gw.test".into(),
        retry: vec![Duration::from_millis(100)],
        expire_after: Duration::from_secs(60),
        max_concurrency: 4,
        delivery_memory: crate::queue::ContentMemory::new(64 << 20),
    };
    (
        Queue::start(store, transport.clone(), settings, policy).unwrap(),
        transport,
    )
}

#[tokio::test]
async fn deferred_then_delivered_and_bounce_dsn_for_the_failed_one() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, transport) = start(
        dir.path(),
        vec![
            (
                "later@x.test",
                Outcome::TempFail(Reply::new(451, [4, 3, 0], "try later")),
            ),
            (
                "gone@x.test",
                Outcome::PermFail(Reply::new(550, [5, 1, 1], "no such user")),
            ),
            // Keeps the DSN in the queue long enough to inspect it.
            (
                "sender@y.test",
                Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy")),
            ),
        ],
    );
    let e = entry("sender@y.test", &["ok@x.test", "later@x.test", "gone@x.test"]);
    queue
        .enqueue(e.clone(), b"Subject: t\r\n\r\nbody\r\n".to_vec(), vec![])
        .await
        .unwrap();
    // After the first attempt: one deferred, a DSN queued for the sender.
    let list = wait_for(&queue, |l| l.iter().any(|q| q.from == ReversePath::Null)).await;
    let dsn = list.iter().find(|q| q.from == ReversePath::Null).unwrap();
    assert_eq!(dsn.recipients[0].address.to_string(), "sender@y.test");
    let store = queue.inner.store.clone();
    let report = store.content(&dsn.id).unwrap().unwrap();
    let parsed = mail_parser::MessageParser::new().parse(&report).unwrap();
    let ct = parsed.root_part().content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    let text = String::from_utf8_lossy(&report);
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"),
        "{text}"
    );
    assert!(text.contains("Original-Envelope-Id: ENV1"), "{text}");
    // The deferred recipient is retried and delivered; then the entry leaves the queue.
    wait_for(&queue, |l| l.iter().all(|q| q.id != e.id)).await;
    let seen = transport.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|a| *a == "later@x.test").count(), 2);
    assert_eq!(seen.iter().filter(|a| *a == "ok@x.test").count(), 1);
}

#[tokio::test]
async fn null_sender_never_gets_a_bounce_and_hold_stops_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, transport) = start(
        dir.path(),
        vec![("gone@x.test", Outcome::PermFail(Reply::new(550, [5, 1, 1], "no")))],
    );
    queue
        .enqueue(entry("", &["gone@x.test"]), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    wait_for(&queue, |l| l.is_empty()).await;

    let held = entry("a@y.test", &["h@x.test"]);
    queue
        .enqueue(held.clone(), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    queue.act(&held.id, QueueAction::Hold).await.unwrap();
    let _ = queue.list();
    // Either the first attempt already ran (delivered) or the hold stopped it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = transport.seen.lock().unwrap().clone();
    if !seen.contains(&"h@x.test".to_string()) {
        assert_eq!(queue.get(&held.id).unwrap().status_word(), "held");
        queue.act(&held.id, QueueAction::Release).await.unwrap();
        wait_for(&queue, |l| l.is_empty()).await;
    }
}

#[tokio::test]
async fn expired_recipients_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = start(
        dir.path(),
        vec![
            (
                "slow@x.test",
                Outcome::TempFail(Reply::new(451, [4, 4, 1], "no answer")),
            ),
            ("s@y.test", Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy"))),
        ],
    );
    let mut e = entry("s@y.test", &["slow@x.test"]);
    e.expires_at_ms = now_ms();
    queue
        .enqueue(e.clone(), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    let list = wait_for(&queue, |l| l.iter().any(|q| q.from == ReversePath::Null)).await;
    assert!(list.iter().all(|q| q.id != e.id));
}

#[tokio::test]
async fn dsn_status_keeps_the_servers_subject_and_detail() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = start(
        dir.path(),
        vec![
            (
                "loop@x.test",
                Outcome::PermFail(Reply::new(550, [5, 4, 4], "unable to route")),
            ),
            // Keeps the DSN in the queue long enough to inspect it.
            ("s@y.test", Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy"))),
        ],
    );
    queue
        .enqueue(entry("s@y.test", &["loop@x.test"]), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    let list = wait_for(&queue, |l| l.iter().any(|q| q.from == ReversePath::Null)).await;
    let dsn = list.iter().find(|q| q.from == ReversePath::Null).unwrap();
    let report = queue.inner.store.content(&dsn.id).unwrap().unwrap();
    let text = String::from_utf8_lossy(&report);
    assert!(text.contains("Status: 5.4.4\r\n"), "{text}");
}

#[test]
fn dsn_status_adjusts_only_the_class_digit() {
    let status = |action: DsnAction, code: u16, esc: Option<[u16; 3]>| {
        let reply = Reply {
            code,
            status: esc,
            text: "x".into(),
        };
        action.status(&reply)
    };
    assert_eq!(status(DsnAction::Failed, 550, Some([5, 4, 4])), "5.4.4");
    assert_eq!(status(DsnAction::Failed, 554, Some([5, 5, 4])), "5.5.4");
    // An expired temporary failure is reported as failed.
    assert_eq!(status(DsnAction::Failed, 550, Some([4, 4, 7])), "5.4.7");
    assert_eq!(status(DsnAction::Delayed, 451, Some([4, 5, 5])), "4.5.5");
    assert_eq!(status(DsnAction::Delayed, 451, Some([4, 4, 1])), "4.4.1");
    assert_eq!(status(DsnAction::Failed, 550, None), "5.0.0");
}

#[tokio::test]
async fn hold_is_idempotent_and_retry_never_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = start(
        dir.path(),
        vec![("h@x.test", Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy")))],
    );
    let held = entry("a@y.test", &["h@x.test"]);
    queue
        .enqueue(held.clone(), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    assert_eq!(
        queue.act(&held.id, QueueAction::Hold).await.unwrap(),
        ActResult::Done
    );
    assert_eq!(
        queue.act(&held.id, QueueAction::Hold).await.unwrap(),
        ActResult::Unchanged
    );
    assert_eq!(
        queue.act(&held.id, QueueAction::Retry).await.unwrap(),
        ActResult::Held
    );
    assert_eq!(queue.get(&held.id).unwrap().status_word(), "held");
    let all = queue.retry_all().await.unwrap();
    assert_eq!(all, RetryAll { retried: 0, held: 1 });
    let events = queue.inner.store.trace_events(0).unwrap();
    let held_events = events
        .iter()
        .filter(|e| e.queue_id == held.id && e.kind == TraceKind::Held)
        .count();
    assert_eq!(held_events, 1, "{events:#?}");
    assert_eq!(
        queue.act(&held.id, QueueAction::Release).await.unwrap(),
        ActResult::Done
    );
    assert_eq!(
        queue.act(&held.id, QueueAction::Release).await.unwrap(),
        ActResult::Unchanged
    );
    let missing = QueueId::generate();
    assert_eq!(
        queue.act(&missing, QueueAction::Hold).await.unwrap(),
        ActResult::Missing
    );
}

#[tokio::test]
async fn a_failed_manual_retry_keeps_the_schedule_and_the_backoff_step() {
    let dir = tempfile::tempdir().unwrap();
    let busy = || Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy"));
    let (queue, transport) = start(dir.path(), vec![("d@x.test", busy())]);
    let mut e = entry("a@y.test", &["d@x.test"]);
    let scheduled = now_ms() + 60_000;
    e.expires_at_ms = scheduled + 600_000;
    e.recipients[0].attempts = 1;
    e.recipients[0].status = RecipientStatus::Deferred {
        due_ms: scheduled,
        last_error: "451 4.3.0 busy".into(),
        delay_notified: false,
        scheduled_ms: None,
        early_attempts: 0,
    };
    queue
        .enqueue(e.clone(), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    assert_eq!(
        queue.act(&e.id, QueueAction::Retry).await.unwrap(),
        ActResult::Done
    );
    let list = wait_for(&queue, |l| l.iter().any(|q| q.recipients[0].attempts == 2)).await;
    assert_eq!(transport.seen.lock().unwrap().len(), 1);
    match &list[0].recipients[0].status {
        RecipientStatus::Deferred {
            due_ms,
            scheduled_ms,
            early_attempts,
            ..
        } => assert_eq!((*due_ms, *scheduled_ms, *early_attempts), (scheduled, None, 1)),
        other => panic!("{other:?}"),
    }
}

/// A transport with a bug: every attempt panics.
struct Panicking {
    calls: std::sync::atomic::AtomicUsize,
}

impl Transport for Panicking {
    fn attempt(&self, _job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
        Box::pin(async move {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("delivery bug");
        })
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        hostname: "gw.test".into(),
        retry: vec![Duration::from_millis(100)],
        expire_after: Duration::from_secs(60),
        max_concurrency: 4,
        delivery_memory: crate::queue::ContentMemory::new(64 << 20),
    }
}

#[tokio::test]
async fn a_panicking_delivery_defers_its_recipients_and_counts_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let transport = Arc::new(Panicking {
        calls: Default::default(),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    let queue = Queue::start(store, transport.clone(), settings(), policy).unwrap();
    let e = entry("s@y.test", &["r@x.test"]);
    queue
        .enqueue(e.clone(), b"Subject: t\r\n\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    // Deferred with the error, attempts counted, and retried on schedule.
    let list = wait_for(&queue, |l| {
        l.iter().any(|q| q.id == e.id && q.recipients[0].attempts >= 2)
    })
    .await;
    let recipient = &list.iter().find(|q| q.id == e.id).unwrap().recipients[0];
    match &recipient.status {
        RecipientStatus::Deferred { last_error, .. } => {
            assert!(last_error.contains("internal error"), "{last_error}")
        }
        other => panic!("not deferred: {other:?}"),
    }
    assert!(transport.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

/// The embedded store, except that the first `failures` content reads fail.
struct FlakyContent {
    inner: Arc<EmbeddedStore>,
    failures: std::sync::atomic::AtomicUsize,
}

impl Store for FlakyContent {
    fn commit(&self, writes: Vec<Write>) -> crate::store::Commit {
        self.inner.commit(writes)
    }
    fn submit(&self, writes: Vec<Write>) {
        self.inner.submit(writes)
    }
    fn objects(&self) -> Result<crate::config::objects::ObjectSet, StoreError> {
        self.inner.objects()
    }
    fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.inner.queue_entries()
    }
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        let failed = self
            .failures
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |left| left.checked_sub(1),
            )
            .is_ok();
        if failed {
            return Err(StoreError("read error".into()));
        }
        self.inner.content(id)
    }
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.inner.quarantine()
    }
    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.quarantined_content(id)
    }
    fn trace_events(&self, since_ms: u64) -> Result<Vec<TraceEvent>, StoreError> {
        self.inner.trace_events(since_ms)
    }
    fn queue_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::store::Page<QueueEntry>, StoreError> {
        self.inner.queue_page(after, limit)
    }
    fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::store::Page<QuarantineEntry>, StoreError> {
        self.inner.quarantine_page(after, limit)
    }
    fn trace_page(
        &self,
        since_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::store::Page<TraceEvent>, StoreError> {
        self.inner.trace_page(since_ms, after, limit)
    }
    fn tls_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.tls_state(prefix)
    }
}

#[tokio::test]
async fn content_that_cannot_be_loaded_is_retried_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyContent {
        inner: EmbeddedStore::open(dir.path()).unwrap(),
        failures: std::sync::atomic::AtomicUsize::new(2),
    });
    let transport = Arc::new(Scripted {
        answers: StdMutex::new(Vec::new()),
        seen: StdMutex::new(Vec::new()),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    let queue = Queue::start(store, transport.clone(), settings(), policy).unwrap();
    let e = entry("s@y.test", &["r@x.test"]);
    queue
        .enqueue(e.clone(), b"Subject: t\r\n\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    let list = wait_for(&queue, |l| {
        l.iter().any(|q| {
            q.id == e.id
                && matches!(&q.recipients[0].status,
                    RecipientStatus::Deferred { last_error, .. } if last_error.contains("cannot be loaded"))
        })
    })
    .await;
    assert!(list.iter().any(|q| q.id == e.id && q.recipients[0].attempts >= 1));
    // Two failed reads, then the third attempt delivers: nothing waits for a restart.
    wait_for(&queue, |l| l.iter().all(|q| q.id != e.id)).await;
    assert_eq!(transport.seen.lock().unwrap().as_slice(), ["r@x.test"]);
}
