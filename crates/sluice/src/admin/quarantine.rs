//! `quarantine`: messages a rule held back. List them, show one (its
//! envelope, why it was held and its header fields, never its body, which
//! may hold the very data the rule caught), release one into the queue, or
//! delete it.

use super::{AdminError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// One header field of a quarantined message, unfolded, encoded words
/// decoded where the header is plain text (Subject and the like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeaderField {
    /// The field name as written.
    pub name: String,
    /// The field value.
    pub value: String,
}

/// One quarantined message (`GET /api/v1/quarantine`, `sluice quarantine list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineView {
    /// Quarantine id (the queue id the message gets on release).
    pub id: String,
    /// The message's Message-ID.
    pub message_id: String,
    /// Envelope sender (empty for the null sender).
    pub from: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// Message size in bytes.
    pub size: u64,
    /// The rule that quarantined it.
    pub rule: String,
    /// Why, safe to show (detector names and counts, never matched text).
    pub reason: String,
    /// When it was quarantined (RFC 3339).
    pub quarantined_at: String,
    /// The header section, in order; only in the single-message view
    /// (`GET /api/v1/quarantine/{id}`), as the list does not read contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderField>>,
}

/// What an administrator does with a quarantined message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineAction {
    /// Queue it for delivery as if the quarantine action had not applied.
    Release,
    /// Drop it without notifying anyone.
    Delete,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/quarantine", get(list))
        .route("/quarantine/{id}", get(show).delete(delete))
        .route("/quarantine/{id}/release", post(release))
}

fn no_message(id: &str) -> AdminError {
    AdminError::NotFound(format!("quarantined message {id:?}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/quarantine", tag = "quarantine", operation_id = "quarantine_list",
    params(("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "The X-Next-Cursor of the previous page")),
    responses((status = 200, description = "One page, oldest first, without headers; X-Next-Cursor (and Link rel=next) names the next page when there is one", body = Vec<QuarantineView>,
        headers(("X-Next-Cursor" = String, description = "Cursor of the next page; absent on the last page"))),
        (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<(axum::http::HeaderMap, Json<Vec<QuarantineView>>), AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    let limit = super::paging::limit(query.limit)?;
    let after = super::paging::decode_cursor(query.cursor.as_deref())?;
    let page = state.backend.quarantine_page(after, limit).await?;
    let headers = super::paging::headers("quarantine", "", limit, page.next.as_deref());
    Ok((headers, Json(page.items)))
}

#[utoipa::path(get, path = "/quarantine/{id}", tag = "quarantine", operation_id = "quarantine_show",
    params(("id" = String, Path, description = "Quarantine id")),
    responses((status = 200, description = "With headers", body = QuarantineView), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<QuarantineView>, AdminError> {
    match state.backend.quarantined(id.clone()).await? {
        Some(view) => Ok(Json(view)),
        None => Err(no_message(&id)),
    }
}

#[utoipa::path(post, path = "/quarantine/{id}/release", tag = "quarantine", operation_id = "quarantine_release",
    params(("id" = String, Path, description = "Quarantine id")),
    responses((status = 204, description = "Queued for delivery"), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn release(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    run(&state, id, QuarantineAction::Release).await
}

#[utoipa::path(delete, path = "/quarantine/{id}", tag = "quarantine", operation_id = "quarantine_delete",
    params(("id" = String, Path, description = "Quarantine id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    run(&state, id, QuarantineAction::Delete).await
}

async fn run(state: &ApiState, id: String, action: QuarantineAction) -> Result<StatusCode, AdminError> {
    if state.backend.quarantine_action(id.clone(), action).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_message(&id))
    }
}
