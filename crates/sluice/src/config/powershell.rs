//! `sluice apply -f FILE.ps1`: the Exchange cmdlets administrators already
//! have (New-AcceptedDomain, New-InboundConnector, New-OutboundConnector,
//! New-SendConnector, New-TransportRule) read into an [`ObjectSet`].
//!
//! Only the shape of those cmdlet calls is understood: parameters with
//! quoted or bare values, `$true`/`$false`, comma lists, `@(...)` arrays,
//! switches, backtick line continuations, and the form Microsoft's pages
//! print, where each parameter stands on its own line: a line that begins
//! with `-Name` continues the cmdlet above it, a line that begins with a
//! cmdlet name starts a new one. Anything else (an unknown cmdlet, an
//! unknown or unsupported parameter, a variable) is an error naming it and
//! its own line, and nothing is applied. A parameter that is accepted but
//! has no effect in sluice is a warning naming it and its line.

use super::objects::{
    AcceptedDomain, AcceptedDomainType, ConnectorType, InboundConnectorObject, ObjectSet,
    OutboundConnectorObject, TlsLevel,
};
use super::rule_object::{
    HeaderPatterns, HeaderWords, OrganizationScope, RejectWith, RuleActions, RuleMode, RuleObject,
    RulePredicates, SetHeader,
};
use std::cell::RefCell;
use std::fmt;

/// Why a script cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ImportError {
    /// 1-based line of the parameter at fault (the cmdlet's line when the
    /// fault is the whole call, e.g. a missing parameter).
    pub line: usize,
    /// What is wrong, naming the cmdlet or parameter.
    pub message: String,
}

/// A parameter the importer accepted but that changes nothing in sluice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportWarning {
    /// 1-based line of the parameter.
    pub line: usize,
    /// Names the cmdlet and parameter, and why it has no effect.
    pub message: String,
}

impl fmt::Display for ImportWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A script's objects, and the parameters it gave that sluice ignores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// The objects, not yet validated.
    pub objects: ObjectSet,
    /// One per accepted-but-ignored parameter, in script order.
    pub warnings: Vec<ImportWarning>,
}

/// A parameter value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// A switch given without a value (`-Enabled`).
    Switch,
    /// One or more comma-separated items.
    List(Vec<String>),
}

/// One cmdlet call: its name, its parameters in order (each with its own
/// line), the line it starts on.
#[derive(Debug)]
struct Call {
    line: usize,
    cmdlet: String,
    parameters: Vec<(String, Value, usize)>,
}

/// Tokens of one line: words, quoted strings, commas, `@(` and `)`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Comma,
    ArrayOpen,
    Close,
}

impl fmt::Display for Token {
    /// As written in the script, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => f.write_str(word),
            Token::Quoted(text) => write!(f, "\"{text}\""),
            Token::Comma => f.write_str(","),
            Token::ArrayOpen => f.write_str("@("),
            Token::Close => f.write_str(")"),
        }
    }
}

/// One statement: its tokens, each with the line it was written on.
struct Statement {
    line: usize,
    tokens: Vec<(Token, usize)>,
}

/// Splits the script into statements. A statement goes on after a line
/// ending in a backtick, and on a line that begins with `-` (a parameter:
/// the layout of Microsoft's pages); any other line starts a new one.
fn statements(text: &str) -> Result<Vec<Statement>, ImportError> {
    let mut out: Vec<Statement> = Vec::new();
    let mut continued = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        let (content, backtick) = match trimmed.strip_suffix('`') {
            Some(head) => (head.trim_end(), true),
            None => (trimmed, false),
        };
        let joins = continued || content.starts_with('-');
        continued = backtick;
        if !joins && (content.is_empty() || content.starts_with('#')) {
            continue;
        }
        let tokens = tokenize(content, line)?;
        match out.last_mut() {
            Some(statement) if joins => statement.tokens.extend(tokens),
            None if joins => {
                if tokens.is_empty() {
                    continue;
                }
                return Err(ImportError {
                    line,
                    message: format!(
                        "{} has no cmdlet before it: a line that begins with a parameter continues the cmdlet above it",
                        tokens[0].0
                    ),
                });
            }
            _ => out.push(Statement { line, tokens }),
        }
    }
    Ok(out)
}

fn tokenize(text: &str, line: usize) -> Result<Vec<(Token, usize)>, ImportError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => break,
            ',' => {
                chars.next();
                tokens.push((Token::Comma, line));
            }
            '@' => {
                chars.next();
                if chars.next() != Some('(') {
                    return Err(ImportError {
                        line,
                        message: "hashtables (@{...}) are not supported".into(),
                    });
                }
                tokens.push((Token::ArrayOpen, line));
            }
            '(' => {
                chars.next();
                tokens.push((Token::ArrayOpen, line));
            }
            ')' => {
                chars.next();
                tokens.push((Token::Close, line));
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
                tokens.push((Token::Quoted(value), line));
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
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

fn parse_call(statement: Statement) -> Result<Call, ImportError> {
    let line = statement.line;
    let mut iter = statement.tokens.into_iter().peekable();
    let cmdlet = match iter.next() {
        Some((Token::Word(w), _)) if !w.starts_with('-') => w,
        Some((other, at)) => {
            return Err(ImportError {
                line: at,
                message: format!("expected a cmdlet name (such as New-SendConnector), found {other}"),
            })
        }
        None => {
            return Err(ImportError {
                line,
                message: "expected a cmdlet name".into(),
            })
        }
    };
    let mut parameters = Vec::new();
    while let Some((token, at)) = iter.next() {
        let name = match token {
            Token::Word(w) if w.starts_with('-') && w.len() > 1 => w[1..].to_string(),
            other => {
                return Err(ImportError {
                    line: at,
                    message: format!(
                        "{cmdlet}: {other} is not a parameter; a parameter name begins with - (such as -Name), and a value with spaces goes in quotes"
                    ),
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
            items.push(scalar(&v, at, &cmdlet, &name)?);
        }
        loop {
            let expecting_item = items.is_empty() || matches!(iter.peek(), Some((Token::Comma, _)));
            if matches!(iter.peek(), Some((Token::Comma, _))) {
                iter.next();
            }
            if !expecting_item {
                break;
            }
            match iter.peek() {
                Some((Token::Word(w), _))
                    if w.starts_with('-') && !w[1..].starts_with(|c: char| c.is_ascii_digit()) =>
                {
                    break
                }
                Some((Token::Word(_), _)) | Some((Token::Quoted(_), _)) => match iter.next() {
                    Some((Token::Word(w), value_line)) => items.push(scalar(&w, value_line, &cmdlet, &name)?),
                    Some((Token::Quoted(q), _)) => items.push(q),
                    _ => unreachable!("peeked a word or a string"),
                },
                Some((Token::ArrayOpen, _)) => {
                    iter.next();
                    for (inner, inner_line) in iter.by_ref() {
                        match inner {
                            Token::Close => break,
                            Token::Comma => {}
                            Token::Word(w) => items.push(scalar(&w, inner_line, &cmdlet, &name)?),
                            Token::Quoted(q) => items.push(q),
                            Token::ArrayOpen => {
                                return Err(ImportError {
                                    line: inner_line,
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
        parameters.push((name, value, at));
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

/// Reads the parameters of one call, checking names and types, and
/// collects warnings for parameters that have no effect.
struct Params<'a> {
    call: &'a Call,
    warnings: &'a RefCell<Vec<ImportWarning>>,
}

impl Params<'_> {
    /// An error about this call. It points at the line of the first
    /// parameter the message names (`-TlsAuthLevel ...`), so a parameter on
    /// its own line is reported there; else at the cmdlet's line.
    fn err(&self, message: String) -> ImportError {
        let line = message
            .split(|c: char| c.is_whitespace() || matches!(c, ':' | ','))
            .filter_map(|word| word.strip_prefix('-'))
            .find_map(|name| self.line_of(name))
            .unwrap_or(self.call.line);
        ImportError {
            line,
            message: format!("{}: {message}", self.call.cmdlet),
        }
    }

    /// The line a parameter was written on, when it was given.
    fn line_of(&self, name: &str) -> Option<usize> {
        self.call
            .parameters
            .iter()
            .find(|(n, ..)| n.eq_ignore_ascii_case(name))
            .map(|(.., line)| *line)
    }

    /// Records that `-name`, when given, has no effect, and why.
    fn ignored(&self, name: &str, why: &str) {
        if let Some(line) = self.line_of(name) {
            self.warn(name, line, why);
        }
    }

    fn warn(&self, name: &str, line: usize, why: &str) {
        self.warnings.borrow_mut().push(ImportWarning {
            line,
            message: format!("{} -{name} is accepted but ignored: {why}", self.call.cmdlet),
        });
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
pub fn import(text: &str) -> Result<Imported, ImportError> {
    // Windows PowerShell ISE and Notepad save scripts with a UTF-8 BOM.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut set = ObjectSet::default();
    let warnings = RefCell::new(Vec::new());
    for statement in statements(text)? {
        let line = statement.line;
        let call = parse_call(statement)?;
        let p = Params {
            call: &call,
            warnings: &warnings,
        };
        match call.cmdlet.to_ascii_lowercase().as_str() {
            "new-accepteddomain" => {
                p.only(&["Name", "DomainName", "DomainType"])?;
                let display_name = p.string("Name")?;
                let name = match p.string("DomainName")? {
                    Some(domain) => {
                        if display_name
                            .as_ref()
                            .is_some_and(|n| !n.eq_ignore_ascii_case(&domain))
                        {
                            p.ignored("Name", "an accepted domain is named by its -DomainName");
                        }
                        domain
                    }
                    None => display_name.ok_or_else(|| p.err("-DomainName is required".into()))?,
                };
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
                    max_connections: None,
                    max_messages_per_connection: None,
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
                    (false, None) => TlsLevel::Opportunistic,
                    // The level of a TLS that is not required: guessing
                    // either way would be wrong (dropping it sends in clear
                    // to a host meant to be verified; honouring it defers
                    // mail the script let through in clear).
                    (false, Some(_)) => {
                        return Err(p.err(
                            "-TlsAuthLevel needs -RequireTLS $true: add -RequireTLS $true to require TLS at that level, or remove -TlsAuthLevel for opportunistic TLS".into(),
                        ))
                    }
                    (true, None) => TlsLevel::EncryptionOnly,
                    (true, Some(level)) => level,
                };
                if p.line_of("TlsDomain").is_some() && tls != TlsLevel::DomainValidation {
                    return Err(p.err(
                        "-TlsDomain is used only with -TlsAuthLevel DomainValidation (and -RequireTLS $true)"
                            .into(),
                    ));
                }
                for usage in ["Usage", "Internet", "Custom", "Internal", "Partner"] {
                    p.ignored(
                        usage,
                        "sluice has no usage types; the connector's own parameters decide how it sends",
                    );
                }
                p.ignored(
                    "SourceTransportServers",
                    "every sluice node sharing the objects sends through the connector itself",
                );
                let port = match p.string("Port")? {
                    None => None,
                    Some(text) => Some(
                        text.parse::<u16>()
                            .map_err(|_| p.err(format!("-Port {text:?} is not a port number")))?,
                    ),
                };
                let smart_hosts = p.list("SmartHosts");
                let dns_routing = p.flag("DNSRoutingEnabled")?.unwrap_or(smart_hosts.is_empty());
                if dns_routing {
                    p.ignored(
                        "Port",
                        "with DNS routing, MX deliveries use the node's delivery.mx_port",
                    );
                    if !smart_hosts.is_empty() {
                        p.ignored("SmartHosts", "-DNSRoutingEnabled $true delivers by MX instead");
                    }
                }
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
                    port: if dns_routing { None } else { port },
                    max_message_size: exchange_size(&p, "MaxMessageSize", p.string("MaxMessageSize")?)?,
                    max_connections: None,
                    max_messages_per_connection: None,
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
    Ok(Imported {
        objects: set,
        warnings: warnings.into_inner(),
    })
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
            Some(size) => exchange_size(p, &key("MessageSizeOver"), Some(size))?,
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
        Some(m) if m == "audit" => RuleMode::Audit,
        Some(m) if m == "auditandnotify" => {
            p.ignored(
                "Mode",
                "AuditAndNotify is imported as Audit: the match is recorded, no policy tip is shown",
            );
            RuleMode::Audit
        }
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
fn exchange_size(p: &Params<'_>, name: &str, text: Option<String>) -> Result<Option<String>, ImportError> {
    let Some(text) = text else { return Ok(None) };
    let head = text.split('(').next().unwrap_or_default().trim().replace(' ', "");
    if head.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    crate::config::parse_size(&head).map_err(|m| p.err(format!("-{name} {text:?}: {m}")))?;
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
        let set = import(script).unwrap().objects;
        let c = &set.outbound_connectors[0];
        assert_eq!(c.name, "Outbound to Office 365");
        assert_eq!(c.recipient_domains, vec!["*.mail.contoso.test"]);
        assert_eq!(c.smart_hosts, vec!["relay.cloud.test"]);
        assert!(!c.use_mx_record);
        assert_eq!(c.tls, TlsLevel::DomainValidation);
        assert_eq!(c.helo_name, "mail.contoso.test");
        assert!(c.retain_internal_headers);
        crate::policy::Policy::compile(&set).unwrap();
    }

    #[test]
    fn send_connector_port_size_and_cost() {
        let script = "New-SendConnector -Name Cheap -AddressSpaces \"SMTP:*.contoso.test;5\" -SmartHosts relay.test,[::1] -Port 2525 -MaxMessageSize \"25 MB (26,214,400 bytes)\"\nNew-SendConnector -Name Dear -AddressSpaces SMTP:*.contoso.test;10 -DNSRoutingEnabled $true -MaxMessageSize Unlimited\n";
        let set = import(script).unwrap().objects;
        let cheap = &set.outbound_connectors[0];
        assert_eq!(cheap.recipient_domains, vec!["*.contoso.test;5"]);
        assert_eq!(
            (cheap.port, cheap.max_message_size.as_deref()),
            (Some(2525), Some("25MB"))
        );
        assert!(
            set.outbound_connectors[1].use_mx_record && set.outbound_connectors[1].max_message_size.is_none()
        );
        let policy = crate::policy::Policy::compile(&set).unwrap();
        match &policy.routing.outbound[0].next_hop {
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
            crate::route::select_connector(&policy.routing, &domain)
                .unwrap()
                .name,
            "Cheap"
        );
        assert_eq!(policy.routing.outbound[0].max_message_size, Some(25_000_000));
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
        let set = import(script).unwrap().objects;
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
        crate::policy::Policy::compile(&set).unwrap();
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
        let set = import(script).unwrap().objects;
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
        crate::policy::Policy::compile(&set).unwrap();
    }

    #[test]
    fn unknown_cmdlets_and_parameters_name_the_line() {
        let e = import("New-AcceptedDomain -DomainName a.test\n\nRemove-Mailbox -Identity x\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("Remove-Mailbox"), "{e}");
        let e = import("New-InboundConnector -Name x `\n  -Bogus 1").unwrap_err();
        assert!(e.message.contains("-Bogus"), "{e}");
        assert_eq!(e.line, 2, "the parameter's own line");
        assert!(import("New-InboundConnector -Name $name")
            .unwrap_err()
            .message
            .contains("variables"));
    }

    /// Seed 001's New-SendConnector block as Microsoft's page prints it
    /// (placeholders filled in): one parameter per line, no backticks,
    /// trailing spaces, the last line too.
    const SEED_001_AS_PRINTED: &str = "New-AcceptedDomain -Name contoso.test -DomainName contoso.test\r\n\
New-SendConnector -Name \"My company to Office 365\" \r\n\
-AddressSpaces * \r\n\
-CloudServicesMailEnabled $true \r\n\
-Fqdn mail.contoso.test \r\n\
-RequireTLS $true \r\n\
-SmartHosts contoso-test.mail.protection.outlook.test \r\n\
-TlsAuthLevel CertificateValidation \r\n\
New-InboundConnector -Name \"From on-prem\" -ConnectorType OnPremises \r\n\
-SenderIPAddresses 127.0.0.40 ";

    #[test]
    fn seed_001_send_connector_as_printed_one_parameter_per_line() {
        let imported = import(SEED_001_AS_PRINTED).unwrap();
        assert_eq!(imported.warnings, vec![]);
        let set = imported.objects;
        assert_eq!(set.outbound_connectors.len(), 1, "{set:#?}");
        let c = &set.outbound_connectors[0];
        assert_eq!(c.name, "My company to Office 365");
        assert_eq!(c.recipient_domains, vec!["*"]);
        assert!(c.retain_internal_headers);
        assert_eq!(c.helo_name, "mail.contoso.test");
        assert_eq!(c.smart_hosts, vec!["contoso-test.mail.protection.outlook.test"]);
        assert!(!c.use_mx_record);
        assert_eq!(c.tls, TlsLevel::CertificateValidation);
        // The cmdlet on the next line started a statement of its own.
        assert_eq!(set.inbound_connectors[0].name, "From on-prem");
        assert_eq!(set.inbound_connectors[0].sender_ip_addresses, vec!["127.0.0.40"]);
        crate::policy::Policy::compile(&set).unwrap();
        // LF line ends and indented parameter lines read the same.
        let unix = SEED_001_AS_PRINTED.replace("\r\n-", "\n    -");
        assert_eq!(import(&unix).unwrap().objects, set);
        // As saved by Windows editors, with a byte order mark.
        let saved = format!("\u{feff}{SEED_001_AS_PRINTED}");
        assert_eq!(import(&saved).unwrap().objects, set);
    }

    #[test]
    fn errors_name_the_parameters_own_line_in_powershell_terms() {
        // A value for which no parameter was written.
        let e = import("New-SendConnector -Name x \n-AddressSpaces * contoso.test \n-SmartHosts h \n")
            .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("contoso.test is not a parameter"), "{e}");
        // A parameter line with no cmdlet above it.
        let e = import("# seed\n-AddressSpaces * \n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.message.contains("-AddressSpaces has no cmdlet before it"),
            "{e}"
        );
        // A bad value is reported on its parameter's line.
        let e = import("New-SendConnector -Name x \n-AddressSpaces * \n-RequireTLS maybe \n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("-RequireTLS expects $true or $false"), "{e}");
        let e = import("New-SendConnector -Name x \n-AddressSpaces * \n-Port twenty-five \n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        for script in [
            "New-SendConnector -Name x \n-AddressSpaces * contoso.test \n",
            "-AddressSpaces *",
            "New-SendConnector -Name x \n-Bogus 1 \n",
            "\"New-SendConnector\" -Name x",
        ] {
            let e = import(script).unwrap_err().to_string();
            assert!(
                !e.contains("Word(") && !e.contains("Quoted(") && !e.contains("Some("),
                "{e}"
            );
        }
    }

    #[test]
    fn tls_auth_level_without_require_tls_is_refused_naming_both() {
        for require in ["", "-RequireTLS $false \n"] {
            let script = format!(
                "New-SendConnector -Name x \n-AddressSpaces * \n{require}-SmartHosts h.test \n-TlsAuthLevel DomainValidation \n"
            );
            let e = import(&script).unwrap_err();
            let line = if require.is_empty() { 4 } else { 5 };
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains("-TlsAuthLevel needs -RequireTLS $true"), "{e}");
        }
        let e = import("New-SendConnector -Name x -AddressSpaces * -RequireTLS $true -SmartHosts h.test \n-TlsDomain h.test\n")
            .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.message
                .contains("-TlsDomain is used only with -TlsAuthLevel DomainValidation"),
            "{e}"
        );
    }

    #[test]
    fn accepted_but_ignored_parameters_are_warnings_with_their_lines() {
        let script = "New-AcceptedDomain -Name Contoso -DomainName contoso.test\n\
New-SendConnector -Name Internet \n\
-Usage Internet \n\
-AddressSpaces * \n\
-DNSRoutingEnabled $true \n\
-Port 2525 \n\
-SourceTransportServers EX01,EX02 \n\
New-TransportRule -Name Watch -Mode AuditAndNotify -SubjectOrBodyContainsWords secret\n";
        let imported = import(script).unwrap();
        let warnings: Vec<(usize, &str)> = imported
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        let expect = [
            (1, "New-AcceptedDomain -Name is accepted but ignored"),
            (3, "New-SendConnector -Usage is accepted but ignored"),
            (
                7,
                "New-SendConnector -SourceTransportServers is accepted but ignored",
            ),
            (6, "New-SendConnector -Port is accepted but ignored"),
            (8, "New-TransportRule -Mode is accepted but ignored"),
        ];
        assert_eq!(warnings.len(), expect.len(), "{warnings:#?}");
        for ((line, start), (got_line, got)) in expect.iter().zip(&warnings) {
            assert_eq!((line, true), (got_line, got.starts_with(start)), "{warnings:#?}");
        }
        assert_eq!(imported.warnings[2].to_string().split(':').next(), Some("line 7"));
        let c = &imported.objects.outbound_connectors[0];
        assert!(c.use_mx_record && c.port.is_none(), "{c:?}");
        crate::policy::Policy::compile(&imported.objects).unwrap();
    }

    #[test]
    fn a_scanners_tenant_kit_imports_without_warnings() {
        let partner = crate::tenant::PartnerSection::default();
        assert!(partner.validate().is_err(), "[partner] needs its keys");
        let partner: crate::tenant::PartnerSettings = crate::tenant::PartnerSettings {
            smtp_host: "scan.partner.test".into(),
            egress_ips: vec!["192.0.2.30/32".into()],
            validation_address: crate::message::Address::parse("check@scan.partner.test").unwrap(),
        };
        let imported = import(&crate::tenant::kit::ps1(&partner, "contoso.com")).unwrap();
        assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
        let set = imported.objects;
        assert_eq!(
            (
                set.outbound_connectors.len(),
                set.inbound_connectors.len(),
                set.rules.len()
            ),
            (1, 1, 1)
        );
        crate::policy::Policy::compile(&set).unwrap();
    }
}
