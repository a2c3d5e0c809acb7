//! Connection reuse and per-destination concurrency.
//!
//! Idle, healthy connections are kept for `idle_timeout` per (host, port,
//! TLS policy, EHLO name), so consecutive jobs to one destination skip the
//! TCP, greeting, EHLO and TLS round trips: messages to one destination
//! share connections. A semaphore per destination host caps concurrent
//! transactions at `max_per_destination`, or at the connector's
//! `max_connections`; a cached connection is only handed to a job that
//! holds a permit, so open connections stay near that cap. A connection
//! that carried the connector's `max_messages_per_connection` is closed
//! instead of kept. Expired connections get a QUIT.

use super::connection::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections older than this are not reused: long sessions pin one
/// server of a pool and keep state growing on both ends.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Which cached connections can serve a job: same server, same TLS
/// policy (a connection's TLS state was decided by it), same EHLO name.
pub(super) fn pool_key(host: &str, port: u16, policy: &str, helo: &str) -> String {
    format!("{host}:{port}|{policy}|{helo}")
}

/// What the concurrency cap counts: one destination host.
pub(super) fn destination_key(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// An outbound connector's limits on its connections; `None` takes the
/// node's defaults (`delivery.max_per_destination`, no message cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Concurrent connections to each host.
    pub max_connections: Option<usize>,
    /// Messages over one connection before it is closed.
    pub max_messages_per_connection: Option<usize>,
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

/// The cache of idle connections and the per-destination semaphores.
pub(super) struct ConnectionPool {
    idle: Mutex<HashMap<String, Vec<IdleConnection>>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle_timeout: Duration,
    max_per_destination: usize,
}

/// Locks a map; a panic while holding it cannot leave a half-updated
/// entry (each critical section is a single insert/remove), so a poisoned
/// lock is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConnectionPool {
    pub(super) fn new(idle_timeout: Duration, max_per_destination: usize) -> Self {
        ConnectionPool {
            idle: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            idle_timeout,
            max_per_destination: max_per_destination.max(1),
        }
    }

    /// Waits for a transaction slot towards `destination`, at most `max`
    /// at once (the node's `max_per_destination` when `None`).
    pub(super) async fn permit(&self, destination: &str, max: Option<usize>) -> OwnedSemaphorePermit {
        let max = max.unwrap_or(self.max_per_destination).max(1);
        // Keyed by the cap too: a connector whose limit changed gets a
        // semaphore of the new size.
        let semaphore = lock(&self.limits)
            .entry(format!("{destination}|{max}"))
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone();
        semaphore
            .acquire_owned()
            .await
            .expect("invariant: the pool never closes its semaphores")
    }

    /// The most recently used live connection for `key`, if any. Expired
    /// or stale ones met on the way are returned for closing.
    pub(super) fn take(&self, key: &str) -> (Option<Connection>, Vec<Connection>) {
        let mut discarded = Vec::new();
        let mut idle = lock(&self.idle);
        let Some(list) = idle.get_mut(key) else {
            return (None, discarded);
        };
        while let Some(mut entry) = list.pop() {
            if entry.since.elapsed() >= self.idle_timeout {
                discarded.push(entry.connection);
            } else if entry.connection.is_stale() {
                // Closed or spoke unasked (e.g. a 421): just drop it.
            } else {
                return (Some(entry.connection), discarded);
            }
        }
        (None, discarded)
    }

    /// Keeps `connection` for reuse; returns it when it should be closed
    /// instead (too old, carried `max_messages` already, or enough idle
    /// connections already).
    pub(super) fn put(
        &self,
        key: String,
        connection: Connection,
        max_messages: Option<usize>,
    ) -> Option<Connection> {
        if connection.opened.elapsed() >= MAX_CONNECTION_AGE
            || max_messages.is_some_and(|max| connection.transactions >= max)
        {
            return Some(connection);
        }
        let mut idle = lock(&self.idle);
        let list = idle.entry(key).or_default();
        if list.len() >= self.max_per_destination {
            return Some(connection);
        }
        list.push(IdleConnection {
            connection,
            since: Instant::now(),
        });
        None
    }

    /// Removes and returns every connection idle for too long.
    fn expire(&self) -> Vec<Connection> {
        let mut expired = Vec::new();
        let mut idle = lock(&self.idle);
        for list in idle.values_mut() {
            let (old, fresh): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|entry| entry.since.elapsed() >= self.idle_timeout);
            *list = fresh;
            expired.extend(old.into_iter().map(|entry| entry.connection));
        }
        idle.retain(|_, list| !list.is_empty());
        expired
    }

    /// Number of idle connections (for tests and metrics).
    pub(super) fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }
}

/// Closes connections with QUIT in the background.
pub(super) fn close_all(connections: Vec<Connection>) {
    for connection in connections {
        tokio::spawn(connection.quit());
    }
}

/// Runs until the pool is dropped, QUITting expired idle connections.
pub(super) fn spawn_reaper(pool: Weak<ConnectionPool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let Some(pool) = pool.upgrade() else { break };
            let expired = pool.expire();
            drop(pool);
            close_all(expired);
        }
    });
}
