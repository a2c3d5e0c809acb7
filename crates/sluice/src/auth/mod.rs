//! Mail authentication (SPEC section 9): SPF, DKIM, DMARC and ARC checks
//! on arrival, the `Authentication-Results` header, DMARC enforcement,
//! DKIM signing and ARC sealing on the way out. The protocols are the
//! mail-auth crate's; this module only decides when they run and what
//! their answers mean for the message.
//!
//! Contract:
//! - Input: the message after the inbound header firewall, the client
//!   address, HELO and MAIL FROM. Mail from an on-premises connector is
//!   the organisation's own and is not checked, except on a sealing node
//!   (`arc_seal`), whose seal must carry what it saw; DMARC is never
//!   enforced on it.
//! - [`Authenticator::check`] answers every protocol once (lookups through
//!   the node's resolver, `delivery.dns`), builds this node's
//!   `Authentication-Results` header and an [`AuthSummary`] for rules and
//!   the trace. Any `Authentication-Results` naming this node that came
//!   with the message is removed first ([`remove_forged_results`]): only
//!   this node may speak for itself.
//! - [`AuthSummary::disposition`] applies `[auth] dmarc_enforce`: a DMARC
//!   failure under `p=reject` is refused (550 5.7.1), under
//!   `p=quarantine` held, unless a trusted ARC sealer vouches that DMARC
//!   passed when the message reached it.
//! - Signing and sealing happen at the end of planning, on each copy's
//!   final content (after every rule changed it), so the signature covers
//!   exactly what leaves; the outbound header firewall later removes only
//!   `X-Sluice-Org-*` headers, which are never signed.

pub mod keys;

use crate::config::DnsSource;
use crate::message::Reply;
use crate::message::{Address, Domain, MessageContent};
use crate::policy::Policy;
use keys::{Keyring, StoredKey};
use mail_auth::arc::ArcSealer;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy as RecordPolicy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Headers a DKIM signature or ARC message signature covers: those a
/// reader sees and a forger would change. `X-Sluice-Org-*` is never among
/// them, so the outbound header firewall cannot break a signature.
const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
];

/// DKIM signatures verified per message: each costs a DNS lookup the
/// sender chooses, so a message cannot make the node ask thousands
/// (RFC 6376 section 6.1 lets a verifier limit the signatures it checks).
pub const MAX_DKIM_SIGNATURES: usize = 10;

/// How long all the checks of one message may take before the client is
/// told to try again (451): a sender's slow DNS must not skip DMARC.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a message for the checks, keeping the first
/// [`MAX_DKIM_SIGNATURES`] signatures.
pub fn parse(content: &[u8]) -> Option<AuthenticatedMessage<'_>> {
    let mut message = AuthenticatedMessage::parse(content)?;
    message.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
    Some(message)
}

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The resolver could not be built.
    #[error("cannot set up the DNS resolver for mail authentication: {0}")]
    Resolver(String),
    /// A stored key could not be used.
    #[error("DKIM key {selector}._domainkey.{domain} cannot sign: {detail}")]
    Key {
        /// Signing domain.
        domain: String,
        /// Selector.
        selector: String,
        /// The library's explanation.
        detail: String,
    },
}

pub use crate::config::auth_settings::{ArcSealIdentity, AuthSettings};

/// One protocol's answer, in RFC 8601's words (the rule conditions'
/// vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthResult {
    /// Verified.
    Pass,
    /// Verified as not authorised.
    Fail,
    /// SPF `~all`.
    SoftFail,
    /// The domain makes no assertion.
    Neutral,
    /// Nothing to check (no record, no signature).
    #[default]
    None,
    /// A transient error (DNS); a retry may differ.
    TempError,
    /// A permanent error (broken record or signature).
    PermError,
}

impl AuthResult {
    /// Every value, in order.
    pub const ALL: [AuthResult; 7] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::TempError,
        AuthResult::PermError,
    ];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(text: &str) -> Option<AuthResult> {
        AuthResult::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text.trim()))
    }

    fn of_dkim(result: &DkimResult) -> AuthResult {
        match result {
            DkimResult::Pass => AuthResult::Pass,
            DkimResult::Neutral(_) => AuthResult::Neutral,
            DkimResult::Fail(_) => AuthResult::Fail,
            DkimResult::PermError(_) => AuthResult::PermError,
            DkimResult::TempError(_) => AuthResult::TempError,
            DkimResult::None => AuthResult::None,
        }
    }

    fn of_spf(result: SpfResult) -> AuthResult {
        match result {
            SpfResult::Pass => AuthResult::Pass,
            SpfResult::Fail => AuthResult::Fail,
            SpfResult::SoftFail => AuthResult::SoftFail,
            SpfResult::Neutral => AuthResult::Neutral,
            SpfResult::TempError => AuthResult::TempError,
            SpfResult::PermError => AuthResult::PermError,
            SpfResult::None => AuthResult::None,
        }
    }

    fn of_dmarc(result: &DmarcResult) -> AuthResult {
        match result {
            DmarcResult::Pass => AuthResult::Pass,
            DmarcResult::Fail(_) => AuthResult::Fail,
            DmarcResult::TempError(_) => AuthResult::TempError,
            DmarcResult::PermError(_) => AuthResult::PermError,
            DmarcResult::None => AuthResult::None,
        }
    }
}

impl std::fmt::Display for AuthResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sender domain's DMARC policy, as far as enforcement cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcPolicy {
    /// `p=none`, no record, or no policy.
    #[default]
    None,
    /// `p=quarantine`.
    Quarantine,
    /// `p=reject`.
    Reject,
}

/// What rules, the trace and enforcement see of the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSummary {
    /// SPF (MAIL FROM, or HELO for the null sender).
    pub spf: AuthResult,
    /// One per DKIM signature (`none` alone when unsigned).
    pub dkim: Vec<AuthResult>,
    /// DMARC.
    pub dmarc: AuthResult,
    /// ARC chain validation.
    pub arc: AuthResult,
    /// The From domain DMARC judged.
    pub from_domain: String,
    /// Its policy.
    pub dmarc_policy: DmarcPolicy,
    /// The trusted sealer that vouched for DMARC, if one did.
    pub trusted_sealer: Option<String>,
}

/// What DMARC enforcement makes of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver as planned.
    Accept,
    /// Hold every copy in quarantine, with this reason.
    Quarantine(String),
    /// Refuse at end of data.
    Reject(Reply),
}

impl AuthSummary {
    /// One line for the trace: `spf=pass dkim=pass dmarc=pass arc=none`.
    pub fn describe(&self) -> String {
        let dkim: Vec<&str> = self.dkim.iter().map(|r| r.as_str()).collect();
        let mut line = format!(
            "spf={} dkim={} dmarc={} arc={}",
            self.spf,
            if dkim.is_empty() {
                "none".to_string()
            } else {
                dkim.join(",")
            },
            self.dmarc,
            self.arc
        );
        if let Some(sealer) = &self.trusted_sealer {
            line.push_str(&format!(" (trusted ARC sealer {sealer})"));
        }
        line
    }

    /// DMARC enforcement (`[auth] dmarc_enforce`).
    pub fn disposition(&self, settings: &AuthSettings) -> Disposition {
        if !settings.dmarc_enforce || self.dmarc != AuthResult::Fail || self.trusted_sealer.is_some() {
            return Disposition::Accept;
        }
        let why = format!(
            "DMARC policy of {} (spf={} dkim={})",
            self.from_domain,
            self.spf,
            self.dkim.first().copied().unwrap_or_default()
        );
        match self.dmarc_policy {
            DmarcPolicy::Reject => Disposition::Reject(Reply::new(
                550,
                [5, 7, 1],
                format!("Message rejected: unauthenticated sender; {why} says reject"),
            )),
            DmarcPolicy::Quarantine => Disposition::Quarantine(format!("{why} says quarantine")),
            DmarcPolicy::None => Disposition::Accept,
        }
    }
}

/// The answers of one message's checks, alive as long as the message, so
/// an ARC seal can carry them.
pub struct Checked<'x> {
    /// What rules and the trace see.
    pub summary: AuthSummary,
    /// This node's `Authentication-Results` header (with CRLF).
    pub header: String,
    results: AuthenticationResults<'x>,
    arc: ArcOutput<'x>,
}

/// The session facts the checks need.
pub struct Envelope<'a> {
    /// Client address (or, with enhanced filtering, the first address
    /// before the connector's hop).
    pub ip: IpAddr,
    /// HELO/EHLO name.
    pub helo: &'a str,
    /// MAIL FROM (empty for `<>`).
    pub mail_from: &'a str,
}

/// The node's authentication stage.
pub struct Authenticator {
    resolver: MessageAuthenticator,
    hostname: String,
    /// `[auth]`.
    pub settings: AuthSettings,
    /// DKIM and ARC keys.
    pub keys: Arc<Keyring>,
}

impl Authenticator {
    /// Builds the stage over the node's resolver setting.
    pub fn new(
        dns: &DnsSource,
        hostname: String,
        settings: AuthSettings,
        keys: Arc<Keyring>,
    ) -> Result<Authenticator, AuthError> {
        let resolver = match dns {
            DnsSource::System => MessageAuthenticator::new_system_conf(),
            DnsSource::Server(addr) => {
                let (config, options) = crate::dns::server_config(*addr);
                MessageAuthenticator::new(config, options)
            }
        }
        .map_err(|error| AuthError::Resolver(error.to_string()))?;
        Ok(Authenticator {
            resolver,
            hostname,
            settings,
            keys,
        })
    }

    /// Whether this node seals what it relays (`[auth] arc_seal`).
    pub fn seals(&self) -> bool {
        self.settings.arc_seal.is_some()
    }

    /// This node's name in `Authentication-Results`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Runs SPF, DKIM (every signature), ARC and DMARC on `message`.
    pub async fn check<'x>(
        &'x self,
        message: &'x AuthenticatedMessage<'x>,
        envelope: &Envelope<'_>,
    ) -> Checked<'x> {
        let dkim: Vec<DkimOutput<'x>> = self.resolver.verify_dkim(message).await;
        let arc: ArcOutput<'x> = self.resolver.verify_arc(message).await;
        let spf: SpfOutput = self
            .resolver
            .verify_spf(SpfParameters::verify(
                envelope.ip,
                envelope.helo,
                &self.hostname,
                envelope.mail_from,
            ))
            .await;
        let mail_from_domain = envelope
            .mail_from
            .rsplit_once('@')
            .map_or(envelope.helo, |(_, domain)| domain);
        let dmarc: DmarcOutput = self
            .resolver
            .verify_dmarc(DmarcParameters::new(message, &dkim, mail_from_domain, &spf))
            .await;
        let header_from = message.from.first().map(String::as_str).unwrap_or_default();
        let results = AuthenticationResults::new(&self.hostname)
            .with_spf_mailfrom_result(&spf, envelope.ip, envelope.mail_from, envelope.helo)
            .with_dkim_results(&dkim, header_from)
            .with_arc_result(&arc, envelope.ip)
            .with_dmarc_result(&dmarc);
        let summary = AuthSummary {
            spf: AuthResult::of_spf(spf.result()),
            dkim: if dkim.is_empty() {
                vec![AuthResult::None]
            } else {
                dkim.iter().map(|d| AuthResult::of_dkim(d.result())).collect()
            },
            dmarc: AuthResult::of_dmarc(&dmarc.result()),
            arc: AuthResult::of_dkim(arc.result()),
            from_domain: dmarc.domain().to_string(),
            dmarc_policy: match dmarc.policy() {
                RecordPolicy::Reject => DmarcPolicy::Reject,
                RecordPolicy::Quarantine => DmarcPolicy::Quarantine,
                RecordPolicy::None | RecordPolicy::Unspecified => DmarcPolicy::None,
            },
            trusted_sealer: trusted_sealer(&arc, &self.settings.trusted_arc_sealers),
        };
        let header = results.to_header();
        Checked {
            summary,
            header,
            results,
            arc,
        }
    }

    /// One copy on its way out, at the end of planning: signed with the
    /// active key of its From domain when that is an accepted domain and a
    /// recipient is outside the organisation, then sealed (`arc_seal`)
    /// when the message was checked here. A key that cannot sign is
    /// logged and the copy goes unsigned: refusing mail over it would
    /// turn a key problem into lost mail.
    pub fn outgoing(
        &self,
        policy: &Policy,
        content: MessageContent,
        recipients: &[Address],
        checked: Option<&Checked<'_>>,
    ) -> MessageContent {
        let inside = |domain: &Domain| policy.routing.is_inside(domain);
        let mut content = content;
        if recipients.iter().any(|r| !inside(r.domain())) {
            let from =
                from_header_domain(content.header()).filter(|d| Domain::parse(d).is_ok_and(|d| inside(&d)));
            if let Some(from) = from {
                match self.sign(&content, &from) {
                    Ok(Some(signature)) => content = content.prepend(signature.as_bytes()),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(error = %error, "not signed"),
                }
            }
        }
        if let Some(checked) = checked {
            match self.seal(&content, checked) {
                Ok(Some(set)) => content = content.prepend(set.as_bytes()),
                Ok(None) => {}
                Err(error) => tracing::warn!(error = %error, "not sealed"),
            }
        }
        content
    }

    /// The `DKIM-Signature` field of `content` by the active key of its
    /// From domain, when the node has one. The header section and the
    /// shared body are hashed where they are, never joined.
    pub fn sign(&self, content: &MessageContent, from_domain: &str) -> Result<Option<String>, AuthError> {
        let Some(key) = self.keys.active(from_domain) else {
            return Ok(None);
        };
        signature(&key, content.fields_and_rest()).map(Some)
    }

    /// The ARC set sealing `content` (a copy of a checked message, after
    /// the rules changed it) with `[auth] arc_seal`, when configured and
    /// the chain that arrived can be extended.
    pub fn seal(&self, content: &MessageContent, checked: &Checked<'_>) -> Result<Option<String>, AuthError> {
        let Some(identity) = &self.settings.arc_seal else {
            return Ok(None);
        };
        if !checked.arc.can_be_sealed() {
            return Ok(None);
        }
        let Some(key) = self.keys.find(&identity.domain, &identity.selector) else {
            tracing::warn!(
                domain = %identity.domain,
                selector = %identity.selector,
                "arc_seal names a key this node does not have (sluice dkim new); not sealing"
            );
            return Ok(None);
        };
        // The sealer reads a parsed message, which wants one buffer: a copy
        // changed by the rules is joined for it, one copy at a time.
        let joined;
        let whole = match content.contiguous() {
            Some(whole) => whole,
            None => {
                joined = content.to_vec();
                &joined
            }
        };
        let Some(message) = AuthenticatedMessage::parse(whole) else {
            return Ok(None);
        };
        let signing = key.signing_key().map_err(|detail| key_error(&key, detail))?;
        let set = ArcSealer::from_key(signing)
            .domain(key.domain.clone())
            .selector(key.selector.clone())
            .headers(SIGNED_HEADERS.iter().copied().chain(["DKIM-Signature"]))
            .seal(&message, &checked.results, &checked.arc)
            .map_err(|error| key_error(&key, error))?
            .to_header();
        Ok(Some(set))
    }
}

fn key_error(key: &StoredKey, detail: impl ToString) -> AuthError {
    AuthError::Key {
        domain: key.domain.clone(),
        selector: key.selector.clone(),
        detail: detail.to_string(),
    }
}

/// Signs `content` with `key`: the `DKIM-Signature` header prepended.
pub fn sign_with(key: &StoredKey, content: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut signed = signature(key, [content])?.into_bytes();
    signed.extend_from_slice(content);
    Ok(signed)
}

/// The `DKIM-Signature` field by `key` over the message made of `pieces`.
fn signature<'x>(key: &StoredKey, pieces: impl IntoIterator<Item = &'x [u8]>) -> Result<String, AuthError> {
    let signing = key.signing_key().map_err(|detail| key_error(key, detail))?;
    Ok(DkimSigner::from_key(signing)
        .domain(key.domain.clone())
        .selector(key.selector.clone())
        .headers(SIGNED_HEADERS)
        .sign_chained(pieces)
        .map_err(|error| key_error(key, error))?
        .to_header())
}

/// The sealer that vouches for DMARC: the chain validated, its latest seal
/// is from a trusted domain, and that hop's own results say DMARC passed
/// there (RFC 8617 section 7.2, Exchange's trusted ARC sealers).
fn trusted_sealer(arc: &ArcOutput<'_>, trusted: &[String]) -> Option<String> {
    if *arc.result() != DkimResult::Pass {
        return None;
    }
    let last = arc.sets().last()?;
    let sealer = last.seal.header.d.to_ascii_lowercase();
    if !trusted.iter().any(|t| t.eq_ignore_ascii_case(&sealer)) {
        return None;
    }
    let results = String::from_utf8_lossy(last.results.value).to_ascii_lowercase();
    results.contains("dmarc=pass").then_some(sealer)
}

/// Removes every `Authentication-Results` header whose authserv-id is
/// `hostname` (RFC 8601 section 5: a receiver must not trust, and should
/// delete, results that claim to be its own and arrived with the message).
pub fn remove_forged_results(content: &[u8], hostname: &str) -> Vec<u8> {
    let header_end = find_header_end(content);
    let (headers, body) = content.split_at(header_end);
    let mut out = Vec::with_capacity(content.len());
    let mut dropping = false;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = is_own_results(line, hostname);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

fn is_own_results(line: &[u8], hostname: &str) -> bool {
    let text = String::from_utf8_lossy(line);
    let Some((name, value)) = text.split_once(':') else {
        return false;
    };
    if !name.trim().eq_ignore_ascii_case("authentication-results") {
        return false;
    }
    let id = value
        .split(';')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default();
    id.eq_ignore_ascii_case(hostname)
}

/// The offset of the blank line ending the header (the whole message when
/// there is none).
fn find_header_end(content: &[u8]) -> usize {
    content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |p| p + 2)
}

/// Enhanced filtering: the client of the first hop before the
/// connector's, from the Received headers (newest first), skipping hops
/// from the connector's own addresses. `None` when the connector does not
/// ask for it or no such hop is recorded: the session's client is judged.
pub fn hop_before_connector(
    policy: &Policy,
    connector: Option<&str>,
    peer: IpAddr,
    content: &[u8],
) -> Option<(IpAddr, String)> {
    let connector = policy
        .inbound
        .iter()
        .find(|c| Some(c.name.as_str()) == connector)?;
    if !connector.enhanced_filtering {
        return None;
    }
    let message = mail_parser::MessageParser::new().parse_headers(content)?;
    message
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("received"))
        .filter_map(|h| {
            let raw = content.get(h.offset_start as usize..h.offset_end as usize)?;
            received_client(&String::from_utf8_lossy(raw))
        })
        .find(|(ip, _)| *ip != peer && !connector.sender_ips.iter().any(|net| net.contains(ip)))
}

/// `from HELO (... [IP])` of a Received header value: the client the
/// recording server saw.
fn received_client(value: &str) -> Option<(IpAddr, String)> {
    let value = value.replace(['\r', '\n'], " ");
    let rest = value.trim_start().strip_prefix("from ")?;
    let helo = rest.split_whitespace().next()?.to_string();
    let by = rest.find(" by ").unwrap_or(rest.len());
    let clause = &rest[..by];
    let open = clause.find('[')?;
    let close = clause[open..].find(']')? + open;
    let literal = &clause[open + 1..close];
    let ip = literal.strip_prefix("IPv6:").unwrap_or(literal).parse().ok()?;
    Some((ip, helo))
}

/// The domain of the first From header address, lower-case.
pub fn from_header_domain(content: &[u8]) -> Option<String> {
    let address = crate::message::header::read_field(content, "From", |message| {
        Some(message.from()?.first()?.address()?.to_string())
    })?;
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
