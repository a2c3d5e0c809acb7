//! The only module that knows every stage: builds them from the validated
//! [`Config`], connects them, runs the listeners, and stops them.
//!
//! Start reading here. Objects are loaded from the store into a [`Policy`](crate::policy::Policy)
//! published on a watch channel: each SMTP transaction takes the snapshot in
//! force at its MAIL FROM, the admin API replaces it after each validated
//! change.

mod admin_backend;
mod cluster;
mod intake;
mod tls_reports;

pub use crate::admin::{queue_view, NodeAdmin};
pub use intake::Pipeline;

use crate::config::Config;
use crate::deliver::{Deliverer, DeliveryAttempt, DeliveryJob, DeliverySettings, Outcome};
use crate::message::Reply;
use crate::queue::{Queue, QueueSettings, Transport};
use crate::receive::{ReceiveContext, SessionLimits};
use crate::route::Route;
use crate::store::{EmbeddedStore, PostgresStore, Store, Write};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Internal header naming the outbound connector a message left through.
const ROUTE_HEADER: &str = "X-Sluice-Org-Route";

/// Delivery as the queue sees it: the header firewall on the way out, then
/// the SMTP client or the Maildir.
struct Outbound {
    deliverer: Arc<Deliverer>,
    policy: watch::Receiver<Arc<crate::policy::Policy>>,
}

impl Transport for Outbound {
    fn attempt(&self, mut job: DeliveryJob) -> Pin<Box<dyn Future<Output = DeliveryAttempt> + Send + '_>> {
        // The connector chosen at acceptance is used as it is configured
        // now, as Exchange does: a fixed TLS name or smart host takes effect
        // on the next retry of mail already queued.
        let mut limits = crate::deliver::ConnectionLimits::default();
        if let Route::Connector { connector, .. } = &job.route {
            let current = self.policy.borrow().outbound_connector(connector).map(|c| {
                limits = crate::deliver::ConnectionLimits {
                    max_connections: c.max_connections,
                    max_messages_per_connection: c.max_messages_per_connection,
                };
                Route::from(c)
            });
            if let Some(route) = current {
                job.route = route;
            }
        }
        let retain = match &job.route {
            Route::Connector {
                retain_internal_headers,
                ..
            } => *retain_internal_headers,
            Route::Mailbox => true,
            Route::Mx => false,
        };
        if !retain {
            let (stripped, removed) = crate::classify::header_firewall::strip_internal_headers(&job.content);
            if !removed.is_empty() {
                job.content = Arc::new(stripped);
            }
        } else if let Route::Connector { connector, .. } = &job.route {
            // SPEC section 5: the routing decision travels with the message
            // to destinations that keep internal headers.
            let stamp = crate::rules::HeaderEdit::Set {
                name: ROUTE_HEADER.into(),
                value: format!("connector={connector}"),
            };
            job.content = Arc::new(crate::rules::apply_edits(&job.content, &[stamp]));
        }
        if let Route::Connector {
            connector,
            max_message_size: Some(max),
            ..
        } = &job.route
        {
            if job.content.len() as u64 > *max {
                let reply = Reply::new(
                    552,
                    [5, 3, 4],
                    format!("Message size exceeds the limit of connector {connector:?} ({max} bytes)"),
                );
                let outcomes = job
                    .recipients
                    .iter()
                    .map(|r| (r.address.clone(), Outcome::PermFail(reply.clone())))
                    .collect();
                return Box::pin(async move {
                    DeliveryAttempt {
                        host: None,
                        tls: None,
                        dsn_passed_on: false,
                        tls_policy: None,
                        outcomes,
                    }
                });
            }
        }
        Box::pin(async move { self.deliverer.attempt_with(&job, limits).await })
    }
}

/// A running node.
pub struct Node {
    /// SMTP listener addresses (after binding; port 0 resolved).
    pub smtp: Vec<SocketAddr>,
    /// Admin API address.
    pub admin: SocketAddr,
    /// The spool.
    pub queue: Queue,
    /// The node's management operations (what the admin API serves).
    pub management: Arc<NodeAdmin>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: Arc<dyn Store>,
}

impl Node {
    /// Builds every stage and starts listening.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let resolver = crate::dns::resolver(&config.dns).context("cannot set up DNS resolution")?;
        let secure = if config.dane {
            let secure = crate::dns::secure_resolver(&config.dns, config.dnssec_trust_anchor.as_deref())
                .context("cannot set up DNSSEC validation for DANE")?;
            Some(secure)
        } else {
            None
        };
        Node::start_with_resolvers(config, resolver, secure).await
    }

    /// Builds every stage over `resolver`, with DNSSEC-validating lookups
    /// for DANE when `secure` is given.
    async fn start_with_resolvers(
        config: Config,
        resolver: Arc<dyn crate::dns::Resolver>,
        secure: Option<Arc<dyn crate::dns::SecureResolver>>,
    ) -> anyhow::Result<Node> {
        raise_open_files_limit(config.max_connections);
        crate::private_dir::secure_data_dir(&config.data_dir)
            .with_context(|| format!("cannot create a private data_dir {}", config.data_dir.display()))?;
        let mut shared = None;
        let store: Arc<dyn Store> = match config.store_url.as_str() {
            "embedded" => EmbeddedStore::open(&config.data_dir)?,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let postgres = PostgresStore::connect(url, &config.hostname)
                    .context("cannot open the PostgreSQL store")?;
                shared = Some(postgres.clone());
                postgres
            }
            other => anyhow::bail!("store.url {other:?} is neither \"embedded\" nor postgres://..."),
        };
        let objects = store.objects()?;
        let partner = config.partner.clone().map(|settings| crate::tenant::PartnerNode {
            settings,
            log: Arc::new(crate::tenant::validation::ValidationLog::new(&config.data_dir)),
        });
        let policy = crate::policy::Policy::compile(&objects).context("stored objects are invalid")?;
        let policy =
            policy.with_validation_address(crate::tenant::PartnerNode::validation_address(partner.as_ref()));
        let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
        let keys = Arc::new(
            crate::auth::keys::Keyring::load(store.clone(), Some(resolver.clone()))
                .context("cannot read the DKIM keys")?,
        );
        let auth = Arc::new(crate::auth::Authenticator::new(
            &config.dns,
            config.hostname.clone(),
            config.auth.clone(),
            keys.clone(),
        )?);

        let mut settings = DeliverySettings::new(config.hostname.clone(), config.data_dir.clone());
        settings.extra_ca = config.extra_ca.clone();
        settings.bind_address = config.bind_address;
        settings.mx_port = config.mx_port;
        settings.max_per_destination = config.max_per_destination;
        let mut deliverer = Deliverer::new(settings, resolver).context("cannot set up delivery")?;
        if let Some(secure) = secure {
            deliverer = deliverer.with_dane(secure);
        }
        if config.mta_sts {
            deliverer = deliverer
                .with_mta_sts(store.clone(), config.mta_sts_port)
                .context("cannot set up MTA-STS")?;
        }
        if config.dane || config.mta_sts {
            let from = match &config.reporting_from {
                Some(from) => from.clone(),
                None => crate::message::Address::parse(&format!("tls-reports@{}", config.hostname))
                    .context("[reporting] from is unset and tls-reports@HOSTNAME is not an address")?,
            };
            let reports = crate::deliver::TlsReports::new(store.clone(), config.hostname.clone(), from);
            deliverer = deliverer.with_tls_reports(Arc::new(reports));
        }
        let deliverer = Arc::new(deliverer);
        let queue = Queue::start(
            store.clone(),
            Arc::new(Outbound {
                deliverer: deliverer.clone(),
                policy: policy_rx.clone(),
            }),
            QueueSettings {
                delivery_memory: crate::queue::ContentMemory::new(config.content_memory / 2),
                destinations: crate::queue::DestinationSettings {
                    down_after: config.destination_down_after,
                    probe_first: config.destination_probe,
                    probe_max: config.destination_probe_max,
                },
                lease: config.store_lease,
                ..QueueSettings::new(
                    config.hostname.clone(),
                    config.retry.clone(),
                    config.expire_after,
                    config.max_concurrency,
                )
            },
            policy_rx.clone(),
        )?;

        let spool_dir = prepare_incoming(&config.data_dir)?;
        let tls = crate::tls::server_config(
            config.tls_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            config.client_ca.as_deref(),
            &config.data_dir,
            &config.hostname,
        )
        .context("cannot set up TLS")?;
        let pipeline: Arc<dyn crate::receive::Intake> = Arc::new(Pipeline {
            queue: queue.clone(),
            policy: policy_rx.clone(),
            hostname: config.hostname.clone(),
            scan_limits: crate::scan::ScanLimits {
                time_budget: Some(config.scan_budget),
                ..crate::scan::ScanLimits::default()
            },
            content_slots: Arc::new(tokio::sync::Semaphore::new(Pipeline::default_content_slots())),
            memory: crate::queue::ContentMemory::new(config.content_memory / 2),
            auth: Some(auth),
        });
        // A scanner takes its tenants' validation messages out first.
        let intake: Arc<dyn crate::receive::Intake> = match &partner {
            Some(node) => Arc::new(crate::tenant::validation::PartnerIntake {
                inner: pipeline,
                validation_address: node.settings.validation_address.clone(),
                log: node.log.clone(),
            }),
            None => pipeline,
        };
        let context = Arc::new(ReceiveContext {
            hostname: config.hostname.clone(),
            limits: SessionLimits {
                max_message_size: config.max_message_size,
                max_recipients: config.max_recipients,
                max_connections: config.max_connections,
                max_connections_per_ip: config.max_connections_per_ip,
                max_errors: config.max_errors,
                command_timeout: config.command_timeout,
                data_timeout: config.data_timeout,
                session_timeout: config.session_timeout,
                spool: Some(crate::receive::framing::Spool {
                    dir: spool_dir,
                    threshold: crate::receive::framing::SPOOL_CHUNK,
                }),
                free_space: Some(crate::store::space::FreeSpace::new(
                    &config.data_dir,
                    config.min_free,
                )),
                ..SessionLimits::default()
            },
            tls: Some(tls),
            policy: policy_rx.clone(),
            intake,
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut smtp = Vec::new();
        for address in &config.smtp_listen {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for SMTP on {address}"))?;
            smtp.push(listener.local_addr()?);
            tasks.push(tokio::spawn(crate::receive::serve(
                listener,
                context.clone(),
                shutdown_rx.clone(),
            )));
        }

        let token =
            crate::admin::load_or_create_token(&config.data_dir).context("cannot create the admin token")?;
        let backend = admin_backend::node_admin(
            store.clone(),
            queue.clone(),
            policy_tx,
            deliverer.clone(),
            partner,
            keys,
        );
        tasks.push(tls_reports::spawn_daily(
            deliverer,
            queue.clone(),
            shutdown_rx.clone(),
        ));
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen for the admin API on {}", config.admin_listen))?;
        let admin = admin_listener.local_addr()?;
        let router = crate::admin::router(backend.clone(), token);
        let mut admin_stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = admin_stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(admin_listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %error, "admin API stopped");
            }
        }));

        let _ = backend.directory.set(crate::admin::nodes::Directory {
            name: config.hostname.clone(),
            smtp: smtp.clone(),
            admin,
            shared: shared.clone(),
        });
        if let Some(postgres) = shared {
            tasks.extend(cluster::start(
                postgres,
                backend.clone(),
                &smtp,
                admin,
                shutdown_rx.clone(),
            )?);
        }
        tasks.push(tokio::spawn(prune_trace(
            store.clone(),
            config.trace_retention,
            shutdown_rx,
        )));
        tracing::info!(smtp = ?smtp, admin = %admin, hostname = %config.hostname, "sluice node started");
        Ok(Node {
            smtp,
            admin,
            queue,
            management: backend,
            shutdown,
            tasks,
            store,
        })
    }

    /// Stops accepting, lets sessions end, waits for the writes already
    /// handed to the store, and returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        // Trace events are submitted without waiting for their commit; an
        // empty commit queues behind them, so its answer means they are on disk.
        if let Ok(Err(error)) =
            tokio::time::timeout(Duration::from_secs(10), self.store.commit(Vec::new())).await
        {
            tracing::error!(error = %error, "writes pending at stop were not committed");
        }
    }
}

/// The directory where sessions spool large messages as they arrive.
/// Files left there belong to sessions of a previous run that never
/// finished (the node stopped mid-transfer): nothing refers to them.
fn prepare_incoming(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = data_dir.join("incoming");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Message content is private to the node's user, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))?;
    let mut removed = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(files = removed, "removed partial messages of the previous run");
    }
    Ok(dir)
}

/// Raises the soft limit on open files to the hard limit: every session
/// holds a descriptor, and a default soft limit of 1024 would refuse clients
/// long before `max_connections`. Logged either way, so an operator sees
/// the ceiling the node runs under.
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let current = getrlimit(Resource::Nofile);
    let wanted = rustix::process::Rlimit {
        current: current.maximum,
        maximum: current.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, wanted) {
        Ok(()) => current.maximum,
        Err(error) => {
            tracing::warn!(error = %error, "cannot raise the open files limit");
            current.current
        }
    };
    let soft_text = soft.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    tracing::info!(
        open_files = %soft_text,
        was = %current.current.map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
        "open files limit"
    );
    if soft.is_some_and(|n| n < max_connections as u64 + 64) {
        tracing::warn!(
            open_files = %soft_text,
            max_connections,
            "the open files limit is below smtp.max_connections: clients beyond it get 421"
        );
    }
}

async fn prune_trace(store: Arc<dyn Store>, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        let cutoff = crate::trace::now_ms().saturating_sub(retention.as_millis() as u64);
        store.submit(vec![Write::PruneTrace(cutoff)]);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    node.stop().await;
    Ok(())
}
