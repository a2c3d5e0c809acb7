//! A PostgreSQL server of the test's own (initdb + pg_ctl in a temporary
//! directory, a loopback port, its unix socket in that directory), stopped
//! when dropped, also when the test panics. The same helper the store's
//! unit tests use: no system service, no mock.

pub use sluice::store::postgres::scratch::ScratchPostgres;

/// `[store]` for a node of the cluster on `server`'s database `database`.
pub fn store_toml(server: &ScratchPostgres, database: &str) -> String {
    format!("\n[store]\nurl = \"{}\"\n", server.url(database))
}
