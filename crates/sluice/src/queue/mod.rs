//! Stage 5: the durable spool and its schedule.
//!
//! Contract: [`Queue::enqueue`] returns only when the message and its
//! envelope are committed to stable storage (the caller then says 250).
//! Each recipient has its own state; an attempt delivers the due recipients
//! grouped by route, applies each outcome (delivered, deferred with the
//! next retry time, bounced), expires recipients past `expire_after`, and
//! sends DSNs to the sender (never to `<>`). A restart, kill -9 included,
//! resumes from the store: nothing acknowledged is lost (a message may be
//! delivered twice if the node dies between the remote 250 and the state
//! commit, as with every MTA).
//!
//! Memory holds only what is due soon and what is being worked: the
//! scheduler reads the store's due index a window at a time
//! (`schedule.rs`), so a start reads nothing but the first window, and
//! entries overdue after a restart are spread over `restart_spread`
//! (their stored schedule is kept). Destinations that stop answering are
//! probed instead of tried once per message ([`destination`]): their mail
//! is parked, written once and indexed by destination in the spool, and
//! waits for a probe that answers, not for a due time of its own (its due
//! time is only a late recheck, `park_recheck`, and its expiry), so a
//! probe that fails writes no entry. Storage is behind the
//! [`Spool`] trait, in this module's types.

mod destination;
mod dsn;
mod entry;
mod fresh;
mod lease;
mod memory;
mod quarantine;
mod schedule;
mod spool;
mod tally;

pub use destination::DestinationSettings;
pub use dsn::{DsnAction, DsnRecipient};
pub use entry::{
    Hold, QueueDepth, QueueEntry, QueueStatus, QueuedRecipient, RecipientQueueStatus, RecipientStatus, Source,
};
pub use memory::{ContentMemory, MemoryShare};
pub use quarantine::QuarantineEntry;
pub use spool::{
    destination, Claim, Due, DueKey, Guard, Lease, Page, Revision, ShapeCount, Spool, SpoolCommit,
    SpoolError, SpoolIndex, SpoolNews, SpoolWrite,
};

use crate::deliver::{DeliveryAttempt, DeliveryJob, JobRecipient, Outcome};
use crate::message::{MessageContent, QueueId, Reply, ReversePath};
use crate::policy::Policy;
use crate::route::Route;
use crate::trace::{now_ms, TraceEvent, TraceKind};
use destination::{DestinationStates, Verdict};
use schedule::{Destinations, NearSchedule};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

/// Everything one accepted message turns into, committed together.
#[derive(Debug, Default)]
pub struct Acceptance {
    /// Copies to deliver (and reports to send), with their content; copies
    /// of one message share its body, and the store keeps it once.
    pub queued: Vec<(QueueEntry, MessageContent)>,
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
    /// Down destinations and their probes.
    pub destinations: DestinationSettings,
    /// Entries of the due index held in memory at most.
    pub schedule_capacity: usize,
    /// How far ahead the scheduler reads the due index.
    pub schedule_window: Duration,
    /// Entries overdue at start are spread over this long.
    pub restart_spread: Duration,
    /// On a spool shared by several nodes, how long a claim on an entry
    /// lasts unless renewed (`[store] lease`): a node that dies holds its
    /// work this long before the others take it over.
    pub lease: Duration,
    /// How long a parked message waits for a recheck of its own (its
    /// destination's probe usually brings it back long before): its age,
    /// from the first to the second of these, so each message is rewritten
    /// a few times over its life, at times of its own, never in bulk.
    pub park_recheck: (Duration, Duration),
}

impl QueueSettings {
    /// Settings with the defaults for everything a node config does not set.
    pub fn new(
        hostname: String,
        retry: Vec<Duration>,
        expire_after: Duration,
        max_concurrency: usize,
    ) -> Self {
        QueueSettings {
            hostname,
            retry,
            expire_after,
            max_concurrency,
            delivery_memory: ContentMemory::new(64 << 20),
            destinations: DestinationSettings::default(),
            schedule_capacity: 10_000,
            schedule_window: Duration::from_secs(60),
            restart_spread: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            park_recheck: (Duration::from_secs(1800), Duration::from_secs(4 * 3600)),
        }
    }
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

impl RetryAll {
    /// Counts what one entry's retry did (a shared spool retries each on
    /// its own); an error is returned.
    fn add(
        &mut self,
        done: Option<Result<Result<ActResult, QueueError>, tokio::task::JoinError>>,
    ) -> Result<(), QueueError> {
        match done {
            Some(Ok(Ok(ActResult::Done))) => self.retried += 1,
            Some(Ok(Ok(ActResult::Held))) => self.held += 1,
            Some(Ok(Ok(ActResult::Missing | ActResult::Unchanged))) | None => {}
            Some(Ok(Err(error))) => return Err(error),
            Some(Err(error)) => return Err(SpoolError::Failed(error.to_string()).into()),
        }
        Ok(())
    }
}

/// Entries `retry --all` retries at once on a shared spool.
const SHARED_RETRIES: usize = 32;

/// Which entries `delete --all` removes: every one, or those of a status
/// (`queued`, `deferred`, `held`) and with a waiting recipient in a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// The entry's status word (SPEC section 4).
    pub status: Option<String>,
    /// A waiting recipient's domain (case-insensitive).
    pub domain: Option<String>,
}

impl EntryFilter {
    /// Whether `entry` is one of those.
    pub fn matches(&self, entry: &QueueEntry) -> bool {
        self.status
            .as_deref()
            .is_none_or(|status| entry.status_word() == status)
            && self.domain.as_deref().is_none_or(|domain| {
                entry.recipients.iter().any(|r| {
                    r.status.due_ms().is_some() && r.address.domain().to_string().eq_ignore_ascii_case(domain)
                })
            })
    }
}

/// Why the queue refused something.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store failed: the message is not accepted.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Entries read, changed and committed per transaction by the bulk
/// operations (`retry --all`, deferring a down destination's mail).
const BATCH: usize = 512;

/// Queued content up to this size is read on the attempt's own thread,
/// as its entry is: a few pages from the local store's cache cost less
/// than a hand-over to a blocking thread and back, which on a busy machine
/// is two waits in the run queue per delivery. Larger content, and every
/// read from a shared spool (a database over the network), goes to a
/// blocking thread.
const INLINE_CONTENT_READ: u64 = 64 << 10;

/// Stripes of [`Inner::entry_locks`].
const ENTRY_LOCKS: usize = 64;

/// The spool handle; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    spool: Arc<dyn Spool>,
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
    /// Held by an administrative action from reading an entry to
    /// committing it, and by an attempt while it records its outcome, so
    /// neither overwrites the other (striped by id: unrelated entries
    /// still share group commits).
    entry_locks: Vec<tokio::sync::Mutex<()>>,
    /// The queue's clock: wall time at start plus tokio's monotonic time
    /// since, so tests drive retries, probes and expiry with paused time.
    started_ms: u64,
    started: tokio::time::Instant,
    /// Other nodes share the spool: entries are attempted under claims.
    shared: bool,
    /// Mail just accepted, for its first attempt (a spool of its own only).
    fresh: Mutex<fresh::Fresh>,
}

struct State {
    near: NearSchedule,
    in_flight: HashSet<QueueId>,
    /// In-flight entries an administrator held or deleted while their
    /// attempt ran: only these are read again before the outcome is
    /// written (every other attempt already holds the stored state).
    changed_in_flight: HashSet<QueueId>,
    destinations: DestinationStates,
    /// Claims this node holds on a shared spool, by entry.
    claims: HashMap<QueueId, lease::HeldClaim>,
}

impl State {
    /// An entry changed: its due-index row goes to the near schedule when
    /// it falls in the covered part.
    fn schedule(&mut self, entry: &QueueEntry) {
        let index = SpoolIndex::of(entry);
        self.near
            .arrive(index.due_ms, &entry.id, index.destinations.into());
    }
}

impl Queue {
    /// Starts the scheduler over the spool. Reads nothing up front: the
    /// first window of the due index is read as the scheduler starts.
    pub fn start(
        spool: Arc<dyn Spool>,
        transport: Arc<dyn Transport>,
        settings: QueueSettings,
        policy: watch::Receiver<Arc<Policy>>,
    ) -> Result<Queue, QueueError> {
        // Destinations with parked mail were down when the node stopped:
        // they are probed, their mail is not attempted message by message.
        let mut destinations = DestinationStates::new(settings.destinations.clone());
        let started_ms = now_ms();
        for (destination, parked) in spool.parked_destinations()? {
            tracing::info!(
                destination,
                parked,
                "destination down at start: probing it before its mail goes"
            );
            destinations.restore(&destination, started_ms);
        }
        let state = State {
            near: NearSchedule::new(settings.schedule_capacity),
            in_flight: HashSet::new(),
            changed_in_flight: HashSet::new(),
            destinations,
            claims: HashMap::new(),
        };
        let news = spool.news();
        let counters = Arc::new(crate::trace::TraceCounters::default());
        counters.set_quarantined(spool.quarantine()?.len() as u64);
        let slots = Arc::new(Semaphore::new(settings.max_concurrency));
        let queue = Queue {
            inner: Arc::new(Inner {
                spool,
                transport,
                settings,
                policy,
                state: Mutex::new(state),
                wake: Notify::new(),
                slots,
                quarantine_ops: tokio::sync::Mutex::new(()),
                counters,
                entry_locks: (0..ENTRY_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
                started_ms,
                started: tokio::time::Instant::now(),
                shared: news.is_some(),
                fresh: Mutex::new(fresh::Fresh::default()),
            }),
        };
        if let Some(news) = news {
            tokio::spawn(queue.clone().follow_news(news));
            tokio::spawn(queue.clone().renew_leases());
        }
        tokio::spawn(queue.clone().run_scheduler());
        Ok(queue)
    }

    fn fresh(&self) -> MutexGuard<'_, fresh::Fresh> {
        self.inner
            .fresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the data is
        // still consistent enough to keep delivering, so recover the guard.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry_lock(&self, id: &QueueId) -> &tokio::sync::Mutex<()> {
        let stripe = spread_of(id, ENTRY_LOCKS as u64) as usize;
        &self.inner.entry_locks[stripe]
    }

    /// The locks of every entry in `ids`, stripes taken in order so two
    /// batches never wait on each other.
    async fn lock_entries(&self, ids: &[QueueId]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids
            .iter()
            .map(|id| spread_of(id, ENTRY_LOCKS as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut locked = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            locked.push(self.inner.entry_locks[stripe].lock().await);
        }
        locked
    }

    /// Now on the queue's clock, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.inner.started_ms + self.inner.started.elapsed().as_millis() as u64
    }

    /// Stores a new message durably, then schedules it. Returns after fsync.
    pub async fn enqueue(
        &self,
        entry: QueueEntry,
        content: Vec<u8>,
        events: Vec<TraceEvent>,
    ) -> Result<(), QueueError> {
        self.accept(Acceptance {
            queued: vec![(entry, content.into())],
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
            mut queued,
            quarantined,
            events,
        } = acceptance;
        // Mail for a destination that is down is parked as it is stored:
        // one write, and no attempt until a probe answers.
        let mut parked = HashSet::new();
        for (entry, _) in &mut queued {
            if self.settle_parking(entry) {
                parked.insert(entry.id.clone());
            }
        }
        let indexes: Vec<(QueueId, SpoolIndex)> = queued
            .iter()
            .map(|(e, _)| (e.id.clone(), SpoolIndex::of(e)))
            .collect();
        // Copies sharing a body store it once, under the first one's id.
        let bodies: Vec<Option<QueueId>> = queued
            .iter()
            .map(|(_, content)| {
                let mut sharing = queued.iter().filter(|(_, c)| c.shares_body_with(content));
                let first = sharing.next().map(|(e, _)| e.id.clone());
                sharing.next().and(first)
            })
            .collect();
        // Kept before the commit is asked for: any write naming the entry
        // after that drops it again (see `fresh`).
        if !self.inner.shared {
            let mut fresh = self.fresh();
            for (entry, content) in &queued {
                if entry.size <= INLINE_CONTENT_READ && !parked.contains(&entry.id) {
                    fresh.keep(entry.clone(), Arc::new(content.to_vec()));
                }
            }
        }
        let mut writes: Vec<SpoolWrite> = queued
            .into_iter()
            .zip(bodies)
            .map(|((entry, content), body)| SpoolWrite::EnqueueCopy { entry, content, body })
            .collect();
        writes.extend(quarantined.into_iter().map(|(q, c)| SpoolWrite::Quarantine(q, c)));
        writes.push(SpoolWrite::Trace(events));
        if let Err(error) = self.commit(writes).await {
            let mut fresh = self.fresh();
            indexes.iter().for_each(|(id, _)| fresh.forget(id));
            return Err(error.into());
        }
        let mut state = self.state();
        for (id, index) in indexes {
            state.near.arrive(index.due_ms, &id, index.destinations.into());
        }
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Records trace events with the next commit, without waiting.
    pub fn record(&self, events: Vec<TraceEvent>) {
        self.submit(vec![SpoolWrite::Trace(events)]);
    }

    /// Quarantined messages, oldest first.
    pub fn quarantine(&self) -> Result<Vec<QuarantineEntry>, QueueError> {
        let mut list = self.inner.spool.quarantine()?;
        list.sort_by(|a, b| a.entry.id.cmp(&b.entry.id));
        Ok(list)
    }

    /// One page of quarantined messages, by id.
    pub fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<QuarantineEntry>, QueueError> {
        Ok(self.inner.spool.quarantine_page(after, limit)?)
    }

    /// One quarantined message and its content.
    pub fn quarantined(&self, id: &QueueId) -> Result<Option<(QuarantineEntry, Vec<u8>)>, QueueError> {
        let Some(entry) = self.inner.spool.quarantined(id)? else {
            return Ok(None);
        };
        Ok(self
            .inner
            .spool
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
        let now = self.now_ms();
        let mut entry = held.entry;
        for r in &mut entry.recipients {
            r.status = RecipientStatus::Queued { due_ms: now };
        }
        entry.expires_at_ms = self.expiry_from(now);
        let detail = format!("released from quarantine (rule {:?})", held.rule);
        let events = vec![event(&entry, TraceKind::Released, None, None, Some(detail))];
        let writes = vec![
            SpoolWrite::Unquarantine(id.clone()),
            SpoolWrite::Enqueue(entry.clone(), content),
            SpoolWrite::Trace(events),
        ];
        self.commit(writes).await?;
        self.state().schedule(&entry);
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
        self.commit(vec![
            SpoolWrite::Unquarantine(id.clone()),
            SpoolWrite::Trace(events),
        ])
        .await?;
        Ok(true)
    }

    /// Every queued message, oldest first: reads the whole spool, a page
    /// at a time. Listings that can be long use [`Queue::page`].
    pub fn list(&self) -> Result<Vec<QueueEntry>, QueueError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.inner.spool.queue_page(after.as_deref(), BATCH)?;
            all.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// At most `limit` queued messages with an id after `after`, oldest first.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, QueueError> {
        let mut page = self.inner.spool.queue_page(after, limit)?;
        self.explain_parked(&mut page.items);
        Ok(page)
    }

    /// One queued message.
    pub fn get(&self, id: &QueueId) -> Option<QueueEntry> {
        match self.inner.spool.entry(id) {
            Ok(mut entry) => {
                self.explain_parked(entry.as_mut_slice());
                entry
            }
            Err(error) => {
                tracing::error!(id = %id, error = %error, "cannot read queue entry");
                None
            }
        }
    }

    /// Says, in the last error of each parked recipient, when its
    /// destination is probed next: the stored text is from when it was
    /// parked, and a probe that fails does not rewrite it. A destination
    /// that answered since shows nothing more (its mail is being resumed).
    fn explain_parked(&self, entries: &mut [QueueEntry]) {
        let state = self.state();
        for entry in entries {
            let id = entry.id.clone();
            for r in &mut entry.recipients {
                let key = destination(r);
                if let RecipientStatus::Deferred {
                    parked: true,
                    last_error,
                    ..
                } = &mut r.status
                {
                    if let Some(blocked) = state.destinations.blocked(&key, &id) {
                        *last_error = format!(
                            "{}; next probe {}",
                            blocked.reason,
                            crate::trace::rfc3339(blocked.next_probe_ms)
                        );
                    }
                }
            }
        }
    }

    /// Waiting recipients per domain and minute of receipt, from the
    /// spool's counters (no scan): what `queue summary` shows.
    pub fn shape(&self) -> Result<Vec<ShapeCount>, QueueError> {
        Ok(self.inner.spool.shape()?)
    }

    /// Applies an administrative action, as postsuper does: a retry never
    /// releases a held entry, and holding a held entry (or releasing an
    /// active one) changes nothing and records no second event.
    ///
    /// On a spool other nodes share, the action is made on the entry as
    /// stored and written only if nobody wrote it since (an attempt's
    /// outcome, another administrator); else it is made again on the new
    /// state, so it is never lost and never undoes a delivery.
    pub async fn act(&self, id: &QueueId, action: QueueAction) -> Result<ActResult, QueueError> {
        let _entry = self.entry_lock(id).lock().await;
        for _ in 0..lease::REDO_TRIES {
            match self.act_once(id, action).await {
                Err(QueueError::Spool(SpoolError::Changed)) => continue,
                result => return result,
            }
        }
        Err(SpoolError::Changed.into())
    }

    async fn act_once(&self, id: &QueueId, action: QueueAction) -> Result<ActResult, QueueError> {
        let Some((mut entry, revision)) = self.read_entry(id).await? else {
            return Ok(ActResult::Missing);
        };
        let now = self.now_ms();
        let held = entry.hold == Hold::Held;
        let kind = match action {
            QueueAction::Retry if held => return Ok(ActResult::Held),
            QueueAction::Hold if held => return Ok(ActResult::Unchanged),
            QueueAction::Release if !held => return Ok(ActResult::Unchanged),
            QueueAction::Retry => {
                retry_now(&mut entry, now);
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
        let mut writes = Vec::new();
        if action == QueueAction::Delete {
            writes.push(SpoolWrite::Remove(id.clone()));
        } else {
            writes.push(SpoolWrite::Update(entry.clone()));
        }
        if let Some(kind) = kind {
            writes.push(SpoolWrite::Trace(vec![event(&entry, kind, None, None, None)]));
        }
        let guard = Guard {
            id: id.clone(),
            revision,
            claim: None,
        };
        self.commit_guarded(Some(&guard), writes).await?;
        {
            let mut state = self.state();
            if state.in_flight.contains(id) {
                state.changed_in_flight.insert(id.clone());
            }
            if action == QueueAction::Delete {
                state.near.forget(id);
            } else {
                state.schedule(&entry);
            }
        }
        tracing::info!(id = %entry.id, action = ?action, "queue action");
        self.inner.wake.notify_one();
        Ok(ActResult::Done)
    }

    /// Makes every waiting entry due now, except held ones (`postqueue -f`
    /// does not touch the hold queue either). Streams through the spool a
    /// batch at a time: one read and one commit per batch.
    pub async fn retry_all(&self) -> Result<RetryAll, QueueError> {
        let mut result = RetryAll::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.inner.spool.queue_page(after.as_deref(), BATCH)?;
            let now = self.now_ms();
            let mut changed = Vec::new();
            let mut each = tokio::task::JoinSet::new();
            for mut entry in page.items {
                if self.inner.shared && entry.hold == Hold::Active && entry.next_due_ms().is_some() {
                    // Other nodes write these entries too: each is retried
                    // on its stored state (see `act`); a few at once, so
                    // their writes still share commits.
                    if each.len() >= SHARED_RETRIES {
                        result.add(each.join_next().await)?;
                    }
                    let queue = self.clone();
                    each.spawn(async move { queue.act(&entry.id, QueueAction::Retry).await });
                } else if entry.hold == Hold::Held {
                    result.held += 1;
                } else if entry.next_due_ms().is_some() {
                    retry_now(&mut entry, now);
                    result.retried += 1;
                    changed.push(entry);
                }
            }
            while let Some(done) = each.join_next().await {
                result.add(Some(done))?;
            }
            if !changed.is_empty() {
                self.commit_and_schedule(&changed).await?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(result),
            }
        }
    }

    /// Deletes every entry `filter` matches, without bounces (`postsuper
    /// -d ALL`), streaming through the spool a batch at a time: one read,
    /// one commit (with a `deleted` trace event each) per batch.
    pub async fn delete_all(&self, filter: &EntryFilter) -> Result<usize, QueueError> {
        let mut deleted = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.inner.spool.queue_page(after.as_deref(), BATCH)?;
            let matching: Vec<QueueEntry> = page.items.into_iter().filter(|e| filter.matches(e)).collect();
            if !matching.is_empty() {
                let events = matching
                    .iter()
                    .map(|e| {
                        event(
                            e,
                            TraceKind::Deleted,
                            None,
                            None,
                            Some("deleted by filter".into()),
                        )
                    })
                    .collect();
                let mut writes: Vec<SpoolWrite> = matching
                    .iter()
                    .map(|e| SpoolWrite::Remove(e.id.clone()))
                    .collect();
                writes.push(SpoolWrite::Trace(events));
                // An attempt in flight checks for the deletion under its
                // entry's lock before writing its outcome: hold the locks
                // until the mark is set, or its outcome could bring the
                // entry back.
                let ids: Vec<QueueId> = matching.iter().map(|e| e.id.clone()).collect();
                let _locked = self.lock_entries(&ids).await;
                self.commit(writes).await?;
                let mut state = self.state();
                for entry in &matching {
                    if state.in_flight.contains(&entry.id) {
                        state.changed_in_flight.insert(entry.id.clone());
                    }
                    state.near.forget(&entry.id);
                }
                deleted += matching.len();
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(deleted),
            }
        }
    }

    async fn run_scheduler(self) {
        let window_ms = self.inner.settings.schedule_window.as_millis() as u64;
        loop {
            self.refill(window_ms).await;
            self.pick_probes().await;
            let now = self.now_ms();
            // As many attempts as there are free slots: the rest stays in
            // the near schedule, not in a list of its own.
            let room = self.inner.slots.available_permits();
            let (ready, parked, next) = self.take_due(now, room);
            if !parked.is_empty() {
                self.park(parked).await;
            }
            let ready = self.claim_ready(ready).await;
            for id in ready {
                let permit = match self.inner.slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                };
                let queue = self.clone();
                tokio::spawn(async move {
                    queue.attempt(id).await;
                    drop(permit);
                    queue.inner.wake.notify_one();
                });
            }
            let (refill_at, pick_at) = {
                let state = self.state();
                (state.near.refill_at(window_ms), state.destinations.next_pick_ms())
            };
            let wake_at = next.map_or(refill_at, |next| next.min(refill_at));
            let wake_at = pick_at.map_or(wake_at, |pick| pick.min(wake_at));
            let sleep = wake_at.saturating_sub(self.now_ms()).clamp(1, window_ms.max(1));
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
            }
        }
    }

    /// For each down destination whose probe is due with none running, a
    /// parked entry of its own comes due now to be the probe (parked mail
    /// has no due time at the probe's). A destination with nothing parked
    /// is probed by the next mail that comes due for it.
    async fn pick_probes(&self) {
        let now = self.now_ms();
        let destinations = self.state().destinations.probes_to_pick(now);
        for destination in destinations {
            let key = destination.clone();
            let ids = match self.read_spool(move |spool| spool.parked(&key, None, 16)).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::error!(destination, error = %error, "cannot read a down destination's parked mail");
                    continue;
                }
            };
            let mut state = self.state();
            if let Some(id) = ids.into_iter().find(|id| !state.in_flight.contains(id)) {
                tracing::debug!(destination, id = %id, "probing a down destination with parked mail");
                state.near.put_back(now, id, vec![destination].into());
            }
        }
    }

    /// Reads the next part of the due index when memory has room and the
    /// window moved on.
    async fn refill(&self, window_ms: u64) {
        let now = self.now_ms();
        let Some((from, room)) = ({
            let mut state = self.state();
            let waiting = state.destinations.waiting();
            state.near.refill_from(now, window_ms, waiting)
        }) else {
            return;
        };
        let before = now + window_ms;
        let read_from = from.clone();
        let rows = match self
            .read_spool(move |spool| spool.due_before(before, &read_from, room))
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the due index");
                return;
            }
        };
        let started = self.inner.started_ms;
        let spread = self.inner.settings.restart_spread.as_millis() as u64;
        let mut state = self.state();
        let State { near, in_flight, .. } = &mut *state;
        near.refilled(
            &from,
            rows,
            before,
            room,
            // Overdue at start (the node was down): spread, so a restart
            // never attempts the whole backlog at once.
            |row| match row.due_ms < started {
                true => started + spread_of(&row.id, spread),
                false => row.due_ms,
            },
            |id| in_flight.contains(id),
        );
    }

    /// Takes the entries due now out of the near schedule: those to
    /// attempt, those whose every destination is down (to defer in bulk),
    /// and the next due time.
    #[allow(clippy::type_complexity)]
    fn take_due(&self, now: u64, room: usize) -> (Vec<QueueId>, Vec<(QueueId, Destinations)>, Option<u64>) {
        let mut state = self.state();
        let mut ready = Vec::new();
        let mut parked = Vec::new();
        while let Some((id, destinations)) = state.near.pop_due(now) {
            if state.in_flight.contains(&id) {
                continue;
            }
            if ready.len() >= room {
                // No slot for an attempt: back in its place (a parked
                // entry would wait one pass too, which costs nothing).
                state.near.put_back(now, id, destinations);
                break;
            }
            match state.destinations.decide(&id, &destinations, now) {
                Verdict::Attempt => {
                    state.in_flight.insert(id.clone());
                    ready.push(id);
                }
                Verdict::Wait(destination) => state.destinations.wait(&destination, id, destinations),
                Verdict::Park => {
                    state.in_flight.insert(id.clone());
                    parked.push((id, destinations));
                }
            }
        }
        (ready, parked, state.near.next_due())
    }

    /// Parks the mail of down destinations (see [`settle_parking`]), in
    /// batches: one read and one commit per batch, no connection. On a
    /// shared spool only the entries this node claimed: another node may
    /// be attempting the others, and the deferral is written under the
    /// claim like an attempt's outcome.
    async fn park(&self, parked: Vec<(QueueId, Destinations)>) {
        for batch in parked.chunks(BATCH) {
            let asked: Vec<QueueId> = batch.iter().map(|(id, _)| id.clone()).collect();
            let ids = self.claim_ready(asked).await;
            if ids.is_empty() {
                continue;
            }
            // An administrator's action on one of these waits for the
            // commit.
            let _locked = self.lock_entries(&ids).await;
            let read = ids.clone();
            let entries = self
                .read_spool(move |spool| {
                    read.iter()
                        .map(|id| spool.entry_revised(id))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await;
            let entries = match entries {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::error!(error = %error, "cannot read entries to defer");
                    // Back to the schedule: tried again at the next pass.
                    for (id, destinations) in batch.iter().filter(|(id, _)| ids.contains(id)) {
                        self.unclaim(id);
                        let mut state = self.state();
                        state.in_flight.remove(id);
                        state
                            .near
                            .put_back(self.now_ms() + 1000, id.clone(), destinations.clone());
                    }
                    continue;
                }
            };
            let now = self.now_ms();
            let mut changed = Vec::new();
            let mut unchanged = Vec::new();
            let mut expired = Vec::new();
            {
                let state = self.state();
                for (entry, revision) in entries.into_iter().flatten() {
                    if entry.hold == Hold::Held {
                        continue;
                    }
                    if now >= entry.expires_at_ms {
                        // Expiry needs the attempt path (bounce, DSN),
                        // under the claim just taken.
                        expired.push(entry.id.clone());
                        continue;
                    }
                    let mut entry = entry;
                    let recheck = self.recheck_ms(&entry, now);
                    if settle_parking(&mut entry, &state.destinations, now, recheck) {
                        changed.push((entry, revision));
                    } else {
                        unchanged.push(entry);
                    }
                }
            }
            let mut refused = Vec::new();
            if self.inner.shared {
                // One write per entry, each under its claim: the store
                // still commits them together.
                let commits: Vec<_> = changed
                    .iter()
                    .map(|(entry, revision)| {
                        let guard = Guard {
                            id: entry.id.clone(),
                            revision: *revision,
                            claim: self.claim_of(&entry.id),
                        };
                        self.commit_guarded(Some(&guard), vec![SpoolWrite::Update(entry.clone())])
                    })
                    .collect();
                for ((entry, _), commit) in changed.iter().zip(commits) {
                    if let Err(error) = commit.await {
                        tracing::warn!(id = %entry.id, error = %error, "cannot defer a down destination's mail");
                        refused.push(entry.id.clone());
                    }
                }
            } else if !changed.is_empty() {
                let writes = changed
                    .iter()
                    .map(|(entry, _)| SpoolWrite::Update(entry.clone()))
                    .collect();
                if let Err(error) = self.commit(writes).await {
                    tracing::error!(error = %error, "cannot defer a down destination's mail");
                }
            }
            // Counted by bench/queue_backlog.sh: entries written to park.
            tracing::debug!(
                parked = changed.len() - refused.len(),
                "mail of down destinations parked in bulk"
            );
            for id in ids.iter().filter(|id| !expired.contains(id)) {
                // Written ones ended their lease with the write; the
                // others are given back.
                if refused.contains(id) || !changed.iter().any(|(entry, _)| entry.id == *id) {
                    self.unclaim(id);
                }
            }
            let mut state = self.state();
            for id in &ids {
                if !expired.contains(id) {
                    state.in_flight.remove(id);
                    state.claims.remove(id);
                }
            }
            // Every entry read goes back on its schedule, moved or not; one
            // whose write was refused (changed meanwhile) is read again soon.
            let written = changed
                .iter()
                .map(|(entry, _)| entry)
                .filter(|entry| !refused.contains(&entry.id));
            for entry in written.chain(&unchanged) {
                state.schedule(entry);
            }
            for id in refused {
                state.near.put_back(now + 1000, id, Vec::new().into());
            }
            drop(state);
            for id in expired {
                let queue = self.clone();
                tokio::spawn(async move { queue.attempt(id).await });
            }
        }
    }

    /// The attempt of entry `id` ended (or never started): its probes end,
    /// entries that waited on them return, it leaves the in-flight set.
    fn settle(&self, id: &QueueId) {
        let now = self.now_ms();
        let mut state = self.state();
        state.in_flight.remove(id);
        state.changed_in_flight.remove(id);
        state.claims.remove(id);
        for (waiting, destinations) in state.destinations.release(id) {
            state.near.put_back(now, waiting, destinations);
        }
    }

    async fn attempt(&self, id: QueueId) {
        let now = self.now_ms();
        // A parked entry taken as its destination's probe is due for it.
        let probing = self.state().destinations.probing(&id);
        let due_now = |r: &QueuedRecipient, now: u64| {
            r.status.due_ms().is_some_and(|due| due <= now)
                || (r.status.is_parked() && probing.contains(&destination(r)))
        };
        // Taken before the match: the lock is not held across the read.
        let kept = self.fresh().take(&id);
        let mut kept_content = None;
        let read = match kept {
            Some(kept) => {
                kept_content = Some(kept.content);
                Ok(Some((kept.entry, Revision::default())))
            }
            None => self.read_entry(&id).await,
        };
        let (mut entry, revision) = match read {
            Ok(Some((entry, revision)))
                if entry.hold == Hold::Active && entry.recipients.iter().any(|r| due_now(r, now)) =>
            {
                (entry, revision)
            }
            Ok(Some((entry, _))) => {
                // Not due after all (a stale row): back on its real schedule.
                self.unclaim(&id);
                self.settle(&id);
                self.state().schedule(&entry);
                return;
            }
            Ok(None) => {
                self.unclaim(&id);
                self.settle(&id);
                return;
            }
            Err(error) => {
                tracing::error!(id = %id, error = %error, "cannot read queue entry; retrying later");
                self.unclaim(&id);
                self.settle(&id);
                let mut state = self.state();
                state.near.put_back(now + 60_000, id, Arc::from(Vec::new()));
                return;
            }
        };
        // On a shared spool the outcome goes on top of what is stored
        // when it is written: this is what the attempt started from.
        let base = self.inner.shared.then(|| entry.clone());
        // Loaded content and its copies on the way out stay within the budget.
        let _memory = self.inner.settings.delivery_memory.reserve(entry.size).await;
        let spool = self.inner.spool.clone();
        let load_id = id.clone();
        // Content that cannot be loaded is an attempt that failed
        // temporarily: the recipients are deferred on the retry schedule
        // (and expire in time), never left out of the schedule.
        let loaded = if let Some(content) = kept_content {
            Ok(Ok(Some(content)))
        } else if !self.inner.shared && entry.size <= INLINE_CONTENT_READ {
            Ok(spool.content(&load_id).map(|content| content.map(Arc::new)))
        } else {
            tokio::task::spawn_blocking(move || spool.content(&load_id).map(|content| content.map(Arc::new)))
                .await
        };
        let (content, load_failure) = match loaded {
            Ok(Ok(Some(content))) => (content, None),
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
        let now = self.now_ms();
        let expired = now >= entry.expires_at_ms;
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in entry.recipients.iter().enumerate() {
            if due_now(r, now) {
                groups.entry(destination(r)).or_default().push(i);
            }
        }
        // Recipients for a down destination wait for its probe, without a
        // connection (unless they expire now: then they bounce); they are
        // parked with the outcome.
        {
            let state = self.state();
            groups.retain(|key, _| expired || state.destinations.blocked(key, &id).is_none());
        }
        if !self.claim_holds(&id) {
            // The lease lapsed while the attempt waited (for memory, for
            // the content): another node may be delivering it already.
            tracing::warn!(id = %id, "lease lost before delivery; leaving the entry to its new holder");
            self.settle(&id);
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut task_recipients = HashMap::new();
        let mut results = Vec::new();
        for (key, indexes) in groups {
            if let Some(reply) = &load_failure {
                let attempt = temporary_failure(&entry, &indexes, reply);
                results.push((key, indexes, attempt));
                continue;
            }
            if expired && self.state().destinations.blocked(&key, &id).is_some() {
                let reply = Reply::new(451, [4, 4, 1], "destination not answering");
                let attempt = temporary_failure(&entry, &indexes, &reply);
                results.push((key, indexes, attempt));
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
                let key = key.clone();
                async move { (key, indexes, transport.attempt(job).await) }
            });
            task_recipients.insert(task.id(), (key, indexes));
        }
        while let Some(done) = tasks.join_next_with_id().await {
            match done {
                Ok((_, result)) => {
                    let (key, _, attempt) = &result;
                    self.record_destination(key, &id, attempt);
                    results.push(result);
                }
                // A delivery that panicked is a failed attempt like any
                // other: its recipients are deferred with the error and
                // the attempt counts, so retries and expiry still apply.
                Err(error) => {
                    tracing::error!(id = %id, error = %error, "delivery task failed");
                    if let Some((key, indexes)) = task_recipients.remove(&error.id()) {
                        let reply = Reply::new(451, [4, 3, 0], "delivery failed with an internal error");
                        let attempt = temporary_failure(&entry, &indexes, &reply);
                        results.push((key, indexes, attempt));
                    }
                }
            }
        }
        let results = results
            .into_iter()
            .map(|(_, indexes, attempt)| (indexes, attempt))
            .collect();
        let writes = self.apply_results(&mut entry, results, &content);
        // Recipients whose destination is down now (this attempt's failure
        // included) are parked; parked ones whose destination answered are due.
        self.settle_parking(&mut entry);
        if let Some(base) = base {
            return self.finish_shared(&id, &base, revision, entry, writes).await;
        }
        // An administrator may have held or deleted the entry while the
        // attempt ran: such an action marks the entry (under the entry's
        // lock, which is held from here to the commit, so no action slips
        // in between), and only then is the stored entry read again. (A
        // shared spool finished above: its outcome write is guarded by the
        // revision the attempt read.)
        let _entry = self.entry_lock(&id).lock().await;
        if self.state().changed_in_flight.remove(&id) {
            match self.read_entry(&id).await {
                Ok(None) => {
                    self.unclaim(&id);
                    self.settle(&id);
                    return;
                }
                Ok(Some((stored, _))) if stored.hold == Hold::Held => entry.hold = Hold::Held,
                _ => {}
            }
        }
        // Again under the lock: a destination that answered since has its
        // parked mail resumed under the same locks, which this write must
        // not undo.
        self.settle_parking(&mut entry);
        let mut writes = writes;
        let finished = entry.is_finished();
        writes.push(if finished {
            SpoolWrite::Remove(id.clone())
        } else {
            SpoolWrite::Update(entry.clone())
        });
        let new_entries: Vec<QueueEntry> = writes
            .iter()
            .filter_map(|w| match w {
                SpoolWrite::Enqueue(e, _) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let recorded = self.commit(writes).await;
        if let Err(error) = &recorded {
            // The outcome is lost from disk: the attempt repeats after a restart.
            tracing::error!(id = %id, error = %error, "cannot record delivery outcome");
        }
        self.settle(&id);
        let mut state = self.state();
        if !finished {
            state.schedule(&entry);
        }
        for e in new_entries {
            state.schedule(&e);
        }
        drop(state);
        self.inner.wake.notify_one();
    }

    /// Records the outcome of an attempt on a shared spool (see
    /// [`Queue::record_shared_outcome`]) and lets the entry go.
    async fn finish_shared(
        &self,
        id: &QueueId,
        base: &QueueEntry,
        revision: Revision,
        entry: QueueEntry,
        writes: Vec<SpoolWrite>,
    ) {
        let new_entries: Vec<QueueEntry> = writes
            .iter()
            .filter_map(|w| match w {
                SpoolWrite::Enqueue(e, _) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let recorded = self
            .record_shared_outcome(id, base, revision, entry, writes)
            .await;
        match &recorded {
            Err(SpoolError::LeaseLost) => {
                tracing::warn!(id = %id, "outcome not recorded: another node took the entry over")
            }
            // Left to whichever node claims it next (a rescan finds it):
            // the attempt repeats.
            Err(error) => tracing::error!(id = %id, error = %error, "cannot record delivery outcome"),
            Ok(_) => {}
        }
        self.settle(id);
        let mut state = self.state();
        if let Ok(stored) = recorded {
            if let Some(entry) = stored {
                state.schedule(&entry);
            }
            for e in new_entries {
                state.schedule(&e);
            }
        }
        drop(state);
        self.inner.wake.notify_one();
    }

    /// Updates the destination's state with an attempt's result; entries
    /// that waited on it go back to the schedule or are deferred in bulk.
    fn record_destination(&self, key: &str, id: &QueueId, attempt: &DeliveryAttempt) {
        let now = self.now_ms();
        let change = self.state().destinations.record(key, id, attempt, now);
        if change.went_down {
            tracing::warn!(
                destination = key,
                "destination not answering: deferring its mail until a probe answers"
            );
        }
        if change.came_up {
            tracing::info!(destination = key, "destination answers again: resuming its mail");
            let queue = self.clone();
            let destination = key.to_string();
            tokio::spawn(async move { queue.resume_parked(destination).await });
        }
        let mut state = self.state();
        for (waiting, destinations) in change.resume {
            state.near.put_back(now, waiting, destinations);
        }
        if !change.park.is_empty() {
            // Due now again: the scheduler finds the destination down and
            // defers them in one batch.
            for (waiting, destinations) in change.park {
                state.near.put_back(now, waiting, destinations);
            }
        }
        drop(state);
        self.inner.wake.notify_one();
    }

    /// How long a message parked now waits for a recheck of its own: its
    /// age, within `park_recheck` (never past its expiry: see
    /// [`settle_parking`]).
    fn recheck_ms(&self, entry: &QueueEntry, now: u64) -> u64 {
        let (least, most) = self.inner.settings.park_recheck;
        let least = least.as_millis() as u64;
        let most = (most.as_millis() as u64).max(least);
        now.saturating_sub(entry.received_at_ms).clamp(least, most)
    }

    /// Runs a read of the spool on a blocking thread (a store read may
    /// wait on the disk); a thread that panicked is a failed read.
    async fn read_spool<T, F>(&self, read: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Spool) -> Result<T, SpoolError> + Send + 'static,
    {
        let spool = self.inner.spool.clone();
        tokio::task::spawn_blocking(move || read(spool.as_ref()))
            .await
            .map_err(|error| SpoolError::Failed(error.to_string()))?
    }

    /// [`settle_parking`] with the destinations' state now.
    fn settle_parking(&self, entry: &mut QueueEntry) -> bool {
        let now = self.now_ms();
        let recheck = self.recheck_ms(entry, now);
        let state = self.state();
        settle_parking(entry, &state.destinations, now, recheck)
    }

    /// Brings the mail parked for `destination` (it answered again) due
    /// now, a page of the spool's parked index at a time: one read and one
    /// commit per page, and memory holds a page. Stops when the
    /// destination is down again: what is still parked waits for the next
    /// probe. On a shared spool each entry is written on its stored state,
    /// as an administrator's retry is.
    async fn resume_parked(&self, destination: String) {
        let mut after: Option<String> = None;
        let mut resumed = 0usize;
        loop {
            if self.state().destinations.down(&destination) {
                tracing::info!(
                    destination,
                    resumed,
                    "destination down again: the rest of its mail stays parked"
                );
                return;
            }
            let (key, from) = (destination.clone(), after.clone());
            let ids = match self
                .read_spool(move |spool| spool.parked(&key, from.as_deref(), BATCH))
                .await
            {
                Ok(ids) => ids,
                Err(error) => {
                    // What stays parked comes back with its recheck, or
                    // with the next answer of the destination.
                    tracing::error!(destination, error = %error, "cannot read parked mail to resume");
                    return;
                }
            };
            let Some(last) = ids.last() else {
                tracing::info!(destination, resumed, "parked mail resumed");
                return;
            };
            after = Some(last.0.clone());
            match self.resume_page(&destination, ids).await {
                Ok(n) => resumed += n,
                Err(error) => {
                    tracing::error!(destination, error = %error, "cannot resume parked mail");
                    return;
                }
            }
        }
    }

    /// Brings the recipients of `ids` parked for `destination` due now.
    async fn resume_page(&self, destination: &str, ids: Vec<QueueId>) -> Result<usize, QueueError> {
        if self.inner.shared {
            let mut resumed = 0;
            let mut each = tokio::task::JoinSet::new();
            for id in ids {
                if each.len() >= SHARED_RETRIES {
                    if let Some(done) = each.join_next().await {
                        resumed += usize::from(done.map_err(|e| SpoolError::Failed(e.to_string()))??);
                    }
                }
                let queue = self.clone();
                let destination = destination.to_string();
                each.spawn(async move { queue.resume_shared(&id, &destination).await });
            }
            while let Some(done) = each.join_next().await {
                resumed += usize::from(done.map_err(|e| SpoolError::Failed(e.to_string()))??);
            }
            return Ok(resumed);
        }
        // An attempt or a park of these writes under the same locks, after
        // settling its parked recipients again: neither undoes the other.
        let _locked = self.lock_entries(&ids).await;
        let entries = self
            .read_spool(move |spool| {
                ids.iter()
                    .map(|id| spool.entry(id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let now = self.now_ms();
        let changed: Vec<QueueEntry> = entries
            .into_iter()
            .flatten()
            .filter_map(|mut entry| unpark(&mut entry, destination, now).then_some(entry))
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        self.commit_and_schedule(&changed).await?;
        Ok(changed.len())
    }

    /// Writes entries made due again and puts them on the schedule (those
    /// not in an attempt right now, which schedules its own entry).
    async fn commit_and_schedule(&self, changed: &[QueueEntry]) -> Result<(), SpoolError> {
        let writes = changed.iter().cloned().map(SpoolWrite::Update).collect();
        self.commit(writes).await?;
        let mut state = self.state();
        for entry in changed {
            if !state.in_flight.contains(&entry.id) {
                state.schedule(entry);
            }
        }
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// [`Queue::resume_page`] for one entry of a shared spool, written on
    /// its stored state (made again if another write landed first).
    async fn resume_shared(&self, id: &QueueId, destination: &str) -> Result<bool, QueueError> {
        let _entry = self.entry_lock(id).lock().await;
        for _ in 0..lease::REDO_TRIES {
            let Some((mut entry, revision)) = self.read_entry(id).await? else {
                return Ok(false);
            };
            if !unpark(&mut entry, destination, self.now_ms()) {
                return Ok(false);
            }
            let guard = Guard {
                id: id.clone(),
                revision,
                claim: None,
            };
            match self
                .commit_guarded(Some(&guard), vec![SpoolWrite::Update(entry.clone())])
                .await
            {
                Err(SpoolError::Changed) => continue,
                Err(error) => return Err(error.into()),
                Ok(()) => {
                    let mut state = self.state();
                    if !state.in_flight.contains(id) {
                        state.schedule(&entry);
                    }
                    drop(state);
                    self.inner.wake.notify_one();
                    return Ok(true);
                }
            }
        }
        Err(SpoolError::Changed.into())
    }

    /// Applies outcomes to the entry; returns the writes for trace events and DSNs.
    fn apply_results(
        &self,
        entry: &mut QueueEntry,
        results: Vec<(Vec<usize>, DeliveryAttempt)>,
        content: &[u8],
    ) -> Vec<SpoolWrite> {
        let now = self.now_ms();
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
                            parked: false,
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
                writes.push(SpoolWrite::Enqueue(dsn, content));
            }
        }
        writes.insert(0, SpoolWrite::Trace(events));
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
        let now = self.now_ms();
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

/// Makes every waiting recipient due now, remembering a later schedule
/// so a failed early attempt does not push the next one out.
fn retry_now(entry: &mut QueueEntry, now: u64) {
    for r in &mut entry.recipients {
        match &mut r.status {
            RecipientStatus::Queued { due_ms } => *due_ms = (*due_ms).min(now),
            RecipientStatus::Deferred {
                due_ms, scheduled_ms, ..
            } => {
                if *due_ms > now && scheduled_ms.is_none() {
                    *scheduled_ms = Some(*due_ms);
                }
                *due_ms = (*due_ms).min(now);
            }
            _ => {}
        }
    }
}

/// Brings the parked state of `entry`'s waiting recipients in line with
/// the destinations' state: a recipient whose destination is down (and
/// `entry` is not its probe) is parked, due only for a recheck of its own
/// `recheck_ms` from now (never past the entry's expiry, so it still
/// expires on time); one already parked and not yet due is left as it
/// is, so a probe that fails writes nothing. A parked recipient whose
/// destination is not down is due now. No attempt is counted. `true`
/// when something changed.
fn settle_parking(
    entry: &mut QueueEntry,
    destinations: &DestinationStates,
    now: u64,
    recheck_ms: u64,
) -> bool {
    let id = entry.id.clone();
    let until = (now + recheck_ms).min(entry.expires_at_ms.max(now + 1000));
    let mut changed = false;
    for r in &mut entry.recipients {
        let Some(due) = r.status.due_ms() else { continue };
        let blocked = destinations.blocked(&destination(r), &id);
        match (blocked, &mut r.status) {
            (Some(_), RecipientStatus::Deferred { parked: true, .. }) if due > now => {}
            (
                Some(blocked),
                RecipientStatus::Deferred {
                    due_ms,
                    last_error,
                    scheduled_ms,
                    parked,
                    ..
                },
            ) => {
                *due_ms = until;
                *last_error = blocked.reason;
                *scheduled_ms = None;
                *parked = true;
                changed = true;
            }
            (Some(blocked), status) => {
                *status = RecipientStatus::Deferred {
                    due_ms: until,
                    last_error: blocked.reason,
                    delay_notified: false,
                    scheduled_ms: None,
                    early_attempts: 0,
                    parked: true,
                };
                changed = true;
            }
            (None, RecipientStatus::Deferred { parked, due_ms, .. }) if *parked => {
                *parked = false;
                *due_ms = (*due_ms).min(now);
                changed = true;
            }
            (None, _) => {}
        }
    }
    changed
}

/// Makes the recipients of `entry` parked for `destination` due now (it
/// answered again). `true` when something changed.
fn unpark(entry: &mut QueueEntry, destination_key: &str, now: u64) -> bool {
    let mut changed = false;
    for r in &mut entry.recipients {
        if !r.status.is_parked() || destination(r) != destination_key {
            continue;
        }
        if let RecipientStatus::Deferred { parked, due_ms, .. } = &mut r.status {
            *parked = false;
            *due_ms = (*due_ms).min(now);
            changed = true;
        }
    }
    changed
}

/// A stable offset in `0..spread` ms for entry `id` (FNV-1a of the id).
fn spread_of(id: &QueueId, spread: u64) -> u64 {
    if spread == 0 {
        return 0;
    }
    let hash = id.0.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    hash % spread
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
        // Signed by the queue as it records it.
        node: None,
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
