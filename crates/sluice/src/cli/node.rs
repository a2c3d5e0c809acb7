//! The node itself: `serve` starts one, `check-config` validates its
//! configuration (neither needs a running node), `node list` asks a
//! running node which nodes share its store.

use super::{Failure, GlobalArgs};
use crate::config::{Config, DnsSource};
use std::path::Path;
use std::time::Duration;

/// `sluice serve`: loads the config, then runs the node on a multi-thread
/// runtime until it stops. Only this verb builds a runtime: the management
/// verbs are blocking HTTP calls.
pub(crate) fn serve(global: &GlobalArgs) -> Result<(), Failure> {
    let config = load(global)?;
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::runtime(format!("cannot start the runtime: {error}")))?;
    runtime
        .block_on(crate::server::run(config))
        .map_err(|error| Failure::runtime(one_line(&error)).with_detail(format!("{error:?}")))
}

/// `sluice check-config`: prints the effective settings.
pub(crate) fn check_config(global: &GlobalArgs) -> Result<(), Failure> {
    let config = load(global)?;
    let cert = config
        .tls_cert
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    crate::tls::check_files(cert, config.client_ca.as_deref(), config.extra_ca.as_deref())
        .map_err(|error| Failure::usage(error.to_string()))?;
    print!("{}", effective_settings(&config));
    Ok(())
}

/// `sluice node list`: every node sharing the store of the node asked.
pub(crate) fn list(global: &GlobalArgs, as_json: bool) -> Result<(), Failure> {
    let client = super::client::ApiClient::connect(global)?;
    let nodes: Vec<crate::admin::NodeView> = client.get("nodes")?;
    if as_json {
        print!("{}", super::output::json(&nodes)?);
        return Ok(());
    }
    let mut table = super::output::Table::new(&["NAME", "SMTP", "ADMIN", "VERSION", "HEARTBEAT", "LEASED"]);
    for node in &nodes {
        let marker = if node.this_node { " *" } else { "" };
        table.row(vec![
            format!("{}{marker}", node.name),
            node.smtp.join(","),
            node.admin.clone(),
            node.version.clone(),
            format!("{}s ago", node.heartbeat_age_ms / 1000),
            node.leased.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

fn load(global: &GlobalArgs) -> Result<Config, Failure> {
    super::client::load_config(global)
}

/// Every cause on one line ("cannot listen for SMTP on ADDR: Address
/// already in use"), not the outer context alone; a cause whose text the
/// line already holds (errors that print their source) is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Operator logs to stderr; `RUST_LOG` overrides the default level (info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not for log files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// The settings in the shape of `sluice.toml`, defaults filled in.
pub(crate) fn effective_settings(config: &Config) -> String {
    let mut lines: Vec<String> = Vec::new();
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let path = |p: &Path| p.display().to_string();
    let optional = |p: Option<&Path>| p.map(path).unwrap_or_default();
    let list = |items: Vec<String>| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    lines.push("[node]".to_string());
    lines.push(format!("hostname = {:?}", config.hostname));
    lines.push(format!("data_dir = {:?}", path(&config.data_dir)));
    lines.push("\n[store]".to_string());
    lines.push(format!("url = {:?}", redact_password(&config.store_url)));
    lines.push(format!("lease = {:?}", duration(config.store_lease)));
    lines.push("\n[smtp]".to_string());
    lines.push(format!(
        "listen = {}",
        list(config.smtp_listen.iter().map(|a| a.to_string()).collect())
    ));
    match &config.tls_cert {
        Some((cert, key)) => {
            lines.push(format!("tls_cert = {:?}", path(cert)));
            lines.push(format!("tls_key = {:?}", path(key)));
        }
        None => {
            lines.push("# tls_cert/tls_key unset: a self-signed pair in data_dir".to_string());
        }
    }
    lines.push(format!("client_ca = {:?}", optional(config.client_ca.as_deref())));
    lines.push(format!("max_message_size = {}", config.max_message_size));
    lines.push(format!("max_recipients = {}", config.max_recipients));
    lines.push(format!("max_connections = {}", config.max_connections));
    lines.push("\n[delivery]".to_string());
    lines.push(format!(
        "retry = {}",
        list(config.retry.iter().map(|d| duration(*d)).collect())
    ));
    lines.push(format!("expire_after = {:?}", duration(config.expire_after)));
    let dns = match config.dns {
        DnsSource::System => "system".to_string(),
        DnsSource::Server(addr) => addr.to_string(),
    };
    lines.push(format!("dns = {dns:?}"));
    lines.push(format!("extra_ca = {:?}", optional(config.extra_ca.as_deref())));
    lines.push(format!("max_concurrency = {}", config.max_concurrency));
    lines.push(format!("max_per_destination = {}", config.max_per_destination));
    let bind = config.bind_address.map(|a| a.to_string()).unwrap_or_default();
    lines.push(format!("bind_address = {bind:?}"));
    lines.push(format!("mx_port = {}", config.mx_port));
    lines.push(format!("dane = {}", config.dane));
    lines.push(format!("mta_sts = {}", config.mta_sts));
    if let Some(anchor) = &config.dnssec_trust_anchor {
        lines.push(format!(
            "dnssec_trust_anchor = {:?}",
            anchor.display().to_string()
        ));
    }
    lines.push(format!("mta_sts_port = {}", config.mta_sts_port));
    lines.push("\n[reporting]".to_string());
    let from = match &config.reporting_from {
        Some(from) => from.to_string(),
        None => format!("tls-reports@{}", config.hostname),
    };
    lines.push(format!("from = {from:?}"));
    lines.push("\n[admin]".to_string());
    lines.push(format!("listen = {:?}", config.admin_listen.to_string()));
    lines.push("\n[trace]".to_string());
    lines.push(format!("retention = {:?}", duration(config.trace_retention)));
    lines.push("\n[auth]".to_string());
    lines.push(format!("dmarc_enforce = {}", config.auth.dmarc_enforce));
    lines.push(format!(
        "trusted_arc_sealers = {:?}",
        config.auth.trusted_arc_sealers
    ));
    if let Some(seal) = &config.auth.arc_seal {
        lines.push(format!(
            "arc_seal = {{ domain = {:?}, selector = {:?} }}",
            seal.domain, seal.selector
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`: the
/// output of check-config is pasted into tickets.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_holds_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(io).context("cannot listen for SMTP on 127.0.0.1:25");
        assert_eq!(
            one_line(&error),
            "cannot listen for SMTP on 127.0.0.1:25: Address already in use"
        );
        let tls = crate::tls::check_files(
            Some((Path::new("/nonexistent/c.pem"), Path::new("k.pem"))),
            None,
            None,
        )
        .unwrap_err();
        let text = one_line(&anyhow::Error::new(tls).context("cannot set up TLS"));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.contains("/nonexistent/c.pem"), "{text}");
    }

    #[test]
    fn effective_settings_show_defaults_and_given_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "[node]\nhostname = \"gw.contoso.test\"\n[store]\nurl = \"postgres://u:hunter2@db/s\"\n\
             [admin]\nlisten = \"127.0.0.1:9025\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        let text = effective_settings(&config);
        assert!(text.contains("hostname = \"gw.contoso.test\""), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:9025\""), "{text}");
        assert!(text.contains("retry = [\"1m\", \"5m\""), "{text}");
        assert!(text.contains("expire_after = \"2days\""), "{text}");
        assert!(text.contains("postgres://u:***@db/s"), "{text}");
        assert!(!text.contains("hunter2"));
    }
}
