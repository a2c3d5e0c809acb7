//! `/openapi.json` as served by a running node is a valid OpenAPI 3
//! document by an independent validator (Python's openapi-spec-validator,
//! installed by scripts/test.sh): a missing validator fails the test rather
//! than passing it. Net 171.

use crate::support::{Net, Node, NodeOptions};
use std::process::Command;

#[test]
fn the_served_openapi_document_passes_an_independent_validator() {
    let node = Node::start(NodeOptions::new(Net(171).ip(1), ""));
    let url = format!("http://{}/openapi.json", node.admin);
    let body: String = ureq::get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .expect("document body");
    let document: serde_json::Value = serde_json::from_str(&body).expect("the document is JSON");
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{document}"
    );
    let file = node.dir().join("openapi.json");
    std::fs::write(&file, &body).expect("write the document");

    let validator = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .expect("run python3");
    assert!(
        validator.status.success(),
        "openapi-spec-validator is not installed (scripts/test.sh installs it: \
         python3 -m pip install openapi-spec-validator): {}",
        String::from_utf8_lossy(&validator.stderr)
    );
    let checked = Command::new("timeout")
        .args(["120", "python3", "-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success(),
        "/openapi.json is not valid OpenAPI:\n{report}"
    );
    assert!(report.contains("OK"), "{report}");
}
