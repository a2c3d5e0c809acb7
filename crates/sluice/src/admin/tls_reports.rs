//! `POST /api/v1/tls-reports/send`: sends the TLS-RPT aggregate reports
//! counted so far, today's included, instead of waiting for the daily run
//! (`sluice tlsrpt send`).

use super::{AdminError, ApiState};
use crate::deliver::Deliverer;
use crate::queue::{Queue, QueueError};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// One report queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TlsReportSent {
    /// The policy domain the report is about.
    pub domain: String,
    /// Its `rua` mailboxes.
    pub to: Vec<String>,
    /// Queue ids of the report messages.
    pub queue_ids: Vec<String>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/tls-reports/send", post(send))
}

#[utoipa::path(post, path = "/tls-reports/send", tag = "node", operation_id = "tls_reports_send",
    responses((status = 200, description = "The reports queued, one per policy domain and day", body = [TlsReportSent])))]
pub(super) async fn send(State(state): State<ApiState>) -> Result<Json<Vec<TlsReportSent>>, AdminError> {
    Ok(Json(state.backend.send_tls_reports().await?))
}

/// Queues the due reports (today's too when `include_today`).
pub(crate) async fn queue_reports(
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
