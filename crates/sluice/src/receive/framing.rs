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
//!
//! Memory: with a [`Spool`], content past its threshold goes to a private
//! file in the spool directory as it arrives, in chunks of [`SPOOL_CHUNK`];
//! a session then holds a chunk and the first [`HEAD_COPY`] octets (for the
//! header checks made before submission), whatever the message's size.

use std::io::Write;
use std::path::PathBuf;

/// Octets gathered in memory between writes to the spool file.
pub const SPOOL_CHUNK: usize = 64 * 1024;

/// Octets of a spooled message kept in memory for the checks the session
/// makes on the header section (the Received hop count).
pub const HEAD_COPY: usize = 64 * 1024;

/// Where and from what size message content goes to disk as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    /// Directory of the files (private to the node's user).
    pub dir: PathBuf,
    /// Content up to this size stays in memory.
    pub threshold: usize,
}

/// A message body being received, capped at a size limit.
#[derive(Debug)]
pub struct Body {
    /// All of the content, or (once spooling) what is not written yet.
    content: Vec<u8>,
    spooling: Spooling,
    size: usize,
    limit: usize,
    bare_line_ending: bool,
    /// BDAT only: the previous chunk ended with CR, so the next byte must be LF.
    pending_cr: bool,
}

#[derive(Debug)]
enum Spooling {
    /// Memory only.
    Off,
    /// Past `threshold` octets the content moves to a file in `dir`.
    Ready(Spool),
    /// Writing to `file`; `head` is a copy of its first octets.
    Active {
        file: tempfile::NamedTempFile,
        head: Vec<u8>,
    },
    /// A write failed: the message cannot be accepted now.
    Failed(String),
}

/// A complete body, in memory or in a spool file.
#[derive(Debug)]
pub enum BodyContent {
    /// Small enough to stay in memory.
    Memory(Vec<u8>),
    /// Written to a spool file as it arrived.
    Spooled(SpooledBody),
}

/// A body in a private spool file, removed when this is dropped.
#[derive(Debug)]
pub struct SpooledBody {
    /// The file (written, not yet synced: the queue makes it durable).
    pub file: tempfile::NamedTempFile,
    /// The first octets, for header checks.
    pub head: Vec<u8>,
    /// Size of the whole body.
    pub len: usize,
}

impl BodyContent {
    /// Octets of the body.
    pub fn len(&self) -> usize {
        match self {
            BodyContent::Memory(content) => content.len(),
            BodyContent::Spooled(spooled) => spooled.len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in memory (a spooled one is read back from its file).
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self {
            BodyContent::Memory(content) => Ok(content),
            BodyContent::Spooled(spooled) => std::fs::read(spooled.file.path()),
        }
    }

    /// The first octets: the whole body in memory, the head copy of a
    /// spooled one.
    pub fn head(&self) -> &[u8] {
        match self {
            BodyContent::Memory(content) => content,
            BodyContent::Spooled(spooled) => &spooled.head,
        }
    }
}

/// Why a complete body cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDefect {
    /// A CR or LF that is not part of a CRLF pair.
    BareLineEnding,
    /// More octets than the size limit.
    TooLarge,
    /// Writing the spool file failed (a local problem, not the client's).
    Spool(String),
}

impl Body {
    /// An empty body that accepts at most `limit` octets, in memory.
    pub fn new(limit: usize) -> Self {
        Body::spooled(limit, None)
    }

    /// An empty body that accepts at most `limit` octets and moves to a
    /// spool file past the spool's threshold.
    pub fn spooled(limit: usize, spool: Option<Spool>) -> Self {
        Body {
            content: Vec::new(),
            spooling: spool.map_or(Spooling::Off, Spooling::Ready),
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
    pub fn finish(mut self) -> Result<BodyContent, BodyDefect> {
        if self.bare_line_ending || self.pending_cr {
            return Err(BodyDefect::BareLineEnding);
        }
        if self.size > self.limit {
            return Err(BodyDefect::TooLarge);
        }
        self.write_out();
        match self.spooling {
            Spooling::Off | Spooling::Ready(_) => Ok(BodyContent::Memory(self.content)),
            Spooling::Active { mut file, head } => match file.flush() {
                Ok(()) => Ok(BodyContent::Spooled(SpooledBody {
                    file,
                    head,
                    len: self.size,
                })),
                Err(error) => Err(BodyDefect::Spool(error.to_string())),
            },
            Spooling::Failed(error) => Err(BodyDefect::Spool(error)),
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit || self.bare_line_ending {
            // The message will be refused: stop holding memory or disk for it.
            self.discard();
        } else {
            self.content.extend_from_slice(bytes);
            self.spill();
        }
    }

    fn mark_bare_line_ending(&mut self) {
        self.bare_line_ending = true;
        self.discard();
    }

    fn discard(&mut self) {
        self.content = Vec::new();
        // Dropping the temporary file removes it.
        self.spooling = Spooling::Off;
    }

    /// Moves gathered content to the spool file once there is enough of it.
    fn spill(&mut self) {
        let due = match &self.spooling {
            Spooling::Ready(spool) => self.content.len() > spool.threshold,
            Spooling::Active { .. } => self.content.len() >= SPOOL_CHUNK,
            Spooling::Off | Spooling::Failed(_) => false,
        };
        if due {
            self.write_out();
        }
    }

    /// Writes what is gathered to the spool file (creating it first when the
    /// threshold was just passed). Plain blocking writes: they land in the
    /// page cache; the queue syncs the file before the 250.
    fn write_out(&mut self) {
        if let Spooling::Ready(spool) = &self.spooling {
            if self.content.len() <= spool.threshold {
                return;
            }
            self.spooling = match tempfile::Builder::new()
                .prefix("incoming-")
                .tempfile_in(&spool.dir)
            {
                Ok(file) => Spooling::Active {
                    file,
                    head: self.content[..self.content.len().min(HEAD_COPY)].to_vec(),
                },
                Err(error) => Spooling::Failed(format!("cannot create a spool file: {error}")),
            };
        }
        if let Spooling::Active { file, .. } = &mut self.spooling {
            if let Err(error) = file.write_all(&self.content) {
                self.spooling = Spooling::Failed(format!("cannot write the spool file: {error}"));
            }
            self.content.clear();
            self.content.shrink_to(SPOOL_CHUNK * 2);
        }
        if let Spooling::Failed(_) = self.spooling {
            self.content = Vec::new();
        }
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
        DataReader::spooled(limit, None)
    }

    /// As [`DataReader::new`], moving the content to `spool` past its threshold.
    pub fn spooled(limit: usize, spool: Option<Spool>) -> Self {
        DataReader {
            position: LinePosition::Start,
            body: Body::spooled(limit, spool),
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
                    let run_end = memchr::memchr2(b'\r', b'\n', &input[run_start..])
                        .map_or(input.len(), |offset| run_start + offset);
                    if input.get(run_end..run_end + 2) == Some(b"\r\n") {
                        // The usual line: the run and its CRLF in one copy.
                        self.body.extend(&input[run_start..run_end + 2]);
                        index = run_end + 2;
                        LinePosition::Start
                    } else {
                        self.body.extend(&input[run_start..run_end]);
                        index = run_end;
                        LinePosition::Middle
                    }
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
                let body = reader.into_body().finish().map(|c| c.into_bytes().unwrap());
                return Some((body, rest));
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
            let expected = expected
                .clone()
                .map(|(body, rest)| (body.map(<[u8]>::to_vec), rest));
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

    /// The framing rule one octet at a time, with no copying of runs: what
    /// [`DataReader::feed`] must agree with.
    fn feed_octet_by_octet(reader: &mut DataReader, input: &[u8]) -> DataProgress {
        for (index, &byte) in input.iter().enumerate() {
            reader.position = match (reader.position, byte) {
                (LinePosition::Start, b'.') => LinePosition::StartDot,
                (LinePosition::StartDot, b'\r') => LinePosition::StartDotCr,
                (LinePosition::StartDotCr, b'\n') => return DataProgress::Complete(index + 1),
                (LinePosition::Cr, b'\n') => {
                    reader.body.extend(b"\r\n");
                    LinePosition::Start
                }
                (position, b'\r') => {
                    if matches!(position, LinePosition::Cr | LinePosition::StartDotCr) {
                        reader.body.mark_bare_line_ending();
                    }
                    LinePosition::Cr
                }
                (_, b'\n') => {
                    reader.body.mark_bare_line_ending();
                    LinePosition::Middle
                }
                (position, _) => {
                    if matches!(position, LinePosition::Cr | LinePosition::StartDotCr) {
                        reader.body.mark_bare_line_ending();
                    }
                    reader.body.extend(&[byte]);
                    LinePosition::Middle
                }
            };
        }
        DataProgress::NeedMore
    }

    /// Every input of up to 7 octets over the octets that matter (`.`, CR,
    /// LF, another), fed whole and in pieces of every size: the run-copying
    /// reader ends where the octet rule ends, with the same body or defect.
    #[test]
    fn copying_runs_agrees_with_the_octet_rule() {
        const OCTETS: [u8; 4] = [b'.', b'\r', b'\n', b'a'];
        let outcome = |reader: DataReader, progress: Vec<DataProgress>| {
            let body = reader.body;
            (
                progress,
                reader.position,
                body.size,
                body.bare_line_ending,
                body.content,
            )
        };
        for len in 0..=7u32 {
            for mut code in 0..4usize.pow(len) {
                let mut input = Vec::new();
                for _ in 0..len {
                    input.push(OCTETS[code % 4]);
                    code /= 4;
                }
                // After a prefix, as in a real message: the state at the
                // start of a line, in the middle of one, and after a CR.
                for prefix in [&b""[..], b"x", b"x\r"] {
                    for piece in 1..=input.len().max(1) {
                        let (mut fast, mut slow) = (DataReader::new(1000), DataReader::new(1000));
                        fast.feed(prefix);
                        feed_octet_by_octet(&mut slow, prefix);
                        let (mut fast_progress, mut slow_progress) = (Vec::new(), Vec::new());
                        for chunk in input.chunks(piece) {
                            fast_progress.push(fast.feed(chunk));
                            slow_progress.push(feed_octet_by_octet(&mut slow, chunk));
                            if matches!(slow_progress.last(), Some(DataProgress::Complete(_))) {
                                break;
                            }
                        }
                        assert_eq!(
                            outcome(fast, fast_progress),
                            outcome(slow, slow_progress),
                            "{prefix:?} then {input:?} in pieces of {piece}"
                        );
                    }
                }
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
        assert_eq!(body.finish().err(), Some(BodyDefect::TooLarge));
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
            assert_eq!(
                body.finish().map(|c| c.into_bytes().unwrap()),
                expected.clone().map(<[u8]>::to_vec),
                "{chunks:?}"
            );
        }
        let mut body = Body::new(4);
        assert!(!body.would_exceed(4));
        body.extend_chunk(b"ab");
        assert!(body.would_exceed(3));
        assert!(!body.would_exceed(2));
    }

    #[test]
    fn large_data_goes_to_a_spool_file_as_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            dir: dir.path().to_path_buf(),
            threshold: 100_000,
        };
        let mut reader = DataReader::spooled(10_000_000, Some(spool.clone()));
        let mut line = b"..".to_vec();
        line.extend_from_slice(&[b'x'; 998]);
        line.extend_from_slice(b"\r\n");
        let mut expected = Vec::new();
        for _ in 0..2000 {
            assert_eq!(reader.feed(&line), DataProgress::NeedMore);
            expected.extend_from_slice(&line[1..]);
            // Memory held stays at a chunk, whatever has arrived.
            assert!(reader.body.content.capacity() <= 2 * SPOOL_CHUNK.max(spool.threshold) + line.len());
        }
        assert_eq!(reader.feed(b".\r\n"), DataProgress::Complete(3));
        let content = reader.into_body().finish().unwrap();
        let BodyContent::Spooled(spooled) = &content else {
            panic!("2 MB stayed in memory");
        };
        assert_eq!(spooled.len, expected.len());
        assert_eq!(spooled.head, expected[..HEAD_COPY]);
        assert_eq!(content.head(), &expected[..HEAD_COPY]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(content.into_bytes().unwrap(), expected);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spool file left behind"
        );

        // Small messages never touch the disk; refused ones leave nothing.
        let mut small = DataReader::spooled(10_000_000, Some(spool.clone()));
        assert_eq!(small.feed(b"hi\r\n.\r\n"), DataProgress::Complete(7));
        assert!(matches!(small.into_body().finish(), Ok(BodyContent::Memory(_))));
        let mut bad = DataReader::spooled(10_000_000, Some(spool));
        for _ in 0..200 {
            bad.feed(&line);
        }
        bad.feed(b"bare\nline\r\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(bad.feed(b".\r\n"), DataProgress::Complete(3));
        assert_eq!(bad.into_body().finish().err(), Some(BodyDefect::BareLineEnding));
    }
}
