//! One test per merge rule, through the store (SQL included).

use std::time::Duration;

use murmur_store::{Change, RejectReason, StoreError};
use murmur_testkit::ops::*;
use murmur_testkit::store::*;
use serde_json::json;

#[tokio::test]
async fn concurrent_updates_have_one_winner_everywhere() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let (c, _dc) = store(3).await;
    let created = a.create_shared("tags", None, tag("t")).await.unwrap();
    let uuid = created.uuids[0];
    b.apply(changes(&created.ops)).await.unwrap();
    c.apply(changes(&created.ops)).await.unwrap();
    // Concurrent: neither has seen the other's update.
    let ua = a
        .update_shared("tags", uuid, fields(json!({"name": "from a"})))
        .await
        .unwrap();
    let ub = b
        .update_shared("tags", uuid, fields(json!({"name": "from b"})))
        .await
        .unwrap();
    a.apply(changes(&ub.ops)).await.unwrap();
    b.apply(changes(&ua.ops)).await.unwrap();
    // c gets them in the other order.
    c.apply(changes(&ub.ops)).await.unwrap();
    c.apply(changes(&ua.ops)).await.unwrap();
    let winner = if ua.ops[0].ts() > ub.ops[0].ts() {
        "from a"
    } else {
        "from b"
    };
    for s in [&a, &b, &c] {
        let row = s.get_row("tags", uuid).await.unwrap().unwrap();
        assert_eq!(row["name"], winner);
        assert_eq!(row["color"], "red");
    }
    let d = a.digest().await.unwrap();
    assert_eq!(d, b.digest().await.unwrap());
    assert_eq!(d, c.digest().await.unwrap());
}

#[tokio::test]
async fn update_older_than_delete_does_not_resurrect() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let created = a
        .create_shared(
            "albums",
            None,
            fields(json!({"name": "x", "is_hidden": false})),
        )
        .await
        .unwrap();
    let uuid = created.uuids[0];
    b.apply(changes(&created.ops)).await.unwrap();
    let upd = b
        .update_shared("albums", uuid, fields(json!({"name": "late"})))
        .await
        .unwrap();
    // a deletes after b's update (a's clock is later) without having seen it.
    let del = a.delete_shared("albums", uuid).await.unwrap();
    assert!(del.ops[0].ts() > upd.ops[0].ts());
    // a receives the older update after its delete: stays deleted.
    a.apply(changes(&upd.ops)).await.unwrap();
    assert!(a.get_row("albums", uuid).await.unwrap().is_none());
    b.apply(changes(&del.ops)).await.unwrap();
    assert!(b.get_row("albums", uuid).await.unwrap().is_none());
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    // Updating a deleted row locally is refused.
    let err = a
        .update_shared("albums", uuid, fields(json!({"name": "n"})))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn duplicate_op_is_a_no_op() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let w = a
        .create_shared(
            "jobs",
            None,
            fields(json!({"name": "j", "status": "queued"})),
        )
        .await
        .unwrap();
    let r1 = b.apply(changes(&w.ops)).await.unwrap();
    assert_eq!(r1.applied, 1);
    let before = b.digest().await.unwrap();
    let pending = b.pending_operations().await.unwrap();
    let r2 = b.apply(changes(&w.ops)).await.unwrap();
    assert_eq!((r2.applied, r2.duplicates), (0, 1));
    // Twice in one batch counts once.
    let mut twice = changes(&w.ops);
    twice.extend(changes(&w.ops));
    let r3 = b.apply(twice).await.unwrap();
    assert_eq!(r3.applied, 0);
    assert_eq!(b.digest().await.unwrap(), before);
    assert_eq!(b.pending_operations().await.unwrap(), pending);
}

#[tokio::test]
async fn non_owner_op_on_owned_row_is_rejected() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let w = a
        .write_owned(
            "file_paths",
            vec![fields(
                json!({"name": "a.jpg", "cas_id": "c1", "size_bytes": 10}),
            )],
        )
        .await
        .unwrap();
    let uuid = w.uuids[0];
    b.apply(all_changes(&a).await).await.unwrap();
    assert!(b.get_row("file_paths", uuid).await.unwrap().is_some());
    let before = b.digest().await.unwrap();
    // b cannot delete a's row locally...
    let err = b.delete_owned("file_paths", uuid).await.unwrap_err();
    assert!(matches!(err, StoreError::NotOwner { .. }), "{err}");
    // ...nor can a forged op by b reach a's row remotely.
    let mut forged = w.ops[0].clone();
    forged.author = b.client();
    forged.seq = 1;
    forged.method = murmur_store::Method::OwnedDelete;
    forged.uuid = Some(uuid);
    forged.count = None;
    forged.groups.clear();
    let report = a.apply(vec![Change::Op(forged)]).await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].1.reason, RejectReason::NotOwner);
    assert!(a.get_row("file_paths", uuid).await.unwrap().is_some());
    assert_eq!(b.digest().await.unwrap(), before);
}

#[tokio::test]
async fn drifted_op_is_rejected_then_accepted_when_the_clock_catches_up() {
    let ahead = manual();
    let behind = manual();
    behind.rewind(Duration::from_secs(2));
    let (a, _da) = store_with(1, murmur_store::PhysicalClock::Manual(ahead.clone())).await;
    let (b, _db) = store_with(2, murmur_store::PhysicalClock::Manual(behind.clone())).await;
    let w = a.create_shared("tags", None, tag("future")).await.unwrap();
    let before = b.digest().await.unwrap();
    let r = b.apply(changes(&w.ops)).await.unwrap();
    assert_eq!(r.applied, 0);
    assert_eq!(r.rejected[0].1.reason, RejectReason::Drift);
    assert_eq!(
        b.digest().await.unwrap(),
        before,
        "a drifted op changes nothing"
    );
    assert!(
        !b.version_vector().has(w.ops[0].id()),
        "and is not marked received"
    );
    behind.advance(Duration::from_millis(2000));
    let r = b.apply(changes(&w.ops)).await.unwrap();
    assert_eq!(r.applied, 1, "{:?}", r.rejected);
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
    ahead.release();
    behind.release();
}

#[tokio::test]
async fn in_one_batch_only_the_drifted_ops_are_rejected() {
    let ahead = manual();
    let behind = manual();
    let (a, _da) = store_with(1, murmur_store::PhysicalClock::Manual(ahead.clone())).await;
    let (b, _db) = store_with(2, murmur_store::PhysicalClock::Manual(behind.clone())).await;
    let now = a.create_shared("tags", None, tag("now")).await.unwrap();
    ahead.advance(Duration::from_secs(2));
    let later = a.create_shared("tags", None, tag("later")).await.unwrap();
    let mut ops = now.ops.clone();
    ops.extend(later.ops.iter().cloned());
    // The batch's latest op is too far ahead: each op is then checked on its own.
    let r = b.apply(changes(&ops)).await.unwrap();
    assert_eq!(r.applied, 1, "{:?}", r.rejected);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].0, later.ops[0].id());
    assert_eq!(r.rejected[0].1.reason, RejectReason::Drift);
    assert!(b.version_vector().has(now.ops[0].id()));
    assert!(!b.version_vector().has(later.ops[0].id()));
    assert!(b.get_row("tags", now.uuids[0]).await.unwrap().is_some());
    assert!(b.get_row("tags", later.uuids[0]).await.unwrap().is_none());
    ahead.release();
    behind.release();
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let (a, _da) = store(1).await;
    let before = a.digest().await.unwrap();
    let e = a.create_shared("nope", None, tag("x")).await.unwrap_err();
    assert!(matches!(e, StoreError::UnknownResource(_)), "{e}");
    let e = a
        .create_shared("tags", None, fields(json!({"nme": "x"})))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::UnknownField { .. }), "{e}");
    let e = a
        .create_shared("tags", None, fields(json!({"name": 5})))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::WrongType { .. }), "{e}");
    let e = a
        .create_shared("file_paths", None, tag("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::WrongKind { .. }), "{e}");
    // A batch with one bad entry writes nothing at all.
    let e = a
        .batch(vec![
            murmur_store::BatchEntry::Create {
                resource: "tags".into(),
                uuid: None,
                fields: tag("ok"),
            },
            murmur_store::BatchEntry::Create {
                resource: "tags".into(),
                uuid: None,
                fields: fields(json!({"color": 1})),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::BatchEntry { index: 1, .. }), "{e}");
    assert_eq!(a.digest().await.unwrap(), before);
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    // A remote op of a resource this registry does not know (a newer schema's): kept for
    // a build that knows it, not applied, not refused.
    let mut op = a.create_shared("tags", None, tag("y")).await.unwrap().ops[0].clone();
    let after_write = a.digest().await.unwrap();
    op.resource = "bogus".into();
    op.author = uuid::Uuid::from_u128(9);
    let r = a.apply(vec![Change::Op(op.clone())]).await.unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(r.kept, vec![(op.id(), RejectReason::UnknownResource)]);
    assert_eq!(r.applied, 0);
    assert_eq!(a.digest().await.unwrap(), after_write);
    assert_eq!(a.kept().await.unwrap().get("unknown_resource"), Some(&1));
    // Without a row, it cannot be kept: refused.
    op.uuid = None;
    op.seq += 1;
    let r = a.apply(vec![Change::Op(op)]).await.unwrap();
    assert_eq!(r.rejected[0].1.reason, RejectReason::UnknownResource);
    assert_eq!(a.digest().await.unwrap(), after_write);
}

#[tokio::test]
async fn tags_on_files_rows_made_on_two_devices_are_one_row() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let tag_uuid = uuid::Uuid::now_v7();
    let f = fields(json!({"tag_uuid": tag_uuid.to_string(), "cas_id": "abc"}));
    let wa = a
        .create_shared("tags_on_files", None, f.clone())
        .await
        .unwrap();
    let wb = b.create_shared("tags_on_files", None, f).await.unwrap();
    assert_eq!(wa.uuids, wb.uuids);
    a.apply(changes(&wb.ops)).await.unwrap();
    b.apply(changes(&wa.ops)).await.unwrap();
    assert_eq!(a.count_rows("tags_on_files").await.unwrap(), 1);
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn files_are_derived_from_file_paths() {
    let (a, _da) = store(1).await;
    let (b, _db) = store(2).await;
    let w = a
        .write_owned(
            "file_paths",
            vec![
                fields(json!({"name": "1", "cas_id": "c1", "size_bytes": 5})),
                fields(json!({"name": "2", "cas_id": "c1", "size_bytes": 5})),
                fields(json!({"name": "3", "cas_id": "c2", "size_bytes": 7})),
            ],
        )
        .await
        .unwrap();
    b.apply(all_changes(&a).await).await.unwrap();
    for s in [&a, &b] {
        let files = s.files(None, 10).await.unwrap();
        assert_eq!(
            files,
            vec![
                json!({"cas_id": "c1", "size_bytes": 5, "path_count": 2}),
                json!({"cas_id": "c2", "size_bytes": 7, "path_count": 1}),
            ]
        );
    }
    let d = a.delete_owned("file_paths", w.uuids[2]).await.unwrap();
    b.apply(changes(&d.ops)).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(s.files(None, 10).await.unwrap().len(), 1);
    }
    // The derived table is not synced state.
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());
}
