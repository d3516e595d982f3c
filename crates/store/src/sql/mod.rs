//! The SQL layer: statements built at run time from the registry, and the tables below the
//! engine. Table and column names come from the registry (never from input), and values are
//! always bound, never inlined.
//!
//! - [`rows`]: keys, shared rows' registers (data row and clock, or the side tables), owned
//!   rows' values, as SQLite stores them.
//! - [`oplog`]: the op log, in chunks of consecutive ops of one author.
//! - [`batches`]: what sending owned batches on needs: the values rows of a batch wrote
//!   where they no longer hold them, and how far a batch's pages have come.
//! - [`derived`]: the `files` table derived from `file_paths`.
//! - [`deferred`]: what a snapshot import into empty tables builds once its rows are in
//!   (secondary indexes, `files`).
//! - [`digest`]: the digest's stored fingerprints, dirty leaves and triggers, and the rows
//!   of a key range.
//! - [`versions`]: the stored version vector and log horizon.
//! - [`clients`]: the client pool and node-local settings.
//! - [`quarantine`]: ops and snapshot rows kept for a build that knows their resource or
//!   field.
//! - [`snapshots`]: the snapshot import under way (where it continues, what it may claim).
//! - [`schema`]: the checks of the registry against the tables.

pub(crate) mod batches;
pub(crate) mod clients;
pub(crate) mod deferred;
pub(crate) mod derived;
pub(crate) mod digest;
pub(crate) mod members;
pub(crate) mod oplog;
pub(crate) mod quarantine;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod snapshots;
pub(crate) mod versions;

use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{AssertSqlSafe, Sqlite};

use crate::error::StoreError;

/// SQLite's limit on bound parameters per statement is 32766; stay well below it.
pub(crate) const MAX_PARAMS: usize = 30_000;
/// Rows per multi-row statement: enough to amortise the per-statement cost.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 500;

/// How many rows of `cols` parameters fit in one statement.
pub(crate) fn rows_per_statement(cols: usize) -> usize {
    (MAX_PARAMS / cols.max(1)).clamp(1, MAX_ROWS_PER_STATEMENT)
}

/// `v` in chunks of at most `size` items, moved rather than cloned.
pub(crate) fn owned_chunks<T>(v: Vec<T>, size: usize) -> impl Iterator<Item = Vec<T>> {
    let mut it = v.into_iter().peekable();
    std::iter::from_fn(move || {
        it.peek()?;
        Some(it.by_ref().take(size.max(1)).collect())
    })
}

/// `(?,?,?),(?,?,?)` for `rows` rows of `cols` parameters.
pub(crate) fn values_list(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(","));
    vec![one; rows].join(",")
}

/// `?,?,?` for an IN list.
pub(crate) fn in_list(n: usize) -> String {
    vec!["?"; n].join(",")
}

/// A query over SQL built at run time, with its values bound.
pub(crate) type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// A query over SQL built at run time.
pub(crate) fn query(sql: String) -> Query {
    sqlx::query(AssertSqlSafe(sql))
}

/// Runs a statement built from `sql` with the binds added by `bind`.
pub(crate) async fn exec<F>(
    conn: &mut SqliteConnection,
    sql: String,
    bind: F,
) -> Result<u64, StoreError>
where
    F: FnOnce(Query) -> Query,
{
    Ok(bind(query(sql)).execute(conn).await?.rows_affected())
}
