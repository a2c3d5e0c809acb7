//! A minimal zip reader: the central directory, stored and deflated entries.
//!
//! Written here rather than taken from the `zip` crate so that sizes are read
//! and checked before a single byte is inflated and the inflater's output is
//! capped at the declared size (a lying header cannot make it grow), with one
//! small dependency (zlib-rs, whose inflater runs about a third faster than
//! miniz_oxide's on Office parts). Zip64, encryption and methods other than
//! stored/deflate are reported as errors: the caller refuses them by name.

use std::borrow::Cow;

/// Why an archive or entry was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ZipError {
    /// No end-of-central-directory record, or offsets outside the data.
    #[error("unreadable zip archive")]
    Corrupt,
    /// Zip64 archives are not expanded.
    #[error("zip64 archive not expanded")]
    Zip64,
    /// More entries than a mail attachment plausibly holds.
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// An encrypted entry cannot be scanned.
    #[error("encrypted entry not scanned")]
    Encrypted,
    /// A compression method other than stored or deflate.
    #[error("compression method {0} not supported")]
    Method(u16),
    /// The data inflates to more (or less) than its declared size.
    #[error("inflated size differs from the declared {0} bytes")]
    SizeMismatch(u64),
}

const MAX_ENTRIES: usize = 10_000;

/// One member, as described by the central directory.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    /// The member's path inside the archive.
    pub name: String,
    /// Declared uncompressed size.
    pub size: u64,
    method: u16,
    encrypted: bool,
    data: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Read the central directory of `data`.
pub(crate) fn entries(data: &[u8]) -> Result<Vec<Entry<'_>>, ZipError> {
    // The end record is 22 bytes plus a comment of at most 65535.
    let floor = data.len().saturating_sub(22 + 65_535);
    let eocd = (floor..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
        .ok_or(ZipError::Corrupt)?;
    let count = u16_at(data, eocd + 10).ok_or(ZipError::Corrupt)?;
    let cd_offset = u32_at(data, eocd + 16).ok_or(ZipError::Corrupt)?;
    if count == 0xFFFF || cd_offset == 0xFFFF_FFFF {
        return Err(ZipError::Zip64);
    }
    if usize::from(count) > MAX_ENTRIES {
        return Err(ZipError::TooManyEntries);
    }
    let mut out = Vec::with_capacity(usize::from(count));
    let mut pos = cd_offset as usize;
    for _ in 0..count {
        if data.get(pos..pos + 4) != Some(b"PK\x01\x02") {
            return Err(ZipError::Corrupt);
        }
        let field16 = |off| u16_at(data, pos + off).ok_or(ZipError::Corrupt);
        let field32 = |off| u32_at(data, pos + off).ok_or(ZipError::Corrupt);
        let flags = field16(8)?;
        let method = field16(10)?;
        let csize = field32(20)?;
        let size = field32(24)?;
        let name_len = usize::from(field16(28)?);
        let extra_len = usize::from(field16(30)?);
        let comment_len = usize::from(field16(32)?);
        let local = field32(42)?;
        if csize == 0xFFFF_FFFF || size == 0xFFFF_FFFF || local == 0xFFFF_FFFF {
            return Err(ZipError::Zip64);
        }
        let name_bytes = data.get(pos + 46..pos + 46 + name_len).ok_or(ZipError::Corrupt)?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // The data starts after the local header, whose name and extra lengths
        // may differ from the central directory's.
        let local = local as usize;
        if data.get(local..local + 4) != Some(b"PK\x03\x04") {
            return Err(ZipError::Corrupt);
        }
        let l_name = usize::from(u16_at(data, local + 26).ok_or(ZipError::Corrupt)?);
        let l_extra = usize::from(u16_at(data, local + 28).ok_or(ZipError::Corrupt)?);
        let start = local + 30 + l_name + l_extra;
        let body = data.get(start..start + csize as usize).ok_or(ZipError::Corrupt)?;
        out.push(Entry {
            name,
            size: u64::from(size),
            method,
            encrypted: flags & 1 == 1,
            data: body,
        });
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

impl<'a> Entry<'a> {
    /// Compressed size in bytes.
    pub(crate) fn compressed_size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The member's bytes, never more than its declared size. A stored member
    /// is borrowed; a deflated one is inflated in one go into a buffer of
    /// exactly the declared size (no regrowing, no copy).
    pub(crate) fn inflate(&self) -> Result<Cow<'a, [u8]>, ZipError> {
        if self.encrypted {
            return Err(ZipError::Encrypted);
        }
        let size = usize::try_from(self.size).map_err(|_| ZipError::SizeMismatch(self.size))?;
        match self.method {
            0 if self.data.len() == size => Ok(Cow::Borrowed(self.data)),
            0 => Err(ZipError::SizeMismatch(self.size)),
            8 => {
                let mut out = vec![0; size];
                // Raw deflate (no zlib header), the full 32 KiB window.
                let mut inflater = zlib_rs::Inflate::new(false, 15);
                match inflater.decompress(self.data, &mut out, zlib_rs::InflateFlush::Finish) {
                    Ok(zlib_rs::Status::StreamEnd) if inflater.total_out() == self.size => {
                        Ok(Cow::Owned(out))
                    }
                    Ok(zlib_rs::Status::StreamEnd) => Err(ZipError::SizeMismatch(self.size)),
                    // Stopped with the buffer full: more was to come.
                    Ok(_) if inflater.total_out() == self.size => Err(ZipError::SizeMismatch(self.size)),
                    Ok(_) | Err(_) => Err(ZipError::Corrupt),
                }
            }
            m => Err(ZipError::Method(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::zip_writer as writer;

    #[test]
    fn reads_stored_and_deflated_members() {
        let zip = writer::build(&[("a.txt", b"hello", false), ("b.txt", &[b'x'; 1000], true)]);
        let entries = entries(&zip).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "a.txt");
        assert_eq!(*entries[0].inflate().unwrap(), *b"hello");
        assert_eq!(entries[1].size, 1000);
        assert!(entries[1].compressed_size() < 100);
        assert_eq!(entries[1].inflate().unwrap(), vec![b'x'; 1000]);
    }

    #[test]
    fn a_lying_size_is_capped_not_trusted() {
        let mut zip = writer::build(&[("b.txt", &[b'x'; 5000], true)]);
        // Shrink the declared size in the central directory (offset 24 of the entry).
        let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[cd + 24..cd + 28].copy_from_slice(&100u32.to_le_bytes());
        let entries = entries(&zip).unwrap();
        assert_eq!(entries[0].size, 100);
        assert_eq!(entries[0].inflate(), Err(ZipError::SizeMismatch(100)));
    }

    #[test]
    fn a_member_shorter_than_declared_is_refused() {
        for deflate in [true, false] {
            let mut zip = writer::build(&[("b.txt", &[b'x'; 5000], deflate)]);
            let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
            zip[cd + 24..cd + 28].copy_from_slice(&6000u32.to_le_bytes());
            let entries = entries(&zip).unwrap();
            assert_eq!(entries[0].inflate(), Err(ZipError::SizeMismatch(6000)));
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert_eq!(entries(b"PK\x03\x04 not really").unwrap_err(), ZipError::Corrupt);
        let zip = writer::build(&[("a.txt", b"hello", false)]);
        assert!(entries(&zip[..zip.len() - 30]).is_err());
        let mut enc = zip.clone();
        let cd = enc.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        enc[cd + 8] |= 1;
        assert_eq!(entries(&enc).unwrap()[0].inflate(), Err(ZipError::Encrypted));
    }

    /// Made by Python's zipfile (an independent writer): two deflated members.
    const PYTHON_ZIP: &[&[u8]] = &[
        b"\x50\x4b\x03\x04\x14\x00\x00\x00\x08\x00\x5b\x56\x78\x5d\xc3\x45\x05\x38\x1e\x00\x00\x00\x4b\x00",
        b"\x00\x00\x0b\x00\x00\x00\x63\x61\x72\x64\x73\x2f\x61\x2e\x74\x78\x74\x0b\xcb\x2c\x4e\x54\x30\x31",
        b"\x35\x35\x53\x30\x37\x36\x37\x55\xb0\x30\xb3\xb0\x54\xb0\xb4\x30\x35\xe5\x0a\x23\x59\x02\x00\x50",
        b"\x4b\x03\x04\x14\x00\x00\x00\x08\x00\x5b\x56\x78\x5d\xd7\x8e\x29\x22\x09\x00\x00\x00\x07\x00\x00",
        b"\x00\x05\x00\x00\x00\x62\x2e\x74\x78\x74\xcb\xcb\x2f\xc9\xc8\xcc\x4b\x07\x00\x50\x4b\x01\x02\x14",
        b"\x03\x14\x00\x00\x00\x08\x00\x5b\x56\x78\x5d\xc3\x45\x05\x38\x1e\x00\x00\x00\x4b\x00\x00\x00\x0b",
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00\x63\x61\x72\x64\x73\x2f\x61",
        b"\x2e\x74\x78\x74\x50\x4b\x01\x02\x14\x03\x14\x00\x00\x00\x08\x00\x5b\x56\x78\x5d\xd7\x8e\x29\x22",
        b"\x09\x00\x00\x00\x07\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x47\x00",
        b"\x00\x00\x62\x2e\x74\x78\x74\x50\x4b\x05\x06\x00\x00\x00\x00\x02\x00\x02\x00\x6c\x00\x00\x00\x73",
        b"\x00\x00\x00\x00\x00",
    ];

    #[test]
    fn reads_an_archive_from_another_writer() {
        let zip = PYTHON_ZIP.concat();
        let entries = entries(&zip).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["cards/a.txt", "b.txt"]);
        assert_eq!(
            entries[0].inflate().unwrap(),
            "Visa 4556 7375 8689 9855\n".repeat(3).as_bytes()
        );
        assert_eq!(*entries[1].inflate().unwrap(), *b"nothing");
    }
}
