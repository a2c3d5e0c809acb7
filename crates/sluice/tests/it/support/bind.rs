//! BIND 9 (`named`) serving a DNSSEC-signed `test.` zone made at test time
//! (dnssec-keygen, dnssec-signzone), with unsigned child zones delegated
//! from it (insecure delegations: no DS, proven by signed NSEC), and
//! chosen signatures broken after signing (bogus answers). The zone's key
//! is written as the trust anchor sluice's `delivery.dnssec_trust_anchor`
//! reads. Authoritative only, no recursion, loopback only.

use super::{free_port, pause, Guarded};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Bind {
    /// What `delivery.dns` should point at.
    pub addr: SocketAddr,
    /// The `test.` key-signing key (what `delivery.dnssec_trust_anchor` reads).
    pub trust_anchor: PathBuf,
    dir: tempfile::TempDir,
    _process: Guarded,
}

/// What the server publishes.
pub struct Zones<'a> {
    /// Records of the signed `test.` zone, zone-file lines relative to
    /// `test.` (SOA, NS and the server's own address are added).
    pub signed: &'a str,
    /// Unsigned child zones: (name under `test.`, records relative to it).
    pub unsigned: &'a [(&'a str, &'a str)],
    /// Owner names (relative to `test.`) whose TLSA signature is broken
    /// after signing, so validating resolvers see a bogus answer.
    pub bogus_tlsa: &'a [&'a str],
}

impl Bind {
    /// Signs the zones and starts named on a free port of 127.0.0.1
    /// (named listens only on addresses an interface has, and loopback
    /// has only that one; the kernel-chosen port keeps tests apart).
    /// `ns_ip` is the address the zone gives its name server.
    pub fn start(ns_ip: Ipv4Addr, zones: &Zones<'_>) -> Bind {
        let dir = tempfile::tempdir().expect("bind temp dir");
        let path = dir.path();
        let ip = Ipv4Addr::LOCALHOST;
        let port = free_port(ip);
        let addr = SocketAddr::new(ip.into(), port);

        let mut zone = format!(
            "$TTL 300\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n@ IN NS ns.test.\nns IN A {ns_ip}\n{}\n",
            zones.signed
        );
        let mut zone_clauses = String::new();
        for (child, records) in zones.unsigned {
            // The delegation, without DS: a secure proof that the child is unsigned.
            zone.push_str(&format!("{child} IN NS ns.test.\n"));
            let file = path.join(format!("{child}.zone"));
            std::fs::write(
                &file,
                format!(
                    "$TTL 300\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n@ IN NS ns.test.\n{records}\n"
                ),
            )
            .expect("write child zone");
            zone_clauses.push_str(&format!(
                "zone \"{child}.test.\" {{ type primary; file \"{}\"; }};\n",
                file.display()
            ));
        }
        std::fs::write(path.join("test.zone"), zone).expect("write zone");

        run(Command::new("dnssec-keygen").args(["-q", "-K"]).arg(path).args([
            "-a",
            "ECDSAP256SHA256",
            "-f",
            "KSK",
            "-n",
            "ZONE",
            "test.",
        ]));
        let key_file = std::fs::read_dir(path)
            .expect("read bind dir")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "key"))
            .expect("dnssec-keygen wrote a .key file");
        let trust_anchor = path.join("trust-anchor.key");
        std::fs::copy(&key_file, &trust_anchor).expect("copy trust anchor");
        // -z: the one key signs everything (a combined signing key); -O
        // full: one record per line, so a signature can be broken by line.
        let signed = path.join("test.signed");
        // It writes its dsset file to the working directory: keep it here.
        run(Command::new("dnssec-signzone")
            .current_dir(path)
            .args(["-S", "-z", "-O", "full", "-K"])
            .arg(path)
            .args(["-o", "test.", "-f"])
            .arg(&signed)
            .arg(path.join("test.zone")));
        if !zones.bogus_tlsa.is_empty() {
            break_signatures(&signed, zones.bogus_tlsa);
        }

        std::fs::write(
            path.join("named.conf"),
            format!(
                r#"options {{
  directory "{dir}";
  listen-on port {port} {{ {ip}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  pid-file "{dir}/named.pid";
  session-keyfile "{dir}/session.key";
  managed-keys-directory "{dir}";
}};
controls {{ }};
zone "test." {{ type primary; file "{signed}"; }};
{zone_clauses}"#,
                dir = path.display(),
                signed = signed.display(),
            ),
        )
        .expect("write named.conf");

        let log = std::fs::File::create(path.join("named.log")).expect("named log");
        let mut command = Command::new("named");
        command
            .args(["-g", "-n", "1", "-c"])
            .arg(path.join("named.conf"))
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        let mut process = Guarded::spawn(command);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !answers(addr) {
            if process.exited().is_some() || Instant::now() > deadline {
                panic!(
                    "named did not start on {addr}: {}",
                    std::fs::read_to_string(path.join("named.log")).unwrap_or_default()
                );
            }
            pause(Duration::from_millis(100));
        }
        Bind {
            addr,
            trust_anchor,
            dir,
            _process: process,
        }
    }

    /// named's log (queries are not logged; start-up and zone loading are).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run DNSSEC tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Alters the first character of the signature over each named TLSA record:
/// the zone still loads (named does not check signatures it serves), a
/// validator finds the answer bogus.
fn break_signatures(signed: &Path, owners: &[&str]) {
    let text = std::fs::read_to_string(signed).expect("read signed zone");
    let mut broken = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let target = owners
                .iter()
                .any(|owner| fields.first() == Some(&format!("{owner}.test.").as_str()));
            if target && fields.get(3) == Some(&"RRSIG") && fields.get(4) == Some(&"TLSA") {
                broken += 1;
                // Fields: owner ttl class RRSIG covered algorithm labels
                // ttl expiry inception tag signer signature... Flip the
                // signature's first character (still valid base64).
                let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
                let signature = &mut fields[12];
                let first = if signature.starts_with('A') { "B" } else { "A" };
                signature.replace_range(0..1, first);
                fields.join(" ")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(broken, owners.len(), "every bogus owner has a TLSA signature");
    std::fs::write(signed, lines.join("\n") + "\n").expect("write signed zone");
}

/// Whether `dig` gets the zone's SOA from the server.
fn answers(server: SocketAddr) -> bool {
    Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+norec",
            "+short",
            "+time=1",
            "+tries=1",
            "test.",
            "SOA",
        ])
        .output()
        .map(|output| output.status.success() && !output.stdout.is_empty())
        .unwrap_or(false)
}
