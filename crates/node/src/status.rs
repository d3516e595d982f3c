//! `/v1/status`: who this node is, its library, its peers and the sync work in progress.

use std::sync::Arc;
use std::time::Duration;

use murmur_store::{Store, StoreError};
use serde_json::{Value as J, json};

use crate::sync::{Net, Shared};

/// Builds the status document.
pub struct StatusSource {
    /// The store.
    pub store: Store,
    /// The network.
    pub net: Net,
    /// Peers and progress.
    pub shared: Arc<Shared>,
    /// The library's public id.
    pub library_id: String,
    /// When a client counts as stale.
    pub stale_after: Duration,
}

impl StatusSource {
    /// The document of DESIGN.md's `/v1/status`, plus `progress` and `version_vector`.
    pub async fn status(&self) -> Result<J, StoreError> {
        let now = chrono::Utc::now();
        let listen: Vec<String> = self
            .net
            .listen_addrs()
            .await
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let connected = self
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let progress: Vec<_> = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut peers = Vec::new();
        for c in self.store.clients().await? {
            if c.is_self {
                continue;
            }
            let conn = connected.values().find(|p| p.client_uuid == c.client_uuid);
            peers.push(json!({
                "client_uuid": c.client_uuid,
                "peer_id": c.peer_id,
                "connected": conn.is_some(),
                "address": conn.map(|p| p.address.clone()),
                "discovery": conn.map(|p| p.discovery),
                "last_seen": c.last_seen,
                "last_synchronized": c.last_synchronized,
                "stale": c.is_stale(now, self.stale_after),
            }));
        }
        let vv = self.store.version_vector();
        Ok(json!({
            "client_uuid": self.store.client(),
            "peer_id": self.net.local_peer_id().to_string(),
            "library_id": self.library_id,
            "listen_addrs": listen,
            "pending_operations": self.store.pending_operations().await?,
            "peers": peers,
            "progress": progress,
            "version_vector": vv.contiguous_map(),
        }))
    }
}
