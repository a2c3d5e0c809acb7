//! The harness's real peers behave as the other tests assume. These run
//! without sluice, so a broken Postfix or dnsmasq setup shows up here
//! rather than as a confusing sluice failure. Nets 2-4.

use crate::support::{swaks, Dns, Net, Postfix, RawSmtp, Record, Sink, TestCa};
use std::time::Duration;

#[test]
fn sink_records_envelope_and_exact_content() {
    let net = Net(2);
    let sink = Sink::start(net.ip(10));
    let (mut client, greeting) = RawSmtp::connect(sink.addr).expect("connect to sink");
    assert_eq!(greeting.code, 220);
    let content = "Subject: peers\r\nX-Test: 1\r\n\r\n..dot-stuffed line\r\nlast line";
    let reply = client
        .send_message("a@contoso.test", &["b@fabrikam.test"], content)
        .expect("send");
    assert_eq!(reply.code, 250, "{reply:?}");
    let messages = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mail_from, "<a@contoso.test>");
    assert_eq!(messages[0].rcpt_to, vec!["<b@fabrikam.test>".to_string()]);
    assert_eq!(
        messages[0].content,
        "Subject: peers\nX-Test: 1\n\n.dot-stuffed line\nlast line\n"
    );
    assert_eq!(messages[0].header("x-test").as_deref(), Some("1"));

    let refusing = Sink::refusing_rcpt(net.ip(11), "550 5.1.1 no such user");
    let run = swaks(
        refusing.addr,
        &["--from", "a@contoso.test", "--to", "b@fabrikam.test"],
    );
    assert_eq!(run.code, Some(24), "{}", run.transcript);
    assert!(run.transcript.contains("550 5.1.1 no such user"));
    assert_eq!(refusing.count(), 0);
}

#[test]
fn postfix_offers_starttls_and_relays_to_its_sink() {
    let net = Net(3);
    let certs = tempfile::tempdir().expect("cert dir");
    let ca = TestCa::new("Sluice Test CA");
    let ca_file = ca.write_ca(certs.path(), "ca.pem");
    let smtpd_ip = net.ip(21).to_string();
    let leaf = ca.leaf(certs.path(), "relay", &["relay.partner.test", smtpd_ip.as_str()]);
    let postfix = Postfix::start(net.ip(21), net.ip(22), Some(&leaf));
    // OpenSSL (in swaks) verifies the chain and the IP name: the test CA's
    // certificates are well-formed for peers other than rustls too.
    let ca_arg = ca_file.display().to_string();
    let run = swaks(
        postfix.addr,
        &[
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &ca_arg,
            "--from",
            "a@contoso.test",
            "--to",
            "b@fabrikam.test",
            "--header",
            "Subject: through postfix",
        ],
    );
    assert!(run.delivered(), "{}", run.transcript);
    assert!(
        run.transcript.contains("TLS started") && run.transcript.contains("relay.partner.test"),
        "{}",
        run.transcript
    );
    let messages = postfix.sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(messages.len(), 1, "postfix did not relay to its sink");
    assert_eq!(messages[0].header("subject").as_deref(), Some("through postfix"));
    assert_eq!(
        messages[0].rcpt_to[0].split(' ').next(),
        Some("<b@fabrikam.test>")
    );
}

#[test]
fn dnsmasq_serves_declared_mx_records() {
    let net = Net(4);
    let dns = Dns::start(
        net.ip(53),
        &[
            Record::Mx {
                domain: "fabrikam.test",
                host: "mx1.fabrikam.test",
                preference: 10,
            },
            Record::A {
                name: "mx1.fabrikam.test",
                ip: net.ip(25),
            },
        ],
    );
    let dig = |name: &str, kind: &str| lookup(dns.addr, name, kind);
    assert_eq!(dig("fabrikam.test", "MX"), 0);
    assert_eq!(dig("mx1.fabrikam.test", "A"), 0);
    assert_eq!(dig("nowhere.test", "MX"), 3, "unknown .test names are NXDOMAIN");
}

/// The rcode of a query for `name`/`kind` (A or MX) at `server`.
fn lookup(server: std::net::SocketAddr, name: &str, kind: &str) -> u8 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut query = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&[0, if kind == "MX" { 15 } else { 1 }, 0, 1]);
    socket.send_to(&query, server).expect("send query");
    let mut reply = [0u8; 512];
    let (n, _) = socket.recv_from(&mut reply).expect("dns reply");
    assert!(n >= 12 && reply[..2] == [0xab, 0xcd]);
    reply[3] & 0x0f
}
