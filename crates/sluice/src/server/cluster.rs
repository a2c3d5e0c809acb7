//! A node's part in a cluster sharing one PostgreSQL store (SPEC section
//! 8): it registers itself and heartbeats, puts in force the objects
//! another node changed, and gives its leases back when it stops. (The
//! queue's claims and renewals are the queue's: `queue/lease.rs`.)

use crate::admin::NodeAdmin;
use crate::store::PostgresStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a node tells the others it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often the objects' counter is compared, in case a notification
/// was lost with a connection.
const OBJECTS_POLL: Duration = Duration::from_secs(10);

/// Registers the node and starts its heartbeat and object follower.
pub(super) fn start(
    store: Arc<PostgresStore>,
    backend: Arc<NodeAdmin>,
    smtp: &[SocketAddr],
    admin: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let smtp: Vec<String> = smtp.iter().map(ToString::to_string).collect();
    store.register_node(&smtp.join(","), &admin.to_string(), env!("CARGO_PKG_VERSION"))?;
    let changes = store.watch_objects(OBJECTS_POLL);
    Ok(vec![
        tokio::spawn(heartbeat(store.clone(), shutdown.clone())),
        tokio::spawn(follow_objects(store, backend, changes, shutdown)),
    ])
}

async fn heartbeat(store: Arc<PostgresStore>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        if stopping {
            // A clean stop hands this node's queued work to the others
            // now, not when its leases lapse.
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.release_leases()).await {
                Ok(Ok(released)) if released > 0 => tracing::info!(released, "leases given back"),
                Ok(Err(error)) => tracing::warn!(error = %error, "cannot give back leases"),
                _ => {}
            }
            return;
        }
        if let Err(error) = store.heartbeat() {
            tracing::warn!(error = %error, "cannot record this node's heartbeat");
        }
    }
}

/// Reloads the policy and the DKIM keys each time the configuration's
/// counter moves (objects and keys both move it): a change through this
/// node's admin API moves it too, and reloading the same configuration
/// again changes nothing.
async fn follow_objects(
    store: Arc<PostgresStore>,
    backend: Arc<NodeAdmin>,
    mut changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    changes.borrow_and_update();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let version = *changes.borrow_and_update();
        if let Err(error) = backend.keys.reload().await {
            tracing::error!(version, error = %error, "cannot read the DKIM keys changed in the store; keys kept");
        }
        // Not while this node's admin API is changing them.
        let _guard = backend.writes.lock().await;
        let loaded = crate::store::Store::objects(store.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|objects| crate::policy::Policy::compile(&objects).map_err(|e| e.to_string()));
        match loaded {
            Ok(policy) => {
                let policy = policy.with_validation_address(crate::tenant::PartnerNode::validation_address(
                    backend.partner.as_ref(),
                ));
                backend.policy.send_replace(Arc::new(policy));
                tracing::info!(version, "configuration changed in the store: policy reloaded");
            }
            Err(error) => {
                // The policy in force stays; a later change may repair it.
                tracing::error!(version, error = %error, "objects changed in the store are invalid; policy kept");
            }
        }
    }
}
