//! Writes to a library's SQLite file behind murmur's back.
//!
//! [`foreign_write`] is another program's write: a plain SQLite connection, which the
//! synced tables' triggers refuse (they name a collation only murmur registers).
//! [`corrupt`] changes rows the way a bug or a bad disk would: a connection that registers
//! the same collation, so the write goes through, and nothing logs an op for it.

use std::path::Path;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

fn options(db: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::from_str("sqlite:")
        .expect("sqlite options")
        .filename(db)
        .busy_timeout(std::time::Duration::from_secs(10))
}

/// Runs `sql` on the library at `db` as another program would (no murmur collation).
/// Returns SQLite's error message, or `Ok` with the rows changed.
pub async fn foreign_write(db: &Path, sql: &str) -> Result<u64, String> {
    let mut conn = SqliteConnection::connect_with(&options(db))
        .await
        .expect("open the library file");
    let out = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| e.to_string());
    conn.close().await.expect("close");
    out
}

/// Reads one text column of one row as another program would.
pub async fn foreign_read(db: &Path, sql: &str) -> Option<String> {
    let mut conn = SqliteConnection::connect_with(&options(db))
        .await
        .expect("open the library file");
    let out: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_optional(&mut conn)
        .await
        .expect("a read by another program");
    conn.close().await.expect("close");
    out
}

/// Runs `sql` on the library at `db` past murmur's guard (as a bug or a bad disk would
/// change it): the triggers still mark the rows' ranges, but no op is logged and no
/// register moves. Returns the rows changed.
pub async fn corrupt(db: &Path, sql: &str) -> u64 {
    let opts = options(db).collation(murmur_store::WRITER_COLLATION, |a: &str, b: &str| a.cmp(b));
    let mut conn = SqliteConnection::connect_with(&opts)
        .await
        .expect("open the library file");
    let n = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .expect("a write past the guard")
        .rows_affected();
    conn.close().await.expect("close");
    n
}
