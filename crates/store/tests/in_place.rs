//! Remote `SharedCreate`s of rows unknown here, and `SharedUpdate`s of rows that are live
//! here, are applied by SQLite in place (no read into Rust). Whenever one op of a batch
//! would not change its row that way (a row already known, older than the register, a row
//! not live here, a clock of an earlier layout), the attempt is rolled back and run again,
//! its statements naming the rows they change, and the ops that changed nothing take the
//! general path: the result is the same either way, and these tests check it against the
//! author's state, down to the bytes of the row clocks.

use murmur_store::{BatchEntry, Change, Method, Op, Store, StoreError};
use murmur_testkit::ops::*;
use murmur_testkit::store::*;
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

async fn name_of(s: &Store, uuid: Uuid) -> Option<String> {
    s.get_row("tags", uuid)
        .await
        .unwrap()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
}

async fn rename(s: &Store, uuid: Uuid, name: &str) -> Op {
    let w = s
        .update_shared("tags", uuid, fields(json!({ "name": name })))
        .await
        .unwrap();
    w.ops[0].clone()
}

async fn clock_of(s: &Store, uuid: Uuid) -> Vec<u8> {
    sqlx::query("SELECT crdt_clock FROM tags WHERE uuid = ?")
        .bind(uuid.hyphenated().to_string())
        .fetch_one(s.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn updates_of_live_rows_are_merged_in_place() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let mut uuids = Vec::new();
    let mut creates = Vec::new();
    for i in 0..3 {
        let w = a
            .create_shared("tags", None, tag(&format!("t{i}")))
            .await
            .unwrap();
        uuids.push(w.uuids[0]);
        creates.extend(w.ops);
    }
    let rep = b.apply(changes(&creates)).await.unwrap();
    assert_eq!(
        (rep.applied, rep.in_place),
        (3, 3),
        "creates of unknown rows, in place"
    );
    assert_eq!(rep.events.len(), 3);
    for u in &uuids {
        assert_eq!(
            clock_of(&a, *u).await,
            clock_of(&b, *u).await,
            "clock of {u}"
        );
    }
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());

    // Two properties, and one row renamed twice in the same batch.
    let mut updates = vec![
        rename(&a, uuids[0], "first").await,
        rename(&a, uuids[1], "one").await,
        rename(&a, uuids[0], "second").await,
    ];
    let w = a
        .update_shared("tags", uuids[2], fields(json!({"color": "blue"})))
        .await
        .unwrap();
    updates.extend(w.ops);
    let rep = b.apply(changes(&updates)).await.unwrap();
    assert_eq!(rep.applied, 4);
    assert_eq!(rep.in_place, 4, "every update merged in place");
    assert_eq!(rep.events.len(), 4, "one event per op");
    assert!(
        rep.events
            .iter()
            .all(|e| e.method == Method::SharedUpdate && e.remote)
    );

    assert_eq!(name_of(&b, uuids[0]).await.as_deref(), Some("second"));
    assert_eq!(name_of(&b, uuids[1]).await.as_deref(), Some("one"));
    let row = b.get_row("tags", uuids[2]).await.unwrap().unwrap();
    assert_eq!(
        (row["name"].clone(), row["color"].clone()),
        (json!("t2"), json!("blue"))
    );
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    let not_blobs: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tags WHERE typeof(crdt_clock) <> 'blob'")
            .fetch_one(b.pool())
            .await
            .unwrap();
    assert_eq!(not_blobs, 0, "clocks written in place stay blobs");
    // SQLite wrote the same bytes the general path wrote on A (from a compact clock, and
    // from a clock with slots for the row renamed twice).
    for u in &uuids {
        assert_eq!(
            clock_of(&a, *u).await,
            clock_of(&b, *u).await,
            "clock of {u}"
        );
    }
    // The slots written by SQLite decode like the ones Rust writes: a later merge still
    // orders by them (an update older than the one in place loses, a newer one wins).
    let newer = rename(&a, uuids[0], "third").await;
    let rep = b.apply(changes(&[newer])).await.unwrap();
    assert_eq!(rep.in_place, 1);
    assert_eq!(name_of(&b, uuids[0]).await.as_deref(), Some("third"));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

/// Two stores, and two tags (`x`, `y`) created on the first, not yet applied on the second.
async fn two_tags_on_a() -> (
    Store,
    Store,
    murmur_store::WriteOutcome,
    murmur_store::WriteOutcome,
    [tempfile::TempDir; 2],
) {
    let (a, da) = store(1).await;
    let (b, db) = store(2).await;
    let x = a.create_shared("tags", None, tag("x")).await.unwrap();
    let y = a.create_shared("tags", None, tag("y")).await.unwrap();
    (a, b, x, y, [da, db])
}

#[tokio::test]
async fn an_older_update_goes_to_the_general_path_and_the_rest_of_its_batch_in_place() {
    let (a, b, x, y, _dirs) = two_tags_on_a().await;
    let (ux, uy) = (x.uuids[0], y.uuids[0]);
    let old = rename(&a, ux, "old").await;
    let new = rename(&a, ux, "new").await;
    let y2 = rename(&a, uy, "y2").await;
    b.apply(changes(&[x.ops, y.ops].concat())).await.unwrap();
    let rep = b.apply(changes(&[new])).await.unwrap();
    assert_eq!(rep.in_place, 1);

    // `old` is older than the register it would set: it changes nothing, and `y2` in the
    // same batch must still be applied.
    let rep = b.apply(changes(&[y2, old])).await.unwrap();
    assert_eq!(rep.applied, 2, "both ops are taken (and logged)");
    assert_eq!(
        rep.in_place, 1,
        "y2 in place, on the attempt after the miss"
    );
    assert_eq!(rep.events.len(), 1, "only y2 changed its row");
    assert_eq!(rep.events[0].uuid, Some(uy));
    assert_eq!(name_of(&b, ux).await.as_deref(), Some("new"));
    assert_eq!(name_of(&b, uy).await.as_deref(), Some("y2"));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn a_row_named_twice_for_one_column_of_a_missed_batch_takes_the_general_path() {
    let (a, b, x, y, _dirs) = two_tags_on_a().await;
    let (ux, uy) = (x.uuids[0], y.uuids[0]);
    let older = rename(&a, ux, "older").await;
    let newer = rename(&a, ux, "newer").await;
    let y2 = rename(&a, uy, "y2").await;
    b.apply(changes(&[x.ops, y.ops].concat())).await.unwrap();

    // `older` after `newer` changes nothing: the first attempt misses, and x, named twice
    // for `name`, goes to the general path with both its ops; y2 goes in place.
    let rep = b.apply(changes(&[newer, older, y2])).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (3, 1));
    let mut changed: Vec<_> = rep.events.iter().filter_map(|e| e.uuid).collect();
    changed.sort();
    let mut want = vec![ux, uy];
    want.sort();
    assert_eq!(changed, want, "one event per row changed");
    assert_eq!(name_of(&b, ux).await.as_deref(), Some("newer"));
    assert_eq!(name_of(&b, uy).await.as_deref(), Some("y2"));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn an_update_of_a_row_not_live_leaves_no_row_and_the_rest_goes_in_place() {
    let (a, b, x, y, _dirs) = two_tags_on_a().await;
    let (ux, uy) = (x.uuids[0], y.uuids[0]);
    let rx = rename(&a, ux, "x2").await;
    let ry = rename(&a, uy, "y2").await;
    // B has y only: the update of x arrives before x's create.
    b.apply(changes(&y.ops)).await.unwrap();
    let rep = b.apply(changes(&[rx, ry])).await.unwrap();
    assert_eq!(
        (rep.applied, rep.in_place),
        (2, 1),
        "y2 in place, x2 to the side"
    );
    assert_eq!(name_of(&b, ux).await, None, "no row inserted for x");
    assert_eq!(name_of(&b, uy).await.as_deref(), Some("y2"));
    let unborn: i64 = sqlx::query_scalar("SELECT count(*) FROM tags WHERE length(crdt_clock) = 24")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(unborn, 0);
    let rep = b.apply(changes(&x.ops)).await.unwrap();
    assert_eq!(rep.applied, 1);
    assert_eq!(
        name_of(&b, ux).await.as_deref(),
        Some("x2"),
        "the create merges with it"
    );
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn updates_of_rows_not_live_here_take_the_general_path() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let (c, _dc) = store(3).await;
    let x = a.create_shared("tags", None, tag("x")).await.unwrap();
    let ux = x.uuids[0];
    c.apply(changes(&x.ops)).await.unwrap();
    // C renames the row, A deletes it afterwards.
    let renamed = rename(&c, ux, "renamed").await;
    let deleted = a.delete_shared("tags", ux).await.unwrap();

    // B has the delete: the update of a dead row goes to the side tables.
    b.apply(changes(&[x.ops.clone(), deleted.ops.clone()].concat()))
        .await
        .unwrap();
    let rep = b.apply(vec![Change::Op(renamed.clone())]).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 0));
    assert_eq!(name_of(&b, ux).await, None, "still deleted");

    // D has nothing yet: an update before its create waits in the side tables too, and
    // the create that follows must merge with it (not be inserted in place over it).
    let (d, _dd) = store(4).await;
    let rep = d.apply(vec![Change::Op(renamed.clone())]).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 0));
    let rep = d.apply(changes(&x.ops)).await.unwrap();
    assert_eq!(
        (rep.applied, rep.in_place),
        (1, 0),
        "the row is known from the side tables"
    );
    assert_eq!(name_of(&d, ux).await.as_deref(), Some("renamed"));
    d.apply(changes(&deleted.ops)).await.unwrap();

    a.apply(changes(&[renamed])).await.unwrap();
    let want = a.digest().await.unwrap();
    assert_eq!(b.digest().await.unwrap(), want);
    assert_eq!(d.digest().await.unwrap(), want);
}

#[tokio::test]
async fn a_create_in_the_batch_keeps_its_row_on_the_general_path() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let x = a.create_shared("tags", None, tag("x")).await.unwrap();
    b.apply(changes(&x.ops)).await.unwrap();
    let y = a.create_shared("tags", None, tag("y")).await.unwrap();
    let (ux, uy) = (x.uuids[0], y.uuids[0]);
    let ry = rename(&a, uy, "y renamed").await;
    let rx = rename(&a, ux, "x renamed").await;

    let rep = b
        .apply(changes(&[y.ops, vec![ry, rx]].concat()))
        .await
        .unwrap();
    assert_eq!(rep.applied, 3);
    assert_eq!(
        rep.in_place, 1,
        "only x's update, whose row no create in the batch names"
    );
    assert_eq!(rep.events.len(), 3);
    assert_eq!(name_of(&b, ux).await.as_deref(), Some("x renamed"));
    assert_eq!(name_of(&b, uy).await.as_deref(), Some("y renamed"));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

/// Two stores, and a tag `a` created and `b` applied: `(a, b, the create, their dirs)`.
async fn a_tag_on_two_stores() -> (
    Store,
    Store,
    murmur_store::WriteOutcome,
    [tempfile::TempDir; 2],
) {
    let (a, da) = store(1).await;
    let (b, db) = store(2).await;
    let x = a.create_shared("tags", None, tag("x")).await.unwrap();
    b.apply(changes(&x.ops)).await.unwrap();
    (a, b, x, [da, db])
}

/// Overwrites the clock of a row of `tags`, as another version or registry wrote it.
async fn set_clock(s: &Store, uuid: Uuid, clock: Vec<u8>) {
    sqlx::query("UPDATE tags SET crdt_clock = ? WHERE uuid = ?")
        .bind(clock)
        .bind(uuid.hyphenated().to_string())
        .execute(s.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_clock_of_an_earlier_version_is_rewritten_then_updated_in_place() {
    let (a, b, x, _dirs) = a_tag_on_two_stores().await;
    let ux = x.uuids[0];
    let current = clock_of(&b, ux).await;
    assert_eq!(current[0], 2, "clocks are written in version 2");
    assert_eq!(current.len(), 40, "in the compact form");

    // The clock as version 1 wrote it: both properties at the create's timestamp.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&x.ops[0].ts().to_bytes());
    for name in ["name", "color"] {
        v1.extend_from_slice(&(name.len() as u16).to_be_bytes());
        v1.extend_from_slice(name.as_bytes());
        v1.push(0);
    }
    set_clock(&b, ux, v1).await;
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());

    let first = rename(&a, ux, "one").await;
    let rep = b.apply(vec![Change::Op(first)]).await.unwrap();
    assert_eq!(
        (rep.applied, rep.in_place),
        (1, 0),
        "a v1 clock is not touched by SQL"
    );
    assert_eq!(
        clock_of(&b, ux).await[0],
        2,
        "and is rewritten by the general path"
    );
    let second = rename(&a, ux, "two").await;
    let rep = b.apply(vec![Change::Op(second)]).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 1));
    assert_eq!(name_of(&b, ux).await.as_deref(), Some("two"));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn a_clock_of_another_layout_of_the_same_length_is_not_updated_in_place() {
    let (a, b, x, _dirs) = a_tag_on_two_stores().await;
    let ux = x.uuids[0];
    // The columns named in the other order (as a registry that lists them so would write
    // them): the same length, so only the layout check tells the clocks apart.
    let mut swapped = vec![2u8, 0, 2];
    for name in ["color", "name"] {
        swapped.extend_from_slice(&(name.len() as u16).to_be_bytes());
        swapped.extend_from_slice(name.as_bytes());
    }
    swapped.extend_from_slice(&x.ops[0].ts().to_bytes());
    assert_eq!(swapped.len(), clock_of(&b, ux).await.len());
    set_clock(&b, ux, swapped).await;

    let first = rename(&a, ux, "one").await;
    let rep = b.apply(vec![Change::Op(first)]).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 0), "not touched by SQL");
    let second = rename(&a, ux, "two").await;
    let rep = b.apply(vec![Change::Op(second)]).await.unwrap();
    assert_eq!(
        (rep.applied, rep.in_place),
        (1, 1),
        "rewritten, then in place"
    );
    assert_eq!(name_of(&b, ux).await.as_deref(), Some("two"));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn a_create_of_a_row_already_here_merges() {
    // Two devices create the same relation: tags_on_files derives its UUID from its
    // columns, so both creates name one row.
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let rel = || fields(json!({"tag_uuid": Uuid::from_u128(9).to_string(), "cas_id": "c1"}));
    let from_a = a.create_shared("tags_on_files", None, rel()).await.unwrap();
    let from_b = b.create_shared("tags_on_files", None, rel()).await.unwrap();
    assert_eq!(from_a.uuids, from_b.uuids);
    let rep = b.apply(changes(&from_a.ops)).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 0), "the row is live here");
    let rep = a.apply(changes(&from_b.ops)).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 0));
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    assert_eq!(a.digest().await.unwrap().rows, 1);
}

fn create(uuid: Uuid, name: &str) -> BatchEntry {
    BatchEntry::Create {
        resource: "tags".into(),
        uuid: Some(uuid),
        fields: tag(name),
    }
}

#[tokio::test]
async fn a_local_batch_of_new_rows_and_one_with_a_known_row() {
    let (a, _da) = store(1).await;
    let u: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    // New rows only: inserted without a read, in the compact clock form.
    let w = a
        .batch(vec![
            create(u[0], "a"),
            create(u[1], "b"),
            create(u[2], "c"),
        ])
        .await
        .unwrap();
    assert_eq!(w.uuids, u[..3].to_vec());
    assert_eq!((w.ops.len(), w.events.len()), (3, 3));
    assert!(w.events.iter().all(|e| !e.remote));
    assert_eq!(clock_of(&a, u[0]).await.len(), 40);
    assert_eq!(name_of(&a, u[1]).await.as_deref(), Some("b"));

    // A live row among them: the batch fails at that entry and writes nothing.
    let err = a
        .batch(vec![create(u[3], "d"), create(u[0], "again")])
        .await
        .unwrap_err();
    match err {
        StoreError::BatchEntry { index, source } => {
            assert_eq!(index, 1);
            assert!(
                matches!(*source, StoreError::AlreadyExists { .. }),
                "{source}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        name_of(&a, u[3]).await,
        None,
        "nothing of the failed batch stays"
    );
    assert_eq!(name_of(&a, u[0]).await.as_deref(), Some("a"));
    assert_eq!(a.version_vector().contiguous(&a.author()), 3);

    // A deleted row among them: created again (the general path revives it).
    a.delete_shared("tags", u[1]).await.unwrap();
    let w = a
        .batch(vec![create(u[4], "e"), create(u[1], "b again")])
        .await
        .unwrap();
    assert_eq!(w.ops.len(), 2);
    assert_eq!(name_of(&a, u[1]).await.as_deref(), Some("b again"));
    assert_eq!(name_of(&a, u[4]).await.as_deref(), Some("e"));
    assert_eq!(a.version_vector().contiguous(&a.author()), 6);

    // Another replica fed with the log reaches the same state.
    let (b, _db) = store(2).await;
    b.apply(all_changes(&a).await).await.unwrap();
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    for x in [u[0], u[1], u[4]] {
        assert_eq!(clock_of(&a, x).await, clock_of(&b, x).await);
    }
}

/// Whether the library at `s` has an index called `name`.
async fn has_index(s: &Store, name: &str) -> bool {
    sqlx::query("SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = ?")
        .bind(name)
        .fetch_optional(s.pool())
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn the_look_for_rows_an_unchecked_update_inserted_uses_the_partial_index() {
    let (s, _d) = store(1).await;
    for t in ["tags", "albums", "comments", "jobs", "tags_on_files"] {
        assert!(has_index(&s, &format!("{t}_murmur_unborn")).await, "{t}");
    }
    // The engine's query after an unchecked update, as it is written there: one index
    // look-up, not a scan of the table (which would cost every batch a pass over the rows).
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT EXISTS (SELECT 1 FROM tags WHERE length(crdt_clock) = 24)",
    )
    .fetch_all(s.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(3))
    .collect();
    assert!(
        plan.iter()
            .any(|p| p.contains("USING INDEX tags_murmur_unborn")
                || p.contains("USING COVERING INDEX tags_murmur_unborn")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|p| p == "SCAN tags"), "{plan:?}");
}

#[tokio::test]
async fn a_table_an_upsert_cannot_write_takes_its_updates_in_place_as_update_from() {
    use murmur_store::{ColumnType, Kind, ResourceDef, StoreOptions};
    // An application's table with a NOT NULL column: an upsert that named only the updated
    // column would fail on it (SQLite checks NOT NULL before the conflict, even for a row
    // that exists), so the table gets no unborn index, and its updates go in place as an
    // `UPDATE … FROM`, which changes only the rows it finds.
    let open = |n: u128, dir: &std::path::Path| {
        let path = dir.join("lib.db");
        async move {
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
            sqlx::query(
                "CREATE TABLE notes (uuid TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, \
                 body TEXT, crdt_clock BLOB NOT NULL DEFAULT x'') WITHOUT ROWID",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
            let mut o = StoreOptions::new(&path, murmur_testkit::device_key(n));
            o.durability = murmur_store::Durability::Normal;
            o.registry.register(ResourceDef::new(
                "notes",
                Kind::Shared,
                &[("title", ColumnType::Text), ("body", ColumnType::Text)],
            ));
            Store::open(o).await.unwrap()
        }
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(1, da.path()).await, open(2, db.path()).await);
    assert!(!has_index(&b, "notes_murmur_unborn").await);
    assert!(has_index(&b, "tags_murmur_unborn").await);

    let mut creates = Vec::new();
    let mut uuids = Vec::new();
    for i in 0..3 {
        let w = a
            .create_shared("notes", None, fields(json!({"title": format!("n{i}")})))
            .await
            .unwrap();
        uuids.push(w.uuids[0]);
        creates.extend(w.ops);
    }
    b.apply(changes(&creates)).await.unwrap();
    let mut updates = Vec::new();
    for (i, u) in uuids.iter().enumerate() {
        let w = a
            .update_shared("notes", *u, fields(json!({"body": format!("body {i}")})))
            .await
            .unwrap();
        updates.extend(w.ops);
    }
    let rep = b.apply(changes(&updates)).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (3, 3), "checked, in place");
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());

    // An update older than B's own write of the same register changes nothing.
    let old = a
        .update_shared("notes", uuids[1], fields(json!({"body": "a, older"})))
        .await
        .unwrap();
    let mine = b
        .update_shared("notes", uuids[1], fields(json!({"body": "b, newer"})))
        .await
        .unwrap();
    // In one batch with a newer update of another row, which still goes in place (the
    // `UPDATE … FROM` run again, naming the rows it changes).
    let other = a
        .update_shared("notes", uuids[2], fields(json!({"body": "a, later"})))
        .await
        .unwrap();
    let rep = b
        .apply(changes(&[old.ops, other.ops].concat()))
        .await
        .unwrap();
    assert_eq!((rep.applied, rep.in_place), (2, 1));
    let row = b.get_row("notes", uuids[1]).await.unwrap().unwrap();
    assert_eq!(row["body"], "b, newer");
    let row = b.get_row("notes", uuids[2]).await.unwrap().unwrap();
    assert_eq!(row["body"], "a, later");
    a.apply(changes(&mine.ops)).await.unwrap();
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());

    // An update of a row B has never seen: the checked statement leaves it alone, and the
    // general path keeps it in the side tables until its create arrives.
    let w = a
        .create_shared("notes", None, fields(json!({"title": "late"})))
        .await
        .unwrap();
    let late = a
        .update_shared("notes", w.uuids[0], fields(json!({"body": "early"})))
        .await
        .unwrap();
    let rep = b.apply(changes(&late.ops)).await.unwrap();
    assert_eq!((rep.applied, rep.in_place), (1, 0));
    assert!(b.get_row("notes", w.uuids[0]).await.unwrap().is_none());
    b.apply(changes(&w.ops)).await.unwrap();
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}
