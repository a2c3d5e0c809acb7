//! Stage 6: delivery. One [`Deliverer::attempt`] takes a group of
//! recipients sharing a route and tries to hand them on: over SMTP to the
//! connector's smart hosts (in order) or the domain's MX hosts (preference
//! order, A/AAAA fallback, null MX = permanent failure), or into the node's
//! own Maildir.
//!
//! Addresses are resolved here, at each attempt. The TLS level of the route
//! is enforced here: a required level that cannot be met is a temporary
//! failure (4.7.x) and nothing is sent in clear. Every outcome is classified
//! once, here: `Delivered`, `TempFail` or `PermFail` per recipient; unknown
//! errors are temporary.

mod connection;
mod dane;
mod maildir;
mod mta_sts;
mod next_hop;
mod pool;
#[cfg(test)]
mod tests;
mod tls_policy;
mod tls_rpt;
mod transaction;
mod validate;

pub use dane::{chain_matches as tlsa_chain_matches, usable as tlsa_usable};
pub use mta_sts::{
    announced_id as mta_sts_id, FetchError as MtaStsFetchError, Mode as MtaStsMode, MtaSts,
    Policy as MtaStsPolicy, PolicyFetcher as MtaStsFetcher,
};
pub use tls_rpt::{OutgoingReport, TlsReports};
pub use validate::{ValidationReport, ValidationStep};

use crate::dns::{DnsError, MxAnswer, Resolver, SecureResolver};
use crate::message::{Address, BodyType, Domain, DsnReturn, Notify, Reply, ReversePath};
use crate::receive::TlsInfo;
use crate::route::{NextHop, Route, TlsPolicy};
use connection::establish;
use mail_auth::report::tlsrpt::{PolicyType, ResultType};
use next_hop::HopHost;
pub use pool::ConnectionLimits;
use pool::ConnectionPool;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;
use tls_policy::{Observation, PeerTls, TlsConfigs};
use tls_rpt::ReportPolicy;
use transaction::Transaction;

/// The `host` of an attempt that wrote into this node's own Maildir.
pub const MAILBOX_HOST: &str = "mailbox";

/// One recipient of a job.
#[derive(Debug, Clone)]
pub struct JobRecipient {
    /// RCPT TO.
    pub address: Address,
    /// NOTIFY=, passed on when the next hop supports DSN.
    pub notify: Notify,
    /// ORCPT=, passed on when the next hop supports DSN.
    pub orcpt: Option<String>,
}

/// Recipients of one message that share a route (and so a transaction).
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// The route decided at acceptance.
    pub route: Route,
    /// The recipients' domain (MX lookup key; all recipients share it for MX routes).
    pub domain: Domain,
    /// MAIL FROM.
    pub mail_from: ReversePath,
    /// RCPT TOs.
    pub recipients: Vec<JobRecipient>,
    /// The message, as it is to be sent (internal headers already handled).
    pub content: Arc<Vec<u8>>,
    /// BODY=.
    pub body: BodyType,
    /// SMTPUTF8 needed.
    pub smtputf8: bool,
    /// RET=.
    pub ret: Option<DsnReturn>,
    /// ENVID=.
    pub envid: Option<String>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reply")]
pub enum Outcome {
    /// The next hop took responsibility (its reply).
    Delivered(Reply),
    /// Try again later (the reply or a synthesized 4xx describing the failure).
    TempFail(Reply),
    /// Give up and bounce (the reply or a synthesized 5xx).
    PermFail(Reply),
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    /// `host:port` (or `mailbox`) that gave the final answer, when one was reached.
    pub host: Option<String>,
    /// TLS facts of the final connection, when encrypted.
    pub tls: Option<TlsInfo>,
    /// The next hop offered DSN and was given NOTIFY, ORCPT and ENVID, so
    /// success reports are its to send (RFC 3461 section 6.2.3.3); when
    /// false, a recipient that asked for NOTIFY=SUCCESS gets a `relayed`
    /// report from this node.
    pub dsn_passed_on: bool,
    /// The TLS policy applied to the host that gave the final answer
    /// (`dane`, `mta-sts`, `mta-sts-testing`, or the connector level's
    /// name such as `opportunistic`); `None` for mailbox delivery.
    pub tls_policy: Option<String>,
    /// One outcome per job recipient, same order.
    pub outcomes: Vec<(Address, Outcome)>,
}

/// Node settings delivery needs. [`DeliverySettings::new`] gives the
/// RFC 5321 4.5.3.2 time limits; tests shorten them.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// EHLO name when the route sets none.
    pub hostname: String,
    /// Node data directory; Maildirs live under `data_dir/mailboxes`.
    pub data_dir: PathBuf,
    /// Extra trust roots (PEM) for certificate validation.
    pub extra_ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM) presented when a server asks,
    /// so peers can identify this node by certificate.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Source address of outbound connections.
    pub bind_address: Option<IpAddr>,
    /// Port of MX deliveries (25; tests use a high port).
    pub mx_port: u16,
    /// Concurrent transactions per destination host.
    pub max_per_destination: usize,
    /// TCP connect (RFC 5321 leaves it open; 30 s).
    pub connect_timeout: Duration,
    /// Greeting, EHLO, STARTTLS, MAIL, RCPT, RSET replies (5 min).
    pub command_timeout: Duration,
    /// Reply to DATA (2 min).
    pub data_timeout: Duration,
    /// Each block of message data written (3 min).
    pub data_block_timeout: Duration,
    /// Reply to the final dot (10 min).
    pub final_dot_timeout: Duration,
    /// How long an idle connection is kept for reuse.
    pub idle_timeout: Duration,
}

impl DeliverySettings {
    /// Settings with the RFC time limits and no TLS extras.
    pub fn new(hostname: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        DeliverySettings {
            hostname: hostname.into(),
            data_dir: data_dir.into(),
            extra_ca: None,
            client_certificate: None,
            bind_address: None,
            mx_port: 25,
            max_per_destination: 20,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(120),
            data_block_timeout: Duration::from_secs(180),
            final_dot_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a [`Deliverer`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// Trust roots or the client certificate could not be loaded.
    #[error("outbound TLS setup: {0}")]
    Tls(String),
}

/// The delivery stage: shared (behind `Arc`) by every queue worker.
pub struct Deliverer {
    settings: DeliverySettings,
    resolver: Arc<dyn Resolver>,
    tls: TlsConfigs,
    pool: Arc<ConnectionPool>,
    reaper: Once,
    /// DNSSEC-validating lookups for DANE; `None` when `delivery.dane` is off.
    dane: Option<Arc<dyn SecureResolver>>,
    /// MTA-STS policies; `None` when `delivery.mta_sts` is off.
    mta_sts: Option<Arc<MtaSts>>,
    /// TLS-RPT counters; `None` when nothing is counted.
    reports: Option<Arc<TlsReports>>,
}

/// One MX host to try, the TLS policy it is held to (or why it cannot be
/// used now), and the policy TLS-RPT counts its session under.
struct HostPlan {
    host: HopHost,
    tls: Result<PeerTls, Reply>,
    report: Option<ReportPolicy>,
}

impl HostPlan {
    /// A host the published `policy` (`dane`, `mta-sts`) rules out now.
    fn refused(host: HopHost, reply: Reply) -> HostPlan {
        HostPlan {
            host,
            tls: Err(reply),
            report: None,
        }
    }
}

/// The policy named in a reply that rules a host out (trace `tls=`).
fn refusing_policy(reply: &Reply) -> Option<&'static str> {
    if reply.text.starts_with("DANE") {
        Some("dane")
    } else if reply.text.starts_with("MTA-STS") {
        Some("mta-sts")
    } else {
        None
    }
}

impl Deliverer {
    /// Builds the stage: loads trust roots and the client certificate.
    pub fn new(settings: DeliverySettings, resolver: Arc<dyn Resolver>) -> Result<Self, DeliverError> {
        let tls = TlsConfigs::new(settings.extra_ca.as_deref(), settings.client_certificate.as_ref())?;
        let pool = Arc::new(ConnectionPool::new(
            settings.idle_timeout,
            settings.max_per_destination,
        ));
        Ok(Deliverer {
            settings,
            resolver,
            tls,
            pool,
            reaper: Once::new(),
            dane: None,
            mta_sts: None,
            reports: None,
        })
    }

    /// Counts TLS sessions under DANE and MTA-STS policies for TLS-RPT.
    pub fn with_tls_reports(mut self, reports: Arc<TlsReports>) -> Self {
        self.reports = Some(reports);
        self
    }

    /// The TLS-RPT reports due (finished days, and today when
    /// `include_today`), taken from the counters.
    pub async fn take_tls_reports(&self, include_today: bool) -> Vec<OutgoingReport> {
        match &self.reports {
            Some(reports) => reports.take_reports(self.resolver.as_ref(), include_today).await,
            None => Vec::new(),
        }
    }

    fn report(&self, domain: &Domain, policy: &ReportPolicy, outcome: Result<(), tls_rpt::Failure>) {
        if let Some(reports) = &self.reports {
            reports.record(domain, policy, outcome);
        }
    }

    /// Enables MTA-STS for MX deliveries: policies fetched on port `port`
    /// (443 but in tests) and cached in `store`.
    pub fn with_mta_sts(
        mut self,
        store: Arc<dyn crate::store::Store>,
        port: u16,
    ) -> Result<Self, DeliverError> {
        let tls = (*self.tls.https).clone();
        let sts = MtaSts::new(self.resolver.clone(), store, tls, port).map_err(DeliverError::Tls)?;
        self.mta_sts = Some(Arc::new(sts));
        Ok(self)
    }

    /// The MTA-STS side of delivery, when enabled (for `domain check` and
    /// `route explain`).
    pub fn mta_sts(&self) -> Option<&Arc<MtaSts>> {
        self.mta_sts.as_ref()
    }

    /// Enables DANE for MX deliveries, with `resolver` validating DNSSEC.
    pub fn with_dane(mut self, resolver: Arc<dyn SecureResolver>) -> Self {
        self.dane = Some(resolver);
        self
    }

    /// One attempt for `job`: one outcome per job recipient, same order.
    pub async fn attempt(&self, job: &DeliveryJob) -> DeliveryAttempt {
        self.attempt_with(job, ConnectionLimits::default()).await
    }

    /// One attempt for `job` under its connector's connection limits.
    pub async fn attempt_with(&self, job: &DeliveryJob, limits: ConnectionLimits) -> DeliveryAttempt {
        if job.recipients.is_empty() {
            return DeliveryAttempt {
                host: None,
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes: Vec::new(),
            };
        }
        self.reaper
            .call_once(|| pool::spawn_reaper(Arc::downgrade(&self.pool), self.settings.idle_timeout));
        match &job.route {
            Route::Mailbox => self.deliver_to_mailboxes(job).await,
            Route::Mx => {
                self.deliver_by_mx(job, &TlsPolicy::Opportunistic, None, limits)
                    .await
            }
            Route::Connector {
                next_hop: NextHop::Mx,
                tls,
                helo_name,
                ..
            } => self.deliver_by_mx(job, tls, helo_name.as_deref(), limits).await,
            Route::Connector {
                next_hop: NextHop::SmartHosts(hosts),
                tls,
                helo_name,
                ..
            } => {
                let hosts = next_hop::smart_hosts(hosts)
                    .into_iter()
                    .map(|host| HostPlan {
                        host,
                        tls: Ok(PeerTls::Level(tls.clone())),
                        report: None,
                    })
                    .collect();
                self.deliver_via(job, hosts, helo_name.as_deref(), limits).await
            }
        }
    }

    /// Idle connections currently cached.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    async fn deliver_by_mx(
        &self,
        job: &DeliveryJob,
        level: &TlsPolicy,
        helo: Option<&str>,
        limits: ConnectionLimits,
    ) -> DeliveryAttempt {
        if let Some(host) = next_hop::address_literal(&job.domain, self.settings.mx_port) {
            let plan = HostPlan {
                host,
                tls: Ok(PeerTls::Level(level.clone())),
                report: None,
            };
            return self.deliver_via(job, vec![plan], helo, limits).await;
        }
        let (answer, mx_secure) = match self.lookup_mx(&job.domain).await {
            Ok(found) => found,
            Err(reply) => {
                let mut attempt = uniform(job, None, None, Outcome::TempFail(reply));
                attempt.tls_policy = Some("dane".to_string());
                return attempt;
            }
        };
        let hosts = match next_hop::mx_hosts(&job.domain, answer, self.settings.mx_port) {
            Ok(hosts) => hosts,
            Err(outcome) => return uniform(job, None, None, outcome),
        };
        let sts = match &self.mta_sts {
            Some(sts) => sts.lookup(&job.domain).await,
            None => mta_sts::Lookup::default(),
        };
        if let Some(failure) = &sts.failure {
            let result = match failure {
                mta_sts::FetchError::Fetch(_) => ResultType::StsPolicyFetchError,
                mta_sts::FetchError::Invalid(_) => ResultType::StsPolicyInvalid,
            };
            let policy = ReportPolicy {
                kind: PolicyType::Sts,
                strings: Vec::new(),
                mx: Vec::new(),
            };
            self.report(
                &job.domain,
                &policy,
                Err(tls_rpt::Failure {
                    result,
                    mx_host: None,
                    ip: None,
                    detail: Some(failure.to_string()),
                }),
            );
        }
        let mut plans = Vec::with_capacity(hosts.len());
        for host in hosts {
            let plan = self
                .host_tls(&job.domain, host, mx_secure, sts.policy.as_deref(), level)
                .await;
            plans.push(plan);
        }
        self.deliver_via(job, plans, helo, limits).await
    }

    /// The policy `domain` publishes beyond the connector's level, as
    /// `route explain` shows it: `dane (...)`, `mta-sts enforce (...)`,
    /// `mta-sts testing (...)`; `None` when it publishes none.
    pub async fn published_tls_policy(&self, domain: &Domain) -> Option<String> {
        let (answer, mx_secure) = match self.lookup_mx(domain).await {
            Ok(found) => found,
            Err(reply) => return Some(format!("dane: {} (deliveries defer)", reply.text)),
        };
        let hosts = match answer {
            Ok(MxAnswer::Hosts(hosts)) => hosts.into_iter().map(|(_, host)| host).collect(),
            _ => Vec::new(),
        };
        if let (Some(dane), true) = (&self.dane, mx_secure) {
            let mut with_tlsa = Vec::new();
            for host in &hosts {
                match dane.tlsa(host, 25).await {
                    Ok(tlsa) if tlsa.secure && !tlsa.answer.is_empty() => {
                        with_tlsa.push(format!("{host}: {} TLSA", tlsa.answer.len()))
                    }
                    Ok(_) => {}
                    Err(error) => with_tlsa.push(format!("{host}: {error}")),
                }
            }
            if !with_tlsa.is_empty() {
                return Some(format!("dane ({})", with_tlsa.join("; ")));
            }
        }
        let policy = self.mta_sts.as_ref()?.lookup(domain).await.policy?;
        let mode = match policy.mode {
            MtaStsMode::Enforce => "enforce",
            MtaStsMode::Testing => "testing",
            MtaStsMode::None => return None,
        };
        Some(format!("mta-sts {mode} (mx {})", policy.mx.join(" ")))
    }

    /// The MX answer and whether DNSSEC proved it (DANE applies only
    /// then). A bogus answer is a temporary failure: falling back to the
    /// unvalidated answer is exactly what an attacker forging it wants.
    async fn lookup_mx(&self, domain: &Domain) -> Result<(Result<MxAnswer, DnsError>, bool), Reply> {
        if let Some(dane) = &self.dane {
            if dane.available().await {
                return match dane.mx(domain).await {
                    Ok(validated) => Ok((Ok(validated.answer), validated.secure)),
                    Err(DnsError::Bogus { .. }) => Err(Reply::new(
                        451,
                        [4, 7, 5],
                        format!("DANE: the MX records of {domain} fail DNSSEC validation (bogus)"),
                    )),
                    Err(error) => Ok((Err(error), false)),
                };
            }
        }
        Ok((self.resolver.mx(domain).await, false))
    }

    /// The TLS policy of one MX host (SPEC section 10): DANE when the MX
    /// answer is secure and the host publishes secure TLSA records, else
    /// the domain's MTA-STS policy, else the route's level. A host that
    /// cannot be used now carries the reply saying why.
    async fn host_tls(
        &self,
        domain: &Domain,
        host: HopHost,
        mx_secure: bool,
        sts: Option<&MtaStsPolicy>,
        level: &TlsPolicy,
    ) -> HostPlan {
        let skip = |host: HopHost, reply: Reply, report: ReportPolicy, result: ResultType| {
            self.report(
                domain,
                &report,
                Err(tls_rpt::Failure {
                    result,
                    mx_host: Some(host.name.clone()),
                    ip: None,
                    detail: Some(reply.text.clone()),
                }),
            );
            HostPlan::refused(host, reply)
        };
        if let (Some(dane), true, false) = (&self.dane, mx_secure, host.implicit_mx) {
            // TLSA records are published for port 25 whatever port the
            // tests deliver to: the name is the service's, not the socket's.
            let tlsa_policy = |records: &[crate::dns::Tlsa]| ReportPolicy {
                kind: PolicyType::Tlsa,
                strings: records
                    .iter()
                    .map(|r| {
                        let data: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
                        format!("{} {} {} {data}", r.usage, r.selector, r.matching)
                    })
                    .collect(),
                mx: Vec::new(),
            };
            match dane.tlsa(&host.name, 25).await {
                Ok(tlsa) if tlsa.secure && !tlsa.answer.is_empty() => {
                    let report = tlsa_policy(&tlsa.answer);
                    let usable: Vec<_> = tlsa.answer.into_iter().filter(dane::usable).collect();
                    return HostPlan {
                        host,
                        tls: Ok(PeerTls::Dane(Arc::new(usable))),
                        report: Some(report),
                    };
                }
                Ok(_) => {}
                Err(DnsError::Bogus { .. }) => {
                    let reply = Reply::new(
                        451,
                        [4, 7, 5],
                        format!(
                            "DANE: the TLSA records of {} fail DNSSEC validation (bogus)",
                            host.name
                        ),
                    );
                    return skip(host, reply, tlsa_policy(&[]), ResultType::DnssecInvalid);
                }
                Err(error) => {
                    let reply = Reply::new(
                        451,
                        [4, 4, 3],
                        format!("DANE: TLSA lookup for {} failed: {error}", host.name),
                    );
                    return HostPlan {
                        host,
                        tls: Err(reply),
                        report: None,
                    };
                }
            }
        }
        let Some(policy) = sts.filter(|policy| policy.mode != MtaStsMode::None) else {
            return HostPlan {
                host,
                tls: Ok(PeerTls::Level(level.clone())),
                report: None,
            };
        };
        let report = ReportPolicy {
            kind: PolicyType::Sts,
            strings: policy
                .text
                .lines()
                .map(|line| line.trim_end().to_string())
                .collect(),
            mx: policy.mx.clone(),
        };
        let allowed = policy.allows_mx(&host.name);
        match policy.mode {
            MtaStsMode::Enforce if !allowed => {
                let reply = Reply::new(
                    451,
                    [4, 7, 5],
                    format!(
                        "MTA-STS policy (enforce): {} is not an MX host the policy allows",
                        host.name
                    ),
                );
                skip(host, reply, report, ResultType::ValidationFailure)
            }
            MtaStsMode::Enforce => HostPlan {
                host,
                tls: Ok(PeerTls::MtaSts),
                report: Some(report),
            },
            _ if !allowed => {
                // testing: reported, delivered as the route's level allows.
                self.report(
                    domain,
                    &report,
                    Err(tls_rpt::Failure {
                        result: ResultType::ValidationFailure,
                        mx_host: Some(host.name.clone()),
                        ip: None,
                        detail: Some(format!("{} is not an MX host the policy allows", host.name)),
                    }),
                );
                HostPlan {
                    host,
                    tls: Ok(PeerTls::MtaStsTesting(level.clone(), Observation::default())),
                    report: None,
                }
            }
            _ => HostPlan {
                host,
                tls: Ok(PeerTls::MtaStsTesting(level.clone(), Observation::default())),
                report: Some(report),
            },
        }
    }

    /// Tries `hosts` in order (each host's addresses in turn) until one
    /// runs the transaction. Failures before MAIL FROM move on to the next
    /// address; the last one is reported when none is left. A host whose
    /// policy could not be decided (`Err`) is skipped with that reply.
    async fn deliver_via(
        &self,
        job: &DeliveryJob,
        hosts: Vec<HostPlan>,
        helo: Option<&str>,
        limits: ConnectionLimits,
    ) -> DeliveryAttempt {
        let helo = helo
            .filter(|name| !name.is_empty())
            .unwrap_or(&self.settings.hostname);
        let mut last_failure = Outcome::TempFail(Reply::new(451, [4, 4, 0], "no next hop to try"));
        let mut last_peer = None;
        let mut last_policy = None;
        for HostPlan {
            host,
            tls: plan,
            report,
        } in hosts
        {
            let policy = match plan {
                Ok(policy) => policy,
                Err(reply) => {
                    tracing::info!(host = host.name, reply = %reply, "next hop unusable; trying the next");
                    last_policy = refusing_policy(&reply);
                    last_failure = Outcome::TempFail(reply);
                    last_peer = None;
                    continue;
                }
            };
            let _permit = self
                .pool
                .permit(
                    &pool::destination_key(&host.name, host.port),
                    limits.max_connections,
                )
                .await;
            let key = pool::pool_key(&host.name, host.port, &policy.pool_label(), helo);
            if let Some(attempt) = self.reuse(&key, job, limits).await {
                return with_policy(attempt, &policy);
            }
            let answer = self.resolver.ips(&host.name).await;
            let addresses = match next_hop::host_addresses(&host, answer) {
                Ok(addresses) => addresses,
                Err(outcome @ Outcome::PermFail(_)) => return uniform(job, None, None, outcome),
                Err(outcome) => {
                    last_failure = outcome;
                    continue;
                }
            };
            for ip in addresses {
                let addr = SocketAddr::new(ip, host.port);
                match establish(addr, &host.name, &policy, helo, &self.settings, &self.tls).await {
                    Ok(connection) => {
                        if let Some(report) = &report {
                            let failure = |result| tls_rpt::Failure {
                                result,
                                mx_host: Some(host.name.clone()),
                                ip: Some(ip),
                                detail: None,
                            };
                            let outcome = match (&connection.tls, policy.observed_failure()) {
                                (None, _) => Err(failure(ResultType::StartTlsNotSupported)),
                                (Some(_), Some(result)) => Err(failure(result)),
                                (Some(_), None) => Ok(()),
                            };
                            self.report(&job.domain, report, outcome);
                        }
                        let attempt = self.transact(connection, key, job, limits).await;
                        return with_policy(attempt, &policy);
                    }
                    Err(connection::Refusal { reply, tls }) => {
                        if let (Some(report), Some(result)) = (&report, tls) {
                            let failure = tls_rpt::Failure {
                                result,
                                mx_host: Some(host.name.clone()),
                                ip: Some(ip),
                                detail: Some(reply.text.clone()),
                            };
                            self.report(&job.domain, report, Err(failure));
                        }
                        let shown = crate::message::escape_controls(&reply.to_string()).into_owned();
                        tracing::info!(peer = %addr, reply = %shown, "next hop failed; trying the next");
                        last_failure = Outcome::TempFail(reply);
                        last_peer = Some(addr.to_string());
                        last_policy = Some(policy.name());
                    }
                }
            }
        }
        let mut attempt = uniform(job, last_peer, None, last_failure);
        attempt.tls_policy = last_policy.map(str::to_string);
        attempt
    }

    /// Runs the job on a cached connection for `key`, if one is alive.
    /// `None` when there is none, or when it died before MAIL was answered.
    async fn reuse(&self, key: &str, job: &DeliveryJob, limits: ConnectionLimits) -> Option<DeliveryAttempt> {
        loop {
            let (cached, expired) = self.pool.take(key);
            pool::close_all(expired);
            let mut connection = cached?;
            match transaction::run(&mut connection, job, &self.settings).await {
                Transaction::NotStarted(error) => {
                    tracing::debug!(peer = connection.peer, %error, "cached connection went stale");
                }
                Transaction::Finished { outcomes, reusable } => {
                    return Some(self.finish(connection, key.to_string(), job, outcomes, reusable, limits));
                }
            }
        }
    }

    /// Runs the job on a fresh connection.
    async fn transact(
        &self,
        mut connection: connection::Connection,
        key: String,
        job: &DeliveryJob,
        limits: ConnectionLimits,
    ) -> DeliveryAttempt {
        match transaction::run(&mut connection, job, &self.settings).await {
            Transaction::NotStarted(error) => {
                let reply = error.to_reply(&connection.peer);
                uniform(
                    job,
                    Some(connection.peer.clone()),
                    connection.tls.clone(),
                    Outcome::TempFail(reply),
                )
            }
            Transaction::Finished { outcomes, reusable } => {
                self.finish(connection, key, job, outcomes, reusable, limits)
            }
        }
    }

    fn finish(
        &self,
        mut connection: connection::Connection,
        key: String,
        job: &DeliveryJob,
        outcomes: Vec<Outcome>,
        reusable: bool,
        limits: ConnectionLimits,
    ) -> DeliveryAttempt {
        connection.transactions += 1;
        let host = Some(connection.peer.clone());
        let tls = connection.tls.clone();
        let dsn_passed_on = connection.offers(smtp_proto::EXT_DSN);
        if reusable {
            if let Some(unwanted) = self.pool.put(key, connection, limits.max_messages_per_connection) {
                pool::close_all(vec![unwanted]);
            }
        }
        // A connection that is not reusable is dropped: its session state
        // is unknown, so QUIT could be read as part of a transaction.
        DeliveryAttempt {
            host,
            tls,
            dsn_passed_on,
            tls_policy: None,
            outcomes: job
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .zip(outcomes)
                .collect(),
        }
    }

    async fn deliver_to_mailboxes(&self, job: &DeliveryJob) -> DeliveryAttempt {
        let root = self.settings.data_dir.join("mailboxes");
        let hostname = self.settings.hostname.clone();
        let addresses: Vec<Address> = job.recipients.iter().map(|r| r.address.clone()).collect();
        let content = job.content.clone();
        let written = tokio::task::spawn_blocking(move || {
            addresses
                .into_iter()
                .map(|address| {
                    let mailbox = maildir::mailbox_path(&root, address.domain().as_str(), address.local());
                    let outcome = match maildir::deliver(&mailbox, &hostname, &content) {
                        Ok(_) => Outcome::Delivered(Reply::new(250, [2, 0, 0], "delivered to mailbox")),
                        Err(error) => Outcome::TempFail(Reply::new(
                            451,
                            [4, 3, 0],
                            format!("mailbox write failed: {error}"),
                        )),
                    };
                    (address, outcome)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match written {
            Ok(outcomes) => DeliveryAttempt {
                host: Some(MAILBOX_HOST.to_string()),
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes,
            },
            Err(error) => uniform(
                job,
                Some(MAILBOX_HOST.to_string()),
                None,
                Outcome::TempFail(Reply::new(
                    451,
                    [4, 3, 0],
                    format!("mailbox delivery task failed: {error}"),
                )),
            ),
        }
    }
}

/// The same outcome for every recipient of `job`.
fn uniform(
    job: &DeliveryJob,
    host: Option<String>,
    tls: Option<TlsInfo>,
    outcome: Outcome,
) -> DeliveryAttempt {
    DeliveryAttempt {
        host,
        tls,
        dsn_passed_on: false,
        tls_policy: None,
        outcomes: job
            .recipients
            .iter()
            .map(|r| (r.address.clone(), outcome.clone()))
            .collect(),
    }
}

/// `attempt` naming the TLS policy its host was held to.
fn with_policy(mut attempt: DeliveryAttempt, policy: &PeerTls) -> DeliveryAttempt {
    attempt.tls_policy = Some(policy.name().to_string());
    attempt
}
