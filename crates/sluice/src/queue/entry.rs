//! What the spool keeps per message: the envelope and one state per recipient.

use crate::message::{Address, BodyType, DsnReturn, Notify, QueueId, ReversePath};
use crate::route::Route;
use serde::{Deserialize, Serialize};

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

impl RecipientStatus {
    /// When an attempt is due, for recipients still waiting.
    pub fn due_ms(&self) -> Option<u64> {
        match self {
            RecipientStatus::Queued { due_ms } | RecipientStatus::Deferred { due_ms, .. } => Some(*due_ms),
            RecipientStatus::Delivered { .. } | RecipientStatus::Failed { .. } => None,
        }
    }

    /// The status word of SPEC section 4 (`queued`, `deferred`, ...).
    pub fn word(&self) -> &'static str {
        match self {
            RecipientStatus::Queued { .. } => "queued",
            RecipientStatus::Deferred { .. } => "deferred",
            RecipientStatus::Delivered { .. } => "delivered",
            RecipientStatus::Failed { expired: true, .. } => "expired",
            RecipientStatus::Failed { .. } => "bounced",
        }
    }
}

impl QueueEntry {
    /// The earliest due time of a waiting recipient; `None` when all are final.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.recipients.iter().filter_map(|r| r.status.due_ms()).min()
    }

    /// Whether every recipient reached a final state.
    pub fn is_finished(&self) -> bool {
        self.next_due_ms().is_none()
    }

    /// Entry-level status of SPEC section 4: `held`, `deferred` or `queued`.
    pub fn status_word(&self) -> &'static str {
        if self.hold == Hold::Held {
            "held"
        } else if self
            .recipients
            .iter()
            .any(|r| matches!(r.status, RecipientStatus::Deferred { .. }))
        {
            "deferred"
        } else {
            "queued"
        }
    }
}
