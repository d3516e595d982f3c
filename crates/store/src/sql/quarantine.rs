//! What this build keeps for a later one (migration 0009, `crdt_quarantine`): ops and
//! snapshot rows of resources or fields its registry does not know, as CBOR, with why.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use crate::error::StoreError;
use crate::op::{Op, RejectReason, SnapshotRow};
use crate::wire::{from_cbor, to_cbor};

/// The largest body kept (an op or a row is at most a few `MAX_ROW_BYTES`).
const BODY_CAP: usize = 64 * 1024 * 1024;

/// One thing kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kept {
    /// An op (also in the log).
    Op(Op),
    /// A snapshot row.
    Row(SnapshotRow),
}

impl Kept {
    fn kind(&self) -> &'static str {
        match self {
            Kept::Op(_) => "op",
            Kept::Row(_) => "row",
        }
    }

    fn resource(&self) -> &str {
        match self {
            Kept::Op(op) => &op.resource,
            Kept::Row(
                SnapshotRow::Shared { resource, .. }
                | SnapshotRow::Owned { resource, .. }
                | SnapshotRow::OwnedTombstone { resource, .. },
            ) => resource,
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            Kept::Op(op) => to_cbor(op),
            Kept::Row(row) => to_cbor(row),
        }
    }
}

/// Keeps `items` (one that is kept already is kept once).
pub(crate) async fn keep(
    conn: &mut SqliteConnection,
    items: &[(Kept, RejectReason)],
) -> Result<(), StoreError> {
    for (item, reason) in items {
        let body = item.body();
        let mut hash = blake3::Hasher::new();
        hash.update(item.kind().as_bytes());
        hash.update(&body);
        sqlx::query(
            "INSERT OR IGNORE INTO crdt_quarantine (kind, reason, resource, hash, body) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(item.kind())
        .bind(reason.label())
        .bind(item.resource().to_owned())
        .bind(hash.finalize().as_bytes().to_vec())
        .bind(body)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// How many are kept, per reason label.
pub(crate) async fn counts(
    conn: &mut SqliteConnection,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let rows = sqlx::query("SELECT reason, COUNT(*) FROM crdt_quarantine GROUP BY reason")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>(0)?,
                r.try_get::<i64, _>(1)?.max(0) as u64,
            ))
        })
        .collect()
}

/// Up to `limit` kept items with an id above `after`, in id order, with their ids and the
/// size of their bodies.
pub(crate) async fn page(
    conn: &mut SqliteConnection,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, Kept)>, StoreError> {
    let rows =
        sqlx::query("SELECT id, kind, body FROM crdt_quarantine WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(conn)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let kind: String = r.try_get(1)?;
        let body: Vec<u8> = r.try_get(2)?;
        let item = if kind == "op" {
            Kept::Op(from_cbor(&body, BODY_CAP, "kept op")?)
        } else {
            Kept::Row(from_cbor(&body, BODY_CAP, "kept snapshot row")?)
        };
        out.push((id, item));
    }
    Ok(out)
}

/// Removes the items `ids` (applied by a build that knows them).
pub(crate) async fn remove(conn: &mut SqliteConnection, ids: &[i64]) -> Result<(), StoreError> {
    for id in ids {
        sqlx::query("DELETE FROM crdt_quarantine WHERE id = ?")
            .bind(*id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
