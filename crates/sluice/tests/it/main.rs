//! The one integration test binary. Every test here runs real programs on
//! loopback (sluice itself, Postfix, smtp-sink, dnsmasq, swaks) through the
//! harness in `support`, each test in its own 127.0.N.0/24 (N is listed at
//! the top of each file) so nextest can run them in parallel.

mod support;

mod admin_ui;
mod connectors;
mod content_work;
mod dane;
mod delivery_tls;
mod demo;
mod display_safety;
mod dlp;
mod dsn;
mod durability;
mod header_forgery;
mod limits;
mod liveness;
mod mta_sts;
mod mx_delivery;
mod openapi;
mod operator;
mod paging;
mod partner;
mod peers;
mod private_data;
mod queue_verbs;
mod readme;
mod refusals;
mod relay_control;
mod rules;
mod scanner;
mod smart_host;
mod smuggling;
mod spooling;
mod topology_a;
mod topology_b;
