//! Argument parsing: the verbs and options of SPEC section 2.

use super::*;
use clap::error::ErrorKind;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
}

#[test]
fn serve_and_check_config_take_a_config_file() {
    let cli = parse(&["serve", "--config", "node.toml"]).unwrap();
    assert!(matches!(cli.command, Command::Serve));
    assert_eq!(cli.global.config, Some(PathBuf::from("node.toml")));
    let cli = parse(&["--config", "a.toml", "check-config"]).unwrap();
    assert!(matches!(cli.command, Command::CheckConfig));
    assert_eq!(cli.global.config, Some(PathBuf::from("a.toml")));
}

#[test]
fn apply_needs_a_file() {
    let cli = parse(&["apply", "-f", "objects.toml", "--prune"]).unwrap();
    match cli.command {
        Command::Apply(args) => {
            assert_eq!(args.file, PathBuf::from("objects.toml"));
            assert!(args.prune);
        }
        other => panic!("{other:?}"),
    }
    let error = parse(&["apply"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    assert_eq!(error.exit_code(), 2);
}

#[test]
fn global_options_go_anywhere() {
    let cli = parse(&[
        "queue",
        "list",
        "--status",
        "deferred",
        "--json",
        "--api",
        "http://127.0.0.2:9000",
        "--token",
        "t0k",
        "-v",
    ])
    .unwrap();
    assert_eq!(cli.global.api.as_deref(), Some("http://127.0.0.2:9000"));
    assert_eq!(cli.global.token.as_deref(), Some("t0k"));
    assert!(cli.global.verbose);
    match cli.command {
        Command::Queue(QueueCommand::List { status, json, .. }) => {
            assert_eq!(status, Some(QueueStatusArg::Deferred));
            assert!(json);
        }
        other => panic!("{other:?}"),
    }
    let error = parse(&["queue", "list", "--status", "lost"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
}

#[test]
fn queue_retry_takes_an_id_or_all_but_not_both() {
    let cli = parse(&["queue", "retry", "01J0ABC"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Queue(QueueCommand::Retry { id: Some(ref id), all: false }) if id == "01J0ABC"
    ));
    let cli = parse(&["queue", "retry", "--all"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Queue(QueueCommand::Retry { id: None, all: true })
    ));
    assert_eq!(
        parse(&["queue", "retry"]).unwrap_err().kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        parse(&["queue", "retry", "X", "--all"]).unwrap_err().kind(),
        ErrorKind::ArgumentConflict
    );
}

#[test]
fn domain_add_types_accept_both_spellings() {
    for (word, expected) in [
        ("authoritative", DomainTypeArg::Authoritative),
        ("internal-relay", DomainTypeArg::InternalRelay),
        ("internal_relay", DomainTypeArg::InternalRelay),
    ] {
        let cli = parse(&["domain", "add", "contoso.test", "--type", word]).unwrap();
        match cli.command {
            Command::Domain(DomainCommand::Add { name, kind }) => {
                assert_eq!(name, "contoso.test");
                assert_eq!(kind, expected);
            }
            other => panic!("{other:?}"),
        }
    }
    let cli = parse(&["domain", "add", "contoso.test"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Domain(DomainCommand::Add {
            kind: DomainTypeArg::Authoritative,
            ..
        })
    ));
}

#[test]
fn connector_verbs_take_a_name_and_an_optional_kind() {
    let cli = parse(&["connector", "disable", "To scanner", "--kind", "outbound"]).unwrap();
    match cli.command {
        Command::Connector(ConnectorCommand::Disable(target)) => {
            assert_eq!(target.name, "To scanner");
            assert_eq!(target.kind, Some(ConnectorKindArg::Outbound));
        }
        other => panic!("{other:?}"),
    }
    let cli = parse(&["connector", "show", "From scanner", "--json"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Connector(ConnectorCommand::Show {
            kind: None,
            json: true,
            ..
        })
    ));
    assert_eq!(
        parse(&["connector", "show", "x", "--kind", "sideways"])
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidValue
    );
}

#[test]
fn trace_filters_parse_and_since_must_be_a_duration() {
    let cli = parse(&[
        "trace",
        "--message-id",
        "<m@x>",
        "--from",
        "a@contoso.test",
        "--since",
        "1h",
        "--status",
        "bounced",
    ])
    .unwrap();
    match cli.command {
        Command::Trace(args) => {
            assert_eq!(args.message_id.as_deref(), Some("<m@x>"));
            assert_eq!(args.from.as_deref(), Some("a@contoso.test"));
            assert_eq!(args.since.as_deref(), Some("1h"));
            assert_eq!(args.status.as_deref(), Some("bounced"));
            assert!(!args.json);
        }
        other => panic!("{other:?}"),
    }
    let error = parse(&["trace", "--since", "yesterday"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ValueValidation);
    assert_eq!(error.exit_code(), 2);
    // A status word that names no trace event is refused, not matched against nothing.
    let error = parse(&["trace", "--status", "refused"]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("rejected"), "{error}");
    assert!(parse(&["trace", "--status", "rejected"]).is_ok());
}

#[test]
fn unknown_verbs_are_usage_errors() {
    let error = parse(&["frobnicate"]).unwrap_err();
    assert_eq!(error.exit_code(), 2);
}

#[test]
fn the_command_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn wildcard_admin_listeners_are_reached_on_loopback() {
    use client::api_url;
    assert_eq!(api_url("0.0.0.0:8025".parse().unwrap()), "http://127.0.0.1:8025");
    assert_eq!(
        api_url("127.0.0.5:9000".parse().unwrap()),
        "http://127.0.0.5:9000"
    );
    assert_eq!(api_url("[::]:8025".parse().unwrap()), "http://[::1]:8025");
}

#[test]
fn path_segments_and_queries_are_encoded() {
    assert_eq!(client::segment("To scanner/1"), "To%20scanner%2F1");
    assert_eq!(
        client::query(&[
            ("message_id", Some("<a@x>".into())),
            ("from", None),
            ("since", Some("1h".into()))
        ]),
        "?message_id=%3Ca%40x%3E&since=1h"
    );
    assert_eq!(client::query(&[("status", None)]), "");
}

/// The client against a real HTTP listener on loopback, serving the admin
/// router over the node backend on a temporary store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_talks_to_a_live_admin_api() {
    use crate::admin::tests::{TestNode, TOKEN};
    use crate::config::objects::{AcceptedDomain, AcceptedDomainType, OutboundConnectorObject};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let node = TestNode::new().await;
    let router = crate::admin::router(node.backend(), TOKEN.into());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    // A port that was just free and is closed again: nothing listens there.
    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", probe.local_addr().unwrap())
    };

    tokio::task::spawn_blocking(move || {
        let global = |api: &str, token: &str| GlobalArgs {
            config: None,
            api: Some(api.to_string()),
            token: Some(token.to_string()),
            verbose: false,
        };
        let client = client::ApiClient::connect(&global(&url, TOKEN)).unwrap();

        let domain = AcceptedDomain {
            name: "contoso.test".into(),
            kind: AcceptedDomainType::InternalRelay,
        };
        client.post("accepted-domains", &domain).unwrap();
        let listed: Vec<AcceptedDomain> = client.get("accepted-domains").unwrap();
        assert_eq!(listed, vec![domain.clone()]);

        let duplicate = Failure::from(client.post("accepted-domains", &domain).err().unwrap());
        assert_eq!(duplicate.exit_code, 1);
        assert!(
            duplicate.message.contains("already exists"),
            "{}",
            duplicate.message
        );

        let missing = Failure::from(client.delete("accepted-domains/nope.test").err().unwrap());
        assert_eq!(
            (missing.exit_code, missing.message.as_str()),
            (1, "no such accepted domain \"nope.test\"")
        );

        // A name with a space and a slash survives the trip through the path.
        let connector: OutboundConnectorObject = serde_json::from_str(
            r#"{"name": "To scanner/1", "smart_hosts": ["127.0.0.30:2525"], "transport_rule_scoped": true}"#,
        )
        .unwrap();
        client.post("outbound-connectors", &connector).unwrap();
        let path = format!("outbound-connectors/{}", client::segment("To scanner/1"));
        let mut fetched: OutboundConnectorObject = client.get(&path).unwrap();
        assert_eq!(fetched, connector);
        fetched.enabled = false;
        client.put(&path, &fetched).unwrap();
        let fetched: OutboundConnectorObject = client.get(&path).unwrap();
        assert!(!fetched.enabled);

        let refused = client::ApiClient::connect(&global(&url, "wrong"))
            .unwrap()
            .get::<Vec<AcceptedDomain>>("accepted-domains")
            .err()
            .map(Failure::from)
            .unwrap();
        assert!(
            refused.message.contains("refused the admin token"),
            "{}",
            refused.message
        );

        let unreachable = client::ApiClient::connect(&global(&closed, TOKEN))
            .unwrap()
            .get::<Vec<AcceptedDomain>>("accepted-domains")
            .err()
            .map(Failure::from)
            .unwrap();
        assert_eq!(unreachable.exit_code, 1);
        assert!(
            unreachable
                .message
                .starts_with(&format!("no sluice node is running at {closed} (")),
            "{}",
            unreachable.message
        );
    })
    .await
    .unwrap();
    server.abort();
}

#[test]
fn rule_and_quarantine_verbs_parse() {
    let cli = parse(&["rule", "show", "Block cards", "--json"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Rule(RuleCommand::Show { ref name, json: true }) if name == "Block cards"
    ));
    let cli = parse(&["rule", "disable", "Block cards"]).unwrap();
    assert!(matches!(cli.command, Command::Rule(RuleCommand::Disable { .. })));
    let cli = parse(&["quarantine", "list", "--json"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Quarantine(QuarantineCommand::List { json: true, .. })
    ));
    let cli = parse(&["quarantine", "release", "01J0ABC"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Quarantine(QuarantineCommand::Release { ref id }) if id == "01J0ABC"
    ));
    assert_eq!(
        parse(&["quarantine", "show"]).unwrap_err().kind(),
        ErrorKind::MissingRequiredArgument
    );
    assert_eq!(
        parse(&["quarantine", "release", "Q1", "--json"])
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownArgument
    );
}

/// `rule new`, `rule list`, `connector new-outbound`, `connector set` and
/// `quarantine ...` against the admin router over the node backend, on
/// a real loopback listener, as a user runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_and_quarantine_verbs_against_a_live_admin_api() {
    use crate::admin::tests::{TestNode, TOKEN};
    use crate::config::objects::{OutboundConnectorObject, TlsLevel};
    use crate::config::rule_object::RuleObject;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let node = TestNode::with_quarantine(&["Q1"]).await;
    let router = crate::admin::router(node.backend(), TOKEN.into());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| -> Result<(), Failure> {
            let mut all = vec!["--api", url.as_str(), "--token", TOKEN];
            all.extend_from_slice(args);
            let cli = parse(&all).unwrap();
            dispatch(&cli)
        };
        let client = client::ApiClient::connect(&GlobalArgs {
            config: None,
            api: Some(url.clone()),
            token: Some(TOKEN.into()),
            verbose: false,
        })
        .unwrap();

        // A rule routing to a connector that does not exist yet: the node's
        // validation refuses it, exit 2, naming the key.
        let new_rule = [
            "rule",
            "new",
            "--name",
            "External mail through the scanner",
            "--priority",
            "5",
            "--sent-to-scope",
            "not_in_organization",
            "--except-header-contains",
            "X-Sluice-Org-Scan:verdict=pass",
            "--route-via-connector",
            "To scanner",
        ];
        let refused = run(&new_rule).unwrap_err();
        assert_eq!(refused.exit_code, 2, "{}", refused.message);
        assert!(
            refused.message.starts_with("invalid rule: "),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("route_via_connector"),
            "{}",
            refused.message
        );
        assert!(client.get::<Vec<RuleObject>>("rules").unwrap().is_empty());

        // The same node validation refuses a bad connector, naming the key.
        let refused = run(&[
            "connector",
            "new-outbound",
            "--name",
            "To scanner",
            "--recipient-domain",
            "*",
        ])
        .unwrap_err();
        assert_eq!(refused.exit_code, 2, "{}", refused.message);
        assert!(
            refused.message.starts_with("invalid outbound connector: "),
            "{}",
            refused.message
        );
        assert!(refused.message.contains("smart_hosts"), "{}", refused.message);

        run(&[
            "connector",
            "new-outbound",
            "--name",
            "To scanner",
            "--smart-host",
            "127.0.0.30:2525",
            "--transport-rule-scoped",
        ])
        .unwrap();
        run(&new_rule).unwrap();
        run(&[
            "rule",
            "new",
            "--name",
            "Tag everything",
            "--prepend-subject",
            "[x] ",
        ])
        .unwrap();
        let duplicate = run(&["rule", "new", "--name", "Tag everything"]).unwrap_err();
        assert_eq!(duplicate.exit_code, 1);
        assert!(
            duplicate.message.contains("already exists"),
            "{}",
            duplicate.message
        );

        let listed: Vec<RuleObject> = client.get("rules").unwrap();
        let mut by_priority = listed.clone();
        by_priority.sort_by_key(|r| r.priority);
        let names: Vec<&str> = by_priority.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Tag everything", "External mail through the scanner"]);
        let table = rule::rule_table(&by_priority);
        assert!(table.lines().nth(2).unwrap().starts_with("5 "), "{table}");
        run(&["rule", "list"]).unwrap();

        run(&[
            "rule",
            "set",
            "tag everything",
            "--priority",
            "9",
            "--stop-processing",
        ])
        .unwrap();
        run(&["rule", "disable", "External mail through the scanner"]).unwrap();
        let tag: RuleObject = client.get("rules/Tag%20everything").unwrap();
        assert_eq!((tag.priority, tag.stop_processing), (9, true));
        assert_eq!(tag.actions.prepend_subject.as_deref(), Some("[x] "));
        let scanner: RuleObject = client
            .get(&format!(
                "rules/{}",
                client::segment("External mail through the scanner")
            ))
            .unwrap();
        assert!(!scanner.enabled);
        assert_eq!(scanner.priority, 5);
        let unknown = run(&["rule", "enable", "Nobody"]).unwrap_err();
        assert_eq!(
            (unknown.exit_code, unknown.message.as_str()),
            (1, "no such rule \"Nobody\"")
        );

        run(&[
            "connector",
            "set",
            "To scanner",
            "--tls",
            "encryption-only",
            "--helo-name",
            "gw.test",
        ])
        .unwrap();
        let connector: OutboundConnectorObject = client.get("outbound-connectors/To%20scanner").unwrap();
        assert_eq!(connector.tls, TlsLevel::EncryptionOnly);
        assert_eq!(connector.helo_name, "gw.test");
        assert_eq!(connector.smart_hosts, vec!["127.0.0.30:2525".to_string()]);
        let wrong_kind = run(&["connector", "set", "To scanner", "--require-tls"]).unwrap_err();
        assert_eq!(wrong_kind.exit_code, 2);
        // A set that breaks the connector is refused by the node, and nothing changes.
        let broken = run(&[
            "connector",
            "set",
            "To scanner",
            "--transport-rule-scoped=false",
            "--recipient-domain",
            "bad domain!",
        ])
        .unwrap_err();
        assert_eq!(broken.exit_code, 2, "{}", broken.message);
        assert!(broken.message.contains("recipient_domains"), "{}", broken.message);
        let unchanged: OutboundConnectorObject = client.get("outbound-connectors/To%20scanner").unwrap();
        assert_eq!(unchanged, connector);

        run(&["quarantine", "list"]).unwrap();
        run(&["quarantine", "show", "Q1", "--json"]).unwrap();
        let missing = run(&["quarantine", "show", "Q9"]).unwrap_err();
        assert_eq!(
            (missing.exit_code, missing.message.as_str()),
            (1, "no such quarantined message \"Q9\"")
        );
        run(&["quarantine", "release", "Q1"]).unwrap();
        let again = run(&["quarantine", "delete", "Q1"]).unwrap_err();
        assert_eq!(
            (again.exit_code, again.message.as_str()),
            (1, "no such quarantined message \"Q1\"")
        );
        assert!(client
            .get::<Vec<crate::admin::QuarantineView>>("quarantine")
            .unwrap()
            .is_empty());
    })
    .await
    .unwrap();
    server.abort();
}
