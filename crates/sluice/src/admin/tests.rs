//! Router tests: requests go through `router(...).oneshot(...)` against the
//! node's own backend ([`NodeAdmin`]) on a temporary store, so the API is
//! tested with the validation, merge, queue and quarantine it runs with.

use super::*;
use crate::config::objects::OutboundConnectorObject;
use crate::deliver::{DeliveryAttempt, DeliveryJob};
use crate::message::{Address, BodyType, Notify, QueueId, ReversePath};
use crate::queue::{
    Acceptance, Hold, QuarantineEntry, QueueEntry, QueueSettings, QueuedRecipient, RecipientStatus, Source,
    Transport,
};
use crate::route::Route;
use crate::store::{EmbeddedStore, Store, Write};
use crate::trace::{now_ms, TraceEvent, TraceKind};
use axum::body::Body;
use axum::http::{header, Method, Request as HttpRequest};
use http_body_util::BodyExt;
use std::time::Duration;
use tower::ServiceExt;

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef0123456789";

/// Does nothing: an attempt never ends, so a message made due stays in
/// the queue, in flight, as it was.
struct NoDelivery;

impl Transport for NoDelivery {
    fn attempt(
        &self,
        _job: DeliveryJob,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = DeliveryAttempt> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

/// The node's backend on a temporary store: an embedded store in a
/// temporary directory, a real queue delivering nothing.
pub(crate) struct TestNode {
    pub(crate) admin: Arc<NodeAdmin>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// An empty node.
    pub(crate) async fn new() -> TestNode {
        TestNode::with(Vec::new(), Vec::new()).await
    }

    /// A node whose store already holds these queue entries and trace events.
    pub(crate) async fn with(queued: Vec<QueueEntry>, events: Vec<TraceEvent>) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(dir.path()).unwrap();
        let mut writes: Vec<Write> = queued
            .into_iter()
            .map(|entry| {
                Write::Spool(crate::queue::SpoolWrite::Enqueue(
                    entry,
                    b"Subject: queued\r\n\r\nbody\r\n".to_vec(),
                ))
            })
            .collect();
        writes.push(Write::Trace(events));
        store.commit(writes).await.unwrap();
        let (policy, watching) = tokio::sync::watch::channel(Arc::new(crate::policy::Policy::default()));
        let settings = QueueSettings::new(
            "gw.test".into(),
            vec![Duration::from_secs(60)],
            Duration::from_secs(3600),
            1,
        );
        let queue =
            crate::queue::Queue::start(store.clone(), Arc::new(NoDelivery), settings, watching).unwrap();
        let resolver = Arc::new(crate::dns::StaticResolver::default());
        let deliverer = crate::deliver::Deliverer::new(
            crate::deliver::DeliverySettings::new("gw.test", dir.path()),
            resolver,
        )
        .unwrap();
        let keys = Arc::new(crate::auth::keys::Keyring::load(store.clone(), None).unwrap());
        let admin = Arc::new(NodeAdmin {
            store,
            queue,
            policy,
            writes: tokio::sync::Mutex::new(()),
            deliverer: Arc::new(deliverer),
            partner: None,
            keys,
            directory: Default::default(),
        });
        TestNode { admin, _dir: dir }
    }

    /// A node holding these messages in quarantine (see [`held`]).
    pub(crate) async fn with_quarantine(ids: &[&str]) -> TestNode {
        let node = TestNode::new().await;
        let acceptance = Acceptance {
            quarantined: ids.iter().map(|id| held_entry(id)).collect(),
            ..Acceptance::default()
        };
        node.admin.queue.accept(acceptance).await.unwrap();
        node
    }

    /// The backend, as the router takes it.
    pub(crate) fn backend(&self) -> Arc<dyn AdminBackend> {
        self.admin.clone()
    }

    /// The objects as stored.
    async fn stored(&self) -> ObjectSet {
        self.admin.store.objects().unwrap()
    }
}

/// A message waiting in the queue, not due for an hour, as `status` says.
fn entry(id: &str, status: QueueStatus) -> QueueEntry {
    let now = now_ms();
    let due_ms = now + 3_600_000;
    QueueEntry {
        id: QueueId(id.into()),
        message_id: Some(format!("<{id}@contoso.test>")),
        from: ReversePath::try_from("alice@contoso.test".to_string()).unwrap(),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: vec![QueuedRecipient {
            address: Address::parse("bob@fabrikam.test").unwrap(),
            notify: Notify::Default,
            orcpt: None,
            route: Route::Mx,
            status: match status {
                QueueStatus::Deferred => RecipientStatus::Deferred {
                    due_ms,
                    last_error: "451 4.4.1 down".into(),
                    delay_notified: false,
                    scheduled_ms: None,
                    early_attempts: 0,
                    parked: false,
                },
                _ => RecipientStatus::Queued { due_ms },
            },
            attempts: 0,
        }],
        size: 1234,
        received_at_ms: now,
        expires_at_ms: now + 86_400_000,
        hold: if status == QueueStatus::Held {
            Hold::Held
        } else {
            Hold::Active
        },
        source: Source {
            peer: "127.0.0.1".into(),
            helo: "client".into(),
            connector: None,
        },
    }
}

/// A message quarantined by "Block card numbers" at 2025-01-01T00:00:00Z,
/// for two recipients, with its content.
fn held_entry(id: &str) -> (QuarantineEntry, Vec<u8>) {
    let mut entry = entry(id, QueueStatus::Queued);
    let mut carol = entry.recipients[0].clone();
    carol.address = Address::parse("carol@fabrikam.test").unwrap();
    entry.recipients.push(carol);
    let content =
        b"From: Alice <alice@contoso.test>\r\nSubject: Card details\r\n\r\n4111 1111 1111 1111\r\n".to_vec();
    entry.size = content.len() as u64;
    let held = QuarantineEntry {
        entry,
        rule: "Block card numbers".into(),
        quarantined_at_ms: 1_735_689_600_000,
        reason: "credit_card:2".into(),
    };
    (held, content)
}

/// How the API shows a quarantined message, for the CLI's rendering tests.
pub(crate) fn held(id: &str) -> QuarantineView {
    QuarantineView {
        id: id.into(),
        message_id: format!("<{id}@contoso.test>"),
        from: "alice@contoso.test".into(),
        recipients: vec!["bob@fabrikam.test".into(), "carol@fabrikam.test".into()],
        size: 2048,
        rule: "Block card numbers".into(),
        reason: "credit_card:2".into(),
        quarantined_at: "2025-01-01T00:00:00Z".into(),
        headers: Some(vec![
            HeaderField {
                name: "From".into(),
                value: "Alice <alice@contoso.test>".into(),
            },
            HeaderField {
                name: "Subject".into(),
                value: "Card details".into(),
            },
        ]),
    }
}

/// A trace event of a message (stored, as the node stores it, by its
/// Message-ID without brackets; its queue id made from it), a minute old.
fn event(message_id: &str, kind: TraceKind) -> TraceEvent {
    let id = message_id.trim_matches(['<', '>']);
    TraceEvent {
        at_ms: now_ms() - 60_000,
        kind,
        queue_id: QueueId(id.replace('@', ".")),
        message_id: Some(id.into()),
        from: "alice@contoso.test".into(),
        to: Some("bob@fabrikam.test".into()),
        connector: None,
        remote_host: None,
        detail: None,
        node: None,
    }
}

struct Harness {
    node: TestNode,
    router: Router,
}

impl Harness {
    async fn new() -> Harness {
        Harness::on(TestNode::new().await)
    }

    fn on(node: TestNode) -> Harness {
        let router = router(node.backend(), TOKEN.into());
        Harness { node, router }
    }

    async fn send(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, String) {
        let mut request = HttpRequest::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Body::from(body.unwrap_or_default().to_string()))
            .unwrap();
        send_raw(&self.router, request).await
    }
}

async fn send_raw(router: &Router, request: HttpRequest<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn error_text(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|_| panic!("not a JSON error body: {body}"))
        .error
}

const SCANNER: &str = r#"{"name": "To scanner", "smart_hosts": ["127.0.0.30:2525"],
    "transport_rule_scoped": true, "tls": "encryption_only"}"#;

#[tokio::test]
async fn requests_without_the_right_token_are_refused() {
    let harness = Harness::new().await;
    for authorization in [None, Some("Bearer wrong"), Some(TOKEN)] {
        let mut request = HttpRequest::builder().uri("/api/v1/accepted-domains");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let (status, body) = send_raw(&harness.router, request.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert!(error_text(&body).contains("token"));
    }
    // Unknown paths are hidden behind the token too.
    let request = HttpRequest::builder()
        .uri("/api/v1/nothing")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send_raw(&harness.router, request).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = harness.send(Method::GET, "/api/v1/accepted-domains", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let harness = Harness::new().await;
    let request = HttpRequest::builder()
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send_raw(&harness.router, request).await,
        (StatusCode::OK, "ok".to_string())
    );
}

#[tokio::test]
async fn outbound_connector_create_list_get_put_delete_round_trip() {
    let harness = Harness::new().await;
    let base = "/api/v1/outbound-connectors";

    let (status, body) = harness.send(Method::POST, base, Some(SCANNER)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = harness.send(Method::GET, base, None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<OutboundConnectorObject> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].smart_hosts, vec!["127.0.0.30:2525".to_string()]);

    // Names are matched case-insensitively, as the CLI user types them.
    let (status, body) = harness
        .send(Method::GET, &format!("{base}/to%20SCANNER"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown: OutboundConnectorObject = serde_json::from_str(&body).unwrap();
    assert_eq!(shown, listed[0]);

    // PUT replaces the whole object (tls falls back to its default) and the
    // name in the path wins over the body's.
    let replacement = r#"{"name": "ignored", "smart_hosts": ["127.0.0.31:25"],
        "transport_rule_scoped": true, "enabled": false}"#;
    let (status, body) = harness
        .send(Method::PUT, &format!("{base}/To%20scanner"), Some(replacement))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = harness.node.stored().await;
    assert_eq!(stored.outbound_connectors.len(), 1);
    let connector = &stored.outbound_connectors[0];
    assert_eq!(connector.name, "To scanner");
    assert_eq!(connector.smart_hosts, vec!["127.0.0.31:25".to_string()]);
    assert_eq!(connector.tls, crate::config::objects::TlsLevel::Opportunistic);
    assert!(!connector.enabled);

    let (status, _) = harness
        .send(Method::DELETE, &format!("{base}/To%20scanner"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(harness.node.stored().await.outbound_connectors.is_empty());
    let (status, body) = harness
        .send(Method::GET, &format!("{base}/To%20scanner"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_text(&body).contains("outbound connector"));
}

#[tokio::test]
async fn duplicate_create_is_a_conflict_and_changes_nothing() {
    let harness = Harness::new().await;
    let base = "/api/v1/accepted-domains";
    let (status, _) = harness
        .send(Method::POST, base, Some(r#"{"name": "contoso.test"}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = harness
        .send(
            Method::POST,
            base,
            Some(r#"{"name": "contoso.test", "type": "internal_relay"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(error_text(&body).contains("contoso.test"));
    let stored = harness.node.stored().await;
    assert_eq!(
        stored.accepted_domains[0].kind,
        crate::config::objects::AcceptedDomainType::Authoritative
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_naming_object_and_key() {
    let harness = Harness::new().await;
    let bad = r#"{"name": "Partner", "sender_ip_addresses": ["10.0.0.0/33"]}"#;
    let (status, body) = harness
        .send(Method::POST, "/api/v1/inbound-connectors", Some(bad))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = error_text(&body);
    assert!(error.contains("Partner"), "{error}");
    assert!(error.contains("sender_ip_addresses"), "{error}");

    // Unknown keys and broken JSON are 400 with a JSON body too.
    let (status, body) = harness
        .send(
            Method::POST,
            "/api/v1/accepted-domains",
            Some(r#"{"name": "a.test", "colour": "blue"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_text(&body).contains("colour"));
    let (status, body) = harness
        .send(Method::POST, "/api/v1/accepted-domains", Some("{"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_text(&body).starts_with("invalid JSON body"));
    assert_eq!(harness.node.stored().await, ObjectSet::default());
}

#[tokio::test]
async fn unknown_objects_are_not_found() {
    let harness = Harness::new().await;
    for (method, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (
            Method::PUT,
            Some(r#"{"name": "x", "sender_ip_addresses": ["10.0.0.1"]}"#),
        ),
    ] {
        let (status, _) = harness
            .send(method.clone(), "/api/v1/inbound-connectors/nobody", body)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
    }
    let (status, _) = harness.send(Method::GET, "/api/v1/queue/Q9", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = harness.send(Method::GET, "/api/v1/bogus", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn apply_is_all_or_nothing_and_export_returns_the_set() {
    let harness = Harness::new().await;
    let good = r#"{"objects": {"accepted_domain": [{"name": "contoso.test"}],
        "outbound_connector": [{"name": "To scanner", "smart_hosts": ["127.0.0.30:2525"],
        "transport_rule_scoped": true}]}}"#;
    let (status, body) = harness.send(Method::POST, "/api/v1/apply", Some(good)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let one_bad = r#"{"objects": {"accepted_domain": [{"name": "fabrikam.test"}],
        "outbound_connector": [{"name": "Broken", "recipient_domains": ["*"]}]}}"#;
    let (status, body) = harness.send(Method::POST, "/api/v1/apply", Some(one_bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_text(&body).contains("Broken"));

    let (status, body) = harness.send(Method::GET, "/api/v1/export", None).await;
    assert_eq!(status, StatusCode::OK);
    let exported: ObjectSet = serde_json::from_str(&body).unwrap();
    assert_eq!(exported.accepted_domains.len(), 1);
    assert_eq!(exported.accepted_domains[0].name, "contoso.test");
    assert_eq!(exported.outbound_connectors[0].name, "To scanner");

    let prune = r#"{"objects": {"accepted_domain": [{"name": "fabrikam.test"}]}, "prune": true}"#;
    let (status, _) = harness.send(Method::POST, "/api/v1/apply", Some(prune)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stored = harness.node.stored().await;
    assert_eq!(stored.accepted_domains.len(), 1);
    assert!(stored.outbound_connectors.is_empty());
}

#[tokio::test]
async fn queue_list_filters_and_actions_reach_the_backend() {
    let queued = vec![
        entry("Q1", QueueStatus::Queued),
        entry("Q2", QueueStatus::Deferred),
        entry("Q3", QueueStatus::Deferred),
    ];
    let harness = Harness::on(TestNode::with(queued, Vec::new()).await);

    let (status, body) = harness
        .send(Method::GET, "/api/v1/queue?status=deferred", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<QueueEntryView> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["Q2", "Q3"]
    );
    let (status, _) = harness.send(Method::GET, "/api/v1/queue?status=lost", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = harness.send(Method::POST, "/api/v1/queue/Q1/hold", None).await;
    assert_eq!(status, StatusCode::OK);
    let done: QueueActionResult = serde_json::from_str(&body).unwrap();
    assert_eq!((done.changed, done.message.as_str()), (true, "Q1: held"));
    let (status, body) = harness.send(Method::GET, "/api/v1/queue/Q1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<QueueEntryView>(&body).unwrap().status,
        QueueStatus::Held
    );
    // postsuper: holding a held entry changes nothing; retry never releases.
    let (status, body) = harness.send(Method::POST, "/api/v1/queue/Q1/hold", None).await;
    assert_eq!(status, StatusCode::OK);
    let again: QueueActionResult = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (again.changed, again.message.as_str()),
        (false, "Q1: already held; nothing changed")
    );
    let (status, body) = harness.send(Method::POST, "/api/v1/queue/Q1/retry", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error_text(&body).contains("Q1 is held and was not retried"),
        "{body}"
    );

    let (status, body) = harness.send(Method::POST, "/api/v1/queue/retry", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<RetryAllResult>(&body).unwrap(),
        RetryAllResult { retried: 2, held: 1 }
    );
    let (status, body) = harness.send(Method::GET, "/api/v1/queue/summary", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: QueueSummary = serde_json::from_str(&body).unwrap();
    assert_eq!(summary.age_buckets_minutes.len(), AGE_BUCKETS_MINUTES.len() + 1);

    let (status, _) = harness.send(Method::DELETE, "/api/v1/queue/Q2", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = harness.send(Method::DELETE, "/api/v1/queue/Q2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = harness.send(Method::POST, "/api/v1/queue/Q1/explode", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(harness.node.admin.queue.list().unwrap().len(), 2);
}

#[tokio::test]
async fn trace_passes_the_query_and_checks_since() {
    let events = vec![
        event("<a@x>", TraceKind::Received),
        event("<b@x>", TraceKind::Received),
        event("<b@x>", TraceKind::Delivered),
    ];
    let harness = Harness::on(TestNode::with(Vec::new(), events).await);
    let (status, body) = harness
        .send(
            Method::GET,
            "/api/v1/trace?message_id=%3Cb%40x%3E&since=1h&status=delivered",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events: Vec<TraceEventView> = serde_json::from_str(&body).unwrap();
    // Every filter reached the node's trace: only <b@x>'s timeline, which
    // reached "delivered", within the hour.
    assert_eq!(
        events
            .iter()
            .map(|e| (e.message_id.as_str(), e.event.as_str()))
            .collect::<Vec<_>>(),
        [("b@x", "received"), ("b@x", "delivered")]
    );
    let (status, body) = harness
        .send(
            Method::GET,
            "/api/v1/trace?message_id=%3Ca%40x%3E&status=delivered",
            None,
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));

    let (status, body) = harness
        .send(Method::GET, "/api/v1/trace?since=yesterday", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_text(&body).starts_with("since:"));
}

#[tokio::test]
async fn quarantine_list_show_release_delete() {
    let harness = Harness::on(TestNode::with_quarantine(&["Q1", "Q2"]).await);

    let (status, body) = harness.send(Method::GET, "/api/v1/quarantine", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<QuarantineView> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(),
        ["Q1", "Q2"]
    );
    assert_eq!(listed[0].rule, "Block card numbers");
    // The list does not carry headers, not even as an empty list.
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(raw[0].get("headers").is_none(), "{body}");

    let (status, body) = harness.send(Method::GET, "/api/v1/quarantine/Q2", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown: QuarantineView = serde_json::from_str(&body).unwrap();
    assert_eq!(shown.id, "Q2");
    assert_eq!(shown.recipients, ["bob@fabrikam.test", "carol@fabrikam.test"]);
    assert_eq!(
        (shown.rule.as_str(), shown.reason.as_str()),
        ("Block card numbers", "credit_card:2")
    );
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["quarantined_at"], "2025-01-01T00:00:00.000Z");
    assert_eq!(raw["headers"][0]["value"], "Alice <alice@contoso.test>");
    assert_eq!(raw["headers"][1]["name"], "Subject");
    assert_eq!(raw["headers"][1]["value"], "Card details");
    assert!(
        raw.get("body").is_none() && raw.get("content").is_none(),
        "{body}"
    );

    let (status, body) = harness
        .send(Method::POST, "/api/v1/quarantine/Q1/release", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(body.is_empty());
    let queue = &harness.node.admin.queue;
    assert!(
        queue.get(&QueueId("Q1".into())).is_some(),
        "released into the queue"
    );
    let (status, _) = harness.send(Method::DELETE, "/api/v1/quarantine/Q2", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(harness.node.admin.queue.quarantine().unwrap().is_empty());
    // Deleting is not releasing.
    assert!(queue.get(&QueueId("Q2".into())).is_none(), "deleted, not queued");
    let (status, body) = harness.send(Method::GET, "/api/v1/quarantine", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
}

#[tokio::test]
async fn unknown_quarantined_messages_are_not_found() {
    let harness = Harness::on(TestNode::with_quarantine(&["Q1"]).await);
    for (method, uri) in [
        (Method::GET, "/api/v1/quarantine/Q9"),
        (Method::POST, "/api/v1/quarantine/Q9/release"),
        (Method::DELETE, "/api/v1/quarantine/Q9"),
        (Method::POST, "/api/v1/quarantine/Q1/explode"),
    ] {
        let (status, body) = harness.send(method.clone(), uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        if uri.contains("Q9") {
            assert_eq!(error_text(&body), "no such quarantined message \"Q9\"");
        }
    }
    assert_eq!(harness.node.admin.queue.quarantine().unwrap().len(), 1);
}

#[tokio::test]
async fn quarantine_needs_the_token() {
    let harness = Harness::on(TestNode::with_quarantine(&["Q1"]).await);
    for (method, uri) in [
        (Method::GET, "/api/v1/quarantine"),
        (Method::GET, "/api/v1/quarantine/Q1"),
        (Method::POST, "/api/v1/quarantine/Q1/release"),
        (Method::DELETE, "/api/v1/quarantine/Q1"),
    ] {
        let request = HttpRequest::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let (status, _) = send_raw(&harness.router, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    assert_eq!(harness.node.admin.queue.quarantine().unwrap().len(), 1);
    assert!(
        harness.node.admin.queue.get(&QueueId("Q1".into())).is_none(),
        "not released"
    );
}

#[tokio::test]
async fn internal_errors_hide_their_detail() {
    let response = AdminError::Internal("disk /secret/path failed".into()).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!text.contains("secret"), "{text}");
}

/// The admin center shows a 400 beside the field its key names: every
/// refusal of an object write names the object and the key.
#[tokio::test]
async fn refusals_name_the_key_the_admin_center_maps_to_a_field() {
    let harness = Harness::new().await;
    let cases = [
        (
            "/api/v1/outbound-connectors",
            r#"{"name": "x", "smart_hosts": ["127.0.0.1:99999"]}"#,
            "outbound_connector \"x\": smart_hosts: ",
        ),
        (
            "/api/v1/rules",
            r#"{"name": "r", "actions": {"redirect_to": ["not an address"]}}"#,
            "rule \"r\": actions.redirect_to: ",
        ),
        (
            "/api/v1/rules",
            r#"{"name": "r", "actions": {"route_via_connector": "Nowhere"}}"#,
            "rule \"r\": actions.route_via_connector: ",
        ),
        (
            "/api/v1/accepted-domains",
            r#"{"name": "not a domain"}"#,
            "accepted_domain \"not a domain\": name: ",
        ),
        // A body serde refuses names the key after "target type: ".
        (
            "/api/v1/outbound-connectors",
            r#"{"name": "x", "tls": "sometimes"}"#,
            "target type: tls: ",
        ),
    ];
    for (uri, body, expected) in cases {
        let (status, answer) = harness.send(Method::POST, uri, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}");
        let error = error_text(&answer);
        assert!(error.contains(expected), "{uri} {body}: {error}");
    }
    assert_eq!(harness.node.stored().await, ObjectSet::default());
}

#[tokio::test]
async fn export_leaves_out_runtime_state_and_apply_keeps_it() {
    let harness = Harness::new().await;
    let stored: ObjectSet = toml::from_str(
        r#"
[[outbound_connector]]
name = "To scanner"
smart_hosts = ["127.0.0.30:2525"]
transport_rule_scoped = true
[outbound_connector.last_validation]
at = "2026-11-24T10:00:00.000Z"
passed = true
"#,
    )
    .unwrap();
    harness
        .node
        .admin
        .store
        .commit(vec![Write::Objects(stored.clone())])
        .await
        .unwrap();

    let (status, exported) = harness.send(Method::GET, "/api/v1/export", None).await;
    assert_eq!(status, StatusCode::OK, "{exported}");
    assert!(!exported.contains("last_validation"), "{exported}");
    assert!(exported.contains("127.0.0.30:2525"), "{exported}");

    let apply = format!(r#"{{"objects": {exported}}}"#);
    let (status, body) = harness.send(Method::POST, "/api/v1/apply", Some(&apply)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(harness.node.stored().await, stored);
}

/// GET with the token; the status, the `X-Next-Cursor` and the body.
async fn get_page(harness: &Harness, uri: &str) -> (StatusCode, Option<String>, String) {
    let request = HttpRequest::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = harness.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let next = response
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().unwrap().to_string());
    if let Some(next) = &next {
        let link = response.headers().get(header::LINK).unwrap().to_str().unwrap();
        assert!(link.contains(&format!("cursor={next}>; rel=\"next\"")), "{link}");
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, next, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn queue_and_quarantine_lists_page_with_an_opaque_cursor() {
    let queued = (1..=5)
        .map(|i| entry(&format!("Q{i}"), QueueStatus::Deferred))
        .collect();
    let node = TestNode::with(queued, Vec::new()).await;
    let acceptance = Acceptance {
        quarantined: (1..=3).map(|i| held_entry(&format!("H{i}"))).collect(),
        ..Acceptance::default()
    };
    node.admin.queue.accept(acceptance).await.unwrap();
    let harness = Harness::on(node);
    let mut seen = Vec::new();
    let mut uri = "/api/v1/queue?limit=2".to_string();
    let mut pages = 0;
    loop {
        let (status, next, body) = get_page(&harness, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let entries: Vec<QueueEntryView> = serde_json::from_str(&body).unwrap();
        assert!(entries.len() <= 2);
        seen.extend(entries.into_iter().map(|e| e.id));
        pages += 1;
        match next {
            Some(cursor) => {
                assert!(!seen.contains(&cursor), "the cursor is opaque: {cursor}");
                uri = format!("/api/v1/queue?limit=2&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["Q1", "Q2", "Q3", "Q4", "Q5"]);
    assert_eq!(pages, 3);

    // Without a limit the whole (small) list comes in one page, as before.
    let (_, next, body) = get_page(&harness, "/api/v1/queue").await;
    assert_eq!(next, None);
    assert_eq!(
        serde_json::from_str::<Vec<QueueEntryView>>(&body).unwrap().len(),
        5
    );

    let (_, next, body) = get_page(&harness, "/api/v1/quarantine?limit=2").await;
    assert_eq!(
        serde_json::from_str::<Vec<QuarantineView>>(&body).unwrap().len(),
        2
    );
    let (_, last, body) = get_page(
        &harness,
        &format!("/api/v1/quarantine?limit=2&cursor={}", next.unwrap()),
    )
    .await;
    let rest: Vec<QuarantineView> = serde_json::from_str(&body).unwrap();
    assert_eq!(rest.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(), ["H3"]);
    assert_eq!(last, None);

    for bad in [
        "/api/v1/queue?limit=0",
        "/api/v1/queue?limit=100000",
        "/api/v1/queue?cursor=%21%21",
        "/api/v1/quarantine?cursor=%21%21",
        "/api/v1/trace?to=a%40b&cursor=AA",
    ] {
        let (status, _, body) = get_page(&harness, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let text = error_text(&body);
        assert!(
            text.starts_with("limit:") || text.starts_with("cursor:"),
            "{bad}: {text}"
        );
    }
}

#[tokio::test]
async fn a_rule_may_name_a_connector_stored_earlier() {
    let node = TestNode::new().await;
    let admin = node.backend();
    let connector: OutboundConnectorObject = serde_json::from_value(serde_json::json!({
        "name": "To scanner", "smart_hosts": ["127.0.0.30:2525"], "transport_rule_scoped": true
    }))
    .unwrap();
    let rule: crate::config::rule_object::RuleObject = serde_json::from_value(serde_json::json!({
        "name": "Scan", "actions": {"route_via_connector": "To scanner"}
    }))
    .unwrap();
    let rules_only = ObjectSet {
        rules: vec![rule],
        ..ObjectSet::default()
    };
    let refused = admin.apply(rules_only.clone(), false).await.unwrap_err();
    assert!(refused.to_string().contains("route_via_connector"), "{refused}");
    let connectors = ObjectSet {
        outbound_connectors: vec![connector],
        ..ObjectSet::default()
    };
    admin.apply(connectors, false).await.unwrap();
    admin.apply(rules_only, false).await.unwrap();
    assert_eq!(admin.objects().await.unwrap().rules.len(), 1);
    // What is stored is what sessions see: the write published the policy.
    let policy = admin.policy().await.unwrap();
    assert_eq!(policy.rules.len(), 1);
    assert!(policy.outbound_connector("To scanner").is_some());
}

/// Every write path is the one `change_objects`: a refused change (by the
/// edit itself or by the compiled result) stores and publishes nothing.
#[tokio::test]
async fn a_refused_change_stores_and_publishes_nothing() {
    let node = TestNode::new().await;
    let admin = node.backend();
    admin
        .apply(
            toml::from_str("[[accepted_domain]]\nname = \"contoso.test\"\n").unwrap(),
            false,
        )
        .await
        .unwrap();
    let before = (admin.objects().await.unwrap(), admin.policy().await.unwrap());
    let conflict = admin
        .change_objects(Box::new(|objects| {
            objects.accepted_domains.clear();
            Err(AdminError::Conflict("test".into()))
        }))
        .await
        .unwrap_err();
    assert!(matches!(conflict, AdminError::Conflict(_)));
    let invalid = admin
        .change_objects(Box::new(|objects| {
            objects.accepted_domains[0].name = "not a domain".into();
            Ok(true)
        }))
        .await
        .unwrap_err();
    assert!(
        invalid
            .to_string()
            .starts_with("accepted_domain \"not a domain\": name: "),
        "{invalid}"
    );
    assert!(!admin.change_objects(Box::new(|_| Ok(false))).await.unwrap());
    assert_eq!(admin.objects().await.unwrap(), before.0);
    assert!(
        Arc::ptr_eq(&admin.policy().await.unwrap(), &before.1),
        "nothing published"
    );
}
