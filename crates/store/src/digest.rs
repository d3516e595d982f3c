//! The digest's pure rules: the hash of one row's synced state, how fingerprints of key
//! ranges combine, and the ranges a fingerprint is asked for. No SQL here
//! (`sql::digest` reads and stores; `fold` keeps the stored fingerprints up to date).
//!
//! A row's hash is a blake3 of its synced content as a snapshot carries it (its resource,
//! UUID, values, every register's timestamp, its tombstone and claim). A range's
//! fingerprint is the XOR of the hashes of the rows in it, with how many rows it holds: XOR
//! is commutative and associative, so the fingerprint depends on the set of rows only,
//! never on the order they were written in, and a range's fingerprint is the XOR of its
//! sub-ranges'. Rows of one resource have distinct UUIDs, so no two hashes in a range are
//! of the same row.
//!
//! Ranges are prefixes of a row's UUID as SQLite stores it (lower-case hex): `""` is the
//! whole resource, then [`LEVELS`]: 2 hex digits (256 ranges), 4 (computed from the
//! leaves), 5 (the leaves, [`LEAF`]); below a leaf are the rows.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::Hash;
use crate::op::SnapshotRow;

/// The prefix lengths a fingerprint is kept or asked for, below the whole resource.
pub const LEVELS: [usize; 3] = [2, 4, LEAF];

/// The prefix length of a leaf: the ranges the fold recomputes.
pub const LEAF: usize = 5;

/// The stored levels: the whole resource, 2 hex digits and the leaves. The 4-digit level
/// is summed from the leaves when asked (at most 4,096 of them per 2-digit range).
pub const STORED: [usize; 3] = [0, 2, LEAF];

/// The most rows a range's listing of rows holds ([`Ranges::Rows`]); a range with more
/// is listed by sub-ranges, and a leaf with more (billions of rows) is cut.
pub const MAX_RANGE_ROWS: usize = 5_000;

/// The fingerprint of a set of rows: the XOR of their hashes, how many rows (tombstones
/// included) and how many live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// XOR of the rows' hashes.
    pub hash: Hash,
    /// Rows, tombstones included.
    pub entries: u64,
    /// Live rows.
    pub live: u64,
}

impl Fingerprint {
    /// Adds (or removes: XOR is its own inverse) one row.
    pub fn toggle(&mut self, row: &Hash) {
        for (a, b) in self.hash.0.iter_mut().zip(row.0.iter()) {
            *a ^= b;
        }
    }

    /// Adds a row of hash `row`, live or not.
    pub fn add_row(&mut self, row: &Hash, live: bool) {
        self.toggle(row);
        self.entries += 1;
        self.live += live as u64;
    }

    /// Combines two disjoint sets of rows.
    pub fn merge(&mut self, other: &Fingerprint) {
        self.toggle(&other.hash);
        self.entries += other.entries;
        self.live += other.live;
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

/// One range's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeFingerprint {
    /// The range: rows whose UUID starts with it.
    pub prefix: String,
    /// Its rows' fingerprint.
    pub fingerprint: Fingerprint,
}

/// One row's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFingerprint {
    /// The row.
    pub uuid: Uuid,
    /// Its hash ([`row_hash`]).
    pub hash: Hash,
}

/// What a range is made of: non-empty sub-ranges in prefix order, or (below a leaf, or a
/// range of at most [`MAX_RANGE_ROWS`] rows) its rows in UUID order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ranges {
    /// Sub-ranges, each one level down.
    Ranges(Vec<RangeFingerprint>),
    /// Rows.
    Rows(Vec<RowFingerprint>),
}

/// Where two nodes' listings of the same range differ: the sub-ranges to descend into,
/// and the rows that differ (held by one side only, or with other hashes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Ranges to ask both sides about next.
    pub descend: Vec<String>,
    /// Rows that differ.
    pub rows: Vec<Uuid>,
}

/// Compares two listings of one range ([`Ranges`]). When one side lists rows and the other
/// sub-ranges (one holds more rows there than a listing takes), the leaves both name are
/// descended into.
pub fn compare(ours: &Ranges, theirs: &Ranges) -> Comparison {
    use std::collections::BTreeMap;
    let mut out = Comparison::default();
    match (ours, theirs) {
        (Ranges::Ranges(a), Ranges::Ranges(b)) => {
            let mut all: BTreeMap<&str, (Option<&Fingerprint>, Option<&Fingerprint>)> =
                BTreeMap::new();
            for r in a {
                all.entry(&r.prefix).or_default().0 = Some(&r.fingerprint);
            }
            for r in b {
                all.entry(&r.prefix).or_default().1 = Some(&r.fingerprint);
            }
            out.descend = all
                .into_iter()
                .filter(|(_, (x, y))| x != y)
                .map(|(p, _)| p.to_owned())
                .collect();
        }
        (Ranges::Rows(a), Ranges::Rows(b)) => {
            let mut all: BTreeMap<Uuid, (Option<&Hash>, Option<&Hash>)> = BTreeMap::new();
            for r in a {
                all.entry(r.uuid).or_default().0 = Some(&r.hash);
            }
            for r in b {
                all.entry(r.uuid).or_default().1 = Some(&r.hash);
            }
            out.rows = all
                .into_iter()
                .filter(|(_, (x, y))| x != y)
                .map(|(u, _)| u)
                .collect();
        }
        (Ranges::Rows(rows), Ranges::Ranges(ranges))
        | (Ranges::Ranges(ranges), Ranges::Rows(rows)) => {
            let mut leaves: std::collections::BTreeSet<String> =
                ranges.iter().map(|r| r.prefix.clone()).collect();
            for r in rows {
                let key = r.uuid.hyphenated().to_string();
                leaves.insert(key[..LEAF].to_owned());
            }
            out.descend = leaves.into_iter().collect();
        }
    }
    out
}

/// The level below a prefix of length `len`, if it is a level ([`LEVELS`]); `None` below a
/// leaf (rows come next).
pub fn next_level(len: usize) -> Option<usize> {
    LEVELS.iter().copied().find(|l| *l > len)
}

/// Whether `prefix` names a range: lower-case hex digits, no longer than a leaf, and of a
/// level's length (or empty).
pub fn valid_prefix(prefix: &str) -> bool {
    (prefix.is_empty() || LEVELS.contains(&prefix.len()))
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The smallest text above every UUID that starts with `prefix` (UUID text is hex digits
/// and hyphens, all below `g`).
pub fn prefix_end(prefix: &str) -> String {
    format!("{prefix}g")
}

/// The hash of one row's synced state (see the module docs).
pub fn row_hash(r: &SnapshotRow) -> Hash {
    let mut h = blake3::Hasher::new();
    hash_row(&mut h, r);
    Hash(*h.finalize().as_bytes())
}

/// Whether a snapshot row is a live row.
pub fn row_live(r: &SnapshotRow) -> bool {
    match r {
        SnapshotRow::Shared { alive, .. } => *alive,
        SnapshotRow::Owned { .. } => true,
        SnapshotRow::OwnedTombstone { .. } => false,
    }
}

/// The whole library's digest: a blake3 over each non-empty resource's name and
/// fingerprint, in registry order.
pub fn library_digest<'a>(resources: impl Iterator<Item = (&'a str, Fingerprint)>) -> Hash {
    let mut h = blake3::Hasher::new();
    for (name, fp) in resources {
        if fp.is_empty() {
            continue;
        }
        hash_str(&mut h, name);
        h.update(&fp.hash.0);
        h.update(&fp.entries.to_be_bytes());
        h.update(&fp.live.to_be_bytes());
    }
    Hash(*h.finalize().as_bytes())
}

fn hash_str(h: &mut blake3::Hasher, s: &str) {
    h.update(&(s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn hash_row(h: &mut blake3::Hasher, r: &SnapshotRow) {
    match r {
        SnapshotRow::Shared {
            resource,
            uuid,
            exists_ts,
            alive,
            props,
        } => {
            h.update(b"S");
            hash_str(h, resource);
            h.update(uuid.as_bytes());
            h.update(&exists_ts.to_bytes());
            h.update(&[*alive as u8]);
            h.update(&(props.len() as u64).to_be_bytes());
            for (name, ts, v) in props {
                hash_str(h, name);
                h.update(&ts.to_bytes());
                v.hash_into(h);
            }
        }
        SnapshotRow::Owned {
            resource,
            uuid,
            ts,
            seq,
            values,
            claim,
        } => {
            h.update(b"O");
            hash_str(h, resource);
            h.update(uuid.as_bytes());
            h.update(&ts.to_bytes());
            h.update(&seq.to_be_bytes());
            for v in values {
                v.hash_into(h);
            }
            h.update(&claim.unwrap_or(*ts).to_bytes());
        }
        SnapshotRow::OwnedTombstone {
            resource,
            uuid,
            ts,
            claim,
        } => {
            h.update(b"T");
            hash_str(h, resource);
            h.update(uuid.as_bytes());
            h.update(&ts.to_bytes());
            h.update(&claim.unwrap_or(*ts).to_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_same_in_any_order_and_removing_a_row_undoes_it() {
        let rows: Vec<Hash> = (0u8..20)
            .map(|i| Hash(*blake3::hash(&[i]).as_bytes()))
            .collect();
        let mut a = Fingerprint::default();
        for r in &rows {
            a.add_row(r, true);
        }
        let mut b = Fingerprint::default();
        for r in rows.iter().rev() {
            b.add_row(r, true);
        }
        assert_eq!(a, b);
        let mut halves = Fingerprint::default();
        let (mut lo, mut hi) = (Fingerprint::default(), Fingerprint::default());
        for r in &rows[..7] {
            lo.add_row(r, true);
        }
        for r in &rows[7..] {
            hi.add_row(r, true);
        }
        halves.merge(&hi);
        halves.merge(&lo);
        assert_eq!(halves, a);
        a.toggle(&rows[3]);
        let mut without = Fingerprint::default();
        for (i, r) in rows.iter().enumerate() {
            if i != 3 {
                without.toggle(r);
            }
        }
        assert_eq!(a.hash, without.hash);
    }

    #[test]
    fn prefixes_are_levels_of_hex() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("ab"));
        assert!(valid_prefix("ab01"));
        assert!(valid_prefix("ab01f"));
        assert!(!valid_prefix("a"));
        assert!(!valid_prefix("AB"));
        assert!(!valid_prefix("ab01f0"));
        assert!(!valid_prefix("zz"));
        assert_eq!(next_level(0), Some(2));
        assert_eq!(next_level(2), Some(4));
        assert_eq!(next_level(4), Some(5));
        assert_eq!(next_level(5), None);
        let u = "abcde123-0000-4000-8000-000000000000";
        assert!(u > "abcde" && u < prefix_end("abcde").as_str());
        assert!("abcdf" > prefix_end("abcde").as_str() || "abcdf" > u);
    }
}
