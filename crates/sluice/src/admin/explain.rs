//! `sluice route explain` / `POST /api/v1/route/explain`: a dry run of one
//! message through classification, sender checks, relay control, then the
//! pre-queue step live mail takes ([`crate::rules::plan::inbound_content`]
//! and [`crate::rules::plan::decide`]: header firewall, rules, copies,
//! routes, quarantine, rejects), without the DNS of sender
//! authentication. Nothing is queued.

use crate::classify::restrictions::{check_sender, SessionFacts};
use crate::classify::{classify, Classification, MatchedBy};
use crate::config::objects::ConnectorType;
use crate::message::{Address, Envelope, EnvelopeRecipient, ReversePath};
use crate::policy::Policy;
use crate::receive::relay_control::{check_recipient, may_relay, sender_in_organization};
use crate::route::{NextHop, Route};
use crate::rules::plan;
use crate::rules::{self, MessageFacts};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// What to explain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// Envelope sender (empty for `<>`).
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// Client address (an internet address when absent).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = "ip")]
    pub ip: Option<IpAddr>,
    /// Name of a verified client certificate (implies TLS).
    #[serde(default)]
    pub tls_cert_name: Option<String>,
    /// The session used STARTTLS.
    #[serde(default)]
    pub tls: bool,
    /// Extra headers, `Name: value`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// A whole message (RFC 5322 text) instead of a synthesized one.
    #[serde(default)]
    pub eml: Option<String>,
}

/// Which inbound connector, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboundExplanation {
    /// Connector name, `None` for anonymous.
    pub connector: Option<String>,
    /// `on_premises`, `partner` or `anonymous`.
    pub kind: String,
    /// Why it was chosen.
    pub reason: String,
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleExplanation {
    /// Rule name.
    pub rule: String,
    /// Priority.
    pub priority: u32,
    /// Audit rules match without acting.
    pub audit: bool,
    /// Recipients it matched.
    pub matched: Vec<String>,
    /// Recipients it did not match, with the reason.
    pub not_matched: Vec<(String, String)>,
}

/// One recipient's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientExplanation {
    /// The recipient (or one added by redirect/bcc).
    pub address: String,
    /// Accepted at RCPT.
    pub accepted: bool,
    /// `deliver`, `quarantine`, `reject`, `delete`, or the RCPT refusal.
    pub outcome: String,
    /// The refusal or rejection reply.
    pub reply: Option<String>,
    /// Outbound connector.
    pub connector: Option<String>,
    /// Smart hosts, `MX of DOMAIN`, or `local mailbox`.
    pub next_hop: Option<String>,
    /// TLS level.
    pub tls: Option<String>,
    /// Which step of the routing order (SPEC section 4) chose the route, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_step: Option<String>,
}

/// The whole explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    /// Inbound connector decision.
    pub inbound: InboundExplanation,
    /// The sender check at MAIL FROM (`None` = accepted).
    pub sender_refused: Option<String>,
    /// Whether this session may relay to non-accepted domains.
    pub relay_allowed: bool,
    /// Whether the inbound connector retains internal headers.
    pub internal_headers_retained: bool,
    /// Internal headers the firewall removed.
    pub headers_removed: Vec<String>,
    /// Every enabled rule, in evaluation order.
    pub rules: Vec<RuleExplanation>,
    /// Whole-message refusal by rules (the in-session reply).
    pub refused: Option<String>,
    /// Per recipient.
    pub recipients: Vec<RecipientExplanation>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// Explains `request` against `policy`.
pub fn explain(policy: &Policy, request: &ExplainRequest) -> Result<Explanation, String> {
    let from = ReversePath::try_from(request.from.clone()).map_err(|e| format!("from: {e}"))?;
    let to = request
        .to
        .iter()
        .map(|a| Address::parse(a).map_err(|e| format!("to: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err("give at least one recipient (--to)".into());
    }
    let peer = request.ip.unwrap_or_else(|| IpAddr::from([203, 0, 113, 25]));
    let names: Vec<String> = request.tls_cert_name.iter().cloned().collect();
    let classification = classify(&policy.inbound, peer, &names);
    let inbound = describe_classification(policy, &classification);
    let facts = SessionFacts {
        peer,
        tls: request.tls || !names.is_empty(),
        certificate_names: &names,
    };
    let sender_refused = check_sender(&policy.inbound, &classification, facts, &from)
        .err()
        .map(|r| r.to_string());
    let relay_allowed = may_relay(policy, &classification, &from);

    let content = match &request.eml {
        Some(text) => text.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes(),
        None => synthesize(&from, &to, &request.headers),
    };
    // The session's end-of-DATA check, so the dry run refuses what live mail would.
    let malformed = crate::message::header::check(&content).err().map(|defect| {
        crate::message::Reply::new(550, [5, 6, 0], format!("Malformed header: {defect}")).to_string()
    });
    let internal_headers_retained = plan::retains_internal_headers(policy, &classification);
    let (content, headers_removed) = plan::inbound_content(policy, &classification, content, None);

    let mut recipients = Vec::new();
    let mut envelope = Envelope::new(from.clone());
    envelope.body = crate::message::BodyType::EightBitMime;
    let mut routes = Vec::new();
    for address in &to {
        match check_recipient(policy, &classification, &from, address) {
            Ok(route) => {
                envelope.recipients.push(EnvelopeRecipient {
                    address: address.clone(),
                    notify: crate::message::Notify::Default,
                    orcpt: None,
                });
                routes.push(route);
            }
            Err(reply) => recipients.push(RecipientExplanation {
                address: address.to_string(),
                accepted: false,
                outcome: "refused at RCPT".into(),
                reply: Some(reply.to_string()),
                connector: None,
                next_hop: None,
                tls: None,
                route_step: None,
            }),
        }
    }
    let refused_at_rcpt = recipients.len();
    let decision = plan::decide(
        &plan::Node {
            policy,
            scanner: "route-explain",
            scan_limits: &crate::scan::ScanLimits::default(),
            authenticator: None,
            reports: &plan::NoReports,
        },
        plan::Arrival {
            id: crate::message::QueueId("explain".into()),
            peer: SocketAddr::new(peer, 0),
            helo: "explain",
            tls: None,
            classification: &classification,
            envelope: &envelope,
            routes,
            content: &content,
            checked: None,
            now_ms: 0,
            expires_at_ms: 0,
        },
    );
    let (base, plan) = (&decision.base, &decision.plan);
    let sender_in_organization = sender_in_organization(policy, &classification, &from);

    let addresses: Vec<Address> = base.recipients.iter().map(|r| r.address.clone()).collect();
    let facts = MessageFacts::new(
        policy,
        &classification,
        sender_in_organization,
        peer,
        &from,
        &addresses,
        content.original(),
    );
    let rules = policy
        .rules
        .iter()
        .map(|rule| {
            let matched = plan.evaluation.matches.iter().find(|m| m.rule == rule.name);
            let matched_indexes: Vec<usize> = matched.map(|m| m.recipients.clone()).unwrap_or_default();
            RuleExplanation {
                rule: rule.name.clone(),
                priority: rule.priority,
                audit: rule.mode == crate::config::rule_object::RuleMode::Audit,
                matched: matched_indexes
                    .iter()
                    .map(|&i| addresses[i].to_string())
                    .collect(),
                not_matched: (0..addresses.len())
                    .filter(|i| !matched_indexes.contains(i))
                    .map(|i| (addresses[i].to_string(), rules::why_not(rule, &facts, i)))
                    .collect(),
            }
        })
        .collect();

    for (i, reply) in &plan.failed {
        recipients.push(outcome(&addresses[*i], "reject", Some(reply.to_string()), None));
    }
    for (i, rule) in &plan.deleted {
        recipients.push(outcome(
            &addresses[*i],
            "delete",
            Some(format!("deleted by rule {rule:?}")),
            None,
        ));
    }
    if let plan::Verdict::Accepted(accepted) = &decision.verdict {
        for copy in &accepted.copies {
            let (entry, word, reply) = match copy {
                plan::CopyFate::Queued(entry, _) => (entry, "deliver", None),
                plan::CopyFate::Quarantined(held, _) => (
                    &held.entry,
                    "quarantine",
                    Some(format!("quarantined by rule {:?}", held.rule)),
                ),
            };
            for r in &entry.recipients {
                recipients.push(outcome(
                    &r.address,
                    word,
                    reply.clone(),
                    Some((&r.route, routing_step(policy, plan, &r.address, &r.route))),
                ));
            }
        }
    }
    if let Some(reply) = &plan.refused {
        for r in &base.recipients {
            recipients.push(outcome(&r.address, "reject", Some(reply.to_string()), None));
        }
    }
    if let Some(reply) = &malformed {
        recipients.truncate(refused_at_rcpt);
        for r in &base.recipients {
            recipients.push(outcome(&r.address, "reject", Some(reply.clone()), None));
        }
    }
    Ok(Explanation {
        inbound,
        sender_refused,
        relay_allowed,
        internal_headers_retained,
        headers_removed,
        rules,
        refused: malformed.or(plan.refused.as_ref().map(|r| r.to_string())),
        recipients,
        notes: plan.notes.clone(),
    })
}

/// `POST /api/v1/route/explain`.
#[utoipa::path(post, path = "/route/explain", tag = "route", operation_id = "route_explain",
    request_body = ExplainRequest,
    responses((status = 200, description = "The dry run: connector, per-recipient decision, rules, route", body = Explanation), (status = 400, description = "Invalid request; the text names the key", body = super::ErrorBody)))]
pub(super) async fn handle(
    axum::extract::State(state): axum::extract::State<super::ApiState>,
    super::JsonBody(request): super::JsonBody<ExplainRequest>,
) -> Result<axum::Json<Explanation>, super::AdminError> {
    let policy = state.backend.policy().await?;
    // The dry run parses and may scan the message: content work stays off
    // the runtime threads that serve the API and SMTP sessions.
    let mut explanation = tokio::task::spawn_blocking(move || explain(&policy, &request))
        .await
        .map_err(|e| super::AdminError::Internal(e.to_string()))?
        .map_err(super::AdminError::Invalid)?;
    // MX deliveries: a policy the domain publishes (SPEC section 10)
    // overrides the connector's level; it needs DNS, so it is asked here.
    for recipient in &mut explanation.recipients {
        let Some(domain) = recipient
            .next_hop
            .as_deref()
            .and_then(|hop| hop.strip_prefix("MX of "))
        else {
            continue;
        };
        if let Some(published) = state.backend.published_tls_policy(domain.to_string()).await? {
            let level = recipient.tls.take().unwrap_or_default();
            recipient.tls = Some(format!("{published} [connector level: {level}]"));
        }
    }
    Ok(axum::Json(explanation))
}

/// The routing step that gave `address` its `route`: step 1 when a rule's
/// connector replaced what routing alone decides, else routing's own step.
fn routing_step(policy: &Policy, plan: &plan::Plan, address: &Address, route: &Route) -> String {
    let (by_domain, step) = crate::route::decide(&policy.routing, address.domain());
    match route.connector() {
        Some(connector) if by_domain != *route => {
            let rule = plan
                .evaluation
                .matches
                .iter()
                .filter(|m| !m.audit)
                .filter_map(|m| policy.rules.iter().find(|r| r.name == m.rule))
                .find(|r| {
                    r.actions
                        .iter()
                        .any(|a| matches!(a, rules::Action::RouteVia(c) if c == connector))
                });
            match rule {
                Some(rule) => format!(
                    "step 1: rule {:?} routes it via connector {connector:?}",
                    rule.name
                ),
                None => format!("step 1: a rule routes it via connector {connector:?}"),
            }
        }
        _ => step.describe(address.domain()),
    }
}

fn outcome(
    address: &Address,
    word: &str,
    reply: Option<String>,
    route: Option<(&Route, String)>,
) -> RecipientExplanation {
    let route_step = route.as_ref().map(|(_, step)| step.clone());
    let route = route.map(|(route, _)| route);
    let (connector, next_hop, tls) = match route {
        None => (None, None, None),
        Some(Route::Mailbox) => (None, Some("local mailbox".to_string()), None),
        Some(Route::Mx) => (
            None,
            Some(format!("MX of {}", address.domain())),
            Some("opportunistic".to_string()),
        ),
        Some(Route::Connector {
            connector,
            next_hop,
            tls,
            ..
        }) => {
            let hop = match next_hop {
                NextHop::SmartHosts(hosts) => hosts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                NextHop::Mx => format!("MX of {}", address.domain()),
            };
            let level = match tls {
                crate::route::TlsPolicy::DomainValidation { domain: Some(d) } => {
                    format!("domain_validation ({d})")
                }
                other => other.name().to_string(),
            };
            (Some(connector.clone()), Some(hop), Some(level))
        }
    };
    RecipientExplanation {
        address: address.to_string(),
        accepted: true,
        outcome: word.to_string(),
        reply,
        connector,
        next_hop,
        tls,
        route_step,
    }
}

fn describe_classification(policy: &Policy, classification: &Classification) -> InboundExplanation {
    match classification {
        Classification::Anonymous => InboundExplanation {
            connector: None,
            kind: "anonymous".into(),
            reason: "no inbound connector matches the client address or certificate".into(),
        },
        Classification::Internal {
            connector,
            matched_by,
        }
        | Classification::Partner {
            connector,
            matched_by,
        } => {
            let kind = policy
                .inbound
                .iter()
                .find(|c| &c.name == connector)
                .map_or("partner", |c| {
                    if c.kind == ConnectorType::OnPremises {
                        "on_premises"
                    } else {
                        "partner"
                    }
                });
            let reason = match matched_by {
                MatchedBy::Certificate(name) => {
                    format!("client certificate name {name} matches tls_sender_certificate_name")
                }
                MatchedBy::SourceIp(net) => format!("client address within {net} (longest prefix)"),
            };
            InboundExplanation {
                connector: Some(connector.clone()),
                kind: kind.into(),
                reason,
            }
        }
    }
}

fn synthesize(from: &ReversePath, to: &[Address], headers: &[String]) -> Vec<u8> {
    let mut text = String::new();
    for h in headers {
        text.push_str(h.trim_end());
        text.push_str("\r\n");
    }
    let to_list: Vec<String> = to.iter().map(|a| format!("<{a}>")).collect();
    text.push_str(&format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: route explain\r\n\r\n(route explain)\r\n",
        to_list.join(", ")
    ));
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::objects::ObjectSet;

    const SEED_000_GATEWAY: &str = r#"
[[accepted_domain]]
name = "contoso.test"
[[inbound_connector]]
name = "From scanner"
type = "on_premises"
sender_ip_addresses = ["127.0.0.30/32"]
retain_internal_headers = true
[[outbound_connector]]
name = "To scanner"
smart_hosts = ["127.0.0.30:2525"]
transport_rule_scoped = true
retain_internal_headers = true
[[rule]]
name = "External mail through the scanner"
[rule.conditions]
sent_to_scope = "not_in_organization"
[rule.exceptions]
header_contains = { header = "X-Sluice-Org-Scan", words = ["verdict=pass"] }
[rule.actions]
route_via_connector = "To scanner"
"#;

    fn policy() -> Policy {
        crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(SEED_000_GATEWAY).unwrap()).unwrap()
    }

    #[test]
    fn a_malformed_header_section_is_refused_as_live_mail_is() {
        let request = ExplainRequest {
            from: "mallory@fabrikam.test".into(),
            to: vec!["bob@contoso.test".into()],
            eml: Some("X-Sluice-Org-Scan : verdict=pass\nSubject: x\n\nbody\n".into()),
            ..ExplainRequest::default()
        };
        let explanation = explain(&policy(), &request).unwrap();
        let refused = explanation.refused.unwrap_or_default();
        assert!(refused.starts_with("550 5.6.0 Malformed header"), "{refused}");
        assert_eq!(explanation.recipients.len(), 1);
        assert_eq!(explanation.recipients[0].outcome, "reject");
    }

    #[test]
    fn unstamped_external_mail_goes_to_the_scanner_and_forged_stamps_are_removed() {
        let request = ExplainRequest {
            from: "a@contoso.test".into(),
            to: vec!["x@fabrikam.test".into(), "y@contoso.test".into()],
            ip: Some("127.0.0.30".parse().unwrap()),
            ..Default::default()
        };
        let e = explain(&policy(), &request).unwrap();
        assert_eq!(e.inbound.connector.as_deref(), Some("From scanner"));
        assert!(e.relay_allowed);
        let external = e
            .recipients
            .iter()
            .find(|r| r.address == "x@fabrikam.test")
            .unwrap();
        assert_eq!(external.connector.as_deref(), Some("To scanner"));
        assert_eq!(external.next_hop.as_deref(), Some("127.0.0.30:2525"));
        let internal = e
            .recipients
            .iter()
            .find(|r| r.address == "y@contoso.test")
            .unwrap();
        assert_eq!(internal.next_hop.as_deref(), Some("local mailbox"));
        assert_eq!(
            e.rules[0].not_matched[0].1,
            "condition not met: sent_to_scope = not_in_organization"
        );

        // From the internet, a forged stamp is stripped and the relay refused.
        let forged = ExplainRequest {
            from: "evil@internet.test".into(),
            to: vec!["y@contoso.test".into(), "x@fabrikam.test".into()],
            headers: vec!["X-Sluice-Org-Scan: verdict=pass".into()],
            ..Default::default()
        };
        let e = explain(&policy(), &forged).unwrap();
        assert_eq!(e.inbound.kind, "anonymous");
        assert_eq!(e.headers_removed, vec!["X-Sluice-Org-Scan"]);
        assert!(e
            .recipients
            .iter()
            .any(|r| r.address == "x@fabrikam.test" && !r.accepted));
    }

    #[test]
    fn stamped_mail_from_the_scanner_is_not_rerouted() {
        let request = ExplainRequest {
            from: "a@contoso.test".into(),
            to: vec!["x@fabrikam.test".into()],
            ip: Some("127.0.0.30".parse().unwrap()),
            headers: vec!["X-Sluice-Org-Scan: verdict=pass; scanner=s".into()],
            ..Default::default()
        };
        let e = explain(&policy(), &request).unwrap();
        assert!(e.internal_headers_retained);
        assert_eq!(e.recipients[0].next_hop.as_deref(), Some("MX of fabrikam.test"));
        assert!(e.rules[0].not_matched[0].1.starts_with("exception holds"));
    }

    #[test]
    fn authoritative_domains_stay_in_their_mailboxes_even_with_a_star_connector() {
        let policy = crate::policy::Policy::compile(
            &toml::from_str::<ObjectSet>(
                r#"
[[accepted_domain]]
name = "contoso.test"
[[accepted_domain]]
name = "hybrid.contoso.test"
type = "internal_relay"
[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["127.0.0.40/32"]
[[outbound_connector]]
name = "Smart host"
recipient_domains = ["*"]
smart_hosts = ["127.0.0.9:25"]
[[outbound_connector]]
name = "Partner"
recipient_domains = ["partner.test"]
smart_hosts = ["127.0.0.8:25"]
transport_rule_scoped = true
[[rule]]
name = "Partner mail"
[rule.conditions]
recipient_domain_is = ["fabrikam.test"]
[rule.actions]
route_via_connector = "Partner"
"#,
            )
            .unwrap(),
        )
        .unwrap();
        let request = ExplainRequest {
            from: "alice@contoso.test".into(),
            to: vec![
                "bob@contoso.test".into(),
                "carol@hybrid.contoso.test".into(),
                "dave@example.org".into(),
                "erin@fabrikam.test".into(),
            ],
            ip: Some("127.0.0.40".parse().unwrap()),
            ..Default::default()
        };
        let e = explain(&policy, &request).unwrap();
        let find = |address: &str| e.recipients.iter().find(|r| r.address == address).unwrap();
        let bob = find("bob@contoso.test");
        assert_eq!(
            (bob.connector.as_deref(), bob.next_hop.as_deref()),
            (None, Some("local mailbox"))
        );
        assert!(
            bob.route_step
                .as_deref()
                .unwrap()
                .starts_with("step 2: contoso.test is an authoritative"),
            "{bob:?}"
        );
        for address in ["carol@hybrid.contoso.test", "dave@example.org"] {
            let r = find(address);
            assert_eq!(r.connector.as_deref(), Some("Smart host"), "{r:?}");
            assert!(
                r.route_step
                    .as_deref()
                    .unwrap()
                    .starts_with("step 3: recipient_domains \"*\""),
                "{r:?}"
            );
        }
        let erin = find("erin@fabrikam.test");
        assert_eq!(erin.connector.as_deref(), Some("Partner"));
        assert_eq!(
            erin.route_step.as_deref(),
            Some("step 1: rule \"Partner mail\" routes it via connector \"Partner\"")
        );
        let text = crate::cli::route::render(&e);
        assert!(text.contains("  bob@contoso.test: step 2: "), "{text}");
    }
}
