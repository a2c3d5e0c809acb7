//! Which hosts an attempt tries, in order, and what DNS answers mean for
//! the outcome. Pure decisions over resolver answers, so they are tested
//! without a network.
//!
//! Smart hosts: as configured, in order. MX: by preference; no MX record
//! means the domain itself (implicit MX, RFC 5321 5.1); a null MX (RFC
//! 7505) and a domain that does not exist are permanent failures; any
//! other DNS trouble is temporary.

use super::Outcome;
use crate::dns::{DnsError, MxAnswer};
use crate::message::{Domain, Reply};
use crate::route::HostPort;
use std::net::IpAddr;

/// One host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HopHost {
    /// Name (or IP literal) as configured or as the MX record gives it.
    pub(super) name: String,
    /// TCP port.
    pub(super) port: u16,
    /// The domain's own name used as implicit MX: no address is then a
    /// permanent failure (the domain cannot receive mail).
    pub(super) implicit_mx: bool,
}

/// Smart hosts, in configured order.
pub(super) fn smart_hosts(hosts: &[HostPort]) -> Vec<HopHost> {
    hosts
        .iter()
        .map(|host| HopHost {
            name: host.host.clone(),
            port: host.port,
            implicit_mx: false,
        })
        .collect()
}

/// The host of an address-literal domain (`[192.0.2.1]`, `[IPv6:::1]`),
/// which is delivered to directly, without DNS (RFC 5321 5.1).
pub(super) fn address_literal(domain: &Domain, port: u16) -> Option<HopHost> {
    let inner = domain.as_str().strip_prefix('[')?.strip_suffix(']')?;
    let ip: IpAddr = inner.strip_prefix("ipv6:").unwrap_or(inner).parse().ok()?;
    Some(HopHost {
        name: ip.to_string(),
        port,
        implicit_mx: false,
    })
}

/// Turns the MX answer for `domain` into hosts to try, or the outcome
/// that ends the attempt.
pub(super) fn mx_hosts(
    domain: &Domain,
    answer: Result<MxAnswer, DnsError>,
    port: u16,
) -> Result<Vec<HopHost>, Outcome> {
    match answer {
        Ok(MxAnswer::Hosts(hosts)) if !hosts.is_empty() => Ok(hosts
            .into_iter()
            .map(|(_, name)| HopHost {
                name,
                port,
                implicit_mx: false,
            })
            .collect()),
        Ok(MxAnswer::Hosts(_)) | Ok(MxAnswer::NoRecords) => Ok(vec![HopHost {
            name: domain.as_str().to_string(),
            port,
            implicit_mx: true,
        }]),
        Ok(MxAnswer::NullMx) => Err(Outcome::PermFail(Reply::new(
            556,
            [5, 1, 10],
            format!("Recipient address has null MX: {domain} accepts no mail (RFC 7505)"),
        ))),
        Err(DnsError::NotFound { .. }) => Err(Outcome::PermFail(Reply::new(
            550,
            [5, 1, 2],
            format!("domain {domain} does not exist (NXDOMAIN)"),
        ))),
        Err(error) => Err(Outcome::TempFail(Reply::new(
            451,
            [4, 4, 3],
            format!("MX lookup for {domain} failed: {error}"),
        ))),
    }
}

/// Turns an address lookup for `host` into addresses to try, or the
/// outcome of this host (permanent only for an implicit MX without
/// addresses).
pub(super) fn host_addresses(
    host: &HopHost,
    answer: Result<Vec<IpAddr>, DnsError>,
) -> Result<Vec<IpAddr>, Outcome> {
    match answer {
        Ok(addresses) if !addresses.is_empty() => Ok(addresses),
        Ok(_) | Err(DnsError::NotFound { .. }) if host.implicit_mx => Err(Outcome::PermFail(Reply::new(
            550,
            [5, 4, 4],
            format!("{} has no MX and no address records", host.name),
        ))),
        Ok(_) => Err(Outcome::TempFail(Reply::new(
            451,
            [4, 4, 3],
            format!("host {} has no address records", host.name),
        ))),
        Err(error) => Err(Outcome::TempFail(Reply::new(
            451,
            [4, 4, 3],
            format!("cannot resolve host {}: {error}", host.name),
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn domain() -> Domain {
        Domain::parse("example.test").unwrap()
    }

    #[test]
    fn mx_hosts_keep_preference_order_and_port() {
        let answer = Ok(MxAnswer::Hosts(vec![
            (10, "mx1.example.test".into()),
            (20, "mx2.example.test".into()),
        ]));
        let hosts = mx_hosts(&domain(), answer, 2600).unwrap();
        let names: Vec<_> = hosts.iter().map(|h| (h.name.as_str(), h.port)).collect();
        assert_eq!(
            names,
            vec![("mx1.example.test", 2600), ("mx2.example.test", 2600)]
        );
        assert!(!hosts[0].implicit_mx);
    }

    #[test]
    fn address_literals_skip_dns() {
        let v4 = Domain::parse("[127.0.0.2]").unwrap();
        assert_eq!(address_literal(&v4, 2525).unwrap().name, "127.0.0.2");
        let v6 = Domain::parse("[IPv6:::1]").unwrap();
        assert_eq!(address_literal(&v6, 25).unwrap().name, "::1");
        assert!(address_literal(&domain(), 25).is_none());
    }

    #[test]
    fn no_mx_falls_back_to_the_domain() {
        let hosts = mx_hosts(&domain(), Ok(MxAnswer::NoRecords), 25).unwrap();
        assert_eq!(
            hosts,
            vec![HopHost {
                name: "example.test".into(),
                port: 25,
                implicit_mx: true
            }]
        );
    }

    #[test]
    fn null_mx_and_nxdomain_are_permanent_servfail_is_not() {
        match mx_hosts(&domain(), Ok(MxAnswer::NullMx), 25) {
            Err(Outcome::PermFail(reply)) => {
                assert_eq!((reply.code, reply.status), (556, Some([5, 1, 10])))
            }
            other => panic!("{other:?}"),
        }
        let nx = Err(DnsError::NotFound {
            name: "example.test".into(),
        });
        assert!(matches!(
            mx_hosts(&domain(), nx, 25),
            Err(Outcome::PermFail(Reply { code: 550, .. }))
        ));
        let servfail = Err(DnsError::Temporary {
            name: "example.test".into(),
            detail: "SERVFAIL".into(),
        });
        assert!(matches!(
            mx_hosts(&domain(), servfail, 25),
            Err(Outcome::TempFail(Reply { code: 451, .. }))
        ));
    }

    #[test]
    fn unresolvable_hosts_fail_temporarily_except_implicit_mx() {
        let explicit = HopHost {
            name: "mx1.example.test".into(),
            port: 25,
            implicit_mx: false,
        };
        assert!(matches!(
            host_addresses(&explicit, Ok(vec![])),
            Err(Outcome::TempFail(_))
        ));
        let implicit = HopHost {
            implicit_mx: true,
            ..explicit.clone()
        };
        assert!(matches!(
            host_addresses(&implicit, Ok(vec![])),
            Err(Outcome::PermFail(Reply { code: 550, .. }))
        ));
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(host_addresses(&explicit, Ok(vec![ip])), Ok(vec![ip]));
    }
}
