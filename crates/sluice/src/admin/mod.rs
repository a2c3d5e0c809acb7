//! The admin REST API (SPEC section 6, prefix `/api/v1`): objects, queue,
//! quarantine, trace, apply and export, behind a bearer token.
//!
//! Input: HTTP requests. Output: JSON views ([`QueueEntryView`],
//! [`TraceEventView`], the object types of [`crate::config::objects`]) that
//! the CLI deserialises too, so API and CLI cannot drift.
//!
//! The handlers never touch the store, queue or trace themselves: they call
//! an [`AdminBackend`], which [`NodeAdmin`] implements over the node's parts
//! (the tests run it on a temporary store). Every object write, whatever
//! asks for it (API, `sluice apply`, the admin center, `tenant add`,
//! connector validation), is one [`AdminBackend::change_objects`]: the edit
//! is made on the stored objects and the merged result is compiled whole,
//! under one lock (the submitted objects alone cannot be judged: a rule may
//! name a connector stored earlier), so a bad object never reaches the store
//! and an `apply` is all-or-nothing.
//!
//! Failures: [`AdminError`] maps to a status and a JSON body
//! `{"error": "..."}`; internal details are logged, never sent.

mod auth;
mod dkim;
pub mod explain;
mod node;
pub mod nodes;
mod objects;
mod openapi;
pub mod paging;
mod quarantine;
mod queue;
pub mod scan;
mod stats;
pub mod tenants;
pub(crate) mod tls_reports;
mod trace;
mod ui;
mod validation;
mod views;

pub use auth::load_or_create_token;
pub use node::NodeAdmin;
pub use quarantine::{HeaderField, QuarantineAction, QuarantineView};
pub use queue::{
    ActResult, DeleteAllResult, QueueAction, QueueActionResult, QueueEntryView, QueueShapeRow, QueueStatus,
    QueueSummary, RecipientQueueStatus, RecipientView, RetryAllResult, AGE_BUCKETS_MINUTES,
};
pub use stats::{NodeStats, StatsView};
pub use tls_reports::TlsReportSent;
pub use trace::{TraceEventView, TraceQuery};
pub use views::queue_view;

use crate::config::objects::{ObjectKind, ObjectSet};
pub use crate::deliver::{ValidationReport, ValidationStep};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
pub use nodes::NodeView;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
pub use validation::ValidateRequest;

/// A boxed, sendable future: lets [`AdminBackend`] stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An edit of the stored objects (see [`AdminBackend::change_objects`]):
/// `Ok(false)` or an error leaves them as they are.
pub type ObjectChange = Box<dyn FnOnce(&mut ObjectSet) -> Result<bool, AdminError> + Send>;

/// What the admin API needs from a running node. [`NodeAdmin`] implements
/// it over the store, queue and trace; arguments are owned so an
/// implementation can move them into spawned work.
pub trait AdminBackend: Send + Sync + 'static {
    /// Every stored object.
    fn objects(&self) -> BoxFuture<'_, Result<ObjectSet, AdminError>>;

    /// The one write path of objects: under one lock, `change` edits the
    /// stored objects (it may refuse: not found, conflict), the result is
    /// compiled whole into the policy, stored in one commit and published.
    /// On any error nothing changes ([`AdminError::Invalid`] carries the
    /// [`crate::config::objects::ObjectError`] text). `false` when `change`
    /// found nothing to do.
    fn change_objects(&self, change: ObjectChange) -> BoxFuture<'_, Result<bool, AdminError>>;

    /// Upserts `set` into the stored objects ([`ObjectSet::merge`], with
    /// `prune` dropping objects absent from `set`): one [`Self::change_objects`].
    fn apply(&self, set: ObjectSet, prune: bool) -> BoxFuture<'_, Result<(), AdminError>> {
        let change: ObjectChange = Box::new(move |objects| {
            objects.merge(set, prune);
            Ok(true)
        });
        Box::pin(async move { self.change_objects(change).await.map(drop) })
    }

    /// Removes one object; `false` when it did not exist.
    fn remove(&self, kind: ObjectKind, name: String) -> BoxFuture<'_, Result<bool, AdminError>> {
        self.change_objects(Box::new(move |objects| Ok(objects.remove(kind, &name))))
    }

    /// Every queue entry.
    fn queue(&self) -> BoxFuture<'_, Result<Vec<QueueEntryView>, AdminError>>;

    /// The queue's shape (`queue summary`) as of now.
    fn queue_summary(&self) -> BoxFuture<'_, Result<QueueSummary, AdminError>> {
        Box::pin(async move {
            let entries = self.queue().await?;
            Ok(QueueSummary::of(&entries, std::time::SystemTime::now()))
        })
    }

    /// At most `limit` queue entries with an id after `after`, oldest first,
    /// only those of `status` when given.
    fn queue_page(
        &self,
        status: Option<QueueStatus>,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<paging::Listing<QueueEntryView>, AdminError>> {
        Box::pin(async move {
            let mut entries = self.queue().await?;
            entries.retain(|entry| status.is_none_or(|status| entry.status == status));
            Ok(paging::slice(entries, |e| e.id.clone(), after.as_deref(), limit))
        })
    }

    /// One queue entry, `None` when the id is unknown.
    fn queue_entry(&self, id: String) -> BoxFuture<'_, Result<Option<QueueEntryView>, AdminError>>;

    /// Retries, holds, releases or deletes an entry, as postsuper does
    /// ([`crate::queue::Queue::act`]).
    fn queue_action(&self, id: String, action: QueueAction) -> BoxFuture<'_, Result<ActResult, AdminError>>;

    /// Deletes every entry of `status` with a waiting recipient in
    /// `domain` (each when given), without bounces; says how many.
    fn delete_all(
        &self,
        status: Option<QueueStatus>,
        domain: Option<String>,
    ) -> BoxFuture<'_, Result<usize, AdminError>> {
        Box::pin(async move {
            let mut deleted = 0;
            for entry in self.queue().await? {
                let in_domain = domain.as_deref().is_none_or(|domain| {
                    entry.recipients.iter().any(|r| {
                        r.address
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                    })
                });
                if status.is_none_or(|s| entry.status == s) && in_domain {
                    self.queue_action(entry.id, QueueAction::Delete).await?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
    }

    /// Makes every waiting entry due now, held ones excepted; says how many of each.
    fn retry_all(&self) -> BoxFuture<'_, Result<RetryAllResult, AdminError>>;

    /// Every quarantined message, oldest first, without headers.
    fn quarantine(&self) -> BoxFuture<'_, Result<Vec<QuarantineView>, AdminError>>;

    /// At most `limit` quarantined messages with an id after `after`, oldest first.
    fn quarantine_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<paging::Listing<QuarantineView>, AdminError>> {
        Box::pin(async move {
            let held = self.quarantine().await?;
            Ok(paging::slice(held, |q| q.id.clone(), after.as_deref(), limit))
        })
    }

    /// One quarantined message with its header fields, `None` when the id is unknown.
    fn quarantined(&self, id: String) -> BoxFuture<'_, Result<Option<QuarantineView>, AdminError>>;

    /// Releases or deletes a quarantined message; `false` when the id is unknown.
    fn quarantine_action(
        &self,
        id: String,
        action: QuarantineAction,
    ) -> BoxFuture<'_, Result<bool, AdminError>>;

    /// Trace events matching `query`, oldest first.
    fn trace(&self, query: TraceQuery) -> BoxFuture<'_, Result<Vec<TraceEventView>, AdminError>>;

    /// At most `limit` trace events after the key `after`, oldest first,
    /// newer than `since_ms` (the unfiltered trace, read page by page).
    fn trace_page(
        &self,
        since_ms: u64,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<paging::Listing<TraceEventView>, AdminError>> {
        Box::pin(async move {
            let events = self.trace(TraceQuery::default()).await?;
            let keyed: Vec<(String, TraceEventView)> = events
                .into_iter()
                .enumerate()
                .filter(|(_, e)| {
                    humantime::parse_rfc3339(&e.at)
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .is_none_or(|t| t.as_millis() as u64 >= since_ms)
                })
                .map(|(i, e)| (format!("{i:032x}"), e))
                .collect();
            let page = paging::slice(keyed, |(key, _)| key.clone(), after.as_deref(), limit);
            Ok(paging::Listing {
                items: page.items.into_iter().map(|(_, e)| e).collect(),
                next: page.next,
            })
        })
    }

    /// Validates an outbound connector (connect, TLS, test message to
    /// `recipients`, or its stored validation recipients when empty) and
    /// records the result on the connector.
    fn validate_connector(
        &self,
        name: String,
        recipients: Vec<String>,
    ) -> BoxFuture<'_, Result<ValidationReport, AdminError>>;

    /// The node's current objects, validated (for `route explain`).
    fn policy(&self) -> BoxFuture<'_, Result<Arc<crate::policy::Policy>, AdminError>>;

    /// Queue depth by status and the counted activity since `since_ms`
    /// (for `/metrics` and the dashboard): from memory, never the stored trace.
    fn stats(&self, since_ms: u64) -> BoxFuture<'_, Result<NodeStats, AdminError>>;

    /// The TLS policy `domain` publishes for MX delivery (DANE, MTA-STS),
    /// for `route explain`; `None` when none.
    fn published_tls_policy(&self, _domain: String) -> BoxFuture<'_, Result<Option<String>, AdminError>> {
        Box::pin(async { Ok(None) })
    }

    /// Queues the TLS-RPT reports counted so far, today's included.
    fn send_tls_reports(&self) -> BoxFuture<'_, Result<Vec<TlsReportSent>, AdminError>> {
        Box::pin(async { Err(AdminError::NotFound("TLS reporting on this node".into())) })
    }

    /// `[partner]` when the node is a scanner for tenants (SPEC section 12).
    fn partner(&self) -> Option<crate::tenant::PartnerSettings> {
        None
    }

    /// The connector validation messages the node recorded, oldest first.
    fn validations(
        &self,
    ) -> BoxFuture<'_, Result<Vec<crate::tenant::validation::ValidationRecord>, AdminError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The node's DKIM and ARC keys (absent where keys are not kept).
    fn dkim(&self) -> Option<Arc<crate::auth::keys::Keyring>> {
        None
    }

    /// The nodes sharing this node's store, by name.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeView>, AdminError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Why an admin request failed; each variant is one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400: the request or an object is invalid; the text names the object and key.
    #[error("{0}")]
    Invalid(String),
    /// 404: the named thing does not exist; the text says what was looked for.
    #[error("no such {0}")]
    NotFound(String),
    /// 409: creating something that already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// 409: the thing is in a state that forbids the request; the text says
    /// which and what to do.
    #[error("{0}")]
    WrongState(String),
    /// 500: the node failed; the text is logged, the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One line for a human.
    pub error: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) | AdminError::WrongState(_) => StatusCode::CONFLICT,
            AdminError::Internal(detail) => {
                tracing::error!(error = %detail, "admin request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let error = match self {
            AdminError::Internal(_) => "internal error; see the node's log".to_string(),
            other => other.to_string(),
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

/// Body of `POST /api/v1/apply`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// Objects to upsert.
    pub objects: ObjectSet,
    /// Drop stored objects absent from `objects`.
    #[serde(default)]
    pub prune: bool,
}

/// A JSON request body whose rejection is a 400 with a JSON error body
/// (axum's own [`Json`] answers 415/422 in plain text).
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(AdminError::Invalid(json_rejection_text(&rejection))),
        }
    }
}

fn json_rejection_text(rejection: &JsonRejection) -> String {
    format!("invalid JSON body: {}", rejection.body_text())
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) backend: Arc<dyn AdminBackend>,
}

/// The admin API. `token` is the bearer token every `/api/v1` request must carry.
pub fn router(backend: Arc<dyn AdminBackend>, token: String) -> Router {
    let state = ApiState { backend };
    let public = Router::new()
        .merge(ui::routes())
        .merge(openapi::routes())
        .route("/metrics", get(stats::metrics))
        .with_state(state.clone());
    let api = Router::new()
        .merge(objects::routes())
        .merge(queue::routes())
        .merge(quarantine::routes())
        .merge(trace::routes())
        .merge(tls_reports::routes())
        .route("/apply", post(apply))
        .route("/export", get(export))
        .route("/outbound-connectors/{name}/validate", post(validation::validate))
        .route("/route/explain", post(explain::handle))
        .route("/scan", post(scan::scan))
        .route("/stats", get(stats::stats))
        .merge(tenants::routes())
        .merge(dkim::routes())
        .merge(nodes::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::BearerToken::new(token)),
            auth::require_token,
        ))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .nest("/api/v1", api)
        .merge(public)
}

async fn not_found() -> AdminError {
    AdminError::NotFound("API path".into())
}

#[utoipa::path(post, path = "/apply", tag = "objects", operation_id = "apply", request_body = ApplyRequest,
    responses((status = 204, description = "Applied"), (status = 400, description = "Nothing changed; the text names the object and key", body = ErrorBody)))]
async fn apply(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<ApplyRequest>,
) -> Result<StatusCode, AdminError> {
    state.backend.apply(request.objects, request.prune).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/export", tag = "objects", operation_id = "export",
    responses((status = 200, description = "Every object (round-trips through apply)", body = ObjectSet)))]
async fn export(State(state): State<ApiState>) -> Result<Json<ObjectSet>, AdminError> {
    // Configuration only: runtime state (last_validation) stays on the node.
    Ok(Json(state.backend.objects().await?.configuration()))
}

#[cfg(test)]
pub(crate) mod tests;
