//! What the queue needs from storage, in the queue's own types.
//!
//! The queue reads only what is due soon (`due_before`), pages through the
//! rest (`queue_page`), finds the mail parked for a destination that
//! answers again by destination (`parked`), and asks counters rather than
//! scanning for its shape (`shape`). Each write commits atomically and durably, with the
//! due index and the counters it changes in the same transaction. The
//! embedded store (redb) implements it for one node; a shared backend
//! (PostgreSQL, several nodes) adds real leases behind [`Spool::claim`].

use super::{QuarantineEntry, QueueDepth, QueueEntry, QueueStatus, QueuedRecipient};
use crate::message::{MessageContent, QueueId};
use crate::route::{NextHop, Route};
use crate::trace::TraceEvent;
use std::future::Future;
use std::pin::Pin;

/// Why a spool operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The store failed. Detail is for logs; clients see generic text.
    #[error("spool: {0}")]
    Failed(String),
    /// A write under a claim that another node took over since: nothing
    /// was written; that node's result stands.
    #[error("lease lost: another node took the entry over")]
    LeaseLost,
    /// A write computed from an entry that was written (or removed) since
    /// it was read, by an administrator on any node: nothing was written;
    /// read the entry again and make the change on top of it.
    #[error("the entry changed since it was read")]
    Changed,
}

/// Which stored state of an entry a copy was read at. Every write of the
/// entry moves it on; a store this node alone writes keeps it at 0 (the
/// queue's own locks order its writes there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub u64);

/// What a write of one entry was computed from, so the store can refuse
/// it when that no longer holds: the revision of the entry read, and, for
/// an attempt's outcome on a shared spool, the claim it was attempted
/// under (whose lease the write ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The entry written.
    pub id: QueueId,
    /// The revision it was read at.
    pub revision: Revision,
    /// The claim held, if the write ends an attempt.
    pub claim: Option<Claim>,
}

/// A pending durable write: resolves once committed (fsync'd).
pub type SpoolCommit = Pin<Box<dyn Future<Output = Result<(), SpoolError>> + Send>>;

/// One change to the spool. A batch of them commits atomically.
#[derive(Debug, Clone)]
pub enum SpoolWrite {
    /// A new message: envelope and content together, so no orphan survives a crash.
    Enqueue(QueueEntry, Vec<u8>),
    /// A new message as the pipeline made it: its header section over a
    /// body other copies of the same message may share. With `body`, the
    /// copies naming the same id (the first copy's) share one stored body
    /// until the last of them leaves; a store that cannot share stores
    /// each whole.
    EnqueueCopy {
        /// The copy's envelope.
        entry: QueueEntry,
        /// Its content.
        content: MessageContent,
        /// The stored body it shares with other copies in the same batch.
        body: Option<QueueId>,
    },
    /// New state of a queued message (never resurrects a removed one).
    Update(QueueEntry),
    /// A message left the queue (all recipients final, or deleted).
    Remove(QueueId),
    /// A message held by a rule, with its content.
    Quarantine(QuarantineEntry, Vec<u8>),
    /// A quarantined message released (into the queue, in the same batch) or deleted.
    Unquarantine(QueueId),
    /// Trace events, committed with the state they describe.
    Trace(Vec<TraceEvent>),
}

/// One page of a keyed listing. `next` is the key of the last item when
/// more may follow: the next page starts strictly after it, so entries
/// added or removed between pages never shift what is still to come
/// (keyset pagination: a range scan in redb, `WHERE key > $1 ORDER BY key
/// LIMIT $2` in SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Where the next page starts, if another may follow.
    pub next: Option<String>,
}

/// A key of the due index: (due ms, queue id), in that order.
pub type DueKey = (u64, QueueId);

/// One row of the due index: an active entry with a waiting recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Earliest due time of its waiting recipients, ms.
    pub due_ms: u64,
    /// The entry.
    pub id: QueueId,
    /// Destinations of its waiting recipients ([`destination`]).
    pub destinations: Vec<String>,
}

/// Waiting recipients of one domain received in one minute: the
/// counters `queue summary` is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeCount {
    /// Recipient domain, lower case.
    pub domain: String,
    /// Minute of receipt (ms since the epoch / 60,000).
    pub received_minute: u64,
    /// Waiting recipients (queued, deferred or held).
    pub recipients: u64,
}

/// Who works a claimed entry, for a store shared by several nodes: the
/// node's name and how long the claim lasts unless renewed (by the store's
/// clock, so nodes with skewed clocks agree). A store with one node grants
/// every claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The node working the entries.
    pub owner: String,
    /// The claim lapses this long after it is granted or renewed, ms.
    pub for_ms: u64,
}

/// A granted claim: the entry and its fencing token. A write carrying an
/// older token than the store's is from a node whose lease lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The entry.
    pub id: QueueId,
    /// Grows with every grant of this entry.
    pub fence: u64,
}

/// What other nodes did to a shared spool, as far as this node's schedule
/// cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolNews {
    /// New entries another node stored, due soon: any node may claim them.
    Arrived(Vec<Due>),
    /// Something may have been missed (a notification lost with its
    /// connection, a lease that lapsed): read the due index again.
    Rescan,
}

/// What the queue needs from storage.
pub trait Spool: Send + Sync + 'static {
    /// Commits the writes atomically and durably, with others' writes.
    fn commit_spool(&self, writes: Vec<SpoolWrite>) -> SpoolCommit;
    /// Queues writes for the next commit without waiting (trace events).
    fn submit_spool(&self, writes: Vec<SpoolWrite>);
    /// One queued message.
    fn entry(&self, id: &QueueId) -> Result<Option<QueueEntry>, SpoolError>;
    /// One queued message and the revision it was read at, for a write
    /// computed from it ([`Spool::commit_guarded`]).
    fn entry_revised(&self, id: &QueueId) -> Result<Option<(QueueEntry, Revision)>, SpoolError> {
        Ok(self.entry(id)?.map(|entry| (entry, Revision::default())))
    }
    /// The content of a queued message.
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError>;
    /// At most `limit` queued messages with a queue id after `after`, by id
    /// (queue ids grow with time, so oldest first).
    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, SpoolError>;
    /// At most `limit` rows of the due index from `from` (included) with a
    /// due time before `before_ms`, by (due, id). Held entries are not in it.
    fn due_before(&self, before_ms: u64, from: &DueKey, limit: usize) -> Result<Vec<Due>, SpoolError>;
    /// The waiting-recipient counters, maintained with every write.
    fn shape(&self) -> Result<Vec<ShapeCount>, SpoolError>;
    /// Entries by status, counters maintained with every write.
    fn depth(&self) -> Result<QueueDepth, SpoolError>;
    /// Every quarantined message.
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, SpoolError>;
    /// One quarantined message.
    fn quarantined(&self, id: &QueueId) -> Result<Option<QuarantineEntry>, SpoolError>;
    /// The content of a quarantined message.
    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError>;
    /// At most `limit` quarantined messages with an id after `after`, by id.
    fn quarantine_page(&self, after: Option<&str>, limit: usize)
        -> Result<Page<QuarantineEntry>, SpoolError>;
    /// Claims `ids` for `lease`; returns the claims granted (those no
    /// other node holds). One node owns its whole spool: every claim is
    /// granted, with a fence of 0.
    fn claim(&self, ids: &[QueueId], lease: &Lease) -> Result<Vec<Claim>, SpoolError> {
        let _ = lease;
        Ok(ids
            .iter()
            .map(|id| Claim {
                id: id.clone(),
                fence: 0,
            })
            .collect())
    }
    /// Extends the leases of `claims`; returns the ids still held (the
    /// others lapsed and were taken over, or their entry is gone).
    fn renew(&self, claims: &[Claim], lease: &Lease) -> Result<Vec<QueueId>, SpoolError> {
        let _ = lease;
        Ok(claims.iter().map(|claim| claim.id.clone()).collect())
    }
    /// Gives claims back before their lease lapses (nothing was attempted).
    fn release(&self, claims: &[Claim]) {
        let _ = claims;
    }
    /// Commits writes computed from entry `guard.id` as read at
    /// `guard.revision`: applied only while the claim named (if any) still
    /// holds, else nothing is written and the commit fails with
    /// [`SpoolError::LeaseLost`]; and only while nobody wrote the entry
    /// since, else it fails with [`SpoolError::Changed`]. With a claim, it
    /// ends the lease. A store this node alone writes applies it as is.
    fn commit_guarded(&self, guard: &Guard, writes: Vec<SpoolWrite>) -> SpoolCommit {
        let _ = guard;
        self.commit_spool(writes)
    }
    /// At most `limit` entries parked for `destination` (a waiting
    /// recipient of theirs waits for that destination's probe), with an id
    /// after `after`, by id. Held entries are not in it.
    fn parked(
        &self,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QueueId>, SpoolError>;
    /// Destinations with parked entries and how many each, maintained
    /// with every write: what a node starting reads to know which
    /// destinations were down.
    fn parked_destinations(&self) -> Result<Vec<(String, u64)>, SpoolError>;
    /// For a spool shared by several nodes, what the others store and
    /// when to look again; `None` for a store this node alone writes.
    /// Called once, when the queue starts.
    fn news(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<SpoolNews>> {
        None
    }
}

/// Where a recipient goes, as per-destination state counts it: the
/// connector and its smart hosts, or the MX domain.
pub fn destination(recipient: &QueuedRecipient) -> String {
    match &recipient.route {
        Route::Connector {
            connector,
            next_hop: NextHop::SmartHosts(hosts),
            ..
        } => {
            let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
            format!("connector:{connector}:{}", hosts.join(","))
        }
        route => route.destination_key(recipient.address.domain()),
    }
}

/// What the spool indexes of an entry: its due time (none when held or
/// final), the destinations of its waiting recipients, those it is parked
/// for (none when held), and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SpoolIndex {
    /// Key time in the due index.
    pub due_ms: Option<u64>,
    /// Destinations of waiting recipients, sorted, without repeats.
    pub destinations: Vec<String>,
    /// Minute of receipt.
    pub received_minute: u64,
    /// Waiting recipients per domain.
    pub domains: Vec<(String, u64)>,
    /// The entry's status, for the depth counters.
    #[serde(default)]
    pub status: Option<QueueStatus>,
    /// Destinations its parked recipients wait on, sorted, without repeats.
    #[serde(default)]
    pub parked: Vec<String>,
}

impl SpoolIndex {
    /// The index rows of `entry`.
    pub fn of(entry: &QueueEntry) -> SpoolIndex {
        let waiting: Vec<&QueuedRecipient> = entry
            .recipients
            .iter()
            .filter(|r| r.status.due_ms().is_some())
            .collect();
        let mut destinations: Vec<String> = waiting.iter().map(|r| destination(r)).collect();
        destinations.sort();
        destinations.dedup();
        let mut parked: Vec<String> = match entry.hold {
            super::Hold::Active => waiting
                .iter()
                .filter(|r| r.status.is_parked())
                .map(|r| destination(r))
                .collect(),
            super::Hold::Held => Vec::new(),
        };
        parked.sort();
        parked.dedup();
        let mut domains: std::collections::BTreeMap<String, u64> = Default::default();
        for r in &waiting {
            *domains
                .entry(r.address.domain().to_string().to_ascii_lowercase())
                .or_default() += 1;
        }
        SpoolIndex {
            due_ms: match entry.hold {
                super::Hold::Active => entry.next_due_ms(),
                super::Hold::Held => None,
            },
            destinations,
            received_minute: entry.received_at_ms / 60_000,
            domains: domains.into_iter().collect(),
            status: Some(entry.status()),
            parked,
        }
    }
}
