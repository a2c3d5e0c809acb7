//! What an administrator meets first on the command line: the management
//! verbs find their node from any directory, a stopped node is named as
//! such, and start-up and check-config errors carry their cause on one
//! line. Nets 172 (finding the node), 173 (start-up errors), 174 (domain
//! check without DNS).

use crate::support::{Net, Node, NodeOptions};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

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

/// A node config in `dir` with the given `[smtp]` lines, SMTP and admin on
/// free ports of `ip`.
fn write_config(dir: &Path, net: Net, data_dir: &Path, smtp_extra: &str) -> std::path::PathBuf {
    let smtp = net.addr(1);
    let admin = net.addr(1);
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        format!(
            "[node]\nhostname = \"gw.contoso.test\"\ndata_dir = {data:?}\n\n[smtp]\nlisten = [\"{smtp}\"]\n{smtp_extra}\n\
             [admin]\nlisten = \"{admin}\"\n",
            data = data_dir.display().to_string()
        ),
    )
    .expect("write config");
    file
}

#[test]
fn start_up_and_check_config_errors_name_their_cause() {
    let net = Net(173);
    let dir = tempfile::tempdir().expect("temp dir");

    // A busy SMTP port.
    let busy = TcpListener::bind((net.ip(2), 0)).expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let file = dir.path().join("busy.toml");
    std::fs::write(
        &file,
        format!(
            "[node]\ndata_dir = \"busy-data\"\n[smtp]\nlisten = [\"{busy_addr}\"]\n[admin]\nlisten = \"{}\"\n",
            net.addr(2)
        ),
    )
    .expect("write config");
    let serve = sluice(dir.path(), &[], &["serve", "--config", "busy.toml"]);
    assert_eq!(serve.status.code(), Some(1), "{}", stderr(&serve));
    let text = stderr(&serve);
    let line = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(line.to_lowercase().contains("address already in use"), "{line}");
    assert!(line.contains(&busy_addr.to_string()), "{line}");
    drop(busy);

    // TLS files that are missing or do not parse: check-config says which and why.
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").expect("write");
    for (extra, file_named, reason) in [
        (
            "tls_cert = \"missing.pem\"\ntls_key = \"missing.key\"",
            "missing.pem",
            "No such file",
        ),
        (
            "tls_cert = \"garbage.pem\"\ntls_key = \"garbage.pem\"",
            "garbage.pem",
            "no certificate",
        ),
        ("client_ca = \"absent-ca.pem\"", "absent-ca.pem", "No such file"),
    ] {
        let config = write_config(dir.path(), net, &dir.path().join("data"), extra);
        let check = sluice(
            dir.path(),
            &[],
            &["check-config", "--config", &config.display().to_string()],
        );
        assert_eq!(check.status.code(), Some(2), "{extra}: {}", stderr(&check));
        let text = stderr(&check);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(file_named) && text.contains(reason),
            "{extra}: {text}"
        );
        // serve fails the same way, on one line, without -v.
        let serve = sluice(
            dir.path(),
            &[],
            &["serve", "--config", &config.display().to_string()],
        );
        assert_ne!(serve.status.code(), Some(0), "{extra}");
        let text = stderr(&serve);
        let line = text
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        assert!(
            line.contains(file_named) && line.contains(reason),
            "{extra}: {text}"
        );
    }

    // Two nodes on one data_dir.
    let node = Node::start(NodeOptions::new(net.ip(3), ""));
    let config = write_config(dir.path(), net, &node.data_dir(), "");
    let second = sluice(
        dir.path(),
        &[],
        &["serve", "--config", &config.display().to_string()],
    );
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let text = stderr(&second);
    assert!(
        text.contains(&format!(
            "another sluice node is using {}",
            node.data_dir().display()
        )),
        "{text}"
    );
}

#[test]
fn domain_check_says_dns_is_unreachable_quickly() {
    let net = Net(174);
    let dir = tempfile::tempdir().expect("temp dir");
    // Nobody answers DNS on this address and port.
    let silent = net.addr(53);
    std::fs::write(
        dir.path().join("node.toml"),
        format!("[node]\nhostname = \"gw.contoso.test\"\n[delivery]\ndns = \"{silent}\"\n"),
    )
    .expect("write config");
    let started = Instant::now();
    let check = sluice(
        dir.path(),
        &[],
        &["domain", "check", "contoso.test", "--config", "node.toml"],
    );
    let took = started.elapsed();
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let text = stderr(&check);
    assert!(text.contains("DNS is unreachable"), "{text}");
    assert!(text.contains(&silent.to_string()), "{text}");
    assert!(
        String::from_utf8_lossy(&check.stdout).is_empty(),
        "no record table without DNS"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
