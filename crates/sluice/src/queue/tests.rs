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
