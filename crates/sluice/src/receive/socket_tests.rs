//! The listener over real sockets on 127.0.0.1, with a recording intake
//! standing in for the rest of the pipeline, rustls clients and swaks.

use super::{serve, Intake, ReceiveContext, SessionLimits, Submission};
use crate::config::objects::ObjectSet;
use crate::message::Reply;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Every test step is bounded: a hang fails the test instead of blocking CI.
const STEP: Duration = Duration::from_secs(10);

#[derive(Default)]
struct RecordingIntake {
    submissions: Mutex<Vec<Submission>>,
}

impl Intake for RecordingIntake {
    fn accept(&self, submission: Submission) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(async move {
            self.submissions.lock().unwrap().push(submission);
            Reply::new(250, [2, 0, 0], "Queued")
        })
    }
}

struct TestServer {
    address: SocketAddr,
    intake: Arc<RecordingIntake>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    certificate: PathBuf,
    _data_dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(limits: SessionLimits) -> Self {
        Self::start_with_client_ca(limits, None).await
    }

    async fn start_with_client_ca(limits: SessionLimits, client_ca: Option<&std::path::Path>) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::server_config(None, client_ca, data_dir.path(), "mx.contoso.test").unwrap();
        let objects = toml::from_str::<ObjectSet>("[[accepted_domain]]\nname = \"contoso.test\"\n").unwrap();
        let policy = crate::policy::Policy::compile(&objects).unwrap();
        let (_policy_sender, policy) = watch::channel(Arc::new(policy));
        let intake = Arc::new(RecordingIntake::default());
        let context = Arc::new(ReceiveContext {
            hostname: "mx.contoso.test".to_string(),
            limits,
            tls: Some(tls),
            policy,
            intake: intake.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let task = tokio::spawn(serve(listener, context, shutdown_receiver));
        TestServer {
            address,
            intake,
            shutdown,
            task,
            certificate: data_dir.path().join("tls/self-signed.crt"),
            _data_dir: data_dir,
        }
    }

    fn submission_count(&self) -> usize {
        self.intake.submissions.lock().unwrap().len()
    }

    /// Stops the listener, waits for every session to end, returns what
    /// the intake received.
    async fn stop(self) -> Vec<Submission> {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(STEP, self.task).await.unwrap().unwrap();
        std::mem::take(&mut *self.intake.submissions.lock().unwrap())
    }
}

/// A line-oriented SMTP client over any stream.
struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.stream.get_mut().write_all(bytes))
            .await
            .unwrap()
            .unwrap();
    }
}

impl<S: AsyncRead + Unpin> Client<S> {
    /// One complete (possibly multi-line) reply; empty at end of stream.
    async fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(STEP, self.stream.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            text.push_str(&line);
            if read == 0 || line.as_bytes().get(3) == Some(&b' ') {
                return text;
            }
        }
    }

    async fn expect(&mut self, prefix: &str) -> String {
        let reply = self.reply().await;
        assert!(reply.starts_with(prefix), "expected {prefix}, got {reply:?}");
        reply
    }

    /// The next replies, in order, each starting with its prefix.
    async fn expect_all(&mut self, prefixes: &[&str]) {
        for prefix in prefixes {
            self.expect(prefix).await;
        }
    }
}

impl Client<TcpStream> {
    /// Upgrades with STARTTLS already answered 220, trusting the test
    /// server's certificate and presenting `client_cert`.
    async fn start_tls(
        self,
        server: &TestServer,
        client_cert: rustls_pki_types::CertificateDer<'static>,
        client_key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = client_tls(server, client_cert, client_key, crate::tls::provider());
        self.start_tls_with(config).await
    }

    /// Upgrades with STARTTLS already answered 220, with `config`.
    async fn start_tls_with(
        self,
        config: Arc<rustls::ClientConfig>,
    ) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(config);
        let server_name = rustls_pki_types::ServerName::try_from("mx.contoso.test").unwrap();
        let tls = tokio::time::timeout(STEP, connector.connect(server_name, self.stream.into_inner()))
            .await
            .unwrap()
            .expect("the TLS handshake must succeed");
        Client {
            stream: BufReader::new(tls),
        }
    }
}

/// A client configuration trusting the test server's certificate and
/// presenting `client_cert`, with the cipher suites of `provider`.
fn client_tls(
    server: &TestServer,
    client_cert: rustls_pki_types::CertificateDer<'static>,
    client_key: rustls_pki_types::PrivateKeyDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_file_iter(&server.certificate).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert], client_key)
        .unwrap();
    Arc::new(config)
}

/// A connection whose 220 greeting has been read.
async fn connect_greeted(address: SocketAddr) -> Client<TcpStream> {
    let mut client = connect(address).await;
    client.expect("220").await;
    client
}

async fn connect(address: SocketAddr) -> Client<TcpStream> {
    let stream = tokio::time::timeout(STEP, TcpStream::connect(address))
        .await
        .unwrap()
        .unwrap();
    Client {
        stream: BufReader::new(stream),
    }
}

fn fast_limits() -> SessionLimits {
    SessionLimits {
        max_message_size: 100_000,
        ..SessionLimits::default()
    }
}

#[tokio::test]
async fn ehlo_lists_capabilities() {
    let server = TestServer::start(fast_limits()).await;
    let mut client = connect(server.address).await;
    client.expect("220 mx.contoso.test ESMTP").await;
    client.send(b"EHLO client.test\r\n").await;
    let ehlo = client.expect("250-mx.contoso.test\r\n").await;
    for extension in [
        "PIPELINING",
        "SIZE 100000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(extension), "{extension} missing from {ehlo}");
    }
    client.send(b"QUIT\r\n").await;
    client.expect("221 2.0.0").await;
    assert_eq!(client.reply().await, "", "closed after QUIT");
    server.stop().await;
}

#[tokio::test]
async fn pipelined_transaction_in_one_write() {
    let server = TestServer::start(fast_limits()).await;
    let mut client = connect_greeted(server.address).await;
    client
        .send(b"EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
        .await;
    client
        .expect_all(&["250-", "250 2.1.0", "250 2.1.5", "550 5.7.1", "354"])
        .await;
    client
        .send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        .await;
    client.expect_all(&["250 2.0.0 Queued", "221"]).await;
    let submissions = server.stop().await;
    assert_eq!(submissions.len(), 1);
    assert_eq!(submissions[0].envelope.recipients.len(), 1);
    assert!(submissions[0]
        .content
        .to_bytes()
        .ends_with(b"Subject: pipelined\r\n\r\nbody\r\n"));
    assert_eq!(submissions[0].session.peer.ip().to_string(), "127.0.0.1");
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let server = TestServer::start(fast_limits()).await;
    let mut client = connect_greeted(server.address).await;
    client
        .send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nBDAT 12\r\nSubject: b\r\nBDAT 9 LAST\r\n\r\nchunk\r\n")
        .await;
    client
        .expect_all(&[
            "250-",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0 12 octets",
            "250 2.0.0 Queued",
        ])
        .await;
    let submissions = server.stop().await;
    assert_eq!(submissions.len(), 1);
    assert!(submissions[0]
        .content
        .to_bytes()
        .ends_with(b"Subject: b\r\n\r\nchunk\r\n"));
}

#[tokio::test]
async fn client_vanishing_mid_data_leaves_nothing() {
    let server = TestServer::start(fast_limits()).await;
    let mut client = connect_greeted(server.address).await;
    client
        .send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n")
        .await;
    client
        .expect_all(&["250-", "250 2.1.0", "250 2.1.5", "354"])
        .await;
    client.send(b"Subject: cut\r\n\r\nhalf a mess").await;
    drop(client);
    // stop() waits for every session, the abandoned one included.
    assert!(server.stop().await.is_empty());
}

#[tokio::test]
async fn relay_is_denied_over_the_wire() {
    let server = TestServer::start(fast_limits()).await;
    let mut client = connect_greeted(server.address).await;
    client
        .send(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<z@example.org>\r\nDATA\r\n")
        .await;
    client
        .expect_all(&["250 mx.contoso.test", "250 2.1.0", "550 5.7.1", "554 5.5.1"])
        .await;
    assert_eq!(server.submission_count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_421() {
    let server = TestServer::start(SessionLimits {
        max_connections: 1,
        ..fast_limits()
    })
    .await;
    let mut first = connect_greeted(server.address).await;
    let mut second = connect(server.address).await;
    second.expect("421 4.3.2").await;
    assert_eq!(second.reply().await, "");
    first.send(b"NOOP\r\n").await;
    first.expect("250 2.0.0").await;
    server.stop().await;
}

#[tokio::test]
async fn idle_client_times_out_with_421() {
    let server = TestServer::start(SessionLimits {
        command_timeout: Duration::from_millis(300),
        ..fast_limits()
    })
    .await;
    let mut client = connect_greeted(server.address).await;
    client.expect("421 4.4.2").await;
    assert_eq!(client.reply().await, "");
    server.stop().await;
}

#[tokio::test]
async fn connections_per_address_over_the_limit_get_421_4_7_0() {
    let server = TestServer::start(SessionLimits {
        max_connections_per_ip: 2,
        ..fast_limits()
    })
    .await;
    let mut first = connect_greeted(server.address).await;
    let mut second = connect_greeted(server.address).await;
    let mut third = connect(server.address).await;
    let refusal = third.expect("421 4.7.0").await;
    assert!(refusal.contains("from your address"), "{refusal}");
    assert_eq!(third.reply().await, "");
    // A session that ends gives its place back.
    first.send(b"QUIT\r\n").await;
    first.expect("221").await;
    assert_eq!(first.reply().await, "");
    let _fourth = connect_greeted(server.address).await;
    second.send(b"NOOP\r\n").await;
    second.expect("250 2.0.0").await;
    server.stop().await;
}

#[tokio::test]
async fn refused_recipients_count_as_errors_until_421() {
    let server = TestServer::start(SessionLimits {
        max_errors: 3,
        ..fast_limits()
    })
    .await;
    let mut client = connect_greeted(server.address).await;
    client.send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\n").await;
    client.expect_all(&["250", "250 2.1.0"]).await;
    for n in 0..3 {
        client
            .send(format!("RCPT TO:<probe{n}@example.org>\r\n").as_bytes())
            .await;
        client.expect("550 5.7.1").await;
    }
    // Accepted recipients do not count, refused ones and bad commands do.
    client.send(b"RCPT TO:<b@contoso.test>\r\n").await;
    client.expect("250 2.1.5").await;
    client.send(b"RCPT TO:<probe3@example.org>\r\n").await;
    let last = client.expect("421 4.7.0").await;
    assert!(last.contains("too many errors"), "{last}");
    assert_eq!(client.reply().await, "", "the session must end after 421");
    assert_eq!(server.submission_count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_busy_session_still_ends_at_the_session_time_limit() {
    let server = TestServer::start(SessionLimits {
        session_timeout: Duration::from_millis(800),
        command_timeout: Duration::from_secs(30),
        ..fast_limits()
    })
    .await;
    let mut client = connect_greeted(server.address).await;
    // Never idle: a NOOP every 100 ms keeps the command timeout away.
    let mut answered = 0;
    let ending = loop {
        client.send(b"NOOP\r\n").await;
        let reply = client.reply().await;
        if !reply.starts_with("250") {
            break reply;
        }
        answered += 1;
        assert!(answered < 100, "the session outlived its time limit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ending.starts_with("421 4.7.0"), "{ending:?}");
    assert!(ending.contains("session time limit"), "{ending:?}");
    assert_eq!(client.reply().await, "");
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_message_ends_at_the_data_time_limit() {
    let server = TestServer::start(SessionLimits {
        data_timeout: Duration::from_millis(800),
        command_timeout: Duration::from_secs(30),
        ..fast_limits()
    })
    .await;
    let mut client = connect_greeted(server.address).await;
    client
        .send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n")
        .await;
    client.expect_all(&["250", "250 2.1.0", "250 2.1.5", "354"]).await;
    // One short line every 100 ms: each read is quick, the transfer is not.
    let (read_half, mut write_half) = client.stream.into_inner().into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write_half.write_all(b"still sending\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the transfer outlived its time limit");
    });
    let mut client = Client {
        stream: BufReader::new(read_half),
    };
    let ending = client.reply().await;
    assert!(ending.starts_with("421 4.7.0"), "{ending:?}");
    assert!(ending.contains("transfer time limit"), "{ending:?}");
    assert_eq!(client.reply().await, "");
    trickle.abort();
    assert_eq!(server.submission_count(), 0, "a timed-out message was submitted");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_421() {
    let server = TestServer::start(fast_limits()).await;
    let mut client = connect_greeted(server.address).await;
    let stopping = tokio::spawn(server.stop());
    client.expect("421 4.3.2").await;
    tokio::time::timeout(STEP, stopping).await.unwrap().unwrap();
}

/// A CA and a client certificate it issued for `name`, as PEM files.
fn client_pki(
    dir: &std::path::Path,
    name: &str,
) -> (
    PathBuf,
    rustls_pki_types::CertificateDer<'static>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_path = dir.join("client-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    (ca_path, cert.der().clone(), key_der)
}

#[tokio::test]
async fn a_returning_client_resumes_its_session_and_keeps_its_certificate_names() {
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca_path, client_cert, client_key) = client_pki(pki_dir.path(), "relay.fabrikam.test");
    let server = TestServer::start_with_client_ca(fast_limits(), Some(&ca_path)).await;
    // rustls' own order puts AES-256-GCM/SHA-384 first, as OpenSSL's does:
    // the server's preference picks the cheaper suite all the same.
    let config = client_tls(
        &server,
        client_cert,
        client_key,
        Arc::new(rustls::crypto::ring::default_provider()),
    );
    let mut kinds = Vec::new();
    for n in 0..3 {
        let mut client = connect_greeted(server.address).await;
        client.send(b"EHLO c\r\nSTARTTLS\r\n").await;
        client.expect_all(&["250-", "220 2.0.0"]).await;
        let mut client = client.start_tls_with(config.clone()).await;
        let (_, connection) = client.stream.get_ref().get_ref();
        kinds.push(connection.handshake_kind());
        assert_eq!(
            connection.negotiated_cipher_suite().map(|suite| suite.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        let message = format!(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\nSubject: {n}\r\n\r\nbody\r\n.\r\nQUIT\r\n"
        );
        client.send(message.as_bytes()).await;
        client
            .expect_all(&["250-", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221"])
            .await;
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(kinds, vec![Some(Full), Some(Resumed), Some(Resumed)]);
    let submissions = server.stop().await;
    assert_eq!(submissions.len(), 3);
    for submission in &submissions {
        // The ticket carries the verified chain: a resumed session still
        // identifies the partner's inbound connector.
        let tls = submission.session.tls.clone().unwrap();
        assert_eq!(tls.client_cert_names, vec!["relay.fabrikam.test"]);
        assert_eq!(tls.cipher, "TLS13_AES_128_GCM_SHA256");
    }
}

#[tokio::test]
async fn starttls_with_a_client_certificate() {
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca_path, client_cert, client_key) = client_pki(pki_dir.path(), "relay.fabrikam.test");
    let server = TestServer::start_with_client_ca(fast_limits(), Some(&ca_path)).await;
    let mut client = connect_greeted(server.address).await;
    // The command after STARTTLS is injected in clear: it must be dropped.
    client
        .send(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
        .await;
    client.expect_all(&["250-", "220 2.0.0"]).await;

    let mut client = client.start_tls(&server, client_cert, client_key).await;
    client.send(b"MAIL FROM:<a@x.test>\r\n").await;
    client.expect("503 5.5.1").await;
    client.send(b"EHLO c\r\n").await;
    let ehlo = client.expect("250-").await;
    assert!(!ehlo.contains("STARTTLS"));
    client.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\nSubject: tls\r\n\r\nsecret\r\n.\r\n").await;
    client
        .expect_all(&["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"])
        .await;
    let submissions = server.stop().await;
    assert_eq!(submissions.len(), 1);
    let tls = submissions[0].session.tls.clone().unwrap();
    assert_eq!(tls.version, "TLSv1_3");
    assert_eq!(tls.client_cert_names, vec!["relay.fabrikam.test"]);
    let content = String::from_utf8_lossy(&submissions[0].content.to_bytes()).into_owned();
    assert!(content.contains("with ESMTPS id"), "{content}");
    assert!(content.contains("(using TLSv1.3 with cipher TLS13_"), "{content}");
    assert_eq!(submissions[0].envelope.mail_from.to_string(), "a@x.test");
}

/// Runs swaks against the server; returns its exit status and output.
async fn swaks(address: SocketAddr, extra: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new("timeout");
    command.args([
        "30",
        "swaks",
        "--server",
        &address.to_string(),
        "--ehlo",
        "swaks.test",
        "--from",
        "sender@x.test",
        "--to",
        "b@contoso.test",
        "--timeout",
        "20",
        "--header",
        "Subject: via swaks",
    ]);
    command.args(extra);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_delivers_with_and_without_tls() {
    let server = TestServer::start(fast_limits()).await;
    let (ok, transcript) = swaks(server.address, &[]).await;
    assert!(ok, "{transcript}");
    let (ok, transcript) = swaks(server.address, &["--tls"]).await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("TLS started"), "{transcript}");
    let submissions = server.stop().await;
    assert_eq!(submissions.len(), 2);
    assert!(submissions[0].session.tls.is_none());
    assert!(submissions[1].session.tls.is_some());
    for submission in &submissions {
        let content = String::from_utf8_lossy(&submission.content.to_bytes()).into_owned();
        assert!(
            content.starts_with("Received: from swaks.test ([127.0.0.1])"),
            "{content}"
        );
        assert!(content.contains("Subject: via swaks"), "{content}");
        assert_eq!(submission.envelope.mail_from.to_string(), "sender@x.test");
    }
}

#[tokio::test]
async fn untrusted_client_certificate_still_gets_tls_but_identifies_nothing() {
    let pki_dir = tempfile::tempdir().unwrap();
    let (trusted_ca, _, _) = client_pki(pki_dir.path(), "relay.fabrikam.test");
    let other_dir = tempfile::tempdir().unwrap();
    let (_, foreign_cert, foreign_key) = client_pki(other_dir.path(), "relay.fabrikam.test");
    let server = TestServer::start_with_client_ca(fast_limits(), Some(&trusted_ca)).await;
    let mut client = connect_greeted(server.address).await;
    client.send(b"EHLO c\r\nSTARTTLS\r\n").await;
    client.expect_all(&["250-", "220 2.0.0"]).await;
    // A certificate from an unknown CA must not break the handshake.
    let mut client = client.start_tls(&server, foreign_cert, foreign_key).await;
    client
        .send(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n\r\nx\r\n.\r\n")
        .await;
    client
        .expect_all(&["250-", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"])
        .await;
    let submissions = server.stop().await;
    let tls = submissions[0].session.tls.clone().unwrap();
    assert!(tls.client_cert_names.is_empty(), "{:?}", tls.client_cert_names);
}
