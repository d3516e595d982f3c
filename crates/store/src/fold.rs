//! Folding the digest: the dirty leaves (marked by the synced tables' triggers in the
//! transaction that wrote their rows) are recomputed from their rows, and each stored
//! ancestor moves by the difference ([`crate::digest`]). A write of the one [`Writer`], so
//! no row changes while a leaf is read; bookkeeping only (nothing goes out on the feed).
//!
//! A fold takes at most a given number of leaves, so its transaction is short; the node
//! folds in the background, and a digest folds what is left before it answers.

use std::collections::BTreeMap;

use sqlx::sqlite::SqliteConnection;

use crate::digest::{Fingerprint, LEAF, prefix_end, row_hash, row_live};
use crate::error::StoreError;
use crate::registry::{Registry, ResourceDef};
use crate::sql::digest as sql;
use crate::writer::Writer;

/// Leaves one fold transaction recomputes, at most.
pub const FOLD_LEAVES: usize = 2048;

/// A difference of fingerprints: the XOR of the two hashes and the change of the counts.
#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    fp: Fingerprint,
    entries: i64,
    live: i64,
}

impl Delta {
    fn between(old: &Fingerprint, new: &Fingerprint) -> Delta {
        let mut fp = *old;
        fp.toggle(&new.hash);
        Delta {
            fp,
            entries: new.entries as i64 - old.entries as i64,
            live: new.live as i64 - old.live as i64,
        }
    }

    fn add(&mut self, other: &Delta) {
        self.fp.toggle(&other.fp.hash);
        self.entries += other.entries;
        self.live += other.live;
    }

    fn apply(&self, to: &Fingerprint) -> Fingerprint {
        let mut out = *to;
        out.toggle(&self.fp.hash);
        out.entries = (out.entries as i64 + self.entries).max(0) as u64;
        out.live = (out.live as i64 + self.live).max(0) as u64;
        out
    }
}

/// Folds up to `max` dirty leaves; returns how many it folded (0: the digest is up to
/// date).
pub(crate) async fn fold(
    writer: &Writer,
    registry: &Registry,
    max: usize,
) -> Result<usize, StoreError> {
    let mut tx = writer.begin().await?;
    let conn = tx.conn();
    let dirty = sql::dirty(conn, max.max(1)).await?;
    if dirty.is_empty() {
        return Ok(0);
    }
    let mut by_resource: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (resource, bucket) in &dirty {
        // Only a leaf is folded. A held mark is never seen outside its transaction; one
        // that was (a bug) is dropped rather than folded as a leaf.
        if bucket.len() != LEAF {
            sql::clear_dirty(conn, resource, bucket).await?;
            continue;
        }
        by_resource
            .entry(resource.clone())
            .or_default()
            .push(bucket.clone());
    }
    for (resource, leaves) in by_resource {
        match registry.get(&resource) {
            Ok(def) => fold_resource(conn, def, &leaves).await?,
            // A resource no longer registered: nothing to keep.
            Err(_) => {
                for leaf in &leaves {
                    sql::clear_dirty(conn, &resource, leaf).await?;
                }
            }
        }
    }
    tx.commit_quietly().await?;
    Ok(dirty.len())
}

/// Recomputes `leaves` (sorted) of `def` and moves their ancestors.
async fn fold_resource(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    leaves: &[String],
) -> Result<(), StoreError> {
    let mut fresh: BTreeMap<&str, Fingerprint> = leaves
        .iter()
        .map(|l| (l.as_str(), Fingerprint::default()))
        .collect();
    // Dense runs of dirty leaves (a bulk write, a snapshot) are read as one range, a leaf
    // alone as its own; all the ranges in a few statements.
    let ranges: Vec<(String, String)> = spans(leaves)
        .iter()
        .map(|span| (span[0].clone(), prefix_end(&span[span.len() - 1])))
        .collect();
    for r in sql::rows_in_ranges(conn, def, &ranges).await? {
        let key = crate::sql::rows::key_of(match &r {
            crate::op::SnapshotRow::Shared { uuid, .. }
            | crate::op::SnapshotRow::Owned { uuid, .. }
            | crate::op::SnapshotRow::OwnedTombstone { uuid, .. } => *uuid,
        });
        if let Some(fp) = fresh.get_mut(&key[..LEAF]) {
            fp.add_row(&row_hash(&r), row_live(&r));
        }
    }
    let mut ancestors: BTreeMap<String, Delta> = BTreeMap::new();
    let old = sql::leaves_in(conn, &def.name, leaves).await?;
    let mut changed: Vec<(&str, Fingerprint)> = Vec::new();
    for leaf in leaves {
        let new = fresh.get(leaf.as_str()).copied().unwrap_or_default();
        let was = old.get(leaf).copied().unwrap_or_default();
        if was != new {
            let d = Delta::between(&was, &new);
            for len in [0, 2] {
                ancestors.entry(leaf[..len].to_owned()).or_default().add(&d);
            }
            changed.push((leaf.as_str(), new));
        }
    }
    sql::put_many(conn, &def.name, &changed).await?;
    // `leaves` are the resource's first dirty leaves in order: every mark from the first
    // to the last is folded.
    if let (Some(first), Some(last)) = (leaves.first(), leaves.last()) {
        sql::clear_dirty_span(conn, &def.name, first, last).await?;
    }
    // The 2-digit ranges (at most 256) in one read and a few writes; then the resource.
    let stored: BTreeMap<String, Fingerprint> = sql::stored_under(conn, &def.name, 2, "")
        .await?
        .into_iter()
        .collect();
    let moved: Vec<(&str, Fingerprint)> = ancestors
        .iter()
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, d)| {
            (
                p.as_str(),
                d.apply(&stored.get(p).copied().unwrap_or_default()),
            )
        })
        .collect();
    sql::put_many(conn, &def.name, &moved).await?;
    if let Some(d) = ancestors.get("") {
        let old = sql::get(conn, &def.name, "").await?;
        sql::put(conn, &def.name, "", &d.apply(&old)).await?;
    }
    Ok(())
}

/// `leaves` (sorted, distinct) cut into runs read in one query each: a run grows while its
/// span of leaves is at most twice the leaves it holds, and 256 leaves at most.
fn spans(leaves: &[String]) -> Vec<&[String]> {
    let index = |l: &String| u32::from_str_radix(l, 16).unwrap_or(0);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=leaves.len() {
        let done = i == leaves.len() || {
            let count = (i - start + 1) as u32;
            let span = index(&leaves[i]).saturating_sub(index(&leaves[start])) + 1;
            span > 2 * count || count > 256
        };
        if done {
            out.push(&leaves[start..i]);
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_leaves_are_read_in_spans_and_lone_ones_alone() {
        let l = |v: &[u32]| -> Vec<String> { v.iter().map(|i| format!("{i:05x}")).collect() };
        let leaves = l(&[1, 2, 3, 5, 900, 40_000, 40_001]);
        let got: Vec<usize> = spans(&leaves).iter().map(|s| s.len()).collect();
        assert_eq!(got, vec![4, 1, 2]);
        assert!(spans(&[]).is_empty());
    }
}
