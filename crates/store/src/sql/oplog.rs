//! The op log, stored in chunks.
//!
//! A row of `op_chunks` holds a run of consecutive ops of one author (`first_seq` to
//! `last_seq`, no gap) written in one transaction, at most [`CHUNK_OPS`] of them, as one
//! blob. Appending a batch of 500 ops is one row, not 500 (BENCHMARKS.md has what that
//! saves).
//!
//! Blob format, version 2: the byte `0x02`, then a CBOR array with one entry per op, in seq
//! order. An entry is a CBOR array `[time, method, resource, uuid, property, value, fields,
//! count, rejected, groups]` (the author and seq come from the row). `rejected` names the
//! merge rule that refused the op, if one did: such ops are kept so that no replica sees a
//! gap. `groups` are an owned batch's row groups ([`Op::groups`]). Version 1 (`0x01`) is
//! the same without `groups`, and is still read.
//!
//! `prev` is the author's chain hash before `first_seq` ([`crate::proof`]); `op_heads` holds
//! the signed heads that prove the ops, and is kept and pruned with them.
//!
//! Chunks of one author never overlap (an op is logged once: the version vector filters
//! duplicates before the engine runs), so `(client_uuid, last_seq)` orders them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::op::{Method, Op, RowGroup};
use crate::proof::{AuthorKey, Chain, Hash, Head, Signature, chain_next, op_hash};
use crate::sql::rows::parse_uuid;
use crate::sql::{
    MAX_PARAMS, MAX_ROWS_PER_STATEMENT, Query, query, rows_per_statement, values_list,
};
use crate::value::Value;

/// Ops per chunk at most: a catch-up page that starts inside a chunk decodes at most this
/// many ops it does not send.
pub(crate) const CHUNK_OPS: usize = 1_000;

const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;

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
    &'a [RowGroup],
);

/// One op as read from a chunk of version 2.
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
    Vec<RowGroup>,
);

/// One op as read from a chunk of version 1.
#[derive(Deserialize)]
struct EntryV1(
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
                &op.groups,
            )
        })
        .collect();
    let mut buf = Vec::with_capacity(64 + 96 * ops.len());
    buf.push(FORMAT_V2);
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
    let entries: Vec<Entry> = match version {
        FORMAT_V2 => ciborium::from_reader(body).map_err(|e| corrupt(format!("CBOR: {e}")))?,
        FORMAT_V1 => {
            let v1: Vec<EntryV1> =
                ciborium::from_reader(body).map_err(|e| corrupt(format!("CBOR: {e}")))?;
            v1.into_iter()
                .map(|EntryV1(t, m, r, u, p, v, f, c, x)| {
                    Entry(t, m, r, u, p, v, f, c, x, Vec::new())
                })
                .collect()
        }
        _ => return Err(corrupt(format!("unknown format {version}"))),
    };
    let span = last.checked_sub(first).and_then(|d| d.checked_add(1));
    if span != Some(entries.len() as u64) {
        return Err(corrupt(format!("{} entries", entries.len())));
    }
    Ok(entries
        .into_iter()
        .zip(first..)
        .map(|(e, seq)| {
            let Entry(
                time,
                method,
                resource,
                uuid,
                property,
                value,
                fields,
                count,
                rejected,
                groups,
            ) = e;
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
                groups,
            };
            (op, rejected)
        })
        .collect())
}

/// One chunk as inserted: author, first and last seq, the encoded ops, the chain before.
type ChunkRow = (String, u64, u64, Vec<u8>, Option<Hash>);

/// Appends ops to the log: sorted by (author, seq), cut into runs of consecutive seqs of
/// at most [`CHUNK_OPS`], one row each. Every op must be new to the log. `contiguous` (one
/// entry per author) is stored into `version_vector` by the same statement: one round trip
/// to SQLite's thread less per write.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    log: &mut [(&Op, Option<String>)],
    contiguous: &[(Uuid, u64)],
    chain: &Chain,
) -> Result<(), StoreError> {
    log.sort_by_key(|(op, _)| (op.author, op.seq));
    let mut rows: Vec<ChunkRow> = Vec::new();
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
            chain.prev_of(first.author, first.seq),
        ));
        start = end;
    }
    let statements = rows.len().div_ceil(rows_per_statement(5)).max(1);
    let mut chunks = rows.chunks(rows_per_statement(5));
    for i in 0..statements {
        let chunk = chunks.next().unwrap_or_default();
        let mut sql = String::new();
        if !chunk.is_empty() {
            sql = format!(
                "INSERT INTO op_chunks (client_uuid, first_seq, last_seq, ops, prev) VALUES {};",
                values_list(chunk.len(), 5)
            );
        }
        let last = i + 1 == statements;
        // The heads go with the last statement when its parameters allow (a local write's
        // one or few heads: one statement, and one round trip, less per write).
        let heads_inline = last
            && chain.heads.len() <= MAX_ROWS_PER_STATEMENT
            && chunk.len() * 5 + contiguous.len() * 2 + chain.heads.len() * 5 <= MAX_PARAMS;
        if heads_inline && !chain.heads.is_empty() {
            sql.push_str(&heads_sql(chain.heads.len()));
        }
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
        for (author, first, last, blob, prev) in chunk {
            q = q
                .bind(author.as_str())
                .bind(*first as i64)
                .bind(*last as i64)
                .bind(blob.as_slice())
                .bind(prev.map(|h| h.0.to_vec()));
        }
        if heads_inline {
            q = bind_heads(q, &chain.heads);
        }
        if last {
            for (author, seq) in contiguous {
                q = q.bind(author.hyphenated().to_string()).bind(*seq as i64);
            }
        }
        q.execute(&mut *conn).await?;
        if last && !heads_inline {
            store_heads(conn, &chain.heads).await?;
        }
    }
    store_keys(conn, &chain.keys).await
}

/// The statement that keeps `n` heads (a head already kept is replaced: the newer copy
/// holds more ops).
fn heads_sql(n: usize) -> String {
    format!(
        "INSERT OR REPLACE INTO op_heads (client_uuid, seq, hash, sig, tail) VALUES {};",
        values_list(n, 5)
    )
}

fn bind_heads(mut q: Query, heads: &[Head]) -> Query {
    for h in heads {
        let tail: Option<Vec<u8>> =
            (!h.tail.is_empty()).then(|| h.tail.iter().flat_map(|t| t.0).collect());
        q = q
            .bind(h.author.hyphenated().to_string())
            .bind(h.seq as i64)
            .bind(h.hash.0.to_vec())
            .bind(h.sig.0.to_vec())
            .bind(tail);
    }
    q
}

/// Keeps the heads and keys of a chain that came with no ops (a snapshot's proofs).
pub(crate) async fn store_proven(
    conn: &mut SqliteConnection,
    chain: &Chain,
) -> Result<(), StoreError> {
    store_heads(conn, &chain.heads).await?;
    store_keys(conn, &chain.keys).await
}

/// Records the keys of authors whose proofs were verified.
async fn store_keys(conn: &mut SqliteConnection, keys: &[AuthorKey]) -> Result<(), StoreError> {
    let mut keys: Vec<&AuthorKey> = keys.iter().collect();
    keys.sort_by_key(|k| (k.public, k.nonce));
    keys.dedup();
    for chunk in keys.chunks(rows_per_statement(4)) {
        let sql = format!(
            "INSERT OR IGNORE INTO authors (client_uuid, public_key, nonce, device) VALUES {}",
            values_list(chunk.len(), 4)
        );
        let mut q = query(sql);
        for k in chunk {
            let device = k.device().map_err(|e| StoreError::Invalid(e.to_string()))?;
            q = q
                .bind(k.author().hyphenated().to_string())
                .bind(k.public.0.to_vec())
                .bind(k.nonce.to_be_bytes().to_vec())
                .bind(device.hyphenated().to_string());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The key of `author`, if a proof of it was verified here.
pub(crate) async fn author_key(
    conn: &mut SqliteConnection,
    author: Uuid,
) -> Result<Option<AuthorKey>, StoreError> {
    let row = sqlx::query("SELECT public_key, nonce FROM authors WHERE client_uuid = ?")
        .bind(author.hyphenated().to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let public = hash_of(Some(r.try_get::<Vec<u8>, _>(0)?))?
        .ok_or_else(|| StoreError::Corrupt(format!("key of {author}")))?;
    let nonce: Vec<u8> = r.try_get(1)?;
    let nonce: [u8; 16] = nonce
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("nonce of {author}")))?;
    Ok(Some(AuthorKey {
        public,
        nonce: u128::from_be_bytes(nonce),
    }))
}

/// Every author's device, as verified here.
pub(crate) async fn devices(
    conn: &mut SqliteConnection,
) -> Result<std::collections::HashMap<Uuid, Uuid>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for r in sqlx::query("SELECT client_uuid, device FROM authors")
        .fetch_all(&mut *conn)
        .await?
    {
        out.insert(
            parse_uuid(&r.try_get::<String, _>(0)?)?,
            parse_uuid(&r.try_get::<String, _>(1)?)?,
        );
    }
    Ok(out)
}

/// Keeps signed heads (a head already kept is replaced: the newer copy holds more ops).
async fn store_heads(conn: &mut SqliteConnection, heads: &[Head]) -> Result<(), StoreError> {
    for chunk in heads.chunks(rows_per_statement(5)) {
        bind_heads(query(heads_sql(chunk.len())), chunk)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The author's chain hash after op `seq` (0: the empty chain), from the log or the
/// pruned horizon. `None` when this replica cannot tell (the op is not logged here).
pub(crate) async fn chain_at(
    conn: &mut SqliteConnection,
    author: Uuid,
    seq: u64,
) -> Result<Option<Hash>, StoreError> {
    if seq == 0 {
        return Ok(Some(Hash::ZERO));
    }
    let author_s = author.hyphenated().to_string();
    let row = sqlx::query(
        "SELECT first_seq, last_seq, ops, prev FROM op_chunks          WHERE client_uuid = ? AND last_seq >= ? AND first_seq <= ? ORDER BY last_seq LIMIT 1",
    )
    .bind(&author_s)
    .bind(seq.min(i64::MAX as u64) as i64)
    .bind(seq.min(i64::MAX as u64) as i64)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = row {
        let first = r.try_get::<i64, _>(0)? as u64;
        let last = r.try_get::<i64, _>(1)? as u64;
        let blob: &[u8] = r.try_get(2)?;
        let Some(mut at) = hash_of(r.try_get::<Option<Vec<u8>>, _>(3)?)? else {
            return Ok(None);
        };
        for (op, _) in decode(author, first, last, blob)? {
            if op.seq > seq {
                break;
            }
            at = chain_next(&at, &op_hash(&op));
        }
        return Ok(Some(at));
    }
    let pruned = sqlx::query(
        "SELECT pruned_chain FROM version_vector WHERE client_uuid = ? AND pruned_through = ?",
    )
    .bind(&author_s)
    .bind(seq.min(i64::MAX as u64) as i64)
    .fetch_optional(&mut *conn)
    .await?;
    match pruned {
        Some(r) => hash_of(r.try_get::<Option<Vec<u8>>, _>(0)?),
        None => Ok(None),
    }
}

/// The seq of the first head of `author` at or after `seq` (what [`head_from`] would read,
/// without its signature and tail).
pub(crate) async fn head_seq_from(
    conn: &mut SqliteConnection,
    author: Uuid,
    seq: u64,
) -> Result<Option<u64>, StoreError> {
    let row = sqlx::query(
        "SELECT seq FROM op_heads WHERE client_uuid = ? AND seq >= ? ORDER BY seq LIMIT 1",
    )
    .bind(author.hyphenated().to_string())
    .bind(seq.min(i64::MAX as u64) as i64)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| Ok(r.try_get::<i64, _>(0)?.max(0) as u64))
        .transpose()
}

/// The first head of `author` at or after `seq`.
pub(crate) async fn head_from(
    conn: &mut SqliteConnection,
    author: Uuid,
    seq: u64,
) -> Result<Option<Head>, StoreError> {
    let row = sqlx::query(
        "SELECT seq, hash, sig, tail FROM op_heads WHERE client_uuid = ? AND seq >= ?          ORDER BY seq LIMIT 1",
    )
    .bind(author.hyphenated().to_string())
    .bind(seq.min(i64::MAX as u64) as i64)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let corrupt = |what: &str| StoreError::Corrupt(format!("op head of {author}: {what}"));
    let hash = hash_of(Some(r.try_get::<Vec<u8>, _>(1)?))?.ok_or_else(|| corrupt("hash"))?;
    let sig: Vec<u8> = r.try_get(2)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| corrupt("signature"))?;
    let tail: Option<Vec<u8>> = r.try_get(3)?;
    let tail = match tail {
        None => Vec::new(),
        Some(t) if t.len() % 32 == 0 => t
            .chunks(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                Hash(h)
            })
            .collect(),
        Some(_) => return Err(corrupt("tail")),
    };
    Ok(Some(Head {
        author,
        seq: r.try_get::<i64, _>(0)? as u64,
        hash,
        sig: Signature(sig),
        tail,
    }))
}

fn hash_of(bytes: Option<Vec<u8>>) -> Result<Option<Hash>, StoreError> {
    match bytes {
        None => Ok(None),
        Some(b) => {
            let h: [u8; 32] = b
                .try_into()
                .map_err(|_| StoreError::Corrupt("a chain hash is not 32 bytes".into()))?;
            Ok(Some(Hash(h)))
        }
    }
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

/// Removes the chunks of `author` wholly at or below `through` (and what sending its owned
/// batches there on needed, [`crate::sql::batches`]) and returns how many logged
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
    // The chain hash at the horizon stays, so a run starting after it can still be proven.
    let at = chain_at(conn, author, through).await?;
    sqlx::query("UPDATE version_vector SET pruned_chain = ? WHERE client_uuid = ?")
        .bind(at.map(|h| h.0.to_vec()))
        .bind(&author_s)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM op_chunks WHERE client_uuid = ? AND last_seq <= ?")
        .bind(&author_s)
        .bind(through as i64)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM op_heads WHERE client_uuid = ? AND seq < ?")
        .bind(&author_s)
        .bind(through as i64)
        .execute(&mut *conn)
        .await?;
    // The values kept to send those batches on go with them.
    crate::sql::batches::prune(conn, author, through).await?;
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

/// Drops the log of versions before the chunks (migration 0001's `operations`, one row per
/// op). Its ops carry no proof of authorship, so they cannot be sent on: they count as
/// pruned (migration 0006 set every horizon to its contiguous seq), and a peer that lacks
/// them gets a snapshot. Returns how many ops were dropped. A no-op once done.
pub(crate) async fn move_legacy_rows(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'operations'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if exists == 0 {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM operations")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("DROP TABLE operations")
        .execute(&mut *conn)
        .await?;
    Ok(n.max(0) as u64)
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
            groups: Vec::new(),
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
            groups: vec![RowGroup {
                rows: 2,
                hash: Hash([7; 32]),
            }],
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
    fn chunks_of_version_1_still_decode() {
        let mut ops = ops();
        ops[2].groups.clear();
        let entries: Vec<_> = ops
            .iter()
            .map(|op| {
                (
                    op.time,
                    op.method,
                    &op.resource,
                    op.uuid,
                    op.property.as_deref(),
                    op.value.as_ref(),
                    &op.fields,
                    op.count,
                    None::<&str>,
                )
            })
            .collect();
        let mut blob = vec![FORMAT_V1];
        ciborium::into_writer(&entries, &mut blob).unwrap();
        let back = decode(ops[0].author, 5, 7, &blob).unwrap();
        assert_eq!(back.into_iter().map(|(op, _)| op).collect::<Vec<_>>(), ops);
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
        other[0] = 3;
        assert!(decode(author, 5, 7, &other).is_err());
        assert!(decode(author, 5, 7, &[FORMAT_V2, 0x01]).is_err());
        assert!(decode(author, 5, 7, &[FORMAT_V1, 0x01]).is_err());
        assert!(decode(author, 5, 7, &[FORMAT_V1, 0x83, 0x01, 0x02, 0x03]).is_err());
    }
}
