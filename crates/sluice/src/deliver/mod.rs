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

use crate::message::{Address, BodyType, Domain, DsnReturn, Notify, Reply, ReversePath};
use crate::receive::TlsInfo;
use crate::route::Route;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
    /// One outcome per job recipient, same order.
    pub outcomes: Vec<(Address, Outcome)>,
}
