//! A message's content as the pipeline passes it on: a header section of
//! its own and a body shared with every other copy made of the same
//! message. The rules fork a message into copies per recipient group and
//! each copy gets its own header edits, signature and seal; the body, most
//! of a large message, is held once and never copied for a stage or a copy.

use std::fmt;
use std::sync::Arc;

/// One copy's content: its header section (blank line included) over a
/// body shared by reference. Cloning copies the header section only.
#[derive(Clone)]
pub struct MessageContent {
    /// The message this content was made from; the body is its tail.
    message: Arc<Vec<u8>>,
    /// Where the body starts in `message`.
    body_start: usize,
    /// This copy's header section, when it is not the one of `message`.
    header: Option<Vec<u8>>,
}

impl MessageContent {
    /// Content over `message` as it is (takes the buffer, copies nothing).
    pub fn new(message: Vec<u8>) -> Self {
        let body_start = super::header_section_len(&message);
        MessageContent {
            message: Arc::new(message),
            body_start,
            header: None,
        }
    }

    /// The header section: every field and the blank line after them.
    pub fn header(&self) -> &[u8] {
        self.header.as_deref().unwrap_or(&self.message[..self.body_start])
    }

    /// The body, shared with every copy of the message.
    pub fn body(&self) -> &[u8] {
        &self.message[self.body_start..]
    }

    /// The message this content was made from, whole, before any header
    /// changes made since.
    pub fn original(&self) -> &[u8] {
        &self.message
    }

    /// The content in one piece, when it is (no header change was made):
    /// a reader that needs contiguous octets uses it without a copy.
    pub fn contiguous(&self) -> Option<&[u8]> {
        match self.header {
            None => Some(&self.message),
            Some(_) => None,
        }
    }

    /// Fields put in front of the original header section, when that is
    /// the only change made (the node's own `Authentication-Results`).
    pub fn added_fields(&self) -> Option<&[u8]> {
        let original = &self.message[..self.body_start];
        match &self.header {
            None => Some(&[]),
            Some(header) if header.ends_with(original) => Some(&header[..header.len() - original.len()]),
            Some(_) => None,
        }
    }

    /// The same body under `header` (a header section, blank line included).
    pub fn with_header(&self, header: Vec<u8>) -> Self {
        MessageContent {
            message: self.message.clone(),
            body_start: self.body_start,
            header: Some(header),
        }
    }

    /// The same content with `fields` (whole lines) put in front.
    pub fn prepend(&self, fields: &[u8]) -> Self {
        if fields.is_empty() {
            return self.clone();
        }
        self.with_header([fields, self.header()].concat())
    }

    /// Octets of the whole content.
    pub fn len(&self) -> usize {
        self.header().len() + self.body().len()
    }

    /// Whether the content has no octets at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The two pieces, in order: written or hashed one after the other,
    /// they are the whole content.
    pub fn pieces(&self) -> [&[u8]; 2] {
        [self.header(), self.body()]
    }

    /// The same two pieces split before the blank line instead of after
    /// it: the header fields, then the blank line and the body (from the
    /// shared buffer, not copied). A reader that takes a message in chunks
    /// of whole fields, the last chunk opening with the end of the header
    /// section (DKIM signing), gets the same message as from one buffer.
    pub fn fields_and_rest(&self) -> [&[u8]; 2] {
        let header = self.header();
        let blank_line_kept = self.body_start >= 2
            && &self.message[self.body_start - 2..self.body_start] == b"\r\n"
            && (header == b"\r\n" || header.ends_with(b"\r\n\r\n"));
        if blank_line_kept {
            [&header[..header.len() - 2], &self.message[self.body_start - 2..]]
        } else {
            self.pieces()
        }
    }

    /// Whether `other` holds the same body (the same buffer, not a copy).
    pub fn shares_body_with(&self, other: &MessageContent) -> bool {
        Arc::ptr_eq(&self.message, &other.message) && self.body_start == other.body_start
    }

    /// The whole content in one new buffer: for the few readers that need
    /// it contiguous after a header change (a copy, so use sparingly).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().concat()
    }
}

impl From<Vec<u8>> for MessageContent {
    fn from(message: Vec<u8>) -> Self {
        MessageContent::new(message)
    }
}

/// Sizes only: a message's octets do not belong in a debug line.
impl fmt::Debug for MessageContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageContent")
            .field("header", &self.header().len())
            .field("body", &self.body().len())
            .field("shared", &Arc::strong_count(&self.message))
            .finish()
    }
}

/// Equal when the octets are (wherever they are held).
impl PartialEq for MessageContent {
    fn eq(&self, other: &Self) -> bool {
        self.header() == other.header() && self.body() == other.body()
    }
}

impl Eq for MessageContent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_the_body_and_keep_their_own_header() {
        let original = MessageContent::new(b"Subject: a\r\n\r\nbody\r\n".to_vec());
        assert_eq!(original.header(), b"Subject: a\r\n\r\n");
        assert_eq!(original.contiguous(), Some(&b"Subject: a\r\n\r\nbody\r\n"[..]));
        let stamped = original.prepend(b"Authentication-Results: x; none\r\n");
        assert_eq!(
            stamped.added_fields(),
            Some(&b"Authentication-Results: x; none\r\n"[..])
        );
        assert_eq!(stamped.contiguous(), None);
        let edited = stamped.with_header(b"Subject: b\r\n\r\n".to_vec());
        assert!(edited.shares_body_with(&original) && stamped.shares_body_with(&original));
        assert_eq!(edited.added_fields(), None);
        assert_eq!(edited.to_vec(), b"Subject: b\r\n\r\nbody\r\n");
        assert_eq!(edited.len(), edited.to_vec().len());
        assert_eq!(original.body().as_ptr(), edited.body().as_ptr());
        assert!(!MessageContent::new(original.to_vec()).shares_body_with(&original));
        let [fields, rest] = edited.fields_and_rest();
        assert_eq!((fields, rest), (&b"Subject: b\r\n"[..], &b"\r\nbody\r\n"[..]));
        let [fields, rest] = original.fields_and_rest();
        assert_eq!((fields, rest), (&b"Subject: a\r\n"[..], &b"\r\nbody\r\n"[..]));
    }

    #[test]
    fn a_message_without_a_body_is_all_header() {
        let only = MessageContent::new(b"Subject: a\r\n".to_vec());
        assert_eq!(only.body(), b"");
        assert_eq!(only.to_vec(), b"Subject: a\r\n");
        assert_eq!(only.fields_and_rest(), [&b"Subject: a\r\n"[..], &b""[..]]);
    }
}
