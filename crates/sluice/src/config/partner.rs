//! `[partner]` of `sluice.toml` (SPEC section 12): a scanner node's settings
//! for its tenants, as written and as checked. The tenant stage reads them.

use crate::message::{Address, Domain};
use serde::Deserialize;

/// `[partner]` as written in sluice.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSection {
    /// `smtp_host`.
    pub smtp_host: Option<String>,
    /// `egress_ips`.
    pub egress_ips: Option<Vec<String>>,
    /// `validation_address`.
    pub validation_address: Option<String>,
}

/// Validated `[partner]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerSettings {
    /// Name or address (with `:port` when not 25) tenants' connectors point at.
    pub smtp_host: String,
    /// Addresses (CIDR) the scanner sends from: the tenant's inbound connector lists them.
    pub egress_ips: Vec<String>,
    /// Where tenants' connector validation messages go.
    pub validation_address: Address,
}

impl PartnerSection {
    /// Checks every key; the error names the key.
    pub fn validate(self) -> Result<PartnerSettings, (&'static str, String)> {
        let smtp_host = self
            .smtp_host
            .ok_or(("partner.smtp_host", "is required".to_string()))?;
        check_host_port(&smtp_host).map_err(|m| ("partner.smtp_host", m))?;
        let egress_ips = self.egress_ips.unwrap_or_default();
        if egress_ips.is_empty() {
            return Err((
                "partner.egress_ips",
                "at least one address is needed: tenants accept scanned mail only from these".into(),
            ));
        }
        for ip in &egress_ips {
            check_cidr(ip).map_err(|m| ("partner.egress_ips", m))?;
        }
        let address = self
            .validation_address
            .ok_or(("partner.validation_address", "is required".to_string()))?;
        let validation_address = Address::parse(&address).map_err(|_| {
            (
                "partner.validation_address",
                format!("{address:?} is not an address"),
            )
        })?;
        Ok(PartnerSettings {
            smtp_host,
            egress_ips,
            validation_address,
        })
    }
}

/// `host` or `host:port`, host a DNS name or an IPv4 address.
pub fn check_host_port(text: &str) -> Result<(), String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if let Some(port) = port {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port"))?;
    }
    if host.parse::<std::net::Ipv4Addr>().is_err() && Domain::parse(host).is_err() {
        return Err(format!("{text:?} is not a host name or address"));
    }
    Ok(())
}

/// An address or CIDR range.
pub fn check_cidr(text: &str) -> Result<(), String> {
    text.parse::<ipnet::IpNet>()
        .map(drop)
        .or_else(|_| text.parse::<std::net::IpAddr>().map(drop))
        .map_err(|_| format!("{text:?} is not an address or CIDR range"))
}
