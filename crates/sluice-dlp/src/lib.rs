//! # sluice-dlp: sensitive-data detection for mail
//!
//! A pure crate: no async runtime, no SMTP, no I/O beyond the bytes the caller
//! passes in, and no logging (matched values are sensitive and never leave
//! through this crate except in the returned [`Finding`]s).
//!
//! Two entry points:
//! - [`scan_text`] scans one decoded text for all detectors in one pass.
//! - [`scan_message`] decodes a raw RFC 5322 message (every MIME part, HTML,
//!   Office documents, PDF, nested messages, zip archives) under
//!   [`ScanLimits`] and scans each decoded text once, returning a [`ScanReport`].
//!
//! Detectors, their validation and confidence rules are listed in the crate's
//! README.md. Layout: `finding` (the public vocabulary), `scan` (the one-pass
//! text scanner and its detectors), `validate` (checksums and ranges),
//! `extract` (MIME and attachment decoding, bounded).

mod custom;
mod edm;
mod extract;
mod finding;
mod scan;
mod validate;

pub use custom::{check_name, CustomDetector, CustomError, Validator};
pub use edm::{normalize, random_salt, Digest, EdmDigests, EdmError, EdmSet, DIGEST_LEN};
pub use extract::{scan_message, scan_message_with, ScanLimits, ScanReport, Scanner};
pub use finding::{mask, Confidence, Detector, Finding, Location, NameError};
pub use scan::scan_text;
