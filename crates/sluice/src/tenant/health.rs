//! Health of each tenant, read from the node's trace and validation
//! records: validated or not, when its mail last arrived and how much in
//! the last day, what was quarantined, and mail refused from addresses not
//! listed for it (a sign the tenant's connector points somewhere else, or
//! that someone else sends in its name).

use super::validation::ValidationRecord;
use super::{inbound_name, StoredTenant};
use crate::admin::TraceEventView;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A tenant as `tenant show` and the Tenants page present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantView {
    /// The tenant's domain.
    pub domain: String,
    /// Addresses (CIDR) its mail may come from.
    pub ips: Vec<String>,
    /// Where scanned mail goes back.
    pub return_host: String,
    /// The objects `tenant add` created (`kind "name"`): what `tenant remove` removes.
    pub objects: Vec<String>,
    /// A connector validation message arrived from the tenant.
    pub validated: bool,
    /// The tenant's validation messages, newest last.
    pub validations: Vec<ValidationRecord>,
    /// When the tenant's last message arrived (RFC 3339).
    pub last_arrival: Option<String>,
    /// Messages from the tenant in the last 24 hours.
    pub arrived_last_day: u64,
    /// The tenant's messages held in quarantine (all time, within trace retention).
    pub quarantined: u64,
    /// Refusals of mail in the tenant's name from addresses not listed for it.
    pub refused_unlisted: u64,
    /// The last such refusal: client and reply.
    pub last_refused: Option<String>,
}

fn domain_of(address: &str) -> &str {
    address
        .trim_matches(['<', '>'])
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
}

fn within(domain: &str, tenant: &str) -> bool {
    let (domain, tenant) = (domain.to_ascii_lowercase(), tenant.to_ascii_lowercase());
    domain == tenant || domain.ends_with(&format!(".{tenant}"))
}

/// The view of `tenant` from the trace `events` (oldest first) and every
/// validation record; `day_ago` is the RFC 3339 time 24 hours ago.
pub fn view(
    tenant: &StoredTenant,
    events: &[TraceEventView],
    validations: &[ValidationRecord],
    day_ago: &str,
) -> TenantView {
    let connector = inbound_name(&tenant.domain);
    let from_tenant = |e: &&TraceEventView| e.connector.as_deref() == Some(connector.as_str());
    let received: Vec<&TraceEventView> = events
        .iter()
        .filter(|e| e.event == "received")
        .filter(from_tenant)
        .collect();
    let ids: HashSet<&str> = received.iter().map(|e| e.queue_id.as_str()).collect();
    let quarantined: HashSet<&str> = events
        .iter()
        .filter(|e| e.event == "quarantined" && ids.contains(e.queue_id.as_str()))
        .map(|e| e.queue_id.as_str())
        .collect();
    let refused: Vec<&TraceEventView> = events
        .iter()
        .filter(|e| e.event == "rejected")
        .filter(|e| e.connector.as_deref() != Some(connector.as_str()))
        .filter(|e| within(domain_of(&e.from), &tenant.domain))
        .collect();
    let mine: Vec<ValidationRecord> = validations
        .iter()
        .filter(|v| {
            v.tenant
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(&tenant.domain))
        })
        .cloned()
        .collect();
    TenantView {
        domain: tenant.domain.clone(),
        ips: tenant.ips.clone(),
        return_host: tenant.return_host.clone(),
        objects: tenant.objects.clone(),
        validated: !mine.is_empty(),
        validations: mine,
        last_arrival: received.last().map(|e| e.at.clone()),
        arrived_last_day: received.iter().filter(|e| e.at.as_str() >= day_ago).count() as u64,
        quarantined: quarantined.len() as u64,
        refused_unlisted: refused.len() as u64,
        last_refused: refused.last().map(|e| {
            format!(
                "{} from {}: {}",
                e.at,
                e.remote_host.as_deref().unwrap_or("?"),
                e.detail.as_deref().unwrap_or("")
            )
        }),
    }
}
