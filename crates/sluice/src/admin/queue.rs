//! `queue`: list and show entries, retry/hold/release/delete one, retry all.
//! The view types here are the JSON of SPEC section 4's last paragraph.

use super::{AdminError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Status of a queue entry as a whole (`queue list --status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    /// Waiting for its first attempt.
    Queued,
    /// A temporary failure; retried at `next_attempt`.
    Deferred,
    /// Held by an administrator; not attempted until released.
    Held,
}

impl QueueStatus {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::Deferred => "deferred",
            QueueStatus::Held => "held",
        }
    }
}

impl fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one recipient of a queue entry: the entry's statuses plus the
/// final outcomes a recipient reaches while others still wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientQueueStatus {
    /// Waiting for its first attempt.
    Queued,
    /// A temporary failure; retried at `next_attempt`.
    Deferred,
    /// Held by an administrator.
    Held,
    /// Accepted by the next hop.
    Delivered,
    /// Failed permanently or expired; a DSN went to the sender.
    Bounced,
}

impl RecipientQueueStatus {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientQueueStatus::Queued => "queued",
            RecipientQueueStatus::Deferred => "deferred",
            RecipientQueueStatus::Held => "held",
            RecipientQueueStatus::Delivered => "delivered",
            RecipientQueueStatus::Bounced => "bounced",
        }
    }
}

impl fmt::Display for RecipientQueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recipient of a queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientView {
    /// The envelope recipient.
    pub address: String,
    /// Where it stands.
    pub status: RecipientQueueStatus,
    /// The outbound connector routing it, if any.
    pub connector: Option<String>,
    /// The last failure (a reply or a connection error).
    pub last_error: Option<String>,
    /// When the next attempt is due (RFC 3339).
    pub next_attempt: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
}

/// One queue entry (`GET /api/v1/queue`, `sluice queue list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueEntryView {
    /// Queue id.
    pub id: String,
    /// The message's Message-ID.
    pub message_id: String,
    /// Envelope sender (empty for the null sender).
    pub from: String,
    /// Recipients, each with its own status.
    pub recipients: Vec<RecipientView>,
    /// Message size in bytes.
    pub size: u64,
    /// When the message was accepted (RFC 3339).
    pub received_at: String,
    /// The entry's status.
    pub status: QueueStatus,
    /// The last failure of any recipient.
    pub last_error: Option<String>,
    /// The earliest next attempt of any recipient (RFC 3339).
    pub next_attempt: Option<String>,
}

pub use crate::queue::QueueAction;

/// Body of `POST /api/v1/queue/retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryAllResult {
    /// Entries made due now.
    pub retried: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    status: Option<QueueStatus>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/queue", get(list))
        .route("/queue/retry", post(retry_all))
        .route("/queue/{id}", get(show).delete(delete))
        .route("/queue/{id}/{action}", post(act))
}

fn no_entry(id: &str) -> AdminError {
    AdminError::NotFound(format!("queue entry {id:?}"))
}

#[utoipa::path(get, path = "/queue", tag = "queue", operation_id = "queue_list",
    params(("status" = Option<QueueStatus>, Query, description = "Only entries with this status")),
    responses((status = 200, description = "Queue entries, oldest first", body = Vec<QueueEntryView>), (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<QueueEntryView>>, AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    let mut entries = state.backend.queue().await?;
    if let Some(status) = query.status {
        entries.retain(|entry| entry.status == status);
    }
    Ok(Json(entries))
}

#[utoipa::path(get, path = "/queue/{id}", tag = "queue", operation_id = "queue_show",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 200, description = "The entry with its recipients", body = QueueEntryView), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<QueueEntryView>, AdminError> {
    match state.backend.queue_entry(id.clone()).await? {
        Some(entry) => Ok(Json(entry)),
        None => Err(no_entry(&id)),
    }
}

#[utoipa::path(post, path = "/queue/{id}/{action}", tag = "queue", operation_id = "queue_act",
    params(("id" = String, Path, description = "Queue id"),
        ("action" = String, Path, description = "retry, hold or release")),
    responses((status = 204, description = "Done"), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn act(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    let action = match action.as_str() {
        "retry" => QueueAction::Retry,
        "hold" => QueueAction::Hold,
        "release" => QueueAction::Release,
        _ => return Err(AdminError::NotFound(format!("queue action {action:?}"))),
    };
    run(&state, id, action).await
}

#[utoipa::path(delete, path = "/queue/{id}", tag = "queue", operation_id = "queue_delete",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    run(&state, id, QueueAction::Delete).await
}

async fn run(state: &ApiState, id: String, action: QueueAction) -> Result<StatusCode, AdminError> {
    if state.backend.queue_action(id.clone(), action).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_entry(&id))
    }
}

#[utoipa::path(post, path = "/queue/retry", tag = "queue", operation_id = "queue_retry_all",
    responses((status = 200, description = "How many deferred entries are due now", body = RetryAllResult)))]
pub(super) async fn retry_all(State(state): State<ApiState>) -> Result<Json<RetryAllResult>, AdminError> {
    let retried = state.backend.retry_all().await?;
    Ok(Json(RetryAllResult { retried }))
}
