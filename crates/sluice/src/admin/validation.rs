//! `POST /api/v1/outbound-connectors/{name}/validate`: the connector
//! validation of SPEC section 6, step by step.

use super::{AdminError, ApiState, JsonBody};
use crate::config::objects::{LastValidation, ObjectSet};
use crate::deliver::ValidationReport;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Body of a validation request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// Test message recipients; empty uses the connector's `validation_recipients`.
    #[serde(default)]
    pub recipients: Vec<String>,
}

#[utoipa::path(post, path = "/outbound-connectors/{name}/validate", tag = "outbound-connectors",
    operation_id = "outbound_connector_validate",
    params(("name" = String, Path, description = "Connector name, case-insensitive")),
    request_body = ValidateRequest,
    responses((status = 200, description = "Step by step; also recorded as last_validation", body = ValidationReport),
        (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody), (status = 404, description = "Unknown connector", body = super::ErrorBody)))]
pub(super) async fn validate(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<ValidateRequest>,
) -> Result<Json<ValidationReport>, AdminError> {
    Ok(Json(
        state.backend.validate_connector(name, request.recipients).await?,
    ))
}

/// What a connector keeps of a validation run (Exchange's IsValidated and
/// LastValidationTimestamp): when, whether it passed, the first failed step.
pub(crate) fn last_validation(report: &ValidationReport, at_ms: u64) -> LastValidation {
    LastValidation {
        at: crate::trace::rfc3339(at_ms),
        passed: report.passed,
        failed_step: report
            .steps
            .iter()
            .find(|s| !s.passed)
            .map(|s| format!("{}: {}: {}", s.host, s.step, s.detail)),
    }
}

/// Records `summary` on the outbound connector `name` (any case); `false`
/// when it is gone (removed while it was being validated).
pub(crate) fn record(objects: &mut ObjectSet, name: &str, summary: LastValidation) -> bool {
    match objects
        .outbound_connectors
        .iter_mut()
        .find(|c| c.name.eq_ignore_ascii_case(name))
    {
        Some(c) => {
            c.last_validation = Some(summary);
            true
        }
        None => false,
    }
}
