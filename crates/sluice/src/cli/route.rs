//! `sluice route explain`: the dry run of SPEC section 2, from the node's
//! admin API, or offline from an objects file (`--objects`) or the node's
//! store when the node is not running.

use super::client::{ApiClient, ApiError};
use super::output::{json, Table};
use super::{Failure, GlobalArgs};
use crate::admin::explain::{explain, ExplainRequest, Explanation, RecipientExplanation};
use crate::config::objects::ObjectSet;
use crate::config::Config;
use clap::{Args, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

/// `sluice route ...`.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Dry run: inbound connector, sender and relay checks, header firewall,
    /// rules (and why others did not match), outbound connector per recipient.
    Explain(ExplainArgs),
}

/// `sluice route explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Envelope sender (`""` for the null sender).
    #[arg(long)]
    pub from: String,
    /// Envelope recipient (repeat for several).
    #[arg(long = "to", required = true)]
    pub to: Vec<String>,
    /// Client address [default: an internet address].
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Name of the client's verified TLS certificate.
    #[arg(long)]
    pub tls_cert_name: Option<String>,
    /// The session used STARTTLS.
    #[arg(long)]
    pub tls: bool,
    /// A header of the message, `Name: value` (repeat for several).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// A whole message to explain instead of a synthesized one.
    #[arg(long, value_name = "FILE")]
    pub eml: Option<PathBuf>,
    /// Explain against this objects file instead of a node.
    #[arg(long, value_name = "FILE")]
    pub objects: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `route ...`.
pub(crate) fn run(global: &GlobalArgs, command: &RouteCommand) -> Result<(), Failure> {
    let RouteCommand::Explain(args) = command;
    let eml = match &args.eml {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let request = ExplainRequest {
        from: args.from.clone(),
        to: args.to.clone(),
        ip: args.ip,
        tls_cert_name: args.tls_cert_name.clone(),
        tls: args.tls,
        headers: args.headers.clone(),
        eml,
    };
    let explanation = match &args.objects {
        Some(file) => locally(&super::objects::read_object_file(file)?, &request)?,
        None => from_node(global, &request)?,
    };
    if args.json {
        print!("{}", json(&explanation)?);
    } else {
        print!("{}", render(&explanation));
    }
    Ok(())
}

fn locally(objects: &ObjectSet, request: &ExplainRequest) -> Result<Explanation, Failure> {
    let policy = crate::policy::Policy::compile(objects).map_err(|e| Failure::usage(e.to_string()))?;
    explain(&policy, request).map_err(Failure::usage)
}

fn from_node(global: &GlobalArgs, request: &ExplainRequest) -> Result<Explanation, Failure> {
    let client = ApiClient::connect(global)?;
    match client
        .post("route/explain", request)
        .and_then(|answer| answer.decode())
    {
        Ok(explanation) => Ok(explanation),
        // Without a running node, read its store directly (SPEC section 2).
        Err(ApiError::Unreachable { .. }) if global.config.is_some() => {
            let config = Config::load(global.config.as_deref()).map_err(|e| Failure::usage(e.to_string()))?;
            let store: std::sync::Arc<dyn crate::store::Store> = if config.store_url == "embedded" {
                crate::store::EmbeddedStore::open(&config.data_dir).map_err(|e| {
                    Failure::runtime(format!("node unreachable and its store cannot be opened: {e}"))
                })?
            } else {
                crate::store::PostgresStore::connect(&config.store_url, &config.hostname).map_err(|e| {
                    Failure::runtime(format!("node unreachable and its store cannot be opened: {e}"))
                })?
            };
            let objects =
                crate::store::Store::objects(store.as_ref()).map_err(|e| Failure::runtime(e.to_string()))?;
            locally(&objects, request)
        }
        Err(ApiError::Status { status: 400, message }) => Err(Failure::usage(message)),
        Err(error) => Err(error.into()),
    }
}

/// The explanation as text.
pub(crate) fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let connector = e
        .inbound
        .connector
        .as_deref()
        .map_or("none (anonymous)".to_string(), |c| {
            format!("{c:?} ({})", e.inbound.kind)
        });
    out.push_str(&format!(
        "Inbound connector: {connector}\n  why: {}\n",
        e.inbound.reason
    ));
    out.push_str(&format!(
        "Sender: {}\n",
        e.sender_refused
            .as_deref()
            .map_or("accepted".to_string(), |r| format!("refused: {r}"))
    ));
    out.push_str(&format!(
        "Relay: {}\n",
        if e.relay_allowed {
            "allowed (on-premises connector, organisation sender)"
        } else {
            "not allowed: only accepted domains are reachable"
        }
    ));
    if e.internal_headers_retained {
        out.push_str("Header firewall: internal headers retained (connector trusts them)\n");
    } else if e.headers_removed.is_empty() {
        out.push_str("Header firewall: no internal headers to remove\n");
    } else {
        out.push_str(&format!(
            "Header firewall: removed {}\n",
            e.headers_removed.join(", ")
        ));
    }
    out.push_str("Rules:\n");
    if e.rules.is_empty() {
        out.push_str("  (none)\n");
    }
    for rule in &e.rules {
        let audit = if rule.audit { " [audit]" } else { "" };
        let matched = if rule.matched.is_empty() {
            "no recipient".to_string()
        } else {
            rule.matched.join(", ")
        };
        out.push_str(&format!(
            "  {} {:?}{audit}: matched {matched}\n",
            rule.priority, rule.rule
        ));
        for (recipient, why) in &rule.not_matched {
            out.push_str(&format!("      not {recipient}: {why}\n"));
        }
    }
    if let Some(reply) = &e.refused {
        out.push_str(&format!("Message refused in session: {reply}\n"));
    }
    out.push_str("Recipients:\n");
    let mut table =
        Table::new(&["RECIPIENT", "OUTCOME", "CONNECTOR", "NEXT HOP", "TLS", "REPLY"]).indented("  ");
    for r in &e.recipients {
        table.row(vec![
            r.address.clone(),
            r.outcome.clone(),
            r.connector.clone().unwrap_or_else(|| "-".into()),
            r.next_hop.clone().unwrap_or_else(|| "-".into()),
            r.tls.clone().unwrap_or_else(|| "-".into()),
            r.reply.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&table.render());
    let steps: Vec<&RecipientExplanation> = e.recipients.iter().filter(|r| r.route_step.is_some()).collect();
    if !steps.is_empty() {
        out.push_str(
            "Routing (first match wins: 1 a rule's connector, 2 authoritative domain: own mailboxes, \
             3 most specific connector, 4 internal_relay domain: MX, 5 relay: MX):\n",
        );
        for r in steps {
            out.push_str(&format!(
                "  {}: {}\n",
                r.address,
                r.route_step.as_deref().unwrap_or_default()
            ));
        }
    }
    for note in &e.notes {
        out.push_str(&format!("Note: {note}\n"));
    }
    out
}
