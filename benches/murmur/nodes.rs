//! The in-process nodes of the scenarios: murmur-testkit's cluster (a star on loopback)
//! with the bench's config, and a write of a tag (published by the node's commit feed).

use std::time::Duration;

use murmur::node::{Config, Node};
use murmur::store::Durability;
use murmur_testkit::cluster::Cluster;
use serde_json::json;
use uuid::Uuid;

use crate::Res;

/// The bench's node config, on top of the testkit's (loopback, mDNS off): durable commits
/// as a real node makes them, and no pruning but the one the snapshot scenario runs.
pub fn bench_config(c: &mut Config) {
    c.versions_interval = Duration::from_millis(500);
    // Pruning is driven by the benchmark itself (the snapshot scenario).
    c.prune_interval = Duration::from_secs(3600);
    c.durability = Durability::Full;
}

/// `n` nodes with [`bench_config`]; every other node dials the first.
pub async fn start_cluster(n: usize) -> Cluster {
    Cluster::start_with(n, bench_config).await
}

/// Creates a tag on `node` (the node publishes it); returns the tag's uuid.
pub async fn write_tag(node: &Node, name: &str) -> Res<Uuid> {
    let out = node
        .store()
        .create_shared(
            "tags",
            None,
            json!({"name": name, "color": "red"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .await?;
    // Published by the node's commit feed.
    Ok(out.uuids[0])
}
