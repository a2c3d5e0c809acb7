//! `POST /api/v1/outbound-connectors/{name}/validate`: the connector
//! validation of SPEC section 6, step by step.

use super::{AdminError, ApiState, JsonBody};
use crate::deliver::ValidationReport;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Body of a validation request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// Test message recipients; empty uses the connector's `validation_recipients`.
    #[serde(default)]
    pub recipients: Vec<String>,
}

pub(super) async fn validate(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<ValidateRequest>,
) -> Result<Json<ValidationReport>, AdminError> {
    Ok(Json(
        state.backend.validate_connector(name, request.recipients).await?,
    ))
}
