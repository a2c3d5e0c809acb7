//! A sluice node run as users run it: `sluice serve --config FILE` with a
//! config written from SPEC section 3, objects loaded with `sluice apply`,
//! inspected with `sluice queue list --json`.

use super::{log_tail, wait_until, Guarded};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// What differs between the nodes tests start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub hostname: String,
    /// The address its SMTP listener (and admin API) binds.
    pub ip: Ipv4Addr,
    /// `delivery.dns`: the test's dnsmasq. When unset, the node gets its own
    /// dnsmasq serving no records (NXDOMAIN for `.test` names), so no lookup
    /// (MX, SPF, DKIM, DMARC) ever reaches the system resolver.
    pub dns: Option<SocketAddr>,
    /// `delivery.mx_port`.
    pub mx_port: Option<u16>,
    /// `delivery.extra_ca`: a PEM file trusted for outbound TLS.
    pub extra_ca: Option<PathBuf>,
    /// `delivery.bind_address`.
    pub bind_address: Option<Ipv4Addr>,
    /// `smtp.tls_cert` / `smtp.tls_key`.
    pub tls: Option<super::CertFiles>,
    /// `smtp.client_ca`: trust roots for client certificates.
    pub client_ca: Option<PathBuf>,
    /// `delivery.retry`: short, so retries happen within a test.
    pub retry: Vec<String>,
    /// `delivery.dnssec_trust_anchor`: the test zone's key (DANE tests).
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// `delivery.mta_sts_port`: the test policy server's port.
    pub mta_sts_port: Option<u16>,
    /// More TOML appended to the config (e.g. a `[reporting]` or `[auth]` section).
    pub extra_toml: String,
    /// Objects (SPEC section 4 TOML) applied once the node is up.
    pub objects: String,
    /// The umask `sluice serve` starts with (the test runner's when unset).
    pub umask: Option<u32>,
    /// Extra `key = value` lines for `[smtp]` (limits of SPEC section 11).
    pub smtp_extra: Vec<String>,
    /// Extra `key = value` lines for `[delivery]`.
    pub delivery_extra: Vec<String>,
    /// `[dlp]` lines, e.g. `scan_budget = "2s"`.
    pub dlp: Vec<String>,
    /// Runs the node under `prlimit --nofile=N:N`, soft and hard, so it
    /// cannot raise the limit (a machine short of file descriptors).
    pub open_files: Option<u64>,
}

impl NodeOptions {
    pub fn new(ip: Ipv4Addr, objects: &str) -> NodeOptions {
        NodeOptions {
            hostname: "gw.contoso.test".to_string(),
            ip,
            dns: None,
            mx_port: None,
            extra_ca: None,
            bind_address: None,
            tls: None,
            client_ca: None,
            retry: vec!["1s".to_string(), "2s".to_string()],
            dnssec_trust_anchor: None,
            mta_sts_port: None,
            extra_toml: String::new(),
            objects: objects.to_string(),
            umask: None,
            smtp_extra: Vec::new(),
            delivery_extra: Vec::new(),
            dlp: Vec::new(),
            open_files: None,
        }
    }
}

/// The objects most tests start from: contoso.test accepted, and relay
/// granted to the on-premises server at `on_prem` by its address.
pub fn contoso_with_on_prem(on_prem: Ipv4Addr) -> String {
    format!(
        r#"
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["{on_prem}/32"]
"#
    )
}

/// [`contoso_with_on_prem`] plus one outbound connector, `connector`, that
/// sends mail for `recipient_domains` (one pattern) through `smart_host`.
pub fn on_prem_relay(
    on_prem: Ipv4Addr,
    connector: &str,
    recipient_domains: &str,
    smart_host: impl std::fmt::Display,
) -> String {
    format!(
        r#"{}
[[outbound_connector]]
name = "{connector}"
recipient_domains = ["{recipient_domains}"]
smart_hosts = ["{smart_host}"]
"#,
        contoso_with_on_prem(on_prem)
    )
}

/// A running node. Drop kills it (and prints its log if the test failed).
pub struct Node {
    pub smtp: SocketAddr,
    pub admin: SocketAddr,
    pub options: NodeOptions,
    dir: tempfile::TempDir,
    process: Option<Guarded>,
    /// Bumped on each start so a restart's log does not overwrite the last.
    runs: u32,
    /// The empty DNS of a node whose test serves none.
    _own_dns: Option<super::Dns>,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    pub fn start(mut options: NodeOptions) -> Node {
        let own_dns = match options.dns {
            Some(_) => None,
            None => Some(super::Dns::start(options.ip, &[])),
        };
        if let Some(dns) = &own_dns {
            options.dns = Some(dns.addr);
        }
        let dir = tempfile::tempdir().expect("node temp dir");
        let smtp = SocketAddr::new(options.ip.into(), super::free_port(options.ip));
        let admin = SocketAddr::new(options.ip.into(), super::free_port(options.ip));
        std::fs::write(
            dir.path().join("node.toml"),
            node_toml(&options, smtp, admin, &dir.path().join("data")),
        )
        .expect("write node.toml");
        let mut node = Node {
            smtp,
            admin,
            options,
            dir,
            process: None,
            runs: 0,
            _own_dns: own_dns,
        };
        node.spawn();
        if !node.options.objects.trim().is_empty() {
            let objects = node.dir.path().join("objects.toml");
            std::fs::write(&objects, &node.options.objects).expect("write objects.toml");
            let objects = objects.display().to_string();
            let applied = node.cli(&["apply", "-f", &objects]);
            assert!(
                applied.status.success(),
                "sluice apply failed ({}): {}{}",
                applied.status,
                String::from_utf8_lossy(&applied.stdout),
                String::from_utf8_lossy(&applied.stderr)
            );
        }
        node
    }

    /// `sluice apply -f` of `objects` (TOML, or PowerShell when `file_name`
    /// ends in `.ps1`) written to `file_name` in the node's directory; must
    /// succeed.
    pub fn apply(&self, file_name: &str, objects: &str) {
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, objects).expect("write objects");
        self.cli_ok(&["apply", "-f", &path.display().to_string()]);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("serve-{}.log", self.runs))
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path()).expect("node log");
        // prlimit and the shell each exec what follows, so the guard still
        // owns the node's process.
        let mut program: Vec<String> = Vec::new();
        if let Some(limit) = self.options.open_files {
            program.extend(["prlimit".into(), format!("--nofile={limit}:{limit}"), "--".into()]);
        }
        program.push(env!("CARGO_BIN_EXE_sluice").into());
        let mut command = match self.options.umask {
            Some(umask) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("umask {umask:03o} && exec \"$0\" \"$@\""))
                    .args(&program);
                shell
            }
            None => {
                let mut direct = Command::new(&program[0]);
                direct.args(&program[1..]);
                direct
            }
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,sluice=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        let mut process = Guarded::spawn(command);
        let token = self.data_dir().join("admin.token");
        let (smtp, admin) = (self.smtp, self.admin);
        // Ready means both listeners answer: the admin API is bound after
        // SMTP, and the tests' first step is often a management verb.
        let listening = |addr: &SocketAddr| {
            std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
        };
        let ready = wait_until(BOOT_TIMEOUT, || {
            process.exited().is_some() || (token.exists() && listening(&smtp) && listening(&admin))
        });
        if let Some(status) = process.exited() {
            panic!(
                "sluice serve exited ({status}) during start:\n{}",
                log_tail(&self.log_path(), 40)
            );
        }
        assert!(
            ready,
            "sluice serve did not listen on {smtp} and {admin} with {token:?} within {BOOT_TIMEOUT:?}:\n{}",
            log_tail(&self.log_path(), 40)
        );
        self.process = Some(process);
    }

    /// Runs `sluice ARGS --config node.toml` (a management verb) to the end.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .output()
            .expect("run sluice")
    }

    /// Runs a management verb that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "sluice {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a management verb that must succeed and print JSON.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let stdout = self.cli_ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("sluice {} printed no JSON ({e}): {stdout}", args.join(" ")))
    }

    /// `sluice trace --json ARGS`: the events in the order the node gives.
    pub fn trace(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["trace", "--json"];
        all.extend_from_slice(args);
        match self.cli_json(&all) {
            serde_json::Value::Array(events) => events,
            other => panic!("trace --json is not a list: {other}"),
        }
    }

    /// `sluice queue list --json`: the entries as JSON values.
    pub fn queue_json(&self) -> Vec<serde_json::Value> {
        let output = self.cli(&["queue", "list", "--json"]);
        assert!(
            output.status.success(),
            "sluice queue list failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "queue list --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        match value {
            serde_json::Value::Array(entries) => entries,
            // Also accept one wrapping object such as {"entries": [...]}.
            serde_json::Value::Object(map) => map
                .into_iter()
                .find_map(|(_, v)| match v {
                    serde_json::Value::Array(entries) => Some(entries),
                    _ => None,
                })
                .unwrap_or_default(),
            other => panic!("queue list --json gave {other}"),
        }
    }

    /// Every queued recipient as (address, status, last_error).
    pub fn queued_recipients(&self) -> Vec<(String, String, String)> {
        let text = |v: &serde_json::Value, key: &str| {
            v.get(key)
                .map(|x| match x {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        self.queue_json()
            .iter()
            .flat_map(|entry| {
                let entry_status = text(entry, "status");
                entry
                    .get("recipients")
                    .and_then(|r| r.as_array())
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |rcpt| {
                        let address = match &rcpt {
                            serde_json::Value::String(s) => s.clone(),
                            other => ["address", "recipient", "rcpt", "to"]
                                .iter()
                                .map(|key| text(other, key))
                                .find(|s| !s.is_empty())
                                .unwrap_or_default(),
                        };
                        let status = Some(text(&rcpt, "status"))
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| entry_status.clone());
                        (address, status, text(&rcpt, "last_error"))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Polls the queue (every 200 ms, each poll one `queue list` run) until
    /// a recipient containing `address` has `status`; returns that
    /// recipient's (address, status, last_error), or panics with the last
    /// queue seen.
    pub fn wait_for_recipient(
        &self,
        address: &str,
        status: &str,
        timeout: Duration,
    ) -> (String, String, String) {
        let mut last_seen = Vec::new();
        let found = wait_until(timeout, || {
            last_seen = self.queued_recipients();
            let hit = last_seen
                .iter()
                .any(|(a, s, _)| a.contains(address) && s == status);
            if !hit {
                super::pause(Duration::from_millis(200));
            }
            hit
        });
        assert!(
            found,
            "no recipient {address} with status {status} within {timeout:?}; queue: {last_seen:?}"
        );
        last_seen
            .into_iter()
            .find(|(a, s, _)| a.contains(address) && s == status)
            .expect("just found")
    }

    /// Polls until the queue holds no entry (everything delivered or
    /// bounced); false on timeout.
    pub fn wait_for_empty_queue(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let empty = self.queue_json().is_empty();
            if !empty {
                super::pause(Duration::from_millis(200));
            }
            empty
        })
    }

    /// SIGKILL: no shutdown path runs, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts again on the same config and data_dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The node's log so far (all runs).
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                std::fs::read_to_string(self.dir.path().join(format!("serve-{run}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// The node's peak resident memory so far (`VmHWM`), in octets.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.process.as_ref().and_then(Guarded::id).expect("node running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc status")
            * 1024
    }

    /// Messages in `data_dir/mailboxes/DOMAIN/LOCAL/new/`.
    pub fn mailbox(&self, domain: &str, local: &str) -> Vec<Vec<u8>> {
        let new = self
            .data_dir()
            .join("mailboxes")
            .join(domain)
            .join(local)
            .join("new");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| std::fs::read(path).ok())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- sluice node {} log (tail) ---\n{}",
                self.smtp,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        self.kill9();
    }
}

fn node_toml(options: &NodeOptions, smtp: SocketAddr, admin: SocketAddr, data: &Path) -> String {
    let quote = |s: &str| format!("{s:?}");
    let mut toml = format!(
        "[node]\nhostname = {}\ndata_dir = {}\n\n[smtp]\nlisten = [{}]\n",
        quote(&options.hostname),
        quote(&data.display().to_string()),
        quote(&smtp.to_string()),
    );
    if let Some(files) = &options.tls {
        toml += &format!(
            "tls_cert = {}\ntls_key = {}\n",
            quote(&files.cert.display().to_string()),
            quote(&files.key.display().to_string())
        );
    }
    if let Some(ca) = &options.client_ca {
        toml += &format!("client_ca = {}\n", quote(&ca.display().to_string()));
    }
    for line in &options.smtp_extra {
        toml += &format!("{line}\n");
    }
    if !options.dlp.is_empty() {
        toml += &format!("\n[dlp]\n{}\n", options.dlp.join("\n"));
    }
    let retry: Vec<String> = options.retry.iter().map(|r| quote(r)).collect();
    toml += &format!("\n[delivery]\nretry = [{}]\n", retry.join(", "));
    if let Some(dns) = options.dns {
        toml += &format!("dns = {}\n", quote(&dns.to_string()));
    }
    if let Some(port) = options.mx_port {
        toml += &format!("mx_port = {port}\n");
    }
    if let Some(ca) = &options.extra_ca {
        toml += &format!("extra_ca = {}\n", quote(&ca.display().to_string()));
    }
    if let Some(ip) = options.bind_address {
        toml += &format!("bind_address = {}\n", quote(&ip.to_string()));
    }
    if let Some(anchor) = &options.dnssec_trust_anchor {
        toml += &format!("dnssec_trust_anchor = {}\n", quote(&anchor.display().to_string()));
    }
    if let Some(port) = options.mta_sts_port {
        toml += &format!("mta_sts_port = {port}\n");
    }
    for line in &options.delivery_extra {
        toml += &format!("{line}\n");
    }
    toml += &format!("\n[admin]\nlisten = {}\n", quote(&admin.to_string()));
    toml += &options.extra_toml;
    toml
}
