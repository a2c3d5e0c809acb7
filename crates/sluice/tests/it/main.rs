//! The one integration test binary. Every test here runs real programs on
//! loopback (sluice itself, Postfix, smtp-sink, dnsmasq, swaks) through the
//! harness in `support`, each test in its own 127.0.N.0/24 (N is listed at
//! the top of each file) so nextest can run them in parallel.

mod support;

mod admin_ui;
mod auth;
mod cluster;
mod connectors;
mod content_work;
mod dane;
mod dead_destination;
mod delivery_tls;
mod demo;
mod disk_full;
mod display_safety;
mod dlp;
mod dsn;
mod durability;
mod header_forgery;
mod limits;
mod liveness;
mod metrics;
mod mta_sts;
mod mx_delivery;
mod openapi;
mod operator;
mod paging;
mod parked_restart;
mod partner;
mod peers;
mod private_data;
mod queue_verbs;
mod readme;
mod refusals;
mod relay_control;
mod rules;
mod scanner;
mod shared_content;
mod smart_host;
mod smuggling;
mod spooling;
mod topology_a;
mod topology_b;

/// Tests run in parallel and each owns its `Net(N)`: two tests on one /24
/// would share addresses and read each other's mail. This keeps the rule
/// checked as test files are added.
#[test]
fn every_test_owns_its_own_loopback_net() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut owners: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for entry in std::fs::read_dir(&dir).expect("tests/it") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("test source");
        for (at, _) in text.match_indices("Net(") {
            let digits: String = text[at + 4..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                owners.entry(n).or_default().push(name);
            }
        }
    }
    let shared: Vec<_> = owners.iter().filter(|(_, files)| files.len() > 1).collect();
    assert!(shared.is_empty(), "nets used by more than one test: {shared:?}");
}
