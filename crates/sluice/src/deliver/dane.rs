//! DANE for SMTP (RFC 7672): which TLSA records are usable, and the
//! certificate verifier that requires the server to match one of them.
//!
//! Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (RFC 7672 section
//! 3.1); PKIX usages would need the web PKI the protocol exists to avoid.
//! DANE-EE binds the key itself: names and dates of the certificate are not
//! read (RFC 7672 3.1.1). DANE-TA names an issuer that must appear in the
//! presented chain; the end-entity certificate must chain to it and carry
//! the MX host name (RFC 7672 3.1.2 and 3.2.3).

use crate::dns::Tlsa;
use ring::digest;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, RootCertStore};

const DANE_TA: u8 = 2;
const DANE_EE: u8 = 3;

/// Whether `record` can authenticate an SMTP server (RFC 7672 3.1).
pub fn usable(record: &Tlsa) -> bool {
    matches!(record.usage, DANE_TA | DANE_EE) && record.selector <= 1 && record.matching <= 2
}

/// The association data `certificate` would have under `selector` and
/// `matching` (RFC 6698 2.1.2 and 2.1.3); `None` for values we cannot
/// compute (never a match).
fn association(certificate: &[u8], selector: u8, matching: u8) -> Option<Vec<u8>> {
    let selected = match selector {
        0 => certificate.to_vec(),
        1 => {
            let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
            parsed.tbs_certificate.subject_pki.raw.to_vec()
        }
        _ => return None,
    };
    match matching {
        0 => Some(selected),
        1 => Some(digest::digest(&digest::SHA256, &selected).as_ref().to_vec()),
        2 => Some(digest::digest(&digest::SHA512, &selected).as_ref().to_vec()),
        _ => None,
    }
}

/// Whether `certificate` matches `record`'s association data.
pub(super) fn matches(record: &Tlsa, certificate: &[u8]) -> bool {
    association(certificate, record.selector, record.matching).is_some_and(|data| data == record.data)
}

/// Whether a server presenting `chain` (end entity first) would satisfy
/// one of `records` by data alone: DANE-EE on the end entity, DANE-TA on
/// a certificate after it (`domain check`'s view; the chain and name
/// checks of DANE-TA happen at delivery).
pub fn chain_matches(records: &[Tlsa], chain: &[CertificateDer<'_>]) -> bool {
    records
        .iter()
        .filter(|record| usable(record))
        .any(|record| match record.usage {
            DANE_EE => chain.first().is_some_and(|cert| matches(record, cert)),
            _ => chain.iter().skip(1).any(|cert| matches(record, cert)),
        })
}

/// Checks a server's certificate against the usable TLSA records of its MX
/// host (the handshake signatures are checked by the caller's verifier).
/// With no usable record (published but all unusable), any certificate is
/// accepted: TLS is still mandatory (RFC 7672 2.2).
pub(super) fn verify(
    records: &[Tlsa],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), rustls::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let end_entity_matches = records
        .iter()
        .any(|record| record.usage == DANE_EE && matches(record, end_entity));
    // DANE-TA: a certificate of the presented chain that a record names,
    // which the end entity chains to and which carries the name.
    let mut anchors = records
        .iter()
        .filter(|record| record.usage == DANE_TA)
        .flat_map(|record| intermediates.iter().filter(move |cert| matches(record, cert)));
    let anchored = |anchor: &CertificateDer<'_>| {
        let mut roots = RootCertStore::empty();
        let Ok(parsed) = ParsedCertificate::try_from(end_entity) else {
            return false;
        };
        roots.add(anchor.clone().into_owned()).is_ok()
            && rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                intermediates,
                now,
                algorithms.all,
            )
            .is_ok()
            && rustls::client::verify_server_name(&parsed, server_name).is_ok()
    };
    if end_entity_matches || anchors.any(anchored) {
        return Ok(());
    }
    Err(rustls::Error::InvalidCertificate(
        CertificateError::ApplicationVerificationFailure,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn certificate() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mx.dane.test".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn every_selector_and_matching_type_matches_its_own_certificate() {
        let cert = certificate();
        for selector in 0..=1 {
            for matching in 0..=2 {
                let data = association(&cert, selector, matching).unwrap();
                assert!(matches(&record(3, selector, matching, data), &cert));
            }
        }
        let spki = association(&cert, 1, 0).unwrap();
        assert!(spki.len() < cert.len(), "SPKI is part of the certificate");
        assert_eq!(association(&cert, 1, 1).unwrap().len(), 32);
        assert_eq!(association(&cert, 0, 2).unwrap().len(), 64);
    }

    #[test]
    fn another_certificate_does_not_match() {
        let (cert, other) = (certificate(), certificate());
        let data = association(&other, 1, 1).unwrap();
        assert!(!matches(&record(3, 1, 1, data), &cert));
    }

    #[test]
    fn pkix_usages_and_unknown_parameters_are_unusable() {
        assert!(usable(&record(3, 1, 1, vec![])));
        assert!(usable(&record(2, 0, 2, vec![])));
        assert!(!usable(&record(1, 1, 1, vec![])));
        assert!(!usable(&record(0, 1, 1, vec![])));
        assert!(!usable(&record(3, 2, 1, vec![])));
        assert!(!usable(&record(3, 1, 3, vec![])));
        assert_eq!(association(&certificate(), 1, 9), None);
    }
}
