//! The README's walkthrough, run exactly as printed: every `sh` block of its
//! "Walkthrough" section in one bash (`-e`: any failing command fails the
//! test), in a fresh directory, with the `sluice` under test first on PATH
//! (as the README's Install section puts target/release there), swaks and
//! smtp-sink as the peers. It uses the README's own addresses (127.0.0.1,
//! ports 2525, 2526 and 8025; the demo owns the rest of 127.0.0.0/24).
//! Every process it starts is in one process group, killed at the end.
//! The one setting the README leaves at its default and the test does not
//! is `delivery.dns`: `SLUICE_CONFIG` names a file holding only that, a
//! dnsmasq of the test's on 127.0.0.1, so no lookup (MX, SPF, DMARC) of the
//! walkthrough reaches the machine's resolver.
//!
//! Also: no link in README.md or docs/ leads outside the repository.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `sh` blocks of the `## Walkthrough` section, in order.
fn walkthrough(readme: &str) -> String {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Walkthrough\n"))
        .expect("README has a Walkthrough section");
    let mut script = String::new();
    let mut inside = false;
    for line in section.lines() {
        match (inside, line.trim_end()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, text) => {
                script.push_str(text);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut contents: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    contents.sort();
    contents
}

#[test]
fn the_readme_walkthrough_works_as_printed() {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README.md");
    let script = walkthrough(&readme);
    assert!(script.contains("sluice serve"), "{script}");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("walkthrough.sh"), &script).expect("write script");
    let dns = super::support::Dns::start(std::net::Ipv4Addr::LOCALHOST, &[]);
    // Beside the data the walkthrough makes, so its relative default
    // (./sluice-data from sluice-tour/) is the same with this file as without.
    let tour = dir.path().join("sluice-tour");
    std::fs::create_dir_all(&tour).expect("tour dir");
    let config = tour.join("dns.toml");
    std::fs::write(&config, format!("[delivery]\ndns = \"{}\"\n", dns.addr)).expect("write config");
    let binaries = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        binaries.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("timeout");
    command
        .args(["180", "bash", "-e", "walkthrough.sh"])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("SLUICE_CONFIG", &config)
        .env_remove("SLUICE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn().expect("run bash");
    let group = child.id();
    let output = child.wait_with_output().expect("walkthrough output");
    // Whatever the script left running (it should stop both itself).
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(tour.join("sluice.log")).unwrap_or_default();
    let context = format!(
        "--- script ---\n{script}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n--- sluice.log ---\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "walkthrough failed ({}):\n{context}",
        output.status
    );

    let maildir = files_in(&tour.join("sluice-data/mailboxes/contoso.test/alice/new"));
    assert_eq!(maildir.len(), 1, "{context}");
    assert!(maildir[0].contains("Subject: Hello Alice"), "{}", maildir[0]);
    let relayed = files_in(&tour.join("smart-host"));
    assert_eq!(relayed.len(), 1, "{context}");
    assert!(relayed[0].contains("Subject: Hello Bob"), "{}", relayed[0]);

    assert!(stdout.contains("relay refused"), "{context}");
    let delivered: Vec<&str> = stdout.lines().filter(|l| l.contains(" delivered ")).collect();
    assert!(
        delivered.iter().any(|l| l.contains("alice@contoso.test"))
            && delivered.iter().any(|l| l.contains("bob@fabrikam.test")),
        "the trace does not show both deliveries:\n{context}"
    );
    let refusal = stdout
        .lines()
        .find(|l| l.contains(" rejected ") && l.contains("bob@fabrikam.test"))
        .unwrap_or_else(|| panic!("the trace does not show the refusal:\n{context}"));
    assert!(refusal.contains("550 5.7.1"), "{refusal}");
    assert!(stdout.contains("from mallory@example.net"), "{context}");
}

#[test]
fn no_link_in_the_readme_or_docs_leads_outside_the_repository() {
    let root = repository();
    let mut documents = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(path);
        }
    }
    for document in documents {
        let text = std::fs::read_to_string(&document).expect("read");
        for (_, rest) in text.match_indices("](").map(|(i, _)| text.split_at(i + 2)) {
            let target = rest.split(')').next().unwrap_or_default();
            let file = target.split('#').next().unwrap_or_default();
            if file.is_empty() {
                continue;
            }
            assert!(
                !file.contains("://"),
                "{}: link to {target} leaves the repository",
                document.display()
            );
            let resolved = document.parent().expect("dir").join(file);
            let canonical = resolved
                .canonicalize()
                .unwrap_or_else(|_| panic!("{}: link to {target}: no such file", document.display()));
            assert!(
                canonical.starts_with(root.canonicalize().expect("root")),
                "{}: link to {target} leaves the repository",
                document.display()
            );
        }
    }
}
