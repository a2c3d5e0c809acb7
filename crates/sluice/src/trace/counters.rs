//! Counters of the trace, kept in memory as events are recorded, so that
//! `/metrics` and the dashboard never read the stored trace: per kind since
//! the node started, and per minute over the last week (the dashboard's
//! longest window). Besides the events, the recorder counts what the queue
//! commits: messages entering and leaving the queue (so past queue depth is
//! worked back exactly from the depth now) and the quarantine's size.
//!
//! Nothing here survives a restart but the quarantine's size, which the
//! queue reads from the store at start: counters restart from zero (as a
//! Prometheus counter may) and the dashboard's series start at the node's
//! start.

use super::{TraceEvent, TraceKind};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Length of one bucket of the per-minute ring, ms.
pub const MINUTE_MS: u64 = 60_000;
/// Minutes the ring keeps: a week, the dashboard's longest window.
pub const RING_MINUTES: u64 = 7 * 24 * 60;

/// Trace events counted over a span of time, by what the dashboard shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventCounts {
    /// Messages accepted (one per message).
    pub received: u64,
    /// Recipients accepted by the next hop.
    pub delivered: u64,
    /// Temporary failures (per recipient and attempt).
    pub deferred: u64,
    /// Permanent failures and expiries (per recipient).
    pub bounced: u64,
    /// Messages a rule put in quarantine.
    pub quarantined: u64,
    /// Messages or recipients refused in session.
    pub rejected: u64,
}

impl EventCounts {
    /// Counts one event of `kind`. Every kind is named: a new kind does not
    /// compile until it is placed (counted, or knowingly not shown).
    pub fn add(&mut self, kind: TraceKind) {
        match kind {
            TraceKind::Received => self.received += 1,
            TraceKind::Delivered => self.delivered += 1,
            TraceKind::Deferred => self.deferred += 1,
            TraceKind::Bounced | TraceKind::Expired => self.bounced += 1,
            TraceKind::Quarantined => self.quarantined += 1,
            TraceKind::Rejected => self.rejected += 1,
            TraceKind::Routed
            | TraceKind::DsnSent
            | TraceKind::Held
            | TraceKind::Released
            | TraceKind::Deleted
            | TraceKind::RuleMatched
            | TraceKind::SenderNotified
            | TraceKind::Scanned => {}
        }
    }

    /// Adds `other` to these counts.
    pub fn merge(&mut self, other: &EventCounts) {
        self.received += other.received;
        self.delivered += other.delivered;
        self.deferred += other.deferred;
        self.bounced += other.bounced;
        self.quarantined += other.quarantined;
        self.rejected += other.rejected;
    }
}

/// One minute of activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// Start of the minute, ms since the epoch (a multiple of [`MINUTE_MS`]).
    pub start_ms: u64,
    /// Trace events in the minute.
    pub counts: EventCounts,
    /// Messages that entered the queue (accepted copies, reports, releases).
    pub entered: u64,
    /// Messages that left the queue (finished or deleted).
    pub left: u64,
}

/// What the counters hold for a window (see [`TraceCounters::activity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Minutes with activity at or after the window's start, oldest first.
    pub minutes: Vec<Minute>,
    /// Messages in quarantine now.
    pub quarantined: u64,
    /// Events of each kind since the node started, in [`TraceKind::ALL`] order.
    pub totals: Vec<(TraceKind, u64)>,
}

/// What one commit changed, counted by the queue before it commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Trace events: time and kind.
    pub events: Vec<(u64, TraceKind)>,
    /// Messages entering the queue.
    pub entered: u64,
    /// Messages leaving the queue.
    pub left: u64,
    /// Messages entering quarantine.
    pub quarantined: u64,
    /// Messages leaving quarantine (released or deleted).
    pub unquarantined: u64,
}

impl Tally {
    /// Adds trace events.
    pub fn events(&mut self, events: &[TraceEvent]) {
        self.events.extend(events.iter().map(|e| (e.at_ms, e.kind)));
    }
}

/// The node's counters; shared by the queue (which records) and the admin
/// API (which reads).
#[derive(Debug, Default)]
pub struct TraceCounters {
    totals: [AtomicU64; TraceKind::ALL.len()],
    quarantined: AtomicU64,
    ring: Mutex<VecDeque<Minute>>,
}

impl TraceCounters {
    /// Counts what a commit (or a trace record) changed, at `now_ms`.
    pub fn count(&self, tally: &Tally, now_ms: u64) {
        for &(_, kind) in &tally.events {
            self.totals[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        if tally.quarantined > 0 {
            self.quarantined.fetch_add(tally.quarantined, Ordering::Relaxed);
        }
        if tally.unquarantined > 0 {
            let _ = self
                .quarantined
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(tally.unquarantined))
                });
        }
        let mut ring = self.ring();
        for &(at_ms, kind) in &tally.events {
            if let Some(minute) = minute_of(&mut ring, at_ms) {
                minute.counts.add(kind);
            }
        }
        if tally.entered + tally.left > 0 {
            if let Some(minute) = minute_of(&mut ring, now_ms) {
                minute.entered += tally.entered;
                minute.left += tally.left;
            }
        }
    }

    /// The quarantine's size, as read from the store at start.
    pub fn set_quarantined(&self, messages: u64) {
        self.quarantined.store(messages, Ordering::Relaxed);
    }

    /// Events of `kind` since the node started.
    pub fn total(&self, kind: TraceKind) -> u64 {
        self.totals[kind as usize].load(Ordering::Relaxed)
    }

    /// The minutes starting at or after `since_ms`'s minute, the
    /// quarantine's size and the totals.
    pub fn activity(&self, since_ms: u64) -> Activity {
        let first = since_ms - since_ms % MINUTE_MS;
        let minutes = self
            .ring()
            .iter()
            .filter(|m| m.start_ms >= first)
            .copied()
            .collect();
        Activity {
            minutes,
            quarantined: self.quarantined.load(Ordering::Relaxed),
            totals: TraceKind::ALL
                .into_iter()
                .map(|kind| (kind, self.total(kind)))
                .collect(),
        }
    }

    fn ring(&self) -> MutexGuard<'_, VecDeque<Minute>> {
        // Counts are plain numbers: a panic elsewhere leaves them usable.
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The bucket of `at_ms`, made when missing; `None` for a time older than
/// the ring keeps. Minutes past the ring's span are dropped as new ones come.
fn minute_of(ring: &mut VecDeque<Minute>, at_ms: u64) -> Option<&mut Minute> {
    let start_ms = at_ms - at_ms % MINUTE_MS;
    let newest = ring.back().map_or(start_ms, |m| m.start_ms.max(start_ms));
    let oldest_kept = newest.saturating_sub((RING_MINUTES - 1) * MINUTE_MS);
    while ring.front().is_some_and(|m| m.start_ms < oldest_kept) {
        ring.pop_front();
    }
    if start_ms < oldest_kept {
        return None;
    }
    // Events come in time order but for a few milliseconds across a
    // minute's end: the search is from the back.
    let at = match ring.iter().rposition(|m| m.start_ms <= start_ms) {
        Some(i) if ring[i].start_ms == start_ms => i,
        Some(i) => {
            ring.insert(
                i + 1,
                Minute {
                    start_ms,
                    ..Minute::default()
                },
            );
            i + 1
        }
        None => {
            ring.push_front(Minute {
                start_ms,
                ..Minute::default()
            });
            0
        }
    };
    ring.get_mut(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(events: &[(u64, TraceKind)]) -> Tally {
        Tally {
            events: events.to_vec(),
            ..Tally::default()
        }
    }

    #[test]
    fn every_kind_moves_its_counter_and_the_dashboard_shows_six() {
        let counters = TraceCounters::default();
        let now = 100 * MINUTE_MS;
        for (n, kind) in TraceKind::ALL.into_iter().enumerate() {
            assert_eq!(TraceKind::ALL[kind as usize], kind, "ALL is in declaration order");
            counters.count(&tally(&[(now, kind)]), now);
            for other in TraceKind::ALL {
                let expected = u64::from(TraceKind::ALL[..=n].contains(&other));
                assert_eq!(counters.total(other), expected, "after {kind:?}: {other:?}");
            }
        }
        let activity = counters.activity(now);
        assert_eq!(activity.minutes.len(), 1);
        assert_eq!(
            activity.minutes[0].counts,
            EventCounts {
                received: 1,
                delivered: 1,
                deferred: 1,
                bounced: 2,
                quarantined: 1,
                rejected: 1,
            }
        );
        assert!(activity.totals.iter().all(|&(_, n)| n == 1));
    }

    #[test]
    fn minutes_are_kept_for_a_week_and_late_events_find_their_minute() {
        let counters = TraceCounters::default();
        let start = 1_000 * MINUTE_MS;
        counters.count(&tally(&[(start + 5, TraceKind::Received)]), start);
        counters.count(&tally(&[(start + 2 * MINUTE_MS, TraceKind::Delivered)]), start);
        // A little late: the minute between is made in its place.
        counters.count(
            &tally(&[(start + MINUTE_MS + 59_999, TraceKind::Deferred)]),
            start,
        );
        let minutes = counters.activity(0).minutes;
        let starts: Vec<u64> = minutes.iter().map(|m| (m.start_ms - start) / MINUTE_MS).collect();
        assert_eq!(starts, [0, 1, 2]);
        assert_eq!(minutes[1].counts.deferred, 1);

        let week_later = start + RING_MINUTES * MINUTE_MS;
        let moved = Tally {
            entered: 2,
            left: 1,
            ..tally(&[(week_later, TraceKind::Received)])
        };
        counters.count(&moved, week_later);
        let minutes = counters.activity(0).minutes;
        assert_eq!(minutes.len(), 3, "the oldest minute fell out");
        assert_eq!(minutes[0].start_ms, start + MINUTE_MS);
        assert_eq!((minutes[2].entered, minutes[2].left), (2, 1));
        // Older than the ring: counted in the totals only.
        counters.count(&tally(&[(start, TraceKind::Received)]), week_later);
        assert_eq!(counters.total(TraceKind::Received), 3);
        assert_eq!(counters.activity(week_later).minutes.len(), 1);
    }

    #[test]
    fn quarantine_size_starts_from_the_store_and_never_goes_below_zero() {
        let counters = TraceCounters::default();
        counters.set_quarantined(2);
        let held = Tally {
            quarantined: 1,
            ..Tally::default()
        };
        counters.count(&held, 0);
        assert_eq!(counters.activity(0).quarantined, 3);
        let gone = Tally {
            unquarantined: 5,
            ..Tally::default()
        };
        counters.count(&gone, 0);
        assert_eq!(counters.activity(0).quarantined, 0);
    }
}
