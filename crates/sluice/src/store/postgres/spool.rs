//! The shared spool's claim, renew and report statements (schema:
//! migration 2), kept apart from the queue so the queue's `Spool`
//! interface can call them as they are.
//!
//! A recipient row is worked by one node at a time. A claim takes due rows
//! no one holds (or whose lease expired) with `FOR UPDATE SKIP LOCKED`, so
//! two nodes claiming at once never take the same row, and raises the row's
//! fence. Every later write about that row (renewal, result) names the
//! fence it was claimed with and changes nothing if the fence moved on: a
//! node that lost its lease cannot overwrite the work of the node that
//! took it over.

use super::StoreError;
use tokio_postgres::GenericClient;

/// A recipient row claimed under a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    /// Queue id of the message.
    pub message_id: String,
    /// The recipient's position in the message.
    pub idx: i32,
    /// The fence this claim holds; results must present it.
    pub fence: i64,
}

/// Where a worked recipient goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (ms).
    Deferred(u64),
    /// Delivered: final.
    Delivered,
    /// Failed permanently: final.
    Failed,
}

const CLAIM: &str = "\
WITH due AS (
    SELECT message_id, idx FROM spool_recipient
    WHERE state IN ('queued', 'deferred') AND due_at_ms <= $1
      AND (lease_owner IS NULL OR lease_expires_at_ms <= $1)
    ORDER BY due_at_ms
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE spool_recipient AS r
SET lease_owner = $2, lease_expires_at_ms = $1 + $4, fence = r.fence + 1
FROM due
WHERE r.message_id = due.message_id AND r.idx = due.idx
RETURNING r.message_id, r.idx, r.fence";

const RENEW: &str = "\
UPDATE spool_recipient SET lease_expires_at_ms = $5::bigint + $6::bigint
WHERE message_id = $1 AND idx = $2 AND fence = $3 AND lease_owner = $4";

const REPORT: &str = "\
UPDATE spool_recipient
SET state = $5, due_at_ms = coalesce($6, due_at_ms), last_reply = $7,
    attempts = attempts + 1, lease_owner = NULL, lease_expires_at_ms = NULL
WHERE message_id = $1 AND idx = $2 AND fence = $3 AND lease_owner = $4";

const RELEASE_ALL: &str = "\
UPDATE spool_recipient SET lease_owner = NULL, lease_expires_at_ms = NULL
WHERE lease_owner = $1";

const LEASED: &str = "\
SELECT lease_owner, count(*) FROM spool_recipient
WHERE lease_owner IS NOT NULL AND lease_expires_at_ms > $1
GROUP BY lease_owner";

fn err(e: tokio_postgres::Error) -> StoreError {
    super::err(e)
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Claims at most `limit` recipients due at `now_ms` for `owner`, leased
/// for `lease_ms`. Run it in its own transaction (or autocommit): the row
/// locks last until that commits.
pub async fn claim(
    client: &impl GenericClient,
    owner: &str,
    now_ms: u64,
    lease_ms: u64,
    limit: u32,
) -> Result<Vec<Claim>, StoreError> {
    let rows = client
        .query(CLAIM, &[&ms(now_ms), &owner, &i64::from(limit), &ms(lease_ms)])
        .await
        .map_err(err)?;
    let mut claims: Vec<Claim> = rows
        .iter()
        .map(|row| Claim {
            message_id: row.get(0),
            idx: row.get(1),
            fence: row.get(2),
        })
        .collect();
    claims.sort();
    Ok(claims)
}

/// Extends a lease still held; false if it was lost (expired and taken).
pub async fn renew(
    client: &impl GenericClient,
    owner: &str,
    claim: &Claim,
    now_ms: u64,
    lease_ms: u64,
) -> Result<bool, StoreError> {
    let updated = client
        .execute(
            RENEW,
            &[
                &claim.message_id,
                &claim.idx,
                &claim.fence,
                &owner,
                &ms(now_ms),
                &ms(lease_ms),
            ],
        )
        .await
        .map_err(err)?;
    Ok(updated == 1)
}

/// Records the result of an attempt and ends the lease; false (nothing
/// written) if the lease was lost meanwhile.
pub async fn report(
    client: &impl GenericClient,
    owner: &str,
    claim: &Claim,
    next: Next,
    reply: &str,
) -> Result<bool, StoreError> {
    let (state, due) = match next {
        Next::Deferred(at) => ("deferred", Some(ms(at))),
        Next::Delivered => ("delivered", None),
        Next::Failed => ("failed", None),
    };
    let updated = client
        .execute(
            REPORT,
            &[
                &claim.message_id,
                &claim.idx,
                &claim.fence,
                &owner,
                &state,
                &due,
                &reply,
            ],
        )
        .await
        .map_err(err)?;
    Ok(updated == 1)
}

/// Gives up every lease of `owner` (a node stopping cleanly), so others
/// need not wait for them to expire. Fences stay: a late result of the
/// stopped node is still refused once another node claims the row.
pub async fn release_all(client: &impl GenericClient, owner: &str) -> Result<u64, StoreError> {
    client.execute(RELEASE_ALL, &[&owner]).await.map_err(err)
}

/// Live leases per node at `now_ms`.
pub async fn leased(client: &impl GenericClient, now_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = client.query(LEASED, &[&ms(now_ms)]).await.map_err(err)?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
        .collect())
}
