//! Quarantine: messages a rule held back. Each is a complete queue entry
//! (its routes already decided) plus why it was held; releasing it puts it
//! in the queue as it would have gone had the quarantine action not
//! applied, so the rest of the rule's actions still count.

use super::entry::QueueEntry;
use serde::{Deserialize, Serialize};

/// One quarantined message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The message as it will be queued on release.
    pub entry: QueueEntry,
    /// The rule that quarantined it.
    pub rule: String,
    /// When, ms since the epoch.
    pub quarantined_at_ms: u64,
    /// A summary safe to show (detector names and counts, never matches).
    pub reason: String,
}
