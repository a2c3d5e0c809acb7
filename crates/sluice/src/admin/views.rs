//! The API's views of the node's records: queue entries, quarantined
//! messages (with their header fields as an administrator reads them) and
//! trace events. Pure mappings; the backend reads, these shape.

use super::{HeaderField, QuarantineView, QueueEntryView, RecipientView, TraceEventView};
use crate::message::header_section_len;
use crate::queue::{QuarantineEntry, QueueEntry};
use crate::trace::rfc3339;
use mail_parser::{Address, HeaderValue};

/// The API view of a queue entry.
pub fn queue_view(entry: &QueueEntry) -> QueueEntryView {
    let recipients: Vec<RecipientView> = entry
        .recipients
        .iter()
        .map(|r| RecipientView {
            address: r.address.to_string(),
            status: entry.recipient_status(r),
            connector: r.route.connector().map(str::to_string),
            last_error: r.status.last_error().map(str::to_string),
            next_attempt: r.status.due_ms().map(rfc3339),
            attempts: r.attempts,
        })
        .collect();
    let status = entry.status();
    QueueEntryView {
        id: entry.id.to_string(),
        message_id: entry.message_id.clone().unwrap_or_default(),
        from: entry.from.to_string(),
        last_error: recipients.iter().find_map(|r| r.last_error.clone()),
        next_attempt: entry.next_due_ms().map(rfc3339),
        recipients,
        size: entry.size,
        received_at: rfc3339(entry.received_at_ms),
        status,
    }
}

/// The API view of a trace event.
pub(crate) fn trace_view(e: crate::trace::TraceEvent) -> TraceEventView {
    TraceEventView {
        at: rfc3339(e.at_ms),
        queue_id: e.queue_id.to_string(),
        message_id: e.message_id.unwrap_or_default(),
        event: e.kind.as_str().to_string(),
        from: e.from,
        to: e.to,
        connector: e.connector,
        remote_host: e.remote_host,
        detail: e.detail,
        node: e.node,
    }
}

/// The API view of a quarantined message; `content` adds its header fields.
pub(crate) fn quarantine_view(held: &QuarantineEntry, content: Option<&[u8]>) -> QuarantineView {
    let entry = &held.entry;
    QuarantineView {
        id: entry.id.to_string(),
        message_id: entry.message_id.clone().unwrap_or_default(),
        from: entry.from.to_string(),
        recipients: entry.recipients.iter().map(|r| r.address.to_string()).collect(),
        size: entry.size,
        rule: held.rule.clone(),
        reason: held.reason.clone(),
        quarantined_at: rfc3339(held.quarantined_at_ms),
        headers: content.map(header_fields),
    }
}

/// The header section of `content` as name/value pairs, in order. Values are
/// unfolded and otherwise as written, so an administrator sees what the
/// sender sent; only fields carrying RFC 2047 encoded words are shown
/// decoded, as the raw form of those is unreadable.
pub(crate) fn header_fields(content: &[u8]) -> Vec<HeaderField> {
    let headers = &content[..header_section_len(content)];
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(headers) else {
        return Vec::new();
    };
    let raw_text = |start: u32, end: u32| {
        let bytes = headers.get(start as usize..end as usize).unwrap_or_default();
        String::from_utf8_lossy(bytes).into_owned()
    };
    parsed
        .headers()
        .iter()
        .map(|header| {
            // The bytes from the field name to the colon: the name as written.
            let written = raw_text(header.offset_field, header.offset_start);
            let name = written.split(':').next().unwrap_or_default().trim().to_string();
            let raw = unfold(&raw_text(header.offset_start, header.offset_end));
            let value = if raw.contains("=?") {
                decoded(&header.value).unwrap_or(raw)
            } else {
                raw
            };
            HeaderField { name, value }
        })
        .collect()
}

/// A folded header value on one line: each line break and the white space
/// around it become one space.
fn unfold(raw: &str) -> String {
    raw.split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parser's decoded text of a field, for the forms that read as text.
fn decoded(value: &HeaderValue<'_>) -> Option<String> {
    let addr = |a: &mail_parser::Addr<'_>| match (&a.name, &a.address) {
        (Some(name), Some(address)) => format!("{name} <{address}>"),
        (None, Some(address)) => address.to_string(),
        (Some(name), None) => name.to_string(),
        (None, None) => String::new(),
    };
    match value {
        HeaderValue::Text(text) => Some(text.to_string()),
        HeaderValue::TextList(list) => Some(list.join(", ")),
        HeaderValue::Address(Address::List(list)) => {
            Some(list.iter().map(addr).collect::<Vec<_>>().join(", "))
        }
        HeaderValue::Address(Address::Group(groups)) => Some(
            groups
                .iter()
                .map(|g| {
                    let members: Vec<String> = g.addresses.iter().map(addr).collect();
                    format!(
                        "{}: {};",
                        g.name.as_deref().unwrap_or_default(),
                        members.join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> HeaderField {
        HeaderField {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn header_fields_are_unfolded_in_order_and_stop_at_the_body() {
        let content = b"Received: from a.test\r\n\tby b.test; Mon, 1 Jan 2025 00:00:00 +0000\r\n\
            From: Alice <alice@contoso.test>\r\n\
            Message-ID: <m1@contoso.test>\r\n\
            x-custom-Header:  spaced  \r\n\
            Subject: =?UTF-8?Q?Caf=C3=A9_report?=\r\n\
            \r\n\
            Secret: 4111 1111 1111 1111\r\n";
        assert_eq!(
            header_fields(content),
            vec![
                field(
                    "Received",
                    "from a.test by b.test; Mon, 1 Jan 2025 00:00:00 +0000"
                ),
                field("From", "Alice <alice@contoso.test>"),
                // As written: the parser's own form would drop the brackets.
                field("Message-ID", "<m1@contoso.test>"),
                field("x-custom-Header", "spaced"),
                field("Subject", "Café report"),
            ]
        );
    }

    #[test]
    fn encoded_address_names_are_decoded() {
        let content = b"To: =?ISO-8859-1?Q?Andr=E9?= <andre@fabrikam.test>, bob@fabrikam.test\r\n\r\n";
        assert_eq!(
            header_fields(content),
            vec![field("To", "André <andre@fabrikam.test>, bob@fabrikam.test")]
        );
        assert!(header_fields(b"").is_empty());
    }
}
