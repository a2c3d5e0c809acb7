//! Socket tests on loopback against real programs (Postfix's smtp-sink,
//! dnsmasq) and, where those cannot do it (STARTTLS, mixed per-recipient
//! answers), a small scripted SMTP server written here. Every process is
//! killed by a guard; every wait is bounded.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::config::DnsSource;
use crate::dns::{self, StaticResolver};
use crate::route::HostPort;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
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
    let mut job = job(
        smart_hosts(&[port], TlsPolicy::Opportunistic),
        &["b@example.test", "c@example.test"],
    );
    job.ret = Some(DsnReturn::Headers);
    job.envid = Some("id+1".into());
    job.recipients[1].notify = Notify::Never;
    job.recipients[1].orcpt = Some("rfc822;c@example.test".into());

    let attempt = deliverer.attempt(&job).await;

    assert_eq!(
        codes(&attempt),
        vec![("delivered", 250), ("delivered", 250)]
    );
    assert_eq!(attempt.host.as_deref(), Some(&*format!("127.0.0.1:{port}")));
    assert!(attempt.tls.is_none(), "smtp-sink offers no STARTTLS");
    let dumps = dumps(dir.path());
    assert_eq!(dumps.len(), 1);
    assert!(
        dumps[0].contains("X-Helo-Args: sender.test"),
        "{}",
        dumps[0]
    );
    // smtp-sink advertises DSN (so RET/ENVID/NOTIFY/ORCPT go out) but not SIZE.
    assert!(
        dumps[0].contains("X-Mail-Args: <a@sender.test> RET=HDRS ENVID=id+2B1\n"),
        "{}",
        dumps[0]
    );
    assert!(dumps[0].contains("X-Rcpt-Args: <b@example.test>\n"));
    assert!(dumps[0]
        .contains("X-Rcpt-Args: <c@example.test> NOTIFY=NEVER ORCPT=rfc822;c@example.test\n"));
    // Dot-stuffed on the wire, unstuffed by the server: the line survives intact.
    assert!(dumps[0].contains("\n.hidden line\n"), "{}", dumps[0]);
}

#[tokio::test]
async fn delivers_without_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-p"]).await;
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[port], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
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
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[port], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
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
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[closed, port], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert_eq!(attempt.host.as_deref(), Some(&*format!("127.0.0.1:{port}")));
}

#[tokio::test]
async fn all_hosts_down_reports_the_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (free_port(), free_port());
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[first, second], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
    assert_eq!(codes(&attempt), vec![("temp", 451)]);
    let reply = reply_of(&attempt, 0);
    assert_eq!(reply.status, Some([4, 4, 1]));
    assert!(
        reply.text.contains(&format!("127.0.0.1:{second}")),
        "{reply}"
    );
}

#[tokio::test]
async fn greeting_4xx_fails_over_to_the_next_host() {
    let dir = tempfile::tempdir().unwrap();
    let (busy, good) = (free_port(), free_port());
    let busy_dir = tempfile::tempdir().unwrap();
    let _busy = smtp_sink(busy, busy_dir.path(), &["-r", "CONNECT"]).await;
    let _good = smtp_sink(good, dir.path(), &[]).await;
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[busy, good], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
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
        .attempt(&job(
            smart_hosts(&[hard], TlsPolicy::Opportunistic),
            &["b@example.test", "c@example.test"],
        ))
        .await;
    assert_eq!(codes(&attempt), vec![("perm", 500), ("perm", 500)]);

    let attempt = deliverer
        .attempt(&job(
            smart_hosts(&[soft], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
    assert_eq!(codes(&attempt), vec![("temp", 450)]);
    assert!(dumps(dir.path()).is_empty(), "nothing may be delivered");
}

#[tokio::test]
async fn service_closing_at_data_defers_every_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-Q", "DATA"]).await;
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[port], TlsPolicy::Opportunistic),
            &["b@example.test", "c@example.test"],
        ))
        .await;
    assert_eq!(codes(&attempt), vec![("temp", 421), ("temp", 421)]);
}

#[tokio::test]
async fn dropped_connection_mid_transaction_defers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = smtp_sink(port, dir.path(), &["-q", "."]).await;
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[port], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
        .await;
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
            .attempt(&job(
                smart_hosts(&[port], TlsPolicy::Opportunistic),
                &["b@example.test"],
            ))
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
        .attempt(&job(
            smart_hosts(&[port], TlsPolicy::Opportunistic),
            &["b@example.test"],
        ))
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
                .attempt(&job(
                    smart_hosts(&[port], TlsPolicy::Opportunistic),
                    &[recipient.as_str()],
                ))
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
    let mut job = job(
        smart_hosts(&[port], TlsPolicy::Opportunistic),
        &["b@example.test"],
    );
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
        .attempt(&job(
            Route::Mailbox,
            &["Bob@example.test", "carol@example.test"],
        ))
        .await;
    assert_eq!(
        codes(&attempt),
        vec![("delivered", 250), ("delivered", 250)]
    );
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
    let resolver = dns::resolver(&DnsSource::Server(SocketAddr::from((
        [127, 0, 0, 1],
        dns_port,
    ))))
    .unwrap();
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
    assert_eq!(
        attempt.host.as_deref(),
        Some(&*format!("127.0.0.1:{mx_port}"))
    );

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

// ---- STARTTLS and per-recipient answers: a scripted server ----

/// What the scripted server does.
#[derive(Clone)]
struct Script {
    /// Certificate chain and key for STARTTLS; `None` offers no STARTTLS.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Answer 220 to STARTTLS, then close instead of a handshake.
    break_handshake: bool,
}

/// Commands seen (prefixed `tls:` once encrypted) and messages received.
#[derive(Default)]
struct Recording {
    commands: Vec<String>,
    messages: Vec<Vec<u8>>,
}

struct ScriptedServer {
    port: u16,
    recording: Arc<Mutex<Recording>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    async fn start(script: Script) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let recording = Arc::new(Mutex::new(Recording::default()));
        let shared = recording.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, script.clone(), shared.clone()));
            }
        });
        ScriptedServer {
            port,
            recording,
            task,
        }
    }

    fn commands(&self) -> Vec<String> {
        self.recording.lock().unwrap().commands.clone()
    }

    fn messages(&self) -> usize {
        self.recording.lock().unwrap().messages.len()
    }
}

enum SessionEnd {
    Quit,
    StartTls,
}

async fn serve(stream: TcpStream, script: Script, recording: Arc<Mutex<Recording>>) {
    let mut clear = BufReader::new(stream);
    if clear.write_all(b"220 scripted ESMTP\r\n").await.is_err() {
        return;
    }
    let offer = script.tls.is_some();
    let Some(SessionEnd::StartTls) = session(&mut clear, offer, "", &recording).await else {
        return;
    };
    let (Some(config), false) = (script.tls, script.break_handshake) else {
        let _ = clear.write_all(b"220 2.0.0 go ahead\r\n").await;
        return;
    };
    let _ = clear.write_all(b"220 2.0.0 go ahead\r\n").await;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let Ok(tls) = acceptor.accept(clear.into_inner()).await else {
        return;
    };
    let mut tls = BufReader::new(tls);
    let _ = session(&mut tls, false, "tls:", &recording).await;
}

async fn session<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    offer_starttls: bool,
    tag: &str,
    recording: &Mutex<Recording>,
) -> Option<SessionEnd> {
    let mut line = String::new();
    let mut accepted = 0;
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let command = line.trim_end().to_string();
        recording
            .lock()
            .unwrap()
            .commands
            .push(format!("{tag}{command}"));
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let tls = if offer_starttls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                format!("250-scripted\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n{tls}250 SIZE 1000000\r\n")
            }
            "HELO" | "NOOP" => "250 2.0.0 ok\r\n".into(),
            "RSET" => {
                accepted = 0;
                "250 2.0.0 ok\r\n".into()
            }
            "STARTTLS" => return Some(SessionEnd::StartTls),
            "MAIL" => {
                accepted = 0;
                "250 2.1.0 ok\r\n".into()
            }
            "RCPT" if command.contains("<reject") => "550 5.1.1 no such user\r\n".into(),
            "RCPT" if command.contains("<defer") => "451 4.2.0 mailbox busy\r\n".into(),
            "RCPT" => {
                accepted += 1;
                "250 2.1.5 ok\r\n".into()
            }
            "DATA" if accepted == 0 => "554 5.5.1 no valid recipients\r\n".into(),
            "DATA" => {
                stream.write_all(b"354 go ahead\r\n").await.ok()?;
                let mut message = Vec::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await.ok()? == 0 {
                        return None;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    message.extend_from_slice(unstuffed.as_bytes());
                }
                recording.lock().unwrap().messages.push(message);
                "250 2.0.0 queued\r\n".into()
            }
            "QUIT" => {
                let _ = stream.write_all(b"221 2.0.0 bye\r\n").await;
                return Some(SessionEnd::Quit);
            }
            _ => "502 5.5.2 unknown\r\n".into(),
        };
        stream.write_all(reply.as_bytes()).await.ok()?;
    }
}

/// A test CA, and server configs for certificates it or nobody signed.
struct TestPki {
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestPki {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// A server config presenting a CA-signed certificate for `names`.
    fn signed(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        server_config(cert.der().clone(), &key)
    }

    /// A server config presenting a self-signed certificate for `name`.
    fn self_signed(name: &str) -> Arc<rustls::ServerConfig> {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        server_config(certified.cert.der().clone(), &certified.signing_key)
    }

    fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

fn server_config(cert: CertificateDer<'static>, key: &KeyPair) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    )
}

async fn tls_attempt(
    server: &ScriptedServer,
    policy: TlsPolicy,
    extra_ca: Option<PathBuf>,
    dir: &Path,
) -> DeliveryAttempt {
    let mut settings = settings(dir);
    settings.extra_ca = extra_ca;
    deliverer(settings)
        .attempt(&job(
            smart_hosts(&[server.port], policy),
            &["b@example.test"],
        ))
        .await
}

fn scanner_policy() -> TlsPolicy {
    TlsPolicy::DomainValidation {
        domain: Some("scanner.test".into()),
    }
}

fn sent_mail_in_clear(server: &ScriptedServer) -> bool {
    server
        .commands()
        .iter()
        .any(|c| c.starts_with("MAIL") || c.starts_with("RCPT"))
}

#[tokio::test]
async fn domain_validation_accepts_the_right_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let server = ScriptedServer::start(Script {
        tls: Some(pki.signed(&["scanner.test"])),
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(
        &server,
        scanner_policy(),
        Some(pki.write_ca(dir.path())),
        dir.path(),
    )
    .await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    let tls = attempt.tls.expect("delivered over TLS");
    assert!(tls.version.starts_with("TLSv1_"), "{tls:?}");
    assert!(!tls.cipher.is_empty());
    assert!(!sent_mail_in_clear(&server));
    let mail = format!("tls:MAIL FROM:<a@sender.test> SIZE={}", MESSAGE.len());
    assert!(server.commands().contains(&mail), "{:?}", server.commands());
}

#[tokio::test]
async fn domain_validation_accepts_a_wildcard() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let server = ScriptedServer::start(Script {
        tls: Some(pki.signed(&["*.partner.test"])),
        break_handshake: false,
    })
    .await;
    let policy = TlsPolicy::DomainValidation {
        domain: Some("mx.partner.test".into()),
    };
    let attempt = tls_attempt(&server, policy, Some(pki.write_ca(dir.path())), dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
}

#[tokio::test]
async fn domain_validation_refuses_another_name_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let server = ScriptedServer::start(Script {
        tls: Some(pki.signed(&["other.test"])),
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(
        &server,
        scanner_policy(),
        Some(pki.write_ca(dir.path())),
        dir.path(),
    )
    .await;
    assert_eq!(codes(&attempt), vec![("temp", 454)]);
    let reply = reply_of(&attempt, 0);
    assert_eq!(reply.status, Some([4, 7, 5]));
    assert!(
        reply
            .text
            .contains("TLS certificate not valid for scanner.test"),
        "{reply}"
    );
    assert!(!sent_mail_in_clear(&server));
    assert_eq!(server.messages(), 0);
}

#[tokio::test]
async fn certificate_validation_checks_the_chain_not_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let ca = Some(pki.write_ca(dir.path()));
    let trusted = ScriptedServer::start(Script {
        tls: Some(pki.signed(&["other.test"])),
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(
        &trusted,
        TlsPolicy::CertificateValidation,
        ca.clone(),
        dir.path(),
    )
    .await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);

    let untrusted = ScriptedServer::start(Script {
        tls: Some(TestPki::self_signed("scanner.test")),
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(&untrusted, TlsPolicy::CertificateValidation, ca, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("temp", 454)]);
    assert!(
        reply_of(&attempt, 0).text.contains("not accepted"),
        "{}",
        reply_of(&attempt, 0)
    );
    assert!(!sent_mail_in_clear(&untrusted));
}

#[tokio::test]
async fn encryption_only_accepts_self_signed_but_requires_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let self_signed = ScriptedServer::start(Script {
        tls: Some(TestPki::self_signed("whatever.test")),
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(&self_signed, TlsPolicy::EncryptionOnly, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert!(attempt.tls.is_some());

    let clear_only = ScriptedServer::start(Script {
        tls: None,
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(&clear_only, TlsPolicy::EncryptionOnly, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("temp", 454)]);
    let reply = reply_of(&attempt, 0);
    assert_eq!(reply.status, Some([4, 7, 10]));
    assert!(reply.text.contains("does not offer STARTTLS"), "{reply}");
    assert!(!sent_mail_in_clear(&clear_only));
}

#[tokio::test]
async fn opportunistic_falls_back_to_clear_after_a_failed_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let broken = ScriptedServer::start(Script {
        tls: Some(TestPki::self_signed("broken.test")),
        break_handshake: true,
    })
    .await;
    let attempt = tls_attempt(&broken, TlsPolicy::Opportunistic, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert!(attempt.tls.is_none());
    assert_eq!(broken.messages(), 1);
    let starttls = broken
        .commands()
        .iter()
        .filter(|c| *c == "STARTTLS")
        .count();
    assert_eq!(starttls, 1, "the clear retry must not try STARTTLS again");

    // A required level never falls back.
    let attempt = tls_attempt(&broken, TlsPolicy::EncryptionOnly, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("temp", 454)]);
    assert_eq!(broken.messages(), 1);
}

#[tokio::test]
async fn opportunistic_uses_tls_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(Script {
        tls: Some(TestPki::self_signed("anything.test")),
        break_handshake: false,
    })
    .await;
    let attempt = tls_attempt(&server, TlsPolicy::Opportunistic, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert!(attempt.tls.is_some());
    assert!(!sent_mail_in_clear(&server));
}

#[tokio::test]
async fn mixed_recipient_answers_are_kept_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::start(Script {
        tls: None,
        break_handshake: false,
    })
    .await;
    let attempt = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[server.port], TlsPolicy::Opportunistic),
            &[
                "ok1@example.test",
                "reject@example.test",
                "defer@example.test",
                "ok2@example.test",
            ],
        ))
        .await;
    assert_eq!(
        codes(&attempt),
        vec![
            ("delivered", 250),
            ("perm", 550),
            ("temp", 451),
            ("delivered", 250)
        ]
    );
    assert_eq!(reply_of(&attempt, 1).status, Some([5, 1, 1]));
    assert_eq!(server.messages(), 1);
    let all_refused = deliverer(settings(dir.path()))
        .attempt(&job(
            smart_hosts(&[server.port], TlsPolicy::Opportunistic),
            &["reject@example.test"],
        ))
        .await;
    assert_eq!(codes(&all_refused), vec![("perm", 550)]);
    assert_eq!(
        server.messages(),
        1,
        "no message without an accepted recipient"
    );
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
            let job = job(
                smart_hosts(&[port], TlsPolicy::Opportunistic),
                &["b@example.test"],
            );
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
