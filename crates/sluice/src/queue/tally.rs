//! The queue's side of the trace counters: every commit and every trace
//! record goes through here, so `/metrics` and the dashboard count what
//! was stored, without reading it back.

use super::{Queue, QueueDepth, QueueStatus};
use crate::store::{StoreError, Write};
use crate::trace::{now_ms, Tally, TraceCounters};
use std::future::Future;
use std::sync::Arc;

impl Queue {
    /// Commits `writes` and, once they are stored, counts them.
    pub(super) fn commit(
        &self,
        writes: Vec<Write>,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let tally = tally(&writes);
        let committed = self.inner.store.commit(writes);
        let counters = self.inner.counters.clone();
        async move {
            committed.await?;
            counters.count(&tally, now_ms());
            Ok(())
        }
    }

    /// Records `writes` with the next commit, without waiting, and counts them.
    pub(super) fn submit(&self, writes: Vec<Write>) {
        self.inner.counters.count(&tally(&writes), now_ms());
        self.inner.store.submit(writes);
    }

    /// The counters of what this queue stored.
    pub fn counters(&self) -> Arc<TraceCounters> {
        self.inner.counters.clone()
    }

    /// Queue entries now, by status (memory only: cheap to ask every second).
    pub fn depth(&self) -> QueueDepth {
        let state = self.state();
        QueueDepth::count(state.entries.values().map(|e| e.status()))
    }
}

/// What `writes` change, for the counters.
pub(super) fn tally(writes: &[Write]) -> Tally {
    let mut tally = Tally::default();
    for write in writes {
        match write {
            Write::Trace(events) => tally.events(events),
            Write::Enqueue(..) => tally.entered += 1,
            Write::Remove(_) => tally.left += 1,
            Write::Quarantine(..) => tally.quarantined += 1,
            Write::Unquarantine(_) => tally.unquarantined += 1,
            Write::Objects(_)
            | Write::Update(_)
            | Write::PruneTrace(_)
            | Write::TlsState { .. }
            | Write::DkimKeys(_) => {}
        }
    }
    tally
}

impl QueueDepth {
    /// Counts entries by status.
    pub fn count(statuses: impl IntoIterator<Item = QueueStatus>) -> QueueDepth {
        let mut depth = QueueDepth::default();
        for status in statuses {
            match status {
                QueueStatus::Queued => depth.queued += 1,
                QueueStatus::Deferred => depth.deferred += 1,
                QueueStatus::Held => depth.held += 1,
            }
        }
        depth.total = depth.queued + depth.deferred + depth.held;
        depth
    }
}
