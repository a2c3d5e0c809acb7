//! Leases on a spool shared by several nodes (SPEC section 8): an entry is
//! attempted only under a claim the store granted this node; the claim is
//! renewed while the attempt runs and its fence goes with the outcome, so
//! a node that lost the entry cannot overwrite the result of the node that
//! took it over. Other nodes' new mail arrives in the near schedule as the
//! store announces it; a rescan of the due index finds what announcements
//! missed and the work of nodes whose leases lapsed.
//!
//! On a spool one node owns (the embedded store) none of this runs: every
//! claim is granted, and the queue never asks.

use super::spool::{Claim, Lease, SpoolNews};
use super::Queue;
use crate::message::QueueId;
use std::time::Duration;

/// How long entries wait before they are claimed again when the store did
/// not answer a claim.
const CLAIM_RETRY: Duration = Duration::from_secs(5);

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
        let granted = tokio::task::spawn_blocking(move || spool.claim(&asked, &lease)).await;
        let now = self.now_ms();
        let mut state = self.state();
        match granted {
            Ok(Ok(claims)) => {
                let mut granted = Vec::with_capacity(claims.len());
                for claim in claims {
                    granted.push(claim.id.clone());
                    state.claims.insert(claim.id.clone(), claim);
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

    /// Reads an entry for an attempt. A shared spool's read is a round
    /// trip to the database: it waits off the runtime's threads, which
    /// keep serving SMTP sessions meanwhile.
    pub(super) async fn read_entry(
        &self,
        id: &QueueId,
    ) -> Result<Option<super::QueueEntry>, super::SpoolError> {
        if !self.inner.shared {
            return self.inner.spool.entry(id);
        }
        let spool = self.inner.spool.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || spool.entry(&id))
            .await
            .map_err(|error| super::SpoolError(error.to_string()))?
    }

    /// The claim this node holds on `id`, if the spool is shared.
    pub(super) fn claim_of(&self, id: &QueueId) -> Option<Claim> {
        self.state().claims.get(id).cloned()
    }

    /// Gives back the claim on `id` (an attempt that never started).
    pub(super) fn unclaim(&self, id: &QueueId) {
        let Some(claim) = self.state().claims.remove(id) else {
            return;
        };
        let spool = self.inner.spool.clone();
        tokio::task::spawn_blocking(move || spool.release(&[claim]));
    }

    /// Renews this node's claims every third of a lease while attempts run.
    pub(super) async fn renew_leases(self) {
        let period = (self.inner.settings.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            let claims: Vec<Claim> = self.state().claims.values().cloned().collect();
            if claims.is_empty() {
                continue;
            }
            let spool = self.inner.spool.clone();
            let lease = self.lease();
            let asked = claims.clone();
            match tokio::task::spawn_blocking(move || spool.renew(&asked, &lease)).await {
                Ok(Ok(held)) => {
                    for claim in claims.iter().filter(|claim| !held.contains(&claim.id)) {
                        // Its outcome will be refused by the fence; the
                        // node that took it over reports instead.
                        tracing::warn!(id = %claim.id, "lease lost while the attempt runs");
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
