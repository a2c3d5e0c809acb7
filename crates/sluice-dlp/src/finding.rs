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
    /// A detector defined by the administrator or an exact-data-match set;
    /// its name is [`Finding::name`]. Not in [`Detector::ALL`] and never parsed.
    Custom,
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
            Detector::Custom => "custom",
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
    /// The name of a custom or exact-data-match detector (`detector` is then
    /// [`Detector::Custom`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<std::sync::Arc<str>>,
}

impl Finding {
    /// The detector's name: a built-in's (`credit_card`) or a custom one's.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.detector.as_str())
    }

    /// The match with the sensitive part hidden, for display: digits kept at
    /// the ends only (`4111 **** **** 1111`, `***-**-1234`), tokens cut to
    /// their vendor prefix and a few characters (`ghp_Xq7L****`), passwords
    /// and dates of birth hidden whole. Separators stay, so the shape reads.
    pub fn masked(&self) -> String {
        mask(self.detector, &self.matched)
    }
}

/// Keep the first `head` and last `tail` letters and digits of `s`, replace
/// the others with `*`; other characters (separators) stay.
fn mask_alnum(s: &str, head: usize, tail: usize) -> String {
    let total = s.chars().filter(char::is_ascii_alphanumeric).count();
    // Never show more than half of the characters.
    let (head, tail) = if head + tail > total / 2 {
        (0, (total / 2).min(tail))
    } else {
        (head, tail)
    };
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if !c.is_ascii_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen <= head || seen > total - tail {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// A token's vendor prefix (`ghp_`, `sk_live_`, `xoxb-`, `AKIA`, `sk-proj-`).
fn token_prefix(d: Detector, s: &str) -> usize {
    match d {
        Detector::AwsAccessKey => 4,
        Detector::Jwt => 3,
        _ => s
            .char_indices()
            .take(16)
            .filter(|&(_, c)| c == '_' || c == '-')
            .last()
            .map_or(0, |(i, _)| i + 1),
    }
}

/// See [`Finding::masked`].
pub fn mask(detector: Detector, matched: &str) -> String {
    use Detector::*;
    match detector {
        CreditCard | Iban => mask_alnum(matched, 4, 4),
        UsSsn | AbaRouting | PhoneNumber | CaSin | InAadhaar | UkNino | EsDni | Custom => {
            mask_alnum(matched, 0, 4)
        }
        DateOfBirth => mask_alnum(matched, 0, 0),
        // Neither length nor symbols of a password are shown.
        Password => "********".into(),
        EmailAddress => match matched.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "****".into(),
        },
        PrivateKey => {
            let header = matched.split_once("-----\n").map_or(matched, |(h, _)| h);
            let header = header.split_once('\n').map_or(header, |(h, _)| h);
            format!("{}-----****", header.trim_end_matches('-'))
        }
        _ => {
            let prefix = token_prefix(detector, matched);
            let rest = matched.len() - prefix;
            // At most 4 characters of the secret part, and never a quarter of it.
            let shown = (rest / 4).min(4);
            let cut = prefix + shown;
            let cut = (0..=cut)
                .rev()
                .find(|&i| matched.is_char_boundary(i))
                .unwrap_or(0);
            format!("{}****", &matched[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_shape_not_the_value() {
        use Detector::*;
        assert_eq!(mask(CreditCard, "4111 1111 1111 1111"), "4111 **** **** 1111");
        assert_eq!(mask(CreditCard, "4111111111111111"), "4111********1111");
        assert_eq!(mask(UsSsn, "536-22-1234"), "***-**-1234");
        assert_eq!(
            mask(Iban, "DE89 3704 0044 0532 0130 00"),
            "DE89 **** **** **** **30 00"
        );
        assert_eq!(mask(PhoneNumber, "+44 20 7946 0958"), "+** ** **** 0958");
        assert_eq!(mask(DateOfBirth, "12 March 1985"), "** ***** ****");
        assert_eq!(mask(Password, "Tr0ub4dor&3"), "********");
        assert_eq!(mask(EmailAddress, "jane.doe@example.com"), "j***@example.com");
        assert_eq!(
            mask(StripeKey, "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            "sk_live_4eC3****"
        );
        assert_eq!(
            mask(GithubToken, "ghp_Xq7Lm2Rt9Vb4Nc8Kp3Ws6Hd1Fg5Jz0AeAAAA"),
            "ghp_Xq7L****"
        );
        assert_eq!(mask(AwsAccessKey, "AKIAQYLPMN5HFIQR7BXZ"), "AKIAQYLP****");
        assert_eq!(
            mask(AwsSecretKey, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "wJal****"
        );
        assert_eq!(mask(GenericSecret, "abcdefgh"), "ab****");
        assert_eq!(
            mask(
                PrivateKey,
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
            ),
            "-----BEGIN RSA PRIVATE KEY-----****"
        );
        // Short values never show half of themselves.
        assert_eq!(mask(UsSsn, "1234"), "**34");
    }

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
            name: None,
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
