//! `sluice trace`: the message trace as a timeline, one line per event,
//! grouped by message.

use super::client::{query, ApiClient};
use super::output::{json, safe, PagePrinter, Table};
use super::{Failure, GlobalArgs, TraceArgs};
use crate::admin::TraceEventView;

pub(crate) fn run(global: &GlobalArgs, args: &TraceArgs) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    let path = format!(
        "trace{}",
        query(&[
            ("message_id", args.message_id.clone()),
            ("from", args.from.clone()),
            ("to", args.to.clone()),
            ("since", args.since.clone()),
            ("status", args.status.clone()),
        ])
    );
    let search =
        args.message_id.is_some() || args.from.is_some() || args.to.is_some() || args.status.is_some();
    if search {
        // A search is answered whole (each matching message's full timeline).
        let limited = match args.limit {
            Some(n) => format!("{path}{}limit={n}", if path.contains('?') { "&" } else { "?" }),
            None => path,
        };
        let events: Vec<TraceEventView> = client.get(&limited)?;
        if args.json {
            print!("{}", json(&events)?);
        } else {
            print!("{}", timeline(&events));
        }
        return Ok(());
    }
    // The whole trace, page by page: a message whose events straddle two
    // pages is printed as two blocks, in time order still.
    let mut printer = PagePrinter::new(args.json);
    client.each_page(&path, args.limit, |events: Vec<TraceEventView>| {
        printer.page(&events, timeline)
    })?;
    printer.finish(|| timeline(&[]))?;
    Ok(())
}

/// Events grouped by message (queue id: two messages may carry the same
/// Message-ID, and a copy made by a rule has its own), messages in the
/// order of their first event, events in time order within a message.
pub(crate) fn timeline(events: &[TraceEventView]) -> String {
    if events.is_empty() {
        return "no trace events match\n".to_string();
    }
    let mut sorted: Vec<&TraceEventView> = events.iter().collect();
    // RFC 3339 times from one node sort as text; the sort is stable, so
    // events of the same instant keep the order the node gave.
    sorted.sort_by(|a, b| a.at.cmp(&b.at));
    let mut groups: Vec<(String, Vec<&TraceEventView>)> = Vec::new();
    for event in sorted {
        let key = &event.queue_id;
        match groups.iter_mut().find(|(k, _)| k == key) {
            Some((_, members)) => members.push(event),
            None => groups.push((key.clone(), vec![event])),
        }
    }
    let blocks: Vec<String> = groups
        .iter()
        .map(|(key, members)| message_block(key, members))
        .collect();
    blocks.join("\n")
}

fn message_block(key: &str, events: &[&TraceEventView]) -> String {
    let first = events[0];
    let sender = if first.from.is_empty() { "<>" } else { &first.from };
    let mut heading = format!("{}  from {}", safe(key), safe(sender));
    if let Some(message_id) = events.iter().map(|e| &e.message_id).find(|m| !m.is_empty()) {
        heading.push_str(&format!("  message-id {}", safe(message_id)));
    }
    let mut table = Table::bare().indented("  ");
    for event in events {
        let mut notes = Vec::new();
        if let Some(connector) = &event.connector {
            notes.push(format!("connector={connector}"));
        }
        if let Some(host) = &event.remote_host {
            notes.push(format!("host={host}"));
        }
        if let Some(node) = &event.node {
            notes.push(format!("node={node}"));
        }
        if let Some(detail) = &event.detail {
            notes.push(detail.clone());
        }
        table.row(vec![
            event.at.clone(),
            event.event.clone(),
            event.to.clone().unwrap_or_else(|| "-".to_string()),
            notes.join("  "),
        ]);
    }
    format!("{heading}\n{}", table.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: &str, message_id: &str, kind: &str, to: Option<&str>) -> TraceEventView {
        TraceEventView {
            at: at.into(),
            queue_id: format!("Q-{message_id}"),
            message_id: message_id.into(),
            event: kind.into(),
            from: "alice@contoso.test".into(),
            to: to.map(String::from),
            connector: None,
            remote_host: None,
            detail: None,
            node: None,
        }
    }

    #[test]
    fn events_are_grouped_by_message_in_time_order() {
        let mut delivered = event(
            "2025-01-01T10:00:02Z",
            "<a@x>",
            "delivered",
            Some("bob@fabrikam.test"),
        );
        delivered.connector = Some("To fabrikam".into());
        delivered.remote_host = Some("127.0.0.40".into());
        delivered.detail = Some("250 2.0.0 ok".into());
        let events = vec![
            event("2025-01-01T10:00:01Z", "<b@x>", "received", None),
            delivered,
            event("2025-01-01T10:00:00Z", "<a@x>", "received", None),
        ];
        let text = timeline(&events);
        assert_eq!(
            text,
            "Q-<a@x>  from alice@contoso.test  message-id <a@x>\n\
             \x20 2025-01-01T10:00:00Z  received   -\n\
             \x20 2025-01-01T10:00:02Z  delivered  bob@fabrikam.test  connector=To fabrikam  host=127.0.0.40  250 2.0.0 ok\n\
             \n\
             Q-<b@x>  from alice@contoso.test  message-id <b@x>\n\
             \x20 2025-01-01T10:00:01Z  received  -\n"
        );
    }

    /// Two messages with one Message-ID (a resend, a rule's copy) stay two
    /// timelines, each under its queue id.
    #[test]
    fn messages_sharing_a_message_id_are_not_merged() {
        let mut first = event("2025-01-01T10:00:00Z", "<same@x>", "received", None);
        first.queue_id = "Q1".into();
        let mut second = event("2025-01-01T10:00:01Z", "<same@x>", "received", None);
        second.queue_id = "Q2".into();
        let mut delivered = event("2025-01-01T10:00:02Z", "<same@x>", "delivered", Some("b@y.test"));
        delivered.queue_id = "Q1".into();
        let text = timeline(&[first, second, delivered]);
        let headings: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.is_empty())
            .collect();
        assert_eq!(
            headings,
            [
                "Q1  from alice@contoso.test  message-id <same@x>",
                "Q2  from alice@contoso.test  message-id <same@x>"
            ],
            "{text}"
        );
        let q1 = text.split("\n\n").next().unwrap();
        assert!(q1.contains("delivered"), "{text}");
    }

    #[test]
    fn empty_trace_says_so() {
        assert_eq!(timeline(&[]), "no trace events match\n");
    }
}
