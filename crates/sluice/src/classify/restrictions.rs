//! Inbound connector restrictions, checked at MAIL FROM: `require_tls`,
//! `restrict_domains_to_ip_addresses`, `restrict_domains_to_certificate`.
//!
//! The restrictions of every enabled connector (every one in the table) apply, not only the one the
//! session matched: a connector that claims `fabrikam.test` for its IPs
//! means fabrikam.test mail from anywhere else is forged.

use super::{certificate_name_matches, Classification, InboundConnector};
use crate::message::{Reply, ReversePath};
use std::net::IpAddr;

/// What the session knows when MAIL FROM arrives.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// Client address.
    pub peer: IpAddr,
    /// STARTTLS completed.
    pub tls: bool,
    /// Names of a verified client certificate.
    pub certificate_names: &'a [String],
}

/// Accepts or refuses a sender for this session.
pub fn check_sender(
    inbound: &[InboundConnector],
    classification: &Classification,
    facts: SessionFacts<'_>,
    mail_from: &ReversePath,
) -> Result<(), Reply> {
    if let Some(connector) = classification.connector().and_then(|name| find(inbound, name)) {
        if connector.require_tls && !facts.tls {
            return Err(Reply::new(
                530,
                [5, 7, 0],
                "Must issue a STARTTLS command first: TLS is required for this sender",
            ));
        }
    }
    let Some(domain) = mail_from.domain() else {
        return Ok(());
    };
    for c in inbound {
        let covers = c.sender_domains.iter().any(|p| p.matches(domain).is_some());
        if !covers {
            continue;
        }
        if c.restrict_domains_to_ip_addresses && !c.sender_ips.iter().any(|net| net.contains(&facts.peer)) {
            return Err(Reply::new(
                550,
                [5, 7, 1],
                format!("Mail from {domain} is accepted only from the sender's registered IP addresses"),
            ));
        }
        let has_certificate = c.certificate_name.as_ref().is_some_and(|p| {
            facts
                .certificate_names
                .iter()
                .any(|n| certificate_name_matches(p, n))
        });
        if c.restrict_domains_to_certificate && !has_certificate {
            return Err(Reply::new(
                550,
                [5, 7, 1],
                format!("Mail from {domain} is accepted only with the sender's TLS certificate"),
            ));
        }
    }
    Ok(())
}

fn find<'a>(inbound: &'a [InboundConnector], name: &str) -> Option<&'a InboundConnector> {
    inbound.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::config::objects::ObjectSet;

    const OBJECTS: &str = r#"
        [[inbound_connector]]
        name = "Partner by IP"
        sender_ip_addresses = ["127.0.0.50/32"]
        sender_domains = ["fabrikam.test"]
        restrict_domains_to_ip_addresses = true
        require_tls = true
        [[inbound_connector]]
        name = "Partner by cert"
        tls_sender_certificate_name = "mail.tailspin.test"
        sender_domains = ["tailspin.test"]
        restrict_domains_to_certificate = true
    "#;

    fn check(ip: &str, tls: bool, names: &[&str], from: &str) -> Result<(), Reply> {
        let policy = crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(OBJECTS).unwrap()).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let peer = ip.parse().unwrap();
        let classification = classify(&policy.inbound, peer, &names);
        let facts = SessionFacts {
            peer,
            tls,
            certificate_names: &names,
        };
        check_sender(
            &policy.inbound,
            &classification,
            facts,
            &ReversePath::try_from(from.to_string()).unwrap(),
        )
    }

    #[test]
    fn require_tls_refuses_clear_text() {
        let e = check("127.0.0.50", false, &[], "a@fabrikam.test").unwrap_err();
        assert_eq!((e.code, e.status), (530, Some([5, 7, 0])));
        assert!(e.text.contains("TLS is required"));
        assert!(check("127.0.0.50", true, &[], "a@fabrikam.test").is_ok());
    }

    #[test]
    fn restricted_domains_from_elsewhere_are_rejected() {
        assert_eq!(
            check("10.9.9.9", true, &[], "a@fabrikam.test").unwrap_err().code,
            550
        );
        assert_eq!(
            check("10.9.9.9", true, &[], "a@tailspin.test").unwrap_err().code,
            550
        );
        assert!(check("10.9.9.9", true, &["mail.tailspin.test"], "a@tailspin.test").is_ok());
        assert!(check("10.9.9.9", false, &[], "a@other.test").is_ok());
        assert!(check("10.9.9.9", false, &[], "").is_ok());
    }
}
