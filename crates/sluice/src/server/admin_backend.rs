//! The admin API's view of the node: objects in the store (validated, then
//! swapped into the live policy), the queue, the quarantine and the trace.

use crate::admin::paging::Listing;
use crate::admin::{
    ActResult, AdminBackend, AdminError, BoxFuture, HeaderField, QuarantineAction, QuarantineView,
    QueueEntryView, QueueStatus, RecipientQueueStatus, RecipientView, RetryAllResult, TraceEventView,
    TraceQuery,
};
use crate::config::objects::{LastValidation, ObjectKind, ObjectSet, Policy};
use crate::deliver::{Deliverer, ValidationReport};
use crate::message::{header_section_len, QueueId};
use crate::queue::{Hold, QuarantineEntry, Queue, QueueAction, QueueEntry, RecipientStatus};
use crate::store::{Store, Write};
use crate::trace::{now_ms, rfc3339, TraceFilter};
use mail_parser::{Address, HeaderValue};
use std::sync::Arc;
use tokio::sync::{watch, Mutex};

/// Implements the admin API on the running node.
pub struct NodeAdmin {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// The spool.
    pub queue: Queue,
    /// Publishes a new policy to sessions.
    pub policy: watch::Sender<Arc<Policy>>,
    /// Serialises object changes (read, merge, validate, write).
    pub writes: Mutex<()>,
    /// For connector validation.
    pub deliverer: Arc<Deliverer>,
    /// `[partner]` of a scanner node, with its validation records.
    pub partner: Option<crate::tenant::PartnerNode>,
    /// DKIM and ARC keys.
    pub keys: Arc<crate::auth::keys::Keyring>,
}

fn internal(error: impl std::fmt::Display) -> AdminError {
    AdminError::Internal(error.to_string())
}

impl NodeAdmin {
    async fn replace_objects(
        &self,
        change: impl FnOnce(&mut ObjectSet) -> Result<bool, AdminError>,
    ) -> Result<bool, AdminError> {
        let _guard = self.writes.lock().await;
        let mut objects = self.store.objects().map_err(internal)?;
        if !change(&mut objects)? {
            return Ok(false);
        }
        let policy = objects
            .validate()
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        self.store
            .commit(vec![Write::Objects(objects)])
            .await
            .map_err(internal)?;
        let policy = crate::tenant::PartnerNode::publish(self.partner.as_ref(), policy);
        self.policy.send_replace(Arc::new(policy));
        Ok(true)
    }
}

/// The API view of a queue entry.
pub fn queue_view(entry: &QueueEntry) -> QueueEntryView {
    let held = entry.hold == Hold::Held;
    let recipients: Vec<RecipientView> = entry
        .recipients
        .iter()
        .map(|r| {
            let (status, last_error, next) = match &r.status {
                RecipientStatus::Queued { due_ms } => (RecipientQueueStatus::Queued, None, Some(*due_ms)),
                RecipientStatus::Deferred {
                    due_ms, last_error, ..
                } => (
                    RecipientQueueStatus::Deferred,
                    Some(last_error.clone()),
                    Some(*due_ms),
                ),
                RecipientStatus::Delivered { .. } => (RecipientQueueStatus::Delivered, None, None),
                RecipientStatus::Failed { reason, .. } => {
                    (RecipientQueueStatus::Bounced, Some(reason.clone()), None)
                }
            };
            let status = if held && next.is_some() {
                RecipientQueueStatus::Held
            } else {
                status
            };
            RecipientView {
                address: r.address.to_string(),
                status,
                connector: r.route.connector().map(str::to_string),
                last_error,
                next_attempt: next.map(rfc3339),
                attempts: r.attempts,
            }
        })
        .collect();
    let status = match entry.status_word() {
        "held" => QueueStatus::Held,
        "deferred" => QueueStatus::Deferred,
        _ => QueueStatus::Queued,
    };
    QueueEntryView {
        id: entry.id.to_string(),
        message_id: entry.message_id.clone().unwrap_or_default(),
        from: entry.from.to_string(),
        last_error: recipients.iter().find_map(|r| r.last_error.clone()),
        next_attempt: entry.next_due_ms().map(rfc3339),
        recipients,
        size: entry.size,
        received_at: rfc3339(entry.received_at_ms),
        status,
    }
}

/// The API view of a quarantined message; `content` adds its header fields.
/// Rows read from the store at most per filtered queue page.
const MAX_SCANNED: usize = 10_000;

fn trace_view(e: crate::trace::TraceEvent) -> TraceEventView {
    TraceEventView {
        at: rfc3339(e.at_ms),
        queue_id: e.queue_id.to_string(),
        message_id: e.message_id.unwrap_or_default(),
        event: e.kind.as_str().to_string(),
        from: e.from,
        to: e.to,
        connector: e.connector,
        remote_host: e.remote_host,
        detail: e.detail,
    }
}

pub(crate) fn quarantine_view(held: &QuarantineEntry, content: Option<&[u8]>) -> QuarantineView {
    let entry = &held.entry;
    QuarantineView {
        id: entry.id.to_string(),
        message_id: entry.message_id.clone().unwrap_or_default(),
        from: entry.from.to_string(),
        recipients: entry.recipients.iter().map(|r| r.address.to_string()).collect(),
        size: entry.size,
        rule: held.rule.clone(),
        reason: held.reason.clone(),
        quarantined_at: rfc3339(held.quarantined_at_ms),
        headers: content.map(header_fields),
    }
}

/// The header section of `content` as name/value pairs, in order. Values are
/// unfolded and otherwise as written, so an administrator sees what the
/// sender sent; only fields carrying RFC 2047 encoded words are shown
/// decoded, as the raw form of those is unreadable.
pub(crate) fn header_fields(content: &[u8]) -> Vec<HeaderField> {
    let headers = &content[..header_section_len(content)];
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(headers) else {
        return Vec::new();
    };
    let raw_text = |start: u32, end: u32| {
        let bytes = headers.get(start as usize..end as usize).unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    };
    parsed
        .headers()
        .iter()
        .map(|header| {
            // The bytes from the field name to the colon: the name as written.
            let written = raw_text(header.offset_field, header.offset_start);
            let name = written.split(':').next().unwrap_or_default().trim().to_string();
            let raw = unfold(&raw_text(header.offset_start, header.offset_end));
            let value = if raw.contains("=?") {
                decoded(&header.value).unwrap_or(raw)
            } else {
                raw
            };
            HeaderField { name, value }
        })
        .collect()
}

/// A folded header value on one line: each line break and the white space
/// around it become one space.
fn unfold(raw: &str) -> String {
    raw.split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parser's decoded text of a field, for the forms that read as text.
fn decoded(value: &HeaderValue<'_>) -> Option<String> {
    let addr = |a: &mail_parser::Addr<'_>| match (&a.name, &a.address) {
        (Some(name), Some(address)) => format!("{name} <{address}>"),
        (None, Some(address)) => address.to_string(),
        (Some(name), None) => name.to_string(),
        (None, None) => String::new(),
    };
    match value {
        HeaderValue::Text(text) => Some(text.to_string()),
        HeaderValue::TextList(list) => Some(list.join(", ")),
        HeaderValue::Address(Address::List(list)) => {
            Some(list.iter().map(addr).collect::<Vec<_>>().join(", "))
        }
        HeaderValue::Address(Address::Group(groups)) => Some(
            groups
                .iter()
                .map(|g| {
                    let members: Vec<String> = g.addresses.iter().map(addr).collect();
                    format!(
                        "{}: {};",
                        g.name.as_deref().unwrap_or_default(),
                        members.join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

impl AdminBackend for NodeAdmin {
    fn partner(&self) -> Option<crate::tenant::PartnerSettings> {
        self.partner.as_ref().map(|p| p.settings.clone())
    }

    fn validations(
        &self,
    ) -> BoxFuture<'_, Result<Vec<crate::tenant::validation::ValidationRecord>, AdminError>> {
        Box::pin(async move {
            let Some(partner) = &self.partner else {
                return Ok(Vec::new());
            };
            let log = partner.log.clone();
            tokio::task::spawn_blocking(move || log.read())
                .await
                .map_err(internal)
        })
    }

    fn objects(&self) -> BoxFuture<'_, Result<ObjectSet, AdminError>> {
        Box::pin(async move { self.store.objects().map_err(internal) })
    }

    fn apply(&self, set: ObjectSet, prune: bool) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(async move {
            // Only the merged result is validated (in replace_objects): `set`
            // alone may name objects that are already stored.
            self.replace_objects(|objects| {
                objects.merge(set, prune);
                Ok(true)
            })
            .await
            .map(|_| ())
        })
    }

    fn remove(&self, kind: ObjectKind, name: String) -> BoxFuture<'_, Result<bool, AdminError>> {
        Box::pin(async move {
            self.replace_objects(|objects| Ok(objects.remove(kind, &name)))
                .await
        })
    }

    fn queue(&self) -> BoxFuture<'_, Result<Vec<QueueEntryView>, AdminError>> {
        Box::pin(async move {
            Ok(self
                .queue
                .list()
                .map_err(internal)?
                .iter()
                .map(queue_view)
                .collect())
        })
    }

    fn queue_summary(&self) -> BoxFuture<'_, Result<crate::admin::QueueSummary, AdminError>> {
        Box::pin(async move {
            // Counters kept by the spool: no scan, whatever the queue's size.
            let queue = self.queue.clone();
            let counts = tokio::task::spawn_blocking(move || queue.shape())
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(crate::admin::QueueSummary::from_counts(
                counts
                    .into_iter()
                    .map(|c| (c.domain, c.received_minute, c.recipients)),
                now_ms(),
            ))
        })
    }

    fn queue_entry(&self, id: String) -> BoxFuture<'_, Result<Option<QueueEntryView>, AdminError>> {
        Box::pin(async move { Ok(self.queue.get(&QueueId(id)).as_ref().map(queue_view)) })
    }

    fn queue_action(&self, id: String, action: QueueAction) -> BoxFuture<'_, Result<ActResult, AdminError>> {
        Box::pin(async move { self.queue.act(&QueueId(id), action).await.map_err(internal) })
    }

    fn published_tls_policy(&self, domain: String) -> BoxFuture<'_, Result<Option<String>, AdminError>> {
        Box::pin(async move {
            let domain =
                crate::message::Domain::parse(&domain).map_err(|e| AdminError::Invalid(e.to_string()))?;
            Ok(self.deliverer.published_tls_policy(&domain).await)
        })
    }

    fn send_tls_reports(&self) -> BoxFuture<'_, Result<Vec<crate::admin::TlsReportSent>, AdminError>> {
        Box::pin(async move {
            super::tls_reports::send(&self.deliverer, &self.queue, true)
                .await
                .map_err(internal)
        })
    }

    fn delete_all(
        &self,
        status: Option<QueueStatus>,
        domain: Option<String>,
    ) -> BoxFuture<'_, Result<usize, AdminError>> {
        Box::pin(async move {
            let filter = crate::queue::EntryFilter {
                status: status.map(|s| s.as_str().to_string()),
                domain,
            };
            self.queue.delete_all(&filter).await.map_err(internal)
        })
    }

    fn retry_all(&self) -> BoxFuture<'_, Result<RetryAllResult, AdminError>> {
        Box::pin(async move {
            let done = self.queue.retry_all().await.map_err(internal)?;
            Ok(RetryAllResult {
                retried: done.retried,
                held: done.held,
            })
        })
    }

    fn quarantine(&self) -> BoxFuture<'_, Result<Vec<QuarantineView>, AdminError>> {
        Box::pin(async move {
            // The store reads from disk: off the async workers.
            let queue = self.queue.clone();
            let held = tokio::task::spawn_blocking(move || queue.quarantine())
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(held.iter().map(|q| quarantine_view(q, None)).collect())
        })
    }

    fn quarantined(&self, id: String) -> BoxFuture<'_, Result<Option<QuarantineView>, AdminError>> {
        Box::pin(async move {
            let queue = self.queue.clone();
            let found = tokio::task::spawn_blocking(move || queue.quarantined(&QueueId(id)))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(found.map(|(held, content)| quarantine_view(&held, Some(&content))))
        })
    }

    fn quarantine_action(
        &self,
        id: String,
        action: QuarantineAction,
    ) -> BoxFuture<'_, Result<bool, AdminError>> {
        Box::pin(async move {
            let id = QueueId(id);
            match action {
                QuarantineAction::Release => self.queue.release_quarantined(&id).await,
                QuarantineAction::Delete => self.queue.delete_quarantined(&id).await,
            }
            .map_err(internal)
        })
    }

    fn trace(&self, query: TraceQuery) -> BoxFuture<'_, Result<Vec<TraceEventView>, AdminError>> {
        Box::pin(async move {
            let since_ms = match query.since.as_deref() {
                Some(text) => {
                    let age = crate::config::parse_duration(text).map_err(AdminError::Invalid)?;
                    Some(now_ms().saturating_sub(age.as_millis() as u64))
                }
                None => None,
            };
            let filter = TraceFilter {
                message_id: query.message_id,
                from: query.from,
                to: query.to,
                since_ms,
                status: query.status,
                limit: query.limit,
            };
            let store = self.store.clone();
            let events = tokio::task::spawn_blocking(move || store.trace_events(since_ms.unwrap_or(0)))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(filter.select(events).into_iter().map(trace_view).collect())
        })
    }

    fn trace_page(
        &self,
        since_ms: u64,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Listing<TraceEventView>, AdminError>> {
        Box::pin(async move {
            let store = self.store.clone();
            let page =
                tokio::task::spawn_blocking(move || store.trace_page(since_ms, after.as_deref(), limit))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
            Ok(Listing {
                items: page.items.into_iter().map(trace_view).collect(),
                next: page.next,
            })
        })
    }

    fn queue_page(
        &self,
        status: Option<QueueStatus>,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Listing<QueueEntryView>, AdminError>> {
        Box::pin(async move {
            let queue = self.queue.clone();
            tokio::task::spawn_blocking(move || {
                let mut items = Vec::new();
                let mut cursor = after;
                let mut scanned = 0;
                // A filter that matches little must not read the whole
                // store in one request: past the scan bound the page comes
                // back short, its cursor where the scan stopped.
                while scanned < MAX_SCANNED {
                    let want = limit - items.len();
                    let page = queue.page(cursor.as_deref(), want).map_err(internal)?;
                    scanned += page.items.len().max(1);
                    for entry in page.items {
                        let view = queue_view(&entry);
                        if status.is_none_or(|status| view.status == status) {
                            items.push(view);
                        }
                        cursor = Some(entry.id.0);
                    }
                    if page.next.is_none() {
                        return Ok(Listing { items, next: None });
                    }
                    if items.len() >= limit {
                        break;
                    }
                }
                Ok(Listing { items, next: cursor })
            })
            .await
            .map_err(internal)?
        })
    }

    fn quarantine_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Listing<QuarantineView>, AdminError>> {
        Box::pin(async move {
            let queue = self.queue.clone();
            let page = tokio::task::spawn_blocking(move || queue.quarantine_page(after.as_deref(), limit))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(Listing {
                items: page.items.iter().map(|q| quarantine_view(q, None)).collect(),
                next: page.next,
            })
        })
    }

    fn validate_connector(
        &self,
        name: String,
        recipients: Vec<String>,
    ) -> BoxFuture<'_, Result<ValidationReport, AdminError>> {
        Box::pin(async move {
            let policy = self.policy.borrow().clone();
            let connector = policy
                .outbound_connector_named(&name)
                .cloned()
                .ok_or_else(|| AdminError::NotFound(format!("outbound connector {name:?}")))?;
            let objects = self.store.objects().map_err(internal)?;
            let stored = objects
                .outbound_connectors
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(&name))
                .map(|c| c.validation_recipients.clone())
                .unwrap_or_default();
            let wanted = if recipients.is_empty() { stored } else { recipients };
            let recipients = wanted
                .iter()
                .map(|r| {
                    crate::message::Address::parse(r)
                        .map_err(|e| AdminError::Invalid(format!("recipients: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let report = self.deliverer.validate(&connector, &recipients).await;
            let summary = LastValidation {
                at: rfc3339(now_ms()),
                passed: report.passed,
                failed_step: report
                    .steps
                    .iter()
                    .find(|s| !s.passed)
                    .map(|s| format!("{}: {}: {}", s.host, s.step, s.detail)),
            };
            self.replace_objects(|objects| {
                match objects
                    .outbound_connectors
                    .iter_mut()
                    .find(|c| c.name.eq_ignore_ascii_case(&name))
                {
                    Some(c) => c.last_validation = Some(summary),
                    None => return Ok(false),
                }
                Ok(true)
            })
            .await?;
            Ok(report)
        })
    }

    fn policy(&self) -> BoxFuture<'_, Result<Arc<Policy>, AdminError>> {
        Box::pin(async move { Ok(self.policy.borrow().clone()) })
    }

    fn dkim(&self) -> Option<Arc<crate::auth::keys::Keyring>> {
        Some(self.keys.clone())
    }

    fn stats(&self, since_ms: u64) -> BoxFuture<'_, Result<crate::admin::NodeStats, AdminError>> {
        Box::pin(async move {
            let views: Vec<QueueEntryView> = self
                .queue
                .list()
                .map_err(internal)?
                .iter()
                .map(queue_view)
                .collect();
            let mut stats =
                crate::admin::NodeStats::from_queue(views.iter().map(|v| (v.id.as_str(), v.status)));
            let (store, queue) = (self.store.clone(), self.queue.clone());
            let (events, quarantined) = tokio::task::spawn_blocking(move || {
                Ok::<_, String>((
                    store.trace_events(since_ms).map_err(|e| e.to_string())?,
                    queue.quarantine().map_err(|e| e.to_string())?.len() as u64,
                ))
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            stats.quarantined = quarantined;
            stats.events = events
                .into_iter()
                .map(|e| crate::admin::EventStamp {
                    at_ms: e.at_ms,
                    event: e.kind.as_str().to_string(),
                    queue_id: e.queue_id.to_string(),
                })
                .collect();
            Ok(stats)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::objects::OutboundConnectorObject;
    use crate::config::rule_object::RuleObject;
    use crate::deliver::{DeliveryAttempt, DeliveryJob, Outcome};
    use crate::message::{Address, BodyType, Notify, Reply, ReversePath};
    use crate::queue::{Acceptance, QueueSettings, QueuedRecipient, Source, Transport};
    use crate::route::Route;
    use crate::store::EmbeddedStore;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    /// Every attempt fails temporarily, so a released message stays visible.
    struct Unreachable;

    impl Transport for Unreachable {
        fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
            let outcomes = job
                .recipients
                .iter()
                .map(|r| {
                    (
                        r.address.clone(),
                        Outcome::TempFail(Reply::new(451, [4, 4, 1], "down")),
                    )
                })
                .collect();
            Box::pin(std::future::ready(DeliveryAttempt {
                host: None,
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes,
            }))
        }
    }

    fn node(dir: &std::path::Path) -> NodeAdmin {
        let store: Arc<dyn Store> = EmbeddedStore::open(dir).unwrap();
        let (policy, watching) = watch::channel(Arc::new(Policy::default()));
        let settings = QueueSettings::new(
            "gw.test".into(),
            vec![Duration::from_secs(60)],
            Duration::from_secs(3600),
            1,
        );
        let queue = Queue::start(store.clone(), Arc::new(Unreachable), settings, watching).unwrap();
        let resolver = Arc::new(crate::dns::StaticResolver::default());
        let deliverer =
            Deliverer::new(crate::deliver::DeliverySettings::new("gw.test", dir), resolver).unwrap();
        let keys = Arc::new(crate::auth::keys::Keyring::load(store.clone(), None).unwrap());
        NodeAdmin {
            store,
            queue,
            policy,
            writes: Mutex::new(()),
            deliverer: Arc::new(deliverer),
            partner: None,
            keys,
        }
    }

    fn held_entry(id: &str) -> QuarantineEntry {
        let now = now_ms();
        QuarantineEntry {
            entry: QueueEntry {
                id: QueueId(id.into()),
                message_id: Some("m1@contoso.test".into()),
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
                    status: RecipientStatus::Queued { due_ms: now },
                    attempts: 0,
                }],
                size: 64,
                received_at_ms: now,
                expires_at_ms: now + 60_000,
                hold: Hold::Active,
                source: Source {
                    peer: "127.0.0.1".into(),
                    helo: "client".into(),
                    connector: None,
                },
            },
            rule: "Block cards".into(),
            quarantined_at_ms: 1_735_689_600_000,
            reason: "credit_card:1".into(),
        }
    }

    #[tokio::test]
    async fn quarantine_is_listed_shown_released_and_deleted_on_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let admin = node(dir.path());
        let content = b"Subject: card\r\nFrom: alice@contoso.test\r\n\r\n4111 1111 1111 1111\r\n".to_vec();
        let acceptance = Acceptance {
            quarantined: vec![
                (held_entry("Q1"), content.clone()),
                (held_entry("Q2"), content.clone()),
            ],
            ..Acceptance::default()
        };
        admin.queue.accept(acceptance).await.unwrap();

        let listed = admin.quarantine().await.unwrap();
        assert_eq!(
            listed.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(),
            ["Q1", "Q2"]
        );
        assert_eq!(listed[0].rule, "Block cards");
        assert_eq!(listed[0].recipients, vec!["bob@fabrikam.test".to_string()]);
        assert_eq!(listed[0].quarantined_at, "2025-01-01T00:00:00.000Z");
        assert_eq!(listed[0].headers, None);

        let shown = admin.quarantined("Q1".into()).await.unwrap().unwrap();
        let headers = shown.headers.unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(
            (headers[0].name.as_str(), headers[0].value.as_str()),
            ("Subject", "card")
        );
        assert!(admin.quarantined("Q9".into()).await.unwrap().is_none());

        assert!(admin
            .quarantine_action("Q1".into(), QuarantineAction::Release)
            .await
            .unwrap());
        assert!(
            admin.queue.get(&QueueId("Q1".into())).is_some(),
            "released into the queue"
        );
        assert!(admin
            .quarantine_action("Q2".into(), QuarantineAction::Delete)
            .await
            .unwrap());
        assert!(
            admin.queue.get(&QueueId("Q2".into())).is_none(),
            "deleted, not queued"
        );
        assert!(admin.quarantine().await.unwrap().is_empty());
        assert!(!admin
            .quarantine_action("Q2".into(), QuarantineAction::Release)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_rule_may_name_a_connector_stored_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let admin = node(dir.path());
        let connector: OutboundConnectorObject = serde_json::from_value(serde_json::json!({
            "name": "To scanner", "smart_hosts": ["127.0.0.30:2525"], "transport_rule_scoped": true
        }))
        .unwrap();
        let rule: RuleObject = serde_json::from_value(serde_json::json!({
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
    }

    fn field(name: &str, value: &str) -> HeaderField {
        HeaderField {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn header_fields_are_unfolded_in_order_and_stop_at_the_body() {
        let content = b"Received: from a.test\r\n\tby b.test; Mon, 1 Jan 2025 00:00:00 +0000\r\n\
            From: Alice <alice@contoso.test>\r\n\
            Message-ID: <m1@contoso.test>\r\n\
            x-custom-Header:  spaced  \r\n\
            Subject: =?UTF-8?Q?Caf=C3=A9_report?=\r\n\
            \r\n\
            Secret: 4111 1111 1111 1111\r\n";
        assert_eq!(
            header_fields(content),
            vec![
                field(
                    "Received",
                    "from a.test by b.test; Mon, 1 Jan 2025 00:00:00 +0000"
                ),
                field("From", "Alice <alice@contoso.test>"),
                // As written: the parser's own form would drop the brackets.
                field("Message-ID", "<m1@contoso.test>"),
                field("x-custom-Header", "spaced"),
                field("Subject", "Café report"),
            ]
        );
    }

    #[test]
    fn encoded_address_names_are_decoded() {
        let content = b"To: =?ISO-8859-1?Q?Andr=E9?= <andre@fabrikam.test>, bob@fabrikam.test\r\n\r\n";
        assert_eq!(
            header_fields(content),
            vec![field("To", "André <andre@fabrikam.test>, bob@fabrikam.test")]
        );
        assert!(header_fields(b"").is_empty());
    }
}
