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
use crate::config::objects::Policy;
use crate::message::{QueueId, Reply};
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
        let (original, _) =
            plan::inbound_content(policy, &classification, content, auth.map(|a| a.hostname()));
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
                content: &original,
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
        }]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::explain::{explain, ExplainRequest};
    use crate::config::objects::ObjectSet;
    use crate::deliver::{DeliveryAttempt, DeliveryJob, Outcome};
    use crate::message::{Address, Envelope, EnvelopeRecipient, Notify, ReversePath};
    use crate::queue::{QueueSettings, Transport};
    use crate::receive::framing::BodyContent;
    use crate::receive::{Content, SessionInfo};
    use crate::store::{EmbeddedStore, Store};
    use std::collections::BTreeSet;
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    const POLICY: &str = r#"
[[accepted_domain]]
name = "contoso.test"
[[inbound_connector]]
name = "On-prem"
type = "on_premises"
sender_ip_addresses = ["127.0.0.40/32"]
[[outbound_connector]]
name = "Partner"
recipient_domains = ["partner.test"]
smart_hosts = ["127.0.0.8:25"]
transport_rule_scoped = true
[[outbound_connector]]
name = "Smart host"
recipient_domains = ["*"]
smart_hosts = ["127.0.0.9:25"]
[[rule]]
name = "Hold invoices"
[rule.conditions]
subject_or_body_contains = ["invoice"]
[rule.actions]
quarantine = true
[[rule]]
name = "Block casinos"
[rule.conditions]
subject_or_body_contains = ["casino"]
[rule.actions]
reject = { code = "5.7.1", text = "Blocked by policy" }
[[rule]]
name = "Former staff"
[rule.conditions]
sent_to = ["gone@contoso.test"]
[rule.actions]
reject = { code = "5.1.1", text = "No longer here" }
[[rule]]
name = "Trash"
[rule.conditions]
sent_to = ["trash@contoso.test"]
[rule.actions]
delete = true
[[rule]]
name = "Fabrikam through the partner"
[rule.conditions]
recipient_domain_is = ["fabrikam.test"]
[rule.actions]
route_via_connector = "Partner"
set_header = { header = "X-Routed", value = "partner" }
[[rule]]
name = "Copy the boss's mail"
[rule.conditions]
sent_to = ["boss@contoso.test"]
[rule.actions]
bcc = ["audit@contoso.test"]
notify_sender = "Your message to the boss was copied to audit."
[[rule]]
name = "Watch the lawyers"
mode = "audit"
[rule.conditions]
sender_domain_is = ["lawyers.test"]
[rule.actions]
prepend_subject = "[watched] "
"#;

    /// Every attempt fails temporarily: what was queued stays to be read.
    struct Unreachable;

    impl Transport for Unreachable {
        fn attempt(&self, job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
            let outcomes = job
                .recipients
                .iter()
                .map(|r| {
                    (
                        r.address.clone(),
                        Outcome::TempFail(Reply::new(451, [4, 4, 1], "down")),
                    )
                })
                .collect();
            Box::pin(std::future::ready(DeliveryAttempt {
                host: None,
                tls: None,
                dsn_passed_on: false,
                tls_policy: None,
                outcomes,
            }))
        }
    }

    /// One recipient's fate: address, outcome word, reply, outbound connector.
    type Fate = (String, String, Option<String>, Option<String>);

    /// What live mail did with `request`: the final reply, each accepted
    /// recipient's fate and the rules that matched, read back from the
    /// queue, the quarantine and the trace of a node on a fresh store.
    async fn live(
        policy: &Arc<Policy>,
        request: &ExplainRequest,
    ) -> (Reply, BTreeSet<Fate>, BTreeSet<String>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(dir.path()).unwrap();
        let (_publish, watching) = watch::channel(policy.clone());
        let settings = QueueSettings {
            hostname: "gw.contoso.test".into(),
            retry: vec![Duration::from_secs(3600)],
            expire_after: Duration::from_secs(86_400),
            max_concurrency: 1,
            delivery_memory: ContentMemory::new(16 << 20),
        };
        let queue = Queue::start(store.clone(), Arc::new(Unreachable), settings, watching.clone()).unwrap();
        let pipeline = Pipeline {
            queue: queue.clone(),
            policy: watching,
            hostname: "gw.contoso.test".into(),
            scan_limits: ScanLimits::default(),
            content_slots: Arc::new(Semaphore::new(1)),
            memory: ContentMemory::new(16 << 20),
            auth: None,
        };
        let ip = request.ip.unwrap_or(IpAddr::from([203, 0, 113, 25]));
        let classification = crate::classify::classify(policy, ip, &[]);
        let from = ReversePath::try_from(request.from.clone()).unwrap();
        let mut envelope = Envelope::new(from.clone());
        let mut routes = Vec::new();
        for to in &request.to {
            let address = Address::parse(to).unwrap();
            // The session refuses these at RCPT: they never reach the intake.
            if let Ok(route) =
                crate::receive::relay_control::check_recipient(policy, &classification, &from, &address)
            {
                envelope.recipients.push(EnvelopeRecipient {
                    address,
                    notify: Notify::Default,
                    orcpt: None,
                });
                routes.push(route);
            }
        }
        let eml = request.eml.as_deref().unwrap().replace('\n', "\r\n");
        let submission = Submission {
            id: QueueId::generate(),
            session: SessionInfo {
                peer: SocketAddr::new(ip, 40_000),
                local: SocketAddr::from(([127, 0, 0, 1], 25)),
                helo: "client.test".into(),
                esmtp: true,
                tls: None,
            },
            classification,
            envelope,
            routes,
            content: Content::new(String::new(), BodyContent::Memory(eml.into_bytes())),
        };
        let reply = pipeline.take(submission).await;
        // A refusal's events ride the next commit: this one.
        store.commit(Vec::new()).await.unwrap();

        let mut fates = BTreeSet::new();
        for entry in queue.list() {
            if entry.source.peer == "local" {
                continue; // reports this node wrote
            }
            for r in &entry.recipients {
                let connector = r.route.connector().map(str::to_string);
                fates.insert((r.address.to_string(), "deliver".into(), None, connector));
            }
        }
        for held in queue.quarantine().unwrap() {
            for r in &held.entry.recipients {
                let why = format!("quarantined by rule {:?}", held.rule);
                let connector = r.route.connector().map(str::to_string);
                fates.insert((r.address.to_string(), "quarantine".into(), Some(why), connector));
            }
        }
        let mut rules = BTreeSet::new();
        for event in store.trace_events(0).unwrap() {
            let to = event.to.clone().unwrap_or_default();
            match event.kind {
                TraceKind::Bounced => {
                    fates.insert((to, "reject".into(), event.detail, None));
                }
                TraceKind::Deleted => {
                    fates.insert((to, "delete".into(), event.detail, None));
                }
                TraceKind::RuleMatched => {
                    let detail = event.detail.unwrap_or_default();
                    let name = detail.split('"').nth(1).unwrap_or_default().to_string();
                    rules.insert(name);
                }
                _ => {}
            }
        }
        (reply, fates, rules)
    }

    fn request(from: &str, to: &[&str], ip: Option<&str>, subject: &str) -> ExplainRequest {
        let eml = format!(
            "From: <{from}>\nTo: {}\nSubject: {subject}\nMessage-ID: <m@test>\n\nHello.\n",
            to.join(", ")
        );
        ExplainRequest {
            from: from.into(),
            to: to.iter().map(|t| t.to_string()).collect(),
            ip: ip.map(|ip| ip.parse().unwrap()),
            eml: Some(eml),
            ..ExplainRequest::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_intake_and_route_explain_agree() {
        let policy = Arc::new(toml::from_str::<ObjectSet>(POLICY).unwrap().validate().unwrap());
        let on_prem = Some("127.0.0.40");
        let battery = [
            request("a@internet.test", &["bob@contoso.test"], None, "hello"),
            request(
                "a@internet.test",
                &["bob@contoso.test", "carol@contoso.test"],
                None,
                "casino night",
            ),
            request(
                "alice@contoso.test",
                &[
                    "x@fabrikam.test",
                    "y@example.org",
                    "bob@contoso.test",
                    "z@partner.test",
                ],
                on_prem,
                "routes",
            ),
            request(
                "a@internet.test",
                &["gone@contoso.test", "bob@contoso.test"],
                None,
                "hi",
            ),
            request("a@internet.test", &["gone@contoso.test"], None, "only the gone"),
            request(
                "a@internet.test",
                &["trash@contoso.test", "bob@contoso.test"],
                None,
                "hi",
            ),
            request(
                "a@internet.test",
                &["bob@contoso.test", "carol@contoso.test"],
                None,
                "your invoice",
            ),
            request(
                "alice@contoso.test",
                &["boss@contoso.test", "x@fabrikam.test"],
                on_prem,
                "invoice",
            ),
            request(
                "a@internet.test",
                &["boss@contoso.test", "bob@contoso.test"],
                None,
                "report",
            ),
            request(
                "counsel@lawyers.test",
                &["bob@contoso.test", "x@fabrikam.test"],
                None,
                "x",
            ),
            request(
                "",
                &["gone@contoso.test", "trash@contoso.test", "boss@contoso.test"],
                None,
                "casino",
            ),
        ];
        for request in &battery {
            let explained = explain(&policy, request).unwrap();
            let (reply, fates, rules) = live(&policy, request).await;
            let context = format!("{request:?}\n{explained:#?}\nlive: {reply} {fates:#?} {rules:?}");
            if explained.recipients.iter().all(|r| !r.accepted) {
                continue; // refused at RCPT: no message reaches the intake
            }
            match &explained.refused {
                Some(refusal) => {
                    assert_eq!(&reply.to_string(), refusal, "{context}");
                    assert!(fates.is_empty(), "{context}");
                }
                None => {
                    assert_eq!(reply.code, 250, "{context}");
                    let expected: BTreeSet<Fate> = explained
                        .recipients
                        .iter()
                        .filter(|r| r.accepted)
                        .map(|r| {
                            (
                                r.address.clone(),
                                r.outcome.clone(),
                                r.reply.clone(),
                                r.connector.clone(),
                            )
                        })
                        .collect();
                    assert_eq!(fates, expected, "{context}");
                }
            }
            let matched: BTreeSet<String> = explained
                .rules
                .iter()
                .filter(|r| !r.matched.is_empty())
                .map(|r| r.rule.clone())
                .collect();
            assert_eq!(rules, matched, "{context}");
        }
    }
}
