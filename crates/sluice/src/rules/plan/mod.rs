//! What an accepted message becomes, decided before the final reply and
//! without I/O: the pre-queue step. [`inbound_content`] is the header
//! firewall; [`decide`] takes the firewalled message, its envelope, the
//! session's classification, the policy, the authentication results and
//! the clock, and returns the decision: a refusal (the in-session reply)
//! or everything to commit (copies with their content, signed; quarantined
//! copies; failure reports and sender notices), with the trace events.
//! Inside, [`plan`] is the rules' verdict per recipient, grouped into
//! copies (bifurcation), each with its content and routes.
//!
//! The live intake carries a decision out; `route explain` prints it. One
//! code path for both, so the dry run cannot drift from live mail. What
//! needs I/O stays with the caller: reading the spooled content, the DNS
//! of sender authentication, the store's commit. Runs after classification
//! and relay control, which the session did.

mod decide;

pub use decide::{
    decide, describe_route, inbound_content, retains_internal_headers, Accepted, Arrival, CopyFate, Decision,
    NoReports, Node, Reports, Verdict,
};

use crate::classify::Classification;
use crate::message::{Address, MessageContent, Reply};
use crate::policy::Policy;
use crate::queue::{QueueEntry, QueuedRecipient};
use crate::route::Route;
use crate::rules::{self, Disposition, Effects, Evaluation, HeaderEdit, MessageFacts};
use std::net::IpAddr;

/// Counts rule-driven reroutes (SPEC section 5); past this, a loop.
pub const RULE_LOOP_HEADER: &str = "X-Sluice-Org-Rule-Loop";
const MAX_RULE_REROUTES: u32 = 3;

/// One copy of the message: recipients sharing content, routes and fate.
#[derive(Debug, Clone)]
pub struct PlannedCopy {
    /// Recipients (after redirect and bcc) with their routes.
    pub recipients: Vec<QueuedRecipient>,
    /// Content after the rules' header changes: its own header section
    /// over the body every copy shares.
    pub content: MessageContent,
    /// The rule that quarantines this copy, if one does.
    pub quarantined_by: Option<String>,
    /// Header changes made, for the explanation.
    pub edits: Vec<HeaderEdit>,
}

/// The plan for one message.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Rules evaluation (matches and per-recipient effects).
    pub evaluation: Evaluation,
    /// Every recipient refused by rules: the in-session reply.
    pub refused: Option<Reply>,
    /// Copies to queue or quarantine.
    pub copies: Vec<PlannedCopy>,
    /// Recipients refused (by a rule, or a rule loop): index and reply.
    pub failed: Vec<(usize, Reply)>,
    /// Recipients deleted by a rule: index and rule.
    pub deleted: Vec<(usize, String)>,
    /// Notices for the sender.
    pub notices: Vec<String>,
    /// Remarks (a rule's connector missing...).
    pub notes: Vec<String>,
    /// What the DLP scan found, when a rule made it run (names and counts only).
    pub scan_summary: Option<String>,
}

/// Inputs of a plan besides the policy.
pub struct PlanInput<'a> {
    /// Inbound connector decision.
    pub classification: &'a Classification,
    /// Whether the sender counts as inside the organisation (rules' from_scope):
    /// it came through an on-premises connector and may relay.
    pub sender_in_organization: bool,
    /// Client address.
    pub peer: IpAddr,
    /// The message as queued (recipients with their RCPT-time routes).
    pub base: &'a QueueEntry,
    /// Content after the inbound header firewall (and the node's
    /// `Authentication-Results`, when it checked the message).
    pub content: &'a MessageContent,
    /// This node's name in `X-Sluice-Org-Scan` (`scanner=`).
    pub scanner: &'a str,
    /// Bounds of the DLP scan, when a rule makes it run.
    pub scan_limits: &'a crate::scan::ScanLimits,
    /// SPF/DKIM/DMARC/ARC results, when the message was checked.
    pub auth: Option<&'a crate::auth::AuthSummary>,
}

/// Decides what the message becomes.
pub fn plan(policy: &Policy, input: &PlanInput<'_>) -> Plan {
    let base = input.base;
    let recipients: Vec<Address> = base.recipients.iter().map(|r| r.address.clone()).collect();
    let facts = MessageFacts::new(
        policy,
        input.classification,
        input.sender_in_organization,
        input.peer,
        &base.from,
        &recipients,
        input.content.original(),
    )
    .with_added_fields(input.content.added_fields().unwrap_or_default())
    .with_scan_limits(input.scan_limits.clone())
    .with_auth(input.auth);
    let evaluation = rules::evaluate(&policy.rules, &facts);
    let mut plan = Plan {
        refused: refused_entirely(&evaluation.effects),
        ..Plan::default()
    };
    if plan.refused.is_some() {
        plan.evaluation = evaluation;
        plan.scan_summary = facts.scan_if_run().map(crate::scan::summary);
        return plan;
    }
    let reroutes = rule_loop_count(input.content.header());
    for copy in group(evaluation.effects.clone()) {
        for text in &copy.effects.notify_sender {
            if !plan.notices.contains(text) {
                plan.notices.push(text.clone());
            }
        }
        match &copy.effects.disposition {
            Disposition::Reject { reply, .. } => {
                plan.failed
                    .extend(copy.indexes.iter().map(|&i| (i, reply.clone())));
                continue;
            }
            Disposition::Delete { rule } => {
                plan.deleted
                    .extend(copy.indexes.iter().map(|&i| (i, rule.clone())));
                continue;
            }
            Disposition::Deliver | Disposition::Quarantine { .. } => {}
        }
        let reroutes_here = copy.effects.route_via.is_some() || copy.effects.redirect_to.is_some();
        if reroutes_here && reroutes >= MAX_RULE_REROUTES {
            let reply = Reply::new(550, [5, 7, 128], "Message rejected: mail flow rule loop detected");
            plan.failed
                .extend(copy.indexes.iter().map(|&i| (i, reply.clone())));
            continue;
        }
        let mut edits: Vec<HeaderEdit> = copy
            .effects
            .edits
            .iter()
            .map(|edit| match edit {
                HeaderEdit::StampScan => HeaderEdit::Set {
                    name: crate::scan::SCAN_HEADER.into(),
                    value: crate::scan::stamp(facts.scan(), input.scanner),
                },
                other => other.clone(),
            })
            .collect();
        if reroutes_here {
            edits.push(HeaderEdit::Set {
                name: RULE_LOOP_HEADER.into(),
                value: (reroutes + 1).to_string(),
            });
        }
        // One header section per copy; the body stays where it is.
        let content = if edits.is_empty() {
            input.content.clone()
        } else {
            input
                .content
                .with_header(rules::edit_header(input.content.header(), &edits))
        };
        let recipients = copy_recipients(policy, base, &copy, &mut plan.notes);
        let quarantined_by = match &copy.effects.disposition {
            Disposition::Quarantine { rule } => Some(rule.clone()),
            _ => None,
        };
        plan.copies.push(PlannedCopy {
            recipients,
            content,
            quarantined_by,
            edits,
        });
    }
    plan.evaluation = evaluation;
    plan.scan_summary = facts.scan_if_run().map(crate::scan::summary);
    plan
}

/// Recipients of one copy (redirected and bcc'd) and their routes: a
/// rule's connector, else the route chosen at RCPT.
fn copy_recipients(
    policy: &Policy,
    base: &QueueEntry,
    copy: &Copy,
    notes: &mut Vec<String>,
) -> Vec<QueuedRecipient> {
    let rule_route = copy.effects.route_via.as_deref().and_then(|name| {
        let connector = policy.outbound_connector(name);
        if connector.is_none() {
            notes.push(format!(
                "rule connector {name:?} is missing or disabled; normal routing used"
            ));
        }
        connector.map(Route::from)
    });
    let fresh = |address: &Address| {
        QueuedRecipient::new(
            &crate::message::EnvelopeRecipient {
                address: address.clone(),
                notify: crate::message::Notify::Default,
                orcpt: None,
            },
            crate::route::route(&policy.routing, address.domain()).unwrap_or(Route::Mx),
            base.received_at_ms,
        )
    };
    let mut recipients: Vec<QueuedRecipient> = match &copy.effects.redirect_to {
        Some(targets) => targets.iter().map(fresh).collect(),
        None => copy.indexes.iter().map(|&i| base.recipients[i].clone()).collect(),
    };
    for extra in &copy.effects.bcc {
        if !recipients.iter().any(|r| &r.address == extra) {
            recipients.push(fresh(extra));
        }
    }
    if let Some(route) = &rule_route {
        for r in &mut recipients {
            r.route = route.clone();
        }
    }
    recipients
}

/// Recipients whose effects allow one shared copy.
struct Copy {
    effects: Effects,
    indexes: Vec<usize>,
}

/// The reply when rules refuse every recipient.
fn refused_entirely(effects: &[Effects]) -> Option<Reply> {
    let mut first = None;
    for e in effects {
        match &e.disposition {
            Disposition::Reject { reply, .. } => {
                first.get_or_insert_with(|| reply.clone());
            }
            _ => return None,
        }
    }
    first
}

fn group(effects: Vec<Effects>) -> Vec<Copy> {
    let mut copies: Vec<Copy> = Vec::new();
    for (i, e) in effects.into_iter().enumerate() {
        match copies.iter_mut().find(|c| c.effects.same_copy(&e)) {
            Some(copy) => {
                copy.indexes.push(i);
                for extra in e.bcc {
                    if !copy.effects.bcc.contains(&extra) {
                        copy.effects.bcc.push(extra);
                    }
                }
                for text in e.notify_sender {
                    if !copy.effects.notify_sender.contains(&text) {
                        copy.effects.notify_sender.push(text);
                    }
                }
            }
            None => copies.push(Copy {
                effects: e,
                indexes: vec![i],
            }),
        }
    }
    copies
}

fn rule_loop_count(header: &[u8]) -> u32 {
    crate::message::header::fields(header)
        .iter()
        .filter(|field| field.is(RULE_LOOP_HEADER))
        .filter_map(|field| field.value().parse::<u32>().ok())
        .max()
        .unwrap_or(0)
}
