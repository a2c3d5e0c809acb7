//! `sluice tlsrpt send`: queue the TLS-RPT reports counted so far now,
//! today's included, rather than after UTC midnight.

use super::client::ApiClient;
use super::output::json;
use super::{Failure, GlobalArgs, TlsRptCommand};
use crate::admin::TlsReportSent;

pub(crate) fn run(global: &GlobalArgs, command: &TlsRptCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        TlsRptCommand::Send(super::JsonFlag { json: as_json }) => {
            let sent: Vec<TlsReportSent> = client.post_empty("tls-reports/send")?.decode()?;
            if *as_json {
                print!("{}", json(&sent)?);
            } else if sent.is_empty() {
                println!("no TLS report to send");
            } else {
                for report in &sent {
                    println!(
                        "{}: report queued to {} ({})",
                        report.domain,
                        report.to.join(", "),
                        report.queue_ids.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}
