//! TLS-RPT reports leave as ordinary queued mail: taken from delivery's
//! counters, queued to each `rua` mailbox, delivered (and retried) like
//! any other message. Once a day for finished days, and on demand.

use crate::admin::tls_reports::queue_reports;
use crate::deliver::Deliverer;
use crate::queue::Queue;
use std::sync::Arc;
use std::time::Duration;

/// Sends finished days' reports every hour (a day's report leaves within
/// an hour of UTC midnight).
pub(super) fn spawn_daily(
    deliverer: Arc<Deliverer>,
    queue: Queue,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = queue_reports(&deliverer, &queue, false).await {
                tracing::warn!(%error, "TLS reports not queued; next hour again");
            }
        }
    })
}
