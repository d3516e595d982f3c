//! A page of ops as a peer is sent it: the changes, their proofs of authorship, and where
//! the next page starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::op::{AuthorVersion, Change, VersionVector};
use crate::proof::Proof;
use crate::registry::SchemaVersion;

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

/// A range of authors in UUID order: from `from` (inclusive) to `to` (exclusive; `None`: to
/// the end). A pull whose version vector is too large for one request asks for the ops of
/// one range at a time, with the part of its vector in that range
/// ([`VersionVector::split_by_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthorRange {
    /// The first author of the range.
    pub from: Uuid,
    /// The first author after it (`None`: the range runs to the end).
    pub to: Option<Uuid>,
}

impl AuthorRange {
    /// Every author.
    pub const ALL: AuthorRange = AuthorRange {
        from: Uuid::nil(),
        to: None,
    };

    /// Whether `author` is in the range.
    pub fn contains(&self, author: &Uuid) -> bool {
        *author >= self.from && self.to.is_none_or(|to| *author < to)
    }
}

/// An upper bound of the CBOR size of one author's entry of a version vector.
fn author_version_size(v: &AuthorVersion) -> usize {
    // The UUID (bytes or text), the entry's map and names, the contiguous seq, then one
    // integer per `extra` seq.
    40 + 32 + 9 + 9 * v.extra.len()
}

impl VersionVector {
    /// The authors of `range` only.
    pub fn within(&self, range: &AuthorRange) -> VersionVector {
        VersionVector {
            authors: self
                .authors
                .range(range.from..)
                .take_while(|(a, _)| range.contains(a))
                .map(|(a, v)| (*a, v.clone()))
                .collect(),
        }
    }

    /// An upper bound of the vector's CBOR size.
    pub fn wire_size(&self) -> usize {
        16 + self
            .authors
            .values()
            .map(author_version_size)
            .sum::<usize>()
    }

    /// Cuts the vector into consecutive author ranges that cover every author (those not in
    /// the vector too), each with the part of the vector in it, of at most `max_bytes` by
    /// [`VersionVector::wire_size`] (an author whose entry alone is larger gets a range of
    /// its own). One range ([`AuthorRange::ALL`]) when the whole vector fits.
    pub fn split_by_bytes(&self, max_bytes: usize) -> Vec<(AuthorRange, VersionVector)> {
        let mut out = Vec::new();
        let mut from = Uuid::nil();
        let mut part = VersionVector::default();
        let mut size = 16;
        for (a, v) in &self.authors {
            let s = author_version_size(v);
            if size + s > max_bytes && !part.authors.is_empty() {
                out.push((
                    AuthorRange { from, to: Some(*a) },
                    std::mem::take(&mut part),
                ));
                from = *a;
                size = 16;
            }
            size += s;
            part.authors.insert(*a, v.clone());
        }
        out.push((AuthorRange { from, to: None }, part));
        out
    }
}

/// Where a snapshot export continues: resource, phase (0 rows, 1 owned tombstones) and the
/// last UUID sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPosition {
    /// Resource being exported.
    pub resource: String,
    /// 0: rows; 1: tombstones of an owned resource; 2 (after every resource, `resource`
    /// empty): what this node keeps for a schema it does not know, `after` holding the last
    /// kept item's id.
    pub phase: u8,
    /// Last UUID sent in this resource and phase.
    pub after: Option<Uuid>,
}

/// The phase of a snapshot that serves what the server keeps for a newer schema (its
/// `after` is an id of the server's own, meaningless to another node).
pub(crate) const KEPT_PHASE: u8 = 2;

impl SnapshotPosition {
    /// Whether this is a position in the kept phase ([`KEPT_PHASE`]).
    pub fn is_kept_phase(&self) -> bool {
        self.phase == KEPT_PHASE
    }

    /// The position before the kept phase's first item: where a snapshot continues in the
    /// kept phase of another server (whose kept items' ids are not this one's).
    pub fn kept_start() -> SnapshotPosition {
        SnapshotPosition {
            resource: String::new(),
            phase: KEPT_PHASE,
            after: None,
        }
    }
}

/// A snapshot import under way, as stored (migration 0011): what a restarted node needs to
/// continue it ([`crate::Store::snapshot_progress`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotProgress {
    /// Who served it: the peer's device UUID, or its peer id while its device was unknown.
    pub source: String,
    /// The serving registry's schema, when the server said it.
    pub schema: Option<SchemaVersion>,
    /// Where the next page starts (after this position); `None`: from the start, or, when
    /// `done`, nothing is left.
    pub next: Option<SnapshotPosition>,
    /// Every page is imported; only the end of the snapshot is left.
    pub done: bool,
    /// Pages imported.
    pub pages: u64,
    /// Rows imported.
    pub rows: u64,
    /// How many times it was resumed.
    pub resumed: u64,
    /// What the finished snapshot may claim: per author, a proof of an empty run.
    pub proofs: Vec<Proof>,
}

impl SnapshotProgress {
    /// Whether it holds anything to continue: a page imported.
    pub fn started(&self) -> bool {
        self.pages > 0 || self.done
    }
}

/// The proofs a snapshot resumed from another state may claim: per author, the proof of the
/// lower seq of `stored` (what the rows imported so far hold) and `now` (what the rows of
/// the state it continues from hold); an author of only one of them is left out. Every
/// row imported holds the effect of the ops these prove, whichever state it came from, so
/// the version vector moves no further than every row proves. In author order.
pub fn resumed_proofs(stored: &[Proof], now: &[Proof]) -> Vec<Proof> {
    let now: BTreeMap<Uuid, &Proof> = now.iter().map(|p| (p.key.author(), p)).collect();
    let mut out: BTreeMap<Uuid, Proof> = BTreeMap::new();
    for s in stored {
        let author = s.key.author();
        if let Some(n) = now.get(&author) {
            let lower = if n.first < s.first { *n } else { s };
            match out.get(&author) {
                Some(o) if o.first <= lower.first => {}
                _ => {
                    out.insert(author, lower.clone());
                }
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::to_cbor;

    #[test]
    fn a_split_vector_covers_every_author_once_in_bounded_parts() {
        let mut vv = VersionVector::default();
        for i in 0..2_000u128 {
            let v = vv.authors.entry(Uuid::from_u128(i * 7919 + 3)).or_default();
            v.contiguous = u64::MAX / 3;
            if i % 97 == 0 {
                v.extra = (0..300).map(|s| u64::MAX / 2 + s).collect();
            }
        }
        assert!(vv.wire_size() >= to_cbor(&vv).len());
        let parts = vv.split_by_bytes(16 * 1024);
        assert!(parts.len() > 4, "{}", parts.len());
        assert_eq!(parts[0].0.from, Uuid::nil());
        assert_eq!(parts.last().unwrap().0.to, None);
        let mut joined = VersionVector::default();
        for w in parts.windows(2) {
            assert_eq!(w[0].0.to, Some(w[1].0.from));
        }
        for (range, part) in &parts {
            assert!(to_cbor(part).len() <= 16 * 1024);
            assert_eq!(&vv.within(range), part);
            joined.authors.extend(part.authors.clone());
        }
        assert_eq!(joined, vv);
        // Any author, in the vector or not, is in exactly one range.
        for probe in [Uuid::nil(), Uuid::from_u128(5), Uuid::max()] {
            assert_eq!(parts.iter().filter(|(r, _)| r.contains(&probe)).count(), 1);
        }
        assert_eq!(vv.split_by_bytes(usize::MAX)[0].0, AuthorRange::ALL);
    }
}
