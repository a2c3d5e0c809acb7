//! The embedded backend: one redb file under data_dir, one writer thread.
//!
//! The writer thread takes every write waiting in its channel, applies them
//! in a single transaction and commits once with `Durability::Immediate`
//! (an fsync), then answers each waiter. While one commit is on disk the
//! next batch gathers: group commit.

use super::{Commit, Page, Store, StoreError, Write};
use crate::config::objects::ObjectSet;
use crate::message::QueueId;
use crate::queue::{QuarantineEntry, QueueEntry};
use crate::trace::TraceEvent;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const QUEUE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_meta");
const QUEUE_CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_content");
const QUARANTINE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine_meta");
const QUARANTINE_CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine_content");
/// Key: (time ms << 24) | sequence, so events sort by time and never collide.
const DKIM_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("dkim_keys");
const TRACE: TableDefinition<u128, &[u8]> = TableDefinition::new("trace");
const TLS_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("tls_state");

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
        // redb locks the file; a second node on the same data_dir would
        // otherwise report only "database already open".
        let db = redb::Builder::new()
            .set_cache_size(CACHE_SIZE)
            .create(path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError(format!("another sluice node is using {}", data_dir.display()))
                }
                other => err(other),
            })?;
        let db = Arc::new(db);
        {
            let txn = db.begin_write().map_err(err)?;
            txn.open_table(OBJECTS).map_err(err)?;
            txn.open_table(QUEUE_META).map_err(err)?;
            txn.open_table(QUEUE_CONTENT).map_err(err)?;
            txn.open_table(TRACE).map_err(err)?;
            txn.open_table(QUARANTINE_META).map_err(err)?;
            txn.open_table(QUARANTINE_CONTENT).map_err(err)?;
            txn.open_table(TLS_STATE).map_err(err)?;
            txn.open_table(DKIM_KEYS).map_err(err)?;
            txn.commit().map_err(err)?;
        }
        let (writer, jobs) = mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&writer_db, jobs))
            .map_err(err)?;
        Ok(Arc::new(EmbeddedStore { db, writer }))
    }
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
    job.writes
        .iter()
        .map(|write| match write {
            Write::Enqueue(_, content) | Write::Quarantine(_, content) => content.len(),
            _ => 0,
        })
        .sum()
}

fn apply(db: &Database, batch: &mut [Job], sequence: &AtomicU64) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut objects = txn.open_table(OBJECTS).map_err(err)?;
        let mut meta = txn.open_table(QUEUE_META).map_err(err)?;
        let mut content = txn.open_table(QUEUE_CONTENT).map_err(err)?;
        let mut trace = txn.open_table(TRACE).map_err(err)?;
        let mut held = txn.open_table(QUARANTINE_META).map_err(err)?;
        let mut held_content = txn.open_table(QUARANTINE_CONTENT).map_err(err)?;
        let mut tls_state = txn.open_table(TLS_STATE).map_err(err)?;
        let mut dkim_keys = txn.open_table(DKIM_KEYS).map_err(err)?;
        for job in batch.iter_mut() {
            for write in job.writes.drain(..) {
                match write {
                    Write::Objects(set) => {
                        let json = serde_json::to_vec(&set).map_err(err)?;
                        objects.insert("objects", json.as_slice()).map_err(err)?;
                    }
                    Write::Enqueue(entry, body) => {
                        let json = serde_json::to_vec(&entry).map_err(err)?;
                        content
                            .insert(entry.id.0.as_str(), body.as_slice())
                            .map_err(err)?;
                        meta.insert(entry.id.0.as_str(), json.as_slice()).map_err(err)?;
                    }
                    Write::Update(entry) => {
                        // An update racing a delete must not resurrect the message.
                        if meta.get(entry.id.0.as_str()).map_err(err)?.is_some() {
                            let json = serde_json::to_vec(&entry).map_err(err)?;
                            meta.insert(entry.id.0.as_str(), json.as_slice()).map_err(err)?;
                        }
                    }
                    Write::Remove(id) => {
                        meta.remove(id.0.as_str()).map_err(err)?;
                        content.remove(id.0.as_str()).map_err(err)?;
                    }
                    Write::Trace(events) => {
                        for event in events {
                            let seq = sequence.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
                            let key = ((event.at_ms as u128) << 24) | seq as u128;
                            let json = serde_json::to_vec(&event).map_err(err)?;
                            trace.insert(key, json.as_slice()).map_err(err)?;
                        }
                    }
                    Write::Quarantine(entry, body) => {
                        let id = entry.entry.id.0.clone();
                        let json = serde_json::to_vec(&entry).map_err(err)?;
                        held_content.insert(id.as_str(), body.as_slice()).map_err(err)?;
                        held.insert(id.as_str(), json.as_slice()).map_err(err)?;
                    }
                    Write::Unquarantine(id) => {
                        held.remove(id.0.as_str()).map_err(err)?;
                        held_content.remove(id.0.as_str()).map_err(err)?;
                    }
                    Write::DkimKeys(keys) => {
                        let json = serde_json::to_vec(&keys).map_err(err)?;
                        dkim_keys.insert("keys", json.as_slice()).map_err(err)?;
                    }
                    Write::PruneTrace(before_ms) => {
                        let end = (before_ms as u128) << 24;
                        trace.retain_in(..end, |_, _| false).map_err(err)?;
                    }
                    Write::TlsState { key, value } => match value {
                        Some(value) => {
                            tls_state.insert(key.as_str(), value.as_slice()).map_err(err)?;
                        }
                        None => {
                            tls_state.remove(key.as_str()).map_err(err)?;
                        }
                    },
                }
            }
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

    fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_META).map_err(err)?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            match serde_json::from_slice(value.value()) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    tracing::error!(id = key.value(), error = %error, "unreadable queue entry kept in store")
                }
            }
        }
        Ok(entries)
    }

    fn content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUEUE_CONTENT).map_err(err)?;
        Ok(table.get(id.0.as_str()).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUARANTINE_META).map_err(err)?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(err)? {
            let (_, value) = row.map_err(err)?;
            entries.push(serde_json::from_slice(value.value()).map_err(err)?);
        }
        Ok(entries)
    }

    fn quarantined_content(&self, id: &QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(QUARANTINE_CONTENT).map_err(err)?;
        Ok(table.get(id.0.as_str()).map_err(err)?.map(|v| v.value().to_vec()))
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

    fn queue_page(&self, after: Option<&str>, limit: usize) -> Result<Page<QueueEntry>, StoreError> {
        self.keyed_page(QUEUE_META, after, limit)
    }

    fn quarantine_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<QuarantineEntry>, StoreError> {
        self.keyed_page(QUARANTINE_META, after, limit)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ReversePath;
    use crate::queue::{Hold, Source};

    fn entry(id: &str) -> QueueEntry {
        QueueEntry {
            id: QueueId(id.into()),
            message_id: None,
            from: ReversePath::Null,
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: None,
            recipients: vec![],
            size: 3,
            received_at_ms: 0,
            expires_at_ms: 0,
            hold: Hold::Active,
            source: Source {
                peer: "local".into(),
                helo: String::new(),
                connector: None,
            },
        }
    }

    #[tokio::test]
    async fn queue_pages_see_every_entry_once_in_order_despite_inserts_between_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..23 {
            store
                .commit(vec![Write::Enqueue(
                    entry(&format!("m{:03}", i * 2)),
                    b"x".to_vec(),
                )])
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
                        .commit(vec![Write::Enqueue(entry(id), b"x".to_vec())])
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
    async fn trace_pages_see_every_event_once_in_order_despite_inserts_between_pages() {
        use crate::trace::{TraceEvent, TraceKind};
        let event = |at_ms: u64, id: &str| TraceEvent {
            at_ms,
            queue_id: QueueId(id.into()),
            message_id: None,
            kind: TraceKind::Received,
            from: String::new(),
            to: None,
            connector: None,
            remote_host: None,
            detail: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let first: Vec<TraceEvent> = (0..10).map(|i| event(1000 + i, &format!("e{i}"))).collect();
        store.commit(vec![Write::Trace(first)]).await.unwrap();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store.trace_page(1003, cursor.as_deref(), 3).unwrap();
            seen.extend(page.items.iter().map(|e| e.queue_id.0.clone()));
            pages += 1;
            if pages == 1 {
                store
                    .commit(vec![Write::Trace(vec![event(2000, "late")])])
                    .await
                    .unwrap();
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["e3", "e4", "e5", "e6", "e7", "e8", "e9", "late"]);
        assert!(store.trace_page(0, Some("not hex"), 3).is_err());
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_updates_never_resurrect() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let commits: Vec<_> = (0..50)
                .map(|i| store.commit(vec![Write::Enqueue(entry(&format!("m{i:02}")), b"abc".to_vec())]))
                .collect();
            for c in commits {
                c.await.unwrap();
            }
            store
                .commit(vec![Write::Remove(QueueId("m00".into()))])
                .await
                .unwrap();
            store.commit(vec![Write::Update(entry("m00"))]).await.unwrap();
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
        let entries = store.queue_entries().unwrap();
        assert_eq!(entries.len(), 49);
        assert_eq!(
            store.content(&QueueId("m01".into())).unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(store.content(&QueueId("m00".into())).unwrap(), None);
    }
}
