//! Pages sized in bytes: ops pages, owned-batch pages and snapshot pages stay under
//! `MAX_PAGE_BYTES` (one item alone may pass it), whatever the rows' size up to
//! `MAX_ROW_BYTES`; a larger row is refused at the write; a snapshot page with one register
//! from the future imports every other row.

use std::time::Duration;

use murmur_store::proof::Proof;
use murmur_store::wire::to_cbor;
use murmur_store::{
    BatchEntry, Change, Hlc, MAX_PAGE_BYTES, MAX_ROW_BYTES, OpsCursor, OpsPage, Origin,
    PhysicalClock, SnapshotPosition, SnapshotRow, Store, StoreError, VersionVector,
};
use murmur_testkit::store::*;
use serde_json::json;
use uuid::Uuid;

fn comment(content: String) -> BatchEntry {
    let mut fields = serde_json::Map::new();
    fields.insert("content".into(), json!(content));
    BatchEntry::Create {
        resource: "comments".into(),
        uuid: None,
        fields,
    }
}

/// Every page of ops from `s` for an empty replica, checked against the byte bound (its
/// proofs included).
async fn ops_pages(s: &Store) -> Vec<OpsPage> {
    let mut pages = Vec::new();
    let mut cursor = OpsCursor::default();
    loop {
        let page = s
            .ops_since(&VersionVector::default(), &cursor, 5_000)
            .await
            .unwrap();
        let bytes = to_cbor(&page).len();
        let estimate: usize = page.changes.iter().map(Change::wire_size).sum::<usize>()
            + page.proofs.iter().map(Proof::wire_size).sum::<usize>();
        assert!(estimate >= bytes - 64, "estimate {estimate} < {bytes}");
        assert!(
            estimate <= MAX_PAGE_BYTES || page.changes.len() == 1,
            "a page of {} items and {} proofs estimated at {estimate} bytes",
            page.changes.len(),
            page.proofs.len()
        );
        assert!(
            bytes <= MAX_PAGE_BYTES + 64 || page.changes.len() == 1,
            "a page of {} items and {bytes} bytes",
            page.changes.len()
        );
        assert!(!page.changes.is_empty(), "an empty page");
        let next = page.next.clone();
        pages.push(page);
        match next {
            Some(n) => cursor = n,
            None => return pages,
        }
    }
}

/// Every snapshot page of `s`, checked against the byte bound.
async fn snapshot_pages(s: &Store) -> Vec<Vec<SnapshotRow>> {
    let mut pages = Vec::new();
    let mut pos: Option<SnapshotPosition> = None;
    loop {
        let (rows, next) = s.snapshot_page(pos.as_ref(), 5_000).await.unwrap();
        let bytes = to_cbor(&rows).len();
        assert!(
            bytes <= MAX_PAGE_BYTES + 64 || rows.len() == 1,
            "a snapshot page of {} rows and {bytes} bytes",
            rows.len()
        );
        pages.push(rows);
        match next {
            Some(p) => pos = Some(p),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn pages_of_big_rows_are_cut_by_bytes_and_every_row_arrives() {
    let (a, _da) = store(1).await;
    // 3,000 comments of 8 KB (24 MB) in a few batches, and 5 rows at the maximum.
    for _ in 0..6 {
        let batch = (0..500)
            .map(|i| comment(format!("{i:08}").repeat(1024)))
            .collect();
        a.batch(batch).await.unwrap();
    }
    let big = MAX_ROW_BYTES - 9;
    for i in 0..5u8 {
        a.batch(vec![comment(char::from(b'a' + i).to_string().repeat(big))])
            .await
            .unwrap();
    }
    // Owned rows of 1 MiB in one batch: their pages are cut too.
    let rows: Vec<_> = (0..20)
        .map(|i| {
            let mut m = serde_json::Map::new();
            m.insert("name".into(), json!(format!("{i}").repeat(1 << 20)));
            m
        })
        .collect();
    a.write_owned("file_paths", rows).await.unwrap();

    let pages = ops_pages(&a).await;
    assert!(pages.len() >= 4, "{} pages", pages.len());
    let (b, _db) = store(2).await;
    for p in pages {
        let report = b
            .apply_signed(p.changes, p.proofs, Origin::CatchUp)
            .await
            .unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
    assert_eq!(b.count_rows("comments").await.unwrap(), 3_005);
    assert_eq!(b.count_rows("file_paths").await.unwrap(), 20);
    assert_eq!(a.digest().await.unwrap(), b.digest().await.unwrap());

    // The same state through a snapshot, with its proofs.
    let proofs = a.snapshot_proofs().await.unwrap();
    let pages = snapshot_pages(&a).await;
    assert!(pages.len() >= 4, "{} snapshot pages", pages.len());
    let (c, _dc) = store(3).await;
    assert!(c.begin_snapshot(proofs.clone()).await.unwrap().is_empty());
    for p in pages {
        let r = c.import_snapshot_page(p).await.unwrap();
        assert_eq!(r.set_aside, 0);
    }
    assert!(c.finish_snapshot(proofs).await.unwrap().is_empty());
    assert_eq!(a.digest().await.unwrap(), c.digest().await.unwrap());
    let proven = c.version_vector().contiguous(&a.author());
    assert_eq!(proven, a.version_vector().contiguous(&a.author()));
}

/// A page carries a proof per run of one author's ops: with many authors, the proofs count
/// in the page's bytes too, and every run arrives proven.
#[tokio::test]
async fn pages_of_many_authors_count_their_proofs() {
    let (hub, _dh) = store(100).await;
    // 40 authors with one comment each, of a size that puts 39 of them just under 8 MiB
    // (5 KB under, by their estimates), and not with their 39 proofs (265 bytes each): a
    // page that did not count its proofs would hold 39 and be over.
    for n in 0..40u128 {
        let (s, _d) = store(200 + n).await;
        s.batch(vec![comment(format!("{n:07} ").repeat(214_640 / 8))])
            .await
            .unwrap();
        let (changes, proofs) = all_signed(&s).await;
        let report = hub
            .apply_signed(changes, proofs, Origin::Gossip)
            .await
            .unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
    let pages = ops_pages(&hub).await;
    assert!(pages.len() >= 2, "{} pages", pages.len());
    let (b, _db) = store(2).await;
    for p in pages {
        // One proof per run: here one run per author in the page.
        assert_eq!(p.proofs.len(), p.changes.len());
        let report = b
            .apply_signed(p.changes, p.proofs, Origin::CatchUp)
            .await
            .unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
    assert_eq!(b.count_rows("comments").await.unwrap(), 40);
    assert_eq!(hub.digest().await.unwrap(), b.digest().await.unwrap());
}

#[tokio::test]
async fn a_row_above_the_maximum_is_refused_at_the_write() {
    let (a, _d) = store(1).await;
    let err = a
        .batch(vec![comment("x".repeat(MAX_ROW_BYTES))])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::BatchEntry { source, .. } if matches!(**source, StoreError::TooLarge { limit: MAX_ROW_BYTES, .. })),
        "{err}"
    );
    // Two fields each under the maximum, a row over it.
    let half = "y".repeat(MAX_ROW_BYTES / 2);
    let out = a.batch(vec![comment(half.clone())]).await.unwrap();
    let mut fields = serde_json::Map::new();
    fields.insert("cas_id".into(), json!(half));
    let err = a
        .update_shared("comments", out.uuids[0], fields)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    let mut row = serde_json::Map::new();
    row.insert("name".into(), json!("z".repeat(MAX_ROW_BYTES)));
    let err = a.write_owned("file_paths", vec![row]).await.unwrap_err();
    assert!(err.to_string().contains("MAX_ROW_BYTES"), "{err}");
}

/// Regression: one register more than `max_drift` ahead failed the whole snapshot page.
#[tokio::test]
async fn a_snapshot_page_with_one_far_future_register_imports_every_other_row() {
    let clock = manual();
    clock.advance(Duration::from_secs(1_000_000));
    let (a, _da) = store(1).await;
    for i in 0..10 {
        a.batch(vec![comment(format!("c{i}"))]).await.unwrap();
    }
    let (mut rows, next) = a.snapshot_page(None, 5_000).await.unwrap();
    assert!(next.is_none());
    let n = rows.len();
    let skewed = Uuid::from_u128(77);
    let SnapshotRow::Shared { exists_ts, .. } = &mut rows[3] else {
        panic!("a shared row")
    };
    *exists_ts = Hlc {
        time: u64::MAX / 2,
        author: skewed,
    };
    let (b, _db) = store_with(2, PhysicalClock::Manual(clock.clone())).await;
    let r = b.import_snapshot_page(rows.clone()).await.unwrap();
    assert_eq!((r.imported, r.set_aside), (n - 1, 1));
    assert!(r.uncovered.contains(&skewed));
    assert_eq!(b.count_rows("comments").await.unwrap(), n as u64 - 1);
    clock.release();
}

#[tokio::test]
async fn an_op_no_other_client_holds_is_never_pruned() {
    let (a, _d) = store(1).await;
    a.batch(vec![comment("alone".into())]).await.unwrap();
    // Every other client stale, or none known: nothing is acknowledged, nothing pruned.
    let horizon = a.prune_horizon(|_| true).await.unwrap();
    assert!(horizon.is_empty(), "{horizon:?}");
    // Another client reports holding it: now it may go, even if that client is stale.
    a.touch_client(Uuid::from_u128(2), None).await.unwrap();
    a.record_client_version(Uuid::from_u128(2), &a.version_vector().contiguous_map())
        .await
        .unwrap();
    let horizon = a.prune_horizon(|_| true).await.unwrap();
    assert_eq!(horizon.get(&a.author()), Some(&1));
}
