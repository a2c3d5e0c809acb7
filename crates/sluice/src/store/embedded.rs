//! The embedded backend: one redb file under data_dir, one writer thread.
//!
//! The writer thread takes every write waiting in its channel, applies them
//! in a single transaction and commits once with `Durability::Immediate`
//! (an fsync), then answers each waiter. While one commit is on disk the
//! next batch gathers: group commit.
//!
//! Every commit also records redb's allocator state (redb's "quick
//! repair", which implies a two-phase commit): an open after a crash or a
//! kill -9 then loads that state instead of checksumming and walking the
//! whole file, which took 11 s at a million queued messages. The second
//! fsync per commit is the price; group commit spreads it. redb writes the
//! whole allocator state at every such commit, and its size follows the
//! file's (about 270 KB at 4 GB): the fewer pages a message takes, the
//! smaller the file and that record.
//!
//! So a commit writes only what changed. An entry is its JSON in
//! `queue_meta` plus its rows in the due index, the parked index (by
//! destination, for mail waiting on a down destination's probe) and the
//! counters; the rows
//! an update or a removal takes out are computed from the old JSON that
//! replacing or removing it hands back, not kept in a table of their own.
//! The counters change in memory and are written once per commit, and a
//! batch opens only the tables it writes.

use super::{Commit, Page, Store, StoreError, Write};
use crate::config::objects::ObjectSet;
use crate::message::{MessageContent, QueueId};
use crate::queue::{
    Due, DueKey, QuarantineEntry, QueueDepth, QueueEntry, QueueStatus, ShapeCount, Spool, SpoolCommit,
    SpoolError, SpoolIndex, SpoolWrite,
};
use crate::trace::TraceEvent;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const QUEUE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_meta");
const QUEUE_CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_content");
/// A copy whose body other copies of its message share: queue id ->
/// (body id, the copy's own header section). Its content is not in
/// `queue_content`.
const QUEUE_COPY: TableDefinition<&str, (&str, &[u8])> = TableDefinition::new("queue_copy");
/// Bodies shared by copies: body id (the first copy's queue id) -> body.
const QUEUE_BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_body");
/// Body id -> copies still referring to it; the body goes with the last.
const QUEUE_BODY_REFS: TableDefinition<&str, u64> = TableDefinition::new("queue_body_refs");
const QUARANTINE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine_meta");
const QUARANTINE_CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine_content");
/// Key: (time ms << 24) | sequence, so events sort by time and never collide.
const DKIM_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("dkim_keys");
const TRACE: TableDefinition<u128, &[u8]> = TableDefinition::new("trace");
const TLS_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("tls_state");
/// The due index: (due ms, queue id) -> destinations of the waiting
/// recipients, one per line. Active entries only (held ones wait for release).
const QUEUE_DUE: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("queue_due");
/// Queue id -> its [`SpoolIndex`] (JSON), as earlier versions kept it:
/// the rows to take out are now computed from the entry being replaced.
/// Deleted at open.
const QUEUE_INDEX: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_index");
/// (recipient domain, minute of receipt) -> waiting recipients: `queue
/// summary` without a scan.
const QUEUE_SHAPE: TableDefinition<(&str, u64), u64> = TableDefinition::new("queue_shape");
/// Parked entries by destination: (destination, queue id). A destination
/// that answers again finds its waiting mail here, a page at a time.
const QUEUE_PARKED: TableDefinition<(&str, &str), ()> = TableDefinition::new("queue_parked");
/// Destination -> parked entries: which destinations were down, without a scan.
const QUEUE_PARKED_COUNT: TableDefinition<&str, u64> = TableDefinition::new("queue_parked_count");
/// Queue status -> entries: the queue's depth without a scan.
const QUEUE_DEPTH: TableDefinition<&str, u64> = TableDefinition::new("queue_depth");
/// Store format markers.
const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");
/// Version of the spool indexes; a store without it is indexed at open.
/// 3: no `queue_index`. Its due and counter rows are those of 2, so a
/// store of 2 is not indexed again, while a version that still keeps
/// `queue_index` indexes a store of 3 again before it uses it.
/// 4: `queue_parked` and its counters. No entry of an older store is
/// parked, so its rows are those of 2 and 3 with empty parked tables; an
/// older binary indexes a store of 4 again (and this one indexes again a
/// store such a binary wrote, clearing the parked tables).
const SPOOL_INDEX_VERSION: u64 = 4;
/// The older versions whose due and counter rows this one keeps as they are.
const SPOOL_INDEX_SAME_ROWS: [u64; 2] = [2, 3];

/// Writes gathered per transaction at most: bounds the latency of one commit.
const MAX_BATCH: usize = 2048;

/// Message content gathered per transaction at most: redb holds a
/// transaction's pages in memory until the commit.
const MAX_BATCH_CONTENT: usize = 64 << 20;

/// redb's page cache (its default is 1 GiB, which large messages fill).
const CACHE_SIZE: usize = 64 << 20;

struct Job {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The default store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: mpsc::Sender<Job>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `data_dir/sluice.redb` and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Arc<Self>, StoreError> {
        crate::private_dir::create_dir_all(data_dir).map_err(err)?;
        let path = data_dir.join("sluice.redb");
        // Made private before redb opens it: redb would create it with the umask's mode.
        crate::private_dir::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        let opening = std::time::Instant::now();
        // redb locks the file; a second node on the same data_dir would
        // otherwise report only "database already open".
        let db = redb::Builder::new()
            .set_cache_size(CACHE_SIZE)
            .set_repair_callback(|session| {
                // Called at the start of a repair and between its passes.
                if session.progress() == 0.0 {
                    tracing::warn!(
                        "the store was not closed cleanly and has no record of its free pages: \
                         checking the whole file"
                    );
                }
            })
            .create(path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError(format!("another sluice node is using {}", data_dir.display()))
                }
                other => err(other),
            })?;
        let db = Arc::new(db);
        {
            let txn = begin_write(&db)?;
            txn.open_table(OBJECTS).map_err(err)?;
            txn.open_table(QUEUE_META).map_err(err)?;
            txn.open_table(QUEUE_CONTENT).map_err(err)?;
            txn.open_table(QUEUE_COPY).map_err(err)?;
            txn.open_table(QUEUE_BODY).map_err(err)?;
            txn.open_table(QUEUE_BODY_REFS).map_err(err)?;
            txn.open_table(TRACE).map_err(err)?;
            txn.open_table(QUARANTINE_META).map_err(err)?;
            txn.open_table(QUARANTINE_CONTENT).map_err(err)?;
            txn.open_table(TLS_STATE).map_err(err)?;
            txn.open_table(DKIM_KEYS).map_err(err)?;
            txn.open_table(QUEUE_PARKED).map_err(err)?;
            txn.open_table(QUEUE_PARKED_COUNT).map_err(err)?;
            if txn.delete_table(QUEUE_INDEX).map_err(err)? {
                tracing::info!("the spool's old per-entry index is deleted");
            }
            index_spool_once(&txn)?;
            txn.commit().map_err(err)?;
        }
        tracing::info!(elapsed_ms = opening.elapsed().as_millis() as u64, "store opened");
        let (writer, jobs) = mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&writer_db, jobs))
            .map_err(err)?;
        Ok(Arc::new(EmbeddedStore { db, writer }))
    }
}

/// A write transaction whose commit records the allocator state (see the
/// module's header).
fn begin_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(err)?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// Builds the due index and the counters of a store written before they
/// existed: one scan, once.
fn index_spool_once(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut marker = txn.open_table(STORE_META).map_err(err)?;
    let version = marker.get("spool_index").map_err(err)?.map(|v| v.value());
    if version.is_some_and(|v| SPOOL_INDEX_SAME_ROWS.contains(&v)) {
        marker.insert("spool_index", SPOOL_INDEX_VERSION).map_err(err)?;
        return Ok(());
    }
    if version == Some(SPOOL_INDEX_VERSION) {
        return Ok(());
    }
    let mut tables = SpoolTables::open(txn)?;
    tables.due.retain(|_, _| false).map_err(err)?;
    tables.shape.retain(|_, _| false).map_err(err)?;
    tables.depth.retain(|_, _| false).map_err(err)?;
    tables.parked.retain(|_, _| false).map_err(err)?;
    tables.parked_count.retain(|_, _| false).map_err(err)?;
    let mut indexed = 0usize;
    let mut after: Option<String> = None;
    loop {
        // A chunk at a time: the table cannot be read while it is indexed.
        let mut chunk = Vec::new();
        let lower = match &after {
            Some(key) => std::ops::Bound::Excluded(key.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        for row in tables
            .meta
            .range::<&str>((lower, std::ops::Bound::Unbounded))
            .map_err(err)?
            .take(1024)
        {
            let (key, value) = row.map_err(err)?;
            chunk.push((key.value().to_string(), value.value().to_vec()));
        }
        let Some((last, _)) = chunk.last() else { break };
        after = Some(last.clone());
        for (key, value) in chunk {
            match serde_json::from_slice::<QueueEntry>(&value) {
                Ok(entry) => {
                    tables.index_entry(&entry)?;
                    indexed += 1;
                }
                Err(error) => {
                    tracing::error!(id = key, error = %error, "unreadable queue entry kept in store")
                }
            }
        }
    }
    tables.flush()?;
    if indexed > 0 {
        tracing::info!(messages = indexed, "spool indexed");
    }
    marker.insert("spool_index", SPOOL_INDEX_VERSION).map_err(err)?;
    Ok(())
}

/// The queue's tables in one write transaction: an entry, its content,
/// its row in the due index and its counters change together.
///
/// What an entry's old rows are is computed from the entry it replaces
/// (the stored JSON that `meta.insert` or `meta.remove` hands back), so a
/// put or a removal reads no table of its own for it. The counters
/// change in memory and are written once per transaction ([`Self::flush`]):
/// a batch of enqueues moves the same few counters many times.
struct SpoolTables<'txn> {
    meta: Table<'txn, &'static str, &'static [u8]>,
    content: Table<'txn, &'static str, &'static [u8]>,
    copies: Table<'txn, &'static str, (&'static str, &'static [u8])>,
    bodies: Table<'txn, &'static str, &'static [u8]>,
    body_refs: Table<'txn, &'static str, u64>,
    due: Table<'txn, (u64, &'static str), &'static [u8]>,
    shape: Table<'txn, (&'static str, u64), u64>,
    depth: Table<'txn, &'static str, u64>,
    parked: Table<'txn, (&'static str, &'static str), ()>,
    parked_count: Table<'txn, &'static str, u64>,
    shape_delta: HashMap<(String, u64), i64>,
    depth_delta: HashMap<QueueStatus, i64>,
    parked_delta: HashMap<String, i64>,
}

impl SpoolTables<'_> {
    fn open(txn: &WriteTransaction) -> Result<SpoolTables<'_>, StoreError> {
        Ok(SpoolTables {
            meta: txn.open_table(QUEUE_META).map_err(err)?,
            content: txn.open_table(QUEUE_CONTENT).map_err(err)?,
            copies: txn.open_table(QUEUE_COPY).map_err(err)?,
            bodies: txn.open_table(QUEUE_BODY).map_err(err)?,
            body_refs: txn.open_table(QUEUE_BODY_REFS).map_err(err)?,
            due: txn.open_table(QUEUE_DUE).map_err(err)?,
            shape: txn.open_table(QUEUE_SHAPE).map_err(err)?,
            depth: txn.open_table(QUEUE_DEPTH).map_err(err)?,
            parked: txn.open_table(QUEUE_PARKED).map_err(err)?,
            parked_count: txn.open_table(QUEUE_PARKED_COUNT).map_err(err)?,
            shape_delta: HashMap::new(),
            depth_delta: HashMap::new(),
            parked_delta: HashMap::new(),
        })
    }

    fn count(&mut self, domain: &str, minute: u64, delta: i64) {
        *self.shape_delta.entry((domain.to_string(), minute)).or_default() += delta;
    }

    fn count_status(&mut self, status: Option<QueueStatus>, delta: i64) {
        if let Some(status) = status {
            *self.depth_delta.entry(status).or_default() += delta;
        }
    }

    /// Writes the counters' changes; before the commit.
    fn flush(&mut self) -> Result<(), StoreError> {
        for ((domain, minute), delta) in self.shape_delta.drain() {
            if delta == 0 {
                continue;
            }
            let key = (domain.as_str(), minute);
            let now = self.shape.get(key).map_err(err)?.map_or(0, |v| v.value());
            let next = now.saturating_add_signed(delta);
            if next == 0 {
                self.shape.remove(key).map_err(err)?;
            } else {
                self.shape.insert(key, next).map_err(err)?;
            }
        }
        for (destination, delta) in self.parked_delta.drain() {
            if delta == 0 {
                continue;
            }
            let key = destination.as_str();
            let now = self.parked_count.get(key).map_err(err)?.map_or(0, |v| v.value());
            let next = now.saturating_add_signed(delta);
            if next == 0 {
                self.parked_count.remove(key).map_err(err)?;
            } else {
                self.parked_count.insert(key, next).map_err(err)?;
            }
        }
        for (status, delta) in self.depth_delta.drain() {
            if delta == 0 {
                continue;
            }
            let key = status.as_str();
            let now = self.depth.get(key).map_err(err)?.map_or(0, |v| v.value());
            self.depth
                .insert(key, now.saturating_add_signed(delta))
                .map_err(err)?;
        }
        Ok(())
    }

    /// Takes the rows of `old`, an entry as it was stored (JSON), out of
    /// the due index and the counters. An unreadable entry has no rows
    /// this store could have made, so there is nothing to take out.
    fn unindex(&mut self, id: &str, old: &[u8]) -> Result<(), StoreError> {
        let old = match serde_json::from_slice::<QueueEntry>(old) {
            Ok(entry) => SpoolIndex::of(&entry),
            Err(error) => {
                tracing::error!(id, error = %error, "unreadable queue entry replaced");
                return Ok(());
            }
        };
        if let Some(due) = old.due_ms {
            self.due.remove((due, id)).map_err(err)?;
        }
        for (domain, n) in &old.domains {
            self.count(domain, old.received_minute, -(*n as i64));
        }
        for destination in &old.parked {
            self.parked.remove((destination.as_str(), id)).map_err(err)?;
            *self.parked_delta.entry(destination.clone()).or_default() -= 1;
        }
        self.count_status(old.status, -1);
        Ok(())
    }

    fn index_entry(&mut self, entry: &QueueEntry) -> Result<(), StoreError> {
        let id = entry.id.0.as_str();
        let index = SpoolIndex::of(entry);
        if let Some(due) = index.due_ms {
            let destinations = index.destinations.join("\n");
            self.due.insert((due, id), destinations.as_bytes()).map_err(err)?;
        }
        for (domain, n) in &index.domains {
            self.count(domain, index.received_minute, *n as i64);
        }
        for destination in &index.parked {
            self.parked.insert((destination.as_str(), id), ()).map_err(err)?;
            *self.parked_delta.entry(destination.clone()).or_default() += 1;
        }
        self.count_status(index.status, 1);
        Ok(())
    }

    /// Stores `entry` and its rows; returns whether it replaced one. With
    /// `only_over` an entry that is not there stays absent: an update
    /// racing a delete must not resurrect the message.
    fn put(&mut self, entry: &QueueEntry, only_over: bool) -> Result<bool, StoreError> {
        let id = entry.id.0.as_str();
        let json = serde_json::to_vec(entry).map_err(err)?;
        let old = self
            .meta
            .insert(id, json.as_slice())
            .map_err(err)?
            .map(|old| old.value().to_vec());
        match old {
            Some(old) => self.unindex(id, &old)?,
            None if only_over => {
                self.meta.remove(id).map_err(err)?;
                return Ok(false);
            }
            None => {}
        }
        self.index_entry(entry)?;
        Ok(true)
    }

    fn remove(&mut self, id: &str) -> Result<(), StoreError> {
        let old = self.meta.remove(id).map_err(err)?.map(|old| old.value().to_vec());
        if let Some(old) = old {
            self.unindex(id, &old)?;
        }
        self.drop_content(id)
    }

    /// Stores a copy: whole, or its header section over a body shared
    /// with the other copies naming `body`.
    fn put_copy(
        &mut self,
        entry: &QueueEntry,
        content: &MessageContent,
        body: Option<&QueueId>,
    ) -> Result<(), StoreError> {
        let id = entry.id.0.as_str();
        // A new id (the rule) has no content to drop: no lookups for it.
        if self.put(entry, false)? {
            self.drop_content(id)?;
        }
        match body {
            None => insert_pieces(&mut self.content, id, content.pieces())?,
            Some(body) => {
                let key = body.0.as_str();
                let refs = self.body_refs.get(key).map_err(err)?.map_or(0, |v| v.value());
                if refs == 0 {
                    self.bodies.insert(key, content.body()).map_err(err)?;
                }
                self.body_refs.insert(key, refs + 1).map_err(err)?;
                self.copies.insert(id, (key, content.header())).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Removes an entry's content; a shared body goes with its last copy.
    fn drop_content(&mut self, id: &str) -> Result<(), StoreError> {
        self.content.remove(id).map_err(err)?;
        let body = self
            .copies
            .remove(id)
            .map_err(err)?
            .map(|copy| copy.value().0.to_string());
        let Some(key) = body else { return Ok(()) };
        let refs = self
            .body_refs
            .get(key.as_str())
            .map_err(err)?
            .map_or(0, |v| v.value());
        if refs <= 1 {
            self.body_refs.remove(key.as_str()).map_err(err)?;
            self.bodies.remove(key.as_str()).map_err(err)?;
        } else {
            self.body_refs.insert(key.as_str(), refs - 1).map_err(err)?;
        }
        Ok(())
    }
}

/// Writes `pieces` as one value, in place: no joined copy is made.
fn insert_pieces(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    pieces: [&[u8]; 2],
) -> Result<(), StoreError> {
    let mut value = table
        .insert_reserve(key, pieces[0].len() + pieces[1].len())
        .map_err(err)?;
    let (first, second) = value.as_mut().split_at_mut(pieces[0].len());
    first.copy_from_slice(pieces[0]);
    second.copy_from_slice(pieces[1]);
    Ok(())
}

fn write_loop(db: &Database, jobs: mpsc::Receiver<Job>) {
    let sequence = AtomicU64::new(0);
    while let Ok(first) = jobs.recv() {
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
        let result = apply(db, &mut batch, &sequence);
        if let Err(error) = &result {
            tracing::error!(error = %error, writes = batch.len(), "store commit failed");
        }
        for job in batch {
            if let Some(done) = job.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn content_bytes(job: &Job) -> usize {
    job.writes.iter().map(Write::content_len).sum()
}

/// Which tables a batch writes: a table opened in a write transaction
/// costs a lookup and a root to carry even when nothing is written to it.
#[derive(Default)]
struct Touched {
    objects: bool,
    spool: bool,
    trace: bool,
    quarantine: bool,
    tls_state: bool,
    dkim_keys: bool,
}

impl Touched {
    fn of(batch: &[Job]) -> Touched {
        let mut touched = Touched::default();
        for write in batch.iter().flat_map(|job| &job.writes) {
            match write {
                Write::Objects(_) => touched.objects = true,
                Write::Trace(_) | Write::Spool(SpoolWrite::Trace(_)) | Write::PruneTrace(_) => {
                    touched.trace = true
                }
                Write::Spool(SpoolWrite::Quarantine(..) | SpoolWrite::Unquarantine(_)) => {
                    touched.quarantine = true
                }
                Write::Spool(_) => touched.spool = true,
                Write::TlsState { .. } => touched.tls_state = true,
                Write::DkimKeys(_) => touched.dkim_keys = true,
            }
        }
        touched
    }
}

/// Opens `table` in `txn` if `wanted`.
fn open_if<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'txn WriteTransaction,
    wanted: bool,
    table: TableDefinition<K, V>,
) -> Result<Option<Table<'txn, K, V>>, StoreError> {
    match wanted {
        true => Ok(Some(txn.open_table(table).map_err(err)?)),
        false => Ok(None),
    }
}

/// The table a write needs, which [`Touched`] had opened.
fn opened<T>(table: &mut Option<T>) -> Result<&mut T, StoreError> {
    table
        .as_mut()
        .ok_or_else(|| StoreError("a write reached a table its batch did not open".into()))
}

fn apply(db: &Database, batch: &mut [Job], sequence: &AtomicU64) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    {
        let touched = Touched::of(batch);
        let mut objects = open_if(&txn, touched.objects, OBJECTS)?;
        let mut spool = match touched.spool {
            true => Some(SpoolTables::open(&txn)?),
            false => None,
        };
        let mut trace = open_if(&txn, touched.trace, TRACE)?;
        let mut held = open_if(&txn, touched.quarantine, QUARANTINE_META)?;
        let mut held_content = open_if(&txn, touched.quarantine, QUARANTINE_CONTENT)?;
        let mut tls_state = open_if(&txn, touched.tls_state, TLS_STATE)?;
        let mut dkim_keys = open_if(&txn, touched.dkim_keys, DKIM_KEYS)?;
        for job in batch.iter_mut() {
            for write in job.writes.drain(..) {
                match write {
                    Write::Objects(set) => {
                        let json = serde_json::to_vec(&set).map_err(err)?;
                        opened(&mut objects)?
                            .insert("objects", json.as_slice())
                            .map_err(err)?;
                    }
                    Write::Spool(SpoolWrite::Enqueue(entry, body)) => {
                        let spool = opened(&mut spool)?;
                        spool
                            .content
                            .insert(entry.id.0.as_str(), body.as_slice())
                            .map_err(err)?;
                        spool.put(&entry, false)?;
                    }
                    Write::Spool(SpoolWrite::EnqueueCopy { entry, content, body }) => {
                        opened(&mut spool)?.put_copy(&entry, &content, body.as_ref())?;
                    }
                    Write::Spool(SpoolWrite::Update(entry)) => {
                        opened(&mut spool)?.put(&entry, true)?;
                    }
                    Write::Spool(SpoolWrite::Remove(id)) => opened(&mut spool)?.remove(id.0.as_str())?,
                    Write::Trace(events) | Write::Spool(SpoolWrite::Trace(events)) => {
                        let trace = opened(&mut trace)?;
                        for event in events {
                            let seq = sequence.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
                            let key = ((event.at_ms as u128) << 24) | seq as u128;
                            let json = serde_json::to_vec(&event).map_err(err)?;
                            trace.insert(key, json.as_slice()).map_err(err)?;
                        }
                    }
                    Write::Spool(SpoolWrite::Quarantine(entry, body)) => {
                        let id = entry.entry.id.0.clone();
                        let json = serde_json::to_vec(&entry).map_err(err)?;
                        opened(&mut held_content)?
                            .insert(id.as_str(), body.as_slice())
                            .map_err(err)?;
                        opened(&mut held)?
                            .insert(id.as_str(), json.as_slice())
                            .map_err(err)?;
                    }
                    Write::Spool(SpoolWrite::Unquarantine(id)) => {
                        opened(&mut held)?.remove(id.0.as_str()).map_err(err)?;
                        opened(&mut held_content)?.remove(id.0.as_str()).map_err(err)?;
                    }
                    Write::DkimKeys(keys) => {
                        let json = serde_json::to_vec(&keys).map_err(err)?;
                        opened(&mut dkim_keys)?
                            .insert("keys", json.as_slice())
                            .map_err(err)?;
                    }
                    Write::PruneTrace(before_ms) => {
                        let end = (before_ms as u128) << 24;
                        opened(&mut trace)?.retain_in(..end, |_, _| false).map_err(err)?;
                    }
                    Write::TlsState { key, value } => {
                        let tls_state = opened(&mut tls_state)?;
                        match value {
                            Some(value) => {
                                tls_state.insert(key.as_str(), value.as_slice()).map_err(err)?;
                            }
                            None => {
                                tls_state.remove(key.as_str()).map_err(err)?;
                            }
                        }
                    }
                }
            }
        }
        if let Some(spool) = &mut spool {
            spool.flush()?;
        }
    }
    txn.commit().map_err(err)
}

impl EmbeddedStore {
    /// A range scan from just after `after`: reads `limit` rows, never the table.
    fn keyed_page<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(table).map_err(err)?;
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut last = None;
        for row in table.range::<&str>((lower, Bound::Unbounded)).map_err(err)? {
            if items.len() >= limit {
                break;
            }
            let (key, value) = row.map_err(err)?;
            match serde_json::from_slice(value.value()) {
                Ok(item) => items.push(item),
                Err(error) => {
                    tracing::error!(id = key.value(), error = %error, "unreadable entry kept in store")
                }
            }
            last = Some(key.value().to_string());
        }
        let next = if items.len() >= limit { last } else { None };
        Ok(Page { items, next })
    }
}

impl Store for EmbeddedStore {
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
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(OBJECTS).map_err(err)?;
        match table.get("objects").map_err(err)? {
            Some(json) => serde_json::from_slice(json.value()).map_err(err),
            None => Ok(ObjectSet::default()),
        }
    }

    fn dkim_keys(&self) -> Result<Vec<crate::auth::keys::StoredKey>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(DKIM_KEYS).map_err(err)?;
        match table.get("keys").map_err(err)? {
            Some(json) => serde_json::from_slice(json.value()).map_err(err),
            None => Ok(Vec::new()),
        }
    }

    fn trace_events(&self, since_ms: u64) -> Result<Vec<TraceEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TRACE).map_err(err)?;
        let mut events = Vec::new();
        for row in table.range((since_ms as u128) << 24..).map_err(err)? {
            let (_, value) = row.map_err(err)?;
            if let Ok(event) = serde_json::from_slice(value.value()) {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn trace_page(
        &self,
        since_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<TraceEvent>, StoreError> {
        let start = (since_ms as u128) << 24;
        let start = match after {
            Some(key) => {
                let after =
                    u128::from_str_radix(key, 16).map_err(|_| StoreError("bad trace cursor".into()))?;
                start.max(after.saturating_add(1))
            }
            None => start,
        };
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TRACE).map_err(err)?;
        let mut items = Vec::new();
        let mut last = None;
        for row in table.range(start..).map_err(err)? {
            if items.len() >= limit {
                break;
            }
            let (key, value) = row.map_err(err)?;
            last = Some(key.value());
            if let Ok(event) = serde_json::from_slice(value.value()) {
                items.push(event);
            }
        }
        let next = if items.len() >= limit {
            last.map(|key| format!("{key:032x}"))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    fn tls_state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TLS_STATE).map_err(err)?;
        let mut found = Vec::new();
        for row in table.range(prefix..).map_err(err)? {
            let (key, value) = row.map_err(err)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.push((key.value().to_string(), value.value().to_vec()));
        }
        Ok(found)
    }
}

impl Spool for EmbeddedStore {
    fn commit_spool(&self, writes: Vec<SpoolWrite>) -> SpoolCommit {
        let commit = self.commit(writes.into_iter().map(Write::Spool).collect());
        Box::pin(async move { Ok(commit.await?) })
    }

    fn submit_spool(&self, writes: Vec<SpoolWrite>) {
        self.submit(writes.into_iter().map(Write::Spool).collect());
    }

    fn entry(&self, id: &QueueId) -> Result<Option<QueueEntry>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_META).map_err(err)?;
        match table.get(id.0.as_str()).map_err(err)? {
            Some(json) => Ok(Some(serde_json::from_slice(json.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_CONTENT).map_err(err)?;
        if let Some(whole) = table.get(id.0.as_str()).map_err(err)? {
            return Ok(Some(whole.value().to_vec()));
        }
        let copies = txn.open_table(QUEUE_COPY).map_err(err)?;
        let Some(copy) = copies.get(id.0.as_str()).map_err(err)? else {
            return Ok(None);
        };
        let (key, header) = copy.value();
        let bodies = txn.open_table(QUEUE_BODY).map_err(err)?;
        let body = bodies
            .get(key)
            .map_err(err)?
            .ok_or_else(|| SpoolError::Failed(format!("the body {key} of {id} is missing")))?;
        Ok(Some([header, body.value()].concat()))
    }

    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, SpoolError> {
        Ok(self.keyed_page(QUEUE_META, after, limit)?)
    }

    fn due_before(&self, before_ms: u64, from: &DueKey, limit: usize) -> Result<Vec<Due>, SpoolError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_DUE).map_err(err)?;
        let range = (
            Bound::Included((from.0, from.1 .0.as_str())),
            Bound::Excluded((before_ms, "")),
        );
        if (from.0, from.1 .0.as_str()) >= (before_ms, "") {
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        for row in table.range::<(u64, &str)>(range).map_err(err)?.take(limit) {
            let (key, value) = row.map_err(err)?;
            let (due_ms, id) = key.value();
            let destinations = std::str::from_utf8(value.value())
                .unwrap_or_default()
                .split('\n')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect();
            rows.push(Due {
                due_ms,
                id: QueueId(id.to_string()),
                destinations,
            });
        }
        Ok(rows)
    }

    fn parked(
        &self,
        destination: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<QueueId>, SpoolError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_PARKED).map_err(err)?;
        let lower = match after {
            Some(after) => Bound::Excluded((destination, after)),
            None => Bound::Included((destination, "")),
        };
        let mut ids = Vec::new();
        for row in table
            .range::<(&str, &str)>((lower, Bound::Unbounded))
            .map_err(err)?
        {
            let (key, _) = row.map_err(err)?;
            let (parked_for, id) = key.value();
            if parked_for != destination || ids.len() >= limit {
                break;
            }
            ids.push(QueueId(id.to_string()));
        }
        Ok(ids)
    }

    fn parked_destinations(&self) -> Result<Vec<(String, u64)>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_PARKED_COUNT).map_err(err)?;
        let mut counts = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            counts.push((key.value().to_string(), value.value()));
        }
        Ok(counts)
    }

    fn shape(&self) -> Result<Vec<ShapeCount>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_SHAPE).map_err(err)?;
        let mut counts = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            let (domain, received_minute) = key.value();
            counts.push(ShapeCount {
                domain: domain.to_string(),
                received_minute,
                recipients: value.value(),
            });
        }
        Ok(counts)
    }

    fn depth(&self) -> Result<QueueDepth, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_DEPTH).map_err(err)?;
        let count = |status: QueueStatus| -> Result<u64, SpoolError> {
            Ok(table.get(status.as_str()).map_err(err)?.map_or(0, |v| v.value()))
        };
        let (queued, deferred, held) = (
            count(QueueStatus::Queued)?,
            count(QueueStatus::Deferred)?,
            count(QueueStatus::Held)?,
        );
        Ok(QueueDepth {
            queued,
            deferred,
            held,
            total: queued + deferred + held,
        })
    }

    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUARANTINE_META).map_err(err)?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(err)? {
            let (_, value) = row.map_err(err)?;
            entries.push(serde_json::from_slice(value.value()).map_err(err)?);
        }
        Ok(entries)
    }

    fn quarantined(&self, id: &QueueId) -> Result<Option<QuarantineEntry>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUARANTINE_META).map_err(err)?;
        match table.get(id.0.as_str()).map_err(err)? {
            Some(json) => Ok(Some(serde_json::from_slice(json.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUARANTINE_CONTENT).map_err(err)?;
        Ok(table.get(id.0.as_str()).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<QuarantineEntry>, SpoolError> {
        Ok(self.keyed_page(QUARANTINE_META, after, limit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::entry;
    use super::*;
    use crate::message::Address;
    use crate::queue::{Hold, QueuedRecipient, RecipientStatus};
    use crate::route::Route;

    #[tokio::test]
    async fn queue_pages_see_every_entry_once_in_order_despite_inserts_between_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..23 {
            store
                .commit(vec![Write::Spool(SpoolWrite::Enqueue(
                    entry(&format!("m{:03}", i * 2)),
                    b"x".to_vec(),
                ))])
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store.queue_page(cursor.as_deref(), 5).unwrap();
            assert!(page.items.len() <= 5);
            seen.extend(page.items.iter().map(|e| e.id.0.clone()));
            pages += 1;
            // Inserted between pages: one behind the cursor (not seen), one ahead (seen once).
            if pages == 2 {
                for id in ["m001", "m045"] {
                    store
                        .commit(vec![Write::Spool(SpoolWrite::Enqueue(entry(id), b"x".to_vec()))])
                        .await
                        .unwrap();
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..23).map(|i| format!("m{:03}", i * 2)).collect();
        expected.push("m045".into());
        expected.sort();
        assert_eq!(seen, expected);
        assert_eq!(pages, 5);
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_updates_never_resurrect() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let commits: Vec<_> = (0..50)
                .map(|i| {
                    store.commit_spool(vec![SpoolWrite::Enqueue(
                        entry(&format!("m{i:02}")),
                        b"abc".to_vec(),
                    )])
                })
                .collect();
            for c in commits {
                c.await.unwrap();
            }
            store
                .commit_spool(vec![SpoolWrite::Remove(QueueId("m00".into()))])
                .await
                .unwrap();
            store
                .commit_spool(vec![SpoolWrite::Update(entry("m00"))])
                .await
                .unwrap();
        }
        // The writer thread owns a handle; wait for the first store to close.
        let mut reopened = None;
        for _ in 0..100 {
            match EmbeddedStore::open(dir.path()) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let store = reopened.expect("store reopens");
        let entries = store.queue_page(None, 100).unwrap().items;
        assert_eq!(entries.len(), 49);
        assert_eq!(
            store.content(&QueueId("m01".into())).unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(store.content(&QueueId("m00".into())).unwrap(), None);
    }

    fn waiting(id: &str, received_ms: u64, due_ms: u64, to: &[&str]) -> QueueEntry {
        let mut e = entry(id);
        e.received_at_ms = received_ms;
        e.recipients = to
            .iter()
            .map(|a| QueuedRecipient {
                address: Address::parse(a).unwrap(),
                notify: crate::message::Notify::Default,
                orcpt: None,
                route: Route::Mx,
                status: RecipientStatus::Queued { due_ms },
                attempts: 0,
            })
            .collect();
        e
    }

    fn shape(store: &EmbeddedStore) -> Vec<(String, u64, u64)> {
        let mut counts: Vec<_> = store
            .shape()
            .unwrap()
            .into_iter()
            .map(|c| (c.domain, c.received_minute, c.recipients))
            .collect();
        counts.sort();
        counts
    }

    fn due_ids(store: &EmbeddedStore, before: u64) -> Vec<(u64, String)> {
        store
            .due_before(before, &(0, QueueId(String::new())), 100)
            .unwrap()
            .into_iter()
            .map(|d| (d.due_ms, d.id.0))
            .collect()
    }

    #[tokio::test]
    async fn the_due_index_and_counters_follow_every_write_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = waiting("a", 60_000, 5_000, &["x@one.test", "y@one.test", "z@two.test"]);
        let b = waiting("b", 120_000, 3_000, &["x@One.test"]);
        store
            .commit_spool(vec![
                SpoolWrite::Enqueue(a.clone(), b"x".to_vec()),
                SpoolWrite::Enqueue(b.clone(), b"x".to_vec()),
            ])
            .await
            .unwrap();
        assert_eq!(
            due_ids(&store, 10_000),
            [(3_000, "b".into()), (5_000, "a".into())]
        );
        assert_eq!(due_ids(&store, 5_000), [(3_000, "b".into())]);
        let rows = store
            .due_before(10_000, &(3_000, QueueId("b\0".into())), 10)
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].destinations, ["mx:one.test", "mx:two.test"]);
        assert_eq!(
            shape(&store),
            [
                ("one.test".into(), 1, 2),
                ("one.test".into(), 2, 1),
                ("two.test".into(), 1, 1)
            ]
        );
        // A held entry leaves the due index but still counts as waiting;
        // a delivered recipient stops counting; a later due time moves the row.
        let mut held = b.clone();
        held.hold = Hold::Held;
        let mut moved = a.clone();
        moved.recipients[2].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
            host: None,
        };
        for r in &mut moved.recipients[..2] {
            r.status = RecipientStatus::Queued { due_ms: 9_000 };
        }
        store
            .commit_spool(vec![SpoolWrite::Update(held), SpoolWrite::Update(moved)])
            .await
            .unwrap();
        assert_eq!(due_ids(&store, 10_000), [(9_000, "a".into())]);
        assert_eq!(
            shape(&store),
            [("one.test".into(), 1, 2), ("one.test".into(), 2, 1)]
        );
        store
            .commit_spool(vec![
                SpoolWrite::Remove(a.id.clone()),
                SpoolWrite::Remove(b.id.clone()),
            ])
            .await
            .unwrap();
        assert!(due_ids(&store, u64::MAX).is_empty());
        assert!(shape(&store).is_empty());
        // An update after the removal resurrects nothing, index included.
        store.commit_spool(vec![SpoolWrite::Update(a)]).await.unwrap();
        assert!(due_ids(&store, u64::MAX).is_empty());
        assert!(shape(&store).is_empty());
    }

    /// Opens the store in `dir` once the previous one's writer let go of it.
    async fn reopen(dir: &Path) -> Arc<EmbeddedStore> {
        for _ in 0..100 {
            match EmbeddedStore::open(dir) {
                Ok(store) => return store,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        panic!("the store does not reopen")
    }

    /// Stores written before the rows of an entry were computed from the
    /// entry it replaces kept them in `queue_index`: the table goes at the
    /// next open, and updates and removals still take out the right rows.
    #[tokio::test]
    async fn a_store_with_the_old_per_entry_index_opens_without_it_and_keeps_its_counters() {
        let dir = tempfile::tempdir().unwrap();
        let a = waiting("a", 60_000, 5_000, &["x@one.test", "y@two.test"]);
        let b = waiting("b", 60_000, 3_000, &["x@one.test"]);
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .commit_spool(vec![
                    SpoolWrite::Enqueue(a.clone(), b"x".to_vec()),
                    SpoolWrite::Enqueue(b.clone(), b"x".to_vec()),
                ])
                .await
                .unwrap();
        }
        {
            // The old table beside the rows, as an earlier version left it.
            let store = reopen(dir.path()).await;
            let txn = store.db.begin_write().unwrap();
            {
                let mut old = txn.open_table(QUEUE_INDEX).unwrap();
                for entry in [&a, &b] {
                    let json = serde_json::to_vec(&SpoolIndex::of(entry)).unwrap();
                    old.insert(entry.id.0.as_str(), json.as_slice()).unwrap();
                }
                let mut marker = txn.open_table(STORE_META).unwrap();
                marker.insert("spool_index", SPOOL_INDEX_SAME_ROWS[0]).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = reopen(dir.path()).await;
        let tables: Vec<String> = store
            .db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_string())
            .collect();
        assert!(!tables.contains(&"queue_index".to_string()), "{tables:?}");
        let marker = store.db.begin_read().unwrap().open_table(STORE_META).unwrap();
        let version = marker.get("spool_index").unwrap().map(|v| v.value());
        assert_eq!(version, Some(SPOOL_INDEX_VERSION));
        drop(marker);
        let mut moved = a.clone();
        moved.recipients[1].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
            host: None,
        };
        store
            .commit_spool(vec![SpoolWrite::Update(moved), SpoolWrite::Remove(b.id.clone())])
            .await
            .unwrap();
        assert_eq!(due_ids(&store, u64::MAX), [(5_000, "a".into())]);
        assert_eq!(shape(&store), [("one.test".into(), 1, 1)]);
        assert_eq!(store.depth().unwrap().total, 1);
    }

    /// Fill and drain the spool repeatedly: freed pages are reused, so the
    /// file stops growing after the first cycle.
    #[tokio::test]
    async fn space_is_reused_across_fill_and_drain_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let file = dir.path().join("sluice.redb");
        let body = vec![b'x'; 1024];
        let mut sizes = Vec::new();
        for cycle in 0..8 {
            for batch in 0..5 {
                let writes = (0..200)
                    .map(|i| {
                        let id = format!("c{cycle}-{batch:02}-{i:03}");
                        SpoolWrite::Enqueue(waiting(&id, 0, 1, &["r@x.test"]), body.clone())
                    })
                    .collect();
                store.commit_spool(writes).await.unwrap();
            }
            loop {
                let page = store.queue_page(None, 500).unwrap();
                if page.items.is_empty() {
                    break;
                }
                let writes = page.items.into_iter().map(|e| SpoolWrite::Remove(e.id)).collect();
                store.commit_spool(writes).await.unwrap();
            }
            assert!(due_ids(&store, u64::MAX).is_empty());
            sizes.push(std::fs::metadata(&file).unwrap().len());
        }
        // redb's allocator moves things about, so the size wobbles from
        // cycle to cycle; a store that kept freed pages would have grown
        // by the first cycle's size at every cycle.
        let first = sizes[0];
        for (cycle, size) in sizes.iter().enumerate() {
            assert!(
                *size < first * 2,
                "cycle {cycle}: {size} bytes after {first} for the first: {sizes:?}"
            );
        }
    }
}
