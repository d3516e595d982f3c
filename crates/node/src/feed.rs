//! The one consumer of the store's commit feed: whatever committed a change (the API, an
//! embedder writing through `Node::store`, gossip, a catch-up, a snapshot import, pruning),
//! this is where it is counted, where its row events go to `/v1/events` subscribers, and,
//! for this node's own writes, where its ops are published on gossip.
//!
//! It never writes to the store: the store's writers wait for this task when the feed is
//! full, so a write from here could wait for itself.

use std::sync::Arc;

use murmur_store::wire::to_cbor;
use murmur_store::{Commit, Op, Origin, RowEvent};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::debug;

use crate::metrics::Metrics;
use crate::protocol::{GOSSIP_BYTES_CAP, GOSSIP_OPS_CAP, Gossip};
use crate::sync::Net;

/// Local ops gathered from queued commits into one round of publishing, at most.
const PUBLISH_BATCH_OPS: usize = GOSSIP_OPS_CAP * 4;

/// Consumes the commit feed.
pub struct Feed {
    /// The store's commits.
    pub commits: mpsc::Receiver<Commit>,
    /// Where local ops are published.
    pub net: Net,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// `/v1/events` subscribers.
    pub row_events: broadcast::Sender<RowEvent>,
}

impl Feed {
    /// Runs until `shutdown` turns true, then handles what is already queued.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                c = self.commits.recv() => match c {
                    Some(c) => self.handle_commits(c).await,
                    None => return,
                },
            }
        }
        // What was committed before shutdown is published if the network still runs.
        while let Ok(c) = self.commits.try_recv() {
            self.handle_commits(c).await;
        }
    }

    /// Handles `first` and the commits queued behind it, publishing their local ops in as
    /// few gossip messages as the caps allow.
    async fn handle_commits(&mut self, first: Commit) {
        let mut ops = Vec::new();
        let mut next = Some(first);
        while let Some(c) = next.take() {
            ops.extend(self.account(c));
            if ops.len() < PUBLISH_BATCH_OPS
                && let Ok(c) = self.commits.try_recv()
            {
                next = Some(c);
            }
        }
        self.publish(ops).await;
    }

    /// Counts a commit and sends its row events; returns the ops to publish.
    fn account(&self, c: Commit) -> Vec<Op> {
        let m = &self.metrics;
        match c.origin {
            Origin::Local => {
                m.local_writes.inc();
                m.applied(c.origin.label(), c.applied);
            }
            Origin::Gossip | Origin::CatchUp => {
                m.applied(c.origin.label(), c.applied);
                m.rows_applied.inc_by(c.rows as u64);
                m.ops_duplicate.inc_by(c.duplicates as u64);
                for (id, why) in &c.rejected {
                    m.reject(why.label());
                    debug!(op = %id, "rejected: {why}");
                }
            }
            Origin::Snapshot => {}
            Origin::Prune => {
                m.ops_pruned.inc_by(c.pruned);
            }
        }
        for e in c.events {
            // No subscriber is fine.
            let _ = self.row_events.send(e);
        }
        c.ops
    }

    /// Publishes ops in messages within the gossip caps. They are durable already: if
    /// gossip loses them, catch-up delivers them.
    async fn publish(&self, ops: Vec<Op>) {
        let mut chunk: Vec<Op> = Vec::new();
        let mut bytes = 0;
        for op in ops {
            let size = to_cbor(&op).len();
            if !chunk.is_empty()
                && (chunk.len() >= GOSSIP_OPS_CAP || bytes + size > GOSSIP_BYTES_CAP)
            {
                self.publish_chunk(std::mem::take(&mut chunk)).await;
                bytes = 0;
            }
            bytes += size;
            chunk.push(op);
        }
        if !chunk.is_empty() {
            self.publish_chunk(chunk).await;
        }
    }

    async fn publish_chunk(&self, ops: Vec<Op>) {
        let n = ops.len();
        match self.net.publish(to_cbor(&Gossip::Ops(ops))).await {
            Ok(outcome) => debug!(ops = n, ?outcome, "published"),
            // Not fatal: the ops are in the log and catch-up delivers them.
            Err(e) => debug!(ops = n, "publish failed, catch-up will deliver: {e}"),
        }
    }
}
