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
    /// Without other filters: the page size (1 to 1000, default 1000),
    /// oldest first. With a filter: at most this many events, the newest kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The X-Next-Cursor of the previous page (unfiltered trace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl TraceQuery {
    /// Whether a filter beyond `since` is given: such a search keeps every
    /// event of each matching message, so it is answered whole, not paged.
    pub fn is_search(&self) -> bool {
        self.message_id.is_some() || self.from.is_some() || self.to.is_some() || self.status.is_some()
    }
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
    /// The node that recorded the event (on a cluster, which node
    /// accepted, delivered or acted).
    pub node: Option<String>,
}

/// The start of the time range `since` ("30m", "2d") names: that long
/// before now, in milliseconds; `None` when no range is given.
pub(crate) fn since_ms(since: Option<&str>) -> Result<Option<u64>, AdminError> {
    since
        .map(|text| {
            let age = crate::config::parse_duration(text)
                .map_err(|message| AdminError::Invalid(format!("since: {message}")))?;
            Ok(crate::trace::now_ms().saturating_sub(age.as_millis() as u64))
        })
        .transpose()
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/trace", get(trace))
}

#[utoipa::path(get, path = "/trace", tag = "trace", operation_id = "trace", params(TraceQuery),
    responses((status = 200, description = "Oldest first; unfiltered, one page, X-Next-Cursor (and Link rel=next) naming the next page when there is one", body = Vec<TraceEventView>,
        headers(("X-Next-Cursor" = String, description = "Cursor of the next page; absent on the last page"))), (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn trace(
    State(state): State<ApiState>,
    query: Result<Query<TraceQuery>, QueryRejection>,
) -> Result<(axum::http::HeaderMap, Json<Vec<TraceEventView>>), AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    since_ms(query.since.as_deref())?;
    if let Some(status) = &query.status {
        if crate::trace::TraceKind::parse(status).is_none() {
            let words: Vec<&str> = crate::trace::TraceKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(AdminError::Invalid(format!(
                "status: {status:?} is not a trace status (one of {})",
                words.join(", ")
            )));
        }
    }
    if query.is_search() {
        if query.cursor.is_some() {
            return Err(AdminError::Invalid(
                "cursor: a filtered trace is answered whole; drop the cursor".into(),
            ));
        }
        return Ok((Default::default(), Json(state.backend.trace(query).await?)));
    }
    let limit = super::paging::limit(query.limit)?;
    let after = super::paging::decode_cursor(query.cursor.as_deref())?;
    let since_ms = since_ms(query.since.as_deref())?.unwrap_or(0);
    let page = state.backend.trace_page(since_ms, after, limit).await?;
    // The cursor alone places the next page; `since` only set where the first began.
    let headers = super::paging::headers("trace", "", limit, page.next.as_deref());
    Ok((headers, Json(page.items)))
}
