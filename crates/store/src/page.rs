//! A page of ops as a peer is sent it: the changes, their proofs of authorship, and where
//! the next page starts.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::op::Change;
use crate::proof::Proof;

/// Where the next page of [`crate::Store::ops_since`] starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpsCursor {
    /// The author being sent, and the last seq fully sent.
    pub position: Option<(Uuid, u64)>,
    /// Inside an `OwnedBatchCreate` (at `position.1 + 1`'s successor): the last row sent.
    pub row_after: Option<(u64, Uuid)>,
}

/// A page of ops.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpsPage {
    /// The changes, in (author, seq, row) order.
    pub changes: Vec<Change>,
    /// Proofs of authorship: one per run of consecutive ops of one author.
    #[serde(default)]
    pub proofs: Vec<Proof>,
    /// Where to continue, or `None` when everything was sent.
    pub next: Option<OpsCursor>,
}
