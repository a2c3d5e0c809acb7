//! `sluice apply -f FILE.ps1`: the Exchange cmdlets administrators already
//! have (New-AcceptedDomain, New-InboundConnector, New-OutboundConnector,
//! New-SendConnector) read into an [`ObjectSet`].
//!
//! Only the shape of those cmdlet calls is understood: parameters with
//! quoted or bare values, `$true`/`$false`, comma lists, `@(...)` arrays,
//! switches, and backtick line continuations. Anything else (an unknown
//! cmdlet, an unknown or unsupported parameter, a variable) is an error
//! naming it and its line, and nothing is applied.

use super::objects::{
    AcceptedDomain, AcceptedDomainType, ConnectorType, InboundConnectorObject, ObjectSet,
    OutboundConnectorObject, TlsLevel,
};
use super::rule_object::{
    HeaderPatterns, HeaderWords, OrganizationScope, RejectWith, RuleActions, RuleMode, RuleObject,
    RulePredicates, SetHeader,
};

/// Why a script cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ImportError {
    /// 1-based line of the statement (or of the token) at fault.
    pub line: usize,
    /// What is wrong, naming the cmdlet or parameter.
    pub message: String,
}

/// A parameter value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// A switch given without a value (`-Enabled`).
    Switch,
    /// One or more comma-separated items.
    List(Vec<String>),
}

/// One cmdlet call: its name, its parameters in order, the line it starts on.
#[derive(Debug)]
struct Call {
    line: usize,
    cmdlet: String,
    parameters: Vec<(String, Value, usize)>,
}

/// Splits the script into logical statements (joining backtick continuations),
/// each with its starting line number.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let content = if current.is_empty() {
            line.trim_start()
        } else {
            line
        };
        if current.is_empty() {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            start = index + 1;
        }
        match content.strip_suffix('`') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(content);
                out.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current));
    }
    out
}

/// Tokens of one statement: words, quoted strings, commas, `@(` and `)`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Comma,
    ArrayOpen,
    Close,
}

fn tokenize(statement: &str, line: usize) -> Result<Vec<Token>, ImportError> {
    let mut tokens = Vec::new();
    let mut chars = statement.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => break,
            ',' => {
                chars.next();
                tokens.push(Token::Comma);
            }
            '@' => {
                chars.next();
                if chars.next() != Some('(') {
                    return Err(ImportError {
                        line,
                        message: "hashtables (@{...}) are not supported".into(),
                    });
                }
                tokens.push(Token::ArrayOpen);
            }
            '(' => {
                chars.next();
                tokens.push(Token::ArrayOpen);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '"' | '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ImportError {
                                line,
                                message: format!("unterminated string starting with {c}"),
                            })
                        }
                        // A doubled quote inside a string is a literal quote.
                        Some(q) if q == c && chars.peek() == Some(&c) => {
                            chars.next();
                            value.push(c);
                        }
                        Some(q) if q == c => break,
                        Some('`') if c == '"' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        Some(other) => value.push(other),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ',' | '(' | ')' | '"' | '\'') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

fn parse_call(line: usize, statement: &str) -> Result<Call, ImportError> {
    let tokens = tokenize(statement, line)?;
    let mut iter = tokens.into_iter().peekable();
    let cmdlet = match iter.next() {
        Some(Token::Word(w)) => w,
        other => {
            return Err(ImportError {
                line,
                message: format!("expected a cmdlet, found {other:?}"),
            })
        }
    };
    let mut parameters = Vec::new();
    while let Some(token) = iter.next() {
        let name = match token {
            Token::Word(w) if w.starts_with('-') && w.len() > 1 => w[1..].to_string(),
            other => {
                return Err(ImportError {
                    line,
                    message: format!("{cmdlet}: expected a -Parameter, found {other:?}"),
                })
            }
        };
        // `-Name:value` binds the value to the name.
        let (name, inline) = match name.split_once(':') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (name, None),
        };
        let mut items = Vec::new();
        if let Some(v) = inline {
            items.push(scalar(&v, line, &cmdlet, &name)?);
        }
        loop {
            let expecting_item = items.is_empty() || matches!(iter.peek(), Some(Token::Comma));
            if matches!(iter.peek(), Some(Token::Comma)) {
                iter.next();
            }
            if !expecting_item {
                break;
            }
            match iter.peek() {
                Some(Token::Word(w))
                    if w.starts_with('-') && !w[1..].starts_with(|c: char| c.is_ascii_digit()) =>
                {
                    break
                }
                Some(Token::Word(_)) | Some(Token::Quoted(_)) => match iter.next() {
                    Some(Token::Word(w)) => items.push(scalar(&w, line, &cmdlet, &name)?),
                    Some(Token::Quoted(q)) => items.push(q),
                    _ => unreachable!("peeked a word or a string"),
                },
                Some(Token::ArrayOpen) => {
                    iter.next();
                    for inner in iter.by_ref() {
                        match inner {
                            Token::Close => break,
                            Token::Comma => {}
                            Token::Word(w) => items.push(scalar(&w, line, &cmdlet, &name)?),
                            Token::Quoted(q) => items.push(q),
                            Token::ArrayOpen => {
                                return Err(ImportError {
                                    line,
                                    message: format!("{cmdlet} -{name}: nested arrays are not supported"),
                                })
                            }
                        }
                    }
                }
                _ => break,
            }
        }
        let value = if items.is_empty() {
            Value::Switch
        } else {
            Value::List(items)
        };
        parameters.push((name, value, line));
    }
    Ok(Call {
        line,
        cmdlet,
        parameters,
    })
}

fn scalar(word: &str, line: usize, cmdlet: &str, name: &str) -> Result<String, ImportError> {
    match word.to_ascii_lowercase().as_str() {
        "$true" => Ok("true".into()),
        "$false" => Ok("false".into()),
        "$null" => Ok(String::new()),
        w if w.starts_with('$') => Err(ImportError {
            line,
            message: format!("{cmdlet} -{name}: variables ({word}) are not supported; write the value"),
        }),
        _ => Ok(word.to_string()),
    }
}

/// Reads the parameters of one call, checking names and types.
struct Params<'a> {
    call: &'a Call,
}

impl Params<'_> {
    fn err(&self, message: String) -> ImportError {
        ImportError {
            line: self.call.line,
            message: format!("{}: {message}", self.call.cmdlet),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.call
            .parameters
            .iter()
            .find(|(n, ..)| n.eq_ignore_ascii_case(name))
            .map(|(_, v, _)| v)
    }

    fn string(&self, name: &str) -> Result<Option<String>, ImportError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::List(items)) if items.len() == 1 => Ok(Some(items[0].clone())),
            Some(_) => Err(self.err(format!("-{name} takes one value"))),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(Value::List(items)) => items
                .iter()
                .flat_map(|i| i.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn flag(&self, name: &str) -> Result<Option<bool>, ImportError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Switch) => Ok(Some(true)),
            Some(Value::List(items)) if items.len() == 1 => match items[0].to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(self.err(format!("-{name} expects $true or $false, not {other:?}"))),
            },
            Some(_) => Err(self.err(format!("-{name} takes one value"))),
        }
    }

    /// Refuses parameters outside `known` (case-insensitive).
    fn only(&self, known: &[&str]) -> Result<(), ImportError> {
        for (name, _, line) in &self.call.parameters {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                return Err(ImportError {
                    line: *line,
                    message: format!("{}: unknown or unsupported parameter -{name}", self.call.cmdlet),
                });
            }
        }
        Ok(())
    }

    fn required(&self, name: &str) -> Result<String, ImportError> {
        self.string(name)?
            .ok_or_else(|| self.err(format!("-{name} is required")))
    }
}

fn connector_type(p: &Params<'_>) -> Result<ConnectorType, ImportError> {
    match p.string("ConnectorType")?.map(|s| s.to_ascii_lowercase()) {
        None => Ok(ConnectorType::Partner),
        Some(t) if t == "partner" => Ok(ConnectorType::Partner),
        Some(t) if t == "onpremises" => Ok(ConnectorType::OnPremises),
        Some(other) => Err(p.err(format!("-ConnectorType {other:?} is not Partner or OnPremises"))),
    }
}

fn tls_level(p: &Params<'_>, word: Option<String>, name: &str) -> Result<Option<TlsLevel>, ImportError> {
    Ok(match word.map(|s| s.to_ascii_lowercase()) {
        None => None,
        Some(t) if t == "encryptiononly" => Some(TlsLevel::EncryptionOnly),
        Some(t) if t == "certificatevalidation" => Some(TlsLevel::CertificateValidation),
        Some(t) if t == "domainvalidation" => Some(TlsLevel::DomainValidation),
        Some(other) => {
            return Err(p.err(format!(
                "-{name} {other:?} is not EncryptionOnly, CertificateValidation or DomainValidation"
            )))
        }
    })
}

/// Imports a script.
pub fn import(text: &str) -> Result<ObjectSet, ImportError> {
    let mut set = ObjectSet::default();
    for (line, statement) in statements(text) {
        let call = parse_call(line, &statement)?;
        let p = Params { call: &call };
        match call.cmdlet.to_ascii_lowercase().as_str() {
            "new-accepteddomain" => {
                p.only(&["Name", "DomainName", "DomainType"])?;
                let name = p
                    .string("DomainName")?
                    .or(p.string("Name")?)
                    .ok_or_else(|| p.err("-DomainName is required".into()))?;
                let kind = match p.string("DomainType")?.map(|s| s.to_ascii_lowercase()) {
                    None => AcceptedDomainType::Authoritative,
                    Some(t) if t == "authoritative" => AcceptedDomainType::Authoritative,
                    Some(t) if t == "internalrelay" => AcceptedDomainType::InternalRelay,
                    Some(other) => {
                        return Err(p.err(format!(
                            "-DomainType {other:?} is not Authoritative or InternalRelay"
                        )))
                    }
                };
                set.accepted_domains.push(AcceptedDomain { name, kind });
            }
            "new-inboundconnector" => {
                p.only(&[
                    "Name",
                    "Comment",
                    "ConnectorType",
                    "SenderIPAddresses",
                    "SenderDomains",
                    "TlsSenderCertificateName",
                    "RequireTls",
                    "RestrictDomainsToIPAddresses",
                    "RestrictDomainsToCertificate",
                    "CloudServicesMailEnabled",
                    "EFSkipLastIP",
                    "Enabled",
                ])?;
                set.inbound_connectors.push(InboundConnectorObject {
                    name: p.required("Name")?,
                    comment: p.string("Comment")?.unwrap_or_default(),
                    kind: connector_type(&p)?,
                    sender_ip_addresses: p.list("SenderIPAddresses"),
                    tls_sender_certificate_name: p.string("TlsSenderCertificateName")?.unwrap_or_default(),
                    sender_domains: {
                        let domains: Vec<String> = p
                            .list("SenderDomains")
                            .into_iter()
                            .map(|d| strip_smtp_prefix(&d))
                            .collect();
                        if domains.is_empty() {
                            vec!["*".into()]
                        } else {
                            domains
                        }
                    },
                    require_tls: p.flag("RequireTls")?.unwrap_or(false),
                    restrict_domains_to_ip_addresses: p
                        .flag("RestrictDomainsToIPAddresses")?
                        .unwrap_or(false),
                    restrict_domains_to_certificate: p.flag("RestrictDomainsToCertificate")?.unwrap_or(false),
                    retain_internal_headers: p.flag("CloudServicesMailEnabled")?.unwrap_or(false),
                    enhanced_filtering: p.flag("EFSkipLastIP")?.unwrap_or(false),
                    enabled: p.flag("Enabled")?.unwrap_or(true),
                });
            }
            "new-outboundconnector" => {
                p.only(&[
                    "Name",
                    "Comment",
                    "ConnectorType",
                    "RecipientDomains",
                    "SmartHosts",
                    "UseMXRecord",
                    "TlsSettings",
                    "TlsDomain",
                    "IsTransportRuleScoped",
                    "CloudServicesMailEnabled",
                    "Enabled",
                    "ValidationRecipients",
                ])?;
                let smart_hosts = p.list("SmartHosts");
                set.outbound_connectors.push(OutboundConnectorObject {
                    name: p.required("Name")?,
                    comment: p.string("Comment")?.unwrap_or_default(),
                    kind: connector_type(&p)?,
                    recipient_domains: p.list("RecipientDomains"),
                    use_mx_record: p.flag("UseMXRecord")?.unwrap_or(smart_hosts.is_empty()),
                    smart_hosts,
                    tls: tls_level(&p, p.string("TlsSettings")?, "TlsSettings")?.unwrap_or_default(),
                    tls_domain: p.string("TlsDomain")?.unwrap_or_default(),
                    transport_rule_scoped: p.flag("IsTransportRuleScoped")?.unwrap_or(false),
                    retain_internal_headers: p.flag("CloudServicesMailEnabled")?.unwrap_or(false),
                    helo_name: String::new(),
                    validation_recipients: p.list("ValidationRecipients"),
                    port: None,
                    max_message_size: None,
                    last_validation: None,
                    enabled: p.flag("Enabled")?.unwrap_or(true),
                });
            }
            "new-sendconnector" => {
                p.only(&[
                    "Name",
                    "Comment",
                    "Usage",
                    "AddressSpaces",
                    "SmartHosts",
                    "DNSRoutingEnabled",
                    "RequireTLS",
                    "TlsAuthLevel",
                    "TlsDomain",
                    "Fqdn",
                    "CloudServicesMailEnabled",
                    "Enabled",
                    "Internet",
                    "Custom",
                    "Internal",
                    "Partner",
                    "SourceTransportServers",
                    "Port",
                    "MaxMessageSize",
                ])?;
                let require_tls = p.flag("RequireTLS")?.unwrap_or(false);
                let level = tls_level(&p, p.string("TlsAuthLevel")?, "TlsAuthLevel")?;
                let tls = match (require_tls, level) {
                    (false, _) => TlsLevel::Opportunistic,
                    (true, None) => TlsLevel::EncryptionOnly,
                    (true, Some(level)) => level,
                };
                let port = match p.string("Port")? {
                    None => None,
                    Some(text) => Some(
                        text.parse::<u16>()
                            .map_err(|_| p.err(format!("-Port {text:?} is not a port number")))?,
                    ),
                };
                let smart_hosts = p.list("SmartHosts");
                let dns_routing = p.flag("DNSRoutingEnabled")?.unwrap_or(smart_hosts.is_empty());
                set.outbound_connectors.push(OutboundConnectorObject {
                    name: p.required("Name")?,
                    comment: p.string("Comment")?.unwrap_or_default(),
                    kind: ConnectorType::OnPremises,
                    recipient_domains: p
                        .list("AddressSpaces")
                        .iter()
                        .map(|a| strip_smtp_prefix(a))
                        .collect(),
                    use_mx_record: dns_routing,
                    smart_hosts: if dns_routing { Vec::new() } else { smart_hosts },
                    tls,
                    tls_domain: p.string("TlsDomain")?.unwrap_or_default(),
                    transport_rule_scoped: false,
                    retain_internal_headers: p.flag("CloudServicesMailEnabled")?.unwrap_or(false),
                    helo_name: p.string("Fqdn")?.unwrap_or_default(),
                    validation_recipients: Vec::new(),
                    port,
                    max_message_size: exchange_size(&p, p.string("MaxMessageSize")?)?,
                    last_validation: None,
                    enabled: p.flag("Enabled")?.unwrap_or(true),
                });
            }
            "new-transportrule" => set.rules.push(transport_rule(&p)?),
            _ => {
                return Err(ImportError {
                    line,
                    message: format!("unknown or unsupported cmdlet {}", call.cmdlet),
                })
            }
        }
    }
    Ok(set)
}

/// The condition parameters New-TransportRule shares with its `ExceptIf`
/// twins, as supported by the rule engine.
const PREDICATES: &[&str] = &[
    "SentToScope",
    "FromScope",
    "SenderDomainIs",
    "RecipientDomainIs",
    "From",
    "SentTo",
    "HeaderContainsMessageHeader",
    "HeaderContainsWords",
    "HeaderMatchesMessageHeader",
    "HeaderMatchesPatterns",
    "SubjectOrBodyContainsWords",
    "AttachmentExtensionMatchesWords",
    "AttachmentNameMatchesPatterns",
    "MessageSizeOver",
    "SenderIpRanges",
];

const RULE_PARAMETERS: &[&str] = &[
    "Name",
    "Comments",
    "Priority",
    "Mode",
    "StopRuleProcessing",
    "Enabled",
    "RouteMessageOutboundConnector",
    "SetHeaderName",
    "SetHeaderValue",
    "RemoveHeader",
    "PrependSubject",
    "RedirectMessageTo",
    "BlindCopyTo",
    "RejectMessageReasonText",
    "RejectMessageEnhancedStatusCode",
    "DeleteMessage",
    "Quarantine",
];

fn scope(p: &Params<'_>, name: &str) -> Result<Option<OrganizationScope>, ImportError> {
    Ok(match p.string(name)?.map(|s| s.to_ascii_lowercase()) {
        None => None,
        Some(s) if s == "inorganization" => Some(OrganizationScope::InOrganization),
        Some(s) if s == "notinorganization" => Some(OrganizationScope::NotInOrganization),
        Some(other) => {
            return Err(p.err(format!(
                "-{name} {other:?} is not InOrganization or NotInOrganization"
            )))
        }
    })
}

/// `[rule.conditions]` (prefix "") or `[rule.exceptions]` (prefix "ExceptIf").
fn predicates(p: &Params<'_>, prefix: &str) -> Result<RulePredicates, ImportError> {
    let key = |name: &str| format!("{prefix}{name}");
    let pair = |header: &str, values: &str| -> Result<Option<(String, Vec<String>)>, ImportError> {
        match (p.string(&key(header))?, p.list(&key(values))) {
            (None, v) if v.is_empty() => Ok(None),
            (Some(h), v) if !v.is_empty() => Ok(Some((h, v))),
            _ => Err(p.err(format!("-{} and -{} go together", key(header), key(values)))),
        }
    };
    Ok(RulePredicates {
        sent_to_scope: scope(p, &key("SentToScope"))?,
        from_scope: scope(p, &key("FromScope"))?,
        sender_domain_is: p.list(&key("SenderDomainIs")),
        recipient_domain_is: p.list(&key("RecipientDomainIs")),
        from: p.list(&key("From")),
        sent_to: p.list(&key("SentTo")),
        header_contains: pair("HeaderContainsMessageHeader", "HeaderContainsWords")?
            .map(|(header, words)| HeaderWords { header, words }),
        header_matches: pair("HeaderMatchesMessageHeader", "HeaderMatchesPatterns")?
            .map(|(header, patterns)| HeaderPatterns { header, patterns }),
        subject_or_body_contains: p.list(&key("SubjectOrBodyContainsWords")),
        attachment_extension_is: p.list(&key("AttachmentExtensionMatchesWords")),
        attachment_name_matches: p.list(&key("AttachmentNameMatchesPatterns")),
        message_size_over: match p.string(&key("MessageSizeOver"))? {
            Some(size) => exchange_size(p, Some(size))?,
            None => None,
        },
        sender_ip_ranges: p.list(&key("SenderIpRanges")),
        contains_sensitive_info: None,
        ..RulePredicates::default()
    })
}

/// New-TransportRule, the subset the rule engine supports.
fn transport_rule(p: &Params<'_>) -> Result<RuleObject, ImportError> {
    let mut known: Vec<String> = RULE_PARAMETERS.iter().map(|s| s.to_string()).collect();
    known.extend(
        PREDICATES
            .iter()
            .flat_map(|n| [n.to_string(), format!("ExceptIf{n}")]),
    );
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    p.only(&known)?;
    let mode = match p.string("Mode")?.map(|s| s.to_ascii_lowercase()) {
        None => RuleMode::Enforce,
        Some(m) if m == "enforce" => RuleMode::Enforce,
        Some(m) if m == "audit" || m == "auditandnotify" => RuleMode::Audit,
        Some(other) => return Err(p.err(format!("-Mode {other:?} is not Enforce, Audit or AuditAndNotify"))),
    };
    let priority = match p.string("Priority")? {
        None => 0,
        Some(text) => text
            .parse()
            .map_err(|_| p.err(format!("-Priority {text:?} is not a number")))?,
    };
    let set_header = match (p.string("SetHeaderName")?, p.string("SetHeaderValue")?) {
        (None, None) => None,
        (Some(header), Some(value)) => Some(SetHeader { header, value }),
        _ => return Err(p.err("-SetHeaderName and -SetHeaderValue go together".into())),
    };
    let reject = match (
        p.string("RejectMessageReasonText")?,
        p.string("RejectMessageEnhancedStatusCode")?,
    ) {
        (None, None) => None,
        (text, code) => Some(RejectWith {
            code: code.unwrap_or_else(|| "5.7.1".into()),
            text: text.unwrap_or_else(|| "Delivery not authorized, message refused".into()),
        }),
    };
    Ok(RuleObject {
        name: p.required("Name")?,
        comment: p.string("Comments")?.unwrap_or_default(),
        priority,
        mode,
        stop_processing: p.flag("StopRuleProcessing")?.unwrap_or(false),
        enabled: p.flag("Enabled")?.unwrap_or(true),
        conditions: predicates(p, "")?,
        exceptions: predicates(p, "ExceptIf")?,
        actions: RuleActions {
            route_via_connector: p.string("RouteMessageOutboundConnector")?,
            set_header,
            remove_header: p.string("RemoveHeader")?,
            prepend_subject: p.string("PrependSubject")?,
            redirect_to: p.list("RedirectMessageTo"),
            bcc: p.list("BlindCopyTo"),
            reject,
            delete: p.flag("DeleteMessage")?.unwrap_or(false),
            quarantine: p.flag("Quarantine")?.unwrap_or(false),
            notify_sender: None,
            stamp_scan: false,
        },
    })
}

/// Exchange writes sizes as `25MB`, `25 MB (26,214,400 bytes)` or `Unlimited`.
fn exchange_size(p: &Params<'_>, text: Option<String>) -> Result<Option<String>, ImportError> {
    let Some(text) = text else { return Ok(None) };
    let head = text.split('(').next().unwrap_or_default().trim().replace(' ', "");
    if head.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    crate::config::parse_size(&head).map_err(|m| p.err(format!("-MaxMessageSize: {m}")))?;
    Ok(Some(head))
}

/// `SMTP:contoso.com;1` → `contoso.com;1` (the address-space type prefix).
fn strip_smtp_prefix(space: &str) -> String {
    match space.split_once(':') {
        Some((kind, rest)) if kind.eq_ignore_ascii_case("smtp") => rest.to_string(),
        _ => space.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_send_connector_with_continuations() {
        let script = "# on-premises send connector\r\nNew-SendConnector -Name \"Outbound to Office 365\" -AddressSpaces *.mail.contoso.test `\r\n  -CloudServicesMailEnabled $true -Fqdn mail.contoso.test `\r\n  -RequireTLS $true -SmartHosts relay.cloud.test -TlsAuthLevel DomainValidation -TlsDomain relay.cloud.test\r\n";
        let set = import(script).unwrap();
        let c = &set.outbound_connectors[0];
        assert_eq!(c.name, "Outbound to Office 365");
        assert_eq!(c.recipient_domains, vec!["*.mail.contoso.test"]);
        assert_eq!(c.smart_hosts, vec!["relay.cloud.test"]);
        assert!(!c.use_mx_record);
        assert_eq!(c.tls, TlsLevel::DomainValidation);
        assert_eq!(c.helo_name, "mail.contoso.test");
        assert!(c.retain_internal_headers);
        set.validate().unwrap();
    }

    #[test]
    fn send_connector_port_size_and_cost() {
        let script = "New-SendConnector -Name Cheap -AddressSpaces \"SMTP:*.contoso.test;5\" -SmartHosts relay.test,[::1] -Port 2525 -MaxMessageSize \"25 MB (26,214,400 bytes)\"\nNew-SendConnector -Name Dear -AddressSpaces SMTP:*.contoso.test;10 -DNSRoutingEnabled $true -MaxMessageSize Unlimited\n";
        let set = import(script).unwrap();
        let cheap = &set.outbound_connectors[0];
        assert_eq!(cheap.recipient_domains, vec!["*.contoso.test;5"]);
        assert_eq!(
            (cheap.port, cheap.max_message_size.as_deref()),
            (Some(2525), Some("25MB"))
        );
        assert!(
            set.outbound_connectors[1].use_mx_record && set.outbound_connectors[1].max_message_size.is_none()
        );
        let policy = set.validate().unwrap();
        match &policy.outbound[0].next_hop {
            crate::route::NextHop::SmartHosts(hosts) => {
                assert_eq!(
                    hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    ["relay.test:2525", "[::1]:2525"]
                );
            }
            other => panic!("{other:?}"),
        }
        let domain = crate::message::Domain::parse("eu.contoso.test").unwrap();
        assert_eq!(
            crate::route::select_connector(&policy, &domain).unwrap().name,
            "Cheap"
        );
        assert_eq!(policy.outbound[0].max_message_size, Some(25_000_000));
    }

    #[test]
    fn transport_rule_of_seed_000() {
        let script = r#"
New-OutboundConnector -Name "To scanner" -ConnectorType Partner -SmartHosts 127.0.0.30:2525 -IsTransportRuleScoped $true
New-TransportRule -Name "External mail through the scanner" -Priority 0 -SentToScope NotInOrganization `
  -ExceptIfHeaderContainsMessageHeader "X-Sluice-Org-Scan" -ExceptIfHeaderContainsWords "verdict=pass" `
  -RouteMessageOutboundConnector "To scanner" -StopRuleProcessing $false
New-TransportRule -Name Block -Mode Audit -SubjectOrBodyContainsWords "forbidden","secret plan" -RejectMessageReasonText "Blocked by policy" -RejectMessageEnhancedStatusCode 5.7.1
"#;
        let set = import(script).unwrap();
        let rule = &set.rules[0];
        assert_eq!(
            rule.conditions.sent_to_scope,
            Some(OrganizationScope::NotInOrganization)
        );
        assert_eq!(
            rule.exceptions.header_contains.as_ref().unwrap().words,
            vec!["verdict=pass"]
        );
        assert_eq!(rule.actions.route_via_connector.as_deref(), Some("To scanner"));
        assert_eq!(set.rules[1].mode, RuleMode::Audit);
        assert_eq!(
            set.rules[1].conditions.subject_or_body_contains,
            vec!["forbidden", "secret plan"]
        );
        set.validate().unwrap();
        let e = import("New-TransportRule -Name x -ApplyHtmlDisclaimerText hi").unwrap_err();
        assert!(e.message.contains("-ApplyHtmlDisclaimerText"), "{e}");
        let e = import("New-TransportRule -Name x -HeaderContainsWords a").unwrap_err();
        assert!(e.message.contains("go together"), "{e}");
    }

    #[test]
    fn connectors_arrays_and_switches() {
        let script = r#"
New-AcceptedDomain -Name Contoso -DomainName contoso.test -DomainType InternalRelay
New-InboundConnector -Name "From scanner" -ConnectorType OnPremises -SenderIPAddresses 127.0.0.30,"10.0.0.0/8" -CloudServicesMailEnabled
New-OutboundConnector -Name 'To scanner' -ConnectorType Partner -SmartHosts @("127.0.0.30:2525") -IsTransportRuleScoped $true -TlsSettings EncryptionOnly -UseMXRecord:$false
"#;
        let set = import(script).unwrap();
        assert_eq!(set.accepted_domains[0].kind, AcceptedDomainType::InternalRelay);
        assert_eq!(
            set.inbound_connectors[0].sender_ip_addresses,
            vec!["127.0.0.30", "10.0.0.0/8"]
        );
        assert!(set.inbound_connectors[0].retain_internal_headers);
        let out = &set.outbound_connectors[0];
        assert_eq!(
            (out.name.as_str(), out.transport_rule_scoped, out.tls),
            ("To scanner", true, TlsLevel::EncryptionOnly)
        );
        set.validate().unwrap();
    }

    #[test]
    fn unknown_cmdlets_and_parameters_name_the_line() {
        let e = import("New-AcceptedDomain -DomainName a.test\n\nRemove-Mailbox -Identity x\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("Remove-Mailbox"), "{e}");
        let e = import("New-InboundConnector -Name x `\n  -Bogus 1").unwrap_err();
        assert!(e.message.contains("-Bogus"), "{e}");
        assert_eq!(e.line, 1);
        assert!(import("New-InboundConnector -Name $name")
            .unwrap_err()
            .message
            .contains("variables"));
    }
}
