//! Stage 7: the message trace, the product's record of what happened to
//! each message (received, routed, delivered, deferred, bounced...). Data,
//! not log lines: every stage records typed [`TraceEvent`]s, the store keeps
//! them for `trace.retention`, and `sluice trace` / `GET /api/v1/trace`
//! query them.
//!
//! Recording never blocks a session or a delivery: events ride the store's
//! next group commit. Matched sensitive text never appears in an event.
//! As they are recorded, [`TraceCounters`] counts them (for `/metrics` and
//! the dashboard, which never read the stored trace).

mod counters;

pub use counters::{Activity, EventCounts, Minute, Tally, TraceCounters, MINUTE_MS};

use crate::message::QueueId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    /// Accepted from a client and queued (detail: client, connector, TLS).
    Received,
    /// Refused in session (detail: the reply).
    Rejected,
    /// A route was chosen for a recipient.
    Routed,
    /// The next hop accepted the recipient.
    Delivered,
    /// A temporary failure; will retry.
    Deferred,
    /// A permanent failure; a DSN goes to the sender (unless `<>`).
    Bounced,
    /// Retries ran out.
    Expired,
    /// A delivery status notification was queued.
    DsnSent,
    /// An administrator held the message.
    Held,
    /// An administrator released a held message.
    Released,
    /// An administrator (or a rule's delete action) deleted the message.
    Deleted,
    /// A mail flow rule matched (audit matches included).
    RuleMatched,
    /// A rule held the message in quarantine.
    Quarantined,
    /// A notice went to the sender (a rule's notify_sender).
    SenderNotified,
    /// The DLP scan ran (detector names and counts, never matches).
    Scanned,
}

impl TraceKind {
    /// Every kind, in the order of a message's life.
    pub const ALL: [TraceKind; 15] = [
        TraceKind::Received,
        TraceKind::Rejected,
        TraceKind::Routed,
        TraceKind::Delivered,
        TraceKind::Deferred,
        TraceKind::Bounced,
        TraceKind::Expired,
        TraceKind::DsnSent,
        TraceKind::Held,
        TraceKind::Released,
        TraceKind::Deleted,
        TraceKind::RuleMatched,
        TraceKind::Quarantined,
        TraceKind::SenderNotified,
        TraceKind::Scanned,
    ];

    /// The kind of a status word (case-insensitive), `None` for a word that
    /// names no kind.
    pub fn parse(word: &str) -> Option<TraceKind> {
        TraceKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(word))
    }

    /// The status word used by filters and output.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceKind::Received => "received",
            TraceKind::Rejected => "rejected",
            TraceKind::Routed => "routed",
            TraceKind::Delivered => "delivered",
            TraceKind::Deferred => "deferred",
            TraceKind::Bounced => "bounced",
            TraceKind::Expired => "expired",
            TraceKind::DsnSent => "dsn_sent",
            TraceKind::Held => "held",
            TraceKind::Released => "released",
            TraceKind::Deleted => "deleted",
            TraceKind::RuleMatched => "rule_matched",
            TraceKind::Quarantined => "quarantined",
            TraceKind::SenderNotified => "sender_notified",
            TraceKind::Scanned => "scanned",
        }
    }
}

/// One event of a message's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: TraceKind,
    /// Spool id.
    pub queue_id: QueueId,
    /// Message-ID header, when the message has one.
    pub message_id: Option<String>,
    /// Envelope sender (empty for `<>`).
    pub from: String,
    /// Recipient the event concerns, when it concerns one.
    pub to: Option<String>,
    /// Inbound or outbound connector involved.
    pub connector: Option<String>,
    /// Remote host (client on receipt, server on delivery).
    pub remote_host: Option<String>,
    /// Reply text or other detail.
    pub detail: Option<String>,
    /// The node that recorded the event (its `[node] hostname`): on a
    /// cluster, which node accepted, delivered or acted. Absent from
    /// events stored before nodes signed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 text of a millisecond timestamp.
pub fn rfc3339(at_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at_ms)).to_string()
}

/// A trace search. Every field narrows; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// Message-ID (with or without angle brackets).
    pub message_id: Option<String>,
    /// Envelope sender, case-insensitive.
    pub from: Option<String>,
    /// Recipient, case-insensitive.
    pub to: Option<String>,
    /// Events at or after this time.
    pub since_ms: Option<u64>,
    /// Only messages that have an event of this status.
    pub status: Option<String>,
    /// At most this many events (newest messages first are kept).
    pub limit: Option<usize>,
}

impl TraceFilter {
    /// Selects the events of the messages that match, keeping every event
    /// of a matching message so its timeline is whole.
    pub fn select(&self, events: Vec<TraceEvent>) -> Vec<TraceEvent> {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let wanted_id = self
            .message_id
            .as_deref()
            .map(|m| m.trim_start_matches('<').trim_end_matches('>'));
        let matching: std::collections::HashSet<QueueId> = events
            .iter()
            .filter(|e| self.since_ms.is_none_or(|since| e.at_ms >= since))
            .filter(|e| wanted_id.is_none_or(|id| e.message_id.as_deref() == Some(id) || e.queue_id.0 == id))
            .filter(|e| self.from.as_deref().is_none_or(|f| eq(&e.from, f)))
            .filter(|e| {
                self.to
                    .as_deref()
                    .is_none_or(|t| e.to.as_deref().is_some_and(|to| eq(to, t)))
            })
            .filter(|e| self.status.as_deref().is_none_or(|s| eq(e.kind.as_str(), s)))
            .map(|e| e.queue_id.clone())
            .collect();
        let mut selected: Vec<TraceEvent> = events
            .into_iter()
            .filter(|e| matching.contains(&e.queue_id))
            .filter(|e| self.since_ms.is_none_or(|since| e.at_ms >= since))
            .collect();
        if let Some(limit) = self.limit {
            let skip = selected.len().saturating_sub(limit);
            selected.drain(..skip);
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: TraceKind, to: Option<&str>) -> TraceEvent {
        TraceEvent {
            at_ms: 1,
            kind,
            queue_id: QueueId(id.into()),
            message_id: Some(format!("{id}@test")),
            from: "a@contoso.test".into(),
            to: to.map(str::to_string),
            connector: None,
            remote_host: None,
            detail: None,
            node: None,
        }
    }

    #[test]
    fn filters_keep_whole_timelines() {
        let events = vec![
            event("1", TraceKind::Received, None),
            event("1", TraceKind::Delivered, Some("b@x.test")),
            event("2", TraceKind::Received, None),
            event("2", TraceKind::Deferred, Some("c@y.test")),
        ];
        let f = TraceFilter {
            to: Some("B@X.test".into()),
            ..Default::default()
        };
        let got = f.select(events.clone());
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.queue_id.0 == "1"));
        let f = TraceFilter {
            status: Some("deferred".into()),
            ..Default::default()
        };
        assert!(f.select(events.clone()).iter().all(|e| e.queue_id.0 == "2"));
        let f = TraceFilter {
            message_id: Some("<2@test>".into()),
            ..Default::default()
        };
        assert_eq!(f.select(events).len(), 2);
    }

    #[test]
    fn status_words_round_trip_and_unknown_ones_are_none() {
        for kind in TraceKind::ALL {
            assert_eq!(TraceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(TraceKind::parse("REJECTED"), Some(TraceKind::Rejected));
        assert_eq!(TraceKind::parse("refused"), None);
    }
}
