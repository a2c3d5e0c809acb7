//! Outbound TLS levels as rustls client configurations, and the replies
//! that explain a level that could not be met.
//!
//! One config per way of judging a certificate, built once:
//! - any certificate (`Opportunistic`, `EncryptionOnly`): the handshake's
//!   signatures are still checked, the certificate is not judged;
//! - chain only (`CertificateValidation`): the chain must end in a trust
//!   root (webpki-roots plus `delivery.extra_ca`), the names are not read;
//! - chain and name (`DomainValidation`): rustls' webpki verifier with the
//!   required name as the server name (RFC 6125 wildcards).

use super::DeliverError;
use crate::dns::Tlsa;
use crate::message::Reply;
use crate::route::TlsPolicy;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The three client configurations, by how a certificate is judged.
#[derive(Debug, Clone)]
pub(super) struct TlsConfigs {
    any_certificate: Arc<ClientConfig>,
    chain_only: Arc<ClientConfig>,
    chain_and_name: Arc<ClientConfig>,
    /// Chain and name, no client certificate: MTA-STS policy fetches.
    pub(super) https: Arc<ClientConfig>,
    /// The verifiers behind the three configs, by level (MTA-STS
    /// `testing` wraps them).
    verifiers: [Arc<dyn ServerCertVerifier>; 3],
    /// For the per-host configs DANE builds from TLSA records.
    provider: Arc<CryptoProvider>,
    identity: Option<Identity>,
}

impl TlsConfigs {
    /// Builds the configs; `client_certificate` (cert chain PEM, key PEM)
    /// is presented to servers that ask, so peers can identify this node.
    pub(super) fn new(
        extra_ca: Option<&Path>,
        client_certificate: Option<&(PathBuf, PathBuf)>,
    ) -> Result<Self, DeliverError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(trust_roots(extra_ca)?);
        let algorithms = provider.signature_verification_algorithms;
        let identity = client_certificate
            .map(|(cert, key)| load_identity(cert, key))
            .transpose()?;

        let any: Arc<dyn ServerCertVerifier> = Arc::new(CheckingVerifier {
            check: CertificateCheck::None,
            algorithms,
        });
        let chain: Arc<dyn ServerCertVerifier> = Arc::new(CheckingVerifier {
            check: CertificateCheck::TrustAnchors(roots.clone()),
            algorithms,
        });
        let named: Arc<dyn ServerCertVerifier> =
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|error| DeliverError::Tls(error.to_string()))?;
        Ok(TlsConfigs {
            any_certificate: client_config(&provider, any.clone(), identity.clone())?,
            chain_only: client_config(&provider, chain.clone(), identity.clone())?,
            chain_and_name: client_config(&provider, named.clone(), identity.clone())?,
            https: client_config(&provider, named.clone(), None)?,
            verifiers: [any, chain, named],
            provider,
            identity,
        })
    }

    /// A config judging by `policy` that records what MTA-STS `enforce`
    /// would say of the certificate for `mx_host`.
    fn observing(
        &self,
        policy: &TlsPolicy,
        mx_host: &str,
        observation: &Observation,
    ) -> Result<Arc<ClientConfig>, DeliverError> {
        let [any, chain, named] = &self.verifiers;
        let lenient = match policy {
            TlsPolicy::Opportunistic | TlsPolicy::EncryptionOnly => any.clone(),
            TlsPolicy::CertificateValidation => chain.clone(),
            TlsPolicy::DomainValidation { .. } => named.clone(),
        };
        let mx_host = ServerName::try_from(mx_host.to_string())
            .map_err(|_| DeliverError::Tls(format!("{mx_host:?} is not a server name")))?;
        // A new handshake: forget what an earlier address's said.
        if let Ok(mut observed) = observation.0.lock() {
            *observed = None;
        }
        let verifier = Arc::new(ObservingVerifier {
            lenient,
            strict: named.clone(),
            mx_host,
            observation: observation.clone(),
        });
        client_config(&self.provider, verifier, self.identity.clone())
    }

    /// A config that accepts only a server matching `records` (DANE).
    fn for_tlsa(&self, records: &Arc<Vec<Tlsa>>) -> Result<Arc<ClientConfig>, DeliverError> {
        let verifier = Arc::new(CheckingVerifier {
            check: CertificateCheck::Dane(records.clone()),
            algorithms: self.provider.signature_verification_algorithms,
        });
        client_config(&self.provider, verifier, self.identity.clone())
    }

    /// The config that enforces `policy`.
    pub(super) fn for_policy(&self, policy: &TlsPolicy) -> Arc<ClientConfig> {
        match policy {
            TlsPolicy::Opportunistic | TlsPolicy::EncryptionOnly => self.any_certificate.clone(),
            TlsPolicy::CertificateValidation => self.chain_only.clone(),
            TlsPolicy::DomainValidation { .. } => self.chain_and_name.clone(),
        }
    }
}

/// How one host's TLS is judged on an attempt: the route's level, or a
/// policy the destination publishes (SPEC section 10: DANE, else MTA-STS,
/// else the connector's level).
#[derive(Debug, Clone)]
pub(super) enum PeerTls {
    /// The route's level (connector, or opportunistic for plain MX).
    Level(TlsPolicy),
    /// DANE: TLS required and the certificate must match one of these
    /// usable TLSA records (none: TLS required, any certificate).
    Dane(Arc<Vec<Tlsa>>),
    /// MTA-STS `enforce`: TLS required, a chain to the trust roots and the
    /// MX host's name.
    MtaSts,
    /// MTA-STS `testing`: the route's level applies; what `enforce` would
    /// have refused is observed, for TLS-RPT.
    MtaStsTesting(TlsPolicy, Observation),
}

/// What an MTA-STS `testing` handshake would have failed on under
/// `enforce` (the certificate's chain or name), recorded by the verifier.
#[derive(Debug, Clone, Default)]
pub(super) struct Observation(Arc<std::sync::Mutex<Option<rustls::Error>>>);

impl Observation {
    /// The recorded failure, as an RFC 8460 result type.
    pub(super) fn failure(&self) -> Option<mail_auth::report::tlsrpt::ResultType> {
        let error = self.0.lock().ok()?.clone()?;
        Some(result_type(&error, false))
    }
}

/// The RFC 8460 result type of a certificate rejection.
fn result_type(error: &rustls::Error, dane: bool) -> mail_auth::report::tlsrpt::ResultType {
    use mail_auth::report::tlsrpt::ResultType;
    match error {
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure) if dane => {
            ResultType::TlsaInvalid
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => ResultType::CertificateHostMismatch,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => ResultType::CertificateExpired,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            ResultType::CertificateNotTrusted
        }
        _ => ResultType::ValidationFailure,
    }
}

/// Judges a certificate by the route's level (`lenient`) while recording
/// what MTA-STS `enforce` (`strict`, for `mx_host`) would have said.
#[derive(Debug)]
struct ObservingVerifier {
    lenient: Arc<dyn ServerCertVerifier>,
    strict: Arc<dyn ServerCertVerifier>,
    mx_host: ServerName<'static>,
    observation: Observation,
}

impl ServerCertVerifier for ObservingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(error) =
            self.strict
                .verify_server_cert(end_entity, intermediates, &self.mx_host, ocsp_response, now)
        {
            if let Ok(mut observed) = self.observation.0.lock() {
                *observed = Some(error);
            }
        }
        self.lenient
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.lenient.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.lenient.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.lenient.supported_verify_schemes()
    }
}

impl PeerTls {
    /// Whether clear text is forbidden.
    pub(super) fn requires_tls(&self) -> bool {
        match self {
            PeerTls::Level(policy) | PeerTls::MtaStsTesting(policy, _) => policy.requires_tls(),
            PeerTls::Dane(_) | PeerTls::MtaSts => true,
        }
    }

    /// What the trace calls it (`tls=NAME`).
    pub(super) fn name(&self) -> &'static str {
        match self {
            PeerTls::Level(policy) => policy.name(),
            PeerTls::Dane(_) => "dane",
            PeerTls::MtaSts => "mta-sts",
            PeerTls::MtaStsTesting(..) => "mta-sts-testing",
        }
    }

    /// What a cached connection must have been opened under to be reused.
    pub(super) fn pool_label(&self) -> String {
        match self {
            PeerTls::Level(policy) | PeerTls::MtaStsTesting(policy, _) => format!("{policy:?}"),
            PeerTls::Dane(records) => format!("dane{:?}", records.as_slice()),
            PeerTls::MtaSts => "mta-sts".to_string(),
        }
    }

    /// The rustls config that enforces this.
    pub(super) fn client_config(
        &self,
        configs: &TlsConfigs,
        host: &str,
        peer: &str,
    ) -> Result<Arc<ClientConfig>, Reply> {
        match self {
            PeerTls::MtaStsTesting(policy, observation) => configs
                .observing(policy, host, observation)
                .map_err(|error| Reply::new(454, [4, 7, 5], format!("TLS with {peer}: {error}"))),
            PeerTls::Level(policy) => Ok(configs.for_policy(policy)),
            PeerTls::MtaSts => Ok(configs.chain_and_name.clone()),
            PeerTls::Dane(records) => configs
                .for_tlsa(records)
                .map_err(|error| Reply::new(454, [4, 7, 5], format!("DANE with {peer}: {error}"))),
        }
    }

    /// The name given to the handshake (SNI, and the name checked).
    pub(super) fn server_name(&self, host: &str) -> Result<ServerName<'static>, Reply> {
        match self {
            PeerTls::Level(policy) | PeerTls::MtaStsTesting(policy, _) => server_name(policy, host),
            PeerTls::Dane(_) | PeerTls::MtaSts => server_name(&TlsPolicy::Opportunistic, host),
        }
    }

    /// The reply when TLS is required and the host offers no STARTTLS.
    pub(super) fn starttls_missing(&self, peer: &str) -> Reply {
        match self {
            PeerTls::Level(policy) | PeerTls::MtaStsTesting(policy, _) => {
                starttls_missing_reply(policy, peer)
            }
            PeerTls::Dane(_) | PeerTls::MtaSts => Reply::new(
                454,
                [4, 7, 5],
                format!(
                    "TLS required ({}) but {peer} does not offer STARTTLS",
                    self.name()
                ),
            ),
        }
    }

    /// The reply when TLS is required and STARTTLS is refused.
    pub(super) fn starttls_refused(&self, peer: &str, reply: &Reply) -> Reply {
        match self {
            PeerTls::Level(policy) | PeerTls::MtaStsTesting(policy, _) => {
                starttls_refused_reply(policy, peer, reply)
            }
            PeerTls::Dane(_) | PeerTls::MtaSts => Reply::new(
                454,
                [4, 7, 5],
                format!(
                    "TLS required ({}) but {peer} refused STARTTLS: {reply}",
                    self.name()
                ),
            ),
        }
    }

    /// The RFC 8460 result type of a failed handshake (TLS-RPT).
    pub(super) fn failure_type(&self, error: &std::io::Error) -> mail_auth::report::tlsrpt::ResultType {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls_error) => result_type(tls_error, matches!(self, PeerTls::Dane(_))),
            None => mail_auth::report::tlsrpt::ResultType::ValidationFailure,
        }
    }

    /// What MTA-STS `testing` observed `enforce` would have refused.
    pub(super) fn observed_failure(&self) -> Option<mail_auth::report::tlsrpt::ResultType> {
        match self {
            PeerTls::MtaStsTesting(_, observation) => observation.failure(),
            _ => None,
        }
    }

    /// The reply for a failed handshake under a required policy.
    pub(super) fn handshake_failure(&self, host: &str, peer: &str, error: &std::io::Error) -> Reply {
        match self {
            PeerTls::Level(policy) | PeerTls::MtaStsTesting(policy, _) => {
                handshake_failure_reply(policy, host, peer, error)
            }
            PeerTls::MtaSts => {
                let mut reply =
                    handshake_failure_reply(&TlsPolicy::DomainValidation { domain: None }, host, peer, error);
                reply.text = format!("MTA-STS policy (enforce): {}", reply.text);
                reply
            }
            PeerTls::Dane(records) => {
                let tls_error = error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                let text = match tls_error {
                    Some(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    )) => {
                        format!(
                            "DANE: certificate of {peer} matches none of the {} TLSA records of {host}",
                            records.len()
                        )
                    }
                    Some(other) => format!("DANE: TLS handshake with {peer} failed: {other}"),
                    None => format!("DANE: TLS handshake with {peer} failed: {error}"),
                };
                Reply::new(454, [4, 7, 5], text)
            }
        }
    }
}

/// The name given to the handshake: for `DomainValidation` the name the
/// certificate must carry (the policy's domain, else the host connected
/// to); otherwise the host, used only for SNI.
pub(super) fn server_name(policy: &TlsPolicy, host: &str) -> Result<ServerName<'static>, Reply> {
    let name = match policy {
        TlsPolicy::DomainValidation { domain: Some(domain) } => domain.as_str(),
        _ => host,
    };
    ServerName::try_from(name.to_string()).map_err(|_| {
        Reply::new(
            454,
            [4, 7, 5],
            format!("TLS: {name:?} is not a valid server name"),
        )
    })
}

/// The name a `DomainValidation` certificate must carry, for messages.
pub(super) fn required_name<'a>(policy: &'a TlsPolicy, host: &'a str) -> &'a str {
    match policy {
        TlsPolicy::DomainValidation { domain: Some(domain) } => domain,
        _ => host,
    }
}

/// The reply for a failed handshake: names the reason (certificate not
/// valid for the required name, untrusted chain, or the protocol error).
pub(super) fn handshake_failure_reply(
    policy: &TlsPolicy,
    host: &str,
    peer: &str,
    error: &std::io::Error,
) -> Reply {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let text = match tls_error {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "TLS certificate not valid for {} (peer {peer}, level {})",
            required_name(policy, host),
            policy.name()
        ),
        Some(rustls::Error::InvalidCertificate(reason)) => format!(
            "TLS certificate of {peer} not accepted ({}): {reason:?}",
            policy.name()
        ),
        Some(other) => format!("TLS handshake with {peer} failed: {other}"),
        None => format!("TLS handshake with {peer} failed: {error}"),
    };
    Reply::new(454, [4, 7, 5], text)
}

/// The reply when a required level meets a host without STARTTLS.
pub(super) fn starttls_missing_reply(policy: &TlsPolicy, peer: &str) -> Reply {
    Reply::new(
        454,
        [4, 7, 10],
        format!(
            "TLS required ({}) but {peer} does not offer STARTTLS",
            policy.name()
        ),
    )
}

/// The reply when a required level meets a refused STARTTLS.
pub(super) fn starttls_refused_reply(policy: &TlsPolicy, peer: &str, reply: &Reply) -> Reply {
    Reply::new(
        454,
        [4, 7, 10],
        format!(
            "TLS required ({}) but {peer} refused STARTTLS: {reply}",
            policy.name()
        ),
    )
}

fn trust_roots(extra_ca: Option<&Path>) -> Result<RootCertStore, DeliverError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let certs = read_certificates(path)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(DeliverError::Tls(format!(
                "{}: no usable CA certificate",
                path.display()
            )));
        }
    }
    Ok(roots)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, DeliverError> {
    crate::tls::load_certificates(path).map_err(|error| DeliverError::Tls(error.to_string()))
}

type Identity = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>);

fn load_identity(cert: &Path, key: &Path) -> Result<Identity, DeliverError> {
    let chain = read_certificates(cert)?;
    let key = crate::tls::load_private_key(key).map_err(|error| DeliverError::Tls(error.to_string()))?;
    Ok((chain, Arc::new(key)))
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, DeliverError> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| DeliverError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key.clone_key())
            .map_err(|error| DeliverError::Tls(error.to_string()))?,
    };
    Ok(Arc::new(config))
}

/// What a certificate must prove besides the handshake signatures, which
/// are always checked (so the session is encrypted to whoever holds the
/// presented key).
#[derive(Debug)]
enum CertificateCheck {
    /// Nothing (Exchange's `EncryptionOnly`, and opportunistic TLS).
    None,
    /// A chain to the trust roots, names ignored (`CertificateValidation`).
    TrustAnchors(Arc<RootCertStore>),
    /// DANE: a match with one of these usable TLSA records (`dane::verify`).
    Dane(Arc<Vec<Tlsa>>),
}

/// The verifier of what the web PKI verifier does not cover: the two
/// levels below `DomainValidation`, and DANE.
#[derive(Debug)]
struct CheckingVerifier {
    check: CertificateCheck,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CheckingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            CertificateCheck::None => {}
            CertificateCheck::TrustAnchors(roots) => {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                )?;
            }
            CertificateCheck::Dane(records) => {
                super::dane::verify(
                    records,
                    end_entity,
                    intermediates,
                    server_name,
                    now,
                    &self.algorithms,
                )?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
