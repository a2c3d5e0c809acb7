//! The pre-queue step around the plan: the header firewall
//! ([`inbound_content`]) and [`decide`], everything between the end of DATA
//! and the queue, as one pure function of its inputs.

use super::{plan, Plan, PlanInput};
use crate::auth::{Authenticator, Checked};
use crate::classify::header_firewall::strip_internal_headers;
use crate::classify::Classification;
use crate::message::{Envelope, MessageContent, QueueId, Reply};
use crate::policy::Policy;
use crate::queue::{
    self, Acceptance, DsnAction, DsnRecipient, QuarantineEntry, QueueEntry, QueuedRecipient, Source,
};
use crate::route::{NextHop, Route};
use crate::scan::ScanLimits;
use crate::trace::{TraceEvent, TraceKind};
use std::net::SocketAddr;

/// Whether the session's inbound connector keeps `X-Sluice-Org-*` headers.
pub fn retains_internal_headers(policy: &Policy, classification: &Classification) -> bool {
    classification
        .connector()
        .and_then(|name| policy.inbound.iter().find(|c| c.name == name))
        .is_some_and(|c| c.retain_internal_headers)
}

/// The message as the pipeline sees it: the inbound header firewall
/// (internal headers removed unless the connector retains them), then,
/// when the node judges the message (`forged_for` = this node's name),
/// `Authentication-Results` fields forged in that name removed. Returns the
/// content and the names of the internal fields removed.
///
/// Both read and rewrite the header section only, in the buffer the
/// message came in: the body is neither read nor copied here.
pub fn inbound_content(
    policy: &Policy,
    classification: &Classification,
    mut content: Vec<u8>,
    forged_for: Option<&str>,
) -> (MessageContent, Vec<String>) {
    let header_len = crate::message::header_section_len(&content);
    let header = &content[..header_len];
    let (firewalled, removed) = if retains_internal_headers(policy, classification) {
        (None, Vec::new())
    } else {
        let (kept, removed) = strip_internal_headers(header);
        (Some(kept).filter(|_| !removed.is_empty()), removed)
    };
    let checked = firewalled.as_deref().unwrap_or(header);
    let header = match forged_for {
        Some(hostname) => {
            let kept = crate::auth::remove_forged_results(checked, hostname);
            (kept.len() != checked.len()).then_some(kept).or(firewalled)
        }
        None => firewalled,
    };
    if let Some(header) = header {
        // Shorter than what it replaces: the body moves up in place.
        content.splice(..header_len, header);
    }
    (MessageContent::new(content), removed)
}

/// Reports the node writes itself while deciding (the queue makes them:
/// they carry its name and expiry).
pub trait Reports {
    /// A failure report for recipients refused before queueing; `None` for
    /// the null sender.
    fn failure_report(
        &self,
        entry: &QueueEntry,
        content: &[u8],
        recipients: &[DsnRecipient],
    ) -> Option<(QueueEntry, Vec<u8>)>;
    /// A rule's notice to the sender; `None` for the null sender.
    fn sender_notice(&self, entry: &QueueEntry, content: &[u8], text: &str) -> Option<(QueueEntry, Vec<u8>)>;
}

/// No reports (the dry run shows recipients' fates, not the reports).
pub struct NoReports;

impl Reports for NoReports {
    fn failure_report(&self, _: &QueueEntry, _: &[u8], _: &[DsnRecipient]) -> Option<(QueueEntry, Vec<u8>)> {
        None
    }
    fn sender_notice(&self, _: &QueueEntry, _: &[u8], _: &str) -> Option<(QueueEntry, Vec<u8>)> {
        None
    }
}

/// One arrived message, after the header firewall and the authentication
/// checks: the inputs of [`decide`] that come from the session.
pub struct Arrival<'a> {
    /// The spool id given at MAIL; the first copy keeps it.
    pub id: QueueId,
    /// Client address and port.
    pub peer: SocketAddr,
    /// EHLO name.
    pub helo: &'a str,
    /// `version cipher` of the session's TLS, when it had TLS.
    pub tls: Option<String>,
    /// Inbound connector decision.
    pub classification: &'a Classification,
    /// Sender, recipients and ESMTP parameters.
    pub envelope: &'a Envelope,
    /// One route per envelope recipient (decided at RCPT).
    pub routes: Vec<Route>,
    /// The content from [`inbound_content`].
    pub content: &'a MessageContent,
    /// SPF/DKIM/DMARC/ARC results, when the node checked the message.
    pub checked: Option<&'a Checked<'a>>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
    /// When undelivered recipients of a copy accepted now expire.
    pub expires_at_ms: u64,
}

/// The node's side of [`decide`].
pub struct Node<'a> {
    /// Current objects.
    pub policy: &'a Policy,
    /// This node's name in `X-Sluice-Org-Scan` (`scanner=`).
    pub scanner: &'a str,
    /// Bounds of the DLP scan, when a rule makes it run.
    pub scan_limits: &'a ScanLimits,
    /// Signing and sealing keys, and `[auth]` (DMARC enforcement).
    pub authenticator: Option<&'a Authenticator>,
    /// Where failure reports and sender notices come from.
    pub reports: &'a dyn Reports,
}

/// What one copy becomes.
#[derive(Debug)]
pub enum CopyFate {
    /// Queued for delivery, with its (edited, signed) content.
    Queued(QueueEntry, MessageContent),
    /// Held in quarantine (by a rule, or by DMARC).
    Quarantined(QuarantineEntry, MessageContent),
}

/// Everything an accepted message turns into.
#[derive(Debug, Default)]
pub struct Accepted {
    /// The copies, in plan order.
    pub copies: Vec<CopyFate>,
    /// Failure reports and sender notices.
    pub reports: Vec<(QueueEntry, Vec<u8>)>,
}

/// The final reply's side of a decision.
#[derive(Debug)]
pub enum Verdict {
    /// Refused in session with this reply; nothing is queued.
    Refused(Reply),
    /// Accepted: this is what to commit before the 250.
    Accepted(Accepted),
}

/// The decision of the pre-queue step.
#[derive(Debug)]
pub struct Decision {
    /// The message as first queued (recipients with their RCPT routes),
    /// before any rule acted: the indexes of `plan` refer to it.
    pub base: QueueEntry,
    /// The rules' plan, its copies moved into `verdict`.
    pub plan: Plan,
    /// Refused or accepted.
    pub verdict: Verdict,
    /// The trace of the decision, in order.
    pub events: Vec<TraceEvent>,
}

impl Accepted {
    /// What to commit: copies, quarantined copies and reports, with the
    /// trace events.
    pub fn into_acceptance(self, events: Vec<TraceEvent>) -> Acceptance {
        let mut acceptance = Acceptance {
            events,
            ..Acceptance::default()
        };
        for copy in self.copies {
            match copy {
                CopyFate::Queued(entry, content) => acceptance.queued.push((entry, content)),
                // Held copies are few, and read back whole on release.
                CopyFate::Quarantined(held, content) => acceptance.quarantined.push((held, content.to_vec())),
            }
        }
        acceptance.queued.extend(
            self.reports
                .into_iter()
                .map(|(entry, content)| (entry, content.into())),
        );
        acceptance
    }
}

/// The pre-queue step: everything between the end of DATA and the queue,
/// without I/O (SPEC sections 5 and 9). DMARC enforcement, the rules'
/// plan, per copy its routes, DKIM signature and ARC seal, quarantine,
/// and the reports to the sender.
pub fn decide(node: &Node<'_>, arrival: Arrival<'_>) -> Decision {
    let policy = node.policy;
    let classification = arrival.classification;
    let now = arrival.now_ms;
    let verdict = arrival.checked.map(|c| &c.summary);
    // The node's results go in front of the header section; the body is
    // the one that arrived, shared by every copy made below.
    let content = match arrival.checked {
        Some(checked) => arrival.content.prepend(checked.header.as_bytes()),
        None => arrival.content.clone(),
    };
    let mut base = QueueEntry::new(
        arrival.id.clone(),
        arrival.envelope,
        arrival.routes,
        content.header(),
        Source {
            peer: arrival.peer.ip().to_string(),
            helo: arrival.helo.to_string(),
            connector: classification.connector().map(str::to_string),
        },
        now,
        arrival.expires_at_ms,
    );
    base.size = content.len() as u64;
    let event = |entry: &QueueEntry, kind, to: Option<String>, remote: Option<String>, detail: String| {
        let mut event = queue::event(entry, kind, to, remote, Some(detail));
        event.at_ms = now;
        event
    };
    let tls = arrival.tls.as_deref().unwrap_or("no TLS");
    let auth_note = verdict.map_or_else(String::new, |v| format!(" {}", v.describe()));
    let mut events = vec![event(
        &base,
        TraceKind::Received,
        None,
        Some(arrival.peer.to_string()),
        format!("helo={} {tls} size={}{auth_note}", arrival.helo, base.size),
    )];
    let refuse = |mut events: Vec<TraceEvent>, base: QueueEntry, plan: Plan, reply: Reply| {
        events.push(event(&base, TraceKind::Rejected, None, None, reply.to_string()));
        Decision {
            base,
            plan,
            verdict: Verdict::Refused(reply),
            events,
        }
    };

    // SPEC section 9: mail from the organisation's own servers is not
    // judged (it is checked only on a sealing node, for its seal).
    let internal = matches!(classification, Classification::Internal { .. });
    let mut dmarc_hold = None;
    if let (Some(auth), Some(verdict), false) = (node.authenticator, verdict, internal) {
        match verdict.disposition(&auth.settings) {
            crate::auth::Disposition::Accept => {}
            crate::auth::Disposition::Quarantine(reason) => dmarc_hold = Some(reason),
            crate::auth::Disposition::Reject(reply) => return refuse(events, base, Plan::default(), reply),
        }
    }

    let mut plan = plan(
        policy,
        &PlanInput {
            classification,
            sender_in_organization: crate::receive::relay_control::sender_in_organization(
                policy,
                classification,
                &base.from,
            ),
            peer: arrival.peer.ip(),
            base: &base,
            content: &content,
            scanner: node.scanner,
            scan_limits: node.scan_limits,
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
        events.push(event(&base, TraceKind::RuleMatched, None, None, detail));
    }
    if let Some(summary) = &plan.scan_summary {
        events.push(event(&base, TraceKind::Scanned, None, None, summary.clone()));
    }
    if let Some(reply) = plan.refused.clone() {
        return refuse(events, base, plan, reply);
    }
    for note in &plan.notes {
        events.push(event(&base, TraceKind::Routed, None, None, note.clone()));
    }

    let mut accepted = Accepted::default();
    for (n, copy) in std::mem::take(&mut plan.copies).into_iter().enumerate() {
        let mut entry = base.clone();
        entry.id = if n == 0 {
            base.id.clone()
        } else {
            QueueId::generate()
        };
        entry.recipients = copy.recipients;
        let content = match node.authenticator {
            Some(auth) => {
                let to: Vec<_> = entry.recipients.iter().map(|r| r.address.clone()).collect();
                auth.outgoing(policy, copy.content, &to, arrival.checked)
            }
            None => copy.content,
        };
        entry.size = content.len() as u64;
        for r in &entry.recipients {
            let mut routed = event(
                &entry,
                TraceKind::Routed,
                Some(r.address.to_string()),
                None,
                describe_route(&r.route),
            );
            routed.connector = r.route.connector().map(str::to_string);
            events.push(routed);
        }
        let held_by = copy
            .quarantined_by
            .or_else(|| dmarc_hold.as_ref().map(|_| "DMARC".to_string()));
        match held_by {
            Some(rule) => {
                events.push(event(
                    &entry,
                    TraceKind::Quarantined,
                    None,
                    None,
                    format!("quarantined by rule {rule:?}"),
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
                accepted.copies.push(CopyFate::Quarantined(held, content));
            }
            None => accepted.copies.push(CopyFate::Queued(entry, content)),
        }
    }
    for (i, rule) in &plan.deleted {
        let detail = format!("deleted by rule {rule:?}");
        let to = Some(base.recipients[*i].address.to_string());
        events.push(event(&base, TraceKind::Deleted, to, None, detail));
    }
    if !plan.failed.is_empty() {
        let failed: Vec<DsnRecipient> = plan
            .failed
            .iter()
            .map(|(i, reply)| dsn_recipient(&base.recipients[*i], reply))
            .collect();
        for (i, reply) in &plan.failed {
            let to = Some(base.recipients[*i].address.to_string());
            events.push(event(&base, TraceKind::Bounced, to, None, reply.to_string()));
        }
        if let Some(report) = node.reports.failure_report(&base, &content.to_vec(), &failed) {
            let detail = format!("failure report for {}", base.id);
            events.push(event(&report.0, TraceKind::Received, None, None, detail));
            accepted.reports.push(report);
        }
    }
    for text in &plan.notices {
        if let Some(notice) = node.reports.sender_notice(&base, &content.to_vec(), text) {
            let detail = format!("notice queued as {}", notice.0.id);
            let to = Some(base.from.to_string());
            events.push(event(&base, TraceKind::SenderNotified, to, None, detail));
            accepted.reports.push(notice);
        }
    }
    Decision {
        base,
        plan,
        verdict: Verdict::Accepted(accepted),
        events,
    }
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
