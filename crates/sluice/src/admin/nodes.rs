//! `GET /api/v1/nodes`: the nodes sharing this node's store (SPEC section
//! 8): on PostgreSQL every registered node, on the embedded store this
//! node alone.

use super::{AdminError, ApiState};
use crate::store::{PostgresStore, StoreError};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    /// The node's hostname.
    pub name: String,
    /// SMTP listener addresses.
    pub smtp: Vec<String>,
    /// Admin API address.
    pub admin: String,
    /// sluice version.
    pub version: String,
    /// Last heartbeat, ms since the epoch (the store's clock).
    pub heartbeat_at_ms: u64,
    /// How long ago that was, ms.
    pub heartbeat_age_ms: u64,
    /// Queued recipients this node holds under a live lease.
    pub leased: u64,
    /// Whether this is the node that answered.
    pub this_node: bool,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/nodes", get(list))
}

/// Every node sharing this node's store, by name.
#[utoipa::path(get, path = "/nodes", tag = "node", operation_id = "nodes_list",
    responses((status = 200, description = "Every node sharing the store", body = Vec<NodeView>)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<Vec<NodeView>>, AdminError> {
    Ok(Json(state.backend.nodes().await?))
}

/// What `node list` shows: this node, and the store the others of its
/// cluster register in.
pub struct Directory {
    /// This node's name.
    pub name: String,
    /// Its SMTP listeners.
    pub smtp: Vec<SocketAddr>,
    /// Its admin API.
    pub admin: SocketAddr,
    /// The shared store, when there is one.
    pub shared: Option<Arc<PostgresStore>>,
}

impl Directory {
    /// Every node: the registered ones on a shared store, else this one.
    pub fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let Some(store) = &self.shared else {
            return Ok(vec![NodeView {
                name: self.name.clone(),
                smtp: self.smtp.iter().map(ToString::to_string).collect(),
                admin: self.admin.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                heartbeat_at_ms: crate::trace::now_ms(),
                heartbeat_age_ms: 0,
                leased: 0,
                this_node: true,
            }]);
        };
        let leased = store.leased()?;
        Ok(store
            .nodes()?
            .into_iter()
            .map(|node| NodeView {
                leased: leased
                    .iter()
                    .find(|(owner, _)| *owner == node.name)
                    .map_or(0, |(_, count)| *count),
                this_node: node.name == self.name,
                smtp: node
                    .smtp
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                name: node.name,
                admin: node.admin,
                version: node.version,
                heartbeat_at_ms: node.heartbeat_at_ms,
                heartbeat_age_ms: node.heartbeat_age_ms,
            })
            .collect())
    }
}
