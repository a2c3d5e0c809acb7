//! Stage 5: the durable spool and its schedule.
//!
//! Contract: [`Queue::enqueue`] returns only when the message and its
//! envelope are committed to stable storage (the caller then says 250).
//! Each recipient has its own state; an attempt delivers the due recipients
//! grouped by route, applies each outcome (delivered, deferred with the
//! next retry time, bounced), expires recipients past `expire_after`, and
//! sends DSNs to the sender (never to `<>`). A restart, kill -9 included,
//! reloads the spool and resumes: nothing acknowledged is lost (a message
//! may be delivered twice if the node dies between the remote 250 and the
//! state commit, as with every MTA).

mod dsn;
mod entry;
mod memory;
mod quarantine;
mod tally;

pub use dsn::{DsnAction, DsnRecipient};
pub use entry::{
    Hold, QueueDepth, QueueEntry, QueueStatus, QueuedRecipient, RecipientQueueStatus, RecipientStatus, Source,
};
pub use memory::{ContentMemory, MemoryShare};
pub use quarantine::QuarantineEntry;

use crate::deliver::{DeliveryAttempt, DeliveryJob, JobRecipient, Outcome};
use crate::message::{QueueId, Reply, ReversePath};
use crate::policy::Policy;
use crate::route::Route;
use crate::store::{Store, StoreError, Write};
use crate::trace::{now_ms, TraceEvent, TraceKind};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

/// Everything one accepted message turns into, committed together.
#[derive(Debug, Default)]
pub struct Acceptance {
    /// Copies to deliver (and reports to send), with their content.
    pub queued: Vec<(QueueEntry, Vec<u8>)>,
    /// Copies held by a rule.
    pub quarantined: Vec<(QuarantineEntry, Vec<u8>)>,
    /// Trace events of the acceptance.
    pub events: Vec<TraceEvent>,
}

/// What carries a job to its next hop: the delivery stage, wired by the server.
pub trait Transport: Send + Sync + 'static {
    /// One attempt for a group of recipients sharing a route.
    fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>>;
}

/// Queue settings from the node config.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Node hostname (DSN Reporting-MTA, From).
    pub hostname: String,
    /// Waits after the 1st, 2nd... failure; the last repeats.
    pub retry: Vec<Duration>,
    /// Age at which undelivered recipients bounce.
    pub expire_after: Duration,
    /// Concurrent message deliveries.
    pub max_concurrency: usize,
    /// Content that delivery attempts hold in memory at once.
    pub delivery_memory: ContentMemory,
}

/// What an administrator does to a queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueAction {
    /// Attempt now.
    Retry,
    /// Stop attempts until released.
    Hold,
    /// Resume a held message.
    Release,
    /// Drop the message without a bounce.
    Delete,
}

/// What an administrative action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActResult {
    /// No entry with that id.
    Missing,
    /// Applied and traced.
    Done,
    /// The entry already was so (hold of a held entry, release of an active
    /// one): nothing written, no trace event.
    Unchanged,
    /// A retry of a held entry: refused; the entry stays held until released.
    Held,
}

/// What `retry --all` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryAll {
    /// Entries made due now.
    pub retried: usize,
    /// Held entries left held.
    pub held: usize,
}

/// Why the queue refused something.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store failed: the message is not accepted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The spool handle; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    settings: QueueSettings,
    policy: watch::Receiver<Arc<Policy>>,
    state: Mutex<State>,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Held from reading a quarantined message to committing its release
    /// or deletion, so two administrators acting at once cannot both win.
    quarantine_ops: tokio::sync::Mutex<()>,
    /// What was stored, counted for `/metrics` and the dashboard.
    counters: Arc<crate::trace::TraceCounters>,
}

#[derive(Default)]
struct State {
    entries: HashMap<QueueId, QueueEntry>,
    /// (due ms, id): may hold stale pairs, checked against the entry when popped.
    due: BTreeSet<(u64, QueueId)>,
    in_flight: HashSet<QueueId>,
    /// Deleted or retried while an attempt ran: applied when it ends.
    pending_action: HashMap<QueueId, QueueAction>,
}

impl State {
    fn schedule(&mut self, entry: &QueueEntry) {
        if let Some(due) = entry.next_due_ms() {
            self.due.insert((due, entry.id.clone()));
        }
    }
}

impl Queue {
    /// Loads the spool from the store and starts the scheduler.
    pub fn start(
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
        settings: QueueSettings,
        policy: watch::Receiver<Arc<Policy>>,
    ) -> Result<Queue, QueueError> {
        let mut state = State::default();
        for entry in store.queue_entries()? {
            state.schedule(&entry);
            state.entries.insert(entry.id.clone(), entry);
        }
        tracing::info!(messages = state.entries.len(), "spool loaded");
        let counters = Arc::new(crate::trace::TraceCounters::default());
        counters.set_quarantined(store.quarantine()?.len() as u64);
        let slots = Arc::new(Semaphore::new(settings.max_concurrency));
        let queue = Queue {
            inner: Arc::new(Inner {
                store,
                transport,
                settings,
                policy,
                state: Mutex::new(state),
                wake: Notify::new(),
                slots,
                quarantine_ops: tokio::sync::Mutex::new(()),
                counters,
            }),
        };
        tokio::spawn(queue.clone().run_scheduler());
        Ok(queue)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the data is
        // still consistent enough to keep delivering, so recover the guard.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a new message durably, then schedules it. Returns after fsync.
    pub async fn enqueue(
        &self,
        entry: QueueEntry,
        content: Vec<u8>,
        events: Vec<TraceEvent>,
    ) -> Result<(), QueueError> {
        self.accept(Acceptance {
            queued: vec![(entry, content)],
            quarantined: Vec::new(),
            events,
        })
        .await
    }

    /// Stores everything one accepted message became (copies per rule
    /// outcome, quarantined copies, reports) in one durable commit, then
    /// schedules the queued ones. All or nothing.
    pub async fn accept(&self, acceptance: Acceptance) -> Result<(), QueueError> {
        let Acceptance {
            queued,
            quarantined,
            events,
        } = acceptance;
        let entries: Vec<QueueEntry> = queued.iter().map(|(e, _)| e.clone()).collect();
        let mut writes: Vec<Write> = queued.into_iter().map(|(e, c)| Write::Enqueue(e, c)).collect();
        writes.extend(quarantined.into_iter().map(|(q, c)| Write::Quarantine(q, c)));
        writes.push(Write::Trace(events));
        self.commit(writes).await?;
        let mut state = self.state();
        for entry in entries {
            state.schedule(&entry);
            state.entries.insert(entry.id.clone(), entry);
        }
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Records trace events with the next commit, without waiting.
    pub fn record(&self, events: Vec<TraceEvent>) {
        self.submit(vec![Write::Trace(events)]);
    }

    /// Quarantined messages, oldest first.
    pub fn quarantine(&self) -> Result<Vec<QuarantineEntry>, QueueError> {
        let mut list = self.inner.store.quarantine()?;
        list.sort_by(|a, b| a.entry.id.cmp(&b.entry.id));
        Ok(list)
    }

    /// One quarantined message and its content.
    pub fn quarantined(&self, id: &QueueId) -> Result<Option<(QuarantineEntry, Vec<u8>)>, QueueError> {
        let Some(entry) = self
            .inner
            .store
            .quarantine()?
            .into_iter()
            .find(|q| &q.entry.id == id)
        else {
            return Ok(None);
        };
        Ok(self
            .inner
            .store
            .quarantined_content(id)?
            .map(|content| (entry, content)))
    }

    /// Releases a quarantined message into the queue; `false` when there is
    /// none (never held, or already released or deleted: one action wins).
    pub async fn release_quarantined(&self, id: &QueueId) -> Result<bool, QueueError> {
        let _exclusive = self.inner.quarantine_ops.lock().await;
        let Some((held, content)) = self.quarantined(id)? else {
            return Ok(false);
        };
        let now = now_ms();
        let mut entry = held.entry;
        for r in &mut entry.recipients {
            r.status = RecipientStatus::Queued { due_ms: now };
        }
        entry.expires_at_ms = self.expiry_from(now);
        let detail = format!("released from quarantine (rule {:?})", held.rule);
        let events = vec![event(&entry, TraceKind::Released, None, None, Some(detail))];
        let writes = vec![
            Write::Unquarantine(id.clone()),
            Write::Enqueue(entry.clone(), content),
            Write::Trace(events),
        ];
        self.commit(writes).await?;
        let mut state = self.state();
        state.schedule(&entry);
        state.entries.insert(entry.id.clone(), entry);
        drop(state);
        self.inner.wake.notify_one();
        Ok(true)
    }

    /// Deletes a quarantined message; `false` when there is none (never
    /// held, or already released or deleted: one action wins).
    pub async fn delete_quarantined(&self, id: &QueueId) -> Result<bool, QueueError> {
        let _exclusive = self.inner.quarantine_ops.lock().await;
        let Some((held, _)) = self.quarantined(id)? else {
            return Ok(false);
        };
        let events = vec![event(
            &held.entry,
            TraceKind::Deleted,
            None,
            None,
            Some("deleted from quarantine".into()),
        )];
        self.commit(vec![Write::Unquarantine(id.clone()), Write::Trace(events)])
            .await?;
        Ok(true)
    }

    /// All queued messages, oldest first.
    pub fn list(&self) -> Vec<QueueEntry> {
        let mut entries: Vec<QueueEntry> = self.state().entries.values().cloned().collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    }

    /// One queued message.
    pub fn get(&self, id: &QueueId) -> Option<QueueEntry> {
        self.state().entries.get(id).cloned()
    }

    /// Applies an administrative action, as postsuper does: a retry never
    /// releases a held entry, and holding a held entry (or releasing an
    /// active one) changes nothing and records no second event.
    pub async fn act(&self, id: &QueueId, action: QueueAction) -> Result<ActResult, QueueError> {
        let (writes, entry) = {
            let mut state = self.state();
            let in_flight = state.in_flight.contains(id);
            let Some(entry) = state.entries.get_mut(id) else {
                return Ok(ActResult::Missing);
            };
            let held = entry.hold == Hold::Held;
            let now = now_ms();
            let kind = match action {
                QueueAction::Retry if held => return Ok(ActResult::Held),
                QueueAction::Hold if held => return Ok(ActResult::Unchanged),
                QueueAction::Release if !held => return Ok(ActResult::Unchanged),
                QueueAction::Retry => {
                    for r in &mut entry.recipients {
                        match &mut r.status {
                            RecipientStatus::Queued { due_ms } => *due_ms = (*due_ms).min(now),
                            RecipientStatus::Deferred {
                                due_ms, scheduled_ms, ..
                            } => {
                                // Remember the schedule, so a failed early
                                // attempt does not push the next one out.
                                if *due_ms > now && scheduled_ms.is_none() {
                                    *scheduled_ms = Some(*due_ms);
                                }
                                *due_ms = (*due_ms).min(now);
                            }
                            _ => {}
                        }
                    }
                    None
                }
                QueueAction::Hold => {
                    entry.hold = Hold::Held;
                    Some(TraceKind::Held)
                }
                QueueAction::Release => {
                    entry.hold = Hold::Active;
                    Some(TraceKind::Released)
                }
                QueueAction::Delete => Some(TraceKind::Deleted),
            };
            let entry = entry.clone();
            if in_flight {
                state.pending_action.insert(id.clone(), action);
            }
            let mut writes = Vec::new();
            if action == QueueAction::Delete {
                state.entries.remove(id);
                writes.push(Write::Remove(id.clone()));
            } else {
                state.schedule(&entry);
                writes.push(Write::Update(entry.clone()));
            }
            if let Some(kind) = kind {
                writes.push(Write::Trace(vec![event(&entry, kind, None, None, None)]));
            }
            (writes, entry)
        };
        self.commit(writes).await?;
        tracing::info!(id = %entry.id, action = ?action, "queue action");
        self.inner.wake.notify_one();
        Ok(ActResult::Done)
    }

    /// Makes every waiting entry due now, except held ones (`postqueue -f`
    /// does not touch the hold queue either).
    pub async fn retry_all(&self) -> Result<RetryAll, QueueError> {
        let ids: Vec<QueueId> = self.state().entries.keys().cloned().collect();
        let mut result = RetryAll::default();
        for id in ids {
            match self.act(&id, QueueAction::Retry).await? {
                ActResult::Done => result.retried += 1,
                ActResult::Held => result.held += 1,
                ActResult::Missing | ActResult::Unchanged => {}
            }
        }
        Ok(result)
    }

    async fn run_scheduler(self) {
        loop {
            let (ready, next) = self.take_due(now_ms());
            for id in ready {
                let permit = match self.inner.slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                };
                let queue = self.clone();
                tokio::spawn(async move {
                    queue.attempt(id).await;
                    drop(permit);
                });
            }
            let sleep = next
                .map(|due| due.saturating_sub(now_ms()))
                .unwrap_or(60_000)
                .min(60_000);
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep.max(1))) => {}
            }
        }
    }

    /// Pops the due, active, idle messages; returns them and the next due time.
    fn take_due(&self, now: u64) -> (Vec<QueueId>, Option<u64>) {
        let mut state = self.state();
        let mut ready = Vec::new();
        while let Some((due, id)) = state.due.first().cloned() {
            if due > now {
                return (ready, Some(due));
            }
            state.due.pop_first();
            let Some(entry) = state.entries.get(&id) else {
                continue;
            };
            if entry.hold == Hold::Held || state.in_flight.contains(&id) || entry.next_due_ms() != Some(due) {
                continue;
            }
            state.in_flight.insert(id.clone());
            ready.push(id);
        }
        (ready, None)
    }

    async fn attempt(&self, id: QueueId) {
        let Some(mut entry) = self.get(&id) else {
            self.state().in_flight.remove(&id);
            return;
        };
        // Loaded content and its copies on the way out stay within the budget.
        let _memory = self.inner.settings.delivery_memory.reserve(entry.size).await;
        let store = self.inner.store.clone();
        let load_id = id.clone();
        // Content that cannot be loaded is an attempt that failed
        // temporarily: the recipients are deferred on the retry schedule
        // (and expire in time), never left out of the schedule.
        let (content, load_failure) = match tokio::task::spawn_blocking(move || store.content(&load_id)).await
        {
            Ok(Ok(Some(content))) => (Arc::new(content), None),
            outcome => {
                let why = match outcome {
                    Ok(Ok(_)) => "missing from the store".to_string(),
                    Ok(Err(error)) => error.to_string(),
                    Err(error) => error.to_string(),
                };
                tracing::error!(id = %id, error = %why, "queued content cannot be loaded; deferring");
                let reply = Reply::new(451, [4, 3, 0], format!("queued content cannot be loaded ({why})"));
                (Arc::new(Vec::new()), Some(reply))
            }
        };
        let now = now_ms();
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in entry.recipients.iter().enumerate() {
            if r.status.due_ms().is_some_and(|due| due <= now) {
                groups
                    .entry(r.route.destination_key(r.address.domain()))
                    .or_default()
                    .push(i);
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut task_recipients = HashMap::new();
        let mut results = Vec::new();
        for indexes in groups.into_values() {
            if let Some(reply) = &load_failure {
                let attempt = temporary_failure(&entry, &indexes, reply);
                results.push((indexes, attempt));
                continue;
            }
            let first = &entry.recipients[indexes[0]];
            let job = DeliveryJob {
                route: first.route.clone(),
                domain: first.address.domain().clone(),
                mail_from: entry.from.clone(),
                recipients: indexes
                    .iter()
                    .map(|&i| {
                        let r = &entry.recipients[i];
                        JobRecipient {
                            address: r.address.clone(),
                            notify: r.notify,
                            orcpt: r.orcpt.clone(),
                        }
                    })
                    .collect(),
                content: content.clone(),
                body: entry.body,
                smtputf8: entry.smtputf8,
                ret: entry.ret,
                envid: entry.envid.clone(),
            };
            let transport = self.inner.transport.clone();
            let task = tasks.spawn({
                let indexes = indexes.clone();
                async move { (indexes, transport.attempt(job).await) }
            });
            task_recipients.insert(task.id(), indexes);
        }
        while let Some(done) = tasks.join_next_with_id().await {
            match done {
                Ok((_, result)) => results.push(result),
                // A delivery that panicked is a failed attempt like any
                // other: its recipients are deferred with the error and
                // the attempt counts, so retries and expiry still apply.
                Err(error) => {
                    tracing::error!(id = %id, error = %error, "delivery task failed");
                    if let Some(indexes) = task_recipients.remove(&error.id()) {
                        let reply = Reply::new(451, [4, 3, 0], "delivery failed with an internal error");
                        let attempt = temporary_failure(&entry, &indexes, &reply);
                        results.push((indexes, attempt));
                    }
                }
            }
        }
        let writes = self.apply_results(&mut entry, results, &content);
        let pending = {
            let mut state = self.state();
            state.in_flight.remove(&id);
            state.pending_action.remove(&id)
        };
        if pending == Some(QueueAction::Delete) {
            return;
        }
        let mut writes = writes;
        if pending == Some(QueueAction::Hold) {
            entry.hold = Hold::Held;
        }
        let finished = entry.is_finished();
        writes.push(if finished {
            Write::Remove(id.clone())
        } else {
            Write::Update(entry.clone())
        });
        let new_entries: Vec<QueueEntry> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Enqueue(e, _) => Some(e.clone()),
                _ => None,
            })
            .collect();
        if let Err(error) = self.commit(writes).await {
            // The outcome is lost from disk: the attempt repeats after a restart. Keep memory as is.
            tracing::error!(id = %id, error = %error, "cannot record delivery outcome");
        }
        let mut state = self.state();
        if finished {
            state.entries.remove(&id);
        } else {
            state.schedule(&entry);
            state.entries.insert(id.clone(), entry);
        }
        for e in new_entries {
            state.schedule(&e);
            state.entries.insert(e.id.clone(), e);
        }
        drop(state);
        self.inner.wake.notify_one();
    }

    /// Applies outcomes to the entry; returns the writes for trace events and DSNs.
    fn apply_results(
        &self,
        entry: &mut QueueEntry,
        results: Vec<(Vec<usize>, DeliveryAttempt)>,
        content: &[u8],
    ) -> Vec<Write> {
        let now = now_ms();
        let mut events = Vec::new();
        let mut failed = Vec::new();
        let mut delayed = Vec::new();
        let mut delivered = Vec::new();
        let mut relayed = Vec::new();
        let connector_of = |r: &QueuedRecipient| r.route.connector().map(str::to_string);
        for (indexes, attempt) in results {
            for (&i, (_, outcome)) in indexes.iter().zip(attempt.outcomes.iter()) {
                let expired = now >= entry.expires_at_ms;
                let r = &mut entry.recipients[i];
                r.attempts += 1;
                let connector = connector_of(r);
                let to = Some(r.address.to_string());
                match outcome {
                    Outcome::Delivered(reply) => {
                        if r.notify.on_success() && !attempt.dsn_passed_on {
                            let report = (i, reply.clone(), attempt.host.clone());
                            if attempt.host.as_deref() == Some(crate::deliver::MAILBOX_HOST) {
                                delivered.push(report);
                            } else {
                                relayed.push(report);
                            }
                        }
                        r.status = RecipientStatus::Delivered {
                            reply: reply.to_string(),
                            host: attempt.host.clone(),
                        };
                        events.push(event_for(
                            entry_meta(entry),
                            TraceKind::Delivered,
                            to,
                            connector,
                            attempt.host.clone(),
                            Some(delivery_detail(&attempt, reply)),
                        ));
                    }
                    Outcome::PermFail(reply) => {
                        let r = &mut entry.recipients[i];
                        r.status = RecipientStatus::Failed {
                            reason: reply.to_string(),
                            expired: false,
                        };
                        failed.push((i, reply.clone(), attempt.host.clone()));
                        events.push(event_for(
                            entry_meta(entry),
                            TraceKind::Bounced,
                            to,
                            connector,
                            attempt.host.clone(),
                            Some(delivery_detail(&attempt, reply)),
                        ));
                    }
                    Outcome::TempFail(reply) if expired => {
                        r.status = RecipientStatus::Failed {
                            reason: format!("expired: {reply}"),
                            expired: true,
                        };
                        let expiry = Reply::new(
                            550,
                            [4, 4, 7],
                            format!("delivery time expired; last error: {reply}"),
                        );
                        failed.push((i, expiry, attempt.host.clone()));
                        events.push(event_for(
                            entry_meta(entry),
                            TraceKind::Expired,
                            to,
                            connector,
                            attempt.host.clone(),
                            Some(delivery_detail(&attempt, reply)),
                        ));
                    }
                    Outcome::TempFail(reply) => {
                        let (delay_notified, scheduled_ms, early_attempts) = match r.status {
                            RecipientStatus::Deferred {
                                delay_notified,
                                scheduled_ms,
                                early_attempts,
                                ..
                            } => (delay_notified, scheduled_ms, early_attempts),
                            _ => (false, None, 0),
                        };
                        if !delay_notified && r.notify.on_delay() {
                            delayed.push((i, reply.clone(), attempt.host.clone()));
                        }
                        // An administrator's early retry that fails goes back
                        // to the schedule it had; it is not a backoff step.
                        let (due_ms, early_attempts) = match scheduled_ms {
                            Some(scheduled) if scheduled > now => (scheduled, early_attempts + 1),
                            _ => {
                                let wait = self.retry_wait(r.attempts - early_attempts);
                                (now + wait.as_millis() as u64, early_attempts)
                            }
                        };
                        let r = &mut entry.recipients[i];
                        r.status = RecipientStatus::Deferred {
                            due_ms: due_ms.min(entry.expires_at_ms.max(now + 1000)),
                            last_error: reply.to_string(),
                            delay_notified: delay_notified || r.notify.on_delay(),
                            scheduled_ms: None,
                            early_attempts,
                        };
                        events.push(event_for(
                            entry_meta(entry),
                            TraceKind::Deferred,
                            to,
                            connector,
                            attempt.host.clone(),
                            Some(delivery_detail(&attempt, reply)),
                        ));
                    }
                }
            }
        }
        let mut writes = Vec::new();
        for (action, list) in [
            (DsnAction::Failed, failed),
            (DsnAction::Delayed, delayed),
            (DsnAction::Delivered, delivered),
            (DsnAction::Relayed, relayed),
        ] {
            let list: Vec<_> = list
                .into_iter()
                .filter(|(i, ..)| {
                    let r = &entry.recipients[*i];
                    match action {
                        DsnAction::Failed => r.notify.on_failure(),
                        DsnAction::Delayed => r.notify.on_delay(),
                        DsnAction::Delivered | DsnAction::Relayed => r.notify.on_success(),
                    }
                })
                .collect();
            if list.is_empty() || entry.from == ReversePath::Null {
                continue;
            }
            let recipients: Vec<DsnRecipient> = list
                .iter()
                .map(|(i, reply, host)| DsnRecipient {
                    address: entry.recipients[*i].address.clone(),
                    orcpt: entry.recipients[*i].orcpt.clone(),
                    status: action.status(reply),
                    diagnostic: format!("smtp; {reply}"),
                    remote_mta: host.clone(),
                })
                .collect();
            if let Some((dsn, content)) = self.build_dsn(entry, content, action, &recipients) {
                events.push(event_for(
                    entry_meta(entry),
                    TraceKind::DsnSent,
                    Some(entry.from.to_string()),
                    None,
                    None,
                    Some(format!(
                        "{} as {}",
                        match action {
                            DsnAction::Failed => "failure report",
                            DsnAction::Delayed => "delay report",
                            DsnAction::Delivered | DsnAction::Relayed => "success report",
                        },
                        dsn.id
                    )),
                ));
                events.push(event(
                    &dsn,
                    TraceKind::Received,
                    None,
                    None,
                    Some("generated delivery status notification".into()),
                ));
                writes.push(Write::Enqueue(dsn, content));
            }
        }
        writes.insert(0, Write::Trace(events));
        writes
    }

    fn retry_wait(&self, attempts: u32) -> Duration {
        let retry = &self.inner.settings.retry;
        let index = (attempts.max(1) as usize - 1).min(retry.len().saturating_sub(1));
        retry.get(index).copied().unwrap_or(Duration::from_secs(300))
    }

    fn build_dsn(
        &self,
        entry: &QueueEntry,
        content: &[u8],
        action: DsnAction,
        recipients: &[DsnRecipient],
    ) -> Option<(QueueEntry, Vec<u8>)> {
        let sender = entry.from.address()?.clone();
        let now_secs = (now_ms() / 1000) as i64;
        let report = dsn::render(
            &self.inner.settings.hostname,
            entry,
            content,
            action,
            recipients,
            now_secs,
        );
        Some((self.generated(sender, &report), report))
    }

    /// A failure report for recipients refused before queueing (a rule's
    /// reject of some recipients only); `None` for the null sender.
    pub fn failure_report(
        &self,
        entry: &QueueEntry,
        content: &[u8],
        recipients: &[DsnRecipient],
    ) -> Option<(QueueEntry, Vec<u8>)> {
        self.build_dsn(entry, content, DsnAction::Failed, recipients)
    }

    /// A notice to the sender of `entry` (a rule's notify_sender); `None` for the null sender.
    pub fn sender_notice(
        &self,
        entry: &QueueEntry,
        content: &[u8],
        text: &str,
    ) -> Option<(QueueEntry, Vec<u8>)> {
        let sender = entry.from.address()?.clone();
        let now_secs = (now_ms() / 1000) as i64;
        let notice = dsn::notice(&self.inner.settings.hostname, &sender, content, text, now_secs);
        Some((self.generated(sender, &notice), notice))
    }

    /// Queues a report this node wrote (TLS-RPT) from `<>` to `to`,
    /// routed now; returns its queue id once stored.
    pub async fn enqueue_report(
        &self,
        to: crate::message::Address,
        content: Vec<u8>,
        detail: String,
    ) -> Result<QueueId, QueueError> {
        let entry = self.generated(to, &content);
        let id = entry.id.clone();
        let events = vec![event(&entry, TraceKind::Received, None, None, Some(detail))];
        self.enqueue(entry, content, events).await?;
        Ok(id)
    }

    /// A message this node writes itself, from `<>` to `to`, routed now.
    fn generated(&self, to: crate::message::Address, content: &[u8]) -> QueueEntry {
        let now = now_ms();
        let policy = self.inner.policy.borrow().clone();
        let route = crate::route::route(&policy.routing, to.domain()).unwrap_or(Route::Mx);
        let mut envelope = crate::message::Envelope::new(ReversePath::Null);
        envelope.body = crate::message::BodyType::EightBitMime;
        envelope.recipients.push(crate::message::EnvelopeRecipient {
            address: to,
            notify: crate::message::Notify::Never,
            orcpt: None,
        });
        let source = Source {
            peer: "local".into(),
            helo: self.inner.settings.hostname.clone(),
            connector: None,
        };
        QueueEntry::new(
            QueueId::generate(),
            &envelope,
            [route],
            content,
            source,
            now,
            self.expiry_from(now),
        )
    }

    /// Expiry time for a message accepted now.
    pub fn expiry_from(&self, received_ms: u64) -> u64 {
        received_ms + self.inner.settings.expire_after.as_millis() as u64
    }
}

/// The same temporary failure for recipients `indexes` of `entry`, for
/// attempts that never reached a next hop.
fn temporary_failure(entry: &QueueEntry, indexes: &[usize], reply: &Reply) -> DeliveryAttempt {
    DeliveryAttempt {
        host: None,
        tls: None,
        dsn_passed_on: false,
        tls_policy: None,
        outcomes: indexes
            .iter()
            .map(|&i| {
                (
                    entry.recipients[i].address.clone(),
                    Outcome::TempFail(reply.clone()),
                )
            })
            .collect(),
    }
}

struct EntryMeta {
    queue_id: QueueId,
    message_id: Option<String>,
    from: String,
}

fn entry_meta(entry: &QueueEntry) -> EntryMeta {
    EntryMeta {
        queue_id: entry.id.clone(),
        message_id: entry.message_id.clone(),
        from: entry.from.to_string(),
    }
}

fn event_for(
    meta: EntryMeta,
    kind: TraceKind,
    to: Option<String>,
    connector: Option<String>,
    remote_host: Option<String>,
    detail: Option<String>,
) -> TraceEvent {
    TraceEvent {
        at_ms: now_ms(),
        kind,
        queue_id: meta.queue_id,
        message_id: meta.message_id,
        from: meta.from,
        to,
        connector,
        remote_host,
        detail,
    }
}

/// The trace detail of a delivery outcome: the TLS policy the host was
/// held to (`tls=dane`, `tls=mta-sts`, ...; SPEC section 10), then the reply.
fn delivery_detail(attempt: &DeliveryAttempt, reply: &Reply) -> String {
    match &attempt.tls_policy {
        Some(policy) => format!("tls={policy} {reply}"),
        None => reply.to_string(),
    }
}

/// A trace event about a whole message.
pub fn event(
    entry: &QueueEntry,
    kind: TraceKind,
    to: Option<String>,
    remote_host: Option<String>,
    detail: Option<String>,
) -> TraceEvent {
    event_for(
        entry_meta(entry),
        kind,
        to,
        entry.source.connector.clone(),
        remote_host,
        detail,
    )
}

#[cfg(test)]
mod tests;
