//! Leases on a spool shared by several nodes (SPEC section 8): an entry is
//! attempted only under a claim the store granted this node; the claim is
//! renewed while the attempt runs and its fence goes with the outcome, so
//! a node that lost the entry cannot overwrite the result of the node that
//! took it over. Other nodes' new mail arrives in the near schedule as the
//! store announces it; a rescan of the due index finds what announcements
//! missed and the work of nodes whose leases lapsed.
//!
//! Administrators on any node write the entries too. Every write of an
//! entry names the revision it was computed from and the store refuses it
//! if the entry moved on since: an action is then made again on the entry
//! as it is now, and an attempt's outcome is put on top of it
//! ([`merge_outcome`]), so neither an administrator's hold, retry or
//! deletion nor a recipient's delivery is ever overwritten.
//!
//! On a spool one node owns (the embedded store) none of this runs: every
//! claim is granted, and the queue never asks.

use super::spool::{Claim, Guard, Lease, Revision, SpoolError, SpoolNews, SpoolWrite};
use super::{Queue, QueueEntry};
use crate::message::QueueId;
use std::time::Duration;
use tokio::time::Instant;

/// How long entries wait before they are claimed again when the store did
/// not answer a claim.
const CLAIM_RETRY: Duration = Duration::from_secs(5);

/// How many times a write refused because the entry changed is made again
/// on the entry as it is now before the writer gives up (each time means
/// another write of the same entry landed in between).
pub(super) const REDO_TRIES: usize = 8;

/// A claim this node holds, and until when it surely holds: the grant's or
/// last renewal's request time plus the lease (the store counts from a
/// later instant). A claim found lost ends at once.
#[derive(Debug, Clone)]
pub(super) struct HeldClaim {
    claim: Claim,
    until: Instant,
}

impl Queue {
    fn lease(&self) -> Lease {
        Lease {
            owner: self.inner.settings.hostname.clone(),
            for_ms: self.inner.settings.lease.as_millis() as u64,
        }
    }

    /// Of the entries the scheduler took as due, those this node may
    /// attempt: all of them on a spool of its own; on a shared spool, those
    /// the store granted. The others are some other node's now: they leave
    /// this node's schedule and come back with a rescan when due again.
    pub(super) async fn claim_ready(&self, ready: Vec<QueueId>) -> Vec<QueueId> {
        if !self.inner.shared || ready.is_empty() {
            return ready;
        }
        let spool = self.inner.spool.clone();
        let lease = self.lease();
        let asked = ready.clone();
        let until = Instant::now() + self.inner.settings.lease;
        let granted = tokio::task::spawn_blocking(move || spool.claim(&asked, &lease)).await;
        let now = self.now_ms();
        let mut state = self.state();
        match granted {
            Ok(Ok(claims)) => {
                let mut granted = Vec::with_capacity(claims.len());
                for claim in claims {
                    granted.push(claim.id.clone());
                    state.claims.insert(claim.id.clone(), HeldClaim { claim, until });
                }
                for id in &ready {
                    if !state.claims.contains_key(id) {
                        state.in_flight.remove(id);
                    }
                }
                granted
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(error)) => error.to_string(),
                    Err(error) => error.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::warn!(error = %why, entries = ready.len(), "cannot claim due entries; trying again soon");
                for id in ready {
                    state.in_flight.remove(&id);
                    state
                        .near
                        .put_back(now + CLAIM_RETRY.as_millis() as u64, id, Vec::new().into());
                }
                Vec::new()
            }
        }
    }

    /// Reads an entry for an attempt, with the revision its outcome is
    /// written against. A shared spool's read is a round trip to the
    /// database: it waits off the runtime's threads, which keep serving
    /// SMTP sessions meanwhile.
    pub(super) async fn read_entry(
        &self,
        id: &QueueId,
    ) -> Result<Option<(QueueEntry, Revision)>, SpoolError> {
        if !self.inner.shared {
            return self.inner.spool.entry_revised(id);
        }
        let spool = self.inner.spool.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || spool.entry_revised(&id))
            .await
            .map_err(|error| SpoolError::Failed(error.to_string()))?
    }

    /// The claim this node holds on `id`, if the spool is shared.
    pub(super) fn claim_of(&self, id: &QueueId) -> Option<Claim> {
        self.state().claims.get(id).map(|held| held.claim.clone())
    }

    /// Whether this node may still start delivering `id`: always on a
    /// spool of its own; on a shared one, while its claim surely holds (a
    /// claim found lost, or not renewed in time because the store did
    /// not answer, may be another node's by now: delivering it here too
    /// would deliver it twice).
    pub(super) fn claim_holds(&self, id: &QueueId) -> bool {
        !self.inner.shared
            || self
                .state()
                .claims
                .get(id)
                .is_some_and(|held| held.until > Instant::now())
    }

    /// Gives back the claim on `id` (an attempt that never started).
    pub(super) fn unclaim(&self, id: &QueueId) {
        let Some(held) = self.state().claims.remove(id) else {
            return;
        };
        let spool = self.inner.spool.clone();
        tokio::task::spawn_blocking(move || spool.release(&[held.claim]));
    }

    /// Commits writes about entry `id` computed from it as read at
    /// `revision`, under this node's claim on it if it holds one: refused
    /// with [`SpoolError::Changed`] when the entry moved on since.
    pub(super) async fn commit_revised(
        &self,
        id: &QueueId,
        revision: Revision,
        writes: Vec<SpoolWrite>,
    ) -> Result<(), SpoolError> {
        let guard = Guard {
            id: id.clone(),
            revision,
            claim: self.claim_of(id),
        };
        self.commit_guarded(Some(&guard), writes).await
    }

    /// Records an attempt's outcome on a shared spool: `outcome` is the
    /// entry `base` (read at `revision`) after the attempt, `writes` its
    /// trace events and reports. Written under the claim; when the entry
    /// changed meanwhile (an administrator on any node), put on top of the
    /// entry as it is now. An entry deleted meanwhile stays deleted: the
    /// trace still says what the attempt did, and no report goes out.
    /// Returns the entry as stored after it, if it stays queued.
    pub(super) async fn record_shared_outcome(
        &self,
        id: &QueueId,
        base: &QueueEntry,
        revision: Revision,
        outcome: QueueEntry,
        writes: Vec<SpoolWrite>,
    ) -> Result<Option<QueueEntry>, SpoolError> {
        let mut revision = revision;
        let mut merged = outcome.clone();
        for _ in 0..REDO_TRIES {
            let finished = merged.is_finished();
            let mut batch = writes.clone();
            batch.push(match finished {
                true => SpoolWrite::Remove(id.clone()),
                false => SpoolWrite::Update(merged.clone()),
            });
            match self.commit_revised(id, revision, batch).await {
                Ok(()) => return Ok((!finished).then_some(merged)),
                Err(SpoolError::Changed) => {}
                Err(error) => return Err(error),
            }
            match self.read_entry(id).await? {
                Some((stored, now_at)) => {
                    merged = merge_outcome(base, &outcome, stored);
                    revision = now_at;
                }
                None => {
                    let events = writes
                        .into_iter()
                        .filter(|write| matches!(write, SpoolWrite::Trace(_)))
                        .collect();
                    self.commit(events).await?;
                    return Ok(None);
                }
            }
        }
        Err(SpoolError::Changed)
    }

    /// Renews this node's claims every third of a lease while attempts run.
    pub(super) async fn renew_leases(self) {
        let period = (self.inner.settings.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            let claims: Vec<Claim> = self
                .state()
                .claims
                .values()
                .map(|held| held.claim.clone())
                .collect();
            if claims.is_empty() {
                continue;
            }
            let spool = self.inner.spool.clone();
            let lease = self.lease();
            let asked = claims.clone();
            let until = Instant::now() + self.inner.settings.lease;
            match tokio::task::spawn_blocking(move || spool.renew(&asked, &lease)).await {
                Ok(Ok(renewed)) => {
                    let mut state = self.state();
                    for claim in &claims {
                        let Some(held) = state
                            .claims
                            .get_mut(&claim.id)
                            .filter(|held| held.claim == *claim)
                        else {
                            continue;
                        };
                        if renewed.contains(&claim.id) {
                            held.until = until;
                        } else {
                            // No delivery of it starts here any more; one
                            // already under way has its outcome refused by
                            // the fence, and the node that took the entry
                            // over reports instead.
                            held.until = Instant::now();
                            tracing::warn!(id = %claim.id, "lease lost while the attempt runs");
                        }
                    }
                }
                Ok(Err(error)) => tracing::warn!(error = %error, "cannot renew leases"),
                Err(error) => tracing::warn!(error = %error, "cannot renew leases"),
            }
        }
    }

    /// Puts in the schedule what other nodes store, and reads the due
    /// index again when told something may have been missed.
    pub(super) async fn follow_news(self, mut news: tokio::sync::mpsc::UnboundedReceiver<SpoolNews>) {
        while let Some(item) = news.recv().await {
            let mut state = self.state();
            match item {
                SpoolNews::Arrived(rows) => {
                    for row in rows {
                        if !state.in_flight.contains(&row.id) {
                            state
                                .near
                                .arrive(Some(row.due_ms), &row.id, row.destinations.into());
                        }
                    }
                }
                SpoolNews::Rescan => state.near.rewind(),
            }
            drop(state);
            self.inner.wake.notify_one();
        }
    }
}

/// An attempt's outcome put on top of the entry as stored now: the
/// recipients the attempt changed (delivered, deferred, bounced, waiting
/// for a down destination's probe) take their new state, since the
/// attempt happened whatever was decided meanwhile; everything else is as
/// stored (a hold, a retry's due times of recipients it did not try).
pub(super) fn merge_outcome(base: &QueueEntry, outcome: &QueueEntry, stored: QueueEntry) -> QueueEntry {
    let mut merged = stored;
    for (i, (before, after)) in base.recipients.iter().zip(&outcome.recipients).enumerate() {
        if before == after {
            continue;
        }
        if let Some(recipient) = merged
            .recipients
            .get_mut(i)
            .filter(|recipient| recipient.address == after.address)
        {
            *recipient = after.clone();
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Address, EnvelopeRecipient, Notify};
    use crate::queue::{Hold, QueuedRecipient, RecipientStatus};

    fn entry(to: &[&str], due_ms: u64) -> QueueEntry {
        let mut entry = QueueEntry {
            id: QueueId("m1".into()),
            message_id: None,
            from: crate::message::ReversePath::Null,
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: None,
            recipients: Vec::new(),
            size: 3,
            received_at_ms: 0,
            expires_at_ms: u64::MAX / 4,
            hold: Hold::Active,
            source: crate::queue::Source {
                peer: "local".into(),
                helo: String::new(),
                connector: None,
            },
        };
        for address in to {
            let recipient = EnvelopeRecipient {
                address: Address::parse(address).unwrap(),
                notify: Notify::Never,
                orcpt: None,
            };
            entry
                .recipients
                .push(QueuedRecipient::new(&recipient, crate::route::Route::Mx, due_ms));
        }
        entry
    }

    #[test]
    fn an_outcome_on_top_of_an_administrators_change_keeps_both() {
        let base = entry(&["a@x.test", "b@y.test", "c@z.test"], 1000);
        // The attempt delivered a, deferred b, and did not try c.
        let mut outcome = base.clone();
        outcome.recipients[0].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
            host: None,
        };
        outcome.recipients[0].attempts = 1;
        outcome.recipients[1].status = RecipientStatus::Deferred {
            due_ms: 9000,
            last_error: "451 later".into(),
            delay_notified: false,
            scheduled_ms: None,
            early_attempts: 0,
            parked: false,
        };
        outcome.recipients[1].attempts = 1;
        // Meanwhile an administrator held it and made everything due now.
        let mut stored = base.clone();
        stored.hold = Hold::Held;
        for r in &mut stored.recipients {
            r.status = RecipientStatus::Queued { due_ms: 500 };
        }
        let merged = merge_outcome(&base, &outcome, stored.clone());
        assert_eq!(merged.hold, Hold::Held);
        assert_eq!(merged.recipients[0], outcome.recipients[0]);
        assert_eq!(merged.recipients[1], outcome.recipients[1]);
        assert_eq!(merged.recipients[2], stored.recipients[2]);
        // Nothing changed meanwhile: the outcome as it is.
        assert_eq!(merge_outcome(&base, &outcome, base.clone()), outcome);
    }
}
