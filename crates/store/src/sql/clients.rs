//! The client pool: every client known to the library, when it was last seen and last
//! synchronized, and the version vector it last reported (which drives pruning); and the
//! node-local settings in `meta`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::sql::rows::parse_uuid;
use crate::sql::{exec, rows_per_statement, values_list};
use crate::validate::MAX_SEQ;

/// A client of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// Its UUID.
    pub client_uuid: Uuid,
    /// Its libp2p peer id, once known.
    pub peer_id: Option<String>,
    /// When any message from it last arrived.
    pub last_seen: Option<DateTime<Utc>>,
    /// When a catch-up with it last completed.
    pub last_synchronized: Option<DateTime<Utc>>,
    /// Whether this is the local client.
    pub is_self: bool,
}

impl ClientInfo {
    /// Whether the client has not been seen for longer than `stale_after` (never for self).
    pub fn is_stale(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        if self.is_self {
            return false;
        }
        let Ok(window) = chrono::Duration::from_std(stale_after) else {
            return false;
        };
        self.last_seen.is_none_or(|seen| now - seen > window)
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

/// Records that `client` was seen now (creating it in the pool if new).
pub(crate) async fn touch(
    conn: &mut SqliteConnection,
    client: Uuid,
    peer_id: Option<&str>,
) -> Result<(), StoreError> {
    let now = millis(Utc::now());
    sqlx::query(
        "INSERT INTO clients (uuid, peer_id, first_seen, last_seen) VALUES (?, ?, ?, ?) \
         ON CONFLICT (uuid) DO UPDATE SET last_seen = excluded.last_seen, \
         peer_id = COALESCE(excluded.peer_id, clients.peer_id)",
    )
    .bind(client.hyphenated().to_string())
    .bind(peer_id.map(str::to_owned))
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a completed catch-up with `client`.
pub(crate) async fn mark_synchronized(
    conn: &mut SqliteConnection,
    client: Uuid,
) -> Result<(), StoreError> {
    let now = millis(Utc::now());
    sqlx::query("UPDATE clients SET last_synchronized = ?, last_seen = ? WHERE uuid = ?")
        .bind(now)
        .bind(now)
        .bind(client.hyphenated().to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the version vector `client` reported (author -> contiguous seq).
pub(crate) async fn record_version(
    conn: &mut SqliteConnection,
    client: Uuid,
    vv: &BTreeMap<Uuid, u64>,
) -> Result<(), StoreError> {
    // Hundreds of authors per statement: an announcement may list a thousand.
    let entries: Vec<(&Uuid, &u64)> = vv.iter().collect();
    for chunk in entries.chunks(rows_per_statement(3)) {
        let sql = format!(
            "INSERT INTO client_versions (client_uuid, author, contiguous) VALUES {} \
             ON CONFLICT (client_uuid, author) DO UPDATE SET contiguous = MAX(contiguous, excluded.contiguous)",
            values_list(chunk.len(), 3)
        );
        exec(conn, sql, |mut q| {
            for (author, seq) in chunk {
                q = q
                    .bind(client.hyphenated().to_string())
                    .bind(author.hyphenated().to_string())
                    .bind((**seq).min(MAX_SEQ) as i64);
            }
            q
        })
        .await?;
    }
    Ok(())
}

/// Every client of the pool; `me` is marked as self.
pub(crate) async fn list(
    conn: &mut SqliteConnection,
    me: Uuid,
) -> Result<Vec<ClientInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT uuid, peer_id, last_seen, last_synchronized FROM clients ORDER BY uuid",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let uuid = parse_uuid(&r.try_get::<String, _>(0)?)?;
            Ok(ClientInfo {
                client_uuid: uuid,
                peer_id: r.try_get(1)?,
                last_seen: from_millis(r.try_get(2)?),
                last_synchronized: from_millis(r.try_get(3)?),
                is_self: uuid == me,
            })
        })
        .collect()
}

/// The version vector `client` last reported.
pub(crate) async fn reported_version(
    conn: &mut SqliteConnection,
    client: Uuid,
) -> Result<BTreeMap<Uuid, u64>, StoreError> {
    let rows = sqlx::query("SELECT author, contiguous FROM client_versions WHERE client_uuid = ?")
        .bind(client.hyphenated().to_string())
        .fetch_all(conn)
        .await?;
    let mut theirs = BTreeMap::new();
    for r in &rows {
        theirs.insert(
            parse_uuid(&r.try_get::<String, _>(0)?)?,
            r.try_get::<i64, _>(1)? as u64,
        );
    }
    Ok(theirs)
}

/// Reads a node-local setting.
pub(crate) async fn get_meta(
    conn: &mut SqliteConnection,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key.to_owned())
        .fetch_optional(conn)
        .await?
        .flatten())
}

/// Writes a node-local setting.
pub(crate) async fn set_meta(
    conn: &mut SqliteConnection,
    key: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key.to_owned())
    .bind(value.to_vec())
    .execute(conn)
    .await?;
    Ok(())
}
