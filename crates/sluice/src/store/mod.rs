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
use crate::queue::{Spool, SpoolError, SpoolWrite};
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
    /// A change to the queue's spool (messages, quarantine, their trace).
    Spool(SpoolWrite),
    /// Trace events.
    Trace(Vec<TraceEvent>),
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

impl Write {
    /// Message content this write carries: what a group commit counts
    /// against its content budget.
    pub fn content_len(&self) -> usize {
        match self {
            Write::Spool(SpoolWrite::Enqueue(_, content) | SpoolWrite::Quarantine(_, content)) => {
                content.len()
            }
            Write::Spool(SpoolWrite::EnqueueCopy { content, .. }) => content.len(),
            _ => 0,
        }
    }
}

pub use crate::queue::Page;

impl From<StoreError> for SpoolError {
    fn from(error: StoreError) -> Self {
        SpoolError::Failed(error.0)
    }
}

impl From<SpoolError> for StoreError {
    fn from(error: SpoolError) -> Self {
        match error {
            SpoolError::Failed(detail) => StoreError(detail),
            refused => StoreError(refused.to_string()),
        }
    }
}

/// The storage interface every backend implements: the queue's [`Spool`]
/// and the rest of the node's state.
pub trait Store: Spool {
    /// Commits the writes atomically and durably, with others' writes.
    fn commit(&self, writes: Vec<Write>) -> Commit;
    /// Queues writes for the next commit without waiting (trace events).
    fn submit(&self, writes: Vec<Write>);
    /// All objects.
    fn objects(&self) -> Result<ObjectSet, StoreError>;
    /// Trace events at or after `since_ms`, oldest first.
    fn trace_events(&self, since_ms: u64) -> Result<Vec<TraceEvent>, StoreError>;
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
    /// Keeps every other node sharing this store out of configuration
    /// changes (objects, DKIM keys) until the hold is dropped, so a change
    /// read, made and written under it is never overwritten by another
    /// node's change made from an older read. A store one node alone
    /// writes holds nothing: the node's own locks order its changes.
    fn hold_configuration(&self) -> Result<ConfigurationHold, StoreError> {
        Ok(ConfigurationHold::default())
    }
}

/// [`Store::hold_configuration`], waited for off the async workers: the
/// hold may wait for another node's change to commit.
pub async fn hold_configuration(store: &std::sync::Arc<dyn Store>) -> Result<ConfigurationHold, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.hold_configuration())
        .await
        .map_err(|e| StoreError(e.to_string()))?
}

/// What [`Store::hold_configuration`] holds; dropping it lets the next
/// node in.
#[derive(Default)]
pub struct ConfigurationHold {
    _held: Option<Box<dyn Send + Sync>>,
}

impl ConfigurationHold {
    /// A hold released when `held` is dropped.
    pub fn new(held: impl Send + Sync + 'static) -> ConfigurationHold {
        ConfigurationHold {
            _held: Some(Box::new(held)),
        }
    }
}
