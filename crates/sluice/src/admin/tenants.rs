//! `/api/v1/tenants` (SPEC section 12): a scanner node's tenants. Add and
//! remove are one object write each through the node's single write path
//! ([`super::AdminBackend::apply`]), so a tenant is either wholly there or
//! not at all; show adds the tenant's health from the trace and the
//! validation records; kit prints the tenant's side.

use super::{AdminError, ApiState, JsonBody, TraceQuery};
use crate::tenant::health::{self, TenantView};
use crate::tenant::kit::{self, KitFormat};
use crate::tenant::{self as tenants, PartnerSettings, TenantRequest};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/tenants", get(list).post(add))
        .route("/tenants/{name}", get(show).delete(remove))
        .route("/tenants/{name}/kit", get(kit_text))
}

/// `?format=` of the kit.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KitQuery {
    /// `ps1` (default), `toml` or `html`.
    #[serde(default)]
    pub format: Option<KitFormat>,
}

/// A tenant's kit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KitView {
    /// The tenant.
    pub domain: String,
    /// The form.
    pub format: KitFormat,
    /// The text to save or paste.
    pub text: String,
}

fn partner(state: &ApiState) -> Result<PartnerSettings, AdminError> {
    state.backend.partner().ok_or_else(|| {
        AdminError::WrongState(
            "this node is not a scanning partner: set [partner] (smtp_host, egress_ips, validation_address) in its sluice.toml"
                .into(),
        )
    })
}

async fn views(state: &ApiState, domain: Option<&str>) -> Result<Vec<TenantView>, AdminError> {
    let objects = state.backend.objects().await?;
    let stored: Vec<_> = tenants::tenants(&objects)
        .into_iter()
        .filter(|t| domain.is_none_or(|d| t.domain.eq_ignore_ascii_case(d)))
        .collect();
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let events = state.backend.trace(TraceQuery::default()).await?;
    let validations = state.backend.validations().await?;
    let day_ago = crate::trace::rfc3339(crate::trace::now_ms().saturating_sub(24 * 3600 * 1000));
    Ok(stored
        .iter()
        .map(|t| health::view(t, &events, &validations, &day_ago))
        .collect())
}

#[utoipa::path(get, path = "/tenants", tag = "tenants", operation_id = "tenants_list",
    responses((status = 200, description = "Every tenant with its health", body = Vec<TenantView>),
        (status = 409, description = "Not a scanner node ([partner] unset)", body = super::ErrorBody)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Vec<TenantView>>, AdminError> {
    partner(&state)?;
    Ok(Json(views(&state, None).await?))
}

#[utoipa::path(post, path = "/tenants", tag = "tenants", operation_id = "tenants_add",
    request_body = TenantRequest,
    responses((status = 201, description = "Created: the tenant's objects, in one atomic change", body = TenantView),
        (status = 400, description = "Invalid request; the text names the field", body = super::ErrorBody),
        (status = 409, description = "The tenant or one of its object names exists, or not a scanner node", body = super::ErrorBody)))]
pub(super) async fn add(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<TenantRequest>,
) -> Result<(StatusCode, Json<TenantView>), AdminError> {
    partner(&state)?;
    let domain = add_tenant(&*state.backend, &request).await?;
    let view = views(&state, Some(&domain))
        .await?
        .pop()
        .ok_or_else(|| AdminError::Internal(format!("tenant {domain} not found after add")))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Writes the tenant's scanner objects in one atomic change (the API's
/// `add` and `sluice demo`); returns the tenant's domain as stored.
pub async fn add_tenant<B: super::AdminBackend + ?Sized>(
    backend: &B,
    request: &TenantRequest,
) -> Result<String, AdminError> {
    let new = tenants::scanner_objects(request).map_err(|e| AdminError::Invalid(e.0))?;
    let domain = new.accepted_domains[0].name.clone();
    let tenant = domain.clone();
    backend
        .change_objects(Box::new(move |stored| {
            if let Some(clash) = tenants::conflicts(stored, &new) {
                return Err(AdminError::WrongState(format!("tenant {tenant}: {clash}")));
            }
            stored.merge(new, false);
            Ok(true)
        }))
        .await?;
    Ok(domain)
}

#[utoipa::path(get, path = "/tenants/{name}", tag = "tenants", operation_id = "tenants_show",
    params(("name" = String, Path, description = "The tenant's domain")),
    responses((status = 200, description = "The tenant with its health and validation messages", body = TenantView),
        (status = 404, description = "No such tenant", body = super::ErrorBody),
        (status = 409, description = "Not a scanner node", body = super::ErrorBody)))]
pub(super) async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<TenantView>, AdminError> {
    partner(&state)?;
    views(&state, Some(&name))
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| AdminError::NotFound(format!("tenant {name}")))
}

#[utoipa::path(delete, path = "/tenants/{name}", tag = "tenants", operation_id = "tenants_remove",
    params(("name" = String, Path, description = "The tenant's domain")),
    responses((status = 204, description = "Removed: exactly the objects tenant add created"),
        (status = 404, description = "No such tenant", body = super::ErrorBody),
        (status = 409, description = "Not a scanner node", body = super::ErrorBody)))]
pub(super) async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    partner(&state)?;
    state
        .backend
        .change_objects(Box::new(move |stored| {
            if tenants::tenant(stored, &name).is_none() {
                return Err(AdminError::NotFound(format!("tenant {name}")));
            }
            // One pruning write of everything else: the tenant's objects go together.
            let rest = tenants::without_tenant(stored, &name);
            stored.merge(rest, true);
            Ok(true)
        }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/tenants/{name}/kit", tag = "tenants", operation_id = "tenants_kit",
    params(("name" = String, Path, description = "The tenant's domain"), KitQuery),
    responses((status = 200, description = "The tenant's side: Exchange Online cmdlets, sluice objects or a guide; no secrets", body = KitView),
        (status = 404, description = "No such tenant", body = super::ErrorBody),
        (status = 409, description = "Not a scanner node", body = super::ErrorBody)))]
pub(super) async fn kit_text(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<KitQuery>,
) -> Result<Json<KitView>, AdminError> {
    let partner = partner(&state)?;
    let stored = state.backend.objects().await?;
    let tenant =
        tenants::tenant(&stored, &name).ok_or_else(|| AdminError::NotFound(format!("tenant {name}")))?;
    let format = query.format.unwrap_or(KitFormat::Ps1);
    Ok(Json(KitView {
        text: kit::render(&partner, &tenant.domain, format),
        domain: tenant.domain,
        format,
    }))
}
