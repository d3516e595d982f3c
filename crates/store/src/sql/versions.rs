//! The stored version vector: per author the contiguous seq applied here and the highest
//! seq pruned from the log (the horizon). Ops above the contiguous seq are found in the log.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::op::{OpId, VersionVector};
use crate::sql::oplog;
use crate::sql::rows::parse_uuid;

/// The version vector and the horizon as stored.
pub(crate) async fn load(
    conn: &mut SqliteConnection,
) -> Result<(VersionVector, BTreeMap<Uuid, u64>), StoreError> {
    let mut vv = VersionVector::default();
    let mut horizon = BTreeMap::new();
    for r in sqlx::query("SELECT client_uuid, contiguous, pruned_through FROM version_vector")
        .fetch_all(&mut *conn)
        .await?
    {
        let author = parse_uuid(&r.try_get::<String, _>(0)?)?;
        vv.authors.entry(author).or_default().contiguous = r.try_get::<i64, _>(1)? as u64;
        let pruned = r.try_get::<i64, _>(2)? as u64;
        if pruned > 0 {
            horizon.insert(author, pruned);
        }
    }
    for (author, seq) in oplog::above_contiguous(conn).await? {
        vv.add(OpId { author, seq });
    }
    Ok((vv, horizon))
}

/// Stores the contiguous seqs `vv` has for `authors` (consecutive repeats are skipped).
pub(crate) async fn persist_vv(
    conn: &mut SqliteConnection,
    vv: &VersionVector,
    authors: impl Iterator<Item = Uuid>,
) -> Result<(), StoreError> {
    let mut last = None;
    for a in authors {
        if last == Some(a) {
            continue;
        }
        last = Some(a);
        sqlx::query(
            "INSERT INTO version_vector (client_uuid, contiguous) VALUES (?, ?) \
             ON CONFLICT (client_uuid) DO UPDATE SET contiguous = excluded.contiguous",
        )
        .bind(a.hyphenated().to_string())
        .bind(vv.contiguous(&a) as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records that the log of `author` counts as pruned through `seq`, whose chain hash is
/// `chain` (after a snapshot: the ops up to it are in the rows, not in the log).
pub(crate) async fn record_pruned_chain(
    conn: &mut SqliteConnection,
    author: Uuid,
    seq: u64,
    chain: &crate::proof::Hash,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE version_vector SET pruned_through = MAX(pruned_through, ?), pruned_chain = ? \
         WHERE client_uuid = ?",
    )
    .bind(seq as i64)
    .bind(chain.0.to_vec())
    .bind(author.hyphenated().to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that the log of `author` is pruned through `seq` (and its contiguous seq).
pub(crate) async fn record_pruned(
    conn: &mut SqliteConnection,
    author: Uuid,
    contiguous: u64,
    seq: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO version_vector (client_uuid, contiguous, pruned_through) VALUES (?, ?, ?) \
         ON CONFLICT (client_uuid) DO UPDATE SET pruned_through = excluded.pruned_through",
    )
    .bind(author.hyphenated().to_string())
    .bind(contiguous as i64)
    .bind(seq as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
