//! The shared backend: one PostgreSQL database for every node of a cluster
//! (SPEC section 8).
//!
//! The store runs its own small tokio runtime on a thread of its own: the
//! [`Store`] trait's reads are synchronous (the embedded store answers them
//! from redb in microseconds), so a read here hands the query to that
//! runtime and waits for the answer, which works from any caller, async or
//! not, without blocking the caller's runtime on its own work.
//!
//! Writes go to one writer task that gathers every write waiting, applies
//! them in one transaction and commits once (one WAL flush for all of them),
//! then answers each waiter: group commit, as in the embedded store.
//!
//! The spool is shared: any node reads the whole queue, and a node
//! attempts a message only under a lease it claimed ([`spool`]), renewed
//! while the attempt runs; the outcome is written under the claim's fence.
//! A message's row carries its due index key and counters, so the
//! scheduler's reads are index scans. New mail is announced on the `queue`
//! channel in the transaction that stores it, so every node can claim it at
//! once; a rescan every few seconds finds what a lost notification missed
//! and the work of a node whose leases lapsed.

#[cfg(test)]
pub mod scratch;
pub mod spool;

#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;

use super::{Commit, Page, Store, StoreError, Write};
use crate::config::objects::ObjectSet;
use crate::message::QueueId;
use crate::queue::{
    Claim, Due, DueKey, Guard, Lease, QuarantineEntry, QueueDepth, QueueEntry, QueueStatus, Revision,
    ShapeCount, Spool, SpoolCommit, SpoolError, SpoolIndex, SpoolNews, SpoolWrite,
};
use crate::trace::TraceEvent;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The schema, in order; each runs once, in a transaction, recorded in
/// `schema_version`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_shared_state.sql")),
    (2, include_str!("migrations/0002_spool.sql")),
    (3, include_str!("migrations/0003_spool_leases.sql")),
    (4, include_str!("migrations/0004_spool_revisions.sql")),
    (5, include_str!("migrations/0005_spool_parked.sql")),
];

/// Writes gathered per transaction at most: bounds the latency of one commit.
const MAX_BATCH: usize = 2048;

/// Message content gathered per transaction at most.
const MAX_BATCH_CONTENT: usize = 64 << 20;

/// Connections per node for reads, claims and renewals.
const POOL_SIZE: usize = 16;

/// How long a caller waits for a connection (or for one to be made)
/// before the store reports the database unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The NOTIFY channel object changes are announced on.
const OBJECTS_CHANNEL: &str = "objects";

/// The NOTIFY channel new mail is announced on.
const QUEUE_CHANNEL: &str = "queue";

/// How often a node reads the shared due index again, whatever it was
/// told: finds mail whose notification was lost and work whose lease lapsed.
const QUEUE_RESCAN: Duration = Duration::from_secs(5);

/// A NOTIFY payload stays under PostgreSQL's 8000-byte limit.
const NOTIFY_PAYLOAD: usize = 7000;

/// Serialises migrations between nodes starting at the same time.
const MIGRATION_LOCK: i64 = 0x0051_1ce0;

/// Serialises configuration changes (objects, DKIM keys) between nodes.
const CONFIGURATION_LOCK: i64 = 0x0051_1ce1;

/// How long a configuration change waits for another node's to finish.
const CONFIGURATION_WAIT: &str = "SET lock_timeout = '10s'";

/// The error with its causes: tokio-postgres says only "db error" at the
/// top and puts the server's message in the source.
fn err(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    StoreError(text)
}

/// A node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// The node's hostname (unique in a cluster).
    pub name: String,
    /// SMTP listener addresses, comma-separated.
    pub smtp: String,
    /// Admin API address.
    pub admin: String,
    /// sluice version.
    pub version: String,
    /// Last heartbeat, ms since the epoch (the database's clock).
    pub heartbeat_at_ms: u64,
    /// Age of the last heartbeat by the database's clock, ms.
    pub heartbeat_age_ms: u64,
}

struct Job {
    writes: Vec<Write>,
    /// Writes computed from a message as read (an outcome, an
    /// administrator's action): applied only while what it names holds.
    guard: Option<spool::Guard>,
    done: Option<oneshot::Sender<Result<(), SpoolError>>>,
}

/// The PostgreSQL store.
pub struct PostgresStore {
    runtime: tokio::runtime::Handle,
    pool: Pool,
    config: tokio_postgres::Config,
    writer: mpsc::UnboundedSender<Job>,
    /// This node's name in the cluster (lease owner, `accepted_by`).
    node: String,
    transactions: Arc<AtomicU64>,
    /// Dropped with the store: ends the runtime thread.
    _stop: std::sync::mpsc::Sender<()>,
}

impl PostgresStore {
    /// Connects to `url`, applies the migrations not yet applied, and starts
    /// the writer. `node` names this node in the cluster.
    pub fn connect(url: &str, node: &str) -> Result<Arc<Self>, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError(format!("store.url is not a PostgreSQL URL: {e}")))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (writer_running, writer_ended) = std::sync::mpsc::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("store-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("store-postgres")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = handle_tx.send(Err(err(error)));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                // Runs until the store is dropped; the runtime then ends here,
                // outside any async context, once the writer has committed
                // what was submitted before (its channel closed with the store).
                let _ = stopped.recv();
                let _ = writer_ended.recv_timeout(Duration::from_secs(10));
            })
            .map_err(err)?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| StoreError("the store's runtime did not start".into()))??;
        let pool_of = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(err)
        };
        let pool = pool_of(POOL_SIZE)?;
        // The writer's connection is its own: reads of busy deliveries
        // never make a commit (an acceptance, an outcome) wait for one.
        let writer_pool = pool_of(1)?;
        let (writer, jobs) = mpsc::unbounded_channel();
        let transactions = Arc::new(AtomicU64::new(0));
        let store = PostgresStore {
            runtime: runtime.clone(),
            pool: pool.clone(),
            config,
            writer,
            node: node.to_string(),
            transactions: transactions.clone(),
            _stop: stop,
        };
        store.block(migrate(pool.clone()))?;
        let writer_node = node.to_string();
        runtime.spawn(async move {
            write_loop(writer_pool, jobs, writer_node, transactions).await;
            drop(writer_running);
        });
        Ok(Arc::new(store))
    }

    /// Runs `work` on the store's runtime and waits for it: the sync
    /// reads of [`Store`] go through here.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = done.send(work.await);
        });
        wait.recv()
            .map_err(|_| StoreError("the PostgreSQL store stopped".into()))?
    }

    /// Runs one query on a pooled connection.
    fn query(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let pool = self.pool.clone();
        self.block(async move {
            let client = pool.get().await.map_err(err)?;
            let statement = client.prepare_cached(sql).await.map_err(err)?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as _).collect();
            client.query(&statement, &refs).await.map_err(err)
        })
    }

    /// Transactions committed by the writer since start: with concurrent
    /// writers, fewer than the commits asked for.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// The schema version applied.
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        let rows = self.query("SELECT max(version) FROM schema_version", vec![])?;
        Ok(rows
            .first()
            .and_then(|row| row.get::<_, Option<i32>>(0))
            .unwrap_or(0))
    }

    /// Registers this node (or refreshes its row after a restart).
    pub fn register_node(&self, smtp: &str, admin: &str, version: &str) -> Result<(), StoreError> {
        self.query(
            "INSERT INTO node (name, smtp, admin, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET smtp = EXCLUDED.smtp, admin = EXCLUDED.admin, \
             version = EXCLUDED.version, started_at = now(), heartbeat_at = now()",
            vec![
                Box::new(self.node.clone()),
                Box::new(smtp.to_string()),
                Box::new(admin.to_string()),
                Box::new(version.to_string()),
            ],
        )?;
        Ok(())
    }

    /// Tells the cluster this node is alive.
    pub fn heartbeat(&self) -> Result<(), StoreError> {
        self.query(
            "UPDATE node SET heartbeat_at = now() WHERE name = $1",
            vec![Box::new(self.node.clone())],
        )?;
        Ok(())
    }

    /// Every node sharing the database, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self.query(
            "SELECT name, smtp, admin, version, \
             (extract(epoch FROM heartbeat_at) * 1000)::bigint, \
             (extract(epoch FROM now() - heartbeat_at) * 1000)::bigint \
             FROM node ORDER BY name",
            vec![],
        )?;
        Ok(rows
            .iter()
            .map(|row| NodeRecord {
                name: row.get(0),
                smtp: row.get(1),
                admin: row.get(2),
                version: row.get(3),
                heartbeat_at_ms: row.get::<_, i64>(4).max(0) as u64,
                heartbeat_age_ms: row.get::<_, i64>(5).max(0) as u64,
            })
            .collect())
    }

    /// Recipients each node holds under a live lease, by node name.
    pub fn leased(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let pool = self.pool.clone();
        self.block(async move {
            let client = pool.get().await.map_err(err)?;
            spool::leased(&**client, None).await
        })
    }

    /// The objects' change counter (0 before the first change).
    pub fn objects_version(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT version FROM objects", vec![])?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0).max(0) as u64))
    }

    /// The objects' change counter as it moves: raised on each NOTIFY of a
    /// change by any node, and by a poll every `poll` in case a
    /// notification was missed (a dropped connection). Ends when the
    /// store is dropped.
    pub fn watch_objects(&self, poll: Duration) -> watch::Receiver<u64> {
        let (changed, receiver) = watch::channel(self.objects_version().unwrap_or(0));
        let (notes, heard) = mpsc::unbounded_channel();
        self.runtime
            .spawn(listen(self.config.clone(), OBJECTS_CHANNEL, poll, notes));
        self.runtime
            .spawn(follow_objects(self.pool.clone(), heard, changed));
        receiver
    }

    /// Gives up every lease this node holds (a clean stop), so the other
    /// nodes take its work over at once rather than when the leases lapse.
    pub fn release_leases(&self) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        let node = self.node.clone();
        self.block(async move {
            let client = pool.get().await.map_err(err)?;
            spool::release_all(&**client, &node).await
        })
    }
}

async fn migrate(pool: Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(err)?;
    let txn = client.transaction().await.map_err(err)?;
    // A second node starting at the same moment waits here, then finds
    // the migrations applied.
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (\
         version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(err)?;
    let applied: i32 = txn
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(err)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(StoreError(format!(
            "the database schema is version {applied}, newer than this build's {known}: upgrade this node"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        txn.batch_execute(sql)
            .await
            .map_err(|e| StoreError(format!("schema migration {version}: {e}")))?;
        txn.execute("INSERT INTO schema_version (version) VALUES ($1)", &[version])
            .await
            .map_err(err)?;
        tracing::info!(version, "applied schema migration");
    }
    txn.commit().await.map_err(err)
}

async fn write_loop(
    pool: Pool,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    node: String,
    transactions: Arc<AtomicU64>,
) {
    while let Some(first) = jobs.recv().await {
        let mut content = content_bytes(&first);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && content < MAX_BATCH_CONTENT {
            match jobs.try_recv() {
                Ok(job) => {
                    content += content_bytes(&job);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let result = apply(&pool, &mut batch, &node).await;
        match &result {
            Ok(_) => {
                transactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::error!(error = %error, writes = batch.len(), "store commit failed")
            }
        }
        for (n, job) in batch.into_iter().enumerate() {
            let outcome = match &result {
                Ok(refused) => match refused.iter().find(|(at, _)| *at == n) {
                    Some((_, refusal)) => Err(refusal.clone()),
                    None => Ok(()),
                },
                Err(error) => Err(SpoolError::from(error.clone())),
            };
            if let Some(done) = job.done {
                let _ = done.send(outcome);
            }
        }
    }
}

fn content_bytes(job: &Job) -> usize {
    job.writes.iter().map(Write::content_len).sum()
}

fn json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(err)
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Messages gathered for one multi-row insert.
#[derive(Default)]
struct NewMessages {
    ids: std::collections::HashSet<String>,
    id: Vec<String>,
    envelope: Vec<String>,
    received_at_ms: Vec<i64>,
    expires_at_ms: Vec<i64>,
    index: IndexColumns,
    content: Vec<Vec<u8>>,
}

/// The due index key and counters of messages, as columns.
#[derive(Default)]
struct IndexColumns {
    due_at_ms: Vec<Option<i64>>,
    destinations: Vec<String>,
    status: Vec<&'static str>,
    shape: Vec<String>,
    /// (destination, message) rows of parked messages.
    parked: ParkedRows,
}

/// Rows of `spool_parked`, as columns.
#[derive(Default)]
struct ParkedRows {
    destination: Vec<String>,
    message_id: Vec<String>,
}

impl ParkedRows {
    fn push(&mut self, id: &str, index: &SpoolIndex) {
        for destination in &index.parked {
            self.destination.push(destination.clone());
            self.message_id.push(id.to_string());
        }
    }

    /// Inserts these rows; the statement that wrote their messages took
    /// the messages' old rows out (a new message has none).
    async fn store(&self, txn: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        if self.destination.is_empty() {
            return Ok(());
        }
        let statement = txn
            .prepare_cached(
                // A message an update did not find (deleted meanwhile)
                // gets no rows.
                "INSERT INTO spool_parked (destination, message_id) \
                 SELECT k.destination, k.id FROM unnest($1::text[], $2::text[]) AS k(destination, id) \
                 JOIN spool_message AS m ON m.id = k.id ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(err)?;
        txn.execute(&statement, &[&self.destination, &self.message_id])
            .await
            .map_err(err)?;
        Ok(())
    }
}

impl IndexColumns {
    fn push(&mut self, index: &SpoolIndex) -> Result<(), StoreError> {
        self.due_at_ms.push(index.due_ms.map(ms));
        self.destinations.push(json(&index.destinations)?);
        self.status.push(
            index
                .status
                .map_or(QueueStatus::Queued.as_str(), QueueStatus::as_str),
        );
        self.shape.push(json(&index.domains)?);
        Ok(())
    }
}

impl NewMessages {
    fn push(&mut self, entry: QueueEntry, content: Vec<u8>) -> Result<(), StoreError> {
        let index = SpoolIndex::of(&entry);
        self.index.push(&index)?;
        self.index.parked.push(&entry.id.0, &index);
        self.envelope.push(json(&entry)?);
        self.received_at_ms.push(ms(entry.received_at_ms));
        self.expires_at_ms.push(ms(entry.expires_at_ms));
        self.ids.insert(entry.id.0.clone());
        self.id.push(entry.id.0);
        self.content.push(content);
        Ok(())
    }

    async fn flush(
        &mut self,
        txn: &deadpool_postgres::Transaction<'_>,
        node: &str,
    ) -> Result<(), StoreError> {
        if self.id.is_empty() {
            return Ok(());
        }
        let statement = txn
            .prepare_cached(
                // An id stored already (the upsert below) loses its parked rows
                // here; the current ones go in after.
                "WITH gone AS (DELETE FROM spool_parked WHERE message_id = ANY($1)) \
                 INSERT INTO spool_message (id, accepted_by, envelope, received_at_ms, expires_at_ms, \
                 due_at_ms, destinations, status, shape) \
                 SELECT id, $2, envelope::json, received, expires, due, destinations::json, status, shape::json \
                 FROM unnest($1::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
                 $7::text[], $8::text[], $9::text[]) \
                 AS t(id, envelope, received, expires, due, destinations, status, shape) \
                 ON CONFLICT (id) DO UPDATE SET envelope = EXCLUDED.envelope, \
                 due_at_ms = EXCLUDED.due_at_ms, destinations = EXCLUDED.destinations, \
                 status = EXCLUDED.status, shape = EXCLUDED.shape, revision = spool_message.revision + 1",
            )
            .await
            .map_err(err)?;
        txn.execute(
            &statement,
            &[
                &self.id,
                &node,
                &self.envelope,
                &self.received_at_ms,
                &self.expires_at_ms,
                &self.index.due_at_ms,
                &self.index.destinations,
                &self.index.status,
                &self.index.shape,
            ],
        )
        .await
        .map_err(err)?;
        let statement = txn
            .prepare_cached(
                "INSERT INTO spool_content (id, content) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content",
            )
            .await
            .map_err(err)?;
        txn.execute(&statement, &[&self.id, &self.content])
            .await
            .map_err(err)?;
        self.index.parked.store(txn).await?;
        *self = NewMessages::default();
        Ok(())
    }
}

/// Applies a batch in one transaction; returns the positions of the jobs
/// refused because what their guard names no longer held (nothing of
/// theirs written), with the reason.
async fn apply(pool: &Pool, batch: &mut [Job], node: &str) -> Result<Vec<(usize, SpoolError)>, StoreError> {
    let mut client = pool.get().await.map_err(err)?;
    let txn = client.transaction().await.map_err(err)?;
    let mut trace_at: Vec<i64> = Vec::new();
    let mut trace_doc: Vec<String> = Vec::new();
    // New messages of the batch go in as one statement per table; any
    // other write is applied after them, in the order it came.
    let mut new_messages = NewMessages::default();
    let mut refused = Vec::new();
    let mut arrivals = Vec::new();
    let mut written: Vec<&str> = batch.iter().flat_map(rows_written).collect();
    if !written.is_empty() {
        written.sort_unstable();
        written.dedup();
        spool::lock(&txn, &written).await?;
    }
    for (n, job) in batch.iter_mut().enumerate() {
        if let Some(guard) = &job.guard {
            // Writes of earlier jobs to the same row come first.
            new_messages.flush(&txn, node).await?;
            let refusal = match spool::check(&txn, guard).await? {
                spool::Check::Holds => None,
                spool::Check::LeaseLost => Some(SpoolError::LeaseLost),
                spool::Check::Changed => Some(SpoolError::Changed),
            };
            if let Some(refusal) = refusal {
                refused.push((n, refusal));
                job.writes.clear();
                continue;
            }
        }
        for write in job.writes.drain(..) {
            // A copy is stored whole here (rows go in one statement per
            // table; the body is not shared).
            let write = match write {
                Write::Spool(SpoolWrite::EnqueueCopy { entry, content, .. }) => {
                    Write::Spool(SpoolWrite::Enqueue(entry, content.to_vec()))
                }
                write => write,
            };
            if !matches!(
                write,
                Write::Spool(SpoolWrite::Enqueue(..) | SpoolWrite::Trace(_)) | Write::Trace(_)
            ) {
                new_messages.flush(&txn, node).await?;
            }
            match write {
                Write::Objects(set) => raise_configuration(&txn, Some(&set)).await?,
                // Other nodes hear of every new message that is due.
                Write::Spool(SpoolWrite::Enqueue(entry, body)) => {
                    if new_messages.ids.contains(&entry.id.0) {
                        new_messages.flush(&txn, node).await?;
                    }
                    let index = SpoolIndex::of(&entry);
                    if let Some(due_ms) = index.due_ms {
                        arrivals.push((due_ms, entry.id.0.clone(), index.destinations));
                    }
                    new_messages.push(entry, body)?;
                }
                Write::Spool(SpoolWrite::EnqueueCopy { .. }) => unreachable!("copies are made whole above"),
                Write::Spool(SpoolWrite::Update(entry)) => {
                    // An update racing a delete must not resurrect the message.
                    let statement = txn
                        .prepare_cached(
                            // The parked rows are replaced: the old ones go here, the
                            // current ones after.
                            "WITH gone AS (DELETE FROM spool_parked WHERE message_id = $1) \
                             UPDATE spool_message SET envelope = $2::text::json, expires_at_ms = $3, \
                             due_at_ms = $4, destinations = $5::text::json, status = $6, shape = $7::text::json, \
                             revision = revision + 1 WHERE id = $1",
                        )
                        .await
                        .map_err(err)?;
                    let mut index = IndexColumns::default();
                    let spool_index = SpoolIndex::of(&entry);
                    index.push(&spool_index)?;
                    index.parked.push(&entry.id.0, &spool_index);
                    txn.execute(
                        &statement,
                        &[
                            &entry.id.0,
                            &json(&entry)?,
                            &ms(entry.expires_at_ms),
                            &index.due_at_ms[0],
                            &index.destinations[0],
                            &index.status[0],
                            &index.shape[0],
                        ],
                    )
                    .await
                    .map_err(err)?;
                    index.parked.store(&txn).await?;
                }
                Write::Spool(SpoolWrite::Remove(id)) => {
                    let statement = txn
                        .prepare_cached("DELETE FROM spool_message WHERE id = $1")
                        .await
                        .map_err(err)?;
                    txn.execute(&statement, &[&id.0]).await.map_err(err)?;
                }
                Write::Trace(events) | Write::Spool(SpoolWrite::Trace(events)) => {
                    for event in events {
                        trace_at.push(ms(event.at_ms));
                        trace_doc.push(json(&event)?);
                    }
                }
                Write::Spool(SpoolWrite::Quarantine(entry, body)) => {
                    let statement = txn
                        .prepare_cached(
                            "INSERT INTO quarantine_entry (id, doc, content) VALUES ($1, $2::text::json, $3) \
                             ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, content = EXCLUDED.content",
                        )
                        .await
                        .map_err(err)?;
                    txn.execute(&statement, &[&entry.entry.id.0, &json(&entry)?, &body])
                        .await
                        .map_err(err)?;
                }
                Write::Spool(SpoolWrite::Unquarantine(id)) => {
                    let statement = txn
                        .prepare_cached("DELETE FROM quarantine_entry WHERE id = $1")
                        .await
                        .map_err(err)?;
                    txn.execute(&statement, &[&id.0]).await.map_err(err)?;
                }
                Write::PruneTrace(before_ms) => {
                    // Events of this batch written before the prune are pruned too.
                    insert_trace(&txn, &mut trace_at, &mut trace_doc).await?;
                    let statement = txn
                        .prepare_cached("DELETE FROM trace_event WHERE at_ms < $1")
                        .await
                        .map_err(err)?;
                    txn.execute(&statement, &[&ms(before_ms)]).await.map_err(err)?;
                }
                Write::TlsState { key, value } => match value {
                    Some(value) => {
                        let statement = txn
                            .prepare_cached(
                                "INSERT INTO tls_state (key, value) VALUES ($1, $2) \
                                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            )
                            .await
                            .map_err(err)?;
                        txn.execute(&statement, &[&key, &value]).await.map_err(err)?;
                    }
                    None => {
                        let statement = txn
                            .prepare_cached("DELETE FROM tls_state WHERE key = $1")
                            .await
                            .map_err(err)?;
                        txn.execute(&statement, &[&key]).await.map_err(err)?;
                    }
                },
                Write::DkimKeys(keys) => {
                    let statement = txn
                        .prepare_cached(
                            "INSERT INTO dkim_keys (singleton, doc) VALUES (true, $1::text::json) \
                             ON CONFLICT (singleton) DO UPDATE SET doc = EXCLUDED.doc",
                        )
                        .await
                        .map_err(err)?;
                    txn.execute(&statement, &[&json(&keys)?]).await.map_err(err)?;
                    // Keys are configuration too: every node reloads them
                    // with the objects.
                    raise_configuration(&txn, None).await?;
                }
            }
        }
    }
    new_messages.flush(&txn, node).await?;
    insert_trace(&txn, &mut trace_at, &mut trace_doc).await?;
    // Delivered to every listener when (and only if) this commits.
    for payload in arrival_notes(node, &arrivals)? {
        txn.execute("SELECT pg_notify($1, $2)", &[&QUEUE_CHANNEL, &payload])
            .await
            .map_err(err)?;
    }
    txn.commit().await.map_err(err)?;
    Ok(refused)
}

/// The queued messages whose rows `job` changes (its guard's, those it
/// updates or removes): the writer locks them all first, in order.
fn rows_written(job: &Job) -> impl Iterator<Item = &str> {
    let guarded = job.guard.iter().map(|guard| guard.message_id.as_str());
    let changed = job.writes.iter().filter_map(|write| match write {
        Write::Spool(SpoolWrite::Update(entry)) => Some(entry.id.0.as_str()),
        Write::Spool(SpoolWrite::Remove(id)) => Some(id.0.as_str()),
        _ => None,
    });
    guarded.chain(changed)
}

/// One announcement of new mail: who stored it, and its due index rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct ArrivalNote {
    node: String,
    due: Vec<(u64, String, Vec<String>)>,
}

/// The announcements of `arrivals`, each under the payload limit.
fn arrival_notes(node: &str, arrivals: &[(u64, String, Vec<String>)]) -> Result<Vec<String>, StoreError> {
    let mut notes = Vec::new();
    let mut note = ArrivalNote {
        node: node.to_string(),
        due: Vec::new(),
    };
    let mut size = node.len() + 32;
    for (due_ms, id, destinations) in arrivals {
        let row_size = id.len() + destinations.iter().map(|d| d.len() + 3).sum::<usize>() + 32;
        if row_size + node.len() + 32 > NOTIFY_PAYLOAD {
            // Too big to announce: the next rescan finds it.
            continue;
        }
        if size + row_size > NOTIFY_PAYLOAD {
            notes.push(json(&note)?);
            note.due.clear();
            size = node.len() + 32;
        }
        note.due.push((*due_ms, id.clone(), destinations.clone()));
        size += row_size;
    }
    if !note.due.is_empty() {
        notes.push(json(&note)?);
    }
    Ok(notes)
}

/// The trace events gathered so far, in one statement.
/// Raises the configuration's counter (objects and DKIM keys share it),
/// replacing the objects with `objects` when given, and tells every node;
/// the notification is delivered when (and only if) the transaction
/// commits.
async fn raise_configuration(
    txn: &deadpool_postgres::Transaction<'_>,
    objects: Option<&ObjectSet>,
) -> Result<(), StoreError> {
    let sql = match objects {
        Some(_) => {
            "INSERT INTO objects (singleton, doc, version) VALUES (true, $1::text::json, 1) \
             ON CONFLICT (singleton) DO UPDATE SET doc = EXCLUDED.doc, version = objects.version + 1 \
             RETURNING version"
        }
        None => {
            "INSERT INTO objects (singleton, doc, version) VALUES (true, $1::text::json, 1) \
             ON CONFLICT (singleton) DO UPDATE SET version = objects.version + 1 RETURNING version"
        }
    };
    let statement = txn.prepare_cached(sql).await.map_err(err)?;
    let doc = json(objects.unwrap_or(&ObjectSet::default()))?;
    let version: i64 = txn.query_one(&statement, &[&doc]).await.map_err(err)?.get(0);
    txn.execute(
        "SELECT pg_notify($1, $2)",
        &[&OBJECTS_CHANNEL, &version.to_string()],
    )
    .await
    .map_err(err)?;
    Ok(())
}

async fn insert_trace(
    txn: &deadpool_postgres::Transaction<'_>,
    at_ms: &mut Vec<i64>,
    doc: &mut Vec<String>,
) -> Result<(), StoreError> {
    if at_ms.is_empty() {
        return Ok(());
    }
    let statement = txn
        .prepare_cached(
            "INSERT INTO trace_event (at_ms, doc) \
             SELECT at_ms, doc::json FROM unnest($1::bigint[], $2::text[]) AS t(at_ms, doc)",
        )
        .await
        .map_err(err)?;
    txn.execute(&statement, &[&*at_ms, &*doc]).await.map_err(err)?;
    at_ms.clear();
    doc.clear();
    Ok(())
}

/// Keeps a LISTEN connection on `channel` open (reconnecting after a
/// failure) and passes on each notification's payload, and `None` ("look
/// again": at each (re)connection and every `poll`, for what a lost
/// notification missed). Ends when `notes` is closed.
async fn listen(
    config: tokio_postgres::Config,
    channel: &'static str,
    poll: Duration,
    notes: mpsc::UnboundedSender<Option<String>>,
) {
    loop {
        if notes.is_closed() {
            return;
        }
        let (client, mut connection) = match config.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(channel, error = %error, "cannot listen for changes; polling");
                tokio::time::sleep(poll.min(Duration::from_secs(1))).await;
                let _ = notes.send(None);
                continue;
            }
        };
        let (heard_tx, mut heard) = mpsc::unbounded_channel();
        // The connection delivers notifications only while it is polled.
        let driver = tokio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                        let _ = heard_tx.send(note.payload().to_string());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(channel, error = %error, "change listener lost its connection");
                        return;
                    }
                    None => return,
                }
            }
        });
        if let Err(error) = client.batch_execute(&format!("LISTEN {channel}")).await {
            tracing::warn!(channel, error = %error, "cannot listen for changes");
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Changes made while no one listened.
        let _ = notes.send(None);
        let mut ticker = tokio::time::interval(poll);
        ticker.tick().await;
        loop {
            tokio::select! {
                note = heard.recv() => match note {
                    Some(payload) => { let _ = notes.send(Some(payload)); }
                    None => break,
                },
                _ = ticker.tick() => { let _ = notes.send(None); }
                _ = notes.closed() => {
                    driver.abort();
                    return;
                }
            }
        }
        driver.abort();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publishes the objects' counter as the listener hears of changes: the
/// notified value, or the stored one when told to look again.
async fn follow_objects(
    pool: Pool,
    mut heard: mpsc::UnboundedReceiver<Option<String>>,
    changed: watch::Sender<u64>,
) {
    let publish = |version: u64| {
        changed.send_if_modified(|current| {
            let newer = version > *current;
            if newer {
                *current = version;
            }
            newer
        })
    };
    loop {
        let note = tokio::select! {
            note = heard.recv() => note,
            _ = changed.closed() => return,
        };
        match note {
            None => return,
            Some(Some(payload)) => {
                publish(payload.parse::<u64>().unwrap_or(0));
            }
            Some(None) => {
                let read = async {
                    let client = pool.get().await.map_err(err)?;
                    let row = client
                        .query_opt("SELECT version FROM objects", &[])
                        .await
                        .map_err(err)?;
                    Ok::<u64, StoreError>(row.map_or(0, |row| row.get::<_, i64>(0).max(0) as u64))
                };
                if let Ok(version) = read.await {
                    publish(version);
                }
            }
        }
    }
}

/// Turns what the listener hears on the queue channel into news for the
/// queue: other nodes' new mail, or a rescan.
async fn follow_queue(
    node: String,
    mut heard: mpsc::UnboundedReceiver<Option<String>>,
    news: mpsc::UnboundedSender<SpoolNews>,
) {
    loop {
        let note = tokio::select! {
            note = heard.recv() => note,
            _ = news.closed() => return,
        };
        let item = match note {
            None => return,
            Some(None) => SpoolNews::Rescan,
            Some(Some(payload)) => match serde_json::from_str::<ArrivalNote>(&payload) {
                // This node scheduled its own mail as it stored it.
                Ok(note) if note.node == node => continue,
                Ok(note) => SpoolNews::Arrived(
                    note.due
                        .into_iter()
                        .map(|(due_ms, id, destinations)| Due {
                            due_ms,
                            id: QueueId(id),
                            destinations,
                        })
                        .collect(),
                ),
                Err(_) => SpoolNews::Rescan,
            },
        };
        if news.send(item).is_err() {
            return;
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, key: &str, doc: &str) -> Option<T> {
    match serde_json::from_str(doc) {
        Ok(item) => Some(item),
        Err(error) => {
            tracing::error!(what, key, error = %error, "unreadable row kept in store");
            None
        }
    }
}

/// The trace cursor: the (at_ms, id) of the last event, as 32 hex digits.
fn trace_cursor(at_ms: i64, id: i64) -> String {
    format!("{:016x}{:016x}", at_ms as u64, id as u64)
}

fn parse_trace_cursor(cursor: &str) -> Result<(i64, i64), StoreError> {
    let bad = || StoreError("bad trace cursor".into());
    if cursor.len() != 32 || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let at = u64::from_str_radix(&cursor[..16], 16).map_err(|_| bad())?;
    let id = u64::from_str_radix(&cursor[16..], 16).map_err(|_| bad())?;
    Ok((at as i64, id as i64))
}

impl PostgresStore {
    fn keyed_page<T: serde::de::DeserializeOwned>(
        &self,
        sql: &'static str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError> {
        let after = after.unwrap_or("").to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>> =
            vec![Box::new(after), Box::new(limit)];
        let rows = self.query(sql, params)?;
        let mut items = Vec::new();
        let mut last = None;
        for row in &rows {
            let key: String = row.get(0);
            let doc: String = row.get(1);
            if let Some(item) = decode("page", &key, &doc) {
                items.push(item);
            }
            last = Some(key);
        }
        let next = if rows.len() as i64 >= limit { last } else { None };
        Ok(Page { items, next })
    }
}

impl Store for PostgresStore {
    fn commit(&self, writes: Vec<Write>) -> Commit {
        let (done, wait) = oneshot::channel();
        let sent = self.writer.send(Job {
            writes,
            guard: None,
            done: Some(done),
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError("store writer stopped".into()))?;
            Ok(wait
                .await
                .map_err(|_| StoreError("store writer stopped".into()))??)
        })
    }

    fn submit(&self, writes: Vec<Write>) {
        let _ = self.writer.send(Job {
            writes,
            guard: None,
            done: None,
        });
    }

    fn objects(&self) -> Result<ObjectSet, StoreError> {
        let rows = self.query("SELECT doc::text FROM objects", vec![])?;
        match rows.first() {
            Some(row) => serde_json::from_str(row.get(0)).map_err(err),
            None => Ok(ObjectSet::default()),
        }
    }

    fn dkim_keys(&self) -> Result<Vec<crate::auth::keys::StoredKey>, StoreError> {
        let rows = self.query("SELECT doc::text FROM dkim_keys", vec![])?;
        match rows.first() {
            Some(row) => serde_json::from_str(row.get(0)).map_err(err),
            None => Ok(Vec::new()),
        }
    }

    fn hold_configuration(&self) -> Result<crate::store::ConfigurationHold, StoreError> {
        let pool = self.pool.clone();
        let client = self.block(async move {
            let client = pool.get().await.map_err(err)?;
            client.batch_execute(CONFIGURATION_WAIT).await.map_err(err)?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&CONFIGURATION_LOCK])
                .await
                .map_err(|e| {
                    StoreError(format!(
                        "another node is changing the configuration: {}",
                        err(e).0
                    ))
                })?;
            Ok(client)
        })?;
        // The lock lives as long as its session: the connection leaves the
        // pool and closes when the hold is dropped, which ends the lock
        // however the holder stops.
        Ok(crate::store::ConfigurationHold::new(
            deadpool_postgres::Object::take(client),
        ))
    }

    fn trace_events(&self, since_ms: u64) -> Result<Vec<TraceEvent>, StoreError> {
        let rows = self.query(
            "SELECT id, doc::text FROM trace_event WHERE at_ms >= $1 ORDER BY at_ms, id",
            vec![Box::new(ms(since_ms))],
        )?;
        Ok(rows
            .iter()
            .filter_map(|row| decode("trace event", &row.get::<_, i64>(0).to_string(), row.get(1)))
            .collect())
    }

    fn trace_page(
        &self,
        since_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<TraceEvent>, StoreError> {
        let (after_at, after_id) = match after {
            Some(cursor) => parse_trace_cursor(cursor)?,
            None => (i64::MIN, i64::MIN),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "SELECT at_ms, id, doc::text FROM trace_event \
             WHERE at_ms >= $1 AND (at_ms, id) > ($2, $3) ORDER BY at_ms, id LIMIT $4",
            vec![
                Box::new(ms(since_ms)),
                Box::new(after_at),
                Box::new(after_id),
                Box::new(limit),
            ],
        )?;
        let mut items = Vec::new();
        let mut last = None;
        for row in &rows {
            let (at, id): (i64, i64) = (row.get(0), row.get(1));
            if let Some(event) = decode("trace event", &id.to_string(), row.get(2)) {
                items.push(event);
            }
            last = Some(trace_cursor(at, id));
        }
        let next = if rows.len() as i64 >= limit { last } else { None };
        Ok(Page { items, next })
    }

    fn tls_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = self.query(
            "SELECT key, value FROM tls_state WHERE starts_with(key, $1) ORDER BY key",
            vec![Box::new(prefix.to_string())],
        )?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

/// The due index, cluster-wide: waiting messages no other node holds
/// under a live lease (this node's own, from before a restart, included).
const DUE_BEFORE: &str = "\
SELECT due_at_ms, id, destinations::text FROM spool_message
WHERE due_at_ms IS NOT NULL AND due_at_ms < $1 AND (due_at_ms, id) >= ($2, $3)
  AND (lease_owner IS NULL OR lease_owner = $5
       OR lease_expires_at_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
ORDER BY due_at_ms, id LIMIT $4";

impl Spool for PostgresStore {
    fn commit_spool(&self, writes: Vec<SpoolWrite>) -> SpoolCommit {
        let committed = self.commit(writes.into_iter().map(Write::Spool).collect());
        Box::pin(async move { Ok(committed.await?) })
    }

    fn submit_spool(&self, writes: Vec<SpoolWrite>) {
        self.submit(writes.into_iter().map(Write::Spool).collect());
    }

    fn entry(&self, id: &QueueId) -> Result<Option<QueueEntry>, SpoolError> {
        let rows = self.query(
            "SELECT id, envelope::text FROM spool_message WHERE id = $1",
            vec![Box::new(id.0.clone())],
        )?;
        Ok(rows
            .first()
            .and_then(|row| decode("queue entry", row.get(0), row.get(1))))
    }

    fn entry_revised(&self, id: &QueueId) -> Result<Option<(QueueEntry, Revision)>, SpoolError> {
        let rows = self.query(
            "SELECT id, envelope::text, revision FROM spool_message WHERE id = $1",
            vec![Box::new(id.0.clone())],
        )?;
        Ok(rows.first().and_then(|row| {
            let entry = decode("queue entry", row.get(0), row.get(1))?;
            Some((entry, Revision(row.get::<_, i64>(2).max(0) as u64)))
        }))
    }

    fn due_before(&self, before_ms: u64, from: &DueKey, limit: usize) -> Result<Vec<Due>, SpoolError> {
        let rows = self.query(
            DUE_BEFORE,
            vec![
                Box::new(ms(before_ms)),
                Box::new(ms(from.0)),
                Box::new(from.1 .0.clone()),
                Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
                Box::new(self.node.clone()),
            ],
        )?;
        Ok(rows
            .iter()
            .map(|row| Due {
                due_ms: row.get::<_, i64>(0).max(0) as u64,
                id: QueueId(row.get(1)),
                destinations: decode("due index row", row.get(1), row.get(2)).unwrap_or_default(),
            })
            .collect())
    }

    fn parked(
        &self,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QueueId>, SpoolError> {
        let rows = self.query(
            "SELECT message_id FROM spool_parked WHERE destination = $1 AND message_id > $2 \
             ORDER BY message_id LIMIT $3",
            vec![
                Box::new(destination.to_string()),
                Box::new(after.unwrap_or_default().to_string()),
                Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )?;
        Ok(rows.iter().map(|row| QueueId(row.get(0))).collect())
    }

    fn parked_destinations(&self) -> Result<Vec<(String, u64)>, SpoolError> {
        let rows = self.query(
            "SELECT destination, count(*) FROM spool_parked GROUP BY destination ORDER BY destination",
            vec![],
        )?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    fn shape(&self) -> Result<Vec<ShapeCount>, SpoolError> {
        let rows = self.query(
            "SELECT d->>0, received_at_ms / 60000, sum((d->>1)::bigint)::bigint \
             FROM spool_message, json_array_elements(shape) AS d \
             GROUP BY 1, 2 ORDER BY 1, 2",
            vec![],
        )?;
        Ok(rows
            .iter()
            .map(|row| ShapeCount {
                domain: row.get(0),
                received_minute: row.get::<_, i64>(1).max(0) as u64,
                recipients: row.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    fn depth(&self) -> Result<QueueDepth, SpoolError> {
        let rows = self.query(
            "SELECT status, count(*) FROM spool_message GROUP BY status",
            vec![],
        )?;
        let mut depth = QueueDepth::default();
        for row in &rows {
            let count = row.get::<_, i64>(1).max(0) as u64;
            match row.get::<_, &str>(0) {
                "deferred" => depth.deferred += count,
                "held" => depth.held += count,
                _ => depth.queued += count,
            }
            depth.total += count;
        }
        Ok(depth)
    }

    fn quarantined(&self, id: &QueueId) -> Result<Option<QuarantineEntry>, SpoolError> {
        let rows = self.query(
            "SELECT id, doc::text FROM quarantine_entry WHERE id = $1",
            vec![Box::new(id.0.clone())],
        )?;
        Ok(rows
            .first()
            .and_then(|row| decode("quarantine entry", row.get(0), row.get(1))))
    }

    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let rows = self.query(
            "SELECT content FROM spool_content WHERE id = $1",
            vec![Box::new(id.0.clone())],
        )?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, SpoolError> {
        let rows = self.query("SELECT id, doc::text FROM quarantine_entry ORDER BY id", vec![])?;
        Ok(rows
            .iter()
            .filter_map(|row| decode("quarantine entry", row.get(0), row.get(1)))
            .collect())
    }

    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let rows = self.query(
            "SELECT content FROM quarantine_entry WHERE id = $1",
            vec![Box::new(id.0.clone())],
        )?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, SpoolError> {
        self.keyed_page(
            "SELECT id, envelope::text FROM spool_message WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        .map_err(SpoolError::from)
    }

    fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<QuarantineEntry>, SpoolError> {
        self.keyed_page(
            "SELECT id, doc::text FROM quarantine_entry WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        .map_err(SpoolError::from)
    }

    fn claim(&self, ids: &[QueueId], lease: &Lease) -> Result<Vec<Claim>, SpoolError> {
        let pool = self.pool.clone();
        let ids: Vec<String> = ids.iter().map(|id| id.0.clone()).collect();
        let lease = lease.clone();
        let claims = self.block(async move {
            let client = pool.get().await.map_err(err)?;
            spool::claim(&**client, &lease.owner, &ids, lease.for_ms, None).await
        })?;
        Ok(claims
            .into_iter()
            .map(|claim| Claim {
                id: QueueId(claim.message_id),
                fence: claim.fence.max(0) as u64,
            })
            .collect())
    }

    fn renew(&self, claims: &[Claim], lease: &Lease) -> Result<Vec<QueueId>, SpoolError> {
        let pool = self.pool.clone();
        let claims: Vec<spool::Claim> = claims.iter().map(row_claim).collect();
        let lease = lease.clone();
        let held = self.block(async move {
            let client = pool.get().await.map_err(err)?;
            spool::renew(&**client, &lease.owner, &claims, lease.for_ms, None).await
        })?;
        Ok(held.into_iter().map(QueueId).collect())
    }

    fn release(&self, claims: &[Claim]) {
        let pool = self.pool.clone();
        let claims: Vec<spool::Claim> = claims.iter().map(row_claim).collect();
        let released = self.block(async move {
            let client = pool.get().await.map_err(err)?;
            spool::release(&**client, &claims).await
        });
        if let Err(error) = released {
            // The lease lapses by itself.
            tracing::warn!(error = %error, "cannot give back a claim");
        }
    }

    fn commit_guarded(&self, guard: &Guard, writes: Vec<SpoolWrite>) -> SpoolCommit {
        let (done, wait) = oneshot::channel();
        let sent = self.writer.send(Job {
            writes: writes.into_iter().map(Write::Spool).collect(),
            guard: Some(spool::Guard {
                message_id: guard.id.0.clone(),
                revision: i64::try_from(guard.revision.0).unwrap_or(i64::MAX),
                fence: guard.claim.as_ref().map(|claim| row_claim(claim).fence),
            }),
            done: Some(done),
        });
        let stopped = || SpoolError::Failed("store writer stopped".into());
        Box::pin(async move {
            sent.map_err(|_| stopped())?;
            wait.await.map_err(|_| stopped())?
        })
    }

    fn news(&self) -> Option<mpsc::UnboundedReceiver<SpoolNews>> {
        let (notes, heard) = mpsc::unbounded_channel();
        let (news, receiver) = mpsc::unbounded_channel();
        self.runtime
            .spawn(listen(self.config.clone(), QUEUE_CHANNEL, QUEUE_RESCAN, notes));
        self.runtime.spawn(follow_queue(self.node.clone(), heard, news));
        Some(receiver)
    }
}

fn row_claim(claim: &Claim) -> spool::Claim {
    spool::Claim {
        message_id: claim.id.0.clone(),
        fence: i64::try_from(claim.fence).unwrap_or(i64::MAX),
    }
}
