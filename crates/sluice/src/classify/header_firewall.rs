//! The header firewall: `X-Sluice-Org-*` headers are the organisation's
//! internal stamps (scan verdicts, routing marks). They are trusted only
//! from inbound connectors that retain them and sent only through outbound
//! connectors that retain them; everywhere else they are removed, so an
//! internet sender cannot forge a stamp to change what happens to its mail.

/// Prefix of internal header names (compared case-insensitively).
pub const INTERNAL_PREFIX: &str = "x-sluice-org-";

/// Removes every internal header (with its folded continuation lines) from
/// the header section; the body is untouched. Returns the names removed.
pub fn strip_internal_headers(content: &[u8]) -> (Vec<u8>, Vec<String>) {
    let header_end = crate::message::header_section_len(content);
    let mut out = Vec::with_capacity(content.len());
    let mut removed = Vec::new();
    let mut dropping = false;
    let mut pos = 0;
    while pos < header_end {
        let line_end = content[pos..header_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| pos + p + 2)
            .unwrap_or(header_end);
        let line = &content[pos..line_end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            let name_len = line.iter().position(|&b| b == b':').unwrap_or(0);
            let name = &line[..name_len];
            dropping = name.len() > INTERNAL_PREFIX.len()
                && name[..INTERNAL_PREFIX.len()].eq_ignore_ascii_case(INTERNAL_PREFIX.as_bytes());
            if dropping {
                removed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        pos = line_end;
    }
    out.extend_from_slice(&content[header_end..]);
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_internal_headers_with_folds_and_keeps_the_body() {
        let msg = b"Subject: hi\r\nX-Sluice-Org-Scan: verdict=pass;\r\n scanner=evil\r\nx-sluice-org-route: connector=x\r\nTo: a@b\r\n\r\nX-Sluice-Org-Scan: in body stays\r\n";
        let (out, removed) = strip_internal_headers(msg);
        assert_eq!(
            out,
            b"Subject: hi\r\nTo: a@b\r\n\r\nX-Sluice-Org-Scan: in body stays\r\n".to_vec()
        );
        assert_eq!(removed, vec!["X-Sluice-Org-Scan", "x-sluice-org-route"]);
    }

    #[test]
    fn leaves_other_headers_alone() {
        let msg = b"X-Sluice-Orgx: keep\r\nX-Other: keep\r\n\r\nbody";
        assert_eq!(strip_internal_headers(msg).0, msg.to_vec());
    }
}
