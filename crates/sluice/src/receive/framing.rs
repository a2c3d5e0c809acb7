//! Message body framing: DATA (dot-stuffed, ended by CRLF.CRLF) and BDAT
//! (length-counted chunks), both into a size-capped [`Body`].
//!
//! Contract: the only end of DATA is `<CRLF>.<CRLF>`. A CR not followed by
//! LF, or an LF not preceded by CR, is never a line end: it marks the body
//! bad and the reader keeps going to the real end, so SMTP smuggling forms
//! (`<LF>.<LF>`, `<CRLF>.<LF>`, `<LF>.<CRLF>`, `<CR>.<CR>`,
//! `<CRLF>.<CR><CR><LF>`) neither end the data early nor inject a second
//! message. BDAT chunks get the same bare CR/LF check so that every
//! accepted message has CRLF line endings only. Memory stays under the size
//! limit: past it, or once bad, bytes are counted and dropped.
//!
//! smtp-proto's `DataReceiver` is deliberately not used: it accepts
//! `<CRLF>.<CR><CR><LF>` as an end of data.

/// A message body being received, capped at a size limit.
#[derive(Debug)]
pub struct Body {
    content: Vec<u8>,
    size: usize,
    limit: usize,
    bare_line_ending: bool,
    /// BDAT only: the previous chunk ended with CR, so the next byte must be LF.
    pending_cr: bool,
}

/// Why a complete body cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDefect {
    /// A CR or LF that is not part of a CRLF pair.
    BareLineEnding,
    /// More octets than the size limit.
    TooLarge,
}

impl Body {
    /// An empty body that accepts at most `limit` octets.
    pub fn new(limit: usize) -> Self {
        Body {
            content: Vec::new(),
            size: 0,
            limit,
            bare_line_ending: false,
            pending_cr: false,
        }
    }

    /// Octets received so far (stored or not).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `more` octets would take the body past its limit.
    pub fn would_exceed(&self, more: usize) -> bool {
        self.size.saturating_add(more) > self.limit
    }

    /// The content, or why it must be refused.
    pub fn finish(self) -> Result<Vec<u8>, BodyDefect> {
        if self.bare_line_ending || self.pending_cr {
            Err(BodyDefect::BareLineEnding)
        } else if self.size > self.limit {
            Err(BodyDefect::TooLarge)
        } else {
            Ok(self.content)
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit || self.bare_line_ending {
            // The message will be refused: stop holding memory for it.
            self.content = Vec::new();
        } else {
            self.content.extend_from_slice(bytes);
        }
    }

    fn mark_bare_line_ending(&mut self) {
        self.bare_line_ending = true;
        self.content = Vec::new();
    }

    /// Appends one BDAT chunk (or part of one), checking line endings
    /// across chunk boundaries.
    pub fn extend_chunk(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match (self.pending_cr, byte) {
                (true, b'\n') => self.pending_cr = false,
                (true, b'\r') => self.mark_bare_line_ending(),
                (true, _) => {
                    self.mark_bare_line_ending();
                    self.pending_cr = false;
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.mark_bare_line_ending(),
                (false, _) => {}
            }
        }
        self.extend(bytes);
    }
}

/// Where the DATA reader stands within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinePosition {
    /// Just after a CRLF (or at the very start of the data).
    Start,
    /// A `.` at the start of a line.
    StartDot,
    /// `.` CR at the start of a line: only LF ends the data here.
    StartDotCr,
    /// Inside a line.
    Middle,
    /// After a CR inside a line.
    Cr,
}

/// Reads DATA content: removes dot-stuffing, finds `<CRLF>.<CRLF>`.
#[derive(Debug)]
pub struct DataReader {
    position: LinePosition,
    body: Body,
}

/// Progress of a [`DataReader`] after some input.
#[derive(Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// All input was consumed; the end has not been seen yet.
    NeedMore,
    /// The end was found; the first `usize` octets of the input were data
    /// (the rest belongs to the command stream).
    Complete(usize),
}

impl DataReader {
    /// A reader at the start of the data, accepting at most `limit` octets.
    pub fn new(limit: usize) -> Self {
        DataReader {
            position: LinePosition::Start,
            body: Body::new(limit),
        }
    }

    /// Feeds input; see [`DataProgress`].
    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        let mut index = 0;
        while index < input.len() {
            let byte = input[index];
            index += 1;
            self.position = match (self.position, byte) {
                (LinePosition::Start, b'.') => LinePosition::StartDot,
                (LinePosition::StartDot, b'\r') => LinePosition::StartDotCr,
                (LinePosition::StartDotCr, b'\n') => return DataProgress::Complete(index),
                (LinePosition::Cr, b'\n') => {
                    self.body.extend(b"\r\n");
                    LinePosition::Start
                }
                (_, b'\r') => {
                    // A CR after a CR (or after `.` CR) is bare; the new CR
                    // may still start a real CRLF.
                    if matches!(self.position, LinePosition::Cr | LinePosition::StartDotCr) {
                        self.body.mark_bare_line_ending();
                    }
                    LinePosition::Cr
                }
                (_, b'\n') => {
                    self.body.mark_bare_line_ending();
                    LinePosition::Middle
                }
                (position, _) => {
                    if matches!(position, LinePosition::Cr | LinePosition::StartDotCr) {
                        self.body.mark_bare_line_ending();
                    }
                    // Copy the whole run up to the next CR or LF at once;
                    // a leading `.` (StartDot) is dropped: dot-unstuffing.
                    let run_start = index - 1;
                    let run_end = input[run_start..]
                        .iter()
                        .position(|b| *b == b'\r' || *b == b'\n')
                        .map_or(input.len(), |offset| run_start + offset);
                    self.body.extend(&input[run_start..run_end]);
                    index = run_end;
                    LinePosition::Middle
                }
            };
        }
        DataProgress::NeedMore
    }

    /// The body read so far (complete once `feed` returned `Complete`).
    pub fn into_body(self) -> Body {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` octets; returns the body outcome
    /// and how many octets followed the end of data.
    fn read(input: &[u8], piece: usize) -> Option<(Result<Vec<u8>, BodyDefect>, usize)> {
        let mut reader = DataReader::new(1000);
        let mut offset = 0;
        for chunk in input.chunks(piece) {
            if let DataProgress::Complete(used) = reader.feed(chunk) {
                let rest = input.len() - offset - used;
                return Some((reader.into_body().finish(), rest));
            }
            offset += chunk.len();
        }
        None
    }

    #[test]
    fn data_framing_table() {
        use BodyDefect::*;
        type Expected = Option<(Result<&'static [u8], BodyDefect>, usize)>;
        let cases: &[(&[u8], Expected)] = &[
            (b".\r\n", Some((Ok(b""), 0))),
            (b"a\r\n.\r\n", Some((Ok(b"a\r\n"), 0))),
            (b"a\r\n.\r\nQUIT\r\n", Some((Ok(b"a\r\n"), 6))),
            (b"..x\r\n...\r\n.\r\n", Some((Ok(b".x\r\n..\r\n"), 0))),
            (b"a\r\n.b\r\n.\r\n", Some((Ok(b"a\r\nb\r\n"), 0))),
            // Smuggling forms: never an end, the message is bad, and the
            // real end is still found afterwards.
            (b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            (b"a\r\n.\nRCPT\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            (b"a\n.\r\nRCPT\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            (b"a\r.\rRCPT\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            (b"a\r\n.\r\r\nRCPT\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            (b"a\r\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            (b"x\ry\r\n.\r\n", Some((Err(BareLineEnding), 0))),
            // Unterminated: still waiting.
            (b"a\n.\n", None),
            (b"a\r\n.\r\r\n", None),
            (b"a\r.\r", None),
            (b"a\r\n.", None),
        ];
        for (input, expected) in cases {
            let expected = expected.map(|(body, rest)| (body.map(<[u8]>::to_vec), rest));
            for piece in [1, 2, 3, input.len()] {
                assert_eq!(
                    read(input, piece),
                    expected,
                    "input {:?} in pieces of {piece}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn oversize_data_is_counted_not_stored() {
        let mut reader = DataReader::new(10);
        let mut line = vec![b'x'; 4096];
        line.extend_from_slice(b"\r\n");
        for _ in 0..100 {
            assert_eq!(reader.feed(&line), DataProgress::NeedMore);
        }
        assert_eq!(reader.feed(b".\r\n"), DataProgress::Complete(3));
        let body = reader.into_body();
        assert_eq!(body.size(), 100 * 4098);
        assert!(body.content.capacity() == 0);
        assert_eq!(body.finish(), Err(BodyDefect::TooLarge));
    }

    #[test]
    fn bdat_chunks_are_checked_across_boundaries() {
        type Case = (&'static [&'static [u8]], Result<&'static [u8], BodyDefect>);
        let cases: &[Case] = &[
            (&[b"a\r", b"\nb\r\n"], Ok(b"a\r\nb\r\n")),
            (&[b"a\r", b"b"], Err(BodyDefect::BareLineEnding)),
            (&[b"a\r"], Err(BodyDefect::BareLineEnding)),
            (&[b"a\n"], Err(BodyDefect::BareLineEnding)),
            (&[b"a\r\r\n"], Err(BodyDefect::BareLineEnding)),
            (&[b"\r\n.\r\n", b""], Ok(b"\r\n.\r\n")),
        ];
        for (chunks, expected) in cases {
            let mut body = Body::new(100);
            for chunk in *chunks {
                body.extend_chunk(chunk);
            }
            assert_eq!(body.finish(), expected.map(<[u8]>::to_vec), "{chunks:?}");
        }
        let mut body = Body::new(4);
        assert!(!body.would_exceed(4));
        body.extend_chunk(b"ab");
        assert!(body.would_exceed(3));
        assert!(!body.would_exceed(2));
    }
}
