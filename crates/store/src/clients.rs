//! The client pool: every client known to the library, when it was last seen and last
//! synchronized, and the version vector it last reported (which drives pruning).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::engine::parse_uuid;
use crate::error::StoreError;
use crate::store::Store;

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

impl Store {
    /// Records that `client` was seen now (creating it in the pool if new).
    pub async fn touch_client(
        &self,
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
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Records a completed catch-up with `client`.
    pub async fn mark_synchronized(&self, client: Uuid) -> Result<(), StoreError> {
        let now = millis(Utc::now());
        let _guard = self.inner.write.lock().await;
        sqlx::query("UPDATE clients SET last_synchronized = ?, last_seen = ? WHERE uuid = ?")
            .bind(now)
            .bind(now)
            .bind(client.hyphenated().to_string())
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// Records the version vector `client` reported (author -> contiguous seq).
    pub async fn record_client_version(
        &self,
        client: Uuid,
        vv: &BTreeMap<Uuid, u64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (author, seq) in vv {
            sqlx::query(
                "INSERT INTO client_versions (client_uuid, author, contiguous) VALUES (?, ?, ?) \
                 ON CONFLICT (client_uuid, author) DO UPDATE SET contiguous = MAX(contiguous, excluded.contiguous)",
            )
            .bind(client.hyphenated().to_string())
            .bind(author.hyphenated().to_string())
            .bind((*seq).min(crate::validate::MAX_SEQ) as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every client of the pool.
    pub async fn clients(&self) -> Result<Vec<ClientInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT uuid, peer_id, last_seen, last_synchronized FROM clients ORDER BY uuid",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let me = self.client();
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

    /// The pruning horizon: per author, the highest seq that every non-stale client
    /// (this one included) has reported holding. Clients unseen for longer than
    /// `stale_after` do not hold ops back; a non-stale client that never reported holds
    /// everything back.
    pub async fn prune_horizon(
        &self,
        stale_after: Duration,
    ) -> Result<BTreeMap<Uuid, u64>, StoreError> {
        let now = Utc::now();
        let mine = self.version_vector();
        let mut horizon: BTreeMap<Uuid, u64> = mine.contiguous_map();
        let others: Vec<ClientInfo> = self
            .clients()
            .await?
            .into_iter()
            .filter(|c| !c.is_self && !c.is_stale(now, stale_after))
            .collect();
        for c in others {
            let rows =
                sqlx::query("SELECT author, contiguous FROM client_versions WHERE client_uuid = ?")
                    .bind(c.client_uuid.hyphenated().to_string())
                    .fetch_all(&self.inner.pool)
                    .await?;
            let mut theirs = BTreeMap::new();
            for r in &rows {
                theirs.insert(
                    parse_uuid(&r.try_get::<String, _>(0)?)?,
                    r.try_get::<i64, _>(1)? as u64,
                );
            }
            for (author, h) in horizon.iter_mut() {
                *h = (*h).min(theirs.get(author).copied().unwrap_or(0));
            }
        }
        horizon.retain(|_, h| *h > 0);
        Ok(horizon)
    }

    /// Reads a node-local setting.
    pub async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key.to_owned())
            .fetch_optional(&self.inner.pool)
            .await?
            .flatten())
    }

    /// Writes a node-local setting.
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _guard = self.inner.write.lock().await;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key.to_owned())
            .bind(value.to_vec())
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }
}
