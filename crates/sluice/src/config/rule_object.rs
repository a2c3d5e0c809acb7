//! `[[rule]]`: a mail flow rule as written (SPEC section 4). Validated into
//! a `Rule` by the rules stage (`rules::compile`).

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    /// Apply the actions.
    #[default]
    Enforce,
    /// Record the match in the trace, change nothing.
    Audit,
}

/// `sent_to_scope` / `from_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationScope {
    /// Inside the organisation.
    InOrganization,
    /// Outside it.
    NotInOrganization,
}

/// `header_contains = { header, words }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderWords {
    /// Header name.
    pub header: String,
    /// Words or phrases, case-insensitive.
    pub words: Vec<String>,
}

/// `header_matches = { header, patterns }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderPatterns {
    /// Header name.
    pub header: String,
    /// Regular expressions (linear-time engine).
    pub patterns: Vec<String>,
}

/// `contains_sensitive_info = { detectors, min_confidence, min_count }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SensitiveInfo {
    /// Detector names (SPEC section 7); empty means any.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// `low | medium | high`.
    #[serde(default = "default_confidence")]
    pub min_confidence: String,
    /// Findings needed.
    #[serde(default = "one")]
    pub min_count: u32,
}

fn default_confidence() -> String {
    "medium".into()
}

fn one() -> u32 {
    1
}

/// `[rule.conditions]` and `[rule.exceptions]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePredicates {
    /// Recipient inside or outside the organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_to_scope: Option<OrganizationScope>,
    /// Sender inside or outside the organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_scope: Option<OrganizationScope>,
    /// Envelope sender domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sender_domain_is: Vec<String>,
    /// Recipient domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipient_domain_is: Vec<String>,
    /// Sender address (envelope or From header).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// Recipient address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_to: Vec<String>,
    /// Words in a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_contains: Option<HeaderWords>,
    /// Patterns in a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_matches: Option<HeaderPatterns>,
    /// Words in the subject or decoded text parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_or_body_contains: Vec<String>,
    /// Attachment file extensions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_extension_is: Vec<String>,
    /// Patterns on attachment names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_name_matches: Vec<String>,
    /// Size threshold (`10MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_size_over: Option<String>,
    /// Client address ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sender_ip_ranges: Vec<String>,
    /// DLP findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_sensitive_info: Option<SensitiveInfo>,
    /// SPF result is one of these (`pass | fail | softfail | neutral | none | temperror | permerror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spf_result: Vec<String>,
    /// A DKIM signature's result is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dkim_result: Vec<String>,
    /// DMARC result is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dmarc_result: Vec<String>,
    /// ARC chain result is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arc_result: Vec<String>,
}

/// `set_header = { header, value }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHeader {
    /// Header name.
    pub header: String,
    /// Value.
    pub value: String,
}

/// `reject = { code, text }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectWith {
    /// Enhanced status code, `5.7.1`.
    #[serde(default = "default_reject_code")]
    pub code: String,
    /// Reply text.
    #[serde(default = "default_reject_text")]
    pub text: String,
}

fn default_reject_code() -> String {
    "5.7.1".into()
}

fn default_reject_text() -> String {
    "Delivery not authorized, message refused".into()
}

/// `[rule.actions]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleActions {
    /// Route through this outbound connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_via_connector: Option<String>,
    /// Add or replace a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header: Option<SetHeader>,
    /// Remove a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_header: Option<String>,
    /// Text put before the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepend_subject: Option<String>,
    /// Replace the matching recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_to: Vec<String>,
    /// Add hidden recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    /// Refuse the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectWith>,
    /// Drop silently.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delete: bool,
    /// Hold in quarantine.
    #[serde(default, skip_serializing_if = "is_false")]
    pub quarantine: bool,
    /// Notice sent to the envelope sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_sender: Option<String>,
    /// Write `X-Sluice-Org-Scan` from the DLP result.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stamp_scan: bool,
}

/// `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleObject {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Lower runs first.
    #[serde(default)]
    pub priority: u32,
    /// Enforce or audit.
    #[serde(default)]
    pub mode: RuleMode,
    /// Later rules do not run once this one matched.
    #[serde(default)]
    pub stop_processing: bool,
    /// On or off.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// All must hold.
    #[serde(default)]
    pub conditions: RulePredicates,
    /// Any one holding cancels the rule.
    #[serde(default)]
    pub exceptions: RulePredicates,
    /// What happens.
    #[serde(default)]
    pub actions: RuleActions,
}
