//! The snapshot import under way (migration 0011, `crdt_snapshot_progress` and
//! `crdt_snapshot_proofs`): where it continues and what it may claim when it finishes.
//! Every write here runs in the transaction of the page, start or end it records, so the
//! stored progress is always what the library holds.

use std::collections::BTreeSet;

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::page::{SnapshotPosition, SnapshotProgress};
use crate::proof::Proof;
use crate::registry::SchemaVersion;
use crate::sql::in_list;
use crate::wire::{from_cbor, to_cbor};

/// The largest stored proof or position decoded (a proof's tail is at most `TAIL_CAP`
/// hashes, a few tens of KiB).
const BODY_CAP: usize = 1024 * 1024;

/// Starts a new snapshot import: forgets any other, records `source`, `schema` and what
/// the snapshot may claim (`proofs`), with no page imported.
pub(crate) async fn start(
    conn: &mut SqliteConnection,
    source: &str,
    schema: Option<&SchemaVersion>,
    proofs: &[Proof],
) -> Result<(), StoreError> {
    clear(conn).await?;
    sqlx::query(
        "INSERT INTO crdt_snapshot_progress (id, source, schema, started_at) \
         VALUES (1, ?, ?, strftime('%s', 'now'))",
    )
    .bind(source.to_owned())
    .bind(schema.map(to_cbor))
    .execute(&mut *conn)
    .await?;
    store_proofs(conn, proofs).await
}

async fn store_proofs(conn: &mut SqliteConnection, proofs: &[Proof]) -> Result<(), StoreError> {
    for p in proofs {
        sqlx::query("INSERT OR REPLACE INTO crdt_snapshot_proofs (author, proof) VALUES (?, ?)")
            .bind(p.key.author().hyphenated().to_string())
            .bind(to_cbor(p))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The snapshot import under way, if any.
pub(crate) async fn load(
    conn: &mut SqliteConnection,
) -> Result<Option<SnapshotProgress>, StoreError> {
    let Some(r) = sqlx::query(
        "SELECT source, schema, position, done, pages, rows, resumed \
         FROM crdt_snapshot_progress WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let schema = match r.try_get::<Option<Vec<u8>>, _>(1)? {
        Some(b) => Some(from_cbor(&b, BODY_CAP, "stored snapshot schema")?),
        None => None,
    };
    let next = match r.try_get::<Option<Vec<u8>>, _>(2)? {
        Some(b) => Some(from_cbor(&b, BODY_CAP, "stored snapshot position")?),
        None => None,
    };
    let count = |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
    let mut progress = SnapshotProgress {
        source: r.try_get(0)?,
        schema,
        next,
        done: r.try_get::<i64, _>(3)? != 0,
        pages: count(4)?,
        rows: count(5)?,
        resumed: count(6)?,
        proofs: Vec::new(),
    };
    for r in sqlx::query("SELECT proof FROM crdt_snapshot_proofs ORDER BY author")
        .fetch_all(&mut *conn)
        .await?
    {
        let body: Vec<u8> = r.try_get(0)?;
        progress
            .proofs
            .push(from_cbor(&body, BODY_CAP, "stored snapshot proof")?);
    }
    Ok(Some(progress))
}

/// Records that a page of `rows` rows was imported and the next one starts after `next`
/// (`None`: it was the last), and that the snapshot may not claim the authors in
/// `uncovered` (of rows it set aside). Nothing when no import is under way.
pub(crate) async fn record_page(
    conn: &mut SqliteConnection,
    next: Option<&SnapshotPosition>,
    rows: u64,
    uncovered: &BTreeSet<Uuid>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE crdt_snapshot_progress SET position = ?, done = ?, pages = pages + 1, \
         rows = rows + ? WHERE id = 1",
    )
    .bind(next.map(to_cbor))
    .bind(next.is_none() as i64)
    .bind(rows.min(i64::MAX as u64) as i64)
    .execute(&mut *conn)
    .await?;
    let authors: Vec<String> = uncovered
        .iter()
        .map(|a| a.hyphenated().to_string())
        .collect();
    for chunk in authors.chunks(500) {
        let sql = format!(
            "DELETE FROM crdt_snapshot_proofs WHERE author IN ({})",
            in_list(chunk.len())
        );
        let mut q = crate::sql::query(sql);
        for a in chunk {
            q = q.bind(a.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records that the import continues from `source` at `next`, claiming `proofs` when it
/// finishes (they replace what was stored).
pub(crate) async fn resume(
    conn: &mut SqliteConnection,
    source: &str,
    next: Option<&SnapshotPosition>,
    proofs: &[Proof],
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE crdt_snapshot_progress SET source = ?, position = ?, resumed = resumed + 1 \
         WHERE id = 1",
    )
    .bind(source.to_owned())
    .bind(next.map(to_cbor))
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM crdt_snapshot_proofs")
        .execute(&mut *conn)
        .await?;
    store_proofs(conn, proofs).await
}

/// Forgets the import under way (it finished, or another starts).
pub(crate) async fn clear(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM crdt_snapshot_progress")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM crdt_snapshot_proofs")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
