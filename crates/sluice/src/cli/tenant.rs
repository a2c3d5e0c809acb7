//! `sluice tenant ...`: a scanner node's tenants (SPEC section 12), as a
//! client of `/api/v1/tenants`.

use super::client::{query, segment, ApiClient, ApiError};
use super::output::{json, or_dash, Table};
use super::{Failure, GlobalArgs, JsonFlag};
use crate::tenant::health::TenantView;
use crate::tenant::kit::KitFormat;
use crate::tenant::TenantRequest;
use clap::{Subcommand, ValueEnum};

/// `sluice tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Onboard a tenant: its domain, an inbound connector for its
    /// addresses, a connector back to it and its scanning rules, in one change.
    Add {
        /// The tenant's domain.
        domain: String,
        /// Addresses (CIDR) the tenant's mail comes from.
        #[arg(long = "ip", value_name = "CIDR", required = true, num_args = 1..)]
        ips: Vec<String>,
        /// Where scanned mail goes back, `HOST[:PORT]`.
        #[arg(long, value_name = "HOST[:PORT]")]
        return_host: String,
    },
    /// Every tenant with its health.
    List(JsonFlag),
    /// One tenant: objects, validation messages, mail flow, refusals.
    Show {
        /// The tenant's domain.
        domain: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove exactly the objects `tenant add` created.
    Remove {
        /// The tenant's domain.
        domain: String,
    },
    /// Print the tenant's side: what its administrator runs.
    Kit {
        /// The tenant's domain.
        domain: String,
        /// ps1 (Exchange Online), toml (a sluice gateway) or html (a guide).
        #[arg(long, value_enum, default_value = "ps1")]
        format: KitFormatArg,
    },
}

/// `--format` of `tenant kit`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KitFormatArg {
    /// Exchange Online PowerShell.
    Ps1,
    /// sluice objects.
    Toml,
    /// A one-page guide.
    Html,
}

#[derive(serde::Deserialize)]
struct KitAnswer {
    text: String,
}

fn unknown(error: ApiError, domain: &str) -> Failure {
    if error.is_not_found() {
        Failure::runtime(format!("no tenant {domain} on this node"))
    } else {
        Failure::from(error)
    }
}

pub(crate) fn run(global: &GlobalArgs, command: &TenantCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        TenantCommand::Add {
            domain,
            ips,
            return_host,
        } => {
            let request = TenantRequest {
                domain: domain.clone(),
                ips: ips.clone(),
                return_host: return_host.clone(),
            };
            let view: TenantView = client
                .post("tenants", &request)
                .and_then(|a| a.decode())
                .map_err(|e| e.refused_as_invalid("tenant"))?;
            println!("tenant {} added: {}", view.domain, view.objects.join(", "));
            println!("next: sluice tenant kit {} --format ps1|toml|html", view.domain);
        }
        TenantCommand::List(flag) => {
            let all: Vec<TenantView> = client.get("tenants")?;
            if flag.json {
                print!("{}", json(&all)?);
            } else {
                let mut table = Table::new(&[
                    "DOMAIN",
                    "VALIDATED",
                    "LAST MAIL",
                    "24H",
                    "QUARANTINED",
                    "REFUSED",
                ]);
                for t in &all {
                    table.row(vec![
                        t.domain.clone(),
                        if t.validated { "yes".into() } else { "no".into() },
                        or_dash(t.last_arrival.as_deref()),
                        t.arrived_last_day.to_string(),
                        t.quarantined.to_string(),
                        t.refused_unlisted.to_string(),
                    ]);
                }
                print!("{}", table.render());
            }
        }
        TenantCommand::Show {
            domain,
            json: as_json,
        } => {
            let view: TenantView = client
                .get(&format!("tenants/{}", segment(domain)))
                .map_err(|e| unknown(e, domain))?;
            if *as_json {
                print!("{}", json(&view)?);
            } else {
                print!("{}", details(&view));
            }
        }
        TenantCommand::Remove { domain } => {
            client
                .delete(&format!("tenants/{}", segment(domain)))
                .map_err(|e| unknown(e, domain))?;
            println!("tenant {domain} removed; its mail is refused from now on");
        }
        TenantCommand::Kit { domain, format } => {
            let format = match format {
                KitFormatArg::Ps1 => KitFormat::Ps1,
                KitFormatArg::Toml => KitFormat::Toml,
                KitFormatArg::Html => KitFormat::Html,
            };
            let word = serde_json::to_value(format)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            let kit: KitAnswer = client
                .get(&format!(
                    "tenants/{}/kit{}",
                    segment(domain),
                    query(&[("format", word)])
                ))
                .map_err(|e| unknown(e, domain))?;
            print!("{}", kit.text);
        }
    }
    Ok(())
}

fn details(view: &TenantView) -> String {
    let mut out = String::new();
    out.push_str(&format!("Tenant:          {}\n", view.domain));
    out.push_str(&format!("Addresses:       {}\n", view.ips.join(", ")));
    out.push_str(&format!("Return host:     {}\n", view.return_host));
    out.push_str(&format!(
        "Validated:       {}\n",
        if view.validated {
            "yes"
        } else {
            "no (no validation message has arrived)"
        }
    ));
    out.push_str(&format!(
        "Last mail:       {}\n",
        or_dash(view.last_arrival.as_deref())
    ));
    out.push_str(&format!("Last 24 hours:   {} messages\n", view.arrived_last_day));
    out.push_str(&format!("Quarantined:     {}\n", view.quarantined));
    out.push_str(&format!(
        "Refused:         {} from addresses not listed for the tenant{}\n",
        view.refused_unlisted,
        view.last_refused
            .as_ref()
            .map(|l| format!(" (last: {l})"))
            .unwrap_or_default()
    ));
    out.push_str("Objects:\n");
    for object in &view.objects {
        out.push_str(&format!("  {object}\n"));
    }
    out.push_str("Validation messages:\n");
    if view.validations.is_empty() {
        out.push_str("  none\n");
    }
    for v in &view.validations {
        out.push_str(&format!(
            "  {}  from {}  {}  <{}>\n",
            v.at,
            v.client,
            match &v.tls_version {
                Some(version) => format!("TLS {version}"),
                None if v.tls => "TLS".to_string(),
                None => "no TLS".to_string(),
            },
            v.message_id
        ));
    }
    out
}
