//! `sluice demo` (net 127.0.0.0/24: the demo's fixed addresses 127.0.0.10,
//! .20, .30, .50, .51 and its DNS server on .53): the tour runs topology A,
//! validates the scanner connector (the gateway set up from the scanner's
//! tenant kit), delivers the clean message once, quarantines the sensitive
//! one, brings a DKIM-signed message from the internet through the scanner,
//! which seals it, prints the traces and the authentication headers, and
//! stops cleanly on Ctrl-C (SIGINT).

use super::support::Guarded;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_runs_the_reference_topology_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("demo.out");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("demo")
        .current_dir(dir.path())
        .stdout(Stdio::from(std::fs::File::create(&out).expect("output file")))
        .stderr(Stdio::null());
    let mut demo = Guarded::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("Ctrl-C stops them") {
        super::support::pause(Duration::from_millis(200));
        text.clear();
        std::fs::File::open(&out)
            .expect("output")
            .read_to_string(&mut text)
            .expect("utf-8");
        assert!(demo.exited().is_none(), "demo exited early:\n{text}");
    }
    assert!(
        text.contains("Ctrl-C stops them"),
        "demo did not finish its tour:\n{text}"
    );
    assert!(
        text.contains("connector \"To scanner\": validation passed"),
        "{text}"
    );
    // The partner connectors come from onboarding, not from hand-written objects.
    assert!(text.contains("sluice tenant add contoso.test"), "{text}");
    assert!(
        text.contains("New-OutboundConnector -Name 'To scanner'"),
        "{text}"
    );

    let clean = text
        .split("Clean message")
        .nth(1)
        .and_then(|t| t.split("Sensitive message").next())
        .expect("clean trace");
    // gateway -> scanner -> gateway -> internet, each hop once, in order.
    let hops: Vec<&str> = clean
        .lines()
        .filter(|l| l.contains(" received "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(hops, ["gateway", "scanner", "gateway", "internet"], "{clean}");
    assert!(clean.contains("internet  delivered"), "{clean}");
    assert!(
        clean.contains(
            "scanner   scanned          [From tenant contoso.test]  no sensitive information found"
        ),
        "{clean}"
    );
    let sensitive = text
        .split("Sensitive message")
        .nth(1)
        .and_then(|t| t.split("Inbound message").next())
        .expect("sensitive trace");
    assert!(sensitive.contains("quarantined"), "{sensitive}");
    assert!(sensitive.contains("credit_card:1"), "{sensitive}");
    assert!(
        !sensitive.contains("internet "),
        "the sensitive message reached the internet:\n{sensitive}"
    );
    assert!(!text.contains("9855"), "a matched number leaked into the output");

    // The inbound message: judged by the gateway on arrival against the
    // demo's own DNS (fabrikam.test's SPF, DKIM key and DMARC policy),
    // then stamped and sealed by the scanner on its way back.
    let inbound = text
        .split("Inbound message")
        .nth(1)
        .and_then(|t| t.split("Internet mailbox:").next())
        .expect("inbound trace and headers");
    let hops: Vec<&str> = inbound
        .lines()
        .filter(|l| l.contains(" received "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(hops, ["internet", "gateway", "scanner", "gateway"], "{inbound}");
    let results: Vec<&str> = inbound
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Authentication-Results: gw.contoso.test;"))
        .collect();
    assert_eq!(
        results.len(),
        1,
        "one results header of the gateway's:\n{inbound}"
    );
    for expected in [
        "spf=pass",
        "designates 127.0.0.50 as permitted sender",
        "dkim=pass header.d=fabrikam.test header.s=selector1",
        "dmarc=pass header.from=fabrikam.test policy.dmarc=reject",
    ] {
        assert!(
            results[0].contains(expected),
            "{expected} missing: {}",
            results[0]
        );
    }
    let seal = inbound
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ARC-Seal:"))
        .unwrap_or_else(|| panic!("no ARC seal shown:\n{inbound}"));
    for expected in [
        "i=1",
        "a=rsa-sha256",
        "s=arc",
        "d=scanner.partner.test",
        "cv=none",
    ] {
        assert!(seal.contains(expected), "{expected} missing: {seal}");
    }
    let sealed = inbound
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ARC-Authentication-Results: i=1; scanner.partner.test;"))
        .unwrap_or_else(|| panic!("no sealed results shown:\n{inbound}"));
    assert!(sealed.contains("dkim=pass header.d=fabrikam.test"), "{sealed}");
    let inbox = dir
        .path()
        .join("sluice-demo/gateway/mailboxes/contoso.test/bob/new");
    assert_eq!(
        std::fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(0),
        1,
        "exactly one inbound message at the gateway"
    );
    let mailbox = dir
        .path()
        .join("sluice-demo/internet/mailboxes/fabrikam.test/bob/new");
    assert_eq!(
        std::fs::read_dir(&mailbox).map(|d| d.count()).unwrap_or(0),
        1,
        "exactly one message at the internet"
    );

    let pid = demo.id().expect("running");
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stopped = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = demo.exited() {
            break exit;
        }
        assert!(Instant::now() < stopped, "demo did not stop on SIGINT");
        super::support::pause(Duration::from_millis(100));
    };
    assert!(exit.success(), "demo exited with {exit:?}");
}
