//! Store commit benchmark: messages of 10 KB committed one per commit (as
//! the intake does at the end of DATA) by 1, 10 and 50 concurrent writers,
//! on the embedded store and on PostgreSQL (a scratch server of the
//! benchmark's own, when the binaries are installed). Group commit should
//! make the rate grow with concurrency on both. Prints msgs/s and how many
//! transactions they took; asserts nothing about speed.
//!
//! `cargo bench -p sluice --bench store`

use sluice::message::{QueueId, ReversePath};
use sluice::queue::{Hold, QueueEntry, Source};
// The test PostgreSQL launcher, compiled in (it is not in the library).
#[path = "../src/store/postgres/scratch.rs"]
#[allow(dead_code)]
mod scratch;
use scratch::ScratchPostgres;
use sluice::store::{EmbeddedStore, PostgresStore, Store, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGE: usize = 10 * 1024;
const RUN: Duration = Duration::from_secs(3);

fn entry(id: String) -> QueueEntry {
    QueueEntry {
        id: QueueId(id),
        message_id: None,
        from: ReversePath::Null,
        body: Default::default(),
        smtputf8: false,
        ret: None,
        envid: None,
        recipients: vec![],
        size: MESSAGE as u64,
        received_at_ms: 0,
        expires_at_ms: 0,
        hold: Hold::Active,
        source: Source {
            peer: "bench".into(),
            helo: String::new(),
            connector: None,
        },
    }
}

/// Commits per second with `writers` concurrent writers for [`RUN`].
async fn rate(store: Arc<dyn Store>, writers: usize, tag: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let done = done.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let content = vec![b'x'; MESSAGE];
            let mut n = 0u64;
            while start.elapsed() < RUN {
                let id = format!("{tag}-{writer:03}-{n:08}");
                store
                    .commit(vec![Write::Spool(sluice::queue::SpoolWrite::Enqueue(
                        entry(id),
                        content.clone(),
                    ))])
                    .await
                    .expect("commit");
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded: Arc<dyn Store> = EmbeddedStore::open(dir.path()).expect("embedded store");
    for writers in [1, 10, 50] {
        let per_second = rate(embedded.clone(), writers, &format!("e{writers}")).await;
        println!("embedded    c={writers:<3} {per_second:>8.0} msgs/s (10 KB, one commit each)");
    }
    let server = match ScratchPostgres::start() {
        Ok(server) => server,
        Err(error) => {
            println!("postgres    skipped: {error}");
            return;
        }
    };
    let postgres = PostgresStore::connect(&server.url("postgres"), "bench").expect("PostgreSQL store");
    for writers in [1, 10, 50] {
        let before = postgres.transactions();
        let per_second = rate(postgres.clone(), writers, &format!("p{writers}")).await;
        let transactions = postgres.transactions() - before;
        println!(
            "postgres    c={writers:<3} {per_second:>8.0} msgs/s (10 KB, one commit each; {transactions} transactions, {:.0}/s)",
            transactions as f64 / RUN.as_secs_f64()
        );
    }
}
