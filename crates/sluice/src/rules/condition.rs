//! Rule conditions (and exceptions: the same predicates), compiled from
//! `[rule.conditions]` and tested against one recipient of a message.

use crate::classify::Classification;
use crate::config::rule_object::{OrganizationScope, RulePredicates};
use crate::message::{Address, Domain, ReversePath};
use crate::policy::Policy;
use ipnet::IpNet;
use regex::Regex;
use std::net::IpAddr;
use std::sync::OnceLock;

/// One compiled predicate.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Recipient inside (an accepted domain) or outside the organisation.
    SentToScope(OrganizationScope),
    /// Sender inside (came through an on-premises connector with an
    /// accepted sender or certificate domain) or outside.
    FromScope(OrganizationScope),
    /// Envelope sender domain is one of these.
    SenderDomainIs(Vec<Domain>),
    /// Recipient domain is one of these.
    RecipientDomainIs(Vec<Domain>),
    /// Envelope sender or From header address is one of these.
    From(Vec<Address>),
    /// Recipient is one of these.
    SentTo(Vec<Address>),
    /// A header's value contains one of the words (case-insensitive).
    HeaderContains {
        /// Header name, lower-case.
        header: String,
        /// Lower-case words.
        words: Vec<String>,
    },
    /// A header's value matches one of the patterns.
    HeaderMatches {
        /// Header name, lower-case.
        header: String,
        /// Linear-time regexes.
        patterns: Vec<Regex>,
    },
    /// Subject or decoded text contains one of the words (case-insensitive).
    SubjectOrBodyContains(Vec<String>),
    /// An attachment has one of these extensions (lower-case, no dot).
    AttachmentExtensionIs(Vec<String>),
    /// An attachment name matches one of these patterns.
    AttachmentNameMatches(Vec<Regex>),
    /// Message larger than this many bytes.
    MessageSizeOver(usize),
    /// Client address in one of these ranges.
    SenderIpRanges(Vec<IpNet>),
    /// The DLP scan found enough of these detectors (any when empty).
    ContainsSensitiveInfo {
        /// Detector names counted (built-in or `[[detector]]`).
        detectors: Vec<String>,
        /// Lowest confidence counted.
        min_confidence: crate::scan::Confidence,
        /// Findings needed.
        min_count: usize,
    },
    /// SPF result is one of these (only mail this node checked).
    SpfResult(Vec<crate::auth::AuthResult>),
    /// A DKIM signature's result is one of these.
    DkimResult(Vec<crate::auth::AuthResult>),
    /// DMARC result is one of these.
    DmarcResult(Vec<crate::auth::AuthResult>),
    /// ARC chain result is one of these.
    ArcResult(Vec<crate::auth::AuthResult>),
}

/// What conditions look at. Content is parsed on first use only.
pub struct MessageFacts<'a> {
    /// The node's objects.
    pub policy: &'a Policy,
    /// Inbound connector decision.
    pub classification: &'a Classification,
    /// Whether the sender counts as inside the organisation.
    pub sender_in_organization: bool,
    /// Client address.
    pub peer: IpAddr,
    /// MAIL FROM.
    pub mail_from: &'a ReversePath,
    /// Envelope recipients.
    pub recipients: &'a [Address],
    /// The message as received (after the header firewall).
    pub content: &'a [u8],
    /// Fields the node put in front of it (its `Authentication-Results`):
    /// header conditions and the size see them, the scan looks at what the
    /// sender wrote.
    added_fields: &'a [u8],
    /// Authentication results, when this node checked the message.
    pub auth: Option<&'a crate::auth::AuthSummary>,
    parsed: OnceLock<ParsedContent>,
    scanned: OnceLock<crate::scan::ScanReport>,
    scan_limits: crate::scan::ScanLimits,
    #[cfg(test)]
    pub(crate) message_checks: std::sync::atomic::AtomicUsize,
}

/// What the content-looking conditions need, extracted once.
#[derive(Debug, Default)]
struct ParsedContent {
    /// (lower-case name, decoded value)
    headers: Vec<(String, String)>,
    /// Lower-case subject and decoded text parts, joined.
    text: String,
    /// Attachment file names.
    attachments: Vec<String>,
    /// From header addresses.
    from_header: Vec<String>,
}

impl<'a> MessageFacts<'a> {
    /// Facts about one message.
    pub fn new(
        policy: &'a Policy,
        classification: &'a Classification,
        sender_in_organization: bool,
        peer: IpAddr,
        mail_from: &'a ReversePath,
        recipients: &'a [Address],
        content: &'a [u8],
    ) -> Self {
        MessageFacts {
            policy,
            classification,
            sender_in_organization,
            peer,
            mail_from,
            recipients,
            content,
            added_fields: &[],
            auth: None,
            parsed: OnceLock::new(),
            scanned: OnceLock::new(),
            scan_limits: crate::scan::ScanLimits::default(),
            #[cfg(test)]
            message_checks: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The same facts, scanned under `limits` (the node's `[dlp] scan_budget`).
    pub fn with_scan_limits(mut self, limits: crate::scan::ScanLimits) -> Self {
        self.scan_limits = limits;
        self
    }

    /// With `fields` (whole header lines) the node put in front of the message.
    pub fn with_added_fields(mut self, fields: &'a [u8]) -> Self {
        self.added_fields = fields;
        self
    }

    /// Octets of the message with the fields the node added.
    pub fn size(&self) -> usize {
        self.added_fields.len() + self.content.len()
    }

    /// With the message's authentication results.
    pub fn with_auth(mut self, auth: Option<&'a crate::auth::AuthSummary>) -> Self {
        self.auth = auth;
        self
    }

    /// The DLP scan of the content, run on first use only: however many
    /// rules ask, a message is scanned once.
    pub fn scan(&self) -> &crate::scan::ScanReport {
        self.scanned
            .get_or_init(|| crate::scan::scan_with(self.content, &self.scan_limits, &self.policy.scanner))
    }

    /// The scan, if a rule made it run.
    pub fn scan_if_run(&self) -> Option<&crate::scan::ScanReport> {
        self.scanned.get()
    }

    fn parsed(&self) -> &ParsedContent {
        self.parsed.get_or_init(|| {
            let mut parsed = parse(self.content);
            if !self.added_fields.is_empty() {
                let mut headers: Vec<(String, String)> = crate::message::header::fields(self.added_fields)
                    .iter()
                    .map(|field| {
                        let name = String::from_utf8_lossy(field.name).to_ascii_lowercase();
                        (name, field.value())
                    })
                    .collect();
                headers.append(&mut parsed.headers);
                parsed.headers = headers;
            }
            parsed
        })
    }
}

fn parse(content: &[u8]) -> ParsedContent {
    use mail_parser::MimeHeaders;
    let Some(message) = mail_parser::MessageParser::new().parse(content) else {
        return ParsedContent::default();
    };
    let headers = message
        .headers()
        .iter()
        .map(|h| {
            let raw = content
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            (
                h.name().to_ascii_lowercase(),
                String::from_utf8_lossy(raw)
                    .replace("\r\n", "")
                    .trim()
                    .to_string(),
            )
        })
        .collect();
    let mut text = message.subject().unwrap_or_default().to_lowercase();
    for i in 0..message.text_body_count() {
        if let Some(body) = message.body_text(i) {
            text.push('\n');
            text.push_str(&body.to_lowercase());
        }
    }
    let attachments = message
        .attachments()
        .filter_map(|a| a.attachment_name().map(str::to_string))
        .collect();
    let from_header = message
        .from()
        .map(|from| {
            from.iter()
                .filter_map(|a| a.address().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    ParsedContent {
        headers,
        text,
        attachments,
        from_header,
    }
}

impl Condition {
    /// Whether the condition depends on the recipient; the others look at
    /// the message (envelope sender, content, client) and hold or fail for
    /// every recipient at once.
    pub fn is_per_recipient(&self) -> bool {
        matches!(
            self,
            Condition::SentToScope(_) | Condition::RecipientDomainIs(_) | Condition::SentTo(_)
        )
    }

    /// Whether a message-level condition holds (see [`Self::is_per_recipient`]).
    pub fn holds_for_message(&self, facts: &MessageFacts<'_>) -> bool {
        #[cfg(test)]
        facts
            .message_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.holds(facts, 0)
    }

    /// Whether the condition holds for recipient `index`.
    pub fn holds(&self, facts: &MessageFacts<'_>, index: usize) -> bool {
        let recipient = &facts.recipients[index];
        match self {
            Condition::SentToScope(scope) => {
                let inside = facts.policy.routing.is_inside(recipient.domain());
                inside == (*scope == OrganizationScope::InOrganization)
            }
            Condition::FromScope(scope) => {
                facts.sender_in_organization == (*scope == OrganizationScope::InOrganization)
            }
            Condition::SenderDomainIs(domains) => {
                facts.mail_from.domain().is_some_and(|d| domains.contains(d))
            }
            Condition::RecipientDomainIs(domains) => domains.contains(recipient.domain()),
            Condition::From(addresses) => {
                let envelope = facts
                    .mail_from
                    .address()
                    .is_some_and(|a| addresses.iter().any(|x| same_address(x, a)));
                envelope
                    || facts
                        .parsed()
                        .from_header
                        .iter()
                        .any(|h| addresses.iter().any(|x| x.to_string().eq_ignore_ascii_case(h)))
            }
            Condition::SentTo(addresses) => addresses.iter().any(|a| same_address(a, recipient)),
            Condition::HeaderContains { header, words } => facts
                .parsed()
                .headers
                .iter()
                .filter(|(name, _)| name == header)
                .any(|(_, value)| {
                    let value = value.to_lowercase();
                    words.iter().any(|w| value.contains(w.as_str()))
                }),
            Condition::HeaderMatches { header, patterns } => facts
                .parsed()
                .headers
                .iter()
                .filter(|(name, _)| name == header)
                .any(|(_, value)| patterns.iter().any(|p| p.is_match(value))),
            Condition::SubjectOrBodyContains(words) => {
                let text = &facts.parsed().text;
                words.iter().any(|w| text.contains(w.as_str()))
            }
            Condition::AttachmentExtensionIs(extensions) => facts.parsed().attachments.iter().any(|name| {
                name.rsplit_once('.')
                    .is_some_and(|(_, ext)| extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
            }),
            Condition::AttachmentNameMatches(patterns) => facts
                .parsed()
                .attachments
                .iter()
                .any(|name| patterns.iter().any(|p| p.is_match(name))),
            Condition::MessageSizeOver(limit) => facts.size() > *limit,
            Condition::SenderIpRanges(ranges) => ranges.iter().any(|r| r.contains(&facts.peer)),
            Condition::ContainsSensitiveInfo {
                detectors,
                min_confidence,
                min_count,
            } => crate::scan::meets(facts.scan(), detectors, *min_confidence, *min_count),
            Condition::SpfResult(wanted) => facts.auth.is_some_and(|a| wanted.contains(&a.spf)),
            Condition::DkimResult(wanted) => facts
                .auth
                .is_some_and(|a| a.dkim.iter().any(|r| wanted.contains(r))),
            Condition::DmarcResult(wanted) => facts.auth.is_some_and(|a| wanted.contains(&a.dmarc)),
            Condition::ArcResult(wanted) => facts.auth.is_some_and(|a| wanted.contains(&a.arc)),
        }
    }

    /// The condition as its config key and value, for explanations.
    pub fn describe(&self) -> String {
        let scope = |s: &OrganizationScope| match s {
            OrganizationScope::InOrganization => "in_organization",
            OrganizationScope::NotInOrganization => "not_in_organization",
        };
        let list = |items: Vec<String>| items.join(", ");
        match self {
            Condition::SentToScope(s) => format!("sent_to_scope = {}", scope(s)),
            Condition::FromScope(s) => format!("from_scope = {}", scope(s)),
            Condition::SenderDomainIs(d) => format!(
                "sender_domain_is [{}]",
                list(d.iter().map(ToString::to_string).collect())
            ),
            Condition::RecipientDomainIs(d) => format!(
                "recipient_domain_is [{}]",
                list(d.iter().map(ToString::to_string).collect())
            ),
            Condition::From(a) => format!("from [{}]", list(a.iter().map(ToString::to_string).collect())),
            Condition::SentTo(a) => {
                format!("sent_to [{}]", list(a.iter().map(ToString::to_string).collect()))
            }
            Condition::HeaderContains { header, words } => {
                format!("header_contains {header}: [{}]", words.join(", "))
            }
            Condition::HeaderMatches { header, patterns } => {
                format!(
                    "header_matches {header}: [{}]",
                    list(patterns.iter().map(|p| p.as_str().to_string()).collect())
                )
            }
            Condition::SubjectOrBodyContains(w) => format!("subject_or_body_contains [{}]", w.join(", ")),
            Condition::AttachmentExtensionIs(e) => format!("attachment_extension_is [{}]", e.join(", ")),
            Condition::AttachmentNameMatches(p) => {
                format!(
                    "attachment_name_matches [{}]",
                    list(p.iter().map(|p| p.as_str().to_string()).collect())
                )
            }
            Condition::MessageSizeOver(n) => format!("message_size_over {n} bytes"),
            Condition::SenderIpRanges(r) => format!(
                "sender_ip_ranges [{}]",
                list(r.iter().map(ToString::to_string).collect())
            ),
            Condition::ContainsSensitiveInfo {
                detectors,
                min_confidence,
                min_count,
            } => {
                let which = if detectors.is_empty() {
                    "any".to_string()
                } else {
                    list(detectors.clone())
                };
                format!(
                    "contains_sensitive_info [{which}] at {} x{min_count}",
                    min_confidence.as_str()
                )
            }
            Condition::SpfResult(r) => format!("spf_result [{}]", results(r)),
            Condition::DkimResult(r) => format!("dkim_result [{}]", results(r)),
            Condition::DmarcResult(r) => format!("dmarc_result [{}]", results(r)),
            Condition::ArcResult(r) => format!("arc_result [{}]", results(r)),
        }
    }
}

fn results(list: &[crate::auth::AuthResult]) -> String {
    list.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

fn auth_results(
    key: &'static str,
    words: &[String],
) -> Result<Vec<crate::auth::AuthResult>, (&'static str, String)> {
    words
        .iter()
        .map(|w| {
            crate::auth::AuthResult::parse(w).ok_or_else(|| {
                (
                    key,
                    format!(
                        "{w:?} is not a result (pass, fail, softfail, neutral, none, temperror, permerror)"
                    ),
                )
            })
        })
        .collect()
}

fn same_address(a: &Address, b: &Address) -> bool {
    a.domain() == b.domain() && a.local().eq_ignore_ascii_case(b.local())
}

/// Compiles predicates; errors carry the key at fault.
pub fn compile(p: &RulePredicates) -> Result<Vec<Condition>, (&'static str, String)> {
    let mut out = Vec::new();
    let domains = |key: &'static str, list: &[String]| {
        list.iter()
            .map(|d| Domain::parse(d).map_err(|e| (key, e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    let addresses = |key: &'static str, list: &[String]| {
        list.iter()
            .map(|d| Address::parse(d).map_err(|e| (key, e.to_string())))
            .collect::<Result<Vec<_>, _>>()
    };
    let regexes = |key: &'static str, list: &[String]| {
        list.iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| (key, format!("invalid regular expression {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let words = |list: &[String]| {
        list.iter()
            .map(|w| w.to_lowercase())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
    };
    if let Some(scope) = p.sent_to_scope {
        out.push(Condition::SentToScope(scope));
    }
    if let Some(scope) = p.from_scope {
        out.push(Condition::FromScope(scope));
    }
    if !p.sender_domain_is.is_empty() {
        out.push(Condition::SenderDomainIs(domains(
            "sender_domain_is",
            &p.sender_domain_is,
        )?));
    }
    if !p.recipient_domain_is.is_empty() {
        out.push(Condition::RecipientDomainIs(domains(
            "recipient_domain_is",
            &p.recipient_domain_is,
        )?));
    }
    if !p.from.is_empty() {
        out.push(Condition::From(addresses("from", &p.from)?));
    }
    if !p.sent_to.is_empty() {
        out.push(Condition::SentTo(addresses("sent_to", &p.sent_to)?));
    }
    if let Some(h) = &p.header_contains {
        let header = crate::rules::edit::header_name(&h.header)
            .map_err(|m| ("header_contains", m))?
            .to_ascii_lowercase();
        if h.words.is_empty() {
            return Err(("header_contains", "words must not be empty".into()));
        }
        out.push(Condition::HeaderContains {
            header,
            words: words(&h.words),
        });
    }
    if let Some(h) = &p.header_matches {
        let header = crate::rules::edit::header_name(&h.header)
            .map_err(|m| ("header_matches", m))?
            .to_ascii_lowercase();
        if h.patterns.is_empty() {
            return Err(("header_matches", "patterns must not be empty".into()));
        }
        out.push(Condition::HeaderMatches {
            header,
            patterns: regexes("header_matches", &h.patterns)?,
        });
    }
    if !p.subject_or_body_contains.is_empty() {
        out.push(Condition::SubjectOrBodyContains(words(
            &p.subject_or_body_contains,
        )));
    }
    if !p.attachment_extension_is.is_empty() {
        out.push(Condition::AttachmentExtensionIs(
            p.attachment_extension_is
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
        ));
    }
    if !p.attachment_name_matches.is_empty() {
        out.push(Condition::AttachmentNameMatches(regexes(
            "attachment_name_matches",
            &p.attachment_name_matches,
        )?));
    }
    if let Some(size) = &p.message_size_over {
        out.push(Condition::MessageSizeOver(
            crate::config::parse_size(size).map_err(|m| ("message_size_over", m))?,
        ));
    }
    if !p.sender_ip_ranges.is_empty() {
        let ranges = p
            .sender_ip_ranges
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        (
                            "sender_ip_ranges",
                            format!("{s:?} is not an IP address or CIDR range"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Condition::SenderIpRanges(ranges));
    }
    let auth = [
        ("spf_result", &p.spf_result, Condition::SpfResult as fn(_) -> _),
        ("dkim_result", &p.dkim_result, Condition::DkimResult),
        ("dmarc_result", &p.dmarc_result, Condition::DmarcResult),
        ("arc_result", &p.arc_result, Condition::ArcResult),
    ];
    for (key, words, condition) in auth {
        if !words.is_empty() {
            out.push(condition(auth_results(key, words)?));
        }
    }
    if let Some(info) = &p.contains_sensitive_info {
        // Built-in names or custom ones; that a custom one exists is checked
        // with the other objects (`rules::compile`).
        let detectors = info
            .detectors
            .iter()
            .map(|d| match d.parse::<crate::scan::Detector>() {
                Ok(builtin) => Ok(builtin.as_str().to_string()),
                Err(e) => sluice_dlp::check_name(d)
                    .map(|()| d.clone())
                    .map_err(|_| ("contains_sensitive_info", format!("detectors: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let min_confidence = info
            .min_confidence
            .parse::<crate::scan::Confidence>()
            .map_err(|e| ("contains_sensitive_info", format!("min_confidence: {e}")))?;
        if info.min_count == 0 {
            return Err(("contains_sensitive_info", "min_count must be at least 1".into()));
        }
        out.push(Condition::ContainsSensitiveInfo {
            detectors,
            min_confidence,
            min_count: info.min_count as usize,
        });
    }
    Ok(out)
}
