use super::*;

#[test]
fn only_results_claiming_this_node_are_removed() {
    let message = b"Authentication-Results: gw.contoso.test; spf=pass\r\n \tsmtp.mailfrom=x@y.test\r\n\
Authentication-Results: mx.other.test; dkim=pass\r\n\
AUTHENTICATION-RESULTS:  GW.CONTOSO.TEST ; dmarc=pass\r\n\
Subject: Authentication-Results: gw.contoso.test; in the subject\r\n\
\r\n\
Authentication-Results: gw.contoso.test; in the body stays\r\n";
    let cleaned = String::from_utf8(remove_forged_results(message, "gw.contoso.test")).unwrap();
    assert_eq!(
        cleaned,
        "Authentication-Results: mx.other.test; dkim=pass\r\n\
Subject: Authentication-Results: gw.contoso.test; in the subject\r\n\
\r\n\
Authentication-Results: gw.contoso.test; in the body stays\r\n"
    );
}

fn failing(policy: DmarcPolicy) -> AuthSummary {
    AuthSummary {
        spf: AuthResult::Fail,
        dkim: vec![AuthResult::None],
        dmarc: AuthResult::Fail,
        arc: AuthResult::None,
        from_domain: "fabrikam.test".into(),
        dmarc_policy: policy,
        trusted_sealer: None,
    }
}

#[test]
fn dmarc_policy_decides_only_failures_and_only_when_enforced() {
    let settings = AuthSettings::default();
    match failing(DmarcPolicy::Reject).disposition(&settings) {
        Disposition::Reject(reply) => {
            let text = reply.to_string();
            assert!(text.starts_with("550 5.7.1"), "{text}");
            assert!(text.contains("DMARC policy of fabrikam.test"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        failing(DmarcPolicy::Quarantine).disposition(&settings),
        Disposition::Quarantine(_)
    ));
    assert_eq!(
        failing(DmarcPolicy::None).disposition(&settings),
        Disposition::Accept
    );
    let passing = AuthSummary {
        dmarc: AuthResult::Pass,
        ..failing(DmarcPolicy::Reject)
    };
    assert_eq!(passing.disposition(&settings), Disposition::Accept);
    let off = AuthSettings {
        dmarc_enforce: false,
        ..AuthSettings::default()
    };
    assert_eq!(
        failing(DmarcPolicy::Reject).disposition(&off),
        Disposition::Accept
    );
    let vouched = AuthSummary {
        trusted_sealer: Some("scan.partner.test".into()),
        ..failing(DmarcPolicy::Reject)
    };
    assert_eq!(vouched.disposition(&settings), Disposition::Accept);
}

#[test]
fn results_parse_in_rfc_8601_words() {
    for result in AuthResult::ALL {
        assert_eq!(AuthResult::parse(result.as_str()), Some(result));
    }
    assert_eq!(AuthResult::parse("PASS"), Some(AuthResult::Pass));
    assert_eq!(AuthResult::parse("hardfail"), None);
}

#[test]
fn the_client_of_a_received_header_is_found() {
    assert_eq!(
        received_client("from mail.fabrikam.test (mail.fabrikam.test [192.0.2.7])\r\n\tby mx.partner.test with ESMTPS id 1; Mon, 30 Nov 2026"),
        Some(("192.0.2.7".parse().unwrap(), "mail.fabrikam.test".to_string()))
    );
    assert_eq!(
        received_client("from [IPv6:2001:db8::5] (helo=x) by gw.test"),
        Some(("2001:db8::5".parse().unwrap(), "[IPv6:2001:db8::5]".to_string()))
    );
    assert_eq!(received_client("by gw.test with ESMTP; Mon"), None);
    assert_eq!(
        received_client("from a.test by b.test ([10.0.0.1])"),
        None,
        "an address after `by` is the recorder's"
    );
}

#[test]
fn a_copy_is_signed_over_its_own_header_and_the_shared_body_as_if_joined() {
    let key = keys::StoredKey::generate("contoso.test", "s1", keys::KeyAlgorithm::Ed25519).unwrap();
    let original = MessageContent::new(
        b"From: a@contoso.test\r\nSubject: one\r\n\r\nline one\r\n\r\nSubject: not a field\r\n".to_vec(),
    );
    let copy = original.with_header(b"From: a@contoso.test\r\nSubject: two\r\nX-Copy: 2\r\n\r\n".to_vec());
    for content in [&original, &copy] {
        // Signed within the same second the two signatures are the same
        // octets; across a second boundary only t= and b= may differ.
        let (in_pieces, joined) = loop {
            let in_pieces = signature(&key, content.fields_and_rest()).unwrap();
            let joined = signature(&key, [content.to_vec().as_slice()]).unwrap();
            let tag = |s: &str, name: &str| {
                s.split(';')
                    .map(|t| t.split_whitespace().collect::<String>())
                    .find(|t| t.starts_with(&format!("{name}=")))
            };
            if tag(&in_pieces, "t") == tag(&joined, "t") {
                break (in_pieces, joined);
            }
        };
        assert_eq!(in_pieces, joined);
    }
}
