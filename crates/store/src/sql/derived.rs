//! Derived data, rebuilt locally and never synced: `files`, one row per `cas_id` of
//! `file_paths`, with the file's size and how many paths point at it.

use sqlx::sqlite::SqliteConnection;

use crate::error::StoreError;
use crate::registry::{Kind, ResourceDef};
use crate::sql::{exec, in_list, owned_chunks, rows_per_statement, values_list};

/// Whether writes to this resource affect derived data.
pub(crate) fn tracks(def: &ResourceDef) -> bool {
    def.name == "file_paths" && def.kind == Kind::Owned && def.column_index("cas_id").is_some()
}

/// Which cas_ids a write of `file_paths` keeps up in `files` (see [`crate::sql::deferred`]):
/// all of them, unless a snapshot import left `files` out, then only those its rebuild has
/// passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Files {
    /// None: all; `Some(None)`: none; `Some(Some(c))`: those up to `c`.
    up_to: Option<Option<String>>,
}

impl Files {
    /// What `files` keeps up now.
    pub(crate) async fn load(conn: &mut SqliteConnection) -> Result<Files, StoreError> {
        Ok(Files {
            up_to: crate::sql::deferred::files_after(conn).await?,
        })
    }

    /// Every cas_id (what a table that `files` does not derive from may assume).
    pub(crate) fn all() -> Files {
        Files { up_to: None }
    }

    /// Whether a write of a path of `cas` changes `files` now.
    pub(crate) fn keeps(&self, cas: &str) -> bool {
        match &self.up_to {
            None => true,
            Some(None) => false,
            Some(Some(c)) => cas <= c.as_str(),
        }
    }

    /// `cas_ids` without those `files` does not keep up now.
    pub(crate) fn kept(&self, mut cas_ids: Vec<String>) -> Vec<String> {
        cas_ids.retain(|c| self.keeps(c));
        cas_ids
    }
}

/// Rebuilds the `files` rows of these cas_ids from `file_paths`.
pub(crate) async fn rebuild_files(
    conn: &mut SqliteConnection,
    cas_ids: &[String],
) -> Result<(), StoreError> {
    for chunk in cas_ids.chunks(rows_per_statement(1)) {
        let keys = chunk.to_vec();
        exec(
            conn,
            format!(
                "DELETE FROM files WHERE cas_id IN ({})",
                in_list(chunk.len())
            ),
            |mut q| {
                for k in keys {
                    q = q.bind(k);
                }
                q
            },
        )
        .await?;
        let keys = chunk.to_vec();
        exec(
            conn,
            format!(
                "INSERT INTO files (cas_id, size_bytes, path_count) \
                 SELECT cas_id, MAX(size_bytes), COUNT(*) FROM file_paths \
                 WHERE cas_id IN ({}) GROUP BY cas_id",
                in_list(chunk.len())
            ),
            |mut q| {
                for k in keys {
                    q = q.bind(k);
                }
                q
            },
        )
        .await?;
    }
    Ok(())
}

/// Adds paths to files: per cas_id, how many new paths point at it and their largest size.
/// Equal to a rebuild when the rows are new (the old count and size stay right).
pub(crate) async fn add_files(
    conn: &mut SqliteConnection,
    added: Vec<(String, (i64, Option<i64>))>,
) -> Result<(), StoreError> {
    for chunk in owned_chunks(added, rows_per_statement(3)) {
        let sql = format!(
            "INSERT INTO files (cas_id, size_bytes, path_count) VALUES {} \
             ON CONFLICT (cas_id) DO UPDATE SET path_count = path_count + excluded.path_count, \
             size_bytes = CASE WHEN size_bytes IS NULL THEN excluded.size_bytes \
             WHEN excluded.size_bytes IS NULL THEN size_bytes \
             ELSE max(size_bytes, excluded.size_bytes) END",
            values_list(chunk.len(), 3)
        );
        exec(conn, sql, |mut q| {
            for (cas, (count, size)) in chunk {
                q = q.bind(cas).bind(size).bind(count);
            }
            q
        })
        .await?;
    }
    Ok(())
}
