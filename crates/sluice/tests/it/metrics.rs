//! `/metrics` and `/api/v1/stats` after real mail: counters moved by what
//! the node recorded (received, delivered, rejected, quarantined), gauges
//! for the queue and the quarantine, and across a restart the counters
//! start again while the quarantine's size is read back from the store.
//! Net 237.

use crate::support::{on_prem_relay, swaks, wait_until, Net, Node, NodeOptions, Sink};
use std::time::Duration;

const NODE: u8 = 1;
const DESTINATION: u8 = 21;
const ON_PREM: u8 = 40;

fn get(node: &Node, path: &str) -> (String, String) {
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).expect("admin token");
    let url = format!("http://{}{path}", node.admin);
    let mut response = ureq::get(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.body_mut().read_to_string().expect("body");
    (content_type, body)
}

/// The value of the sample `name` (with its labels) in an exposition.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_count_what_the_node_recorded() {
    let net = Net(237);
    let destination = Sink::start(net.ip(DESTINATION));
    let node_options = NodeOptions::new(
        net.ip(NODE),
        &format!(
            r#"{relay}
[[rule]]
name = "No casinos"
[rule.conditions]
subject_or_body_contains = ["casino"]
[rule.actions]
reject = {{ code = "5.7.1", text = "Blocked by policy" }}

[[rule]]
name = "Hold invoices"
[rule.conditions]
subject_or_body_contains = ["invoice"]
[rule.actions]
quarantine = true
"#,
            relay = on_prem_relay(net.ip(ON_PREM), "Fabrikam", "fabrikam.test", destination.addr),
        ),
    );
    let mut node = Node::start(node_options);
    let (content_type, before) = get(&node, "/metrics");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(
        sample(&before, "sluice_trace_events_total{event=\"received\"}"),
        Some(0),
        "{before}"
    );

    let on_prem = net.ip(ON_PREM).to_string();
    let send = |subject: &str| {
        swaks(
            node.smtp,
            &[
                "--local-interface",
                &on_prem,
                "--from",
                "alice@contoso.test",
                "--to",
                "bob@fabrikam.test,carol@fabrikam.test",
                "--header",
                &format!("Subject: {subject}"),
            ],
        )
    };
    for subject in ["one", "two"] {
        let run = send(subject);
        assert!(run.delivered(), "{}", run.transcript);
    }
    let refused = send("casino night");
    assert!(
        !refused.delivered() && refused.transcript.contains("550 5.7.1"),
        "{}",
        refused.transcript
    );
    let held = send("your invoice");
    assert!(held.delivered(), "{}", held.transcript);
    assert!(
        wait_until(Duration::from_secs(30), || destination.messages().len() == 2
            && node.queue_json().is_empty()),
        "the two plain messages were not delivered"
    );

    let wanted = [
        ("sluice_trace_events_total{event=\"received\"}", 4),
        ("sluice_trace_events_total{event=\"delivered\"}", 4),
        ("sluice_trace_events_total{event=\"rejected\"}", 1),
        ("sluice_trace_events_total{event=\"quarantined\"}", 1),
        ("sluice_trace_events_total{event=\"rule_matched\"}", 2),
        ("sluice_trace_events_last_hour{event=\"received\"}", 4),
        ("sluice_trace_events_last_hour{event=\"delivered\"}", 4),
        ("sluice_trace_events_last_hour{event=\"rejected\"}", 1),
        ("sluice_trace_events_last_hour{event=\"quarantined\"}", 1),
        ("sluice_queue_messages", 0),
        ("sluice_quarantine_messages", 1),
    ];
    // The last delivery's events are counted when its commit returns,
    // a moment after the queue has emptied.
    let mut text = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        text = get(&node, "/metrics").1;
        wanted.iter().all(|(name, n)| sample(&text, name) == Some(*n))
    });
    assert!(counted, "{text}");
    let (_, stats) = get(&node, "/api/v1/stats?since=1h&bucket=1m");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["totals"]["received"], 4, "{stats}");
    assert_eq!(stats["totals"]["delivered"], 4, "{stats}");
    assert_eq!(stats["quarantined"], 1, "{stats}");
    let series = stats["series"].as_array().expect("series");
    assert_eq!(series.len(), 60, "{stats}");
    let received: u64 = series
        .iter()
        .map(|b| b["counts"]["received"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(received, 4, "{stats}");
    assert_eq!(
        series.last().map(|b| b["queue_depth"].clone()),
        Some(0.into()),
        "{stats}"
    );

    // Counters start again with the node; the quarantine is state, read back.
    node.restart();
    let (_, after) = get(&node, "/metrics");
    assert_eq!(
        sample(&after, "sluice_trace_events_total{event=\"received\"}"),
        Some(0),
        "{after}"
    );
    assert_eq!(sample(&after, "sluice_quarantine_messages"), Some(1), "{after}");
}
