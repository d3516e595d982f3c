//! The op log, stored in chunks.
//!
//! A row of `op_chunks` holds a run of consecutive ops of one author (`first_seq` to
//! `last_seq`, no gap) written in one transaction, at most [`CHUNK_OPS`] of them, as one
//! blob. Appending a batch of 500 ops is one row, not 500 (BENCHMARKS.md has what that
//! saves).
//!
//! Blob format, version 1: the byte `0x01`, then a CBOR array with one entry per op, in seq
//! order. An entry is a CBOR array `[time, method, resource, uuid, property, value, fields,
//! count, rejected]` (the author and seq come from the row). `rejected` names the merge rule
//! that refused the op, if one did: such ops are kept so that no replica sees a gap.
//!
//! Chunks of one author never overlap (an op is logged once: the version vector filters
//! duplicates before the engine runs), so `(client_uuid, last_seq)` orders them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::clock::Hlc;
use crate::error::StoreError;
use crate::op::{Method, Op};
use crate::sql::rows::parse_uuid;
use crate::sql::{query, rows_per_statement, values_list};
use crate::value::Value;

/// Ops per chunk at most: a catch-up page that starts inside a chunk decodes at most this
/// many ops it does not send.
pub(crate) const CHUNK_OPS: usize = 1_000;

const FORMAT_V1: u8 = 1;

/// One op as written into a chunk (borrowed, to encode without cloning).
#[derive(Serialize)]
struct EntryRef<'a>(
    u64,
    Method,
    &'a str,
    Option<Uuid>,
    Option<&'a str>,
    Option<&'a Value>,
    &'a BTreeMap<String, Value>,
    Option<u64>,
    Option<&'a str>,
);

/// One op as read from a chunk.
#[derive(Deserialize)]
struct Entry(
    u64,
    Method,
    String,
    Option<Uuid>,
    Option<String>,
    Option<Value>,
    BTreeMap<String, Value>,
    Option<u64>,
    Option<String>,
);

/// An op of the log, with the rule that refused it if one did.
pub(crate) type Logged = (Op, Option<String>);

/// Encodes consecutive ops of one author as a chunk blob.
fn encode(ops: &[(&Op, Option<String>)]) -> Result<Vec<u8>, StoreError> {
    let entries: Vec<EntryRef<'_>> = ops
        .iter()
        .map(|(op, rejected)| {
            EntryRef(
                op.time,
                op.method,
                &op.resource,
                op.uuid,
                op.property.as_deref(),
                op.value.as_ref(),
                &op.fields,
                op.count,
                rejected.as_deref(),
            )
        })
        .collect();
    let mut buf = Vec::with_capacity(64 + 96 * ops.len());
    buf.push(FORMAT_V1);
    ciborium::into_writer(&entries, &mut buf)
        .map_err(|e| StoreError::Invalid(format!("encoding an op log chunk: {e}")))?;
    Ok(buf)
}

/// Decodes the chunk of `author` holding `first..=last`.
pub(crate) fn decode(
    author: Uuid,
    first: u64,
    last: u64,
    blob: &[u8],
) -> Result<Vec<Logged>, StoreError> {
    let corrupt =
        |why: String| StoreError::Corrupt(format!("op log chunk {author} {first}..={last}: {why}"));
    let Some((&version, body)) = blob.split_first() else {
        return Err(corrupt("empty".into()));
    };
    if version != FORMAT_V1 {
        return Err(corrupt(format!("unknown format {version}")));
    }
    let entries: Vec<Entry> =
        ciborium::from_reader(body).map_err(|e| corrupt(format!("CBOR: {e}")))?;
    let span = last.checked_sub(first).and_then(|d| d.checked_add(1));
    if span != Some(entries.len() as u64) {
        return Err(corrupt(format!("{} entries", entries.len())));
    }
    Ok(entries
        .into_iter()
        .zip(first..)
        .map(|(e, seq)| {
            let Entry(time, method, resource, uuid, property, value, fields, count, rejected) = e;
            let op = Op {
                author,
                seq,
                time,
                method,
                resource,
                uuid,
                property,
                value,
                fields,
                count,
            };
            (op, rejected)
        })
        .collect())
}

/// Appends ops to the log: sorted by (author, seq), cut into runs of consecutive seqs of
/// at most [`CHUNK_OPS`], one row each. Every op must be new to the log. `contiguous` (one
/// entry per author) is stored into `version_vector` by the same statement: one round trip
/// to SQLite's thread less per write.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    log: &mut [(&Op, Option<String>)],
    contiguous: &[(Uuid, u64)],
) -> Result<(), StoreError> {
    log.sort_by_key(|(op, _)| (op.author, op.seq));
    let mut rows: Vec<(String, u64, u64, Vec<u8>)> = Vec::new();
    let mut start = 0;
    while start < log.len() {
        let first = log[start].0;
        let mut end = start + 1;
        while end < log.len()
            && end - start < CHUNK_OPS
            && log[end].0.author == first.author
            && log[end].0.seq == log[end - 1].0.seq + 1
        {
            end += 1;
        }
        rows.push((
            first.author.hyphenated().to_string(),
            first.seq,
            log[end - 1].0.seq,
            encode(&log[start..end])?,
        ));
        start = end;
    }
    let statements = rows.len().div_ceil(rows_per_statement(4)).max(1);
    let mut chunks = rows.chunks(rows_per_statement(4));
    for i in 0..statements {
        let chunk = chunks.next().unwrap_or_default();
        let mut sql = String::new();
        if !chunk.is_empty() {
            sql = format!(
                "INSERT INTO op_chunks (client_uuid, first_seq, last_seq, ops) VALUES {};",
                values_list(chunk.len(), 4)
            );
        }
        let last = i + 1 == statements;
        if last {
            for authors in contiguous.chunks(rows_per_statement(2)) {
                sql.push_str(&format!(
                    "INSERT INTO version_vector (client_uuid, contiguous) VALUES {} \
                     ON CONFLICT (client_uuid) DO UPDATE SET contiguous = excluded.contiguous;",
                    values_list(authors.len(), 2)
                ));
            }
        }
        if sql.is_empty() {
            continue;
        }
        let mut q = query(sql);
        for (author, first, last, blob) in chunk {
            q = q
                .bind(author.as_str())
                .bind(*first as i64)
                .bind(*last as i64)
                .bind(blob.as_slice());
        }
        if last {
            for (author, seq) in contiguous {
                q = q.bind(author.hyphenated().to_string()).bind(*seq as i64);
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The chunks of `author` holding ops above `after`, in seq order: those that start at or
/// below `upto` and whose blobs fit in `max_bytes` (at least one), or (when none does: a
/// gap in the log) the next one. The blobs' sizes are read first (SQLite measures a blob
/// without loading it), so a log of large ops is never read beyond what a page takes.
pub(crate) async fn chunks_after(
    conn: &mut SqliteConnection,
    author: Uuid,
    after: u64,
    upto: u64,
    max_bytes: usize,
) -> Result<Vec<Logged>, StoreError> {
    let author_s = author.hyphenated().to_string();
    let after_i = after.min(i64::MAX as u64) as i64;
    let sizes = sqlx::query(
        "SELECT last_seq, length(ops) FROM op_chunks \
         WHERE client_uuid = ? AND last_seq > ? AND first_seq <= ? ORDER BY last_seq",
    )
    .bind(&author_s)
    .bind(after_i)
    .bind(upto.min(i64::MAX as u64) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut through = None;
    let mut bytes = 0usize;
    for r in &sizes {
        let len = r.try_get::<i64, _>(1)?.max(0) as usize;
        if through.is_some() && bytes.saturating_add(len) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(len);
        through = Some(r.try_get::<i64, _>(0)?);
    }
    let sql = "SELECT first_seq, last_seq, ops FROM op_chunks \
               WHERE client_uuid = ? AND last_seq > ? AND last_seq <= ? ORDER BY last_seq LIMIT ?";
    let mut rows = match through {
        Some(through) => {
            sqlx::query(sql)
                .bind(&author_s)
                .bind(after_i)
                .bind(through)
                .bind(i64::MAX)
                .fetch_all(&mut *conn)
                .await?
        }
        None => Vec::new(),
    };
    if rows.is_empty() {
        rows = sqlx::query(sql)
            .bind(&author_s)
            .bind(after_i)
            .bind(i64::MAX)
            .bind(1i64)
            .fetch_all(&mut *conn)
            .await?;
    }
    let mut out = Vec::new();
    for r in rows {
        let first = r.try_get::<i64, _>(0)? as u64;
        let last = r.try_get::<i64, _>(1)? as u64;
        let blob: &[u8] = r.try_get(2)?;
        out.extend(
            decode(author, first, last, blob)?
                .into_iter()
                .filter(|(op, _)| op.seq > after),
        );
    }
    Ok(out)
}

/// Removes the chunks of `author` wholly at or below `through` and returns how many logged
/// ops lie in `(pruned, through]` (a chunk that straddles `through` stays, but its ops at
/// or below it no longer count as pending).
pub(crate) async fn prune(
    conn: &mut SqliteConnection,
    author: Uuid,
    pruned: u64,
    through: u64,
) -> Result<u64, StoreError> {
    let author_s = author.hyphenated().to_string();
    let removed: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(MIN(last_seq, ?2) - MAX(first_seq, ?3 + 1) + 1), 0) FROM op_chunks \
         WHERE client_uuid = ?1 AND last_seq > ?3 AND first_seq <= ?2",
    )
    .bind(&author_s)
    .bind(through as i64)
    .bind(pruned as i64)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM op_chunks WHERE client_uuid = ? AND last_seq <= ?")
        .bind(&author_s)
        .bind(through as i64)
        .execute(&mut *conn)
        .await?;
    Ok(removed.max(0) as u64)
}

/// How many ops the log holds above each author's pruning horizon.
pub(crate) async fn pending(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(c.last_seq - MAX(c.first_seq, COALESCE(v.pruned_through, 0) + 1) + 1), 0) \
         FROM op_chunks c LEFT JOIN version_vector v ON v.client_uuid = c.client_uuid \
         WHERE c.last_seq > COALESCE(v.pruned_through, 0)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(n.max(0) as u64)
}

/// The logged ops above each author's contiguous seq (arrived out of order), as
/// `(author, seq)`: the version vector is rebuilt from them when the store opens.
pub(crate) async fn above_contiguous(
    conn: &mut SqliteConnection,
) -> Result<Vec<(Uuid, u64)>, StoreError> {
    let mut out = Vec::new();
    for r in sqlx::query(
        "SELECT c.client_uuid, MAX(c.first_seq, COALESCE(v.contiguous, 0) + 1), c.last_seq \
         FROM op_chunks c LEFT JOIN version_vector v ON v.client_uuid = c.client_uuid \
         WHERE c.last_seq > COALESCE(v.contiguous, 0)",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let author = parse_uuid(&r.try_get::<String, _>(0)?)?;
        let (from, to) = (
            r.try_get::<i64, _>(1)? as u64,
            r.try_get::<i64, _>(2)? as u64,
        );
        out.extend((from..=to).map(|seq| (author, seq)));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The log as versions before the chunks stored it: one `operations` row per op.

/// Moves the ops of a log written one row per op (migration 0001's `operations`) into
/// chunks, in pages, then drops that table. Returns how many ops moved. A no-op once done.
pub(crate) async fn move_legacy_rows(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'operations'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if exists == 0 {
        return Ok(0);
    }
    const PAGE: i64 = 10_000;
    let mut moved = 0u64;
    let mut after = (String::new(), 0i64);
    loop {
        let rows = sqlx::query(
            "SELECT client_uuid, seq, uhlc_timestamp, method, resource_type, resource_uuid, \
             resource_property, value, rejected FROM operations \
             WHERE (client_uuid, seq) > (?, ?) ORDER BY client_uuid, seq LIMIT ?",
        )
        .bind(&after.0)
        .bind(after.1)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get(0)?, last.try_get(1)?);
        let ops = rows
            .iter()
            .map(|r| Ok((legacy_op(r)?, r.try_get::<Option<String>, _>(8)?)))
            .collect::<Result<Vec<Logged>, StoreError>>()?;
        let mut refs: Vec<(&Op, Option<String>)> =
            ops.iter().map(|(op, rej)| (op, rej.clone())).collect();
        append(conn, &mut refs, &[]).await?;
        moved += ops.len() as u64;
    }
    sqlx::query("DROP TABLE operations")
        .execute(&mut *conn)
        .await?;
    Ok(moved)
}

/// An op of the one-row-per-op log.
fn legacy_op(r: &sqlx::sqlite::SqliteRow) -> Result<Op, StoreError> {
    let author = parse_uuid(&r.try_get::<String, _>(0)?)?;
    let seq = r.try_get::<i64, _>(1)? as u64;
    let ts = Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?;
    let method_s: String = r.try_get(3)?;
    let method = Method::parse(&method_s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown method {method_s}")))?;
    let resource: String = r.try_get(4)?;
    let uuid = r
        .try_get::<Option<String>, _>(5)?
        .map(|s| parse_uuid(&s))
        .transpose()?;
    let property: Option<String> = r.try_get(6)?;
    let raw: Option<Vec<u8>> = r.try_get(7)?;
    let corrupt =
        |e: ciborium::de::Error<std::io::Error>| StoreError::Corrupt(format!("op value: {e}"));
    let mut op = Op {
        author,
        seq,
        time: ts.time,
        method,
        resource,
        uuid,
        property,
        value: None,
        fields: BTreeMap::new(),
        count: None,
    };
    if let Some(raw) = raw {
        match method {
            Method::SharedCreate => {
                op.fields = ciborium::from_reader(raw.as_slice()).map_err(corrupt)?
            }
            Method::SharedUpdate => {
                op.value = ciborium::from_reader(raw.as_slice()).map_err(corrupt)?
            }
            Method::OwnedBatchCreate => {
                op.count = ciborium::from_reader(raw.as_slice()).map_err(corrupt)?
            }
            _ => {}
        }
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<Op> {
        let author = Uuid::from_u128(9);
        let base = Op {
            author,
            seq: 5,
            time: 1 << 40,
            method: Method::SharedCreate,
            resource: "tags".into(),
            uuid: Some(Uuid::from_u128(1)),
            property: None,
            value: None,
            fields: BTreeMap::from([("name".to_owned(), Value::Text("a".into()))]),
            count: None,
        };
        let update = Op {
            seq: 6,
            method: Method::SharedUpdate,
            property: Some("name".into()),
            value: Some(Value::Int(3)),
            fields: BTreeMap::new(),
            ..base.clone()
        };
        let batch = Op {
            seq: 7,
            method: Method::OwnedBatchCreate,
            resource: "file_paths".into(),
            uuid: None,
            fields: BTreeMap::new(),
            count: Some(2),
            ..base.clone()
        };
        vec![base, update, batch]
    }

    #[test]
    fn a_chunk_decodes_to_the_ops_it_was_encoded_from() {
        let ops = ops();
        let entries: Vec<(&Op, Option<String>)> = ops
            .iter()
            .map(|op| (op, (op.seq == 6).then(|| "not the owner".to_owned())))
            .collect();
        let blob = encode(&entries).unwrap();
        let back = decode(ops[0].author, 5, 7, &blob).unwrap();
        assert_eq!(
            back.iter().map(|(op, _)| op.clone()).collect::<Vec<_>>(),
            ops
        );
        assert_eq!(back[1].1.as_deref(), Some("not the owner"));
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let ops = ops();
        let entries: Vec<(&Op, Option<String>)> = ops.iter().map(|op| (op, None)).collect();
        let blob = encode(&entries).unwrap();
        let author = ops[0].author;
        for cut in 0..blob.len() {
            assert!(decode(author, 5, 7, &blob[..cut]).is_err(), "cut at {cut}");
        }
        // A range that does not match the entries, or is reversed.
        assert!(decode(author, 5, 8, &blob).is_err());
        assert!(decode(author, 5, 6, &blob).is_err());
        assert!(decode(author, 7, 5, &blob).is_err());
        assert!(decode(author, 0, u64::MAX, &blob).is_err());
        // An unknown format, and CBOR that is not a list of entries.
        let mut other = blob.clone();
        other[0] = 2;
        assert!(decode(author, 5, 7, &other).is_err());
        assert!(decode(author, 5, 7, &[FORMAT_V1, 0x01]).is_err());
        assert!(decode(author, 5, 7, &[FORMAT_V1, 0x83, 0x01, 0x02, 0x03]).is_err());
    }
}
