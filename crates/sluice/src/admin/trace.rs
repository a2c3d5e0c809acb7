//! `trace`: the stored message trace, filtered by message, sender,
//! recipient, age and outcome.

use super::{AdminError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Filters of `GET /api/v1/trace` (query string) and `sluice trace`; every
/// filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    /// Message-ID, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Envelope sender, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Envelope recipient, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only events newer than this age: "30m", "1h", "2d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only events of messages that reached this outcome ("delivered", "bounced"...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// At most this many events, the newest kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One trace event (`sluice trace --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceEventView {
    /// When (RFC 3339).
    pub at: String,
    /// Queue id of the message.
    pub queue_id: String,
    /// Message-ID.
    pub message_id: String,
    /// What happened: received, delivered, deferred, bounced, expired,
    /// rejected, quarantined, released, deleted, ...
    pub event: String,
    /// Envelope sender.
    pub from: String,
    /// The recipient concerned, when the event is about one.
    pub to: Option<String>,
    /// The connector involved.
    pub connector: Option<String>,
    /// The peer (sending client or next hop).
    pub remote_host: Option<String>,
    /// A reply, an error, a rule name.
    pub detail: Option<String>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/trace", get(trace))
}

#[utoipa::path(get, path = "/trace", tag = "trace", operation_id = "trace", params(TraceQuery),
    responses((status = 200, description = "Oldest first", body = Vec<TraceEventView>), (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn trace(
    State(state): State<ApiState>,
    query: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<Json<Vec<TraceEventView>>, AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    if let Some(since) = &query.since {
        crate::config::parse_duration(since)
            .map_err(|message| AdminError::Invalid(format!("since: {message}")))?;
    }
    if let Some(status) = &query.status {
        if crate::trace::TraceKind::parse(status).is_none() {
            let words: Vec<&str> = crate::trace::TraceKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(AdminError::Invalid(format!(
                "status: {status:?} is not a trace status (one of {})",
                words.join(", ")
            )));
        }
    }
    Ok(Json(state.backend.trace(query).await?))
}
