//! What a snapshot import into empty tables leaves out until its rows are in: the owned
//! tables' secondary indexes, and the derived `files` (`crdt_deferred`, migration 0013).
//!
//! A snapshot comes in key order, so an owned table that was empty when the import began
//! grows at its end: one page write per page of rows. Its secondary indexes are keyed by
//! something else (`cas_id`, or the owner's batches), and so is `files`: kept up row by
//! row, each would take about one page write per row, ten times the table's own on a
//! library of millions of rows (BENCHMARKS.md, issue 20). So the import drops them when
//! it begins (in its first transaction) and builds them again before it finishes: an index
//! with one `CREATE INDEX` (a sort), `files` from `file_paths` in `cas_id` order, a range
//! per transaction. While `files` is left out, a write of `file_paths` keeps up only the
//! cas_ids the rebuild has passed ([`Files::keeps`]); the rebuild reads the others.

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use crate::error::StoreError;
use crate::registry::{Kind, Registry};
use crate::sql::query;

/// The name `crdt_deferred` gives the derived `files`.
const FILES: &str = "files";

/// cas_ids one transaction of the `files` rebuild covers, at most.
pub(crate) const FILES_PER_TX: i64 = 100_000;

/// An index left out, with the statement that builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deferred {
    pub name: String,
    pub table: String,
    pub sql: String,
}

/// Drops the secondary indexes of every owned table of `registry` that holds no row, and
/// leaves out `files` when `file_paths` is one of them, recording each so that
/// [`indexes`] and [`files_after`] find them (also after a restart). Returns the names.
pub(crate) async fn defer_empty(
    conn: &mut SqliteConnection,
    registry: &Registry,
) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for def in registry.iter().filter(|d| d.kind == Kind::Owned) {
        let empty = query(format!("SELECT NOT EXISTS (SELECT 1 FROM {})", def.name))
            .fetch_one(&mut *conn)
            .await?
            .try_get::<bool, _>(0)?;
        if !empty {
            continue;
        }
        let indexes = sqlx::query(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ? \
             AND sql IS NOT NULL ORDER BY name",
        )
        .bind(def.name.clone())
        .fetch_all(&mut *conn)
        .await?;
        for r in indexes {
            let (name, sql): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            record(conn, &name, &def.name, Some(&sql)).await?;
            // The name comes from SQLite's own schema, quoted as an identifier.
            query(format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
                .execute(&mut *conn)
                .await?;
            names.push(name);
        }
        if crate::sql::derived::tracks(def) {
            record(conn, FILES, &def.name, None).await?;
            names.push(FILES.to_owned());
        }
    }
    Ok(names)
}

async fn record(
    conn: &mut SqliteConnection,
    name: &str,
    table: &str,
    sql: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT OR IGNORE INTO crdt_deferred (name, tbl, sql, after) VALUES (?, ?, ?, NULL)",
    )
    .bind(name.to_owned())
    .bind(table.to_owned())
    .bind(sql.map(str::to_owned))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether anything is left out.
pub(crate) async fn any(conn: &mut SqliteConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query("SELECT EXISTS (SELECT 1 FROM crdt_deferred)")
        .fetch_one(&mut *conn)
        .await?
        .try_get::<bool, _>(0)?)
}

/// The indexes left out, by name.
pub(crate) async fn indexes(conn: &mut SqliteConnection) -> Result<Vec<Deferred>, StoreError> {
    let rows =
        sqlx::query("SELECT name, tbl, sql FROM crdt_deferred WHERE sql IS NOT NULL ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Deferred {
                name: r.try_get(0)?,
                table: r.try_get(1)?,
                sql: r.try_get(2)?,
            })
        })
        .collect()
}

/// Builds the index `d` again (unless it exists) and forgets it, in the caller's
/// transaction.
pub(crate) async fn build_index(
    conn: &mut SqliteConnection,
    d: &Deferred,
) -> Result<(), StoreError> {
    let exists = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = ?)",
    )
    .bind(d.name.clone())
    .fetch_one(&mut *conn)
    .await?
    .try_get::<bool, _>(0)?;
    if !exists {
        query(d.sql.clone()).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM crdt_deferred WHERE name = ?")
        .bind(d.name.clone())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How far the `files` rebuild has come: None when `files` is kept up as usual,
/// `Some(None)` when it is left out and not begun, `Some(Some(c))` when every cas_id up to
/// `c` is rebuilt.
pub(crate) async fn files_after(
    conn: &mut SqliteConnection,
) -> Result<Option<Option<String>>, StoreError> {
    let row = sqlx::query("SELECT after FROM crdt_deferred WHERE name = ?")
        .bind(FILES)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| r.try_get::<Option<String>, _>(0))
        .transpose()
        .map_err(StoreError::from)
}

/// Rebuilds the next range of `files` (at most `per_tx` distinct cas_ids after `after`;
/// [`FILES_PER_TX`]) from `file_paths`, in the caller's transaction. Returns true when
/// that was the last range (and `files` is kept up as usual from now on).
pub(crate) async fn rebuild_files_range(
    conn: &mut SqliteConnection,
    after: Option<&str>,
    per_tx: i64,
) -> Result<bool, StoreError> {
    // The range: its last cas_id and how many it holds, found on the cas_id index (built
    // before this runs). The first range starts at the lowest cas_id.
    let lower = if after.is_some() {
        "cas_id > ?1"
    } else {
        "cas_id >= ?1"
    };
    let from = after.unwrap_or("").to_owned();
    let r = query(format!(
        "SELECT max(cas_id), count(*) FROM (SELECT DISTINCT cas_id FROM file_paths \
         WHERE {lower} ORDER BY cas_id LIMIT ?2)"
    ))
    .bind(from.clone())
    .bind(per_tx)
    .fetch_one(&mut *conn)
    .await?;
    let (upper, count): (Option<String>, i64) = (r.try_get(0)?, r.try_get(1)?);
    let last = count < per_tx;
    // The last range reaches past every cas_id, so stale rows above the last are gone too.
    let (range, bound) = if last {
        (lower.to_owned(), None)
    } else {
        (format!("{lower} AND cas_id <= ?2"), upper.clone())
    };
    let bound_to = |q: crate::sql::Query| match bound.clone() {
        Some(b) => q.bind(from.clone()).bind(b),
        None => q.bind(from.clone()),
    };
    bound_to(query(format!("DELETE FROM files WHERE {range}")))
        .execute(&mut *conn)
        .await?;
    bound_to(query(format!(
        "INSERT INTO files (cas_id, size_bytes, path_count) \
         SELECT cas_id, MAX(size_bytes), COUNT(*) FROM file_paths WHERE {range} \
         GROUP BY cas_id"
    )))
    .execute(&mut *conn)
    .await?;
    if last {
        sqlx::query("DELETE FROM crdt_deferred WHERE name = ?")
            .bind(FILES)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("UPDATE crdt_deferred SET after = ? WHERE name = ?")
            .bind(upper)
            .bind(FILES)
            .execute(&mut *conn)
            .await?;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::derived::{Files, rebuild_files};
    use sqlx::Connection;

    async fn files(conn: &mut SqliteConnection, sql: &str) -> Vec<(String, i64, i64)> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    #[tokio::test]
    async fn files_rebuilt_by_ranges_equal_the_derived_ones_with_writes_between_the_ranges() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        for sql in [
            "CREATE TABLE file_paths (uuid TEXT PRIMARY KEY, cas_id TEXT, size_bytes INTEGER)",
            "CREATE INDEX file_paths_cas_id ON file_paths (cas_id)",
            "CREATE TABLE files (cas_id TEXT PRIMARY KEY, size_bytes INTEGER, path_count INTEGER)",
            "CREATE TABLE crdt_deferred (name TEXT PRIMARY KEY, tbl TEXT NOT NULL, sql TEXT, after TEXT)",
            // Stale rows on both sides of every cas_id, and one in the middle.
            "INSERT INTO files VALUES ('', 1, 1), ('c05x', 1, 9), ('zzz', 1, 1)",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        for k in 0..60 {
            let cas = (k % 9 != 0).then(|| format!("c{:02}", k % 20));
            sqlx::query("INSERT INTO file_paths VALUES (?, ?, ?)")
                .bind(format!("u{k:03}"))
                .bind(cas)
                .bind(k)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        record(&mut conn, FILES, "file_paths", None).await.unwrap();
        let derived = "SELECT cas_id, MAX(size_bytes), COUNT(*) FROM file_paths \
                       WHERE cas_id IS NOT NULL GROUP BY cas_id ORDER BY cas_id";
        let mut ranges = 0;
        loop {
            let after = files_after(&mut conn).await.unwrap().expect("left out");
            let last = rebuild_files_range(&mut conn, after.as_deref(), 3)
                .await
                .unwrap();
            ranges += 1;
            if last {
                break;
            }
            // A write between two ranges, kept up only below the rebuild's cursor (as
            // the engine does through `Files::keeps`): one path moves from a cas_id
            // above it to one below, another from below to above.
            if ranges == 2 {
                let keeps = Files::load(&mut conn).await.unwrap();
                for (uuid, from, to) in [("u015", "c15", "c01"), ("u041", "c01", "c18")] {
                    sqlx::query("UPDATE file_paths SET cas_id = ? WHERE uuid = ?")
                        .bind(to)
                        .bind(uuid)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    let cas = keeps.kept(vec![from.to_owned(), to.to_owned()]);
                    rebuild_files(&mut conn, &cas).await.unwrap();
                }
            }
        }
        assert_eq!(ranges, 7, "20 cas_ids, 3 a range");
        assert_eq!(files_after(&mut conn).await.unwrap(), None, "kept up again");
        assert_eq!(
            files(
                &mut conn,
                "SELECT cas_id, size_bytes, path_count FROM files ORDER BY cas_id"
            )
            .await,
            files(&mut conn, derived).await
        );
    }
}
