//! `/api/v1/dkim`: the node's DKIM (and ARC sealing) keys. Only public
//! halves leave: each key as [`KeyView`], with the DNS record to publish.

use super::{AdminError, ApiState, JsonBody};
use crate::auth::keys::{KeyError, KeyView, Keyring, NewKeyRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/dkim", get(list).post(create))
        .route("/dkim/{domain}", get(show))
        .route("/dkim/{domain}/{selector}", axum::routing::delete(remove))
        .route("/dkim/{domain}/{selector}/activate", post(activate))
}

fn keyring(state: &ApiState) -> Result<Arc<Keyring>, AdminError> {
    state
        .backend
        .dkim()
        .ok_or_else(|| AdminError::NotFound("DKIM key store on this node".into()))
}

impl From<KeyError> for AdminError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Invalid(_) => AdminError::Invalid(error.to_string()),
            KeyError::NotFound(what) => AdminError::NotFound(format!("DKIM key {what}")),
            KeyError::Conflict(what) => AdminError::Conflict(format!("DKIM key {what}")),
            KeyError::Generate(_) | KeyError::Store(_) => AdminError::Internal(error.to_string()),
        }
    }
}

/// Every key, without private halves.
#[utoipa::path(get, path = "/dkim", tag = "dkim", operation_id = "dkim_list",
    responses((status = 200, description = "Every key with its DNS record", body = Vec<KeyView>)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Vec<KeyView>>, AdminError> {
    Ok(Json(keyring(&state)?.list()))
}

/// Makes a key; the domain's first key signs at once, a later one waits
/// for `activate` (publish its record first).
#[utoipa::path(post, path = "/dkim", tag = "dkim", operation_id = "dkim_create",
    request_body = NewKeyRequest,
    responses((status = 201, description = "Created; publish `record` at `record_name`", body = KeyView),
        (status = 400, description = "Invalid domain or selector", body = super::ErrorBody),
        (status = 409, description = "The selector exists", body = super::ErrorBody)))]
pub(super) async fn create(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<NewKeyRequest>,
) -> Result<(StatusCode, Json<KeyView>), AdminError> {
    let view = keyring(&state)?.create(&request).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The keys of one domain, each with whether DNS publishes it.
#[utoipa::path(get, path = "/dkim/{domain}", tag = "dkim", operation_id = "dkim_show",
    params(("domain" = String, Path, description = "Signing domain")),
    responses((status = 200, description = "The domain's keys", body = Vec<KeyView>),
        (status = 404, description = "No key for the domain", body = super::ErrorBody)))]
pub(super) async fn show(
    State(state): State<ApiState>,
    Path(domain): Path<String>,
) -> Result<Json<Vec<KeyView>>, AdminError> {
    let wanted = domain.trim_end_matches('.').to_ascii_lowercase();
    let keyring = keyring(&state)?;
    let mut keys: Vec<KeyView> = keyring
        .list()
        .into_iter()
        .filter(|k| k.domain == wanted)
        .collect();
    if keys.is_empty() {
        return Err(AdminError::NotFound(format!("DKIM key for {domain}")));
    }
    for key in &mut keys {
        key.published = keyring.published(key).await;
    }
    Ok(Json(keys))
}

/// Retires a key (the active one only when it is the domain's last).
#[utoipa::path(delete, path = "/dkim/{domain}/{selector}", tag = "dkim", operation_id = "dkim_delete",
    params(("domain" = String, Path, description = "Signing domain"), ("selector" = String, Path, description = "Selector")),
    responses((status = 204, description = "Removed"),
        (status = 400, description = "The active key while another exists", body = super::ErrorBody),
        (status = 404, description = "No such key", body = super::ErrorBody)))]
pub(super) async fn remove(
    State(state): State<ApiState>,
    Path((domain, selector)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    keyring(&state)?.remove(&domain, &selector).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes the selector the one that signs its domain's mail.
#[utoipa::path(post, path = "/dkim/{domain}/{selector}/activate", tag = "dkim", operation_id = "dkim_activate",
    params(("domain" = String, Path, description = "Signing domain"), ("selector" = String, Path, description = "Selector")),
    responses((status = 204, description = "Active"), (status = 404, description = "No such key", body = super::ErrorBody)))]
pub(super) async fn activate(
    State(state): State<ApiState>,
    Path((domain, selector)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    keyring(&state)?.activate(&domain, &selector).await?;
    Ok(StatusCode::NO_CONTENT)
}
