//! The vocabulary of a scan: which detector fired, how sure it is, and where.
//!
//! These types are the crate's stable surface: detector and confidence names are
//! the ones of SPEC.md section 7 (`credit_card`, `high`, `attachment:NAME`) and
//! round-trip through `as_str`/`FromStr`/serde so config files, API bodies and
//! `sluice scan` output share one spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind of sensitive data the scanner recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Payment card number (Luhn, issuer prefix and length).
    CreditCard,
    /// US social security number.
    UsSsn,
    /// International bank account number (country length, mod 97).
    Iban,
    /// US ABA routing transit number (3-7-1 checksum).
    AbaRouting,
    /// An email address (not `scheme://user@host` URL credentials).
    EmailAddress,
    /// A telephone number with `+`, a bracketed area code, or a keyword.
    PhoneNumber,
    /// AWS access key id (`AKIA...`).
    AwsAccessKey,
    /// AWS secret access key (40 characters near a key id or keyword).
    AwsSecretKey,
    /// GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// Slack token (`xoxb-`, `xoxp-`, ...).
    SlackToken,
    /// Stripe live secret or restricted key.
    StripeKey,
    /// Google API key (`AIza...`).
    GoogleApiKey,
    /// PEM private key block.
    PrivateKey,
    /// JSON Web Token.
    Jwt,
    /// A password or secret given after a keyword.
    Password,
    /// UK National Insurance number (`AB 12 34 56 C`, HMRC prefix rules).
    UkNino,
    /// Canadian Social Insurance Number (Luhn).
    CaSin,
    /// Spanish DNI / NIE (check letter, mod 23).
    EsDni,
    /// Indian Aadhaar number (Verhoeff check digit).
    InAadhaar,
    /// A date of birth after its label.
    DateOfBirth,
    /// Azure storage account key (88 base64 characters), as in a connection string.
    AzureStorageKey,
    /// GCP service-account key file (`private_key_id` of a service account JSON).
    GcpServiceAccount,
    /// OpenAI API key (`sk-...T3BlbkFJ...`, `sk-proj-...`).
    OpenaiKey,
    /// npm access token (`npm_...`).
    NpmToken,
    /// A high-entropy value after a key name (`api_key = ...`, `Bearer ...`).
    GenericSecret,
}

impl Detector {
    /// Every detector, in declaration order.
    pub const ALL: [Detector; 25] = [
        Detector::CreditCard,
        Detector::UsSsn,
        Detector::Iban,
        Detector::AbaRouting,
        Detector::EmailAddress,
        Detector::PhoneNumber,
        Detector::AwsAccessKey,
        Detector::AwsSecretKey,
        Detector::GithubToken,
        Detector::SlackToken,
        Detector::StripeKey,
        Detector::GoogleApiKey,
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::Password,
        Detector::UkNino,
        Detector::CaSin,
        Detector::EsDni,
        Detector::InAadhaar,
        Detector::DateOfBirth,
        Detector::AzureStorageKey,
        Detector::GcpServiceAccount,
        Detector::OpenaiKey,
        Detector::NpmToken,
        Detector::GenericSecret,
    ];

    /// The detector's name as used in config, headers and JSON (`credit_card`).
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::CreditCard => "credit_card",
            Detector::UsSsn => "us_ssn",
            Detector::Iban => "iban",
            Detector::AbaRouting => "aba_routing",
            Detector::EmailAddress => "email_address",
            Detector::PhoneNumber => "phone_number",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::AwsSecretKey => "aws_secret_key",
            Detector::GithubToken => "github_token",
            Detector::SlackToken => "slack_token",
            Detector::StripeKey => "stripe_key",
            Detector::GoogleApiKey => "google_api_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
            Detector::Password => "password",
            Detector::UkNino => "uk_nino",
            Detector::CaSin => "ca_sin",
            Detector::EsDni => "es_dni",
            Detector::InAadhaar => "in_aadhaar",
            Detector::DateOfBirth => "date_of_birth",
            Detector::AzureStorageKey => "azure_storage_key",
            Detector::GcpServiceAccount => "gcp_service_account",
            Detector::OpenaiKey => "openai_key",
            Detector::NpmToken => "npm_token",
            Detector::GenericSecret => "generic_secret",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Detector::ALL`] or not a confidence level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The string names no detector.
    #[error("unknown detector `{0}`")]
    Detector(String),
    /// The string names no confidence level.
    #[error("unknown confidence `{0}` (expected low, medium or high)")]
    Confidence(String),
    /// The string is not `subject`, `body` or `attachment:NAME`.
    #[error("unknown location `{0}` (expected subject, body or attachment:NAME)")]
    Location(String),
}

impl FromStr for Detector {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Detector::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| NameError::Detector(s.to_owned()))
    }
}

/// How sure a detector is. Ordered: `Low < Medium < High`.
///
/// The ladder follows Purview's model: `low` is the shape (and checksum where the
/// format has one) without supporting evidence, `medium` is a validated value,
/// `high` is a validated value with a keyword within 300 characters or an
/// intrinsically strong format. The per-detector rules are in the crate README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Shape only, no corroborating evidence.
    Low,
    /// Validated value.
    Medium,
    /// Validated value with corroborating evidence.
    High,
}

impl Confidence {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Confidence {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Confidence::Low),
            "medium" => Ok(Confidence::Medium),
            "high" => Ok(Confidence::High),
            _ => Err(NameError::Confidence(s.to_owned())),
        }
    }
}

/// Where in a message a finding was made.
///
/// Displayed (and serialised) as `subject`, `body` or `attachment:NAME`. Inside
/// archives and nested messages NAME is a `/`-separated path from the outermost
/// attachment (`attachment:docs.zip/q3.xlsx`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Location {
    /// The top-level message's Subject header.
    Subject,
    /// A body part of the top-level message (text or HTML).
    Body,
    /// An attachment, a file inside one, or a nested message.
    Attachment(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Subject => f.write_str("subject"),
            Location::Body => f.write_str("body"),
            Location::Attachment(name) => write!(f, "attachment:{name}"),
        }
    }
}

impl FromStr for Location {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "subject" => Ok(Location::Subject),
            "body" => Ok(Location::Body),
            _ => match s.strip_prefix("attachment:") {
                Some(name) => Ok(Location::Attachment(name.to_owned())),
                None => Err(NameError::Location(s.to_owned())),
            },
        }
    }
}

impl Serialize for Location {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One piece of sensitive data found by a detector.
///
/// `matched` is the exact text as it stands in the decoded part (after transfer
/// decoding and HTML-to-text), so it is itself sensitive: callers must keep it
/// out of logs, headers and traces (the crate never logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Which detector fired.
    pub detector: Detector,
    /// The exact matched text (serialised as `match`, as in SPEC.md section 7).
    #[serde(rename = "match")]
    pub matched: String,
    /// How sure the detector is.
    pub confidence: Confidence,
    /// Where the text was found.
    pub location: Location,
    /// The value is a published test value (a test card, the AWS documentation
    /// key, an example IBAN): reported and tagged so a policy can exclude it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_value: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Detector::ALL {
            assert_eq!(d.as_str().parse::<Detector>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", d.as_str()));
        }
        assert!("creditcard".parse::<Detector>().is_err());
        assert_eq!("high".parse::<Confidence>(), Ok(Confidence::High));
        assert!("HIGH".parse::<Confidence>().is_err());
        assert!(Confidence::Low < Confidence::Medium && Confidence::Medium < Confidence::High);
        assert_eq!(serde_json::to_string(&Confidence::Medium).unwrap(), "\"medium\"");
    }

    #[test]
    fn location_display_and_parse() {
        assert_eq!(Location::Subject.to_string(), "subject");
        assert_eq!(Location::Body.to_string(), "body");
        let a = Location::Attachment("a.zip/b.xlsx".into());
        assert_eq!(a.to_string(), "attachment:a.zip/b.xlsx");
        assert_eq!("attachment:a.zip/b.xlsx".parse::<Location>(), Ok(a));
        assert!("header".parse::<Location>().is_err());
    }

    #[test]
    fn finding_json_uses_match_key() {
        let f = Finding {
            detector: Detector::CreditCard,
            matched: "4111 1111 1111 1111".into(),
            confidence: Confidence::High,
            location: Location::Body,
            test_value: false,
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"detector":"credit_card","match":"4111 1111 1111 1111","confidence":"high","location":"body"}"#
        );
        let back: Finding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }
}
