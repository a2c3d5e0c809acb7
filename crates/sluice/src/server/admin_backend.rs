//! The admin API's backend, built from the node's parts. What it does is
//! admin/'s ([`NodeAdmin`]); here it is only wired.

use crate::admin::NodeAdmin;
use crate::deliver::Deliverer;
use crate::policy::Policy;
use crate::queue::Queue;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// The backend over this node's store, queue, published policy, deliverer,
/// `[partner]` records and keys.
pub(super) fn node_admin(
    store: Arc<dyn Store>,
    queue: Queue,
    policy: watch::Sender<Arc<Policy>>,
    deliverer: Arc<Deliverer>,
    partner: Option<crate::tenant::PartnerNode>,
    keys: Arc<crate::auth::keys::Keyring>,
) -> Arc<NodeAdmin> {
    Arc::new(NodeAdmin {
        store,
        queue,
        policy,
        writes: tokio::sync::Mutex::new(()),
        deliverer,
        partner,
        keys,
        directory: Default::default(),
    })
}
