//! The flags of `connector new-inbound`, `new-outbound` and `set`: one flag
//! per key of SPEC section 4, each `None` (or empty) when not given so `set`
//! changes only the keys named. Scalars replace, repeated flags replace the
//! whole list, booleans turn off with `=false`.

use super::{ConnectorKindArg, Failure};
use crate::config::objects::{ConnectorType, InboundConnectorObject, OutboundConnectorObject, TlsLevel};
use clap::{Args, ValueEnum};
use serde::de::DeserializeOwned;

/// `--type` of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectorTypeArg {
    /// A partner organisation or service.
    Partner,
    /// The organisation's own server.
    #[value(alias = "on_premises")]
    OnPremises,
}

/// `--tls` of an outbound connector (Exchange's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    /// STARTTLS when offered, any certificate.
    Opportunistic,
    /// TLS required, any certificate.
    #[value(alias = "encryption_only")]
    EncryptionOnly,
    /// TLS required, a chain to the trust roots.
    #[value(alias = "certificate_validation")]
    CertificateValidation,
    /// TLS required, a trusted chain naming `--tls-domain`.
    #[value(alias = "domain_validation")]
    DomainValidation,
}

/// Keys both kinds have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct CommonConnectorFlags {
    /// partner or on-premises.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub connector_type: Option<ConnectorTypeArg>,
    /// Trust (inbound) or send (outbound) X-Sluice-Org-* headers (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub retain_internal_headers: Option<bool>,
    /// Free text.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Stored but not used (`=false` to enable).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub disabled: Option<bool>,
}

/// Keys of an inbound connector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct InboundFlags {
    /// Source address or CIDR range (repeatable).
    #[arg(long = "sender-ip", value_name = "A")]
    pub sender_ip_addresses: Vec<String>,
    /// Identify by this client certificate name instead of (or with) IPs.
    #[arg(long, value_name = "N")]
    pub tls_sender_certificate_name: Option<String>,
    /// Sender domain covered (repeatable).
    #[arg(long = "sender-domain", value_name = "D")]
    pub sender_domains: Vec<String>,
    /// Refuse mail without TLS (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub require_tls: Option<bool>,
    /// Reject the sender domains from other addresses (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub restrict_domains_to_ip_addresses: Option<bool>,
    /// Reject the sender domains without the certificate (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub restrict_domains_to_certificate: Option<bool>,
}

/// Keys of an outbound connector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct OutboundFlags {
    /// Recipient domain served: contoso.com, *.contoso.com, * (repeatable).
    #[arg(long = "recipient-domain", value_name = "D")]
    pub recipient_domains: Vec<String>,
    /// Smart host, `host[:port]`, tried in order (repeatable).
    #[arg(long = "smart-host", value_name = "H")]
    pub smart_hosts: Vec<String>,
    /// Deliver by MX instead of smart hosts (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub use_mx_record: Option<bool>,
    /// TLS level.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub tls: Option<TlsArg>,
    /// Name the smart host's certificate must carry (domain-validation).
    #[arg(long, value_name = "D")]
    pub tls_domain: Option<String>,
    /// Used only when a rule routes a message here (`=false` to turn off).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub transport_rule_scoped: Option<bool>,
    /// EHLO name towards this destination.
    #[arg(long, value_name = "N")]
    pub helo_name: Option<String>,
    /// Recipient `connector validate` tries (repeatable).
    #[arg(long = "validation-recipient", value_name = "A")]
    pub validation_recipients: Vec<String>,
}

/// `sluice connector new-inbound`.
#[derive(Debug, Args)]
pub struct NewInboundArgs {
    /// Unique name.
    #[arg(long)]
    pub name: String,
    /// Keys both kinds have.
    #[command(flatten)]
    pub common: CommonConnectorFlags,
    /// Inbound keys.
    #[command(flatten)]
    pub inbound: InboundFlags,
}

/// `sluice connector new-outbound`.
#[derive(Debug, Args)]
pub struct NewOutboundArgs {
    /// Unique name.
    #[arg(long)]
    pub name: String,
    /// Keys both kinds have.
    #[command(flatten)]
    pub common: CommonConnectorFlags,
    /// Outbound keys.
    #[command(flatten)]
    pub outbound: OutboundFlags,
}

/// `sluice connector set NAME`: the flags of both kinds; those of the other
/// kind than the connector's are refused.
#[derive(Debug, Args)]
pub struct ConnectorSetArgs {
    /// Connector name.
    pub name: String,
    /// Needed when the name exists as both kinds.
    #[arg(long, value_enum)]
    pub kind: Option<ConnectorKindArg>,
    /// Keys both kinds have.
    #[command(flatten)]
    pub common: CommonConnectorFlags,
    /// Inbound keys.
    #[command(flatten)]
    pub inbound: InboundFlags,
    /// Outbound keys.
    #[command(flatten)]
    pub outbound: OutboundFlags,
}

fn set_list(slot: &mut Vec<String>, given: &[String]) {
    if !given.is_empty() {
        *slot = given.to_vec();
    }
}

fn set<T: Clone>(slot: &mut T, given: &Option<T>) {
    if let Some(value) = given {
        *slot = value.clone();
    }
}

fn connector_type(arg: ConnectorTypeArg) -> ConnectorType {
    match arg {
        ConnectorTypeArg::Partner => ConnectorType::Partner,
        ConnectorTypeArg::OnPremises => ConnectorType::OnPremises,
    }
}

impl CommonConnectorFlags {
    /// Writes the given flags into the fields both kinds share.
    fn apply(&self, kind: &mut ConnectorType, retain: &mut bool, comment: &mut String, enabled: &mut bool) {
        set(kind, &self.connector_type.map(connector_type));
        set(retain, &self.retain_internal_headers);
        set(comment, &self.comment);
        if let Some(disabled) = self.disabled {
            *enabled = !disabled;
        }
    }
}

impl InboundFlags {
    /// The flags given, as typed, for the message refusing them on an outbound connector.
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let mut note = |on: bool, flag| {
            if on {
                given.push(flag);
            }
        };
        note(!self.sender_ip_addresses.is_empty(), "--sender-ip");
        note(
            self.tls_sender_certificate_name.is_some(),
            "--tls-sender-certificate-name",
        );
        note(!self.sender_domains.is_empty(), "--sender-domain");
        note(self.require_tls.is_some(), "--require-tls");
        note(
            self.restrict_domains_to_ip_addresses.is_some(),
            "--restrict-domains-to-ip-addresses",
        );
        note(
            self.restrict_domains_to_certificate.is_some(),
            "--restrict-domains-to-certificate",
        );
        given
    }
}

impl OutboundFlags {
    /// The flags given, as typed, for the message refusing them on an inbound connector.
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let mut note = |on: bool, flag| {
            if on {
                given.push(flag);
            }
        };
        note(!self.recipient_domains.is_empty(), "--recipient-domain");
        note(!self.smart_hosts.is_empty(), "--smart-host");
        note(self.use_mx_record.is_some(), "--use-mx-record");
        note(self.tls.is_some(), "--tls");
        note(self.tls_domain.is_some(), "--tls-domain");
        note(self.transport_rule_scoped.is_some(), "--transport-rule-scoped");
        note(self.helo_name.is_some(), "--helo-name");
        note(!self.validation_recipients.is_empty(), "--validation-recipient");
        given
    }
}

/// Writes the given flags into an inbound connector, leaving the other keys.
pub(crate) fn apply_inbound(
    connector: &mut InboundConnectorObject,
    common: &CommonConnectorFlags,
    flags: &InboundFlags,
) {
    let c = connector;
    common.apply(
        &mut c.kind,
        &mut c.retain_internal_headers,
        &mut c.comment,
        &mut c.enabled,
    );
    set_list(&mut c.sender_ip_addresses, &flags.sender_ip_addresses);
    set(
        &mut c.tls_sender_certificate_name,
        &flags.tls_sender_certificate_name,
    );
    set_list(&mut c.sender_domains, &flags.sender_domains);
    set(&mut c.require_tls, &flags.require_tls);
    set(
        &mut c.restrict_domains_to_ip_addresses,
        &flags.restrict_domains_to_ip_addresses,
    );
    set(
        &mut c.restrict_domains_to_certificate,
        &flags.restrict_domains_to_certificate,
    );
}

/// Writes the given flags into an outbound connector, leaving the other keys.
pub(crate) fn apply_outbound(
    connector: &mut OutboundConnectorObject,
    common: &CommonConnectorFlags,
    flags: &OutboundFlags,
) {
    let c = connector;
    common.apply(
        &mut c.kind,
        &mut c.retain_internal_headers,
        &mut c.comment,
        &mut c.enabled,
    );
    set_list(&mut c.recipient_domains, &flags.recipient_domains);
    set_list(&mut c.smart_hosts, &flags.smart_hosts);
    set(&mut c.use_mx_record, &flags.use_mx_record);
    let tls = flags.tls.map(|level| match level {
        TlsArg::Opportunistic => TlsLevel::Opportunistic,
        TlsArg::EncryptionOnly => TlsLevel::EncryptionOnly,
        TlsArg::CertificateValidation => TlsLevel::CertificateValidation,
        TlsArg::DomainValidation => TlsLevel::DomainValidation,
    });
    set(&mut c.tls, &tls);
    set(&mut c.tls_domain, &flags.tls_domain);
    set(&mut c.transport_rule_scoped, &flags.transport_rule_scoped);
    set(&mut c.helo_name, &flags.helo_name);
    set_list(&mut c.validation_recipients, &flags.validation_recipients);
}

/// An object named `name` with every key at its default, as `apply` reads
/// a table holding only the name.
fn named<T: DeserializeOwned>(name: &str) -> Result<T, Failure> {
    serde_json::from_value(serde_json::json!({ "name": name }))
        .map_err(|error| Failure::runtime(format!("cannot build the connector: {error}")))
}

/// The inbound connector `new-inbound` creates.
pub(crate) fn new_inbound(args: &NewInboundArgs) -> Result<InboundConnectorObject, Failure> {
    let mut connector: InboundConnectorObject = named(&args.name)?;
    apply_inbound(&mut connector, &args.common, &args.inbound);
    Ok(connector)
}

/// The outbound connector `new-outbound` creates.
pub(crate) fn new_outbound(args: &NewOutboundArgs) -> Result<OutboundConnectorObject, Failure> {
    let mut connector: OutboundConnectorObject = named(&args.name)?;
    apply_outbound(&mut connector, &args.common, &args.outbound);
    Ok(connector)
}

/// Refuses flags of the other kind than the connector found, so a typo'd
/// `set` does not silently do nothing.
pub(crate) fn check_kind(args: &ConnectorSetArgs, kind: ConnectorKindArg, name: &str) -> Result<(), Failure> {
    let (foreign, noun) = match kind {
        ConnectorKindArg::Inbound => (args.outbound.given(), "an inbound"),
        ConnectorKindArg::Outbound => (args.inbound.given(), "an outbound"),
    };
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "{name:?} is {noun} connector: {} do not apply to it",
        foreign.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command, ConnectorCommand};
    use super::*;
    use clap::Parser;

    fn command(args: &[&str]) -> ConnectorCommand {
        let cli = Cli::try_parse_from(["sluice", "connector"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Connector(command) => command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_inbound_builds_the_connector_the_flags_describe() {
        let ConnectorCommand::NewInbound(args) = command(&[
            "new-inbound",
            "--name",
            "From scanner",
            "--type",
            "on-premises",
            "--sender-ip",
            "127.0.0.30/32",
            "--sender-ip",
            "::1",
            "--sender-domain",
            "contoso.test",
            "--require-tls",
            "--restrict-domains-to-ip-addresses",
            "--retain-internal-headers",
            "--comment",
            "the scanner's way back",
            "--disabled",
        ]) else {
            panic!("not new-inbound")
        };
        let expected: InboundConnectorObject = toml::from_str(
            r#"name = "From scanner"
comment = "the scanner's way back"
type = "on_premises"
sender_ip_addresses = ["127.0.0.30/32", "::1"]
sender_domains = ["contoso.test"]
require_tls = true
restrict_domains_to_ip_addresses = true
retain_internal_headers = true
enabled = false"#,
        )
        .unwrap();
        assert_eq!(new_inbound(&args).unwrap(), expected);

        // Nothing but a name: the defaults `apply` gives.
        let ConnectorCommand::NewInbound(args) = command(&["new-inbound", "--name", "Bare"]) else {
            panic!("not new-inbound")
        };
        let bare = new_inbound(&args).unwrap();
        assert_eq!(bare.sender_domains, vec!["*".to_string()]);
        assert!(bare.enabled);
        assert_eq!(bare.kind, ConnectorType::Partner);
    }

    #[test]
    fn new_outbound_builds_the_connector_the_flags_describe() {
        let ConnectorCommand::NewOutbound(args) = command(&[
            "new-outbound",
            "--name",
            "To scanner",
            "--smart-host",
            "127.0.0.30:2525",
            "--smart-host",
            "127.0.0.31:2525",
            "--tls",
            "domain-validation",
            "--tls-domain",
            "scanner.test",
            "--transport-rule-scoped",
            "--helo-name",
            "gw.contoso.test",
            "--validation-recipient",
            "check@scanner.test",
        ]) else {
            panic!("not new-outbound")
        };
        let expected: OutboundConnectorObject = toml::from_str(
            r#"name = "To scanner"
smart_hosts = ["127.0.0.30:2525", "127.0.0.31:2525"]
tls = "domain_validation"
tls_domain = "scanner.test"
transport_rule_scoped = true
helo_name = "gw.contoso.test"
validation_recipients = ["check@scanner.test"]"#,
        )
        .unwrap();
        assert_eq!(new_outbound(&args).unwrap(), expected);
    }

    #[test]
    fn set_changes_only_the_keys_given_and_refuses_the_other_kinds_flags() {
        let ConnectorCommand::Set(args) = command(&[
            "set",
            "To scanner",
            "--recipient-domain",
            "*",
            "--use-mx-record",
            "--transport-rule-scoped=false",
            "--tls",
            "encryption_only",
            "--disabled=false",
        ]) else {
            panic!("not set")
        };
        assert_eq!(args.name, "To scanner");
        let mut stored: OutboundConnectorObject = toml::from_str(
            "name = \"To scanner\"\nsmart_hosts = [\"127.0.0.30:2525\"]\ntransport_rule_scoped = true\n\
             helo_name = \"gw.test\"\nenabled = false",
        )
        .unwrap();
        let mut expected = stored.clone();
        apply_outbound(&mut stored, &args.common, &args.outbound);
        expected.recipient_domains = vec!["*".into()];
        expected.use_mx_record = true;
        expected.transport_rule_scoped = false;
        expected.tls = TlsLevel::EncryptionOnly;
        expected.enabled = true;
        assert_eq!(stored, expected);
        assert!(check_kind(&args, ConnectorKindArg::Outbound, "To scanner").is_ok());
        let refused = check_kind(&args, ConnectorKindArg::Inbound, "To scanner").unwrap_err();
        assert_eq!(refused.exit_code, 2);
        assert_eq!(
            refused.message,
            "\"To scanner\" is an inbound connector: --recipient-domain, --use-mx-record, --tls, \
             --transport-rule-scoped do not apply to it"
        );
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        let parse = |args: &[&str]| Cli::try_parse_from(["sluice", "connector"].iter().chain(args));
        for bad in [
            &["new-inbound"][..],
            &["new-inbound", "--name", "x", "--type", "friend"],
            &["new-outbound", "--name", "x", "--tls", "always"],
            &["new-outbound", "--name", "x", "--use-mx-record=maybe"],
            &["new-inbound", "--name", "x", "--smart-host", "h"],
            &["new-outbound", "--name", "x", "--sender-ip", "10.0.0.1"],
            &["set", "x", "--kind", "sideways"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
        // A boolean flag does not swallow the next word: the name stays positional.
        let ConnectorCommand::Set(args) = command(&["set", "--require-tls", "From scanner"]) else {
            panic!("not set")
        };
        assert_eq!(args.name, "From scanner");
        assert_eq!(args.inbound.require_tls, Some(true));
    }
}
