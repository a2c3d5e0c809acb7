//! sluice: a mail-flow gateway.
//!
//! # Layout
//!
//! The modules are the pipeline, in the order a message travels:
//!
//! 1. [`receive`]: SMTP sessions, STARTTLS, relay control, DATA/BDAT framing.
//! 2. [`classify`]: which inbound connector a session belongs to.
//! 3. rules and scan (later): mail flow rules and the DLP scanner.
//! 4. [`route`]: which outbound connector, next hop and TLS level per recipient.
//! 5. `queue`: the durable spool, retry schedule, expiry and DSNs.
//! 6. [`deliver`]: the SMTP client (smart hosts, MX, TLS policy) and Maildir.
//! 7. `trace`: the stored message trace.
//!
//! Around them: [`message`] (shared data), [`config`] (node settings and
//! objects), `store` (persistence), `admin` and `cli` (management),
//! [`dns`], [`tls`], [`private_dir`] (modes under data_dir), and `server`,
//! the only module that wires every stage.

pub mod admin;
pub mod auth;
pub mod classify;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod dns;
pub mod message;
pub mod policy;
pub mod private_dir;
pub mod queue;
pub mod receive;
pub mod route;
pub mod rules;
pub mod scan;
pub mod server;
pub mod store;
pub mod tenant;
pub mod tls;
pub mod trace;

#[cfg(test)]
mod import_rules;
