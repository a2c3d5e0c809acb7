//! MTA-STS (RFC 8461): the `_mta-sts` TXT record (parsed by mail-auth),
//! the policy file fetched over HTTPS and parsed here (mail-auth does not
//! read it), the MX patterns it allows, and the policy cache in the store
//! so a restart, or another node of the cluster, keeps enforcing a policy
//! until its `max_age` runs out even when the policy host is down.
//!
//! The fetch is hostile input: the certificate must be valid for
//! `mta-sts.DOMAIN` (web PKI plus `delivery.extra_ca`), redirects are
//! refused (RFC 8461 3.3), the body is capped at 64 KiB and the whole
//! fetch at 30 seconds.

use crate::dns::Resolver;
use crate::message::Domain;
use crate::store::{Store, Write};
use mail_auth::common::parse::TxtRecordParser;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest policy body read (RFC 8461 3.3 suggests 64 KiB).
const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Whole fetch: connect, TLS, request, body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `max_age` honoured (RFC 8461 3.2: one year).
const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts over validated TLS.
    Enforce,
    /// Deliver as usual; report what would have failed.
    Testing,
    /// The domain withdrew its policy.
    None,
}

/// One domain's policy, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The TXT record's `id` the policy was fetched under.
    pub id: String,
    /// `mode:`.
    pub mode: Mode,
    /// `mx:` patterns (`mail.example.com`, `*.example.net`), lower case.
    pub mx: Vec<String>,
    /// `max_age:` in seconds.
    pub max_age: u64,
    /// When it was fetched (ms since the epoch).
    pub fetched_ms: u64,
    /// The policy text as served (for `domain check` and TLS-RPT).
    pub text: String,
}

impl Policy {
    /// Parses a policy file (RFC 8461 3.2): `key: value` lines, CRLF or
    /// LF; `version`, `mode` and `max_age` required, `mx` unless the mode
    /// is `none`; unknown keys ignored.
    pub fn parse(text: &str, id: &str, fetched_ms: u64) -> Result<Policy, String> {
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("line without a colon: {line:?}"));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" => {
                    let seconds: u64 = value
                        .parse()
                        .map_err(|_| format!("max_age {value:?} is not a number"))?;
                    max_age = Some(seconds.min(MAX_AGE_LIMIT));
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("version is not STSv1".to_string());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("no mx pattern".to_string());
        }
        Ok(Policy {
            id: id.to_string(),
            mode,
            mx,
            max_age,
            fetched_ms,
            text: text.to_string(),
        })
    }

    /// Whether `host` is an MX the policy allows: an exact name, or
    /// `*.suffix` covering exactly one more leftmost label (RFC 8461 4.1).
    pub fn allows_mx(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *pattern == host,
        })
    }

    /// Whether `max_age` has run out at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.fetched_ms.saturating_add(self.max_age.saturating_mul(1000))
    }
}

/// Why no fresh policy could be had (TLS-RPT's `sts-policy-fetch-error`
/// and `sts-policy-invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS, HTTP status, redirect, size or time limit.
    #[error("MTA-STS policy fetch failed: {0}")]
    Fetch(String),
    /// The file was fetched but is not a valid policy.
    #[error("MTA-STS policy invalid: {0}")]
    Invalid(String),
}

/// What a delivery learns about a domain's MTA-STS.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The policy in force (enforce or testing), if any.
    pub policy: Option<Arc<Policy>>,
    /// A TXT record announced a new policy that could not be fetched.
    pub failure: Option<FetchError>,
}

/// Policies of recipient domains: DNS, HTTPS and the store's cache.
pub struct MtaSts {
    resolver: Arc<dyn Resolver>,
    store: Arc<dyn Store>,
    fetcher: PolicyFetcher,
}

/// Fetches policy files over HTTPS (also `domain check`'s view of the
/// node's own domains).
pub struct PolicyFetcher {
    http: reqwest::Client,
    port: u16,
}

/// reqwest resolving through the node's resolver (`delivery.dns`), so the
/// policy host is found where the MX hosts are.
struct ViaNodeResolver(Arc<dyn Resolver>);

impl reqwest::dns::Resolve for ViaNodeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = resolver
                .ips(&host)
                .await
                .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)?;
            // The port is the URL's; reqwest replaces this one.
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

fn now_ms() -> u64 {
    crate::trace::now_ms()
}

fn cache_key(domain: &Domain) -> String {
    format!("mta-sts/{}", domain.as_str())
}

impl PolicyFetcher {
    /// A fetcher trusting the web PKI plus `extra_ca`, resolving with
    /// `resolver`, on `port` (443 except in tests).
    pub fn new(
        resolver: Arc<dyn Resolver>,
        extra_ca: Option<&std::path::Path>,
        port: u16,
    ) -> Result<PolicyFetcher, super::DeliverError> {
        let tls = super::tls_policy::TlsConfigs::new(extra_ca, None)?;
        PolicyFetcher::with_tls(resolver, (*tls.https).clone(), port).map_err(super::DeliverError::Tls)
    }

    /// `tls` must validate certificates against the trust roots and the
    /// host name (the `domain_validation` config).
    fn with_tls(resolver: Arc<dyn Resolver>, tls: rustls::ClientConfig, port: u16) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .dns_resolver(Arc::new(ViaNodeResolver(resolver)))
            .no_proxy()
            .build()
            .map_err(|error| error.to_string())?;
        Ok(PolicyFetcher { http, port })
    }

    /// The policy URL of `domain` (RFC 8461 3.3).
    pub fn url(&self, domain: &Domain) -> String {
        match self.port {
            443 => format!("https://mta-sts.{}/.well-known/mta-sts.txt", domain.as_str()),
            port => format!(
                "https://mta-sts.{}:{port}/.well-known/mta-sts.txt",
                domain.as_str()
            ),
        }
    }

    /// Fetches and parses `domain`'s policy, announced under `id`.
    pub async fn fetch(&self, domain: &Domain, id: &str) -> Result<Policy, FetchError> {
        let fetch_error = |error: reqwest::Error| FetchError::Fetch(error.to_string());
        let mut response = self
            .http
            .get(self.url(domain))
            .send()
            .await
            .map_err(fetch_error)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Fetch(format!("redirect refused (HTTP {status})")));
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Fetch(format!("HTTP {status}")));
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !media_type.starts_with("text/plain") {
            return Err(FetchError::Invalid(format!(
                "media type {media_type:?}, not text/plain"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            if body.len() + chunk.len() > MAX_POLICY_BYTES {
                return Err(FetchError::Fetch(format!(
                    "policy larger than {MAX_POLICY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| FetchError::Invalid("not UTF-8".to_string()))?;
        Policy::parse(&text, id, now_ms()).map_err(FetchError::Invalid)
    }
}

/// The `id` of `domain`'s `_mta-sts` TXT record: `None` without exactly
/// one valid record (RFC 8461 3.1) or on DNS failure.
pub async fn announced_id(resolver: &dyn Resolver, domain: &Domain) -> Option<String> {
    let records = resolver
        .txt(&format!("_mta-sts.{}", domain.as_str()))
        .await
        .ok()?;
    let mut ids = records
        .iter()
        .filter(|text| text.starts_with("v=STSv1"))
        .filter_map(|text| mail_auth::mta_sts::MtaSts::parse(text.as_bytes()).ok())
        .map(|record| record.id);
    match (ids.next(), ids.next()) {
        (Some(id), None) => Some(id),
        _ => None,
    }
}

impl MtaSts {
    /// `tls` must validate certificates against the trust roots and the
    /// host name (the `domain_validation` config); `port` is 443 except
    /// in tests (`delivery.mta_sts_port`).
    pub(super) fn new(
        resolver: Arc<dyn Resolver>,
        store: Arc<dyn Store>,
        tls: rustls::ClientConfig,
        port: u16,
    ) -> Result<MtaSts, String> {
        let fetcher = PolicyFetcher::with_tls(resolver.clone(), tls, port)?;
        Ok(MtaSts {
            resolver,
            store,
            fetcher,
        })
    }

    /// The cached policy of `domain`, expired or not.
    pub fn cached(&self, domain: &Domain) -> Option<Policy> {
        let key = cache_key(domain);
        let rows = self.store.tls_state(&key).ok()?;
        rows.into_iter()
            .find(|(found, _)| *found == key)
            .and_then(|(_, json)| serde_json::from_slice(&json).ok())
    }

    /// The policy in force for `domain` now (RFC 8461 5.1): the cached one
    /// while the TXT id is unchanged and `max_age` has not run out; a new
    /// one fetched when the id changed or the cache ran out; the cached
    /// one, still unexpired, when the fetch fails.
    pub async fn lookup(&self, domain: &Domain) -> Lookup {
        let now = now_ms();
        let cached = self.cached(domain).filter(|policy| !policy.expired(now));
        let Some(id) = announced_id(self.resolver.as_ref(), domain).await else {
            return Lookup {
                policy: cached.filter(|p| p.mode != Mode::None).map(Arc::new),
                failure: None,
            };
        };
        if let Some(policy) = cached.as_ref().filter(|policy| policy.id == id) {
            return Lookup {
                policy: (policy.mode != Mode::None).then(|| Arc::new(policy.clone())),
                failure: None,
            };
        }
        match self.fetcher.fetch(domain, &id).await {
            Ok(policy) => {
                self.remember(domain, &policy).await;
                Lookup {
                    policy: (policy.mode != Mode::None).then(|| Arc::new(policy)),
                    failure: None,
                }
            }
            Err(failure) => {
                tracing::warn!(%domain, %failure, "keeping the cached MTA-STS policy, if any");
                Lookup {
                    policy: cached.filter(|p| p.mode != Mode::None).map(Arc::new),
                    failure: Some(failure),
                }
            }
        }
    }

    async fn remember(&self, domain: &Domain, policy: &Policy) {
        let Ok(json) = serde_json::to_vec(policy) else {
            return;
        };
        let write = Write::TlsState {
            key: cache_key(domain),
            value: Some(json),
        };
        if let Err(error) = self.store.commit(vec![write]).await {
            tracing::warn!(%domain, %error, "MTA-STS policy not cached");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const POLICY: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n";

    #[test]
    fn policy_file_is_read_with_crlf_or_lf() {
        let policy = Policy::parse(POLICY, "20260101", 1000).unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(policy.max_age, 604_800);
        let lf = Policy::parse(&POLICY.replace("\r\n", "\n"), "x", 0).unwrap();
        assert_eq!(lf.mx, policy.mx);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(Policy::parse("mode: enforce\nmx: a.test\nmax_age: 1\n", "x", 0).is_err());
        assert!(Policy::parse("version: STSv1\nmode: enforce\nmax_age: 1\n", "x", 0).is_err());
        assert!(Policy::parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", "x", 0).is_err());
        assert!(Policy::parse("version: STSv1\nmode: testing\nmx: a\nmax_age: soon\n", "x", 0).is_err());
        assert!(Policy::parse("<html>", "x", 0).is_err());
        // "none" needs no mx.
        assert!(Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n", "x", 0).is_ok());
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let policy = Policy::parse(POLICY, "x", 0).unwrap();
        assert!(policy.allows_mx("mail.example.com"));
        assert!(policy.allows_mx("MAIL.example.com."));
        assert!(policy.allows_mx("mx1.example.net"));
        assert!(!policy.allows_mx("example.net"));
        assert!(!policy.allows_mx("a.b.example.net"));
        assert!(!policy.allows_mx("mail.example.org"));
    }

    #[test]
    fn max_age_is_capped_and_expires() {
        let policy = Policy::parse(
            "version: STSv1\nmode: testing\nmx: a\nmax_age: 99999999999\n",
            "x",
            0,
        )
        .unwrap();
        assert_eq!(policy.max_age, MAX_AGE_LIMIT);
        let short = Policy::parse("version: STSv1\nmode: testing\nmx: a\nmax_age: 10\n", "x", 1000).unwrap();
        assert!(!short.expired(10_999));
        assert!(short.expired(11_000));
    }
}
