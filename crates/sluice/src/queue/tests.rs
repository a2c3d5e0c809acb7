//! Queue behaviour with a scripted transport: retry, bounce, DSN, hold,
//! restart, down destinations. Time is tokio's paused clock: retries,
//! probes and expiry run on virtual time, never on wall-clock sleeps.
use mail_parser::MimeHeaders;

use super::*;
use crate::deliver::DeliveryAttempt;
use crate::message::{Address, BodyType, Notify};
use crate::store::{EmbeddedStore, Store as _};
use std::sync::Mutex as StdMutex;

/// A spool with every commit awaited on a blocking thread.
/// tokio's paused clock auto-advances whenever the runtime is idle, but
/// not while a blocking task runs: without this, time would jump to the
/// scheduler's next timer (hours, over many commits on a loaded machine)
/// each time the queue waits for the disk, and mail due tomorrow would
/// fall due in the middle of a test. Counts the entry writes
/// (`Update`) it commits.
struct SteadyClock(Arc<dyn Spool>, Arc<std::sync::atomic::AtomicUsize>);

fn steady(store: Arc<dyn Spool>) -> Arc<dyn Spool> {
    steady_counting(store).0
}

/// [`steady`], and the count of entry writes (`Update`) it committed.
fn steady_counting(store: Arc<dyn Spool>) -> (Arc<dyn Spool>, Arc<std::sync::atomic::AtomicUsize>) {
    let updates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (Arc::new(SteadyClock(store, updates.clone())), updates)
}

impl Spool for SteadyClock {
    fn commit_spool(&self, writes: Vec<SpoolWrite>) -> SpoolCommit {
        let updates = writes
            .iter()
            .filter(|w| matches!(w, SpoolWrite::Update(_)))
            .count();
        self.1.fetch_add(updates, std::sync::atomic::Ordering::SeqCst);
        let commit = self.0.commit_spool(writes);
        let handle = tokio::runtime::Handle::current();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || handle.block_on(commit))
                .await
                .expect("the commit's waiter panicked")
        })
    }
    fn submit_spool(&self, writes: Vec<SpoolWrite>) {
        self.0.submit_spool(writes)
    }
    fn entry(&self, id: &QueueId) -> Result<Option<QueueEntry>, SpoolError> {
        self.0.entry(id)
    }
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        self.0.content(id)
    }
    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, SpoolError> {
        self.0.queue_page(after, limit)
    }
    fn due_before(&self, before_ms: u64, from: &DueKey, limit: usize) -> Result<Vec<Due>, SpoolError> {
        self.0.due_before(before_ms, from, limit)
    }
    fn parked(
        &self,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QueueId>, SpoolError> {
        self.0.parked(destination, after, limit)
    }
    fn parked_destinations(&self) -> Result<Vec<(String, u64)>, SpoolError> {
        self.0.parked_destinations()
    }
    fn shape(&self) -> Result<Vec<ShapeCount>, SpoolError> {
        self.0.shape()
    }
    fn depth(&self) -> Result<QueueDepth, SpoolError> {
        self.0.depth()
    }
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, SpoolError> {
        self.0.quarantine()
    }
    fn quarantined(&self, id: &QueueId) -> Result<Option<QuarantineEntry>, SpoolError> {
        self.0.quarantined(id)
    }
    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        self.0.quarantined_content(id)
    }
    fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<QuarantineEntry>, SpoolError> {
        self.0.quarantine_page(after, limit)
    }
}

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

pub(super) fn entry(from: &str, to: &[&str]) -> QueueEntry {
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
        expires_at_ms: now + 86_400_000,
        hold: Hold::Active,
        source: Source {
            peer: "127.0.0.1".into(),
            helo: "client".into(),
            connector: None,
        },
    }
}

/// Waits until the store's writer thread has committed everything sent
/// before (a blocking wait keeps tokio's paused clock still), then lets
/// the queue's tasks run.
async fn settle_io(queue: &Queue) {
    let barrier = queue.inner.spool.commit_spool(Vec::new());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(barrier))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn wait_for(queue: &Queue, what: impl Fn(&[QueueEntry]) -> bool) -> Vec<QueueEntry> {
    // Each round lets 10 ms of the paused clock pass: 60 s in all, well
    // past any test's restart spread or retry schedule.
    for _ in 0..6000 {
        let list = queue.list().unwrap();
        if what(&list) {
            return list;
        }
        settle_io(queue).await;
    }
    let state = queue.state();
    panic!(
        "queue never reached the expected state (in memory {}, in flight {:?}, waiting {}): {:#?}",
        state.near.len(),
        state.in_flight,
        state.destinations.waiting(),
        queue.list()
    );
}

fn start(dir: &std::path::Path, answers: Vec<(&str, Outcome)>) -> (Queue, Arc<Scripted>) {
    let (queue, transport, _) = start_with_store(dir, answers);
    (queue, transport)
}

fn start_with_store(
    dir: &std::path::Path,
    answers: Vec<(&str, Outcome)>,
) -> (Queue, Arc<Scripted>, Arc<EmbeddedStore>) {
    let store = EmbeddedStore::open(dir).unwrap();
    let transport = Arc::new(Scripted {
        answers: StdMutex::new(answers.into_iter().map(|(a, o)| (a.to_string(), o)).collect()),
        seen: StdMutex::new(Vec::new()),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    (
        Queue::start(steady(store.clone()), transport.clone(), settings(), policy).unwrap(),
        transport,
        store,
    )
}

#[tokio::test(start_paused = true)]
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
    let report = queue.inner.spool.content(&dsn.id).unwrap().unwrap();
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

#[tokio::test(start_paused = true)]
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
    // Either the first attempt already ran (delivered) or the hold stopped it.
    for _ in 0..20 {
        settle_io(&queue).await;
    }
    // The entry first, then what the transport saw: an attempt that was
    // already running may still finish between the two reads.
    let stored = queue.get(&held.id);
    let attempted = transport.seen.lock().unwrap().contains(&"h@x.test".to_string());
    match stored {
        None => assert!(attempted, "the entry left the queue without an attempt"),
        Some(entry) => {
            if !attempted {
                assert_eq!(entry.status_word(), "held");
            }
            queue.act(&held.id, QueueAction::Release).await.unwrap();
            wait_for(&queue, |l| l.is_empty()).await;
        }
    }
}

#[tokio::test(start_paused = true)]
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
    // The queue's clock, not the wall clock: on a loaded machine the wall
    // clock runs ahead of the paused one, and the entry would not expire.
    e.expires_at_ms = queue.now_ms();
    queue
        .enqueue(e.clone(), b"\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    let list = wait_for(&queue, |l| l.iter().any(|q| q.from == ReversePath::Null)).await;
    assert!(list.iter().all(|q| q.id != e.id));
}

#[tokio::test(start_paused = true)]
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
    let report = queue.inner.spool.content(&dsn.id).unwrap().unwrap();
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

#[tokio::test(start_paused = true)]
async fn hold_is_idempotent_and_retry_never_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _, store) = start_with_store(
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
    let events = store.trace_events(0).unwrap();
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

#[tokio::test(start_paused = true)]
async fn a_failed_manual_retry_keeps_the_schedule_and_the_backoff_step() {
    let dir = tempfile::tempdir().unwrap();
    let busy = || Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy"));
    let (queue, transport) = start(dir.path(), vec![("d@x.test", busy())]);
    let mut e = entry("a@y.test", &["d@x.test"]);
    // Far enough that the paused clock, which leaps to the next timer
    // while the store's thread writes, does not reach it.
    let scheduled = now_ms() + 86_400_000;
    e.expires_at_ms = scheduled + 600_000;
    e.recipients[0].attempts = 1;
    e.recipients[0].status = RecipientStatus::Deferred {
        due_ms: scheduled,
        last_error: "451 4.3.0 busy".into(),
        delay_notified: false,
        scheduled_ms: None,
        early_attempts: 0,
        parked: false,
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
        restart_spread: Duration::from_secs(10),
        ..QueueSettings::new(
            "gw.test".into(),
            vec![Duration::from_millis(100)],
            Duration::from_secs(86_400),
            4,
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_delivery_defers_its_recipients_and_counts_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let transport = Arc::new(Panicking {
        calls: Default::default(),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    let queue = Queue::start(steady(store), transport.clone(), settings(), policy).unwrap();
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

/// The embedded store, except that the first `failures` content reads
/// fail; counts entry and content reads.
struct FlakyContent {
    inner: Arc<EmbeddedStore>,
    failures: std::sync::atomic::AtomicUsize,
    reads: std::sync::atomic::AtomicUsize,
}

impl Spool for FlakyContent {
    fn commit_spool(&self, writes: Vec<SpoolWrite>) -> SpoolCommit {
        self.inner.commit_spool(writes)
    }
    fn submit_spool(&self, writes: Vec<SpoolWrite>) {
        self.inner.submit_spool(writes)
    }
    fn entry(&self, id: &QueueId) -> Result<Option<QueueEntry>, SpoolError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.entry(id)
    }
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let failed = self
            .failures
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |left| left.checked_sub(1),
            )
            .is_ok();
        if failed {
            return Err(SpoolError::Failed("read error".into()));
        }
        self.inner.content(id)
    }
    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, SpoolError> {
        self.inner.queue_page(after, limit)
    }
    fn due_before(&self, before_ms: u64, from: &DueKey, limit: usize) -> Result<Vec<Due>, SpoolError> {
        self.inner.due_before(before_ms, from, limit)
    }
    fn parked(
        &self,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QueueId>, SpoolError> {
        self.inner.parked(destination, after, limit)
    }
    fn parked_destinations(&self) -> Result<Vec<(String, u64)>, SpoolError> {
        self.inner.parked_destinations()
    }
    fn shape(&self) -> Result<Vec<ShapeCount>, SpoolError> {
        self.inner.shape()
    }
    fn depth(&self) -> Result<QueueDepth, SpoolError> {
        self.inner.depth()
    }
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, SpoolError> {
        self.inner.quarantine()
    }
    fn quarantined(&self, id: &QueueId) -> Result<Option<QuarantineEntry>, SpoolError> {
        self.inner.quarantined(id)
    }
    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        self.inner.quarantined_content(id)
    }
    fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<QuarantineEntry>, SpoolError> {
        self.inner.quarantine_page(after, limit)
    }
}

#[tokio::test(start_paused = true)]
async fn content_that_cannot_be_loaded_is_retried_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyContent {
        inner: EmbeddedStore::open(dir.path()).unwrap(),
        failures: std::sync::atomic::AtomicUsize::new(2),
        reads: Default::default(),
    });
    let transport = Arc::new(Scripted {
        answers: StdMutex::new(Vec::new()),
        seen: StdMutex::new(Vec::new()),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    let queue = Queue::start(steady(store), transport.clone(), settings(), policy).unwrap();
    let mut e = entry("s@y.test", &["r@x.test"]);
    // Larger than what is kept in memory for a first attempt: every
    // attempt reads the store.
    let mut content = b"Subject: t\r\n\r\n".to_vec();
    content.resize(INLINE_CONTENT_READ as usize + 1, b'x');
    e.size = content.len() as u64;
    queue.enqueue(e.clone(), content, vec![]).await.unwrap();
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

#[tokio::test(start_paused = true)]
async fn a_first_attempt_reads_nothing_back_unless_the_entry_was_written_since() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyContent {
        inner: EmbeddedStore::open(dir.path()).unwrap(),
        failures: Default::default(),
        reads: Default::default(),
    });
    let transport = Arc::new(Scripted {
        answers: StdMutex::new(Vec::new()),
        seen: StdMutex::new(Vec::new()),
    });
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    let queue = Queue::start(steady(store.clone()), transport.clone(), settings(), policy).unwrap();
    let reads = || store.reads.load(std::sync::atomic::Ordering::SeqCst);
    let e = entry("s@y.test", &["r@x.test"]);
    queue
        .enqueue(e.clone(), b"Subject: t\r\n\r\nx\r\n".to_vec(), vec![])
        .await
        .unwrap();
    wait_for(&queue, |l| l.iter().all(|q| q.id != e.id)).await;
    assert_eq!(transport.seen.lock().unwrap().as_slice(), ["r@x.test"]);
    assert_eq!(reads(), 0, "the first attempt read the store");

    // Held before its attempt: the hold's write drops what was kept, so
    // the attempt would read the stored hold. (Stored and kept by hand,
    // not scheduled, so no attempt races the hold.)
    let held = entry("s@y.test", &["held@x.test"]);
    let content = b"Subject: t\r\n\r\nx\r\n".to_vec();
    queue
        .commit(vec![SpoolWrite::Enqueue(held.clone(), content.clone())])
        .await
        .unwrap();
    queue.fresh().keep(held.clone(), Arc::new(content));
    assert_eq!(
        queue.act(&held.id, QueueAction::Hold).await.unwrap(),
        ActResult::Done
    );
    assert!(
        queue.fresh().take(&held.id).is_none(),
        "the hold left the kept entry"
    );
}

/// Counts attempts and answers 451 4.4.1 (no answer from the host) until
/// `up` is set, then delivers. Records when (virtual time) each came.
struct Flappy {
    up: std::sync::atomic::AtomicBool,
    calls: StdMutex<Vec<(tokio::time::Instant, usize, bool)>>,
}

impl Flappy {
    fn new() -> Arc<Self> {
        Arc::new(Flappy {
            up: Default::default(),
            calls: StdMutex::new(Vec::new()),
        })
    }

    fn connections(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Recipients delivered, over every attempt made while up.
    fn delivered(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.2)
            .map(|c| c.1)
            .sum()
    }
}

/// The host answers from now on; the queue must be empty within 125 s
/// (virtual time): the next probe, then the parked mail behind it.
async fn come_up_and_drain(queue: &Queue, transport: &Flappy) {
    transport.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let up_at = tokio::time::Instant::now();
    while !queue.list().unwrap().is_empty() {
        assert!(
            up_at.elapsed() <= Duration::from_secs(125),
            "{:?}",
            up_at.elapsed()
        );
        settle_io(queue).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Transport for Flappy {
    fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
        Box::pin(async move {
            let up = self.up.load(std::sync::atomic::Ordering::SeqCst);
            self.calls
                .lock()
                .unwrap()
                .push((tokio::time::Instant::now(), job.recipients.len(), up));
            let outcome = if up {
                Outcome::Delivered(Reply::new(250, [2, 0, 0], "ok"))
            } else {
                Outcome::TempFail(Reply::new(451, [4, 4, 1], "connect to 127.0.0.9:25: refused"))
            };
            DeliveryAttempt {
                host: None,
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

fn start_over(spool: Arc<dyn Spool>, transport: Arc<dyn Transport>, settings: QueueSettings) -> Queue {
    let (_tx, policy) = watch::channel(Arc::new(Policy::default()));
    Queue::start(spool, transport, settings, policy).unwrap()
}

/// `n` messages to one recipient each, due at `due_ms`, in one commit.
async fn fill(spool: &dyn Spool, n: usize, to: &str, due_ms: u64) -> Vec<QueueId> {
    let mut ids = Vec::new();
    let mut writes = Vec::new();
    for _ in 0..n {
        let mut e = entry("s@y.test", &[to]);
        e.recipients[0].status = RecipientStatus::Queued { due_ms };
        ids.push(e.id.clone());
        writes.push(SpoolWrite::Enqueue(e, b"Subject: t\r\n\r\nx\r\n".to_vec()));
    }
    spool.commit_spool(writes).await.unwrap();
    ids
}

/// Settings of the dead-destination tests: down after 3 failures, probed
/// after 30 s, then 60 s, then every 120 s; parked mail rechecked after
/// an hour at the earliest.
fn dead_destination_settings() -> QueueSettings {
    let mut settings = settings();
    settings.destinations = DestinationSettings {
        down_after: 3,
        probe_first: Duration::from_secs(30),
        probe_max: Duration::from_secs(120),
    };
    settings.retry = vec![Duration::from_secs(1)];
    settings.restart_spread = Duration::ZERO;
    settings.park_recheck = (Duration::from_secs(3600), Duration::from_secs(4 * 3600));
    settings
}

/// Lets `span` of the paused clock pass, the queue's I/O settling.
async fn run_for(queue: &Queue, span: Duration) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < span {
        settle_io(queue).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Whether every entry of `ids` still queued is parked.
fn all_parked(queue: &Queue, ids: &[QueueId]) -> bool {
    ids.iter()
        .filter_map(|id| queue.get(id))
        .all(|e| e.recipients[0].status.is_parked())
}

#[tokio::test(start_paused = true)]
async fn a_dead_destination_is_probed_not_tried_per_message_and_resumes_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let transport = Flappy::new();
    let ids = fill(store.as_ref(), 200, "r@dead.test", now_ms()).await;
    let (spool, updates) = steady_counting(store.clone());
    let queue = start_over(spool, transport.clone(), dead_destination_settings());
    // Every message is parked, only a handful of connections made.
    wait_for(&queue, |l| {
        l.len() == 200 && l.iter().all(|q| q.recipients[0].status.is_parked())
    })
    .await;
    let first_wave = transport.connections();
    assert!(first_wave <= 3 + 4, "{first_wave} connections for 200 messages");
    assert_eq!(
        store.parked_destinations().unwrap(),
        vec![("mx:dead.test".to_string(), 200)]
    );
    // Ten minutes down: one probe per backoff step (30 s, 60 s, then every
    // 120 s), and each failed probe writes its own entry only: the parked
    // mail is not rewritten.
    let parked_writes = updates.load(std::sync::atomic::Ordering::SeqCst);
    run_for(&queue, Duration::from_secs(600)).await;
    let probes = transport.connections() - first_wave;
    assert!((3..=8).contains(&probes), "{probes} probes in ten minutes");
    let probe_writes = updates.load(std::sync::atomic::Ordering::SeqCst) - parked_writes;
    assert!(
        probe_writes <= probes,
        "{probe_writes} entry writes for {probes} failed probes of 200 parked messages"
    );
    assert!(all_parked(&queue, &ids));
    // New mail for it is parked as it is stored: no connection, no second write.
    let (connections, written) = (
        transport.connections(),
        updates.load(std::sync::atomic::Ordering::SeqCst),
    );
    let mut ids = ids;
    for _ in 0..20 {
        let e = entry("s@y.test", &["r@dead.test"]);
        ids.push(e.id.clone());
        queue.enqueue(e, b"\r\nx\r\n".to_vec(), vec![]).await.unwrap();
    }
    run_for(&queue, Duration::from_secs(10)).await;
    // (A probe may fall in these ten seconds: one connection, one write.)
    assert!(transport.connections() <= connections + 1);
    assert!(updates.load(std::sync::atomic::Ordering::SeqCst) <= written + 1);
    assert!(all_parked(&queue, &ids));
    let parked = ids
        .iter()
        .filter_map(|id| queue.get(id))
        .find(|e| e.recipients[0].attempts == 0)
        .expect("most messages were never attempted");
    match &parked.recipients[0].status {
        RecipientStatus::Deferred { last_error, .. } => {
            assert!(last_error.contains("destination not answering"), "{last_error}");
            assert!(last_error.contains("next probe"), "{last_error}");
        }
        other => panic!("{other:?}"),
    }
    // It answers: the next probe delivers, and the rest follows at once.
    come_up_and_drain(&queue, &transport).await;
    assert_eq!(transport.delivered(), 220);
    assert!(store.parked_destinations().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn parked_mail_past_its_expiry_bounces_on_time_without_a_connection_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let transport = Flappy::new();
    let expires_at = now_ms() + 600_000;
    let mut writes = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let mut e = entry("s@y.test", &["r@dead.test"]);
        e.expires_at_ms = expires_at;
        ids.push(e.id.clone());
        writes.push(SpoolWrite::Enqueue(e, b"Subject: t\r\n\r\nx\r\n".to_vec()));
    }
    store.commit_spool(writes).await.unwrap();
    let queue = start_over(
        steady(store.clone()),
        transport.clone(),
        dead_destination_settings(),
    );
    wait_for(&queue, |l| {
        l.iter().filter(|q| q.recipients[0].status.is_parked()).count() == 50
    })
    .await;
    // Until the expiry: parked, probed only.
    run_for(
        &queue,
        Duration::from_millis(expires_at - queue.now_ms() - 10_000),
    )
    .await;
    assert!(ids.iter().all(|id| queue.get(id).is_some()), "none expired early");
    // Within a minute of the expiry, every one bounced (a DSN to the sender
    // each).
    run_for(&queue, Duration::from_secs(70)).await;
    let left: Vec<QueueEntry> = queue.list().unwrap();
    assert!(
        ids.iter().all(|id| left.iter().all(|e| e.id != *id)),
        "still queued past expiry: {}",
        left.iter().filter(|e| ids.contains(&e.id)).count()
    );
    let reports = left.iter().filter(|e| e.from == ReversePath::Null).count();
    assert_eq!(reports, 50, "a failure report per expired message");
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_parked_mail_probes_first_never_per_message_and_resumes_on_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    // As a node leaves its spool when it stops with a dead destination's
    // mail parked: due only for a recheck hours away (or overdue).
    let now = now_ms();
    let mut writes = Vec::new();
    let mut ids = Vec::new();
    for n in 0..100u64 {
        let mut e = entry("s@y.test", &["r@dead.test"]);
        e.recipients[0].status = RecipientStatus::Deferred {
            due_ms: if n % 10 == 0 {
                now - 1000
            } else {
                now + 2 * 3_600_000
            },
            last_error: "parked".into(),
            delay_notified: false,
            scheduled_ms: None,
            early_attempts: 0,
            parked: true,
        };
        ids.push(e.id.clone());
        writes.push(SpoolWrite::Enqueue(e, b"Subject: t\r\n\r\nx\r\n".to_vec()));
    }
    store.commit_spool(writes).await.unwrap();
    let transport = Flappy::new();
    let (spool, updates) = steady_counting(store.clone());
    let queue = start_over(spool, transport.clone(), dead_destination_settings());
    // Five minutes: the destination is known down from the spool; probes
    // only (at the start, then 60 s and 120 s apart), no attempt per
    // message. The overdue ones
    // are parked again (one write each), no others.
    run_for(&queue, Duration::from_secs(300)).await;
    let connections = transport.connections();
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections after the restart"
    );
    assert!(all_parked(&queue, &ids));
    let written = updates.load(std::sync::atomic::Ordering::SeqCst);
    assert!(written <= 10 + connections, "{written} entry writes");
    // It answers: the next probe delivers, the rest follows within seconds.
    come_up_and_drain(&queue, &transport).await;
    assert_eq!(transport.delivered(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_restart_reads_no_backlog_up_front_keeps_the_schedule_and_spreads_overdue_mail() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let overdue_at = now_ms() - 3_600_000;
    let overdue = fill(store.as_ref(), 100, "r@x.test", overdue_at).await;
    let later = fill(store.as_ref(), 1, "r@x.test", now_ms() + 3_600_000).await;
    let transport = Flappy::new();
    transport.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut settings = settings();
    settings.schedule_capacity = 16;
    let started = tokio::time::Instant::now();
    let queue = start_over(steady(store.clone()), transport.clone(), settings);
    settle_io(&queue).await;
    // Memory holds at most the capacity; the stored schedule is untouched.
    assert!(queue.state().near.len() <= 16);
    let waiting = overdue
        .iter()
        .filter_map(|id| queue.get(id))
        .find(|e| e.recipients[0].attempts == 0)
        .expect("some overdue mail still waits its turn");
    assert_eq!(waiting.next_due_ms(), Some(overdue_at));
    wait_for(&queue, |l| l.len() == 1).await;
    let calls = transport.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 100);
    let offsets: Vec<Duration> = calls.iter().map(|c| c.0 - started).collect();
    let (first, last) = (offsets.iter().min().unwrap(), offsets.iter().max().unwrap());
    assert!(*last - *first >= Duration::from_secs(5), "{first:?}..{last:?}");
    assert!(*last <= Duration::from_secs(11), "{last:?}");
    let at_once = offsets.iter().filter(|o| **o == *first).count();
    assert!(at_once < 20, "{at_once} attempts at the same instant");
    assert_eq!(queue.get(&later[0]).unwrap().recipients[0].attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn memory_holds_the_due_window_not_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    /// Never answers: attempts stay in flight.
    struct Stuck;
    impl Transport for Stuck {
        fn attempt(&self, _job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
            Box::pin(std::future::pending())
        }
    }
    let mut settings = settings();
    settings.schedule_capacity = 32;
    settings.restart_spread = Duration::ZERO;
    fill(store.as_ref(), 300, "r@x.test", now_ms()).await;
    fill(store.as_ref(), 300, "r@x.test", now_ms() + 86_400_000).await;
    let queue = start_over(steady(store.clone()), Arc::new(Stuck), settings);
    for _ in 0..50 {
        settle_io(&queue).await;
        let state = queue.state();
        assert!(state.near.len() <= 32, "{} in memory", state.near.len());
        assert!(state.in_flight.len() <= 4);
    }
    assert_eq!(queue.state().in_flight.len(), 4);
    assert_eq!(queue.list().unwrap().len(), 600);
}

#[tokio::test(start_paused = true)]
async fn retry_all_streams_through_the_spool_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let transport = Flappy::new();
    transport.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let ids = fill(store.as_ref(), BATCH + 88, "r@x.test", now_ms() + 86_400_000).await;
    let queue = start_over(steady(store.clone()), transport.clone(), settings());
    queue.act(&ids[0], QueueAction::Hold).await.unwrap();
    let done = queue.retry_all().await.unwrap();
    assert_eq!(
        done,
        RetryAll {
            retried: BATCH + 87,
            held: 1
        }
    );
    wait_for(&queue, |l| l.len() == 1).await;
    assert_eq!(transport.calls.lock().unwrap().len(), BATCH + 87);
}

/// The queue defines what it needs from storage; the store implements it.
/// One direction only: product code under queue/ never names store/
/// (these tests run on the real embedded store, so this file may).
#[test]
fn the_queue_does_not_import_the_store() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/queue");
    let mut checked = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        if path.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in ["crate::store", "super::super::store", "store::"] {
            assert!(
                !text.contains(needle),
                "{} names the store ({needle}): the queue's storage is its Spool trait",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} files under {}", dir.display());
}

#[tokio::test(start_paused = true)]
async fn delete_by_filter_streams_through_the_spool_and_traces_each_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let later = now_ms() + 86_400_000;
    let doomed = fill(store.as_ref(), BATCH + 10, "r@b.test", later).await;
    let kept = fill(store.as_ref(), 20, "r@a.test", later).await;
    let queue = start_over(steady(store.clone()), Flappy::new(), settings());
    queue.act(&kept[0], QueueAction::Hold).await.unwrap();
    let filter = |status: Option<&str>, domain: Option<&str>| EntryFilter {
        status: status.map(str::to_string),
        domain: domain.map(str::to_string),
    };
    assert_eq!(
        queue.delete_all(&filter(None, Some("B.test"))).await.unwrap(),
        BATCH + 10
    );
    assert!(queue.get(&doomed[BATCH]).is_none());
    assert_eq!(queue.delete_all(&filter(Some("held"), None)).await.unwrap(), 1);
    assert_eq!(queue.list().unwrap().len(), 19);
    let deleted = store
        .trace_events(0)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == TraceKind::Deleted)
        .count();
    assert_eq!(deleted, BATCH + 11);
    assert_eq!(queue.delete_all(&EntryFilter::default()).await.unwrap(), 19);
    assert!(queue.shape().unwrap().is_empty(), "the counters follow deletions");
}

/// Holds every attempt until the test opens the gate, then defers it.
struct Gated {
    gate: tokio::sync::Semaphore,
    started: std::sync::atomic::AtomicUsize,
}

impl Transport for Gated {
    fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
        Box::pin(async move {
            self.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            DeliveryAttempt {
                host: Some("127.0.0.9:25".into()),
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes: job
                    .recipients
                    .iter()
                    .map(|r| {
                        let busy = Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy"));
                        (r.address.clone(), busy)
                    })
                    .collect(),
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_hold_or_delete_during_an_attempt_outlives_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let transport = Arc::new(Gated {
        gate: tokio::sync::Semaphore::new(0),
        started: Default::default(),
    });
    let queue = start_over(steady(store.clone()), transport.clone(), settings());
    let held = entry("a@y.test", &["h@x.test"]);
    let deleted = entry("a@y.test", &["d@x.test"]);
    let untouched = entry("a@y.test", &["u@x.test"]);
    for e in [&held, &deleted, &untouched] {
        queue
            .enqueue(e.clone(), b"\r\nx\r\n".to_vec(), vec![])
            .await
            .unwrap();
    }
    for _ in 0..600 {
        if transport.started.load(std::sync::atomic::Ordering::SeqCst) == 3 {
            break;
        }
        settle_io(&queue).await;
    }
    assert_eq!(transport.started.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(
        queue.act(&held.id, QueueAction::Hold).await.unwrap(),
        ActResult::Done
    );
    assert_eq!(
        queue.act(&deleted.id, QueueAction::Delete).await.unwrap(),
        ActResult::Done
    );
    transport.gate.add_permits(3);
    let list = wait_for(&queue, |list| {
        list.iter().all(|e| e.recipients[0].attempts == 1) && list.len() == 2
    })
    .await;
    let stored = |id: &QueueId| list.iter().find(|e| e.id == *id).cloned();
    // The deferral was recorded, and the hold with it.
    assert_eq!(stored(&held.id).unwrap().status_word(), "held");
    assert!(
        stored(&deleted.id).is_none(),
        "a deleted entry came back: {list:#?}"
    );
    assert_ne!(stored(&untouched.id).unwrap().status_word(), "held");
    assert!(queue.state().changed_in_flight.is_empty());
}
