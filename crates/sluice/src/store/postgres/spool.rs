//! The shared spool's lease statements (schema: migration 3): claim,
//! renew, settle and release, over `spool_message` rows.
//!
//! A message is worked by one node at a time. A claim takes the rows asked
//! for that no one holds (or whose lease expired, or that this node held
//! before a restart) with `FOR UPDATE SKIP LOCKED`, so two nodes claiming
//! at once never take the same row, and raises the row's fence. Every later
//! write about that row (renewal, outcome) names the fence it was claimed
//! with and changes nothing if the fence moved on: a node that lost its
//! lease cannot overwrite the work of the node that took it over.
//!
//! A write computed from a message as read (an outcome, an administrator's
//! action) also names the row's revision it read, and is refused when the
//! row was written since ([`check`]).
//!
//! Times are the database's clock (`now` is `None`), so nodes with skewed
//! clocks agree on when a lease lapses; tests pass their own.

use super::StoreError;
use tokio_postgres::GenericClient;

/// A message claimed under a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    /// Queue id of the message.
    pub message_id: String,
    /// The fence this claim holds; outcomes must present it.
    pub fence: i64,
}

/// What a write of one message was computed from (see
/// [`crate::queue::Guard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Queue id of the message.
    pub message_id: String,
    /// The row's revision when it was read.
    pub revision: i64,
    /// The fence of the claim held, for an attempt's outcome.
    pub fence: Option<i64>,
}

/// Whether a guarded write may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It may: the row is as read and the claim (if any) still holds, now
    /// settled.
    Holds,
    /// The claim's fence moved on: another node claimed the message.
    LeaseLost,
    /// The row was written or removed since it was read.
    Changed,
}

/// The database's clock in ms, unless the caller gives one.
const NOW: &str = "coalesce($1::bigint, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)";

fn claim_sql() -> String {
    format!(
        "WITH free AS (
            SELECT id FROM spool_message
            WHERE id = ANY($2) AND due_at_ms IS NOT NULL
              AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at_ms <= {NOW})
            ORDER BY id
            FOR UPDATE SKIP LOCKED
        )
        UPDATE spool_message AS m
        SET lease_owner = $3, lease_expires_at_ms = {NOW} + $4, fence = m.fence + 1
        FROM free WHERE m.id = free.id
        RETURNING m.id, m.fence"
    )
}

// Every statement that locks several rows of spool_message (renewal,
// release, the writer's transaction: `lock`) takes them in id order: two
// of them taking the same rows in different orders deadlock, and
// PostgreSQL then aborts one; when that was the writer's, every write of
// its batch failed (outcomes lost, so attempted again; acceptances
// refused). Claims skip locked rows and never wait.

fn renew_sql() -> String {
    format!(
        "WITH mine AS (
            SELECT m.id FROM spool_message AS m, unnest($2::text[], $5::bigint[]) AS c(id, fence)
            WHERE m.id = c.id AND m.fence = c.fence AND m.lease_owner = $3
            ORDER BY m.id
            FOR UPDATE OF m
        )
        UPDATE spool_message AS m SET lease_expires_at_ms = {NOW} + $4
        FROM mine WHERE m.id = mine.id
        RETURNING m.id"
    )
}

const LOCK: &str = "SELECT id FROM spool_message WHERE id = ANY($1) ORDER BY id FOR UPDATE";

const CHECK: &str = "\
UPDATE spool_message SET
    lease_owner = CASE WHEN $2::bigint IS NULL THEN lease_owner END,
    lease_expires_at_ms = CASE WHEN $2::bigint IS NULL THEN lease_expires_at_ms END
WHERE id = $1 AND ($2::bigint IS NULL OR fence = $2) AND revision = $3";

const SETTLE: &str = "\
UPDATE spool_message SET lease_owner = NULL, lease_expires_at_ms = NULL
WHERE id = $1 AND fence = $2";

const RELEASE: &str = "\
WITH given AS (
    SELECT m.id FROM spool_message AS m, unnest($1::text[], $2::bigint[]) AS c(id, fence)
    WHERE m.id = c.id AND m.fence = c.fence
    ORDER BY m.id
    FOR UPDATE OF m
)
UPDATE spool_message AS m SET lease_owner = NULL, lease_expires_at_ms = NULL
FROM given WHERE m.id = given.id";

const RELEASE_ALL: &str = "\
WITH given AS (
    SELECT id FROM spool_message WHERE lease_owner = $1 ORDER BY id FOR UPDATE
)
UPDATE spool_message AS m SET lease_owner = NULL, lease_expires_at_ms = NULL
FROM given WHERE m.id = given.id";

fn leased_sql() -> String {
    format!(
        "SELECT lease_owner, count(*) FROM spool_message
        WHERE lease_owner IS NOT NULL AND lease_expires_at_ms > {NOW}
        GROUP BY lease_owner ORDER BY lease_owner"
    )
}

fn err(e: tokio_postgres::Error) -> StoreError {
    super::err(e)
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Claims those of `ids` that are waiting and free for `owner`, leased for
/// `lease_ms`. Run it in its own transaction (or autocommit): the row
/// locks last until that commits.
pub async fn claim(
    client: &impl GenericClient,
    owner: &str,
    ids: &[String],
    lease_ms: u64,
    now: Option<u64>,
) -> Result<Vec<Claim>, StoreError> {
    let rows = client
        .query(&claim_sql(), &[&now.map(ms), &ids, &owner, &ms(lease_ms)])
        .await
        .map_err(err)?;
    let mut claims: Vec<Claim> = rows
        .iter()
        .map(|row| Claim {
            message_id: row.get(0),
            fence: row.get(1),
        })
        .collect();
    claims.sort();
    Ok(claims)
}

/// Extends the leases still held; returns the ids renewed (the others
/// were lost: expired and taken, or the message is gone).
pub async fn renew(
    client: &impl GenericClient,
    owner: &str,
    claims: &[Claim],
    lease_ms: u64,
    now: Option<u64>,
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<&str> = claims.iter().map(|c| c.message_id.as_str()).collect();
    let fences: Vec<i64> = claims.iter().map(|c| c.fence).collect();
    let rows = client
        .query(
            &renew_sql(),
            &[&now.map(ms), &ids, &owner, &ms(lease_ms), &fences],
        )
        .await
        .map_err(err)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Ends the lease of `claim` if it still holds; false (nothing changed)
/// when the fence moved on or the message is gone. The outcome of an
/// attempt is written in the same transaction only when this is true.
pub async fn settle(client: &impl GenericClient, claim: &Claim) -> Result<bool, StoreError> {
    let updated = client
        .execute(SETTLE, &[&claim.message_id, &claim.fence])
        .await
        .map_err(err)?;
    Ok(updated == 1)
}

/// Says whether the guarded write may go ahead (its row locked until the
/// transaction ends); with a claim that holds, ends its lease in the same
/// transaction as the write, so both or neither happen. One statement when
/// it may; a second says why not.
pub async fn check(txn: &deadpool_postgres::Transaction<'_>, guard: &Guard) -> Result<Check, StoreError> {
    let statement = txn.prepare_cached(CHECK).await.map_err(err)?;
    let updated = txn
        .execute(&statement, &[&guard.message_id, &guard.fence, &guard.revision])
        .await
        .map_err(err)?;
    if updated == 1 {
        return Ok(Check::Holds);
    }
    let fence = txn
        .query_opt(
            "SELECT fence FROM spool_message WHERE id = $1",
            &[&guard.message_id],
        )
        .await
        .map_err(err)?
        .map(|row| row.get::<_, i64>(0));
    Ok(match (fence, guard.fence) {
        (Some(now), Some(claimed)) if now != claimed => Check::LeaseLost,
        _ => Check::Changed,
    })
}

/// Locks the rows of `ids` that exist until the transaction ends, in id
/// order like every statement here that locks several rows: a transaction
/// that writes several rows takes them all first, so it never deadlocks
/// with a renewal or another node's writer.
pub async fn lock(txn: &deadpool_postgres::Transaction<'_>, ids: &[&str]) -> Result<(), StoreError> {
    let statement = txn.prepare_cached(LOCK).await.map_err(err)?;
    txn.query(&statement, &[&ids]).await.map_err(err)?;
    Ok(())
}

/// Gives claims back before their lease lapses (nothing was attempted).
pub async fn release(client: &impl GenericClient, claims: &[Claim]) -> Result<u64, StoreError> {
    let ids: Vec<&str> = claims.iter().map(|c| c.message_id.as_str()).collect();
    let fences: Vec<i64> = claims.iter().map(|c| c.fence).collect();
    client.execute(RELEASE, &[&ids, &fences]).await.map_err(err)
}

/// Gives up every lease of `owner` (a node stopping cleanly), so others
/// need not wait for them to expire. Fences stay: a late outcome of the
/// stopped node is still refused once another node claims the row.
pub async fn release_all(client: &impl GenericClient, owner: &str) -> Result<u64, StoreError> {
    client.execute(RELEASE_ALL, &[&owner]).await.map_err(err)
}

/// Live leases per node, by node name.
pub async fn leased(client: &impl GenericClient, now: Option<u64>) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = client.query(&leased_sql(), &[&now.map(ms)]).await.map_err(err)?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
        .collect())
}
