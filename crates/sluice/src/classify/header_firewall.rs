//! The header firewall: `X-Sluice-Org-*` headers are the organisation's
//! internal stamps (scan verdicts, routing marks). They are trusted only
//! from inbound connectors that retain them and sent only through outbound
//! connectors that retain them; everywhere else they are removed, so an
//! internet sender cannot forge a stamp to change what happens to its mail.

pub use crate::message::header::INTERNAL_PREFIX;

use crate::message::header::fields;

/// Removes every internal header (with its folded continuation lines) from
/// the header section; the body is untouched. Returns the names removed.
///
/// Fields are read with [`crate::message::header::fields`], the reading the
/// rule conditions and header edits share; on a section the end-of-DATA
/// check would refuse it errs towards seeing a field, so a name hidden
/// behind whitespace or a leading fold is removed too.
pub fn strip_internal_headers(content: &[u8]) -> (Vec<u8>, Vec<String>) {
    let header_end = crate::message::header_section_len(content);
    let mut out = Vec::with_capacity(content.len());
    let mut removed = Vec::new();
    let mut kept_until = 0;
    for field in fields(content) {
        let start = field.raw.as_ptr() as usize - content.as_ptr() as usize;
        let end = start + field.raw.len();
        if field.has_prefix(INTERNAL_PREFIX) {
            out.extend_from_slice(&content[kept_until..start]);
            removed.push(String::from_utf8_lossy(field.name).into_owned());
            kept_until = end;
        }
    }
    out.extend_from_slice(&content[kept_until..header_end]);
    out.extend_from_slice(&content[header_end..]);
    (out, removed)
}

/// Whether `content`'s header section holds a field any reader could take
/// for an internal one.
pub fn has_internal_headers(content: &[u8]) -> bool {
    fields(content).iter().any(|f| f.has_prefix(INTERNAL_PREFIX))
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

    #[test]
    fn removes_names_hidden_by_whitespace_or_a_leading_fold() {
        let msg =
            b" X-Sluice-Org-Scan: verdict=pass\r\n\tmore\r\nX-SLUICE-ORG-ROUTE\t: x\r\nTo: a@b\r\n\r\nbody";
        let (out, removed) = strip_internal_headers(msg);
        assert_eq!(out, b"To: a@b\r\n\r\nbody".to_vec());
        assert_eq!(removed, vec!["X-Sluice-Org-Scan", "X-SLUICE-ORG-ROUTE"]);
        assert!(!has_internal_headers(&out));
    }
}
