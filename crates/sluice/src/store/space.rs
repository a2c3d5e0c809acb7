//! Free space on the data_dir's filesystem, as the SMTP sessions see it
//! (`[store] min_free`, SPEC section 3).
//!
//! A full disk is a temporary condition: below `min_free`, new mail gets
//! `452 4.3.1 Insufficient system storage` at MAIL, RCPT or the end of
//! DATA, so the client keeps it and retries, while delivery goes on (and
//! frees space). The margin keeps the store's own writes (delivery state,
//! trace, what is already in flight) away from ENOSPC, which a store may
//! not recover from without a restart.
//!
//! statvfs is a cheap system call, but thousands of sessions would still
//! make it per command: the answer is cached and refreshed at most once a
//! second, by whichever session asks first after that. After a local write
//! has failed, [`FreeSpace::refusal_now`] measures again at once.

use crate::message::Reply;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How long a measurement stands.
const REFRESH_MS: u64 = 1000;

pub use crate::config::MinFree;

/// Space on a filesystem, in octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Free to an unprivileged writer (statvfs `f_bavail`).
    pub available: u64,
    /// The filesystem's size.
    pub total: u64,
}

/// Space on the filesystem holding `path`.
pub fn measure(path: &Path) -> std::io::Result<Space> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(Space {
        available: stat.f_bavail.saturating_mul(stat.f_frsize),
        total: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

/// The reply to new mail while space is short.
pub fn insufficient_storage() -> Reply {
    Reply::new(452, [4, 3, 1], "Insufficient system storage")
}

/// The cached verdict on the data_dir's free space; clones share it.
#[derive(Debug, Clone)]
pub struct FreeSpace {
    inner: Arc<Watch>,
}

#[derive(Debug)]
struct Watch {
    dir: PathBuf,
    min_free: MinFree,
    started: Instant,
    /// Milliseconds after `started` of the last measurement.
    measured_at: AtomicU64,
    short: AtomicBool,
}

impl FreeSpace {
    /// Watches the filesystem of `dir`; measures once now.
    pub fn new(dir: &Path, min_free: MinFree) -> FreeSpace {
        let space = FreeSpace {
            inner: Arc::new(Watch {
                dir: dir.to_path_buf(),
                min_free,
                started: Instant::now(),
                measured_at: AtomicU64::new(0),
                short: AtomicBool::new(false),
            }),
        };
        space.measure();
        space
    }

    /// `452 4.3.1` while free space is below `min_free`, from a
    /// measurement at most a second old.
    pub fn refusal(&self) -> Option<Reply> {
        let now = self.elapsed_ms();
        let last = self.inner.measured_at.load(Ordering::Relaxed);
        // One session measures; the others go on with the last verdict.
        if now.saturating_sub(last) >= REFRESH_MS
            && self
                .inner
                .measured_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.measure();
        }
        self.inner
            .short
            .load(Ordering::Relaxed)
            .then(insufficient_storage)
    }

    /// As [`FreeSpace::refusal`], measured now: after a local write failed,
    /// tells whether the failure was the disk filling up.
    pub fn refusal_now(&self) -> Option<Reply> {
        self.inner.measured_at.store(self.elapsed_ms(), Ordering::Relaxed);
        self.measure();
        self.inner
            .short
            .load(Ordering::Relaxed)
            .then(insufficient_storage)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn measure(&self) {
        let space = match measure(&self.inner.dir) {
            Ok(space) => space,
            Err(error) => {
                // Unknown is not short: the store's own errors still fail
                // a message that cannot be written.
                tracing::warn!(error = %error, dir = %self.inner.dir.display(), "cannot measure free space");
                return;
            }
        };
        let threshold = self.inner.min_free.threshold(space.total);
        // At zero nothing fits, whatever min_free says.
        let short = space.available <= threshold;
        let was_short = self.inner.short.swap(short, Ordering::Relaxed);
        match (was_short, short) {
            (false, true) => tracing::warn!(
                available = space.available,
                min_free = threshold,
                dir = %self.inner.dir.display(),
                "free space below min_free: new mail gets 452 4.3.1, delivery goes on"
            ),
            (true, false) => tracing::warn!(
                available = space.available,
                min_free = threshold,
                "free space back above min_free: accepting mail again"
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_free_reads_sizes_and_percentages() {
        assert_eq!(MinFree::parse("1GB"), Ok(MinFree::Bytes(1_000_000_000)));
        assert_eq!(MinFree::parse("64MiB"), Ok(MinFree::Bytes(64 * 1024 * 1024)));
        assert_eq!(MinFree::parse(" 5% "), Ok(MinFree::Percent(5.0)));
        assert_eq!(MinFree::parse("0"), Ok(MinFree::Bytes(0)));
        assert!(MinFree::parse("120%").is_err());
        assert!(MinFree::parse("-1%").is_err());
        assert!(MinFree::parse("lots").is_err());
        assert_eq!(MinFree::default(), MinFree::Bytes(1_000_000_000));
    }

    #[test]
    fn threshold_of_a_percentage_follows_the_filesystem_size() {
        assert_eq!(MinFree::Percent(5.0).threshold(1_000_000), 50_000);
        assert_eq!(MinFree::Bytes(7).threshold(1_000_000), 7);
    }

    #[test]
    fn a_filesystem_with_less_than_min_free_refuses_and_one_with_more_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let space = measure(dir.path()).unwrap();
        assert!(space.total >= space.available && space.total > 0, "{space:?}");

        let roomy = FreeSpace::new(dir.path(), MinFree::Bytes(0));
        assert_eq!(roomy.refusal(), None);
        assert_eq!(roomy.refusal_now(), None);

        let never_enough = FreeSpace::new(dir.path(), MinFree::Percent(100.0));
        let reply = never_enough.refusal().expect("short of space");
        assert_eq!((reply.code, reply.status), (452, Some([4, 3, 1])));
        assert_eq!(reply.text, "Insufficient system storage");
        assert!(never_enough.refusal_now().is_some());
    }
}
