//! Server-side TLS for SMTP (STARTTLS): the node's certificate and the
//! client-certificate request used to identify inbound connectors.
//!
//! Contract: [`server_config`] always yields a usable configuration. With no
//! certificate configured, a self-signed one for the node's hostname is
//! generated on first start under `data_dir/tls/` and reused afterwards, so
//! the node's identity is stable across restarts. Every handshake asks for a
//! client certificate but never requires one; a certificate that is
//! presented must chain to `client_ca` (or the public web roots when unset),
//! so any certificate seen after a completed handshake has been verified and
//! [`certificate_names`] may be trusted for connector matching.
//!
//! Crypto comes from rustls' ring provider, never a process-wide default.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be loaded.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A CA file holds no certificate usable as a trust root.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// The generated certificate could not be stored.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// rcgen failed to make the self-signed certificate.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A client CA certificate was rejected as a trust anchor.
    #[error("client CA {path}: {source}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a PEM file gave no certificate chain or key: the one error of the
/// node's one PEM loader ([`load_certificates`], [`load_private_key`]), for
/// the SMTP server's certificate, the client CA, outbound TLS and
/// `domain check` alike.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read or decoded.
    #[error("cannot read PEM file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
}

/// The certificates of a PEM file, in file order (a chain: leaf first; or
/// a set of CA certificates). A file without any is an error.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read_error = |source| PemError::Read {
        path: path.to_path_buf(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if chain.is_empty() {
        return Err(PemError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The crypto provider used by every TLS configuration of the node (ring),
/// with AES-128-GCM/SHA-256 preferred. It is as sound for mail as
/// AES-256-GCM/SHA-384 and cheaper on every connection: the handshake's
/// key schedule hashes with SHA-256, which x86 and ARM CPUs run in
/// hardware (SHA-384 they do not), and AES-128 takes fewer rounds per
/// record.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| !matches!(suite.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    Arc::new(provider)
}

/// Builds the SMTP server's TLS configuration.
///
/// `cert` is `(certificate chain PEM, private key PEM)`; when `None`, the
/// self-signed certificate in `data_dir/tls/` is used, generated for
/// `hostname` if it does not exist yet. `client_ca` holds the trust roots for
/// client certificates (the web PKI roots when `None`).
pub fn server_config(
    cert: Option<(&Path, &Path)>,
    client_ca: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> Result<ServerTls, TlsError> {
    let (chain, key) = match cert {
        Some((cert_path, key_path)) => (load_certificates(cert_path)?, load_private_key(key_path)?),
        None => self_signed(data_dir, hostname)?,
    };
    let roots = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certificates(path)? {
                roots.add(cert).map_err(|source| TlsError::ClientCa {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            roots
        }
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = provider();
    let mut chain_verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated();
    if client_ca.is_none() {
        // The web PKI's ~150 root names would add some 15 KB to every full
        // handshake's CertificateRequest, and tell a client nothing: an MTA
        // with a certificate configured sends it whatever the list says
        // (the list is a hint, RFC 8446 4.2.4). An administrator's own CA
        // is still named.
        chain_verifier = chain_verifier.clear_root_hint_subjects();
    }
    let chain_verifier = chain_verifier.build()?;
    let clients = Arc::new(ClientCertificates { chain_verifier });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients.clone())
        .with_single_cert(chain, key)?;
    // The node's preference decides (the cheaper suite above, every suite
    // offered being sound), as it does for most servers' configurations.
    config.ignore_client_order = true;
    // Stateless tickets (keys rotated every 6 hours, never stored): an MTA
    // that returns resumes without the certificate's signature and its
    // check, however many clients came in between. The stateful cache
    // rustls keeps by default holds only the last 256.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(ServerTls {
        config: Arc::new(config),
        clients,
    })
}

/// Checks the node's TLS files without starting anything (`check-config`):
/// the server certificate and key load and belong together, and the client
/// CA and the outbound extra CA each hold a usable certificate. A missing
/// or unreadable file is named with the reason.
pub fn check_files(
    cert: Option<(&Path, &Path)>,
    client_ca: Option<&Path>,
    extra_ca: Option<&Path>,
) -> Result<(), TlsError> {
    match cert {
        // data_dir and hostname only matter for the self-signed pair.
        Some(cert) => drop(server_config(Some(cert), client_ca, Path::new("."), "localhost")?),
        None => {
            if let Some(path) = client_ca {
                let mut roots = RootCertStore::empty();
                for cert in load_certificates(path)? {
                    roots.add(cert).map_err(|source| TlsError::ClientCa {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
            }
        }
    }
    if let Some(path) = extra_ca {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(load_certificates(path)?);
        if added == 0 {
            return Err(TlsError::NoCertificate(path.to_path_buf()));
        }
    }
    Ok(())
}

/// The server side of STARTTLS: the rustls configuration and the client
/// certificate check that decides whether a certificate identifies anyone.
#[derive(Clone)]
pub struct ServerTls {
    /// For the acceptor.
    pub config: Arc<ServerConfig>,
    /// For identifying the client after the handshake.
    pub clients: Arc<ClientCertificates>,
}

/// Client certificates are asked for, never required, and never a reason
/// to fail the handshake: a certificate that does not chain to the client
/// CA simply identifies nothing (SPEC section 4), so a peer such as Postfix
/// with an unknown certificate still gets TLS. The handshake signatures are
/// still checked, so a certificate that verifies was proven by its key.
#[derive(Debug)]
pub struct ClientCertificates {
    chain_verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCertificates {
    /// The names of the client's certificate when its chain verifies to
    /// the trust roots; empty otherwise.
    pub fn verified_names(&self, chain: &[CertificateDer<'_>]) -> Vec<String> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Vec::new();
        };
        match self
            .chain_verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
        {
            Ok(_) => certificate_names(end_entity),
            Err(error) => {
                tracing::info!(error = %error, "client certificate does not verify; it identifies nothing");
                Vec::new()
            }
        }
    }
}

impl ClientCertVerifier for ClientCertificates {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain_verifier.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain_verifier.supported_verify_schemes()
    }
}

/// The names a certificate identifies: its DNS subject alternative names,
/// or its subject common name(s) when it has no DNS SAN. Empty when the
/// certificate cannot be parsed.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let dns_names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !dns_names.is_empty() {
        return dns_names;
    }
    parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect()
}

/// Loads `data_dir/tls/self-signed.{crt,key}`, generating them first when
/// either is missing.
fn self_signed(
    data_dir: &Path,
    hostname: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    if !(cert_path.exists() && key_path.exists()) {
        let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])?;
        crate::private_dir::create_dir_all(&dir).map_err(|source| TlsError::Write {
            path: dir.clone(),
            source,
        })?;
        // The key first and private: a crash between the two writes leaves
        // no certificate, so the pair is regenerated rather than mismatched.
        write_atomically(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
        write_atomically(&cert_path, generated.cert.pem().as_bytes())?;
    }
    Ok((load_certificates(&cert_path)?, load_private_key(&key_path)?))
}

/// Writes a file readable by its owner only, through a temporary file and a
/// rename so that a reader never sees half of it.
fn write_atomically(path: &Path, content: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let write_error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(content).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_reused() {
        let data_dir = tempfile::tempdir().unwrap();
        server_config(None, None, data_dir.path(), "mx.contoso.test").unwrap();
        let cert_path = data_dir.path().join("tls/self-signed.crt");
        let first = std::fs::read(&cert_path).unwrap();
        server_config(None, None, data_dir.path(), "mx.contoso.test").unwrap();
        assert_eq!(std::fs::read(&cert_path).unwrap(), first);

        let chain = load_certificates(&cert_path).unwrap();
        assert_eq!(certificate_names(&chain[0]), vec!["mx.contoso.test"]);
        let mode = std::fs::metadata(data_dir.path().join("tls/self-signed.key"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .unwrap();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn configured_certificate_and_client_ca_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["gw.test".to_string()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        server_config(Some((&cert, &key)), Some(&cert), dir.path(), "gw.test").unwrap();
        assert!(!dir.path().join("tls").exists());

        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            server_config(Some((&missing, &key)), None, dir.path(), "gw.test"),
            Err(TlsError::Pem(PemError::Read { .. }))
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            server_config(Some((&empty, &key)), None, dir.path(), "gw.test"),
            Err(TlsError::Pem(PemError::NoCertificate(_)))
        ));
    }

    #[test]
    fn names_fall_back_to_the_common_name() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "relay.fabrikam.test");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_names(cert.der()),
            vec!["relay.fabrikam.test".to_string()]
        );
        assert!(certificate_names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }
}
