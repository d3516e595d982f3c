//! Rows as SQLite stores them: keys, the register columns of shared rows (their data row
//! and clock, or the side tables), owned rows' values.

use std::collections::BTreeMap;

use sqlx::Row;
use uuid::Uuid;

use crate::clock::Hlc;
use crate::error::StoreError;
use crate::merge::SharedRow;
use crate::op::OwnedRow;
use crate::registry::ResourceDef;
use crate::rowclock;
use crate::value::Value;

/// A live row of `def` read as `uuid, crdt_clock, <columns>`, with its registers; `None`
/// for a row written before the row clock (its registers are still in the side tables
/// until [`move_live_registers`] has run).
pub(crate) fn live_row_from(
    def: &ResourceDef,
    r: &sqlx::sqlite::SqliteRow,
) -> Result<Option<(Uuid, SharedRow)>, StoreError> {
    let uuid = parse_uuid(r.try_get::<&str, _>(0)?)?;
    let raw: &[u8] = r.try_get(1)?;
    if raw.is_empty() {
        return Ok(None);
    }
    let clock = rowclock::decode(raw)?;
    let mut row = SharedRow {
        exists_ts: clock.exists,
        alive: true,
        props: BTreeMap::new(),
    };
    for (name, ts) in clock.props {
        // A name the registry no longer has is ignored (its column is gone).
        if let Some(i) = def.column_index(name) {
            let v: Value = r.try_get(2 + i)?;
            row.props.insert(name.to_owned(), (ts, v));
        }
    }
    Ok(Some((uuid, row)))
}

/// A side row read as `uuid, ts, alive` from `crdt_rows`: its existence register, no
/// properties yet.
pub(crate) fn side_head_from(r: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, SharedRow), StoreError> {
    Ok((
        parse_uuid(r.try_get::<&str, _>(0)?)?,
        SharedRow {
            exists_ts: Hlc::from_bytes(r.try_get::<&[u8], _>(1)?)?,
            alive: r.try_get::<i64, _>(2)? != 0,
            props: BTreeMap::new(),
        },
    ))
}

/// A property register read as `uuid, property, ts, value` from `crdt_props`.
pub(crate) fn side_prop_from(
    r: &sqlx::sqlite::SqliteRow,
) -> Result<(Uuid, String, (Hlc, Value)), StoreError> {
    Ok((
        parse_uuid(r.try_get::<&str, _>(0)?)?,
        r.try_get(1)?,
        (Hlc::from_bytes(r.try_get::<&[u8], _>(2)?)?, r.try_get(3)?),
    ))
}

/// A row's key as its table stores it (hyphenated, lower case), without the formatting
/// machinery of `to_string`.
pub(crate) fn key_of(u: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    u.hyphenated().encode_lower(&mut buf).to_owned()
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad uuid {s:?} in store: {e}")))
}

pub(crate) fn column_list(def: &ResourceDef) -> String {
    def.columns
        .iter()
        .map(|c| format!(", {}", c.name))
        .collect()
}

pub(crate) fn owned_row_from(
    r: &sqlx::sqlite::SqliteRow,
    def: &ResourceDef,
    first: usize,
) -> Result<OwnedRow, StoreError> {
    let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
    let mut values = Vec::with_capacity(def.columns.len());
    for i in 0..def.columns.len() {
        values.push(r.try_get::<Value, _>(first + i)?);
    }
    Ok(OwnedRow { uuid, values })
}

/// The values of an owned row as `crdt_owned_others` stores them: CBOR, in column order.
pub(crate) fn encode_owned_values(values: &[Value]) -> Vec<u8> {
    crate::wire::to_cbor(&values)
}

/// Reads back [`encode_owned_values`].
pub(crate) fn decode_owned_values(raw: &[u8]) -> Result<Vec<Value>, StoreError> {
    ciborium::from_reader(raw)
        .map_err(|e| StoreError::Corrupt(format!("bad owned row values in store: {e}")))
}

/// Up to `limit` rows of the owned batch `author`#`seq` of `def` after `after`, in UUID
/// order, that are kept in `crdt_owned_others` as the latest op of `device` (the author's
/// device), which does not own them: a batch is sent with them, since their device may yet
/// take them over.
pub(crate) async fn others_of_batch(
    conn: &mut sqlx::sqlite::SqliteConnection,
    def: &ResourceDef,
    device: Uuid,
    author: Uuid,
    seq: u64,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<OwnedRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT uuid, vals FROM crdt_owned_others WHERE resource = ? AND device = ? AND seq = ? \
         AND alive = 1 AND substr(ts, 9) = ? AND uuid > ? ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(key_of(device))
    .bind(seq as i64)
    .bind(author.as_bytes().to_vec())
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

/// How many rows [`others_of_batch`] holds at or before `upto`.
pub(crate) async fn count_others_of_batch(
    conn: &mut sqlx::sqlite::SqliteConnection,
    def: &ResourceDef,
    device: Uuid,
    author: Uuid,
    seq: u64,
    upto: Uuid,
) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM crdt_owned_others WHERE resource = ? AND device = ? AND seq = ? \
         AND alive = 1 AND substr(ts, 9) = ? AND uuid <= ?",
    )
    .bind(def.name.clone())
    .bind(key_of(device))
    .bind(seq as i64)
    .bind(author.as_bytes().to_vec())
    .bind(key_of(upto))
    .fetch_one(&mut *conn)
    .await?;
    Ok(n.max(0) as u64)
}

/// An owned row to insert where it is new: key, owner (the device, as stored), the
/// timestamp and seq of the owner's op, and its values in column order.
pub(crate) type NewOwned = (String, String, Hlc, u64, Vec<Value>);

/// Inserts the owned rows of `def` that are new here: in neither its table nor its
/// tombstones, claims or other devices' ops, and not earlier in `rows`. Returns, for each
/// of `rows` in order, whether it went in; the others (held here in some form, or a key
/// repeated) changed nothing, and the caller merges them the general way.
///
/// What is held is looked up first, per chunk of keys; the rest go in with a plain
/// multi-row `INSERT`. (A filter in the insert itself, with `RETURNING` to tell what went
/// in, fills a temporary table per statement and hands back a row per row.)
pub(crate) async fn insert_new_owned(
    conn: &mut sqlx::sqlite::SqliteConnection,
    def: &ResourceDef,
    rows: Vec<NewOwned>,
) -> Result<Vec<bool>, StoreError> {
    let ncols = def.columns.len() + 4;
    let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    let mut went_in = Vec::with_capacity(rows.len());
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    for chunk in crate::sql::owned_chunks(rows, crate::sql::rows_per_statement(ncols)) {
        // The chunk's own keys, looked up: what comes back is at most the chunk, whatever
        // the page holds (a range of its keys could span a whole table here).
        let held: std::collections::HashSet<String> = {
            let sql = format!(
                "WITH k(u) AS (VALUES {keys}) SELECT u FROM k WHERE \
                 EXISTS (SELECT 1 FROM {t} WHERE uuid = k.u) \
                 OR EXISTS (SELECT 1 FROM crdt_rows WHERE resource = ? AND uuid = k.u) \
                 OR EXISTS (SELECT 1 FROM crdt_owned_claims WHERE resource = ? AND uuid = k.u) \
                 OR EXISTS (SELECT 1 FROM crdt_owned_others WHERE resource = ? AND uuid = k.u)",
                keys = crate::sql::values_list(chunk.len(), 1),
                t = def.name
            );
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for r in &chunk {
                q = q.bind(r.0.clone());
            }
            for _ in 0..3 {
                q = q.bind(def.name.clone());
            }
            q.fetch_all(&mut *conn).await?.into_iter().collect()
        };
        let mut fresh = Vec::with_capacity(chunk.len());
        for r in chunk {
            let new = !held.contains(&r.0) && seen.insert(r.0.clone());
            went_in.push(new);
            if new {
                fresh.push(r);
            }
        }
        if fresh.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO {t} (uuid, owner, crdt_ts, crdt_seq, {cols}) VALUES {values}",
            t = def.name,
            cols = names.join(", "),
            values = crate::sql::values_list(fresh.len(), ncols),
        );
        // Positional parameters only: SQLite looks a numbered one up by a scan of them all,
        // once per parameter bound.
        let mut q = crate::sql::query(sql);
        for (key, owner, ts, seq, values) in fresh {
            q = q
                .bind(key)
                .bind(owner)
                .bind(ts.to_bytes().to_vec())
                .bind(seq as i64);
            for v in values {
                q = q.bind(v);
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(went_in)
}
