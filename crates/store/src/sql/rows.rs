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
/// order, that are kept in `crdt_owned_others` (the rows of a device that does not own
/// them): a batch is sent with them, since their device may yet take them over.
pub(crate) async fn others_of_batch(
    conn: &mut sqlx::sqlite::SqliteConnection,
    def: &ResourceDef,
    author: Uuid,
    seq: u64,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<OwnedRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT uuid, vals FROM crdt_owned_others WHERE resource = ? AND device = ? AND seq = ? \
         AND alive = 1 AND uuid > ? ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(key_of(author))
    .bind(seq as i64)
    .bind(after.map(key_of).unwrap_or_default())
    .bind(limit as i64)
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

/// The UUIDs and value bytes (the stored CBOR's length, measured by SQLite without loading
/// it) of the rows [`others_of_batch`] reads, with the same arguments.
pub(crate) async fn others_of_batch_sizes(
    conn: &mut sqlx::sqlite::SqliteConnection,
    def: &ResourceDef,
    author: Uuid,
    seq: u64,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<(Uuid, usize)>, StoreError> {
    let rows = sqlx::query(
        "SELECT uuid, length(vals) FROM crdt_owned_others WHERE resource = ? AND device = ? \
         AND seq = ? AND alive = 1 AND uuid > ? ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(key_of(author))
    .bind(seq as i64)
    .bind(after.map(key_of).unwrap_or_default())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                parse_uuid(r.try_get::<&str, _>(0)?)?,
                r.try_get::<Option<i64>, _>(1)?.unwrap_or(0).max(0) as usize,
            ))
        })
        .collect()
}

/// Up to `limit` rows after `after`, in UUID order, whose owner's claim (its lowest create)
/// is the owned batch at `ts` of `def` but which a later op of the owner rewrote or deleted
/// (`crdt_owned_claims`). A batch is sent with them so that the receiver learns the claim;
/// their values are the row's current ones (null for a tombstone): the owner's later op,
/// sent too, is the row.
pub(crate) async fn claims_of_batch(
    conn: &mut sqlx::sqlite::SqliteConnection,
    def: &ResourceDef,
    ts: Hlc,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<OwnedRow>, StoreError> {
    let cols: String = def
        .columns
        .iter()
        .map(|c| format!(", t.{}", c.name))
        .collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT c.uuid{cols} FROM crdt_owned_claims c LEFT JOIN {} t ON t.uuid = c.uuid \
         WHERE c.resource = ? AND c.claim = ? AND c.uuid > ? ORDER BY c.uuid LIMIT ?",
        def.name
    )))
    .bind(def.name.clone())
    .bind(ts.to_bytes().to_vec())
    .bind(after.map(key_of).unwrap_or_default())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| owned_row_from(r, def, 1)).collect()
}
