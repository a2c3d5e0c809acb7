//! `host[:port]` of smart hosts, IPv6 literals included (`[::1]:2525`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A smart host: a name or IP literal, and a port (25 when left out).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    /// Name or IP (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host`, `host:port`, `1.2.3.4:25`, `[::1]`, `[::1]:2525`, `::1`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_with_port(raw, 25)
    }

    /// As [`HostPort::parse`], with `default_port` when none is written.
    pub fn parse_with_port(raw: &str, default_port: u16) -> Result<Self, String> {
        let raw = raw.trim();
        let bad = || format!("not a host[:port]: {raw:?}");
        if raw.is_empty() {
            return Err(bad());
        }
        if let Some(rest) = raw.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => default_port,
                p => p.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?,
            };
            return Ok(HostPort {
                host: host.to_string(),
                port,
            });
        }
        if raw.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(HostPort {
                host: raw.to_string(),
                port: default_port,
            });
        }
        let (host, port) = match raw.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (raw, default_port),
        };
        // A colon left in the host is neither a name nor a bracketed IPv6 literal.
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains([':', '[', ']']) {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        HostPort::parse(&value)
    }
}

impl From<HostPort> for String {
    fn from(value: HostPort) -> Self {
        value.to_string()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_literals() {
        assert_eq!(
            HostPort::parse("relay.test").unwrap(),
            HostPort {
                host: "relay.test".into(),
                port: 25
            }
        );
        assert_eq!(HostPort::parse("127.0.0.30:2525").unwrap().port, 2525);
        assert_eq!(
            HostPort::parse("[::1]:2526").unwrap(),
            HostPort {
                host: "::1".into(),
                port: 2526
            }
        );
        assert_eq!(HostPort::parse("::1").unwrap().port, 25);
        assert_eq!(HostPort::parse("[::1]:2526").unwrap().to_string(), "[::1]:2526");
        assert!(HostPort::parse("host:notaport").is_err());
        assert!(HostPort::parse("[::1").is_err());
        // Found by fuzzing: a stray colon in the host does not survive printing.
        assert!(HostPort::parse(":5:5").is_err());
    }
}
