//! Reads of the maintained digest ([`crate::digest`]): the whole library's digest, each
//! resource's fingerprint, a key range's sub-ranges or rows, and rows by UUID (what a peer
//! asks for to repair). Each folds what is dirty first ([`Store::fold_digest`]), so what it
//! reads is exact for the state at that moment.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::digest::{
    Fingerprint, LEAF, MAX_RANGE_ROWS, RangeFingerprint, Ranges, RowFingerprint, library_digest,
    next_level, prefix_end, row_hash, valid_prefix,
};
use crate::error::StoreError;
use crate::export::MAX_PAGE_BYTES;
use crate::fold::FOLD_LEAVES;
use crate::op::SnapshotRow;
use crate::sql::digest as sql;
use crate::sql::rows::key_of;
use crate::store::Store;

/// The digest of a store's synced state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest {
    /// Hex blake3 over every resource's fingerprint.
    pub digest: String,
    /// Live rows counted (shared and owned).
    pub rows: u64,
}

/// Folds a digest read waits for at most (see `Store::folded_read`).
const FOLDED_READ_TRIES: usize = 5;

/// The most UUIDs one request for rows may name.
pub const MAX_ROWS_ASKED: usize = MAX_RANGE_ROWS;

impl Store {
    /// Folds every dirty leaf, in transactions of at most [`FOLD_LEAVES`] leaves.
    pub(crate) async fn fold_all(&self) -> Result<(), StoreError> {
        while self.fold_digest(FOLD_LEAVES).await? > 0 {}
        Ok(())
    }

    /// A read transaction in which no leaf is dirty, so the stored fingerprints are those
    /// of the rows it sees: it folds first when needed (a digest with nothing to fold
    /// takes no write lock). Writes that never pause could keep a leaf dirty at every
    /// look: after [`FOLDED_READ_TRIES`] folds the read goes on, exact for the state of
    /// the last fold.
    async fn folded_read(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        for _ in 0..FOLDED_READ_TRIES {
            let mut tx = self.pool().begin().await?;
            if !sql::any_dirty(&mut tx).await? {
                return Ok(tx);
            }
            tx.rollback().await?;
            self.fold_all().await?;
        }
        Ok(self.pool().begin().await?)
    }

    /// A deterministic hash of all synced state (every register, tombstones included, and
    /// no op log), equal on two stores exactly when their synced state is equal (up to
    /// blake3 collisions), whatever order the ops arrived in. It reads the maintained
    /// per-resource fingerprints (after folding what changed since the last fold).
    pub async fn digest(&self) -> Result<Digest, StoreError> {
        let resources = self.resource_fingerprints().await?;
        let rows = resources.iter().map(|(_, f)| f.live).sum();
        let hash = library_digest(resources.iter().map(|(n, f)| (n.as_str(), *f)));
        Ok(Digest {
            digest: hex::encode(hash.0),
            rows,
        })
    }

    /// Each resource's fingerprint, in registry order (empty ones included).
    pub async fn resource_fingerprints(&self) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        let mut tx = self.folded_read().await?;
        let mut out = Vec::new();
        for def in self.registry().iter() {
            out.push((def.name.clone(), sql::get(&mut tx, &def.name, "").await?));
        }
        tx.rollback().await?;
        Ok(out)
    }

    /// The fingerprint of one range of `resource` (rows whose UUID starts with `prefix`).
    pub async fn range_fingerprint(
        &self,
        resource: &str,
        prefix: &str,
    ) -> Result<Fingerprint, StoreError> {
        check_prefix(prefix)?;
        self.registry().get(resource)?;
        let mut total = Fingerprint::default();
        match self.range(resource, prefix).await? {
            Ranges::Ranges(rs) => rs.iter().for_each(|r| total.merge(&r.fingerprint)),
            Ranges::Rows(rows) => {
                // Counts are not in a row listing: read the stored leaves instead.
                let mut conn = self.pool().acquire().await?;
                for (_, fp) in sql::stored_under(&mut conn, resource, LEAF, prefix).await? {
                    total.merge(&fp);
                }
                debug_assert!(rows.len() as u64 <= total.entries.max(rows.len() as u64));
            }
        }
        Ok(total)
    }

    /// What the range `prefix` of `resource` is made of: its non-empty sub-ranges one
    /// level down ([`crate::digest::LEVELS`]), or its rows' hashes below a leaf (and for
    /// a 4-digit range of at most [`MAX_RANGE_ROWS`] rows). Two nodes find the rows they
    /// differ on by descending into the ranges whose fingerprints differ.
    pub async fn range(&self, resource: &str, prefix: &str) -> Result<Ranges, StoreError> {
        check_prefix(prefix)?;
        let def = self.registry().get(resource)?;
        let mut conn = self.folded_read().await?;
        let list_rows = match next_level(prefix.len()) {
            None => true,
            Some(LEAF) => {
                let leaves = sql::stored_under(&mut conn, resource, LEAF, prefix).await?;
                let entries: u64 = leaves.iter().map(|(_, f)| f.entries).sum();
                if entries > MAX_RANGE_ROWS as u64 {
                    return Ok(Ranges::Ranges(
                        leaves
                            .into_iter()
                            .map(|(prefix, fingerprint)| RangeFingerprint {
                                prefix,
                                fingerprint,
                            })
                            .collect(),
                    ));
                }
                true
            }
            Some(level) => {
                // Stored at 2 digits; 4 digits are summed from the leaves under `prefix`.
                let stored = if level == 2 { 2 } else { LEAF };
                let mut out: BTreeMap<String, Fingerprint> = BTreeMap::new();
                for (p, fp) in sql::stored_under(&mut conn, resource, stored, prefix).await? {
                    out.entry(p[..level].to_owned()).or_default().merge(&fp);
                }
                return Ok(Ranges::Ranges(
                    out.into_iter()
                        .map(|(prefix, fingerprint)| RangeFingerprint {
                            prefix,
                            fingerprint,
                        })
                        .collect(),
                ));
            }
        };
        debug_assert!(list_rows);
        let rows =
            sql::rows_between(&mut conn, def, prefix, &prefix_end(prefix), MAX_RANGE_ROWS).await?;
        Ok(Ranges::Rows(
            rows.iter()
                .map(|r| RowFingerprint {
                    uuid: snapshot_uuid(r),
                    hash: row_hash(r),
                })
                .collect(),
        ))
    }

    /// The rows of `resource` named by `uuids` that this store holds (live rows and
    /// tombstones, as a snapshot sends them), in the order asked, within
    /// [`MAX_PAGE_BYTES`] by their `wire_size` (at least one). Returns the rows and how
    /// many of `uuids` were looked at (the rest: ask again). At most [`MAX_ROWS_ASKED`].
    pub async fn rows_by_uuid(
        &self,
        resource: &str,
        uuids: &[Uuid],
    ) -> Result<(Vec<SnapshotRow>, usize), StoreError> {
        let def = self.registry().get(resource)?;
        let mut conn = self.pool().acquire().await?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut looked = 0;
        for u in uuids.iter().take(MAX_ROWS_ASKED) {
            let key = key_of(*u);
            let hi = format!("{key}0");
            let rows = sql::rows_between(&mut conn, def, &key, &hi, 1).await?;
            if let Some(r) = rows.into_iter().next() {
                let size = r.wire_size();
                if !out.is_empty() && bytes.saturating_add(size) > MAX_PAGE_BYTES {
                    break;
                }
                bytes = bytes.saturating_add(size);
                out.push(r);
            }
            looked += 1;
        }
        Ok((out, looked))
    }

    /// How many leaves of the digest wait to be folded.
    pub async fn digest_backlog(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool().acquire().await?;
        sql::count_dirty(&mut conn).await
    }
}

fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if valid_prefix(prefix) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "`{prefix}` is not a key range: lower-case hex digits, 0, 2, 4 or 5 of them"
        )))
    }
}

fn snapshot_uuid(r: &SnapshotRow) -> Uuid {
    match r {
        SnapshotRow::Shared { uuid, .. }
        | SnapshotRow::Owned { uuid, .. }
        | SnapshotRow::OwnedTombstone { uuid, .. } => *uuid,
    }
}
