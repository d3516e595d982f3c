//! The digest's tables (`migrations/0010_digest.sql`): the stored fingerprints of key
//! ranges, the leaves marked dirty by the triggers, the triggers of the data tables, and
//! the rows of a key range read as a snapshot sends them (what a fingerprint hashes).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use crate::clock::Hlc;
use crate::digest::{Fingerprint, LEAF};
use crate::error::StoreError;
use crate::hash::Hash;
use crate::merge::SharedRow;
use crate::op::SnapshotRow;
use crate::registry::{Kind, ResourceDef};
use crate::sql::rows::{
    column_list, live_row_from, owned_row_from, parse_uuid, side_head_from, side_prop_from,
};

/// The collation only murmur's connections register; the synced tables' triggers name it,
/// so another program's write to them fails ("no such collation sequence").
pub const WRITER_COLLATION: &str = "murmur_writer";

/// The mark that keeps the data table's triggers of a resource from marking leaves: held
/// within one transaction by a write that moves the fingerprints of its rows itself
/// ([`hold_marks`], [`add_rows`]). Never a leaf, and never seen outside that transaction.
pub(crate) const HELD: &str = "";

/// What the SQL of a data table's digest trigger of the current definition holds (an
/// older one, found at open, is replaced).
const TRIGGER_FORM: &str = "WHEN NOT EXISTS";

/// Creates the triggers that mark a written row's leaf dirty on the data table of `def`
/// (once; the side tables have theirs from the migration). They name
/// [`WRITER_COLLATION`], and mark nothing while the resource's [`HELD`] mark is there.
/// A trigger of an older definition (without [`TRIGGER_FORM`]) is replaced.
pub(crate) async fn ensure_triggers(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
) -> Result<(), StoreError> {
    for (suffix, event, row) in [
        ("i", "INSERT", "NEW"),
        ("u", "UPDATE", "NEW"),
        ("d", "DELETE", "OLD"),
    ] {
        let name = format!("{}_digest_{suffix}", def.name);
        let stored: Option<String> =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?;
        if stored.as_deref().is_some_and(|s| s.contains(TRIGGER_FORM)) {
            continue;
        }
        // The resource name is the table's name (from the registry, never from input);
        // it is a plain identifier, so it needs no quoting as a string either. The mark is
        // tested for in the trigger's `WHEN`, not `INSERT OR IGNORE`d (an outer statement's
        // conflict policy would override the trigger's), and not by an `INSERT ... SELECT`
        // from the marks (a statement that reads the table it writes fills a temporary
        // table first: two per row written, a third of an import's time). The held mark
        // and the leaf's are two lookups, not one `IN`, which would build a temporary
        // index of its list per row.
        let sql = format!(
            "CREATE TRIGGER {name} AFTER {event} ON {t} {TRIGGER_FORM} \
             (SELECT 1 FROM crdt_digest_dirty WHERE resource = '{t}' AND bucket = '{HELD}') \
             AND NOT EXISTS (SELECT 1 FROM crdt_digest_dirty WHERE resource = '{t}' \
             AND bucket = substr({row}.uuid, 1, {LEAF})) \
             AND 'm' = 'm' COLLATE {WRITER_COLLATION} BEGIN \
             INSERT INTO crdt_digest_dirty (resource, bucket) \
             VALUES ('{t}', substr({row}.uuid, 1, {LEAF})); END",
            t = def.name
        );
        for sql in [format!("DROP TRIGGER IF EXISTS {name}"), sql] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Holds the leaf marks of `resource`'s data table (see [`HELD`]) until
/// [`release_marks`], in the same transaction.
pub(crate) async fn hold_marks(
    conn: &mut SqliteConnection,
    resource: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT OR IGNORE INTO crdt_digest_dirty (resource, bucket) VALUES (?, ?)")
        .bind(resource.to_owned())
        .bind(HELD)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Ends [`hold_marks`].
pub(crate) async fn release_marks(
    conn: &mut SqliteConnection,
    resource: &str,
) -> Result<(), StoreError> {
    clear_dirty(conn, resource, HELD).await
}

/// Adds rows new to `resource` (none of them in any stored fingerprint), each its key and
/// hash and whether it is live, to their leaves and every stored ancestor: what a fold of
/// their leaves would do, without reading the rows back. A leaf that is dirty stays dirty
/// (its fold moves the ancestors by what it finds, from the sum stored here).
pub(crate) async fn add_rows(
    conn: &mut SqliteConnection,
    resource: &str,
    rows: &[(String, Hash, bool)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut leaves: BTreeMap<String, Fingerprint> = BTreeMap::new();
    for (key, hash, live) in rows {
        let leaf = key.get(..LEAF).unwrap_or(key);
        leaves
            .entry(leaf.to_owned())
            .or_default()
            .add_row(hash, *live);
    }
    let mut uppers: BTreeMap<String, Fingerprint> = BTreeMap::new();
    for (leaf, d) in &leaves {
        for len in [0, 2] {
            uppers
                .entry(leaf.get(..len).unwrap_or(leaf).to_owned())
                .or_default()
                .merge(d);
        }
    }
    add_to(conn, resource, &leaves).await?;
    add_to(conn, resource, &uppers).await
}

/// Adds each of `sums` to the stored fingerprint of its range (none stored: empty).
async fn add_to(
    conn: &mut SqliteConnection,
    resource: &str,
    sums: &BTreeMap<String, Fingerprint>,
) -> Result<(), StoreError> {
    let names: Vec<String> = sums.keys().cloned().collect();
    let stored = leaves_in(conn, resource, &names).await?;
    let new: Vec<(&str, Fingerprint)> = sums
        .iter()
        .map(|(range, d)| {
            let mut f = stored.get(range).copied().unwrap_or_default();
            f.merge(d);
            (range.as_str(), f)
        })
        .collect();
    put_many(conn, resource, &new).await
}

/// Marks every leaf of `def` that holds a row dirty, the first time the store opens with
/// the digest (rows written before it have no fingerprint yet). Returns whether it did.
pub(crate) async fn mark_all_once(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
) -> Result<bool, StoreError> {
    let key = format!("digest_init:{}", def.name);
    let done: Option<i64> = sqlx::query_scalar("SELECT 1 FROM meta WHERE key = ?")
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await?;
    if done.is_some() {
        return Ok(false);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT OR IGNORE INTO crdt_digest_dirty (resource, bucket) \
         SELECT DISTINCT ?, substr(uuid, 1, {LEAF}) FROM {}",
        def.name
    )))
    .bind(def.name.clone())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO crdt_digest_dirty (resource, bucket) \
         SELECT DISTINCT resource, substr(uuid, 1, ?) FROM crdt_rows WHERE resource = ?",
    )
    .bind(LEAF as i64)
    .bind(def.name.clone())
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO meta (key, value) VALUES (?, x'01')")
        .bind(&key)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Up to `limit` dirty leaves, in (resource, leaf) order.
pub(crate) async fn dirty(
    conn: &mut SqliteConnection,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT resource, bucket FROM crdt_digest_dirty ORDER BY resource, bucket LIMIT ?",
    )
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Whether any leaf is dirty.
pub(crate) async fn any_dirty(conn: &mut SqliteConnection) -> Result<bool, StoreError> {
    let one: Option<i64> = sqlx::query_scalar("SELECT 1 FROM crdt_digest_dirty LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(one.is_some())
}

/// How many leaves are dirty.
pub(crate) async fn count_dirty(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crdt_digest_dirty")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n.max(0) as u64)
}

/// Clears the dirty marks of the leaves of `resource` from `first` to `last` (both
/// included).
pub(crate) async fn clear_dirty_span(
    conn: &mut SqliteConnection,
    resource: &str,
    first: &str,
    last: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM crdt_digest_dirty WHERE resource = ? AND bucket >= ? AND bucket <= ?")
        .bind(resource.to_owned())
        .bind(first.to_owned())
        .bind(last.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The stored fingerprints of `resource` among the ranges `leaves`.
pub(crate) async fn leaves_in(
    conn: &mut SqliteConnection,
    resource: &str,
    leaves: &[String],
) -> Result<BTreeMap<String, Fingerprint>, StoreError> {
    let mut out = BTreeMap::new();
    for chunk in leaves.chunks(crate::sql::rows_per_statement(1)) {
        let mut q = crate::sql::query(format!(
            "SELECT prefix, hash, entries, live FROM crdt_digest WHERE resource = ? \
             AND prefix IN ({})",
            crate::sql::in_list(chunk.len())
        ))
        .bind(resource.to_owned());
        for l in chunk {
            q = q.bind(l.clone());
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.insert(r.try_get(0)?, fingerprint_from(&r, 1)?);
        }
    }
    Ok(out)
}

/// Stores the fingerprints of many ranges of `resource` (empty ones are removed), a few
/// statements for all.
pub(crate) async fn put_many(
    conn: &mut SqliteConnection,
    resource: &str,
    ranges: &[(&str, Fingerprint)],
) -> Result<(), StoreError> {
    let (empty, full): (Vec<_>, Vec<_>) = ranges.iter().partition(|(_, f)| f.is_empty());
    for chunk in empty.chunks(crate::sql::rows_per_statement(1)) {
        let mut q = crate::sql::query(format!(
            "DELETE FROM crdt_digest WHERE resource = ? AND prefix IN ({})",
            crate::sql::in_list(chunk.len())
        ))
        .bind(resource.to_owned());
        for (p, _) in chunk {
            q = q.bind((*p).to_owned());
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in full.chunks(crate::sql::rows_per_statement(5)) {
        let mut q = crate::sql::query(format!(
            "INSERT INTO crdt_digest (resource, prefix, hash, entries, live) VALUES {} \
             ON CONFLICT (resource, prefix) DO UPDATE SET hash = excluded.hash, \
             entries = excluded.entries, live = excluded.live",
            crate::sql::values_list(chunk.len(), 5)
        ));
        for (p, f) in chunk {
            q = q
                .bind(resource.to_owned())
                .bind((*p).to_owned())
                .bind(f.hash.0.to_vec())
                .bind(f.entries as i64)
                .bind(f.live as i64);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Clears the dirty mark of a leaf.
pub(crate) async fn clear_dirty(
    conn: &mut SqliteConnection,
    resource: &str,
    bucket: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM crdt_digest_dirty WHERE resource = ? AND bucket = ?")
        .bind(resource.to_owned())
        .bind(bucket.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn fingerprint_from(r: &sqlx::sqlite::SqliteRow, first: usize) -> Result<Fingerprint, StoreError> {
    let raw: &[u8] = r.try_get(first)?;
    let hash: [u8; 32] = raw
        .try_into()
        .map_err(|_| StoreError::Corrupt("a digest fingerprint is not 32 bytes".into()))?;
    Ok(Fingerprint {
        hash: Hash(hash),
        entries: r.try_get::<i64, _>(first + 1)?.max(0) as u64,
        live: r.try_get::<i64, _>(first + 2)?.max(0) as u64,
    })
}

/// The stored fingerprint of one range (empty if none is stored).
pub(crate) async fn get(
    conn: &mut SqliteConnection,
    resource: &str,
    prefix: &str,
) -> Result<Fingerprint, StoreError> {
    let row = sqlx::query(
        "SELECT hash, entries, live FROM crdt_digest WHERE resource = ? AND prefix = ?",
    )
    .bind(resource.to_owned())
    .bind(prefix.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => fingerprint_from(&r, 0),
        None => Ok(Fingerprint::default()),
    }
}

/// Stores the fingerprint of one range (an empty one is removed).
pub(crate) async fn put(
    conn: &mut SqliteConnection,
    resource: &str,
    prefix: &str,
    fp: &Fingerprint,
) -> Result<(), StoreError> {
    if fp.is_empty() {
        sqlx::query("DELETE FROM crdt_digest WHERE resource = ? AND prefix = ?")
            .bind(resource.to_owned())
            .bind(prefix.to_owned())
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query(
            "INSERT INTO crdt_digest (resource, prefix, hash, entries, live) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (resource, prefix) DO UPDATE SET hash = excluded.hash, \
             entries = excluded.entries, live = excluded.live",
        )
        .bind(resource.to_owned())
        .bind(prefix.to_owned())
        .bind(fp.hash.0.to_vec())
        .bind(fp.entries as i64)
        .bind(fp.live as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The stored fingerprints of `resource` whose prefix is `len` long and starts with
/// `within`, in prefix order.
pub(crate) async fn stored_under(
    conn: &mut SqliteConnection,
    resource: &str,
    len: usize,
    within: &str,
) -> Result<Vec<(String, Fingerprint)>, StoreError> {
    let mut rows = sqlx::query(
        "SELECT prefix, hash, entries, live FROM crdt_digest WHERE resource = ? \
         AND prefix >= ? AND prefix < ? AND length(prefix) = ? ORDER BY prefix",
    )
    .bind(resource.to_owned())
    .bind(within.to_owned())
    .bind(crate::digest::prefix_end(within))
    .bind(len as i64)
    .fetch(&mut *conn);
    let mut out = Vec::new();
    while let Some(r) = rows.try_next().await? {
        out.push((r.try_get(0)?, fingerprint_from(&r, 1)?));
    }
    Ok(out)
}

/// The rows of `def` whose UUID text is in `[lo, hi)`, in UUID order, at most `limit`, as
/// a snapshot sends them: a row is in one place (its data row, or its side entry, which
/// wins for a row whose registers were not moved into its clock yet).
pub(crate) async fn rows_between(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    lo: &str,
    hi: &str,
    limit: usize,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let limit = limit.min(i64::MAX as usize) as i64;
    match def.kind {
        Kind::Shared => shared_between(conn, def, lo, hi, limit).await,
        Kind::Owned => owned_between(conn, def, lo, hi, limit).await,
    }
}

async fn shared_between(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    lo: &str,
    hi: &str,
    limit: i64,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let live = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, crdt_clock{} FROM {} WHERE uuid >= ? AND uuid < ? ORDER BY uuid LIMIT ?",
        column_list(def),
        def.name
    )))
    .bind(lo.to_owned())
    .bind(hi.to_owned())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: BTreeMap<uuid::Uuid, SharedRow> = BTreeMap::new();
    for r in &live {
        if let Some((uuid, row)) = live_row_from(def, r)? {
            rows.insert(uuid, row);
        }
    }
    let heads = sqlx::query(
        "SELECT uuid, ts, alive FROM crdt_rows WHERE resource = ? AND uuid >= ? AND uuid < ? \
         ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(lo.to_owned())
    .bind(hi.to_owned())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut side = BTreeMap::new();
    for h in &heads {
        let (uuid, row) = side_head_from(h)?;
        side.insert(uuid, row);
    }
    if let (Some(first), Some(last)) = (side.keys().next(), side.keys().next_back()) {
        let mut props = sqlx::query(
            "SELECT uuid, property, ts, value FROM crdt_props WHERE resource = ? AND uuid >= ? \
             AND uuid <= ?",
        )
        .bind(def.name.clone())
        .bind(first.hyphenated().to_string())
        .bind(last.hyphenated().to_string())
        .fetch(&mut *conn);
        while let Some(r) = props.try_next().await? {
            let (uuid, prop, register) = side_prop_from(&r)?;
            if let Some(row) = side.get_mut(&uuid) {
                row.props.insert(prop, register);
            }
        }
    }
    rows.extend(side);
    Ok(rows
        .into_iter()
        .take(limit as usize)
        .map(|(uuid, row)| SnapshotRow::Shared {
            resource: def.name.clone(),
            uuid,
            exists_ts: row.exists_ts,
            alive: row.alive,
            props: row
                .props
                .into_iter()
                .map(|(name, (ts, v))| (name, ts, v))
                .collect(),
        })
        .collect())
}

/// Ranges per statement of [`rows_in_ranges`] (two parameters each).
const RANGES_PER_STATEMENT: usize = 200;

/// The rows of `def` in any of `ranges` (each `[lo, hi)`, sorted, disjoint), as
/// [`rows_between`] reads one range, in a few statements for all of them: what a fold of
/// many leaves scattered over the keys reads (a statement per leaf would cost more than
/// the rows).
pub(crate) async fn rows_in_ranges(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    ranges: &[(String, String)],
) -> Result<Vec<SnapshotRow>, StoreError> {
    if def.kind == Kind::Shared {
        let mut out = Vec::new();
        for (lo, hi) in ranges {
            out.extend(shared_between(conn, def, lo, hi, i64::MAX).await?);
        }
        return Ok(out);
    }
    let cols: String = def
        .columns
        .iter()
        .map(|c| format!(", t.{}", c.name))
        .collect();
    let mut out: BTreeMap<uuid::Uuid, SnapshotRow> = BTreeMap::new();
    for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
        let values = crate::sql::values_list(chunk.len(), 2);
        let bind = |mut q: crate::sql::Query| {
            for (lo, hi) in chunk {
                q = q.bind(lo.clone()).bind(hi.clone());
            }
            q.bind(def.name.clone())
        };
        let rows = bind(crate::sql::query(format!(
            "WITH r (range_lo, range_hi) AS (VALUES {values}) \
             SELECT t.uuid, t.owner, t.crdt_ts, t.crdt_seq{cols}, \
             (SELECT claim FROM crdt_owned_claims c WHERE c.resource = ? AND c.uuid = t.uuid) \
             FROM r CROSS JOIN {} t WHERE t.uuid >= r.range_lo AND t.uuid < r.range_hi",
            def.name
        )))
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            let (uuid, row) = owned_live(r, def)?;
            out.insert(uuid, row);
        }
        let dead = bind(crate::sql::query(format!(
            "WITH r (range_lo, range_hi) AS (VALUES {values}) \
             SELECT t.uuid, t.ts, (SELECT claim FROM crdt_owned_claims c \
             WHERE c.resource = t.resource AND c.uuid = t.uuid) \
             FROM r CROSS JOIN crdt_rows t WHERE t.resource = ? AND t.alive = 0 \
             AND t.uuid >= r.range_lo AND t.uuid < r.range_hi"
        )))
        .fetch_all(&mut *conn)
        .await?;
        for r in &dead {
            let (uuid, row) = owned_dead(r, def)?;
            out.entry(uuid).or_insert(row);
        }
    }
    Ok(out.into_values().collect())
}

/// A live owned row as the reads of this module select it: `uuid, owner, crdt_ts,
/// crdt_seq`, the columns, then its claim.
fn owned_live(
    r: &sqlx::sqlite::SqliteRow,
    def: &ResourceDef,
) -> Result<(uuid::Uuid, SnapshotRow), StoreError> {
    let row = owned_row_from(r, def, 4)?;
    let claim_at = 4 + def.columns.len();
    Ok((
        row.uuid,
        SnapshotRow::Owned {
            resource: def.name.clone(),
            uuid: row.uuid,
            ts: Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(2)?)?,
            seq: r.try_get::<i64, _>(3)? as u64,
            values: row.values,
            claim: r
                .try_get::<Option<Vec<u8>>, _>(claim_at)?
                .map(|b| Hlc::from_bytes(&b))
                .transpose()?,
        },
    ))
}

/// An owned tombstone as the reads of this module select it: `uuid, ts, claim`.
fn owned_dead(
    r: &sqlx::sqlite::SqliteRow,
    def: &ResourceDef,
) -> Result<(uuid::Uuid, SnapshotRow), StoreError> {
    let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
    Ok((
        uuid,
        SnapshotRow::OwnedTombstone {
            resource: def.name.clone(),
            uuid,
            ts: Hlc::from_bytes(&r.try_get::<Vec<u8>, _>(1)?)?,
            claim: r
                .try_get::<Option<Vec<u8>>, _>(2)?
                .map(|b| Hlc::from_bytes(&b))
                .transpose()?,
        },
    ))
}

async fn owned_between(
    conn: &mut SqliteConnection,
    def: &ResourceDef,
    lo: &str,
    hi: &str,
    limit: i64,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT uuid, owner, crdt_ts, crdt_seq{}, \
         (SELECT claim FROM crdt_owned_claims c WHERE c.resource = ? AND c.uuid = t.uuid) \
         FROM {} t WHERE uuid >= ? AND uuid < ? ORDER BY uuid LIMIT ?",
        column_list(def),
        def.name
    )))
    .bind(def.name.clone())
    .bind(lo.to_owned())
    .bind(hi.to_owned())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: BTreeMap<uuid::Uuid, SnapshotRow> = BTreeMap::new();
    for r in &rows {
        let (uuid, row) = owned_live(r, def)?;
        out.insert(uuid, row);
    }
    let dead = sqlx::query(
        "SELECT uuid, ts, (SELECT claim FROM crdt_owned_claims c WHERE c.resource = t.resource \
         AND c.uuid = t.uuid) FROM crdt_rows t WHERE resource = ? AND alive = 0 AND uuid >= ? \
         AND uuid < ? ORDER BY uuid LIMIT ?",
    )
    .bind(def.name.clone())
    .bind(lo.to_owned())
    .bind(hi.to_owned())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    for r in &dead {
        let (uuid, row) = owned_dead(r, def)?;
        out.entry(uuid).or_insert(row);
    }
    Ok(out.into_values().take(limit as usize).collect())
}
