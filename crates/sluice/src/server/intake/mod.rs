//! The pipeline behind a session, run before the final reply to DATA: the
//! I/O around the pre-queue step ([`crate::rules::plan::decide`], which
//! `route explain` runs too): reading the spooled content, the DNS of
//! sender authentication, then the durable enqueue of what was decided,
//! and the trace. A rule's reject of every recipient is an in-session 5xx;
//! nothing is acknowledged before the queue has committed it.
//!
//! Content work (MIME parsing, the DLP scan, rule evaluation, header edits)
//! runs on the blocking pool, at most [`Pipeline::content_slots`] messages at
//! a time, never on the runtime threads that serve SMTP sessions and the
//! admin API: a message that is expensive to look at delays its own reply,
//! not other clients' greetings. Each scan runs under the node's
//! `[dlp] scan_budget`.

use crate::classify::Classification;
use crate::message::{QueueId, Reply};
use crate::policy::Policy;
use crate::queue::{Acceptance, ContentMemory, DsnRecipient, Queue, QueueEntry};
use crate::receive::{Intake, Refusal, Submission};
use crate::rules::plan::{self, Arrival, Node, Reports, Verdict};
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
        // SPEC section 9: mail from the organisation's own servers is not
        // judged; everything else is, before any rule looks at it. A node
        // that seals checks everything it relays: its seal carries what it
        // saw.
        let internal = matches!(classification, Classification::Internal { .. });
        let auth = self.auth.as_deref().filter(|a| !internal || a.seals());
        // The one copy of the message in memory: every rule copy made
        // from it shares its body.
        let (content, _) =
            plan::inbound_content(policy, &classification, content, auth.map(|a| a.hostname()));
        let message = auth.and(crate::auth::parse(content.original()));
        let mail_from = envelope.mail_from.to_string();
        let checked = match (auth, &message) {
            (Some(auth), Some(message)) => {
                let (ip, helo) = crate::auth::hop_before_connector(
                    policy,
                    classification.connector(),
                    session.peer.ip(),
                    content.header(),
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
        let now = now_ms();
        let decision = plan::decide(
            &Node {
                policy,
                scanner: &self.hostname,
                scan_limits: &self.scan_limits,
                authenticator: self.auth.as_deref(),
                reports: &self.queue,
            },
            Arrival {
                id: id.clone(),
                peer: session.peer,
                helo: &session.helo,
                tls: session
                    .tls
                    .as_ref()
                    .map(|t| format!("{} {}", t.version, t.cipher)),
                classification: &classification,
                envelope: &envelope,
                routes,
                content: &content,
                checked: checked.as_ref(),
                now_ms: now,
                expires_at_ms: self.queue.expiry_from(now),
            },
        );
        drop(slot);
        match decision.verdict {
            Verdict::Refused(reply) => {
                self.queue.record(decision.events);
                Decision::Refused(reply)
            }
            Verdict::Accepted(accepted) => {
                Decision::Accept(Box::new(accepted.into_acceptance(decision.events)), id)
            }
        }
    }
}

/// The queue writes the node's reports (its name, its expiry).
impl Reports for Queue {
    fn failure_report(
        &self,
        entry: &QueueEntry,
        content: &[u8],
        recipients: &[DsnRecipient],
    ) -> Option<(QueueEntry, Vec<u8>)> {
        Queue::failure_report(self, entry, content, recipients)
    }
    fn sender_notice(&self, entry: &QueueEntry, content: &[u8], text: &str) -> Option<(QueueEntry, Vec<u8>)> {
        Queue::sender_notice(self, entry, content, text)
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
            node: None,
        }]);
    }
}

#[cfg(test)]
mod tests;
