//! Everything under `data_dir` is private to the node's user (SPEC section
//! 11): directories 0700, files 0600, whatever the umask the node was
//! started with. The spool, the trace, Maildirs, the admin token and
//! generated keys all hold mail or secrets.
//!
//! Modes are given explicitly at creation (a umask can only take bits away,
//! so 0700/0600 survive a permissive one), and at start the data directory
//! and what sits directly in it are set back to private, which also covers
//! a tree made by an older version: nothing below a 0700 directory is
//! reachable by other users.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory under data_dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under data_dir.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents as private directories, and makes
/// `path` itself private if it already existed.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Options that create a private file (add `write`, `create_new`...).
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Makes data_dir private, with everything directly in it: run at start.
pub fn secure_data_dir(data_dir: &Path) -> io::Result<()> {
    create_dir_all(data_dir)?;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let mode = if file_type.is_dir() {
            DIR_MODE
        } else if file_type.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn existing_open_tree_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("tls")).unwrap();
        std::fs::write(data.join("sluice.redb"), b"x").unwrap();
        for path in [data.clone(), data.join("tls"), data.join("sluice.redb")] {
            std::fs::set_permissions(&path, Permissions::from_mode(0o777)).unwrap();
        }
        secure_data_dir(&data).unwrap();
        assert_eq!(mode(&data), DIR_MODE);
        assert_eq!(mode(&data.join("tls")), DIR_MODE);
        assert_eq!(mode(&data.join("sluice.redb")), FILE_MODE);
    }
}
