//! Per-destination state: a destination that stops answering is marked
//! down and probed, instead of being tried once per queued message.
//!
//! A destination with no failure takes every attempt. After a connection
//! failure it takes one attempt at a time (the others wait for its
//! result); after `down_after` consecutive failures it is down: its mail is
//! parked (written once, indexed by destination in the spool) and one
//! attempt probes it, with a backoff that doubles up to `probe_max`. A
//! probe that fails moves only this state, in memory: the parked mail is
//! not written again. When no mail comes due at the probe time, the
//! scheduler takes a parked entry as the probe ([`DestinationStates::probes_to_pick`]).
//! Any answer from the next hop (even a 4xx reply) puts it back up and the
//! mail that waited goes at once; the queue then brings the parked mail
//! due, a page at a time.
//!
//! The state lives in memory. A node that starts finds the destinations
//! with parked mail in the spool and takes them as down, probed once at
//! the start, then with the backoff ([`DestinationStates::restore`]).

use super::schedule::Destinations;
use crate::deliver::{DeliveryAttempt, Outcome};
use crate::message::QueueId;
use std::collections::HashMap;
use std::time::Duration;

/// When a destination is down and how it is probed.
#[derive(Debug, Clone)]
pub struct DestinationSettings {
    /// Consecutive connection failures that mark a destination down.
    pub down_after: u32,
    /// Wait before the first probe of a destination that went down.
    pub probe_first: Duration,
    /// The longest wait between probes.
    pub probe_max: Duration,
}

impl Default for DestinationSettings {
    fn default() -> Self {
        DestinationSettings {
            down_after: 5,
            probe_first: Duration::from_secs(60),
            probe_max: Duration::from_secs(1800),
        }
    }
}

#[derive(Default)]
struct Destination {
    failures: u32,
    /// The one attempt in flight while the destination is suspect or down.
    probe: Option<QueueId>,
    /// Down: no attempt before this time (ms).
    next_probe_ms: u64,
    backoff_ms: u64,
    last_error: String,
    /// Entries that came due while the probe ran, with their destinations.
    waiting: Vec<(QueueId, Destinations)>,
    /// The scheduler already looked for a parked entry to probe with at
    /// this `next_probe_ms`.
    picked: bool,
}

/// What to do with an entry that came due.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Attempt it now.
    Attempt,
    /// Wait for the result of the probe of this destination.
    Wait(String),
    /// Every destination is down: defer it to the next probe without a connection.
    Park,
}

/// Where a destination's blocked mail goes: due at the next probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Blocked {
    pub next_probe_ms: u64,
    pub reason: String,
}

/// The result of recording an attempt.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    /// Entries to schedule now (the destination answered, or is not down yet).
    pub resume: Vec<(QueueId, Destinations)>,
    /// Entries to defer to the next probe.
    pub park: Vec<(QueueId, Destinations)>,
    /// The destination went down with this attempt.
    pub went_down: bool,
    /// The destination answered after being down.
    pub came_up: bool,
}

pub(super) struct DestinationStates {
    settings: DestinationSettings,
    states: HashMap<String, Destination>,
}

/// Whether an attempt reached a next hop that answered. Failures to
/// connect, resolve or find a next hop are RFC 3463's X.4.x (network and
/// routing); a reply from the server is anything else.
pub(super) fn answered(attempt: &DeliveryAttempt) -> bool {
    attempt.outcomes.is_empty()
        || attempt.outcomes.iter().any(|(_, outcome)| match outcome {
            Outcome::TempFail(reply) => !matches!(reply.status, Some([4, 4, _])),
            Outcome::Delivered(_) | Outcome::PermFail(_) => true,
        })
}

impl DestinationStates {
    pub(super) fn new(settings: DestinationSettings) -> Self {
        DestinationStates {
            settings,
            states: HashMap::new(),
        }
    }

    fn is_down(&self, state: &Destination) -> bool {
        state.failures >= self.settings.down_after.max(1)
    }

    /// Takes `destination` as down, as found in the spool at start (it has
    /// parked mail): probed once at `now` (a restart often follows a
    /// repair), then with the backoff; never tried per message.
    pub(super) fn restore(&mut self, destination: &str, now: u64) {
        let first = self.settings.probe_first.as_millis() as u64;
        let down_after = self.settings.down_after.max(1);
        let state = self.states.entry(destination.to_string()).or_default();
        state.failures = state.failures.max(down_after);
        state.backoff_ms = first;
        state.next_probe_ms = now;
        state.last_error = "down when the node started".into();
    }

    /// Whether `destination` is down.
    pub(super) fn down(&self, destination: &str) -> bool {
        self.states
            .get(destination)
            .is_some_and(|state| self.is_down(state))
    }

    /// Down destinations whose probe is due, none running, for which the
    /// scheduler has not yet looked for a parked entry to probe with (it
    /// looks once per probe time; mail coming due may probe as well).
    pub(super) fn probes_to_pick(&mut self, now: u64) -> Vec<String> {
        let down_after = self.settings.down_after.max(1);
        let mut due = Vec::new();
        for (destination, state) in &mut self.states {
            if state.failures >= down_after
                && state.probe.is_none()
                && !state.picked
                && now >= state.next_probe_ms
            {
                state.picked = true;
                due.push(destination.clone());
            }
        }
        due
    }

    /// When the next probe falls due for which the scheduler looks for a
    /// parked entry.
    pub(super) fn next_pick_ms(&self) -> Option<u64> {
        self.states
            .values()
            .filter(|state| self.is_down(state) && state.probe.is_none() && !state.picked)
            .map(|state| state.next_probe_ms)
            .min()
    }

    /// The destinations entry `id` is the probe of.
    pub(super) fn probing(&self, id: &QueueId) -> Vec<String> {
        self.states
            .iter()
            .filter(|(_, state)| state.probe.as_ref() == Some(id))
            .map(|(destination, _)| destination.clone())
            .collect()
    }

    /// Decides for an entry due now whose waiting recipients go to `destinations`.
    pub(super) fn decide(&mut self, id: &QueueId, destinations: &[String], now: u64) -> Verdict {
        let mut probe = None;
        let mut busy = None;
        for destination in destinations {
            let Some(state) = self.states.get(destination) else {
                return Verdict::Attempt;
            };
            if state.failures == 0 {
                return Verdict::Attempt;
            }
            if state.probe.is_some() {
                busy.get_or_insert(destination);
            } else if !self.is_down(state) || now >= state.next_probe_ms {
                probe.get_or_insert(destination);
            }
        }
        if let Some(destination) = probe {
            if let Some(state) = self.states.get_mut(destination) {
                state.probe = Some(id.clone());
            }
            return Verdict::Attempt;
        }
        match busy {
            Some(destination) => Verdict::Wait(destination.clone()),
            None => Verdict::Park,
        }
    }

    /// Keeps an entry until the probe of `destination` ends.
    pub(super) fn wait(&mut self, destination: &str, id: QueueId, destinations: Destinations) {
        self.states
            .entry(destination.to_string())
            .or_default()
            .waiting
            .push((id, destinations));
    }

    /// Entries waiting for probes.
    pub(super) fn waiting(&self) -> usize {
        self.states.values().map(|s| s.waiting.len()).sum()
    }

    /// Whether recipients for `destination` in entry `id` must not be
    /// attempted now: the destination is down and `id` is not its probe.
    pub(super) fn blocked(&self, destination: &str, id: &QueueId) -> Option<Blocked> {
        let state = self.states.get(destination)?;
        if !self.is_down(state) || state.probe.as_ref() == Some(id) {
            return None;
        }
        Some(Blocked {
            next_probe_ms: state.next_probe_ms,
            reason: format!(
                "parked: destination not answering after {} connection failures ({}); \
                 goes when a probe answers",
                state.failures, state.last_error
            ),
        })
    }

    /// Records the attempt of entry `id` towards `destination`.
    pub(super) fn record(
        &mut self,
        destination: &str,
        id: &QueueId,
        attempt: &DeliveryAttempt,
        now: u64,
    ) -> Change {
        let mut change = Change::default();
        if answered(attempt) {
            let Some(mut state) = self.states.remove(destination) else {
                return change;
            };
            change.came_up = self.is_down(&state);
            change.resume = std::mem::take(&mut state.waiting);
            return change;
        }
        let down_after = self.settings.down_after.max(1);
        let (first, max) = (
            self.settings.probe_first.as_millis() as u64,
            self.settings.probe_max.as_millis() as u64,
        );
        let state = self.states.entry(destination.to_string()).or_default();
        let was_down = state.failures >= down_after;
        let was_probe = state.probe.as_ref() == Some(id);
        if was_probe {
            state.probe = None;
        }
        state.failures = state.failures.saturating_add(1);
        state.last_error = attempt
            .outcomes
            .first()
            .map(|(_, outcome)| match outcome {
                Outcome::TempFail(reply) | Outcome::PermFail(reply) | Outcome::Delivered(reply) => {
                    reply.to_string()
                }
            })
            .unwrap_or_default();
        if state.failures < down_after {
            change.resume = std::mem::take(&mut state.waiting);
            return change;
        }
        if !was_down {
            change.went_down = true;
            state.backoff_ms = first;
            state.next_probe_ms = now + first;
        } else if was_probe {
            state.backoff_ms = (state.backoff_ms.max(first) * 2).min(max.max(first));
            state.next_probe_ms = now + state.backoff_ms;
            state.picked = false;
        }
        change.park = std::mem::take(&mut state.waiting);
        change
    }

    /// Ends every probe entry `id` held without a result (its recipients
    /// for that destination were not due, or the attempt was cut short):
    /// the entries waiting on it go back to the schedule.
    pub(super) fn release(&mut self, id: &QueueId) -> Vec<(QueueId, Destinations)> {
        let mut resume = Vec::new();
        for state in self.states.values_mut() {
            if state.probe.as_ref() == Some(id) {
                state.probe = None;
                resume.append(&mut state.waiting);
            }
        }
        resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Address, Reply};

    fn attempt(outcome: Outcome) -> DeliveryAttempt {
        DeliveryAttempt {
            host: None,
            tls: None,
            dsn_passed_on: false,
            tls_policy: None,
            outcomes: vec![(Address::parse("r@x.test").unwrap(), outcome)],
        }
    }

    fn refused() -> DeliveryAttempt {
        attempt(Outcome::TempFail(Reply::new(451, [4, 4, 1], "connect: refused")))
    }

    fn id(n: u32) -> QueueId {
        QueueId(format!("q{n}"))
    }

    #[test]
    fn down_after_consecutive_failures_then_probed_with_backoff_and_resumed() {
        let mut states = DestinationStates::new(DestinationSettings {
            down_after: 3,
            probe_first: Duration::from_secs(10),
            probe_max: Duration::from_secs(25),
        });
        let d = vec!["mx:x.test".to_string()];
        let dests: Destinations = d.clone().into();
        assert_eq!(states.decide(&id(1), &d, 0), Verdict::Attempt);
        assert!(!states.record(&d[0], &id(1), &refused(), 0).went_down);
        // Suspect: one attempt at a time, the others wait for it.
        assert_eq!(states.decide(&id(2), &d, 0), Verdict::Attempt);
        assert_eq!(states.decide(&id(3), &d, 0), Verdict::Wait(d[0].clone()));
        states.wait(&d[0], id(3), dests.clone());
        let change = states.record(&d[0], &id(2), &refused(), 1);
        assert_eq!(change.resume.len(), 1, "not down yet: the waiting entry goes");
        assert_eq!(states.decide(&id(3), &d, 1), Verdict::Attempt);
        assert_eq!(states.decide(&id(4), &d, 1), Verdict::Wait(d[0].clone()));
        states.wait(&d[0], id(4), dests.clone());
        let change = states.record(&d[0], &id(3), &refused(), 2);
        assert!(change.went_down);
        assert_eq!(change.park.len(), 1);
        // Down: everything parks until the probe time; then one probe.
        assert_eq!(states.decide(&id(5), &d, 5_000), Verdict::Park);
        assert_eq!(states.blocked(&d[0], &id(5)).unwrap().next_probe_ms, 10_002);
        assert_eq!(states.decide(&id(5), &d, 10_002), Verdict::Attempt);
        assert!(states.blocked(&d[0], &id(5)).is_none(), "the probe itself goes");
        assert_eq!(states.decide(&id(6), &d, 10_002), Verdict::Wait(d[0].clone()));
        states.wait(&d[0], id(6), dests.clone());
        let change = states.record(&d[0], &id(5), &refused(), 10_002);
        assert_eq!(change.park.len(), 1);
        // Backoff doubles, up to the maximum.
        assert_eq!(states.blocked(&d[0], &id(7)).unwrap().next_probe_ms, 30_002);
        assert_eq!(states.decide(&id(7), &d, 30_002), Verdict::Attempt);
        states.record(&d[0], &id(7), &refused(), 30_002);
        assert_eq!(states.blocked(&d[0], &id(8)).unwrap().next_probe_ms, 55_002);
        // An answer, even a 4xx reply, puts it back up.
        assert_eq!(states.decide(&id(8), &d, 55_002), Verdict::Attempt);
        assert_eq!(states.decide(&id(9), &d, 55_002), Verdict::Wait(d[0].clone()));
        states.wait(&d[0], id(9), dests);
        let busy = attempt(Outcome::TempFail(Reply::new(451, [4, 3, 0], "busy")));
        let change = states.record(&d[0], &id(8), &busy, 55_003);
        assert!(change.came_up);
        assert_eq!(change.resume.len(), 1);
        assert_eq!(states.decide(&id(10), &d, 55_003), Verdict::Attempt);
        assert!(states.blocked(&d[0], &id(10)).is_none());
    }

    #[test]
    fn an_entry_with_one_live_destination_is_attempted_and_probes_end_without_a_result() {
        let mut states = DestinationStates::new(DestinationSettings {
            down_after: 1,
            ..DestinationSettings::default()
        });
        let dead = "mx:dead.test".to_string();
        states.record(&dead, &id(1), &refused(), 0);
        assert_eq!(
            states.decide(&id(2), std::slice::from_ref(&dead), 1),
            Verdict::Park
        );
        let both = vec![dead.clone(), "mx:live.test".to_string()];
        assert_eq!(states.decide(&id(2), &both, 1), Verdict::Attempt);
        assert!(states.blocked(&dead, &id(2)).is_some());
        // A probe whose recipients were not due ends without a result.
        let later = 60_000;
        assert_eq!(
            states.decide(&id(3), std::slice::from_ref(&dead), later),
            Verdict::Attempt
        );
        assert_eq!(
            states.decide(&id(4), std::slice::from_ref(&dead), later),
            Verdict::Wait(dead.clone())
        );
        states.wait(&dead, id(4), vec![dead.clone()].into());
        assert_eq!(states.release(&id(3)).len(), 1);
        assert_eq!(
            states.decide(&id(4), std::slice::from_ref(&dead), later),
            Verdict::Attempt
        );
    }

    #[test]
    fn a_destination_restored_at_start_is_probed_at_once_with_a_parked_entry_once_per_probe_time() {
        let mut states = DestinationStates::new(DestinationSettings {
            down_after: 3,
            probe_first: Duration::from_secs(10),
            probe_max: Duration::from_secs(25),
        });
        let dead = "mx:dead.test".to_string();
        states.restore(&dead, 1_000);
        assert!(states.down(&dead));
        assert!(states.blocked(&dead, &id(1)).is_some(), "no attempt per message");
        assert_eq!(states.next_pick_ms(), Some(1_000));
        assert_eq!(states.probes_to_pick(1_000), vec![dead.clone()]);
        assert!(states.probes_to_pick(1_000).is_empty(), "once per probe time");
        assert_eq!(states.next_pick_ms(), None);
        // The picked entry is the probe; it fails: the next probe time comes.
        assert_eq!(
            states.decide(&id(1), std::slice::from_ref(&dead), 1_000),
            Verdict::Attempt
        );
        assert_eq!(states.probing(&id(1)), vec![dead.clone()]);
        states.record(&dead, &id(1), &refused(), 1_000);
        assert!(states.probing(&id(1)).is_empty());
        assert_eq!(states.next_pick_ms(), Some(21_000));
        assert!(states.probes_to_pick(20_999).is_empty());
        assert_eq!(states.probes_to_pick(21_000), vec![dead]);
    }
}
