//! Persistence behind one interface: objects, the spool (envelope and
//! content of queued messages) and the message trace.
//!
//! Contract: a write returns only after it is on stable storage. Writes
//! from many sessions are gathered into one transaction and one fsync
//! (group commit), so throughput grows with concurrency. The embedded
//! backend (redb, one file under data_dir) is the default; a shared backend
//! (PostgreSQL) implements the same [`Store`] trait.

#[cfg(test)]
mod conformance;
mod embedded;
pub mod postgres;
pub mod space;

pub use embedded::EmbeddedStore;
pub use postgres::PostgresStore;

use crate::config::objects::ObjectSet;
use crate::message::QueueId;
use crate::queue::{QuarantineEntry, QueueEntry};
use crate::trace::TraceEvent;
use std::future::Future;
use std::pin::Pin;

/// A storage failure. Detail is for logs; clients see generic text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// A pending durable write: resolves once committed (fsync'd).
pub type Commit = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// One change to the store. A batch of them commits atomically.
#[derive(Debug)]
pub enum Write {
    /// Replace all objects.
    Objects(ObjectSet),
    /// A new message: envelope and content together, so no orphan survives a crash.
    Enqueue(QueueEntry, Vec<u8>),
    /// New state of a queued message.
    Update(QueueEntry),
    /// A message left the queue (all recipients final, or deleted).
    Remove(QueueId),
    /// Trace events.
    Trace(Vec<TraceEvent>),
    /// A message held by a rule, with its content.
    Quarantine(QuarantineEntry, Vec<u8>),
    /// A quarantined message released (into the queue, in the same batch) or deleted.
    Unquarantine(QueueId),
    /// Drop trace events older than this (ms).
    PruneTrace(u64),
    /// Outbound TLS policy state (SPEC section 10: cached MTA-STS
    /// policies, TLS-RPT counters) under `key`; `None` deletes it.
    TlsState {
        /// `mta-sts/DOMAIN`, `tls-rpt/DAY/DOMAIN`, ...
        key: String,
        /// JSON, or `None` to delete.
        value: Option<Vec<u8>>,
    },
    /// Replace every DKIM/ARC key.
    DkimKeys(Vec<crate::auth::keys::StoredKey>),
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

/// The storage interface every backend implements.
pub trait Store: Send + Sync + 'static {
    /// Commits the writes atomically and durably, with others' writes.
    fn commit(&self, writes: Vec<Write>) -> Commit;
    /// Queues writes for the next commit without waiting (trace events).
    fn submit(&self, writes: Vec<Write>);
    /// All objects.
    fn objects(&self) -> Result<ObjectSet, StoreError>;
    /// Every message in the spool (at start-up).
    fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError>;
    /// The content of a queued message.
    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Quarantined messages, oldest first.
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError>;
    /// The content of a quarantined message.
    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Trace events at or after `since_ms`, oldest first.
    fn trace_events(&self, since_ms: u64) -> Result<Vec<TraceEvent>, StoreError>;
    /// At most `limit` queued messages with a queue id after `after`, by id
    /// (queue ids grow with time, so oldest first).
    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, StoreError>;
    /// At most `limit` quarantined messages with an id after `after`, by id.
    fn quarantine_page(&self, after: Option<&str>, limit: usize)
        -> Result<Page<QuarantineEntry>, StoreError>;
    /// At most `limit` trace events at or after `since_ms` and after the
    /// key `after` (a key a previous page returned), oldest first.
    fn trace_page(
        &self,
        since_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<TraceEvent>, StoreError>;
    /// Outbound TLS policy state whose key starts with `prefix`, by key.
    fn tls_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// DKIM and ARC signing keys (private halves included: callers keep
    /// them inside the node).
    fn dkim_keys(&self) -> Result<Vec<crate::auth::keys::StoredKey>, StoreError> {
        Ok(Vec::new())
    }
}
