//! What the spool keeps per message: the envelope and one state per recipient.

use crate::message::{
    Address, BodyType, DsnReturn, Envelope, EnvelopeRecipient, Notify, QueueId, ReversePath,
};
use crate::route::Route;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Spool id.
    pub id: QueueId,
    /// Message-ID header, when present.
    pub message_id: Option<String>,
    /// MAIL FROM.
    pub from: ReversePath,
    /// BODY=.
    pub body: BodyType,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// RET=.
    pub ret: Option<DsnReturn>,
    /// ENVID=.
    pub envid: Option<String>,
    /// Recipients with their own route and state.
    pub recipients: Vec<QueuedRecipient>,
    /// Size of the stored content, bytes.
    pub size: u64,
    /// Acceptance time, ms since the epoch.
    pub received_at_ms: u64,
    /// After this, undelivered recipients expire and bounce.
    pub expires_at_ms: u64,
    /// Held by an administrator: not attempted until released.
    pub hold: Hold,
    /// Where the message came from (for DSNs and the trace).
    pub source: Source,
}

/// Administrative hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Delivered as scheduled.
    Active,
    /// Waiting for `queue release`.
    Held,
}

/// The session a message arrived in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Client address, or `local` for messages this node made (DSNs).
    pub peer: String,
    /// EHLO name.
    pub helo: String,
    /// Inbound connector.
    pub connector: Option<String>,
}

/// One recipient in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// RCPT TO.
    pub address: Address,
    /// NOTIFY=.
    pub notify: Notify,
    /// ORCPT=.
    pub orcpt: Option<String>,
    /// Decided at acceptance.
    pub route: Route,
    /// Where it stands.
    pub status: RecipientStatus,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Where one recipient stands. Final states carry their outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RecipientStatus {
    /// Waiting for its first attempt.
    Queued {
        /// When it is due, ms.
        due_ms: u64,
    },
    /// A temporary failure; retried at `due_ms`.
    Deferred {
        /// When it is due, ms.
        due_ms: u64,
        /// The last failure.
        last_error: String,
        /// A delay DSN was already sent.
        delay_notified: bool,
        /// Set while an administrator's retry made the recipient due before
        /// its schedule: the scheduled time, which a failed early attempt
        /// goes back to (a manual retry never pushes the backoff out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_ms: Option<u64>,
        /// Failed early attempts, not counted when the backoff step is chosen.
        #[serde(default, skip_serializing_if = "is_zero")]
        early_attempts: u32,
        /// Parked: its destination is down, and it waits for the
        /// destination's probe rather than for `due_ms`, which is only a
        /// late recheck (and its expiry). The spool indexes it by
        /// destination, so the mail resumes when a probe answers without a
        /// write per message for each probe that fails.
        #[serde(default, skip_serializing_if = "is_false")]
        parked: bool,
    },
    /// Handed on.
    Delivered {
        /// The next hop's reply.
        reply: String,
        /// Host that accepted it.
        host: Option<String>,
    },
    /// Bounced (permanent failure or expiry).
    Failed {
        /// Why.
        reason: String,
        /// Expiry rather than a permanent reply.
        expired: bool,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RecipientStatus {
    /// When an attempt is due, for recipients still waiting.
    pub fn due_ms(&self) -> Option<u64> {
        match self {
            RecipientStatus::Queued { due_ms } | RecipientStatus::Deferred { due_ms, .. } => Some(*due_ms),
            RecipientStatus::Delivered { .. } | RecipientStatus::Failed { .. } => None,
        }
    }

    /// Whether it waits for its destination's probe (see `Deferred::parked`).
    pub fn is_parked(&self) -> bool {
        matches!(self, RecipientStatus::Deferred { parked: true, .. })
    }

    /// The last failure (a deferral's reply or error, a bounce's reason).
    pub fn last_error(&self) -> Option<&str> {
        match self {
            RecipientStatus::Deferred { last_error, .. } => Some(last_error),
            RecipientStatus::Failed { reason, .. } => Some(reason),
            RecipientStatus::Queued { .. } | RecipientStatus::Delivered { .. } => None,
        }
    }
}

/// Status of a queue entry as a whole (SPEC section 4; `queue list
/// --status`, the API's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    /// Waiting for its first attempt.
    Queued,
    /// A temporary failure; retried at `next_attempt`.
    Deferred,
    /// Held by an administrator; not attempted until released.
    Held,
}

impl QueueStatus {
    /// Every status, in the order of `queue list` and the metrics.
    pub const ALL: [QueueStatus; 3] = [QueueStatus::Queued, QueueStatus::Deferred, QueueStatus::Held];

    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::Deferred => "deferred",
            QueueStatus::Held => "held",
        }
    }
}

impl fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one recipient of a queue entry: the entry's statuses plus the
/// final outcomes a recipient reaches while others still wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientQueueStatus {
    /// Waiting for its first attempt.
    Queued,
    /// A temporary failure; retried at `next_attempt`.
    Deferred,
    /// Held by an administrator.
    Held,
    /// Accepted by the next hop.
    Delivered,
    /// Failed permanently or expired; a DSN went to the sender.
    Bounced,
}

impl RecipientQueueStatus {
    /// The JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientQueueStatus::Queued => "queued",
            RecipientQueueStatus::Deferred => "deferred",
            RecipientQueueStatus::Held => "held",
            RecipientQueueStatus::Delivered => "delivered",
            RecipientQueueStatus::Bounced => "bounced",
        }
    }
}

impl fmt::Display for RecipientQueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Queue entries by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Waiting for a first attempt.
    pub queued: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// Held by an administrator.
    pub held: u64,
    /// All of them.
    pub total: u64,
}

impl QueuedRecipient {
    /// A recipient as accepted at RCPT, with its route, due at `due_ms`.
    pub fn new(recipient: &EnvelopeRecipient, route: Route, due_ms: u64) -> QueuedRecipient {
        QueuedRecipient {
            address: recipient.address.clone(),
            notify: recipient.notify,
            orcpt: recipient.orcpt.clone(),
            route,
            status: RecipientStatus::Queued { due_ms },
            attempts: 0,
        }
    }
}

impl QueueEntry {
    /// A message accepted at `now_ms`: the envelope's recipients, each with
    /// its route (same order), all due now; Message-ID and size from
    /// `content`.
    pub fn new(
        id: QueueId,
        envelope: &Envelope,
        routes: impl IntoIterator<Item = Route>,
        content: &[u8],
        source: Source,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> QueueEntry {
        QueueEntry {
            id,
            message_id: crate::message::header_message_id(content),
            from: envelope.mail_from.clone(),
            body: envelope.body,
            smtputf8: envelope.smtputf8,
            ret: envelope.ret,
            envid: envelope.envid.clone(),
            recipients: envelope
                .recipients
                .iter()
                .zip(routes)
                .map(|(r, route)| QueuedRecipient::new(r, route, now_ms))
                .collect(),
            size: content.len() as u64,
            received_at_ms: now_ms,
            expires_at_ms,
            hold: Hold::Active,
            source,
        }
    }

    /// The earliest due time of a waiting recipient; `None` when all are final.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.recipients.iter().filter_map(|r| r.status.due_ms()).min()
    }

    /// Whether every recipient reached a final state.
    pub fn is_finished(&self) -> bool {
        self.next_due_ms().is_none()
    }

    /// Entry-level status of SPEC section 4: held, deferred or queued.
    pub fn status(&self) -> QueueStatus {
        if self.hold == Hold::Held {
            QueueStatus::Held
        } else if self
            .recipients
            .iter()
            .any(|r| matches!(r.status, RecipientStatus::Deferred { .. }))
        {
            QueueStatus::Deferred
        } else {
            QueueStatus::Queued
        }
    }

    /// [`QueueEntry::status`] as its JSON word.
    pub fn status_word(&self) -> &'static str {
        self.status().as_str()
    }

    /// Where `recipient` (one of this entry's) stands, as the API shows
    /// it: a waiting recipient of a held entry is held.
    pub fn recipient_status(&self, recipient: &QueuedRecipient) -> RecipientQueueStatus {
        let waiting = match recipient.status {
            RecipientStatus::Queued { .. } => RecipientQueueStatus::Queued,
            RecipientStatus::Deferred { .. } => RecipientQueueStatus::Deferred,
            RecipientStatus::Delivered { .. } => return RecipientQueueStatus::Delivered,
            RecipientStatus::Failed { .. } => return RecipientQueueStatus::Bounced,
        };
        match self.hold {
            Hold::Held => RecipientQueueStatus::Held,
            Hold::Active => waiting,
        }
    }
}
