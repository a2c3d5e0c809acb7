//! Mail just accepted, kept for its first attempt (Postfix's active queue
//! does the same): most mail is attempted within milliseconds of its 250,
//! and reading back the entry and content that were just written costs a
//! store read per message for nothing.
//!
//! Only on a spool of this node's own: on a shared spool another node may
//! change the entry at any time, and the attempt reads it under its claim.
//! An entry leaves as its first attempt takes it, when any write names it
//! (the stored state then differs from the one kept here), or when the
//! bytes kept pass the bound, oldest first; an attempt that finds nothing
//! here reads the store as before.

use super::spool::SpoolWrite;
use super::QueueEntry;
use crate::message::QueueId;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Content kept at most, all entries together.
const FRESH_BYTES: usize = 8 << 20;

/// One accepted entry and its content, as stored.
pub(super) struct FreshEntry {
    pub(super) entry: QueueEntry,
    pub(super) content: Arc<Vec<u8>>,
}

/// Entries accepted and not yet attempted, by id, bounded in bytes.
#[derive(Default)]
pub(super) struct Fresh {
    by_id: HashMap<QueueId, FreshEntry>,
    /// Arrival order, for eviction; may name ids already taken.
    order: VecDeque<QueueId>,
    bytes: usize,
}

impl Fresh {
    /// Keeps `entry` for its first attempt, making room oldest first.
    pub(super) fn keep(&mut self, entry: QueueEntry, content: Arc<Vec<u8>>) {
        let size = content.len();
        if size > FRESH_BYTES / 8 {
            return;
        }
        while self.bytes + size > FRESH_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.forget(&oldest);
        }
        // Ids taken by their attempts stay in `order` until they reach its
        // front; compact when they are most of it.
        if self.order.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
        self.order.push_back(entry.id.clone());
        self.bytes += size;
        if let Some(old) = self.by_id.insert(entry.id.clone(), FreshEntry { entry, content }) {
            self.bytes -= old.content.len();
        }
    }

    /// The entry and content of `id` for its first attempt, if still kept.
    pub(super) fn take(&mut self, id: &QueueId) -> Option<FreshEntry> {
        let taken = self.by_id.remove(id)?;
        self.bytes -= taken.content.len();
        Some(taken)
    }

    /// Drops `id`: its stored state is about to differ from what is kept.
    pub(super) fn forget(&mut self, id: &QueueId) {
        if let Some(gone) = self.by_id.remove(id) {
            self.bytes -= gone.content.len();
        }
    }

    /// Drops every entry `writes` change or remove.
    pub(super) fn forget_written(&mut self, writes: &[SpoolWrite]) {
        if self.by_id.is_empty() {
            return;
        }
        for write in writes {
            match write {
                SpoolWrite::Update(entry) => self.forget(&entry.id),
                SpoolWrite::Remove(id) => self.forget(id),
                _ => {}
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> QueueEntry {
        let mut entry = crate::queue::tests::entry("alice@example.test", &["bob@example.test"]);
        entry.id = QueueId(id.into());
        entry
    }

    #[test]
    fn an_entry_is_taken_once_and_a_write_naming_it_drops_it() {
        let mut fresh = Fresh::default();
        fresh.keep(entry("a"), Arc::new(vec![0; 10]));
        fresh.keep(entry("b"), Arc::new(vec![0; 10]));
        assert!(fresh.take(&QueueId("a".into())).is_some());
        assert!(fresh.take(&QueueId("a".into())).is_none());
        fresh.forget_written(&[SpoolWrite::Update(entry("b"))]);
        assert!(fresh.take(&QueueId("b".into())).is_none());
        assert_eq!(fresh.bytes, 0);
    }

    #[test]
    fn the_kept_bytes_stay_under_the_bound_oldest_leaving_first() {
        let mut fresh = Fresh::default();
        let size = FRESH_BYTES / 8;
        for i in 0..20 {
            fresh.keep(entry(&format!("m{i:02}")), Arc::new(vec![0; size]));
        }
        assert!(fresh.bytes <= FRESH_BYTES);
        assert_eq!(fresh.len(), 8);
        assert!(fresh.take(&QueueId("m00".into())).is_none());
        assert!(fresh.take(&QueueId("m19".into())).is_some());
        // Content over an eighth of the bound is never kept.
        fresh.keep(entry("big"), Arc::new(vec![0; size + 1]));
        assert!(fresh.take(&QueueId("big".into())).is_none());
    }
}
