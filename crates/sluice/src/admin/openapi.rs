//! `GET /openapi.json`: the OpenAPI 3 document of the admin API, generated
//! by utoipa from the request and response types (`ToSchema` derives) and
//! the handlers' `#[utoipa::path]` attributes, so it cannot drift from the
//! code. The object collections share generic handlers
//! ([`super::objects`]); their operations are declared once per kind by
//! [`collection_docs!`] below, with the kind's own type as the body.
//!
//! A test walks every operation of the document through the router, so a
//! documented path that is not routed fails the build's tests.

use super::{ApiState, ApplyRequest, ErrorBody};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Declares list/create/show/replace/delete of one object collection.
macro_rules! collection_docs {
    ($module:ident, $object:ident, $path:tt, $item:tt, $tag:tt) => {
        #[allow(dead_code)]
        pub(super) mod $module {
            #[allow(unused_imports)]
            use crate::config::objects::*;
            #[allow(unused_imports)]
            use crate::config::rule_object::RuleObject;
            use super::ErrorBody;

            /// Every object of the kind.
            #[utoipa::path(get, path = $path, tag = $tag,
                operation_id = concat!(stringify!($module), "_list"),
                responses((status = 200, description = "Every object of the kind", body = Vec<$object>)))]
            pub(crate) fn list() {}

            /// Creates one; 409 when the name exists (names compare case-insensitively).
            #[utoipa::path(post, path = $path, tag = $tag,
                operation_id = concat!(stringify!($module), "_create"),
                request_body = $object,
                responses((status = 201, description = "Created", body = $object),
                    (status = 400, description = "Invalid: `KIND \"NAME\": KEY: message`", body = ErrorBody),
                    (status = 409, description = "The name exists", body = ErrorBody)))]
            pub(crate) fn create() {}

            /// One object by name.
            #[utoipa::path(get, path = $item, tag = $tag,
                operation_id = concat!(stringify!($module), "_show"),
                params(("name" = String, Path, description = "Name, case-insensitive")),
                responses((status = 200, description = "The object", body = $object), (status = 404, description = "No object of that name", body = ErrorBody)))]
            pub(crate) fn show() {}

            /// Replaces the whole object (keys left out take their defaults); the path's name wins.
            #[utoipa::path(put, path = $item, tag = $tag,
                operation_id = concat!(stringify!($module), "_replace"),
                params(("name" = String, Path, description = "Name, case-insensitive")),
                request_body = $object,
                responses((status = 200, description = "Replaced", body = $object),
                    (status = 400, description = "Invalid: `KIND \"NAME\": KEY: message`", body = ErrorBody),
                    (status = 404, description = "No object of that name", body = ErrorBody)))]
            pub(crate) fn replace() {}

            /// Removes the object.
            #[utoipa::path(delete, path = $item, tag = $tag,
                operation_id = concat!(stringify!($module), "_delete"),
                params(("name" = String, Path, description = "Name, case-insensitive")),
                responses((status = 204, description = "Removed"), (status = 404, description = "No object of that name", body = ErrorBody)))]
            pub(crate) fn delete() {}
        }
    };
}

collection_docs!(
    accepted_domain,
    AcceptedDomain,
    "/accepted-domains",
    "/accepted-domains/{name}",
    "accepted-domains"
);
collection_docs!(
    inbound_connector,
    InboundConnectorObject,
    "/inbound-connectors",
    "/inbound-connectors/{name}",
    "inbound-connectors"
);
collection_docs!(
    outbound_connector,
    OutboundConnectorObject,
    "/outbound-connectors",
    "/outbound-connectors/{name}",
    "outbound-connectors"
);
collection_docs!(rule, RuleObject, "/rules", "/rules/{name}", "rules");
collection_docs!(edm, EdmObject, "/edm", "/edm/{name}", "edm");
collection_docs!(
    detector,
    DetectorObject,
    "/detectors",
    "/detectors/{name}",
    "detectors"
);

/// Liveness, no token.
#[utoipa::path(get, path = "/healthz", tag = "node", security(()),
    responses((status = 200, description = "The text `ok`", content_type = "text/plain", body = String)))]
#[allow(dead_code)]
fn healthz() {}

/// This document, no token.
#[utoipa::path(get, path = "/openapi.json", tag = "node", security(()),
    responses((status = 200, description = "OpenAPI 3 document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// The `/api/v1` operations, paths relative to the prefix.
#[derive(OpenApi)]
#[openapi(
    paths(
        accepted_domain::list,
        accepted_domain::create,
        accepted_domain::show,
        accepted_domain::replace,
        accepted_domain::delete,
        inbound_connector::list,
        inbound_connector::create,
        inbound_connector::show,
        inbound_connector::replace,
        inbound_connector::delete,
        outbound_connector::list,
        outbound_connector::create,
        outbound_connector::show,
        outbound_connector::replace,
        outbound_connector::delete,
        rule::list,
        rule::create,
        rule::show,
        rule::replace,
        rule::delete,
        detector::list,
        detector::create,
        detector::show,
        detector::replace,
        detector::delete,
        edm::list,
        edm::create,
        edm::show,
        edm::replace,
        edm::delete,
        super::validation::validate,
        super::apply,
        super::export,
        super::explain::handle,
        super::queue::list,
        super::queue::show,
        super::queue::act,
        super::queue::delete,
        super::queue::retry_all,
        super::queue::delete_all,
        super::queue::summary,
        super::quarantine::list,
        super::quarantine::show,
        super::quarantine::release,
        super::quarantine::delete,
        super::trace::trace,
        super::stats::stats,
        super::scan::scan,
        super::tls_reports::send,
        super::tenants::list,
        super::tenants::add,
        super::tenants::show,
        super::tenants::remove,
        super::tenants::kit_text,
        super::dkim::list,
        super::dkim::create,
        super::dkim::show,
        super::dkim::remove,
        super::dkim::activate,
        super::nodes::list,
    ),
    components(schemas(ErrorBody, ApplyRequest))
)]
struct ApiV1;

/// The whole document: `/api/v1` behind the bearer token, the node's own
/// paths without it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sluice admin API",
        description = "Objects, queue, quarantine, trace and statistics of a sluice node. \
            Every /api/v1 request carries `Authorization: Bearer TOKEN`, the token being \
            the node's data_dir/admin.token.",
        license(name = "Apache-2.0")
    ),
    paths(healthz, openapi_json, super::stats::metrics),
    nest((path = "/api/v1", api = ApiV1)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct Document;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The node's data_dir/admin.token"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the admin API.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Document::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{TestNode, TOKEN};
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_json(router: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn the_document_is_served_without_a_token_and_declares_bearer_auth() {
        let node = TestNode::new().await;
        let router = super::super::router(node.backend(), TOKEN.into());
        let (status, doc) = get_json(&router, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        // The node's own paths need no token.
        for path in ["/healthz", "/metrics", "/openapi.json"] {
            assert_eq!(
                doc["paths"][path]["get"]["security"],
                serde_json::json!([{}]),
                "{path}"
            );
        }
        // Schemas come from the types, serde renames included.
        let outbound = &doc["components"]["schemas"]["OutboundConnectorObject"]["properties"];
        assert!(outbound["smart_hosts"].is_object(), "{outbound}");
        assert!(outbound["type"].is_object(), "{outbound}");
        let set = &doc["components"]["schemas"]["ObjectSet"]["properties"];
        assert!(set["outbound_connector"].is_object(), "{set}");
    }

    /// Every documented operation reaches a handler (no 404 from the
    /// fallback, no 405), and the document lists what SPEC section 6 names.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let node = TestNode::new().await;
        let router = super::super::router(node.backend(), TOKEN.into());
        let doc = serde_json::to_value(document()).unwrap();
        let mut operations = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, _) in item.as_object().unwrap() {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        operations.sort();
        for expected in [
            "GET /api/v1/accepted-domains",
            "POST /api/v1/inbound-connectors",
            "PUT /api/v1/outbound-connectors/{name}",
            "DELETE /api/v1/rules/{name}",
            "PUT /api/v1/detectors/{name}",
            "POST /api/v1/outbound-connectors/{name}/validate",
            "POST /api/v1/route/explain",
            "GET /api/v1/queue",
            "GET /api/v1/queue/summary",
            "POST /api/v1/queue/{id}/{action}",
            "DELETE /api/v1/queue/{id}",
            "DELETE /api/v1/queue",
            "GET /api/v1/trace",
            "GET /api/v1/quarantine",
            "POST /api/v1/quarantine/{id}/release",
            "GET /api/v1/stats",
            "POST /api/v1/apply",
            "GET /api/v1/export",
            "POST /api/v1/scan",
            "GET /api/v1/tenants",
            "POST /api/v1/tenants",
            "GET /api/v1/tenants/{name}/kit",
            "GET /api/v1/dkim",
            "POST /api/v1/dkim",
            "GET /api/v1/dkim/{domain}",
            "DELETE /api/v1/dkim/{domain}/{selector}",
            "POST /api/v1/dkim/{domain}/{selector}/activate",
            "GET /api/v1/nodes",
            "GET /metrics",
            "GET /healthz",
        ] {
            assert!(
                operations.contains(&expected.to_string()),
                "{expected} not in {operations:?}"
            );
        }
        assert_eq!(operations.len(), 63, "{operations:?}");
        for operation in &operations {
            let (method, path) = operation.split_once(' ').unwrap();
            let uri = path
                .replace("{name}", "x")
                .replace("{id}", "x")
                .replace("{action}", "hold")
                .replace("{domain}", "contoso.test")
                .replace("{selector}", "selector1");
            let request = Request::builder()
                .method(method)
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&bytes);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{operation}");
            assert!(
                !body.contains("no such API path"),
                "{operation} is not routed: {body}"
            );
        }
    }

    /// Every `/api/v1` operation of the document answers 401 without the token.
    #[tokio::test]
    async fn every_api_operation_needs_the_token() {
        let node = TestNode::new().await;
        let router = super::super::router(node.backend(), TOKEN.into());
        let doc = serde_json::to_value(document()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if !path.starts_with("/api/v1/") {
                    continue;
                }
                assert_eq!(
                    operation["security"],
                    serde_json::Value::Null,
                    "{path} overrides security"
                );
                let uri = path
                    .replace("{name}", "x")
                    .replace("{id}", "x")
                    .replace("{action}", "hold");
                for authorization in [None, Some("Bearer wrong".to_string())] {
                    let mut request = Request::builder()
                        .method(method.to_uppercase().as_str())
                        .uri(&uri);
                    if let Some(value) = &authorization {
                        request = request.header(header::AUTHORIZATION, value);
                    }
                    let request = request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from("{}"))
                        .unwrap();
                    let response = router.clone().oneshot(request).await.unwrap();
                    assert_eq!(
                        response.status(),
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} with {authorization:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * 60);
    }
}
