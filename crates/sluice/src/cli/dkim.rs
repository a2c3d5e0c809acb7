//! `sluice dkim ...`: DKIM keys made and kept by the node. Only the DNS
//! record to publish is printed; the private key never leaves the node.

use super::client::{segment, ApiClient};
use super::output::{json, Table};
use super::{DkimAlgorithmArg, DkimCommand, Failure, GlobalArgs};
use crate::auth::keys::{KeyAlgorithm, KeyView, NewKeyRequest};

pub(crate) fn run(global: &GlobalArgs, command: &DkimCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        DkimCommand::New {
            domain,
            selector,
            algorithm,
            json: as_json,
        } => {
            let request = NewKeyRequest {
                domain: domain.clone(),
                selector: selector.clone(),
                algorithm: match algorithm {
                    DkimAlgorithmArg::Ed25519 => KeyAlgorithm::Ed25519,
                    DkimAlgorithmArg::Rsa => KeyAlgorithm::Rsa,
                },
            };
            let key: KeyView = client.post("dkim", &request)?.decode()?;
            if *as_json {
                print!("{}", json(&key)?);
            } else {
                print!("{}", publish(&key));
            }
        }
        DkimCommand::List(flag) => {
            let keys: Vec<KeyView> = client.get("dkim")?;
            if flag.json {
                print!("{}", json(&keys)?);
            } else {
                print!("{}", key_table(&keys));
            }
        }
        DkimCommand::Show {
            domain,
            json: as_json,
        } => {
            let keys: Vec<KeyView> = client.get(&format!("dkim/{}", segment(domain)))?;
            if *as_json {
                print!("{}", json(&keys)?);
            } else {
                for key in &keys {
                    print!("{}", publish(key));
                }
            }
        }
        DkimCommand::Activate { domain, selector } => {
            client.post_empty(&format!(
                "dkim/{}/{}/activate",
                segment(domain),
                segment(selector)
            ))?;
            println!("{selector}._domainkey.{domain}: now signs mail from {domain}");
        }
        DkimCommand::Remove { domain, selector } => {
            client.delete(&format!("dkim/{}/{}", segment(domain), segment(selector)))?;
            println!("{selector}._domainkey.{domain}: removed");
        }
    }
    Ok(())
}

/// The record as an administrator pastes it into a zone.
fn publish(key: &KeyView) -> String {
    let state = if key.active {
        "active: signs mail from this domain"
    } else {
        "inactive: publish the record, then `sluice dkim activate`"
    };
    format!(
        "{name} ({algorithm}, {state})\n{name}. IN TXT \"{record}\"\n",
        name = key.record_name,
        algorithm = key.algorithm.as_str(),
        record = key.record
    )
}

fn key_table(keys: &[KeyView]) -> String {
    if keys.is_empty() {
        return "no DKIM keys\n".to_string();
    }
    let mut table = Table::new(&["DOMAIN", "SELECTOR", "ALGORITHM", "ACTIVE", "RECORD NAME"]);
    for key in keys {
        table.row(vec![
            key.domain.clone(),
            key.selector.clone(),
            key.algorithm.as_str().to_string(),
            if key.active { "yes" } else { "no" }.to_string(),
            key.record_name.clone(),
        ]);
    }
    table.render()
}
