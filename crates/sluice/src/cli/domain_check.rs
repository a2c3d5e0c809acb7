//! `sluice domain check NAME`: does DNS send this domain's mail to this
//! node, and does its SPF record allow this node to send for it?
//! Looked up with the node's own resolver settings (`delivery.dns`).

use super::output::json;
use super::{Failure, GlobalArgs};
use crate::config::{Config, DnsSource};
use crate::dns::{DnsError, MxAnswer, Resolver};
use crate::message::Domain;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// How long the first lookup may take before DNS counts as unreachable: a
/// person is waiting, and the resolver's own retries take longer.
const DNS_WAIT: Duration = Duration::from_secs(5);

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
    let config = super::client::load_config(global)?;
    let domain = Domain::parse(name).map_err(|e| Failure::usage(e.to_string()))?;
    let resolver = crate::dns::resolver(&config.dns).map_err(|e| Failure::runtime(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    // The node's DKIM keys for the domain, when a node is there to ask:
    // the check of MX and SPF works without one.
    let keys: Vec<crate::auth::keys::KeyView> = super::client::ApiClient::connect(global)
        .ok()
        .and_then(|client| {
            client
                .get(&format!("dkim/{}", super::client::segment(domain.as_str())))
                .ok()
        })
        .unwrap_or_default();
    let lines = runtime
        .block_on(async {
            let mut lines = check(resolver.as_ref(), &config, &domain).await?;
            lines.extend(super::domain_tls::tls_lines(resolver.clone(), &config, &domain).await);
            lines.extend(dkim_lines(resolver.as_ref(), &keys).await);
            Ok::<_, String>(lines)
        })
        .map_err(|unreachable| {
            let source = match config.dns {
                DnsSource::System => "the system resolver".to_string(),
                DnsSource::Server(addr) => format!("delivery.dns {addr}"),
            };
            Failure::runtime(format!(
                "cannot check {domain}: DNS is unreachable ({source}: {unreachable})"
            ))
        })?;
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

/// The node's outbound addresses as the internet sees them: bind_address,
/// else its SMTP listeners; loopback and wildcard addresses say nothing
/// about where its mail comes from, so they are never proposed.
fn node_addresses(config: &Config) -> Vec<IpAddr> {
    let candidates = match config.bind_address {
        Some(ip) => vec![ip],
        None => config.smtp_listen.iter().map(|a| a.ip()).collect(),
    };
    candidates
        .into_iter()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .collect()
}

/// Whether `name` can be published as an MX exchange (RFC 5321 5.1: a
/// domain name; a single label or localhost resolves nowhere else).
fn is_fqdn(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.contains('.')
        && !name.eq_ignore_ascii_case("localhost")
        && !name.to_ascii_lowercase().ends_with(".localdomain")
        && Domain::parse(name).is_ok()
}

/// The comparison, or why DNS could not be asked (unreachable, timed out).
async fn check(resolver: &dyn Resolver, config: &Config, domain: &Domain) -> Result<Vec<CheckLine>, String> {
    let mut lines = Vec::new();
    let hostname = config.hostname.to_ascii_lowercase();
    let fqdn = is_fqdn(&hostname);
    let answer = tokio::time::timeout(DNS_WAIT, resolver.mx(domain))
        .await
        .map_err(|_| format!("no answer within {}s", DNS_WAIT.as_secs()))?;
    let mx = match answer {
        Ok(MxAnswer::Hosts(hosts)) => hosts
            .iter()
            .map(|(p, h)| format!("{p} {}", h.trim_end_matches('.')))
            .collect(),
        Ok(MxAnswer::NullMx) => vec!["null MX (accepts no mail)".to_string()],
        Ok(MxAnswer::NoRecords) => Vec::new(),
        Err(DnsError::NotFound { .. }) => vec!["no such domain (NXDOMAIN)".to_string()],
        Err(DnsError::Temporary { detail, .. }) => return Err(detail),
        Err(other) => return Err(other.to_string()),
    };
    let points_here = fqdn
        && mx.iter().any(|m| {
            m.split_whitespace()
                .nth(1)
                .is_some_and(|h| h.eq_ignore_ascii_case(&hostname))
        });
    lines.push(CheckLine {
        record: "MX".into(),
        expected: if fqdn {
            format!("{domain} MX -> {hostname}")
        } else {
            format!("{domain} MX -> this node's FQDN (set node.hostname: {hostname:?} is not one)")
        },
        found: if mx.is_empty() {
            "none".into()
        } else {
            mx.join(", ")
        },
        ok: points_here,
    });
    let addresses = node_addresses(config);
    let host_ips = if fqdn {
        tokio::time::timeout(DNS_WAIT, resolver.ips(&hostname))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let public = if addresses.is_empty() {
        "the node's public address (set delivery.bind_address)".to_string()
    } else {
        list(&addresses)
    };
    lines.push(CheckLine {
        record: "A/AAAA".into(),
        expected: format!("{hostname} -> {public}"),
        found: if host_ips.is_empty() {
            "none".into()
        } else {
            list(&host_ips)
        },
        ok: !host_ips.is_empty()
            && (addresses.is_empty() || host_ips.iter().any(|ip| addresses.contains(ip))),
    });
    let spf: Vec<String> = tokio::time::timeout(DNS_WAIT, resolver.txt(domain.as_str()))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.to_ascii_lowercase().starts_with("v=spf1"))
        .collect();
    let expected_spf = if !addresses.is_empty() {
        format!(
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
        )
    } else if fqdn {
        format!("v=spf1 a:{hostname} -all")
    } else {
        "v=spf1 ip4:PUBLIC-ADDRESS -all (set delivery.bind_address or node.hostname)".to_string()
    };
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
    Ok(lines)
}

/// One line per DKIM key of the domain: the record this node's key needs
/// at `SELECTOR._domainkey.DOMAIN`, and whether DNS publishes that public
/// key (the `p=` values compared, so spacing and tag order do not matter).
async fn dkim_lines(resolver: &dyn Resolver, keys: &[crate::auth::keys::KeyView]) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for key in keys {
        let published: Vec<String> = tokio::time::timeout(DNS_WAIT, resolver.txt(&key.record_name))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.to_ascii_lowercase().contains("p="))
            .collect();
        let wanted = crate::auth::keys::public_key_of(&key.record);
        lines.push(CheckLine {
            record: format!(
                "DKIM {}{}",
                key.selector,
                if key.active { " (active)" } else { "" }
            ),
            expected: format!("{} TXT {}", key.record_name, key.record),
            found: if published.is_empty() {
                "none".into()
            } else {
                published.join(" | ")
            },
            ok: published.len() == 1
                && wanted.is_some()
                && crate::auth::keys::public_key_of(&published[0]) == wanted,
        });
    }
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
    use crate::dns::{BoxFuture, StaticResolver};

    /// A resolver whose server never answers.
    struct Unreachable;

    impl Resolver for Unreachable {
        fn mx<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
            let name = domain.to_string();
            Box::pin(async move {
                Err(DnsError::Temporary {
                    name,
                    detail: "connection refused".into(),
                })
            })
        }
        fn ips<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn node_config(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(Some(&file)).unwrap()
    }

    #[test]
    fn unreachable_dns_is_an_error_not_missing_records() {
        let domain = Domain::parse("contoso.test").unwrap();
        let config = node_config("[node]\nhostname = \"gw.contoso.test\"\n");
        let error = block_on(check(&Unreachable, &config, &domain)).unwrap_err();
        assert!(error.contains("connection refused"), "{error}");
    }

    /// On a machine with the defaults (loopback listener, a one-label host
    /// name) nothing proposed could be published: no ip4:127..., no MX to
    /// a bare host name.
    #[test]
    fn never_proposes_loopback_spf_or_a_bare_host_name_mx() {
        let domain = Domain::parse("contoso.test").unwrap();
        let mut resolver = StaticResolver::default();
        resolver.mx.insert(
            "contoso.test".into(),
            MxAnswer::Hosts(vec![(10, "buildbox".into())]),
        );
        let config = node_config("[node]\nhostname = \"buildbox\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\n");
        let lines = block_on(check(&resolver, &config, &domain)).unwrap();
        for line in &lines {
            assert!(!line.expected.contains("127."), "{line:?}");
            assert!(!line.ok, "{line:?}");
        }
        assert!(!lines[0].expected.contains("-> buildbox"), "{:?}", lines[0]);
        assert!(lines[0].expected.contains("node.hostname"), "{:?}", lines[0]);
        // With an FQDN and a public bind address, those are what is proposed.
        let config = node_config(
            "[node]\nhostname = \"gw.contoso.test\"\n[delivery]\nbind_address = \"192.0.2.25\"\n",
        );
        let lines = block_on(check(&resolver, &config, &domain)).unwrap();
        assert_eq!(lines[0].expected, "contoso.test MX -> gw.contoso.test");
        assert_eq!(lines[2].expected, "v=spf1 ip4:192.0.2.25 -all");
    }

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

    /// Answers TXT queries from a table.
    struct Txt(Vec<(&'static str, &'static str)>);

    impl Resolver for Txt {
        fn mx<'a>(&'a self, _domain: &'a Domain) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
            Box::pin(async { Ok(MxAnswer::NoRecords) })
        }
        fn ips<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
            let found = self
                .0
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, t)| t.to_string())
                .collect();
            Box::pin(async move { Ok(found) })
        }
    }

    #[test]
    fn dkim_records_are_compared_by_public_key() {
        let key = |selector: &str, p: &str| crate::auth::keys::KeyView {
            domain: "contoso.test".into(),
            selector: selector.into(),
            algorithm: crate::auth::keys::KeyAlgorithm::Ed25519,
            active: selector == "selector1",
            created_ms: 0,
            record_name: format!("{selector}._domainkey.contoso.test"),
            record: format!("v=DKIM1; k=ed25519; p={p}"),
            published: None,
        };
        let resolver = Txt(vec![
            (
                "selector1._domainkey.contoso.test",
                "v=DKIM1;p=AAAA BBBB; k=ed25519",
            ),
            (
                "selector2._domainkey.contoso.test",
                "v=DKIM1; k=ed25519; p=OLDKEY",
            ),
        ]);
        let keys = [
            key("selector1", "AAAABBBB"),
            key("selector2", "NEWKEY"),
            key("selector3", "X"),
        ];
        let lines = block_on(dkim_lines(&resolver, &keys));
        let verdicts: Vec<(&str, bool)> = lines.iter().map(|l| (l.record.as_str(), l.ok)).collect();
        assert_eq!(
            verdicts,
            [
                ("DKIM selector1 (active)", true),
                ("DKIM selector2", false),
                ("DKIM selector3", false)
            ]
        );
        assert_eq!(lines[2].found, "none");
        assert_eq!(
            lines[1].expected,
            "selector2._domainkey.contoso.test TXT v=DKIM1; k=ed25519; p=NEWKEY"
        );
    }
}
