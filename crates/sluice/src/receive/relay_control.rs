//! Relay control: which recipients a session may reach (SPEC section 4,
//! "Acceptance comes before routing"). Never an open relay: a connector
//! matching the recipient domain does not by itself make it reachable.

use crate::classify::{Classification, MatchedBy};
use crate::message::{Address, Domain, Reply, ReversePath};
use crate::policy::Policy;
use crate::route::{self, Route};

/// Decides one RCPT TO: the route it will take, or the 550 that refuses it.
///
/// Accepted domains are open to everyone. Any other domain needs relay
/// permission: the session came through an on-premises connector and the
/// envelope sender's domain is an accepted domain (tenant attribution).
pub fn check_recipient(
    policy: &Policy,
    classification: &Classification,
    mail_from: &ReversePath,
    recipient: &Address,
) -> Result<Route, Reply> {
    let domain = recipient.domain();
    let is_validation = policy
        .validation_address
        .as_ref()
        .is_some_and(|v| v.to_string().eq_ignore_ascii_case(&recipient.to_string()));
    if is_validation {
        // Connector validation on a scanner node: recorded, never relayed.
        return Ok(Route::Mailbox);
    }
    let accepted = policy.accepted_domain(domain).is_some();
    if !accepted && !may_relay(policy, classification, mail_from) {
        let text = if policy.validation_address.is_some() {
            // A scanner: the usual cause is a tenant whose connector or
            // sending addresses are not (or no longer) registered here.
            format!("Relaying to <{recipient}> denied: the sending address is not listed for any tenant of this scanning service")
        } else {
            format!("Relaying to <{recipient}> denied")
        };
        return Err(Reply::new(550, [5, 7, 1], text));
    }
    Ok(route::route(&policy.routing, domain).unwrap_or(Route::Mx))
}

/// Whether the sender counts as inside the organisation (rules' from_scope):
/// it came through an on-premises connector and may relay.
pub fn sender_in_organization(
    policy: &Policy,
    classification: &Classification,
    mail_from: &ReversePath,
) -> bool {
    matches!(classification, Classification::Internal { .. }) && may_relay(policy, classification, mail_from)
}

/// Relay permission of a session for a given sender.
pub fn may_relay(policy: &Policy, classification: &Classification, mail_from: &ReversePath) -> bool {
    match classification {
        Classification::Internal { matched_by, .. } => {
            let accepted = |domain: &Domain| policy.routing.is_inside(domain);
            let certificate_domain = match matched_by {
                MatchedBy::Certificate(name) => Domain::parse(name.trim_start_matches("*.")).ok(),
                MatchedBy::SourceIp(_) => None,
            };
            match (mail_from.domain(), certificate_domain) {
                (_, Some(cert)) if accepted(&cert) => true,
                (Some(sender), _) => accepted(sender),
                // Bounces from the organisation's own server may go out.
                (None, _) => true,
            }
        }
        Classification::Partner { .. } | Classification::Anonymous => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::config::objects::ObjectSet;

    const OBJECTS: &str = r#"
        [[accepted_domain]]
        name = "contoso.test"
        [[inbound_connector]]
        name = "On-prem"
        type = "on_premises"
        sender_ip_addresses = ["127.0.0.40/32"]
        [[inbound_connector]]
        name = "Partner"
        type = "partner"
        sender_ip_addresses = ["127.0.0.50/32"]
        [[outbound_connector]]
        name = "Everything"
        recipient_domains = ["*"]
        smart_hosts = ["127.0.0.9:25"]
    "#;

    fn check(ip: &str, from: &str, to: &str) -> Result<Route, Reply> {
        let policy = crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(OBJECTS).unwrap()).unwrap();
        let classification = classify(&policy.inbound, ip.parse().unwrap(), &[]);
        let from = ReversePath::try_from(from.to_string()).unwrap();
        check_recipient(&policy, &classification, &from, &Address::parse(to).unwrap())
    }

    #[test]
    fn never_an_open_relay() {
        // A `*` connector exists, yet anonymous and partner senders cannot relay.
        assert_eq!(
            check("10.1.1.1", "a@evil.test", "b@example.org")
                .unwrap_err()
                .code,
            550
        );
        assert_eq!(
            check("127.0.0.50", "a@contoso.test", "b@example.org")
                .unwrap_err()
                .code,
            550
        );
        // On-premises needs an accepted sender domain.
        assert!(check("127.0.0.40", "a@evil.test", "b@example.org").is_err());
        assert!(check("127.0.0.40", "a@contoso.test", "b@example.org").is_ok());
        assert!(check("127.0.0.40", "a@eu.contoso.test", "b@example.org").is_ok());
    }

    #[test]
    fn accepted_domains_are_open_to_all_and_stay_in_their_mailboxes() {
        // An authoritative domain is delivered to this node's mailboxes: the
        // `*` connector carries only mail that leaves the organisation.
        assert_eq!(
            check("10.1.1.1", "a@evil.test", "b@contoso.test"),
            Ok(Route::Mailbox)
        );
        assert!(matches!(
            check("127.0.0.40", "a@contoso.test", "b@example.org"),
            Ok(Route::Connector { .. })
        ));
    }

    #[test]
    fn a_scanners_validation_address_is_open_to_all_and_its_refusals_name_tenants() {
        let mut policy =
            crate::policy::Policy::compile(&toml::from_str::<ObjectSet>(OBJECTS).unwrap()).unwrap();
        policy.validation_address = Some(Address::parse("check@scan.partner.test").unwrap());
        let anonymous = classify(&policy.inbound, "10.1.1.1".parse().unwrap(), &[]);
        let from = ReversePath::try_from("postmaster@evil.test".to_string()).unwrap();
        let to = |a: &str| Address::parse(a).unwrap();
        assert_eq!(
            check_recipient(&policy, &anonymous, &from, &to("Check@scan.partner.test")),
            Ok(Route::Mailbox)
        );
        let refused =
            check_recipient(&policy, &anonymous, &from, &to("other@scan.partner.test")).unwrap_err();
        assert_eq!(refused.code, 550);
        assert!(
            refused.to_string().contains("not listed for any tenant"),
            "{refused}"
        );
    }
}
