//! Header changes made by rule actions, applied to a copy's header section.
//! The body is never touched, so signatures over the body survive.

use super::HeaderEdit;
use crate::message::header::fields;
use crate::message::header_section_len;

/// Checks a header name (RFC 5322 field-name: printable ASCII except colon).
pub fn header_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok(name.to_string())
}

/// Applies edits in order; returns the new content.
pub fn apply_edits(content: &[u8], edits: &[HeaderEdit]) -> Vec<u8> {
    if edits.is_empty() {
        return content.to_vec();
    }
    let split = header_section_len(content);
    // `body` starts after the blank line (empty for a header-only message).
    let mut out = edit_header(&content[..split], edits);
    out.extend_from_slice(&content[split..]);
    out
}

/// Applies edits in order to a header section (blank line included, when
/// there is one); returns the new header section. A copy's content is this
/// over the body it shares with the other copies.
pub fn edit_header(header: &[u8], edits: &[HeaderEdit]) -> Vec<u8> {
    if edits.is_empty() {
        return header.to_vec();
    }
    // (lower-case name, raw field): the names the firewall and conditions read.
    let mut lines: Vec<(String, Vec<u8>)> = fields(header)
        .into_iter()
        .map(|f| {
            let mut raw = f.raw.to_vec();
            // A last line without CRLF (a header-only message) must not run into the next field.
            if !raw.ends_with(b"\r\n") {
                raw.extend_from_slice(b"\r\n");
            }
            (String::from_utf8_lossy(f.name).to_ascii_lowercase(), raw)
        })
        .collect();
    for edit in edits {
        match edit {
            HeaderEdit::Remove(name) => {
                let name = name.to_ascii_lowercase();
                lines.retain(|(field, _)| *field != name);
            }
            HeaderEdit::Set { name, value } => {
                let lower = name.to_ascii_lowercase();
                lines.retain(|(field, _)| *field != lower);
                lines.push((lower, format!("{name}: {value}\r\n").into_bytes()));
            }
            HeaderEdit::PrependSubject(prefix) => {
                match lines.iter_mut().find(|(field, _)| field == "subject") {
                    Some((_, raw)) => {
                        let colon = raw.iter().position(|&b| b == b':').unwrap_or(0);
                        let value_start = colon
                            + 1
                            + raw[colon + 1..]
                                .iter()
                                .take_while(|&&b| b == b' ' || b == b'\t')
                                .count();
                        let mut updated = raw[..value_start].to_vec();
                        if value_start == colon + 1 {
                            updated.push(b' ');
                        }
                        updated.extend_from_slice(prefix.as_bytes());
                        updated.extend_from_slice(&raw[value_start..]);
                        *raw = updated;
                    }
                    None => lines.push((
                        "subject".to_string(),
                        format!("Subject: {}\r\n", prefix.trim_end()).into_bytes(),
                    )),
                }
            }
            // Resolved into `Set` by the plan; nothing to write without a scan.
            HeaderEdit::StampScan => {}
        }
    }
    let mut out = Vec::with_capacity(header.len() + 64);
    for (_, line) in lines {
        out.extend_from_slice(&line);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_remove_and_prepend() {
        let msg =
            b"Received: x\r\nSubject: Hello\r\n there\r\nX-Tag: a\r\nx-tag: b\r\n\r\nbody\r\nX-Tag: c\r\n";
        let out = apply_edits(
            msg,
            &[
                HeaderEdit::Remove("X-TAG".into()),
                HeaderEdit::Set {
                    name: "X-Route".into(),
                    value: "scanner".into(),
                },
                HeaderEdit::PrependSubject("[EXT] ".into()),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: x\r\nSubject: [EXT] Hello\r\n there\r\nX-Route: scanner\r\n\r\nbody\r\nX-Tag: c\r\n"
        );
    }

    #[test]
    fn prepend_adds_a_subject_when_missing() {
        let out = apply_edits(
            b"From: a@b\r\n\r\nx",
            &[HeaderEdit::PrependSubject("[EXT]".into())],
        );
        assert_eq!(out, b"From: a@b\r\nSubject: [EXT]\r\n\r\nx".to_vec());
        let blank_first_line = apply_edits(b"A: b\r\n\r\n\r\nsecond\r\n", &[HeaderEdit::Remove("X".into())]);
        assert_eq!(blank_first_line, b"A: b\r\n\r\n\r\nsecond\r\n".to_vec());
    }
}
