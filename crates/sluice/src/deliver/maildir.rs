//! Local delivery into Maildir (`data_dir/mailboxes/DOMAIN/LOCAL/`), so any
//! IMAP server or mail client can read the node's own mailboxes.
//!
//! A message counts as delivered only once it is durable: written to
//! `tmp/` under a unique name, fsynced, renamed into `new/`, and the
//! directory fsynced (the Maildir protocol, plus the fsyncs that make the
//! rename survive a crash).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes deliveries within one process and one microsecond.
static DELIVERY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The mailbox directory of `local@domain` under `root`: both parts
/// lower-cased, path separators replaced and leading dots removed so a
/// recipient can never name a directory outside its domain.
pub(super) fn mailbox_path(root: &Path, domain: &str, local: &str) -> PathBuf {
    root.join(path_component(domain)).join(path_component(local))
}

fn path_component(raw: &str) -> String {
    let cleaned: String = raw
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '/' | '\\' | '\0' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "_".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Writes `content` as a new message in the Maildir at `mailbox` (created
/// when missing); returns the file's final path.
pub(super) fn deliver(mailbox: &Path, hostname: &str, content: &[u8]) -> io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        crate::private_dir::create_dir_all(&mailbox.join(sub))?;
    }
    let name = unique_name(hostname);
    let tmp = mailbox.join("tmp").join(&name);
    let new = mailbox.join("new").join(&name);
    let written = (|| {
        let mut file = crate::private_dir::file_options()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    fs::rename(&tmp, &new)?;
    File::open(mailbox.join("new"))?.sync_all()?;
    Ok(new)
}

/// `seconds.M<micros>P<pid>Q<counter>.<host>`, the Maildir naming scheme.
fn unique_name(hostname: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let host: String = hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        DELIVERY_COUNTER.fetch_add(1, Ordering::Relaxed),
        host
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn mailbox_paths_cannot_escape() {
        let root = Path::new("/data/mailboxes");
        assert_eq!(
            mailbox_path(root, "contoso.test", "Alice"),
            root.join("contoso.test").join("alice")
        );
        assert_eq!(
            mailbox_path(root, "contoso.test", "../../etc/passwd"),
            root.join("contoso.test").join("_.._etc_passwd")
        );
        assert_eq!(
            mailbox_path(root, "contoso.test", ".hidden"),
            root.join("contoso.test").join("hidden")
        );
        assert_eq!(mailbox_path(root, "x.test", "..."), root.join("x.test").join("_"));
    }

    #[test]
    fn delivery_lands_in_new_with_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = mailbox_path(dir.path(), "contoso.test", "bob");
        let first = deliver(&mailbox, "gw.test", b"Subject: one\r\n\r\nbody\r\n").unwrap();
        let second = deliver(&mailbox, "gw.test", b"Subject: two\r\n\r\nbody\r\n").unwrap();
        assert_ne!(first, second);
        assert_eq!(first.parent().unwrap(), mailbox.join("new"));
        assert_eq!(fs::read(&first).unwrap(), b"Subject: one\r\n\r\nbody\r\n");
        assert!(mailbox.join("cur").is_dir());
        assert_eq!(fs::read_dir(mailbox.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(mailbox.join("new")).unwrap().count(), 2);
    }
}
