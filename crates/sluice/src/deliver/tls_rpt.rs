//! TLS-RPT (RFC 8460): per policy domain and UTC day, the TLS sessions
//! tried under a DANE or MTA-STS policy, counted as successes and as
//! failures by RFC 8460 result type, kept in the store by node (a restart
//! adds to the same day; nodes sharing a store each report their own
//! sessions, under their own report id), and turned into the daily
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
    /// Key (`tls-rpt/DAY/DOMAIN/NODE`) → the policies counted that day.
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

/// A day's counters for one domain, as one node counted them: nodes
/// sharing a store each keep (and report) their own sessions, so none
/// overwrites another's counts.
fn key(day: u64, domain: &str, node: &str) -> String {
    format!("{PREFIX}{day:08}/{domain}/{node}")
}

/// The day, domain and node of a key; keys written before they named
/// their node have none.
fn parse_key(key: &str) -> Option<(u64, String, Option<String>)> {
    let (day, rest) = key.strip_prefix(PREFIX)?.split_once('/')?;
    let (domain, node) = match rest.split_once('/') {
        Some((domain, node)) => (domain, Some(node.to_string())),
        None => (rest, None),
    };
    Some((day.parse().ok()?, domain.to_string(), node))
}

impl TlsReports {
    /// Loads the counters already in the store; reports name `submitter`
    /// and come from `from`.
    /// Counters other nodes sharing the store keep are theirs to report.
    pub fn new(store: Arc<dyn Store>, submitter: String, from: Address) -> TlsReports {
        let mut days = HashMap::new();
        for (stored, json) in store.tls_state(PREFIX).unwrap_or_default() {
            let Some((day, domain, node)) = parse_key(&stored) else {
                continue;
            };
            let Ok(policies) = serde_json::from_slice::<Vec<Policy>>(&json) else {
                continue;
            };
            let key = match node {
                Some(node) if node == submitter => stored,
                Some(_) => continue,
                // Counted before keys named their node: the first node to
                // start takes them over (two starting at the same instant
                // would both count that day once).
                None => {
                    let key = key(day, &domain, &submitter);
                    store.submit(vec![
                        Write::TlsState {
                            key: stored,
                            value: None,
                        },
                        Write::TlsState {
                            key: key.clone(),
                            value: Some(json),
                        },
                    ]);
                    key
                }
            };
            days.insert(key, policies);
        }
        TlsReports {
            store,
            submitter,
            from,
            days: Mutex::new(days),
        }
    }

    /// Counts one session for `domain` under `policy`: a success, or a failure.
    pub(super) fn record(&self, domain: &Domain, policy: &ReportPolicy, outcome: Result<(), Failure>) {
        let key = key(day_of(crate::trace::now_ms()), domain.as_str(), &self.submitter);
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
                    .filter(|key| parse_key(key).is_some_and(|(day, ..)| day < today || include_today))
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
            let Some((day, domain, _)) = parse_key(&key) else {
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
    fn keys_carry_the_day_the_domain_and_the_node() {
        let k = key(20_000, "fabrikam.test", "gw1.contoso.test");
        assert_eq!(k, "tls-rpt/00020000/fabrikam.test/gw1.contoso.test");
        assert_eq!(
            parse_key(&k),
            Some((
                20_000,
                "fabrikam.test".to_string(),
                Some("gw1.contoso.test".to_string())
            ))
        );
        assert_eq!(
            parse_key("tls-rpt/00020000/fabrikam.test"),
            Some((20_000, "fabrikam.test".to_string(), None))
        );
        assert_eq!(parse_key("mta-sts/fabrikam.test"), None);
        assert_eq!(day_of(86_400_000 * 3 + 5), 3);
    }

    fn successes(reports: &TlsReports) -> u64 {
        let days = reports.days.lock().unwrap();
        days.values()
            .flatten()
            .map(|p| p.summary.total_success as u64)
            .sum()
    }

    #[tokio::test]
    async fn nodes_sharing_a_store_keep_and_load_only_their_own_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = crate::store::EmbeddedStore::open(dir.path()).unwrap();
        let from = Address::parse("postmaster@contoso.test").unwrap();
        let domain = Domain::parse("fabrikam.test").unwrap();
        let policy = ReportPolicy {
            kind: PolicyType::Sts,
            strings: vec!["version: STSv1".into()],
            mx: Vec::new(),
        };
        // A day counted before keys named their node.
        let legacy = format!("{PREFIX}00000001/northwind.test");
        let counted = serde_json::to_vec(&vec![Policy {
            policy: PolicyDetails::new(PolicyType::Sts, "northwind.test"),
            summary: Summary {
                total_success: 5,
                total_failure: 0,
            },
            failure_details: Vec::new(),
        }])
        .unwrap();
        store
            .commit(vec![Write::TlsState {
                key: legacy.clone(),
                value: Some(counted),
            }])
            .await
            .unwrap();

        let gw1 = TlsReports::new(store.clone(), "gw1.test".into(), from.clone());
        store.commit(Vec::new()).await.unwrap();
        let gw2 = TlsReports::new(store.clone(), "gw2.test".into(), from.clone());
        gw1.record(&domain, &policy, Ok(()));
        gw1.record(&domain, &policy, Ok(()));
        gw2.record(&domain, &policy, Ok(()));
        store.commit(Vec::new()).await.unwrap();

        let keys: Vec<String> = store
            .tls_state(PREFIX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(!keys.contains(&legacy), "the old key became gw1's: {keys:?}");
        // After a restart each node has its own counts, not the other's.
        let gw1 = TlsReports::new(store.clone(), "gw1.test".into(), from.clone());
        let gw2 = TlsReports::new(store.clone(), "gw2.test".into(), from);
        assert_eq!(successes(&gw1), 2 + 5);
        assert_eq!(successes(&gw2), 1);
    }
}
