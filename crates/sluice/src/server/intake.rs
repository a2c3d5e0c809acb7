//! The pipeline behind a session, run before the final reply to DATA:
//! header firewall, mail flow rules, copies per rule outcome, durable
//! enqueue, trace. A rule's reject of every recipient is an in-session 5xx;
//! nothing is acknowledged before the queue has committed it.

use crate::classify::header_firewall::strip_internal_headers;
use crate::classify::Classification;
use crate::config::objects::Policy;
use crate::message::{header_message_id, Address, QueueId, Reply};
use crate::queue::{
    self, Acceptance, DsnRecipient, Hold, QuarantineEntry, Queue, QueueEntry, QueuedRecipient,
    RecipientStatus, Source,
};
use crate::receive::relay_control::may_relay;
use crate::receive::{Intake, Submission};
use crate::route::{NextHop, Route};
use crate::rules::{self, Disposition, Effects, HeaderEdit, MessageFacts};
use crate::trace::{now_ms, TraceEvent, TraceKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

/// Counts rule-driven reroutes (SPEC section 5); past this, a loop.
const RULE_LOOP_HEADER: &str = "X-Sluice-Org-Rule-Loop";
const MAX_RULE_REROUTES: u32 = 3;

/// Accepts complete messages from sessions into the queue.
pub struct Pipeline {
    /// The spool.
    pub queue: Queue,
    /// Current objects.
    pub policy: watch::Receiver<Arc<Policy>>,
}

/// Recipients of one copy: they share content, route choice and fate.
struct Copy {
    effects: Effects,
    indexes: Vec<usize>,
}

impl Pipeline {
    async fn take(&self, submission: Submission) -> Reply {
        let Submission {
            id,
            session,
            classification,
            envelope,
            routes,
            content,
        } = submission;
        let policy = self.policy.borrow().clone();
        let content = if retains_internal_headers(&policy, &classification) {
            content
        } else {
            strip_internal_headers(&content).0
        };
        let now = now_ms();
        let base = QueueEntry {
            id: id.clone(),
            message_id: header_message_id(&content),
            from: envelope.mail_from.clone(),
            body: envelope.body,
            smtputf8: envelope.smtputf8,
            ret: envelope.ret,
            envid: envelope.envid.clone(),
            recipients: envelope
                .recipients
                .iter()
                .zip(routes)
                .map(|(r, route)| QueuedRecipient {
                    address: r.address.clone(),
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                    route,
                    status: RecipientStatus::Queued { due_ms: now },
                    attempts: 0,
                })
                .collect(),
            size: content.len() as u64,
            received_at_ms: now,
            expires_at_ms: self.queue.expiry_from(now),
            hold: Hold::Active,
            source: Source {
                peer: session.peer.ip().to_string(),
                helo: session.helo.clone(),
                connector: classification.connector().map(str::to_string),
            },
        };
        let tls = session
            .tls
            .as_ref()
            .map_or_else(|| "no TLS".to_string(), |t| format!("{} {}", t.version, t.cipher));
        let mut events = vec![queue::event(
            &base,
            TraceKind::Received,
            None,
            Some(session.peer.to_string()),
            Some(format!("helo={} {tls} size={}", session.helo, base.size)),
        )];

        let recipients: Vec<Address> = base.recipients.iter().map(|r| r.address.clone()).collect();
        let sender_in_organization = matches!(classification, Classification::Internal { .. })
            && may_relay(&policy, &classification, &envelope.mail_from);
        let evaluation = {
            let facts = MessageFacts::new(
                &policy,
                &classification,
                sender_in_organization,
                session.peer.ip(),
                &envelope.mail_from,
                &recipients,
                &content,
            );
            rules::evaluate(&policy.rules, &facts)
        };
        for m in &evaluation.matches {
            let who: Vec<&str> = m.recipients.iter().map(|&i| recipients[i].local()).collect();
            let mode = if m.audit { " (audit: no action taken)" } else { "" };
            let detail = format!(
                "rule {:?} matched{mode} for {} recipient(s): {}",
                m.rule,
                who.len(),
                who.join(", ")
            );
            events.push(queue::event(
                &base,
                TraceKind::RuleMatched,
                None,
                None,
                Some(detail),
            ));
        }

        if let Some(reply) = refused_entirely(&evaluation.effects) {
            events.push(queue::event(
                &base,
                TraceKind::Rejected,
                None,
                None,
                Some(reply.to_string()),
            ));
            self.queue.record(events);
            return reply;
        }

        let mut acceptance = Acceptance::default();
        let mut failed: Vec<DsnRecipient> = Vec::new();
        let mut notices: Vec<String> = Vec::new();
        let reroutes = rule_loop_count(&content);
        for (n, copy) in group(evaluation.effects).into_iter().enumerate() {
            for text in &copy.effects.notify_sender {
                if !notices.contains(text) {
                    notices.push(text.clone());
                }
            }
            match &copy.effects.disposition {
                Disposition::Reject { rule, reply } => {
                    for &i in &copy.indexes {
                        failed.push(dsn_recipient(&base.recipients[i], reply));
                        let detail = format!("rejected by rule {rule:?}: {reply}");
                        events.push(queue::event(
                            &base,
                            TraceKind::Bounced,
                            Some(recipients[i].to_string()),
                            None,
                            Some(detail),
                        ));
                    }
                    continue;
                }
                Disposition::Delete { rule } => {
                    for &i in &copy.indexes {
                        let detail = format!("deleted by rule {rule:?}");
                        events.push(queue::event(
                            &base,
                            TraceKind::Deleted,
                            Some(recipients[i].to_string()),
                            None,
                            Some(detail),
                        ));
                    }
                    continue;
                }
                Disposition::Deliver | Disposition::Quarantine { .. } => {}
            }
            let reroutes_here = copy.effects.route_via.is_some() || copy.effects.redirect_to.is_some();
            if reroutes_here && reroutes >= MAX_RULE_REROUTES {
                let reply = Reply::new(550, [5, 7, 128], "Message rejected: mail flow rule loop detected");
                for &i in &copy.indexes {
                    failed.push(dsn_recipient(&base.recipients[i], &reply));
                    events.push(queue::event(
                        &base,
                        TraceKind::Bounced,
                        Some(recipients[i].to_string()),
                        None,
                        Some(reply.to_string()),
                    ));
                }
                continue;
            }
            let mut edits = copy.effects.edits.clone();
            if reroutes_here {
                edits.push(HeaderEdit::Set {
                    name: RULE_LOOP_HEADER.into(),
                    value: (reroutes + 1).to_string(),
                });
            }
            let copy_content = rules::apply_edits(&content, &edits);
            let copy_id = if n == 0 { id.clone() } else { QueueId::generate() };
            let entry = self.copy_entry(&policy, &base, copy_id, &copy, &copy_content, &mut events);
            match &copy.effects.disposition {
                Disposition::Quarantine { rule } => {
                    let detail = format!("quarantined by rule {rule:?}");
                    events.push(queue::event(
                        &entry,
                        TraceKind::Quarantined,
                        None,
                        None,
                        Some(detail),
                    ));
                    let held = QuarantineEntry {
                        entry,
                        rule: rule.clone(),
                        quarantined_at_ms: now,
                        reason: format!("rule {rule:?}"),
                    };
                    acceptance.quarantined.push((held, copy_content));
                }
                _ => acceptance.queued.push((entry, copy_content)),
            }
        }
        if !failed.is_empty() {
            if let Some(report) = self.queue.failure_report(&base, &content, &failed) {
                events.push(queue::event(
                    &report.0,
                    TraceKind::Received,
                    None,
                    None,
                    Some(format!("failure report for {id}")),
                ));
                acceptance.queued.push(report);
            }
        }
        for text in notices {
            if let Some(notice) = self.queue.sender_notice(&base, &content, &text) {
                events.push(queue::event(
                    &base,
                    TraceKind::SenderNotified,
                    Some(base.from.to_string()),
                    None,
                    Some(format!("notice queued as {}", notice.0.id)),
                ));
                acceptance.queued.push(notice);
            }
        }
        acceptance.events = events;
        match self.queue.accept(acceptance).await {
            Ok(()) => Reply::new(250, [2, 0, 0], format!("Ok: queued as {id}")),
            Err(error) => {
                tracing::error!(error = %error, "cannot queue message");
                Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
            }
        }
    }

    /// The queue entry of one copy: its recipients (redirected and bcc'd)
    /// and their routes (a rule's connector, else the route chosen at RCPT).
    fn copy_entry(
        &self,
        policy: &Policy,
        base: &QueueEntry,
        id: QueueId,
        copy: &Copy,
        content: &[u8],
        events: &mut Vec<TraceEvent>,
    ) -> QueueEntry {
        let rule_route = copy.effects.route_via.as_deref().and_then(|name| {
            let connector = policy.outbound_connector(name).filter(|c| c.enabled);
            if connector.is_none() {
                let detail = format!("rule connector {name:?} is missing or disabled; normal routing used");
                events.push(queue::event(base, TraceKind::Routed, None, None, Some(detail)));
            }
            connector.map(Route::from)
        });
        let fresh = |address: &Address| QueuedRecipient {
            address: address.clone(),
            notify: crate::message::Notify::Default,
            orcpt: None,
            route: crate::route::route(policy, address.domain()).unwrap_or(Route::Mx),
            status: RecipientStatus::Queued {
                due_ms: base.received_at_ms,
            },
            attempts: 0,
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
        let mut entry = base.clone();
        entry.id = id;
        entry.recipients = recipients;
        entry.size = content.len() as u64;
        for r in &entry.recipients {
            let mut routed = queue::event(
                &entry,
                TraceKind::Routed,
                Some(r.address.to_string()),
                None,
                Some(describe_route(&r.route)),
            );
            routed.connector = r.route.connector().map(str::to_string);
            events.push(routed);
        }
        entry
    }
}

fn retains_internal_headers(policy: &Policy, classification: &Classification) -> bool {
    classification
        .connector()
        .and_then(|name| policy.inbound.iter().find(|c| c.name == name))
        .is_some_and(|c| c.retain_internal_headers)
}

/// The reply when rules refuse every recipient: the message is rejected in
/// session and nothing is queued.
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

/// Groups recipients whose effects allow one shared copy.
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

fn rule_loop_count(content: &[u8]) -> u32 {
    let headers = &content[..crate::message::header_section_len(content)];
    let text = String::from_utf8_lossy(headers);
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case(RULE_LOOP_HEADER))
        .filter_map(|(_, value)| value.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0)
}

fn dsn_recipient(r: &QueuedRecipient, reply: &Reply) -> DsnRecipient {
    DsnRecipient {
        address: r.address.clone(),
        orcpt: r.orcpt.clone(),
        status: reply.status_text(),
        diagnostic: format!("smtp; {reply}"),
        remote_mta: None,
    }
}

/// A route as one line of the trace.
pub fn describe_route(route: &Route) -> String {
    match route {
        Route::Connector {
            connector,
            next_hop: NextHop::SmartHosts(hosts),
            tls,
            ..
        } => {
            let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
            format!(
                "connector {connector:?} via {} tls={}",
                hosts.join(", "),
                tls.name()
            )
        }
        Route::Connector {
            connector,
            next_hop: NextHop::Mx,
            tls,
            ..
        } => {
            format!("connector {connector:?} via MX tls={}", tls.name())
        }
        Route::Mailbox => "local mailbox".to_string(),
        Route::Mx => "MX tls=opportunistic".to_string(),
    }
}

impl Intake for Pipeline {
    fn accept(&self, submission: Submission) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(self.take(submission))
    }
}
