//! The near schedule: the part of the spool's due index that is due soon,
//! in memory. Everything else stays in the store until the window reaches
//! it, so memory holds at most `capacity` entries whatever the backlog.
//!
//! Invariant: every row of the store's due index with a key below
//! `covered` is in memory, or its entry is being worked (an attempt, a
//! destination's wait) and comes back when that ends. A change whose key
//! falls below `covered` is kept in memory when there is room; when there
//! is none, `covered` moves down to it and the next refill reads it.

use super::spool::{Due, DueKey};
use crate::message::QueueId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Destinations of an entry's waiting recipients.
pub(super) type Destinations = Arc<[String]>;

pub(super) struct NearSchedule {
    order: BTreeSet<(u64, QueueId)>,
    items: HashMap<QueueId, (u64, Destinations)>,
    covered: DueKey,
    capacity: usize,
}

/// The smallest key with this due time: every id sorts after the empty one.
fn key_at(due_ms: u64) -> DueKey {
    (due_ms, QueueId(String::new()))
}

impl NearSchedule {
    pub(super) fn new(capacity: usize) -> Self {
        NearSchedule {
            order: BTreeSet::new(),
            items: HashMap::new(),
            covered: key_at(0),
            capacity: capacity.max(2),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// An entry's due-index row changed (or appeared): `due` is its new
    /// key time, `None` when it left the index (held, final, removed).
    pub(super) fn arrive(&mut self, due_ms: Option<u64>, id: &QueueId, destinations: Destinations) {
        self.forget(id);
        let Some(due_ms) = due_ms else { return };
        let key = (due_ms, id.clone());
        if key >= self.covered {
            return;
        }
        if self.items.len() < self.capacity {
            self.insert(due_ms, id.clone(), destinations);
        } else {
            self.covered = key_at(due_ms);
        }
    }

    /// Puts an entry back in memory due at `due_ms`, room or not: entries
    /// taken out of the schedule (a destination's wait) return to it.
    pub(super) fn put_back(&mut self, due_ms: u64, id: QueueId, destinations: Destinations) {
        self.forget(&id);
        self.insert(due_ms, id, destinations);
    }

    fn insert(&mut self, due_ms: u64, id: QueueId, destinations: Destinations) {
        self.order.insert((due_ms, id.clone()));
        self.items.insert(id, (due_ms, destinations));
    }

    pub(super) fn forget(&mut self, id: &QueueId) {
        if let Some((due, _)) = self.items.remove(id) {
            self.order.remove(&(due, id.clone()));
        }
    }

    /// The first entry due at or before `now`, taken out of the schedule.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<(QueueId, Destinations)> {
        let (due, _) = self.order.first()?;
        if *due > now {
            return None;
        }
        let (_, id) = self.order.pop_first()?;
        let (_, destinations) = self.items.remove(&id)?;
        Some((id, destinations))
    }

    /// When the first entry in memory is due.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.order.first().map(|(due, _)| *due)
    }

    /// Where the next refill starts and how many rows it may add, when
    /// one is needed: memory is below half its capacity and the covered
    /// part of the index ends less than half a window ahead of `now`.
    /// `elsewhere` entries taken from the schedule are still in memory
    /// (waiting for a destination's probe) and count against the capacity.
    pub(super) fn refill_from(&self, now: u64, window_ms: u64, elsewhere: usize) -> Option<(DueKey, usize)> {
        let held = self.items.len() + elsewhere;
        let room = self.capacity - held.min(self.capacity);
        if room < self.capacity / 2 || self.covered.0 >= now + window_ms / 2 {
            return None;
        }
        Some((self.covered.clone(), room))
    }

    /// Forgets how far the due index was read, so the next refill reads
    /// it again from the start: on a shared spool other nodes change rows
    /// (and leases lapse) without this schedule seeing the change.
    pub(super) fn rewind(&mut self) {
        self.covered = key_at(0);
    }

    /// When the covered part of the index stops reaching half a window ahead.
    pub(super) fn refill_at(&self, window_ms: u64) -> u64 {
        (self.covered.0 + 1).saturating_sub(window_ms / 2)
    }

    /// Applies a refill that read `rows` from `from`, up to `before_ms`,
    /// at most `limit`. `effective` gives each row's time in memory (the
    /// stored one, or a spread one after a restart); `skip` says which
    /// entries are being worked and come back by themselves.
    pub(super) fn refilled(
        &mut self,
        from: &DueKey,
        rows: Vec<Due>,
        before_ms: u64,
        limit: usize,
        effective: impl Fn(&Due) -> u64,
        skip: impl Fn(&QueueId) -> bool,
    ) {
        // A change that moved `covered` below where this read started
        // means the read missed rows: keep the lower bound.
        if self.covered < *from {
            return;
        }
        let full = rows.len() >= limit;
        let last = rows.last().map(|row| (row.due_ms, row.id.clone()));
        for row in rows {
            if skip(&row.id) {
                continue;
            }
            let due = effective(&row);
            self.forget(&row.id);
            self.insert(due, row.id, row.destinations.into());
        }
        self.covered = match (full, last) {
            // Just after the last row read: its id with a NUL appended is
            // the next possible key.
            (true, Some((due, id))) => (due, QueueId(format!("{}\0", id.0))),
            _ => key_at(before_ms),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(ms: u64, id: &str) -> Due {
        Due {
            due_ms: ms,
            id: QueueId(id.into()),
            destinations: vec!["mx:x.test".into()],
        }
    }

    fn dests() -> Destinations {
        vec!["mx:x.test".to_string()].into()
    }

    #[test]
    fn refills_in_pages_and_never_holds_more_than_its_capacity() {
        let mut near = NearSchedule::new(4);
        let (from, room) = near.refill_from(0, 1000, 0).unwrap();
        assert_eq!(room, 4);
        let rows = vec![due(1, "a"), due(2, "b"), due(3, "c"), due(3, "d")];
        near.refilled(&from, rows, 1000, room, |d| d.due_ms, |_| false);
        assert_eq!(near.len(), 4);
        // Full: no refill until memory drains below half.
        assert!(near.refill_from(0, 1000, 0).is_none());
        // A change below the covered key with no room moves `covered` down.
        near.arrive(Some(2), &QueueId("e".into()), dests());
        assert_eq!(near.len(), 4);
        assert_eq!(near.covered, key_at(2));
        // A change above the covered key stays in the store.
        near.arrive(Some(500), &QueueId("f".into()), dests());
        assert_eq!(near.len(), 4);
        for _ in 0..3 {
            near.pop_due(10).unwrap();
        }
        let (from, room) = near.refill_from(10, 1000, 0).unwrap();
        assert_eq!(from, key_at(2));
        assert_eq!(room, 3);
        // The refill reads from (2, ""): e and the rest come in.
        near.refilled(
            &from,
            vec![due(2, "e"), due(3, "d")],
            1000,
            room,
            |d| d.due_ms,
            |_| false,
        );
        assert_eq!(near.len(), 2);
        assert_eq!(near.covered, key_at(1000));
        assert_eq!(near.pop_due(10).map(|(id, _)| id.0), Some("e".into()));
    }

    #[test]
    fn rows_being_worked_are_skipped_and_changes_replace_old_times() {
        let mut near = NearSchedule::new(10);
        let (from, room) = near.refill_from(0, 1000, 0).unwrap();
        near.refilled(
            &from,
            vec![due(1, "a"), due(2, "busy")],
            1000,
            room,
            |d| d.due_ms + 100,
            |id| id.0 == "busy",
        );
        assert_eq!(near.len(), 1);
        assert_eq!(near.next_due(), Some(101));
        near.arrive(Some(50), &QueueId("a".into()), dests());
        assert_eq!(near.next_due(), Some(50));
        near.arrive(None, &QueueId("a".into()), dests());
        assert_eq!(near.len(), 0);
        assert!(near.pop_due(u64::MAX).is_none());
    }
}
