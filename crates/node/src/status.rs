//! `/v1/status`: who this node is, its library, its peers and the sync work in progress.
//! [`Status`] is the document: the API serialises it and the CLI (`murmur status`,
//! `murmur peers`) deserialises it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use murmur_store::{SchemaRelation, Store, StoreError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::Net;
use crate::sync::{PeerTable, PullKind};

/// The document of `/v1/status`. Fields are declared in alphabetical order, the order of
/// the keys in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's client UUID (its device).
    pub client_uuid: Uuid,
    /// Where this device's claim of an invitation stands, while it has one (or why it was
    /// refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<crate::sync::JoinStatus>,
    /// The library's public id.
    pub library_id: String,
    /// The addresses the swarm listens on.
    pub listen_addrs: Vec<String>,
    /// This node's peer id (of this run: a new one on every start).
    pub peer_id: String,
    /// Every other client of the library's client pool, connected or not (a connected peer
    /// shows once its device is known, from its first announcement).
    pub peers: Vec<PeerStatus>,
    /// Ops in the log.
    pub pending_operations: u64,
    /// The pulls running, in peer id order.
    pub progress: Vec<ProgressStatus>,
    /// Per author, the highest contiguous seq this node holds.
    pub version_vector: BTreeMap<Uuid, u64>,
    /// What waits for a build that knows it, per reason ("unknown_resource",
    /// "unknown_field"): ops and snapshot rows received from peers that run a newer schema,
    /// kept, not applied yet (a restart on such a build applies them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, u64>,
}

/// A client of the pool, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The connection's remote address, when connected.
    pub address: Option<String>,
    /// Its client UUID (the device).
    pub client_uuid: Uuid,
    /// Whether it is connected now.
    pub connected: bool,
    /// How it was found ("mdns", "configured" or "inbound"), when connected.
    pub discovery: Option<String>,
    /// When any message from it last arrived.
    pub last_seen: Option<DateTime<Utc>>,
    /// When a catch-up with it last completed.
    pub last_synchronized: Option<DateTime<Utc>>,
    /// Its peer id, once known: its connection's when connected, else the last one seen. A
    /// peer id names one run of the device.
    pub peer_id: Option<String>,
    /// How the schema it announced compares with this node's ("newer": what it writes to
    /// resources or fields this node does not know waits here), when connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaRelation>,
    /// Whether it has not been seen for longer than the stale bound.
    pub stale: bool,
}

/// A running pull, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressStatus {
    /// The client UUID of the peer, once its device is known.
    #[serde(default)]
    pub client_uuid: Option<Uuid>,
    /// Items (ops, owned rows or snapshot rows) done.
    pub done: u64,
    /// "catch-up" or "snapshot".
    pub kind: PullKind,
    /// The peer it runs with.
    pub peer_id: String,
    /// Items expected (an estimate for a catch-up).
    pub total: u64,
}

/// Builds the status document.
pub struct StatusSource {
    /// The store.
    pub store: Store,
    /// The network.
    pub net: Net,
    /// The connected peers and their pulls.
    pub peers: PeerTable,
    /// The library's public id.
    pub library_id: String,
    /// When a client counts as stale.
    pub stale_after: Duration,
    /// Where this device's claim of an invitation stands.
    pub join: tokio::sync::watch::Receiver<crate::sync::JoinStatus>,
}

impl StatusSource {
    /// The document of `/v1/status`.
    pub async fn status(&self) -> Result<Status, StoreError> {
        let now = Utc::now();
        let listen_addrs: Vec<String> = self
            .net
            .listen_addrs()
            .await
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let connected = self.peers.snapshot();
        let mut progress: Vec<ProgressStatus> = connected
            .iter()
            .filter_map(|p| {
                p.progress.map(|w| ProgressStatus {
                    client_uuid: p.client_uuid,
                    done: w.done,
                    kind: w.kind,
                    peer_id: p.peer_id.to_string(),
                    total: w.total,
                })
            })
            .collect();
        progress.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let mut peers = Vec::new();
        let mine = self.store.registry().schema_version();
        for c in self.store.clients().await? {
            if c.is_self {
                continue;
            }
            let conn = connected
                .iter()
                .find(|p| p.client_uuid == Some(c.client_uuid));
            peers.push(PeerStatus {
                address: conn.map(|p| p.address.to_string()),
                client_uuid: c.client_uuid,
                connected: conn.is_some(),
                discovery: conn.map(|p| p.discovery.to_string()),
                stale: c.is_stale(now, self.stale_after),
                last_seen: c.last_seen,
                last_synchronized: c.last_synchronized,
                peer_id: conn.map(|p| p.peer_id.to_string()).or(c.peer_id),
                schema: conn.and_then(|p| p.schema).map(|s| mine.relation(&s)),
            });
        }
        let join = match &*self.join.borrow() {
            crate::sync::JoinStatus::None => None,
            s => Some(s.clone()),
        };
        Ok(Status {
            client_uuid: self.store.client(),
            join,
            library_id: self.library_id.clone(),
            listen_addrs,
            peer_id: self.net.local_peer_id().to_string(),
            peers,
            pending_operations: self.store.pending_operations().await?,
            progress,
            version_vector: self.store.version_vector().contiguous_map(),
            waiting: self.store.kept().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON keeps the field names and key order the document had when it was built
    /// with `json!`, and reads back to the same value.
    #[test]
    fn the_document_round_trips_with_its_field_names() {
        let when: DateTime<Utc> = "2026-01-02T03:04:05.678Z".parse().unwrap();
        let status = Status {
            join: None,
            client_uuid: Uuid::from_u128(1),
            library_id: "lib".into(),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            peer_id: "me".into(),
            peers: vec![PeerStatus {
                address: Some("/ip4/127.0.0.1/tcp/2".into()),
                client_uuid: Uuid::from_u128(2),
                connected: true,
                discovery: Some("mdns".into()),
                last_seen: Some(when),
                last_synchronized: None,
                peer_id: Some("them".into()),
                schema: None,
                stale: false,
            }],
            pending_operations: 3,
            progress: vec![ProgressStatus {
                client_uuid: Some(Uuid::from_u128(2)),
                done: 1,
                kind: PullKind::CatchUp,
                peer_id: "them".into(),
                total: 2,
            }],
            version_vector: BTreeMap::from([(Uuid::from_u128(2), 7)]),
            waiting: BTreeMap::new(),
        };
        let text = serde_json::to_string(&status).unwrap();
        let old = serde_json::json!({
            "client_uuid": Uuid::from_u128(1),
            "peer_id": "me",
            "library_id": "lib",
            "listen_addrs": ["/ip4/127.0.0.1/tcp/1"],
            "pending_operations": 3u64,
            "peers": [{
                "client_uuid": Uuid::from_u128(2),
                "peer_id": "them",
                "connected": true,
                "address": "/ip4/127.0.0.1/tcp/2",
                "discovery": "mdns",
                "last_seen": when,
                "last_synchronized": Option::<DateTime<Utc>>::None,
                "stale": false,
            }],
            "progress": [{"client_uuid": Uuid::from_u128(2), "peer_id": "them", "kind": "catch-up", "done": 1, "total": 2}],
            "version_vector": {Uuid::from_u128(2).to_string(): 7},
        });
        assert_eq!(text, old.to_string());
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), status);
    }
}
