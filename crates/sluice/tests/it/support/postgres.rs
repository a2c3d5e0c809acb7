//! A PostgreSQL server of the test's own (initdb + pg_ctl in a temporary
//! directory, a loopback port, its unix socket in that directory), stopped
//! when dropped, also when the test panics. The same helper the store's
//! unit tests use: no system service, no mock.

// The launcher is test code, not part of the shipped binary: the store's
// unit tests and this binary compile the same file.
#[path = "../../../src/store/postgres/scratch.rs"]
#[allow(dead_code)]
mod scratch;

pub use scratch::ScratchPostgres;

/// `[store]` for a node of the cluster on `server`'s database `database`.
pub fn store_toml(server: &ScratchPostgres, database: &str) -> String {
    format!("\n[store]\nurl = \"{}\"\n", server.url(database))
}

/// `[store]` for a cluster node whose claims lapse after `lease`.
pub fn store_toml_with_lease(server: &ScratchPostgres, database: &str, lease: &str) -> String {
    format!("{}lease = \"{lease}\"\n", store_toml(server, database))
}
