//! `sluice quarantine ...`: list, show, release, delete messages a rule held.

use super::client::{segment, ApiClient, ApiError};
use super::output::PagePrinter;
use super::output::{human_size, json, or_dash, safe, Table};
use super::{Failure, GlobalArgs};
use crate::admin::QuarantineView;
use clap::Subcommand;

/// `sluice quarantine ...`.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined messages.
    List {
        /// At most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, rule, reason and headers (never the body).
    Show {
        /// Quarantine id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue a message for delivery as if it had not been quarantined.
    Release {
        /// Quarantine id.
        id: String,
    },
    /// Delete a message without notifying anyone.
    Delete {
        /// Quarantine id.
        id: String,
    },
}

pub(crate) fn run(global: &GlobalArgs, command: &QuarantineCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        QuarantineCommand::List { limit, json: as_json } => {
            let mut printer = PagePrinter::new(*as_json);
            client.each_page("quarantine", *limit, |held: Vec<QuarantineView>| {
                printer.page(&held, quarantine_table)
            })?;
            printer.finish(|| quarantine_table(&[]))?;
        }
        QuarantineCommand::Show { id, json: as_json } => {
            let view: QuarantineView = client.get(&message_path(id)).map_err(|e| unknown(e, id))?;
            if *as_json {
                print!("{}", json(&view)?);
            } else {
                print!("{}", message_details(&view));
            }
        }
        QuarantineCommand::Release { id } => {
            client
                .post_empty(&format!("{}/release", message_path(id)))
                .map_err(|e| unknown(e, id))?;
            println!("{id}: released to the queue");
        }
        QuarantineCommand::Delete { id } => {
            client.delete(&message_path(id)).map_err(|e| unknown(e, id))?;
            println!("{id}: deleted");
        }
    }
    Ok(())
}

fn message_path(id: &str) -> String {
    format!("quarantine/{}", segment(id))
}

/// A 404 names the id, whatever the node's wording.
fn unknown(error: ApiError, id: &str) -> Failure {
    if error.is_not_found() {
        Failure::runtime(format!("no such quarantined message {id:?}"))
    } else {
        Failure::from(error)
    }
}

/// The first recipient, and how many more.
fn recipients_summary(recipients: &[String]) -> String {
    match recipients {
        [] => "-".to_string(),
        [only] => only.clone(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    }
}

pub(crate) fn quarantine_table(held: &[QuarantineView]) -> String {
    if held.is_empty() {
        return "the quarantine is empty\n".to_string();
    }
    let mut table = Table::new(&["ID", "QUARANTINED", "SIZE", "FROM", "TO", "RULE", "REASON"]);
    for view in held {
        table.row(vec![
            view.id.clone(),
            view.quarantined_at.clone(),
            human_size(view.size),
            or_dash(Some(&view.from)),
            recipients_summary(&view.recipients),
            or_dash(Some(&view.rule)),
            or_dash(Some(&view.reason)),
        ]);
    }
    table.render()
}

pub(crate) fn message_details(view: &QuarantineView) -> String {
    let mut fields = Table::bare();
    let mut field = |key: &str, value: String| fields.row(vec![format!("{key}:"), value]);
    field("id", view.id.clone());
    field("message id", or_dash(Some(&view.message_id)));
    field("from", or_dash(Some(&view.from)));
    field("to", or_dash(Some(&view.recipients.join(", "))));
    field("size", format!("{} ({} bytes)", human_size(view.size), view.size));
    field("rule", or_dash(Some(&view.rule)));
    field("reason", or_dash(Some(&view.reason)));
    field("quarantined at", view.quarantined_at.clone());
    let mut text = fields.render();
    text.push_str("\nheaders:\n");
    for header in view.headers.iter().flatten() {
        text.push_str(&format!("  {}: {}\n", safe(&header.name), safe(&header.value)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::held;

    #[test]
    fn quarantine_table_has_one_aligned_line_per_message() {
        let mut second = held("Q22");
        second.recipients.truncate(1);
        let text = quarantine_table(&[held("Q1"), second]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("ID   QUARANTINED           SIZE    FROM"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("Q1   2025-01-01T00:00:00Z  2.0 kB  alice@contoso.test"),
            "{text}"
        );
        assert!(lines[1].contains("bob@fabrikam.test (+1)"), "{text}");
        assert!(lines[1].ends_with("Block card numbers  credit_card:2"), "{text}");
        assert_eq!(lines[0].find("RULE"), lines[2].find("Block card numbers"));
        assert_eq!(quarantine_table(&[]), "the quarantine is empty\n");
    }

    #[test]
    fn message_details_show_fields_then_headers() {
        let text = message_details(&held("Q1"));
        assert!(
            text.starts_with("id:              Q1\nmessage id:      <Q1@contoso.test>\n"),
            "{text}"
        );
        assert!(
            text.contains("to:              bob@fabrikam.test, carol@fabrikam.test\n"),
            "{text}"
        );
        assert!(text.contains("rule:            Block card numbers\n"), "{text}");
        assert!(
            text.ends_with("\nheaders:\n  From: Alice <alice@contoso.test>\n  Subject: Card details\n"),
            "{text}"
        );
    }
}
