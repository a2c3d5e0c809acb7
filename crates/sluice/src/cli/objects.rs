//! Object verbs: `apply`, `export`, `domain ...`, `connector ...`.

use super::client::{segment, ApiClient};
use super::connector_flags::{apply_inbound, apply_outbound, check_kind, new_inbound, new_outbound};
use super::output::{json, or_dash, Table};
use super::{
    ApplyArgs, ConnectorCommand, ConnectorKindArg, ConnectorName, DomainCommand, DomainTypeArg, Failure,
    GlobalArgs,
};
use crate::admin::ApplyRequest;
use crate::config::objects::{
    AcceptedDomain, AcceptedDomainType, ConnectorType, InboundConnectorObject, ObjectSet,
    OutboundConnectorObject, TlsLevel,
};
use serde::Serialize;
use std::path::Path;

/// Reads an objects file and validates it on its own, so mistakes are
/// reported (exit 2) before the node is contacted.
pub(crate) fn read_object_file(file: &Path) -> Result<ObjectSet, Failure> {
    let set = parse_object_file(file)?;
    crate::policy::Policy::compile(&set)
        .map_err(|error| Failure::usage(format!("{}: {error}", file.display())))?;
    Ok(set)
}

/// Reads an objects file (TOML or Exchange PowerShell): syntax, unknown
/// keys and cmdlets are errors (exit 2); references are checked later,
/// against what the node already holds.
fn parse_object_file(file: &Path) -> Result<ObjectSet, Failure> {
    let is_powershell = file
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("ps1"));
    let text = std::fs::read_to_string(file)
        .map_err(|error| Failure::usage(format!("cannot read {}: {error}", file.display())))?;
    if is_powershell {
        let imported = crate::config::powershell::import(&text)
            .map_err(|error| Failure::usage(format!("{}: {error}", file.display())))?;
        // A parameter that changes nothing must not pass unnoticed.
        for warning in &imported.warnings {
            eprintln!("warning: {}: {warning}", file.display());
        }
        return Ok(imported.objects);
    }
    let set: ObjectSet = toml::from_str(&text).map_err(|error| {
        // toml's message spans several lines (the offending line, a caret);
        // the first line has the position, the rest goes to -v.
        let full = error.to_string();
        let first = full.lines().next().unwrap_or_default().to_string();
        let message = match error.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("{}:{line}: {}", file.display(), error.message())
            }
            None => format!("{}: {first}", file.display()),
        };
        Failure::usage(message).with_detail(full)
    })?;
    Ok(set)
}

pub(crate) fn apply(global: &GlobalArgs, args: &ApplyArgs) -> Result<(), Failure> {
    let objects = parse_object_file(&args.file)?;
    let summary = summary(&objects);
    let client = ApiClient::connect(global)?;
    let request = ApplyRequest {
        objects,
        prune: args.prune,
    };
    // The node checks the result as it will hold it (a rule may name a
    // connector it already has); its refusal is a bad file: exit 2.
    client.post("apply", &request).map_err(|error| match error {
        super::client::ApiError::Status { status: 400, message } => {
            Failure::usage(format!("{}: {message}", args.file.display()))
        }
        other => Failure::from(other),
    })?;
    let pruned = if args.prune {
        "; objects not in the file were removed"
    } else {
        ""
    };
    println!("applied {summary}{pruned}");
    Ok(())
}

fn summary(set: &ObjectSet) -> String {
    let count = |n: usize, noun: &str| format!("{n} {noun}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}, {}, {}",
        count(set.accepted_domains.len(), "accepted domain"),
        count(set.inbound_connectors.len(), "inbound connector"),
        count(set.outbound_connectors.len(), "outbound connector"),
        count(set.rules.len(), "rule"),
    )
}

pub(crate) fn export(global: &GlobalArgs) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    let set: ObjectSet = client.get("export")?;
    print!("{}", to_toml(&set)?);
    Ok(())
}

fn to_toml(value: &impl Serialize) -> Result<String, Failure> {
    toml::to_string(value).map_err(|error| Failure::runtime(format!("cannot write TOML: {error}")))
}

pub(crate) fn domain(global: &GlobalArgs, command: &DomainCommand) -> Result<(), Failure> {
    // `check` reads DNS with the node's settings and needs no running node.
    let client = || ApiClient::connect(global);
    match command {
        DomainCommand::List(flag) => {
            let domains: Vec<AcceptedDomain> = client()?.get("accepted-domains")?;
            if flag.json {
                print!("{}", json(&domains)?);
            } else {
                print!("{}", domain_table(&domains));
            }
        }
        DomainCommand::Add { name, kind } => {
            let domain = AcceptedDomain {
                name: name.clone(),
                kind: match kind {
                    DomainTypeArg::Authoritative => AcceptedDomainType::Authoritative,
                    DomainTypeArg::InternalRelay => AcceptedDomainType::InternalRelay,
                },
            };
            client()?.post("accepted-domains", &domain)?;
            println!("added accepted domain {name} ({})", domain_type_word(domain.kind));
        }
        DomainCommand::Remove { name } => {
            client()?.delete(&format!("accepted-domains/{}", segment(name)))?;
            println!("removed accepted domain {name}");
        }
        DomainCommand::Check { name, json } => return super::domain_check::run(global, name, *json),
    }
    Ok(())
}

fn domain_type_word(kind: AcceptedDomainType) -> &'static str {
    match kind {
        AcceptedDomainType::Authoritative => "authoritative",
        AcceptedDomainType::InternalRelay => "internal_relay",
    }
}

pub(crate) fn domain_table(domains: &[AcceptedDomain]) -> String {
    let mut table = Table::new(&["NAME", "TYPE"]);
    for domain in domains {
        table.row(vec![domain.name.clone(), domain_type_word(domain.kind).into()]);
    }
    table.render()
}

/// A connector of either kind, as `connector list --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Connector {
    /// An inbound connector.
    Inbound(InboundConnectorObject),
    /// An outbound connector.
    Outbound(OutboundConnectorObject),
}

impl Connector {
    fn name(&self) -> &str {
        match self {
            Connector::Inbound(c) => &c.name,
            Connector::Outbound(c) => &c.name,
        }
    }

    fn kind(&self) -> ConnectorKindArg {
        match self {
            Connector::Inbound(_) => ConnectorKindArg::Inbound,
            Connector::Outbound(_) => ConnectorKindArg::Outbound,
        }
    }

    fn noun(&self) -> &'static str {
        match self {
            Connector::Inbound(_) => "inbound connector",
            Connector::Outbound(_) => "outbound connector",
        }
    }

    fn path(&self) -> String {
        format!("{}/{}", collection(self.kind()), segment(self.name()))
    }

    fn set_enabled(&mut self, enabled: bool) {
        match self {
            Connector::Inbound(c) => c.enabled = enabled,
            Connector::Outbound(c) => c.enabled = enabled,
        }
    }

    /// The connector as an `apply` file would hold it.
    fn to_object_set(&self) -> ObjectSet {
        match self.clone() {
            Connector::Inbound(c) => ObjectSet {
                inbound_connectors: vec![c],
                ..ObjectSet::default()
            },
            Connector::Outbound(c) => ObjectSet {
                outbound_connectors: vec![c],
                ..ObjectSet::default()
            },
        }
    }
}

fn collection(kind: ConnectorKindArg) -> &'static str {
    match kind {
        ConnectorKindArg::Inbound => "inbound-connectors",
        ConnectorKindArg::Outbound => "outbound-connectors",
    }
}

pub(crate) fn connector(global: &GlobalArgs, command: &ConnectorCommand) -> Result<(), Failure> {
    let client = ApiClient::connect(global)?;
    match command {
        ConnectorCommand::List(flag) => {
            let inbound: Vec<InboundConnectorObject> = client.get("inbound-connectors")?;
            let outbound: Vec<OutboundConnectorObject> = client.get("outbound-connectors")?;
            let all: Vec<Connector> = inbound
                .into_iter()
                .map(Connector::Inbound)
                .chain(outbound.into_iter().map(Connector::Outbound))
                .collect();
            if flag.json {
                print!("{}", json(&all)?);
            } else {
                print!("{}", connector_table(&all));
            }
        }
        ConnectorCommand::Show {
            name,
            kind,
            json: as_json,
        } => {
            let found = find_connector(&client, name, *kind)?;
            if *as_json {
                print!("{}", json(&found)?);
            } else {
                print!("{}", to_toml(&found.to_object_set())?);
            }
        }
        ConnectorCommand::Remove(target) => {
            let found = find_connector(&client, &target.name, target.kind)?;
            client.delete(&found.path())?;
            println!("removed {} {:?}", found.noun(), found.name());
        }
        ConnectorCommand::Enable(target) => switch(&client, target, true)?,
        ConnectorCommand::Disable(target) => switch(&client, target, false)?,
        ConnectorCommand::NewInbound(args) => {
            let created = new_inbound(args)?;
            client
                .post(collection(ConnectorKindArg::Inbound), &created)
                .map_err(|error| error.refused_as_invalid("inbound connector"))?;
            println!("created inbound connector {:?}", created.name);
        }
        ConnectorCommand::NewOutbound(args) => {
            let created = new_outbound(args)?;
            client
                .post(collection(ConnectorKindArg::Outbound), &created)
                .map_err(|error| error.refused_as_invalid("outbound connector"))?;
            println!("created outbound connector {:?}", created.name);
        }
        ConnectorCommand::Set(args) => {
            let mut found = find_connector(&client, &args.name, args.kind)?;
            check_kind(args, found.kind(), found.name())?;
            let noun = found.noun();
            match &mut found {
                Connector::Inbound(c) => apply_inbound(c, &args.common, &args.inbound),
                Connector::Outbound(c) => apply_outbound(c, &args.common, &args.outbound),
            }
            match &found {
                Connector::Inbound(c) => client.put(&found.path(), c),
                Connector::Outbound(c) => client.put(&found.path(), c),
            }
            .map_err(|error| error.refused_as_invalid(noun))?;
            println!("changed {noun} {:?}", found.name());
        }
        ConnectorCommand::Validate {
            name,
            recipients,
            json: as_json,
        } => {
            let path = format!("outbound-connectors/{}/validate", segment(name));
            let request = crate::admin::ValidateRequest {
                recipients: recipients.clone(),
            };
            let report: crate::admin::ValidationReport = client
                .post(&path, &request)
                .and_then(|answer| answer.decode())
                .map_err(|error| match error {
                    error if error.is_not_found() => {
                        Failure::runtime(format!("no such outbound connector {name:?}"))
                    }
                    error => error.refused_as_invalid("validation request"),
                })?;
            if *as_json {
                print!("{}", json(&report)?);
            } else {
                print!("{}", validation_table(&report));
            }
            if !report.passed {
                return Err(Failure::runtime(format!("validation of {name:?} failed")));
            }
        }
    }
    Ok(())
}

/// A validation report as a table, one step a line.
pub(crate) fn validation_table(report: &crate::admin::ValidationReport) -> String {
    let mut table = Table::new(&["STEP", "HOST", "RESULT", "TIME", "DETAIL"]);
    for step in &report.steps {
        table.row(vec![
            step.step.clone(),
            step.host.clone(),
            if step.passed { "pass" } else { "FAIL" }.into(),
            format!("{} ms", step.millis),
            step.detail.clone(),
        ]);
    }
    let verdict = if report.passed { "passed" } else { "FAILED" };
    format!(
        "{}connector {:?}: validation {verdict}\n",
        table.render(),
        report.connector
    )
}

fn switch(client: &ApiClient, target: &ConnectorName, enabled: bool) -> Result<(), Failure> {
    let mut found = find_connector(client, &target.name, target.kind)?;
    found.set_enabled(enabled);
    match &found {
        Connector::Inbound(c) => client.put(&found.path(), c)?,
        Connector::Outbound(c) => client.put(&found.path(), c)?,
    };
    let verb = if enabled { "enabled" } else { "disabled" };
    println!("{verb} {} {:?}", found.noun(), found.name());
    Ok(())
}

/// Looks the name up as the given kind, or as both kinds when none is given.
fn find_connector(
    client: &ApiClient,
    name: &str,
    kind: Option<ConnectorKindArg>,
) -> Result<Connector, Failure> {
    let lookup = |kind: ConnectorKindArg| -> Result<Option<Connector>, Failure> {
        let path = format!("{}/{}", collection(kind), segment(name));
        let found = match kind {
            ConnectorKindArg::Inbound => client.get(&path).map(Connector::Inbound),
            ConnectorKindArg::Outbound => client.get(&path).map(Connector::Outbound),
        };
        match found {
            Ok(connector) => Ok(Some(connector)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(Failure::from(error)),
        }
    };
    let kinds = match kind {
        Some(kind) => vec![kind],
        None => vec![ConnectorKindArg::Inbound, ConnectorKindArg::Outbound],
    };
    let mut found = Vec::new();
    for kind in kinds {
        found.extend(lookup(kind)?);
    }
    pick_connector(name, found)
}

/// One match, or why not.
fn pick_connector(name: &str, mut found: Vec<Connector>) -> Result<Connector, Failure> {
    match found.len() {
        0 => Err(Failure::runtime(format!("no such connector {name:?}"))),
        1 => Ok(found.remove(0)),
        _ => Err(Failure::usage(format!(
            "{name:?} is both an inbound and an outbound connector: add --kind inbound or --kind outbound"
        ))),
    }
}

fn type_word(kind: ConnectorType) -> &'static str {
    match kind {
        ConnectorType::Partner => "partner",
        ConnectorType::OnPremises => "on_premises",
    }
}

fn tls_word(level: TlsLevel) -> &'static str {
    match level {
        TlsLevel::Opportunistic => "opportunistic",
        TlsLevel::EncryptionOnly => "encryption_only",
        TlsLevel::CertificateValidation => "certificate_validation",
        TlsLevel::DomainValidation => "domain_validation",
    }
}

/// KIND, NAME, TYPE, ENABLED, then what identifies (inbound) or where it
/// sends (outbound).
pub(crate) fn connector_table(connectors: &[Connector]) -> String {
    let mut table = Table::new(&["KIND", "NAME", "TYPE", "ENABLED", "DETAIL"]);
    for connector in connectors {
        let (kind, kind_type, enabled, detail) = match connector {
            Connector::Inbound(c) => {
                let mut senders = c.sender_ip_addresses.clone();
                if !c.tls_sender_certificate_name.is_empty() {
                    senders.push(format!("cert {}", c.tls_sender_certificate_name));
                }
                (
                    "inbound",
                    c.kind,
                    c.enabled,
                    format!("from {}", senders.join(", ")),
                )
            }
            Connector::Outbound(c) => {
                let scope = if c.transport_rule_scoped {
                    "rule-scoped".to_string()
                } else {
                    c.recipient_domains.join(", ")
                };
                let hop = if c.use_mx_record {
                    "MX".to_string()
                } else {
                    c.smart_hosts.join(", ")
                };
                let validated = match &c.last_validation {
                    Some(v) if v.passed => format!("; validated {}", v.at),
                    Some(v) => format!("; validation FAILED {}", v.at),
                    None => "; not validated".to_string(),
                };
                (
                    "outbound",
                    c.kind,
                    c.enabled,
                    format!("{scope} -> {hop} (tls {}){validated}", tls_word(c.tls)),
                )
            }
        };
        table.row(vec![
            kind.into(),
            connector.name().into(),
            type_word(kind_type).into(),
            if enabled { "yes" } else { "no" }.into(),
            or_dash(Some(&detail)),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(name: &str) -> InboundConnectorObject {
        toml::from_str::<InboundConnectorObject>(&format!(
            "name = {name:?}\nsender_ip_addresses = [\"127.0.0.30/32\"]\ntype = \"on_premises\""
        ))
        .unwrap()
    }

    fn outbound(name: &str) -> OutboundConnectorObject {
        toml::from_str::<OutboundConnectorObject>(&format!(
            "name = {name:?}\nsmart_hosts = [\"127.0.0.30:2525\"]\ntransport_rule_scoped = true\n\
             enabled = false"
        ))
        .unwrap()
    }

    #[test]
    fn connector_table_lists_both_kinds_aligned() {
        let text = connector_table(&[
            Connector::Inbound(inbound("From scanner")),
            Connector::Outbound(outbound("To scanner")),
        ]);
        assert_eq!(
            text,
            "KIND      NAME          TYPE         ENABLED  DETAIL\n\
             inbound   From scanner  on_premises  yes      from 127.0.0.30/32\n\
             outbound  To scanner    partner      no       rule-scoped -> 127.0.0.30:2525 (tls opportunistic); not validated\n"
        );
    }

    #[test]
    fn connector_json_carries_its_kind() {
        let value = serde_json::to_value(Connector::Outbound(outbound("To scanner"))).unwrap();
        assert_eq!(value["kind"], "outbound");
        assert_eq!(value["name"], "To scanner");
        assert_eq!(value["enabled"], false);
    }

    #[test]
    fn connector_show_is_an_applicable_toml_table() {
        let text = to_toml(&Connector::Inbound(inbound("From scanner")).to_object_set()).unwrap();
        assert!(text.starts_with("[[inbound_connector]]"), "{text}");
        let back: ObjectSet = toml::from_str(&text).unwrap();
        assert_eq!(back.inbound_connectors, vec![inbound("From scanner")]);
    }

    #[test]
    fn ambiguous_connector_names_ask_for_a_kind() {
        let both = vec![
            Connector::Inbound(inbound("Partner")),
            Connector::Outbound(outbound("Partner")),
        ];
        let failure = pick_connector("Partner", both).unwrap_err();
        assert_eq!(failure.exit_code, 2);
        assert!(failure.message.contains("--kind"), "{}", failure.message);
        let none = pick_connector("Nobody", Vec::new()).unwrap_err();
        assert_eq!(
            (none.exit_code, none.message.as_str()),
            (1, "no such connector \"Nobody\"")
        );
    }

    #[test]
    fn object_files_are_checked_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("objects.toml");
        std::fs::write(
            &file,
            "[[accepted_domain]]\nname = \"contoso.test\"\n\n[[outbound_connector]]\nname = \"x\"\ncolour = 1\n",
        )
        .unwrap();
        let syntax = read_object_file(&file).unwrap_err();
        assert_eq!(syntax.exit_code, 2);
        assert!(syntax.message.contains("objects.toml:6:"), "{}", syntax.message);
        assert!(syntax.message.contains("colour"), "{}", syntax.message);

        std::fs::write(
            &file,
            "[[inbound_connector]]\nname = \"Partner\"\nsender_ip_addresses = [\"nope\"]\n",
        )
        .unwrap();
        let invalid = read_object_file(&file).unwrap_err();
        assert_eq!(invalid.exit_code, 2);
        assert!(invalid.message.contains("Partner"), "{}", invalid.message);
        assert!(
            invalid.message.contains("sender_ip_addresses"),
            "{}",
            invalid.message
        );

        let script = dir.path().join("connectors.ps1");
        std::fs::write(&script, "New-InboundConnector -Name x `\n  -Bogus 1").unwrap();
        let refused = read_object_file(&script).unwrap_err();
        assert_eq!(refused.exit_code, 2);
        assert!(
            refused.message.contains("line 2") && refused.message.contains("-Bogus"),
            "{}",
            refused.message
        );
        std::fs::write(
            &script,
            "New-InboundConnector -Name x -SenderIPAddresses 10.0.0.1",
        )
        .unwrap();
        assert_eq!(read_object_file(&script).unwrap().inbound_connectors[0].name, "x");

        std::fs::write(&file, "[[accepted_domain]]\nname = \"contoso.test\"\n").unwrap();
        let set = read_object_file(&file).unwrap();
        assert_eq!(
            summary(&set),
            "1 accepted domain, 0 inbound connectors, 0 outbound connectors, 0 rules"
        );
    }
}
