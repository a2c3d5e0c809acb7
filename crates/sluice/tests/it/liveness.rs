//! Quarantine release and delete are atomic over the admin API (issue 12
//! point 9): for each held message a release and a delete arrive at the
//! same instant; exactly one wins, the other gets a clear 404, and the
//! message is delivered exactly when the release won. Net 217.

use crate::support::{swaks, wait_until, Net, Node, NodeOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const NODE: u8 = 1;
const HELD: usize = 12;

/// Sends `method path` with all but its last two bytes written, waits at
/// `barrier`, then completes it; returns (status, body).
fn request_at_barrier(
    node: &Node,
    token: &str,
    method: &str,
    path: &str,
    barrier: &Barrier,
) -> (u16, String) {
    let mut stream = TcpStream::connect(node.admin).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        node.admin
    );
    let (head, tail) = request.as_bytes().split_at(request.len() - 2);
    stream.write_all(head).expect("write head");
    barrier.wait();
    stream.write_all(tail).expect("write tail");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn concurrent_release_and_delete_of_a_quarantined_message_has_one_winner() {
    let net = Net(217);
    let node = Node::start(NodeOptions::new(
        net.ip(NODE),
        r#"
[[accepted_domain]]
name = "contoso.test"
type = "authoritative"

[[rule]]
name = "Hold everything"
[rule.conditions]
sent_to_scope = "in_organization"
[rule.actions]
quarantine = true
"#,
    ));
    for n in 0..HELD {
        let subject = format!("Subject: held {n}");
        let run = swaks(
            node.smtp,
            &[
                "--from",
                "mallory@fabrikam.test",
                "--to",
                "bob@contoso.test",
                "--header",
                &subject,
            ],
        );
        assert!(run.delivered(), "{}", run.transcript);
    }
    let held = node.cli_json(&["quarantine", "list", "--json"]);
    let ids: Vec<String> = held
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|h| h.get("id").and_then(|id| id.as_str()).map(str::to_string))
        .collect();
    assert_eq!(ids.len(), HELD, "{held:#}");

    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).expect("token");
    let token = token.trim().to_string();
    let mut released = 0;
    for id in &ids {
        let barrier = Arc::new(Barrier::new(2));
        let (release, delete) = std::thread::scope(|scope| {
            let release = scope.spawn(|| {
                request_at_barrier(
                    &node,
                    &token,
                    "POST",
                    &format!("/api/v1/quarantine/{id}/release"),
                    &barrier,
                )
            });
            let delete = scope.spawn(|| {
                request_at_barrier(
                    &node,
                    &token,
                    "DELETE",
                    &format!("/api/v1/quarantine/{id}"),
                    &barrier,
                )
            });
            (release.join().expect("release"), delete.join().expect("delete"))
        });
        let wins = [release.0, delete.0]
            .iter()
            .filter(|s| (200..300).contains(*s))
            .count();
        assert_eq!(wins, 1, "{id}: release {release:?}, delete {delete:?}");
        let loser = if (200..300).contains(&release.0) {
            released += 1;
            &delete
        } else {
            &release
        };
        assert_eq!(loser.0, 404, "{id}: {loser:?}");
        assert!(loser.1.contains("quarantined message"), "{id}: {loser:?}");
    }
    assert_eq!(
        node.cli_json(&["quarantine", "list", "--json"]),
        serde_json::json!([])
    );
    // Each release delivered once; no deleted message slipped through.
    assert!(
        wait_until(Duration::from_secs(30), || node
            .mailbox("contoso.test", "bob")
            .len()
            >= released),
        "released {released}, delivered {}",
        node.mailbox("contoso.test", "bob").len()
    );
    assert!(node.wait_for_empty_queue(Duration::from_secs(15)));
    assert_eq!(node.mailbox("contoso.test", "bob").len(), released);
    // The CLI says so in one line when the message is gone.
    let gone = node.cli(&["quarantine", "release", &ids[0]]);
    assert_eq!(gone.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&ids[0]), "{stderr}");
}
