//! A budget of message content held in memory at once, so that memory
//! grows with configuration, not with what clients send. The intake holds a
//! share from loading a message to its commit; a delivery attempt from
//! loading its content to its end. A message larger than the whole budget
//! still goes through, alone.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Copies of a message's content a stage holds at its peak: at delivery
/// the loaded content, a header-edited copy and the wire format; at intake
/// the loaded content (every rule copy shares its body), a copy joined for
/// an ARC seal or a report, and the store's write of it.
const COPIES: u64 = 3;

/// Bytes of message content in memory, shared by everyone holding a
/// [`MemoryShare`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct ContentMemory {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

/// A share of the budget, returned when dropped.
#[derive(Debug)]
pub struct MemoryShare(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl ContentMemory {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        ContentMemory {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until a message of `size` bytes may be worked on in memory.
    pub async fn reserve(&self, size: u64) -> MemoryShare {
        let kib = (size.saturating_mul(COPIES) / 1024).max(1);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX).min(self.total_kib);
        MemoryShare(self.permits.clone().acquire_many_owned(kib).await.ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn shares_wait_for_room_and_oversize_goes_alone() {
        let memory = ContentMemory::new(30 * 1024 * 1024);
        let first = memory.reserve(8 * 1024 * 1024).await;
        // 24 MiB of 30 taken: another 8 MiB message waits for the first.
        let waiting = tokio::spawn({
            let memory = memory.clone();
            async move { memory.reserve(8 * 1024 * 1024).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(second);
        // Larger than the whole budget: runs, holding all of it.
        let alone = memory.reserve(100 * 1024 * 1024).await;
        assert_eq!(memory.permits.available_permits(), 0);
        drop(alone);
        assert_eq!(memory.permits.available_permits(), 30 * 1024);
    }
}
