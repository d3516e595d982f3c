//! The one consumer of the store's commit feed: whatever committed a change (the API, an
//! embedder writing through `Node::store`, gossip, a catch-up, a snapshot import, pruning),
//! this is where it is counted, where its row events go to `/v1/events` subscribers, and,
//! for this node's own writes, where its ops are published on gossip.
//!
//! It never writes to the store: the store's writers wait for this task when the feed is
//! full, so a write from here could wait for itself.

use std::sync::Arc;

use murmur_store::proof::Proof;
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
        let mut proofs = Vec::new();
        let mut next = Some(first);
        while let Some(c) = next.take() {
            let (o, p) = self.account(c);
            ops.extend(o);
            proofs.extend(p);
            if ops.len() < PUBLISH_BATCH_OPS
                && let Ok(c) = self.commits.try_recv()
            {
                next = Some(c);
            }
        }
        self.publish(ops, proofs).await;
    }

    /// Counts a commit and sends its row events; returns the ops to publish and their proofs.
    fn account(&self, c: Commit) -> (Vec<Op>, Vec<Proof>) {
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
            // Rows of a device removed with `forget_data`, deleted (logged by the store).
            Origin::Snapshot | Origin::Forget => {}
            Origin::Prune => {
                m.ops_pruned.inc_by(c.pruned);
            }
        }
        for e in c.events {
            // No subscriber is fine.
            let _ = self.row_events.send(e);
        }
        (c.ops, c.proofs)
    }

    /// Publishes ops in messages within the gossip caps, each with the proofs of its ops:
    /// `proofs` are the writes' signed segments in order, whose runs are `ops` in order; a
    /// segment cut by a message's end is proven in parts (the same signature, see
    /// [`Proof::narrow`]). They are durable already: if gossip loses them, catch-up
    /// delivers them.
    async fn publish(&self, ops: Vec<Op>, proofs: Vec<Proof>) {
        // Each segment's ops: consecutive slices of `ops`.
        let mut segments: Vec<(&Proof, &[Op])> = Vec::with_capacity(proofs.len());
        let mut at = 0;
        for p in &proofs {
            let end = (at + p.len as usize).min(ops.len());
            segments.push((p, &ops[at..end]));
            at = end;
        }
        let mut msg_ops: Vec<Op> = Vec::new();
        let mut msg_proofs: Vec<Proof> = Vec::new();
        let mut bytes = 0;
        for (proof, seg) in segments {
            let mut from = 0;
            for (i, op) in seg.iter().enumerate() {
                let size = to_cbor(op).len();
                if !msg_ops.is_empty()
                    && (msg_ops.len() >= GOSSIP_OPS_CAP || bytes + size > GOSSIP_BYTES_CAP)
                {
                    if i > from {
                        msg_proofs.push(proof.narrow(seg, from, i));
                    }
                    from = i;
                    self.publish_chunk(
                        std::mem::take(&mut msg_ops),
                        std::mem::take(&mut msg_proofs),
                    )
                    .await;
                    bytes = 0;
                }
                bytes += size;
                msg_ops.push(op.clone());
            }
            if seg.len() > from {
                msg_proofs.push(proof.narrow(seg, from, seg.len()));
            }
        }
        if !msg_ops.is_empty() {
            self.publish_chunk(msg_ops, msg_proofs).await;
        }
    }

    async fn publish_chunk(&self, ops: Vec<Op>, proofs: Vec<Proof>) {
        let n = ops.len();
        match self
            .net
            .publish(to_cbor(&Gossip::Ops { ops, proofs }))
            .await
        {
            Ok(outcome) => debug!(ops = n, ?outcome, "published"),
            // Not fatal: the ops are in the log and catch-up delivers them.
            Err(e) => debug!(ops = n, "publish failed, catch-up will deliver: {e}"),
        }
    }
}
