//! Address, domain, pattern and host parsing: no panics; what parses
//! prints back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::message::{Address, Domain, DomainPattern};
use sluice::route::HostPort;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(a) = Address::parse(text) {
        assert_eq!(Address::parse(&a.to_string()).ok(), Some(a));
    }
    if let Ok(d) = Domain::parse(text) {
        assert_eq!(Domain::parse(d.as_str()).ok(), Some(d));
    }
    if let Ok(p) = DomainPattern::parse(text) {
        assert_eq!(DomainPattern::parse(&p.to_string()).ok(), Some(p));
    }
    if let Ok(h) = HostPort::parse(text) {
        assert_eq!(HostPort::parse(&h.to_string()).ok(), Some(h));
    }
});
