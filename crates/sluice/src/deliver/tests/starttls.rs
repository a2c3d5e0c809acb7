//! STARTTLS under each TLS level, and mixed per-recipient answers, against
//! a scripted SMTP server (smtp-sink has no TLS and answers every RCPT
//! alike): rcgen certificates from a test CA, for the right name, another
//! name, a wildcard, and self-signed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use std::sync::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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
    /// A server that offers STARTTLS with `tls` (none: clear text only)
    /// and completes the handshake.
    async fn serving(tls: Option<Arc<rustls::ServerConfig>>) -> ScriptedServer {
        ScriptedServer::start(Script {
            tls,
            break_handshake: false,
        })
        .await
    }

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
        recording.lock().unwrap().commands.push(format!("{tag}{command}"));
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let tls = if offer_starttls { "250-STARTTLS\r\n" } else { "" };
                format!(
                    "250-scripted\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n{tls}250 SIZE 1000000\r\n"
                )
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
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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
        .attempt(&job(smart_hosts(&[server.port], policy), &["b@example.test"]))
        .await
}

fn scanner_policy() -> TlsPolicy {
    TlsPolicy::DomainValidation {
        domain: Some("scanner.test".into()),
    }
}

/// A `DomainValidation` (scanner.test) attempt at a server whose
/// certificate, from a trusted CA, names `names`.
async fn scanner_attempt(names: &[&str]) -> (ScriptedServer, DeliveryAttempt) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let server = ScriptedServer::serving(Some(pki.signed(names))).await;
    let ca = Some(pki.write_ca(dir.path()));
    let attempt = tls_attempt(&server, scanner_policy(), ca, dir.path()).await;
    (server, attempt)
}

fn sent_mail_in_clear(server: &ScriptedServer) -> bool {
    server
        .commands()
        .iter()
        .any(|c| c.starts_with("MAIL") || c.starts_with("RCPT"))
}

#[tokio::test]
async fn domain_validation_accepts_the_right_name() {
    let (server, attempt) = scanner_attempt(&["scanner.test"]).await;
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
    let server = ScriptedServer::serving(Some(pki.signed(&["*.partner.test"]))).await;
    let policy = TlsPolicy::DomainValidation {
        domain: Some("mx.partner.test".into()),
    };
    let attempt = tls_attempt(&server, policy, Some(pki.write_ca(dir.path())), dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
}

#[tokio::test]
async fn domain_validation_refuses_another_name_and_sends_nothing() {
    let (server, attempt) = scanner_attempt(&["other.test"]).await;
    assert_eq!(codes(&attempt), vec![("temp", 454)]);
    let reply = reply_of(&attempt, 0);
    assert_eq!(reply.status, Some([4, 7, 5]));
    assert!(
        reply.text.contains("TLS certificate not valid for scanner.test"),
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
    let trusted = ScriptedServer::serving(Some(pki.signed(&["other.test"]))).await;
    let attempt = tls_attempt(&trusted, TlsPolicy::CertificateValidation, ca.clone(), dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);

    let untrusted = ScriptedServer::serving(Some(TestPki::self_signed("scanner.test"))).await;
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
    let self_signed = ScriptedServer::serving(Some(TestPki::self_signed("whatever.test"))).await;
    let attempt = tls_attempt(&self_signed, TlsPolicy::EncryptionOnly, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert!(attempt.tls.is_some());

    let clear_only = ScriptedServer::serving(None).await;
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
    let starttls = broken.commands().iter().filter(|c| *c == "STARTTLS").count();
    assert_eq!(starttls, 1, "the clear retry must not try STARTTLS again");

    // A required level never falls back.
    let attempt = tls_attempt(&broken, TlsPolicy::EncryptionOnly, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("temp", 454)]);
    assert_eq!(broken.messages(), 1);
}

#[tokio::test]
async fn opportunistic_uses_tls_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::serving(Some(TestPki::self_signed("anything.test"))).await;
    let attempt = tls_attempt(&server, TlsPolicy::Opportunistic, None, dir.path()).await;
    assert_eq!(codes(&attempt), vec![("delivered", 250)]);
    assert!(attempt.tls.is_some());
    assert!(!sent_mail_in_clear(&server));
}

#[tokio::test]
async fn mixed_recipient_answers_are_kept_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let server = ScriptedServer::serving(None).await;
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
        .attempt(&opportunistic_job(&[server.port], &["reject@example.test"]))
        .await;
    assert_eq!(codes(&all_refused), vec![("perm", 550)]);
    assert_eq!(server.messages(), 1, "no message without an accepted recipient");
}
