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
//! The queue methods of today's [`Store`] are a minimal path (envelope and
//! content per message, owned by the node that accepted it): the shared
//! spool, with per-recipient leases, is the `spool_*` schema of
//! migration 2 and the statements in [`spool`], waiting for the queue's
//! `Spool` interface.

pub mod scratch;
pub mod spool;

#[cfg(test)]
mod tests;

use super::{Commit, Page, Store, StoreError, Write};
use crate::config::objects::ObjectSet;
use crate::message::QueueId;
use crate::queue::{
    Due, DueKey, QuarantineEntry, QueueDepth, QueueEntry, ShapeCount, Spool, SpoolCommit, SpoolError,
    SpoolIndex, SpoolWrite,
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
];

/// Writes gathered per transaction at most: bounds the latency of one commit.
const MAX_BATCH: usize = 2048;

/// Message content gathered per transaction at most.
const MAX_BATCH_CONTENT: usize = 64 << 20;

/// Connections per node: the writer, reads, the change listener.
const POOL_SIZE: usize = 8;

/// How long a caller waits for a connection (or for one to be made)
/// before the store reports the database unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The NOTIFY channel object changes are announced on.
const OBJECTS_CHANNEL: &str = "objects";

/// Serialises migrations between nodes starting at the same time.
const MIGRATION_LOCK: i64 = 0x0051_1ce0;

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
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The PostgreSQL store.
pub struct PostgresStore {
    runtime: tokio::runtime::Handle,
    pool: Pool,
    config: tokio_postgres::Config,
    writer: mpsc::UnboundedSender<Job>,
    /// The node whose queue the minimal queue path reads.
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
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(err)?;
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
            write_loop(pool, jobs, writer_node, transactions).await;
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
            spool::leased(&**client, crate::trace::now_ms()).await
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
        self.runtime.spawn(listen_for_objects(
            self.config.clone(),
            self.pool.clone(),
            changed,
            poll,
        ));
        receiver
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
            Ok(()) => {
                transactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::error!(error = %error, writes = batch.len(), "store commit failed")
            }
        }
        for job in batch {
            if let Some(done) = job.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn content_bytes(job: &Job) -> usize {
    job.writes
        .iter()
        .map(|write| match write {
            Write::Spool(SpoolWrite::Enqueue(_, content) | SpoolWrite::Quarantine(_, content)) => {
                content.len()
            }
            Write::Spool(SpoolWrite::EnqueueCopy { content, .. }) => content.len(),
            _ => 0,
        })
        .sum()
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
    content: Vec<Vec<u8>>,
}

impl NewMessages {
    fn push(&mut self, entry: QueueEntry, content: Vec<u8>) -> Result<(), StoreError> {
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
                "INSERT INTO spool_message (id, accepted_by, envelope, received_at_ms, expires_at_ms) \
                 SELECT id, $2, envelope::json, received, expires \
                 FROM unnest($1::text[], $3::text[], $4::bigint[], $5::bigint[]) \
                 AS t(id, envelope, received, expires) \
                 ON CONFLICT (id) DO UPDATE SET envelope = EXCLUDED.envelope",
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
        *self = NewMessages::default();
        Ok(())
    }
}

async fn apply(pool: &Pool, batch: &mut [Job], node: &str) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(err)?;
    let txn = client.transaction().await.map_err(err)?;
    let mut trace_at: Vec<i64> = Vec::new();
    let mut trace_doc: Vec<String> = Vec::new();
    // New messages of the batch go in as one statement per table; any
    // other write is applied after them, in the order it came.
    let mut new_messages = NewMessages::default();
    for job in batch.iter_mut() {
        for write in job.writes.drain(..) {
            if !matches!(
                write,
                Write::Spool(SpoolWrite::Enqueue(..) | SpoolWrite::EnqueueCopy { .. } | SpoolWrite::Trace(_))
                    | Write::Trace(_)
            ) {
                new_messages.flush(&txn, node).await?;
            }
            match write {
                Write::Objects(set) => {
                    let statement = txn
                        .prepare_cached(
                            "INSERT INTO objects (singleton, doc, version) VALUES (true, $1::text::json, 1) \
                             ON CONFLICT (singleton) DO UPDATE \
                             SET doc = EXCLUDED.doc, version = objects.version + 1 RETURNING version",
                        )
                        .await
                        .map_err(err)?;
                    let version: i64 = txn
                        .query_one(&statement, &[&json(&set)?])
                        .await
                        .map_err(err)?
                        .get(0);
                    // Delivered to every listener when (and only if) this commits.
                    txn.execute(
                        "SELECT pg_notify($1, $2)",
                        &[&OBJECTS_CHANNEL, &version.to_string()],
                    )
                    .await
                    .map_err(err)?;
                }
                Write::Spool(SpoolWrite::Enqueue(entry, body)) => {
                    if new_messages.ids.contains(&entry.id.0) {
                        new_messages.flush(&txn, node).await?;
                    }
                    new_messages.push(entry, body)?;
                }
                // Each copy is stored whole here (rows go in one statement
                // per table; the body is not shared).
                Write::Spool(SpoolWrite::EnqueueCopy { entry, content, .. }) => {
                    if new_messages.ids.contains(&entry.id.0) {
                        new_messages.flush(&txn, node).await?;
                    }
                    new_messages.push(entry, content.to_vec())?;
                }
                Write::Spool(SpoolWrite::Update(entry)) => {
                    // An update racing a delete must not resurrect the message.
                    let statement = txn
                        .prepare_cached(
                            "UPDATE spool_message SET envelope = $2::text::json, expires_at_ms = $3 WHERE id = $1",
                        )
                        .await
                        .map_err(err)?;
                    txn.execute(
                        &statement,
                        &[&entry.id.0, &json(&entry)?, &ms(entry.expires_at_ms)],
                    )
                    .await
                    .map_err(err)?;
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
                }
            }
        }
    }
    new_messages.flush(&txn, node).await?;
    insert_trace(&txn, &mut trace_at, &mut trace_doc).await?;
    txn.commit().await.map_err(err)
}

/// The trace events gathered so far, in one statement.
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

/// Keeps a LISTEN connection open (reconnecting after a failure) and
/// polls the counter as a fallback; publishes each new counter value.
async fn listen_for_objects(
    config: tokio_postgres::Config,
    pool: Pool,
    changed: watch::Sender<u64>,
    poll: Duration,
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
    let read_version = || async {
        let client = pool.get().await.map_err(err)?;
        let row = client
            .query_opt("SELECT version FROM objects", &[])
            .await
            .map_err(err)?;
        Ok::<u64, StoreError>(row.map_or(0, |row| row.get::<_, i64>(0).max(0) as u64))
    };
    loop {
        if changed.is_closed() {
            return;
        }
        let (client, mut connection) = match config.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for object changes; polling");
                tokio::time::sleep(poll.min(Duration::from_secs(1))).await;
                if let Ok(version) = read_version().await {
                    publish(version);
                }
                continue;
            }
        };
        let (notified_tx, mut notified) = mpsc::unbounded_channel();
        // The connection delivers notifications only while it is polled.
        let driver = tokio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                        let _ = notified_tx.send(note.payload().parse::<u64>().unwrap_or(0));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(error = %error, "object change listener lost its connection");
                        return;
                    }
                    None => return,
                }
            }
        });
        if let Err(error) = client.batch_execute(&format!("LISTEN {OBJECTS_CHANNEL}")).await {
            tracing::warn!(error = %error, "cannot listen for object changes");
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Changes made while no one listened.
        if let Ok(version) = read_version().await {
            publish(version);
        }
        let mut ticker = tokio::time::interval(poll);
        ticker.tick().await;
        loop {
            tokio::select! {
                note = notified.recv() => match note {
                    Some(version) => { publish(version); }
                    None => break,
                },
                _ = ticker.tick() => {
                    if let Ok(version) = read_version().await {
                        publish(version);
                    }
                }
                _ = changed.closed() => {
                    driver.abort();
                    return;
                }
            }
        }
        driver.abort();
        tokio::time::sleep(Duration::from_secs(1)).await;
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
        scope: Option<String>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError> {
        let after = after.unwrap_or("").to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>> =
            vec![Box::new(after), Box::new(limit)];
        if let Some(scope) = scope {
            params.push(Box::new(scope));
        }
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
            done: Some(done),
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError("store writer stopped".into()))?;
            wait.await
                .map_err(|_| StoreError("store writer stopped".into()))?
        })
    }

    fn submit(&self, writes: Vec<Write>) {
        let _ = self.writer.send(Job { writes, done: None });
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

impl PostgresStore {
    /// This node's queued messages (the minimal queue path reads them
    /// whole: the shared spool with leases replaces it).
    fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let rows = self.query(
            "SELECT id, envelope::text FROM spool_message WHERE accepted_by = $1 ORDER BY id",
            vec![Box::new(self.node.clone())],
        )?;
        Ok(rows
            .iter()
            .filter_map(|row| decode("queue entry", row.get(0), row.get(1)))
            .collect())
    }

    /// The index rows of this node's queued messages.
    fn spool_indexes(&self) -> Result<Vec<(QueueEntry, SpoolIndex)>, StoreError> {
        Ok(self
            .queue_entries()?
            .into_iter()
            .map(|entry| {
                let index = SpoolIndex::of(&entry);
                (entry, index)
            })
            .collect())
    }
}

// Minimal queue path: each node works the messages it accepted, read
// whole from the database (so two nodes never both deliver one message);
// the due index, counters and leases of `postgres/spool.rs` replace it.
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

    fn due_before(&self, before_ms: u64, from: &DueKey, limit: usize) -> Result<Vec<Due>, SpoolError> {
        let mut due: Vec<Due> = self
            .spool_indexes()?
            .into_iter()
            .filter_map(|(entry, index)| {
                let due_ms = index.due_ms?;
                (due_ms < before_ms && (due_ms, &entry.id) >= (from.0, &from.1)).then_some(Due {
                    due_ms,
                    id: entry.id,
                    destinations: index.destinations,
                })
            })
            .collect();
        due.sort_by(|a, b| (a.due_ms, &a.id).cmp(&(b.due_ms, &b.id)));
        due.truncate(limit);
        Ok(due)
    }

    fn shape(&self) -> Result<Vec<ShapeCount>, SpoolError> {
        let mut counts: std::collections::BTreeMap<(String, u64), u64> = Default::default();
        for (_, index) in self.spool_indexes()? {
            for (domain, n) in index.domains {
                *counts.entry((domain, index.received_minute)).or_default() += n;
            }
        }
        Ok(counts
            .into_iter()
            .map(|((domain, received_minute), recipients)| ShapeCount {
                domain,
                received_minute,
                recipients,
            })
            .collect())
    }

    fn depth(&self) -> Result<QueueDepth, SpoolError> {
        Ok(QueueDepth::count(
            self.queue_entries()?.iter().map(QueueEntry::status),
        ))
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

    // Minimal queue path: this node's messages only, so two nodes never
    // both deliver one message. The shared spool replaces it.
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
            "SELECT id, envelope::text FROM spool_message \
             WHERE id > $1 AND accepted_by = $3 ORDER BY id LIMIT $2",
            Some(self.node.clone()),
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
            None,
            after,
            limit,
        )
        .map_err(SpoolError::from)
    }
}
