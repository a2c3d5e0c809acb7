//! `quarantine`: messages a rule held back. List them, show one (its
//! envelope, why it was held and its header fields, never its body, which
//! may hold the very data the rule caught), release one into the queue, or
//! delete it.

use super::{AdminError, ApiState};
use axum::extract::{Path, State};
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

#[utoipa::path(get, path = "/quarantine", tag = "quarantine", operation_id = "quarantine_list",
    responses((status = 200, description = "Without headers", body = Vec<QuarantineView>)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Vec<QuarantineView>>, AdminError> {
    Ok(Json(state.backend.quarantine().await?))
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
