//! `POST /api/v1/scan` and `sluice scan`: the DLP scan of one message,
//! in SPEC section 7's shape. The one place matched text leaves the
//! engine: to the administrator who asked, never to logs or traces; and
//! even there masked (`4111 **** **** 1111`) unless asked for in clear.

use super::{AdminError, ApiState};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

/// One finding (SPEC section 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FindingView {
    /// Detector name (`credit_card`...).
    pub detector: String,
    /// The match, masked (`4111 **** **** 1111`), or with `show_matches`
    /// the exact text as it stands in the decoded part.
    #[serde(rename = "match")]
    pub matched: String,
    /// `low | medium | high`.
    pub confidence: String,
    /// `body`, `subject` or `attachment:NAME`.
    pub location: String,
    /// A published test value (test card numbers and the like).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_value: bool,
}

/// The scan of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScanResult {
    /// The scanned file (`sluice scan` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Message-ID, when the message has one.
    pub message_id: Option<String>,
    /// Findings in order of appearance.
    pub findings: Vec<FindingView>,
    /// The scan budget ran out before the end (`scan_truncated`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scan_truncated: bool,
    /// Content not expanded, with the reason (zip bombs, depth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// `POST /scan?show_matches=true`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ScanQuery {
    /// Return each match in clear instead of masked.
    #[serde(default)]
    show_matches: bool,
}

/// Scans a raw message with `scanner` (the built-in detectors and the
/// node's custom ones); matches masked unless `show_matches`.
pub fn scan_message(raw: &[u8], show_matches: bool, scanner: &crate::scan::Scanner) -> ScanResult {
    let report = crate::scan::scan_with(raw, &crate::scan::ScanLimits::default(), scanner);
    ScanResult {
        file: None,
        message_id: crate::message::header_message_id(raw),
        findings: report
            .findings
            .iter()
            .map(|f| FindingView {
                detector: f.name().to_string(),
                matched: if show_matches {
                    f.matched.clone()
                } else {
                    f.masked()
                },
                confidence: f.confidence.as_str().to_string(),
                location: f.location.to_string(),
                test_value: f.test_value,
            })
            .collect(),
        scan_truncated: report.truncated,
        refused: report.refused,
    }
}

#[utoipa::path(post, path = "/scan", tag = "scan", operation_id = "scan", params(ScanQuery),
    request_body(content = String, content_type = "message/rfc822", description = "The raw message"),
    responses((status = 200, description = "Findings (SPEC section 7)", body = ScanResult),
        (status = 400, description = "Empty body", body = super::ErrorBody)))]
pub(super) async fn scan(
    State(state): State<ApiState>,
    Query(query): Query<ScanQuery>,
    body: Bytes,
) -> Result<Json<ScanResult>, AdminError> {
    if body.is_empty() {
        return Err(AdminError::Invalid(
            "the request body must be the raw message".into(),
        ));
    }
    // The node's custom detectors, as its rules see them.
    let scanner = state
        .backend
        .objects()
        .await
        .and_then(|objects| {
            crate::scan::compile(&objects.detectors, &objects.edm)
                .map_err(|e| AdminError::Internal(e.to_string()))
        })
        .map(std::sync::Arc::new)
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    let result = tokio::task::spawn_blocking(move || scan_message(&body, query.show_matches, &scanner))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    Ok(Json(result))
}
