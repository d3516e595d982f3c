//! Live shared rows keep their registers in their data row (`crdt_clock`); a library
//! written before that (registers of live rows in `crdt_rows`/`crdt_props`, empty clocks) is
//! converted when the store opens, with the same state and digest.

use murmur_store::{BatchEntry, Store, StoreOptions};
use murmur_testkit::ops::*;
use murmur_testkit::store::*;
use serde_json::{Value as J, json};
use sqlx::Row;
use uuid::Uuid;

#[tokio::test]
async fn a_library_from_before_the_row_clock_opens_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.db");
    let client = Uuid::from_u128(7);
    let open = || async {
        let mut o = StoreOptions::new(&path, murmur_testkit::device_key(client.as_u128()));
        o.durability = murmur_store::Durability::Normal;
        Store::open(o).await.unwrap()
    };
    let s = open().await;
    let created = s.create_shared("tags", None, tag("a")).await.unwrap();
    let uuid = created.uuids[0];
    let create_ts = created.ops[0].ts();
    let updated = s
        .update_shared("tags", uuid, fields(json!({"name": "b"})))
        .await
        .unwrap();
    let update_ts = updated.ops[0].ts();
    let other = s.create_shared("tags", None, tag("gone")).await.unwrap();
    s.delete_shared("tags", other.uuids[0]).await.unwrap();
    let before = s.digest().await.unwrap();
    assert_eq!(before.rows, 1);

    // Rewrite the live row the way the older layout stored it.
    let pool = s.pool().clone();
    let key = uuid.hyphenated().to_string();
    sqlx::query("UPDATE tags SET crdt_clock = x'' WHERE uuid = ?")
        .bind(&key)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO crdt_rows (resource, uuid, ts, alive) VALUES ('tags', ?, ?, 1)")
        .bind(&key)
        .bind(create_ts.to_bytes().to_vec())
        .execute(&pool)
        .await
        .unwrap();
    for (prop, ts, value) in [("name", update_ts, "b"), ("color", create_ts, "red")] {
        sqlx::query(
            "INSERT INTO crdt_props (resource, uuid, property, ts, value) VALUES ('tags', ?, ?, ?, ?)",
        )
        .bind(&key)
        .bind(prop)
        .bind(ts.to_bytes().to_vec())
        .bind(value)
        .execute(&pool)
        .await
        .unwrap();
    }
    s.close().await;

    let s = open().await;
    assert_eq!(
        s.digest().await.unwrap(),
        before,
        "same state after conversion"
    );
    let row = s
        .get_row("tags", uuid)
        .await
        .unwrap()
        .expect("row is alive");
    assert_eq!(row["name"], "b");
    let side: i64 = sqlx::query("SELECT COUNT(*) FROM crdt_rows WHERE alive = 1")
        .fetch_one(s.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(side, 0, "no live row left in the side tables");
    let clock: Vec<u8> = sqlx::query("SELECT crdt_clock FROM tags WHERE uuid = ?")
        .bind(&key)
        .fetch_one(s.pool())
        .await
        .unwrap()
        .get(0);
    assert!(!clock.is_empty(), "the row has its clock");
    // And it merges on: an older update loses, a newer one wins.
    s.update_shared("tags", uuid, fields(json!({"color": "blue"})))
        .await
        .unwrap();
    let row = s.get_row("tags", uuid).await.unwrap().unwrap();
    assert_eq!(
        (row["name"].clone(), row["color"].clone()),
        (json!("b"), json!("blue"))
    );
}

#[tokio::test]
async fn a_row_moves_between_its_data_row_and_the_side_tables() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let c = a.create_shared("tags", None, tag("x")).await.unwrap();
    let uuid = c.uuids[0];
    let d = a.delete_shared("tags", uuid).await.unwrap();
    let r = a
        .create_shared("tags", Some(uuid), fields(json!({"name": "again"})))
        .await
        .unwrap();
    // b sees the re-create first, then the delete, then the first create: the same end.
    for ops in [&r.ops, &d.ops, &c.ops] {
        b.apply(changes(ops)).await.unwrap();
    }
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    let row = b.get_row("tags", uuid).await.unwrap().expect("alive");
    assert_eq!(row["name"], "again");
    assert_eq!(row["color"], serde_json::Value::Null);
    // Delete again: both hold a tombstone (with its registers) and no data row.
    let d2 = a.delete_shared("tags", uuid).await.unwrap();
    b.apply(changes(&d2.ops)).await.unwrap();
    assert!(b.get_row("tags", uuid).await.unwrap().is_none());
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn a_batch_that_returns_to_a_resource_sees_its_own_earlier_writes() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let x = Uuid::now_v7();
    let album = Uuid::now_v7();
    let gone = a
        .create_shared("tags", None, tag("gone"))
        .await
        .unwrap()
        .uuids[0];
    let entry_create = |resource: &str, uuid: Uuid, f: serde_json::Value| BatchEntry::Create {
        resource: resource.into(),
        uuid: Some(uuid),
        fields: fields(f),
    };
    let out = a
        .batch(vec![
            entry_create("tags", x, json!({"name": "x"})),
            entry_create("albums", album, json!({"name": "a"})),
            BatchEntry::Update {
                resource: "tags".into(),
                uuid: x,
                fields: fields(json!({"color": "green"})),
            },
            BatchEntry::Delete {
                resource: "albums".into(),
                uuid: album,
            },
            BatchEntry::Delete {
                resource: "tags".into(),
                uuid: gone,
            },
            // Re-created in the same batch, after its delete.
            entry_create("tags", gone, json!({"name": "back"})),
        ])
        .await
        .unwrap();
    assert_eq!(out.ops.len(), 6);
    let row = a.get_row("tags", x).await.unwrap().unwrap();
    assert_eq!(
        (row["name"].clone(), row["color"].clone()),
        (json!("x"), json!("green"))
    );
    assert!(a.get_row("albums", album).await.unwrap().is_none());
    let back = a.get_row("tags", gone).await.unwrap().unwrap();
    assert_eq!(
        (back["name"].clone(), back["color"].clone()),
        (json!("back"), J::Null)
    );
    // A replica applying the same ops one by one ends the same.
    for c in all_changes(&a).await {
        b.apply(vec![c]).await.unwrap();
    }
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    // And an update of the deleted album in a later batch is refused.
    let err = a
        .update_shared("albums", album, fields(json!({"name": "no"})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no live row"), "{err}");
}

#[tokio::test]
async fn a_column_whose_affinity_would_convert_values_is_refused() {
    use murmur_store::{ColumnType, Kind, ResourceDef};
    let dir = tempfile::tempdir().unwrap();
    let mut o = StoreOptions::new(dir.path().join("lib.db"), murmur_testkit::device_key(3));
    // `tags.name` is declared TEXT: a real value stored there would come back as text, so
    // a registry that calls it a real column is refused when the store opens.
    o.registry.register(ResourceDef::new(
        "tags",
        Kind::Shared,
        &[("name", ColumnType::Real), ("color", ColumnType::Text)],
    ));
    let err = Store::open(o).await.unwrap_err().to_string();
    assert!(
        err.contains("`name` of `tags`") && err.contains("REAL"),
        "{err}"
    );
}

#[tokio::test]
async fn a_library_of_a_newer_version_is_refused_at_open() {
    // How a binary older than a library's format (such as the row clock version 2 of
    // migration 0005) meets it: a migration it does not know, and a clean refusal.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.db");
    let opts = || {
        let mut o = StoreOptions::new(&path, murmur_testkit::device_key(7));
        o.durability = murmur_store::Durability::Normal;
        o
    };
    let s = Store::open(opts()).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer murmur', 1, x'00', 0)",
    )
    .execute(s.pool())
    .await
    .unwrap();
    s.close().await;
    let err = Store::open(opts()).await.expect_err("refused");
    assert!(err.to_string().contains("9999"), "{err}");
}
