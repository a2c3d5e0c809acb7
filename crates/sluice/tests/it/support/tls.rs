//! A private CA made at test time, and the certificates tests hand to
//! sluice and Postfix (good, wrong-name, self-signed).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate and its key written as PEM files (readable by Postfix's
/// unprivileged daemons too).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that exists only for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (what `delivery.extra_ca` trusts).
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).expect("write CA certificate");
        path
    }

    /// A leaf for `names` (first one is also the CN), signed by this CA.
    pub fn leaf(&self, dir: &Path, file_stem: &str, names: &[&str]) -> CertFiles {
        let (params, key) = leaf_params(names);
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        write_pair(dir, file_stem, &cert.pem(), &key.serialize_pem())
    }

    /// A client certificate (clientAuth extended key usage) for `names`,
    /// signed by this CA: what an on-prem server presents to be identified.
    pub fn client_leaf(&self, dir: &Path, file_stem: &str, names: &[&str]) -> CertFiles {
        let (mut params, key) = leaf_params(names);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("sign client leaf");
        write_pair(dir, file_stem, &cert.pem(), &key.serialize_pem())
    }

    /// A certificate for `names` that no CA vouches for.
    pub fn self_signed(dir: &Path, file_stem: &str, names: &[&str]) -> CertFiles {
        let (params, key) = leaf_params(names);
        let cert = params.self_signed(&key).expect("self-sign");
        write_pair(dir, file_stem, &cert.pem(), &key.serialize_pem())
    }
}

fn leaf_params(names: &[&str]) -> (CertificateParams, KeyPair) {
    let sans: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.is_ca = IsCa::ExplicitNoCa;
    (params, KeyPair::generate().expect("leaf key"))
}

fn write_pair(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, cert_pem).expect("write certificate");
    std::fs::write(&files.key, key_pem).expect("write key");
    files
}
