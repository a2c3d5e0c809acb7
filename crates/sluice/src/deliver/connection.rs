//! One outbound SMTP connection: TCP (bound to the node's source address),
//! reply reading with smtp-proto, EHLO/HELO, and the STARTTLS upgrade
//! decided by the host's [`PeerTls`].
//!
//! [`establish`] returns a connection ready for MAIL FROM, or the
//! temporary-failure reply that makes the caller fail over to the next
//! address. A required TLS level that is not met ends here: no command
//! after EHLO is ever sent in clear on such a connection.

use super::tls_policy::{PeerTls, TlsConfigs};
use super::DeliverySettings;
use crate::message::Reply;
use crate::receive::TlsInfo;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::EhloResponse;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The step of the session an error happened in (for replies and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Mail,
    Rcpt,
    Data,
    DataBlock,
    FinalDot,
    Rset,
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::DataBlock => "message transfer",
            Phase::FinalDot => "end of data",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        })
    }
}

/// What went wrong on the wire. Every variant is a temporary failure.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// A socket error.
    #[error("{phase}: {source}")]
    Io {
        /// Where.
        phase: Phase,
        /// The error.
        source: io::Error,
    },
    /// The phase's time limit passed.
    #[error("{phase}: timed out")]
    Timeout {
        /// Where.
        phase: Phase,
    },
    /// The peer closed the connection.
    #[error("{phase}: connection closed by peer")]
    Closed {
        /// Where.
        phase: Phase,
    },
    /// The peer's reply could not be parsed.
    #[error("{phase}: unreadable reply ({detail})")]
    Protocol {
        /// Where.
        phase: Phase,
        /// The parser's complaint.
        detail: String,
    },
    /// The peer answered 421: it is closing the session.
    #[error("{phase}: {reply}")]
    Closing {
        /// Where.
        phase: Phase,
        /// The 421 reply.
        reply: Reply,
    },
}

impl SessionError {
    /// The reply recorded for recipients this error left unanswered.
    pub(super) fn to_reply(&self, peer: &str) -> Reply {
        match self {
            SessionError::Closing { reply, .. } => reply.clone(),
            SessionError::Io {
                phase: Phase::Connect,
                source,
            } => Reply::new(451, [4, 4, 1], format!("connect to {peer}: {source}")),
            SessionError::Timeout {
                phase: Phase::Connect,
            } => Reply::new(451, [4, 4, 1], format!("connect to {peer}: timed out")),
            other => Reply::new(451, [4, 4, 2], format!("{peer}: {other}")),
        }
    }
}

/// Plain TCP or TLS over it, after STARTTLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An SMTP client connection with its read buffer and what the server offered.
pub(super) struct Connection {
    transport: Transport,
    /// Received bytes not yet parsed (pipelined replies arrive together).
    unread: Vec<u8>,
    /// `ip:port` of the server.
    pub(super) peer: String,
    /// EHLO capabilities (`None` after HELO).
    capabilities: Option<EhloResponse<String>>,
    /// TLS facts once STARTTLS succeeded.
    pub(super) tls: Option<TlsInfo>,
    /// When the TCP connection was made (reuse has an age limit).
    pub(super) opened: Instant,
    /// Transactions finished on it (a connector may cap them).
    pub(super) transactions: usize,
}

impl Connection {
    pub(super) async fn connect(
        addr: SocketAddr,
        settings: &DeliverySettings,
    ) -> Result<Connection, SessionError> {
        let io_error = |source| SessionError::Io {
            phase: Phase::Connect,
            source,
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io_error)?;
        // The source address identifies this node to its peers (Postfix's
        // smtp_bind_address); it only applies within one address family.
        if let Some(bind) = settings.bind_address {
            if bind.is_ipv4() == addr.is_ipv4() {
                socket.bind(SocketAddr::new(bind, 0)).map_err(io_error)?;
            }
        }
        let stream = timeout(settings.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| SessionError::Timeout {
                phase: Phase::Connect,
            })?
            .map_err(io_error)?;
        // Pipelined batches are written whole; waiting for ACKs only adds latency.
        stream.set_nodelay(true).map_err(io_error)?;
        Ok(Connection {
            transport: Transport::Plain(stream),
            unread: Vec::new(),
            peer: addr.to_string(),
            capabilities: None,
            tls: None,
            opened: Instant::now(),
            transactions: 0,
        })
    }

    /// Whether EHLO advertised `extension` (an `smtp_proto::EXT_*` flag).
    pub(super) fn offers(&self, extension: u32) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|caps| caps.has_capability(extension))
    }

    /// The SIZE limit the server announced (0 = none).
    pub(super) fn size_limit(&self) -> usize {
        self.capabilities.as_ref().map_or(0, |caps| caps.size)
    }

    /// Writes `bytes` and flushes, within `limit`.
    pub(super) async fn send(
        &mut self,
        bytes: &[u8],
        phase: Phase,
        limit: Duration,
    ) -> Result<(), SessionError> {
        let write = async {
            self.transport.write_all(bytes).await?;
            self.transport.flush().await
        };
        timeout(limit, write)
            .await
            .map_err(|_| SessionError::Timeout { phase })?
            .map_err(|source| SessionError::Io { phase, source })
    }

    /// Reads one reply within `limit`; a 421 becomes [`SessionError::Closing`].
    pub(super) async fn read_reply(&mut self, phase: Phase, limit: Duration) -> Result<Reply, SessionError> {
        let (reply, _) = self.read_raw_reply(phase, limit).await?;
        if reply.code == 421 {
            return Err(SessionError::Closing { phase, reply });
        }
        Ok(reply)
    }

    /// Reads one reply, also returning its bytes (EHLO parses them again).
    async fn read_raw_reply(
        &mut self,
        phase: Phase,
        limit: Duration,
    ) -> Result<(Reply, Vec<u8>), SessionError> {
        timeout(limit, self.read_raw_reply_unbounded(phase))
            .await
            .map_err(|_| SessionError::Timeout { phase })?
    }

    async fn read_raw_reply_unbounded(&mut self, phase: Phase) -> Result<(Reply, Vec<u8>), SessionError> {
        let mut receiver = ResponseReceiver::default();
        let mut raw = Vec::new();
        loop {
            if !self.unread.is_empty() {
                let mut bytes = self.unread.iter();
                let parsed = receiver.parse(&mut bytes);
                let consumed = self.unread.len() - bytes.len();
                raw.extend_from_slice(&self.unread[..consumed]);
                self.unread.drain(..consumed);
                match parsed {
                    Ok(response) => return Ok((reply_from(response), raw)),
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(error) => {
                        return Err(SessionError::Protocol {
                            phase,
                            detail: format!("{error:?}"),
                        })
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let read = self
                .transport
                .read(&mut chunk)
                .await
                .map_err(|source| SessionError::Io { phase, source })?;
            if read == 0 {
                return Err(SessionError::Closed { phase });
            }
            self.unread.extend_from_slice(&chunk[..read]);
        }
    }

    /// EHLO, falling back to HELO when EHLO gets a 5xx. Returns the
    /// server's reply when neither is accepted.
    pub(super) async fn greet(
        &mut self,
        helo: &str,
        limit: Duration,
    ) -> Result<Result<(), Reply>, SessionError> {
        self.send(format!("EHLO {helo}\r\n").as_bytes(), Phase::Ehlo, limit)
            .await?;
        let (reply, raw) = self.read_raw_reply(Phase::Ehlo, limit).await?;
        if reply.code == 250 {
            // An EHLO answer smtp-proto cannot read still opened the
            // session; it just offers no extensions.
            self.capabilities = Some(
                EhloResponse::parse(&mut raw.iter()).unwrap_or_else(|_| EhloResponse {
                    hostname: String::new(),
                    ..EhloResponse::default()
                }),
            );
            return Ok(Ok(()));
        }
        if !reply.is_permanent() {
            return Ok(Err(reply));
        }
        self.send(format!("HELO {helo}\r\n").as_bytes(), Phase::Ehlo, limit)
            .await?;
        let reply = self.read_reply(Phase::Ehlo, limit).await?;
        self.capabilities = None;
        Ok(if reply.is_positive() { Ok(()) } else { Err(reply) })
    }

    /// Replaces the TCP transport by TLS over it.
    pub(super) async fn start_tls(
        self,
        connector: TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
        limit: Duration,
    ) -> Result<Connection, io::Error> {
        let Transport::Plain(stream) = self.transport else {
            return Err(io::Error::other("STARTTLS on a TLS connection"));
        };
        // Bytes after the 220 would be a response injection (CVE-2011-0411 class).
        if !self.unread.is_empty() {
            return Err(io::Error::other("data received after 220 to STARTTLS"));
        }
        let tls = timeout(limit, connector.connect(name, stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (_, session) = tls.get_ref();
        let info = TlsInfo {
            version: session
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher: session
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            client_cert_names: Vec::new(),
        };
        Ok(Connection {
            transport: Transport::Tls(Box::new(tls)),
            unread: Vec::new(),
            peer: self.peer,
            capabilities: None,
            tls: Some(info),
            opened: self.opened,
            transactions: self.transactions,
        })
    }

    /// Sends QUIT and closes, politely but without waiting long.
    pub(super) async fn quit(mut self) {
        let limit = Duration::from_secs(5);
        if self.send(b"QUIT\r\n", Phase::Quit, limit).await.is_ok() {
            let _ = self.read_reply(Phase::Quit, limit).await;
        }
        let _ = timeout(limit, self.transport.shutdown()).await;
    }

    /// Whether the peer has already closed or spoken (an idle connection
    /// with either is not reusable).
    pub(super) fn is_stale(&mut self) -> bool {
        if !self.unread.is_empty() {
            return true;
        }
        let stream = match &self.transport {
            Transport::Plain(stream) => stream,
            Transport::Tls(stream) => stream.get_ref().0,
        };
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Ok(_) => true,
            Err(error) => error.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

fn reply_from(response: smtp_proto::Response<String>) -> Reply {
    let [class, subject, detail] = response.esc;
    Reply {
        code: response.code,
        status: (class != 0).then_some([class.into(), subject.into(), detail.into()]),
        text: response.message,
    }
}

/// Why [`establish`] gave up on an address: the reply recorded for the
/// recipients, and the RFC 8460 result type when TLS was the reason.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) reply: Reply,
    pub(super) tls: Option<mail_auth::report::tlsrpt::ResultType>,
}

impl From<Reply> for Refusal {
    fn from(reply: Reply) -> Self {
        Refusal { reply, tls: None }
    }
}

fn tls_refusal(reply: Reply, result: mail_auth::report::tlsrpt::ResultType) -> Refusal {
    Refusal {
        reply,
        tls: Some(result),
    }
}

/// Connects to `addr` and brings the session to the point where MAIL FROM
/// may be sent, enforcing `policy` (the route's level or the host's DANE
/// or MTA-STS policy). `host` is the name the route gave (for
/// SNI and `DomainValidation` without a domain). `Err` is the reply of a
/// temporary failure; the caller tries the next address.
pub(super) async fn establish(
    addr: SocketAddr,
    host: &str,
    policy: &PeerTls,
    helo: &str,
    settings: &DeliverySettings,
    tls: &TlsConfigs,
) -> Result<Connection, Refusal> {
    use mail_auth::report::tlsrpt::ResultType;
    let peer = addr.to_string();
    let mut try_starttls = true;
    loop {
        let mut connection = Connection::connect(addr, settings)
            .await
            .map_err(|error| error.to_reply(&peer))?;
        let greeting = connection
            .read_reply(Phase::Greeting, settings.command_timeout)
            .await
            .map_err(|error| error.to_reply(&peer))?;
        if !greeting.is_positive() {
            connection.quit().await;
            return Err(unwelcome(&peer, "greeting", greeting).into());
        }
        match connection
            .greet(helo, settings.command_timeout)
            .await
            .map_err(|error| error.to_reply(&peer))?
        {
            Ok(()) => {}
            Err(reply) => {
                connection.quit().await;
                return Err(unwelcome(&peer, "EHLO", reply).into());
            }
        }
        if !try_starttls {
            return Ok(connection);
        }
        if !connection.offers(smtp_proto::EXT_START_TLS) {
            if policy.requires_tls() {
                connection.quit().await;
                return Err(tls_refusal(
                    policy.starttls_missing(&peer),
                    ResultType::StartTlsNotSupported,
                ));
            }
            return Ok(connection);
        }
        connection
            .send(b"STARTTLS\r\n", Phase::StartTls, settings.command_timeout)
            .await
            .map_err(|error| error.to_reply(&peer))?;
        let reply = connection
            .read_reply(Phase::StartTls, settings.command_timeout)
            .await
            .map_err(|error| error.to_reply(&peer))?;
        if reply.code != 220 {
            if policy.requires_tls() {
                connection.quit().await;
                return Err(tls_refusal(
                    policy.starttls_refused(&peer, &reply),
                    ResultType::StartTlsNotSupported,
                ));
            }
            // A refused STARTTLS leaves the clear session usable.
            return Ok(connection);
        }
        let name = policy.server_name(host)?;
        let connector = TlsConnector::from(policy.client_config(tls, host, &peer)?);
        match connection
            .start_tls(connector, name, settings.command_timeout)
            .await
        {
            Ok(mut secured) => {
                // RFC 3207 4.2: forget what was learnt in clear, ask again.
                match secured
                    .greet(helo, settings.command_timeout)
                    .await
                    .map_err(|error| error.to_reply(&peer))?
                {
                    Ok(()) => return Ok(secured),
                    Err(reply) => {
                        secured.quit().await;
                        return Err(unwelcome(&peer, "EHLO after STARTTLS", reply).into());
                    }
                }
            }
            Err(error) if policy.requires_tls() => {
                return Err(tls_refusal(
                    policy.handshake_failure(host, &peer, &error),
                    policy.failure_type(&error),
                ));
            }
            Err(error) => {
                // Opportunistic: as Postfix does, reconnect and stay in clear.
                tracing::info!(peer, %error, "TLS handshake failed; retrying in clear");
                try_starttls = false;
            }
        }
    }
}

/// A refusal before the transaction, kept temporary: the next host may
/// accept (Postfix's smtp_skip_5xx_greeting reasoning).
fn unwelcome(peer: &str, stage: &str, reply: Reply) -> Reply {
    if reply.is_transient() {
        return reply;
    }
    Reply::new(
        451,
        [4, 4, 0],
        format!("{peer} refused the session at {stage}: {reply}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_capabilities_are_read_from_postfix_style_replies() {
        // smtp-sink ends its EHLO reply with an empty "250 " line.
        let raw = b"250-smtp-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-DSN\r\n250-SIZE 1000\r\n250 \r\n";
        let caps = EhloResponse::parse(&mut raw.iter()).expect("parses");
        assert!(caps.has_capability(smtp_proto::EXT_PIPELINING));
        assert!(caps.has_capability(smtp_proto::EXT_DSN));
        assert!(!caps.has_capability(smtp_proto::EXT_START_TLS));
        assert_eq!(caps.size, 1000);
    }

    #[test]
    fn replies_keep_enhanced_codes_and_lines() {
        let mut receiver = ResponseReceiver::default();
        let raw = b"550-5.1.1 no such\r\n550 5.1.1 user here\r\n";
        let reply = reply_from(receiver.parse(&mut raw.iter()).expect("complete"));
        assert_eq!(reply.code, 550);
        assert_eq!(reply.status, Some([5, 1, 1]));
        assert_eq!(reply.text, "no such\nuser here");
    }
}
