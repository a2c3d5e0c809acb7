//! `queue`: list and show entries, retry/hold/release/delete one, retry all,
//! and the summary by destination and age (Postfix's qshape). The view types
//! here are the JSON of SPEC section 4's last paragraph.

use super::{AdminError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use crate::queue::{QueueStatus, RecipientQueueStatus};

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

pub use crate::queue::{ActResult, QueueAction};

/// Body of `POST /api/v1/queue/retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryAllResult {
    /// Entries made due now.
    pub retried: usize,
    /// Held entries, left held (release them to deliver).
    #[serde(default)]
    pub held: usize,
}

/// Body of `DELETE /api/v1/queue?status=S&domain=D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeleteAllResult {
    /// Entries deleted.
    pub deleted: usize,
}

/// Body of `POST /api/v1/queue/{id}/{action}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueActionResult {
    /// Whether the entry changed; `false` for a hold of a held entry or a
    /// release of an active one (no trace event is recorded then).
    pub changed: bool,
    /// One line for a human: `Q1: held`, `Q1: already held; nothing changed`.
    pub message: String,
}

/// Age buckets of `queue summary`, in minutes: each twice the previous, as
/// qshape's defaults (`-t 5 -b 10`); the last has no upper bound.
pub const AGE_BUCKETS_MINUTES: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// One row of `queue summary`: waiting recipients for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueShapeRow {
    /// The recipient domain, or `TOTAL`.
    pub destination: String,
    /// Waiting recipients (queued, deferred or held).
    pub total: u64,
    /// Of those, how many per age bucket (the last: older than the last bound).
    pub by_age: Vec<u64>,
}

/// `GET /api/v1/queue/summary`: the queue's shape, as Postfix's qshape
/// prints it: waiting recipients by destination domain and age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSummary {
    /// Upper bounds of the age buckets in minutes, then `null` for the open last one.
    pub age_buckets_minutes: Vec<Option<u64>>,
    /// Every destination together.
    pub total: QueueShapeRow,
    /// One row per destination, most recipients first (then by name).
    pub destinations: Vec<QueueShapeRow>,
}

impl QueueSummary {
    /// Shapes counters as the spool keeps them: (domain, minute of
    /// receipt, waiting recipients), as of `now_ms`.
    pub fn from_counts(counts: impl IntoIterator<Item = (String, u64, u64)>, now_ms: u64) -> QueueSummary {
        let buckets = AGE_BUCKETS_MINUTES.len() + 1;
        let row = |destination: &str| QueueShapeRow {
            destination: destination.to_string(),
            total: 0,
            by_age: vec![0; buckets],
        };
        let mut total = row("TOTAL");
        let mut rows: std::collections::BTreeMap<String, QueueShapeRow> = Default::default();
        let now_minute = now_ms / 60_000;
        for (domain, received_minute, recipients) in counts {
            let age_minutes = now_minute.saturating_sub(received_minute);
            let bucket = AGE_BUCKETS_MINUTES
                .iter()
                .position(|&bound| age_minutes < bound)
                .unwrap_or(buckets - 1);
            let row = rows.entry(domain.clone()).or_insert_with(|| row(&domain));
            for counted in [row, &mut total] {
                counted.total += recipients;
                counted.by_age[bucket] += recipients;
            }
        }
        Self::ranked(total, rows.into_values().collect())
    }

    fn ranked(total: QueueShapeRow, mut destinations: Vec<QueueShapeRow>) -> QueueSummary {
        destinations.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then_with(|| a.destination.cmp(&b.destination))
        });
        QueueSummary {
            age_buckets_minutes: AGE_BUCKETS_MINUTES
                .iter()
                .map(|&m| Some(m))
                .chain([None])
                .collect(),
            total,
            destinations,
        }
    }

    /// Shapes `entries` as of `now`: each waiting recipient counts once,
    /// in the row of its domain and the bucket of its message's age.
    pub fn of(entries: &[QueueEntryView], now: std::time::SystemTime) -> QueueSummary {
        let buckets = AGE_BUCKETS_MINUTES.len() + 1;
        let row = |destination: &str| QueueShapeRow {
            destination: destination.to_string(),
            total: 0,
            by_age: vec![0; buckets],
        };
        let mut total = row("TOTAL");
        let mut rows: std::collections::BTreeMap<String, QueueShapeRow> = Default::default();
        for entry in entries {
            let age_minutes = humantime::parse_rfc3339(&entry.received_at)
                .ok()
                .and_then(|received| now.duration_since(received).ok())
                .map_or(0, |age| age.as_secs() / 60);
            let bucket = AGE_BUCKETS_MINUTES
                .iter()
                .position(|&bound| age_minutes < bound)
                .unwrap_or(buckets - 1);
            for recipient in &entry.recipients {
                if !matches!(
                    recipient.status,
                    RecipientQueueStatus::Queued
                        | RecipientQueueStatus::Deferred
                        | RecipientQueueStatus::Held
                ) {
                    continue;
                }
                let domain = recipient
                    .address
                    .rsplit_once('@')
                    .map_or(recipient.address.as_str(), |(_, domain)| domain)
                    .to_ascii_lowercase();
                let row = rows.entry(domain.clone()).or_insert_with(|| row(&domain));
                for counted in [row, &mut total] {
                    counted.total += 1;
                    counted.by_age[bucket] += 1;
                }
            }
        }
        Self::ranked(total, rows.into_values().collect())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    status: Option<QueueStatus>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/queue", get(list).delete(delete_all))
        .route("/queue/retry", post(retry_all))
        .route("/queue/summary", get(summary))
        .route("/queue/{id}", get(show).delete(delete))
        .route("/queue/{id}/{action}", post(act))
}

fn no_entry(id: &str) -> AdminError {
    AdminError::NotFound(format!("queue entry {id:?}"))
}

#[utoipa::path(get, path = "/queue", tag = "queue", operation_id = "queue_list",
    params(("status" = Option<QueueStatus>, Query, description = "Only entries with this status"),
        ("limit" = Option<usize>, Query, description = "Page size, 1 to 1000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "The X-Next-Cursor of the previous page")),
    responses((status = 200, description = "One page of queue entries, oldest first; X-Next-Cursor (and Link rel=next) names the next page when there is one", body = Vec<QueueEntryView>,
        headers(("X-Next-Cursor" = String, description = "Cursor of the next page; absent on the last page"))), (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<(axum::http::HeaderMap, Json<Vec<QueueEntryView>>), AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    let limit = super::paging::limit(query.limit)?;
    let after = super::paging::decode_cursor(query.cursor.as_deref())?;
    let page = state.backend.queue_page(query.status, after, limit).await?;
    let filter = query.status.map(|s| format!("status={s}")).unwrap_or_default();
    let headers = super::paging::headers("queue", &filter, limit, page.next.as_deref());
    Ok((headers, Json(page.items)))
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

#[utoipa::path(get, path = "/queue/summary", tag = "queue", operation_id = "queue_summary",
    responses((status = 200, description = "Waiting recipients by destination domain and age, as qshape", body = QueueSummary)))]
pub(super) async fn summary(State(state): State<ApiState>) -> Result<Json<QueueSummary>, AdminError> {
    Ok(Json(state.backend.queue_summary().await?))
}

#[utoipa::path(post, path = "/queue/{id}/{action}", tag = "queue", operation_id = "queue_act",
    params(("id" = String, Path, description = "Queue id"),
        ("action" = String, Path, description = "retry, hold or release")),
    responses((status = 200, description = "Done, or nothing to do (changed = false)", body = QueueActionResult),
        (status = 404, description = "Unknown id", body = super::ErrorBody),
        (status = 409, description = "Retry of a held entry: it stays held until released", body = super::ErrorBody)))]
pub(super) async fn act(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<QueueActionResult>, AdminError> {
    let (action, done) = match action.as_str() {
        "retry" => (QueueAction::Retry, "due for retry now"),
        "hold" => (QueueAction::Hold, "held"),
        "release" => (QueueAction::Release, "released"),
        _ => return Err(AdminError::NotFound(format!("queue action {action:?}"))),
    };
    let result = |changed: bool, message: String| Ok(Json(QueueActionResult { changed, message }));
    match state.backend.queue_action(id.clone(), action).await? {
        ActResult::Missing => Err(no_entry(&id)),
        ActResult::Done => result(true, format!("{id}: {done}")),
        ActResult::Unchanged if action == QueueAction::Hold => {
            result(false, format!("{id}: already held; nothing changed"))
        }
        ActResult::Unchanged => result(false, format!("{id}: not held; nothing changed")),
        ActResult::Held => Err(AdminError::WrongState(format!(
            "{id} is held and was not retried: release it to deliver it (sluice queue release {id})"
        ))),
    }
}

#[utoipa::path(delete, path = "/queue/{id}", tag = "queue", operation_id = "queue_delete",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown id", body = super::ErrorBody)))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    match state
        .backend
        .queue_action(id.clone(), QueueAction::Delete)
        .await?
    {
        ActResult::Missing => Err(no_entry(&id)),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    status: Option<QueueStatus>,
    domain: Option<String>,
}

#[utoipa::path(delete, path = "/queue", tag = "queue", operation_id = "queue_delete_all",
    params(("status" = Option<QueueStatus>, Query, description = "Only entries with this status"),
        ("domain" = Option<String>, Query, description = "Only entries with a waiting recipient in this domain")),
    responses((status = 200, description = "Every matching entry deleted, without bounces", body = DeleteAllResult),
        (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn delete_all(
    State(state): State<ApiState>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<DeleteAllResult>, AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    let deleted = state.backend.delete_all(query.status, query.domain).await?;
    Ok(Json(DeleteAllResult { deleted }))
}

#[utoipa::path(post, path = "/queue/retry", tag = "queue", operation_id = "queue_retry_all",
    responses((status = 200, description = "Every waiting entry due now; held entries stay held", body = RetryAllResult)))]
pub(super) async fn retry_all(State(state): State<ApiState>) -> Result<Json<RetryAllResult>, AdminError> {
    Ok(Json(state.backend.retry_all().await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn entry(
        id: &str,
        age_minutes: u64,
        now: SystemTime,
        recipients: &[(&str, RecipientQueueStatus)],
    ) -> QueueEntryView {
        QueueEntryView {
            id: id.into(),
            message_id: String::new(),
            from: "a@contoso.test".into(),
            recipients: recipients
                .iter()
                .map(|(address, status)| RecipientView {
                    address: address.to_string(),
                    status: *status,
                    connector: None,
                    last_error: None,
                    next_attempt: None,
                    attempts: 0,
                })
                .collect(),
            size: 1,
            received_at: crate::trace::rfc3339(
                (now - Duration::from_secs(age_minutes * 60))
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
            ),
            status: QueueStatus::Deferred,
            last_error: None,
            next_attempt: None,
        }
    }

    #[test]
    fn summary_counts_waiting_recipients_by_domain_and_age() {
        use RecipientQueueStatus::*;
        let now = SystemTime::now();
        let entries = [
            entry(
                "A",
                2,
                now,
                &[("x@fabrikam.test", Deferred), ("y@Fabrikam.test", Deferred)],
            ),
            entry(
                "B",
                30,
                now,
                &[("z@fabrikam.test", Held), ("w@example.org", Delivered)],
            ),
            entry("C", 3000, now, &[("v@example.org", Queued)]),
        ];
        let summary = QueueSummary::of(&entries, now);
        assert_eq!(summary.age_buckets_minutes.len(), 10);
        assert_eq!(summary.age_buckets_minutes.last(), Some(&None));
        assert_eq!(summary.total.total, 4);
        assert_eq!(summary.total.by_age, vec![2, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
        let rows: Vec<(&str, u64)> = summary
            .destinations
            .iter()
            .map(|r| (r.destination.as_str(), r.total))
            .collect();
        assert_eq!(rows, [("fabrikam.test", 3), ("example.org", 1)]);
        assert_eq!(summary.destinations[1].by_age[9], 1, "older than 1280 minutes");
    }
}
