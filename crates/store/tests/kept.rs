//! What a store keeps for a newer schema: a snapshot of a store whose registry knows more
//! (a resource, a shared column, an owned column) is imported by one that knows less
//! without error, its known parts merged and the rest kept; reopened on the full
//! registry, the store applies what it kept and holds exactly the newer one's state.

use murmur_store::{Durability, Registry, SnapshotPosition, Store, StoreOptions};
use murmur_testkit::ops::fields;
use murmur_testkit::store::{device_key, store};
use serde_json::json;

fn older() -> Registry {
    Registry::default_library()
        .without("albums")
        .without_column("tags", "color")
        .without_column("media_data", "duration_ms")
}

async fn open(path: &std::path::Path, registry: Registry) -> Store {
    let mut o = StoreOptions::new(path, device_key(2));
    o.durability = Durability::Normal;
    o.registry = registry;
    Store::open(o).await.expect("open")
}

#[tokio::test]
async fn a_snapshot_of_a_newer_schema_is_kept_then_applied_on_upgrade() {
    let (a, _da) = store(1).await;
    let t = a
        .create_shared("tags", None, fields(json!({"name": "t", "color": "red"})))
        .await
        .unwrap()
        .uuids[0];
    a.update_shared("tags", t, fields(json!({"color": "blue"})))
        .await
        .unwrap();
    a.create_shared(
        "albums",
        None,
        fields(json!({"name": "a", "is_hidden": false})),
    )
    .await
    .unwrap();
    let rows = vec![fields(
        json!({"file_path_uuid": uuid::Uuid::now_v7().to_string(), "width": 1, "height": 2, "duration_ms": 3}),
    )];
    a.write_owned("media_data", rows).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.db");
    let b = open(&path, older()).await;
    let proofs = a.snapshot_proofs().await.unwrap();
    assert!(b.begin_snapshot(proofs.clone()).await.unwrap().is_empty());
    let mut pos: Option<SnapshotPosition> = None;
    let mut kept = 0;
    loop {
        let (rows, next) = a.snapshot_page(pos.as_ref(), 2).await.unwrap();
        kept += b.import_snapshot_page(rows).await.unwrap().kept;
        match next {
            Some(p) => pos = Some(p),
            None => break,
        }
    }
    assert!(b.finish_snapshot(proofs).await.unwrap().is_empty());
    // The tag row (a column unknown), the album (a resource unknown), the media row (more
    // values than known columns).
    assert_eq!(kept, 3);
    let waiting = b.kept().await.unwrap();
    assert_eq!(waiting.get("unknown_field"), Some(&2), "{waiting:?}");
    assert_eq!(waiting.get("unknown_resource"), Some(&1), "{waiting:?}");
    // The tag's known column is there already.
    assert_eq!(b.get_row("tags", t).await.unwrap().unwrap()["name"], "t");
    b.close().await;

    // Reopened by a build that knows everything: applied, and nothing waits.
    let b = open(&path, Registry::default_library()).await;
    assert!(b.kept().await.unwrap().is_empty());
    assert_eq!(b.digest().await.unwrap(), a.digest().await.unwrap());
    b.close().await;
    a.close().await;
}
