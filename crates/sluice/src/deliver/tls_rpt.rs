//! TLS-RPT (RFC 8460): per policy domain and UTC day, the TLS sessions
//! tried under a DANE or MTA-STS policy, counted as successes and as
//! failures by RFC 8460 result type, kept in the store (so a restart, or
//! another node, adds to the same day), and turned into the daily
//! aggregate report mailed to the `rua` of the domain's `_smtp._tls` TXT
//! record. The report JSON, its gzip and the `multipart/report` mail are
//! mail-auth's.

use crate::dns::Resolver;
use crate::message::{Address, Domain};
use crate::store::{Store, Write};
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const DAY_SECS: u64 = 86_400;
const PREFIX: &str = "tls-rpt/";

/// The policy a session was held to, as the report names it.
#[derive(Debug, Clone)]
pub(super) struct ReportPolicy {
    /// `tlsa` or `sts`.
    pub(super) kind: PolicyType,
    /// The TLSA records (presentation form) or the policy file's lines.
    pub(super) strings: Vec<String>,
    /// MTA-STS `mx` patterns.
    pub(super) mx: Vec<String>,
}

/// One failed session.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) result: ResultType,
    pub(super) mx_host: Option<String>,
    pub(super) ip: Option<IpAddr>,
    pub(super) detail: Option<String>,
}

/// The counters of the current days, mirrored in the store.
pub struct TlsReports {
    store: Arc<dyn Store>,
    /// The node's name (report submitter).
    submitter: String,
    /// `[reporting] from`.
    from: Address,
    /// Key (`tls-rpt/DAY/DOMAIN`) → the policies counted that day.
    days: Mutex<HashMap<String, Vec<Policy>>>,
}

/// A report ready to be queued.
#[derive(Debug, Clone)]
pub struct OutgoingReport {
    /// The policy domain.
    pub domain: String,
    /// `mailto:` addresses of its `rua`.
    pub to: Vec<Address>,
    /// The whole message (RFC 5322, `multipart/report; report-type=tlsrpt`).
    pub content: Vec<u8>,
}

fn day_of(now_ms: u64) -> u64 {
    now_ms / 1000 / DAY_SECS
}

fn key(day: u64, domain: &str) -> String {
    format!("{PREFIX}{day:08}/{domain}")
}

fn parse_key(key: &str) -> Option<(u64, String)> {
    let (day, domain) = key.strip_prefix(PREFIX)?.split_once('/')?;
    Some((day.parse().ok()?, domain.to_string()))
}

impl TlsReports {
    /// Loads the counters already in the store; reports name `submitter`
    /// and come from `from`.
    pub fn new(store: Arc<dyn Store>, submitter: String, from: Address) -> TlsReports {
        let days = store
            .tls_state(PREFIX)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, json)| Some((key, serde_json::from_slice(&json).ok()?)))
            .collect();
        TlsReports {
            store,
            submitter,
            from,
            days: Mutex::new(days),
        }
    }

    /// Counts one session for `domain` under `policy`: a success, or a failure.
    pub(super) fn record(&self, domain: &Domain, policy: &ReportPolicy, outcome: Result<(), Failure>) {
        let key = key(day_of(crate::trace::now_ms()), domain.as_str());
        let Ok(mut days) = self.days.lock() else {
            return;
        };
        let policies = days.entry(key.clone()).or_default();
        let index = match policies
            .iter()
            .position(|p| p.policy.policy_type == policy.kind && p.policy.policy_string == policy.strings)
        {
            Some(index) => index,
            None => {
                let mut details = PolicyDetails::new(policy.kind, domain.as_str());
                details.policy_string = policy.strings.clone();
                details.mx_host = policy.mx.clone();
                policies.push(Policy {
                    policy: details,
                    summary: Summary {
                        total_success: 0,
                        total_failure: 0,
                    },
                    failure_details: Vec::new(),
                });
                policies.len() - 1
            }
        };
        let counted = &mut policies[index];
        match outcome {
            Ok(()) => counted.summary.total_success += 1,
            Err(failure) => {
                counted.summary.total_failure += 1;
                let same = counted.failure_details.iter_mut().find(|f| {
                    f.result_type == failure.result
                        && f.receiving_mx_hostname == failure.mx_host
                        && f.receiving_ip == failure.ip
                });
                match same {
                    Some(details) => details.failed_session_count += 1,
                    None => counted.failure_details.push(FailureDetails {
                        result_type: failure.result,
                        receiving_mx_hostname: failure.mx_host,
                        receiving_ip: failure.ip,
                        failed_session_count: 1,
                        additional_information: failure.detail,
                        ..FailureDetails::default()
                    }),
                }
            }
        }
        // Written under the lock: the store's single writer keeps the
        // order, so the last write is the latest count.
        if let Ok(json) = serde_json::to_vec(&*policies) {
            self.store.submit(vec![Write::TlsState {
                key,
                value: Some(json),
            }]);
        }
    }

    /// The reports of finished days (and of today when `include_today`),
    /// removed from the counters. Domains without a usable `rua` (no
    /// `_smtp._tls` record, or only https: URIs) are dropped unreported.
    pub async fn take_reports(&self, resolver: &dyn Resolver, include_today: bool) -> Vec<OutgoingReport> {
        let (submitter, from) = (self.submitter.as_str(), &self.from);
        let today = day_of(crate::trace::now_ms());
        let due: Vec<(String, Vec<Policy>)> = match self.days.lock() {
            Ok(mut days) => {
                let keys: Vec<String> = days
                    .keys()
                    .filter(|key| parse_key(key).is_some_and(|(day, _)| day < today || include_today))
                    .cloned()
                    .collect();
                keys.into_iter()
                    .filter_map(|key| days.remove(&key).map(|policies| (key, policies)))
                    .collect()
            }
            Err(_) => return Vec::new(),
        };
        let mut reports = Vec::new();
        for (key, policies) in due {
            self.store.submit(vec![Write::TlsState {
                key: key.clone(),
                value: None,
            }]);
            let Some((day, domain)) = parse_key(&key) else {
                continue;
            };
            let to = rua_addresses(resolver, &domain).await;
            if to.is_empty() {
                tracing::info!(%domain, "no mailto: rua in _smtp._tls; TLS report dropped");
                continue;
            }
            let start = (day * DAY_SECS) as i64;
            let report = TlsReport {
                organization_name: Some(submitter.to_string()),
                date_range: DateRange::from_timestamps(start, start + DAY_SECS as i64 - 1),
                contact_info: Some(from.to_string()),
                report_id: format!("{}_{domain}@{submitter}", start),
                policies,
            };
            let recipients: Vec<String> = to.iter().map(ToString::to_string).collect();
            let mut content = Vec::new();
            let written = report.write_rfc5322(
                &domain,
                submitter,
                ("TLS reporting", from.to_string().as_str()),
                recipients.iter().map(String::as_str),
                &mut content,
            );
            match written {
                Ok(()) => reports.push(OutgoingReport {
                    domain: domain.clone(),
                    to,
                    content,
                }),
                Err(error) => tracing::warn!(%domain, %error, "TLS report not written"),
            }
        }
        reports
    }
}

/// The `mailto:` addresses of `domain`'s `_smtp._tls` record.
async fn rua_addresses(resolver: &dyn Resolver, domain: &str) -> Vec<Address> {
    let Ok(records) = resolver.txt(&format!("_smtp._tls.{domain}")).await else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|text| text.starts_with("v=TLSRPTv1"))
        .filter_map(|text| TlsRpt::parse(text.as_bytes()).ok())
        .flat_map(|record| record.rua)
        .filter_map(|uri| match uri {
            ReportUri::Mail(address) => Address::parse(&address).ok(),
            ReportUri::Http(_) => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_day_and_the_domain() {
        let k = key(20_000, "fabrikam.test");
        assert_eq!(k, "tls-rpt/00020000/fabrikam.test");
        assert_eq!(parse_key(&k), Some((20_000, "fabrikam.test".to_string())));
        assert_eq!(parse_key("mta-sts/fabrikam.test"), None);
        assert_eq!(day_of(86_400_000 * 3 + 5), 3);
    }
}
