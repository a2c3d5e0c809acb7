//! The real-peer harness: every test starts the processes it talks to
//! (sluice itself, Postfix, smtp-sink, dnsmasq, swaks) on loopback and every
//! process is stopped by a Drop guard, so a failing assertion leaves nothing
//! running.
//!
//! Isolation: each test owns one `Net` (127.0.N.0/24 with its own N), so
//! tests that run in parallel under nextest never share an address, and the
//! ports they bind cannot clash with each other or with a system MTA on 25.

#![allow(dead_code)] // each test uses a different part of the harness

mod bind;
mod deferring;
mod dns;
mod https;
mod node;
mod postfix;
pub mod postgres;
mod process;
pub mod seed000;
mod sink;
mod smtp;
mod tls;

pub use bind::{Bind, Zones};
pub use deferring::DeferringRelay;
pub use dns::{Dns, Record};
pub use https::PolicyServer;
pub use node::{contoso_with_on_prem, on_prem_relay, Node, NodeOptions};
pub use postfix::{OnPremOptions, Postfix};
pub use process::Guarded;
pub use sink::{Sink, SinkMessage};
pub use smtp::{swaks, RawSmtp, SwaksRun};
pub use tls::{CertFiles, TestCa};

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The /24 of loopback a single test owns: `127.0.N.host`.
#[derive(Debug, Clone, Copy)]
pub struct Net(pub u8);

impl Net {
    /// An address inside this test's block.
    pub fn ip(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.0, host)
    }

    /// A free TCP port on one of this test's addresses.
    pub fn addr(self, host: u8) -> SocketAddr {
        let ip = self.ip(host);
        SocketAddr::new(ip.into(), free_port(ip))
    }
}

/// A TCP port nobody listens on at `ip` right now. The kernel picks it, so
/// it is outside the ranges system daemons use; the small window before the
/// caller binds it is harmless because no other test uses the same address.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind port 0 on loopback");
    listener.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        pause(Duration::from_millis(50));
    }
}

/// The tests poll real processes, so real time has to pass between polls.
#[allow(clippy::disallowed_methods)]
pub fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// True when the tests run as root (Postfix and smtp-sink want to know).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
