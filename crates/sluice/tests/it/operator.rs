//! What an administrator meets first on the command line: the management
//! verbs find their node from any directory, a stopped node is named as
//! such, and start-up and check-config errors carry their cause on one
//! line. Net 172.

use crate::support::{Net, Node, NodeOptions};
use std::path::Path;
use std::process::{Command, Output};

/// `sluice ARGS` run in `dir` with `env`, bounded in time, no --config.
fn sluice(dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut command = Command::new("timeout");
    command
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run sluice")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn management_verbs_find_their_node_from_any_directory() {
    let mut node = Node::start(NodeOptions::new(
        Net(172).ip(1),
        "[[accepted_domain]]\nname = \"contoso.test\"\n",
    ));
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let config = node.config_path();

    // SLUICE_CONFIG names the node's config: address and token follow.
    let listed = sluice(
        elsewhere.path(),
        &[("SLUICE_CONFIG", &config)],
        &["domain", "list"],
    );
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("contoso.test"));

    // --api without a scheme is the admin listener's http.
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).expect("token");
    let api = node.admin.to_string();
    let listed = sluice(
        elsewhere.path(),
        &[],
        &["domain", "list", "--api", &api, "--token", token.trim()],
    );
    assert!(listed.status.success(), "--api {api}: {}", stderr(&listed));

    // A stopped node is reported as such, not as a token problem.
    node.kill9();
    let stopped = sluice(
        elsewhere.path(),
        &[("SLUICE_CONFIG", &config)],
        &["queue", "list"],
    );
    assert_eq!(stopped.status.code(), Some(1), "{}", stderr(&stopped));
    let line = stderr(&stopped);
    assert!(
        line.starts_with(&format!("error: no sluice node is running at http://{api}")),
        "{line}"
    );
    // Even where no token exists (a directory where no node ever ran).
    let fresh = sluice(elsewhere.path(), &[], &["queue", "list", "--api", &api]);
    assert_eq!(fresh.status.code(), Some(1), "{}", stderr(&fresh));
    assert!(
        stderr(&fresh).contains("no sluice node is running at"),
        "{}",
        stderr(&fresh)
    );
    assert!(!stderr(&fresh).contains("token"), "{}", stderr(&fresh));
}
