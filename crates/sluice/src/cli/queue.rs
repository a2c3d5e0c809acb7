//! `sluice queue ...`: list, summary, show, retry, hold, release, delete, as
//! postqueue/postsuper users expect them.

use super::client::{query, segment, ApiClient};
use super::output::PagePrinter;
use super::output::{human_size, json, or_dash, Table};
use super::{Failure, GlobalArgs, QueueCommand, QueueStatusArg};
use crate::admin::{
    DeleteAllResult, QueueActionResult, QueueEntryView, QueueStatus, QueueSummary, RetryAllResult,
};

pub(crate) fn run(global: &GlobalArgs, command: &QueueCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        QueueCommand::List {
            status,
            limit,
            json: as_json,
        } => {
            let status = status.map(status_of);
            let path = format!(
                "queue{}",
                query(&[("status", status.map(|s| s.as_str().to_string()))])
            );
            let mut printer = PagePrinter::new(*as_json);
            client.each_page(&path, *limit, |entries: Vec<QueueEntryView>| {
                printer.page(&entries, queue_table)
            })?;
            printer.finish(|| queue_table(&[]))?;
        }
        QueueCommand::Show { id, json: as_json } => {
            let entry: QueueEntryView = client.get(&entry_path(id))?;
            if *as_json {
                print!("{}", json(&entry)?);
            } else {
                print!("{}", entry_details(&entry));
            }
        }
        QueueCommand::Summary { json: as_json } => {
            let summary: QueueSummary = client.get("queue/summary")?;
            if *as_json {
                print!("{}", json(&summary)?);
            } else {
                print!("{}", summary_table(&summary));
            }
        }
        QueueCommand::Retry { id: Some(id), .. } => act(&client, id, "retry")?,
        QueueCommand::Retry { id: None, .. } => {
            let result: RetryAllResult = client.post_empty("queue/retry")?.decode()?;
            let held = match result.held {
                0 => String::new(),
                n => format!("; {n} held left held (queue release ID to deliver them)"),
            };
            println!("{} entries due for retry now{held}", result.retried);
        }
        QueueCommand::Hold { id } => act(&client, id, "hold")?,
        QueueCommand::Release { id } => act(&client, id, "release")?,
        QueueCommand::Delete { id: Some(id), .. } => {
            client.delete(&entry_path(id))?;
            println!("{id}: deleted");
        }
        QueueCommand::Delete {
            id: None,
            status,
            domain,
            ..
        } => {
            let path = format!(
                "queue{}",
                query(&[
                    ("status", status.map(|s| status_of(s).as_str().to_string())),
                    ("domain", domain.clone()),
                ])
            );
            let result: DeleteAllResult = client.delete(&path)?.decode()?;
            println!("{} entries deleted", result.deleted);
        }
    }
    Ok(())
}

fn status_of(arg: QueueStatusArg) -> QueueStatus {
    match arg {
        QueueStatusArg::Queued => QueueStatus::Queued,
        QueueStatusArg::Deferred => QueueStatus::Deferred,
        QueueStatusArg::Held => QueueStatus::Held,
    }
}

/// Posts an action; prints what the node says it did (a retry of a held
/// entry is the node's 409, exit 1).
fn act(client: &ApiClient, id: &str, action: &str) -> Result<(), Failure> {
    let result: QueueActionResult = client
        .post_empty(&format!("{}/{action}", entry_path(id)))?
        .decode()?;
    println!("{}", result.message);
    Ok(())
}

/// qshape's layout: a row per destination, the total then one column per
/// age bucket (minutes, each the upper bound; the last open).
pub(crate) fn summary_table(summary: &QueueSummary) -> String {
    let mut headers = vec!["DESTINATION".to_string(), "T".to_string()];
    headers.extend(summary.age_buckets_minutes.iter().map(|bound| match bound {
        Some(minutes) => minutes.to_string(),
        None => format!(
            "{}+",
            summary.age_buckets_minutes.iter().flatten().last().copied().unwrap_or_default()
        ),
    }));
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(&headers);
    for row in std::iter::once(&summary.total).chain(&summary.destinations) {
        let mut cells = vec![row.destination.clone(), row.total.to_string()];
        cells.extend(row.by_age.iter().map(u64::to_string));
        table.row(cells);
    }
    format!(
        "{}(waiting recipients by destination and age in minutes)\n",
        table.render()
    )
}

fn entry_path(id: &str) -> String {
    format!("queue/{}", segment(id))
}

/// The first recipient, and how many more.
fn recipients_summary(entry: &QueueEntryView) -> String {
    match entry.recipients.as_slice() {
        [] => "-".to_string(),
        [only] => only.address.clone(),
        [first, rest @ ..] => format!("{} (+{})", first.address, rest.len()),
    }
}

pub(crate) fn queue_table(entries: &[QueueEntryView]) -> String {
    if entries.is_empty() {
        return "the queue is empty\n".to_string();
    }
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "RECEIVED",
        "SIZE",
        "FROM",
        "TO",
        "NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for entry in entries {
        table.row(vec![
            entry.id.clone(),
            entry.status.to_string(),
            entry.received_at.clone(),
            human_size(entry.size),
            or_dash(Some(&entry.from)),
            recipients_summary(entry),
            or_dash(entry.next_attempt.as_deref()),
            or_dash(entry.last_error.as_deref()),
        ]);
    }
    table.render()
}

pub(crate) fn entry_details(entry: &QueueEntryView) -> String {
    let mut fields = Table::bare();
    let mut field = |key: &str, value: String| fields.row(vec![format!("{key}:"), value]);
    field("id", entry.id.clone());
    field("message id", or_dash(Some(&entry.message_id)));
    field("from", or_dash(Some(&entry.from)));
    field(
        "size",
        format!("{} ({} bytes)", human_size(entry.size), entry.size),
    );
    field("received at", entry.received_at.clone());
    field("status", entry.status.to_string());
    field("next attempt", or_dash(entry.next_attempt.as_deref()));
    field("last error", or_dash(entry.last_error.as_deref()));
    let mut recipients = Table::new(&[
        "RECIPIENT",
        "STATUS",
        "CONNECTOR",
        "ATTEMPTS",
        "NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for recipient in &entry.recipients {
        recipients.row(vec![
            recipient.address.clone(),
            recipient.status.to_string(),
            or_dash(recipient.connector.as_deref()),
            recipient.attempts.to_string(),
            or_dash(recipient.next_attempt.as_deref()),
            or_dash(recipient.last_error.as_deref()),
        ]);
    }
    format!("{}\n{}", fields.render(), recipients.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{RecipientQueueStatus, RecipientView};

    fn deferred_entry() -> QueueEntryView {
        let recipient = |address: &str, status, last_error: Option<&str>| RecipientView {
            address: address.into(),
            status,
            connector: Some("To fabrikam".into()),
            last_error: last_error.map(String::from),
            next_attempt: None,
            attempts: 1,
        };
        QueueEntryView {
            id: "01J0ABC".into(),
            message_id: "<m1@contoso.test>".into(),
            from: "alice@contoso.test".into(),
            recipients: vec![
                recipient("bob@fabrikam.test", RecipientQueueStatus::Delivered, None),
                recipient(
                    "carol@fabrikam.test",
                    RecipientQueueStatus::Deferred,
                    Some("451 4.3.0 try later"),
                ),
            ],
            size: 2048,
            received_at: "2025-01-01T10:00:00Z".into(),
            status: QueueStatus::Deferred,
            last_error: Some("451 4.3.0 try later".into()),
            next_attempt: Some("2025-01-01T10:05:00Z".into()),
        }
    }

    #[test]
    fn queue_table_has_one_aligned_line_per_entry() {
        let text = queue_table(&[deferred_entry()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID       STATUS    RECEIVED"), "{text}");
        assert!(
            lines[1].starts_with("01J0ABC  deferred  2025-01-01T10:00:00Z"),
            "{text}"
        );
        assert!(lines[1].contains("carol@fabrikam.test") || lines[1].contains("(+1)"));
        assert!(lines[1].ends_with("451 4.3.0 try later"), "{text}");
        assert_eq!(lines[0].find("TO"), lines[1].find("bob@fabrikam.test (+1)"));
        assert_eq!(queue_table(&[]), "the queue is empty\n");
    }

    #[test]
    fn entry_details_show_every_recipient() {
        let text = entry_details(&deferred_entry());
        assert!(text.contains("message id:    <m1@contoso.test>"), "{text}");
        assert!(text.contains("size:          2.0 kB (2048 bytes)"), "{text}");
        let carol = text
            .lines()
            .find(|l| l.starts_with("carol@"))
            .expect("a line for carol");
        assert!(carol.contains("deferred"), "{carol}");
        assert!(carol.ends_with("451 4.3.0 try later"), "{carol}");
        let bob = text.lines().find(|l| l.starts_with("bob@")).unwrap();
        assert!(bob.contains("delivered"), "{bob}");
    }

    #[test]
    fn summary_table_is_laid_out_as_qshape() {
        use crate::admin::{QueueShapeRow, AGE_BUCKETS_MINUTES};
        let row = |destination: &str, by_age: Vec<u64>| QueueShapeRow {
            destination: destination.into(),
            total: by_age.iter().sum(),
            by_age,
        };
        let summary = QueueSummary {
            age_buckets_minutes: AGE_BUCKETS_MINUTES
                .iter()
                .map(|&m| Some(m))
                .chain([None])
                .collect(),
            total: row("TOTAL", vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            destinations: vec![
                row("fabrikam.test", vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                row("example.org", vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ],
        };
        let text = summary_table(&summary);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "DESTINATION",
                "T",
                "5",
                "10",
                "20",
                "40",
                "80",
                "160",
                "320",
                "640",
                "1280",
                "1280+"
            ]
        );
        assert_eq!(
            lines[1],
            ["TOTAL", "3", "2", "0", "0", "0", "0", "0", "0", "0", "0", "1"]
        );
        assert_eq!(lines[2][..3], ["fabrikam.test", "2", "2"]);
        assert_eq!(lines[3][0], "example.org");
    }
}
