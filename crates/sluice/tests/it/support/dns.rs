//! dnsmasq as the only resolver sluice sees in a test: it answers the MX and
//! A records a test declares, NXDOMAIN for other `.test` names, and never
//! forwards anything to the system resolver.

use super::{free_port, pause, Guarded};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dns {
    /// What `delivery.dns` should point at.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _process: Guarded,
}

/// One record a test serves.
pub enum Record<'a> {
    /// `domain` has an MX `host` with `preference`.
    Mx {
        domain: &'a str,
        host: &'a str,
        preference: u16,
    },
    /// `name` has the A record `ip`.
    A { name: &'a str, ip: Ipv4Addr },
    /// `name` has a TXT record with `text` (split into the 255-byte
    /// strings DNS carries; a verifier joins them). dnsmasq takes quotes
    /// literally and commas as string breaks, so `text` has neither.
    Txt { name: &'a str, text: &'a str },
}

impl Dns {
    /// Starts dnsmasq on a free port of `ip` serving `records`.
    pub fn start(ip: Ipv4Addr, records: &[Record<'_>]) -> Dns {
        // TCP and UDP share the number; a free TCP port is almost always a
        // free UDP port too on an address no other test uses.
        Dns::start_at(SocketAddr::new(ip.into(), free_port(ip)), records)
    }

    /// Starts dnsmasq on `addr` (chosen earlier, when a node's config must
    /// name the server before the records are known).
    pub fn start_at(addr: SocketAddr, records: &[Record<'_>]) -> Dns {
        let dir = tempfile::tempdir().expect("dns temp dir");
        let (ip, port) = (addr.ip(), addr.port());
        let mut command = Command::new("dnsmasq");
        command
            .arg("--no-daemon")
            .arg(format!("--port={port}"))
            .arg(format!("--listen-address={ip}"))
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-poll")
            .arg("--local=/test/")
            .arg(format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()))
            .arg("--log-queries")
            .arg("--log-facility=-");
        for record in records {
            match record {
                Record::Mx {
                    domain,
                    host,
                    preference,
                } => command.arg(format!("--mx-host={domain},{host},{preference}")),
                Record::A { name, ip } => command.arg(format!("--host-record={name},{ip}")),
                Record::Txt { name, text } => {
                    let strings: Vec<String> = text
                        .as_bytes()
                        .chunks(255)
                        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                        .collect();
                    command.arg(format!("--txt-record={name},{}", strings.join(",")))
                }
            };
        }
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("dns log");
        command
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log));
        let mut process = Guarded::spawn(command);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(addr) {
            if process.exited().is_some() || Instant::now() > deadline {
                panic!(
                    "dnsmasq did not start on {addr}: {}",
                    std::fs::read_to_string(dir.path().join("dnsmasq.log")).unwrap_or_default()
                );
            }
            pause(Duration::from_millis(50));
        }
        Dns {
            addr,
            _dir: dir,
            _process: process,
        }
    }
}

/// Sends one query (A for `ready.test`) and waits briefly for any reply.
fn answers(server: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if socket.send_to(&query, server).is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    matches!(socket.recv_from(&mut reply), Ok((n, _)) if n >= 12 && reply[..2] == [0x12, 0x34])
}
