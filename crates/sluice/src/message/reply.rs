//! The one SMTP reply type, used by the server side and read by the client side.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An SMTP reply: basic code, optional enhanced status code (RFC 3463), text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Three-digit basic code.
    pub code: u16,
    /// Enhanced status code `class.subject.detail`, when known.
    pub status: Option<[u16; 3]>,
    /// Human-readable text (may contain several lines joined by `\n`).
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code.
    pub fn new(code: u16, status: [u16; 3], text: impl Into<String>) -> Self {
        Reply {
            code,
            status: Some(status),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, 354...).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: None,
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code as text (`5.7.1`), or one derived from the class.
    pub fn status_text(&self) -> String {
        match self.status {
            Some([a, b, c]) => format!("{a}.{b}.{c}"),
            None => format!("{}.0.0", self.code / 100),
        }
    }

    /// The reply as it goes on the wire, multi-line when the text has lines.
    pub fn to_wire(&self) -> String {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let mut out = String::with_capacity(self.text.len() + 16 * lines.len());
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.push_str(&self.code.to_string());
            out.push(sep);
            if let Some([a, b, c]) = self.status {
                out.push_str(&format!("{a}.{b}.{c} "));
            }
            out.push_str(line.trim_end_matches('\r'));
            out.push_str("\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    /// One line: `550 5.7.1 text` (for logs, traces and DSN diagnostic codes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some([a, b, c]) => write!(f, "{} {a}.{b}.{c} {}", self.code, self.text.replace('\n', " ")),
            None => write!(f, "{} {}", self.code, self.text.replace('\n', " ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_wire_form() {
        let r = Reply::plain(250, "host\nPIPELINING\nSIZE 10");
        assert_eq!(r.to_wire(), "250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        let r = Reply::new(550, [5, 7, 1], "Relay denied");
        assert_eq!(r.to_wire(), "550 5.7.1 Relay denied\r\n");
        assert_eq!(r.to_string(), "550 5.7.1 Relay denied");
    }
}
