//! In-memory pipeline benchmark: what 50 mail flow rules add to a 100 KB
//! message (evaluation plus the copy plan: parsing, conditions, header
//! edits), reported as p50/p99 over many runs, and classify → rules → route
//! throughput, and DKIM signing and verifying of a 10 KB message
//! (Ed25519 and RSA 2048; the key record from an in-memory cache, so the
//! figure is the cryptography and canonicalisation, not DNS). Prints
//! figures; asserts nothing about speed.
//!
//! `cargo bench -p sluice --bench pipeline`

use sluice::classify::classify;
use sluice::config::objects::ObjectSet;
use sluice::message::{Address, BodyType, QueueId, ReversePath};
use sluice::policy::Policy;
use sluice::queue::{Hold, QueueEntry, QueuedRecipient, RecipientStatus, Source};
use sluice::receive::relay_control::check_recipient;
use sluice::rules::plan::{plan, PlanInput};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

fn objects() -> Policy {
    let mut text = String::from(
        "[[accepted_domain]]\nname = \"contoso.test\"\n\
         [[inbound_connector]]\nname = \"On-prem\"\ntype = \"on_premises\"\nsender_ip_addresses = [\"10.0.0.0/8\"]\n\
         [[outbound_connector]]\nname = \"To scanner\"\nsmart_hosts = [\"127.0.0.30:2525\"]\ntransport_rule_scoped = true\n",
    );
    // 50 rules of the kinds administrators write; most do not match, so
    // every condition is evaluated against the whole message.
    for i in 0..50 {
        let (condition, action) = match i % 5 {
            0 => (
                format!("subject_or_body_contains = [\"project-{i}\", \"codeword {i}\"]"),
                format!("prepend_subject = \"[{i}] \""),
            ),
            1 => (
                format!("header_matches = {{ header = \"X-Mailer\", patterns = [\"^bulk-{i}-\\\\d+$\"] }}"),
                "delete = true".to_string(),
            ),
            2 => (
                format!("attachment_extension_is = [\"exe{i}\", \"js{i}\"]"),
                "quarantine = true".to_string(),
            ),
            3 => (
                format!("header_contains = {{ header = \"Subject\", words = [\"invoice {i}\"] }}"),
                format!("set_header = {{ header = \"X-Tag-{i}\", value = \"yes\" }}"),
            ),
            _ => (
                "sent_to_scope = \"not_in_organization\"".to_string(),
                "route_via_connector = \"To scanner\"".to_string(),
            ),
        };
        let _ = write!(
            text,
            "[[rule]]\nname = \"rule {i}\"\npriority = {i}\n[rule.conditions]\n{condition}\n\
             [rule.exceptions]\nheader_contains = {{ header = \"X-Sluice-Org-Scan\", words = [\"verdict=pass\"] }}\n\
             [rule.actions]\n{action}\n"
        );
    }
    let objects = toml::from_str::<ObjectSet>(&text).expect("bench objects parse");
    Policy::compile(&objects).expect("bench objects are valid")
}

fn message(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "Received: from client ([10.1.2.3]) by gw.contoso.test\r\nFrom: <alice@contoso.test>\r\n\
         To: <bob@fabrikam.test>, <carol@contoso.test>\r\nSubject: quarterly figures\r\nX-Mailer: sluice-bench\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let line = "The quick brown fox jumps over the lazy dog while the figures are reconciled.\r\n";
    while m.len() < size {
        m.push_str(line);
    }
    m.into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let policy = objects();
    let content = message(100 * 1024);
    let peer = "10.1.2.3".parse().expect("ip");
    let classification = classify(&policy.inbound, peer, &[]);
    let from = ReversePath::try_from("alice@contoso.test".to_string()).expect("sender");
    let recipients: Vec<QueuedRecipient> = ["bob@fabrikam.test", "carol@contoso.test"]
        .iter()
        .map(|a| {
            let address = Address::parse(a).expect("recipient");
            let route = check_recipient(&policy, &classification, &from, &address).expect("relay allowed");
            QueuedRecipient {
                address,
                notify: sluice::message::Notify::Default,
                orcpt: None,
                route,
                status: RecipientStatus::Queued { due_ms: 0 },
                attempts: 0,
            }
        })
        .collect();
    let base = QueueEntry {
        id: QueueId("bench".into()),
        message_id: None,
        from: from.clone(),
        body: BodyType::EightBitMime,
        smtputf8: false,
        ret: None,
        envid: None,
        recipients,
        size: content.len() as u64,
        received_at_ms: 0,
        expires_at_ms: 0,
        hold: Hold::Active,
        source: Source {
            peer: peer.to_string(),
            helo: "bench".into(),
            connector: None,
        },
    };
    let limits = sluice::scan::ScanLimits::default();
    let content = sluice::message::MessageContent::new(content);
    let input = PlanInput {
        classification: &classification,
        sender_in_organization: true,
        peer,
        base: &base,
        content: &content,
        scanner: "bench",
        scan_limits: &limits,
        auth: None,
    };

    for _ in 0..50 {
        std::hint::black_box(plan(&policy, &input));
    }
    let runs = 2000;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let planned = plan(&policy, &input);
        times.push(started.elapsed());
        std::hint::black_box(planned);
    }
    times.sort();
    let copies = plan(&policy, &input).copies.len();
    println!(
        "rules: 50 rules, 100 KB message, 2 recipients ({copies} copies): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );

    // classify → relay control/route → rules plan, small messages.
    let small = sluice::message::MessageContent::new(message(4 * 1024));
    let started = Instant::now();
    let n = 20_000;
    for _ in 0..n {
        let classification = classify(&policy.inbound, peer, &[]);
        let input = PlanInput {
            classification: &classification,
            sender_in_organization: true,
            peer,
            base: &base,
            content: &small,
            scanner: "bench",
            scan_limits: &limits,
            auth: None,
        };
        std::hint::black_box(plan(&policy, &input));
    }
    let elapsed = started.elapsed();
    println!(
        "pipeline (classify → rules → route), 4 KB messages, 50 rules: {:.0} msgs/s on one core",
        n as f64 / elapsed.as_secs_f64()
    );

    dkim_costs();
}

/// The TXT cache mail-auth consults before DNS, holding the one record.
struct OneRecord(std::sync::Mutex<std::collections::HashMap<Box<str>, mail_auth::Txt>>);

impl mail_auth::ResolverCache<Box<str>, mail_auth::Txt> for OneRecord {
    fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.remove(name)
    }

    fn insert(&self, key: Box<str>, value: mail_auth::Txt, _valid_until: std::time::Instant) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, value);
        }
    }
}

fn dkim_costs() {
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use sluice::auth::keys::{KeyAlgorithm, StoredKey};

    let content = message(10 * 1024);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let resolver = mail_auth::MessageAuthenticator::new(
        mail_auth::hickory_resolver::config::ResolverConfig::default(),
        mail_auth::hickory_resolver::config::ResolverOpts::default(),
    )
    .expect("resolver");
    for (name, algorithm) in [
        ("Ed25519", KeyAlgorithm::Ed25519),
        ("RSA 2048", KeyAlgorithm::Rsa),
    ] {
        let key = StoredKey::generate("contoso.test", "bench", algorithm).expect("key");
        let runs = 500;
        let started = Instant::now();
        let mut signed = Vec::new();
        for _ in 0..runs {
            signed = sluice::auth::sign_with(&key, &content).expect("signs");
        }
        let sign = started.elapsed() / runs;
        let record = DomainKey::parse(key.record().as_bytes()).expect("record parses");
        let cache = OneRecord(Default::default());
        let record = std::sync::Arc::new(record);
        // Whichever spelling of the name the library asks for.
        for name in [key.record_name(), format!("{}.", key.record_name())] {
            mail_auth::ResolverCache::insert(
                &cache,
                name.into_boxed_str(),
                mail_auth::Txt::DomainKey(record.clone()),
                Instant::now() + Duration::from_secs(3600),
            );
        }
        let started = Instant::now();
        for _ in 0..runs {
            let message = mail_auth::AuthenticatedMessage::parse(&signed).expect("parses");
            let outputs = runtime
                .block_on(resolver.verify_dkim(mail_auth::Parameters::new(&message).with_txt_cache(&cache)));
            assert_eq!(
                outputs[0].result(),
                &mail_auth::DkimResult::Pass,
                "{name} verifies"
            );
        }
        let verify = started.elapsed() / runs;
        println!("dkim {name}, 10 KB message: sign {sign:?}  verify {verify:?} (parse included)");
    }
}
