//! Stage 4: routing policy. For each accepted recipient, decide which
//! outbound connector carries it, to which next hop, at which TLS level.
//!
//! Input: the recipient's domain and the [`RoutingTable`]. Output: a
//! [`Route`], stored with the queued recipient. Routing never touches the
//! message and never resolves addresses: MX lookup and smart-host failover
//! happen at each delivery attempt (stage 6), because DNS and host health
//! change while mail waits. Order (SPEC section 4): a rule's connector; an
//! authoritative accepted domain's own mailboxes (no connector, not even
//! `*`, takes them: connectors carry mail that leaves the organisation); the
//! most specific enabled, non-rule-scoped connector; an internal-relay
//! domain's MX; MX for relayed mail.

mod host;
mod table;

pub use host::HostPort;
pub use table::{compile_accepted_domains, compile_outbound, RoutingTable};

use crate::config::objects::{AcceptedDomainType, ConnectorType};
use crate::message::{Domain, DomainPattern};
use serde::{Deserialize, Serialize};

/// Outbound TLS level (Exchange's names). A required level that cannot be
/// met defers the recipient: never clear text, never another route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "level")]
pub enum TlsPolicy {
    /// STARTTLS when offered, any certificate; clear text otherwise.
    Opportunistic,
    /// TLS required, any certificate.
    EncryptionOnly,
    /// TLS required, chain to the trust roots.
    CertificateValidation,
    /// TLS required, chain to the trust roots, and the certificate names
    /// `domain` (or, when `None`, the host connected to).
    DomainValidation {
        /// Name the certificate must carry.
        domain: Option<String>,
    },
}

impl TlsPolicy {
    /// Whether clear text is forbidden.
    pub fn requires_tls(&self) -> bool {
        !matches!(self, TlsPolicy::Opportunistic)
    }

    /// The config word for this level.
    pub fn name(&self) -> &'static str {
        match self {
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::EncryptionOnly => "encryption_only",
            TlsPolicy::CertificateValidation => "certificate_validation",
            TlsPolicy::DomainValidation { .. } => "domain_validation",
        }
    }
}

/// Where a connector sends mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "hosts")]
pub enum NextHop {
    /// Smart hosts, tried in order.
    SmartHosts(Vec<HostPort>),
    /// The recipient domain's MX records.
    Mx,
}

/// One `recipient_domains` entry: a pattern and its cost (Exchange's
/// address space `contoso.com;10`). Among equally specific matches, the
/// lowest cost wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpace {
    /// The domain pattern.
    pub pattern: DomainPattern,
    /// Cost, 1 when not given.
    pub cost: u32,
}

impl AddressSpace {
    /// Parses `contoso.com`, `*.contoso.com;5`, `*`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (pattern, cost) = match raw.split_once(';') {
            Some((p, c)) => (
                p,
                c.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{raw:?}: the cost after ';' must be a number"))?,
            ),
            None => (raw, 1),
        };
        let pattern = DomainPattern::parse(pattern).map_err(|e| e.to_string())?;
        Ok(AddressSpace { pattern, cost })
    }
}

/// Which recipients a connector serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Chosen by recipient domain: most specific pattern, then lowest cost.
    Domains(Vec<AddressSpace>),
    /// Used only when a mail flow rule routes a message to it
    /// (Exchange's IsTransportRuleScoped).
    RuleScoped,
}

/// An outbound connector, validated.
#[derive(Debug, Clone)]
pub struct OutboundConnector {
    /// Unique name.
    pub name: String,
    /// Partner or on-premises.
    pub kind: ConnectorType,
    /// Which recipients it serves.
    pub scope: Scope,
    /// Smart hosts or MX.
    pub next_hop: NextHop,
    /// TLS level.
    pub tls: TlsPolicy,
    /// EHLO name towards this destination; `None` uses the node's hostname.
    pub helo_name: Option<String>,
    /// Keep `X-Sluice-Org-*` headers when sending through it.
    pub retain_internal_headers: bool,
    /// Larger messages are refused for this connector.
    pub max_message_size: Option<u64>,
    /// Concurrent connections to each of its hosts, when capped.
    pub max_connections: Option<usize>,
    /// Messages over one connection, when capped.
    pub max_messages_per_connection: Option<usize>,
}

/// How one recipient leaves this node: decided at acceptance, stored with
/// the recipient in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum Route {
    /// Through an outbound connector.
    Connector {
        /// Connector name (as of routing time).
        connector: String,
        /// Smart hosts or MX of the recipient domain.
        next_hop: NextHop,
        /// TLS level.
        tls: TlsPolicy,
        /// EHLO name, when the connector sets one.
        helo_name: Option<String>,
        /// Keep internal headers.
        retain_internal_headers: bool,
        /// Larger messages are refused for this route (Exchange's MaxMessageSize).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_message_size: Option<u64>,
    },
    /// Into this node's Maildir (authoritative accepted domain).
    Mailbox,
    /// Direct MX delivery, opportunistic TLS (internal-relay domains and
    /// relayed mail with no connector).
    Mx,
}

impl Route {
    /// Connector name, or `None` for local and default MX delivery.
    pub fn connector(&self) -> Option<&str> {
        match self {
            Route::Connector { connector, .. } => Some(connector),
            _ => None,
        }
    }

    /// A key that groups recipients sharing one delivery transaction.
    pub fn destination_key(&self, domain: &Domain) -> String {
        match self {
            Route::Connector {
                connector,
                next_hop: NextHop::SmartHosts(_),
                ..
            } => format!("connector:{connector}"),
            Route::Connector {
                connector,
                next_hop: NextHop::Mx,
                ..
            } => format!("connector:{connector}:mx:{domain}"),
            Route::Mailbox => "mailbox".to_string(),
            Route::Mx => format!("mx:{domain}"),
        }
    }
}

impl From<&OutboundConnector> for Route {
    fn from(connector: &OutboundConnector) -> Self {
        Route::Connector {
            connector: connector.name.clone(),
            next_hop: connector.next_hop.clone(),
            tls: connector.tls.clone(),
            helo_name: connector.helo_name.clone(),
            retain_internal_headers: connector.retain_internal_headers,
            max_message_size: connector.max_message_size,
        }
    }
}

/// Which step of SPEC section 4's routing order chose a route (step 1, a
/// rule's connector, is the caller's), for `route explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingStep {
    /// Step 2: an authoritative accepted domain, delivered to this node's mailboxes.
    OwnMailboxes,
    /// Step 3: the connector whose address space matched most specifically.
    Connector {
        /// The matching `recipient_domains` entry, as written (`*.contoso.com;5`).
        address_space: String,
    },
    /// Step 4: an internal-relay accepted domain that no connector serves: MX.
    InternalRelayMx,
    /// Step 5: any other domain: MX, for senders allowed to relay.
    RelayMx,
}

impl RoutingStep {
    /// One line for `route explain`: the step and why it applies.
    pub fn describe(&self, domain: &Domain) -> String {
        match self {
            RoutingStep::OwnMailboxes => format!(
                "step 2: {domain} is an authoritative accepted domain: this node's mailboxes (no connector takes it)"
            ),
            RoutingStep::Connector { address_space } => {
                format!("step 3: recipient_domains {address_space:?} is the most specific match for {domain}")
            }
            RoutingStep::InternalRelayMx => {
                format!("step 4: {domain} is an internal_relay accepted domain no connector serves: MX")
            }
            RoutingStep::RelayMx => format!("step 5: {domain} is not accepted: MX, for senders allowed to relay"),
        }
    }
}

/// Routes one recipient domain by steps 2 to 5 of SPEC section 4 (step 1,
/// a rule's connector, is applied by the caller after this) and says which
/// step decided.
pub fn decide(table: &RoutingTable, domain: &Domain) -> (Route, RoutingStep) {
    // Mail for the organisation's own mailboxes never leaves through a
    // connector: a `*` connector is for mail that leaves the organisation.
    if table.accepted_domain(domain) == Some(AcceptedDomainType::Authoritative) {
        return (Route::Mailbox, RoutingStep::OwnMailboxes);
    }
    if let Some((connector, space)) = best_connector(table, domain) {
        let address_space = if space.cost == 1 {
            space.pattern.to_string()
        } else {
            format!("{};{}", space.pattern, space.cost)
        };
        return (Route::from(connector), RoutingStep::Connector { address_space });
    }
    match table.accepted_domain(domain) {
        Some(AcceptedDomainType::InternalRelay) => (Route::Mx, RoutingStep::InternalRelayMx),
        _ => (Route::Mx, RoutingStep::RelayMx),
    }
}

/// Routes one recipient domain (steps 2 to 5 of SPEC section 4). Returns
/// `None` when the domain is neither accepted nor served by a connector,
/// meaning MX delivery that only relay-permitted senders may use.
pub fn route(table: &RoutingTable, domain: &Domain) -> Option<Route> {
    match decide(table, domain) {
        (_, RoutingStep::RelayMx) => None,
        (route, _) => Some(route),
    }
}

/// The domain-scoped connector whose pattern matches `domain` most
/// specifically, then at the lowest cost; ties keep the earlier connector.
pub fn select_connector<'a>(table: &'a RoutingTable, domain: &Domain) -> Option<&'a OutboundConnector> {
    best_connector(table, domain).map(|(connector, _)| connector)
}

/// [`select_connector`] with the address space that matched.
fn best_connector<'a>(
    table: &'a RoutingTable,
    domain: &Domain,
) -> Option<(&'a OutboundConnector, &'a AddressSpace)> {
    table
        .outbound
        .iter()
        .filter_map(|c| match &c.scope {
            Scope::Domains(spaces) => spaces
                .iter()
                .filter_map(|space| {
                    space
                        .pattern
                        .matches(domain)
                        .map(|s| ((s, std::cmp::Reverse(space.cost)), space))
                })
                .max_by_key(|(rank, _)| *rank)
                .map(|(rank, space)| (rank, c, space)),
            Scope::RuleScoped => None,
        })
        .fold(
            None,
            |best: Option<(_, &OutboundConnector, &AddressSpace)>, (rank, c, space)| match best {
                Some((best_rank, ..)) if best_rank >= rank => best,
                _ => Some((rank, c, space)),
            },
        )
        .map(|(_, c, space)| (c, space))
}
