//! Drives one [`Session`] over a byte stream: reads with the RFC 5321
//! timeouts, writes replies (flushed before every read, so pipelined
//! replies go out in one batch), runs the STARTTLS handshake and hands
//! complete messages to the intake.
//!
//! A client that disappears mid-message leaves nothing behind: the intake
//! is only called with a complete, accepted body.

use super::session::{Event, Session};
use super::{ReceiveContext, TlsInfo};
use crate::message::Reply;
use crate::store::space::FreeSpace;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Bytes read per call: also the most input buffered beyond the line limit.
const READ_BUFFER: usize = 16 * 1024;

/// The connection's byte stream, before or after STARTTLS.
enum Transport<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only while the handshake owns the stream; never read or written.
    Handshaking,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buffer).await,
            Transport::Tls(stream) => stream.read(buffer).await,
            Transport::Handshaking => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Transport::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Transport::Handshaking => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        // Best effort: the peer may already be gone.
        let _ = match self {
            Transport::Plain(stream) => stream.shutdown().await,
            Transport::Tls(stream) => stream.shutdown().await,
            Transport::Handshaking => Ok(()),
        };
    }
}

/// Why a session ended early; for the log only (the client got its reply).
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("timeout ({0})")]
    Timeout(Expiry),
    #[error("node shutting down")]
    Shutdown,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// Runs a whole session on `stream` until QUIT, error, timeout or shutdown.
pub(super) async fn run<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    context: &ReceiveContext,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session::new(
        context.hostname.clone(),
        context.limits.clone(),
        context.policy.clone(),
        peer,
        local,
        context.tls.is_some(),
    );
    let mut transport = Transport::Plain(stream);
    match converse(&mut session, &mut transport, context, shutdown).await {
        Ok(()) => tracing::debug!(peer = %peer, "session ended"),
        Err(end) => tracing::info!(peer = %peer, reason = %end, "session ended early"),
    }
    transport.shutdown().await;
}

async fn converse<S>(
    session: &mut Session,
    transport: &mut Transport<S>,
    context: &ReceiveContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &context.limits;
    let session_deadline = Instant::now() + limits.session_timeout;
    let mut transfer_deadline: Option<Instant> = None;
    let mut output = session.greeting().to_wire().into_bytes();
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        while let Some(event) = session.poll() {
            match event {
                Event::Reply(reply) => output.extend_from_slice(reply.to_wire().as_bytes()),
                Event::Refused(refusal) => {
                    output.extend_from_slice(refusal.reply.to_wire().as_bytes());
                    context.intake.refused(*refusal);
                }
                Event::ReplyAndClose(reply) => {
                    output.extend_from_slice(reply.to_wire().as_bytes());
                    return send(transport, &mut output, limits.command_timeout).await;
                }
                Event::StartTls(reply) => {
                    output.extend_from_slice(reply.to_wire().as_bytes());
                    send(transport, &mut output, limits.command_timeout).await?;
                    let Some(config) = context.tls.clone() else {
                        return Ok(());
                    };
                    let tls = start_tls(transport, config, limits.command_timeout).await?;
                    session.tls_established(tls);
                }
                Event::Submit(submission) => {
                    // Earlier replies go out first: the intake may take a while.
                    send(transport, &mut output, limits.command_timeout).await?;
                    let mut reply = context.intake.accept(*submission).await;
                    // A store write that failed because the disk filled up
                    // is said as such: the client retries later.
                    if reply.code / 100 == 4 {
                        if let Some(full) = limits.free_space.as_ref().and_then(FreeSpace::refusal_now) {
                            reply = full;
                        }
                    }
                    output.extend_from_slice(reply.to_wire().as_bytes());
                }
            }
        }
        send(transport, &mut output, limits.command_timeout).await?;
        if session.in_message_transfer() {
            transfer_deadline.get_or_insert_with(|| Instant::now() + limits.data_timeout);
        } else {
            transfer_deadline = None;
        }
        let (deadline, expiry) = next_deadline(limits, session_deadline, transfer_deadline);
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline.into(), transport.read(&mut buffer)) => read,
            () = shutdown_requested(&mut shutdown) => {
                refuse(transport, session.shutdown_reply(), limits.command_timeout).await;
                return Err(SessionEnd::Shutdown);
            }
        };
        match read {
            Err(_elapsed) => {
                let reply = match expiry {
                    Expiry::Command => session.timeout_reply(),
                    Expiry::Transfer => session.data_time_limit_reply(),
                    Expiry::Session => session.session_time_limit_reply(),
                };
                refuse(transport, reply, limits.command_timeout).await;
                return Err(SessionEnd::Timeout(expiry));
            }
            Ok(Ok(0)) => return Err(SessionEnd::ClientClosed),
            Ok(Ok(count)) => session.push(&buffer[..count]),
            Ok(Err(error)) => return Err(SessionEnd::Io(error)),
        }
    }
}

/// Which time limit ends a wait for input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No command within `command_timeout` (or a peer that stopped reading).
    Command,
    /// The message transfer outlasted `data_timeout`.
    Transfer,
    /// The session outlasted `session_timeout`.
    Session,
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::Command => "command",
            Expiry::Transfer => "message transfer",
            Expiry::Session => "session",
        })
    }
}

/// The earliest limit on the next read: the command wait, or what is left
/// of the message transfer, and never beyond the end of the session.
fn next_deadline(
    limits: &super::SessionLimits,
    session_deadline: Instant,
    transfer_deadline: Option<Instant>,
) -> (Instant, Expiry) {
    let phase = match transfer_deadline {
        Some(deadline) => (deadline, Expiry::Transfer),
        None => (Instant::now() + limits.command_timeout, Expiry::Command),
    };
    if session_deadline < phase.0 {
        (session_deadline, Expiry::Session)
    } else {
        phase
    }
}

/// Writes and clears `output`; a client that does not read within `wait`
/// loses the connection.
async fn send<S>(transport: &mut Transport<S>, output: &mut Vec<u8>, wait: Duration) -> Result<(), SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if output.is_empty() {
        return Ok(());
    }
    tokio::time::timeout(wait, transport.write_all(output))
        .await
        .map_err(|_| SessionEnd::Timeout(Expiry::Command))??;
    output.clear();
    Ok(())
}

/// Sends a last reply, ignoring failures: the connection closes anyway.
async fn refuse<S>(transport: &mut Transport<S>, reply: Reply, wait: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut output = reply.to_wire().into_bytes();
    let _ = send(transport, &mut output, wait).await;
}

/// Upgrades the transport in place and describes the TLS session.
async fn start_tls<S>(
    transport: &mut Transport<S>,
    server_tls: crate::tls::ServerTls,
    wait: Duration,
) -> Result<TlsInfo, SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let plain = match std::mem::replace(transport, Transport::Handshaking) {
        Transport::Plain(stream) => stream,
        other => {
            *transport = other;
            return Err(SessionEnd::Handshake(std::io::Error::other("TLS already active")));
        }
    };
    let stream = tokio::time::timeout(wait, TlsAcceptor::from(server_tls.config.clone()).accept(plain))
        .await
        .map_err(|_| SessionEnd::Timeout(Expiry::Command))?
        .map_err(SessionEnd::Handshake)?;
    let connection = stream.get_ref().1;
    let tls = TlsInfo {
        version: connection
            .protocol_version()
            .map_or_else(String::new, |version| format!("{version:?}")),
        cipher: connection
            .negotiated_cipher_suite()
            .map_or_else(String::new, |suite| format!("{:?}", suite.suite())),
        client_cert_names: connection
            .peer_certificates()
            .map(|chain| server_tls.clients.verified_names(chain))
            .unwrap_or_default(),
    };
    *transport = Transport::Tls(Box::new(stream));
    Ok(tls)
}

/// Resolves once shutdown is requested (or its sender is gone, which also
/// means the node is stopping).
pub(super) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
