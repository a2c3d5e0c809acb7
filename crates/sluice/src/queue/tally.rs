//! The queue's side of the trace counters: every commit and every trace
//! record goes through here, so `/metrics` and the dashboard count what
//! was stored, without reading it back; and each trace event is signed
//! with the name of the node that records it, so a cluster's shared
//! timeline says which node did what.

use super::spool::{SpoolError, SpoolWrite};
use super::{Queue, QueueDepth, QueueStatus};
use crate::trace::{now_ms, Tally, TraceCounters};
use std::future::Future;
use std::sync::Arc;

impl Queue {
    /// Commits `writes` and, once they are stored, counts them.
    pub(super) fn commit(
        &self,
        writes: Vec<SpoolWrite>,
    ) -> impl Future<Output = Result<(), SpoolError>> + 'static {
        self.commit_guarded(None, writes)
    }

    /// Commits writes computed from an entry as read (see [`super::Guard`]:
    /// a shared spool refuses them when the entry changed or the claim was
    /// lost), and counts them once committed.
    pub(super) fn commit_guarded(
        &self,
        guard: Option<&super::Guard>,
        mut writes: Vec<SpoolWrite>,
    ) -> impl Future<Output = Result<(), SpoolError>> + 'static {
        self.sign(&mut writes);
        self.fresh().forget_written(&writes);
        let tally = tally(&writes);
        let committed = match guard {
            Some(guard) => self.inner.spool.commit_guarded(guard, writes),
            None => self.inner.spool.commit_spool(writes),
        };
        let counters = self.inner.counters.clone();
        async move {
            committed.await?;
            counters.count(&tally, now_ms());
            Ok(())
        }
    }

    /// Records `writes` with the next commit, without waiting, and counts them.
    pub(super) fn submit(&self, mut writes: Vec<SpoolWrite>) {
        self.sign(&mut writes);
        self.fresh().forget_written(&writes);
        self.inner.counters.count(&tally(&writes), now_ms());
        self.inner.spool.submit_spool(writes);
    }

    /// Names this node in the trace events of `writes` that name none.
    fn sign(&self, writes: &mut [SpoolWrite]) {
        for write in writes {
            if let SpoolWrite::Trace(events) = write {
                for event in events.iter_mut().filter(|event| event.node.is_none()) {
                    event.node = Some(self.inner.settings.hostname.clone());
                }
            }
        }
    }

    /// The counters of what this queue stored.
    pub fn counters(&self) -> Arc<TraceCounters> {
        self.inner.counters.clone()
    }

    /// Queue entries now, by status: counters the spool keeps with every
    /// write (no scan: cheap to ask every second).
    pub fn depth(&self) -> Result<QueueDepth, SpoolError> {
        self.inner.spool.depth()
    }
}

/// What `writes` change, for the counters.
pub(super) fn tally(writes: &[SpoolWrite]) -> Tally {
    let mut tally = Tally::default();
    for write in writes {
        match write {
            SpoolWrite::Trace(events) => tally.events(events),
            SpoolWrite::Enqueue(..) | SpoolWrite::EnqueueCopy { .. } => tally.entered += 1,
            SpoolWrite::Remove(_) => tally.left += 1,
            SpoolWrite::Quarantine(..) => tally.quarantined += 1,
            SpoolWrite::Unquarantine(_) => tally.unquarantined += 1,
            SpoolWrite::Update(_) => {}
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
