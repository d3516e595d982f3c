//! A snapshot import survives a restart (migration 0011): its progress is written in each
//! page's transaction and ends with it; a reopened store continues from the stored
//! position, and claims no more than every row holds when the state it continues from
//! moved on. And the WAL's bound: with readers always overlapping, the writer's
//! checkpoints keep the WAL near its limit.

use std::time::Duration;

use murmur_store::{Durability, SnapshotPosition, Store, StoreOptions, resumed_proofs};
use murmur_testkit::store::*;
use serde_json::json;
use tempfile::TempDir;

fn file_path(k: usize) -> serde_json::Map<String, serde_json::Value> {
    let v = json!({
        "materialized_path": format!("/p/{}/", k / 100),
        "name": format!("f{k}"),
        "extension": "jpg",
        "size_bytes": k,
        "cas_id": format!("cas{}", k / 2),
    });
    v.as_object().cloned().unwrap_or_default()
}

async fn open_at(dir: &TempDir, n: u128, wal_limit: Option<u64>) -> Store {
    let mut o = StoreOptions::new(dir.path().join("lib.db"), device_key(n));
    o.durability = Durability::Normal;
    if let Some(l) = wal_limit {
        o.wal_limit = l;
    }
    Store::open(o).await.expect("open store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_import_continues_after_a_restart_and_claims_only_what_every_row_holds() {
    let (a, _da) = store(1).await;
    for chunk in 0..4 {
        let rows = (chunk * 250..(chunk + 1) * 250).map(file_path).collect();
        a.write_owned("file_paths", rows).await.unwrap();
    }
    for k in 0..50 {
        let tag = json!({"name": format!("t{k}")});
        a.create_shared("tags", None, tag.as_object().cloned().unwrap())
            .await
            .unwrap();
    }
    let proofs = a.snapshot_proofs().await.unwrap();

    // The joiner imports a few pages, then stops (as if killed: the store is closed and
    // opened again).
    let dir = tempfile::tempdir().unwrap();
    let b = open_at(&dir, 2, None).await;
    assert!(
        b.begin_snapshot_from(
            "a".into(),
            Some(a.registry().schema_version()),
            proofs.clone()
        )
        .await
        .unwrap()
        .is_empty()
    );
    let mut pos: Option<SnapshotPosition> = None;
    let mut imported = 0u64;
    for _ in 0..3 {
        let (rows, next) = a.snapshot_page(pos.as_ref(), 200).await.unwrap();
        imported += rows.len() as u64;
        b.import_snapshot_page_at(rows, next.clone()).await.unwrap();
        pos = next;
    }
    b.close().await;
    drop(b);

    // The state it continues from moved on: one more write on `a`.
    let tag = json!({"name": "after the restart"});
    a.create_shared("tags", None, tag.as_object().cloned().unwrap())
        .await
        .unwrap();
    let now = a.snapshot_proofs().await.unwrap();

    let b = open_at(&dir, 2, None).await;
    let stored = b.snapshot_progress().await.unwrap().expect("progress kept");
    assert_eq!(
        (stored.pages, stored.rows, stored.done),
        (3, imported, false)
    );
    assert_eq!(stored.next, pos);
    assert_eq!(stored.proofs.len(), proofs.len());
    let (progress, refused) = b
        .resume_snapshot("a".into(), stored.next.clone(), now.clone())
        .await
        .unwrap();
    assert!(refused.is_empty());
    let progress = progress.expect("an import under way");
    assert_eq!(progress.resumed, 1);
    // What it may claim: per author the lower of the two states' proofs.
    assert_eq!(progress.proofs, resumed_proofs(&proofs, &now));
    let mut pos = progress.next.clone();
    loop {
        let (rows, next) = a.snapshot_page(pos.as_ref(), 200).await.unwrap();
        b.import_snapshot_page_at(rows, next.clone()).await.unwrap();
        match next {
            Some(p) => pos = Some(p),
            None => break,
        }
    }
    assert!(b.snapshot_progress().await.unwrap().unwrap().done);
    assert!(b.finish_snapshot(progress.proofs).await.unwrap().is_empty());
    assert_eq!(b.snapshot_progress().await.unwrap(), None, "finish ends it");
    // Every row is there (the later tag too, read from the newer state), and `a`'s own
    // author is claimed only up to the older proof: its last op comes again by catch-up.
    assert_eq!(b.count_rows("file_paths").await.unwrap(), 1000);
    let author = a.author();
    assert_eq!(
        b.version_vector().contiguous(&author) + 1,
        a.version_vector().contiguous(&author)
    );
    let page = a
        .ops_since(&b.version_vector(), &Default::default(), 100)
        .await
        .unwrap();
    b.apply_signed(page.changes, page.proofs, murmur_store::Origin::CatchUp)
        .await
        .unwrap();
    assert_eq!(b.digest().await.unwrap(), a.digest().await.unwrap());
}

#[tokio::test]
async fn resumed_proofs_take_the_lower_seq_of_authors_in_both() {
    // Two proofs of one author's log, at two of its lengths.
    let (s, _ds) = store(4).await;
    let tag = || json!({"name": "x"}).as_object().cloned().unwrap();
    s.create_shared("tags", None, tag()).await.unwrap();
    let p1 = s.snapshot_proofs().await.unwrap();
    s.create_shared("tags", None, tag()).await.unwrap();
    let p2 = s.snapshot_proofs().await.unwrap();
    assert_eq!(p1.len(), 1);
    assert!(p2[0].first > p1[0].first);
    assert_eq!(resumed_proofs(&p1, &p2), p1);
    assert_eq!(resumed_proofs(&p2, &p1), p1);
    // An author in only one of them is not claimed.
    assert!(resumed_proofs(&p1, &[]).is_empty());
    assert!(resumed_proofs(&[], &p2).is_empty());
}

// A checkpoint that gives up is tried again a second later or once the WAL grew by half
// its limit, whichever comes first: without the second rule one give-up (a second, half
// this test's length) let the WAL reach ~10 MB, 11 MB without any checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_readers_always_overlapping_the_writer_keeps_the_wal_near_its_limit() {
    const LIMIT: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(&dir, 5, Some(LIMIT)).await;
    let wal = dir.path().join("lib.db-wal");
    // Two readers of the app's own (another connection), each holding a read transaction
    // for a while, started half a hold apart: there is always one reading the WAL.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for offset in [0u64, 15] {
        let url = format!("sqlite:{}?mode=ro", dir.path().join("lib.db").display());
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            tokio::time::sleep(Duration::from_millis(offset)).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut tx = conn.begin().await.unwrap();
                let _: (i64,) = sqlx::query_as("SELECT count(*) FROM file_paths")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    let mut peak = 0;
    for chunk in 0..40 {
        let rows = (chunk * 500..(chunk + 1) * 500).map(file_path).collect();
        s.write_owned("file_paths", rows).await.unwrap();
        peak = peak.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let stats = s.wal_stats();
    println!("WAL peak {peak} bytes (limit {LIMIT}); {stats:?}");
    assert!(stats.checkpoints > 0, "no checkpoint ran: {stats:?}");
    assert!(
        peak < 4 * LIMIT,
        "the WAL grew to {peak} bytes, limit {LIMIT}: {stats:?}"
    );
}
