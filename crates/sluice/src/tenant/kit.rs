//! `sluice tenant kit DOMAIN`: the tenant's side of seed 000, in the three
//! forms an administrator can use: Exchange Online cmdlets (`ps1`), sluice
//! objects (`toml`, which is what sluice's own importer reads from the ps1,
//! so the two cannot differ) and a one-page guide (`html`).
//!
//! Every value in a kit is public (host names, addresses, connector names):
//! a kit never carries a token, a key or a password.

use super::PartnerSettings;
use crate::config::objects::ObjectSet;
use crate::config::powershell;

/// The tenant's connector to the scanner.
pub const TO_SCANNER: &str = "To scanner";
/// The tenant's connector for scanned mail coming back.
pub const FROM_SCANNER: &str = "From scanner";
/// The tenant's rule that sends external mail through the scanner.
pub const RULE: &str = "External mail through the scanner";
/// The header and word of the scanner's verdict.
pub const STAMP_HEADER: &str = "X-Sluice-Org-Scan";
/// A message with this verdict has been scanned and goes out.
pub const PASS: &str = "verdict=pass";

/// A kit's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KitFormat {
    /// Exchange Online PowerShell.
    Ps1,
    /// sluice objects.
    Toml,
    /// A one-page guide.
    Html,
}

/// The kit in the requested form.
pub fn render(partner: &PartnerSettings, domain: &str, format: KitFormat) -> String {
    match format {
        KitFormat::Ps1 => ps1(partner, domain),
        KitFormat::Toml => toml_objects(partner, domain),
        KitFormat::Html => html(partner, domain),
    }
}

/// Exchange Online accepts a smart host without a port (it always uses 25);
/// a port is written only when the scanner listens elsewhere (a test bed).
fn smart_host(partner: &PartnerSettings) -> &str {
    partner
        .smtp_host
        .strip_suffix(":25")
        .unwrap_or(&partner.smtp_host)
}

fn quoted(text: &str) -> String {
    // PowerShell single quotes take everything literally but a doubled quote.
    format!("'{}'", text.replace('\'', "''"))
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| quoted(i)).collect::<Vec<_>>().join(",")
}

/// The cmdlets of seed 000: the connector to the scanner (rule-scoped,
/// TLS, validation recipient), the connector for the scanner's addresses,
/// and the rule that routes external mail through the scanner unless it
/// carries the scanner's pass verdict.
pub fn ps1(partner: &PartnerSettings, domain: &str) -> String {
    let host = smart_host(partner);
    let validation = partner.validation_address.to_string();
    let mut out = String::new();
    out.push_str(&format!(
        "# Scanning service onboarding for {domain}\n\
         # Run in Exchange Online PowerShell (Connect-ExchangeOnline) as an Exchange administrator.\n\
         # Every value here is public: the kit holds no password, key or token.\n\
         # Scanner: {host}; it sends from {}.\n\n",
        partner.egress_ips.join(", ")
    ));
    out.push_str(&format!(
        "# Step 1: the connector to the scanning service, used only by the rule in step 3.\n\
         New-OutboundConnector -Name {} -ConnectorType Partner -SmartHosts {} -UseMXRecord $false `\n  \
         -TlsSettings EncryptionOnly -IsTransportRuleScoped $true -ValidationRecipients {} `\n  \
         -Comment {}\n\n",
        quoted(TO_SCANNER),
        quoted(host),
        quoted(&validation),
        quoted(&format!("Scanning service at {host}")),
    ));
    out.push_str(&format!(
        "# Step 2: validate it; the scanner records the test message for {domain}.\n\
         # Validate-OutboundConnector -Identity {} -Recipients {}\n\
         # (sluice: sluice connector validate {:?})\n\n",
        quoted(TO_SCANNER),
        quoted(&validation),
        TO_SCANNER,
    ));
    out.push_str(&format!(
        "# Step 3: accept scanned mail back from the scanner's addresses, keeping its verdict header.\n\
         New-InboundConnector -Name {} -ConnectorType OnPremises -SenderIPAddresses {} `\n  \
         -SenderDomains '*' -RequireTls $true -CloudServicesMailEnabled $true `\n  \
         -Comment {}\n\n",
        quoted(FROM_SCANNER),
        list(&partner.egress_ips),
        quoted(&format!("Scanned mail returning from {host}")),
    ));
    out.push_str(&format!(
        "# Step 4: send external mail through the scanner unless the scanner has passed it.\n\
         New-TransportRule -Name {} -Priority 0 -SentToScope NotInOrganization `\n  \
         -ExceptIfHeaderContainsMessageHeader {} -ExceptIfHeaderContainsWords {} `\n  \
         -RouteMessageOutboundConnector {}\n",
        quoted(RULE),
        quoted(STAMP_HEADER),
        quoted(PASS),
        quoted(TO_SCANNER),
    ));
    out
}

/// The tenant's objects, as sluice's PowerShell importer reads the ps1 kit.
pub fn objects(partner: &PartnerSettings, domain: &str) -> ObjectSet {
    match powershell::import(&ps1(partner, domain)) {
        Ok(imported) => imported.objects,
        // The script is ours and its values were validated with [partner]:
        // the importer's tests hold this unreachable.
        Err(error) => panic!("the kit's own script does not import: {error}"),
    }
}

fn toml_objects(partner: &PartnerSettings, domain: &str) -> String {
    let set = objects(partner, domain);
    let body = toml::to_string(&set).unwrap_or_default();
    format!(
        "# Scanning service onboarding for {domain}: the objects for a sluice gateway.\n\
         # Apply with: sluice apply -f THIS_FILE; then: sluice connector validate {TO_SCANNER:?}\n\
         # Every value here is public: the kit holds no password, key or token.\n\n{body}"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html(partner: &PartnerSettings, domain: &str) -> String {
    let host = escape(smart_host(partner));
    let ips = escape(&partner.egress_ips.join(", "));
    let validation = escape(&partner.validation_address.to_string());
    let d = escape(domain);
    let script = escape(&ps1(partner, domain));
    let (to, from, rule) = (escape(TO_SCANNER), escape(FROM_SCANNER), escape(RULE));
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scanning service onboarding: {d}</title>
<style>body{{font-family:sans-serif;max-width:52rem;margin:2rem auto;line-height:1.45}}code,pre{{background:#f3f3f3;padding:.1rem .3rem}}pre{{padding:.8rem;overflow-x:auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style>
</head><body>
<h1>Scanning service onboarding for {d}</h1>
<p>Four steps in the Exchange admin center (Mail flow) or in Exchange Online PowerShell. Every value on this page is public: it holds no password, key or token.</p>
<h2>Values to paste</h2>
<table>
<tr><th>Scanner host (smart host)</th><td><code>{host}</code></td></tr>
<tr><th>Scanner sending addresses</th><td><code>{ips}</code></td></tr>
<tr><th>Validation recipient</th><td><code>{validation}</code></td></tr>
<tr><th>Verdict header and word</th><td><code>{STAMP_HEADER}</code> contains <code>{PASS}</code></td></tr>
</table>
<h2>Steps</h2>
<ol>
<li><strong>Connector to the scanner</strong>: Mail flow &gt; Connectors &gt; Add a connector, from Office 365 to Partner organization, named <code>{to}</code>; only when a transport rule redirects messages; route through the smart host <code>{host}</code>; always use TLS, issued by any certificate authority.</li>
<li><strong>Validate it</strong> with the recipient <code>{validation}</code>. The scanner records the test message for {d}.</li>
<li><strong>Connector for scanned mail</strong>: from Your organization's email server to Office 365, named <code>{from}</code>, identified by the sending addresses <code>{ips}</code>, requiring TLS, keeping internal headers (CloudServicesMailEnabled).</li>
<li><strong>Rule</strong> <code>{rule}</code>: apply if the recipient is outside the organization; redirect the message to the connector <code>{to}</code>; except if the header <code>{STAMP_HEADER}</code> contains <code>{PASS}</code>; priority 0.</li>
</ol>
<h2>Check list</h2>
<ul>
<li>☐ The connector <code>{to}</code> is validated (the scanner's tenant page shows the validation message).</li>
<li>☐ The connector <code>{from}</code> lists exactly <code>{ips}</code>.</li>
<li>☐ The rule <code>{rule}</code> is enabled and has the exception for <code>{PASS}</code> (without it, mail loops).</li>
<li>☐ A test message to an external address arrives once; the scanner's tenant page counts it.</li>
</ul>
<h2>The same as Exchange Online PowerShell</h2>
<pre>{script}</pre>
</body></html>
"#
    )
}
