//! DKIM keys (also ARC sealing keys): made by the node, kept in the store,
//! never printed or exported. What leaves is the public half as the DNS
//! TXT record to publish ([`KeyView`]).
//!
//! Rotation follows the two-selector practice: a domain's first key is
//! active at once; a second one is created inactive so its record can be
//! published first, then `activate` switches signing to it and the old
//! selector is retired with `remove` once no mail in flight needs it.

use crate::store::{Store, StoreError, Write};
use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// RSA modulus size of generated keys (RFC 8301 asks for at least 1024;
/// 2048 is what every verifier accepts and DNS still carries).
const RSA_BITS: usize = 2048;

/// Signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// Ed25519-SHA256 (RFC 8463): small keys, fast.
    #[default]
    Ed25519,
    /// RSA-SHA256, 2048 bits: understood by every verifier.
    Rsa,
}

impl KeyAlgorithm {
    /// `k=` of the DNS record.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa => "rsa",
        }
    }
}

/// A key as the store keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Signing domain (`d=`).
    pub domain: String,
    /// Selector (`s=`).
    pub selector: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// Private key, base64 DER (PKCS#8 for Ed25519, PKCS#1 for RSA).
    private_key: String,
    /// Public key as it goes in `p=`.
    pub public_key: String,
    /// Whether this selector signs the domain's mail.
    pub active: bool,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
}

impl std::fmt::Debug for StoredKey {
    // The private half never reaches a log, even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// Makes a new key pair.
    pub fn generate(domain: &str, selector: &str, algorithm: KeyAlgorithm) -> Result<StoredKey, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (private, public) = match algorithm {
            KeyAlgorithm::Ed25519 => {
                let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
                let key = Ed25519Key::from_pkcs8_der(&pkcs8).map_err(|e| e.to_string())?;
                (pkcs8, key.public_key())
            }
            KeyAlgorithm::Rsa => {
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                    .map_err(|e| e.to_string())?;
                let private = key.to_pkcs1_der().map_err(|e| e.to_string())?.as_bytes().to_vec();
                let public = rsa::RsaPublicKey::from(&key)
                    .to_public_key_der()
                    .map_err(|e| e.to_string())?
                    .as_bytes()
                    .to_vec();
                (private, public)
            }
        };
        Ok(StoredKey {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            selector: selector.to_ascii_lowercase(),
            algorithm,
            private_key: b64.encode(private),
            public_key: b64.encode(public),
            active: false,
            created_ms: crate::trace::now_ms(),
        })
    }

    /// The key mail-auth signs with.
    pub fn signing_key(&self) -> Result<DkimKey, String> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(&self.private_key)
            .map_err(|e| e.to_string())?;
        match self.algorithm {
            KeyAlgorithm::Ed25519 => Ed25519Key::from_pkcs8_der(&der)
                .map(DkimKey::Ed25519)
                .map_err(|e| e.to_string()),
            KeyAlgorithm::Rsa => RsaKey::<Sha256>::from_key_der(rustls_pki_types::PrivateKeyDer::Pkcs1(
                rustls_pki_types::PrivatePkcs1KeyDer::from(der.as_slice()),
            ))
            .map(DkimKey::Rsa)
            .map_err(|e| e.to_string()),
        }
    }

    /// `SELECTOR._domainkey.DOMAIN`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish.
    pub fn record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm.as_str(), self.public_key)
    }

    /// What the API and CLI show.
    pub fn view(&self) -> KeyView {
        KeyView {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            algorithm: self.algorithm,
            active: self.active,
            created_ms: self.created_ms,
            record_name: self.record_name(),
            record: self.record(),
            published: None,
        }
    }
}

/// A key without its private half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Signing domain.
    pub domain: String,
    /// Selector.
    pub selector: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// Signs the domain's mail.
    pub active: bool,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
    /// Where the record goes: `SELECTOR._domainkey.DOMAIN`.
    pub record_name: String,
    /// The TXT record's text.
    pub record: String,
    /// Whether DNS publishes this public key (`GET /dkim/{domain}` only:
    /// the lookup is made when asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
}

/// The `p=` tag of a DKIM key record, whitespace removed (so spacing and
/// tag order never make two records of one key differ).
pub fn public_key_of(record: &str) -> Option<String> {
    record.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        (name.trim() == "p").then(|| value.split_whitespace().collect())
    })
}

/// `POST /api/v1/dkim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// Signing domain.
    pub domain: String,
    /// Selector (default `selector1`, or `selector2` when that exists).
    #[serde(default)]
    pub selector: Option<String>,
    /// `ed25519` (default) or `rsa`.
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
}

/// Why a key operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such key.
    #[error("no DKIM key {0}")]
    NotFound(String),
    /// Already there.
    #[error("DKIM key {0} already exists")]
    Conflict(String),
    /// Key generation failed.
    #[error("cannot generate the key: {0}")]
    Generate(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's keys: the store's copy, read once and kept in memory.
pub struct Keyring {
    store: Arc<dyn Store>,
    resolver: Option<Arc<dyn crate::dns::Resolver>>,
    keys: RwLock<Vec<StoredKey>>,
    writes: tokio::sync::Mutex<()>,
}

fn valid_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

impl Keyring {
    /// Loads the stored keys; `resolver` answers whether DNS publishes them.
    pub fn load(
        store: Arc<dyn Store>,
        resolver: Option<Arc<dyn crate::dns::Resolver>>,
    ) -> Result<Keyring, StoreError> {
        let keys = store.dkim_keys()?;
        Ok(Keyring {
            store,
            resolver,
            keys: RwLock::new(keys),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the stored keys again: another node sharing the store
    /// changed them.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        let keys = self.store.dkim_keys()?;
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
        Ok(())
    }

    fn read(&self) -> Vec<StoredKey> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Every key, by domain then selector.
    pub fn list(&self) -> Vec<KeyView> {
        let mut keys: Vec<KeyView> = self.read().iter().map(StoredKey::view).collect();
        keys.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
        keys
    }

    /// Whether DNS publishes `key`'s public half at its record name
    /// (`None`: no resolver, or no answer within 3 seconds).
    pub async fn published(&self, key: &KeyView) -> Option<bool> {
        let resolver = self.resolver.as_ref()?;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(3), resolver.txt(&key.record_name))
            .await
            .ok()?
            .ok()?;
        let wanted = public_key_of(&key.record);
        Some(answer.iter().any(|text| public_key_of(text) == wanted))
    }

    /// The key signing `domain`'s mail.
    pub fn active(&self, domain: &str) -> Option<StoredKey> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.keys
            .read()
            .ok()?
            .iter()
            .find(|k| k.active && k.domain == domain)
            .cloned()
    }

    /// One key.
    pub fn find(&self, domain: &str, selector: &str) -> Option<StoredKey> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.keys
            .read()
            .ok()?
            .iter()
            .find(|k| k.domain == domain && k.selector.eq_ignore_ascii_case(selector))
            .cloned()
    }

    async fn change(
        &self,
        edit: impl FnOnce(&mut Vec<StoredKey>) -> Result<(), KeyError>,
    ) -> Result<(), KeyError> {
        let _writing = self.writes.lock().await;
        // The stored keys, not this node's copy: another node sharing the
        // store may have changed them since it was read.
        let _cluster = crate::store::hold_configuration(&self.store).await?;
        let mut keys = self.store.dkim_keys()?;
        edit(&mut keys)?;
        self.store.commit(vec![Write::DkimKeys(keys.clone())]).await?;
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
        Ok(())
    }

    /// Makes a key for `domain`; the domain's first key is active at once.
    pub async fn create(&self, request: &NewKeyRequest) -> Result<KeyView, KeyError> {
        let domain = request.domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || !domain.split('.').all(valid_label) {
            return Err(KeyError::Invalid(format!(
                "{:?} is not a domain name",
                request.domain
            )));
        }
        let existing: Vec<StoredKey> = self.read().into_iter().filter(|k| k.domain == domain).collect();
        let selector = match &request.selector {
            Some(s) => s.to_ascii_lowercase(),
            None if existing.iter().any(|k| k.selector == "selector1") => "selector2".to_string(),
            None => "selector1".to_string(),
        };
        if !valid_label(&selector) {
            return Err(KeyError::Invalid(format!(
                "selector {selector:?} must be one DNS label (letters, digits, hyphens)"
            )));
        }
        let algorithm = request.algorithm;
        let name = format!("{selector}._domainkey.{domain}");
        // RSA generation takes a noticeable moment: off the async workers.
        let (d, s) = (domain.clone(), selector.clone());
        let mut key = tokio::task::spawn_blocking(move || StoredKey::generate(&d, &s, algorithm))
            .await
            .map_err(|e| KeyError::Generate(e.to_string()))?
            .map_err(KeyError::Generate)?;
        let mut view = None;
        self.change(|keys| {
            if keys.iter().any(|k| k.domain == domain && k.selector == selector) {
                return Err(KeyError::Conflict(name));
            }
            key.active = !keys.iter().any(|k| k.domain == domain);
            view = Some(key.view());
            keys.push(key);
            Ok(())
        })
        .await?;
        view.ok_or_else(|| KeyError::Generate("no key".into()))
    }

    /// Makes `selector` the one that signs its domain's mail.
    pub async fn activate(&self, domain: &str, selector: &str) -> Result<(), KeyError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let selector = selector.to_ascii_lowercase();
        self.change(|keys| {
            if !keys.iter().any(|k| k.domain == domain && k.selector == selector) {
                return Err(KeyError::NotFound(format!("{selector}._domainkey.{domain}")));
            }
            for k in keys.iter_mut().filter(|k| k.domain == domain) {
                k.active = k.selector == selector;
            }
            Ok(())
        })
        .await
    }

    /// Retires a key. The active key goes only when it is the domain's
    /// last (otherwise mail would silently stop being signed).
    pub async fn remove(&self, domain: &str, selector: &str) -> Result<(), KeyError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let selector = selector.to_ascii_lowercase();
        self.change(|keys| {
            let Some(index) = keys
                .iter()
                .position(|k| k.domain == domain && k.selector == selector)
            else {
                return Err(KeyError::NotFound(format!("{selector}._domainkey.{domain}")));
            };
            let others = keys.iter().filter(|k| k.domain == domain).count() - 1;
            if keys[index].active && others > 0 {
                return Err(KeyError::Invalid(format!(
                    "{selector}._domainkey.{domain} is the active key; activate another selector first"
                )));
            }
            keys.remove(index);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_the_public_half_only() {
        let key = StoredKey::generate("Contoso.test.", "s1", KeyAlgorithm::Ed25519).expect("key");
        assert_eq!(key.record_name(), "s1._domainkey.contoso.test");
        assert!(key.record().starts_with("v=DKIM1; k=ed25519; p="));
        let view = serde_json::to_string(&key.view()).expect("json");
        assert!(!view.contains(&key.private_key));
        assert!(!format!("{key:?}").contains(&key.private_key));
        key.signing_key().expect("usable");
    }

    #[test]
    fn rsa_keys_are_2048_bits_in_subject_public_key_info() {
        let key = StoredKey::generate("contoso.test", "s2", KeyAlgorithm::Rsa).expect("key");
        assert!(key
            .record()
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
        key.signing_key().expect("usable");
    }
}
