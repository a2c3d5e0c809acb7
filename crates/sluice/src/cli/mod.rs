//! The command line (SPEC section 2): `serve` and `check-config` run
//! locally; every management verb is a thin client of the admin API
//! ([`crate::admin`]), sharing its request and view types so the two never
//! drift.
//!
//! Output: human text in aligned columns, or with `--json` the API's views,
//! pretty-printed. Exit codes: 0 success, 1 runtime failure (node
//! unreachable, refused, "no such ..."), 2 usage or configuration error.
//! Errors are one line on stderr; `-v` adds the detail below it.

mod client;
mod connector_flags;
mod demo;
mod dkim;
mod domain_check;
mod domain_tls;
mod edm;
mod node;
mod objects;
mod output;
mod quarantine;
mod queue;
pub(crate) mod route;
mod rule;
mod scan;
mod tenant;
mod tlsrpt;
mod trace;

pub use connector_flags::{
    CommonConnectorFlags, ConnectorSetArgs, ConnectorTypeArg, InboundFlags, NewInboundArgs, NewOutboundArgs,
    OutboundFlags, TlsArg,
};
pub use quarantine::QuarantineCommand;
pub use rule::{NewRuleArgs, RuleCommand, RuleFlags, RuleModeArg, ScopeArg};
pub use tenant::{KitFormatArg, TenantCommand};

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// `sluice`: one binary for the node and its management.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A mail-flow gateway")]
pub struct Cli {
    /// Options every verb understands.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Node configuration file (also tells management verbs the admin
    /// address and where the token lives) [default: /etc/sluice/sluice.toml
    /// when it exists, else built-in settings with data in ./sluice-data].
    #[arg(long, global = true, value_name = "FILE", env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Admin API of the node, http://HOST:PORT or HOST:PORT [default: the config's admin.listen, else http://127.0.0.1:8025].
    #[arg(long, global = true, value_name = "URL")]
    pub api: Option<String>,
    /// Admin token [default: data_dir/admin.token].
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the detail behind an error.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve,
    /// Validate the node configuration and print the effective settings.
    CheckConfig,
    /// Upsert objects from a TOML file, all or nothing.
    Apply(ApplyArgs),
    /// Print every object as TOML (round-trips through apply).
    Export,
    /// Accepted domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Inbound and outbound connectors.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// Mail flow rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// The delivery queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Messages a rule held back.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// The message trace: one line per event, grouped by message.
    Trace(TraceArgs),
    /// TLS-RPT (RFC 8460) reports of outbound TLS.
    #[command(subcommand)]
    Tlsrpt(TlsRptCommand),
    /// Routing dry runs.
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// A scanner node's tenants: onboard, show health, print their kit, remove.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Run the reference topology (gateway, scanner, internet) on loopback
    /// and show the trace of a clean and a sensitive message.
    Demo,
    /// Exact data match: load salted hashes of listed values.
    #[command(subcommand)]
    Edm(edm::EdmCommand),
    /// DLP scan of messages: one JSON line per file (no node needed).
    Scan {
        /// Messages (RFC 5322 files).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print each match exactly as it stands in the decoded part (default:
        /// masked, `4111 **** **** 1111`).
        #[arg(long)]
        show_matches: bool,
    },
    /// DKIM keys: made by the node, records to publish, rotation.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// The nodes sharing this node's store.
    #[command(subcommand)]
    Node(NodeCommand),
}

/// `sluice node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node sharing the store: addresses, version, last heartbeat, leased work.
    List(JsonFlag),
}

/// `sluice dkim ...`.
#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Make a key for a domain and print the DNS TXT record to publish.
    New {
        /// Signing domain.
        domain: String,
        /// Selector (default selector1, or selector2 when selector1 exists).
        #[arg(long)]
        selector: Option<String>,
        /// Key type.
        #[arg(long, value_enum, default_value_t = DkimAlgorithmArg::Ed25519)]
        algorithm: DkimAlgorithmArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every key.
    List(JsonFlag),
    /// Show a domain's keys with their records.
    Show {
        /// Signing domain.
        domain: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign the domain's mail with this selector from now on (rotation).
    Activate {
        /// Signing domain.
        domain: String,
        /// Selector.
        selector: String,
    },
    /// Retire a key.
    Remove {
        /// Signing domain.
        domain: String,
        /// Selector.
        selector: String,
    },
}

/// `--algorithm` of `dkim new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DkimAlgorithmArg {
    /// Ed25519-SHA256 (RFC 8463).
    Ed25519,
    /// RSA-SHA256, 2048 bits.
    Rsa,
}

/// `sluice tlsrpt ...`.
#[derive(Debug, Subcommand)]
pub enum TlsRptCommand {
    /// Queue the reports counted so far, today's included.
    Send(JsonFlag),
}

/// `sluice apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// TOML file of objects.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Remove stored objects that the file does not name.
    #[arg(long)]
    pub prune: bool,
}

/// `sluice domain ...`.
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// List accepted domains.
    List(JsonFlag),
    /// Add an accepted domain.
    Add {
        /// The domain.
        name: String,
        /// Whether every mailbox lives here.
        #[arg(long = "type", value_enum, default_value_t = DomainTypeArg::Authoritative)]
        kind: DomainTypeArg,
    },
    /// Remove an accepted domain.
    Remove {
        /// The domain.
        name: String,
    },
    /// Compare the domain's MX and SPF records in DNS with what this node
    /// needs (DNS from the config's delivery.dns); exit 1 on a mismatch.
    Check {
        /// The domain.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--type` of `domain add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DomainTypeArg {
    /// Every mailbox lives on this node.
    Authoritative,
    /// Unknown mailboxes are relayed by MX.
    #[value(alias = "internal_relay")]
    InternalRelay,
}

/// `sluice connector ...`.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// List inbound and outbound connectors.
    List(JsonFlag),
    /// Show one connector as TOML.
    Show {
        /// Connector name.
        name: String,
        /// Needed when the name exists as both kinds.
        #[arg(long, value_enum)]
        kind: Option<ConnectorKindArg>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a connector.
    Remove(ConnectorName),
    /// Enable a connector.
    Enable(ConnectorName),
    /// Disable a connector.
    Disable(ConnectorName),
    /// Create an inbound connector.
    NewInbound(Box<NewInboundArgs>),
    /// Create an outbound connector.
    NewOutbound(Box<NewOutboundArgs>),
    /// Change the keys named by the flags given; the rest stay.
    Set(Box<ConnectorSetArgs>),
    /// Validate an outbound connector: connect, TLS as configured, a test
    /// message; exit 1 when a step fails.
    Validate {
        /// Outbound connector name.
        name: String,
        /// Test message recipient [default: the connector's validation_recipients].
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A connector named on the command line.
#[derive(Debug, Args)]
pub struct ConnectorName {
    /// Connector name.
    pub name: String,
    /// Needed when the name exists as both kinds.
    #[arg(long, value_enum)]
    pub kind: Option<ConnectorKindArg>,
}

/// `--kind` of connector verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectorKindArg {
    /// An inbound connector.
    Inbound,
    /// An outbound connector.
    Outbound,
}

/// `sluice queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queue entries.
    List {
        /// Only entries with this status.
        #[arg(long, value_enum)]
        status: Option<QueueStatusArg>,
        /// At most this many entries (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one entry with its recipients.
    Show {
        /// Queue id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Waiting recipients by destination domain and age, as Postfix's qshape.
    Summary {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attempt an entry (or, with --all, every waiting entry) now. A held
    /// entry is never retried: release it. A failed early attempt keeps the
    /// entry's retry schedule.
    Retry {
        /// Queue id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every waiting entry except held ones.
        #[arg(long)]
        all: bool,
    },
    /// Stop attempting an entry until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held entry.
    Release {
        /// Queue id.
        id: String,
    },
    /// Delete an entry (or, with --all, every entry, or those a filter
    /// names) without notifying the sender.
    Delete {
        /// Queue id.
        #[arg(required_unless_present = "all", conflicts_with_all = ["all", "status", "domain"])]
        id: Option<String>,
        /// Every entry (`postsuper -d ALL`), or those --status and --domain name.
        #[arg(long)]
        all: bool,
        /// With --all: only entries with this status.
        #[arg(long, value_enum, requires = "all")]
        status: Option<QueueStatusArg>,
        /// With --all: only entries with a waiting recipient in this domain.
        #[arg(long, requires = "all")]
        domain: Option<String>,
    },
}

/// `--status` of `queue list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueStatusArg {
    /// Waiting for the first attempt.
    Queued,
    /// Temporarily failed, waiting for a retry.
    Deferred,
    /// Held by an administrator.
    Held,
}

/// `sluice trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Message-ID.
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,
    /// Envelope sender.
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Envelope recipient.
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    /// Only events newer than this: 30m, 1h, 2d.
    #[arg(long, value_name = "DUR", value_parser = parse_since)]
    pub since: Option<String>,
    /// Only messages with an event of this status (rejected: refused in session).
    #[arg(long, value_name = "S", value_parser = trace_status_words())]
    pub status: Option<String>,
    /// At most this many events (default: all, fetched page by page; with
    /// a filter, the newest this many).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--json` of list verbs.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn trace_status_words() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::trace::TraceKind::ALL.map(|kind| kind.as_str()))
}

fn parse_since(text: &str) -> Result<String, String> {
    crate::config::parse_duration(text).map(|_| text.to_string())
}

/// A failed command: the line to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// 1 runtime, 2 usage or configuration.
    pub exit_code: u8,
    /// One line for stderr.
    pub message: String,
    /// More, shown with `-v`.
    pub detail: Option<String>,
}

impl Failure {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit_code: 2,
            message: message.into(),
            detail: None,
        }
    }

    /// A runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            exit_code: 1,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds what `-v` shows.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Failure {
        self.detail = Some(detail.into());
        self
    }
}

/// Runs a parsed command line; errors are printed here.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", output::safe(&failure.message));
            if let (true, Some(detail)) = (cli.global.verbose, &failure.detail) {
                eprintln!("{detail}");
            }
            ExitCode::from(failure.exit_code)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<(), Failure> {
    let global = &cli.global;
    match &cli.command {
        Command::Serve => node::serve(global),
        Command::CheckConfig => node::check_config(global),
        Command::Apply(args) => objects::apply(global, args),
        Command::Export => objects::export(global),
        Command::Domain(command) => objects::domain(global, command),
        Command::Connector(command) => objects::connector(global, command),
        Command::Rule(command) => rule::run(global, command),
        Command::Queue(command) => queue::run(global, command),
        Command::Quarantine(command) => quarantine::run(global, command),
        Command::Trace(args) => trace::run(global, args),
        Command::Tlsrpt(command) => tlsrpt::run(global, command),
        Command::Route(command) => route::run(global, command),
        Command::Edm(command) => edm::run(global, command),
        Command::Scan { files, show_matches } => scan::run(files, *show_matches),
        Command::Tenant(command) => tenant::run(global, command),
        Command::Demo => demo::run(),
        Command::Dkim(command) => dkim::run(global, command),
        Command::Node(NodeCommand::List(flag)) => node::list(global, flag.json),
    }
}

#[cfg(test)]
mod tests;
