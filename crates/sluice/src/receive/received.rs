//! The trace header of RFC 5321 section 4.4: the `Received` header this
//! hop prepends, and the hop count used to stop mail loops.

use super::{SessionInfo, TlsInfo};
use crate::message::Envelope;
use std::net::IpAddr;

/// More `Received` headers than this means the message is looping (SPEC 5).
pub const MAX_RECEIVED_HEADERS: usize = 30;

/// How many `Received` headers the message's header section holds.
pub fn received_count(content: &[u8]) -> usize {
    crate::message::header::count_fields(content, "Received")
}

/// Our `Received` header, folded, ending in CRLF.
///
/// `for <rcpt>` is only written for a single recipient, so that one
/// recipient's copy does not disclose the others (as Postfix does).
pub fn received_header(
    session: &SessionInfo,
    hostname: &str,
    id: &str,
    envelope: &Envelope,
    unix_secs: i64,
) -> String {
    let protocol = match (session.esmtp, &session.tls) {
        (false, _) => "SMTP",
        (true, None) => "ESMTP",
        (true, Some(_)) => "ESMTPS",
    };
    let mut header = format!(
        "Received: from {} ({})\r\n",
        sanitize(&session.helo),
        address_literal(session.peer.ip())
    );
    if let Some(tls) = &session.tls {
        header.push_str(&format!("\t({})\r\n", tls_comment(tls)));
    }
    header.push_str(&format!("\tby {} with {protocol} id {id}", sanitize(hostname)));
    if let [only] = envelope.recipients.as_slice() {
        header.push_str(&format!("\r\n\tfor <{}>", sanitize(&only.address.to_string())));
    }
    header.push_str(&format!(
        ";\r\n\t{}\r\n",
        mail_builder::headers::date::Date::new(unix_secs).to_rfc822()
    ));
    header
}

/// `using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`.
fn tls_comment(tls: &TlsInfo) -> String {
    format!(
        "using {} with cipher {}",
        sanitize(&tls.version.replace('_', ".")),
        sanitize(&tls.cipher)
    )
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 section 4.1.3).
fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// Keeps client-chosen text (the HELO name) from breaking the header's
/// structure: no controls, no comment or clause delimiters, bounded length.
fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | ';' | '\\' | '<' | '>'))
        .take(255)
        .collect();
    if cleaned.is_empty() {
        "unknown".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Address, EnvelopeRecipient, Notify, ReversePath};

    fn session(tls: Option<TlsInfo>) -> SessionInfo {
        SessionInfo {
            peer: "192.0.2.7:40000".parse().unwrap(),
            local: "127.0.0.1:25".parse().unwrap(),
            helo: "client.example (evil)\r\nX-Injected: 1".to_string(),
            esmtp: true,
            tls,
        }
    }

    fn envelope(recipients: &[&str]) -> Envelope {
        let mut envelope = Envelope::new(ReversePath::Null);
        for recipient in recipients {
            envelope.recipients.push(EnvelopeRecipient {
                address: Address::parse(recipient).unwrap(),
                notify: Notify::Default,
                orcpt: None,
            });
        }
        envelope
    }

    #[test]
    fn header_names_the_hop_and_parses_as_received() {
        let tls = TlsInfo {
            version: "TLSv1_3".to_string(),
            cipher: "TLS13_AES_256_GCM_SHA384".to_string(),
            client_cert_names: Vec::new(),
        };
        let header = received_header(
            &session(Some(tls)),
            "gw.contoso.test",
            "01ABC",
            &envelope(&["bob@contoso.test"]),
            0,
        );
        assert!(header.starts_with("Received: from client.example evilX-Injected: 1 ([192.0.2.7])\r\n"));
        assert!(header.contains("(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)"));
        assert!(header.contains("by gw.contoso.test with ESMTPS id 01ABC"));
        assert!(header.contains("for <bob@contoso.test>;"));
        assert!(header.ends_with("Thu, 1 Jan 1970 00:00:00 +0000\r\n"), "{header}");
        // Every line but the first is a continuation: nothing was injected.
        assert!(header
            .split("\r\n")
            .skip(1)
            .all(|line| line.is_empty() || line.starts_with('\t')));
        let message = format!("{header}Subject: x\r\n\r\nbody\r\n");
        assert_eq!(received_count(message.as_bytes()), 1);

        let plain = received_header(&session(None), "gw", "1", &envelope(&["a@x.test", "b@x.test"]), 0);
        assert!(plain.contains("with ESMTP id 1;"));
        assert!(!plain.contains("for <"));
    }

    #[test]
    fn counts_received_headers_in_the_header_section_only() {
        let mut message = String::new();
        for hop in 0..31 {
            message.push_str(&format!(
                "Received: from h{hop} by x; Thu, 1 Jan 1970 00:00:00 +0000\r\n"
            ));
        }
        message.push_str("Subject: loop\r\n\r\nReceived: in the body\r\n");
        assert_eq!(received_count(message.as_bytes()), 31);
        assert_eq!(received_count(b"Subject: x\r\n\r\nReceived: no\r\n"), 0);
        assert_eq!(received_count(b""), 0);
    }
}
