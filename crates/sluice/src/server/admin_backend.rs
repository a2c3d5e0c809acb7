//! The admin API's view of the node: objects in the store (validated, then
//! swapped into the live policy), the queue and the trace.

use crate::admin::{
    AdminBackend, AdminError, BoxFuture, QueueEntryView, QueueStatus, RecipientQueueStatus, RecipientView,
    TraceEventView, TraceQuery,
};
use crate::config::objects::{LastValidation, ObjectKind, ObjectSet, Policy};
use crate::deliver::{Deliverer, ValidationReport};
use crate::message::Address;
use crate::message::QueueId;
use crate::queue::{Hold, Queue, QueueAction, QueueEntry, RecipientStatus};
use crate::store::{Store, Write};
use crate::trace::{now_ms, rfc3339, TraceFilter};
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

impl AdminBackend for NodeAdmin {
    fn objects(&self) -> BoxFuture<'_, Result<ObjectSet, AdminError>> {
        Box::pin(async move { self.store.objects().map_err(internal) })
    }

    fn apply(&self, set: ObjectSet, prune: bool) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(async move {
            set.validate().map_err(|e| AdminError::Invalid(e.to_string()))?;
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
        Box::pin(async move { Ok(self.queue.list().iter().map(queue_view).collect()) })
    }

    fn queue_entry(&self, id: String) -> BoxFuture<'_, Result<Option<QueueEntryView>, AdminError>> {
        Box::pin(async move { Ok(self.queue.get(&QueueId(id)).as_ref().map(queue_view)) })
    }

    fn queue_action(&self, id: String, action: QueueAction) -> BoxFuture<'_, Result<bool, AdminError>> {
        Box::pin(async move { self.queue.act(&QueueId(id), action).await.map_err(internal) })
    }

    fn retry_all(&self) -> BoxFuture<'_, Result<usize, AdminError>> {
        Box::pin(async move { self.queue.retry_all().await.map_err(internal) })
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
            Ok(filter
                .select(events)
                .into_iter()
                .map(|e| TraceEventView {
                    at: rfc3339(e.at_ms),
                    queue_id: e.queue_id.to_string(),
                    message_id: e.message_id.unwrap_or_default(),
                    event: e.kind.as_str().to_string(),
                    from: e.from,
                    to: e.to,
                    connector: e.connector,
                    remote_host: e.remote_host,
                    detail: e.detail,
                })
                .collect())
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
                .map(|r| Address::parse(r).map_err(|e| AdminError::Invalid(format!("recipients: {e}"))))
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
}
