//! TLS-RPT reports leave as ordinary queued mail: taken from delivery's
//! counters, queued to each `rua` mailbox, delivered (and retried) like
//! any other message. Once a day for finished days, and on demand.

use crate::admin::TlsReportSent;
use crate::deliver::Deliverer;
use crate::queue::{Queue, QueueError};
use std::sync::Arc;
use std::time::Duration;

/// Queues the due reports (today's too when `include_today`).
pub(super) async fn send(
    deliverer: &Deliverer,
    queue: &Queue,
    include_today: bool,
) -> Result<Vec<TlsReportSent>, QueueError> {
    let mut sent = Vec::new();
    for report in deliverer.take_tls_reports(include_today).await {
        let mut queue_ids = Vec::new();
        for to in &report.to {
            let detail = format!("TLS report for {} to {to}", report.domain);
            let id = queue
                .enqueue_report(to.clone(), report.content.clone(), detail)
                .await?;
            queue_ids.push(id.0);
        }
        sent.push(TlsReportSent {
            domain: report.domain,
            to: report.to.iter().map(ToString::to_string).collect(),
            queue_ids,
        });
    }
    Ok(sent)
}

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
            if let Err(error) = send(&deliverer, &queue, false).await {
                tracing::warn!(%error, "TLS reports not queued; next hour again");
            }
        }
    })
}
