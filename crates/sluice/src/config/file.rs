//! The serde shape of `sluice.toml` (SPEC section 3).

use super::{parse_duration, parse_size, Config, ConfigError, DnsSource};
use serde::Deserialize;
use std::path::Path;

/// `sluice.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    smtp: SmtpSection,
    #[serde(default)]
    delivery: DeliverySection,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    trace: TraceSection,
    #[serde(default)]
    dlp: DlpSection,
    #[serde(default)]
    reporting: ReportingSection,
    partner: Option<super::partner::PartnerSection>,
    #[serde(default)]
    auth: AuthSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    hostname: Option<String>,
    data_dir: Option<String>,
    content_memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    url: Option<String>,
    min_free: Option<String>,
    lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpSection {
    listen: Option<Vec<String>>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    client_ca: Option<String>,
    max_message_size: Option<String>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_errors: Option<usize>,
    session_timeout: Option<String>,
    data_timeout: Option<String>,
    command_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverySection {
    retry: Option<Vec<String>>,
    expire_after: Option<String>,
    dns: Option<String>,
    extra_ca: Option<String>,
    max_concurrency: Option<usize>,
    max_per_destination: Option<usize>,
    destination_down_after: Option<u32>,
    destination_probe: Option<String>,
    destination_probe_max: Option<String>,
    bind_address: Option<String>,
    mx_port: Option<u16>,
    dane: Option<bool>,
    mta_sts: Option<bool>,
    dnssec_trust_anchor: Option<String>,
    mta_sts_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportingSection {
    from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlpSection {
    scan_budget: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceSection {
    retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    dmarc_enforce: Option<bool>,
    trusted_arc_sealers: Option<Vec<String>>,
    arc_seal: Option<super::auth_settings::ArcSealIdentity>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl NodeFile {
    /// Checks every value and resolves relative paths against `base`.
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let path = |p: &str| base.join(p);
        let socket = |key: &str, v: &str| {
            v.parse()
                .map_err(|_| invalid(key, format!("{v:?} is not an address:port")))
        };
        let smtp_listen = self
            .smtp
            .listen
            .unwrap_or_else(|| vec!["127.0.0.1:2525".to_string()])
            .iter()
            .map(|v| socket("smtp.listen", v))
            .collect::<Result<Vec<_>, _>>()?;
        let tls_cert = match (self.smtp.tls_cert, self.smtp.tls_key) {
            (Some(cert), Some(key)) => Some((path(&cert), path(&key))),
            (None, None) => None,
            _ => return Err(invalid("smtp.tls_cert", "tls_cert and tls_key go together")),
        };
        let retry = self
            .delivery
            .retry
            .unwrap_or_else(|| {
                ["1m", "5m", "15m", "30m", "1h", "2h", "4h"]
                    .map(String::from)
                    .to_vec()
            })
            .iter()
            .map(|v| parse_duration(v).map_err(|m| invalid("delivery.retry", m)))
            .collect::<Result<Vec<_>, _>>()?;
        if retry.is_empty() {
            return Err(invalid("delivery.retry", "at least one interval is needed"));
        }
        let dns = match self.delivery.dns.as_deref() {
            None | Some("system") => DnsSource::System,
            Some(server) => {
                let addr = server
                    .parse()
                    .or_else(|_| server.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| {
                        invalid(
                            "delivery.dns",
                            format!("{server:?} is neither \"system\" nor address[:port]"),
                        )
                    })?;
                DnsSource::Server(addr)
            }
        };
        let bind_address = self
            .delivery
            .bind_address
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid("delivery.bind_address", format!("{v:?} is not an IP address")))
            })
            .transpose()?;
        let max_message_size = match self.smtp.max_message_size {
            Some(v) => parse_size(&v).map_err(|m| invalid("smtp.max_message_size", m))?,
            None => 35_000_000,
        };
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(invalid(key, "must be at least 1"))
            } else {
                Ok(v)
            }
        };
        let duration = |key: &str, value: Option<&str>, default: &str| {
            let parsed = parse_duration(value.unwrap_or(default)).map_err(|m| invalid(key, m))?;
            if parsed.is_zero() {
                Err(invalid(key, "must be longer than zero"))
            } else {
                Ok(parsed)
            }
        };
        let content_memory = match self.node.content_memory {
            Some(v) => parse_size(&v).map_err(|m| invalid("node.content_memory", m))?,
            None => 256_000_000,
        };
        if content_memory < 1_000_000 {
            return Err(invalid("node.content_memory", "must be at least 1MB"));
        }
        let reporting_from = self
            .reporting
            .from
            .map(|from| {
                crate::message::Address::parse(&from)
                    .map_err(|_| invalid("reporting.from", format!("{from:?} is not a mail address")))
            })
            .transpose()?;
        Ok(Config {
            hostname: self.node.hostname.unwrap_or_else(system_hostname),
            content_memory,
            data_dir: path(self.node.data_dir.as_deref().unwrap_or("./sluice-data")),
            store_url: self.store.url.unwrap_or_else(|| "embedded".to_string()),
            min_free: self
                .store
                .min_free
                .map(|v| super::MinFree::parse(&v).map_err(|m| invalid("store.min_free", m)))
                .transpose()?
                .unwrap_or_default(),
            store_lease: duration("store.lease", self.store.lease.as_deref(), "60s")?,
            smtp_listen,
            tls_cert,
            client_ca: self.smtp.client_ca.map(|p| path(&p)),
            max_message_size,
            max_recipients: positive("smtp.max_recipients", self.smtp.max_recipients.unwrap_or(500))?,
            max_connections: positive(
                "smtp.max_connections",
                self.smtp.max_connections.unwrap_or(10_000),
            )?,
            max_connections_per_ip: positive(
                "smtp.max_connections_per_ip",
                self.smtp.max_connections_per_ip.unwrap_or(50),
            )?,
            max_errors: self.smtp.max_errors.unwrap_or(10),
            session_timeout: duration(
                "smtp.session_timeout",
                self.smtp.session_timeout.as_deref(),
                "10m",
            )?,
            data_timeout: duration("smtp.data_timeout", self.smtp.data_timeout.as_deref(), "5m")?,
            command_timeout: duration("smtp.command_timeout", self.smtp.command_timeout.as_deref(), "5m")?,
            scan_budget: duration("dlp.scan_budget", self.dlp.scan_budget.as_deref(), "2s")?,
            retry,
            expire_after: parse_duration(self.delivery.expire_after.as_deref().unwrap_or("2d"))
                .map_err(|m| invalid("delivery.expire_after", m))?,
            dns,
            extra_ca: self.delivery.extra_ca.map(|p| path(&p)),
            max_concurrency: positive(
                "delivery.max_concurrency",
                self.delivery.max_concurrency.unwrap_or(200),
            )?,
            max_per_destination: positive(
                "delivery.max_per_destination",
                self.delivery.max_per_destination.unwrap_or(20),
            )?,
            destination_down_after: positive(
                "delivery.destination_down_after",
                self.delivery.destination_down_after.unwrap_or(5) as usize,
            )? as u32,
            destination_probe: duration(
                "delivery.destination_probe",
                self.delivery.destination_probe.as_deref(),
                "1m",
            )?,
            destination_probe_max: duration(
                "delivery.destination_probe_max",
                self.delivery.destination_probe_max.as_deref(),
                "30m",
            )?,
            bind_address,
            mx_port: self.delivery.mx_port.unwrap_or(25),
            dane: self.delivery.dane.unwrap_or(true),
            mta_sts: self.delivery.mta_sts.unwrap_or(true),
            dnssec_trust_anchor: self.delivery.dnssec_trust_anchor.map(|p| path(&p)),
            mta_sts_port: self.delivery.mta_sts_port.unwrap_or(443),
            reporting_from,
            admin_listen: socket(
                "admin.listen",
                self.admin.listen.as_deref().unwrap_or("127.0.0.1:8025"),
            )?,
            auth: super::auth_settings::AuthSettings {
                dmarc_enforce: self.auth.dmarc_enforce.unwrap_or(true),
                trusted_arc_sealers: self
                    .auth
                    .trusted_arc_sealers
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                arc_seal: self.auth.arc_seal,
            },
            trace_retention: parse_duration(self.trace.retention.as_deref().unwrap_or("30d"))
                .map_err(|m| invalid("trace.retention", m))?,
            partner: self
                .partner
                .map(|section| section.validate().map_err(|(key, m)| invalid(key, m)))
                .transpose()?,
        })
    }
}
