//! Paged listings over the wire (SPEC section 6): the CLI follows the
//! node's cursors page by page, sees every entry once in order, and
//! `--limit` caps the total. Net 224.

use crate::support::{wait_until, DeferringRelay, Net, Node};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

const MESSAGES: usize = 5;

/// `sluice ARGS` with pages of `page_size` items.
fn paged(node: &Node, page_size: usize, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--config")
        .arg(node.config_path())
        .env("SLUICE_PAGE_SIZE", page_size.to_string())
        .current_dir(node.dir())
        .output()
        .expect("run sluice")
}

fn json_list(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout) {
        Ok(Value::Array(items)) => items,
        other => panic!(
            "not a JSON array ({other:?}): {}",
            String::from_utf8_lossy(&output.stdout)
        ),
    }
}

#[test]
fn listings_are_fetched_page_by_page() {
    let relay = DeferringRelay::start(Net(224));
    let node = &relay.node;
    for i in 0..MESSAGES {
        relay.relay("bob@fabrikam.test", &format!("paging-{i}@contoso.test"));
    }
    // Every message tried once and deferred: nothing changes after (retry in 1h).
    assert!(wait_until(Duration::from_secs(30), || {
        node.trace(&[])
            .iter()
            .filter(|e| e["event"] == "deferred")
            .count()
            == MESSAGES
    }));

    // Pages of two: the node never answers more than two per request, so
    // seeing all five means the CLI followed the cursors.
    let ids = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let whole = json_list(&paged(node, 1000, &["queue", "list", "--json"]));
    let by_twos = json_list(&paged(node, 2, &["queue", "list", "--json"]));
    assert_eq!(ids(&by_twos), ids(&whole));
    let mut sorted = ids(&whole);
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids(&whole), "oldest first, each once");
    assert_eq!(whole.len(), MESSAGES);

    let capped = json_list(&paged(node, 2, &["queue", "list", "--limit", "3", "--json"]));
    assert_eq!(ids(&capped), ids(&whole)[..3]);

    // The table streams page by page with one header.
    let table = paged(node, 2, &["queue", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().count(), MESSAGES + 1, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("ID ")).count(), 1, "{text}");

    // The trace, unfiltered, pages the same way; each event once.
    let events = json_list(&paged(node, 1000, &["trace", "--json"]));
    let events_by_twos = json_list(&paged(node, 2, &["trace", "--json"]));
    assert!(events.len() >= 2 * MESSAGES, "{events:?}");
    assert_eq!(events_by_twos, events);
    let received = events.iter().filter(|e| e["event"] == "received").count();
    assert_eq!(received, MESSAGES);
    let capped = json_list(&paged(node, 2, &["trace", "--limit", "3", "--json"]));
    assert_eq!(capped[..], events[..3]);
}
