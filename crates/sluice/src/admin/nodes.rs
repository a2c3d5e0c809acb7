//! `GET /api/v1/nodes`: the nodes sharing this node's store (SPEC section
//! 8): on PostgreSQL every registered node, on the embedded store this
//! node alone.

use super::{AdminError, ApiState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

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
