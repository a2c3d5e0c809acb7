//! The near schedule: the part of the spool's due index that is due soon,
//! in memory. Everything else stays in the store until the window reaches
//! it, so memory holds at most `capacity` entries whatever the backlog.
//!
//! Invariant: every row of the store's due index with a key below
//! `covered` is in memory, or its entry is being worked (an attempt, a
//! destination's wait) and comes back when that ends. A change whose key
//! falls below `covered` is kept in memory when there is room; when there
//! is none, `covered` moves down to it and the next refill reads it.
//!
//! A refill reads the store outside the queue's lock, so a change can be
//! committed after the read and arrive before the refill lands, with a key
//! above the old `covered` but below the new one. Changes that arrive while
//! a refill is in flight are recorded, and the refill applies them: they
//! are newer than any row it read.

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
    /// Changes since the refill in flight read the store, by entry.
    changed_during_refill: Option<HashMap<QueueId, Change>>,
}

/// A change recorded during a refill: the entry's new key time (`None`
/// when it left the index) and whether `arrive` already put it in memory.
struct Change {
    due_ms: Option<u64>,
    destinations: Destinations,
    in_memory: bool,
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
            changed_during_refill: None,
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
        let in_memory = due_ms.is_some_and(|due_ms| self.keep(due_ms, id, destinations.clone()));
        if let Some(changes) = &mut self.changed_during_refill {
            let change = Change {
                due_ms,
                destinations,
                in_memory,
            };
            changes.insert(id.clone(), change);
        }
    }

    /// Keeps a due-index row in memory when it falls in the covered part
    /// and there is room; says whether it did.
    fn keep(&mut self, due_ms: u64, id: &QueueId, destinations: Destinations) -> bool {
        if (due_ms, id.clone()) >= self.covered {
            return false;
        }
        if self.items.len() < self.capacity {
            self.insert(due_ms, id.clone(), destinations);
            true
        } else {
            self.covered = key_at(due_ms);
            false
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
    /// From here until `refilled`, changes are recorded.
    pub(super) fn refill_from(
        &mut self,
        now: u64,
        window_ms: u64,
        elsewhere: usize,
    ) -> Option<(DueKey, usize)> {
        let held = self.items.len() + elsewhere;
        let room = self.capacity - held.min(self.capacity);
        if room < self.capacity / 2 || self.covered.0 >= now + window_ms / 2 {
            return None;
        }
        // A refill that failed left its record behind: the next read sees
        // everything it holds, so it starts afresh.
        self.changed_during_refill = Some(HashMap::new());
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
        let changes = self.changed_during_refill.take().unwrap_or_default();
        // A change that moved `covered` below where this read started
        // means the read missed rows: keep the lower bound, and the next
        // refill reads every recorded change that is not in memory.
        if self.covered < *from {
            return;
        }
        let full = rows.len() >= limit;
        let last = rows.last().map(|row| (row.due_ms, row.id.clone()));
        for row in rows {
            // A recorded change is newer than the row read.
            if skip(&row.id) || changes.contains_key(&row.id) {
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
        for (id, change) in changes {
            let Some(due_ms) = change.due_ms else { continue };
            if change.in_memory || skip(&id) {
                continue;
            }
            self.keep(due_ms, &id, change.destinations);
        }
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

    #[test]
    fn a_change_committed_after_the_refill_read_the_store_is_not_lost() {
        let mut near = NearSchedule::new(10);
        let (from, room) = near.refill_from(0, 1000, 0).unwrap();
        // The refill read the store: it saw "a" due at 5 and "b" due at 7.
        let rows = vec![due(5, "a"), due(7, "b")];
        // Before it lands, "c" is committed (above the old covered key, so
        // not kept by itself), "b" is rescheduled and "a" is delivered.
        near.arrive(Some(3), &QueueId("c".into()), dests());
        near.arrive(Some(900), &QueueId("b".into()), dests());
        near.arrive(None, &QueueId("a".into()), dests());
        assert_eq!(near.len(), 0);
        near.refilled(&from, rows, 1000, room, |d| d.due_ms, |_| false);
        let mut order = Vec::new();
        while let Some((id, _)) = near.pop_due(u64::MAX) {
            order.push(id.0);
        }
        assert_eq!(order, ["c", "b"]);
        // Outside a refill nothing is recorded.
        near.arrive(Some(2000), &QueueId("d".into()), dests());
        assert!(near.changed_during_refill.is_none());
    }

    #[test]
    fn a_change_recorded_during_a_refill_respects_the_capacity() {
        let mut near = NearSchedule::new(2);
        let (from, room) = near.refill_from(0, 1000, 0).unwrap();
        near.arrive(Some(40), &QueueId("late".into()), dests());
        // An entry back from a destination's wait takes the last place.
        near.put_back(9, QueueId("back".into()), dests());
        near.refilled(&from, vec![due(1, "a")], 1000, room, |d| d.due_ms, |_| false);
        // Full: "late" stays in the store and the covered key moves down
        // to it, so the next refill reads it.
        assert_eq!(near.len(), 2);
        assert_eq!(near.covered, key_at(40));
    }

    #[test]
    fn a_change_to_an_entry_in_flight_waits_for_the_attempt() {
        let mut near = NearSchedule::new(10);
        let (from, room) = near.refill_from(0, 1000, 0).unwrap();
        near.arrive(Some(3), &QueueId("busy".into()), dests());
        near.refilled(&from, vec![], 1000, room, |d| d.due_ms, |id| id.0 == "busy");
        assert_eq!(near.len(), 0);
    }
}
