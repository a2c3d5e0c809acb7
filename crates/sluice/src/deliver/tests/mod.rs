//! Socket tests on loopback against real programs (Postfix's smtp-sink,
//! dnsmasq); [`starttls`] covers what those cannot do (STARTTLS, mixed
//! per-recipient answers) with a small scripted SMTP server. Every process is
//! killed by a guard; every wait is bounded.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod starttls;

use super::*;
use crate::config::DnsSource;
use crate::dns::{self, StaticResolver};
use crate::route::HostPort;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

/// Kills and reaps a spawned program when the test ends, pass or fail.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_tcp(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} never started listening");
        sleep(Duration::from_millis(20)).await;
    }
}

/// smtp-sink on 127.0.0.1:`port`, one file per message in `dump_dir`.
async fn smtp_sink(port: u16, dump_dir: &Path, extra: &[&str]) -> Process {
    let child = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "root", "-d"])
        .arg(format!("{}/%M.", dump_dir.display()))
        .args(extra)
        .arg(format!("127.0.0.1:{port}"))
        .arg("100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink is installed at /usr/sbin/smtp-sink");
    let process = Process(child);
    wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port))).await;
    process
}

/// The messages smtp-sink dumped so far.
fn dumps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect()
}

fn settings(dir: &Path) -> DeliverySettings {
    let mut settings = DeliverySettings::new("sender.test", dir);
    settings.connect_timeout = Duration::from_secs(2);
    settings.command_timeout = Duration::from_secs(5);
    settings.data_timeout = Duration::from_secs(5);
    settings.data_block_timeout = Duration::from_secs(5);
    settings.final_dot_timeout = Duration::from_secs(5);
    settings.idle_timeout = Duration::from_secs(3);
    settings
}

fn deliverer(settings: DeliverySettings) -> Deliverer {
    Deliverer::new(settings, Arc::new(StaticResolver::default())).unwrap()
}

fn smart_hosts(ports: &[u16], tls: TlsPolicy) -> Route {
    Route::Connector {
        max_message_size: None,
        connector: "test".into(),
        next_hop: NextHop::SmartHosts(
            ports
                .iter()
                .map(|port| HostPort {
                    host: "127.0.0.1".into(),
                    port: *port,
                })
                .collect(),
        ),
        tls,
        helo_name: None,
        retain_internal_headers: false,
    }
}

const MESSAGE: &[u8] =
    b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\n.hidden line\r\nbody\r\n";

fn job(route: Route, recipients: &[&str]) -> DeliveryJob {
    DeliveryJob {
        route,
        domain: Domain::parse("example.test").unwrap(),
        mail_from: ReversePath::Mailbox(Address::parse("a@sender.test").unwrap()),
        recipients: recipients
            .iter()
            .map(|r| JobRecipient {
                address: Address::parse(r).unwrap(),
                notify: Notify::Default,
                orcpt: None,
            })
            .collect(),
        content: Arc::new(MESSAGE.to_vec()),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
    }
}

/// A job for `recipients` through the smart hosts on `ports`, opportunistic TLS.
fn opportunistic_job(ports: &[u16], recipients: &[&str]) -> DeliveryJob {
    job(smart_hosts(ports, TlsPolicy::Opportunistic), recipients)
}

/// One attempt by a new deliverer with the default settings.
async fn attempt_once(dir: &Path, ports: &[u16], recipients: &[&str]) -> DeliveryAttempt {
    deliverer(settings(dir))
        .attempt(&opportunistic_job(ports, recipients))
        .await
}

fn codes(attempt: &DeliveryAttempt) -> Vec<(&'static str, u16)> {
    attempt
        .outcomes
        .iter()
        .map(|(_, outcome)| match outcome {
            Outcome::Delivered(reply) => ("delivered", reply.code),
            Outcome::TempFail(reply) => ("temp", reply.code),
            Outcome::PermFail(reply) => ("perm", reply.code),
        })
        .collect()
}

fn reply_of(attempt: &DeliveryAttempt, index: usize) -> &Reply {
    match &attempt.outcomes[index].1 {
        Outcome::Delivered(reply) | Outcome::TempFail(reply) | Outcome::PermFail(reply) => reply,
    }
}

#[tokio::test]
async fn delivers_to_smtp_sink_with_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let deliverer = deliverer(settings(dir.path()));
    let mut job = opportunistic_job(&[port], &["b@example.test", "c@example.test"]);
    job.ret = Some(DsnReturn::Headers);
    job.envid = Some("id+1".into());
    job.recipients[1].notify = Notify::Never;
    job.recipients[1].orcpt = Some("rfc822;c@example.test".into());

    let attempt = deliverer.attempt(&job).await;

    assert_eq!(codes(&attempt), vec![("delivered", 250), ("delivered", 250)]);
    assert_eq!(attempt.host.as_deref(), Some(&*format!("127.0.0.1:{port}")));
    assert!(attempt.tls.is_none(), "smtp-sink offers no STARTTLS");
    let dumps = dumps(dir.path());
    assert_eq!(dumps.len(), 1);
    assert!(dumps[0].contains("X-Helo-Args: sender.test"), "{}", dumps[0]);
    // smtp-sink advertises DSN (so RET/ENVID/NOTIFY/ORCPT go out) but not SIZE.
    assert!(
        dumps[0].contains("X-Mail-Args: <a@sender.test> RET=HDRS ENVID=id+2B1\n"),
        "{}",
        dumps[0]
    );
    assert!(dumps[0].contains("X-Rcpt-Args: <b@example.test>\n"));
    assert!(dumps[0].contains("X-Rcpt-Args: <c@example.test> NOTIFY=NEVER ORCPT=rfc822;c@example.test\n"));
    // Dot-stuffed on the wire, unstuffed by the server: the line survives intact.
    assert!(dumps[0].contains("\n.hidden line\n"), "{}", dumps[0]);
}

#[tokio::test]
async fn delivers_without_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-p"]).await;
    let attempt = attempt_once(dir.path(), &[port], &["b@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert_eq!(dumps(dir.path()).len(), 1);
}

#[tokio::test]
async fn binds_the_source_address_and_uses_the_route_helo_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let mut settings = settings(dir.path());
    settings.bind_address = Some("127.0.0.2".parse().unwrap());
    let mut route = smart_hosts(&[port], TlsPolicy::Opportunistic);
    if let Route::Connector { helo_name, .. } = &mut route {
        *helo_name = Some("relay.sender.test".into());
    }
    let attempt = deliverer(settings)
        .attempt(&job(route, &["b@example.test"]))
        .await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    let dump = &dumps(dir.path())[0];
    assert!(dump.contains("X-Client-Addr: 127.0.0.2\n"), "{dump}");
    assert!(dump.contains("X-Helo-Args: relay.sender.test\n"), "{dump}");
}

#[tokio::test]
async fn falls_back_to_helo_when_ehlo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-f", "EHLO"]).await;
    let attempt = attempt_once(dir.path(), &[port], &["b@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    let dump = &dumps(dir.path())[0];
    assert!(dump.contains("X-Client-Proto: SMTP\n"), "{dump}");
}

#[tokio::test]
async fn fails_over_from_a_closed_port_to_the_next_smart_host() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let attempt = attempt_once(dir.path(), &[closed, port], &["b@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert_eq!(attempt.host.as_deref(), Some(&*format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn all_hosts_down_reports_the_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (free_port(), free_port());
    let attempt = attempt_once(dir.path(), &[first, second], &["b@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("temp", 451)]);
    let reply = reply_of(&attempt, 0);
    assert_eq!(reply.status, Some([4, 4, 1]));
    assert!(reply.text.contains(&format!("127.0.0.1:{second}")), "{reply}");
}

#[tokio::test]
async fn greeting_4xx_fails_over_to_the_next_host() {
    let dir = tempfile::tempdir().unwrap();
    let (busy, good) = (free_port(), free_port());
    let busy_dir = tempfile::tempdir().unwrap();
    let _busy = smtp_sink(busy, busy_dir.path(), &["-r", "CONNECT"]).await;
    let _good = smtp_sink(good, dir.path(), &[]).await;
    let attempt = attempt_once(dir.path(), &[busy, good], &["b@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert_eq!(attempt.host.as_deref(), Some(&*format!("127.0.0.1:{good}")));
}

#[tokio::test]
async fn refused_recipients_fail_by_reply_class() {
    let dir = tempfile::tempdir().unwrap();
    let (hard, soft) = (free_port(), free_port());
    let _hard = smtp_sink(hard, dir.path(), &["-f", "RCPT"]).await;
    let _soft = smtp_sink(soft, dir.path(), &["-r", "RCPT"]).await;
    let deliverer = deliverer(settings(dir.path()));

    let attempt = deliverer
        .attempt(&opportunistic_job(&[hard], &["b@example.test", "c@example.test"]))
        .await;
    assert_eq!(codes(&attempt), vec![("perm", 500), ("perm", 500)]);

    let attempt = deliverer
        .attempt(&opportunistic_job(&[soft], &["b@example.test"]))
        .await;
    assert_eq!(codes(&attempt), vec![("temp", 450)]);
    assert!(dumps(dir.path()).is_empty(), "nothing may be delivered");
}

#[tokio::test]
async fn service_closing_at_data_defers_every_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-Q", "DATA"]).await;
    let attempt = attempt_once(dir.path(), &[port], &["b@example.test", "c@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("temp", 421), ("temp", 421)]);
}

#[tokio::test]
async fn dropped_connection_mid_transaction_defers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-q", "."]).await;
    let attempt = attempt_once(dir.path(), &[port], &["b@example.test"]).await;
    assert_eq!(codes(&attempt), vec![("temp", 451)]);
    assert!(
        reply_of(&attempt, 0).text.contains("end of data"),
        "{}",
        reply_of(&attempt, 0)
    );
}

#[tokio::test]
async fn idle_connections_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // smtp-sink exits after one session: a second connection would be refused.
    let _sink = smtp_sink(port, dir.path(), &["-n", "1"]).await;
    let deliverer = deliverer(settings(dir.path()));
    for round in 0..3 {
        let attempt = deliverer
            .attempt(&opportunistic_job(&[port], &["b@example.test"]))
            .await;
        assert_eq!(codes(&attempt), vec![("delivered", 250)], "round {round}");
        assert_eq!(deliverer.idle_connections(), 1);
    }
    assert_eq!(dumps(dir.path()).len(), 3);
}

#[tokio::test]
async fn expired_idle_connections_are_closed_with_quit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let mut settings = settings(dir.path());
    settings.idle_timeout = Duration::from_millis(300);
    let deliverer = deliverer(settings);
    let attempt = deliverer
        .attempt(&opportunistic_job(&[port], &["b@example.test"]))
        .await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert_eq!(deliverer.idle_connections(), 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while deliverer.idle_connections() > 0 {
        assert!(Instant::now() < deadline, "idle connection never expired");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_jobs_share_a_bounded_number_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let mut settings = settings(dir.path());
    settings.max_per_destination = 3;
    let deliverer = Arc::new(deliverer(settings));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let deliverer = deliverer.clone();
        tasks.push(tokio::spawn(async move {
            let recipient = format!("r{i}@example.test");
            deliverer
                .attempt(&opportunistic_job(&[port], &[recipient.as_str()]))
                .await
        }));
    }
    for task in tasks {
        assert_eq!(codes(&task.await.unwrap()), vec![("delivered", 250)]);
    }
    assert!(deliverer.idle_connections() <= 3);
    assert_eq!(dumps(dir.path()).len(), 30);
}

#[tokio::test]
async fn smtputf8_needed_but_not_offered_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let mut job = opportunistic_job(&[port], &["b@example.test"]);
    job.smtputf8 = true;
    let attempt = deliverer(settings(dir.path())).attempt(&job).await;
    // smtp-sink does advertise SMTPUTF8; whichever it does, the outcome
    // must follow it.
    match &attempt.outcomes[0].1 {
        Outcome::Delivered(_) => {
            assert!(dumps(dir.path())[0].contains("SMTPUTF8"));
        }
        Outcome::PermFail(reply) => assert_eq!(reply.status, Some([5, 6, 7])),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mailbox_route_writes_maildir() {
    let dir = tempfile::tempdir().unwrap();
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(Route::Mailbox, &["Bob@example.test", "carol@example.test"]))
        .await;
    assert_eq!(codes(&attempt), vec![("delivered", 250), ("delivered", 250)]);
    assert_eq!(reply_of(&attempt, 0).text, "delivered to mailbox");
    assert_eq!(attempt.host.as_deref(), Some("mailbox"));
    let new = dir.path().join("mailboxes/example.test/bob/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
    let content = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(content, MESSAGE);
}

// ---- MX through a real DNS server (dnsmasq) ----

async fn dnsmasq(port: u16, records: &[String]) -> Process {
    let child = Command::new("/usr/sbin/dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            "--user=root",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is installed at /usr/sbin/dnsmasq");
    let process = Process(child);
    wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port))).await;
    process
}

fn mx_job(domain: &str) -> DeliveryJob {
    let mut job = job(Route::Mx, &[&format!("b@{domain}")]);
    job.domain = Domain::parse(domain).unwrap();
    job
}

#[tokio::test]
async fn mx_delivery_through_dnsmasq() {
    let dir = tempfile::tempdir().unwrap();
    let (dns_port, mx_port) = (free_port(), free_port());
    let _dns = dnsmasq(
        dns_port,
        &[
            // mx0 has no address: the next preference must be tried.
            "--mx-host=example.test,mx0.example.test,5".into(),
            "--mx-host=example.test,mx1.example.test,10".into(),
            "--host-record=mx1.example.test,127.0.0.1".into(),
            "--host-record=implicit.test,127.0.0.1".into(),
            // RFC 7505 null MX: preference 0, exchange "." (root).
            "--dns-rr=nullmx.test,15,000000".into(),
        ],
    )
    .await;
    let _sink = smtp_sink(mx_port, dir.path(), &[]).await;
    let resolver = dns::resolver(&DnsSource::Server(SocketAddr::from(([127, 0, 0, 1], dns_port)))).unwrap();
    let mut settings = settings(dir.path());
    settings.mx_port = mx_port;
    let deliverer = Deliverer::new(settings, resolver.clone()).unwrap();

    let answer = resolver
        .mx(&Domain::parse("example.test").unwrap())
        .await
        .unwrap();
    assert_eq!(
        answer,
        dns::MxAnswer::Hosts(vec![
            (5, "mx0.example.test".into()),
            (10, "mx1.example.test".into())
        ])
    );

    let attempt = deliverer.attempt(&mx_job("example.test")).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert_eq!(attempt.host.as_deref(), Some(&*format!("127.0.0.1:{mx_port}")));

    let attempt = deliverer.attempt(&mx_job("implicit.test")).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)], "implicit MX");

    let attempt = deliverer.attempt(&mx_job("nullmx.test")).await;
    assert_eq!(codes(&attempt), vec![("perm", 556)]);
    assert_eq!(reply_of(&attempt, 0).status, Some([5, 1, 10]));

    let attempt = deliverer.attempt(&mx_job("nowhere.test")).await;
    assert_eq!(codes(&attempt), vec![("perm", 550)]);
    assert_eq!(reply_of(&attempt, 0).status, Some([5, 1, 2]));
    assert_eq!(dumps(dir.path()).len(), 2);
}

#[tokio::test]
async fn dns_server_down_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let resolver = dns::resolver(&DnsSource::Server(SocketAddr::from((
        [127, 0, 0, 1],
        free_port(),
    ))))
    .unwrap();
    let deliverer = Deliverer::new(settings(dir.path()), resolver).unwrap();
    let attempt = timeout(
        Duration::from_secs(30),
        deliverer.attempt(&mx_job("example.test")),
    )
    .await
    .unwrap();
    assert_eq!(codes(&attempt), vec![("temp", 451)]);
}

/// Throughput figure for one smart host (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput_to_one_smart_host() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = Process(
        Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "root", "-m", "500"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("500")
            .spawn()
            .unwrap(),
    );
    wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let mut settings = settings(dir.path());
    settings.max_per_destination = 50;
    let deliverer = Arc::new(deliverer(settings));
    let total = 5000;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..50 {
        let (deliverer, next) = (deliverer.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let job = opportunistic_job(&[port], &["b@example.test"]);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let attempt = deliverer.attempt(&job).await;
                assert_eq!(codes(&attempt), vec![("delivered", 250)]);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{total} messages in {elapsed:?}: {:.0} msg/s",
        total as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_connectors_limits_cap_messages_per_connection_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Two sessions only: four messages at two per connection need exactly two.
    let _sink = smtp_sink(port, dir.path(), &["-n", "2"]).await;
    let deliverer = Arc::new(deliverer(settings(dir.path())));
    let limits = crate::deliver::ConnectionLimits {
        max_connections: Some(1),
        max_messages_per_connection: Some(2),
    };
    let mut idle = Vec::new();
    for round in 0..4 {
        let attempt = deliverer
            .attempt_with(
                &job(
                    smart_hosts(&[port], TlsPolicy::Opportunistic),
                    &["b@example.test"],
                ),
                limits,
            )
            .await;
        assert_eq!(codes(&attempt), vec![("delivered", 250)], "round {round}");
        idle.push(deliverer.idle_connections());
    }
    assert_eq!(idle, [1, 0, 1, 0], "closed after two messages");

    // One connection at a time: concurrent jobs queue for it.
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &[]).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let deliverer = deliverer.clone();
        let limits = crate::deliver::ConnectionLimits {
            max_connections: Some(1),
            max_messages_per_connection: None,
        };
        tasks.push(tokio::spawn(async move {
            let recipient = format!("r{i}@example.test");
            deliverer
                .attempt_with(
                    &job(
                        smart_hosts(&[port], TlsPolicy::Opportunistic),
                        &[recipient.as_str()],
                    ),
                    limits,
                )
                .await
        }));
    }
    for task in tasks {
        assert_eq!(codes(&task.await.unwrap()), vec![("delivered", 250)]);
    }
    assert_eq!(deliverer.idle_connections(), 1, "one connection carried all ten");
    assert_eq!(dumps(dir.path()).len(), 14);
}
