//! A snapshot into empty tables leaves their secondary indexes and the derived `files` out
//! until its rows are in (migration 0013): the indexes are gone while it imports, also
//! across a restart, and come back as they were before it finishes; `files` ends equal to
//! the one derived from every path, whatever the device wrote meanwhile; a table that held
//! rows keeps its indexes.

use murmur_store::{Durability, SnapshotPosition, Store, StoreOptions};
use murmur_testkit::store::*;
use serde_json::json;
use sqlx::Row;
use tempfile::TempDir;

fn file_path(k: usize, cas: &str) -> serde_json::Map<String, serde_json::Value> {
    let v = json!({
        "materialized_path": format!("/p/{}/", k / 100),
        "name": format!("f{k}"),
        "extension": "jpg",
        "size_bytes": k,
        "cas_id": cas,
    });
    v.as_object().cloned().unwrap_or_default()
}

async fn open_at(dir: &TempDir, n: u128) -> Store {
    let mut o = StoreOptions::new(dir.path().join("lib.db"), device_key(n));
    o.durability = Durability::Normal;
    Store::open(o).await.expect("open store")
}

/// The indexes of `table` as SQLite stores them: (name, statement), by name.
async fn indexes(s: &Store, table: &str) -> Vec<(String, String)> {
    sqlx::query(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ? \
         AND sql IS NOT NULL ORDER BY name",
    )
    .bind(table)
    .fetch_all(s.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// `files` as stored, and as derived from every path now.
async fn files_and_derived(s: &Store) -> (Vec<(String, i64, i64)>, Vec<(String, i64, i64)>) {
    let read = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect::<Vec<_>>()
    };
    (
        read("SELECT cas_id, size_bytes, path_count FROM files ORDER BY cas_id").await,
        read(
            "SELECT cas_id, MAX(size_bytes), COUNT(*) FROM file_paths WHERE cas_id IS NOT NULL \
             GROUP BY cas_id ORDER BY cas_id",
        )
        .await,
    )
}

async fn import_pages(
    a: &Store,
    b: &Store,
    mut pos: Option<SnapshotPosition>,
    pages: usize,
) -> Option<SnapshotPosition> {
    for _ in 0..pages {
        let (rows, next) = a.snapshot_page(pos.as_ref(), 300).await.unwrap();
        b.import_snapshot_page_at(rows, next.clone()).await.unwrap();
        pos = next;
        if pos.is_none() {
            break;
        }
    }
    pos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_into_empty_tables_builds_their_indexes_and_files_after_its_rows() {
    let (a, _da) = store(1).await;
    for chunk in 0..5 {
        let rows = (chunk * 400..(chunk + 1) * 400)
            .map(|k| file_path(k, &format!("cas{:04}", k / 2)))
            .collect();
        a.write_owned("file_paths", rows).await.unwrap();
    }
    let proofs = a.snapshot_proofs().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let b = open_at(&dir, 2).await;
    let before = indexes(&b, "file_paths").await;
    assert!(
        before.iter().any(|(n, _)| n == "file_paths_cas_id"),
        "the schema has the cas_id index: {before:?}"
    );
    b.begin_snapshot_from("a".into(), Some(a.registry().schema_version()), proofs)
        .await
        .unwrap();
    assert_eq!(
        indexes(&b, "file_paths").await,
        Vec::<(String, String)>::new(),
        "an empty table's indexes are left out while the snapshot fills it"
    );
    let pos = import_pages(&a, &b, None, 2).await;
    assert!(pos.is_some(), "the import is under way");
    // The device writes paths of its own meanwhile: some of a file the snapshot also
    // brings, some of new files.
    let own = (5000..5010)
        .map(|k| file_path(k, &format!("cas{:04}", k % 7)))
        .chain((5010..5020).map(|k| file_path(k, &format!("new{k}"))))
        .collect();
    b.write_owned("file_paths", own).await.unwrap();

    // Killed in the middle: the indexes are still left out after the restart.
    b.close().await;
    drop(b);
    let b = open_at(&dir, 2).await;
    assert!(indexes(&b, "file_paths").await.is_empty());
    let progress = b.snapshot_progress().await.unwrap().expect("under way");
    let now = a.snapshot_proofs().await.unwrap();
    let (progress, _) = b
        .resume_snapshot("a".into(), progress.next.clone(), now)
        .await
        .unwrap();
    let progress = progress.expect("under way");
    let mut pos = progress.next.clone();
    while pos.is_some()
        || b.snapshot_progress()
            .await
            .unwrap()
            .is_some_and(|p| !p.done)
    {
        pos = import_pages(&a, &b, pos, 1).await;
    }
    assert!(b.finish_snapshot(progress.proofs).await.unwrap().is_empty());

    assert_eq!(
        indexes(&b, "file_paths").await,
        before,
        "built again as they were"
    );
    let plan: Vec<String> =
        sqlx::query("EXPLAIN QUERY PLAN SELECT uuid FROM file_paths WHERE cas_id = 'cas0001'")
            .fetch_all(b.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect();
    assert!(
        plan.iter().any(|p| p.contains("file_paths_cas_id")),
        "{plan:?}"
    );
    assert_eq!(b.count_rows("file_paths").await.unwrap(), 2020);
    let (files, derived) = files_and_derived(&b).await;
    assert_eq!(files, derived, "files is what every path derives");
    // cas0003: two paths from the snapshot (6, 7), two of the device's own (5001, 5008).
    assert!(
        files.iter().any(|(c, _, n)| c == "cas0003" && *n == 4),
        "{files:?}"
    );

    // From now on a write keeps `files` up as usual.
    b.write_owned("file_paths", vec![file_path(6000, "cas0003")])
        .await
        .unwrap();
    let (files, derived) = files_and_derived(&b).await;
    assert_eq!(files, derived);
    assert!(files.iter().any(|(c, _, n)| c == "cas0003" && *n == 5));

    // And nothing is left out after another restart.
    b.close().await;
    drop(b);
    let b = open_at(&dir, 2).await;
    assert_eq!(indexes(&b, "file_paths").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_holds_rows_keeps_its_indexes_through_a_snapshot() {
    let (a, _da) = store(1).await;
    let rows = (0..300).map(|k| file_path(k, &format!("c{k}"))).collect();
    a.write_owned("file_paths", rows).await.unwrap();
    let proofs = a.snapshot_proofs().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let b = open_at(&dir, 2).await;
    b.write_owned("file_paths", vec![file_path(900, "mine")])
        .await
        .unwrap();
    let before = indexes(&b, "file_paths").await;
    b.begin_snapshot_from(
        "a".into(),
        Some(a.registry().schema_version()),
        proofs.clone(),
    )
    .await
    .unwrap();
    assert_eq!(indexes(&b, "file_paths").await, before);
    let mut pos = None;
    loop {
        pos = import_pages(&a, &b, pos, 1).await;
        if pos.is_none() {
            break;
        }
    }
    b.finish_snapshot(proofs).await.unwrap();
    assert_eq!(indexes(&b, "file_paths").await, before);
    let (files, derived) = files_and_derived(&b).await;
    assert_eq!(files, derived);
    assert_eq!(files.len(), 301);
}
