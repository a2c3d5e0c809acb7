//! Stage 1: SMTP receive. Listens, runs one session per connection (EHLO,
//! STARTTLS, MAIL, RCPT, DATA/BDAT), and hands each complete message to the
//! [`Intake`] for the final reply.
//!
//! Contract: a recipient is accepted at RCPT only when relay control allows
//! it (550 5.7.1 otherwise, never accept-then-bounce). End of DATA is
//! CRLF.CRLF only; a bare CR or LF anywhere in the data rejects the message,
//! so no smuggled second message can be injected. Nothing is acknowledged
//! with 250 before the intake says the message is durable. Peer input never
//! panics the node; every limit (line length, size, recipients, bad
//! commands, timeouts, connections) is enforced with a reply and, where
//! RFC 5321 says so, a close.
//!
//! BDAT chunks are length-framed, but get the same bare CR/LF check, so
//! every [`Submission`] has CRLF line endings only. Bytes pipelined after
//! STARTTLS are discarded and the session starts afresh after the handshake
//! (RFC 3207). A message whose header already holds more than 30 `Received`
//! headers is refused as a loop (554 5.4.6).
//!
//! Layout: [`serve`] (the accept loop) runs one connection driver per
//! client, which does the I/O for a sans-IO [`session::Session`]; message
//! bodies are framed by [`framing`], the trace header comes from
//! [`received`], and RCPT decisions from [`relay_control`].

mod connection;
pub mod framing;
mod listener;
pub mod received;
pub mod relay_control;
pub mod session;
#[cfg(test)]
mod socket_tests;
#[cfg(test)]
mod tests;

pub use listener::serve;

use crate::classify::Classification;
use crate::message::{Address, Envelope, QueueId, Reply, ReversePath};
use crate::policy::Policy;
use crate::route::Route;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Limits of every session of a listener (SPEC section 11).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest message accepted, in octets (advertised as SIZE).
    pub max_message_size: usize,
    /// RCPTs per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Concurrent sessions; more get 421 4.3.2 at connect.
    pub max_connections: usize,
    /// Concurrent sessions from one client address; more get 421 4.7.0.
    pub max_connections_per_ip: usize,
    /// Longest command line, CRLF included; longer gets 500 5.5.6.
    pub max_line_length: usize,
    /// Refused commands and recipients tolerated; the next one gets
    /// 421 4.7.0 and the session ends.
    pub max_errors: usize,
    /// Wait for a command (RFC 5321 4.5.3.2: 5 minutes).
    pub command_timeout: Duration,
    /// The whole DATA or BDAT transfer of one message, however the client
    /// trickles it.
    pub data_timeout: Duration,
    /// The whole session, however busy: a client cannot hold a slot forever.
    pub session_timeout: Duration,
    /// Where message content past a threshold is written as it arrives, so
    /// a session holds a small buffer whatever the message size; `None`
    /// keeps every message in memory.
    pub spool: Option<framing::Spool>,
    /// Free space of the store's filesystem: below `[store] min_free`, new
    /// mail gets 452 4.3.1; `None` never checks.
    pub free_space: Option<crate::store::space::FreeSpace>,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 500,
            max_connections: 10_000,
            max_connections_per_ip: 50,
            max_line_length: 4096,
            max_errors: 10,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(5 * 60),
            session_timeout: Duration::from_secs(10 * 60),
            spool: None,
            free_space: None,
        }
    }
}

/// Everything a listener's sessions share.
pub struct ReceiveContext {
    /// Our name: greeting, EHLO reply, Received headers.
    pub hostname: String,
    /// Session limits.
    pub limits: SessionLimits,
    /// STARTTLS configuration; `None` means STARTTLS is not offered.
    pub tls: Option<crate::tls::ServerTls>,
    /// The current objects; each transaction takes the snapshot in force
    /// at its MAIL FROM.
    pub policy: tokio::sync::watch::Receiver<Arc<Policy>>,
    /// Where complete messages go.
    pub intake: Arc<dyn Intake>,
}

/// Facts about a session, as known when a message completes.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// EHLO/HELO argument.
    pub helo: String,
    /// Whether EHLO (ESMTP) was used.
    pub esmtp: bool,
    /// TLS facts, when STARTTLS succeeded.
    pub tls: Option<TlsInfo>,
}

/// TLS facts of a session or a delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsInfo {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// Names (DNS SANs, else subject CN) of a client certificate that verified.
    pub client_cert_names: Vec<String>,
}

/// A complete message handed over at end of DATA / BDAT LAST.
#[derive(Debug)]
pub struct Submission {
    /// The spool id, also written in our Received header.
    pub id: QueueId,
    /// Session facts.
    pub session: SessionInfo,
    /// The inbound connector decision for the session.
    pub classification: Classification,
    /// Envelope; recipients in the order accepted.
    pub envelope: Envelope,
    /// One route per envelope recipient, same order (decided at RCPT).
    pub routes: Vec<Route>,
    /// The message as received, with our Received header prepended,
    /// CRLF line endings, dot-unstuffed.
    pub content: Content,
}

/// A received message: our Received header and the body, which is in a
/// spool file when it was large. Turned into bytes by the intake, on the
/// content pool, never on a session's thread.
#[derive(Debug)]
pub struct Content {
    received: String,
    body: framing::BodyContent,
}

impl Content {
    /// The message `body` under our `received` header.
    pub fn new(received: String, body: framing::BodyContent) -> Self {
        Content { received, body }
    }

    /// Octets of the whole message.
    pub fn len(&self) -> usize {
        self.received.len() + self.body.len()
    }

    /// Whether the message is empty (never: it has our Received header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first octets of the client's message, without reading a spooled
    /// body back: enough for look-ups in its header section (Message-ID).
    pub fn head(&self) -> &[u8] {
        self.body.head()
    }

    /// The whole message in one buffer (reads a spooled body back).
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        let mut message = Vec::with_capacity(self.len());
        message.extend_from_slice(self.received.as_bytes());
        match self.body {
            framing::BodyContent::Memory(body) => message.extend_from_slice(&body),
            framing::BodyContent::Spooled(spooled) => {
                use std::io::Read;
                std::fs::File::open(spooled.file.path())?.read_to_end(&mut message)?;
            }
        }
        Ok(message)
    }

    /// A copy of the whole message (tests look at what a session submitted).
    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match &self.body {
            framing::BodyContent::Memory(body) => body.clone(),
            framing::BodyContent::Spooled(spooled) => std::fs::read(spooled.file.path()).unwrap(),
        };
        [self.received.as_bytes(), &body].concat()
    }
}

/// A sender or recipient refused in session (relay denied, a connector's
/// restriction, require_tls): what the trace and the log record of it, so
/// "why didn't my mail arrive?" has an answer when no message was queued.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The transaction's id (a message accepted later in the same
    /// transaction keeps it), so the trace groups the refusal with it.
    pub id: QueueId,
    /// Client address.
    pub peer: SocketAddr,
    /// Inbound connector of the session, when one matched.
    pub connector: Option<String>,
    /// Envelope sender.
    pub from: ReversePath,
    /// The recipient refused; `None` when MAIL FROM itself was refused.
    pub to: Option<Address>,
    /// The reply the client got.
    pub reply: Reply,
}

/// The rest of the pipeline as seen from a session: rules, routing and the
/// durable queue. Returns the final reply to DATA/BDAT: 250 only once the
/// message is on stable storage.
pub trait Intake: Send + Sync + 'static {
    /// Takes a complete message.
    fn accept(&self, submission: Submission) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>>;

    /// Records a refusal; never blocks the session. Intakes without a
    /// trace (the session's own tests) have nothing to record.
    fn refused(&self, _refusal: Refusal) {}
}
