//! The web admin center at `/`: the plain HTML, CSS and JavaScript modules
//! under `ui/` at the repository root, embedded in the binary at build time
//! (no build step, no files to install beside the binary). Served without
//! a token: the pages hold no data; they ask for the admin token and send
//! it on every `/api/v1` call.
//!
//! A strict Content-Security-Policy allows only these same-origin files:
//! no inline script or style, no other origin.

use super::ApiState;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// `(URL path, content)` of a file under `ui/`.
macro_rules! asset {
    ($file:literal) => {
        (
            concat!("/", $file),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ui/", $file)),
        )
    };
}

/// Every file the UI loads; a test checks that none under `ui/` is missing.
const ASSETS: &[(&str, &str)] = &[
    asset!("index.html"),
    asset!("app.css"),
    asset!("js/main.js"),
    asset!("js/api.js"),
    asset!("js/dom.js"),
    asset!("js/charts.js"),
    asset!("js/forms.js"),
    asset!("js/wizard.js"),
    asset!("js/pages/dashboard.js"),
    asset!("js/pages/connectors.js"),
    asset!("js/pages/outbound_wizard.js"),
    asset!("js/pages/inbound_wizard.js"),
    asset!("js/pages/rules.js"),
    asset!("js/pages/domains.js"),
    asset!("js/pages/queue.js"),
    asset!("js/pages/quarantine.js"),
    asset!("js/pages/trace.js"),
    asset!("js/pages/tenants.js"),
    asset!("js/pages/detectors.js"),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn serve(path: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

pub(super) fn routes() -> Router<ApiState> {
    let mut router = Router::new();
    for &(path, body) in ASSETS {
        let response = serve(path, body);
        router = router.route(path, get(move || std::future::ready(response.clone())));
        if path == "/index.html" {
            let response = serve(path, body);
            router = router.route("/", get(move || std::future::ready(response.clone())));
        }
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                // The browser tests and their node_modules are not served.
                if relative != "tests" {
                    files(&path, root, out);
                }
            } else {
                out.push(format!("/{relative}"));
            }
        }
    }

    #[tokio::test]
    async fn pages_are_served_without_a_token_under_a_strict_policy() {
        use super::super::tests::{TestNode, TOKEN};
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use tower::ServiceExt;
        let node = TestNode::new().await;
        let router = super::super::router(node.backend(), TOKEN.into());
        for (uri, kind) in [
            ("/", "text/html"),
            ("/js/main.js", "text/javascript"),
            ("/app.css", "text/css"),
        ] {
            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let headers = response.headers();
            assert!(
                headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
                "{uri}"
            );
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        }
    }

    #[test]
    fn every_file_under_ui_is_served() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui");
        let mut found = Vec::new();
        files(&root, &root, &mut found);
        let served: Vec<&str> = ASSETS.iter().map(|(path, _)| *path).collect();
        for file in &found {
            assert!(served.contains(&file.as_str()), "{file} is not in ASSETS");
        }
        for path in ASSETS.iter().map(|(path, _)| path) {
            assert_ne!(content_type(path), "application/octet-stream", "{path}");
        }
    }
}
