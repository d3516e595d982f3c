//! What leaves the store after a commit: one [`Commit`] per transaction, whatever its origin,
//! on the store's one commit feed (see [`crate::Store::commits`]).

use crate::op::{Op, OpId, Rejection, RowEvent};
use crate::proof::Proof;

/// Where a committed change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A write of this node (its API, or an embedder through the store).
    Local,
    /// Ops received on gossip.
    Gossip,
    /// Ops pulled from a peer.
    CatchUp,
    /// Rows of a peer's state snapshot, or the end of its import.
    Snapshot,
    /// Ops removed from the log.
    Prune,
    /// The owned rows of a device removed with `forget_data`, deleted ([`crate::members`]).
    Forget,
}

impl Origin {
    /// A short label, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Gossip => "gossip",
            Origin::CatchUp => "catchup",
            Origin::Snapshot => "snapshot",
            Origin::Prune => "prune",
            Origin::Forget => "forget",
        }
    }
}

/// One committed transaction (or, for a remote batch that changed nothing, what it refused),
/// in commit order.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Where it came from.
    pub origin: Origin,
    /// The ops this node wrote ([`Origin::Local`] only): what to publish.
    pub ops: Vec<Op>,
    /// The proofs of `ops`, one per signed head in order (their runs are `ops` in order).
    pub proofs: Vec<Proof>,
    /// Row-level changes, for subscribers.
    pub events: Vec<RowEvent>,
    /// Ops applied (written locally, or new remote ones).
    pub applied: usize,
    /// Owned rows written.
    pub rows: usize,
    /// Copies of ops already applied.
    pub duplicates: usize,
    /// Remote ops refused, with why.
    pub rejected: Vec<(OpId, Rejection)>,
    /// Snapshot rows merged.
    pub imported: usize,
    /// Ops removed from the log.
    pub pruned: u64,
}

impl Commit {
    /// An empty commit of `origin`, to fill in.
    pub fn new(origin: Origin) -> Commit {
        Commit {
            origin,
            ops: Vec::new(),
            proofs: Vec::new(),
            events: Vec::new(),
            applied: 0,
            rows: 0,
            duplicates: 0,
            rejected: Vec::new(),
            imported: 0,
            pruned: 0,
        }
    }
}
