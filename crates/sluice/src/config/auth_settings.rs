//! `[auth]` of `sluice.toml` (SPEC section 9): the settings the mail
//! authentication stage reads.

use serde::{Deserialize, Serialize};

/// `[auth]` in `sluice.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Refuse or hold DMARC failures as the sender's policy asks.
    pub dmarc_enforce: bool,
    /// ARC sealers (their `d=` domains) whose results this node trusts.
    pub trusted_arc_sealers: Vec<String>,
    /// Seal what this node relays, with the key of this domain and selector.
    pub arc_seal: Option<ArcSealIdentity>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            dmarc_enforce: true,
            trusted_arc_sealers: Vec::new(),
            arc_seal: None,
        }
    }
}

/// `arc_seal = { domain, selector }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcSealIdentity {
    /// `d=` of the seal.
    pub domain: String,
    /// `s=` of the seal.
    pub selector: String,
}
