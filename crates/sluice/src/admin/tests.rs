//! Router tests: requests go through `router(...).oneshot(...)` against an
//! in-memory backend that validates and merges as the real store does.

use super::*;
use crate::config::objects::OutboundConnectorObject;
use axum::body::Body;
use axum::http::{header, Method, Request as HttpRequest};
use http_body_util::BodyExt;
use std::sync::Mutex;
use tower::ServiceExt;

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef0123456789";

/// Stands in for the node: objects, queue and trace in memory.
#[derive(Default)]
pub(crate) struct MemoryBackend {
    objects: Mutex<ObjectSet>,
    queue: Mutex<Vec<QueueEntryView>>,
    events: Vec<TraceEventView>,
    trace_queries: Mutex<Vec<TraceQuery>>,
    /// Quarantined messages, headers included; the list leaves them out.
    quarantine: Mutex<Vec<QuarantineView>>,
    /// Ids released from quarantine, in order.
    released: Mutex<Vec<String>>,
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl AdminBackend for MemoryBackend {
    fn objects(&self) -> BoxFuture<'_, Result<ObjectSet, AdminError>> {
        ready(Ok(self.objects.lock().unwrap().clone()))
    }

    fn apply(&self, set: ObjectSet, prune: bool) -> BoxFuture<'_, Result<(), AdminError>> {
        let mut stored = self.objects.lock().unwrap();
        let mut merged = stored.clone();
        merged.merge(set, prune);
        let result = match merged.validate() {
            Ok(_) => {
                *stored = merged;
                Ok(())
            }
            Err(error) => Err(AdminError::Invalid(error.to_string())),
        };
        ready(result)
    }

    fn remove(&self, kind: ObjectKind, name: String) -> BoxFuture<'_, Result<bool, AdminError>> {
        ready(Ok(self.objects.lock().unwrap().remove(kind, &name)))
    }

    fn queue(&self) -> BoxFuture<'_, Result<Vec<QueueEntryView>, AdminError>> {
        ready(Ok(self.queue.lock().unwrap().clone()))
    }

    fn queue_entry(&self, id: String) -> BoxFuture<'_, Result<Option<QueueEntryView>, AdminError>> {
        let queue = self.queue.lock().unwrap();
        ready(Ok(queue.iter().find(|e| e.id == id).cloned()))
    }

    fn queue_action(&self, id: String, action: QueueAction) -> BoxFuture<'_, Result<ActResult, AdminError>> {
        let mut queue = self.queue.lock().unwrap();
        let Some(index) = queue.iter().position(|e| e.id == id) else {
            return ready(Ok(ActResult::Missing));
        };
        let held = queue[index].status == QueueStatus::Held;
        let result = match action {
            QueueAction::Delete => {
                queue.remove(index);
                ActResult::Done
            }
            QueueAction::Retry if held => ActResult::Held,
            QueueAction::Hold if held => ActResult::Unchanged,
            QueueAction::Release if !held => ActResult::Unchanged,
            QueueAction::Hold => {
                queue[index].status = QueueStatus::Held;
                ActResult::Done
            }
            QueueAction::Release | QueueAction::Retry => {
                queue[index].status = QueueStatus::Queued;
                ActResult::Done
            }
        };
        ready(Ok(result))
    }

    fn retry_all(&self) -> BoxFuture<'_, Result<RetryAllResult, AdminError>> {
        let mut queue = self.queue.lock().unwrap();
        let mut result = RetryAllResult { retried: 0, held: 0 };
        for entry in queue.iter_mut() {
            match entry.status {
                QueueStatus::Held => result.held += 1,
                _ => {
                    entry.status = QueueStatus::Queued;
                    result.retried += 1;
                }
            }
        }
        ready(Ok(result))
    }

    fn quarantine(&self) -> BoxFuture<'_, Result<Vec<QuarantineView>, AdminError>> {
        let held = self.quarantine.lock().unwrap();
        let listed = held
            .iter()
            .map(|q| QuarantineView {
                headers: None,
                ..q.clone()
            })
            .collect();
        ready(Ok(listed))
    }

    fn quarantined(&self, id: String) -> BoxFuture<'_, Result<Option<QuarantineView>, AdminError>> {
        let held = self.quarantine.lock().unwrap();
        ready(Ok(held.iter().find(|q| q.id == id).cloned()))
    }

    fn quarantine_action(
        &self,
        id: String,
        action: QuarantineAction,
    ) -> BoxFuture<'_, Result<bool, AdminError>> {
        let mut held = self.quarantine.lock().unwrap();
        let Some(index) = held.iter().position(|q| q.id == id) else {
            return ready(Ok(false));
        };
        held.remove(index);
        if action == QuarantineAction::Release {
            self.released.lock().unwrap().push(id);
        }
        ready(Ok(true))
    }

    fn trace(&self, query: TraceQuery) -> BoxFuture<'_, Result<Vec<TraceEventView>, AdminError>> {
        let matching = self
            .events
            .iter()
            .filter(|e| query.message_id.as_ref().is_none_or(|m| &e.message_id == m))
            .cloned()
            .collect();
        self.trace_queries.lock().unwrap().push(query);
        ready(Ok(matching))
    }

    fn validate_connector(
        &self,
        name: String,
        _recipients: Vec<String>,
    ) -> BoxFuture<'_, Result<crate::deliver::ValidationReport, AdminError>> {
        let known = self
            .objects
            .lock()
            .unwrap()
            .outbound_connectors
            .iter()
            .any(|c| c.name == name);
        ready(if known {
            Ok(crate::deliver::ValidationReport {
                connector: name,
                passed: true,
                steps: Vec::new(),
            })
        } else {
            Err(AdminError::NotFound(format!("outbound connector {name:?}")))
        })
    }

    fn policy(&self) -> BoxFuture<'_, Result<Arc<crate::config::objects::Policy>, AdminError>> {
        let objects = self.objects.lock().unwrap().clone();
        ready(
            objects
                .validate()
                .map(Arc::new)
                .map_err(|e| AdminError::Invalid(e.to_string())),
        )
    }

    fn stats(&self, since_ms: u64) -> BoxFuture<'_, Result<NodeStats, AdminError>> {
        let queue = self.queue.lock().unwrap();
        let counters = crate::trace::TraceCounters::default();
        counters.set_quarantined(self.quarantine.lock().unwrap().len() as u64);
        for e in &self.events {
            let at = humantime::parse_rfc3339(&e.at).ok();
            let at_ms = at.and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok());
            if let (Some(at_ms), Some(kind)) = (at_ms, crate::trace::TraceKind::parse(&e.event)) {
                let tally = crate::trace::Tally {
                    events: vec![(at_ms.as_millis() as u64, kind)],
                    ..Default::default()
                };
                counters.count(&tally, at_ms.as_millis() as u64);
            }
        }
        let stats = NodeStats {
            queue: crate::queue::QueueDepth::count(queue.iter().map(|e| e.status)),
            activity: counters.activity(since_ms),
        };
        ready(Ok(stats))
    }
}

fn entry(id: &str, status: QueueStatus) -> QueueEntryView {
    QueueEntryView {
        id: id.into(),
        message_id: format!("<{id}@contoso.test>"),
        from: "alice@contoso.test".into(),
        recipients: vec![RecipientView {
            address: "bob@fabrikam.test".into(),
            status: match status {
                QueueStatus::Queued => RecipientQueueStatus::Queued,
                QueueStatus::Deferred => RecipientQueueStatus::Deferred,
                QueueStatus::Held => RecipientQueueStatus::Held,
            },
            connector: Some("To fabrikam".into()),
            last_error: None,
            next_attempt: None,
            attempts: 0,
        }],
        size: 1234,
        received_at: "2025-01-01T00:00:00Z".into(),
        status,
        last_error: None,
        next_attempt: None,
    }
}

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

impl MemoryBackend {
    /// A backend holding these quarantined messages.
    pub(crate) fn with_quarantine(held: Vec<QuarantineView>) -> MemoryBackend {
        MemoryBackend {
            quarantine: Mutex::new(held),
            ..MemoryBackend::default()
        }
    }
}

fn event(message_id: &str, kind: &str) -> TraceEventView {
    TraceEventView {
        at: "2025-01-01T00:00:00Z".into(),
        queue_id: "Q1".into(),
        message_id: message_id.into(),
        event: kind.into(),
        from: "alice@contoso.test".into(),
        to: Some("bob@fabrikam.test".into()),
        connector: None,
        remote_host: None,
        detail: None,
    }
}

struct Harness {
    backend: Arc<MemoryBackend>,
    router: Router,
}

impl Harness {
    fn new(backend: MemoryBackend) -> Harness {
        let backend = Arc::new(backend);
        let router = router(backend.clone(), TOKEN.into());
        Harness { backend, router }
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
    let harness = Harness::new(MemoryBackend::default());
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
    let harness = Harness::new(MemoryBackend::default());
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
    let harness = Harness::new(MemoryBackend::default());
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
    let stored = harness.backend.objects.lock().unwrap().clone();
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
    assert!(harness
        .backend
        .objects
        .lock()
        .unwrap()
        .outbound_connectors
        .is_empty());
    let (status, body) = harness
        .send(Method::GET, &format!("{base}/To%20scanner"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_text(&body).contains("outbound connector"));
}

#[tokio::test]
async fn duplicate_create_is_a_conflict_and_changes_nothing() {
    let harness = Harness::new(MemoryBackend::default());
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
    let stored = harness.backend.objects.lock().unwrap().clone();
    assert_eq!(
        stored.accepted_domains[0].kind,
        crate::config::objects::AcceptedDomainType::Authoritative
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_naming_object_and_key() {
    let harness = Harness::new(MemoryBackend::default());
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
    assert_eq!(*harness.backend.objects.lock().unwrap(), ObjectSet::default());
}

#[tokio::test]
async fn unknown_objects_are_not_found() {
    let harness = Harness::new(MemoryBackend::default());
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
    let harness = Harness::new(MemoryBackend::default());
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
    let stored = harness.backend.objects.lock().unwrap().clone();
    assert_eq!(stored.accepted_domains.len(), 1);
    assert!(stored.outbound_connectors.is_empty());
}

#[tokio::test]
async fn queue_list_filters_and_actions_reach_the_backend() {
    let backend = MemoryBackend {
        queue: Mutex::new(vec![
            entry("Q1", QueueStatus::Queued),
            entry("Q2", QueueStatus::Deferred),
            entry("Q3", QueueStatus::Deferred),
        ]),
        ..MemoryBackend::default()
    };
    let harness = Harness::new(backend);

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
    assert_eq!(harness.backend.queue.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn trace_passes_the_query_and_checks_since() {
    let backend = MemoryBackend {
        events: vec![event("<a@x>", "received"), event("<b@x>", "delivered")],
        ..MemoryBackend::default()
    };
    let harness = Harness::new(backend);
    let (status, body) = harness
        .send(
            Method::GET,
            "/api/v1/trace?message_id=%3Cb%40x%3E&since=1h&status=delivered",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events: Vec<TraceEventView> = serde_json::from_str(&body).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "delivered");
    let seen = harness.backend.trace_queries.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![TraceQuery {
            message_id: Some("<b@x>".into()),
            since: Some("1h".into()),
            status: Some("delivered".into()),
            ..TraceQuery::default()
        }]
    );

    let (status, body) = harness
        .send(Method::GET, "/api/v1/trace?since=yesterday", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_text(&body).starts_with("since:"));
}

#[tokio::test]
async fn quarantine_list_show_release_delete() {
    let harness = Harness::new(MemoryBackend::with_quarantine(vec![held("Q1"), held("Q2")]));

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
    assert_eq!(shown, held("Q2"));
    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw["quarantined_at"], "2025-01-01T00:00:00Z");
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
    assert_eq!(*harness.backend.released.lock().unwrap(), vec!["Q1".to_string()]);
    let (status, _) = harness.send(Method::DELETE, "/api/v1/quarantine/Q2", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(harness.backend.quarantine.lock().unwrap().is_empty());
    // Deleting is not releasing.
    assert_eq!(harness.backend.released.lock().unwrap().len(), 1);
    let (status, body) = harness.send(Method::GET, "/api/v1/quarantine", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
}

#[tokio::test]
async fn unknown_quarantined_messages_are_not_found() {
    let harness = Harness::new(MemoryBackend::with_quarantine(vec![held("Q1")]));
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
    assert_eq!(harness.backend.quarantine.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn quarantine_needs_the_token() {
    let harness = Harness::new(MemoryBackend::with_quarantine(vec![held("Q1")]));
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
    assert_eq!(harness.backend.quarantine.lock().unwrap().len(), 1);
    assert!(harness.backend.released.lock().unwrap().is_empty());
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
    let harness = Harness::new(MemoryBackend::default());
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
    assert_eq!(*harness.backend.objects.lock().unwrap(), ObjectSet::default());
}

#[tokio::test]
async fn export_leaves_out_runtime_state_and_apply_keeps_it() {
    let harness = Harness::new(MemoryBackend::default());
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
    *harness.backend.objects.lock().unwrap() = stored.clone();

    let (status, exported) = harness.send(Method::GET, "/api/v1/export", None).await;
    assert_eq!(status, StatusCode::OK, "{exported}");
    assert!(!exported.contains("last_validation"), "{exported}");
    assert!(exported.contains("127.0.0.30:2525"), "{exported}");

    let apply = format!(r#"{{"objects": {exported}}}"#);
    let (status, body) = harness.send(Method::POST, "/api/v1/apply", Some(&apply)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(*harness.backend.objects.lock().unwrap(), stored);
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
    let backend = MemoryBackend {
        queue: Mutex::new(
            (1..=5)
                .map(|i| entry(&format!("Q{i}"), QueueStatus::Deferred))
                .collect(),
        ),
        quarantine: Mutex::new((1..=3).map(|i| held(&format!("H{i}"))).collect()),
        ..MemoryBackend::default()
    };
    let harness = Harness::new(backend);
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
