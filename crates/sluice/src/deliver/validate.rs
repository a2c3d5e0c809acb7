//! Connector validation: do what delivery does, step by step, and report
//! each step (Exchange's "validate this connector"). For each smart host
//! (or the MX hosts of each validation recipient's domain): resolve,
//! connect, greeting, EHLO, STARTTLS and the certificate check as the
//! connector's TLS level requires; then a test message to the validation
//! recipients through the first host that passed. Prefers false failures
//! to false passes: a step that cannot be checked fails.

use super::connection::{Connection, Phase, SessionError};
use super::next_hop::{self, HopHost};
use super::transaction::{self, Transaction};
use super::{tls_policy, Deliverer, DeliveryJob, JobRecipient, Outcome};
use crate::message::{Address, BodyType, Domain, Notify, Reply, ReversePath};
use crate::route::{NextHop, OutboundConnector, Route, TlsPolicy};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_rustls::TlsConnector;

/// One step of a validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationStep {
    /// Host (and address) the step concerns.
    pub host: String,
    /// `resolve`, `connect`, `greeting`, `ehlo`, `starttls`, `certificate`, `test message`.
    pub step: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it took.
    pub millis: u64,
    /// The server's reply or what was checked.
    pub detail: String,
}

/// The whole result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationReport {
    /// Connector name.
    pub connector: String,
    /// Every step passed.
    pub passed: bool,
    /// In order.
    pub steps: Vec<ValidationStep>,
}

struct Steps {
    steps: Vec<ValidationStep>,
}

impl Steps {
    fn record(
        &mut self,
        host: &str,
        step: &str,
        started: Instant,
        passed: bool,
        detail: impl Into<String>,
    ) -> bool {
        self.steps.push(ValidationStep {
            host: host.to_string(),
            step: step.to_string(),
            passed,
            millis: started.elapsed().as_millis() as u64,
            detail: detail.into(),
        });
        passed
    }
}

impl Deliverer {
    /// Validates `connector`, sending a test message to `recipients`.
    pub async fn validate(&self, connector: &OutboundConnector, recipients: &[Address]) -> ValidationReport {
        let mut steps = Steps { steps: Vec::new() };
        let helo = connector
            .helo_name
            .clone()
            .unwrap_or_else(|| self.settings.hostname.clone());
        let hosts = self.validation_hosts(connector, recipients, &mut steps).await;
        let mut working: Option<Connection> = None;
        for host in &hosts {
            if let Some(connection) = self.check_host(host, &connector.tls, &helo, &mut steps).await {
                match working {
                    None => working = Some(connection),
                    Some(_) => connection.quit().await,
                }
            }
        }
        let hosts_ok = !hosts.is_empty() && steps.steps.iter().all(|s| s.passed);
        if let Some(mut connection) = working {
            if recipients.is_empty() {
                connection.quit().await;
            } else {
                self.test_message(&mut connection, connector, recipients, &mut steps)
                    .await;
                connection.quit().await;
            }
        }
        let passed = hosts_ok && steps.steps.iter().all(|s| s.passed);
        ValidationReport {
            connector: connector.name.clone(),
            passed,
            steps: steps.steps,
        }
    }

    async fn validation_hosts(
        &self,
        connector: &OutboundConnector,
        recipients: &[Address],
        steps: &mut Steps,
    ) -> Vec<HopHost> {
        match &connector.next_hop {
            NextHop::SmartHosts(hosts) => next_hop::smart_hosts(hosts),
            NextHop::Mx => {
                let mut domains: Vec<&Domain> = recipients.iter().map(Address::domain).collect();
                domains.dedup();
                let mut hosts = Vec::new();
                for domain in domains {
                    let started = Instant::now();
                    match next_hop::mx_hosts(domain, self.resolver.mx(domain).await, self.settings.mx_port) {
                        Ok(found) => {
                            let names: Vec<&str> = found.iter().map(|h| h.name.as_str()).collect();
                            steps.record(
                                domain.as_str(),
                                "resolve",
                                started,
                                true,
                                format!("MX: {}", names.join(", ")),
                            );
                            hosts.extend(found);
                        }
                        Err(outcome) => {
                            steps.record(
                                domain.as_str(),
                                "resolve",
                                started,
                                false,
                                outcome_reply(&outcome).to_string(),
                            );
                        }
                    }
                }
                if hosts.is_empty() && recipients.is_empty() {
                    steps.record(
                        &connector.name,
                        "resolve",
                        Instant::now(),
                        false,
                        "an MX connector needs a validation recipient to know which domain to look up",
                    );
                }
                hosts
            }
        }
    }

    /// Runs the session steps on one host; returns the connection when all passed.
    async fn check_host(
        &self,
        host: &HopHost,
        policy: &TlsPolicy,
        helo: &str,
        steps: &mut Steps,
    ) -> Option<Connection> {
        let label = format!("{}:{}", host.name, host.port);
        let started = Instant::now();
        let addresses = match next_hop::host_addresses(host, self.resolver.ips(&host.name).await) {
            Ok(addresses) => addresses,
            Err(outcome) => {
                steps.record(
                    &label,
                    "resolve",
                    started,
                    false,
                    outcome_reply(&outcome).to_string(),
                );
                return None;
            }
        };
        let Some(ip) = addresses.first().copied() else {
            steps.record(&label, "resolve", started, false, "no address");
            return None;
        };
        let addr = SocketAddr::new(ip, host.port);
        let peer = addr.to_string();
        let started = Instant::now();
        let mut connection = match Connection::connect(addr, &self.settings).await {
            Ok(c) => c,
            Err(error) => {
                steps.record(
                    &peer,
                    "connect",
                    started,
                    false,
                    error.to_reply(&peer).to_string(),
                );
                return None;
            }
        };
        steps.record(&peer, "connect", started, true, format!("connected to {peer}"));
        let started = Instant::now();
        let greeting = connection
            .read_reply(Phase::Greeting, self.settings.command_timeout)
            .await;
        let outcome = reply_outcome(greeting, &peer, Reply::is_positive);
        let mut connection = settle(connection, steps, &peer, "greeting", started, outcome).await?;
        let started = Instant::now();
        let ehlo = connection.greet(helo, self.settings.command_timeout).await;
        let outcome = greet_outcome(ehlo, &peer, format!("EHLO {helo} accepted"));
        let mut connection = settle(connection, steps, &peer, "ehlo", started, outcome).await?;
        let started = Instant::now();
        if !connection.offers(smtp_proto::EXT_START_TLS) {
            let outcome = if policy.requires_tls() {
                Err(tls_policy::starttls_missing_reply(policy, &peer).to_string())
            } else {
                Ok("not offered; clear text allowed (opportunistic)".to_string())
            };
            return settle(connection, steps, &peer, "starttls", started, outcome).await;
        }
        let reply = match connection
            .send(b"STARTTLS\r\n", Phase::StartTls, self.settings.command_timeout)
            .await
        {
            Ok(()) => {
                connection
                    .read_reply(Phase::StartTls, self.settings.command_timeout)
                    .await
            }
            Err(error) => Err(error),
        };
        let outcome = reply_outcome(reply, &peer, |reply| reply.code == 220);
        let connection = settle(connection, steps, &peer, "starttls", started, outcome).await?;
        let started = Instant::now();
        let name = match tls_policy::server_name(policy, &host.name) {
            Ok(name) => name,
            Err(reply) => {
                return settle(
                    connection,
                    steps,
                    &peer,
                    "certificate",
                    started,
                    Err(reply.to_string()),
                )
                .await
            }
        };
        let tls = TlsConnector::from(self.tls.for_policy(policy));
        let mut secured = match connection
            .start_tls(tls, name, self.settings.command_timeout)
            .await
        {
            Ok(secured) => secured,
            Err(error) => {
                let reply = tls_policy::handshake_failure_reply(policy, &host.name, &peer, &error);
                steps.record(&peer, "certificate", started, false, reply.to_string());
                return None;
            }
        };
        let facts = secured
            .tls
            .as_ref()
            .map(|t| format!("{} {}", t.version, t.cipher))
            .unwrap_or_default();
        let checked = match policy {
            TlsPolicy::Opportunistic | TlsPolicy::EncryptionOnly => "any certificate accepted".to_string(),
            TlsPolicy::CertificateValidation => "certificate chain trusted".to_string(),
            TlsPolicy::DomainValidation { .. } => {
                format!(
                    "certificate trusted and valid for {}",
                    tls_policy::required_name(policy, &host.name)
                )
            }
        };
        steps.record(&peer, "certificate", started, true, format!("{facts}; {checked}"));
        let started = Instant::now();
        let ehlo = secured.greet(helo, self.settings.command_timeout).await;
        let outcome = greet_outcome(ehlo, &peer, "EHLO after STARTTLS accepted".to_string());
        settle(secured, steps, &peer, "ehlo", started, outcome).await
    }

    async fn test_message(
        &self,
        connection: &mut Connection,
        connector: &OutboundConnector,
        recipients: &[Address],
        steps: &mut Steps,
    ) {
        let hostname = &self.settings.hostname;
        let content = format!(
            "From: <postmaster@{hostname}>\r\nTo: {}\r\nSubject: sluice connector validation: {}\r\nDate: {}\r\nMessage-ID: <{}.validation@{hostname}>\r\nAuto-Submitted: auto-generated\r\n\r\nThis message tests the outbound connector {:?} of {hostname}.\r\nIt needs no answer.\r\n",
            recipients.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(", "),
            connector.name,
            mail_builder::headers::date::Date::now().to_rfc822(),
            crate::message::QueueId::generate(),
            connector.name,
        );
        let sender =
            Address::parse(&format!("postmaster@{hostname}")).map_or(ReversePath::Null, ReversePath::Mailbox);
        let job = DeliveryJob {
            route: Route::from(connector),
            domain: recipients[0].domain().clone(),
            mail_from: sender,
            recipients: recipients
                .iter()
                .map(|r| JobRecipient {
                    address: r.clone(),
                    notify: Notify::Never,
                    orcpt: None,
                })
                .collect(),
            content: Arc::new(content.into_bytes()),
            body: BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
        };
        let peer = connection.peer.clone();
        let started = Instant::now();
        match transaction::run(connection, &job, &self.settings).await {
            Transaction::Finished { outcomes, .. } => {
                for (recipient, outcome) in recipients.iter().zip(outcomes) {
                    let passed = matches!(outcome, Outcome::Delivered(_));
                    steps.record(
                        &peer,
                        "test message",
                        started,
                        passed,
                        format!("<{recipient}>: {}", outcome_reply(&outcome)),
                    );
                }
            }
            Transaction::NotStarted(error) => {
                steps.record(
                    &peer,
                    "test message",
                    started,
                    false,
                    error.to_reply(&peer).to_string(),
                );
            }
        }
    }
}

/// Records a session step; a failed one ends the session (QUIT) and the
/// host's checks.
async fn settle(
    connection: Connection,
    steps: &mut Steps,
    peer: &str,
    step: &str,
    started: Instant,
    outcome: Result<String, String>,
) -> Option<Connection> {
    match outcome {
        Ok(detail) => {
            steps.record(peer, step, started, true, detail);
            Some(connection)
        }
        Err(detail) => {
            steps.record(peer, step, started, false, detail);
            connection.quit().await;
            None
        }
    }
}

/// A reply that must satisfy `accepted`, or the wire error before it.
fn reply_outcome(
    reply: Result<Reply, SessionError>,
    peer: &str,
    accepted: impl Fn(&Reply) -> bool,
) -> Result<String, String> {
    match reply {
        Ok(reply) if accepted(&reply) => Ok(reply.to_string()),
        Ok(reply) => Err(reply.to_string()),
        Err(error) => Err(error.to_reply(peer).to_string()),
    }
}

/// EHLO (or HELO) accepted, refused, or lost on the wire.
fn greet_outcome(
    greeting: Result<Result<(), Reply>, SessionError>,
    peer: &str,
    accepted: String,
) -> Result<String, String> {
    match greeting {
        Ok(Ok(())) => Ok(accepted),
        Ok(Err(reply)) => Err(reply.to_string()),
        Err(error) => Err(error.to_reply(peer).to_string()),
    }
}

fn outcome_reply(outcome: &Outcome) -> &Reply {
    match outcome {
        Outcome::Delivered(r) | Outcome::TempFail(r) | Outcome::PermFail(r) => r,
    }
}
