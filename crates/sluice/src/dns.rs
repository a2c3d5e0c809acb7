//! Name resolution for delivery: MX with preference order and A/AAAA.
//! A trait so tests can point at a local DNS server (the real resolver,
//! `delivery.dns`) and unit tests can use a table.
