//! The SMTP server session as a sans-IO state machine: bytes in
//! ([`Session::push`]), [`Event`]s out ([`Session::poll`]). The connection
//! driver does the I/O, the timeouts and the TLS handshake; everything a
//! client can say is decided here, so it is tested without sockets.
//!
//! Command lines are framed here (CRLF only, length-capped) and parsed with
//! smtp-proto; message bodies are framed by [`super::framing`]. Input is
//! consumed only as far as the next event: after [`Event::Submit`] or
//! [`Event::StartTls`] the rest of the input waits (or, for STARTTLS, is
//! discarded), which keeps pipelined replies in order.

use super::framing::{Body, BodyDefect, DataProgress, DataReader};
use super::received::{received_count, received_header, MAX_RECEIVED_HEADERS};
use super::relay_control::check_recipient;
use super::{Content, Refusal, SessionInfo, SessionLimits, Submission, TlsInfo};
use crate::classify::restrictions::{check_sender, SessionFacts};
use crate::classify::{classify, Classification};
use crate::message::{
    Address, BodyType, DsnReturn, Envelope, EnvelopeRecipient, Notify, QueueId, Reply, ReversePath,
};
use crate::policy::Policy;
use crate::route::Route;
use crate::store::space::FreeSpace;
use smtp_proto::{MailFrom, RcptTo, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// What the driver must do next.
#[derive(Debug)]
pub enum Event {
    /// Send this reply.
    Reply(Reply),
    /// Send this reply, then close the connection.
    ReplyAndClose(Reply),
    /// Send this reply (220), then run the TLS handshake and report it with
    /// [`Session::tls_established`]; close if the handshake fails.
    StartTls(Reply),
    /// Hand this message to the intake and send its reply.
    Submit(Box<Submission>),
    /// Send the refusal's reply and record the refusal (trace and log).
    Refused(Box<Refusal>),
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    hostname: String,
    limits: SessionLimits,
    /// The current objects, as published by the admin API.
    objects: watch::Receiver<Arc<Policy>>,
    /// The snapshot this transaction is judged with (taken at MAIL FROM).
    policy: Arc<Policy>,
    classification: Classification,
    info: SessionInfo,
    tls_offered: bool,
    input: Vec<u8>,
    phase: Phase,
    transaction: Option<Transaction>,
    errors: usize,
    /// Refusals handed to the driver for the trace so far.
    refusals: usize,
}

/// Refusals one connection may add to the trace; later ones are still
/// answered, not recorded, so a client cannot turn RCPTs into store writes
/// without bound.
pub const MAX_RECORDED_REFUSALS: usize = 100;

#[derive(Debug)]
enum Phase {
    Command,
    /// After a command line over the limit: drop input up to the next LF.
    SkipLongLine,
    Data(DataReader),
    Chunk(Chunk),
    Closed,
}

/// A BDAT chunk being read.
#[derive(Debug)]
struct Chunk {
    size: usize,
    remaining: usize,
    last: bool,
    /// Set when the chunk is read only to be discarded, with the reply to
    /// send once it has been (RFC 3030: the octets must still be consumed).
    refusal: Option<Reply>,
}

/// A mail transaction: MAIL, the accepted RCPTs, and BDAT chunks so far.
#[derive(Debug)]
struct Transaction {
    /// Given at MAIL, so refusals of this transaction's recipients and the
    /// message it queues share one id in the trace.
    id: QueueId,
    envelope: Envelope,
    routes: Vec<Route>,
    chunks: Option<Body>,
}

impl Session {
    /// A session for a connection from `peer` to `local`. `objects` is the
    /// live policy: each transaction takes the snapshot in force at its MAIL
    /// FROM (SPEC section 4), so a connector removed or disabled while the
    /// session is open stops granting relay at the next transaction.
    /// `tls_offered` tells whether STARTTLS is available.
    pub fn new(
        hostname: String,
        limits: SessionLimits,
        mut objects: watch::Receiver<Arc<Policy>>,
        peer: SocketAddr,
        local: SocketAddr,
        tls_offered: bool,
    ) -> Self {
        let policy = objects.borrow_and_update().clone();
        let classification = classify(&policy.inbound, peer.ip(), &[]);
        Session {
            hostname,
            limits,
            objects,
            policy,
            classification,
            info: SessionInfo {
                peer,
                local,
                helo: String::new(),
                esmtp: false,
                tls: None,
            },
            tls_offered,
            input: Vec::new(),
            phase: Phase::Command,
            transaction: None,
            errors: 0,
            refusals: 0,
        }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP sluice", self.hostname))
    }

    /// The reply before closing on an idle timeout (RFC 5321 4.5.3.2).
    pub fn timeout_reply(&self) -> Reply {
        Reply::new(
            421,
            [4, 4, 2],
            format!("{} Error: timeout exceeded", self.hostname),
        )
    }

    /// The reply before closing when the node shuts down.
    pub fn shutdown_reply(&self) -> Reply {
        Reply::new(421, [4, 3, 2], format!("{} Service shutting down", self.hostname))
    }

    /// Session facts so far.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Whether message content is being read rather than a command.
    pub fn receiving_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::Chunk(_))
    }

    /// Whether a message transfer is under way: DATA content, a BDAT chunk,
    /// or the commands between the chunks of one BDAT message. The data
    /// timeout covers this whole span.
    pub fn in_message_transfer(&self) -> bool {
        self.receiving_data()
            || self
                .transaction
                .as_ref()
                .is_some_and(|transaction| transaction.chunks.is_some())
    }

    /// The reply before closing a session that reached its time limit.
    pub fn session_time_limit_reply(&self) -> Reply {
        Reply::new(
            421,
            [4, 7, 0],
            format!("{} Error: session time limit exceeded", self.hostname),
        )
    }

    /// The reply before closing a message transfer that took too long.
    pub fn data_time_limit_reply(&self) -> Reply {
        Reply::new(
            421,
            [4, 7, 0],
            format!("{} Error: message transfer time limit exceeded", self.hostname),
        )
    }

    /// Whether the session has ended (QUIT, too many errors).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Octets received but not yet consumed (bounded by the line limit
    /// plus one read while waiting for a command).
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Records a completed TLS handshake after [`Event::StartTls`].
    /// A verified client certificate may now identify the sender (a
    /// certificate match wins over the address match made at connect).
    pub fn tls_established(&mut self, tls: TlsInfo) {
        self.info.tls = Some(tls);
        self.reclassify();
    }

    /// The inbound connector decision under the current snapshot, from the
    /// source address and the verified certificate names.
    fn reclassify(&mut self) {
        let names = self
            .info
            .tls
            .as_ref()
            .map_or(&[][..], |tls| tls.client_cert_names.as_slice());
        self.classification = classify(&self.policy.inbound, self.info.peer.ip(), names);
    }

    /// Takes the objects in force now, at the start of a transaction.
    fn refresh_policy(&mut self) {
        if self.objects.has_changed().unwrap_or(false) {
            self.policy = self.objects.borrow_and_update().clone();
            self.reclassify();
        }
    }

    /// The next event, or `None` when more input is needed.
    pub fn poll(&mut self) -> Option<Event> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Command) {
                Phase::Closed => {
                    self.phase = Phase::Closed;
                    return None;
                }
                Phase::Command => {
                    let Some(lf) = self.input.iter().position(|b| *b == b'\n') else {
                        if self.input.len() > self.limits.max_line_length {
                            self.input.clear();
                            self.phase = Phase::SkipLongLine;
                            return Some(self.line_too_long());
                        }
                        return None;
                    };
                    let line: Vec<u8> = self.input.drain(..=lf).collect();
                    if line.len() > self.limits.max_line_length {
                        return Some(self.line_too_long());
                    }
                    if let Some(event) = self.command(&line) {
                        return Some(event);
                    }
                }
                Phase::SkipLongLine => match self.input.iter().position(|b| *b == b'\n') {
                    Some(lf) => {
                        self.input.drain(..=lf);
                    }
                    None => {
                        self.input.clear();
                        self.phase = Phase::SkipLongLine;
                        return None;
                    }
                },
                Phase::Data(mut reader) => match reader.feed(&self.input) {
                    DataProgress::NeedMore => {
                        self.input.clear();
                        self.phase = Phase::Data(reader);
                        return None;
                    }
                    DataProgress::Complete(used) => {
                        self.input.drain(..used);
                        let Some(transaction) = self.transaction.take() else {
                            return Some(self.bad_sequence("Need MAIL command"));
                        };
                        return Some(self.finish_message(transaction, reader.into_body()));
                    }
                },
                Phase::Chunk(mut chunk) => {
                    let available = chunk.remaining.min(self.input.len());
                    if chunk.refusal.is_none() {
                        if let Some(body) = self
                            .transaction
                            .as_mut()
                            .and_then(|transaction| transaction.chunks.as_mut())
                        {
                            body.extend_chunk(&self.input[..available]);
                        }
                    }
                    self.input.drain(..available);
                    chunk.remaining -= available;
                    if chunk.remaining > 0 {
                        self.phase = Phase::Chunk(chunk);
                        return None;
                    }
                    return Some(self.finish_chunk(chunk));
                }
            }
        }
    }

    /// Handles one command line (LF included). `None` when the command only
    /// changed the phase (BDAT) and polling should go on.
    fn command(&mut self, line: &[u8]) -> Option<Event> {
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return Some(self.error(Reply::new(
                500,
                [5, 5, 2],
                "Bare <LF> received: commands must end with <CR><LF>",
            )));
        };
        if text.contains(&b'\r') {
            return Some(self.error(Reply::new(500, [5, 5, 2], "Bare <CR> received in command")));
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(error) => return Some(self.parse_error(error)),
        };
        Some(match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::StartTls => self.start_tls(),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat { chunk_size, is_last } => {
                self.bdat(chunk_size, is_last);
                return None;
            }
            Request::Rset => {
                self.transaction = None;
                Event::Reply(Reply::new(250, [2, 0, 0], "Ok"))
            }
            Request::Noop { .. } => Event::Reply(Reply::new(250, [2, 0, 0], "Ok")),
            Request::Vrfy { .. } => Event::Reply(Reply::new(
                252,
                [2, 5, 2],
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => Event::Reply(Reply::new(
                214,
                [2, 0, 0],
                "Commands: EHLO HELO STARTTLS MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT",
            )),
            Request::Quit => {
                self.phase = Phase::Closed;
                Event::ReplyAndClose(Reply::new(
                    221,
                    [2, 0, 0],
                    format!("{} closing connection", self.hostname),
                ))
            }
            Request::Lhlo { .. } => self.error(Reply::new(500, [5, 5, 1], "Command unrecognized")),
            Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(Reply::new(502, [5, 5, 1], "Command not implemented")),
        })
    }

    fn hello(&mut self, host: String, esmtp: bool) -> Event {
        self.transaction = None;
        self.info.helo = host;
        self.info.esmtp = esmtp;
        if !esmtp {
            return Event::Reply(Reply::plain(250, self.hostname.clone()));
        }
        let mut lines = vec![
            self.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.limits.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.tls_offered && self.info.tls.is_none() {
            lines.push("STARTTLS".to_string());
        }
        Event::Reply(Reply::plain(250, lines.join("\n")))
    }

    fn start_tls(&mut self) -> Event {
        if !self.tls_offered {
            return self.error(Reply::new(502, [5, 5, 1], "STARTTLS not available"));
        }
        if self.info.tls.is_some() {
            return self.bad_sequence("TLS already active");
        }
        if self.transaction.is_some() {
            return self.bad_sequence("MAIL transaction in progress");
        }
        // RFC 3207 section 4.2: forget everything learnt in clear, and drop
        // whatever was pipelined after STARTTLS: it was never protected
        // (command injection, CVE-2011-0411).
        self.input.clear();
        self.info.helo.clear();
        self.info.esmtp = false;
        Event::StartTls(Reply::new(220, [2, 0, 0], "Ready to start TLS"))
    }

    fn mail(&mut self, from: MailFrom<String>) -> Event {
        if self.info.helo.is_empty() {
            return self.bad_sequence("Send EHLO/HELO first");
        }
        if self.transaction.is_some() {
            return self.bad_sequence("Nested MAIL command");
        }
        if let Some(reply) = self.storage_refusal() {
            return Event::Reply(reply);
        }
        if from.size > self.limits.max_message_size {
            return self.error(Reply::new(
                552,
                [5, 3, 4],
                "Message size exceeds fixed maximum message size",
            ));
        }
        if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            return self.error(Reply::new(555, [5, 5, 4], "BODY=BINARYMIME not supported"));
        }
        if from.flags & smtp_proto::MAIL_REQUIRETLS != 0 {
            return self.error(Reply::new(555, [5, 5, 4], "REQUIRETLS not supported"));
        }
        // RFC 3461 section 4.4: printable US-ASCII only once xtext is
        // decoded. A control (a decoded +0D+0A) would reach the DSN's fields.
        if from
            .env_id
            .as_deref()
            .is_some_and(|id| !id.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            return self.error(Reply::new(501, [5, 5, 4], "Invalid ENVID parameter"));
        }
        let has_parameters = from.flags != 0 || from.size != 0 || from.env_id.is_some();
        if has_parameters && !self.info.esmtp {
            return self.error(Reply::new(555, [5, 5, 4], "MAIL parameters need EHLO"));
        }
        self.refresh_policy();
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        let mail_from = if from.address.is_empty() {
            ReversePath::Null
        } else {
            match Address::parse(&from.address) {
                Ok(address) => ReversePath::Mailbox(address),
                Err(_) => return self.error(Reply::new(501, [5, 1, 7], "Bad sender address syntax")),
            }
        };
        if !from.address.is_ascii() && !smtputf8 {
            return self.error(non_ascii_without_smtputf8());
        }
        let facts = SessionFacts {
            peer: self.info.peer.ip(),
            tls: self.info.tls.is_some(),
            certificate_names: self
                .info
                .tls
                .as_ref()
                .map_or(&[], |t| t.client_cert_names.as_slice()),
        };
        if let Err(reply) = check_sender(&self.policy.inbound, &self.classification, facts, &mail_from) {
            return self.refused(QueueId::generate(), mail_from, None, reply);
        }
        let mut envelope = Envelope::new(mail_from);
        envelope.smtputf8 = smtputf8;
        envelope.body = if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        envelope.ret = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            Some(DsnReturn::Full)
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            Some(DsnReturn::Headers)
        } else {
            None
        };
        envelope.envid = from.env_id;
        self.transaction = Some(Transaction {
            id: QueueId::generate(),
            envelope,
            routes: Vec::new(),
            chunks: None,
        });
        Event::Reply(Reply::new(250, [2, 1, 0], "Sender ok"))
    }

    fn rcpt(&mut self, to: RcptTo<String>) -> Event {
        let Some(transaction) = &self.transaction else {
            return self.bad_sequence("Need MAIL before RCPT");
        };
        if let Some(reply) = self.storage_refusal() {
            return Event::Reply(reply);
        }
        if transaction.chunks.is_some() {
            return self.bad_sequence("RCPT not allowed after BDAT");
        }
        if transaction.envelope.recipients.len() >= self.limits.max_recipients {
            return self.error(Reply::new(452, [4, 5, 3], "Too many recipients"));
        }
        let Ok(address) = Address::parse(&to.address) else {
            return self.error(Reply::new(501, [5, 1, 3], "Bad recipient address syntax"));
        };
        if to
            .orcpt
            .as_deref()
            .is_some_and(|orcpt| orcpt.chars().any(char::is_control))
        {
            return self.error(Reply::new(501, [5, 5, 4], "Invalid ORCPT parameter"));
        }
        if !to.address.is_ascii() && !transaction.envelope.smtputf8 {
            return self.error(non_ascii_without_smtputf8());
        }
        let route = match check_recipient(
            &self.policy,
            &self.classification,
            &transaction.envelope.mail_from,
            &address,
        ) {
            Ok(route) => route,
            Err(reply) => {
                let (id, from) = (transaction.id.clone(), transaction.envelope.mail_from.clone());
                return self.refused(id, from, Some(address), reply);
            }
        };
        let notify = if to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 {
            Notify::Never
        } else if to.flags
            & (smtp_proto::RCPT_NOTIFY_SUCCESS
                | smtp_proto::RCPT_NOTIFY_FAILURE
                | smtp_proto::RCPT_NOTIFY_DELAY)
            != 0
        {
            Notify::On {
                success: to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
                failure: to.flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
                delay: to.flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
            }
        } else {
            Notify::Default
        };
        let Some(transaction) = self.transaction.as_mut() else {
            return self.bad_sequence("Need MAIL before RCPT");
        };
        transaction.envelope.recipients.push(EnvelopeRecipient {
            address,
            notify,
            // smtp-proto accepts only the rfc822 type and decodes the xtext.
            orcpt: to.orcpt.map(|orcpt| format!("rfc822;{orcpt}")),
        });
        transaction.routes.push(route);
        Event::Reply(Reply::new(250, [2, 1, 5], "Recipient ok"))
    }

    fn data(&mut self) -> Event {
        let Some(transaction) = &self.transaction else {
            return self.bad_sequence("Need MAIL command");
        };
        if transaction.chunks.is_some() {
            return self.bad_sequence("DATA not allowed after BDAT");
        }
        if transaction.envelope.recipients.is_empty() {
            return self.error(Reply::new(554, [5, 5, 1], "No valid recipients"));
        }
        self.phase = Phase::Data(DataReader::spooled(
            self.limits.max_message_size,
            self.limits.spool.clone(),
        ));
        Event::Reply(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
    }

    /// Starts reading a BDAT chunk; its reply comes once the octets are in.
    fn bdat(&mut self, size: usize, last: bool) {
        let limit = self.limits.max_message_size;
        let spool = self.limits.spool.clone();
        let refusal = match self.transaction.as_mut() {
            _ if self.info.helo.is_empty() => Some(Reply::new(503, [5, 5, 1], "Send EHLO/HELO first")),
            None => Some(Reply::new(503, [5, 5, 1], "Need MAIL command")),
            Some(transaction) if transaction.envelope.recipients.is_empty() => {
                Some(Reply::new(554, [5, 5, 1], "No valid recipients"))
            }
            Some(transaction) => {
                // Counted before reading, so a huge chunk is never buffered.
                let body = transaction
                    .chunks
                    .get_or_insert_with(|| Body::spooled(limit, spool));
                body.would_exceed(size)
                    .then(|| Reply::new(552, [5, 3, 4], "Message size exceeds fixed maximum message size"))
            }
        };
        self.phase = Phase::Chunk(Chunk {
            size,
            remaining: size,
            last,
            refusal,
        });
    }

    fn finish_chunk(&mut self, chunk: Chunk) -> Event {
        if let Some(refusal) = chunk.refusal {
            // RFC 3030 section 2: after a failed BDAT the transaction is
            // void; later chunks of it are refused until a new MAIL.
            self.transaction = None;
            return self.error(refusal);
        }
        if !chunk.last {
            return Event::Reply(Reply::new(
                250,
                [2, 0, 0],
                format!("{} octets received", chunk.size),
            ));
        }
        let Some(mut transaction) = self.transaction.take() else {
            return self.bad_sequence("Need MAIL command");
        };
        let body = transaction
            .chunks
            .take()
            .unwrap_or_else(|| Body::new(self.limits.max_message_size));
        self.finish_message(transaction, body)
    }

    /// End of DATA or BDAT LAST: refuse the message, or submit it with our
    /// Received header on top.
    fn finish_message(&mut self, transaction: Transaction, body: Body) -> Event {
        let content = match body.finish() {
            Ok(content) => content,
            Err(BodyDefect::BareLineEnding) => {
                return Event::Reply(Reply::new(
                    550,
                    [5, 6, 11],
                    "Bare CR or LF in message data not allowed",
                ))
            }
            Err(BodyDefect::TooLarge) => {
                return Event::Reply(Reply::new(
                    552,
                    [5, 3, 4],
                    "Message size exceeds fixed maximum message size",
                ))
            }
            Err(BodyDefect::Spool(error)) => {
                tracing::error!(error = %error, "cannot spool message content");
                let disk_full = self.limits.free_space.as_ref().and_then(FreeSpace::refusal_now);
                return Event::Reply(disk_full.unwrap_or_else(|| {
                    Reply::new(451, [4, 3, 0], "Temporary local problem, try again later")
                }));
            }
        };
        // Space may have run short while the message arrived.
        if let Some(reply) = self.storage_refusal() {
            return Event::Reply(reply);
        }
        // One reading of headers for every stage and every reader downstream:
        // a section RFC 5322 readers could split differently is refused. A
        // spooled body is judged on its first octets, so its header section
        // must end within them (a section of 64 KiB is far beyond real mail).
        let head = content.head();
        if head.len() < content.len() && crate::message::header::section_len(head) == head.len() {
            return Event::Reply(Reply::new(
                552,
                [5, 3, 4],
                "Header section exceeds the size limit",
            ));
        }
        if let Err(defect) = crate::message::header::check(head) {
            return Event::Reply(Reply::new(550, [5, 6, 0], format!("Malformed header: {defect}")));
        }
        // A header section holding thirty Received headers is far smaller.
        if received_count(head) > MAX_RECEIVED_HEADERS {
            return Event::Reply(Reply::new(
                554,
                [5, 4, 6],
                "Too many Received headers: mail loop detected",
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX));
        let id = transaction.id;
        let header = received_header(&self.info, &self.hostname, &id.0, &transaction.envelope, now);
        let message = Content::new(header, content);
        Event::Submit(Box::new(Submission {
            id,
            session: self.info.clone(),
            classification: self.classification.clone(),
            envelope: transaction.envelope,
            routes: transaction.routes,
            content: message,
        }))
    }

    /// `452 4.3.1` while the store's filesystem is short of space: new
    /// mail waits at the client, which retries.
    fn storage_refusal(&self) -> Option<Reply> {
        self.limits.free_space.as_ref().and_then(FreeSpace::refusal)
    }

    fn refused(&mut self, id: QueueId, from: ReversePath, to: Option<Address>, reply: Reply) -> Event {
        // A refusal is an error too: past `max_errors` the session ends.
        if let close @ Event::ReplyAndClose(_) = self.error(reply.clone()) {
            return close;
        }
        if self.refusals >= MAX_RECORDED_REFUSALS {
            return Event::Reply(reply);
        }
        self.refusals += 1;
        Event::Refused(Box::new(Refusal {
            id,
            peer: self.info.peer,
            connector: self.classification.connector().map(str::to_string),
            from,
            to,
            reply,
        }))
    }

    fn parse_error(&mut self, error: smtp_proto::Error) -> Event {
        let reply = match error {
            smtp_proto::Error::InvalidSenderAddress => {
                Reply::new(501, [5, 1, 7], "Bad sender address syntax")
            }
            smtp_proto::Error::InvalidRecipientAddress => {
                Reply::new(501, [5, 1, 3], "Bad recipient address syntax")
            }
            smtp_proto::Error::SyntaxError { syntax } => {
                Reply::new(501, [5, 5, 4], format!("Syntax: {syntax}"))
            }
            smtp_proto::Error::InvalidParameter { param } => {
                Reply::new(501, [5, 5, 4], format!("Invalid {param} parameter"))
            }
            smtp_proto::Error::UnsupportedParameter { param } => {
                let param: String = param.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
                Reply::new(555, [5, 5, 4], format!("Unsupported parameter {param}"))
            }
            _ => Reply::new(500, [5, 5, 1], "Command unrecognized"),
        };
        self.error(reply)
    }

    fn bad_sequence(&mut self, text: &str) -> Event {
        self.error(Reply::new(503, [5, 5, 1], text))
    }

    fn line_too_long(&mut self) -> Event {
        self.error(Reply::new(500, [5, 5, 6], "Line too long"))
    }

    /// Counts a client error (a refused command or recipient); past the
    /// limit the session ends: a client that keeps erring is broken, probing
    /// for valid addresses or looking for a relay.
    fn error(&mut self, reply: Reply) -> Event {
        self.errors += 1;
        if self.errors > self.limits.max_errors {
            self.phase = Phase::Closed;
            return Event::ReplyAndClose(Reply::new(
                421,
                [4, 7, 0],
                format!("{} Error: too many errors", self.hostname),
            ));
        }
        Event::Reply(reply)
    }
}

fn non_ascii_without_smtputf8() -> Reply {
    Reply::new(
        553,
        [5, 6, 7],
        "Non-ASCII address requires the SMTPUTF8 parameter",
    )
}
