//! Prometheus metrics of a node, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label with a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why.
    pub reason: String,
}

/// A label with a source ("local", "gossip", "catchup", "snapshot").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    /// Where from.
    pub source: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Ops applied, by source.
    pub ops_applied: Family<Source, Counter>,
    /// Owned rows written by remote batches.
    pub rows_applied: Counter,
    /// Ops received again.
    pub ops_duplicate: Counter,
    /// Ops (or messages) refused, by reason.
    pub ops_rejected: Family<Reason, Counter>,
    /// Local writes acknowledged by the API.
    pub local_writes: Counter,
    /// Gossip messages received.
    pub gossip_received: Counter,
    /// Gossip messages dropped on purpose (test fault injection).
    pub gossip_dropped: Counter,
    /// Requests served.
    pub requests_served: Counter,
    /// Pages of ops served from the page read for the request before (same page asked again).
    pub pages_reused: Counter,
    /// Catch-ups completed.
    pub catchups: Counter,
    /// Snapshots imported.
    pub snapshots_imported: Counter,
    /// Pages of snapshots imported (each committed with the import's progress).
    pub snapshot_pages_imported: Counter,
    /// Rows of snapshots imported.
    pub snapshot_rows_imported: Counter,
    /// Snapshot imports continued where a previous run of the node stopped.
    pub snapshots_resumed: Counter,
    /// Peers refused for the rest of their run: they sent ops whose proofs of authorship
    /// fail, or ops of this node's own author.
    pub peers_refused: Counter,
    /// Ops removed from the log by pruning.
    pub ops_pruned: Counter,
    /// Pruning rounds run (whether or not they removed anything).
    pub prune_runs: Counter,
    /// Rows changed here by repairs (where this node's digest differed from a peer's).
    pub repaired_rows: Counter,
    /// Repair rounds run (digests compared with a settled peer).
    pub repair_rounds: Counter,
    /// Ops in the log.
    pub pending_operations: Gauge,
    /// Connected peers.
    pub peers_connected: Gauge,
    /// Ops peers have announced that this node has not applied yet.
    pub sync_lag_ops: Gauge,
    /// Ops and snapshot rows kept for a schema this build does not know, by reason
    /// ("unknown_resource", "unknown_field"): received, not applied yet.
    pub waiting: Family<Reason, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("murmur");
        let m = Metrics {
            ops_applied: Family::default(),
            rows_applied: Counter::default(),
            ops_duplicate: Counter::default(),
            ops_rejected: Family::default(),
            local_writes: Counter::default(),
            gossip_received: Counter::default(),
            gossip_dropped: Counter::default(),
            requests_served: Counter::default(),
            pages_reused: Counter::default(),
            catchups: Counter::default(),
            snapshots_imported: Counter::default(),
            snapshot_pages_imported: Counter::default(),
            snapshot_rows_imported: Counter::default(),
            snapshots_resumed: Counter::default(),
            peers_refused: Counter::default(),
            ops_pruned: Counter::default(),
            prune_runs: Counter::default(),
            repaired_rows: Counter::default(),
            repair_rounds: Counter::default(),
            pending_operations: Gauge::default(),
            peers_connected: Gauge::default(),
            sync_lag_ops: Gauge::default(),
            waiting: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ops_applied",
            "Ops applied, by source",
            m.ops_applied.clone(),
        );
        registry.register(
            "rows_applied",
            "Owned rows written from remote batches",
            m.rows_applied.clone(),
        );
        registry.register(
            "ops_duplicate",
            "Ops received that were already applied",
            m.ops_duplicate.clone(),
        );
        registry.register(
            "ops_rejected",
            "Ops or messages refused, by reason",
            m.ops_rejected.clone(),
        );
        registry.register(
            "repaired_rows",
            "Rows changed by repairs of a divergence from a peer",
            m.repaired_rows.clone(),
        );
        registry.register(
            "repair_rounds",
            "Repair rounds run (digests compared with a settled peer)",
            m.repair_rounds.clone(),
        );
        registry.register(
            "local_writes",
            "Writes acknowledged by the local API",
            m.local_writes.clone(),
        );
        registry.register(
            "gossip_received",
            "Gossip messages received",
            m.gossip_received.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Gossip messages dropped by fault injection",
            m.gossip_dropped.clone(),
        );
        registry.register(
            "requests_served",
            "Sync requests served to peers",
            m.requests_served.clone(),
        );
        registry.register(
            "pages_reused",
            "Pages of ops served again without a read (another peer asked for the same page)",
            m.pages_reused.clone(),
        );
        registry.register("catchups", "Catch-ups completed", m.catchups.clone());
        registry.register(
            "snapshots_imported",
            "State snapshots imported",
            m.snapshots_imported.clone(),
        );
        registry.register(
            "snapshot_pages_imported",
            "Pages of state snapshots imported",
            m.snapshot_pages_imported.clone(),
        );
        registry.register(
            "snapshot_rows_imported",
            "Rows of state snapshots imported",
            m.snapshot_rows_imported.clone(),
        );
        registry.register(
            "snapshots_resumed",
            "Snapshot imports continued where a previous run stopped",
            m.snapshots_resumed.clone(),
        );
        registry.register(
            "peers_refused",
            "Peers refused for their run: they sent ops with failing proofs of authorship",
            m.peers_refused.clone(),
        );
        registry.register("prune_runs", "Pruning rounds run", m.prune_runs.clone());
        registry.register(
            "ops_pruned",
            "Ops removed from the log",
            m.ops_pruned.clone(),
        );
        registry.register(
            "pending_operations",
            "Ops in the log",
            m.pending_operations.clone(),
        );
        registry.register(
            "peers_connected",
            "Connected peers",
            m.peers_connected.clone(),
        );
        registry.register(
            "sync_lag_ops",
            "Ops announced by peers and not applied here",
            m.sync_lag_ops.clone(),
        );
        registry.register(
            "waiting",
            "Ops and snapshot rows kept for a schema this build does not know, by reason",
            m.waiting.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a rejection.
    pub fn reject(&self, reason: &str) {
        self.ops_rejected
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts applied ops.
    pub fn applied(&self, source: &str, n: usize) {
        self.ops_applied
            .get_or_create(&Source {
                source: source.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}
