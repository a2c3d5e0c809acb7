//! Delivery status notifications (RFC 3464 multipart/report), built with
//! mail-builder. Sent to the envelope sender for permanent failures, expiry,
//! delays when NOTIFY=DELAY asked for them, and successes when
//! NOTIFY=SUCCESS did; never to the null sender.
//!
//! Client-supplied values (ENVID, ORCPT, remote replies, the original
//! subject) never add lines or fields: every one passes through
//! [`escape_controls`]. The returned original never carries `X-Sluice-Org-*`
//! fields: they are the organisation's, not the sender's.

use super::entry::QueueEntry;
use crate::message::{escape_controls, Address, DsnReturn};
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

/// Whether the report says the recipients failed or are only delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Permanent failure or expiry.
    Failed,
    /// Still trying.
    Delayed,
    /// Delivered into this node's mailbox (NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a next hop that does not offer DSN, so no further report
    /// will come (NOTIFY=SUCCESS, RFC 3461 section 6.2.3.3).
    Relayed,
}

impl DsnAction {
    /// The `Action:` word of RFC 3464 section 2.3.3.
    pub fn word(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
        }
    }
}

impl DsnAction {
    /// The report's `Status:` for a reply (RFC 3464 section 2.3.4): the
    /// reply's enhanced code with its class set to this action's (5 for a
    /// failure, 4 for a delay). Subject and detail are kept as the server
    /// gave them: `550 5.4.4` reports `5.4.4`, a `451 4.4.7` that expired
    /// reports `5.4.7`. A reply without one gets `X.0.0`.
    pub fn status(self, reply: &crate::message::Reply) -> String {
        let class = match self {
            DsnAction::Failed => 5,
            DsnAction::Delayed => 4,
            DsnAction::Delivered | DsnAction::Relayed => 2,
        };
        let [subject, detail] = match reply.status {
            Some([_, subject, detail]) => [subject, detail],
            None => [0, 0],
        };
        format!("{class}.{subject}.{detail}")
    }
}

/// One recipient line of a report.
#[derive(Debug, Clone)]
pub struct DsnRecipient {
    /// Final-Recipient.
    pub address: Address,
    /// ORCPT, when given.
    pub orcpt: Option<String>,
    /// Status (`5.1.1`).
    pub status: String,
    /// The remote reply or our explanation (`smtp; 550 5.1.1 ...`).
    pub diagnostic: String,
    /// Remote-MTA, when one answered.
    pub remote_mta: Option<String>,
}

/// Renders the report. `content` is the original message (headers only when RET=HDRS).
pub fn render(
    hostname: &str,
    entry: &QueueEntry,
    content: &[u8],
    action: DsnAction,
    recipients: &[DsnRecipient],
    now_secs: i64,
) -> Vec<u8> {
    let (subject, intro) = match action {
        DsnAction::Failed => (
            "Undelivered Mail Returned to Sender",
            "Your message could not be delivered to one or more recipients.\r\nThis is a permanent error; the delivery attempts have stopped.",
        ),
        DsnAction::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message has not been delivered yet to one or more recipients.\r\nDelivery will be retried; no action is needed.",
        ),
        DsnAction::Delivered => (
            "Successful Mail Delivery Report",
            "Your message was delivered to the recipients listed below.",
        ),
        DsnAction::Relayed => (
            "Successful Mail Delivery Report",
            "Your message was relayed to the recipients listed below. The next\r\nsystem does not offer delivery reports, so no further notice will come.",
        ),
    };
    let mut human = format!("This is the mail system at host {hostname}.\r\n\r\n{intro}\r\n\r\n");
    for r in recipients {
        human.push_str(&format!(
            "<{}>: {}\r\n",
            r.address,
            escape_controls(&r.diagnostic)
        ));
    }

    let mut status = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(envid) = &entry.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", escape_controls(envid)));
    }
    status.push_str(&format!(
        "Arrival-Date: {}\r\n",
        Date::new((entry.received_at_ms / 1000) as i64).to_rfc822()
    ));
    for r in recipients {
        status.push_str("\r\n");
        if let Some(orcpt) = &r.orcpt {
            status.push_str(&format!("Original-Recipient: {}\r\n", escape_controls(orcpt)));
        }
        status.push_str(&format!("Final-Recipient: rfc822; {}\r\n", r.address));
        status.push_str(&format!(
            "Action: {}\r\nStatus: {}\r\n",
            action.word(),
            escape_controls(&r.status)
        ));
        if let Some(mta) = &r.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", escape_controls(mta)));
        }
        status.push_str(&format!(
            "Diagnostic-Code: {}\r\n",
            escape_controls(&r.diagnostic)
        ));
        status.push_str(&format!(
            "Last-Attempt-Date: {}\r\n",
            Date::new(now_secs).to_rfc822()
        ));
    }

    let (content, _) = crate::classify::header_firewall::strip_internal_headers(content);
    let content = content.as_slice();
    let headers_only = entry.ret == Some(DsnReturn::Headers);
    let returned = if headers_only {
        MimePart::new(
            "text/rfc822-headers",
            String::from_utf8_lossy(&content[..crate::message::header_section_len(content)]).into_owned(),
        )
        .transfer_encoding("8bit")
    } else {
        MimePart::new("message/rfc822", content.to_vec()).transfer_encoding("8bit")
    };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human),
            MimePart::new("message/delivery-status", status).transfer_encoding("7bit"),
            returned,
        ],
    );
    let message_id = format!("{}.dsn@{hostname}", entry.id);
    from_mail_system(
        hostname,
        entry.from.to_string(),
        subject.to_string(),
        message_id,
        now_secs,
    )
    .body(report)
    .write_to_vec()
    .unwrap_or_default()
}

/// The headers every message this node writes itself carries: from the
/// mail system, marked auto-replied so no auto-responder answers it.
fn from_mail_system(
    hostname: &str,
    to: String,
    subject: String,
    message_id: String,
    now_secs: i64,
) -> MessageBuilder<'static> {
    MessageBuilder::new()
        .from((
            "Mail Delivery System".to_string(),
            format!("MAILER-DAEMON@{hostname}"),
        ))
        .to(to)
        .subject(subject)
        .date(Date::new(now_secs))
        .message_id(message_id)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
}

/// A plain notice to the sender about their message (a rule's
/// notify_sender). Quotes the original subject, never the content.
pub fn notice(hostname: &str, to: &Address, content: &[u8], text: &str, now_secs: i64) -> Vec<u8> {
    let subject = mail_parser::MessageParser::new()
        .parse_headers(&content[..crate::message::header_section_len(content)])
        .and_then(|m| m.subject().map(|s| escape_controls(s).into_owned()))
        .unwrap_or_default();
    let body = format!("{text}\r\n\r\nYour message: {subject}\r\n");
    let message_id = format!("{}.notice@{hostname}", crate::message::QueueId::generate());
    let subject = format!("Notice about your message: {subject}");
    from_mail_system(hostname, to.to_string(), subject, message_id, now_secs)
        .text_body(body)
        .write_to_vec()
        .unwrap_or_default()
}
