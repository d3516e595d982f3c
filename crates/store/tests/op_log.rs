//! The op log in chunks: pages that start and end inside chunks, gaps (ops that arrived out
//! of order), pruning through the middle of a chunk, and a log written one row per op by an
//! earlier version, moved into chunks when the store opens.

use std::collections::BTreeMap;

use murmur_store::{
    BatchEntry, Change, Method, Op, OpId, OpsCursor, Store, StoreOptions, VersionVector,
};
use murmur_testkit::ops::*;
use murmur_testkit::store::*;
use sqlx::Row;
use uuid::Uuid;

/// Creates `n` tags on `s` in one batch (one transaction: chunks of at most 1,000 ops).
async fn create_tags(s: &Store, n: usize) -> Vec<Op> {
    let entries = (0..n)
        .map(|i| BatchEntry::Create {
            resource: "tags".into(),
            uuid: None,
            fields: tag(&format!("t{i}")),
        })
        .collect();
    s.batch(entries).await.unwrap().ops
}

/// Every op `s` would send a peer with version vector `theirs`, `limit` per page.
async fn pages(s: &Store, theirs: &VersionVector, limit: usize) -> Vec<Op> {
    let mut out = Vec::new();
    let mut cursor = OpsCursor::default();
    loop {
        let page = s.ops_since(theirs, &cursor, limit).await.unwrap();
        assert!(
            page.changes.len() <= limit,
            "a page holds at most its limit"
        );
        for c in page.changes {
            match c {
                Change::Op(op) => out.push(op),
                other => panic!("only shared ops were written: {other:?}"),
            }
        }
        match page.next {
            Some(n) => cursor = n,
            None => return out,
        }
    }
}

/// The store of client `n` at `path`.
async fn open_at(path: &std::path::Path, n: u128) -> Store {
    let mut o = StoreOptions::new(path, murmur_testkit::device_key(n));
    o.durability = murmur_store::Durability::Normal;
    Store::open(o).await.unwrap()
}

fn vv_at(author: Uuid, seq: u64) -> VersionVector {
    let mut vv = VersionVector::default();
    for s in 1..=seq {
        vv.add(OpId { author, seq: s });
    }
    vv
}

#[tokio::test]
async fn pages_cut_through_chunks_and_send_each_op_once() {
    let (a, _da) = store(1).await;
    let mut written = create_tags(&a, 2_500).await; // chunks 1..=1000, ..=2000, ..=2500
    for i in 0..5 {
        // one chunk per single write
        written.extend(
            a.create_shared("tags", None, tag(&format!("s{i}")))
                .await
                .unwrap()
                .ops,
        );
    }
    assert_eq!(a.pending_operations().await.unwrap(), 2_505);
    for limit in [1, 7, 333, 1_000, 1_001, 5_000] {
        assert_eq!(
            pages(&a, &VersionVector::default(), limit).await,
            written,
            "limit {limit}"
        );
    }
    // A peer that has the first 1,500 ops gets the rest, starting inside the second chunk.
    let theirs = vv_at(a.author(), 1_500);
    assert_eq!(pages(&a, &theirs, 400).await, written[1_500..].to_vec());
}

#[tokio::test]
async fn ops_after_a_gap_are_kept_served_and_counted_after_a_reopen() {
    let (a, _da) = store(1).await;
    let ops = create_tags(&a, 9).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.db");
    let open = || open_at(&path, 2);
    let b = open().await;
    // 1..=3 and 7..=9 arrive; 4..=6 are lost.
    let mut some = changes(&ops[..3]);
    some.extend(changes(&ops[6..]));
    assert_eq!(b.apply(some).await.unwrap().applied, 6);
    b.close().await;

    let b = open().await;
    let vv = b.version_vector();
    assert_eq!(vv.contiguous(&a.author()), 3);
    assert!(
        vv.has(OpId {
            author: a.author(),
            seq: 8
        }),
        "ops past the gap survive a reopen"
    );
    assert!(!vv.has(OpId {
        author: a.author(),
        seq: 5
    }));
    assert_eq!(b.pending_operations().await.unwrap(), 6);
    // B relays both sides of the gap to a third replica.
    let mut relayed = ops[..3].to_vec();
    relayed.extend_from_slice(&ops[6..]);
    assert_eq!(pages(&b, &VersionVector::default(), 2).await, relayed);
    // The lost ops fill the gap; a duplicate changes nothing.
    let rep = b.apply(changes(&ops[2..6])).await.unwrap();
    assert_eq!((rep.applied, rep.duplicates), (3, 1));
    assert_eq!(b.version_vector().contiguous(&a.author()), 9);
    assert_eq!(pages(&b, &VersionVector::default(), 4).await, ops);
    assert_eq!(b.digest().await.unwrap(), a.digest().await.unwrap());
}

#[tokio::test]
async fn pruning_through_the_middle_of_a_chunk() {
    let (a, _da) = store(1).await;
    let ops = create_tags(&a, 1_500).await; // chunks 1..=1000 and 1001..=1500
    let me = a.author();
    assert_eq!(a.prune(&BTreeMap::from([(me, 400)])).await.unwrap(), 400);
    assert_eq!(a.pending_operations().await.unwrap(), 1_100);
    assert!(a.needs_snapshot(&VersionVector::default()));
    assert_eq!(pages(&a, &vv_at(me, 400), 300).await, ops[400..].to_vec());
    // Through the end of the first chunk (removed) and into the second.
    assert_eq!(a.prune(&BTreeMap::from([(me, 1_200)])).await.unwrap(), 800);
    assert_eq!(a.pending_operations().await.unwrap(), 300);
    let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM op_chunks")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(
        chunks, 1,
        "the first chunk is gone, the straddling one stays"
    );
    assert_eq!(
        pages(&a, &vv_at(me, 1_200), 1_000).await,
        ops[1_200..].to_vec()
    );
    assert_eq!(a.prune(&BTreeMap::from([(me, 1_500)])).await.unwrap(), 300);
    assert_eq!(a.pending_operations().await.unwrap(), 0);
}

/// The log as migration 0001 created it, one row per op.
const LEGACY_LOG: &str = "CREATE TABLE operations (client_uuid TEXT NOT NULL, seq INTEGER NOT NULL, \
    uhlc_timestamp BLOB NOT NULL, method TEXT NOT NULL, resource_type TEXT NOT NULL, \
    resource_uuid TEXT, resource_property TEXT, value BLOB, rejected TEXT, \
    PRIMARY KEY (client_uuid, seq)) WITHOUT ROWID";

#[tokio::test]
async fn a_log_written_one_row_per_op_is_dropped_when_the_store_opens() {
    // The ops: creates, an update, a delete, from two authors.
    let (a, _da) = store(1).await;
    let (c, _dc) = store(3).await;
    let mut ops = create_tags(&a, 3).await;
    let u = ops[0].uuid.unwrap();
    ops.extend(
        a.update_shared("tags", u, fields(serde_json::json!({"name": "x"})))
            .await
            .unwrap()
            .ops,
    );
    ops.extend(
        a.delete_shared("tags", ops[1].uuid.unwrap())
            .await
            .unwrap()
            .ops,
    );
    let theirs = c.create_shared("tags", None, tag("c")).await.unwrap().ops;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.db");
    let open = || open_at(&path, 2);
    let b = open().await;
    let mut all = changes(&ops);
    all.extend(changes(&theirs));
    b.apply(all).await.unwrap();
    let digest = b.digest().await.unwrap();
    // Rewrite B's log the way the earlier layout stored it: one row per op.
    let mut expected = pages(&b, &VersionVector::default(), 100).await;
    let pool = b.pool().clone();
    sqlx::query(LEGACY_LOG).execute(&pool).await.unwrap();
    for op in &expected {
        let value = match op.method {
            Method::SharedCreate => Some(cbor(&op.fields)),
            Method::SharedUpdate => Some(cbor(&op.value)),
            _ => None,
        };
        sqlx::query(
            "INSERT INTO operations (client_uuid, seq, uhlc_timestamp, method, resource_type, \
             resource_uuid, resource_property, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(op.author.hyphenated().to_string())
        .bind(op.seq as i64)
        .bind(op.ts().to_bytes().to_vec())
        .bind(op.method.as_str())
        .bind(&op.resource)
        .bind(op.uuid.map(|u| u.hyphenated().to_string()))
        .bind(&op.property)
        .bind(value)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM op_chunks")
        .execute(&pool)
        .await
        .unwrap();
    b.close().await;

    let b = open().await;
    let tables: Vec<String> =
        sqlx::query("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'operations'")
            .fetch_all(b.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert!(tables.is_empty(), "the one-row-per-op table is dropped");
    // Its ops carry no proofs of authorship: they are dropped as if pruned (the state keeps
    // them, and a peer that lacks them gets a snapshot), and the version vector stays.
    expected.sort_by_key(|op| (op.author, op.seq));
    assert!(pages(&b, &VersionVector::default(), 2).await.is_empty());
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    assert_eq!(b.digest().await.unwrap(), digest);
    for op in &expected {
        assert!(b.version_vector().has(op.id()), "{} stays applied", op.id());
    }
    // It opens again without dropping anything more.
    b.close().await;
    let b = open().await;
    assert_eq!(b.digest().await.unwrap(), digest);
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    ciborium::into_writer(v, &mut buf).unwrap();
    buf
}

#[tokio::test]
async fn the_version_vector_stored_with_the_log_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.db");
    let a = open_at(&path, 1).await;
    create_tags(&a, 700).await;
    a.prune(&BTreeMap::from([(a.author(), 700)])).await.unwrap();
    let t = a.create_shared("tags", None, tag("x")).await.unwrap().uuids[0];
    a.update_shared(
        "tags",
        t,
        fields(serde_json::json!({"name": "y", "color": "z"})),
    )
    .await
    .unwrap();
    a.delete_shared("tags", t).await.unwrap();
    let rows = vec![fields(serde_json::json!({"name": "f", "cas_id": "c"}))];
    a.write_owned("file_paths", rows).await.unwrap();
    let want = a.version_vector();
    assert_eq!(want.contiguous(&a.author()), 705);
    // Without the log, the stored version vector is all that remembers the sequence.
    a.prune(&BTreeMap::from([(a.author(), 705)])).await.unwrap();
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    a.close().await;
    let a = open_at(&path, 1).await;
    assert_eq!(a.version_vector(), want);
    // The next write is a new author of the same device (one per open), from seq 1: a copy
    // of this data dir restored elsewhere could not write a seq this one wrote.
    let next = a.create_shared("tags", None, tag("n")).await.unwrap().ops;
    assert_ne!(next[0].author, want.authors.keys().copied().next().unwrap());
    assert_eq!(next[0].seq, 1);
    assert_eq!(a.version_vector().contiguous(&next[0].author), 1);
}
