//! `sluice domain check`'s outbound-TLS part: the node's own domain's
//! MTA-STS (TXT record and policy file), TLS-RPT and TLSA records, as a
//! sending MTA would see them, with what is wrong. A record that is not
//! published is fine (they are optional); one that is published and
//! broken is not.

use super::domain_check::CheckLine;
use crate::config::Config;
use crate::deliver::{mta_sts_id, tlsa_chain_matches, tlsa_usable, MtaStsFetcher, MtaStsMode};
use crate::dns::{MxAnswer, Resolver, SecureResolver};
use crate::message::Domain;
use mail_auth::common::parse::TxtRecordParser;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

fn line(record: &str, expected: impl Into<String>, found: impl Into<String>, ok: bool) -> CheckLine {
    CheckLine {
        record: record.into(),
        expected: expected.into(),
        found: found.into(),
        ok,
    }
}

/// The MTA-STS, TLS-RPT and TLSA lines for `domain`.
pub(super) async fn tls_lines(
    resolver: Arc<dyn Resolver>,
    config: &Config,
    domain: &Domain,
) -> Vec<CheckLine> {
    let mx_hosts: Vec<String> = match resolver.mx(domain).await {
        Ok(MxAnswer::Hosts(hosts)) => hosts.into_iter().map(|(_, host)| host).collect(),
        _ => Vec::new(),
    };
    let mut lines = mta_sts_lines(resolver.clone(), config, domain, &mx_hosts).await;
    lines.push(tls_rpt_line(resolver.as_ref(), domain).await);
    if config.dane {
        if let Ok(secure) = crate::dns::secure_resolver(&config.dns, config.dnssec_trust_anchor.as_deref()) {
            lines.extend(tlsa_lines(secure.as_ref(), config, &mx_hosts).await);
        }
    }
    lines
}

async fn mta_sts_lines(
    resolver: Arc<dyn Resolver>,
    config: &Config,
    domain: &Domain,
    mx_hosts: &[String],
) -> Vec<CheckLine> {
    let name = format!("_mta-sts.{domain}");
    let records: Vec<String> = resolver
        .txt(&name)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|text| text.starts_with("v=STSv1"))
        .collect();
    let expected = "one v=STSv1; id=... record (optional)";
    if records.is_empty() {
        return vec![line("MTA-STS", expected, "none (MTA-STS not published)", true)];
    }
    let Some(id) = mta_sts_id(resolver.as_ref(), domain).await else {
        let found = format!("{} (not exactly one valid record)", records.join(" | "));
        return vec![line("MTA-STS", expected, found, false)];
    };
    let mut lines = vec![line("MTA-STS", expected, records.join(" | "), true)];
    let expected = format!("policy at mta-sts.{domain} listing {}", or_none(mx_hosts));
    let fetched = match MtaStsFetcher::new(resolver, config.extra_ca.as_deref(), config.mta_sts_port) {
        Ok(fetcher) => fetcher.fetch(domain, &id).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    lines.push(match fetched {
        Ok(policy) => {
            let unlisted: Vec<&String> = mx_hosts.iter().filter(|mx| !policy.allows_mx(mx)).collect();
            let mode = match policy.mode {
                MtaStsMode::Enforce => "enforce",
                MtaStsMode::Testing => "testing",
                MtaStsMode::None => "none",
            };
            let mut found = format!(
                "mode {mode}, mx {}, max_age {}",
                policy.mx.join(" "),
                policy.max_age
            );
            if !unlisted.is_empty() {
                let names: Vec<&str> = unlisted.iter().map(|s| s.as_str()).collect();
                found.push_str(&format!("; MX not covered: {}", names.join(", ")));
            }
            line("MTA-STS policy", expected, found, unlisted.is_empty())
        }
        Err(error) => line("MTA-STS policy", expected, error, false),
    });
    lines
}

async fn tls_rpt_line(resolver: &dyn Resolver, domain: &Domain) -> CheckLine {
    let records: Vec<String> = resolver
        .txt(&format!("_smtp._tls.{domain}"))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|text| text.starts_with("v=TLSRPTv1"))
        .collect();
    let expected = "one v=TLSRPTv1; rua=mailto:... record (optional)";
    match records.as_slice() {
        [] => line("TLS-RPT", expected, "none (no TLS reports requested)", true),
        [record] => {
            let ok = mail_auth::mta_sts::TlsRpt::parse(record.as_bytes()).is_ok();
            let found = if ok {
                record.clone()
            } else {
                format!("{record} (no usable rua)")
            };
            line("TLS-RPT", expected, found, ok)
        }
        many => line(
            "TLS-RPT",
            expected,
            format!("{} (more than one record)", many.join(" | ")),
            false,
        ),
    }
}

/// The node's own certificate chain (`smtp.tls_cert`), when configured.
fn own_chain(config: &Config) -> Option<Vec<CertificateDer<'static>>> {
    let (cert, _) = config.tls_cert.as_ref()?;
    crate::tls::load_certificates(cert).ok()
}

async fn tlsa_lines(secure: &dyn SecureResolver, config: &Config, mx_hosts: &[String]) -> Vec<CheckLine> {
    let chain = own_chain(config);
    let hostname = config.hostname.to_ascii_lowercase();
    let mut lines = Vec::new();
    for host in mx_hosts {
        let record = format!("TLSA _25._tcp.{host}");
        let ours = host.eq_ignore_ascii_case(&hostname);
        let expected = if ours {
            "DNSSEC-signed, matching this node's certificate (optional)"
        } else {
            "DNSSEC-signed (optional)"
        };
        let answer = match secure.tlsa(host, 25).await {
            Ok(answer) => answer,
            Err(error) => {
                lines.push(line(&record, expected, error.to_string(), false));
                continue;
            }
        };
        if answer.answer.is_empty() {
            lines.push(line(&record, expected, "none (DANE not published)", true));
            continue;
        }
        let shown: Vec<String> = answer
            .answer
            .iter()
            .map(|r| {
                let data: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
                format!("{} {} {} {data}", r.usage, r.selector, r.matching)
            })
            .collect();
        let mut found = shown.join(" | ");
        let mut ok = true;
        if !answer.secure {
            found.push_str("; not DNSSEC-secure: senders ignore these");
            ok = false;
        } else if !answer.answer.iter().any(tlsa_usable) {
            found.push_str("; no usable record (DANE-TA/DANE-EE, selector 0/1, matching 0-2)");
            ok = false;
        } else if let (true, Some(chain)) = (ours, &chain) {
            if !tlsa_chain_matches(&answer.answer, chain) {
                found.push_str("; matches none of this node's certificates");
                ok = false;
            }
        }
        lines.push(line(&record, expected, found, ok));
    }
    lines
}

fn or_none(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "its MX hosts (none found)".to_string()
    } else {
        hosts.join(", ")
    }
}
