//! `sluice domain check NAME`: does DNS send this domain's mail to this
//! node, and does its SPF record allow this node to send for it?
//! Looked up with the node's own resolver settings (`delivery.dns`).

use super::output::json;
use super::{Failure, GlobalArgs};
use crate::config::Config;
use crate::dns::{MxAnswer, Resolver};
use crate::message::Domain;
use serde::Serialize;
use std::net::IpAddr;

/// One record compared.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// `MX`, `A`, `SPF`.
    pub record: String,
    /// What this node needs.
    pub expected: String,
    /// What DNS has.
    pub found: String,
    /// Whether they agree.
    pub ok: bool,
}

/// Runs the check and prints it.
pub(crate) fn run(global: &GlobalArgs, name: &str, as_json: bool) -> Result<(), Failure> {
    let config = Config::load(global.config.as_deref()).map_err(|e| Failure::usage(e.to_string()))?;
    let domain = Domain::parse(name).map_err(|e| Failure::usage(e.to_string()))?;
    let resolver = crate::dns::resolver(&config.dns).map_err(|e| Failure::runtime(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let lines = runtime.block_on(async {
        let mut lines = check(resolver.as_ref(), &config, &domain).await;
        lines.extend(super::domain_tls::tls_lines(resolver.clone(), &config, &domain).await);
        lines
    });
    if as_json {
        print!("{}", json(&lines)?);
    } else {
        let mut table = super::output::Table::new(&["RECORD", "EXPECTED", "FOUND", "OK"]);
        for l in &lines {
            table.row(vec![
                l.record.clone(),
                l.expected.clone(),
                l.found.clone(),
                if l.ok { "yes" } else { "NO" }.into(),
            ]);
        }
        print!("{}", table.render());
    }
    if lines.iter().all(|l| l.ok) {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{domain}: DNS does not match what this node needs"
        )))
    }
}

/// The node's outbound addresses: bind_address, else its SMTP listeners.
fn node_addresses(config: &Config) -> Vec<IpAddr> {
    match config.bind_address {
        Some(ip) => vec![ip],
        None => config
            .smtp_listen
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect(),
    }
}

async fn check(resolver: &dyn Resolver, config: &Config, domain: &Domain) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let hostname = config.hostname.to_ascii_lowercase();
    let mx = match resolver.mx(domain).await {
        Ok(MxAnswer::Hosts(hosts)) => hosts
            .iter()
            .map(|(p, h)| format!("{p} {}", h.trim_end_matches('.')))
            .collect(),
        Ok(MxAnswer::NullMx) => vec!["null MX (accepts no mail)".to_string()],
        Ok(MxAnswer::NoRecords) => Vec::new(),
        Err(e) => vec![format!("lookup failed: {e}")],
    };
    let points_here = mx.iter().any(|m| {
        m.split_whitespace()
            .nth(1)
            .is_some_and(|h| h.eq_ignore_ascii_case(&hostname))
    });
    lines.push(CheckLine {
        record: "MX".into(),
        expected: format!("{domain} MX -> {hostname}"),
        found: if mx.is_empty() {
            "none".into()
        } else {
            mx.join(", ")
        },
        ok: points_here,
    });
    let addresses = node_addresses(config);
    let host_ips = resolver.ips(&hostname).await.unwrap_or_default();
    lines.push(CheckLine {
        record: "A/AAAA".into(),
        expected: format!("{hostname} -> {}", list(&addresses)),
        found: if host_ips.is_empty() {
            "none".into()
        } else {
            list(&host_ips)
        },
        ok: !host_ips.is_empty()
            && (addresses.is_empty() || host_ips.iter().any(|ip| addresses.contains(ip))),
    });
    let spf: Vec<String> = resolver
        .txt(domain.as_str())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.to_ascii_lowercase().starts_with("v=spf1"))
        .collect();
    let expected_spf = format!(
        "v=spf1 {} -all",
        addresses
            .iter()
            .map(|ip| if ip.is_ipv4() {
                format!("ip4:{ip}")
            } else {
                format!("ip6:{ip}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let authorizes = spf
        .first()
        .is_some_and(|record| spf_lists(record, &addresses, &hostname));
    lines.push(CheckLine {
        record: "SPF".into(),
        expected: expected_spf,
        found: if spf.is_empty() {
            "none".into()
        } else {
            spf.join(" | ")
        },
        ok: spf.len() == 1 && authorizes,
    });
    lines
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether an SPF record names one of `addresses` by ip4/ip6 (with CIDR),
/// or this host by `a:`/`mx` mechanisms. Includes are not followed: they
/// are reported as not verifiable.
fn spf_lists(record: &str, addresses: &[IpAddr], hostname: &str) -> bool {
    record.split_whitespace().skip(1).any(|term| {
        let term = term.trim_start_matches('+');
        if let Some(range) = term.strip_prefix("ip4:").or_else(|| term.strip_prefix("ip6:")) {
            let net = range
                .parse::<ipnet::IpNet>()
                .or_else(|_| range.parse::<IpAddr>().map(ipnet::IpNet::from));
            return net.is_ok_and(|net| addresses.iter().any(|ip| net.contains(ip)));
        }
        term.strip_prefix("a:")
            .is_some_and(|h| h.eq_ignore_ascii_case(hostname))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_terms_are_matched_against_the_node() {
        let ip: IpAddr = "127.0.0.10".parse().unwrap();
        assert!(spf_lists("v=spf1 ip4:127.0.0.0/24 -all", &[ip], "gw.test"));
        assert!(spf_lists("v=spf1 a:gw.test ~all", &[ip], "gw.test"));
        assert!(!spf_lists(
            "v=spf1 ip4:10.0.0.0/8 include:x.test -all",
            &[ip],
            "gw.test"
        ));
        assert!(!spf_lists("v=spf1 -all", &[ip], "gw.test"));
    }
}
