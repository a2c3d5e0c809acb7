//! Mail parked for a dead smart host survives a restart as parked mail:
//! the restarted node knows the destination is down from its store,
//! probes it, and never tries the messages one by one; `queue list`
//! says why they wait and when the next probe is; when the host answers,
//! it all goes. Net 244.

use crate::dead_destination::{mail_for_a_dead_smart_host, MESSAGES};
use crate::support::{pause, wait_until, Net, Node, Sink};
use std::time::Duration;

/// Connections refused since the last (re)start.
fn failures_this_run(node: &Node) -> usize {
    let log = node.log();
    let this_run = log.rsplit("--- restart ---").next().unwrap_or_default();
    this_run.matches("next hop failed").count()
}

fn all_parked(node: &Node) -> bool {
    let recipients = node.queued_recipients();
    recipients.len() == MESSAGES
        && recipients
            .iter()
            .all(|(_, status, error)| status == "deferred" && error.starts_with("parked:"))
}

#[test]
fn parked_mail_stays_parked_across_a_restart_and_goes_when_the_host_answers() {
    let (mut node, smart_host) = mail_for_a_dead_smart_host(Net(244), "4s");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let parked = all_parked(&node);
            if !parked {
                pause(Duration::from_millis(200));
            }
            parked
        }),
        "not all parked: {:?}",
        node.queued_recipients()
    );
    // The listing says when the destination is probed next.
    let (_, _, error) = node.queued_recipients().remove(0);
    assert!(error.contains("destination not answering"), "{error}");
    assert!(error.contains("next probe"), "{error}");

    // A crash and a restart: a probe at the start and one 4 s later, not
    // a connection per message.
    node.kill9();
    node.restart();
    pause(Duration::from_secs(6));
    let failures = failures_this_run(&node);
    assert!(
        (1..=4).contains(&failures),
        "{failures} connections in 6 s after the restart for {MESSAGES} parked messages:\n{}",
        node.log()
    );
    assert!(all_parked(&node), "{:?}", node.queued_recipients());

    // It answers: the next probe goes through and the rest follows.
    let sink = Sink::start_on(smart_host);
    let arrived = sink.wait_for(MESSAGES, Duration::from_secs(30));
    assert_eq!(arrived.len(), MESSAGES);
    assert!(
        node.wait_for_empty_queue(Duration::from_secs(15)),
        "{:?}",
        node.queue_json()
    );
}
