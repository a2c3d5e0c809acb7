//! Node configuration: `sluice.toml` (serde, unknown keys refused) turned into
//! a validated [`Config`] that the stages read and never re-check.
//!
//! Objects (accepted domains, connectors, rules) are not node settings: they
//! live in the store; their serde shape is in [`objects`], and each stage
//! compiles the objects it owns (see `crate::policy`).
//!
//! config/ is data: it imports `message/`, serde and std, never a stage, so
//! the stages can depend on it and nothing here depends back on them (a
//! test in `lib.rs` checks it).

pub mod auth_settings;
mod file;
pub mod objects;
pub mod partner;
pub mod powershell;
pub mod rule_object;

pub use file::NodeFile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown key.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("invalid value for {key}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Where the resolver of MX/A lookups points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsSource {
    /// The system's resolv.conf.
    System,
    /// A given server (tests run a local one).
    Server(SocketAddr),
}

/// Validated node settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// EHLO name and Received headers.
    pub hostname: String,
    /// Spool, store, certificates, token.
    pub data_dir: PathBuf,
    /// Message content held in memory at once (half for the intake, half
    /// for deliveries); larger messages wait their turn.
    pub content_memory: usize,
    /// Store location: embedded, or a URL for a shared backend.
    pub store_url: String,
    /// Free space kept on the data_dir's filesystem; below it new mail
    /// gets 452 4.3.1.
    pub min_free: MinFree,
    /// On a shared store, how long a node's claim on queued mail lasts
    /// unless renewed: a node that dies holds its work this long.
    pub store_lease: Duration,
    /// SMTP listeners.
    pub smtp_listen: Vec<SocketAddr>,
    /// Server certificate and key (PEM); `None` generates a self-signed pair.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// Trust roots for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Largest message accepted, bytes.
    pub max_message_size: usize,
    /// RCPT TO accepted per transaction.
    pub max_recipients: usize,
    /// Concurrent SMTP sessions.
    pub max_connections: usize,
    /// Concurrent SMTP sessions from one client address.
    pub max_connections_per_ip: usize,
    /// Refused commands and recipients tolerated per session.
    pub max_errors: usize,
    /// Longest SMTP session, start to end.
    pub session_timeout: Duration,
    /// Longest DATA or BDAT transfer, first octet to last.
    pub data_timeout: Duration,
    /// Longest wait for a command.
    pub command_timeout: Duration,
    /// Time one message's DLP scan may take; the rest is `scan_truncated`.
    pub scan_budget: Duration,
    /// Retry intervals after each failed attempt; the last repeats.
    pub retry: Vec<Duration>,
    /// Age after which undelivered recipients bounce.
    pub expire_after: Duration,
    /// Resolver.
    pub dns: DnsSource,
    /// Extra trust roots for outbound TLS.
    pub extra_ca: Option<PathBuf>,
    /// Concurrent outbound deliveries, all destinations.
    pub max_concurrency: usize,
    /// Concurrent connections to one destination host.
    pub max_per_destination: usize,
    /// Consecutive connection failures after which a destination is down.
    pub destination_down_after: u32,
    /// Wait before the first probe of a down destination (then doubling).
    pub destination_probe: Duration,
    /// Longest wait between probes of a down destination.
    pub destination_probe_max: Duration,
    /// Source address of outbound connections.
    pub bind_address: Option<std::net::IpAddr>,
    /// Port of MX deliveries.
    pub mx_port: u16,
    /// DANE for MX deliveries (RFC 7672).
    pub dane: bool,
    /// MTA-STS for MX deliveries (RFC 8461).
    pub mta_sts: bool,
    /// DNSSEC trust anchor (DNSKEY records); `None`: the IANA root keys.
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// Port of the MTA-STS policy server (443; tests use a high port).
    pub mta_sts_port: u16,
    /// Sender of TLS-RPT reports; `None`: `tls-reports@` the hostname.
    pub reporting_from: Option<crate::message::Address>,
    /// Admin API listener.
    pub admin_listen: SocketAddr,
    /// Trace retention.
    pub trace_retention: Duration,
    /// `[partner]`: this node scans mail for tenants (SPEC section 12).
    pub partner: Option<partner::PartnerSettings>,
    /// `[auth]`: mail authentication (SPEC section 9).
    pub auth: auth_settings::AuthSettings,
}

impl Config {
    /// Reads and validates a file; `None` gives the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            None => NodeFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: error.to_string(),
                })?
            }
        };
        let base = path.and_then(Path::parent).unwrap_or(Path::new("."));
        file.validate(base)
    }

    /// Where the admin bearer token is kept.
    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }
}

/// Parses `35MB`, `10KB`, `512` (bytes); K/M/G are powers of 1000 as mail
/// administrators write them (`message_size_limit` style), KiB/MiB powers of 1024.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("not a size: {text:?}"))?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    Ok((value * factor) as usize)
}

/// Parses `1m`, `2h`, `2d`, `30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| format!("not a duration: {text:?} ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("35MB").unwrap(), 35_000_000);
        assert_eq!(parse_size("10KiB").unwrap(), 10240);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    }

    #[test]
    fn defaults_load_without_a_file() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.smtp_listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(config.admin_listen, "127.0.0.1:8025".parse().unwrap());
        assert_eq!(config.retry.len(), 7);
        assert_eq!(config.max_connections_per_ip, 50);
        assert_eq!(config.max_errors, 10);
        assert_eq!(config.session_timeout, Duration::from_secs(600));
        assert_eq!(config.data_timeout, Duration::from_secs(300));
        assert_eq!(config.command_timeout, Duration::from_secs(300));
        assert_eq!(config.scan_budget, Duration::from_secs(2));
        assert_eq!(config.content_memory, 256_000_000);
    }

    #[test]
    fn client_limits_are_read_and_checked() {
        let file: NodeFile = toml::from_str(
            "[smtp]\nmax_connections_per_ip = 3\nmax_errors = 2\nsession_timeout = \"30s\"\n\
             data_timeout = \"10s\"\ncommand_timeout = \"5s\"\n[dlp]\nscan_budget = \"500ms\"\n",
        )
        .unwrap();
        let config = file.validate(Path::new(".")).unwrap();
        assert_eq!(config.max_connections_per_ip, 3);
        assert_eq!(config.max_errors, 2);
        assert_eq!(config.session_timeout, Duration::from_secs(30));
        assert_eq!(config.data_timeout, Duration::from_secs(10));
        assert_eq!(config.command_timeout, Duration::from_secs(5));
        assert_eq!(config.scan_budget, Duration::from_millis(500));
        let zero: NodeFile = toml::from_str("[smtp]\nmax_connections_per_ip = 0\n").unwrap();
        let error = zero.validate(Path::new(".")).unwrap_err().to_string();
        assert!(error.contains("smtp.max_connections_per_ip"), "{error}");
        let never: NodeFile = toml::from_str("[smtp]\nsession_timeout = \"0s\"\n").unwrap();
        assert!(never.validate(Path::new(".")).is_err());
    }

    #[test]
    fn outbound_tls_policy_settings() {
        let defaults = Config::load(None).unwrap();
        assert!(defaults.dane && defaults.mta_sts);
        assert_eq!(defaults.mta_sts_port, 443);
        assert_eq!(defaults.dnssec_trust_anchor, None);
        assert_eq!(defaults.reporting_from, None);
        let file: NodeFile = toml::from_str(
            "[delivery]\ndane = false\nmta_sts = false\ndnssec_trust_anchor = \"k.key\"\nmta_sts_port = 8443\n\n[reporting]\nfrom = \"tls@contoso.test\"\n",
        )
        .unwrap();
        let config = file.validate(Path::new("/etc/sluice")).unwrap();
        assert!(!config.dane && !config.mta_sts);
        assert_eq!(config.mta_sts_port, 8443);
        assert_eq!(
            config.dnssec_trust_anchor,
            Some(PathBuf::from("/etc/sluice/k.key"))
        );
        assert_eq!(config.reporting_from.unwrap().to_string(), "tls@contoso.test");
        let bad: NodeFile = toml::from_str("[reporting]\nfrom = \"not an address\"\n").unwrap();
        let error = bad.validate(Path::new(".")).unwrap_err();
        assert!(error.to_string().contains("reporting.from"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<NodeFile>("[smtp]\nlisten = []\nbogus = 1\n").unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
    }
}

/// How much free space to keep: `[store] min_free`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// Octets.
    Bytes(u64),
    /// Per cent of the filesystem's size, 0 to 100.
    Percent(f64),
}

impl Default for MinFree {
    /// 1 GB.
    fn default() -> Self {
        MinFree::Bytes(1_000_000_000)
    }
}

impl MinFree {
    /// `"1GB"`, `"500MB"`, `"5%"`.
    pub fn parse(text: &str) -> Result<MinFree, String> {
        match text.trim().strip_suffix('%') {
            Some(percent) => {
                let value: f64 = percent
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a percentage"))?;
                if !(0.0..=100.0).contains(&value) {
                    return Err(format!("{text:?} is not between 0% and 100%"));
                }
                Ok(MinFree::Percent(value))
            }
            None => parse_size(text).map(|octets| MinFree::Bytes(octets as u64)),
        }
    }

    /// The octets to keep free on a filesystem of `total` octets.
    pub fn threshold(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(octets) => octets,
            MinFree::Percent(percent) => (total as f64 * percent / 100.0) as u64,
        }
    }
}
