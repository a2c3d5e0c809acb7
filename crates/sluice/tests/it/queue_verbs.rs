//! Queue verbs as postqueue/postsuper users expect them (SPEC section 2),
//! against a destination that keeps deferring: a manual retry does not push
//! the schedule out, hold is idempotent (one trace event), a held entry is
//! never retried, and `queue summary` shapes the queue as qshape does.
//! Net 223.

use crate::support::{pause, wait_until, DeferringRelay, Net};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn queue_verbs_behave_as_postsuper() {
    let relay = DeferringRelay::start(Net(223));
    let node = &relay.node;
    relay.relay(
        "bob@fabrikam.test,carol@fabrikam.test",
        "queue-verbs-1@contoso.test",
    );

    let entry = || -> Value {
        node.queue_json()
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("the message left the queue"))
    };
    let attempts = |e: &Value| e["recipients"][0]["attempts"].as_u64().unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || {
            node.queue_json()
                .first()
                .is_some_and(|e| e["status"] == "deferred")
        }),
        "never deferred: {:?}",
        node.queue_json()
    );
    let deferred = entry();
    let id = deferred["id"].as_str().unwrap().to_string();
    let scheduled = deferred["next_attempt"].as_str().unwrap().to_string();
    assert_eq!(attempts(&deferred), 1);

    // A manual retry attempts now; its failure keeps the schedule it had.
    let retried = node.cli_ok(&["queue", "retry", &id]);
    assert_eq!(retried.trim(), format!("{id}: due for retry now"));
    assert!(
        wait_until(Duration::from_secs(20), || attempts(&entry()) == 2
            && entry()["status"] == "deferred"),
        "the manual retry did not run: {:?}",
        node.queue_json()
    );
    assert_eq!(
        entry()["next_attempt"].as_str(),
        Some(scheduled.as_str()),
        "a manual retry pushed the backoff out"
    );

    // Hold twice: one change, one trace event.
    assert_eq!(node.cli_ok(&["queue", "hold", &id]).trim(), format!("{id}: held"));
    assert_eq!(
        node.cli_ok(&["queue", "hold", &id]).trim(),
        format!("{id}: already held; nothing changed")
    );
    let held_events = node
        .trace(&["--message-id", "queue-verbs-1@contoso.test"])
        .into_iter()
        .filter(|e| e["event"] == "held")
        .count();
    assert_eq!(held_events, 1, "a second hold was traced");

    // Retry never releases a held entry; it says so and exits 1.
    let refused = node.cli(&["queue", "retry", &id]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}{}",
        stdout(&refused),
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains(&format!("{id} is held and was not retried")),
        "{}",
        stderr(&refused)
    );
    let all = node.cli_ok(&["queue", "retry", "--all"]);
    assert!(
        all.contains("0 entries due for retry now; 1 held left held"),
        "{all}"
    );
    pause(Duration::from_secs(2));
    let still = entry();
    assert_eq!(still["status"], "held", "{still:#}");
    assert_eq!(attempts(&still), 2, "a held entry was attempted: {still:#}");

    // qshape: both recipients under their domain, in the youngest bucket.
    let summary = node.cli_ok(&["queue", "summary"]);
    let lines: Vec<&str> = summary.lines().collect();
    assert!(
        lines[0].starts_with("DESTINATION") && lines[0].contains("1280+"),
        "{summary}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{summary}"))
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(row("TOTAL"), [2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0], "{summary}");
    assert_eq!(
        row("fabrikam.test"),
        [2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "{summary}"
    );
    let json = node.cli_json(&["queue", "summary", "--json"]);
    assert_eq!(json["total"]["total"], 2, "{json:#}");
    assert_eq!(
        json["destinations"][0]["destination"], "fabrikam.test",
        "{json:#}"
    );

    // Release: delivery resumes on the schedule; release again changes nothing.
    assert_eq!(
        node.cli_ok(&["queue", "release", &id]).trim(),
        format!("{id}: released")
    );
    assert_eq!(
        node.cli_ok(&["queue", "release", &id]).trim(),
        format!("{id}: not held; nothing changed")
    );
    assert_eq!(entry()["status"], "deferred");
}
