//! What sending an owned batch on needs besides its rows in place (migration 0008): the
//! values of the batch's rows that no longer hold them here (`crdt_owned_originals`), and
//! how far the pages of a batch not yet complete here have come (`owned_batch_progress`).

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::op::OwnedRow;
use crate::registry::ResourceDef;
use crate::sql::rows::{decode_owned_values, encode_owned_values, key_of, parse_uuid};
use crate::sql::{exec, owned_chunks, rows_per_statement, values_list};
use crate::value::Value;

/// A row of a batch whose values the batch wrote: the batch's author and seq, the row.
pub(crate) type Original = (Uuid, u64, Uuid, Vec<Value>);

/// Keeps the values rows of batches wrote, for rows that no longer hold them.
pub(crate) async fn keep_originals(
    conn: &mut SqliteConnection,
    resource: &str,
    rows: Vec<Original>,
) -> Result<(), StoreError> {
    for chunk in owned_chunks(rows, rows_per_statement(5)) {
        let sql = format!(
            "INSERT OR IGNORE INTO crdt_owned_originals (resource, author, seq, uuid, vals) \
             VALUES {}",
            values_list(chunk.len(), 5)
        );
        exec(conn, sql, |mut q| {
            for (author, seq, uuid, values) in chunk {
                q = q
                    .bind(resource.to_owned())
                    .bind(key_of(author))
                    .bind(seq as i64)
                    .bind(key_of(uuid))
                    .bind(encode_owned_values(&values));
            }
            q
        })
        .await?;
    }
    Ok(())
}

/// Up to `limit` kept rows of the batch `author`#`seq` of `def` after `after`, in UUID
/// order, with the values the batch wrote.
pub(crate) async fn originals_of_batch(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    author: Uuid,
    seq: u64,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<OwnedRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT uuid, vals FROM crdt_owned_originals WHERE resource = ? AND author = ? \
         AND seq = ? AND uuid > ? ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(key_of(author))
    .bind(seq as i64)
    .bind(after.map(key_of).unwrap_or_default())
    .bind(limit.min(i64::MAX as usize) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let uuid = parse_uuid(r.try_get::<&str, _>(0)?)?;
        let values = decode_owned_values(r.try_get::<&[u8], _>(1)?)?;
        if values.len() == def.columns.len() {
            out.push(OwnedRow { uuid, values });
        }
    }
    Ok(out)
}

/// How many kept rows of the batch `author`#`seq` of `def` are at or before `upto`.
pub(crate) async fn count_originals(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    author: Uuid,
    seq: u64,
    upto: Uuid,
) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM crdt_owned_originals WHERE resource = ? AND author = ? \
         AND seq = ? AND uuid <= ?",
    )
    .bind(def.name.clone())
    .bind(key_of(author))
    .bind(seq as i64)
    .bind(key_of(upto))
    .fetch_one(&mut *conn)
    .await?;
    Ok(n.max(0) as u64)
}

/// Forgets the kept rows of `author`'s batches at or below `through` (their headers have
/// left the log), and their progress.
pub(crate) async fn prune(
    conn: &mut SqliteConnection,
    author: Uuid,
    through: u64,
) -> Result<(), StoreError> {
    let through = through.min(i64::MAX as u64) as i64;
    sqlx::query("DELETE FROM crdt_owned_originals WHERE author = ? AND seq <= ?")
        .bind(key_of(author))
        .bind(through)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM owned_batch_progress WHERE client_uuid = ? AND seq <= ?")
        .bind(key_of(author))
        .bind(through)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The next group a page of the batch `author`#`seq` may start at (0: none applied yet).
pub(crate) async fn progress(
    conn: &mut SqliteConnection,
    author: Uuid,
    seq: u64,
) -> Result<u32, StoreError> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT next_group FROM owned_batch_progress WHERE client_uuid = ? AND seq = ?",
    )
    .bind(key_of(author))
    .bind(seq.min(i64::MAX as u64) as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(n.map_or(0, |n| n.clamp(0, u32::MAX as i64) as u32))
}

/// Records how far the pages of the batch `author`#`seq` have come; `None` once it is
/// complete.
pub(crate) async fn set_progress(
    conn: &mut SqliteConnection,
    author: Uuid,
    seq: u64,
    next: Option<u32>,
) -> Result<(), StoreError> {
    let seq = seq.min(i64::MAX as u64) as i64;
    match next {
        Some(n) => {
            sqlx::query(
                "INSERT INTO owned_batch_progress (client_uuid, seq, next_group) VALUES (?, ?, ?) \
                 ON CONFLICT (client_uuid, seq) DO UPDATE SET next_group = excluded.next_group",
            )
            .bind(key_of(author))
            .bind(seq)
            .bind(i64::from(n))
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM owned_batch_progress WHERE client_uuid = ? AND seq = ?")
                .bind(key_of(author))
                .bind(seq)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
