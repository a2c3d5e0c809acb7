//! Everything under data_dir is private to the node's user (SPEC section
//! 11): a node started with umask 000 still makes its store, Maildir,
//! admin token and generated TLS key 0600 in 0700 directories. Net 213.

use crate::support::{swaks, wait_until, Net, Node, NodeOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NODE: u8 = 1;

/// Every path under `root` with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        out.push((path.clone(), meta.is_dir(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
    }
    out
}

#[test]
fn data_dir_is_private_whatever_the_umask() {
    let net = Net(213);
    let mut options = NodeOptions::new(
        net.ip(NODE),
        r#"
[[accepted_domain]]
name = "contoso.test"
type = "authoritative"
"#,
    );
    options.umask = Some(0o000);
    let node = Node::start(options);
    let run = swaks(
        node.smtp,
        &[
            "--from",
            "mallory@fabrikam.test",
            "--to",
            "bob@contoso.test",
            "--header",
            "Subject: private",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(
        wait_until(Duration::from_secs(20), || !node
            .mailbox("contoso.test", "bob")
            .is_empty()),
        "not delivered to the Maildir; queue {:?}",
        node.queue_json()
    );

    let data = node.data_dir();
    let all = modes(&data);
    for expected in [
        data.join("sluice.redb"),
        data.join("admin.token"),
        data.join("tls/self-signed.key"),
        data.join("mailboxes/contoso.test/bob/new"),
    ] {
        assert!(
            all.iter().any(|(path, ..)| *path == expected),
            "{expected:?} missing from {all:#?}"
        );
    }
    let open: Vec<&(PathBuf, bool, u32)> = all
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .collect();
    assert!(open.is_empty(), "not private under umask 000: {open:#?}");
    // The delivered message itself is in there, and private.
    assert!(all.iter().any(|(path, is_dir, mode)| !is_dir
        && *mode == 0o600
        && path.parent().is_some_and(|p| p.ends_with("bob/new"))));
}
