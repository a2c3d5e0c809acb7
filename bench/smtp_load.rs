//! A load generator and a counting sink that speak STARTTLS, for
//! bench/relay.sh's TLS mode (Postfix's smtp-source and smtp-sink have no
//! TLS).
//!
//!   smtp-load send ADDR --starttls --ca ca.pem -s 50 -m 20000 -l 10240 \
//!       -f load@fabrikam.test -t bob@contoso.test
//!   smtp-load sink ADDR --cert cert.pem --key key.pem --count-file N
//!
//! `send` works like `smtp-source -s C -m N -l S`: C sessions at once, N
//! messages in all, one message per connection unless `--per-connection`
//! says more, each of about S octets; with `--starttls` every connection
//! upgrades to TLS (verifying the server against `--ca`) before MAIL, and
//! with `--pipelining` MAIL, RCPT and DATA go in one write. It prints the
//! rate at which the server accepted the messages.
//!
//! `sink` accepts every message, offers STARTTLS when given a certificate,
//! and keeps the number of messages received in `--count-file` (rewritten
//! every 50 ms), which relay.sh polls. SMTP is read and parsed with
//! smtp-proto; TLS is tokio-rustls with ring, as in sluice.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::Request;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[derive(Parser)]
#[command(
    name = "smtp-load",
    about = "SMTP load with STARTTLS: a sender and a counting sink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends messages over concurrent sessions and prints msgs/s.
    Send(SendArgs),
    /// Accepts and counts messages.
    Sink(SinkArgs),
}

#[derive(Parser)]
struct SendArgs {
    /// The server, address:port.
    server: SocketAddr,
    /// Concurrent sessions.
    #[arg(short = 's', long, default_value_t = 10)]
    sessions: usize,
    /// Messages in all.
    #[arg(short = 'm', long, default_value_t = 1000)]
    messages: usize,
    /// Message size in octets, headers included.
    #[arg(short = 'l', long, default_value_t = 10240)]
    size: usize,
    /// Envelope sender.
    #[arg(short = 'f', long, default_value = "load@fabrikam.test")]
    from: String,
    /// Envelope recipient.
    #[arg(short = 't', long, default_value = "bob@contoso.test")]
    to: String,
    /// EHLO name.
    #[arg(short = 'M', long, default_value = "bench-client.test")]
    helo: String,
    /// Messages per connection.
    #[arg(long, default_value_t = 1)]
    per_connection: usize,
    /// Upgrade every connection with STARTTLS before MAIL.
    #[arg(long)]
    starttls: bool,
    /// Trust roots for the server's certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Source address of the connections.
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Send MAIL, RCPT and DATA in one write and then read their replies
    /// (RFC 2920), as Postfix's SMTP client does with a server that
    /// offers PIPELINING.
    #[arg(long)]
    pipelining: bool,
}

#[derive(Parser)]
struct SinkArgs {
    /// Where to listen, address:port.
    listen: SocketAddr,
    /// Certificate chain (PEM); with `--key`, STARTTLS is offered.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// File holding the number of messages received so far.
    #[arg(long)]
    count_file: PathBuf,
}

/// The longest reply or command line either side accepts.
const MAX_LINE: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Send(args) => runtime.block_on(send(args)),
        Command::Sink(args) => runtime.block_on(sink(args)),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---- send ----

async fn send(args: SendArgs) -> Result<()> {
    let tls = match &args.ca {
        None if args.starttls => bail!("--starttls needs --ca"),
        Some(ca) if args.starttls => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).context("reading --ca")? {
                roots.add(cert.context("reading --ca")?)?;
            }
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        }
        _ => None,
    };
    let args = Arc::new(args);
    let body = Arc::new(body(args.size));
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut sessions = Vec::new();
    for _ in 0..args.sessions.max(1) {
        let (args, body, next, failed, tls) = (
            args.clone(),
            body.clone(),
            next.clone(),
            failed.clone(),
            tls.clone(),
        );
        sessions.push(tokio::spawn(async move {
            let mut reported = false;
            loop {
                let first = next.fetch_add(args.per_connection.max(1), Ordering::Relaxed);
                if first >= args.messages {
                    break;
                }
                let count = args.per_connection.max(1).min(args.messages - first);
                let mut outcome = Err(anyhow::anyhow!("not tried"));
                // A server still closing this client's last session may
                // find it at its per-address limit (421 at the greeting):
                // come back shortly, as an MTA would.
                for attempt in 0..50 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let attempt = connection(&args, tls.as_ref(), &body, first, count);
                    outcome = match tokio::time::timeout(TIMEOUT * 4, attempt).await {
                        Ok(result) => result,
                        Err(_) => Err(anyhow::anyhow!("timed out")),
                    };
                    match &outcome {
                        Err(error) if error.is::<Busy>() => continue,
                        _ => break,
                    }
                }
                if let Err(error) = outcome {
                    failed.fetch_add(count, Ordering::Relaxed);
                    if !reported {
                        reported = true;
                        eprintln!("smtp-load: a session failed: {error:#}");
                    }
                }
            }
        }));
    }
    for session in sessions {
        session.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    let sent = args.messages - failed;
    println!(
        "{sent} messages ({failed} failed) in {elapsed:.2} s: {:.0} msgs/s",
        sent as f64 / elapsed
    );
    if failed > 0 {
        bail!("{failed} messages were not accepted");
    }
    Ok(())
}

/// Lines of 78 octets up to about `size` octets.
fn body(size: usize) -> Vec<u8> {
    let line = b"La de da de da de da de da de da de da de da de da de da de da de da de da.\r\n";
    let mut body = Vec::with_capacity(size + line.len());
    while body.len() + line.len() <= size.max(line.len()) {
        body.extend_from_slice(line);
    }
    body
}

async fn connection(
    args: &SendArgs,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: &[u8],
    first: usize,
    count: usize,
) -> Result<()> {
    let socket = match args.server {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = args.source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(args.server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut client = Client::new(stream);
    if client.expect(2, "greeting").await.is_err() {
        return Err(Busy.into());
    }
    client
        .command(&format!("EHLO {}\r\n", args.helo), 2, "EHLO")
        .await?;
    match tls {
        Some(connector) => {
            client.command("STARTTLS\r\n", 2, "STARTTLS").await?;
            let name = ServerName::IpAddress(args.server.ip().into());
            let stream = connector
                .connect(name, client.into_inner())
                .await
                .context("TLS handshake")?;
            let mut client = Client::new(stream);
            client
                .command(&format!("EHLO {}\r\n", args.helo), 2, "EHLO after STARTTLS")
                .await?;
            transactions(&mut client, args, body, first, count).await
        }
        None => transactions(&mut client, args, body, first, count).await,
    }
}

async fn transactions<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    args: &SendArgs,
    body: &[u8],
    first: usize,
    count: usize,
) -> Result<()> {
    let mut message = Vec::with_capacity(body.len() + 256);
    for n in first..first + count {
        let envelope = [
            (format!("MAIL FROM:<{}>\r\n", args.from), 2, "MAIL"),
            (format!("RCPT TO:<{}>\r\n", args.to), 2, "RCPT"),
            ("DATA\r\n".to_string(), 3, "DATA"),
        ];
        if args.pipelining {
            let commands: String = envelope.iter().map(|(line, _, _)| line.as_str()).collect();
            let stream = client.reader.get_mut();
            stream.write_all(commands.as_bytes()).await?;
            stream.flush().await?;
            for (_, class, what) in &envelope {
                client.expect(*class, what).await?;
            }
        } else {
            for (line, class, what) in &envelope {
                client.command(line, *class, what).await?;
            }
        }
        // The whole message in one write, as an MTA streams it.
        message.clear();
        message.extend_from_slice(
            format!(
                "From: <{from}>\r\nTo: <{to}>\r\nSubject: load {n}\r\nMessage-ID: <{n}.{pid}@{helo}>\r\n\r\n",
                from = args.from,
                to = args.to,
                pid = std::process::id(),
                helo = args.helo,
            )
            .as_bytes(),
        );
        message.extend_from_slice(body);
        message.extend_from_slice(b".\r\n");
        let stream = client.reader.get_mut();
        stream.write_all(&message).await?;
        stream.flush().await?;
        client.expect(2, "end of DATA").await?;
    }
    client.command("QUIT\r\n", 2, "QUIT").await?;
    Ok(())
}

struct Client<S> {
    reader: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// The stream, for the TLS handshake: nothing may be buffered unread
    /// (RFC 3207), and nothing is, since replies are read one at a time.
    fn into_inner(self) -> S {
        self.reader.into_inner()
    }

    async fn command(&mut self, line: &str, class: u16, what: &str) -> Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes()).await?;
        stream.flush().await?;
        self.expect(class, what).await
    }

    /// Reads one reply; it must be of `class` (2 for 2xx).
    async fn expect(&mut self, class: u16, what: &str) -> Result<()> {
        let mut receiver = ResponseReceiver::default();
        let response = tokio::time::timeout(TIMEOUT, async {
            loop {
                let available = self.reader.fill_buf().await?;
                if available.is_empty() {
                    bail!("connection closed");
                }
                let mut bytes = available.iter();
                let parsed = receiver.parse(&mut bytes);
                let consumed = available.len() - bytes.len();
                self.reader.consume(consumed);
                match parsed {
                    Ok(response) => return Ok(response),
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(error) => bail!("bad reply: {error:?}"),
                }
            }
        })
        .await
        .with_context(|| format!("{what}: no reply"))??;
        if response.code / 100 != class {
            bail!("{what}: {} {}", response.code, response.message);
        }
        Ok(())
    }
}

/// The server turned the connection away at the greeting.
#[derive(Debug, thiserror::Error)]
#[error("refused at the greeting")]
struct Busy;

// ---- sink ----

async fn sink(args: SinkArgs) -> Result<()> {
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .context("reading --cert")?
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(key).context("reading --key")?;
            let config = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        _ => None,
    };
    let listener = TcpListener::bind(args.listen).await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let count_file = args.count_file.clone();
    tokio::spawn(async move {
        let staging = count_file.with_extension("tmp");
        let mut last = u64::MAX;
        loop {
            let now = counter.load(Ordering::Relaxed);
            if now != last
                && std::fs::write(&staging, format!("{now}\n")).is_ok()
                && std::fs::rename(&staging, &count_file).is_ok()
            {
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let (tls, received) = (tls.clone(), received.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // A peer that misbehaves only ends its own session.
            let _ = tokio::time::timeout(TIMEOUT * 10, serve(stream, tls, received)).await;
        });
    }
}

async fn serve(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    received: Arc<AtomicU64>,
) -> Result<()> {
    let mut session = BufReader::new(stream);
    session.get_mut().write_all(b"220 sink.test ESMTP\r\n").await?;
    if let Some(acceptor) = tls {
        if commands(&mut session, true, &received).await? == Upgrade::StartTls {
            let stream = acceptor.accept(session.into_inner()).await?;
            commands(&mut BufReader::new(stream), false, &received).await?;
        }
    } else {
        commands(&mut session, false, &received).await?;
    }
    Ok(())
}

#[derive(PartialEq)]
enum Upgrade {
    StartTls,
    Done,
}

/// Answers commands until QUIT, or STARTTLS when `offer_tls`.
async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut BufReader<S>,
    offer_tls: bool,
    received: &AtomicU64,
) -> Result<Upgrade> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut *session)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(Upgrade::Done);
        }
        let reply: &[u8] = match Request::parse(&mut line.iter()) {
            Ok(Request::Ehlo { .. }) if offer_tls => {
                b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 104857600\r\n"
            }
            Ok(Request::Ehlo { .. }) => {
                b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n"
            }
            Ok(Request::StartTls) if offer_tls => {
                session
                    .get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await?;
                session.get_mut().flush().await?;
                return Ok(Upgrade::StartTls);
            }
            Ok(Request::Data) => {
                session
                    .get_mut()
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                session.get_mut().flush().await?;
                let mut data = smtp_proto::request::receiver::DummyDataReceiver::new_data(
                    &smtp_proto::request::receiver::DataReceiver::new(),
                );
                loop {
                    let available = session.fill_buf().await?;
                    if available.is_empty() {
                        return Ok(Upgrade::Done);
                    }
                    let mut bytes = available.iter();
                    let done = data.ingest(&mut bytes);
                    let consumed = available.len() - bytes.len();
                    session.consume(consumed);
                    if done {
                        break;
                    }
                }
                received.fetch_add(1, Ordering::Relaxed);
                b"250 2.0.0 Ok: counted\r\n"
            }
            Ok(Request::Quit) => {
                session.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                session.get_mut().flush().await?;
                return Ok(Upgrade::Done);
            }
            Ok(
                Request::Helo { .. }
                | Request::Mail { .. }
                | Request::Rcpt { .. }
                | Request::Rset
                | Request::Noop { .. },
            ) => b"250 2.0.0 Ok\r\n",
            Ok(_) => b"502 5.5.1 Not implemented\r\n",
            Err(_) => b"500 5.5.2 Syntax error\r\n",
        };
        session.get_mut().write_all(reply).await?;
        // Replies to pipelined commands go out together.
        if session.buffer().is_empty() {
            session.get_mut().flush().await?;
        }
    }
}
