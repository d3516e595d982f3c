//! Reads for the API and the node, through the store's public accessors: live rows as
//! JSON, the derived `files`, the client pool and the pruning horizon it gives.

use std::collections::BTreeMap;

use sqlx::Row;
use uuid::Uuid;

use crate::error::StoreError;
use crate::registry::{Kind, ResourceDef};
use crate::sql::clients::{self, ClientInfo};
use crate::sql::rows::column_list;
use crate::store::Store;
use crate::value::Value;

/// The largest page of rows a read returns.
pub const MAX_READ: usize = 10_000;

fn row_json(
    def: &ResourceDef,
    r: &sqlx::sqlite::SqliteRow,
    owner: bool,
) -> Result<serde_json::Value, StoreError> {
    let mut m = serde_json::Map::new();
    m.insert(
        "uuid".into(),
        serde_json::Value::String(r.try_get::<String, _>(0)?),
    );
    let mut first = 1;
    if owner {
        m.insert(
            "owner".into(),
            serde_json::Value::String(r.try_get::<String, _>(1)?),
        );
        first = 2;
    }
    for (i, c) in def.columns.iter().enumerate() {
        let v: Value = r.try_get(first + i)?;
        m.insert(c.name.clone(), v.to_json(c.ty));
    }
    Ok(serde_json::Value::Object(m))
}

impl Store {
    /// One live row of a resource (shared or owned), or `None` when it does not exist or
    /// was deleted.
    pub async fn get_row(
        &self,
        resource: &str,
        uuid: Uuid,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let def = self.registry().get(resource)?;
        let owned = def.kind == Kind::Owned;
        let sql = format!(
            "SELECT uuid{}{} FROM {} WHERE uuid = ?",
            if owned { ", owner" } else { "" },
            column_list(def),
            def.name
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid.hyphenated().to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| row_json(def, &r, owned)).transpose()
    }

    /// Live rows in UUID order, after `after`, at most `limit` (capped at [`MAX_READ`]);
    /// for owned resources, optionally only those of `owner`.
    pub async fn list_rows(
        &self,
        resource: &str,
        owner: Option<Uuid>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let def = self.registry().get(resource)?;
        let owned = def.kind == Kind::Owned;
        if owner.is_some() && !owned {
            return Err(StoreError::Invalid(format!(
                "`{resource}` is shared: its rows have no owner"
            )));
        }
        let sql = format!(
            "SELECT uuid{}{} FROM {} WHERE uuid > ?{} ORDER BY uuid LIMIT ?",
            if owned { ", owner" } else { "" },
            column_list(def),
            def.name,
            if owner.is_some() {
                " AND owner = ?"
            } else {
                ""
            }
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(
            after
                .map(|u| u.hyphenated().to_string())
                .unwrap_or_default(),
        );
        if let Some(o) = owner {
            q = q.bind(o.hyphenated().to_string());
        }
        let rows = q
            .bind(limit.clamp(1, MAX_READ) as i64)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| row_json(def, r, owned)).collect()
    }

    /// How many live rows a resource has.
    pub async fn count_rows(&self, resource: &str) -> Result<u64, StoreError> {
        let def = self.registry().get(resource)?;
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            def.name
        )))
        .fetch_one(self.pool())
        .await?;
        Ok(n as u64)
    }

    /// The derived `files` dataset, in cas_id order, after `after`, at most `limit`.
    pub async fn files(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = sqlx::query("SELECT cas_id, size_bytes, path_count FROM files WHERE cas_id > ? ORDER BY cas_id LIMIT ?")
            .bind(after.unwrap_or("").to_owned())
            .bind(limit.clamp(1, MAX_READ) as i64)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "cas_id": r.try_get::<String, _>(0)?,
                    "size_bytes": r.try_get::<Option<i64>, _>(1)?,
                    "path_count": r.try_get::<i64, _>(2)?,
                }))
            })
            .collect()
    }

    /// Every client of the pool.
    pub async fn clients(&self) -> Result<Vec<ClientInfo>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        clients::list(&mut conn, self.client()).await
    }

    /// The pruning horizon: per author, the highest seq that every non-stale client
    /// (this one included) has reported holding, and that at least one other client has
    /// reported holding: an op no other device has acknowledged is never pruned, however
    /// stale the others look. `is_stale` says which clients do not hold ops back (the
    /// caller judges staleness: see the node's contact clock); a non-stale client that
    /// never reported holds everything back.
    pub async fn prune_horizon(
        &self,
        is_stale: impl Fn(&ClientInfo) -> bool,
    ) -> Result<BTreeMap<Uuid, u64>, StoreError> {
        let mut horizon: BTreeMap<Uuid, u64> = self.version_vector().contiguous_map();
        // Per author, the most any other client has reported holding.
        let mut acknowledged: BTreeMap<Uuid, u64> = BTreeMap::new();
        let mut conn = self.pool().acquire().await?;
        let others: Vec<ClientInfo> = clients::list(&mut conn, self.client())
            .await?
            .into_iter()
            .filter(|c| !c.is_self)
            .collect();
        for c in others {
            let theirs = clients::reported_version(&mut conn, c.client_uuid).await?;
            for (author, seq) in &theirs {
                let a = acknowledged.entry(*author).or_default();
                *a = (*a).max(*seq);
            }
            if is_stale(&c) {
                continue;
            }
            for (author, h) in horizon.iter_mut() {
                *h = (*h).min(theirs.get(author).copied().unwrap_or(0));
            }
        }
        for (author, h) in horizon.iter_mut() {
            *h = (*h).min(acknowledged.get(author).copied().unwrap_or(0));
        }
        horizon.retain(|_, h| *h > 0);
        Ok(horizon)
    }

    /// Reads a node-local setting.
    pub async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        clients::get_meta(&mut conn, key).await
    }
}
