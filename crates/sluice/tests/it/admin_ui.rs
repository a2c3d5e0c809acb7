//! The web admin center in headless Chromium, driven by Playwright
//! (`ui/tests/admin_center.mjs`) against a real node and smtp-sink. Net 90.
//!
//! Phases, with mail sent over SMTP (swaks) in between:
//! 1. `setup`: sign in, add the accepted domain, create seed 000's outbound
//!    connector through the wizard (partner, rule-scoped, smart host = the
//!    sink; a field error first, then a passing validation), the on-prem
//!    inbound connector by IP, a custom detector on the Detectors page (a
//!    field error first, then created, listed and edited), the routing rule
//!    and a quarantine rule, and reorder them.
//! 2. `mail`: find the delivered message in Message trace; view and release
//!    the quarantined one.
//! 3. `queue`: with the sink down, hold/release/retry/delete a deferred
//!    message; the dashboard charts and `/metrics` after the traffic.
//!
//! Screenshots of every page go to `target/ui-screenshots/`. Needs Node.js
//! and Debian's chromium (`scripts/test.sh` installs it); runs `npm ci` in
//! `ui/tests` when its node_modules is missing.

use crate::support::{swaks, Net, Node, NodeOptions, Sink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NODE: u8 = 1;
const SINK: u8 = 21;
const ON_PREM: u8 = 40;

fn ui_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/tests")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// `npm ci` once, when the test's node_modules is missing.
fn install_playwright(dir: &Path) {
    if dir.join("node_modules/playwright-core").exists() {
        return;
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("run npm (Node.js is needed for the admin center tests)");
    assert!(
        output.status.success() || dir.join("node_modules/playwright-core").exists(),
        "npm ci in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Browser {
    url: String,
    token: String,
    sink: String,
    screenshots: PathBuf,
    on_prem: String,
}

impl Browser {
    fn run(&self, phase: &str) {
        let dir = ui_tests_dir();
        let output = Command::new("timeout")
            .args(["300", "node", "admin_center.mjs", phase])
            .current_dir(&dir)
            .env("SLUICE_URL", &self.url)
            .env("SLUICE_TOKEN", &self.token)
            .env("SLUICE_SINK", &self.sink)
            .env("SLUICE_ONPREM", &self.on_prem)
            .env("SCREENSHOTS", &self.screenshots)
            .env("CHROMIUM", chromium())
            .env("SLUICE_TENANT_IP", "127.0.151.10/32")
            .output()
            .expect("run node");
        assert!(
            output.status.success(),
            "admin center phase {phase} failed ({}); screenshots in {}\n{}\n{}",
            output.status,
            self.screenshots.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn send(net: Net, node: &Node, subject: &str) {
    let on_prem = net.ip(ON_PREM).to_string();
    let run = swaks(
        node.smtp,
        &[
            "--local-interface",
            &on_prem,
            "--from",
            "alice@contoso.test",
            "--to",
            "bob@fabrikam.test",
            "--header",
            &format!("Subject: {subject}"),
            // Terminal escapes in the EHLO name: the trace page must show them escaped.
            "--helo",
            "onprem\u{1b}[31m.contoso.test",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
}

#[test]
fn admin_center_creates_connectors_and_rules_and_follows_mail() {
    assert!(
        Path::new(&chromium()).exists(),
        "{} is missing: install Debian's chromium (scripts/test.sh does)",
        chromium()
    );
    install_playwright(&ui_tests_dir());
    let net = Net(90);
    let mut sink = Sink::start(net.ip(SINK));
    let node = Node::start(NodeOptions::new(net.ip(NODE), ""));
    let token = std::fs::read_to_string(node.data_dir().join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string();
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("ui-screenshots");
    let browser = Browser {
        url: format!("http://{}", node.admin),
        token,
        sink: sink.addr.to_string(),
        screenshots,
        on_prem: format!("{}/32", net.ip(ON_PREM)),
    };

    browser.run("setup");

    // Through the rule and the wizard's connector to the sink.
    send(net, &node, "through the scanner");
    // Caught by the quarantine rule, which runs first after the reorder.
    send(net, &node, "please quarantine-me");
    let arrived = sink.wait_for(2, Duration::from_secs(30));
    assert!(
        arrived
            .iter()
            .any(|m| m.header("subject").as_deref() == Some("through the scanner")),
        "not delivered through the connector: {:?}",
        arrived.iter().map(|m| m.header("subject")).collect::<Vec<_>>()
    );
    assert!(
        !arrived
            .iter()
            .any(|m| m.header("subject").as_deref() == Some("please quarantine-me")),
        "the quarantined message was delivered"
    );

    browser.run("mail");
    let released = |sink: &Sink| {
        sink.messages()
            .iter()
            .any(|m| m.header("subject").as_deref() == Some("please quarantine-me"))
    };
    assert!(
        crate::support::wait_until(Duration::from_secs(30), || released(&sink)),
        "the released message did not arrive"
    );

    // The sink goes away: the next message waits in the queue, deferred.
    sink.stop();
    send(net, &node, "waits for the scanner");
    node.wait_for_recipient("bob@fabrikam.test", "deferred", Duration::from_secs(30));
    browser.run("queue");
    assert!(
        node.queue_json().is_empty(),
        "deleted in the UI: {:?}",
        node.queue_json()
    );
}

/// The Tenants page of a scanner node (`[partner]` set): add with a field
/// error first, the tenant's row and kit, remove. Net 151.
#[test]
fn tenants_page_onboards_shows_the_kit_and_removes() {
    install_playwright(&ui_tests_dir());
    let net = Net(151);
    let mut node = Node::start(NodeOptions::new(net.ip(NODE), ""));
    let mut config = std::fs::read_to_string(node.config_path()).expect("node.toml");
    config.push_str(&format!(
        "\n[partner]\nsmtp_host = \"{}\"\negress_ips = [\"{}/32\"]\nvalidation_address = \"check@scan.partner.test\"\n",
        node.smtp,
        net.ip(NODE)
    ));
    std::fs::write(node.config_path(), config).expect("node.toml");
    node.restart();
    let token = std::fs::read_to_string(node.data_dir().join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string();
    let browser = Browser {
        url: format!("http://{}", node.admin),
        token,
        sink: format!("{}:2525", net.ip(10)),
        screenshots: Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("ui-screenshots"),
        on_prem: String::new(),
    };
    browser.run("tenants");
    let export = node.cli_ok(&["export"]);
    assert!(!export.contains("contoso.test"), "remove left objects: {export}");
}
