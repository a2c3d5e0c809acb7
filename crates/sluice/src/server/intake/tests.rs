//! The intake and `route explain` agree: both run the pre-queue step.

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
async fn live(policy: &Arc<Policy>, request: &ExplainRequest) -> (Reply, BTreeSet<Fate>, BTreeSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = EmbeddedStore::open(dir.path()).unwrap();
    let (_publish, watching) = watch::channel(policy.clone());
    let settings = QueueSettings {
        delivery_memory: ContentMemory::new(16 << 20),
        ..QueueSettings::new(
            "gw.contoso.test".into(),
            vec![Duration::from_secs(3600)],
            Duration::from_secs(86_400),
            1,
        )
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
    let classification = crate::classify::classify(&policy.inbound, ip, &[]);
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
    for entry in queue.list().unwrap() {
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
    let policy =
        Arc::new(crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(POLICY).unwrap()).unwrap());
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
