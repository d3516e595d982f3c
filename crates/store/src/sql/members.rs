//! The membership's SQL: the events of `devices_log` ([`crate::members`]), and forgetting
//! the owned rows of a device removed with `forget_data`.

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::members::{DEVICES_LOG, EVENT_COLUMN, SignedEvent};
use crate::registry::{Kind, Registry};
use crate::sql::{derived, exec};

/// Every event held (rows that do not parse are left out; the fold checks signatures).
pub(crate) async fn events(conn: &mut SqliteConnection) -> Result<Vec<SignedEvent>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMN} FROM {DEVICES_LOG} WHERE {EVENT_COLUMN} IS NOT NULL"
    )))
    .fetch_all(conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let text: String = r.try_get(0)?;
        if let Ok(e) = SignedEvent::from_text(&text) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Deletes every owned row (live or tombstone) of `owner`, and rebuilds the derived
/// `files` of its paths. Returns how many rows were deleted.
pub(crate) async fn forget_owner(
    conn: &mut SqliteConnection,
    registry: &Registry,
    owner: Uuid,
) -> Result<u64, StoreError> {
    let owner = owner.hyphenated().to_string();
    let mut deleted = 0;
    for def in registry.iter().filter(|d| d.kind == Kind::Owned) {
        let cas_ids: Vec<String> = if derived::tracks(def) {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT DISTINCT cas_id FROM \"{}\" WHERE owner = ? AND cas_id IS NOT NULL",
                def.name
            )))
            .bind(owner.clone())
            .fetch_all(&mut *conn)
            .await?
        } else {
            Vec::new()
        };
        let o = owner.clone();
        deleted += exec(
            conn,
            format!("DELETE FROM \"{}\" WHERE owner = ?", def.name),
            |q| q.bind(o),
        )
        .await?;
        let (o, r) = (owner.clone(), def.name.clone());
        deleted += exec(
            conn,
            "DELETE FROM crdt_rows WHERE resource = ? AND owner = ?".into(),
            |q| q.bind(r).bind(o),
        )
        .await?;
        let cas_ids = derived::Files::load(conn).await?.kept(cas_ids);
        derived::rebuild_files(conn, &cas_ids).await?;
    }
    Ok(deleted)
}
