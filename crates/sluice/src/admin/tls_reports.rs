//! `POST /api/v1/tls-reports/send`: sends the TLS-RPT aggregate reports
//! counted so far, today's included, instead of waiting for the daily run
//! (`sluice tlsrpt send`).

use super::{AdminError, ApiState};
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
