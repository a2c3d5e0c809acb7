//! Shared data of the pipeline, no logic beyond parsing and formatting:
//! addresses, domains, the envelope, a message's content (header section
//! per copy, body shared), SMTP replies and identifiers.
//!
//! Every stage speaks these types; none of them performs I/O.

mod address;
mod content;
mod domain_pattern;
pub mod header;
mod reply;

pub use address::{Address, AddressError, Domain, ReversePath};
pub use content::MessageContent;
pub use domain_pattern::{DomainPattern, Specificity};
pub use reply::Reply;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The spool's identifier of one accepted message (a ULID: sortable by arrival).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(pub String);

impl QueueId {
    /// A fresh identifier, increasing with time.
    pub fn generate() -> Self {
        QueueId(ulid::Ulid::new().to_string())
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `BODY=` of MAIL FROM (RFC 6152 / RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyType {
    /// No BODY parameter, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
    /// BODY=BINARYMIME (only with BDAT).
    BinaryMime,
}

/// `RET=` of MAIL FROM (RFC 3461): what a DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DsnReturn {
    /// RET=FULL: the whole message.
    Full,
    /// RET=HDRS: the headers only.
    Headers,
}

/// `NOTIFY=` of RCPT TO (RFC 3461). `Default` is the absence of the
/// parameter, which means "failures only" (RFC 3461 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// No NOTIFY parameter: failures are reported, delays are not.
    Default,
    /// NOTIFY=NEVER.
    Never,
    /// An explicit list.
    On {
        /// SUCCESS was listed.
        success: bool,
        /// FAILURE was listed.
        failure: bool,
        /// DELAY was listed.
        delay: bool,
    },
}

impl Notify {
    /// Whether a permanent failure or an expiry is reported to the sender.
    pub fn on_failure(self) -> bool {
        match self {
            Notify::Default => true,
            Notify::Never => false,
            Notify::On { failure, .. } => failure,
        }
    }

    /// Whether a delay notice is sent (only when asked for explicitly).
    pub fn on_delay(self) -> bool {
        matches!(self, Notify::On { delay: true, .. })
    }

    /// Whether a success notice is sent.
    pub fn on_success(self) -> bool {
        matches!(self, Notify::On { success: true, .. })
    }
}

/// One RCPT TO of the envelope, with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeRecipient {
    /// The recipient address as given.
    pub address: Address,
    /// NOTIFY=.
    pub notify: Notify,
    /// ORCPT= (as received, `type;xtext-decoded address`).
    pub orcpt: Option<String>,
}

/// The SMTP envelope of one message: sender, recipients and ESMTP parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// MAIL FROM.
    pub mail_from: ReversePath,
    /// Accepted RCPT TO, in order.
    pub recipients: Vec<EnvelopeRecipient>,
    /// BODY=.
    pub body: BodyType,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// RET=.
    pub ret: Option<DsnReturn>,
    /// ENVID=.
    pub envid: Option<String>,
}

impl Envelope {
    /// An envelope with no recipients yet and default parameters.
    pub fn new(mail_from: ReversePath) -> Self {
        Envelope {
            mail_from,
            recipients: Vec::new(),
            body: BodyType::default(),
            smtputf8: false,
            ret: None,
            envid: None,
        }
    }
}

/// The value of the Message-ID header, without angle brackets, when present.
pub fn header_message_id(content: &[u8]) -> Option<String> {
    header::read_field(content, "Message-ID", |parsed| {
        parsed.message_id().map(str::to_string)
    })
}

/// `text` with every control character (C0 with CR, LF and TAB, DEL, C1)
/// written as `\xNN`: a client-supplied string shown on a terminal, in a
/// log line or in a field the node writes can neither move the cursor nor
/// start a new line or field.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Length of the header section, including the blank line that ends it.
pub fn header_section_len(content: &[u8]) -> usize {
    header::section_len(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_read_from_headers_only() {
        let msg = b"Subject: x\r\nMessage-ID: <abc@example.test>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(header_message_id(msg).as_deref(), Some("abc@example.test"));
        assert_eq!(header_message_id(b"Subject: y\r\n\r\nbody"), None);
    }

    #[test]
    fn controls_are_escaped_and_plain_text_is_kept() {
        assert_eq!(escape_controls("client.test"), "client.test");
        assert_eq!(
            escape_controls("evil\u{1b}[2J\r\nX: y\u{9b}1m\u{7f}"),
            "evil\\x1b[2J\\x0d\\x0aX: y\\x9b1m\\x7f"
        );
    }

    #[test]
    fn notify_semantics_follow_rfc3461() {
        assert!(Notify::Default.on_failure());
        assert!(!Notify::Default.on_delay());
        assert!(!Notify::Never.on_failure());
        let delay = Notify::On {
            success: false,
            failure: false,
            delay: true,
        };
        assert!(delay.on_delay() && !delay.on_failure());
    }
}
