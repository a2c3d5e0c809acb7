//! The admin API on the running node: [`NodeAdmin`] implements
//! [`AdminBackend`] over the store, the queue, the deliverer and the
//! keyring. Every object change goes through
//! [`AdminBackend::change_objects`] here: one lock, the merged objects
//! compiled whole into the policy (`Policy::compile`), one commit, then the
//! new snapshot published to sessions.

use super::paging::Listing;
use super::views::{quarantine_view, queue_view, trace_view};
use super::{
    ActResult, AdminBackend, AdminError, BoxFuture, ObjectChange, QuarantineAction, QuarantineView,
    QueueEntryView, QueueStatus, RetryAllResult, TraceEventView, TraceQuery,
};
use crate::config::objects::ObjectSet;
use crate::deliver::{Deliverer, ValidationReport};
use crate::message::QueueId;
use crate::policy::Policy;
use crate::queue::{Queue, QueueAction};
use crate::store::{Store, Write};
use crate::trace::{now_ms, TraceFilter};
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
    /// Serialises object changes (read, change, compile, write, publish).
    pub writes: Mutex<()>,
    /// For connector validation.
    pub deliverer: Arc<Deliverer>,
    /// `[partner]` of a scanner node, with its validation records.
    pub partner: Option<crate::tenant::PartnerNode>,
    /// DKIM and ARC keys.
    pub keys: Arc<crate::auth::keys::Keyring>,
    /// The nodes sharing the store, known once the listeners are bound.
    pub directory: std::sync::OnceLock<super::nodes::Directory>,
}

fn internal(error: impl std::fmt::Display) -> AdminError {
    AdminError::Internal(error.to_string())
}

/// Rows read from the store at most per filtered queue page.
const MAX_SCANNED: usize = 10_000;

impl AdminBackend for NodeAdmin {
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<super::NodeView>, AdminError>> {
        Box::pin(async move {
            match self.directory.get() {
                Some(directory) => directory.nodes().map_err(internal),
                None => Ok(Vec::new()),
            }
        })
    }

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

    fn change_objects(&self, change: ObjectChange) -> BoxFuture<'_, Result<bool, AdminError>> {
        Box::pin(async move {
            let _writing = self.writes.lock().await;
            // Read after the other nodes' changes, written before theirs.
            let _cluster = crate::store::hold_configuration(&self.store)
                .await
                .map_err(internal)?;
            let mut objects = self.store.objects().map_err(internal)?;
            if !change(&mut objects)? {
                return Ok(false);
            }
            let policy = Policy::compile(&objects).map_err(|e| AdminError::Invalid(e.to_string()))?;
            self.store
                .commit(vec![Write::Objects(objects)])
                .await
                .map_err(internal)?;
            let policy = policy.with_validation_address(crate::tenant::PartnerNode::validation_address(
                self.partner.as_ref(),
            ));
            self.policy.send_replace(Arc::new(policy));
            Ok(true)
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

    fn queue_summary(&self) -> BoxFuture<'_, Result<super::QueueSummary, AdminError>> {
        Box::pin(async move {
            // Counters kept by the spool: no scan, whatever the queue's size.
            let queue = self.queue.clone();
            let counts = tokio::task::spawn_blocking(move || queue.shape())
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Ok(super::QueueSummary::from_counts(
                counts
                    .into_iter()
                    .map(|c| (c.domain, c.received_minute, c.recipients)),
                now_ms(),
            ))
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
            super::tls_reports::queue_reports(&self.deliverer, &self.queue, true)
                .await
                .map_err(internal)
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
            let since_ms = super::trace::since_ms(query.since.as_deref())?;
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
            // A disabled connector can be validated too: it is compiled
            // from the stored object, not taken from the policy in force.
            let objects = self.store.objects().map_err(internal)?;
            let object = objects
                .outbound_connectors
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(&name))
                .ok_or_else(|| AdminError::NotFound(format!("outbound connector {name:?}")))?;
            let connector = crate::route::OutboundConnector::from_object(object)
                .map_err(|e| AdminError::Invalid(e.to_string()))?;
            let stored = object.validation_recipients.clone();
            let wanted = if recipients.is_empty() { stored } else { recipients };
            let recipients = wanted
                .iter()
                .map(|r| {
                    crate::message::Address::parse(r)
                        .map_err(|e| AdminError::Invalid(format!("recipients: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let report = self.deliverer.validate(&connector, &recipients).await;
            let summary = super::validation::last_validation(&report, now_ms());
            self.change_objects(Box::new(move |objects| {
                Ok(super::validation::record(objects, &name, summary))
            }))
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
            Ok(crate::admin::NodeStats {
                queue: self.queue.depth().map_err(internal)?,
                activity: self.queue.counters().activity(since_ms),
            })
        })
    }
}
