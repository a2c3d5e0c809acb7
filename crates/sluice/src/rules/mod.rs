//! Stage 3: mail flow rules (Exchange transport rules). Every message, after
//! classification and before the final reply to DATA, runs the enabled
//! rules in priority order (lower first).
//!
//! Semantics: all conditions must hold; any exception holding cancels the
//! rule; `stop_processing` ends evaluation; `audit` records the match and
//! changes nothing. Recipient conditions (`sent_to`, `recipient_domain_is`,
//! `sent_to_scope`) are evaluated per recipient, so one message can take
//! different actions for different recipients (bifurcation): the result is
//! one [`Effects`] per recipient, which the caller groups into copies.
//!
//! Pure: no I/O. The message content is parsed once, and only when a rule
//! looks at headers, subject, body or attachments.

mod condition;
mod edit;
mod effects;
pub mod plan;

pub use condition::{Condition, MessageFacts};
pub use edit::{apply_edits, edit_header};
pub use effects::{Disposition, Effects, HeaderEdit};

use crate::config::objects::{ObjectError, OutboundConnectorObject};
use crate::config::rule_object::{RuleMode, RuleObject};
use crate::message::{Address, Reply};
use serde::Serialize;

/// One action, in the order [`Rule::actions`] applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Refuse (in session when every recipient is refused).
    Reject(Reply),
    /// Drop silently.
    Delete,
    /// Hold in quarantine.
    Quarantine,
    /// Replace the matching recipients.
    RedirectTo(Vec<Address>),
    /// Add hidden recipients.
    Bcc(Vec<Address>),
    /// Route through this outbound connector.
    RouteVia(String),
    /// Header changes.
    Edit(HeaderEdit),
    /// Notice to the envelope sender.
    NotifySender(String),
}

impl Action {
    /// The action as its config key (and value), for the trace.
    pub fn describe(&self) -> String {
        match self {
            Action::Reject(reply) => format!("reject ({reply})"),
            Action::Delete => "delete".into(),
            Action::Quarantine => "quarantine".into(),
            Action::RedirectTo(to) => {
                format!(
                    "redirect_to {}",
                    to.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )
            }
            Action::Bcc(to) => format!(
                "bcc {}",
                to.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Action::RouteVia(connector) => format!("route_via_connector {connector:?}"),
            Action::Edit(HeaderEdit::Remove(name)) => format!("remove_header {name}"),
            Action::Edit(HeaderEdit::Set { name, value }) => format!("set_header {name}: {value}"),
            Action::Edit(HeaderEdit::PrependSubject(prefix)) => format!("prepend_subject {prefix:?}"),
            Action::Edit(HeaderEdit::StampScan) => "stamp_scan".into(),
            Action::NotifySender(_) => "notify_sender".into(),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Lower runs first.
    pub priority: u32,
    /// Enforce or audit.
    pub mode: RuleMode,
    /// Stop after this rule when it matches.
    pub stop_processing: bool,
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// Any one cancels.
    pub exceptions: Vec<Condition>,
    /// In application order.
    pub actions: Vec<Action>,
}

/// A rule that matched, for the trace (`audit` matches included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    /// Rule name.
    pub rule: String,
    /// Whether its actions applied.
    pub audit: bool,
    /// Indexes of the recipients it matched.
    pub recipients: Vec<usize>,
}

/// The outcome of evaluation.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Matches in evaluation order.
    pub matches: Vec<RuleMatch>,
    /// Effects per envelope recipient, same order.
    pub effects: Vec<Effects>,
}

/// Checks every `[[rule]]` (names unique, ignoring case) against the
/// objects rules may name: outbound connectors (`route_via_connector`,
/// enabled or not) and the scanner's detectors (`contains_sensitive_info`).
/// Returns the rules in object order, enabled or not: which are in force
/// is the caller's choice; [`evaluation_order`] sorts those.
pub fn compile(
    objects: &[RuleObject],
    connectors: &[OutboundConnectorObject],
    scanner: &crate::scan::Scanner,
) -> Result<Vec<Rule>, ObjectError> {
    let mut names = std::collections::HashSet::new();
    objects
        .iter()
        .map(|r| {
            // Detector names: a built-in's or a `[[detector]]`'s.
            let named = [&r.conditions, &r.exceptions]
                .into_iter()
                .filter_map(|p| p.contains_sensitive_info.as_ref())
                .flat_map(|info| &info.detectors);
            for d in named {
                if d.parse::<sluice_dlp::Detector>().is_err() && !scanner.names().any(|n| n == d) {
                    return Err(ObjectError {
                        kind: "rule",
                        name: r.name.clone(),
                        key: "contains_sensitive_info",
                        message: format!(
                            "detectors: unknown detector `{d}` (neither built in nor a [[detector]])"
                        ),
                    });
                }
            }
            if !names.insert(r.name.to_ascii_lowercase()) {
                return Err(ObjectError {
                    kind: "rule",
                    name: r.name.clone(),
                    key: "name",
                    message: "defined twice".into(),
                });
            }
            Rule::from_object(r, connectors)
        })
        .collect()
}

/// Sorts rules into evaluation order: priority, then name.
pub fn evaluation_order(rules: &mut [Rule]) {
    rules.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
}

impl Rule {
    /// Validates a `[[rule]]` against the outbound connectors it may name.
    pub fn from_object(
        object: &RuleObject,
        connectors: &[OutboundConnectorObject],
    ) -> Result<Rule, ObjectError> {
        let err = ObjectError::of("rule", &object.name);
        if object.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let conditions = condition::compile(&object.conditions).map_err(|(key, m)| err(key, m))?;
        let exceptions = condition::compile(&object.exceptions).map_err(|(key, m)| err(key, m))?;
        let a = &object.actions;
        let mut actions = Vec::new();
        if let Some(reject) = &a.reject {
            actions.push(Action::Reject(
                effects::reject_reply(&reject.code, &reject.text).map_err(|m| err("actions.reject", m))?,
            ));
        }
        if a.delete {
            actions.push(Action::Delete);
        }
        if a.quarantine {
            actions.push(Action::Quarantine);
        }
        let addresses = |key: &'static str, list: &[String]| {
            list.iter()
                .map(|s| Address::parse(s).map_err(|e| err(key, e.to_string())))
                .collect::<Result<Vec<_>, _>>()
        };
        if !a.redirect_to.is_empty() {
            actions.push(Action::RedirectTo(addresses(
                "actions.redirect_to",
                &a.redirect_to,
            )?));
        }
        if !a.bcc.is_empty() {
            actions.push(Action::Bcc(addresses("actions.bcc", &a.bcc)?));
        }
        if let Some(name) = &a.route_via_connector {
            let connector = connectors.iter().find(|c| &c.name == name).ok_or_else(|| {
                err(
                    "actions.route_via_connector",
                    format!("no outbound connector named {name:?}"),
                )
            })?;
            actions.push(Action::RouteVia(connector.name.clone()));
        }
        if let Some(name) = &a.remove_header {
            actions.push(Action::Edit(HeaderEdit::Remove(
                edit::header_name(name).map_err(|m| err("actions.remove_header", m))?,
            )));
        }
        if let Some(set) = &a.set_header {
            let name = edit::header_name(&set.header).map_err(|m| err("actions.set_header", m))?;
            if set.value.contains(['\r', '\n']) {
                return Err(err("actions.set_header", "the value must be one line".into()));
            }
            actions.push(Action::Edit(HeaderEdit::Set {
                name,
                value: set.value.clone(),
            }));
        }
        if let Some(prefix) = &a.prepend_subject {
            if prefix.contains(['\r', '\n']) {
                return Err(err("actions.prepend_subject", "must be one line".into()));
            }
            actions.push(Action::Edit(HeaderEdit::PrependSubject(prefix.clone())));
        }
        if a.stamp_scan {
            actions.push(Action::Edit(HeaderEdit::StampScan));
        }
        if let Some(text) = &a.notify_sender {
            actions.push(Action::NotifySender(text.clone()));
        }
        if actions.is_empty() && object.mode == RuleMode::Enforce {
            return Err(err("actions", "a rule needs at least one action".into()));
        }
        Ok(Rule {
            name: object.name.clone(),
            priority: object.priority,
            mode: object.mode,
            stop_processing: object.stop_processing,
            conditions,
            exceptions,
            actions,
        })
    }
}

/// Runs the rules (already in priority order) over a message.
pub fn evaluate(rules: &[Rule], facts: &MessageFacts<'_>) -> Evaluation {
    let count = facts.recipients.len();
    let mut effects = vec![Effects::default(); count];
    let mut stopped = vec![false; count];
    let mut matches = Vec::new();
    for rule in rules {
        let matched = matching_recipients(rule, facts, &stopped);
        if matched.is_empty() {
            continue;
        }
        let audit = rule.mode == RuleMode::Audit;
        for &i in &matched {
            // Audit changes nothing, not even which rules run next.
            if audit {
                continue;
            }
            effects[i].apply(&rule.name, &rule.actions);
            if rule.stop_processing || effects[i].is_final() {
                stopped[i] = true;
            }
        }
        matches.push(RuleMatch {
            rule: rule.name.clone(),
            audit,
            recipients: matched,
        });
    }
    Evaluation { matches, effects }
}

/// The recipients (not stopped) that `rule` applies to. Recipient
/// conditions are tested per recipient; message conditions (content,
/// sender, client) once for the message, and only when some recipient is
/// still in play, so a costly content test never runs for nothing and never
/// runs once per recipient.
fn matching_recipients(rule: &Rule, facts: &MessageFacts<'_>, stopped: &[bool]) -> Vec<usize> {
    let per_recipient = |conditions: &[Condition], i: usize, all: bool| {
        let mut tested = conditions.iter().filter(|c| c.is_per_recipient());
        if all {
            tested.all(|c| c.holds(facts, i))
        } else {
            tested.any(|c| c.holds(facts, i))
        }
    };
    let candidates: Vec<usize> = (0..stopped.len())
        .filter(|&i| !stopped[i])
        .filter(|&i| per_recipient(&rule.conditions, i, true))
        .collect();
    if candidates.is_empty()
        || !rule
            .conditions
            .iter()
            .filter(|c| !c.is_per_recipient())
            .all(|c| c.holds_for_message(facts))
    {
        return Vec::new();
    }
    let remaining: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| !per_recipient(&rule.exceptions, i, false))
        .collect();
    if remaining.is_empty()
        || rule
            .exceptions
            .iter()
            .filter(|c| !c.is_per_recipient())
            .any(|c| c.holds_for_message(facts))
    {
        return Vec::new();
    }
    remaining
}

/// Why `rule` did not act on recipient `index`, for `route explain`:
/// the first condition that fails or the exception that holds.
pub fn why_not(rule: &Rule, facts: &MessageFacts<'_>, index: usize) -> String {
    if let Some(c) = rule.conditions.iter().find(|c| !c.holds(facts, index)) {
        return format!("condition not met: {}", c.describe());
    }
    if let Some(e) = rule.exceptions.iter().find(|e| e.holds(facts, index)) {
        return format!("exception holds: {}", e.describe());
    }
    "an earlier rule stopped processing (or refused the recipient)".to_string()
}

#[cfg(test)]
mod tests;
