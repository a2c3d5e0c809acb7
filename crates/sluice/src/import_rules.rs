//! The import rules of ARCHITECTURE.md ("Import rules"), checked on the
//! source: a module listed in [`RULES`] must not name the modules listed
//! with it, in its product code (its `#[cfg(test)]` part may use anything to
//! check what it produces). A rule is added here when it holds.

use std::path::{Path, PathBuf};

/// The stages, and the modules around them that config/ must not know.
const STAGES: &[&str] = &[
    "classify", "rules", "route", "deliver", "queue", "receive", "auth", "tenant", "scan", "store", "admin",
    "server", "policy",
];

/// What only wires or serves the stages: no stage may import it.
const ABOVE_STAGES: &[&str] = &["server", "admin", "cli"];

/// For the stages that take their own table: neither the whole snapshot.
const ABOVE_TABLES: &[&str] = &["server", "admin", "cli", "policy"];

/// Every module of the crate but `message`.
const ALL_BUT_MESSAGE: &[&str] = &[
    "classify",
    "rules",
    "route",
    "deliver",
    "queue",
    "receive",
    "auth",
    "tenant",
    "scan",
    "store",
    "admin",
    "server",
    "policy",
    "config",
    "cli",
    "trace",
    "dns",
    "tls",
    "private_dir",
];

/// The queue states what it needs from storage (`queue::Spool`); the
/// store implements it, so the arrow goes one way only.
const ABOVE_STAGES_AND_STORE: &[&str] = &["server", "admin", "cli", "store"];

/// (module, modules it must not import).
const RULES: &[(&str, &[&str])] = &[
    ("message", ALL_BUT_MESSAGE),
    ("config", STAGES),
    ("classify", ABOVE_TABLES),
    ("rules", ABOVE_STAGES),
    ("scan", ABOVE_TABLES),
    ("route", ABOVE_TABLES),
    ("queue", ABOVE_STAGES_AND_STORE),
    ("deliver", ABOVE_STAGES),
    ("receive", ABOVE_STAGES),
    ("auth", ABOVE_STAGES),
    ("trace", ABOVE_STAGES),
    ("store", ABOVE_STAGES),
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // `tests.rs` and `tests/` are `#[cfg(test)]` modules: test code.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == "tests" || name == "tests.rs" {
            continue;
        }
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The product code of a file: comments (docs may speak of any module) and
/// the items under `#[cfg(test)]` left out. An item is one line, or, when
/// that line opens a brace, everything to the brace that closes it.
fn product_code(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            let mut depth = 0i64;
            for item in std::iter::once(trimmed.trim_start_matches("#[cfg(test)]")).chain(&mut lines) {
                depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
                let opened = item.contains('{') || depth > 0;
                if !item.trim().is_empty() && depth <= 0 && (opened || !item.trim_start().starts_with("#[")) {
                    break;
                }
            }
            continue;
        }
        if !trimmed.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// Paths into the crate that `code` names: `crate::a::b` gives `a`, and
/// `crate::{a, b::c}` gives `a` and `b`.
fn crate_modules(code: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            named.extend(group.split(',').filter_map(|item| {
                let head = item.trim().split("::").next()?.trim();
                (!head.is_empty()).then(|| head.to_string())
            }));
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            named.push(head);
        }
    }
    named
}

#[test]
fn modules_import_only_what_the_architecture_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, forbidden) in RULES {
        let dir = src.join(module);
        let files = if dir.is_dir() {
            sources(&dir)
        } else {
            vec![src.join(format!("{module}.rs"))]
        };
        assert!(!files.is_empty(), "{module}: no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = product_code(&text);
            for named in crate_modules(&code) {
                if forbidden.contains(&named.as_str()) {
                    broken.push(format!("{} imports crate::{named}", file.display()));
                }
            }
            // `super::super::` would reach past the module's own root.
            if code.contains("super::super::") {
                broken.push(format!("{} reaches out through super::super", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "import rules broken:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_plain_and_grouped_paths() {
    let code =
        "use crate::route::Route;\nuse crate::{message::Domain, queue};\nfn f() { crate::tenant::x() }";
    assert_eq!(crate_modules(code), ["route", "message", "queue", "tenant"]);
    assert_eq!(
        product_code("a\n/// crate::queue\n#[cfg(test)]\nuse crate::queue;"),
        "a\n"
    );
}
