//! Name resolution for delivery: MX with preference order and A/AAAA.
//! A trait so tests can point at a local DNS server (the real resolver,
//! `delivery.dns`) and unit tests can use a table.
//!
//! Contract: answers are interpreted here once. A domain that does not
//! exist (NXDOMAIN) is [`DnsError::NotFound`], a permanent condition; a
//! domain that exists without MX records is [`MxAnswer::NoRecords`] (the
//! caller then uses the implicit MX, RFC 5321 5.1); a lone `.` exchange is
//! [`MxAnswer::NullMx`] (RFC 7505). Every other failure (SERVFAIL, timeout,
//! refused) is [`DnsError::Temporary`].

use crate::config::DnsSource;
use crate::message::Domain;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future (what [`Resolver`] methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The MX records of a domain, as delivery needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// The domain exists but publishes no MX: deliver to its own A/AAAA.
    NoRecords,
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx,
    /// `(preference, host)`, sorted by preference (stable for equal ones).
    Hosts(Vec<(u16, String)>),
}

impl MxAnswer {
    /// Interprets raw MX records: sorts by preference, recognises a null MX
    /// (a single record whose exchange is the root), and ignores a stray
    /// root exchange published beside real ones (RFC 7505 section 3 forbids
    /// the mix; the real hosts are the more useful reading).
    pub fn from_records(records: Vec<(u16, String)>) -> MxAnswer {
        let is_root = |host: &str| host.trim_end_matches('.').is_empty();
        if records.is_empty() {
            return MxAnswer::NoRecords;
        }
        if records.len() == 1 && is_root(&records[0].1) {
            return MxAnswer::NullMx;
        }
        let mut hosts: Vec<(u16, String)> = records
            .into_iter()
            .filter(|(_, host)| !is_root(host))
            .map(|(preference, host)| (preference, host.trim_end_matches('.').to_ascii_lowercase()))
            .collect();
        hosts.sort_by_key(|(preference, _)| *preference);
        MxAnswer::Hosts(hosts)
    }
}

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist (permanent).
    #[error("{name}: no such domain (NXDOMAIN)")]
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// SERVFAIL, timeout, network error (temporary).
    #[error("{name}: temporary DNS failure: {detail}")]
    Temporary {
        /// The name looked up.
        name: String,
        /// The resolver's explanation.
        detail: String,
    },
    /// DNSSEC validation failed: signatures that do not verify, or a chain
    /// of trust that cannot be followed (temporary: never a reason to bounce,
    /// never a reason to fall back to clear text).
    #[error("{name}: DNSSEC validation failed (bogus answer)")]
    Bogus {
        /// The name looked up.
        name: String,
    },
    /// The resolver could not be set up.
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
}

impl DnsError {
    /// Whether retrying later can help.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, DnsError::NotFound { .. })
    }
}

/// MX and address lookups.
pub trait Resolver: Send + Sync {
    /// The MX records of `domain`.
    fn mx<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<MxAnswer, DnsError>>;
    /// The A and AAAA addresses of `host` (empty when the name exists
    /// without addresses).
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// The TXT strings of `name` (each record's strings joined); empty by
    /// default, for resolvers that only serve delivery.
    fn txt<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The resolver `delivery.dns` asks for: the system's configuration, or
/// one given server over UDP and TCP with no search domains and no hosts
/// file (so tests see exactly what their server answers).
pub fn resolver(source: &DnsSource) -> Result<Arc<dyn Resolver>, DnsError> {
    let inner = hickory_builder(source)?
        .build()
        .map_err(|error| DnsError::Setup(error.to_string()))?;
    Ok(Arc::new(HickoryResolver { inner }))
}

fn hickory_builder(
    source: &DnsSource,
) -> Result<hickory_resolver::ResolverBuilder<TokioRuntimeProvider>, DnsError> {
    let provider = TokioRuntimeProvider::default();
    let builder = match source {
        DnsSource::System => {
            TokioResolver::builder(provider).map_err(|error| DnsError::Setup(error.to_string()))?
        }
        DnsSource::Server(addr) => {
            let (config, options) = server_config(*addr);
            TokioResolver::builder_with_config(config, provider).with_options(options)
        }
    };
    Ok(builder)
}

/// [`Resolver`] over hickory's Tokio resolver (with its cache).
struct HickoryResolver {
    inner: TokioResolver,
}

/// The name as a fully qualified query, so search domains never apply.
/// The resolver setup for `[dns] server`: that one server (UDP and TCP, on
/// its port), names taken as absolute, no hosts file, short retries. The
/// DNS of sender authentication (mail-auth) uses it too, so both ask alike.
pub fn server_config(addr: SocketAddr) -> (ResolverConfig, ResolverOpts) {
    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut server.connections {
        connection.port = addr.port();
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
    let mut options = ResolverOpts::default();
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    options.timeout = Duration::from_secs(3);
    options.attempts = 2;
    (config, options)
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// What a failed lookup means for mail: NXDOMAIN is permanent, "exists
/// but no records of this type" is an empty answer (`Ok(None)`), anything
/// else is temporary.
fn classify_failure(name: &str, error: NetError) -> Result<(), DnsError> {
    match &error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match *response_code {
                ResponseCode::NXDomain => Err(DnsError::NotFound {
                    name: name.to_string(),
                }),
                ResponseCode::NoError => Ok(()),
                _ => Err(DnsError::Temporary {
                    name: name.to_string(),
                    detail: error.to_string(),
                }),
            }
        }
        _ => Err(DnsError::Temporary {
            name: name.to_string(),
            detail: error.to_string(),
        }),
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        Box::pin(async move {
            match self.inner.mx_lookup(fqdn(domain.as_str())).await {
                Ok(lookup) => {
                    let records = lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                            _ => None,
                        })
                        .collect();
                    Ok(MxAnswer::from_records(records))
                }
                Err(error) => classify_failure(domain.as_str(), error).map(|()| MxAnswer::NoRecords),
            }
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![ip]);
            }
            match self.inner.lookup_ip(fqdn(host)).await {
                Ok(lookup) => Ok(lookup.iter().collect()),
                Err(error) => classify_failure(host, error).map(|()| Vec::new()),
            }
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            match self.inner.txt_lookup(fqdn(name)).await {
                Ok(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part).into_owned())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()),
                Err(error) => classify_failure(name, error).map(|()| Vec::new()),
            }
        })
    }
}

/// One TLSA record (RFC 6698 section 2.1): certificate usage, selector,
/// matching type and association data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 whole certificate, 1 SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

/// An answer and whether DNSSEC proved it (secure) or the zone is
/// unsigned (insecure). Bogus answers never get here: they are
/// [`DnsError::Bogus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated<T> {
    /// The records.
    pub answer: T,
    /// Every record of the answer carried a valid chain of signatures.
    pub secure: bool,
}

/// Lookups whose DNSSEC status matters (DANE, RFC 7672).
pub trait SecureResolver: Send + Sync {
    /// Whether the configured resolver lets DNSSEC be validated at all
    /// (it passes signatures and the trust anchor's DNSKEY validates).
    /// When it does not, no answer can be secure and DANE cannot apply.
    fn available(&self) -> BoxFuture<'_, bool>;
    /// The MX records of `domain`, with their status.
    fn mx<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<Validated<MxAnswer>, DnsError>>;
    /// The TLSA records of `_PORT._tcp.HOST` (empty when there are none).
    fn tlsa<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<Validated<Vec<Tlsa>>, DnsError>>;
}

/// How long the answer of [`SecureResolver::available`] is kept: a
/// working validator is checked hourly, a broken one every few minutes so
/// a fixed resolver is noticed soon.
const AVAILABLE_RECHECK: Duration = Duration::from_secs(3600);
const UNAVAILABLE_RECHECK: Duration = Duration::from_secs(300);

/// A validating resolver: hickory checks every signature itself from the
/// trust anchor down (it does not trust an upstream AD bit).
pub fn secure_resolver(
    source: &DnsSource,
    trust_anchor: Option<&std::path::Path>,
) -> Result<Arc<dyn SecureResolver>, DnsError> {
    let (anchors, anchor_zone) = match trust_anchor {
        None => (TrustAnchors::default(), ".".to_string()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| DnsError::Setup(format!("{}: {error}", path.display())))?;
            let anchors: TrustAnchors = text
                .parse()
                .map_err(|error| DnsError::Setup(format!("{}: {error}", path.display())))?;
            let zone = anchor_owner(&text)
                .ok_or_else(|| DnsError::Setup(format!("{}: no DNSKEY record", path.display())))?;
            (anchors, zone)
        }
    };
    let inner = hickory_builder(source)?
        .with_trust_anchor(Arc::new(anchors))
        .build()
        .map_err(|error| DnsError::Setup(error.to_string()))?;
    Ok(Arc::new(ValidatingResolver {
        inner,
        anchor_zone,
        availability: std::sync::Mutex::new(None),
    }))
}

/// The owner name of the first record of a zone-file text (the zone the
/// trust anchor vouches for, probed by [`SecureResolver::available`]).
fn anchor_owner(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with(';') && !line.starts_with('$'))
        .and_then(|line| line.split_whitespace().next())
        .map(fqdn)
}

struct ValidatingResolver {
    inner: TokioResolver,
    anchor_zone: String,
    availability: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

/// A lookup's records and whether all of them are secure, or what its
/// failure means (no records is an empty, vacuously insecure answer).
fn validated_records(
    name: &str,
    result: Result<hickory_resolver::lookup::Lookup, NetError>,
) -> Result<Validated<Vec<hickory_resolver::proto::rr::Record>>, DnsError> {
    match result {
        Ok(lookup) => {
            let records = lookup.answers().to_vec();
            let secure = !records.is_empty() && records.iter().all(|record| record.proof.is_secure());
            Ok(Validated {
                answer: records,
                secure,
            })
        }
        Err(NetError::Dns(HickoryDnsError::DnssecBogus)) => Err(DnsError::Bogus {
            name: name.to_string(),
        }),
        Err(NetError::Dns(HickoryDnsError::Nsec { proof, .. })) if proof.is_bogus() => Err(DnsError::Bogus {
            name: name.to_string(),
        }),
        // A denial that could not be proven secure: no records, insecurely.
        Err(NetError::Dns(HickoryDnsError::Nsec { .. })) => Ok(Validated {
            answer: Vec::new(),
            secure: false,
        }),
        Err(error) => classify_failure(name, error).map(|()| Validated {
            answer: Vec::new(),
            secure: false,
        }),
    }
}

impl SecureResolver for ValidatingResolver {
    fn available(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if let Ok(cached) = self.availability.lock() {
                if let Some((checked, available)) = *cached {
                    let keep = if available {
                        AVAILABLE_RECHECK
                    } else {
                        UNAVAILABLE_RECHECK
                    };
                    if checked.elapsed() < keep {
                        return available;
                    }
                }
            }
            let available = match self
                .inner
                .lookup(self.anchor_zone.as_str(), RecordType::DNSKEY)
                .await
            {
                Ok(lookup) => lookup.answers().iter().any(|record| record.proof.is_secure()),
                Err(error) => {
                    tracing::warn!(
                        zone = %self.anchor_zone,
                        %error,
                        "DNSSEC cannot be validated through this resolver; DANE does not apply"
                    );
                    false
                }
            };
            if let Ok(mut cached) = self.availability.lock() {
                *cached = Some((std::time::Instant::now(), available));
            }
            available
        })
    }

    fn mx<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<Validated<MxAnswer>, DnsError>> {
        Box::pin(async move {
            let result = self.inner.mx_lookup(fqdn(domain.as_str())).await;
            let validated = validated_records(domain.as_str(), result)?;
            let records = validated
                .answer
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect();
            Ok(Validated {
                answer: MxAnswer::from_records(records),
                secure: validated.secure,
            })
        })
    }

    fn tlsa<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<Validated<Vec<Tlsa>>, DnsError>> {
        Box::pin(async move {
            let name = format!("_{port}._tcp.{}", fqdn(host));
            let result = self.inner.tlsa_lookup(name.as_str()).await;
            let validated = match validated_records(&name, result) {
                // A missing TLSA name is simply no DANE for this host.
                Err(DnsError::NotFound { .. }) => {
                    return Ok(Validated {
                        answer: Vec::new(),
                        secure: false,
                    })
                }
                other => other?,
            };
            let records = validated
                .answer
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TLSA(tlsa) => Some(Tlsa {
                        usage: tlsa.cert_usage.into(),
                        selector: tlsa.selector.into(),
                        matching: tlsa.matching.into(),
                        data: tlsa.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            Ok(Validated {
                answer: records,
                secure: validated.secure,
            })
        })
    }
}

/// A fixed table of answers, for tests and for setups without DNS. Names
/// absent from the table do not exist (NXDOMAIN).
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    /// MX answers by domain.
    pub mx: HashMap<String, MxAnswer>,
    /// Addresses by host name.
    pub hosts: HashMap<String, Vec<IpAddr>>,
}

impl Resolver for StaticResolver {
    fn mx<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<MxAnswer, DnsError>> {
        let answer = match self.mx.get(domain.as_str()) {
            Some(answer) => Ok(answer.clone()),
            None if self.hosts.contains_key(domain.as_str()) => Ok(MxAnswer::NoRecords),
            None => Err(DnsError::NotFound {
                name: domain.to_string(),
            }),
        };
        Box::pin(std::future::ready(answer))
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        let answer = match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![ip]),
            Err(_) => self
                .hosts
                .get(&host.to_ascii_lowercase())
                .cloned()
                .ok_or_else(|| DnsError::NotFound {
                    name: host.to_string(),
                }),
        };
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn mx_records_sort_by_preference() {
        let answer = MxAnswer::from_records(vec![
            (20, "MX2.example.test.".into()),
            (10, "mx1.example.test.".into()),
            (20, "mx3.example.test".into()),
        ]);
        assert_eq!(
            answer,
            MxAnswer::Hosts(vec![
                (10, "mx1.example.test".into()),
                (20, "mx2.example.test".into()),
                (20, "mx3.example.test".into()),
            ])
        );
    }

    #[test]
    fn null_mx_and_empty_answers() {
        assert_eq!(MxAnswer::from_records(vec![(0, ".".into())]), MxAnswer::NullMx);
        assert_eq!(MxAnswer::from_records(vec![(0, "".into())]), MxAnswer::NullMx);
        assert_eq!(MxAnswer::from_records(vec![]), MxAnswer::NoRecords);
        // A root exchange beside real hosts is ignored, not a null MX.
        assert_eq!(
            MxAnswer::from_records(vec![(0, ".".into()), (10, "mx.test.".into())]),
            MxAnswer::Hosts(vec![(10, "mx.test".into())])
        );
    }

    #[test]
    fn nxdomain_is_the_only_permanent_failure() {
        assert!(!DnsError::NotFound { name: "x".into() }.is_temporary());
        assert!(DnsError::Temporary {
            name: "x".into(),
            detail: "SERVFAIL".into()
        }
        .is_temporary());
    }
}
