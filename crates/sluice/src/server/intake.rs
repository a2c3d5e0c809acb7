//! The pipeline behind a session, run before the final reply to DATA:
//! header firewall, mail flow rules, copies per rule outcome, durable
//! enqueue, trace. A rule's reject of every recipient is an in-session 5xx;
//! nothing is acknowledged before the queue has committed it.
//!
//! Content work (MIME parsing, the DLP scan, rule evaluation, header edits)
//! runs on the blocking pool, at most [`Pipeline::content_slots`] messages at
//! a time, never on the runtime threads that serve SMTP sessions and the
//! admin API: a message that is expensive to look at delays its own reply,
//! not other clients' greetings. Each scan runs under the node's
//! `[dlp] scan_budget`.

use crate::classify::header_firewall::strip_internal_headers;
use crate::classify::Classification;
use crate::message::{header_message_id, QueueId, Reply};
use crate::policy::Policy;
use crate::queue::{
    self, Acceptance, ContentMemory, DsnAction, DsnRecipient, Hold, QuarantineEntry, Queue, QueueEntry,
    QueuedRecipient, RecipientStatus, Source,
};
use crate::receive::relay_control::sender_in_organization;
use crate::receive::{Intake, Refusal, Submission};
use crate::route::{NextHop, Route};
use crate::rules::plan::{self, PlanInput};
use crate::scan::ScanLimits;
use crate::trace::{now_ms, TraceEvent, TraceKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// Accepts complete messages from sessions into the queue.
pub struct Pipeline {
    /// The spool.
    pub queue: Queue,
    /// Current objects.
    pub policy: watch::Receiver<Arc<Policy>>,
    /// This node's name (`scanner=` in scan stamps).
    pub hostname: String,
    /// Bounds of one message's DLP scan (`[dlp] scan_budget`).
    pub scan_limits: ScanLimits,
    /// Messages whose content is being worked on at once (the size of the
    /// content pool); others wait their turn without holding a thread.
    pub content_slots: Arc<Semaphore>,
    /// Content held in memory from loading a message to its commit.
    pub memory: ContentMemory,
    /// Mail authentication (SPF, DKIM, DMARC, ARC; signing and sealing).
    pub auth: Option<Arc<crate::auth::Authenticator>>,
}

/// What the content work decided: the final reply now, or what to commit.
enum Decision {
    Refused(Reply),
    Accept(Box<Acceptance>, QueueId),
}

/// The content work's view of the node: owned, so it can leave the
/// runtime thread.
struct ContentWork {
    queue: Queue,
    policy: Arc<Policy>,
    hostname: String,
    scan_limits: ScanLimits,
    auth: Option<Arc<crate::auth::Authenticator>>,
    content_slots: Arc<Semaphore>,
}

impl Pipeline {
    /// Concurrent content jobs for this machine: one per core, so a burst
    /// of heavy messages uses the cores without queueing threads behind
    /// each other's locks.
    pub fn default_content_slots() -> usize {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    }

    async fn take(&self, submission: Submission) -> Reply {
        // Held until the commit: the loaded content and its copies live
        // until the store has written them.
        let _memory = self.memory.reserve(submission.content.len() as u64).await;
        let Ok(slot) = self.content_slots.clone().acquire_owned().await else {
            return Reply::new(451, [4, 3, 0], "Temporary local problem, try again later");
        };
        let work = ContentWork {
            queue: self.queue.clone(),
            policy: self.policy.borrow().clone(),
            hostname: self.hostname.clone(),
            scan_limits: self.scan_limits.clone(),
            auth: self.auth.clone(),
            content_slots: self.content_slots.clone(),
        };
        let decided = tokio::task::spawn_blocking(move || {
            let id = submission.id.clone();
            let size = submission.content.len();
            let started = std::time::Instant::now();
            tracing::debug!(id = %id, size, "content work started");
            let decision = work.decide(submission, slot);
            tracing::debug!(id = %id, elapsed_ms = started.elapsed().as_millis() as u64, "content work done");
            decision
        })
        .await;
        match decided {
            Ok(Decision::Refused(reply)) => reply,
            Ok(Decision::Accept(acceptance, id)) => match self.queue.accept(*acceptance).await {
                Ok(()) => Reply::new(250, [2, 0, 0], format!("Ok: queued as {id}")),
                Err(error) => {
                    tracing::error!(error = %error, "cannot queue message");
                    Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
                }
            },
            Err(error) => {
                // A panic in content work fails this message only, and
                // the client may try again.
                tracing::error!(error = %error, "content work failed");
                Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
            }
        }
    }
}

impl ContentWork {
    /// Firewall, authentication, rules and copies for one message, on a
    /// blocking thread, holding `slot` for the CPU-bound parts only.
    fn decide(&self, submission: Submission, slot: tokio::sync::OwnedSemaphorePermit) -> Decision {
        let mut slot = Some(slot);
        let Submission {
            id,
            session,
            classification,
            envelope,
            routes,
            content,
        } = submission;
        let content = match content.into_bytes() {
            Ok(content) => content,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the spooled message");
                return Decision::Refused(Reply::new(
                    451,
                    [4, 3, 0],
                    "Temporary local problem, try again later",
                ));
            }
        };
        let policy = &self.policy;
        let content = if retains_internal_headers(policy, &classification) {
            content
        } else {
            let stripped = strip_internal_headers(&content).0;
            // The received form is not needed again: free it now rather
            // than at the end of the work, so one copy is held, not two.
            drop(content);
            stripped
        };
        // SPEC section 9: mail from the organisation's own servers is not
        // judged; everything else is, before any rule looks at it. A node
        // that seals checks everything it relays: its seal carries what it
        // saw.
        let internal = matches!(classification, Classification::Internal { .. });
        let auth = self.auth.as_deref().filter(|a| !internal || a.seals());
        let original = match auth {
            Some(auth) => crate::auth::remove_forged_results(&content, auth.hostname()),
            None => content,
        };
        let message = auth.and(crate::auth::parse(&original));
        let mail_from = envelope.mail_from.to_string();
        let checked = match (auth, &message) {
            (Some(auth), Some(message)) => {
                let (ip, helo) = crate::auth::hop_before_connector(
                    policy,
                    classification.connector(),
                    session.peer.ip(),
                    &original,
                )
                .unwrap_or_else(|| (session.peer.ip(), session.helo.clone()));
                let facts = crate::auth::Envelope {
                    ip,
                    helo: &helo,
                    mail_from: &mail_from,
                };
                // DNS answers can be slow (a sender may make them so): the
                // wait gives the content slot back, so it never holds up
                // other messages' content work.
                drop(slot.take());
                let runtime = tokio::runtime::Handle::current();
                let checked = runtime.block_on(tokio::time::timeout(
                    crate::auth::CHECK_TIMEOUT,
                    auth.check(message, &facts),
                ));
                match runtime.block_on(self.content_slots.clone().acquire_owned()) {
                    Ok(permit) => slot = Some(permit),
                    Err(_) => {
                        return Decision::Refused(Reply::new(
                            451,
                            [4, 3, 0],
                            "Temporary local problem, try again later",
                        ))
                    }
                }
                match checked {
                    Ok(checked) => Some(checked),
                    Err(_) => {
                        tracing::warn!(id = %id, "sender authentication timed out");
                        return Decision::Refused(Reply::new(
                            451,
                            [4, 4, 3],
                            "Sender authentication timed out (DNS); try again later",
                        ));
                    }
                }
            }
            _ => None,
        };
        let content: std::borrow::Cow<'_, [u8]> = match &checked {
            Some(checked) => [checked.header.as_bytes(), &original].concat().into(),
            None => original.as_slice().into(),
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
        let verdict = checked.as_ref().map(|c| &c.summary);
        let auth_note = verdict.map_or_else(String::new, |v| format!(" {}", v.describe()));
        let mut events = vec![queue::event(
            &base,
            TraceKind::Received,
            None,
            Some(session.peer.to_string()),
            Some(format!(
                "helo={} {tls} size={}{auth_note}",
                session.helo, base.size
            )),
        )];
        let mut dmarc_hold = None;
        if let (Some(auth), Some(verdict), false) = (auth, verdict, internal) {
            match verdict.disposition(&auth.settings) {
                crate::auth::Disposition::Accept => {}
                crate::auth::Disposition::Quarantine(reason) => dmarc_hold = Some(reason),
                crate::auth::Disposition::Reject(reply) => {
                    events.push(queue::event(
                        &base,
                        TraceKind::Rejected,
                        None,
                        None,
                        Some(reply.to_string()),
                    ));
                    self.queue.record(events);
                    return Decision::Refused(reply);
                }
            }
        }

        let plan = plan::plan(
            policy,
            &PlanInput {
                classification: &classification,
                sender_in_organization: sender_in_organization(policy, &classification, &base.from),
                peer: session.peer.ip(),
                base: &base,
                content: &content,
                scanner: &self.hostname,
                scan_limits: &self.scan_limits,
                auth: verdict,
            },
        );
        for m in &plan.evaluation.matches {
            let who: Vec<&str> = m
                .recipients
                .iter()
                .map(|&i| base.recipients[i].address.local())
                .collect();
            let actions = if m.audit {
                " (audit: no action taken)".to_string()
            } else {
                let rule = policy.rules.iter().find(|r| r.name == m.rule);
                let list: Vec<String> = rule
                    .map(|r| r.actions.iter().map(|a| a.describe()).collect())
                    .unwrap_or_default();
                format!("; actions: {}", list.join(", "))
            };
            let detail = format!(
                "rule {:?} matched for {} recipient(s): {}{actions}",
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
        if let Some(summary) = &plan.scan_summary {
            events.push(queue::event(
                &base,
                TraceKind::Scanned,
                None,
                None,
                Some(summary.clone()),
            ));
        }
        if let Some(reply) = plan.refused {
            events.push(queue::event(
                &base,
                TraceKind::Rejected,
                None,
                None,
                Some(reply.to_string()),
            ));
            self.queue.record(events);
            return Decision::Refused(reply);
        }
        for note in &plan.notes {
            events.push(queue::event(
                &base,
                TraceKind::Routed,
                None,
                None,
                Some(note.clone()),
            ));
        }
        let mut acceptance = Acceptance::default();
        for (n, copy) in plan.copies.into_iter().enumerate() {
            let mut entry = base.clone();
            entry.id = if n == 0 { id.clone() } else { QueueId::generate() };
            entry.recipients = copy.recipients;
            let content = match self.auth.as_deref() {
                Some(auth) => {
                    let to: Vec<_> = entry.recipients.iter().map(|r| r.address.clone()).collect();
                    auth.outgoing(policy, copy.content, &to, checked.as_ref())
                }
                None => copy.content,
            };
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
            let held_by = copy
                .quarantined_by
                .or_else(|| dmarc_hold.as_ref().map(|_| "DMARC".to_string()));
            match held_by {
                Some(rule) => {
                    events.push(queue::event(
                        &entry,
                        TraceKind::Quarantined,
                        None,
                        None,
                        Some(format!("quarantined by rule {rule:?}")),
                    ));
                    let reason = match (&dmarc_hold, &plan.scan_summary) {
                        (Some(why), _) if rule == "DMARC" => why.clone(),
                        (_, Some(s)) => format!("rule {rule:?}: {s}"),
                        _ => format!("rule {rule:?}"),
                    };
                    let held = QuarantineEntry {
                        entry,
                        reason,
                        rule,
                        quarantined_at_ms: now,
                    };
                    acceptance.quarantined.push((held, content));
                }
                None => acceptance.queued.push((entry, content)),
            }
        }
        for (i, rule) in &plan.deleted {
            let detail = format!("deleted by rule {rule:?}");
            events.push(queue::event(
                &base,
                TraceKind::Deleted,
                Some(base.recipients[*i].address.to_string()),
                None,
                Some(detail),
            ));
        }
        if !plan.failed.is_empty() {
            let failed: Vec<DsnRecipient> = plan
                .failed
                .iter()
                .map(|(i, reply)| dsn_recipient(&base.recipients[*i], reply))
                .collect();
            for (i, reply) in &plan.failed {
                events.push(queue::event(
                    &base,
                    TraceKind::Bounced,
                    Some(base.recipients[*i].address.to_string()),
                    None,
                    Some(reply.to_string()),
                ));
            }
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
        for text in &plan.notices {
            if let Some(notice) = self.queue.sender_notice(&base, &content, text) {
                let detail = format!("notice queued as {}", notice.0.id);
                events.push(queue::event(
                    &base,
                    TraceKind::SenderNotified,
                    Some(base.from.to_string()),
                    None,
                    Some(detail),
                ));
                acceptance.queued.push(notice);
            }
        }
        acceptance.events = events;
        drop(slot);
        Decision::Accept(Box::new(acceptance), id)
    }
}

fn retains_internal_headers(policy: &Policy, classification: &Classification) -> bool {
    classification
        .connector()
        .and_then(|name| policy.inbound.iter().find(|c| c.name == name))
        .is_some_and(|c| c.retain_internal_headers)
}

fn dsn_recipient(r: &QueuedRecipient, reply: &Reply) -> DsnRecipient {
    DsnRecipient {
        address: r.address.clone(),
        orcpt: r.orcpt.clone(),
        status: DsnAction::Failed.status(reply),
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

    fn refused(&self, refusal: Refusal) {
        let to = refusal.to.as_ref().map(ToString::to_string);
        tracing::info!(
            client = %refusal.peer,
            connector = refusal.connector.as_deref().unwrap_or("-"),
            from = %refusal.from,
            to = to.as_deref().unwrap_or("-"),
            reply = %refusal.reply,
            "refused"
        );
        self.queue.record(vec![TraceEvent {
            at_ms: now_ms(),
            kind: TraceKind::Rejected,
            queue_id: refusal.id,
            message_id: None,
            from: refusal.from.to_string(),
            to,
            connector: refusal.connector,
            remote_host: Some(refusal.peer.to_string()),
            detail: Some(refusal.reply.to_string()),
        }]);
    }
}
